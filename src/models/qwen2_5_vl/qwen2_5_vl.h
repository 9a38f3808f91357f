/* Internal: the parsed Qwen2.5-VL configuration, its vision tower's window plan, and the
 * architecture's registration (qwen2_5-vl-and-qwen3-vl.md §1-3, §5.1). Qwen2.5-VL is Qwen2-VL
 * with an RMSNorm / gated-SiLU / windowed vision tower: it reuses the Qwen2-VL pieces that are
 * the same (qwen2_vl.h) and the shared Qwen2 decoder (qwen2/decoder.h). */
#ifndef FUSEMAP_MODELS_QWEN2_5_VL_H
#define FUSEMAP_MODELS_QWEN2_5_VL_H

#include <stdbool.h>
#include <stdint.h>

#include "models/cfgutil.h"
#include "models/qwen2_vl/qwen2_vl.h"

typedef struct fm_qwen25vl_config {
    /* First member, so the shared Qwen2-VL constructors and builder hooks read it: base.v holds
     * the vision fields in Qwen2-VL's terms (embed_dim = vision hidden_size, hidden_size =
     * out_hidden_size, mlp_hidden = intermediate_size, act = hidden_act); base.t, base.tie_...
     * the text model. */
    fm_qwen2vl_config base;
    int64_t window_size;       /* pixels (112) */
    int64_t window_cells;      /* merged cells per window side: window_size / merge / patch */
    int64_t tokens_per_second; /* videos only (not supported); parsed and checked */
    /* Bit i set: block i attends over whole frames (fullatt_block_indexes); indexes outside
     * [0, depth) select nothing, as in transformers. */
    uint64_t fullatt[FM_CFG_MAX_DEPTH / 64];
} fm_qwen25vl_config;

/* Parses hub (flat text keys + vision_config) and v5 (text_config, rope_parameters) layouts with
 * transformers' class defaults; refuses values that make no sense, naming origin and key. *out
 * freed with fm_free. */
fm_status fm_qwen25vl_parse_config(const fm_config *cfg, const char *origin, void **out,
                                   fm_error *err);

static inline bool fm_qwen25vl_full_block(const fm_qwen25vl_config *c, int64_t i) {
    return i >= 0 && i < FM_CFG_MAX_DEPTH && ((c->fullatt[i / 64] >> (i % 64)) & 1u);
}

/* The window plan of one image_grid_thw (get_window_index, spec §3 step 4): patch groups of m²
 * rows are reordered window by window (frames outermost, windows in raster order, cells in
 * raster order inside a window, padding cells dropped). All arrays owned (fm_free). */
typedef struct fm_qwen25vl_plan {
    int64_t n;       /* patches */
    int n_seg;       /* full-attention segments: one per frame of each image */
    int n_win;       /* windows holding at least one cell */
    int32_t *cu;     /* [n_seg + 1] cumulative patch rows per frame */
    int32_t *cu_win; /* [n_win + 1] cumulative patch rows per window, in window order */
    int32_t *order; /* [n / m²] window_index: group j of the window order is input group order[j] */
    int32_t *pos;   /* [n][2] rotary (row, col) patch coordinates, in window order */
} fm_qwen25vl_plan;

/* Validates grid [n_images][3] (as fm_qwen2vl_check_grid) and builds the plan for merge size m
 * and `cells` merged cells per window side. *p is untouched on failure. */
fm_status fm_qwen25vl_window_plan(const int64_t *grid, int n_images, int64_t merge, int64_t cells,
                                  fm_qwen25vl_plan *p, fm_error *err);
void fm_qwen25vl_plan_free(fm_qwen25vl_plan *p);

/* Registers the vision tower's classes (vision.c). */
fm_status fm_qwen25vl_register_vision_classes(fm_error *err);

extern const fm_model_builder fm_qwen25vl_builder;

/* Registers the Qwen2.5-VL classes and builder (the line in the api layer's table). Needs the
 * Qwen2-VL registration first (its line precedes this one): the classes Qwen2.5-VL shares
 * (PatchEmbed, VisionRotaryEmbedding, VisionAttention, Qwen2MLP, Qwen2RMSNorm) and the hub <->
 * runtime key mapping, which transformers keys under both ForConditionalGeneration names. */
fm_status fm_qwen25vl_register(fm_error *err);

#endif
