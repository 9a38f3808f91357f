/* fusemap models: the library's start-up (fm_init), a loaded model (module tree + weights + the
 * transforms that fired), fm_from_pretrained / fm_save_pretrained, and running it. */
#ifndef FUSEMAP_MODELS_H
#define FUSEMAP_MODELS_H

#include <stdbool.h>
#include <stdint.h>

#include "fusemap/core.h"
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
fm_status fm_init(fm_error *err);
/* The model_type values of the built-in architectures, in table order (static strings). */
const char *const *fm_model_types(size_t *n);

typedef struct fm_load_options {
    fm_dtype dtype; /* FM_DTYPE_INVALID = "auto" (as stored); F32/BF16/F16 cast floats on load */
    bool strict;    /* missing or unexpected keys (and a fusion that matches nothing) are errors */
    bool meta_only; /* build the tree (names, shapes, dtypes) without loading any weight */
    /* fusion_config as JSON text, exactly the Python argument ('{"patch_embeddings": true}').
     * NULL: use config.json's fusion_config if present. "{}" disables a stored one. Borrowed. */
    const char *fusion_config;
} fm_load_options;
void fm_load_options_init(fm_load_options *o);

/* Loads DIR (config.json + weights). *out: caller frees with fm_model_free. report (may be
 * NULL) receives the load report (caller frees with fm_load_report_free) even on failure. */
fm_status fm_from_pretrained(const char *dir, const fm_load_options *o, fm_model **out,
                             fm_load_report *report, fm_error *err);
void fm_model_free(fm_model *m); /* accepts NULL */

typedef struct fm_save_pretrained_options {
    bool
        runtime_format; /* false (default): original checkpoint layout; true: fused/runtime names */
    /* 0 (default): a sharded source keeps its shard layout in an original-format save, else one
     * split at FM_DEFAULT_MAX_SHARD_SIZE (50 GB, transformers v5); > 0: greedy split at that size.
     */
    uint64_t max_shard_size;
} fm_save_pretrained_options;
void fm_save_pretrained_options_init(fm_save_pretrained_options *o);

/* Saves weights + config.json (every original key kept, fusion_config recorded) atomically. */
fm_status fm_save_pretrained(const fm_model *m, const char *dir,
                             const fm_save_pretrained_options *o, fm_error *err);

/* Accessors (borrowed until fm_model_free). */
fm_module *fm_model_root(const fm_model *m);
const char *fm_model_type(const fm_model *m);
const char *fm_model_architecture(const fm_model *m);
const fm_config *fm_model_config(const fm_model *m);
/* The fusion_config in effect (compact JSON) or NULL when none. */
const char *fm_model_fusion_config(const fm_model *m);
/* Tensor of a parameter by runtime name, or NULL. */
const fm_tensor *fm_model_param(const fm_model *m, const char *name);
/* The runtime state dict (definition order, tied duplicates removed): caller frees with
 * fm_named_tensors_free. */
fm_status fm_model_state_dict(const fm_model *m, fm_named_tensor **out, size_t *n, fm_error *err);
/* The state dict a save would write (original layout unless runtime_format). */
fm_status fm_model_save_state_dict(const fm_model *m, bool runtime_format, fm_named_tensor **out,
                                   size_t *n, fm_error *err);

/* Runs the vision tower (the builder's vision_tower module, through its class forward):
 * pixel_values F32 [N, C*T*P*P], image_grid_thw I64 [n, 3] -> *out F32 [N / merge^2, hidden]
 * (caller frees with fm_tensor_free). `o` (may be NULL: all cores, no progress) sets threads and
 * progress. The model keeps its run context (thread pool, scratch) between calls. One forward
 * at a time per model: calls on one model must not overlap; different models are independent. */
fm_status fm_model_vision_forward(fm_model *m, const fm_tensor *pixel_values,
                                  const fm_tensor *image_grid_thw, const fm_run_options *o,
                                  fm_tensor *out, fm_error *err);
/* The model's run context for o->threads (created or re-created when the thread count changes;
 * progress replaced by o's), borrowed until the next call or fm_model_free. For forwards of
 * modules of the model's tree called directly. */
fm_status fm_model_run_ctx(fm_model *m, const fm_run_options *o, fm_run_ctx **out, fm_error *err);

#ifdef __cplusplus
}
#endif
#endif
