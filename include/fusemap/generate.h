/* fusemap generation: choosing each next token the way transformers' `generate` does (logits
 * processors in HF order, then greedy or one seeded draw) and reading generation_config.json.
 * The generate API itself (decoder loop, stop conditions) has its own section below. */
#ifndef FUSEMAP_GENERATE_H
#define FUSEMAP_GENERATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fusemap/core.h"
#include "fusemap/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ==== Sampling: logits processors and the next-token choice ===============================
 * Per step, on an f32 copy of the last position's logits (the caller's array is not modified),
 * in transformers' order (docs/generation.md):
 *   1. repetition penalty (when != 1): every DISTINCT id of the history once, s < 0 ? s*r : s/r;
 *   2. remove_invalid_values (when set): NaN -> 0, +inf -> FLT_MAX, -inf -> -FLT_MAX;
 *   greedy (do_sample false, or temperature 0): argmax, the first id among equal maxima;
 *   sampling: 3. temperature s/T (when != 1), 4. top-k (when != 0; ties with the k-th survive),
 *   5. top-p (when < 1), 6. min-p (when > 0); then softmax and ONE draw u in [0, 1) from
 *   xoshiro256** (seeded by splitmix64), inverse CDF accumulated in double in ascending id order.
 * Logits containing NaN are an error (FM_ERR_INPUT) unless remove_invalid_values is set; +inf
 * and -inf are accepted. Same options, seed and inputs => same ids, whatever the thread count. */

/* Seed used when none is given (the CLI prints the seed it uses). */
#define FM_SAMPLING_DEFAULT_SEED UINT64_C(0)

typedef struct fm_sampling_options {
    bool do_sample;             /* false: greedy (default, as transformers) */
    double temperature;         /* >= 0, finite; 1 = off; 0 = greedy whatever do_sample says */
    int64_t top_k;              /* >= 0; 0 = off; default 50 (transformers' default) */
    double top_p;               /* [0, 1]; 1 = off */
    double min_p;               /* [0, 1]; 0 = off */
    double repetition_penalty;  /* > 0, finite; 1 = off; applies to greedy too */
    int64_t min_keep;           /* >= 1: tokens top-k/top-p/min-p always keep (transformers: 1) */
    bool remove_invalid_values; /* transformers' InfNanRemoveLogitsProcessor (default off) */
    uint64_t seed;              /* xoshiro256** seed (splitmix64 expansion) */
} fm_sampling_options;

/* transformers' GenerationConfig defaults: greedy, temperature 1, top_k 50, top_p 1, min_p 0,
 * repetition_penalty 1, min_keep 1, seed FM_SAMPLING_DEFAULT_SEED. */
FM_API void fm_sampling_options_init(fm_sampling_options *o);
/* FM_ERR_INVALID_ARG naming the field and the allowed range when a value is out of range. */
FM_API fm_status fm_sampling_options_validate(const fm_sampling_options *o, fm_error *err);
/* True when the options choose by argmax (do_sample false or temperature 0): no draw is made. */
FM_API bool fm_sampling_options_greedy(const fm_sampling_options *o);

/* Stateful (its RNG advances one draw per sampled token); one thread at a time per sampler. */
typedef struct fm_sampler fm_sampler;

/* vocab: logits per step, 1..INT32_MAX. Options are validated and copied. *out: caller frees
 * with fm_sampler_free. Working buffers (up to 40 bytes per vocab entry) are allocated here, so
 * fm_sampler_next never allocates. */
FM_API fm_status fm_sampler_new(const fm_sampling_options *o, int64_t vocab, fm_sampler **out,
                                fm_error *err);
FM_API void fm_sampler_free(fm_sampler *s); /* accepts NULL */
/* Restarts the random stream as if created with `seed` (e.g. per request). */
FM_API void fm_sampler_reseed(fm_sampler *s, uint64_t seed);

/* Chooses the next id. logits: [vocab], borrowed for the call, not modified. history: the
 * sequence so far (prompt + generated ids, image pads included), n_history ids, each in
 * [0, vocab) (FM_ERR_INPUT otherwise); may be NULL when n_history is 0. FM_ERR_INPUT also for
 * NaN logits (see above) and when no token can be chosen (every score -inf). */
FM_API fm_status fm_sampler_next(fm_sampler *s, const float *logits, const int32_t *history,
                                 size_t n_history, int32_t *out_id, fm_error *err);
/* The processed scores fm_sampler_next would choose from (transformers' `next_token_scores`):
 * scores[vocab] receives the penalised logits when greedy, else the warped scores with removed
 * tokens at -inf; softmax(scores) is the distribution a draw follows. Consumes no randomness. */
FM_API fm_status fm_sampler_process(fm_sampler *s, const float *logits, const int32_t *history,
                                    size_t n_history, float *scores, fm_error *err);

/* ==== generation_config.json ================================================================
 * The keys fusemap uses, with transformers' GenerationConfig defaults for absent keys (or an
 * absent file). A key set to null means "not set": top_k null disables top-k (as transformers),
 * temperature/top_p/repetition_penalty null mean 1, min_p null 0, do_sample null false,
 * max_length null 20. Other keys are ignored. Wrong types or out-of-range values are errors
 * naming the file and key. */

#define FM_GENERATION_MAX_EOS 64                         /* eos_token_id list length limit */
#define FM_GENERATION_CONFIG_MAX_BYTES ((size_t)1 << 20) /* generation_config.json size limit */

typedef enum fm_eos_source {
    FM_EOS_NONE = 0,          /* no eos_token_id anywhere */
    FM_EOS_GENERATION_CONFIG, /* generation_config.json */
    FM_EOS_MODEL_CONFIG       /* config.json (top level, else text_config) */
} fm_eos_source;

typedef struct fm_generation_config {
    bool found; /* generation_config.json exists */
    bool do_sample;
    double temperature;
    int64_t top_k;
    double top_p;
    double min_p;
    double repetition_penalty;
    bool remove_invalid_values;
    int64_t max_length;     /* total length, prompt included (default 20; see new_tokens below) */
    int64_t max_new_tokens; /* 0 = not set */
    int64_t eos_token_ids[FM_GENERATION_MAX_EOS]; /* each in [0, INT32_MAX] */
    size_t n_eos_token_ids;
    fm_eos_source eos_source;
    int64_t bos_token_id; /* -1 = not set (negative values in a file read as not set) */
    int64_t pad_token_id; /* -1 = not set */
    uint64_t seed;        /* not a file key: FM_SAMPLING_DEFAULT_SEED unless overridden */
} fm_generation_config;

/* transformers' defaults: greedy, temperature 1, top_k 50, top_p 1, min_p 0, repetition 1,
 * max_length 20, no max_new_tokens, no token ids. */
FM_API void fm_generation_config_init(fm_generation_config *c);

/* Reads MODEL_DIR/generation_config.json (absent: defaults, found = false). eos_token_id (int or
 * list) falls back to config.json's (top level, then text_config) when the file lacks it or is
 * absent. *out is written only on success. Errors: FM_ERR_NOT_FOUND (MODEL_DIR missing),
 * FM_ERR_IO, FM_ERR_LIMIT (over FM_GENERATION_CONFIG_MAX_BYTES, too many eos ids), FM_ERR_JSON,
 * FM_ERR_CONFIG (wrong type or range; the message names the file and key), FM_ERR_NOMEM. */
FM_API fm_status fm_generation_config_load(const char *model_dir, fm_generation_config *out,
                                           fm_error *err);

/* Explicit user choices (CLI flags, request fields) layered over the file. */
enum {
    FM_GEN_SET_DO_SAMPLE = 1u << 0,
    FM_GEN_SET_TEMPERATURE = 1u << 1,
    FM_GEN_SET_TOP_K = 1u << 2,
    FM_GEN_SET_TOP_P = 1u << 3,
    FM_GEN_SET_MIN_P = 1u << 4,
    FM_GEN_SET_REPETITION_PENALTY = 1u << 5,
    FM_GEN_SET_SEED = 1u << 6,
    FM_GEN_SET_MAX_NEW_TOKENS = 1u << 7
};

typedef struct fm_generation_overrides {
    unsigned set; /* FM_GEN_SET_* bits: the fields below that were given */
    bool do_sample;
    double temperature;
    int64_t top_k;
    double top_p;
    double min_p;
    double repetition_penalty;
    uint64_t seed;
    int64_t max_new_tokens;
} fm_generation_overrides;

FM_API void fm_generation_overrides_init(fm_generation_overrides *o); /* nothing set */

/* Applies the given overrides to *c (unchanged on error: FM_ERR_INVALID_ARG naming the value).
 * Unless do_sample itself is given, a temperature > 0, top_k, top_p or min_p turns sampling on
 * (a user who asks for a temperature wants sampling), and temperature 0 means greedy. Values
 * not overridden keep the file's: with Qwen2-VL-Instruct's top_k 1 / top_p 0.001, a new
 * temperature alone still picks the top token (docs/generation.md). */
FM_API fm_status fm_generation_config_override(fm_generation_config *c,
                                               const fm_generation_overrides *o, fm_error *err);

/* The sampler options the config describes (validated). */
FM_API fm_status fm_generation_config_sampling(const fm_generation_config *c,
                                               fm_sampling_options *out, fm_error *err);

/* Tokens to generate after a prompt of prompt_len tokens, as transformers counts them:
 * max_new_tokens when set; else 20 when max_length is the default 20 (transformers then means
 * "20 new tokens"); else max_length - prompt_len, FM_ERR_INPUT when that is not positive.
 * The caller still bounds the total by the model's context. */
FM_API fm_status fm_generation_config_new_tokens(const fm_generation_config *c, int64_t prompt_len,
                                                 int64_t *out, fm_error *err);

/* ---- generation --------------------------------------------------------------------------------
 * Prefill the prompt (images through the vision tower), then one token at a time with a KV cache,
 * sampling each next token; stops at a stop id (appended, as transformers does) or after
 * max_new_tokens. Needs fusemap/models.h's fm_model. */
struct fm_model;
struct fm_tokenizer;

typedef enum fm_stop_reason {
    FM_STOP_NONE = 0,
    FM_STOP_EOS,
    FM_STOP_LENGTH,
    FM_STOP_CANCELLED
} fm_stop_reason;

typedef struct fm_generate_options {
    fm_sampling_options sampling;
    int64_t max_new_tokens;  /* >= 1 */
    fm_dtype kv_dtype;       /* F32 (default) or BF16 */
    int threads;             /* 0: all cores */
    const int32_t *stop_ids; /* borrowed for the call: generation ends after one of these */
    size_t n_stop;
    /* Streaming (optional): called after every token with the text that became complete (UTF-8,
     * special tokens skipped; may be empty). Returning false cancels the generation
     * (FM_STOP_CANCELLED). `tokenizer` (borrowed) decodes; without it text is NULL. */
    const struct fm_tokenizer *tokenizer;
    bool (*on_token)(void *ctx, int32_t id, const char *text, size_t len);
    void *ctx;
    /* Optional: the logits each token is chosen from (F32 [vocab], borrowed for the call), before
     * any processor, e.g. for log-probabilities. */
    void (*on_logits)(void *ctx, const float *logits, int64_t vocab);
} fm_generate_options;
/* max_new_tokens 20, F32 cache, greedy sampling options, no stop ids. */
FM_API void fm_generate_options_init(fm_generate_options *o);

typedef struct fm_generate_result {
    int32_t *tokens; /* generated ids (the stop id included); caller frees with
                        fm_generate_result_free */
    size_t n_tokens;
    char *text; /* decoded generated text, special tokens skipped (NULL without a tokenizer) */
    size_t text_len;
    int64_t prompt_tokens;
    double prefill_s,
        decode_s; /* seconds: prompt forward (vision tower included); the decode steps */
    fm_stop_reason stop;
} fm_generate_result;
FM_API void fm_generate_result_free(fm_generate_result *r); /* accepts NULL */

/* Generates after prompt ids [n]. pixel_values / image_grid_thw (both NULL for text): as for
 * fm_model_vision_forward, one grid row per image in the prompt's order. Checks before any work:
 * ids within the vocabulary, the image tokens against the grids, prompt + max_new_tokens within
 * the model's context (FM_ERR_LIMIT naming both). */
FM_API fm_status fm_generate(struct fm_model *m, const int64_t *ids, size_t n,
                             const fm_tensor *pixel_values, const fm_tensor *image_grid_thw,
                             const fm_generate_options *o, fm_generate_result *out, fm_error *err);

/* ---- batched generation ------------------------------------------------------------------------
 * Several sequences over one KV cache of `slots` slots (a server's concurrent requests). A
 * sequence's prompt is prefilled alone (one forward of all its rows, images through the vision
 * tower, exactly as fm_generate does), then each fm_batch_step decodes one token of every
 * running sequence in one forward with one row per sequence, each in its own slot (one pass over
 * the weights serves them all; more than FM_BATCH_MAX_ROWS running sequences take several
 * forwards of at most that many rows). Every row of such a forward is computed independently of
 * the others (docs/decisions.md "Decoder kernels"), so a sequence's tokens are the ones
 * fm_generate gives for it alone with the same options, whatever else runs beside it.
 * fm_generate itself runs through a batch of one slot. One thread at a time per batch, and no
 * other forward on the model meanwhile. */
/* Rows per decode forward: the decoder's GEMV path (rows computed independently of each other)
 * takes up to this many rows; more would take the prefill GEMM, whose per-row bits may differ. */
#define FM_BATCH_MAX_ROWS 8

typedef struct fm_batch fm_batch;

typedef struct fm_batch_options {
    int slots;         /* sequences at once, 1..4096 (default 1) */
    int64_t capacity;  /* positions per slot (prompt + generated), 1..max_position_embeddings */
    fm_dtype kv_dtype; /* F32 (default) or BF16 */
    int threads;       /* 0: all cores */
} fm_batch_options;
/* One slot, capacity 0 (must be set), F32 cache, all cores. */
FM_API void fm_batch_options_init(fm_batch_options *o);

/* Allocates the KV cache (slots x capacity positions, at once). `m` is borrowed until
 * fm_batch_free. *out: caller frees with fm_batch_free. */
FM_API fm_status fm_batch_new(struct fm_model *m, const fm_batch_options *o, fm_batch **out,
                              fm_error *err);
FM_API void fm_batch_free(fm_batch *b); /* accepts NULL; ends every sequence */

FM_API int fm_batch_slots(const fm_batch *b);
FM_API int fm_batch_free_slots(const fm_batch *b); /* slots no sequence holds */
FM_API int fm_batch_running(const fm_batch *b);    /* sequences that the next step decodes */
FM_API int64_t fm_batch_capacity(const fm_batch *b);

/* Starts a sequence in a free slot: the checks of fm_generate (ids in the vocabulary, images
 * against the grids, prompt + max_new_tokens within the slot's capacity: FM_ERR_LIMIT naming
 * both), the prefill, and the choice of its first token (streamed through o->on_token). o's
 * threads and kv_dtype are the batch's and ignored here; o and its stop ids, tokenizer and ctx
 * are borrowed until fm_batch_end. *seq receives the sequence's handle (its slot), which holds
 * the slot until fm_batch_end, even when this call fails after claiming it (then the sequence is
 * finished and fm_batch_end returns its error); *seq is -1 when no slot was claimed
 * (FM_ERR_LIMIT when every slot is held, or a check failed). */
FM_API fm_status fm_batch_start(fm_batch *b, const int64_t *ids, size_t n,
                                const fm_tensor *pixel_values, const fm_tensor *image_grid_thw,
                                const fm_generate_options *o, int *seq, fm_error *err);

/* One decode step: one more token of every running sequence. A sequence stops running at a stop
 * id, after max_new_tokens, or when its on_token returns false (FM_STOP_CANCELLED). A failed
 * forward or sampler finishes the sequences it concerned with that error (fm_batch_end returns
 * it) and is returned here too; the others go on. Nothing to decode: FM_OK at once. */
FM_API fm_status fm_batch_step(fm_batch *b, fm_error *err);

/* True when sequence seq no longer runs (finished, failed or cancelled). */
FM_API bool fm_batch_finished(const fm_batch *b, int seq);

/* Ends sequence seq and frees its slot. A sequence still running is cancelled (FM_STOP_CANCELLED;
 * its on_token is not called again). out (may be NULL) receives its result (caller frees with
 * fm_generate_result_free), written on success only. Returns the sequence's own error, if it
 * failed. */
FM_API fm_status fm_batch_end(fm_batch *b, int seq, fm_generate_result *out, fm_error *err);

#ifdef __cplusplus
}
#endif
#endif
