/* Internal: functional float32 forward of the Qwen2-VL vision tower (spec qwen2-vl.md §4):
 * patch embedding (fused Linear or direct Conv3d), 2-D RoPE blocks, 2x2 patch merger. */
#ifndef FUSEMAP_MODELS_QWEN2_VL_VISION_H
#define FUSEMAP_MODELS_QWEN2_VL_VISION_H

#include <stdint.h>

#include "fusemap/core.h"
#include "nn/kernels.h" /* fm_act, fm_conv3d_params */

typedef struct fm_qwen2vl_vision_cfg {
    int depth, embed_dim, hidden_size /* merger output */, num_heads, mlp_hidden /* int(embed_dim*mlp_ratio) */;
    int in_channels, patch_size, temporal_patch_size, spatial_merge_size;
    int act;      /* fm_act: FM_ACT_QUICK_GELU, FM_ACT_GELU (erf), FM_ACT_SILU, FM_ACT_GELU_TANH */
    float ln_eps; /* 1e-6 */
} fm_qwen2vl_vision_cfg;

/* Weights of one block, all f32, contiguous, row-major (Linear W[out][in]), 4-byte aligned,
 * borrowed for the duration of a forward call. */
typedef struct fm_qwen2vl_block_w {
    const float *norm1_w, *norm1_b; /* [D] */
    const float *qkv_w, *qkv_b;     /* [3D][D], [3D]: rows q, then k, then v */
    const float *proj_w, *proj_b;   /* [D][D], [D] */
    const float *norm2_w, *norm2_b; /* [D] */
    const float *fc1_w, *fc1_b;     /* [mlp_hidden][D], [mlp_hidden] */
    const float *fc2_w, *fc2_b;     /* [D][mlp_hidden], [D] */
} fm_qwen2vl_block_w;

typedef struct fm_qwen2vl_vision_w {
    int patch_fused;        /* 1: patch_w is Linear [D][C*T*P*P]; 0: Conv3d weight
                             * [D][C/groups][kT][kH][kW] run by the direct conv kernel */
    fm_conv3d_params conv;  /* used when !patch_fused: each row is viewed as [C][T][P][P] and
                             * the conv output per row must be 1x1x1 (else FM_ERR_INPUT) */
    const float *patch_w, *patch_b; /* patch_b may be NULL (Qwen2-VL has none) */
    const fm_qwen2vl_block_w *blocks; /* [depth], borrowed */
    const float *ln_q_w, *ln_q_b;   /* [D] */
    const float *mlp0_w, *mlp0_b;   /* [m²D][m²D], [m²D] */
    const float *mlp2_w, *mlp2_b;   /* [hidden_size][m²D], [hidden_size] */
} fm_qwen2vl_vision_w;

/* Scratch, rotary tables, cu_seqlens and a thread pool for one (cfg, grid) input shape;
 * reusable for any number of forwards of that shape (not concurrently). */
typedef struct fm_vision_plan fm_vision_plan;

/* Validates cfg (FM_ERR_CONFIG) and grid_thw [n_images][3] = (t, h, w) (FM_ERR_INPUT: each
 * >= 1, h and w multiples of spatial_merge_size, sizes within int32), then allocates
 * everything a forward needs. threads: 0 = fm_default_threads(). grid_thw is copied.
 * Caller frees *out with fm_vision_plan_free. */
fm_status fm_vision_plan_new(const fm_qwen2vl_vision_cfg *cfg, const int64_t *grid_thw,
                             int n_images, int threads, fm_vision_plan **out, fm_error *err);
void fm_vision_plan_free(fm_vision_plan *p); /* accepts NULL */
/* Patches N (rows of pixel_values) and merged tokens N / merge² of the plan's grid. */
int64_t fm_vision_plan_patches(const fm_vision_plan *p);
int64_t fm_vision_plan_tokens(const fm_vision_plan *p);

/* pixel_values: [n_rows][C*T*P*P] f32; out: [N/merge²][hidden_size] f32 (caller-allocated).
 * Validates cfg against the plan (FM_ERR_INVALID_ARG), n_rows against the grid (FM_ERR_INPUT
 * naming both shapes), weights (non-NULL, 4-byte aligned: FM_ERR_INVALID_ARG naming the field)
 * and the conv geometry. progress may be NULL: called after each block (done, depth).
 * Sets OpenBLAS's (process-global) thread count to the plan's for the call and restores it. */
fm_status fm_qwen2vl_vision_forward(fm_vision_plan *p, const fm_qwen2vl_vision_cfg *cfg,
                                    const fm_qwen2vl_vision_w *w, const float *pixel_values,
                                    int64_t n_rows, float *out,
                                    void (*progress)(void *ctx, int done, int total),
                                    void *progress_ctx, fm_error *err);

#endif
