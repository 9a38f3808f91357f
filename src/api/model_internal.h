/* Internal: the fm_model structure shared by the api sources. */
#ifndef FUSEMAP_API_MODEL_INTERNAL_H
#define FUSEMAP_API_MODEL_INTERNAL_H

#include "fusemap/models.h"

struct fm_model {
    char *dir;                       /* owned: the directory loaded from */
    fm_config *config;               /* owned: config.json as read */
    const fm_model_builder *builder; /* borrowed (registry) */
    void *model_cfg;                 /* owned: builder->free_config */
    char *model_type, *architecture; /* owned */
    fm_module *root;                 /* owned */
    fm_param_ref *params;            /* owned: named_parameters in definition order */
    size_t n_params;
    fm_transform_list fired; /* owned: transforms that fired at load (reversed on save) */
    char *fusion_json;       /* owned: fusion_config in effect (compact JSON) or NULL */
    fm_dtype cast;           /* dtype requested at load, FM_DTYPE_INVALID for auto */
    /* The source's shard layout, reused by an original-format save without an explicit size. */
    char **src_names;    /* owned: checkpoint keys (sharded sources only) */
    uint32_t *src_shard; /* owned: shard index of each key */
    size_t n_src;
    uint32_t src_n_shards;
    bool src_has_total_params; /* the source index had metadata.total_parameters */
    uint64_t src_total_params;
    fm_run_ctx *rc; /* owned: made by the first forward (fm_model_run_ctx) */
};

/* "qwen2_vl, ..." (the built-in model types) into buf. */
void fm_model_types_text(char *buf, size_t size);

#endif
