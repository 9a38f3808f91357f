/* fusemap text: Hugging Face `tokenizer.json` (byte-level BPE as Qwen2, Qwen2.5-VL and Qwen3-VL
 * ship it) — encode exactly as the tokenizers library does, decode, and stream detokenization.
 * Contract: shared/spec/generation.md §1 and §5.6; supported subset and limits: docs/tokenizer.md.
 */
#ifndef FUSEMAP_TOKENIZER_H
#define FUSEMAP_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fusemap/core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Limits on an untrusted tokenizer.json; each one exceeded is FM_ERR_LIMIT naming the file,
 * the limit and the key. JSON nesting is bounded by FM_JSON_MAX_DEPTH (io.h). The first five
 * are defaults of fm_tokenizer_limits; the last two are fixed. */
#define FM_TOK_MAX_FILE_BYTES ((uint64_t)128 << 20) /* the whole tokenizer.json */
#define FM_TOK_MAX_VOCAB 2000000u                   /* model.vocab entries, and every id < this */
#define FM_TOK_MAX_MERGES 4000000u                  /* model.merges entries */
#define FM_TOK_MAX_TOKEN_BYTES 4096u                /* one vocab token or added-token content */
#define FM_TOK_MAX_ADDED 65536u                     /* added_tokens entries */
#define FM_TOK_MAX_REGEX_BYTES 16384u               /* one Split pattern */
#define FM_TOK_MAX_STAGES 16u                       /* pre-tokenizer / normalizer Sequence items */

typedef struct fm_tokenizer_limits {
    uint64_t max_file_bytes;
    uint32_t max_vocab; /* entries, and every id must be below it */
    uint32_t max_merges;
    uint32_t max_token_bytes;
    uint32_t max_added;
} fm_tokenizer_limits;
/* The FM_TOK_MAX_* defaults. */
FM_API void fm_tokenizer_limits_init(fm_tokenizer_limits *l);

/* A loaded tokenizer. Immutable after loading: every const function below may be called from
 * several threads at once. */
typedef struct fm_tokenizer fm_tokenizer;

/* Loads `path`: a tokenizer.json file, or a directory holding one (a model directory), with the
 * default limits. Caller frees *out with fm_tokenizer_free. Unsupported components are
 * FM_ERR_UNSUPPORTED naming the file and JSON key; malformed ones FM_ERR_CONFIG / FM_ERR_JSON;
 * limits FM_ERR_LIMIT. */
FM_API fm_status fm_tokenizer_open(const char *path, fm_tokenizer **out, fm_error *err);
/* The same with explicit limits (NULL = defaults). */
FM_API fm_status fm_tokenizer_open_limits(const char *path, const fm_tokenizer_limits *limits,
                                          fm_tokenizer **out, fm_error *err);
/* From JSON text in memory (borrowed for the call); `label` names it in errors; `limits` NULL
 * = defaults. */
FM_API fm_status fm_tokenizer_parse(const char *json, size_t len, const char *label,
                                    const fm_tokenizer_limits *limits, fm_tokenizer **out,
                                    fm_error *err);
FM_API void fm_tokenizer_free(fm_tokenizer *t); /* accepts NULL */

/* Encode flags. */
#define FM_TOKENIZE_SPECIAL 1u /* recognise added tokens with special:true (see encode) */

/* Encodes `len` bytes of UTF-8 `text` as tokenizers' `encode(text, add_special_tokens=True)`
 * does (no BOS/EOS is ever added for the supported post-processors).
 * Added tokens are split out first (leftmost-longest). Tokens with special:false are recognised
 * everywhere. Tokens with special:true are recognised only with FM_TOKENIZE_SPECIAL, and then
 * only where no byte of the match is a user byte: `user_mask` is NULL (no user bytes) or `len`
 * bytes, nonzero = that byte of `text` came from the user. A special token that may not be
 * recognised leaves its text as plain text (as tokenizers' encode_special_tokens does). The
 * text between two recognised added tokens is one segment whatever the mask says, so BPE
 * pieces across a template/user seam are the ones Hugging Face makes.
 * Invalid UTF-8 is FM_ERR_INPUT naming the byte offset. On success *ids (caller frees with
 * fm_free; non-NULL even when *n_ids is 0) holds *n_ids ids; on failure *ids is NULL. */
FM_API fm_status fm_tokenizer_encode(const fm_tokenizer *t, const char *text, size_t len,
                                     const uint8_t *user_mask, unsigned flags, int32_t **ids,
                                     size_t *n_ids, fm_error *err);

/* Decodes ids as tokenizers' `decode` with the ByteLevel decoder: each id's bytes (added-token
 * content or vocab token mapped back to bytes), ids of special tokens dropped when
 * `skip_special`, ids the tokenizer does not know silently dropped, then the concatenation
 * made valid UTF-8 with one U+FFFD per maximal invalid subpart. *text (caller frees with
 * fm_free) is NUL-terminated; *len excludes the NUL (the text may contain NUL bytes). */
FM_API fm_status fm_tokenizer_decode(const fm_tokenizer *t, const int32_t *ids, size_t n,
                                     bool skip_special, char **text, size_t *len, fm_error *err);

/* Id of a token string (a vocab entry in its byte-level form, e.g. "\xc4\xa0the", or an added
 * token's content), or -1. */
FM_API int32_t fm_tokenizer_token_to_id(const fm_tokenizer *t, const char *token, size_t len);
/* The token string of `id` (added-token content or vocab entry), borrowed until
 * fm_tokenizer_free, NUL-terminated, length in *len (may be NULL); NULL for an unknown id. */
FM_API const char *fm_tokenizer_id_to_token(const fm_tokenizer *t, int32_t id, size_t *len);
/* The bytes `id` decodes to (not necessarily valid UTF-8 on their own), borrowed until
 * fm_tokenizer_free; NULL for an unknown id. */
FM_API const char *fm_tokenizer_token_bytes(const fm_tokenizer *t, int32_t id, size_t *len);
/* One more than the largest id of the vocab and the added tokens (the id space). */
FM_API size_t fm_tokenizer_vocab_size(const fm_tokenizer *t);
/* True for an added token with special:true (what decode with skip_special drops). */
FM_API bool fm_tokenizer_is_special(const fm_tokenizer *t, int32_t id);
/* True for any added token (special or not). */
FM_API bool fm_tokenizer_is_added(const fm_tokenizer *t, int32_t id);

/* ---- streaming detokenization (spec §5.6) --------------------------------------------------
 * Fed one id at a time; each push returns the longest newly available text that ends on a
 * complete UTF-8 sequence (invalid maximal subparts become U+FFFD as soon as they are proven
 * invalid), holding back an incomplete tail of at most 3 bytes; finish flushes it (one U+FFFD).
 * Invariant: the concatenation of every chunk equals fm_tokenizer_decode of all the ids. */
typedef struct fm_detok_stream fm_detok_stream;

/* `t` is borrowed until fm_detok_stream_free. Caller frees *out with fm_detok_stream_free. */
FM_API fm_status fm_detok_stream_new(const fm_tokenizer *t, bool skip_special,
                                     fm_detok_stream **out, fm_error *err);
/* Adds one id. *text (borrowed until the next call on `s`; may be empty) and *len receive the
 * new text. */
FM_API fm_status fm_detok_stream_push(fm_detok_stream *s, int32_t id, const char **text,
                                      size_t *len, fm_error *err);
/* Ends the stream: returns what was held back. The stream may then be reused from empty. */
FM_API fm_status fm_detok_stream_finish(fm_detok_stream *s, const char **text, size_t *len,
                                        fm_error *err);
FM_API void fm_detok_stream_free(fm_detok_stream *s); /* accepts NULL */

#ifdef __cplusplus
}
#endif
#endif
