/* Test support: a separate, naive float64 forward of the Qwen2-VL vision tower (spec
 * qwen2-vl.md §4), the yardstick for the library's module forward. It reads config.json and the
 * checkpoint's tensors by their hub names itself, so it shares no wiring with the library. */
#ifndef FM_TEST_VISION_REF64_H
#define FM_TEST_VISION_REF64_H

#include <stddef.h>
#include <stdint.h>

typedef struct fm_vref_block {
    float *norm1_w, *norm1_b, *qkv_w, *qkv_b, *proj_w, *proj_b;
    float *norm2_w, *norm2_b, *fc1_w, *fc1_b, *fc2_w, *fc2_b;
} fm_vref_block;

typedef struct fm_vref_model {
    int depth, embed_dim, hidden_size, num_heads, mlp_hidden, in_channels, patch_size,
        temporal_patch_size, spatial_merge_size;
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

/* Relative L2 error ||a - ref|| / ||ref|| of n float values against doubles. */
double fm_vref64_rel_l2(const float *a, const double *ref, int64_t n);

#endif
