/* Test and benchmark support for the tokenizer: a deterministic English-like corpus generator
 * and a byte-level BPE trainer that writes a tokenizer.json in Hugging Face's format (the one
 * Qwen2 ships: NFC, Split with Qwen2's regex + ByteLevel, BPE), with either merge encoding and
 * optionally a set of added tokens exercising every flag. The trainer follows tokenizers'
 * BpeTrainer in spirit (most frequent pair first, ties to the smaller ids), not byte for byte:
 * only the file it writes matters, and references encode that same file. */
#ifndef FM_TEST_TOK_FIXTURE_H
#define FM_TEST_TOK_FIXTURE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Qwen2's pre-tokenizer split pattern (data from Qwen2's tokenizer.json, spec §1.1). */
extern const char tokfx_qwen2_pattern[];

/* `bytes` (approximately) of English-like text: Zipf-distributed words (common English function
 * words, then generated words), sentences with punctuation, numbers, contractions, quotes and
 * paragraphs. The lexicon is the same for every seed; the seed picks the sentences. With `mixed`,
 * also other scripts, emoji, combining marks and odd whitespace. Caller frees with free(); NULL on
 * OOM. */
char *tokfx_corpus(size_t bytes, uint64_t seed, bool mixed, size_t *out_len);

typedef struct tokfx_spec {
    size_t merges;      /* merges to learn (fewer when the corpus runs out of pairs) */
    bool legacy_merges; /* "a b" strings; else ["a", "b"] pairs */
    bool added_tokens;  /* the fixture's added tokens (see tok_fixture.c) */
} tokfx_spec;

/* Trains on `text` and returns tokenizer.json text (caller frees with free()); NULL on OOM or
 * when the split pattern does not compile. */
char *tokfx_train_json(const char *text, size_t len, const tokfx_spec *spec, size_t *out_len);

#endif
