/* fusemap models: the library's start-up (fm_init), a loaded model (module tree + weights + the
 * transforms that fired), fm_from_pretrained / fm_save_pretrained, and running it. */
#ifndef FUSEMAP_MODELS_H
#define FUSEMAP_MODELS_H

#include <stdbool.h>
#include <stdint.h>

#include "fusemap/core.h"
#include "fusemap/image.h"
#include "fusemap/io.h"
#include "fusemap/loading.h"
#include "fusemap/nn.h"
#include "fusemap/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct fm_model fm_model;

/* Registers the built-in layers, architectures (module classes, builders, key mappings) and
 * fusion families, once per process (thread-safe, idempotent). fm_from_pretrained calls it; a
 * program that uses the registries directly (classes, patches, conversion mappings) before
 * loading a model calls it first. Fails only for lack of memory at the first call. */
FM_API fm_status fm_init(fm_error *err);
/* The model_type values of the built-in architectures, in table order (static strings). */
FM_API const char *const *fm_model_types(size_t *n);

typedef struct fm_load_options {
    fm_dtype dtype; /* FM_DTYPE_INVALID = "auto" (as stored); F32/BF16/F16 cast floats on load */
    bool strict;    /* missing or unexpected keys (and a fusion that matches nothing) are errors */
    bool meta_only; /* build the tree (names, shapes, dtypes) without loading any weight */
    /* fusion_config as JSON text, exactly the Python argument ('{"patch_embeddings": true}').
     * NULL: use config.json's fusion_config if present. "{}" disables a stored one. Borrowed. */
    const char *fusion_config;
    /* Optional (NULL: none): checkpoint bytes loaded, total = every tensor's bytes in the
     * checkpoint, with the contract of fm_progress_fn (core.h): done == total once the model
     * is loaded. Casts and converters run between the calls, so done tracks the real work. */
    fm_progress_fn progress;
    void *progress_ctx;
} fm_load_options;
FM_API void fm_load_options_init(fm_load_options *o);

/* Loads DIR (config.json + weights). *out: caller frees with fm_model_free. report (may be
 * NULL) receives the load report (caller frees with fm_load_report_free) even on failure. */
FM_API fm_status fm_from_pretrained(const char *dir, const fm_load_options *o, fm_model **out,
                                    fm_load_report *report, fm_error *err);
FM_API void fm_model_free(fm_model *m); /* accepts NULL */

typedef struct fm_save_pretrained_options {
    bool
        runtime_format; /* false (default): original checkpoint layout; true: fused/runtime names */
    /* 0 (default): a sharded source keeps its shard layout in an original-format save, else one
     * split at FM_DEFAULT_MAX_SHARD_SIZE (50 GB, transformers v5); > 0: greedy split at that size.
     */
    uint64_t max_shard_size;
    /* Optional (NULL: none): bytes of tensor data written, total = the bytes the save writes,
     * with the contract of fm_progress_fn (core.h): done == total once the save is durable. */
    fm_progress_fn progress;
    void *progress_ctx;
} fm_save_pretrained_options;
FM_API void fm_save_pretrained_options_init(fm_save_pretrained_options *o);

/* Saves weights + config.json (every original key kept, fusion_config recorded) atomically. */
FM_API fm_status fm_save_pretrained(const fm_model *m, const char *dir,
                                    const fm_save_pretrained_options *o, fm_error *err);

/* Accessors (borrowed until fm_model_free). */
FM_API fm_module *fm_model_root(const fm_model *m);
FM_API const char *fm_model_type(const fm_model *m);
FM_API const char *fm_model_architecture(const fm_model *m);
FM_API const fm_config *fm_model_config(const fm_model *m);
/* The fusion_config in effect (compact JSON) or NULL when none. */
FM_API const char *fm_model_fusion_config(const fm_model *m);
/* Tensor of a parameter by runtime name, or NULL. */
FM_API const fm_tensor *fm_model_param(const fm_model *m, const char *name);
/* The runtime state dict (definition order, tied duplicates removed): caller frees with
 * fm_named_tensors_free. */
FM_API fm_status fm_model_state_dict(const fm_model *m, fm_named_tensor **out, size_t *n,
                                     fm_error *err);
/* The state dict a save would write (original layout unless runtime_format). */
FM_API fm_status fm_model_save_state_dict(const fm_model *m, bool runtime_format,
                                          fm_named_tensor **out, size_t *n, fm_error *err);

/* Runs the vision tower (the builder's vision_tower module, through its class forward):
 * pixel_values F32 [N, C*T*P*P], image_grid_thw I64 [n, 3] -> *out F32 [N / merge^2, hidden]
 * (caller frees with fm_tensor_free). `o` (may be NULL: all cores, no progress) sets threads and
 * progress. The model keeps its run context (thread pool, scratch) between calls. One forward
 * at a time per model: calls on one model must not overlap; different models are independent. */
FM_API fm_status fm_model_vision_forward(fm_model *m, const fm_tensor *pixel_values,
                                         const fm_tensor *image_grid_thw, const fm_run_options *o,
                                         fm_tensor *out, fm_error *err);
/* The vision tower's outputs: image embeddings and, for an architecture with DeepStack
 * (Qwen3-VL), the features its decoder adds to the hidden states of the image tokens after its
 * first K layers. */
typedef struct fm_vision_features {
    fm_tensor image_embeds; /* F32 [tokens, hidden] (tokens = N / merge^2) */
    fm_tensor deepstack;    /* F32 [K, tokens, hidden]; data NULL when the model has none */
} fm_vision_features;
/* As fm_model_vision_forward, also asking the tower for its DeepStack features (the tower's
 * second output). *out: caller frees with fm_vision_features_free (zeroed on failure). Pass both
 * tensors to fm_model_forward_text (fm_text_batch.image_embeds, .deepstack_embeds). */
FM_API fm_status fm_model_vision_features(fm_model *m, const fm_tensor *pixel_values,
                                          const fm_tensor *image_grid_thw, const fm_run_options *o,
                                          fm_vision_features *out, fm_error *err);
FM_API void fm_vision_features_free(fm_vision_features *f); /* accepts NULL */
/* Preprocesses n decoded still images (borrowed; apply their EXIF orientation first, as
 * transformers' load_image does) with the model's own image processor and its directory's
 * preprocessor_config.json: pixel_values F32 [N, C*T*P*P] and image_grid_thw I64 [n, 3], ready
 * for fm_model_vision_forward (caller frees both with fm_tensor_free; untouched on failure).
 * FM_ERR_UNSUPPORTED for an architecture without images. */
FM_API fm_status fm_model_preprocess_images(const fm_model *m, const fm_image *imgs, size_t n,
                                            fm_tensor *pixel_values, fm_tensor *image_grid_thw,
                                            fm_error *err);
/* ---- language model: KV cache, positions, forward ------------------------------------------ */
/* What the architecture's language model looks like (FM_ERR_UNSUPPORTED when it has none). */
FM_API fm_status fm_model_lm_info(const fm_model *m, fm_lm_info *out, fm_error *err);

/* A KV cache for `slots` sequences of up to `capacity` positions each, F32 or BF16 (rounded to
 * nearest even on write), one block of layers x 2 x slots x kv_heads x capacity x head_dim
 * elements allocated once. capacity must be >= 1 and <= the model's max_position_embeddings
 * (FM_ERR_LIMIT naming both). Caller frees with fm_kv_cache_free. */
typedef struct fm_kv_cache fm_kv_cache;
FM_API fm_status fm_kv_cache_new(const fm_model *m, int slots, int64_t capacity, fm_dtype dtype,
                                 fm_kv_cache **out, fm_error *err);
FM_API void fm_kv_cache_free(fm_kv_cache *c); /* accepts NULL */
FM_API int64_t fm_kv_cache_capacity(const fm_kv_cache *c);
FM_API int fm_kv_cache_slots(const fm_kv_cache *c);
FM_API fm_dtype fm_kv_cache_dtype(const fm_kv_cache *c);
/* Bytes of cache per position and slot (2 · layers · kv_heads · head_dim · element size). */
FM_API uint64_t fm_kv_cache_bytes_per_token(const fm_kv_cache *c);

/* Prefill positions of a prompt (transformers' get_rope_index): ids [n] with image_grid_thw
 * I64 [k, 3] (NULL or 0 rows: text only) for the images in the order they appear -> pos3
 * [3][n] (caller-allocated; t, h, w rows) and the next free position (tokens generated after
 * the prompt take next, next + 1, ... on all three axes). FM_ERR_INPUT when the image tokens
 * and the grids disagree. */
FM_API fm_status fm_model_rope_index(const fm_model *m, const int64_t *ids, int64_t n,
                                     const fm_tensor *grid_thw, int64_t *pos3, int64_t *next,
                                     fm_error *err);

/* One forward of the language model over `n` rows (borrowed for the call). Rows may belong to
 * several sequences (a prefill of one prompt, one new token of each of several sequences, or a
 * mix): row i is token ids[i] of cache slot slot[i] at position pos[i] (its K/V written there;
 * it attends to positions 0..pos[i] of its slot) with M-RoPE positions pos3[0..2][i]. */
typedef struct fm_text_batch {
    const int64_t *ids;        /* [n] */
    const int64_t *pos3;       /* [3][n]: t row, then h, then w */
    const int32_t *slot, *pos; /* [n] */
    size_t n;
    /* F32 [k, hidden] for the k image tokens among ids, in order (a count mismatch is an
     * error). NULL: image-token ids embed as ordinary tokens, as transformers does for tokens
     * generated after the prompt. */
    const fm_tensor *image_embeds;
    const int32_t
        *logit_rows; /* rows whose logits are wanted, e.g. the last row of each sequence */
    size_t n_logits;
    /* F32 [K, k, hidden]: the DeepStack features of the same k image tokens
     * (fm_vision_features.deepstack); required with image_embeds when the model has DeepStack
     * layers (Qwen3-VL), added to those rows' hidden states after decoder layers 0..K-1. NULL:
     * none. */
    const fm_tensor *deepstack_embeds;
} fm_text_batch;
/* -> *logits F32 [n_logits, vocab] (caller frees with fm_tensor_free). Bad ids, rows outside
 * the cache, image-token/feature count mismatch, missing or misshapen DeepStack features:
 * FM_ERR_INPUT naming the row or the shapes. One forward at a
 * time per model (and per cache). */
FM_API fm_status fm_model_forward_text(fm_model *m, fm_kv_cache *c, const fm_text_batch *b,
                                       const fm_run_options *o, fm_tensor *logits, fm_error *err);

/* A chat prompt as token ids, the way fusemap generate and serve build it: the template
 * rendered for messages_json (a message list, or {"messages": [...], variables...}), each
 * template-emitted image placeholder expanded to its image's token count (t·h·w / merge² from
 * image_grid_thw's rows in order; NULL when there are no images), then encoded with special
 * tokens recognised only in bytes the template wrote — text from the messages never forms a
 * control token (docs/tokenizer.md). *ids: caller frees with fm_free. */
struct fm_tokenizer;
struct fm_chat_template;
FM_API fm_status fm_model_encode_chat(const fm_model *m, const struct fm_tokenizer *tok,
                                      const struct fm_chat_template *tmpl,
                                      const char *messages_json, size_t len,
                                      bool add_generation_prompt, const fm_tensor *image_grid_thw,
                                      int64_t **ids, size_t *n, fm_error *err);

/* The model's run context for o->threads (created or re-created when the thread count changes;
 * progress replaced by o's), borrowed until the next call or fm_model_free. For forwards of
 * modules of the model's tree called directly. */
FM_API fm_status fm_model_run_ctx(fm_model *m, const fm_run_options *o, fm_run_ctx **out,
                                  fm_error *err);

#ifdef __cplusplus
}
#endif
#endif
