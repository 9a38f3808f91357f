/* Test support: a separate, naive float64 forward of the Qwen2 text decoder inside Qwen2-VL
 * (generation.md §3-4) and of Qwen3-VL's Qwen3 decoder (qwen2_5-vl-and-qwen3-vl.md §5.2: per-head
 * q/k RMSNorm, no q/k/v bias, head_dim from the config, interleaved M-RoPE, DeepStack):
 * embeddings with image features scattered in, get_rope_index, M-RoPE, GQA causal attention,
 * SwiGLU, RMSNorm, lm_head — over the whole sequence, no cache. It reads config.json and the
 * checkpoint by hub names itself, sharing no code with the library's decoder. */
#ifndef FM_TEST_TEXT_REF64_H
#define FM_TEST_TEXT_REF64_H

#include <stddef.h>
#include <stdint.h>

typedef struct fm_tref_layer {
    float *q_w, *q_b, *k_w, *k_b, *v_w, *v_b, *o_w, *gate_w, *up_w, *down_w, *in_norm, *post_norm;
    float *q_norm, *k_norm; /* Qwen3 [head_dim]; NULL for Qwen2 (and q/k/v biases NULL for Qwen3) */
} fm_tref_layer;

typedef struct fm_tref_model {
    int64_t hidden, inter, layers, heads, kv_heads, head_dim, vocab;
    double eps, theta;
    int sections[3];
    int qwen3; /* model_type qwen3_vl: q/k norms, no biases, interleaved M-RoPE */
    int64_t image_token, vision_start, merge;
    int64_t frame_step; /* an image's frame f sits at temporal position start + f·frame_step: 1
                           (Qwen2-VL), 0 (Qwen2.5-VL, model_type qwen2_5_vl) */
    float *embed, *norm, *lm_head; /* lm_head aliases embed when tied */
    fm_tref_layer *l;
} fm_tref_model;

/* Reads dir/config.json (flat or text_config, RoPE from rope_parameters or rope_scaling) and the
 * text weights (hub names model.* or model.language_model.*, any float dtype). Returns 0, or -1
 * with the reason in why. */
int fm_tref_load(const char *dir, fm_tref_model *m, char *why, size_t why_size);
void fm_tref_free(fm_tref_model *m);

/* Positions of get_rope_index (its own implementation): pos [3][T]. */
void fm_tref_positions(const fm_tref_model *m, const int64_t *ids, int64_t T, const int64_t *grid,
                       int n_images, int64_t *pos);

/* Causal forward of the whole sequence: logits [T][vocab] doubles (caller-allocated); image
 * features [k][hidden] are written at the image tokens in order (k = their count). Returns 0,
 * or -1 when out of memory. */
int fm_tref_forward(const fm_tref_model *m, const int64_t *ids, int64_t T,
                    const float *image_embeds, const int64_t *grid, int n_images, double *logits);
/* Same, with DeepStack: after decoder layer l < K, the image tokens' hidden states (in order)
 * gain deepstack[l][j] ([K][k][hidden]; NULL or K = 0: none). */
int fm_tref_forward_ds(const fm_tref_model *m, const int64_t *ids, int64_t T,
                       const float *image_embeds, const float *deepstack, int K,
                       const int64_t *grid, int n_images, double *logits);

#endif
