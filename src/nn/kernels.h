/* Internal: float32 CPU kernels (Linear via CBLAS, direct Conv3d, norms, activations,
 * softmax, 2-D vision RoPE, segment attention). tests/support/kernel_ref.c holds the naive
 * double-precision references the tests measure them against. */
#ifndef FUSEMAP_NN_KERNELS_H
#define FUSEMAP_NN_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "core/threadpool.h"
#include "fusemap/core.h"
#include "fusemap/nn.h"
#include "fusemap/tensor.h"

/* Conventions: every buffer is float32, contiguous, row-major, at least 4-byte aligned;
 * outputs come first; `pool` may be NULL (single-threaded). Sizes are preconditions (the
 * callers validate them): a kernel never fails. In-place use is allowed only where stated.
 * Results do not depend on the pool size: every element is computed by the same code
 * whichever thread runs it (the BLAS is the one exception, documented at fm_k_linear). */

/* ---- vectorisation helpers -------------------------------------------------------------
 * Loops over FM_VL independent lanes with a fixed trip count vectorise at -O2 without
 * reassociation flags; lane sums are combined in a fixed pairwise order, so a result never
 * depends on which thread computed it. */
#define FM_VL 16

/* exp(x) in f32 without libm, vectorisable: x = n ln2 + r (Cody-Waite, |r| <= ln2/2),
 * exp(r) by its degree-7 Taylor polynomial (truncation < 1e-8 relative), times 2^n built in
 * the exponent bits. Error about 1-2 ulp. x is clamped to [-87, 88] (results stay normal;
 * exp(-87) ~ 1.6e-38 stands in for anything smaller). NaN propagates. */
static inline float fm_expf_poly(float x) {
    const float log2e = 1.44269504088896341f, magic = 12582912.0f; /* 1.5 * 2^23 */
    const float ln2_hi = 0.693145751953125f, ln2_lo = 1.42860682030941723212e-6f;
    x = x < -87.0f ? -87.0f : x;
    x = x > 88.0f ? 88.0f : x;
    float t = x * log2e + magic; /* round-to-nearest integer in the low mantissa bits */
    union {
        float f;
        uint32_t u;
    } tb = {t}, sc;
    float n = t - magic;
    float r = x - n * ln2_hi;
    r = r - n * ln2_lo;
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    sc.u = (tb.u - 0x4B400000u + 127u)
           << 23; /* 2^n, n in [-126, 127] (unsigned: NaN is harmless) */
    return p * sc.f;
}

/* Sum of an FM_VL lane array, pairwise in a fixed order. */
static inline float fm_k_lanes_sum(const float *acc) {
    float t[FM_VL];
    for (int l = 0; l < FM_VL; l++)
        t[l] = acc[l];
    for (int w = FM_VL / 2; w >= 1; w /= 2)
        for (int l = 0; l < w; l++)
            t[l] = t[l] + t[l + w];
    return t[0];
}

/* Vectorised reductions (fixed summation order for a given n). */
float fm_k_vsum(const float *x, int64_t n);
/* sum of (x[i] - c)^2 */
float fm_k_vsumsq(const float *x, float c, int64_t n);
float fm_k_vmax(const float *x, int64_t n); /* n >= 1 */
float fm_k_vdot(const float *a, const float *b, int64_t n);

/* ---- activations: fm_activation (fusemap/nn.h) ---------------------------------------- */
/* Canonical name ("quick_gelu", ...); "?" when out of range. */
const char *fm_act_name(fm_activation a);

/* ---- Conv3d geometry ------------------------------------------------------------------- */
typedef struct fm_conv3d_params {
    int out_ch, in_ch;
    int k[3], stride[3], pad[3], dil[3]; /* (T, H, W) order, like PyTorch */
    int groups;
} fm_conv3d_params;

/* Validates p against an input of spatial dims in_dims = (T, H, W) and writes the output
 * dims (PyTorch formula). FM_ERR_INVALID_ARG naming the offending field. */
fm_status fm_conv3d_out_dims(const fm_conv3d_params *p, const int64_t in_dims[3],
                             int64_t out_dims[3], fm_error *err);

/* ---- optimised kernels (kernels.c, conv3d.c, attention.c) ------------------------------ */

/* Linear: y[m][n] (row stride ldy >= n) = x[m][k] · w[n][k]ᵀ + b[n] (b may be NULL), then
 * act (act < 0: none) on each element. Parallel over (row block, column block) tiles on the
 * pool, each tile one single-threaded cblas_sgemm with its epilogue applied while the tile is
 * in cache; every element is computed by the same code whichever thread runs it, so results do
 * not depend on the pool size (OpenBLAS splits neither K nor the tile). m, n, k <= INT_MAX. y
 * must not overlap x or w. */
void fm_k_linear(float *y, int64_t ldy, const float *x, const float *w, const float *b, int64_t m,
                 int64_t n, int64_t k, int act, fm_threadpool *pool);

/* LayerNorm over the last dim: y[r] = (x[r] - mean) / sqrt(var + eps) * g + b, biased
 * variance; g, b may be NULL (1, 0). y may equal x. */
void fm_k_layernorm(float *y, const float *x, const float *g, const float *b, int64_t rows,
                    int64_t dim, float eps, fm_threadpool *pool);
/* RMSNorm: y[r] = g * (x[r] / sqrt(mean(x[r]^2) + eps)); g may be NULL. y may equal x. */
void fm_k_rmsnorm(float *y, const float *x, const float *g, int64_t rows, int64_t dim, float eps,
                  fm_threadpool *pool);
/* y[i] = act(x[i]) for i < n; y may equal x. */
void fm_k_act(float *y, const float *x, int64_t n, fm_activation act, fm_threadpool *pool);
/* y[i] += x[i] (residual). */
void fm_k_add(float *y, const float *x, int64_t n, fm_threadpool *pool);
/* In place, each of `rows` rows (stride ld) of `cols` values: max-subtracted exp, divided by
 * the row sum. Single-threaded (callers parallelise over rows). */
/* exp(s[i] - mx) in place for i < n; returns their sum (FM_VL lanes, an order fixed by n). */
float fm_k_exp_row(float *s, int64_t n, float mx);
void fm_k_softmax_rows(float *s, int64_t rows, int64_t cols, int64_t ld);

/* Vision 2-D rotary table, spec §4 step 3: inv_freq[i] = f32(1 / f32(10000^f32(2i/(hd/2)))),
 * i < hd/4; for token r with pos[r] = (row_id, col_id):
 *   cos[r][i] = cos(f32(row_id * inv_freq[i])),  cos[r][hd/4 + i] = cos(f32(col_id * inv_freq[i]))
 * (same for sin). cos, sin: [n][hd/2] (the second half of the 80-wide emb repeats the first).
 * head_dim % 4 == 0. */
void fm_k_vision_rope_table(float *cos_t, float *sin_t, const int32_t *pos /* [n][2] */, int64_t n,
                            int head_dim);
/* RoPE in place on `heads` heads of head_dim values in each of `rows` rows (row stride ld):
 * x'[d] = x[d]cos[d] - x[d+h2]sin[d], x'[d+h2] = x[d+h2]cos[d] + x[d]sin[d], h2 = hd/2;
 * cos, sin: [rows][h2]. */
void fm_k_rope_apply(float *x, int64_t ld, int64_t rows, int heads, int head_dim,
                     const float *cos_t, const float *sin_t, fm_threadpool *pool);

/* Attention over variable-length segments: for every segment s = [cu[s], cu[s+1]) and head j,
 * O = softmax((Q Kᵀ) * scale) V with Q, K, V the rows of the segment, columns j*hd..+hd of
 * q, k, v (row strides ldq, ldk, ldv); O goes to o (row stride ldo) at the same columns.
 * scratch: fm_k_attention_scratch_floats(max segment length, pool threads) floats.
 * The work is split over (segment, head, query block) on the pool. */
size_t fm_k_attention_scratch_floats(int64_t max_seg, int threads);
void fm_k_attention(float *o, int64_t ldo, const float *q, int64_t ldq, const float *k, int64_t ldk,
                    const float *v, int64_t ldv, const int32_t *cu /* [n_seg + 1] */, int n_seg,
                    int heads, int head_dim, float scale, float *scratch, fm_threadpool *pool);

/* Direct Conv3d (no im2col): x [batch][in_ch][T][H][W], w [out_ch][in_ch/groups][kT][kH][kW],
 * b [out_ch] or NULL, y [batch][out_ch][oT][oH][oW] (dims from fm_conv3d_out_dims, which must
 * have succeeded). Threads over (output channel block, batch). */
void fm_k_conv3d(float *y, const float *x, const float *w, const float *b, int64_t batch,
                 const fm_conv3d_params *p, const int64_t in_dims[3], fm_threadpool *pool);

/* ---- decoder kernels (kernels_lowp.c, attention_cache.c, rope.c, kernels.c) ---------------
 * Weights may be F32, BF16 or F16 as mapped from a checkpoint: 16-bit rows need only 2-byte
 * alignment, F32 rows 4-byte. Activations, accumulators and softmax are f32. */

/* Linear over stored-dtype weights: y[m][ldy] = x[m][ldx] · w[n][k]ᵀ + b[n] (b may be NULL),
 * then act (an fm_activation; < 0: none), as fm_k_linear. wdt: FM_DTYPE_F32, _BF16 or _F16.
 * m <= 8 (decode): a multi-row GEMV that streams w once for all m rows, each thread a block of
 * output rows, 16-bit weights widened in registers; a row's result does not depend on m or on
 * the other rows. m > 8 (prefill): f32 panels of w (converted per thread into scratch unless
 * wdt is F32) times x by cblas_sgemm, tiles fixed by the shape. Either way the results do not
 * depend on the pool size. scratch: fm_k_linear_w_scratch_floats(m, n, k, pool threads)
 * floats, 64-byte aligned preferred (may be NULL when that is 0). y must not overlap x, w or
 * scratch. m, n, k <= INT_MAX. */
#define FM_K_GEMV_MAX_M 8 /* rows at or below which the GEMV path runs */
size_t fm_k_linear_w_scratch_floats(int64_t m, int64_t n, int64_t k, int threads);
void fm_k_linear_w(float *y, int64_t ldy, const float *x, int64_t ldx, const void *w, fm_dtype wdt,
                   const float *b, int64_t m, int64_t n, int64_t k, int act, float *scratch,
                   fm_threadpool *pool);

/* SwiGLU: y[r][c] = silu(g[r][c]) · u[r][c] for r < rows, c < cols, silu(z) = z / (1 + e^-z)
 * (g and u may be the two halves of one fused gate_up row: u = g + cols, ldu = ldg). y may
 * equal g (same stride). */
void fm_k_swiglu(float *y, int64_t ldy, const float *g, int64_t ldg, const float *u, int64_t ldu,
                 int64_t rows, int64_t cols, fm_threadpool *pool);

/* M-RoPE tables (generation spec §4): inv_freq[j] = f32(1 / f32(theta ^ f32(f32(2j) / hd))),
 * j < hd/2; for token r and frequency j the angle is f32(f32(pos_a) · inv_freq[j]) with the
 * axis a (0 = t, 1 = h, 2 = w) given by the layout:
 *   interleaved = 0 (the chunked layout): sections[0] frequencies from t, then sections[1]
 *     from h, then sections[2] from w (sections sum to hd/2; the doubled mrope_section of
 *     transformers maps d and d + hd/2 to the same axis);
 *   interleaved = 1 (the interleaved layout): axis t, except j % 3 == 1 and j < 3·sections[1] -> h,
 *     j % 3 == 2 and j < 3·sections[2] -> w.
 * cos_t, sin_t: [T][hd/2] (cos/sin of the f32 angle, correctly rounded), the layout
 * fm_k_rope_apply takes (rotate_half: d pairs with d + hd/2). pos3: [3][T] (t row, h row,
 * w row); plain 1-D RoPE has the three rows equal. head_dim even, <= 1024. */
void fm_k_mrope_table(float *cos_t, float *sin_t, const int64_t *pos3, int64_t T, int head_dim,
                      double theta, const int sections[3], int interleaved);

/* KV cache, one layer: K and V each [slots][n_kv][cap][head_dim] of cdt (FM_DTYPE_F32 or
 * FM_DTYPE_BF16, rounded to nearest even on write). Row r of k (row stride ldk) and of v holds
 * n_kv heads of head_dim (keys after RoPE) for sequence slot[r] at position pos[r] (0 <= pos <
 * cap): they go to kc[slot][g][pos][:] and vc[slot][g][pos][:]. */
void fm_k_kv_write(void *kc, void *vc, fm_dtype cdt, int64_t cap, int n_kv, int head_dim,
                   const int32_t *slot, const int32_t *pos, int64_t rows, const float *k,
                   int64_t ldk, const float *v, int64_t ldv, fm_threadpool *pool);

/* Attention against the cache: row r of q (n_heads heads of head_dim, row stride ldq) is the
 * query of slot[r] at position pos[r]; it attends to cached positions 0..pos[r] of its slot
 * (its own K/V already written: causal by position; 0 <= pos[r] < cap, slot[r] a slot of the
 * caches). Query head h reads KV head
 * h / (n_heads / n_kv). s_j = (q·k_j)·scale in f32, softmax in f32 (max-subtracted), o = Σ p_j
 * v_j into o (row stride ldo, heads at h·head_dim). Runs of >= 16 rows of one slot at
 * consecutive positions (prefill, chunked prefill) take a blocked path (64-query block x
 * 256-key block by sgemm, online softmax, bf16 blocks converted to f32); other rows (decode)
 * a per-row path: the context in fixed 256-key chunks (one task per chunk and KV group, merged
 * by log-sum-exp), the group's query heads the rows of one small sgemm against the chunk, so
 * each K/V row is read once for all of them. A row's result differs
 * between the two paths by rounding only; it never depends on the pool size, and on the
 * decode path not on the other rows either. scratch:
 * fm_k_attention_cache_scratch_floats(slot, pos, rows, n_heads, n_kv, head_dim, pool threads)
 * floats for the same slot/pos (the path of each row, and so the scratch, follows from them).
 * n_heads % n_kv == 0; o must not overlap q, the caches or scratch. */
size_t fm_k_attention_cache_scratch_floats(const int32_t *slot, const int32_t *pos, int64_t rows,
                                           int n_heads, int n_kv, int head_dim, int threads);
void fm_k_attention_cache(float *o, int64_t ldo, const float *q, int64_t ldq, const void *kc,
                          const void *vc, fm_dtype cdt, int64_t cap, int n_kv, const int32_t *slot,
                          const int32_t *pos, int64_t rows, int n_heads, int head_dim, float scale,
                          float *scratch, fm_threadpool *pool);

/* ---- reference kernels (kernels_ref.c): naive loops, float32, libm ------------------- */
void fm_ref_linear(float *y, const float *x, const float *w, const float *b, int64_t m, int64_t n,
                   int64_t k);
void fm_ref_layernorm(float *y, const float *x, const float *g, const float *b, int64_t rows,
                      int64_t dim, float eps);
void fm_ref_rmsnorm(float *y, const float *x, const float *g, int64_t rows, int64_t dim, float eps);
void fm_ref_act(float *y, const float *x, int64_t n, fm_activation act);
void fm_ref_softmax_rows(float *s, int64_t rows, int64_t cols, int64_t ld);
/* Full-width tables [n][hd] (cos[r][d] with d and d - hd/2 equal), libm cosf/sinf/powf. */
void fm_ref_vision_rope_table(float *cos_t, float *sin_t, const int32_t *pos, int64_t n,
                              int head_dim);
/* rotate_half form: x' = x*cos + rotate_half(x)*sin; cos, sin: [rows][hd] full width. */
void fm_ref_rope_apply(float *x, int64_t ld, int64_t rows, int heads, int head_dim,
                       const float *cos_t, const float *sin_t);
void fm_ref_attention(float *o, int64_t ldo, const float *q, const float *k, const float *v,
                      int64_t ldqkv, const int32_t *cu, int n_seg, int heads, int head_dim,
                      float scale);
void fm_ref_conv3d(float *y, const float *x, const float *w, const float *b, int64_t batch,
                   const fm_conv3d_params *p, const int64_t in_dims[3]);
/* Decoder references: y[m][n] (x[m][k] contiguous) over stored-dtype weights; SwiGLU over n
 * values; full-width M-RoPE tables [T][hd] (libm powf/cosf/sinf); attention against the cache
 * (one row, one head at a time, softmax as exp / sum). */
void fm_ref_linear_w(float *y, const float *x, const void *w, fm_dtype wdt, const float *b,
                     int64_t m, int64_t n, int64_t k);
void fm_ref_swiglu(float *y, const float *g, const float *u, int64_t n);
void fm_ref_mrope_table(float *cos_t, float *sin_t, const int64_t *pos3, int64_t T, int head_dim,
                        double theta, const int sections[3], int interleaved);
void fm_ref_attention_cache(float *o, int64_t ldo, const float *q, int64_t ldq, const void *kc,
                            const void *vc, fm_dtype cdt, int64_t cap, int n_kv,
                            const int32_t *slot, const int32_t *pos, int64_t rows, int n_heads,
                            int head_dim, float scale);

#endif
