/* fusemap fusion: opt-in replacement of submodules by fused runtime equivalents at load
 * time, with the weight transforms that map the checkpoint into the fused layout and back.
 * Families are registered in a table (built-in: "patch_embeddings"); a program can add its
 * own without touching the library (see examples/custom_fusion.c, docs/extending.md). */
#ifndef FUSEMAP_FUSION_H
#define FUSEMAP_FUSION_H

#include <stdbool.h>
#include <stddef.h>

#include "fusemap/core.h"
#include "fusemap/io.h"
#include "fusemap/loading.h"
#include "fusemap/nn.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A fusion family. All callbacks are pure with respect to the library state: is_fusable has
 * no side effects; make_* only allocate what they return. */
typedef struct fm_fusion_spec {
    const char *name; /* the fusion_config key, e.g. "patch_embeddings" */
    /* NULL-terminated PCRE2 patterns searched in the module path (OR-ed); NULL = every module. */
    const char *const *target_patterns;
    /* Decides on the meta tree whether module m can be fused. */
    bool (*is_fusable)(const fm_module *m);
    /* The replacement class for `original`, named "Fused<Original>". The library calls it once
     * per (family, original class) and keeps the result for the life of the process. */
    fm_status (*make_fused_class)(const fm_module_class *original, const fm_module_class **out,
                                  fm_error *err);
    /* Transforms from the original to the fused layout for the accepted modules (original
     * modules of the meta tree, borrowed for the call: read paths with fm_module_path and
     * geometry from their children), appended to *out. `config` is the model's config.json.
     * The result is cached with the discovery. */
    fm_status (*make_transforms)(const fm_config *config, fm_module *const *modules, size_t n,
                                 fm_transform_list *out, fm_error *err);
    /* Optional: transforms that load a checkpoint saved in the fused layout into the unfused
     * modules (used when the family is not enabled). NULL if not supported. */
    fm_status (*make_defuse_transforms)(const fm_config *config, fm_module *const *modules,
                                        size_t n, fm_transform_list *out, fm_error *err);
} fm_fusion_spec;

/* Registry (process-wide, thread-safe). `spec` is borrowed for the life of the process. */
fm_status fm_fusion_register(const fm_fusion_spec *spec, bool overwrite, fm_error *err);
const fm_fusion_spec *fm_fusion_lookup(const char *name);
/* Names in registration order; *names borrowed (static), caller frees the array with fm_free. */
fm_status fm_fusion_list(const char ***names, size_t *n, fm_error *err);
/* Empties the discovery cache (fused classes stay registered). */
void fm_fusion_cache_clear(void);
/* Discovery runs since start (tests use it to observe the cache). */
uint64_t fm_fusion_discovery_count(void);

/* The built-in patch_embeddings family. */
extern const fm_fusion_spec fm_fusion_patch_embeddings;

/* ---- used by fm_from_pretrained -------------------------------------------------------------
 * Validates a fusion_config object: every key a registered family; each value true, false or
 * an object (options); anything else FM_ERR_FUSION naming the key. */
fm_status fm_fusion_config_validate(const fm_config *fusion_config, const char *origin,
                                    fm_error *err);

typedef struct fm_fusion_plan {
    /* per-instance overrides: module path -> fused class (borrowed from the fusion cache) */
    char **paths;
    const fm_module_class **classes;
    size_t n;
    char **families;              /* family of each override */
    fm_transform_list transforms; /* to append after the model's own mapping */
    char **unmatched;             /* enabled families that matched nothing */
    size_t n_unmatched;
} fm_fusion_plan;
void fm_fusion_plan_free(fm_fusion_plan *p); /* accepts NULL */

/* For each enabled family in the user's order: discover fusable modules on a meta build
 * (cached by builder, family and the config values the decision depends on), and collect
 * overrides and transforms. Transforms whose source patterns equal one in `existing` (or an
 * earlier family's) are an error naming both. Disabled-but-registered families contribute
 * their defuse transforms. */
fm_status fm_fusion_plan_make(const fm_model_builder *builder, const void *model_cfg,
                              const fm_config *config, const fm_config *fusion_config,
                              const fm_transform_list *existing, fm_fusion_plan *out,
                              fm_error *err);

#ifdef __cplusplus
}
#endif
#endif
