/* fusemap loading: the patch registry (monkey patching by class name or regex), weight
 * transforms (renamings and converters with reversible ops), the conversion-mapping
 * registry, and the weight-loading engine that maps checkpoint tensors onto model
 * parameters and back. Model-agnostic: it sees names, shapes and tensors only. */
#ifndef FUSEMAP_LOADING_H
#define FUSEMAP_LOADING_H

#include <stdbool.h>
#include <stddef.h>

#include "fusemap/core.h"
#include "fusemap/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

struct fm_module_class; /* nn.h */

/* ---- patch registry (monkey patching) -------------------------------------------------
 * key (exact class name, or a PCRE2 pattern searched anywhere in the name, like Python's
 * re.search) -> replacement class. Exact keys win over patterns; among patterns the first
 * registered that matches wins. Thread-safe. A build takes a snapshot (fm_patch_map) and
 * resolves only through it, so registry changes never affect a build in progress and a
 * snapshot can be extended for one build alone (scoped patching). */
typedef struct fm_patch_map fm_patch_map;

/* The process-wide registry. */
fm_status fm_patch_register(const char *key, const struct fm_module_class *cls, bool overwrite,
                            fm_error *err);
fm_status fm_patch_unregister(const char *key, fm_error *err); /* unknown key: FM_ERR_NOT_FOUND */
void fm_patch_clear(void);
/* Copy of the registry's keys in registration order; caller frees with fm_patch_keys_free. */
fm_status fm_patch_list(char ***keys, size_t *n, fm_error *err);
void fm_patch_keys_free(char **keys, size_t n);
/* Snapshot of the global registry (caller frees with fm_patch_map_free). */
fm_status fm_patch_snapshot(fm_patch_map **out, fm_error *err);
fm_patch_map *fm_patch_map_new(void);
void fm_patch_map_free(fm_patch_map *m);
/* Adds to a map (not the global registry). Same overwrite rule. Regex keys compile here:
 * a bad pattern is FM_ERR_PATTERN naming it. */
fm_status fm_patch_map_add(fm_patch_map *m, const char *key, const struct fm_module_class *cls,
                           bool overwrite, fm_error *err);
/* Replacement for class `name`, or NULL. No side effects. Safe to call from several threads. */
const struct fm_module_class *fm_patch_map_resolve(const fm_patch_map *m, const char *name);
size_t fm_patch_map_count(const fm_patch_map *m);
/* Resolves through the global registry (same rules), under its lock. */
const struct fm_module_class *fm_patch_resolve(const char *name);

/* ---- conversion operations ------------------------------------------------------------- */
typedef enum fm_op_kind {
    FM_OP_CONV3D_TO_LINEAR = 0, /* 5-D (out,C,kT,kH,kW) -> 2-D (out, C*kT*kH*kW); 2-D passes */
    FM_OP_LINEAR_TO_CONV3D,     /* 2-D -> (out, in_channels, kernel...) */
    FM_OP_CONCATENATE,          /* many sources -> one target, along dim */
    FM_OP_CHUNK,                /* one source -> n targets, torch.chunk semantics along dim */
    FM_OP_MERGE_MODULELIST,     /* stack a list of tensors along dim */
    FM_OP_SPLIT_MODULELIST,     /* unstack along dim (the reverse of merge) */
    FM_OP_TRANSPOSE,            /* swap dim and dim1 */
    FM_OP_KIND_COUNT
} fm_op_kind;

typedef struct fm_op_desc {
    fm_op_kind kind;
    int dim;             /* CONCATENATE/CHUNK/MERGE/SPLIT/TRANSPOSE dim0 */
    int dim1;            /* TRANSPOSE dim1 */
    int64_t in_channels; /* CONV3D<->LINEAR */
    int64_t kernel[3];   /* CONV3D<->LINEAR (kT, kH, kW) */
} fm_op_desc;

const char *fm_op_name(fm_op_kind k); /* "Conv3dToLinear", ... */
/* The reverse op (Chunk<->Concatenate, Merge<->Split, Conv3dToLinear<->LinearToConv3d,
 * Transpose(a,b)<->Transpose(b,a)). Every op has one; bad parameters are FM_ERR_INVALID_ARG. */
fm_status fm_op_reverse(const fm_op_desc *op, fm_op_desc *out, fm_error *err);

/* Tensor-level ops. Dims may be negative (Python style). Any dtype of whole bytes; ops that only
 * reshape never read the data (meta tensors pass). `cast` (FM_DTYPE_INVALID: keep) converts
 * float tensors while copying. Outputs are new references, each freed with fm_tensor_free.
 * Views: reshapes, 2-D pass-through, Transpose that keeps the memory order, and slices that are
 * contiguous (every dim before `dim` of extent 1, e.g. dim 0). */
/* torch.chunk: piece = ceil(n/k), the last may be smaller, so fewer than k pieces can come back
 * (*n_out); a zero-length dim gives k empty pieces. `out` has room for k tensors. */
fm_status fm_op_chunk(const fm_tensor *x, int dim, size_t k, fm_tensor *out, size_t *n_out,
                      fm_error *err);
/* One allocation for the result, whatever n is. */
fm_status fm_op_concatenate(const fm_tensor *xs, size_t n, int dim, fm_dtype cast, fm_tensor *out,
                            fm_error *err);
/* torch.stack (MergeModulelist): one allocation. */
fm_status fm_op_stack(const fm_tensor *xs, size_t n, int dim, fm_dtype cast, fm_tensor *out,
                      fm_error *err);
/* torch.unbind along dim (SplitModulelist): x->shape.dims[dim] tensors into out, the split dim
 * squeezed. Deliberately not torch's squeeze() of every size-1 dim (spec §11.8). */
fm_status fm_op_unstack(const fm_tensor *x, int dim, fm_tensor *out, fm_error *err);
fm_status fm_op_transpose(const fm_tensor *x, int dim0, int dim1, fm_dtype cast, fm_tensor *out,
                          fm_error *err);
/* 5-D (out, C, kT, kH, kW) -> (out, C*kT*kH*kW) view; 2-D passes through; else FM_ERR_SHAPE
 * "Conv3dToLinear expects a 5D or 2D tensor, got ND". */
fm_status fm_op_conv3d_to_linear(const fm_tensor *x, fm_tensor *out, fm_error *err);
/* (out, ...) -> (out, in_channels, kT, kH, kW) view; numel mismatch is FM_ERR_SHAPE
 * "Cannot reshape tensor with shape [..] into [..]". */
fm_status fm_op_linear_to_conv3d(const fm_tensor *x, int64_t in_channels, const int64_t kernel[3],
                                 fm_tensor *out, fm_error *err);
/* One op over a plain tensor list (the single-pattern form of a chain): Chunk splits in[0] into
 * exactly n_targets pieces (another count is FM_ERR_SHAPE), Concatenate and MergeModulelist join
 * in[0..n_in), SplitModulelist unbinds in[0], the others map in[0]. Every output ends in the cast
 * dtype (floats). *out: caller frees with fm_tensors_free(*out, *n_out). */
fm_status fm_op_apply(const fm_op_desc *op, const fm_tensor *in, size_t n_in, size_t n_targets,
                      fm_dtype cast, fm_tensor **out, size_t *n_out, fm_error *err);
void fm_tensors_free(fm_tensor *v, size_t n); /* frees each tensor and v; accepts NULL */

/* ---- transforms ---------------------------------------------------------------------------
 * Patterns follow the spec (loading-engine.md §2): Python-re syntax via PCRE2, target
 * normalisation, ".*." convenience, SEARCH semantics, first-occurrence replacement. */
typedef struct fm_transform fm_transform;

typedef enum fm_transform_kind {
    FM_TRANSFORM_RENAMING = 0,
    FM_TRANSFORM_CONVERTER = 1
} fm_transform_kind;

/* Creating a transform also builds its reverse once and refuses it when the reverse would not
 * be valid (FM_ERR_PATTERN / FM_ERR_INVALID_ARG naming the transform): reversibility is checked
 * here, not discovered at save time. Consequence: a renaming whose target uses several groups
 * ("\2_\1") is refused, since the spec's reversal keeps one group. Bad patterns are
 * FM_ERR_PATTERN naming the pattern with PCRE2's message and offset. *out: caller frees with
 * fm_transform_free. */
fm_status fm_transform_renaming_new(const char *source, const char *target, fm_transform **out,
                                    fm_error *err);
/* Cardinality 1->1, 1->N, N->1; at least one op; op parameters valid and the op chain routable
 * with these pattern counts (no "Undefined Operation" at load or save). Patterns are copied. */
fm_status fm_transform_converter_new(const char *const *sources, size_t n_sources,
                                     const char *const *targets, size_t n_targets,
                                     const fm_op_desc *ops, size_t n_ops, fm_transform **out,
                                     fm_error *err);
/* Transforms are immutable once created: clones share the compiled patterns (reference-counted)
 * and any number of threads may rename with one transform. */
fm_status fm_transform_clone(const fm_transform *t, fm_transform **out, fm_error *err);
/* Reverse transform (targets become sources, ops reversed in reverse order). */
fm_status fm_transform_reverse(const fm_transform *t, fm_transform **out, fm_error *err);
void fm_transform_free(fm_transform *t); /* accepts NULL */
fm_transform_kind fm_transform_kind_of(const fm_transform *t);
size_t fm_transform_source_count(const fm_transform *t);
const char *fm_transform_source(const fm_transform *t, size_t i); /* normalised */
size_t fm_transform_target_count(const fm_transform *t);
const char *fm_transform_target(const fm_transform *t, size_t i); /* normalised */
size_t fm_transform_op_count(const fm_transform *t);
const fm_op_desc *fm_transform_op(const fm_transform *t, size_t i);
/* "WeightConverter(patch_embed\.proj\.weight$ -> patch_embed.linear_proj.weight; Conv3dToLinear)"
 */
const char *fm_transform_describe(const fm_transform *t);
/* Renames `key` with this transform (spec §2.2): leftmost match over the source patterns (the
 * earlier pattern at equal position); the first occurrence of the matched text is replaced by
 * target 0 with "\N" filled from that pattern's groups. *out (caller frees with fm_free) is the
 * new key, or a copy of key when nothing matched; *branch = index of the matching source
 * pattern, or -1. */
fm_status fm_transform_rename(const fm_transform *t, const char *key, char **out, int *branch,
                              fm_error *err);

/* ---- conversion-mapping registry --------------------------------------------------------
 * key (model_type or class name) -> ordered transform list. Process-wide, thread-safe.
 * Built-in: "Qwen2VLForConditionalGeneration" (hub names visual.* / model.* <-> runtime
 * model.visual.* / model.language_model.*). */
typedef struct fm_transform_list {
    fm_transform **items; /* owned */
    size_t count;
} fm_transform_list;

void fm_transform_list_free(fm_transform_list *l); /* frees items and zeroes; accepts NULL */
fm_status fm_transform_list_append(fm_transform_list *l, fm_transform *t,
                                   fm_error *err); /* takes t */
fm_status fm_transform_list_clone(const fm_transform_list *src, fm_transform_list *out,
                                  fm_error *err);

/* Registers a deep copy of `list` under key. Existing key without overwrite: FM_ERR_EXISTS. */
fm_status fm_conversion_mapping_register(const char *key, const fm_transform_list *list,
                                         bool overwrite, fm_error *err);
/* Deep copy into *out; FM_ERR_NOT_FOUND if absent (out zeroed). */
fm_status fm_conversion_mapping_get(const char *key, fm_transform_list *out, fm_error *err);
fm_status fm_conversion_mapping_unregister(const char *key, fm_error *err);
/* Restores the built-in entries only. */
void fm_conversion_mapping_reset(void);

/* ---- the weight-loading engine -----------------------------------------------------------
 * Load: checkpoint keys -> renamings (all, chained, in order) -> first matching converter
 * claims the key -> grouped by first target key -> op chain -> model parameters.
 * Renames and contiguous reshapes stay views; a dtype cast or a concatenation allocates once. */

/* Lazy access to the checkpoint's tensors (views). Only keys routed to a parameter are fetched. */
typedef struct fm_tensor_source {
    size_t count;
    const char *(*name)(void *ctx, size_t i); /* borrowed until the call returns */
    /* Meta information without touching data; optional (NULL): used in conversion messages. */
    void (*info)(void *ctx, size_t i, fm_dtype *dtype, fm_shape *shape);
    /* A view (caller frees with fm_tensor_free). */
    fm_status (*get)(void *ctx, size_t i, fm_tensor *out, fm_error *err);
    void *ctx;
} fm_tensor_source;

/* What the model expects, in definition order. */
typedef struct fm_param_spec {
    const char *name; /* borrowed */
    fm_dtype dtype;   /* the runtime dtype (the cast target when cast is requested) */
    fm_shape shape;
} fm_param_spec;

typedef struct fm_mismatch {
    char *key;
    fm_shape checkpoint_shape, model_shape;
} fm_mismatch;

typedef struct fm_conversion_error {
    char *key;     /* first target key */
    char *message; /* op name, the tensors involved and the reason */
} fm_conversion_error;

/* The load report. Everything owned by the report; free with fm_load_report_free. `missing`
 * excludes the mismatched keys (listed in `mismatched`), as in transformers. `unexpected`
 * (deduplicated, natural-key order) also holds every target a converter would have produced for a
 * key it claimed without a parameter, op outputs with no parameter, and later checkpoint keys that
 * map to a parameter already taken (original name; the first in natural-key order wins). `fused` is
 * left for the caller (fusion) to fill. */
typedef struct fm_load_report {
    char **missing;
    size_t n_missing; /* model keys nothing was loaded into */
    char **unexpected;
    size_t n_unexpected; /* checkpoint keys (after renaming) with no parameter */
    fm_mismatch *mismatched;
    size_t n_mismatched;
    fm_conversion_error *conversion_errors;
    size_t n_conversion_errors;
    char **fired;
    size_t n_fired; /* fm_transform_describe of each transform that fired */
    char **fused;
    size_t n_fused; /* "path: Class -> FusedClass (family)" (fusion) */
} fm_load_report;
void fm_load_report_free(fm_load_report *r); /* accepts NULL */

typedef struct fm_weights_load_options {
    /* FM_DTYPE_INVALID = keep the stored dtypes ("auto"). Otherwise casting is on: a float tensor
     * ends in its parameter's dtype (fm_param_spec.dtype, spec §6.5 rule 3) when that is a float
     * dtype; integer tensors and integer parameters are never cast. */
    fm_dtype cast;
} fm_weights_load_options;
void fm_weights_load_options_init(fm_weights_load_options *o);

/* Loads: out_tensors[i] receives parameter i's tensor (or stays a zeroed tensor when missing
 * or mismatched). *fired_out (may be NULL) is a clone of the transforms that fired — renamed or
 * claimed a key that was routed to a parameter — in list order (what a save must reverse);
 * caller frees it with fm_transform_list_free. Shape mismatches and conversion errors go to the
 * report and make the status FM_ERR_SHAPE / FM_ERR_CONVERSION (the first one in processing
 * order names the key, and the model and checkpoint shapes, in err); everything loaded so far is
 * released then and *fired_out is empty, the report stays filled. Other failures (out of memory,
 * the source's errors, bad arguments) leave the report empty too. `report` may be NULL. Missing
 * and unexpected keys are not errors here: the caller decides. */
fm_status fm_weights_load(const fm_transform_list *transforms, const fm_tensor_source *src,
                          const fm_param_spec *params, size_t n_params,
                          const fm_weights_load_options *o, fm_tensor *out_tensors,
                          fm_transform_list *fired_out, fm_load_report *report, fm_error *err);

typedef struct fm_named_tensor {
    char *name;       /* owned */
    fm_tensor tensor; /* one reference */
} fm_named_tensor;
void fm_named_tensors_free(fm_named_tensor *v, size_t n); /* frees names, tensors and v */

/* Save direction: runs the reverse of each fired transform (reversed list order) over the
 * runtime state dict (names + tensors, in definition order): the first reversed converter that
 * matches claims a key, then every reversed renaming applies (spec §8.2). Output order: the order
 * in which each output key first appears while walking the input in natural-key order. Renamed
 * tensors stay the input tensors (new references). Two inputs reverting to one key, or a failing
 * op, are FM_ERR_CONVERSION (nothing is dropped silently). *out: caller frees with
 * fm_named_tensors_free. */
fm_status fm_weights_revert(const fm_transform_list *fired, const fm_named_tensor *state, size_t n,
                            fm_named_tensor **out, size_t *n_out, fm_error *err);

/* Natural-key comparison (dot segments, digit runs as integers, digits before non-digits). */
int fm_natural_key_cmp(const char *a, const char *b);

#ifdef __cplusplus
}
#endif
#endif
