/* Decoder kernel tests, part 2: the KV cache write (f32 copy, bf16 round-to-nearest-even) and
 * attention against the cache, decode rows (several slots, different positions, multi-chunk
 * contexts) and prefill runs, f32 and bf16 caches, GQA ratios 1, 2 and 6, against a float64
 * reference written here; identical bits for 1, 2 and 3 threads; decode and prefill paths
 * agree on the same rows. */
#include <cblas.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/threadpool.h"
#include "nn/kernels.h"
#include "support/check.h"

static int quick;
static fm_threadpool *pools[4];

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint64_t rnd64(void) {
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

/* The test's own f32 -> bf16 rounding to nearest, ties to even (finite values). */
static uint16_t to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    uint32_t low = u & 0xffffu, keep = u >> 16;
    if (low > 0x8000u || (low == 0x8000u && (keep & 1u))) keep++;
    return (uint16_t)keep;
}
static double bf16_value(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* ---- a cache under test ------------------------------------------------------------------- */

typedef struct cache {
    fm_dtype dt;
    int64_t cap;
    int slots, n_kv, hd;
    void *k, *v; /* [slots][n_kv][cap][hd] */
} cache;

static size_t cache_elems(const cache *c) {
    return (size_t)c->slots * c->n_kv * c->cap * c->hd;
}
static size_t elem_bytes(fm_dtype dt) {
    return dt == FM_DTYPE_F32 ? 4 : 2;
}

static void cache_init(cache *c, fm_dtype dt, int slots, int n_kv, int64_t cap, int hd) {
    *c = (cache){dt, cap, slots, n_kv, hd, NULL, NULL};
    c->k = malloc(cache_elems(c) * elem_bytes(dt));
    c->v = malloc(cache_elems(c) * elem_bytes(dt));
}
static void cache_free(cache *c) {
    free(c->k), free(c->v);
}

/* Element (s, g, p, d) as a double. */
static double cache_at(const cache *c, const void *buf, int s, int g, int64_t p, int d) {
    size_t i = (((size_t)s * c->n_kv + g) * c->cap + p) * c->hd + d;
    if (c->dt == FM_DTYPE_F32) {
        float f;
        memcpy(&f, (const char *)buf + 4 * i, 4);
        return f;
    }
    uint16_t h;
    memcpy(&h, (const char *)buf + 2 * i, 2);
    return bf16_value(h);
}

/* Fills every cached position of every slot with random K/V through fm_k_kv_write. */
static void cache_fill(cache *c) {
    int64_t rows = (int64_t)c->slots * c->cap, w = (int64_t)c->n_kv * c->hd;
    float *k = rand_buf(rows * w, -1, 1), *v = rand_buf(rows * w, -2, 2);
    int32_t *slot = malloc((size_t)rows * 4), *pos = malloc((size_t)rows * 4);
    for (int64_t r = 0; r < rows; r++)
        slot[r] = (int32_t)(r / c->cap), pos[r] = (int32_t)(r % c->cap);
    fm_k_kv_write(c->k, c->v, c->dt, c->cap, c->n_kv, c->hd, slot, pos, rows, k, w, v, w, pools[2]);
    free(k), free(v), free(slot), free(pos);
}

/* ---- KV write ----------------------------------------------------------------------------- */

static void test_kv_write(void) {
    for (int dti = 0; dti < 2; dti++) {
        fm_dtype dt = dti ? FM_DTYPE_BF16 : FM_DTYPE_F32;
        for (int t = 1; t <= 3; t++) {
            cache c;
            cache_init(&c, dt, 3, 2, 40, 24);
            memset(c.k, 0x7f, cache_elems(&c) * elem_bytes(dt)); /* sentinel bytes */
            memset(c.v, 0x7f, cache_elems(&c) * elem_bytes(dt));
            int64_t rows = 7, ldk = 2 * 24 + 3, ldv = 2 * 24 + 5;
            int32_t slot[7] = {0, 2, 1, 2, 0, 1, 2}, pos[7] = {0, 39, 5, 6, 17, 6, 0};
            float *k = rand_buf(rows * ldk, -3, 3), *v = rand_buf(rows * ldv, -3, 3);
            /* exact ties: low half 0x8000 with an even and an odd kept half */
            uint32_t tie_even = 0x3f808000u, tie_odd = 0x3f818000u;
            memcpy(&k[0], &tie_even, 4), memcpy(&k[1], &tie_odd, 4), memcpy(&v[2], &tie_odd, 4);
            fm_k_kv_write(c.k, c.v, dt, c.cap, c.n_kv, c.hd, slot, pos, rows, k, ldk, v, ldv,
                          pools[t]);
            int64_t bad = 0, touched = 0;
            for (int64_t r = 0; r < rows; r++)
                for (int g = 0; g < 2; g++)
                    for (int d = 0; d < 24; d++) {
                        float ks = k[r * ldk + g * 24 + d], vs = v[r * ldv + g * 24 + d];
                        double ek = dt == FM_DTYPE_F32 ? ks : bf16_value(to_bf16(ks));
                        double ev = dt == FM_DTYPE_F32 ? vs : bf16_value(to_bf16(vs));
                        bad += cache_at(&c, c.k, slot[r], g, pos[r], d) != ek;
                        bad += cache_at(&c, c.v, slot[r], g, pos[r], d) != ev;
                        touched += 2;
                    }
            CHECK_MSG(bad == 0,
                      "kv_write %s, %d threads: expected every written element (rounded to nearest "
                      "even for bf16), seen %lld of %lld different",
                      dt ? "bf16" : "f32", t, (long long)bad, (long long)touched);
            if (dt == FM_DTYPE_BF16)
                CHECK_MSG(cache_at(&c, c.k, 0, 0, 0, 0) == 1.0 &&
                              cache_at(&c, c.k, 0, 0, 0, 1) == bf16_value(0x3f82),
                          "kv_write bf16 ties: expected 1 and %g, seen %g and %g",
                          bf16_value(0x3f82), cache_at(&c, c.k, 0, 0, 0, 0),
                          cache_at(&c, c.k, 0, 0, 0, 1));
            /* nothing else written: count elements that still hold the sentinel */
            size_t left = 0, n = cache_elems(&c), es = elem_bytes(dt);
            for (size_t i = 0; i < n; i++) {
                const unsigned char *e = (const unsigned char *)c.k + i * es;
                left += e[0] == 0x7f && e[1] == 0x7f && (es == 2 || (e[2] == 0x7f && e[3] == 0x7f));
            }
            CHECK_MSG(left == n - (size_t)(rows * 2 * 24),
                      "kv_write: expected %zu untouched K elements, seen %zu",
                      n - (size_t)(rows * 2 * 24), left);
            free(k), free(v);
            cache_free(&c);
        }
    }
}

/* ---- attention ---------------------------------------------------------------------------- */

/* float64 reference for row r, head h: softmax over positions 0..pos of (q·k)·scale. */
static void ref_row(double *out, const cache *c, const float *q, int s, int32_t pos, int h,
                    int n_heads, double scale) {
    int g = h / (n_heads / c->n_kv), hd = c->hd;
    double *sc = malloc((size_t)(pos + 1) * sizeof *sc), mx = -INFINITY, sum = 0;
    for (int32_t t = 0; t <= pos; t++) {
        double a = 0;
        for (int d = 0; d < hd; d++)
            a += (double)q[d] * cache_at(c, c->k, s, g, t, d);
        sc[t] = a * scale;
        mx = sc[t] > mx ? sc[t] : mx;
    }
    for (int d = 0; d < hd; d++)
        out[d] = 0;
    for (int32_t t = 0; t <= pos; t++) {
        double p = exp(sc[t] - mx);
        sum += p;
        for (int d = 0; d < hd; d++)
            out[d] += p * cache_at(c, c->v, s, g, t, d);
    }
    for (int d = 0; d < hd; d++)
        out[d] /= sum;
    free(sc);
}

/* Runs the kernel with exactly the scratch its size function asks for (ASan checks the bound). */
static void run_att(float *o, const float *q, const cache *c, const int32_t *slot,
                    const int32_t *pos, int64_t rows, int n_heads, float scale,
                    fm_threadpool *pool) {
    int64_t w = (int64_t)n_heads * c->hd;
    size_t n = fm_k_attention_cache_scratch_floats(slot, pos, rows, n_heads, c->n_kv, c->hd,
                                                   fm_threadpool_threads(pool));
    float *scratch = malloc(n * sizeof *scratch);
    fm_k_attention_cache(o, w + 1, q, w + 2, c->k, c->v, c->dt, c->cap, c->n_kv, slot, pos, rows,
                         n_heads, c->hd, scale, scratch, pool);
    free(scratch);
}

/* Rows against the float64 reference: max |o - ref| <= tol · max |v|, and identical bits for
 * 1, 2 and 3 threads. Returns the 1-thread output ([rows][w + 1]). */
static float *check_rows(const cache *c, const float *q, const int32_t *slot, const int32_t *pos,
                         int64_t rows, int n_heads, const char *what) {
    int64_t w = (int64_t)n_heads * c->hd, ldo = w + 1;
    float scale = 1.0f / sqrtf((float)c->hd), *o[4];
    for (int t = 1; t <= 3; t++) {
        o[t] = malloc((size_t)(rows * ldo) * sizeof *o[t]);
        run_att(o[t], q, c, slot, pos, rows, n_heads, scale, pools[t]);
    }
    double worst = 0, vmax = 2.0, *ref = malloc((size_t)c->hd * sizeof *ref);
    for (int64_t r = 0; r < rows; r++)
        for (int h = 0; h < n_heads; h++) {
            ref_row(ref, c, q + r * (w + 2) + (int64_t)h * c->hd, slot[r], pos[r], h, n_heads,
                    scale);
            for (int d = 0; d < c->hd; d++) {
                double e = fabs(o[1][r * ldo + (int64_t)h * c->hd + d] - ref[d]);
                worst = e > worst ? e : worst;
            }
        }
    CHECK_MSG(worst <= 1e-5 * vmax,
              "attention %s (%s cache, %d heads / %d kv, hd %d): expected max |o - ref| <= "
              "%.1g, seen %.3g",
              what, c->dt == FM_DTYPE_F32 ? "f32" : "bf16", n_heads, c->n_kv, c->hd, 1e-5 * vmax,
              worst);
    for (int t = 2; t <= 3; t++) {
        int same = 1;
        for (int64_t r = 0; r < rows; r++)
            same &= memcmp(o[1] + r * ldo, o[t] + r * ldo, (size_t)w * sizeof(float)) == 0;
        CHECK_MSG(same, "attention %s: expected %d threads to give the bits of 1", what, t);
        free(o[t]);
    }
    free(ref);
    return o[1];
}

typedef struct att_shape {
    int n_kv, rep, hd;
} att_shape;
static const att_shape shapes[] = {{2, 1, 64}, {2, 2, 128}, {2, 6, 128}, {1, 2, 40}, {3, 6, 80}};

/* Decode: one row per sequence, several slots, positions crossing the 256-key chunks. A row's
 * result is the same bits alone or in the batch. */
static void test_attention_decode(void) {
    size_t ns = quick ? 3 : sizeof shapes / sizeof shapes[0];
    for (int dti = 0; dti < 2; dti++)
        for (size_t si = 0; si < ns; si++) {
            const att_shape *sh = &shapes[si];
            int n_heads = sh->n_kv * sh->rep;
            cache c;
            cache_init(&c, dti ? FM_DTYPE_BF16 : FM_DTYPE_F32, 4, sh->n_kv, quick ? 300 : 600,
                       sh->hd);
            cache_fill(&c);
            int32_t slot[5] = {2, 0, 3, 1, 0}, pos[5] = {0, 5, 255, 256, (int32_t)c.cap - 1};
            int64_t rows = 5, w = (int64_t)n_heads * c.hd;
            float *q = rand_buf(rows * (w + 2), -1, 1);
            for (int64_t i = 0; i < w; i++)
                q[3 * (w + 2) + i] *= 6.0f; /* a peaked softmax */
            float *o = check_rows(&c, q, slot, pos, rows, n_heads, "decode");
            float *one = malloc((size_t)(w + 1) * sizeof *one);
            for (int64_t r = 0; r < rows; r++) {
                run_att(one, q + r * (w + 2), &c, slot + r, pos + r, 1, n_heads,
                        1.0f / sqrtf((float)c.hd), pools[2]);
                CHECK_MSG(memcmp(one, o + r * (w + 1), (size_t)w * 4) == 0,
                          "attention decode: expected row %lld alone to give its bits in the batch",
                          (long long)r);
            }
            free(one), free(o), free(q);
            cache_free(&c);
        }
}

/* Prefill runs (blocked path): a run from position 0, a run after existing context crossing key
 * blocks, and a batch mixing a run with decode rows of other slots. Each row also agrees with
 * the same row computed alone (decode path) within 1e-5 relative. */
static void test_attention_prefill(void) {
    size_t ns = quick ? 3 : sizeof shapes / sizeof shapes[0];
    for (int dti = 0; dti < 2; dti++)
        for (size_t si = 0; si < ns; si++) {
            const att_shape *sh = &shapes[si];
            int n_heads = sh->n_kv * sh->rep;
            cache c;
            cache_init(&c, dti ? FM_DTYPE_BF16 : FM_DTYPE_F32, 3, sh->n_kv, quick ? 200 : 400,
                       sh->hd);
            cache_fill(&c);
            static const struct { int32_t p0, len; } runs[] = {{0, 100}, {37, 163}, {190, 130}};
            for (size_t ri = 0; ri < 3; ri++) {
                int32_t p0 = runs[ri].p0, len = runs[ri].len;
                if (p0 + len > c.cap) len = (int32_t)c.cap - p0;
                int64_t rows = len + 2, w = (int64_t)n_heads * c.hd;
                int32_t *slot = malloc((size_t)rows * 4), *pos = malloc((size_t)rows * 4);
                for (int32_t i = 0; i < len; i++)
                    slot[i] = 1, pos[i] = p0 + i;
                slot[len] = 0, pos[len] = 7; /* two decode rows after the run */
                slot[len + 1] = 2, pos[len + 1] = (int32_t)c.cap - 1;
                float *q = rand_buf(rows * (w + 2), -1.5f, 1.5f);
                float *o = check_rows(&c, q, slot, pos, rows, n_heads, "prefill");
                float *one = malloc((size_t)(w + 1) * sizeof *one);
                double worst = 0; /* relative L2 over each head's output vector */
                for (int64_t r = 0; r < len; r += len / 9 + 1) {
                    run_att(one, q + r * (w + 2), &c, slot + r, pos + r, 1, n_heads,
                            1.0f / sqrtf((float)c.hd), pools[1]);
                    for (int h = 0; h < n_heads; h++) {
                        double num = 0, den = 0;
                        for (int d = 0; d < c.hd; d++) {
                            double a = one[h * c.hd + d], b = o[r * (w + 1) + h * c.hd + d];
                            num += (a - b) * (a - b), den += a * a;
                        }
                        worst = fmax(worst, sqrt(num / den));
                    }
                }
                CHECK_MSG(
                    worst <= 1e-5,
                    "attention prefill run at %d (%d rows): expected decode and prefill paths "
                    "within 1e-5 relative (L2 per head), seen %.3g",
                    p0, len, worst);
                free(one), free(o), free(q), free(slot), free(pos);
            }
            cache_free(&c);
        }
}

/* The library's plain reference agrees with the float64 one. */
static void test_attention_ref_kernel(void) {
    cache c;
    cache_init(&c, FM_DTYPE_BF16, 2, 2, 50, 32);
    cache_fill(&c);
    int32_t slot[3] = {1, 0, 1}, pos[3] = {49, 0, 20};
    int n_heads = 4;
    int64_t w = (int64_t)n_heads * 32;
    float *q = rand_buf(3 * w, -1, 1), *o = malloc((size_t)(3 * w) * sizeof *o);
    fm_ref_attention_cache(o, w, q, w, c.k, c.v, c.dt, c.cap, c.n_kv, slot, pos, 3, n_heads, 32,
                           0.25f);
    double worst = 0, ref[32];
    for (int r = 0; r < 3; r++)
        for (int h = 0; h < n_heads; h++) {
            ref_row(ref, &c, q + r * w + h * 32, slot[r], pos[r], h, n_heads, 0.25);
            for (int d = 0; d < 32; d++)
                worst = fmax(worst, fabs(o[r * w + h * 32 + d] - ref[d]));
        }
    CHECK_MSG(worst <= 2e-5, "fm_ref_attention_cache: expected within 2e-5 of float64, seen %.3g",
              worst);
    free(q), free(o);
    cache_free(&c);
}

int main(void) {
    quick = getenv("FM_TEST_QUICK") && strcmp(getenv("FM_TEST_QUICK"), "1") == 0;
    openblas_set_num_threads(1);
    for (int t = 1; t <= 3; t++) {
        fm_error err;
        if (fm_threadpool_new(t, &pools[t], &err) != FM_OK) {
            fprintf(stderr, "cannot create pool: %s\n", err.msg);
            return 1;
        }
    }
    RUN(test_kv_write);
    RUN(test_attention_decode);
    RUN(test_attention_prefill);
    RUN(test_attention_ref_kernel);
    for (int t = 1; t <= 3; t++)
        fm_threadpool_free(pools[t]);
    TEST_END();
}
