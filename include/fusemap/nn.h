/* fusemap nn: module classes (named C vtables), the class registry, and the module tree
 * built through it. A build resolves every class by name through a patch snapshot and
 * per-instance overrides first, which is where monkey patching and fusion apply. */
#ifndef FUSEMAP_NN_H
#define FUSEMAP_NN_H

#include <stdbool.h>
#include <stddef.h>

#include "fusemap/core.h"
#include "fusemap/loading.h"
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
/* fm_args from a compound literal: FM_ARGS(FM_I("in", 1280), FM_I("out", 3840), FM_D("eps", 1e-6)). */
#define FM_I(k, v) {.key = (k), .i = (v)}
#define FM_D(k, v) {.key = (k), .d = (v)}
#define FM_ARGS(...) ((fm_args){(const fm_arg[]){__VA_ARGS__}, sizeof((fm_arg[]){__VA_ARGS__}) / sizeof(fm_arg)})
#define FM_NO_ARGS ((fm_args){NULL, 0})
int64_t fm_args_int(const fm_args *a, const char *key, int64_t dflt);
double fm_args_double(const fm_args *a, const char *key, double dflt);
bool fm_args_has(const fm_args *a, const char *key);

/* A module class. Instances are created only through fm_module_create, so any class can be
 * replaced by name before instantiation. */
typedef struct fm_module_class {
    const char *name; /* e.g. "Conv3d", "PatchEmbed", "FusedPatchEmbed" */
    /* Declares parameters (fm_module_add_param) and creates children (fm_module_create);
     * may store class state in fm_module_set_impl. */
    fm_status (*init)(fm_module *self, fm_build_ctx *ctx, const fm_args *args, fm_error *err);
    /* Generic forward: n_in input tensors -> n_out outputs (allocated by the module unless
     * the caller passes allocated ones, see each class). NULL when the class does not run. */
    fm_status (*forward)(fm_module *self, fm_run_ctx *rc, const fm_tensor *in, size_t n_in,
                         fm_tensor *out, size_t n_out, fm_error *err);
    /* Frees class state stored with fm_module_set_impl (NULL if none). */
    void (*free_impl)(void *impl);
    const void *data; /* class-level constant data (e.g. the original class of a fused one) */
} fm_module_class;

/* ---- class registry (process-wide, thread-safe) ---------------------------------------- */
/* Registers `cls` (borrowed for the life of the process / until unregistered) under cls->name. */
fm_status fm_class_register(const fm_module_class *cls, bool overwrite, fm_error *err);
const fm_module_class *fm_class_lookup(const char *name);
/* Registers the built-in classes once (called by every build; idempotent, thread-safe). */
void fm_nn_register_builtins(void);

/* ---- build context ---------------------------------------------------------------------- */
typedef struct fm_build_options {
    const fm_patch_map *patches; /* borrowed for the build; NULL = none */
    fm_dtype dtype;              /* parameter dtype declared on the meta tree */
    const void *model_cfg;       /* builder-specific parsed config, borrowed */
} fm_build_options;

/* Per-instance override: the module at `path` gets `cls` (fusion). */
fm_status fm_build_ctx_new(const fm_build_options *o, fm_build_ctx **out, fm_error *err);
fm_status fm_build_ctx_override(fm_build_ctx *ctx, const char *path, const fm_module_class *cls,
                                fm_error *err);
void fm_build_ctx_free(fm_build_ctx *ctx);
const void *fm_build_ctx_model_cfg(const fm_build_ctx *ctx);
fm_dtype fm_build_ctx_dtype(const fm_build_ctx *ctx);

/* Creates child `name` of `parent` (NULL for the root, name "") of class `class_name`,
 * resolved as: per-instance override for its path, then the patch map, then the registry.
 * The child is owned by its parent (the root by the caller: fm_module_free). */
fm_status fm_module_create(fm_build_ctx *ctx, fm_module *parent, const char *name,
                           const char *class_name, const fm_args *args, fm_module **out,
                           fm_error *err);
void fm_module_free(fm_module *m); /* frees the subtree; accepts NULL */

/* ---- module tree ------------------------------------------------------------------------ */
typedef struct fm_param {
    char *name;       /* local name ("weight"), owned by the module */
    fm_tensor tensor; /* meta until loaded; the module holds one reference */
} fm_param;

fm_status fm_module_add_param(fm_module *m, const char *name, fm_dtype dt, const fm_shape *shape,
                              fm_error *err);
const char *fm_module_name(const fm_module *m);  /* attribute name; "" for root */
const char *fm_module_path(const fm_module *m);  /* dotted path from the root; "" for root */
const fm_module_class *fm_module_class_of(const fm_module *m);
/* The class originally asked for (differs from fm_module_class_of when patched/fused). */
const char *fm_module_requested_class(const fm_module *m);
fm_module *fm_module_parent(const fm_module *m);
size_t fm_module_child_count(const fm_module *m);
fm_module *fm_module_child(const fm_module *m, size_t i);
fm_module *fm_module_child_named(const fm_module *m, const char *name);
/* Module at dotted path relative to m ("" = m), or NULL. */
fm_module *fm_module_find(fm_module *m, const char *path);
size_t fm_module_param_count(const fm_module *m);
fm_param *fm_module_param(fm_module *m, size_t i);
fm_param *fm_module_param_named(fm_module *m, const char *name);
/* Removes and frees child `name` (used by fused classes that replace a submodule). */
fm_status fm_module_remove_child(fm_module *m, const char *name, fm_error *err);
void fm_module_set_impl(fm_module *m, void *impl); /* owned; freed with cls->free_impl */
void *fm_module_impl(const fm_module *m);

/* Depth-first, definition order (module itself before its children), like named_modules(). */
typedef int (*fm_module_visit_fn)(fm_module *m, int depth, void *ctx); /* nonzero stops */
int fm_module_walk(fm_module *root, fm_module_visit_fn fn, void *ctx);

/* named_parameters(): full dotted names in definition order. */
typedef struct fm_param_ref {
    char *name;       /* full dotted name, owned by the list */
    fm_module *module; /* borrowed */
    size_t index;      /* parameter index in module */
} fm_param_ref;
fm_status fm_module_named_params(fm_module *root, fm_param_ref **out, size_t *n, fm_error *err);
void fm_param_refs_free(fm_param_ref *v, size_t n);

/* ---- running ------------------------------------------------------------------------------ */
struct fm_run_ctx {
    int threads;                                    /* 0 = online cores */
    void (*progress)(void *ctx, int done, int total); /* may be NULL */
    void *progress_ctx;
};

/* ---- model builders (one per architecture) -------------------------------------------- */
struct fm_config;

typedef struct fm_model_builder {
    const char *model_type;   /* config.json "model_type", e.g. "qwen2_vl" */
    const char *architecture; /* root class name, e.g. "Qwen2VLForConditionalGeneration" */
    /* Parses and validates config.json (`origin` names it in errors); *out is freed with free_config. */
    fm_status (*parse_config)(const struct fm_config *cfg, const char *origin, void **out, fm_error *err);
    void (*free_config)(void *cfg);
    /* Builds the root module (class `architecture`) through ctx. */
    fm_status (*build)(fm_build_ctx *ctx, const void *cfg, fm_module **root, fm_error *err);
    /* Name of the parameter `param` is tied to, or NULL. */
    const char *(*tied_to)(const void *cfg, const char *param);
} fm_model_builder;

/* Registers a builder (borrowed for the life of the process). Same model_type twice without
 * overwrite: FM_ERR_EXISTS. */
fm_status fm_model_builder_register(const fm_model_builder *b, bool overwrite, fm_error *err);
/* By model_type, else by architecture name; NULL if none. */
const fm_model_builder *fm_model_builder_find(const char *model_type, const char *architecture);

#ifdef __cplusplus
}
#endif
#endif
