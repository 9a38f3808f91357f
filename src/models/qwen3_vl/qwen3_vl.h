/* Internal: the parsed Qwen3-VL configuration, its classes' registration and builder
 * (qwen2_5-vl-and-qwen3-vl.md §1-5). The vision tower reuses the Qwen2-VL tower's parts
 * (patch embedding, rotary table, attention, block, per-grid plan) under Qwen3-VL's class names;
 * the decoder is the shared Qwen2-family decoder with q/k norms, no q/k/v bias, head_dim from the
 * config, interleaved M-RoPE and DeepStack. */
#ifndef FUSEMAP_MODELS_QWEN3_VL_H
#define FUSEMAP_MODELS_QWEN3_VL_H

#include <stdbool.h>
#include <stdint.h>

#include "fusemap/io.h"
#include "fusemap/nn.h"
#include "models/qwen2/decoder.h"

#define FM_QWEN3VL_MAX_DEEPSTACK 64

typedef struct fm_qwen3vl_vision_config {
    int64_t depth, hidden_size, intermediate_size, num_heads, in_channels, patch_size;
    int64_t temporal_patch_size, spatial_merge_size, out_hidden_size;
    int64_t num_position_embeddings, grid_side; /* grid_side = int(sqrt(num_position_embeddings)) */
    /* deepstack_visual_indexes as written (one DeepStack merger each) and, in block order, the
     * distinct ones below depth (the blocks whose outputs become DeepStack features). */
    int64_t deepstack_indexes[FM_QWEN3VL_MAX_DEEPSTACK];
    int n_deepstack_mergers;
    int64_t deepstack_blocks[FM_QWEN3VL_MAX_DEEPSTACK];
    int n_deepstack;   /* K: features per image token */
    fm_activation act; /* hidden_act of the block MLP (gelu_pytorch_tanh) */
} fm_qwen3vl_vision_config;

typedef struct fm_qwen3vl_config {
    fm_qwen3vl_vision_config v;
    fm_qwen2_text_config t;
    bool tie_word_embeddings;
} fm_qwen3vl_config;

/* Parses config.json (nested text_config and vision_config, or flat text keys); refuses values
 * that make no sense with the key named. *out freed with fm_free. */
fm_status fm_qwen3vl_parse_config(const fm_config *cfg, const char *origin, void **out,
                                  fm_error *err);

/* The merger index (position in deepstack_visual_indexes) whose output follows block b, or -1
 * (transformers: `deepstack_visual_indexes.index(b)`). */
int fm_qwen3vl_deepstack_merger_of(const fm_qwen3vl_vision_config *v, int64_t b);

extern const fm_model_builder fm_qwen3vl_builder;

/* Registers the Qwen3-VL classes and builder (the line in the api layer's table). Hub keys are
 * already the runtime names (transformers has no conversion mapping for qwen3_vl). */
fm_status fm_qwen3vl_register(fm_error *err);
fm_status fm_qwen3vl_register_vision_classes(fm_error *err);

#endif
