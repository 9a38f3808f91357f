/* Decoder kernel tests, part 1: Linear over stored-dtype weights (GEMV and converted-panel GEMM
 * paths), SwiGLU and the M-RoPE tables, each against a float64 reference written here, on
 * several shapes with fresh random data; 1, 2 and 3 threads give identical bits. */
#include <cblas.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/threadpool.h"
#include "nn/kernels.h"
#include "support/check.h"

static int quick;               /* FM_TEST_QUICK=1 (sanitizer builds): fewer / smaller shapes */
static fm_threadpool *pools[4]; /* pools[t] has t threads */

/* ---- helpers ------------------------------------------------------------------------------ */

static uint64_t rng_state = 0x2545F4914F6CDD1Dull;
static uint64_t rnd64(void) { /* xorshift64* */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717ull;
}
static float urand(float lo, float hi) {
    return lo + (hi - lo) * (float)((rnd64() >> 40) * (1.0 / 16777216.0));
}
static float *rand_buf(int64_t n, float lo, float hi) {
    float *p = malloc((size_t)(n > 0 ? n : 1) * sizeof *p);
    for (int64_t i = 0; i < n; i++)
        p[i] = urand(lo, hi);
    return p;
}

/* The test's own 16-bit decoders (not the library's). */
static double bf16_value(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static double f16_value(uint16_t h) {
    int e = (h >> 10) & 31, m = h & 1023;
    double v = e == 0 ? ldexp(m, -24) : ldexp(1024 + m, e - 25);
    return h & 0x8000 ? -v : v;
}

/* Weights of dtype dt, n x k, placed at a deliberately under-aligned address: 16-bit rows start
 * 2 bytes past a 4-byte boundary, f32 rows 4 bytes past a 64-byte boundary. *block is what
 * to free. wd receives the exact values as doubles. bf16: random floats truncated to their top
 * 16 bits; f16: random sign, exponent 0..16 (subnormals included) and mantissa. */
static void *make_weights(fm_dtype dt, int64_t n, int64_t k, void **block, double *wd) {
    int64_t cnt = n * k;
    unsigned char *raw = malloc((size_t)cnt * 4 + 64);
    *block = raw;
    if (dt == FM_DTYPE_F32) {
        unsigned char *p = raw + 4;
        for (int64_t i = 0; i < cnt; i++) {
            float f = urand(-1, 1);
            memcpy(p + 4 * i, &f, 4);
            wd[i] = f;
        }
        return p;
    }
    unsigned char *p = raw + 2;
    for (int64_t i = 0; i < cnt; i++) {
        uint16_t h;
        if (dt == FM_DTYPE_BF16) {
            float f = urand(-1, 1);
            uint32_t u;
            memcpy(&u, &f, 4);
            h = (uint16_t)(u >> 16);
            wd[i] = bf16_value(h);
        } else {
            uint64_t r = rnd64();
            h = (uint16_t)(((r >> 20) & 1) << 15 | ((r >> 32) % 17) << 10 | ((r >> 40) & 1023));
            wd[i] = f16_value(h);
        }
        memcpy(p + 2 * i, &h, 2);
    }
    return p;
}

static const char *dt_str(fm_dtype dt) {
    return dt == FM_DTYPE_F32 ? "f32" : dt == FM_DTYPE_BF16 ? "bf16" : "f16";
}

/* ---- Linear over stored-dtype weights ----------------------------------------------------- */

typedef struct lw_case {
    int64_t m, n, k;
} lw_case;

/* y against Σ x·w + b in float64 (then silu when act): every element within the worst-case
 * bound of f32 summation in any order, (k + 2)·2^-24·Σ|x·w| (+ the same of |b|), scaled by
 * silu's slope (< 1.1) when act. */
static void check_linear_case(fm_dtype dt, const lw_case *c, int with_b, int act) {
    int64_t m = c->m, n = c->n, k = c->k, ldx = k + 5, ldy = n + 3;
    double *wd = malloc((size_t)(n * k + 1) * sizeof *wd);
    void *block, *w = make_weights(dt, n, k, &block, wd);
    float *x = rand_buf(m * ldx, -1, 1), *b = rand_buf(n, -0.5f, 0.5f),
          *y = rand_buf(m * ldy, 5, 6);
    float *scratch = malloc((fm_k_linear_w_scratch_floats(m, n, k, 3) + 1) * sizeof *scratch);
    for (int64_t i = 0; i < m; i++)
        y[i * ldy + n + 1] = 12345.0f; /* padding must survive */
    fm_k_linear_w(y, ldy, x, ldx, w, dt, with_b ? b : NULL, m, n, k, act, scratch, pools[3]);
    double worst = 0, worst_bound = 1;
    int64_t bad = 0;
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) {
            double s = with_b ? b[j] : 0, mag = with_b ? fabs(b[j]) : 0;
            for (int64_t p = 0; p < k; p++) {
                s += (double)x[i * ldx + p] * wd[j * k + p];
                mag += fabs((double)x[i * ldx + p] * wd[j * k + p]);
            }
            if (act == FM_ACTIVATION_SILU) s = s / (1.0 + exp(-s));
            double bound = (double)(k + 2) * 0x1p-24 * mag * 1.1 + 1e-30,
                   err = fabs(y[i * ldy + j] - s);
            if (!(err <= bound)) bad++;
            if (err / bound > worst / worst_bound) worst = err, worst_bound = bound;
        }
    CHECK_MSG(bad == 0,
              "linear_w %s m %lld n %lld k %lld bias %d act %d: expected every |y - ref| within "
              "the f32 summation bound, seen %lld outside (worst %.3g vs bound %.3g)",
              dt_str(dt), (long long)m, (long long)n, (long long)k, with_b, act, (long long)bad,
              worst, worst_bound);
    int pad_ok = 1;
    for (int64_t i = 0; i < m; i++)
        pad_ok &= y[i * ldy + n + 1] == 12345.0f;
    CHECK_MSG(pad_ok, "linear_w %s m %lld: expected the padding column untouched", dt_str(dt),
              (long long)m);
    free(wd), free(block), free(x), free(b), free(y), free(scratch);
}

static void test_linear_w_vs_ref(void) {
    /* GEMV (m <= 8): k below, at and off the vector blocks, n below the thread count, k split in
     * spans (2 x 5000, 1 x 9000); GEMM (m > 8): several panels and row blocks */
    static const lw_case cases[] = {
        {1, 1, 1},    {1, 7, 33},      {2, 5, 64},    {3, 37, 100},    {4, 16, 31},  {5, 33, 129},
        {8, 50, 300}, {1, 3, 1537},    {2, 1, 70},    {7, 2, 16},      {9, 70, 257}, {17, 130, 65},
        {9, 2, 40},   {300, 200, 100}, {600, 70, 40}, {64, 300, 1000}, {1, 5, 9000}, {2, 9, 5000}};
    static const fm_dtype dts[] = {FM_DTYPE_F32, FM_DTYPE_BF16, FM_DTYPE_F16};
    size_t nc = quick ? 12 : sizeof cases / sizeof cases[0];
    for (int d = 0; d < 3; d++)
        for (size_t c = 0; c < nc; c++) {
            check_linear_case(dts[d], &cases[c], 0, -1);
            check_linear_case(dts[d], &cases[c], 1, FM_ACTIVATION_SILU);
        }
}

/* k = 0: y = b (or 0), then the activation. */
static void test_linear_w_empty_k(void) {
    float b[3] = {1.0f, -2.0f, 0.5f}, y[6] = {9, 9, 9, 9, 9, 9};
    fm_k_linear_w(y, 3, NULL, 0, NULL, FM_DTYPE_BF16, b, 2, 3, 0, -1, NULL, pools[2]);
    CHECK_MSG(y[0] == 1.0f && y[4] == -2.0f && y[5] == 0.5f, "k = 0: expected y = b, seen %g %g %g",
              y[3], y[4], y[5]);
    fm_k_linear_w(y, 3, NULL, 0, NULL, FM_DTYPE_F32, NULL, 2, 3, 0, FM_ACTIVATION_SILU, NULL,
                  pools[2]);
    CHECK_MSG(y[0] == 0.0f && y[5] == 0.0f, "k = 0 no bias: expected 0, seen %g %g", y[0], y[5]);
}

/* Identical bits for 1, 2 and 3 threads on both paths, and on the GEMV path a row's result does
 * not depend on the other rows of the call (batched decode of several sequences). */
static void test_linear_w_threads_and_rows(void) {
    static const fm_dtype dts[] = {FM_DTYPE_F32, FM_DTYPE_BF16, FM_DTYPE_F16};
    /* 2..8 rows take two weight rows per pass (n odd: a single one last) and x in groups of
     * 4 (5: 4 + 1); at k = 1000 one row and up to 4 rows run whole rows, 8 rows k-spans; at
     * k = 5000 one row runs whole rows, more rows k-spans of a length that depends on m */
    static const int64_t ms[] = {2, 3, 4, 5, 6, 7, 8, 70}, ks[] = {1000, 5000};
    int64_t n = 203;
    for (int d = 0; d < 3; d++)
        for (int mi = 0; mi < 8 * 2; mi++) {
            int64_t m = ms[mi % 8], k = ks[mi / 8];
            if (quick && k > 1000 && m != 8) continue;
            double *wd = malloc((size_t)(n * k) * sizeof *wd);
            void *block, *w = make_weights(dts[d], n, k, &block, wd);
            float *x = rand_buf(m * k, -1, 1), *b = rand_buf(n, -1, 1), *y[4];
            float *scratch = malloc(fm_k_linear_w_scratch_floats(m, n, k, 3) * sizeof *scratch);
            for (int t = 1; t <= 3; t++) {
                y[t] = malloc((size_t)(m * n) * sizeof *y[t]);
                fm_k_linear_w(y[t], n, x, k, w, dts[d], b, m, n, k, FM_ACTIVATION_GELU, scratch,
                              pools[t]);
            }
            for (int t = 2; t <= 3; t++)
                CHECK_MSG(memcmp(y[1], y[t], (size_t)(m * n) * sizeof *y[1]) == 0,
                          "linear_w %s m %lld: expected %d threads to give the bits of 1 thread",
                          dt_str(dts[d]), (long long)m, t);
            if (m <= 8) {
                float one[203];
                for (int64_t r = 0; r < m; r++) {
                    fm_k_linear_w(one, n, x + r * k, k, w, dts[d], b, 1, n, k, FM_ACTIVATION_GELU,
                                  scratch, pools[2]);
                    CHECK_MSG(
                        memcmp(one, y[1] + r * n, sizeof one) == 0,
                        "linear_w %s: expected row %lld of a %lld-row call to equal the row alone",
                        dt_str(dts[d]), (long long)r, (long long)m);
                }
            }
            for (int t = 1; t <= 3; t++)
                free(y[t]);
            free(wd), free(block), free(x), free(b), free(scratch);
        }
}

/* The library's plain reference agrees with the float64 one too (it is the yardstick other
 * tests use). */
static void test_linear_w_ref_kernel(void) {
    int64_t m = 3, n = 9, k = 77;
    double *wd = malloc((size_t)(n * k) * sizeof *wd);
    void *block, *w = make_weights(FM_DTYPE_F16, n, k, &block, wd);
    float *x = rand_buf(m * k, -1, 1), y[27];
    fm_ref_linear_w(y, x, w, FM_DTYPE_F16, NULL, m, n, k);
    double worst = 0;
    for (int64_t i = 0; i < m * n; i++) {
        double s = 0, mag = 0;
        for (int64_t p = 0; p < k; p++) {
            s += x[(i / n) * k + p] * wd[(i % n) * k + p];
            mag += fabs(x[(i / n) * k + p] * wd[(i % n) * k + p]);
        }
        double e = fabs(y[i] - s) / (mag + 1e-30);
        worst = e > worst ? e : worst;
    }
    CHECK_MSG(worst <= (k + 2) * 0x1p-24,
              "fm_ref_linear_w: expected relative error <= k·2^-24, seen %.3g", worst);
    free(wd), free(block), free(x);
}

/* ---- SwiGLU ------------------------------------------------------------------------------- */

static void test_swiglu(void) {
    static const int64_t shapes[][2] = {{1, 1}, {1, 8960}, {3, 17}, {7, 100}, {40, 33}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int64_t rows = shapes[s][0], cols = shapes[s][1], ld = 2 * cols; /* fused gate_up rows */
        float *gu = rand_buf(rows * ld, -12, 12), *y[4];
        double worst = 0;
        for (int t = 1; t <= 3; t++) {
            y[t] = malloc((size_t)(rows * cols) * sizeof *y[t]);
            fm_k_swiglu(y[t], cols, gu, ld, gu + cols, ld, rows, cols, pools[t]);
        }
        for (int64_t r = 0; r < rows; r++)
            for (int64_t c = 0; c < cols; c++) {
                double g = gu[r * ld + c], u = gu[r * ld + cols + c], ref = g / (1.0 + exp(-g)) * u;
                double e = fabs(y[1][r * cols + c] - ref) / (fabs(ref) + 1e-30);
                worst = e > worst ? e : worst;
            }
        CHECK_MSG(worst <= 1e-6, "swiglu %lldx%lld: expected relative error <= 1e-6, seen %.3g",
                  (long long)rows, (long long)cols, worst);
        for (int t = 2; t <= 3; t++)
            CHECK_MSG(memcmp(y[1], y[t], (size_t)(rows * cols) * 4) == 0,
                      "swiglu: expected %d threads to give the bits of 1", t);
        /* in place over the gate half */
        fm_k_swiglu(gu, ld, gu, ld, gu + cols, ld, rows, cols, pools[2]);
        int same = 1;
        for (int64_t r = 0; r < rows; r++)
            same &= memcmp(gu + r * ld, y[1] + r * cols, (size_t)cols * 4) == 0;
        CHECK_MSG(same, "swiglu in place (y = g): expected the out-of-place result");
        for (int t = 1; t <= 3; t++)
            free(y[t]);
        free(gu);
    }
}

/* ---- M-RoPE tables ------------------------------------------------------------------------ */

/* The axis of frequency j, from the spec's words: sectioned (§4.1) doubles mrope_section over
 * the head and gives chunk i axis i mod 3, read here on the first half of the dims;
 * interleaved (§4.4) starts from t and takes h on j mod 3 = 1, w on j mod 3 = 2, each below
 * 3 times its section. */
static int spec_axis(int j, const int sec[3], int interleaved) {
    if (interleaved) {
        int a = 0;
        if (j % 3 == 1 && j < 3 * sec[1]) a = 1;
        if (j % 3 == 2 && j < 3 * sec[2]) a = 2;
        return a;
    }
    int doubled[6] = {sec[0], sec[1], sec[2], sec[0], sec[1], sec[2]}, start = 0;
    for (int i = 0; i < 6; i++) {
        if (j < start + doubled[i]) return i % 3;
        start += doubled[i];
    }
    return -1;
}

/* Expected table entry: the spec's f32 steps, then cos/sin in float64 of the f32 angle. */
static void spec_entry(int64_t pos, int j, int hd, double theta, double *c, double *s) {
    float e = (float)(2 * j) / (float)hd;
    float inv = 1.0f / (float)pow((double)(float)theta, (double)e);
    float ang = (float)pos * inv;
    *c = cos((double)ang), *s = sin((double)ang);
}

static void check_mrope(const int64_t *pos3, int64_t T, int hd, double theta, const int sec[3],
                        int il, const char *what) {
    int h2 = hd / 2;
    float *ct = malloc((size_t)(T * h2) * 4), *st = malloc((size_t)(T * h2) * 4);
    float *rc = malloc((size_t)(T * hd) * 4), *rs = malloc((size_t)(T * hd) * 4);
    fm_k_mrope_table(ct, st, pos3, T, hd, theta, sec, il);
    fm_ref_mrope_table(rc, rs, pos3, T, hd, theta, sec, il);
    double worst = 0, worst_ref = 0;
    for (int64_t r = 0; r < T; r++)
        for (int j = 0; j < h2; j++) {
            double c, s;
            spec_entry(pos3[spec_axis(j, sec, il) * T + r], j, hd, theta, &c, &s);
            double e = fmax(fabs(ct[r * h2 + j] - c), fabs(st[r * h2 + j] - s));
            worst = e > worst ? e : worst;
            /* the libm reference (powf, cosf) on both halves of the full-width table */
            for (int half = 0; half < 2; half++) {
                double er = fmax(fabs(rc[r * hd + half * h2 + j] - c),
                                 fabs(rs[r * hd + half * h2 + j] - s));
                worst_ref = er > worst_ref ? er : worst_ref;
            }
        }
    CHECK_MSG(worst <= 6e-8,
              "mrope %s: expected cos/sin within 6e-8 of the spec's f32 steps, seen %.3g", what,
              worst);
    CHECK_MSG(worst_ref <= 2e-5, "mrope %s: expected the libm reference within 2e-5, seen %.3g",
              what, worst_ref);
    free(ct), free(st), free(rc), free(rs);
}

static void test_mrope_tables(void) {
    static const int sec2[3] = {16, 24, 24}, sec3[3] = {24, 20, 20}, small[3] = {2, 3, 3};
    /* spec §4.2 example: 3 text tokens, vision_start, a (1,4,6) image (6 merged tokens),
     * vision_end, 2 text tokens */
    static const int64_t ex[3][13] = {{0, 1, 2, 3, 4, 4, 4, 4, 4, 4, 7, 8, 9},
                                      {0, 1, 2, 3, 4, 4, 4, 5, 5, 5, 7, 8, 9},
                                      {0, 1, 2, 3, 4, 5, 6, 4, 5, 6, 7, 8, 9}};
    check_mrope(&ex[0][0], 13, 128, 1e6, sec2, 0, "spec example, sectioned");
    check_mrope(&ex[0][0], 13, 128, 5e6, sec3, 1, "spec example, interleaved");
    int64_t T = 300, *p = malloc((size_t)(3 * T) * sizeof *p);
    for (int64_t i = 0; i < 3 * T; i++)
        p[i] = (int64_t)(rnd64() % 3000);
    check_mrope(p, T, 128, 1e6, sec2, 0, "random positions, sectioned");
    check_mrope(p, T, 128, 1e6, sec3, 1, "random positions, interleaved");
    check_mrope(p, T, 16, 1e4, small, 0, "hd 16, sectioned");
    check_mrope(p, T, 16, 1e4, small, 1, "hd 16, interleaved");
    free(p);

    /* spot checks of the axis mapping on the example (token 5: t 4, h 4, w 5; token 8: t 4,
     * h 5, w 5) */
    float ct[13 * 64], st[13 * 64];
    fm_k_mrope_table(ct, st, &ex[0][0], 13, 128, 1e6, sec2, 0);
    double c;
    double s;
    spec_entry(5, 40, 128, 1e6, &c, &s); /* dim 40 is the w section */
    CHECK_MSG(fabs(ct[5 * 64 + 40] - c) < 1e-7,
              "sectioned: expected dim 40 of token 5 to use w = 5 (%.7f), seen %.7f", c,
              ct[5 * 64 + 40]);
    spec_entry(5, 16, 128, 1e6, &c, &s); /* dim 16 is the h section */
    CHECK_MSG(fabs(ct[8 * 64 + 16] - c) < 1e-7,
              "sectioned: expected dim 16 of token 8 to use h = 5 (%.7f), seen %.7f", c,
              ct[8 * 64 + 16]);
    fm_k_mrope_table(ct, st, &ex[0][0], 13, 128, 1e6, sec3, 1);
    spec_entry(5, 4, 128, 1e6, &c, &s); /* interleaved: pair 4 (4 mod 3 = 1) takes h */
    CHECK_MSG(fabs(ct[8 * 64 + 4] - c) < 1e-7,
              "interleaved: expected pair 4 of token 8 to use h = 5 (%.7f), seen %.7f", c,
              ct[8 * 64 + 4]);
    spec_entry(4, 61, 128, 1e6, &c, &s); /* 61 mod 3 = 1 but 61 >= 60: t */
    CHECK_MSG(fabs(ct[8 * 64 + 61] - c) < 1e-7,
              "interleaved: expected pair 61 of token 8 to use t = 4 (%.7f), seen %.7f", c,
              ct[8 * 64 + 61]);
}

/* Plain 1-D RoPE (t = h = w) through fm_k_rope_apply: q'[d] = q[d]cos - q[d+64]sin,
 * q'[d+64] = q[d+64]cos + q[d]sin with the angle pos / theta^(2j/hd), in float64. */
static void test_mrope_apply_1d(void) {
    static const int sec[3] = {16, 24, 24};
    int64_t T = 37, heads = 3, hd = 128, *p = malloc((size_t)(3 * T) * sizeof *p);
    for (int64_t r = 0; r < T; r++)
        p[r] = p[T + r] = p[2 * T + r] = r * 7;
    float *ct = malloc((size_t)(T * 64) * 4), *st = malloc((size_t)(T * 64) * 4);
    fm_k_mrope_table(ct, st, p, T, (int)hd, 1e6, sec, 0);
    float *x = rand_buf(T * heads * hd, -1, 1), *x0 = malloc((size_t)(T * heads * hd) * 4);
    memcpy(x0, x, (size_t)(T * heads * hd) * 4);
    fm_k_rope_apply(x, heads * hd, T, (int)heads, (int)hd, ct, st, pools[2]);
    double worst = 0;
    for (int64_t r = 0; r < T; r++)
        for (int64_t h = 0; h < heads; h++)
            for (int d = 0; d < 64; d++) {
                double ang = (double)(r * 7) * pow(1e6, -(2.0 * d) / 128.0);
                const float *a = x0 + (r * heads + h) * hd;
                double lo = a[d] * cos(ang) - a[d + 64] * sin(ang),
                       hi = a[d + 64] * cos(ang) + a[d] * sin(ang);
                double e = fmax(fabs(x[(r * heads + h) * hd + d] - lo),
                                fabs(x[(r * heads + h) * hd + d + 64] - hi));
                worst = e > worst ? e : worst;
            }
    /* f32 angle rounding: |pos·inv| <= 252 rad, so ~252·2^-24 in the angle */
    CHECK_MSG(worst <= 2e-5,
              "1-D RoPE via the M-RoPE table: expected within 2e-5 of float64, seen %.3g", worst);
    free(p), free(ct), free(st), free(x), free(x0);
}

int main(void) {
    quick = getenv("FM_TEST_QUICK") && strcmp(getenv("FM_TEST_QUICK"), "1") == 0;
    openblas_set_num_threads(1); /* as fusemap runs: its pool parallelises */
    for (int t = 1; t <= 3; t++) {
        fm_error err;
        if (fm_threadpool_new(t, &pools[t], &err) != FM_OK) {
            fprintf(stderr, "cannot create pool: %s\n", err.msg);
            return 1;
        }
    }
    RUN(test_linear_w_vs_ref);
    RUN(test_linear_w_empty_k);
    RUN(test_linear_w_threads_and_rows);
    RUN(test_linear_w_ref_kernel);
    RUN(test_swiglu);
    RUN(test_mrope_tables);
    RUN(test_mrope_apply_1d);
    for (int t = 1; t <= 3; t++)
        fm_threadpool_free(pools[t]);
    TEST_END();
}
