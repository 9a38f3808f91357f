/* Internal: the parsed Qwen2-VL configuration and the Qwen2-VL model builder. */
#ifndef FUSEMAP_MODELS_QWEN2_VL_H
#define FUSEMAP_MODELS_QWEN2_VL_H

#include <stdbool.h>
#include <stdint.h>

#include "fusemap/io.h"
#include "fusemap/nn.h"
#include "models/qwen2/decoder.h"

typedef struct fm_qwen2vl_vision_config {
    int64_t depth, embed_dim, hidden_size, num_heads, in_channels, patch_size;
    int64_t temporal_patch_size, spatial_merge_size, mlp_hidden;
    double mlp_ratio;
    fm_activation act; /* vision_config.hidden_act */
} fm_qwen2vl_vision_config;

typedef struct fm_qwen2vl_config {
    fm_qwen2vl_vision_config v;
    fm_qwen2_text_config t;
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

/* get_rope_index for images (generation.md §4.2): ids [n], grids [n_images][3] in order of
 * appearance -> pos3 [3][n] (t, h, w rows) and the next free position (max + 1). An image
 * counts where a vision_start token is followed by the image token; its tokens must number
 * t·(h/m)·(w/m). FM_ERR_INPUT when ids and grids disagree. Videos are refused. */
fm_status fm_qwen2vl_rope_index(const fm_qwen2_text_config *t, int64_t merge, const int64_t *ids,
                                int64_t n, const int64_t *grid_thw, int64_t n_images, int64_t *pos3,
                                int64_t *next, fm_error *err);

#endif
