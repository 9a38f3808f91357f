/* Test support: a separate, naive float64 forward of the Qwen2.5-VL vision tower
 * (qwen2_5-vl-and-qwen3-vl.md §3), the yardstick for the library's. It reads config.json and the
 * checkpoint's tensors by their hub names itself, and it never reorders anything: a windowed
 * block lets a patch attend to the patches of its own image, frame and window (window = its
 * merged cell's (row, col) divided by the window side), which is what transformers' window
 * permutation computes, so the permutation and its reverse are checked, not copied. */
#ifndef FM_TEST_VISION25_REF64_H
#define FM_TEST_VISION25_REF64_H

#include <stddef.h>
#include <stdint.h>

typedef struct fm_v25ref_block {
    float *norm1_w, *norm2_w, *qkv_w, *qkv_b, *proj_w, *proj_b;
    float *gate_w, *gate_b, *up_w, *up_b, *down_w, *down_b;
} fm_v25ref_block;

typedef struct fm_v25ref_model {
    int depth, dim, out_dim, heads, inter, channels, patch, temporal, merge;
    int window_cells;    /* merged cells per window side: window_size / merge / patch */
    unsigned char *full; /* [depth]: 1 when the block attends over whole frames */
    int act;             /* FM_VREF_ACT_* (vision_ref64.h) of vision_config.hidden_act */
    float *patch_w;      /* [dim][C*T*P*P] */
    fm_v25ref_block *blocks;
    float *ln_q_w, *mlp0_w, *mlp0_b, *mlp2_w, *mlp2_b;
} fm_v25ref_model;

/* Reads dir/config.json and the vision weights (visual.* or model.visual.*, any float dtype,
 * sharded or not). The input channel count is the patch weight's dim 1. Returns 0, or -1 with
 * the reason in why. */
int fm_v25ref_load(const char *dir, fm_v25ref_model *m, char *why, size_t why_size);
void fm_v25ref_free(fm_v25ref_model *m);

/* out: [N / merge²][out_dim] doubles (caller-allocated), merged cells in input order; grid
 * [n_images][3]; pixel values [N][C*T*P*P]. Returns 0, or -1 when out of memory. */
int fm_v25ref_forward(const fm_v25ref_model *m, const int64_t *grid, int n_images,
                      const float *pixel_values, double *out);

#endif
