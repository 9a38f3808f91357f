/* Test support: a separate, naive float64 forward of the Qwen2-VL and Qwen3-VL vision towers
 * (specs qwen2-vl.md §4, qwen2_5-vl-and-qwen3-vl.md §4), the yardstick for the library's module
 * forward. It reads config.json and the checkpoint's tensors by their hub names itself, so it
 * shares no wiring with the library. */
#ifndef FM_TEST_VISION_REF64_H
#define FM_TEST_VISION_REF64_H

#include <stddef.h>
#include <stdint.h>

typedef struct fm_vref_block {
    float *norm1_w, *norm1_b, *qkv_w, *qkv_b, *proj_w, *proj_b;
    float *norm2_w, *norm2_b, *fc1_w, *fc1_b, *fc2_w, *fc2_b;
} fm_vref_block;

/* A Qwen3-VL merger: LayerNorm (over D for the main merger, over m²·D for DeepStack ones), then
 * fc1 -> GELU (erf) -> fc2. */
typedef struct fm_vref_merger {
    float *norm_w, *norm_b, *fc1_w, *fc1_b, *fc2_w, *fc2_b;
} fm_vref_merger;

#define FM_VREF_MAX_DEEPSTACK 8

typedef struct fm_vref_model {
    int depth, embed_dim, hidden_size, num_heads, mlp_hidden, in_channels, patch_size,
        temporal_patch_size, spatial_merge_size;
    int qwen3; /* config.json model_type qwen3_vl: the Qwen3-VL tower */
    /* Qwen3-VL: position table [num_pos][D] (side = isqrt(num_pos)), DeepStack mergers and the
     * block each one follows */
    float *pos_embed;
    int num_pos, side;
    int n_deepstack, deepstack_index[FM_VREF_MAX_DEEPSTACK];
    fm_vref_merger deepstack[FM_VREF_MAX_DEEPSTACK];
    int act;                  /* FM_VREF_ACT_* from vision_config.hidden_act */
    float *patch_w, *patch_b; /* [D][C*T*P*P] (the Conv3d weight's memory), bias or NULL */
    fm_vref_block *blocks;    /* [depth] */
    float *ln_q_w, *ln_q_b, *mlp0_w, *mlp0_b, *mlp2_w, *mlp2_b;
} fm_vref_model;

enum { FM_VREF_ACT_QUICK_GELU, FM_VREF_ACT_GELU, FM_VREF_ACT_SILU, FM_VREF_ACT_GELU_TANH };

/* Reads dir/config.json (vision_config) and the vision weights (hub names visual.* or
 * model.visual.*, any float dtype, sharded or not). Returns 0, or -1 with a reason in why. */
int fm_vref_load(const char *dir, fm_vref_model *m, char *why, size_t why_size);
void fm_vref_free(fm_vref_model *m);

/* out: [N / merge²][hidden_size] doubles (caller-allocated); grid_thw [n_images][3]; pixel
 * values [N][C*T*P*P]. Returns 0, or -1 when out of memory. */
int fm_vref64_forward(const fm_vref_model *m, const int64_t *grid_thw, int n_images,
                      const float *pixel_values, double *out);
/* Same; Qwen3-VL also writes the DeepStack features [K][N / merge²][hidden_size] into ds (may
 * be NULL) and their count K into *k (may be NULL): one per distinct deepstack_visual_indexes
 * entry below depth, in block order. */
int fm_vref64_forward_ds(const fm_vref_model *m, const int64_t *grid_thw, int n_images,
                         const float *pixel_values, double *out, double *ds, int *k);

/* Relative L2 error ||a - ref|| / ||ref|| of n float values against doubles. */
double fm_vref64_rel_l2(const float *a, const double *ref, int64_t n);

#endif
