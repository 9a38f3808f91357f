/* fusemap nn: module classes (named C vtables), the class registry, and the module tree
 * built through it. A build resolves every class by name through a patch snapshot and
 * per-instance overrides first, which is where monkey patching and fusion apply. */
#ifndef FUSEMAP_NN_H
#define FUSEMAP_NN_H

#include <stdbool.h>
#include <stddef.h>

#include "fusemap/core.h"
#include "fusemap/image.h"
#include "fusemap/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct fm_module fm_module;
typedef struct fm_build_ctx fm_build_ctx;
typedef struct fm_run_ctx fm_run_ctx;

/* Constructor arguments: a small ordered bag of named numbers (kwargs). */
typedef struct fm_arg {
    const char *key; /* borrowed */
    int64_t i;
    double d;
} fm_arg;
typedef struct fm_args {
    const fm_arg *v; /* borrowed for the duration of the constructor */
    size_t n;
} fm_args;
/* fm_args from a compound literal: FM_ARGS(FM_I("in", 1280), FM_I("out", 3840), FM_D("eps", 1e-6)).
 */
#define FM_I(k, v)                                                                                 \
    { .key = (k), .i = (v) }
#define FM_D(k, v)                                                                                 \
    { .key = (k), .d = (v) }
#define FM_ARGS(...)                                                                               \
    ((fm_args){(const fm_arg[]){__VA_ARGS__}, sizeof((fm_arg[]){__VA_ARGS__}) / sizeof(fm_arg)})
#define FM_NO_ARGS ((fm_args){NULL, 0})
FM_API int64_t fm_args_int(const fm_args *a, const char *key, int64_t dflt);
FM_API double fm_args_double(const fm_args *a, const char *key, double dflt);
FM_API bool fm_args_has(const fm_args *a, const char *key);

/* A module class. Instances are created only through fm_module_create, so any class can be
 * replaced by name before instantiation.
 *
 * The forward protocol (docs/extending.md): a module that computes has `forward`, reached
 * through fm_module_forward; a container calls its children the same way and never asks which
 * class (fused or not) it got. `prepare` runs once before the first forward after a load (and
 * again after fm_module_invalidate): it turns parameters into their runtime form (dtype
 * conversion, packing), caches children and checks geometry, so forward allocates nothing but
 * scratch from the run context. */
typedef struct fm_module_class {
    const char *name; /* e.g. "Conv3d", "PatchEmbed", "FusedPatchEmbed" */
    /* Declares parameters (fm_module_add_param) and creates children (fm_module_create);
     * may store class state in fm_module_set_impl. */
    fm_status (*init)(fm_module *self, fm_build_ctx *ctx, const fm_args *args, fm_error *err);
    /* Optional. Called by fm_module_prepare after the module's children are prepared;
     * parameters hold data then. Must be callable again (replacing what it made before). */
    fm_status (*prepare)(fm_module *self, fm_run_ctx *rc, fm_error *err);
    /* n_in input tensors (borrowed for the call) -> n_out outputs. An output whose `data` is
     * non-NULL on entry is written there (the caller sized it: dtype and shape must be what
     * the module produces); otherwise the module places it in the run context's scratch
     * (fm_run_tensor), valid until the caller releases a mark taken before the call. Each
     * class documents its inputs, outputs and whether an output may alias an input. NULL when
     * the class does not run on its own. */
    fm_status (*forward)(fm_module *self, fm_run_ctx *rc, const fm_tensor *in, size_t n_in,
                         fm_tensor *out, size_t n_out, fm_error *err);
    /* Frees class state stored with fm_module_set_impl (NULL if none). */
    void (*free_impl)(void *impl);
    const void *data; /* class-level constant data (e.g. the original class of a fused one) */
} fm_module_class;

/* ---- class registry (process-wide, thread-safe) ---------------------------------------- */
/* Registers `cls` (borrowed for the life of the process) under cls->name. A built-in name
 * without overwrite: FM_ERR_EXISTS (with overwrite the replacement applies to later builds,
 * which is monkey patching by registration; prefer fm_patch_register). */
FM_API fm_status fm_class_register(const fm_module_class *cls, bool overwrite, fm_error *err);
FM_API const fm_module_class *fm_class_lookup(const char *name);
/* Registers a copy of class `existing` under another name (e.g. an architecture's own name for
 * a generic layer: "Qwen2RMSNorm" for "RMSNorm"), so patches by either name apply. The copy
 * lives for the process. FM_ERR_NOT_FOUND when `existing` is not registered. */
FM_API fm_status fm_class_register_alias(const char *name, const char *existing, bool overwrite,
                                         fm_error *err);
/* Registers the generic layer classes once (idempotent, thread-safe); every other registration
 * and every build calls it first, so a user class cannot silently take a built-in's name.
 * Fails only when memory ran out at the first call (the failure is then permanent). */
FM_API fm_status fm_nn_register_builtins(fm_error *err);

/* ---- build context ---------------------------------------------------------------------- */
typedef struct fm_build_options {
    /* Consulted for every class name before the registry (monkey patching): returns the
     * replacement class or NULL. NULL = none. fm_from_pretrained passes a snapshot of the patch
     * registry here (fm_patch_map_resolve, fusemap/loading.h). */
    const struct fm_module_class *(*resolve)(const void *resolve_ctx, const char *class_name);
    const void *resolve_ctx; /* borrowed for the build */
    fm_dtype dtype;          /* parameter dtype declared on the meta tree */
    const void *model_cfg;   /* builder-specific parsed config, borrowed */
} fm_build_options;

/* Per-instance override: the module at `path` gets `cls` (fusion). */
FM_API fm_status fm_build_ctx_new(const fm_build_options *o, fm_build_ctx **out, fm_error *err);
FM_API fm_status fm_build_ctx_override(fm_build_ctx *ctx, const char *path,
                                       const fm_module_class *cls, fm_error *err);
FM_API void fm_build_ctx_free(fm_build_ctx *ctx);
FM_API const void *fm_build_ctx_model_cfg(const fm_build_ctx *ctx);
FM_API fm_dtype fm_build_ctx_dtype(const fm_build_ctx *ctx);

/* Creates child `name` of `parent` (NULL for the root, name "") of class `class_name`,
 * resolved as: per-instance override for its path, then the patch map, then the registry.
 * The child is owned by its parent (the root by the caller: fm_module_free). */
FM_API fm_status fm_module_create(fm_build_ctx *ctx, fm_module *parent, const char *name,
                                  const char *class_name, const fm_args *args, fm_module **out,
                                  fm_error *err);
FM_API void fm_module_free(fm_module *m); /* frees the subtree; accepts NULL */

/* ---- module tree ------------------------------------------------------------------------ */
typedef struct fm_param {
    char *name;       /* local name ("weight"), owned by the module */
    fm_tensor tensor; /* meta until loaded; the module holds one reference */
} fm_param;

FM_API fm_status fm_module_add_param(fm_module *m, const char *name, fm_dtype dt,
                                     const fm_shape *shape, fm_error *err);
FM_API const char *fm_module_name(const fm_module *m); /* attribute name; "" for root */
FM_API const char *fm_module_path(const fm_module *m); /* dotted path from the root; "" for root */
FM_API const fm_module_class *fm_module_class_of(const fm_module *m);
/* The class originally asked for (differs from fm_module_class_of when patched/fused). */
FM_API const char *fm_module_requested_class(const fm_module *m);
FM_API fm_module *fm_module_parent(const fm_module *m);
FM_API size_t fm_module_child_count(const fm_module *m);
FM_API fm_module *fm_module_child(const fm_module *m, size_t i);
FM_API fm_module *fm_module_child_named(const fm_module *m, const char *name);
/* Module at dotted path relative to m ("" = m), or NULL. */
FM_API fm_module *fm_module_find(fm_module *m, const char *path);
FM_API size_t fm_module_param_count(const fm_module *m);
FM_API fm_param *fm_module_param(fm_module *m, size_t i);
FM_API fm_param *fm_module_param_named(fm_module *m, const char *name);
/* Removes and frees child `name` (used by fused classes that replace a submodule). */
FM_API fm_status fm_module_remove_child(fm_module *m, const char *name, fm_error *err);
FM_API void fm_module_set_impl(fm_module *m, void *impl); /* owned; freed with cls->free_impl */
/* The impl becomes a copy of the n bytes at v (fm_malloc'd: the class frees it with fm_free or
 * its free_impl). FM_ERR_NOMEM naming the module. */
FM_API fm_status fm_module_set_impl_copy(fm_module *m, const void *v, size_t n, fm_error *err);
FM_API void *fm_module_impl(const fm_module *m);

/* Depth-first, definition order (module itself before its children), like named_modules(). */
typedef int (*fm_module_visit_fn)(fm_module *m, int depth, void *ctx); /* nonzero stops */
FM_API int fm_module_walk(fm_module *root, fm_module_visit_fn fn, void *ctx);

/* named_parameters(): full dotted names in definition order. */
typedef struct fm_param_ref {
    char *name;        /* full dotted name, owned by the list */
    fm_module *module; /* borrowed */
    size_t index;      /* parameter index in module */
} fm_param_ref;
FM_API fm_status fm_module_named_params(fm_module *root, fm_param_ref **out, size_t *n,
                                        fm_error *err);
FM_API void fm_param_refs_free(fm_param_ref *v, size_t n);

/* ---- running -------------------------------------------------------------------------------
 * A run context holds what a forward needs besides the module tree: the thread pool every
 * kernel of the forward runs on (fusemap does its own threading; OpenBLAS is used with one
 * thread, see docs/threads.md), a scratch arena and the progress callback. One run context
 * serves one forward at a time; fm_model owns one per model. */
typedef struct fm_run_options {
    int threads;                                      /* 0 = online cores */
    void (*progress)(void *ctx, int done, int total); /* may be NULL; called from the forward */
    void *progress_ctx;
} fm_run_options;
FM_API void fm_run_options_init(fm_run_options *o);

/* Caller frees *out with fm_run_ctx_free. FM_ERR_INVALID_ARG for threads < 0 or > 1024. */
FM_API fm_status fm_run_ctx_new(const fm_run_options *o, fm_run_ctx **out, fm_error *err);
FM_API void fm_run_ctx_free(fm_run_ctx *rc); /* accepts NULL */
/* Threads of the pool (the options' value, 0 resolved to the online cores). */
FM_API int fm_run_ctx_threads(const fm_run_ctx *rc);
/* Replaces the progress callback (NULL clears it). */
FM_API void fm_run_ctx_set_progress(fm_run_ctx *rc,
                                    void (*progress)(void *ctx, int done, int total), void *ctx);
/* Reports progress through the callback, if any. */
FM_API void fm_run_ctx_progress(fm_run_ctx *rc, int done, int total);

/* Scratch arena: bump allocation, released back to a mark. After the first forward of a shape
 * the arena holds one block of the high-water size, so later forwards allocate nothing. */
FM_API size_t fm_run_mark(const fm_run_ctx *rc);
FM_API void fm_run_release(fm_run_ctx *rc, size_t mark);
/* `bytes` of 64-byte aligned scratch, valid until a mark taken before the call is released. */
FM_API fm_status fm_run_scratch(fm_run_ctx *rc, size_t bytes, void **out, fm_error *err);
/* A tensor whose data is scratch (storage NULL: fm_tensor_free only zeroes the struct). */
FM_API fm_status fm_run_tensor(fm_run_ctx *rc, fm_dtype dt, const fm_shape *shape, fm_tensor *out,
                               fm_error *err);

/* ---- forward -------------------------------------------------------------------------------- */
/* Runs m's class forward (preparing m first if needed). FM_ERR_UNSUPPORTED when the class has
 * no forward. */
FM_API fm_status fm_module_forward(fm_module *m, fm_run_ctx *rc, const fm_tensor *in, size_t n_in,
                                   fm_tensor *out, size_t n_out, fm_error *err);
/* Prepares the subtree (children before parents) where not prepared yet. */
FM_API fm_status fm_module_prepare(fm_module *m, fm_run_ctx *rc, fm_error *err);
/* Marks the subtree unprepared (after its parameters changed). */
FM_API void fm_module_invalidate(fm_module *m);
FM_API bool fm_module_is_prepared(const fm_module *m);
/* Output i for a forward: out[i] as the caller passed it when its data is set (checked against
 * dt and shape: FM_ERR_INPUT naming the module), else a scratch tensor. */
FM_API fm_status fm_module_output(fm_module *m, fm_run_ctx *rc, fm_tensor *out, fm_dtype dt,
                                  const fm_shape *shape, fm_error *err);
/* Checks in[i] is of dtype dt with `ndim` dims whose last is `last` (last < 0: any): else
 * FM_ERR_INPUT "module 'path': input i is ..., expected ...". */
FM_API fm_status fm_module_check_input(const fm_module *m, const fm_tensor *in, size_t n_in,
                                       size_t i, fm_dtype dt, int ndim, int64_t last,
                                       fm_error *err);

/* ---- geometry of the generic layers (for fusion families and parents) -------------------
 * FM_ERR_INVALID_ARG when m is not of that layer (its class's forward is not the layer's). */
typedef struct fm_linear_geometry {
    int64_t in_features, out_features;
    bool bias;
} fm_linear_geometry;
FM_API fm_status fm_linear_geometry_of(const fm_module *m, fm_linear_geometry *out, fm_error *err);

typedef struct fm_conv3d_geometry {
    int64_t in_channels, out_channels, groups;
    int64_t kernel[3], stride[3], padding[3], dilation[3]; /* (T, H, W) */
    bool bias;
} fm_conv3d_geometry;
FM_API fm_status fm_conv3d_geometry_of(const fm_module *m, fm_conv3d_geometry *out, fm_error *err);

/* Whether m computes a pointwise activation; *kind receives it (fm_activation). */
typedef enum fm_activation {
    FM_ACTIVATION_QUICK_GELU = 0, /* x * sigmoid(f32(1.702) * x) */
    FM_ACTIVATION_GELU,           /* 0.5 * x * (1 + erf(x / sqrt(2)))  (exact erf) */
    FM_ACTIVATION_SILU,           /* x * sigmoid(x) */
    FM_ACTIVATION_GELU_TANH,      /* 0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3))) */
    FM_ACTIVATION_COUNT
} fm_activation;
FM_API bool fm_activation_of(const fm_module *m, fm_activation *kind);
/* transformers' ACT2FN names ("quick_gelu", "gelu", "silu"/"swish", "gelu_pytorch_tanh"/
 * "gelu_new") -> activation; false when unknown or NULL. */
FM_API bool fm_activation_from_name(const char *name, fm_activation *out);
/* The module class computing `a` ("QuickGELUActivation", "GELUActivation", "SiLUActivation",
 * "GELUTanh"). */
FM_API const char *fm_activation_class_name(fm_activation a);

/* Linear module m, then a pointwise activation applied to each output tile while it is in cache
 * (x: F32 [..., in]; y: output as in fm_module_output). When m's class is not the generic
 * Linear (patched), runs m's forward and the activation as a second pass: same values. */
FM_API fm_status fm_linear_forward_act(fm_module *m, fm_run_ctx *rc, const fm_tensor *x,
                                       fm_tensor *y, fm_activation act, fm_error *err);

/* Output features [first, first + count) of Linear module m only: y = x · W[first:first+count]ᵀ
 * (+ b[first:first+count]), x F32 [..., in], y as in fm_module_output with last dim count. For
 * a fused Linear whose rows serve several consumers (the qkv and gate_up families): each
 * computes its rows straight into its own buffer. A patched Linear runs its forward and hands
 * out the columns. FM_ERR_INVALID_ARG when the range is outside the output features. */
FM_API fm_status fm_linear_forward_rows(fm_module *m, fm_run_ctx *rc, const fm_tensor *x,
                                        int64_t first, int64_t count, fm_tensor *y, fm_error *err);

/* ---- functional ops on row-major f32 matrices (for forwards written outside the library) ----
 * A matrix view: rows x cols floats, row stride ld >= cols, borrowed. Column slices of a wider
 * buffer (e.g. q, k, v inside one [N][3D] projection) are views with ld = 3D. */
typedef struct fm_mat {
    float *data;
    int64_t rows, cols, ld;
} fm_mat;
/* The [rows][last dim] view of a contiguous F32 tensor (NULL data when t is not F32). */
FM_API fm_mat fm_mat_of(const fm_tensor *t);
/* Columns [c0, c1) of m. */
FM_API fm_mat fm_mat_cols(fm_mat m, int64_t c0, int64_t c1);

/* Rotary embedding (rotate_half pairing, d <-> d + head_dim/2) in place on `heads` heads of
 * head_dim columns of x; cos, sin: [x.rows][head_dim/2]. */
FM_API fm_status fm_op_rope(fm_run_ctx *rc, fm_mat x, int heads, int head_dim, const float *cos_t,
                            const float *sin_t, fm_error *err);
/* Attention within segments [cu[s], cu[s+1]) of the rows, no mask inside a segment (the
 * vision towers' varlen attention): per head h (columns h*head_dim..+head_dim of q, k, v and o)
 * o = softmax(q kᵀ · scale) v, softmax in f32. cu: [n_seg + 1], cu[0] = 0, increasing, last =
 * rows. o must not overlap q, k or v. */
FM_API fm_status fm_op_attention(fm_run_ctx *rc, fm_mat o, fm_mat q, fm_mat k, fm_mat v,
                                 const int32_t *cu, int n_seg, int heads, int head_dim, float scale,
                                 fm_error *err);
/* y = act(x) elementwise over n floats (y may equal x). */
FM_API void fm_op_activation(fm_run_ctx *rc, float *y, const float *x, int64_t n,
                             fm_activation act);

/* ---- model builders (one per architecture) -------------------------------------------- */
#define FM_LM_MAX_EOS 8
/* What the generation API needs to know of a language model. */
typedef struct fm_lm_info {
    int64_t layers, kv_heads, head_dim, hidden, vocab, max_positions;
    int64_t image_token_id, vision_start_token_id, vision_end_token_id; /* -1 when absent */
    int64_t spatial_merge_size; /* image tokens = t·h·w / merge² */
    int64_t eos[FM_LM_MAX_EOS]; /* config.json eos_token_id */
    int n_eos;
} fm_lm_info;

struct fm_config;

typedef struct fm_model_builder {
    const char *model_type;   /* config.json "model_type", e.g. "qwen2_vl" */
    const char *architecture; /* root class name, e.g. "Qwen2VLForConditionalGeneration" */
    /* Parses and validates config.json (`origin` names it in errors); *out is freed with
     * free_config. */
    fm_status (*parse_config)(const struct fm_config *cfg, const char *origin, void **out,
                              fm_error *err);
    void (*free_config)(void *cfg);
    /* Builds the root module (class `architecture`) through ctx. */
    fm_status (*build)(fm_build_ctx *ctx, const void *cfg, fm_module **root, fm_error *err);
    /* Name of the parameter `param` is tied to, or NULL. */
    const char *(*tied_to)(const void *cfg, const char *param);
    /* Optional: preprocesses n still images (borrowed) as the architecture's image processor,
     * with the parameters of model_dir's preprocessor_config.json (defaults when absent):
     * pixel_values F32 [N, C*T*P*P] and image_grid_thw I64 [n, 3], caller frees both. */
    fm_status (*preprocess_images)(const char *model_dir, const fm_image *imgs, size_t n,
                                   fm_tensor *pixel_values, fm_tensor *image_grid_thw,
                                   fm_error *err);
    /* Text generation (NULL for an architecture that does not generate). The root module's
     * forward is then the language model: in = {input_ids I64 [T], positions I64 [3][T] (M-RoPE
     * t, h, w rows), image_embeds F32 [k][hidden] (k = the image tokens among the ids, in order;
     * k may be 0), KV cache [layers][2][slots][kv_heads][capacity][head_dim] F32 or BF16, rows
     * I32 [T][2] (cache slot, position of each id), logit_rows I32 [R] (which rows' logits),
     * optionally deepstack F32 [K][k][hidden] (the vision tower's second output, for the same
     * image tokens)} -> logits F32 [R][vocab]. lm_info describes it; rope_index gives the prefill
     * positions (transformers' get_rope_index) and the next free position. */
    void (*lm_info)(const void *cfg, struct fm_lm_info *out);
    fm_status (*rope_index)(const void *cfg, const int64_t *ids, int64_t n, const int64_t *grid_thw,
                            int64_t n_images, int64_t *pos3, int64_t *next, fm_error *err);
    /* Module path of the vision tower (in: pixel_values F32 [N, C*T*P*P], image_grid_thw I64
     * [n, 3]; out: image embeddings F32 [tokens, hidden] and, asked for a second output by a
     * tower with DeepStack, the features F32 [K][tokens][hidden]; a tower without leaves it
     * untouched), or NULL when there is none. */
    const char *vision_tower;
} fm_model_builder;

/* Registers a builder (borrowed for the life of the process). Same model_type twice without
 * overwrite: FM_ERR_EXISTS. */
FM_API fm_status fm_model_builder_register(const fm_model_builder *b, bool overwrite,
                                           fm_error *err);
/* By model_type, else by architecture name; NULL if none. */
FM_API const fm_model_builder *fm_model_builder_find(const char *model_type,
                                                     const char *architecture);

#ifdef __cplusplus
}
#endif
#endif
