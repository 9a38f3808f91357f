/* Kernel tests: each optimised kernel against its naive reference (random data, several
 * shapes), independence of 1/2/3 threads, the thread pool, Conv3d geometry checks. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/testing.h"
#include "core/threadpool.h"
#include "nn/kernels.h"
#include "support/check.h"
#include "support/kernel_ref.h"

static int quick; /* FM_TEST_QUICK=1 (sanitizer builds): smaller shapes */

/* ---- helpers ---------------------------------------------------------------------------- */

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static float urand(float lo, float hi) { /* xorshift64*, uniform in [lo, hi) */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    uint64_t v = rng_state * 2685821657736338717ull;
    return lo + (hi - lo) * (float)((v >> 40) * (1.0 / 16777216.0));
}
static float *rand_buf(int64_t n, float lo, float hi) {
    float *p = malloc((size_t)(n > 0 ? n : 1) * sizeof *p);
    for (int64_t i = 0; i < n; i++)
        p[i] = urand(lo, hi);
    return p;
}
static float *copy_buf(const float *a, int64_t n) {
    float *p = malloc((size_t)(n > 0 ? n : 1) * sizeof *p);
    memcpy(p, a, (size_t)n * sizeof *p);
    return p;
}
static double rel_l2(const float *a, const float *ref, int64_t n) {
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = (double)a[i] - ref[i];
        num += d * d;
        den += (double)ref[i] * ref[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}
/* Largest |a - ref| / (|ref| + floor) over n values. */
static double max_rel(const float *a, const float *ref, int64_t n, double floor) {
    double m = 0;
    for (int64_t i = 0; i < n; i++) {
        double e = fabs((double)a[i] - ref[i]) / (fabs((double)ref[i]) + floor);
        if (!(e <= m)) m = e; /* NaN counts as worst */
    }
    return m;
}

/* Largest |a - ref| (normalised outputs are O(1), so absolute error is the fair measure where
 * x - mean cancels). */
static double max_abs(const float *a, const float *ref, int64_t n) {
    double m = 0;
    for (int64_t i = 0; i < n; i++) {
        double e = fabs((double)a[i] - ref[i]);
        if (!(e <= m)) m = e;
    }
    return m;
}

static fm_threadpool *pools[4]; /* pools[t] has t threads (1..3) */

/* ---- thread pool ------------------------------------------------------------------------ */

typedef struct count_ctx {
    int *hits;
    int max_worker;
} count_ctx;
static void count_body(void *ctx, int64_t b, int64_t e, int worker) {
    count_ctx *c = ctx;
    for (int64_t i = b; i < e; i++)
        __atomic_fetch_add(&c->hits[i], 1, __ATOMIC_RELAXED);
    if (worker > __atomic_load_n(&c->max_worker, __ATOMIC_RELAXED))
        __atomic_store_n(&c->max_worker, worker, __ATOMIC_RELAXED);
}

static void test_threadpool_covers_range(void) {
    static const int64_t ns[] = {0, 1, 7, 100, 1000, 12345};
    static const int64_t grains[] = {1, 3, 64, 5000};
    for (int t = 1; t <= 3; t++)
        for (size_t a = 0; a < sizeof ns / sizeof ns[0]; a++)
            for (size_t g = 0; g < sizeof grains / sizeof grains[0]; g++) {
                int *hits = calloc((size_t)ns[a] + 1, sizeof *hits);
                count_ctx c = {hits, 0};
                fm_threadpool_for(pools[t], ns[a], grains[g], count_body, &c);
                int bad = 0;
                for (int64_t i = 0; i < ns[a]; i++)
                    bad += hits[i] != 1;
                CHECK_MSG(bad == 0, "threads %d n %lld grain %lld: %d indices not run exactly once",
                          t, (long long)ns[a], (long long)grains[g], bad);
                CHECK(c.max_worker < t);
                free(hits);
            }
}

typedef struct nest_ctx {
    fm_threadpool *pool;
    int *hits; /* [8][8] */
} nest_ctx;
static void nest_inner(void *ctx, int64_t b, int64_t e, int worker) {
    (void)worker;
    int *row = ctx;
    for (int64_t i = b; i < e; i++)
        __atomic_fetch_add(&row[i], 1, __ATOMIC_RELAXED);
}
static void nest_outer(void *ctx, int64_t b, int64_t e, int worker) {
    (void)worker;
    nest_ctx *c = ctx;
    for (int64_t i = b; i < e; i++)
        fm_threadpool_for(c->pool, 8, 1, nest_inner, c->hits + 8 * i);
}

static void test_threadpool_nested_and_args(void) {
    int hits[64] = {0};
    nest_ctx c = {pools[3], hits};
    fm_threadpool_for(pools[3], 8, 1, nest_outer, &c);
    int bad = 0;
    for (int i = 0; i < 64; i++)
        bad += hits[i] != 1;
    CHECK_EQ_INT(0, bad);
    fm_error errbuf, *err = &errbuf;
    fm_threadpool *p = (fm_threadpool *)1;
    CHECK_STATUS(FM_ERR_INVALID_ARG, fm_threadpool_new(-1, &p, err), err);
    CHECK(p == NULL);
    CHECK_STATUS(FM_ERR_INVALID_ARG, fm_threadpool_new(5000, &p, err), err);
    CHECK_OK(fm_threadpool_new(0, &p, err), err);
    CHECK_EQ_INT(fm_default_threads(), fm_threadpool_threads(p));
    fm_threadpool_free(p);
    fm_threadpool_free(NULL);
    CHECK_EQ_INT(1, fm_threadpool_threads(NULL));
    /* allocation failure inside new: clean error, nothing leaked */
    fm_fault_set(FM_FAULT_ALLOC, 1);
    CHECK_STATUS(FM_ERR_NOMEM, fm_threadpool_new(2, &p, err), err);
    fm_fault_set(FM_FAULT_ALLOC, 2);
    CHECK_STATUS(FM_ERR_NOMEM, fm_threadpool_new(2, &p, err), err);
    fm_fault_set(FM_FAULT_ALLOC, 0);
}

/* ---- Linear ----------------------------------------------------------------------------- */

static void test_linear_vs_ref(void) {
    static const int64_t shapes[][3] = {{1, 1, 1},       {7, 13, 5}, {33, 65, 129},
                                        {64, 100, 1176}, {5, 3, 0},  {600, 300, 40}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int64_t m = shapes[s][0], n = shapes[s][1], k = shapes[s][2], ld = n + 5;
        float *x = rand_buf(m * k, -1, 1), *w = rand_buf(n * k, -1, 1), *b = rand_buf(n, -1, 1);
        float *y = rand_buf(m * ld, -9, 9), *r = malloc((size_t)(m * n) * sizeof *r),
              *yc = malloc((size_t)(m * n) * 4);
        for (int with_b = 0; with_b < 2; with_b++)
            for (int act = -1; act < FM_ACTIVATION_COUNT;
                 act += (act < 0 ? 1 : 2)) { /* none, quick_gelu, silu */
                for (int64_t i = 0; i < m; i++)
                    y[i * ld + n + 2] = 12345.0f; /* padding column must survive */
                fm_k_linear(y, ld, x, w, with_b ? b : NULL, m, n, k, act, pools[2]);
                kref_linear(r, x, w, with_b ? b : NULL, m, n, k);
                if (act >= 0) kref_act(r, r, m * n, act);
                for (int64_t i = 0; i < m; i++)
                    memcpy(yc + i * n, y + i * ld, (size_t)n * 4);
                double e = k ? rel_l2(yc, r, m * n) : max_rel(yc, r, m * n, 1e-30);
                CHECK_MSG(e <= 2e-6, "linear %lldx%lldx%lld bias %d act %d: rel-L2 %.3g",
                          (long long)m, (long long)n, (long long)k, with_b, act, e);
                for (int64_t i = 0; i < m; i++)
                    CHECK(y[i * ld + n + 2] == 12345.0f);
            }
        free(x), free(w), free(b), free(y), free(r), free(yc);
    }
}

/* The tiling depends on the pool size; every element is the same sgemm dot product, so the
 * results are identical. */
static void test_linear_threads(void) {
    int64_t m = 1030, n = 700, k = 300;
    float *x = rand_buf(m * k, -1, 1), *w = rand_buf(n * k, -1, 1), *b = rand_buf(n, -1, 1);
    float *y1 = malloc((size_t)(m * n) * sizeof *y1), *yt = malloc((size_t)(m * n) * sizeof *yt);
    fm_k_linear(y1, n, x, w, b, m, n, k, FM_ACTIVATION_GELU, pools[1]);
    for (int t = 2; t <= 3; t++) {
        fm_k_linear(yt, n, x, w, b, m, n, k, FM_ACTIVATION_GELU, pools[t]);
        double e = rel_l2(yt, y1, m * n);
        CHECK_MSG(e <= 1e-6, "linear threads %d vs 1: rel-L2 %.3g", t, e);
    }
    free(x), free(w), free(b), free(y1), free(yt);
}

/* ---- norms ------------------------------------------------------------------------------ */

static void test_norms_vs_ref(void) {
    static const int64_t shapes[][2] = {{1, 1}, {3, 5}, {17, 16}, {9, 33}, {4, 1280}, {257, 96}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int64_t rows = shapes[s][0], dim = shapes[s][1], n = rows * dim;
        float *x = rand_buf(n, -3, 5), *g = rand_buf(dim, 0.5f, 1.5f), *b = rand_buf(dim, -1, 1);
        float *r = malloc((size_t)n * sizeof *r), *y[4];
        for (int variant = 0; variant < 4; variant++) { /* g/b present or NULL */
            const float *gv = variant & 1 ? g : NULL, *bv = variant & 2 ? b : NULL;
            kref_layernorm(r, x, gv, bv, rows, dim, (double)1e-6f);
            for (int t = 1; t <= 3; t++) {
                y[t] = malloc((size_t)n * sizeof *y[t]);
                fm_k_layernorm(y[t], x, gv, bv, rows, dim, 1e-6f, pools[t]);
            }
            double e = max_abs(y[1], r, n);
            CHECK_MSG(e <= 1e-5, "layernorm %lldx%lld variant %d: max abs %.3g", (long long)rows,
                      (long long)dim, variant, e);
            CHECK(memcmp(y[1], y[2], (size_t)n * 4) == 0 && memcmp(y[1], y[3], (size_t)n * 4) == 0);
            float *inplace = copy_buf(x, n); /* y == x allowed */
            fm_k_layernorm(inplace, inplace, gv, bv, rows, dim, 1e-6f, pools[2]);
            CHECK(memcmp(inplace, y[1], (size_t)n * 4) == 0);
            free(inplace);
            for (int t = 1; t <= 3; t++)
                free(y[t]);
        }
        kref_rmsnorm(r, x, g, rows, dim, (double)1e-6f);
        float *yr = malloc((size_t)n * sizeof *yr), *yr3 = malloc((size_t)n * sizeof *yr3);
        fm_k_rmsnorm(yr, x, g, rows, dim, 1e-6f, pools[1]);
        fm_k_rmsnorm(yr3, x, g, rows, dim, 1e-6f, pools[3]);
        double e = max_rel(yr, r, n, 1e-3);
        CHECK_MSG(e <= 2e-6, "rmsnorm %lldx%lld: max rel %.3g", (long long)rows, (long long)dim, e);
        CHECK(memcmp(yr, yr3, (size_t)n * 4) == 0);
        free(x), free(g), free(b), free(r), free(yr), free(yr3);
    }
}

/* Inputs of variance ~1e-7, where eps is a large part of the denominator: the kernels must use
 * the eps they are given (1e-6 for the vision LayerNorms, 1e-5 elsewhere). */
static void test_norms_small_variance(void) {
    const int64_t rows = 9, dim = 96, n = rows * dim;
    const float eps[2] = {1e-6f, 1e-5f};
    float *x = rand_buf(n, -5e-4f, 6e-4f), *g = rand_buf(dim, 0.5f, 1.5f),
          *b = rand_buf(dim, -1, 1);
    float *r = malloc((size_t)n * sizeof *r), *y = malloc((size_t)n * sizeof *y);
    for (int k = 0; k < 2; k++) {
        kref_layernorm(r, x, g, b, rows, dim, (double)eps[k]);
        fm_k_layernorm(y, x, g, b, rows, dim, eps[k], pools[2]);
        double e = max_abs(y, r, n);
        CHECK_MSG(e <= 1e-5, "layernorm, variance ~1e-7, eps %g: max abs %.3g", (double)eps[k], e);
        kref_rmsnorm(r, x, g, rows, dim, (double)eps[k]);
        fm_k_rmsnorm(y, x, g, rows, dim, eps[k], pools[2]);
        e = max_rel(y, r, n, 1e-3);
        CHECK_MSG(e <= 2e-6, "rmsnorm, mean square ~1e-7, eps %g: max rel %.3g", (double)eps[k], e);
    }
    free(x), free(g), free(b), free(r), free(y);
}

/* ---- activations, exp, softmax --------------------------------------------------------- */

static void test_expf_poly(void) {
    double worst = 0;
    int n = quick ? 20001 : 400001;
    for (int i = 0; i < n; i++) {
        float x = -87.0f + 175.0f * (float)i / (float)(n - 1);
        double e = fabs((double)fm_expf_poly(x) - exp((double)x)) / exp((double)x);
        if (e > worst) worst = e;
    }
    CHECK_MSG(worst <= 3.0e-7, "fm_expf_poly max rel error %.3g", worst);
    CHECK(fm_expf_poly(0.0f) == 1.0f);
    CHECK(fm_expf_poly(-1000.0f) > 0.0f && fm_expf_poly(-1000.0f) < 1e-37f);
    CHECK(isfinite(fm_expf_poly(1000.0f)));
    CHECK(isnan(fm_expf_poly(NAN)));
}

static void test_act_vs_ref(void) {
    static const int64_t sizes[] = {1, 15, 16, 1000, 4099, 70001};
    for (int act = 0; act < FM_ACTIVATION_COUNT; act++)
        for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
            int64_t n = sizes[s];
            float *x = rand_buf(n, -12, 12), *r = malloc((size_t)n * sizeof *r);
            if (n > 4) x[0] = 0.0f, x[1] = -95.0f, x[2] = 95.0f, x[3] = -1e-30f;
            float *y1 = malloc((size_t)n * sizeof *y1), *y3 = copy_buf(x, n);
            kref_act(r, x, n, act);
            fm_k_act(y1, x, n, (fm_activation)act, pools[1]);
            fm_k_act(y3, y3, n, (fm_activation)act, pools[3]); /* in place, 3 threads */
            /* Against the double reference: a few ulp of the value, plus, for the GELUs, what
             * f32 loses in 1 + erf(.) / 1 + tanh(.) near -1 (one ulp of 1, times |x| / 2), which
             * PyTorch's f32 GELU loses the same way; below 1e-30 anything tiny is fine. */
            double worst = 0;
            int gelu = act == FM_ACTIVATION_GELU || act == FM_ACTIVATION_GELU_TANH;
            for (int64_t i = 0; i < n; i++) {
                double allowed = 2e-6 * fabs(r[i]) + (gelu ? 6e-8 * fabs(x[i]) : 0) + 1e-30;
                worst = fmax(worst, fabs((double)y1[i] - r[i]) / allowed);
                if (y1[i] != y1[i]) worst = INFINITY;
            }
            CHECK_MSG(worst <= 1.0, "%s n=%lld: error %.3g times the allowed one",
                      fm_act_name((fm_activation)act), (long long)n, worst);
            CHECK(memcmp(y1, y3, (size_t)n * 4) == 0);
            free(x), free(r), free(y1), free(y3);
        }
    fm_activation a = FM_ACTIVATION_COUNT;
    CHECK(fm_activation_from_name("quick_gelu", &a) && a == FM_ACTIVATION_QUICK_GELU);
    CHECK(fm_activation_from_name("gelu", &a) && a == FM_ACTIVATION_GELU);
    CHECK(fm_activation_from_name("swish", &a) && a == FM_ACTIVATION_SILU);
    CHECK(fm_activation_from_name("gelu_pytorch_tanh", &a) && a == FM_ACTIVATION_GELU_TANH);
    CHECK(!fm_activation_from_name("relu6", &a));
    CHECK(!fm_activation_from_name(NULL, &a));
    CHECK_EQ_STR("silu", fm_act_name(FM_ACTIVATION_SILU));
}

static void test_softmax_and_add(void) {
    static const int64_t shapes[][3] = {
        {1, 1, 1}, {3, 7, 9}, {5, 16, 16}, {8, 1029, 1100}, {2, 300, 300}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int64_t rows = shapes[s][0], cols = shapes[s][1], ld = shapes[s][2], n = rows * ld;
        float *a = rand_buf(n, -30, 30), *b = copy_buf(a, n);
        fm_k_softmax_rows(a, rows, cols, ld);
        kref_softmax_rows(b, rows, cols, ld);
        double e = max_rel(a, b, n, 1e-30), worst_sum = 0;
        for (int64_t r = 0; r < rows; r++) {
            double sum = 0;
            for (int64_t c = 0; c < cols; c++)
                sum += a[r * ld + c];
            worst_sum = fabs(sum - 1) > worst_sum ? fabs(sum - 1) : worst_sum;
            for (int64_t c = cols; c < ld; c++)
                CHECK(a[r * ld + c] == b[r * ld + c]); /* untouched */
        }
        CHECK_MSG(e <= 4e-6, "softmax %lldx%lld: max rel %.3g", (long long)rows, (long long)cols,
                  e);
        CHECK_MSG(worst_sum <= 1e-5, "softmax row sum off by %.3g", worst_sum);
        free(a), free(b);
    }
    int64_t n = 100003;
    float *y = rand_buf(n, -1, 1), *x = rand_buf(n, -1, 1), *y2 = copy_buf(y, n);
    fm_k_add(y, x, n, pools[3]);
    int bad = 0;
    for (int64_t i = 0; i < n; i++)
        bad += y[i] != y2[i] + x[i];
    CHECK_EQ_INT(0, bad);
    free(y), free(x), free(y2);
}

/* ---- RoPE ------------------------------------------------------------------------------- */

static void test_rope(void) {
    static const int hds[] = {4, 16, 80};
    for (size_t s = 0; s < sizeof hds / sizeof hds[0]; s++) {
        int hd = hds[s], heads = 3;
        int64_t rows = 37, ld = (int64_t)heads * hd * 3 + 5;
        int32_t *pos = malloc((size_t)rows * 2 * sizeof *pos);
        for (int64_t r = 0; r < rows; r++)
            pos[2 * r] = (int32_t)(r % 11), pos[2 * r + 1] = (int32_t)(r * 7 % 60);
        float *cf = malloc((size_t)(rows * hd / 2) * 4), *sf = malloc((size_t)(rows * hd / 2) * 4);
        float *cr = malloc((size_t)(rows * hd) * 4), *sr = malloc((size_t)(rows * hd) * 4);
        fm_k_vision_rope_table(cf, sf, pos, rows, hd);
        kref_vision_rope_table(cr, sr, pos, rows, hd);
        /* the angles are f32 quantities by the spec (their rounding moves cos/sin by < 4e-6 for
         * positions < 64); the reference takes them in double */
        double worst = 0;
        for (int64_t r = 0; r < rows; r++)
            for (int d = 0; d < hd; d++) {
                worst = fmax(worst, fabs(cf[r * hd / 2 + d % (hd / 2)] - cr[r * hd + d]));
                worst = fmax(worst, fabs(sf[r * hd / 2 + d % (hd / 2)] - sr[r * hd + d]));
            }
        CHECK_MSG(worst <= 1e-5, "rope table hd %d: max abs %.3g vs the reference", hd, worst);
        /* apply, on the kernel's own tables widened to [rows][hd] for the reference */
        for (int64_t r = 0; r < rows; r++)
            for (int d = 0; d < hd; d++) {
                cr[r * hd + d] = cf[r * hd / 2 + d % (hd / 2)];
                sr[r * hd + d] = sf[r * hd / 2 + d % (hd / 2)];
            }
        float *x = rand_buf(rows * ld, -2, 2), *xr = copy_buf(x, rows * ld),
              *x3 = copy_buf(x, rows * ld);
        fm_k_rope_apply(x, ld, rows, heads, hd, cf, sf, pools[1]);
        fm_k_rope_apply(x3, ld, rows, heads, hd, cf, sf, pools[3]);
        kref_rope_apply(xr, ld, rows, heads, hd, cr, sr);
        double e = max_abs(x, xr, rows * ld);
        CHECK_MSG(e <= 1e-6, "rope apply hd %d: max abs %.3g vs the reference", hd, e);
        CHECK(memcmp(x, x3, (size_t)(rows * ld) * 4) == 0);
        free(pos), free(cf), free(sf), free(cr), free(sr), free(x), free(xr), free(x3);
    }
}

/* ---- attention -------------------------------------------------------------------------- */

static void test_attention(void) {
    static const int32_t cu_a[] = {0, 5};
    static const int32_t cu_b[] = {0, 3, 10, 10, 140, 400};
    static const int32_t cu_c[] = {0, 1, 2, 3};
    const struct {
        const int32_t *cu;
        int nseg, heads, hd;
    } cases[] = {{cu_a, 1, 1, 8}, {cu_b, 5, 3, 16}, {cu_c, 3, 2, 4}, {cu_b, 4, 2, 80}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        int heads = cases[c].heads, hd = cases[c].hd, nseg = cases[c].nseg;
        int64_t n = cases[c].cu[nseg], d = (int64_t)heads * hd, ld = 3 * d, ldo = d + 3;
        int64_t max_seg = 1;
        for (int s = 0; s < nseg; s++)
            if (cases[c].cu[s + 1] - cases[c].cu[s] > max_seg)
                max_seg = cases[c].cu[s + 1] - cases[c].cu[s];
        float *qkv = rand_buf(n * ld, -2, 2), *ref = rand_buf(n * ldo, 7, 8), *o[4];
        float *scratch = malloc(fm_k_attention_scratch_floats(max_seg, 3) * sizeof *scratch);
        float scale = (float)pow(hd, -0.5);
        kref_attention(ref, ldo, qkv, qkv + d, qkv + 2 * d, ld, cases[c].cu, nseg, heads, hd,
                       scale);
        for (int t = 1; t <= 3; t++) {
            o[t] = copy_buf(ref, n * ldo);
            for (int64_t r = 0; r < n; r++)
                for (int64_t i = 0; i < d; i++)
                    o[t][r * ldo + i] = -99.0f;
            fm_k_attention(o[t], ldo, qkv, ld, qkv + d, ld, qkv + 2 * d, ld, cases[c].cu, nseg,
                           heads, hd, scale, scratch, pools[t]);
            double e = rel_l2(o[t], ref, n * ldo);
            CHECK_MSG(e <= 1e-6, "attention case %zu threads %d: rel-L2 %.3g", c, t, e);
        }
        CHECK(memcmp(o[2], o[3], (size_t)(n * ldo) * 4) == 0);
        CHECK_MSG(rel_l2(o[1], o[2], n * ldo) <= 1e-6, "attention 1 vs 2 threads");
        for (int t = 1; t <= 3; t++)
            free(o[t]);
        free(qkv), free(ref), free(scratch);
    }
}

/* ---- Conv3d ----------------------------------------------------------------------------- */

typedef struct conv_case {
    fm_conv3d_params p;
    int64_t in[3], batch;
    int bias;
} conv_case;

static void run_conv_case(const conv_case *cc, int idx) {
    int64_t od[3];
    fm_error errbuf, *err = &errbuf;
    CHECK_OK(fm_conv3d_out_dims(&cc->p, cc->in, od, err), err);
    int64_t nx = cc->batch * cc->p.in_ch * cc->in[0] * cc->in[1] * cc->in[2];
    int64_t nw =
        (int64_t)cc->p.out_ch * (cc->p.in_ch / cc->p.groups) * cc->p.k[0] * cc->p.k[1] * cc->p.k[2];
    int64_t ny = cc->batch * cc->p.out_ch * od[0] * od[1] * od[2];
    float *x = rand_buf(nx, -1, 1), *w = rand_buf(nw, -1, 1), *b = rand_buf(cc->p.out_ch, -1, 1);
    float *r = malloc((size_t)ny * 4), *y[4];
    kref_conv3d(r, x, w, cc->bias ? b : NULL, cc->batch, cc->p.in_ch, cc->p.out_ch, cc->p.groups,
                cc->p.k, cc->p.stride, cc->p.pad, cc->p.dil, cc->in);
    for (int t = 1; t <= 3; t++) {
        y[t] = rand_buf(ny, 50, 60);
        fm_k_conv3d(y[t], x, w, cc->bias ? b : NULL, cc->batch, &cc->p, cc->in, pools[t]);
    }
    double e = rel_l2(y[1], r, ny);
    CHECK_MSG(e <= 2e-6, "conv3d case %d: rel-L2 %.3g vs reference", idx, e);
    CHECK_MSG(memcmp(y[1], y[2], (size_t)ny * 4) == 0 && memcmp(y[1], y[3], (size_t)ny * 4) == 0,
              "conv3d case %d differs between 1/2/3 threads", idx);
    for (int t = 1; t <= 3; t++)
        free(y[t]);
    free(x), free(w), free(b), free(r);
}

static void test_conv3d_vs_ref(void) {
    const conv_case cases[] = {
        /* Qwen2-VL patch embedding shape (kernel = stride = input extent): merge level 3 */
        {{16, 3, {2, 14, 14}, {2, 14, 14}, {0, 0, 0}, {1, 1, 1}, 1}, {2, 14, 14}, 5, 0},
        {{20, 3, {2, 4, 4}, {2, 4, 4}, {0, 0, 0}, {1, 1, 1}, 1}, {2, 4, 4}, 9, 1},
        /* general: padding, strides, dilation, groups */
        {{6, 4, {3, 3, 3}, {1, 2, 1}, {1, 0, 2}, {1, 1, 2}, 2}, {5, 7, 9}, 2, 1},
        {{4, 2, {1, 3, 5}, {2, 1, 3}, {0, 1, 2}, {1, 2, 1}, 1}, {3, 6, 17}, 3, 0},
        /* whole rows (level 1) and whole planes (level 2) of a larger input */
        {{5, 3, {2, 2, 24}, {1, 1, 1}, {0, 0, 0}, {1, 1, 1}, 1}, {4, 6, 24}, 2, 1},
        {{5, 2, {2, 6, 20}, {2, 1, 1}, {0, 0, 0}, {1, 1, 1}, 1}, {5, 6, 20}, 2, 1},
        /* depthwise, large window run */
        {{6, 6, {1, 1, 40}, {1, 1, 3}, {0, 0, 5}, {1, 1, 1}, 6}, {2, 2, 70}, 2, 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        run_conv_case(&cases[i], (int)i);
}

static void test_conv3d_geometry_errors(void) {
    fm_error errbuf, *err = &errbuf;
    int64_t in[3] = {2, 14, 14}, od[3];
    fm_conv3d_params p = {8, 3, {2, 14, 14}, {2, 14, 14}, {0, 0, 0}, {1, 1, 1}, 1};
    CHECK_OK(fm_conv3d_out_dims(&p, in, od, err), err);
    CHECK(od[0] == 1 && od[1] == 1 && od[2] == 1);
    fm_conv3d_params q = p;
    q.groups = 2; /* does not divide 3 */
    CHECK_STATUS(FM_ERR_INVALID_ARG, fm_conv3d_out_dims(&q, in, od, err), err);
    CHECK_CONTAINS(err->msg, "groups");
    q = p;
    q.k[1] = 15; /* larger than the input */
    CHECK_STATUS(FM_ERR_INVALID_ARG, fm_conv3d_out_dims(&q, in, od, err), err);
    CHECK_CONTAINS(err->msg, "axis H");
    q = p;
    q.stride[2] = 0;
    CHECK_STATUS(FM_ERR_INVALID_ARG, fm_conv3d_out_dims(&q, in, od, err), err);
    q = p;
    q.pad[0] = 1;
    q.stride[0] = 1;
    CHECK_OK(fm_conv3d_out_dims(&q, in, od, err), err);
    CHECK_EQ_INT(3, od[0]); /* (2 + 2 - 2) / 1 + 1 */
}

int main(void) {
    quick = getenv("FM_TEST_QUICK") && strcmp(getenv("FM_TEST_QUICK"), "1") == 0;
    for (int t = 1; t <= 3; t++) {
        fm_error err;
        if (fm_threadpool_new(t, &pools[t], &err) != FM_OK) {
            fprintf(stderr, "cannot create pool: %s\n", err.msg);
            return 1;
        }
    }
    RUN(test_threadpool_covers_range);
    RUN(test_threadpool_nested_and_args);
    RUN(test_linear_vs_ref);
    RUN(test_linear_threads);
    RUN(test_norms_vs_ref);
    RUN(test_norms_small_variance);
    RUN(test_expf_poly);
    RUN(test_act_vs_ref);
    RUN(test_softmax_and_add);
    RUN(test_rope);
    RUN(test_attention);
    RUN(test_conv3d_vs_ref);
    RUN(test_conv3d_geometry_errors);
    for (int t = 1; t <= 3; t++)
        fm_threadpool_free(pools[t]);
    TEST_END();
}
