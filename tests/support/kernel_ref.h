/* Test support: naive reference kernels for tests/test_kernels.c, written from the math (the
 * PyTorch definitions) and independent of the library's kernels: every sum, exponential and
 * division in double, results rounded to float once at the end. Row-major, contiguous unless a
 * leading dimension is given. */
#ifndef FM_TEST_KERNEL_REF_H
#define FM_TEST_KERNEL_REF_H

#include <stdint.h>

/* y[m][n] = x[m][k] · w[n][k]ᵀ + b[n] (b may be NULL). */
void kref_linear(float *y, const float *x, const float *w, const float *b, int64_t m, int64_t n,
                 int64_t k);
/* LayerNorm over the last dim, biased variance; g, b may be NULL (1, 0). */
void kref_layernorm(float *y, const float *x, const float *g, const float *b, int64_t rows,
                    int64_t dim, double eps);
/* RMSNorm: g * x / sqrt(mean(x^2) + eps); g may be NULL. */
void kref_rmsnorm(float *y, const float *x, const float *g, int64_t rows, int64_t dim, double eps);
/* Activations by transformers' ACT2FN meaning: 0 quick_gelu (x * sigmoid(1.702 x), the constant
 * as the f32 1.702f PyTorch multiplies by), 1 gelu (exact erf), 2 silu, 3 gelu_pytorch_tanh. */
void kref_act(float *y, const float *x, int64_t n, int act);
/* In place, `rows` rows (stride ld) of `cols` values: softmax. */
void kref_softmax_rows(float *s, int64_t rows, int64_t cols, int64_t ld);
/* Qwen2-VL vision rotary tables, full width [n][hd]: for d < hd (i = d mod hd/2), angle =
 * pos[axis] * 10000^(-2f/(hd/2)) with axis 0 (row) for i < hd/4, else 1 (col), f = i mod hd/4.
 * Angles and cos/sin in double. */
void kref_vision_rope_table(float *cos_t, float *sin_t, const int32_t *pos, int64_t n,
                            int head_dim);
/* x' = x cos + rotate_half(x) sin on `heads` heads of each row (stride ld); cos, sin [rows][hd]. */
void kref_rope_apply(float *x, int64_t ld, int64_t rows, int heads, int head_dim,
                     const float *cos_t, const float *sin_t);
/* Per segment [cu[s], cu[s+1]) and head: o = softmax(q kᵀ scale) v; q, k, v share the row stride
 * ldqkv, o has ldo. */
void kref_attention(float *o, int64_t ldo, const float *q, const float *k, const float *v,
                    int64_t ldqkv, const int32_t *cu, int n_seg, int heads, int head_dim,
                    double scale);
/* Conv3d (PyTorch semantics: zero padding, dilation, groups): x [batch][in_ch][T][H][W],
 * w [out_ch][in_ch/groups][kT][kH][kW], b [out_ch] or NULL; y [batch][out_ch][oT][oH][oW] with
 * o = (in + 2 pad - dil (k - 1) - 1) / stride + 1. */
void kref_conv3d(float *y, const float *x, const float *w, const float *b, int64_t batch, int in_ch,
                 int out_ch, int groups, const int k[3], const int stride[3], const int pad[3],
                 const int dil[3], const int64_t in_dims[3]);

#endif
