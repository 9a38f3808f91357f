/* UTF-8 for the text layer (tokenizer and template engine): strict validation (no overlongs,
 * surrogates or code points past U+10FFFF), lossy conversion with one U+FFFD per maximal ill-formed
 * subpart (Unicode §3.9, as Rust's from_utf8_lossy and Python's errors="replace"), and GPT-2's
 * byte-level alphabet. */
#include "text/utf8.h"

#include <string.h>

/* Length of the well-formed sequence at s[0..n), or 0. When 0, *sub is the length of the
 * maximal ill-formed subpart (>= 1) and *truncated tells that the input ended inside a prefix
 * that could still have been completed. */
static size_t utf8_step(const uint8_t *s, size_t n, size_t *sub, bool *truncated) {
    uint8_t c = s[0], lo = 0x80, hi = 0xBF;
    size_t need;
    *sub = 1;
    *truncated = false;
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) {
        need = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        need = 3;
        lo = c == 0xE0 ? 0xA0 : 0x80;
        hi = c == 0xED ? 0x9F : 0xBF;
    } else if (c >= 0xF0 && c <= 0xF4) {
        need = 4;
        lo = c == 0xF0 ? 0x90 : 0x80;
        hi = c == 0xF4 ? 0x8F : 0xBF;
    } else {
        return 0;
    }
    for (size_t i = 1; i < need; i++) {
        if (i >= n) {
            *sub = i;
            *truncated = true;
            return 0;
        }
        if (s[i] < lo || s[i] > hi) {
            *sub = i;
            return 0;
        }
        lo = 0x80, hi = 0xBF;
    }
    return need;
}

size_t tk_utf8_invalid_at(const uint8_t *s, size_t n) {
    size_t i = 0, sub;
    bool trunc;
    while (i < n) {
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        size_t k = utf8_step(s + i, n - i, &sub, &trunc);
        if (!k) return i;
        i += k;
    }
    return n;
}

uint32_t tk_utf8_next(const uint8_t *s, size_t n, size_t *adv) {
    uint8_t c = s[0];
    size_t k = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
    if (k > n) k = 1; /* not reached on validated text; keeps reads inside s[0..n) */
    *adv = k;
    switch (k) {
    case 1:
        return c;
    case 2:
        return ((uint32_t)(c & 0x1F) << 6) | (s[1] & 0x3F);
    case 3:
        return ((uint32_t)(c & 0x0F) << 12) | ((uint32_t)(s[1] & 0x3F) << 6) | (s[2] & 0x3F);
    default:
        return ((uint32_t)(c & 0x07) << 18) | ((uint32_t)(s[1] & 0x3F) << 12) |
               ((uint32_t)(s[2] & 0x3F) << 6) | (s[3] & 0x3F);
    }
}

uint32_t tk_utf8_prev(const uint8_t *s, size_t end, size_t *back) {
    size_t i = end - 1;
    while (i > 0 && end - i < 4 && (s[i] & 0xC0) == 0x80)
        i--;
    size_t adv;
    uint32_t cp = tk_utf8_next(s + i, end - i, &adv);
    *back = end - i;
    return cp;
}

size_t tk_utf8_put(uint32_t cp, char *out) {
    if (cp < 0x80) return out[0] = (char)cp, 1;
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

size_t tk_utf8_lossy(const uint8_t *in, size_t n, bool final, char *out, size_t *out_len) {
    size_t i = 0, o = *out_len, sub;
    bool trunc;
    while (i < n) {
        if (in[i] < 0x80) {
            out[o++] = (char)in[i++];
            continue;
        }
        size_t k = utf8_step(in + i, n - i, &sub, &trunc);
        if (k) {
            memcpy(out + o, in + i, k);
            o += k, i += k;
            continue;
        }
        if (trunc && !final) break; /* may still complete with the next bytes */
        memcpy(out + o, "\xEF\xBF\xBD", 3);
        o += 3, i += sub;
    }
    *out_len = o;
    return i;
}

/* bytes_to_unicode: printable Latin-1 bytes (0x21-0x7E, 0xA1-0xAC, 0xAE-0xFF) stand for
 * themselves; the other 68 bytes, in increasing order, become U+0100, U+0101, ... */
static bool printable(unsigned b) {
    return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
}

uint32_t tk_b2u(uint8_t b) {
    if (printable(b)) return b;
    uint32_t k = 0;
    for (unsigned x = 0; x < b; x++)
        k += !printable(x);
    return 0x100 + k;
}

int tk_u2b(uint32_t cp) {
    if (cp < 0x100) return printable(cp) ? (int)cp : -1;
    if (cp >= 0x100 + 68) return -1;
    uint32_t k = cp - 0x100;
    for (unsigned x = 0; x < 256; x++)
        if (!printable(x) && k-- == 0) return (int)x;
    return -1;
}
