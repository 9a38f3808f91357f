/* UTF-8 helpers of the text layer, shared by the tokenizer and the template engine (utf8.c):
 * strict validation, decoding of valid text, encoding, lossy conversion, and GPT-2's byte-level
 * alphabet. */
#ifndef FUSEMAP_TEXT_UTF8_H
#define FUSEMAP_TEXT_UTF8_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- UTF-8 and the byte-level alphabet ---------------------------------------------------- */
/* Offset of the first byte that does not start a well-formed UTF-8 sequence, or n. */
size_t tk_utf8_invalid_at(const uint8_t *s, size_t n);
/* Code point at s[0..n) of valid UTF-8 (n >= 1); *adv receives its length. */
uint32_t tk_utf8_next(const uint8_t *s, size_t n, size_t *adv);
/* Code point ending at s[end-1] of valid UTF-8 (end >= 1); *back receives its length. */
uint32_t tk_utf8_prev(const uint8_t *s, size_t end, size_t *back);
/* Writes cp as UTF-8 into out (room for 4); returns the length. */
size_t tk_utf8_put(uint32_t cp, char *out);
/* Lossy conversion: appends to out (room for 3 * n bytes) the UTF-8 of in[0..n) where each
 * maximal ill-formed subpart becomes U+FFFD. Unless `final`, an incomplete but so far valid
 * sequence at the end is not consumed. Returns the bytes of `in` consumed; *out_len grows. */
size_t tk_utf8_lossy(const uint8_t *in, size_t n, bool final, char *out, size_t *out_len);

/* GPT-2's bytes_to_unicode: byte b is written as code point tk_b2u(b). */
uint32_t tk_b2u(uint8_t b);
/* Inverse: the byte of code point cp, or -1 when cp is not in the alphabet. */
int tk_u2b(uint32_t cp);

#endif
