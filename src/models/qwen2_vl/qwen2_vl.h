/* Internal: the parsed Qwen2-VL configuration and the Qwen2-VL model builder. */
#ifndef FUSEMAP_MODELS_QWEN2_VL_H
#define FUSEMAP_MODELS_QWEN2_VL_H

#include <stdbool.h>
#include <stdint.h>

#include "fusemap/io.h"
#include "fusemap/nn.h"

typedef struct fm_qwen2vl_vision_config {
    int64_t depth, embed_dim, hidden_size, num_heads, in_channels, patch_size;
    int64_t temporal_patch_size, spatial_merge_size, mlp_hidden;
    double mlp_ratio;
    fm_activation act; /* vision_config.hidden_act */
} fm_qwen2vl_vision_config;

typedef struct fm_qwen2vl_text_config {
    int64_t hidden_size, intermediate_size, num_hidden_layers, num_attention_heads;
    int64_t num_key_value_heads, vocab_size;
    double rms_norm_eps;
} fm_qwen2vl_text_config;

typedef struct fm_qwen2vl_config {
    fm_qwen2vl_vision_config v;
    fm_qwen2vl_text_config t;
    bool tie_word_embeddings;
} fm_qwen2vl_config;

/* Parses hub (flat text keys + vision_config) and v5 (text_config) layouts; refuses values
 * that make no sense with the key named. *out freed with fm_free. */
fm_status fm_qwen2vl_parse_config(const fm_config *cfg, const char *origin, void **out,
                                  fm_error *err);

extern const fm_model_builder fm_qwen2vl_builder;

/* Registers the Qwen2-VL module classes, builder and hub <-> runtime key mapping (the line in
 * the api layer's table of built-in architectures). */
fm_status fm_qwen2vl_register(fm_error *err);

/* Parts of the registration: the vision tower's classes (vision.c) and the key mapping
 * (mapping.c). */
fm_status fm_qwen2vl_register_vision_classes(fm_error *err);
fm_status fm_qwen2vl_register_mapping(fm_error *err);

#endif
