/* Optimised f32 kernels: Linear via CBLAS, norms, activations, softmax, vision RoPE; inner
 * loops run in fixed FM_VL-lane blocks so they vectorise without -ffast-math. */
#include "nn/kernels.h"

#include <cblas.h>
#include <limits.h>
#include <math.h>
#include <string.h>

/* ---- activation names ------------------------------------------------------------------- */

const char *fm_act_name(fm_activation a) {
    static const char *const names[FM_ACTIVATION_COUNT] = {"quick_gelu", "gelu", "silu",
                                                           "gelu_pytorch_tanh"};
    return (unsigned)a < FM_ACTIVATION_COUNT ? names[a] : "?";
}

/* ---- Linear ------------------------------------------------------------------------------ */

static void act_range(float *y, int64_t n, int act); /* below */

typedef struct linear_job {
    float *y; /* [m][ldy] */
    int64_t ldy;
    const float *x, *w, *b; /* [m][k], [n][k], [n] or NULL */
    int64_t m, n, k, mb, nb, n_col_tiles;
    int act;
} linear_job;

/* One tile: rows [r0, r0+mb) x columns [c0, c0+nb): bias rows, one sgemm accumulating onto
 * them (beta = 1; OpenBLAS would otherwise spend a pass zeroing the tile), then the activation
 * while the tile is still in cache. */
static void linear_tile(const linear_job *j, int64_t t) {
    int64_t r0 = (t / j->n_col_tiles) * j->mb, c0 = (t % j->n_col_tiles) * j->nb;
    int64_t rows = j->m - r0 < j->mb ? j->m - r0 : j->mb,
            cols = j->n - c0 < j->nb ? j->n - c0 : j->nb;
    float *y = j->y + r0 * j->ldy + c0;
    if (j->b)
        for (int64_t r = 0; r < rows; r++)
            memcpy(y + r * j->ldy, j->b + c0, (size_t)cols * sizeof *y);
    else if (j->k <= 0)
        for (int64_t r = 0; r < rows; r++)
            memset(y + r * j->ldy, 0, (size_t)cols * sizeof *y);
    if (j->k > 0)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, (int)cols, (int)j->k, 1.0f,
                    j->x + r0 * j->k, (int)j->k, j->w + c0 * j->k, (int)j->k, j->b ? 1.0f : 0.0f, y,
                    (int)j->ldy);
    if (j->act >= 0)
        for (int64_t r = 0; r < rows; r++)
            act_range(y + r * j->ldy, cols, j->act);
}

static void linear_body(void *ctx, int64_t t0, int64_t t1, int worker) {
    (void)worker;
    for (int64_t t = t0; t < t1; t++)
        linear_tile(ctx, t);
}

/* Row blocks of at most 512 rows; column blocks (multiples of 64) so that there are at least
 * four tiles per thread when the shape allows, and at most 2048 columns per tile. */
static void linear_tiling(linear_job *j, int threads) {
    j->mb = j->m < 512 ? j->m : 512;
    int64_t row_tiles = (j->m + j->mb - 1) / j->mb, want = 4 * (int64_t)threads;
    int64_t cols = (want + row_tiles - 1) / row_tiles;
    int64_t nb = (j->n + cols - 1) / cols;
    nb = (nb + 63) / 64 * 64;
    if (nb < 128) nb = 128;
    if (nb > 2048) nb = 2048;
    j->nb = nb;
    j->n_col_tiles = (j->n + nb - 1) / nb;
}

void fm_k_linear(float *y, int64_t ldy, const float *x, const float *w, const float *b, int64_t m,
                 int64_t n, int64_t k, int act, fm_threadpool *pool) {
    if (m <= 0 || n <= 0) return;
    linear_job j = {.y = y, .ldy = ldy, .x = x, .w = w, .b = b, .m = m, .n = n, .k = k, .act = act};
    linear_tiling(&j, fm_threadpool_threads(pool));
    fm_threadpool_for(pool, ((m + j.mb - 1) / j.mb) * j.n_col_tiles, 1, linear_body, &j);
}

/* ---- reductions -------------------------------------------------------------------------- */

float fm_k_vsum(const float *x, int64_t n) {
    float acc[FM_VL] = {0};
    int64_t i = 0;
    for (; i + FM_VL <= n; i += FM_VL)
        for (int l = 0; l < FM_VL; l++)
            acc[l] += x[i + l];
    float s = fm_k_lanes_sum(acc);
    for (; i < n; i++)
        s += x[i];
    return s;
}

float fm_k_vsumsq(const float *x, float c, int64_t n) {
    float acc[FM_VL] = {0};
    int64_t i = 0;
    for (; i + FM_VL <= n; i += FM_VL)
        for (int l = 0; l < FM_VL; l++) {
            float d = x[i + l] - c;
            acc[l] += d * d;
        }
    float s = fm_k_lanes_sum(acc);
    for (; i < n; i++)
        s += (x[i] - c) * (x[i] - c);
    return s;
}

float fm_k_vmax(const float *x, int64_t n) {
    float m = x[0];
    int64_t i = 0;
    if (n >= FM_VL) {
        float acc[FM_VL];
        for (int l = 0; l < FM_VL; l++)
            acc[l] = x[l];
        for (i = FM_VL; i + FM_VL <= n; i += FM_VL)
            for (int l = 0; l < FM_VL; l++)
                acc[l] = x[i + l] > acc[l] ? x[i + l] : acc[l];
        for (int l = 0; l < FM_VL; l++)
            m = acc[l] > m ? acc[l] : m;
    }
    for (; i < n; i++)
        m = x[i] > m ? x[i] : m;
    return m;
}

/* Two lane arrays (2 * FM_VL accumulators) hide the add latency in long dot products. */
float fm_k_vdot(const float *a, const float *b, int64_t n) {
    if (n < FM_VL) { /* short kernel rows: skip the lane set-up */
        float s = 0.0f;
        for (int64_t i = 0; i < n; i++)
            s += a[i] * b[i];
        return s;
    }
    float acc0[FM_VL] = {0}, acc1[FM_VL] = {0};
    int64_t i = 0;
    for (; i + 2 * FM_VL <= n; i += 2 * FM_VL) {
        for (int l = 0; l < FM_VL; l++)
            acc0[l] += a[i + l] * b[i + l];
        for (int l = 0; l < FM_VL; l++)
            acc1[l] += a[i + FM_VL + l] * b[i + FM_VL + l];
    }
    for (; i + FM_VL <= n; i += FM_VL)
        for (int l = 0; l < FM_VL; l++)
            acc0[l] += a[i + l] * b[i + l];
    for (int l = 0; l < FM_VL; l++)
        acc0[l] += acc1[l];
    float s = fm_k_lanes_sum(acc0);
    for (; i < n; i++)
        s += a[i] * b[i];
    return s;
}

/* ---- parallel helpers -------------------------------------------------------------------- */

/* Rows per task so that a task touches about 32 K floats (amortises the hand-off). */
static int64_t row_grain(int64_t dim) {
    int64_t g = dim > 0 ? (32768 + dim - 1) / dim : 1;
    return g < 1 ? 1 : g;
}

/* ---- LayerNorm / RMSNorm ----------------------------------------------------------------- */

typedef struct norm_job {
    float *y;           /* [rows][dim] */
    const float *x;     /* [rows][dim] */
    const float *g, *b; /* [dim] or NULL */
    int64_t dim;
    float eps;
} norm_job;

/* Each FM_VL block is loaded into locals before it is stored, so y may equal x and the
 * fixed-size inner loops still vectorise. */
static void layernorm_block(float *y, const float *x, const float *g, const float *b, int len,
                            float mean, float rstd) {
    float u[FM_VL];
    for (int l = 0; l < len; l++)
        u[l] = (x[l] - mean) * rstd;
    if (g)
        for (int l = 0; l < len; l++)
            u[l] = u[l] * g[l];
    if (b)
        for (int l = 0; l < len; l++)
            u[l] = u[l] + b[l];
    for (int l = 0; l < len; l++)
        y[l] = u[l];
}

static void layernorm_row(float *y, const float *x, const float *g, const float *b, int64_t dim,
                          float eps) {
    float mean = fm_k_vsum(x, dim) / (float)dim;
    float var = fm_k_vsumsq(x, mean, dim) / (float)dim;
    float rstd = 1.0f / sqrtf(var + eps);
    int64_t i = 0;
    for (; i + FM_VL <= dim; i += FM_VL)
        layernorm_block(y + i, x + i, g ? g + i : NULL, b ? b + i : NULL, FM_VL, mean, rstd);
    if (i < dim)
        layernorm_block(y + i, x + i, g ? g + i : NULL, b ? b + i : NULL, (int)(dim - i), mean,
                        rstd);
}

static void layernorm_body(void *ctx, int64_t r0, int64_t r1, int worker) {
    (void)worker;
    const norm_job *j = ctx;
    for (int64_t r = r0; r < r1; r++)
        layernorm_row(j->y + r * j->dim, j->x + r * j->dim, j->g, j->b, j->dim, j->eps);
}

void fm_k_layernorm(float *y, const float *x, const float *g, const float *b, int64_t rows,
                    int64_t dim, float eps, fm_threadpool *pool) {
    norm_job j = {y, x, g, b, dim, eps};
    fm_threadpool_for(pool, rows, row_grain(dim), layernorm_body, &j);
}

static void rmsnorm_row(float *y, const float *x, const float *g, int64_t dim, float eps) {
    float ms = fm_k_vsumsq(x, 0.0f, dim) / (float)dim;
    float rstd = 1.0f / sqrtf(ms + eps);
    for (int64_t i = 0; i < dim; i++) {
        float t = x[i] * rstd;
        y[i] = g ? g[i] * t : t;
    }
}

static void rmsnorm_body(void *ctx, int64_t r0, int64_t r1, int worker) {
    (void)worker;
    const norm_job *j = ctx;
    for (int64_t r = r0; r < r1; r++)
        rmsnorm_row(j->y + r * j->dim, j->x + r * j->dim, j->g, j->dim, j->eps);
}

void fm_k_rmsnorm(float *y, const float *x, const float *g, int64_t rows, int64_t dim, float eps,
                  fm_threadpool *pool) {
    norm_job j = {y, x, g, NULL, dim, eps};
    fm_threadpool_for(pool, rows, row_grain(dim), rmsnorm_body, &j);
}

/* ---- activations ------------------------------------------------------------------------- */

/* quick_gelu, SiLU and the tanh GELU use the vectorisable exp; the erf GELU calls libm erff. */
static inline float act_quick_gelu(float x) {
    float z = 1.702f * x;
    return x * (1.0f / (1.0f + fm_expf_poly(-z)));
}
static inline float act_silu(float x) {
    return x * (1.0f / (1.0f + fm_expf_poly(-x)));
}
static inline float act_gelu(float x) {
    return 0.5f * x * (1.0f + erff(x * (float)M_SQRT1_2));
}
static inline float act_gelu_tanh(float x) {
    const float k0 = (float)(M_SQRT2 * M_2_SQRTPI * 0.5),
                k1 = 0.044715f; /* sqrt(2/pi), cubic term */
    float inner = k0 * (x + k1 * x * x * x);
    /* 0.5·x·(1 + tanh(u)) = x·sigmoid(2u): the same function through the vectorisable exp,
     * about 3x cheaper than libm tanhf (it ran for ~15% of a tanh-GELU vision tower's forward),
     * and free of the cancellation of 1 + tanh(u) near -1 */
    return x * (1.0f / (1.0f + fm_expf_poly(-2.0f * inner)));
}

typedef struct act_job {
    float *y;       /* [n] */
    const float *x; /* [n] */
    fm_activation act;
} act_job;

/* One body per activation keeps the switch out of the vectorised loop; each block is read
 * into locals first (y may equal x). */
#define FM_ACT_BODY(NAME, FN)                                                                      \
    static void NAME(void *ctx, int64_t i0, int64_t i1, int worker) {                              \
        const act_job *j = ctx;                                                                    \
        float *y = j->y;                                                                           \
        const float *x = j->x;                                                                     \
        int64_t i = i0;                                                                            \
        (void)worker;                                                                              \
        for (; i + FM_VL <= i1; i += FM_VL) {                                                      \
            float t[FM_VL];                                                                        \
            for (int l = 0; l < FM_VL; l++)                                                        \
                t[l] = x[i + l];                                                                   \
            for (int l = 0; l < FM_VL; l++)                                                        \
                t[l] = FN(t[l]);                                                                   \
            for (int l = 0; l < FM_VL; l++)                                                        \
                y[i + l] = t[l];                                                                   \
        }                                                                                          \
        for (; i < i1; i++)                                                                        \
            y[i] = FN(x[i]);                                                                       \
    }
FM_ACT_BODY(act_body_quick_gelu, act_quick_gelu)
FM_ACT_BODY(act_body_silu, act_silu)
FM_ACT_BODY(act_body_gelu, act_gelu)
FM_ACT_BODY(act_body_gelu_tanh, act_gelu_tanh)
#undef FM_ACT_BODY

static void act_range(float *y, int64_t n, int act) {
    static const fm_parallel_fn bodies[FM_ACTIVATION_COUNT] = {act_body_quick_gelu, act_body_gelu,
                                                               act_body_silu, act_body_gelu_tanh};
    act_job j = {y, y, (fm_activation)act};
    bodies[act](&j, 0, n, 0);
}

void fm_k_act(float *y, const float *x, int64_t n, fm_activation act, fm_threadpool *pool) {
    static const fm_parallel_fn bodies[FM_ACTIVATION_COUNT] = {act_body_quick_gelu, act_body_gelu,
                                                               act_body_silu, act_body_gelu_tanh};
    if ((unsigned)act >= FM_ACTIVATION_COUNT) return;
    act_job j = {y, x, act};
    fm_threadpool_for(pool, n, 16384, bodies[act], &j);
}

typedef struct add_job {
    float *y;       /* [n], accumulated into */
    const float *x; /* [n] */
} add_job;

static void add_body(void *ctx, int64_t i0, int64_t i1, int worker) {
    (void)worker;
    const add_job *j = ctx;
    int64_t i = i0;
    for (; i + FM_VL <= i1; i += FM_VL) {
        float t[FM_VL];
        for (int l = 0; l < FM_VL; l++)
            t[l] = j->x[i + l];
        for (int l = 0; l < FM_VL; l++)
            j->y[i + l] = j->y[i + l] + t[l];
    }
    for (; i < i1; i++)
        j->y[i] = j->y[i] + j->x[i];
}

void fm_k_add(float *y, const float *x, int64_t n, fm_threadpool *pool) {
    add_job j = {y, x};
    fm_threadpool_for(pool, n, 32768, add_body, &j);
}

/* ---- softmax ----------------------------------------------------------------------------- */

float fm_k_exp_row(float *s, int64_t n, float mx) {
    float acc[FM_VL] = {0};
    int64_t i = 0;
    for (; i + FM_VL <= n; i += FM_VL)
        for (int l = 0; l < FM_VL; l++) {
            float e = fm_expf_poly(s[i + l] - mx);
            s[i + l] = e;
            acc[l] += e;
        }
    float sum = fm_k_lanes_sum(acc);
    for (; i < n; i++) {
        float e = fm_expf_poly(s[i] - mx);
        s[i] = e;
        sum += e;
    }
    return sum;
}

static void softmax_row(float *s, int64_t n) {
    float sum = fm_k_exp_row(s, n, fm_k_vmax(s, n));
    int64_t i = 0;
    for (; i + FM_VL <= n; i += FM_VL)
        for (int l = 0; l < FM_VL; l++)
            s[i + l] = s[i + l] / sum;
    for (; i < n; i++)
        s[i] = s[i] / sum;
}

void fm_k_softmax_rows(float *s, int64_t rows, int64_t cols, int64_t ld) {
    for (int64_t r = 0; r < rows; r++)
        softmax_row(s + r * ld, cols);
}

/* ---- vision RoPE ------------------------------------------------------------------------- */

void fm_k_vision_rope_table(float *cos_t, float *sin_t, const int32_t *pos, int64_t n,
                            int head_dim) {
    int q4 = head_dim / 4, h2 = head_dim / 2;
    float inv_freq[256]; /* head_dim / 4 entries; head_dim <= 1024 is checked by callers */
    for (int i = 0; i < q4 && i < 256; i++) {
        float e = (float)(2 * i) / (float)h2; /* arange(0, dim, 2) / dim in f32 */
        inv_freq[i] = 1.0f / powf(10000.0f, e);
    }
    for (int64_t r = 0; r < n; r++) {
        for (int i = 0; i < q4; i++) {
            float th_row = (float)pos[2 * r] * inv_freq[i];
            float th_col = (float)pos[2 * r + 1] * inv_freq[i];
            cos_t[r * h2 + i] = cosf(th_row);
            sin_t[r * h2 + i] = sinf(th_row);
            cos_t[r * h2 + q4 + i] = cosf(th_col);
            sin_t[r * h2 + q4 + i] = sinf(th_col);
        }
    }
}

typedef struct rope_job {
    float *x; /* [rows][ld], heads at columns j*hd */
    int64_t ld;
    int heads, hd;
    const float *cos_t, *sin_t; /* [rows][hd/2] */
} rope_job;

static void rope_head(float *x, const float *c, const float *s, int h2) {
    float *lo = x, *hi = x + h2;
    int d = 0;
    for (; d + FM_VL <= h2; d += FM_VL) {
        float a[FM_VL], bb[FM_VL], ra[FM_VL], rb[FM_VL];
        for (int l = 0; l < FM_VL; l++)
            a[l] = lo[d + l];
        for (int l = 0; l < FM_VL; l++)
            bb[l] = hi[d + l];
        for (int l = 0; l < FM_VL; l++)
            ra[l] = a[l] * c[d + l] - bb[l] * s[d + l];
        for (int l = 0; l < FM_VL; l++)
            rb[l] = bb[l] * c[d + l] + a[l] * s[d + l];
        for (int l = 0; l < FM_VL; l++)
            lo[d + l] = ra[l];
        for (int l = 0; l < FM_VL; l++)
            hi[d + l] = rb[l];
    }
    for (; d < h2; d++) {
        float a = lo[d], bb = hi[d];
        lo[d] = a * c[d] - bb * s[d];
        hi[d] = bb * c[d] + a * s[d];
    }
}

static void rope_body(void *ctx, int64_t r0, int64_t r1, int worker) {
    (void)worker;
    const rope_job *j = ctx;
    int h2 = j->hd / 2;
    for (int64_t r = r0; r < r1; r++)
        for (int h = 0; h < j->heads; h++)
            rope_head(j->x + r * j->ld + (int64_t)h * j->hd, j->cos_t + r * h2, j->sin_t + r * h2,
                      h2);
}

void fm_k_rope_apply(float *x, int64_t ld, int64_t rows, int heads, int head_dim,
                     const float *cos_t, const float *sin_t, fm_threadpool *pool) {
    rope_job j = {x, ld, heads, head_dim, cos_t, sin_t};
    fm_threadpool_for(pool, rows, row_grain((int64_t)heads * head_dim), rope_body, &j);
}

/* ---- SwiGLU ------------------------------------------------------------------------------ */

typedef struct swiglu_job {
    float *y;       /* [rows][ldy] */
    const float *g; /* [rows][ldg] */
    const float *u; /* [rows][ldu] */
    int64_t ldy, ldg, ldu, cols;
} swiglu_job;

/* Each block is read into locals before it is stored (y may equal g). */
static void swiglu_row(float *y, const float *g, const float *u, int64_t n) {
    int64_t i = 0;
    for (; i + FM_VL <= n; i += FM_VL) {
        float t[FM_VL];
        for (int l = 0; l < FM_VL; l++)
            t[l] = g[i + l];
        for (int l = 0; l < FM_VL; l++)
            t[l] = act_silu(t[l]) * u[i + l];
        for (int l = 0; l < FM_VL; l++)
            y[i + l] = t[l];
    }
    for (; i < n; i++)
        y[i] = act_silu(g[i]) * u[i];
}

static void swiglu_body(void *ctx, int64_t r0, int64_t r1, int worker) {
    (void)worker;
    const swiglu_job *j = ctx;
    for (int64_t r = r0; r < r1; r++)
        swiglu_row(j->y + r * j->ldy, j->g + r * j->ldg, j->u + r * j->ldu, j->cols);
}

void fm_k_swiglu(float *y, int64_t ldy, const float *g, int64_t ldg, const float *u, int64_t ldu,
                 int64_t rows, int64_t cols, fm_threadpool *pool) {
    swiglu_job j = {y, g, u, ldy, ldg, ldu, cols};
    fm_threadpool_for(pool, rows, row_grain(cols), swiglu_body, &j);
}
