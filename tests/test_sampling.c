/* Next-token sampling (src/api/sampling.c): each logits processor on hand-derived cases, HF order,
 * greedy ties, the documented random stream (published xoshiro256** / splitmix64 outputs) and
 * inverse CDF, seed reproducibility, sampling frequencies against the exact processed
 * distribution (chi-square), agreement with a plain full-sort reference of transformers' warpers
 * on random inputs, NaN/inf and bad-input errors, allocation failures. generation_config.json
 * tests live in test_generation_config.c. */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/sampling_internal.h"
#include "core/testing.h"
#include "fusemap/generate.h"
#include "support/check.h"

/* ---- test data ------------------------------------------------------------------------------- */

static uint64_t trng = 0x243f6a8885a308d3u; /* test-local xorshift, independent of the library */
static uint64_t trand(void) {
    trng ^= trng << 13;
    trng ^= trng >> 7;
    trng ^= trng << 17;
    return trng;
}
static double tuniform(void) {
    return (double)(trand() >> 11) / 9007199254740992.0;
}

static fm_sampling_options sampling(double t, int64_t k, double p, double mp) {
    fm_sampling_options o;
    fm_sampling_options_init(&o);
    o.do_sample = true;
    o.temperature = t;
    o.top_k = k;
    o.top_p = p;
    o.min_p = mp;
    return o;
}

/* Processed scores of one call (fresh sampler); returns the status. */
static fm_status process(const fm_sampling_options *o, const float *logits, int64_t v,
                         const int32_t *h, size_t nh, float *out, fm_error *err) {
    fm_sampler *s = NULL;
    fm_status st = fm_sampler_new(o, v, &s, err);
    if (st == FM_OK) st = fm_sampler_process(s, logits, h, nh, out, err);
    fm_sampler_free(s);
    return st;
}

/* "1,2,4": ids whose processed score is above -inf. */
static void survivors(const float *sc, int64_t v, char *buf, size_t size) {
    size_t o = 0;
    buf[0] = '\0';
    for (int64_t i = 0; i < v && o + 16 < size; i++)
        if (sc[i] > -INFINITY)
            o += (size_t)snprintf(buf + o, size - o, o ? ",%lld" : "%lld", (long long)i);
}

/* Checks that the ids left by `o` on logits l[v] are `expected` ("1,2,4"). */
static void check_survivors(int line, const char *expected, const fm_sampling_options *o,
                            const float *l, int64_t v, const int32_t *h, size_t nh) {
    float out[64];
    char got[256];
    fm_error err;
    fm_status st = process(o, l, v, h, nh, out, &err);
    CHECK_MSG(st == FM_OK, "line %d: %s", line, err.msg);
    if (st != FM_OK) return;
    survivors(out, v, got, sizeof got);
    CHECK_MSG(strcmp(expected, got) == 0, "line %d: expected survivors %s, seen %s", line, expected,
              got);
}
#define CHECK_SURVIVORS(expected, opts, logits, h, nh)                                             \
    check_survivors(__LINE__, (expected), &(opts), (logits),                                       \
                    (int64_t)(sizeof(logits) / sizeof(logits)[0]), (h), (nh))

/* ---- reference: transformers' processors, literally (full sorts, double softmax) --------------
 */

typedef struct ref_item {
    float s;
    int32_t id;
} ref_item;

/* Ascending score, ties by ascending id: a stable ascending sort. */
static int ref_asc(const void *x, const void *y) {
    const ref_item *a = x, *b = y;
    if (a->s != b->s) return a->s < b->s ? -1 : 1;
    return a->id < b->id ? -1 : a->id > b->id;
}

static int float_desc(const void *x, const void *y) {
    float a = *(const float *)x, b = *(const float *)y;
    return a > b ? -1 : a < b;
}

/* softmax over all v scores in double (-inf -> 0). */
static void ref_softmax(const float *s, int64_t v, double *p) {
    double m = -INFINITY, sum = 0;
    for (int64_t i = 0; i < v; i++)
        if (s[i] > m) m = s[i];
    for (int64_t i = 0; i < v; i++)
        sum += p[i] = s[i] == -INFINITY ? 0 : exp((double)s[i] - m);
    for (int64_t i = 0; i < v; i++)
        p[i] /= sum;
}

static void ref_top_k(float *s, int64_t v, int64_t k) {
    float *c = malloc((size_t)v * sizeof *c);
    memcpy(c, s, (size_t)v * sizeof *c);
    qsort(c, (size_t)v, sizeof *c, float_desc);
    float thr = c[(k < v ? k : v) - 1];
    for (int64_t i = 0; i < v; i++)
        if (s[i] < thr) s[i] = -INFINITY;
    free(c);
}

static void ref_top_p(float *s, int64_t v, double top_p, int64_t min_keep) {
    ref_item *it = malloc((size_t)v * sizeof *it);
    double *p = malloc((size_t)v * sizeof *p), cum = 0;
    for (int64_t i = 0; i < v; i++)
        it[i] = (ref_item){s[i], (int32_t)i};
    qsort(it, (size_t)v, sizeof *it, ref_asc);
    ref_softmax(s, v, p);
    for (int64_t j = 0; j < v; j++) {
        cum += p[it[j].id];
        if (cum <= 1 - top_p && j < v - min_keep) s[it[j].id] = -INFINITY;
    }
    free(it);
    free(p);
}

static void ref_min_p(float *s, int64_t v, double min_p, int64_t min_keep) {
    double *p = malloc((size_t)v * sizeof *p), pmax = 0;
    ref_item *it = malloc((size_t)v * sizeof *it);
    ref_softmax(s, v, p);
    for (int64_t i = 0; i < v; i++)
        if (p[i] > pmax) pmax = p[i];
    for (int64_t i = 0; i < v; i++)
        it[i] = (ref_item){s[i], (int32_t)i};
    qsort(it, (size_t)v, sizeof *it, ref_asc); /* the top min_keep are the last entries */
    for (int64_t j = 0; j < v - min_keep; j++)
        if (p[it[j].id] < min_p * pmax) s[it[j].id] = -INFINITY;
    free(it);
    free(p);
}

/* The whole pipeline on a copy of the logits (no NaN, sampling mode). */
static void ref_process(const fm_sampling_options *o, const float *logits, int64_t v,
                        const int32_t *h, size_t nh, float *s) {
    unsigned char *done = calloc((size_t)v, 1);
    memcpy(s, logits, (size_t)v * sizeof *s);
    for (size_t i = 0; o->repetition_penalty != 1.0 && i < nh; i++) {
        if (done[h[i]]++) continue;
        float x = s[h[i]], r = (float)o->repetition_penalty;
        s[h[i]] = x < 0 ? x * r : x / r;
    }
    free(done);
    if (!o->do_sample || o->temperature == 0) return;
    for (int64_t i = 0; o->temperature != 1.0 && i < v; i++)
        s[i] = s[i] / (float)o->temperature;
    if (o->top_k) ref_top_k(s, v, o->top_k > o->min_keep ? o->top_k : o->min_keep);
    if (o->top_p < 1) ref_top_p(s, v, o->top_p, o->min_keep);
    if (o->min_p > 0) ref_min_p(s, v, o->min_p, o->min_keep);
}

/* ---- processors on hand-derived cases -------------------------------------------------------- */

static void test_top_k_keeps_ties(void) {
    float l[] = {1, 3, 3, 2, 3, 0};
    fm_sampling_options o = sampling(1, 2, 1, 0);
    CHECK_SURVIVORS("1,2,4", o, l, NULL, 0); /* k-th largest is 3: all three 3s stay */
    o.top_k = 4;
    CHECK_SURVIVORS("1,2,3,4", o, l, NULL, 0); /* 4th largest is 2 */
    o.top_k = 1;
    CHECK_SURVIVORS("1,2,4", o, l, NULL, 0);
    o.top_k = 6;
    CHECK_SURVIVORS("0,1,2,3,4,5", o, l, NULL, 0);
    o.top_k = 1000; /* capped at the vocabulary */
    CHECK_SURVIVORS("0,1,2,3,4,5", o, l, NULL, 0);
    o.top_k = 1;
    o.min_keep = 4; /* k = max(top_k, min_keep) */
    CHECK_SURVIVORS("1,2,3,4", o, l, NULL, 0);
    float neg[] = {-INFINITY, 5, -INFINITY, 4};
    o = sampling(1, 3, 1, 0); /* fewer finite scores than k: nothing more removed */
    CHECK_SURVIVORS("1,3", o, neg, NULL, 0);
}

static void test_top_p_boundary(void) {
    /* Four equal logits: probabilities exactly 0.25, ascending cumulative 0.25, 0.5, 0.75, 1 in
     * stable order (ids 0..3). top_p 0.5: cumulative <= 0.5 removed -> ids 0 and 1 go. */
    float l[] = {0, 0, 0, 0};
    fm_sampling_options o = sampling(1, 0, 0.5, 0);
    CHECK_SURVIVORS("2,3", o, l, NULL, 0);
    o.top_p = 0.5000001; /* 1 - p just below 0.5: the token at exactly 0.5 stays */
    CHECK_SURVIVORS("1,2,3", o, l, NULL, 0);
    o.top_p = 0.75; /* 1 - p = 0.25 exactly */
    CHECK_SURVIVORS("1,2,3", o, l, NULL, 0);
    o.top_p = 0.25;
    CHECK_SURVIVORS("3", o, l, NULL, 0);
    o.top_p = 0; /* everything removable: min_keep 1 keeps the top-ranked */
    CHECK_SURVIVORS("3", o, l, NULL, 0);
    o.min_keep = 3;
    CHECK_SURVIVORS("1,2,3", o, l, NULL, 0);
    /* -inf tokens carry no mass: eight slots, four live (0.25 each) */
    float m[] = {-INFINITY, 0, -INFINITY, 0, 0, -INFINITY, 0, -INFINITY};
    o = sampling(1, 0, 0.5, 0);
    CHECK_SURVIVORS("4,6", o, m, NULL, 0);
    /* distinct scores: probabilities 0.0900, 0.2447, 0.6652; top_p 0.9 -> 1 - p = 0.1: id 0 goes */
    float d[] = {0, 1, 2};
    o.top_p = 0.9;
    CHECK_SURVIVORS("1,2", o, d, NULL, 0);
    o.top_p = 0.6; /* cumulative 0.3348 <= 0.4 as well */
    CHECK_SURVIVORS("2", o, d, NULL, 0);
}

/* The same exact boundary over many equal tokens (n a power of two, so every probability and
 * cumulative is exact): with m = (1 - top_p) * n, ids 0..m-1 go and m..n-1 stay. */
static void test_top_p_boundary_many(void) {
    static float l[4096];
    static float out[4096];
    const double ps[] = {0.5, 0.25, 0.75, 0.125, 0.9375};
    for (int64_t n = 64; n <= 4096; n *= 2)
        for (size_t k = 0; k < sizeof ps / sizeof ps[0]; k++) {
            fm_error err;
            fm_sampling_options o = sampling(1, 0, ps[k], 0);
            int64_t m = (int64_t)((1 - ps[k]) * (double)n), first = -1, count = 0;
            CHECK_OK(process(&o, l, n, NULL, 0, out, &err), &err);
            for (int64_t i = 0; i < n; i++)
                if (out[i] > -INFINITY) {
                    if (first < 0) first = i;
                    count++;
                }
            CHECK_MSG(first == m && count == n - m,
                      "n %lld top_p %g: expected ids %lld..%lld, seen %lld from %lld", (long long)n,
                      ps[k], (long long)m, (long long)n - 1, (long long)count, (long long)first);
        }
}

static void test_min_p(void) {
    /* min_p 0.1 removes exp(s - max) < 0.1, i.e. s - max < -2.302585 */
    float l[] = {0, -2.3f, -2.31f, -5, 0.5f};
    fm_sampling_options o = sampling(1, 0, 1, 0.1);
    CHECK_SURVIVORS("0,4", o, l, NULL, 0); /* max 0.5: -2.3 - 0.5 = -2.8 < -2.30 */
    float k[] = {0, -2.3f, -2.31f, -5};
    CHECK_SURVIVORS("0,1", o, k, NULL, 0);
    o.min_keep = 3; /* two survive: the three top-ranked stay */
    CHECK_SURVIVORS("0,1,2", o, k, NULL, 0);
    float t[] = {1, 2, 2};
    o = sampling(1, 0, 1, 1.0); /* only the maximum (and its ties) */
    CHECK_SURVIVORS("1,2", o, t, NULL, 0);
}

static void test_repetition_penalty(void) {
    fm_error err;
    float l[] = {2.0f, -2.0f, 0.5f, -0.5f, 3.0f, 0.0f};
    int32_t h[] = {0, 1, 1, 0, 3, 1, 5, 5};
    float out[6];
    fm_sampling_options o;
    fm_sampling_options_init(&o);
    o.repetition_penalty = 2.0;
    CHECK_OK(process(&o, l, 6, h, 8, out, &err), &err);
    const float want[] = {1.0f, -4.0f, 0.5f, -1.0f, 3.0f, 0.0f}; /* each distinct id once */
    for (int i = 0; i < 6; i++)
        CHECK_MSG(out[i] == want[i], "id %d: expected %g, seen %g", i, want[i], out[i]);
    o.repetition_penalty = 0.5; /* < 1 rewards repeats */
    CHECK_OK(process(&o, l, 6, h, 8, out, &err), &err);
    const float want2[] = {4.0f, -1.0f, 0.5f, -0.25f, 3.0f, 0.0f};
    for (int i = 0; i < 6; i++)
        CHECK_MSG(out[i] == want2[i], "id %d: expected %g, seen %g", i, want2[i], out[i]);
    /* greedy sees the penalty: 2.0 / 2 = 1.0 loses to 1.5 */
    float g[] = {2.0f, 1.5f};
    int32_t g_h[] = {0}, id = -1;
    fm_sampler *s = NULL;
    o.repetition_penalty = 2.0;
    CHECK_OK(fm_sampler_new(&o, 2, &s, &err), &err);
    CHECK_OK(fm_sampler_next(s, g, g_h, 1, &id, &err), &err);
    CHECK_EQ_INT(1, id);
    CHECK_OK(fm_sampler_next(s, g, NULL, 0, &id, &err), &err); /* no history: no penalty */
    CHECK_EQ_INT(0, id);
    CHECK_EQ_INT(2.0f, g[0]); /* caller's logits untouched */
    fm_sampler_free(s);
}

static void test_temperature(void) {
    fm_error err;
    float l[] = {1, 2, 3, -4}, out[4];
    fm_sampling_options o = sampling(0.5, 0, 1, 0);
    CHECK_OK(process(&o, l, 4, NULL, 0, out, &err), &err);
    const float want[] = {2, 4, 6, -8};
    for (int i = 0; i < 4; i++)
        CHECK_MSG(out[i] == want[i], "id %d: expected %g, seen %g", i, want[i], out[i]);
    o.temperature = 2;
    CHECK_OK(process(&o, l, 4, NULL, 0, out, &err), &err);
    const float want2[] = {0.5f, 1, 1.5f, -2};
    for (int i = 0; i < 4; i++)
        CHECK_MSG(out[i] == want2[i], "id %d: expected %g, seen %g", i, want2[i], out[i]);
    /* greedy mode ignores the warpers: scores come back as the (penalised) logits */
    o.do_sample = false;
    o.top_k = 1;
    CHECK_OK(process(&o, l, 4, NULL, 0, out, &err), &err);
    for (int i = 0; i < 4; i++)
        CHECK_MSG(out[i] == l[i], "id %d: expected %g, seen %g", i, l[i], out[i]);
}

/* Temperature before top-p, top-k before top-p: other orders keep other sets. */
static void test_hf_order(void) {
    float l[] = {0, 1, 2};
    /* T 0.5 first: probabilities 0.016, 0.117, 0.867, cumulative 0.016, 0.133 <= 0.3: only id 2.
     * Top-p on the raw logits would keep ids 1 and 2 (cumulative 0.090, 0.335). */
    fm_sampling_options o = sampling(0.5, 0, 0.7, 0);
    CHECK_SURVIVORS("2", o, l, NULL, 0);
    o.temperature = 1;
    CHECK_SURVIVORS("1,2", o, l, NULL, 0);
    /* top-k 2 first renormalises over {3, 4}: 0.378, 0.622; top-p 0.6 then removes id 3.
     * Top-p first on all five (cumulative .058 .154 .311 .571) would leave {3, 4}. */
    float m[] = {0, 0.5f, 1, 1.5f, 2};
    o = sampling(1, 2, 0.6, 0);
    CHECK_SURVIVORS("4", o, m, NULL, 0);
    /* repetition penalty before temperature: 3 / 1.5 = 2 ties with id 1, T keeps the tie */
    float r[] = {3, 2, -1};
    int32_t h[] = {0};
    o = sampling(0.5, 1, 1, 0);
    o.repetition_penalty = 1.5;
    CHECK_SURVIVORS("0,1", o, r, h, 1);
}

static void test_greedy_ties(void) {
    fm_error err;
    fm_sampling_options o;
    fm_sampling_options_init(&o);
    struct {
        float l[5];
        int32_t want;
    } cases[] = {{{1, 3, 3, 2, 0}, 1},
                 {{0, 0, 0, 0, 0}, 0},
                 {{-1, -INFINITY, INFINITY, INFINITY, 5}, 2},
                 {{-INFINITY, -INFINITY, -INFINITY, -INFINITY, -7}, 4},
                 {{-2, -1, -3, -1, -1}, 1}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
        for (int mode = 0; mode < 2; mode++) { /* do_sample false, or temperature 0 */
            fm_sampler *s = NULL;
            int32_t id = -1;
            o.do_sample = mode == 1;
            o.temperature = mode == 1 ? 0 : 1;
            CHECK(fm_sampling_options_greedy(&o));
            CHECK_OK(fm_sampler_new(&o, 5, &s, &err), &err);
            CHECK_OK(fm_sampler_next(s, cases[c].l, NULL, 0, &id, &err), &err);
            CHECK_MSG(id == cases[c].want, "case %zu mode %d: expected %d, seen %d", c, mode,
                      cases[c].want, id);
            fm_sampler_free(s);
        }
}

/* ---- the random stream ----------------------------------------------------------------------- */

static void test_rng_reference_outputs(void) {
    /* Published outputs: xoshiro256** from the state {1, 2, 3, 4} (reference implementation's
     * test vector) and splitmix64 from 0. */
    static const uint64_t xo[] = {11520u,
                                  0u,
                                  1509978240u,
                                  1215971899390074240u,
                                  1216172134540287360u,
                                  607988272756665600u,
                                  16172922978634559625u,
                                  8476171486693032832u,
                                  10595114339597558777u,
                                  2904607092377533576u};
    static const uint64_t sm[] = {0xE220A8397B1DCDAFu, 0x6E789E6AA1B965F4u, 0x06C45D188009454Fu,
                                  0xF88BB8A8724C81ECu};
    fm_rng r = {{1, 2, 3, 4}};
    for (size_t i = 0; i < sizeof xo / sizeof xo[0]; i++) {
        uint64_t got = fm_rng_next(&r);
        CHECK_MSG(got == xo[i], "output %zu: expected %llu, seen %llu", i,
                  (unsigned long long)xo[i], (unsigned long long)got);
    }
    uint64_t x = 0;
    for (size_t i = 0; i < 4; i++) {
        uint64_t got = fm_splitmix64(&x);
        CHECK_MSG(got == sm[i], "splitmix %zu: expected %016llx, seen %016llx", i,
                  (unsigned long long)sm[i], (unsigned long long)got);
    }
    /* seeding = four splitmix64 outputs; uniform = top 53 bits * 2^-53 */
    fm_rng a, b;
    fm_rng_seed(&a, 0);
    for (int i = 0; i < 4; i++)
        CHECK(a.s[i] == sm[i]);
    fm_rng_seed(&a, 12345);
    b = a;
    for (int i = 0; i < 1000; i++) {
        uint64_t raw = fm_rng_next(&b);
        double u = fm_rng_uniform(&a);
        CHECK(u == (double)(raw >> 11) / 9007199254740992.0);
        CHECK(u >= 0 && u < 1);
    }
}

/* The draw is u * total located on weights exp(s - max) accumulated in double in ascending id
 * order, u from a stream seeded like the sampler's: replayed here independently. */
static void test_inverse_cdf(void) {
    enum { V = 40, STEPS = 300 };
    fm_error err;
    fm_sampling_options o = sampling(0.7, 12, 0.95, 0.02);
    o.seed = 987654321;
    o.repetition_penalty = 1.2;
    fm_sampler *s = NULL;
    CHECK_OK(fm_sampler_new(&o, V, &s, &err), &err);
    fm_rng replay;
    fm_rng_seed(&replay, o.seed);
    int32_t hist[STEPS + 4] = {3, 7, 7, 11};
    size_t nh = 4;
    float l[V], ref[V];
    for (int step = 0; step < STEPS && s; step++) {
        for (int i = 0; i < V; i++)
            l[i] = (float)(tuniform() * 6 - 3);
        int32_t id = -1;
        CHECK_OK(fm_sampler_next(s, l, hist, nh, &id, &err), &err);
        ref_process(&o, l, V, hist, nh, ref);
        double m = -INFINITY, total = 0, acc = 0;
        for (int i = 0; i < V; i++)
            if (ref[i] > m) m = ref[i];
        for (int i = 0; i < V; i++)
            total += ref[i] == -INFINITY ? 0 : exp((double)ref[i] - m);
        double t = fm_rng_uniform(&replay) * total;
        int32_t want = -1;
        for (int i = 0; i < V && want < 0; i++) {
            acc += ref[i] == -INFINITY ? 0 : exp((double)ref[i] - m);
            if (ref[i] > -INFINITY && acc > t) want = i;
        }
        CHECK_MSG(id == want, "step %d: expected %d, seen %d", step, want, id);
        hist[nh++] = id;
    }
    fm_sampler_free(s);
}

/* Runs `steps` sampled tokens on pseudo-random logits (fixed data), feeding ids back. */
static void run_ids(fm_sampler *s, int64_t v, int steps, int32_t *ids) {
    fm_error err;
    float *l = malloc((size_t)v * sizeof *l);
    uint64_t saved = trng;
    trng = 0x9e3779b97f4a7c15u;
    for (int k = 0; k < steps; k++) {
        for (int64_t i = 0; i < v; i++)
            l[i] = (float)(tuniform() * 8 - 4);
        ids[k] = -1;
        CHECK_OK(fm_sampler_next(s, l, ids, (size_t)k, &ids[k], &err), &err);
    }
    trng = saved;
    free(l);
}

static void test_seed_reproducibility(void) {
    enum { V = 2000, STEPS = 200 };
    fm_error err;
    static int32_t a[STEPS], b[STEPS], c[STEPS], d[STEPS];
    fm_sampling_options o = sampling(1.0, 0, 0.9, 0);
    o.repetition_penalty = 1.1;
    o.seed = 42;
    fm_sampler *s1 = NULL, *s2 = NULL, *s3 = NULL;
    CHECK_OK(fm_sampler_new(&o, V, &s1, &err), &err);
    CHECK_OK(fm_sampler_new(&o, V, &s2, &err), &err);
    o.seed = 43;
    CHECK_OK(fm_sampler_new(&o, V, &s3, &err), &err);
    if (!s1 || !s2 || !s3) return;
    run_ids(s1, V, STEPS, a);
    run_ids(s2, V, STEPS, b);
    run_ids(s3, V, STEPS, c);
    int same = 0, differ = 0;
    for (int k = 0; k < STEPS; k++) {
        same += a[k] == b[k];
        differ += a[k] != c[k];
    }
    CHECK_EQ_INT(STEPS, same);
    CHECK_MSG(differ > STEPS / 2, "seeds 42 and 43 gave %d differing ids of %d", differ, STEPS);
    fm_sampler_reseed(s3, 42); /* reseeding restarts the stream */
    run_ids(s3, V, STEPS, d);
    CHECK(memcmp(a, d, sizeof a) == 0);
    fm_sampler_free(s1);
    fm_sampler_free(s2);
    fm_sampler_free(s3);
}

/* Chi-square critical value for `df` degrees of freedom at upper tail 1e-4 (Wilson-Hilferty). */
static double chi2_crit(int df) {
    double z = 3.719, a = 2.0 / (9.0 * df), c = 1 - a + z * sqrt(a);
    return df * c * c * c;
}

/* Frequencies of `draws` samples match softmax(reference processed scores): chi-square over
 * tokens with probability > 0, and no draw outside them. */
static void check_frequencies(const fm_sampling_options *o, const float *l, int64_t v,
                              const int32_t *h, size_t nh, long draws) {
    fm_error err;
    fm_sampler *s = NULL;
    float *ref = malloc((size_t)v * sizeof *ref);
    double *p = malloc((size_t)v * sizeof *p);
    long *count = calloc((size_t)v, sizeof *count);
    ref_process(o, l, v, h, nh, ref);
    ref_softmax(ref, v, p);
    CHECK_OK(fm_sampler_new(o, v, &s, &err), &err);
    for (long k = 0; s && k < draws; k++) {
        int32_t id = -1;
        if (fm_sampler_next(s, l, h, nh, &id, &err) != FM_OK || id < 0 || id >= v) {
            CHECK_MSG(0, "draw %ld failed: %s", k, err.msg);
            break;
        }
        count[id]++;
    }
    double chi2 = 0;
    int df = -1;
    for (int64_t i = 0; i < v; i++) {
        if (p[i] == 0) {
            CHECK_MSG(count[i] == 0, "id %lld has probability 0 but was drawn %ld times",
                      (long long)i, count[i]);
            continue;
        }
        double e = p[i] * (double)draws;
        chi2 += (count[i] - e) * (count[i] - e) / e;
        df++;
    }
    CHECK_MSG(df >= 1, "expected at least two live tokens, saw %d", df + 1);
    if (df >= 1)
        CHECK_MSG(chi2 < chi2_crit(df), "chi-square %.2f over %d dof exceeds %.2f", chi2, df,
                  chi2_crit(df));
    fm_sampler_free(s);
    free(ref);
    free(p);
    free(count);
}

static void test_sampling_frequencies(void) {
    /* every warper active: penalty, temperature, top-k with a tie at the k-th, top-p, min-p */
    float l[] = {1.2f, 0.3f, 2.0f, -0.5f, 1.2f, 0.9f, -3.0f, 1.6f, 0.1f, 1.2f};
    int32_t h[] = {2, 2, 7, 0};
    fm_sampling_options o = sampling(0.8, 6, 0.97, 0.02);
    o.repetition_penalty = 1.3;
    o.seed = 7;
    long draws = getenv("FM_TEST_QUICK") ? 40000 : 200000;
    check_frequencies(&o, l, 10, h, 4, draws);
    /* plain temperature sampling over a wider vocabulary */
    float w[64];
    for (int i = 0; i < 64; i++)
        w[i] = (float)(tuniform() * 4 - 2);
    o = sampling(1.5, 0, 1, 0);
    o.seed = 99;
    check_frequencies(&o, w, 64, NULL, 0, draws);
    /* a sampler that ignored the warpers would fail: the bound has power */
    fm_sampling_options wrong = sampling(1, 0, 1, 0);
    float ref_scores[10];
    double p_true[10], p_wrong[10];
    o = sampling(0.8, 6, 0.97, 0.02);
    o.repetition_penalty = 1.3;
    ref_process(&o, l, 10, h, 4, ref_scores);
    ref_softmax(ref_scores, 10, p_true);
    ref_process(&wrong, l, 10, h, 4, ref_scores);
    ref_softmax(ref_scores, 10, p_wrong);
    double chi2 = 0;
    for (int i = 0; i < 10; i++)
        if (p_true[i] > 0)
            chi2 += draws * (p_wrong[i] - p_true[i]) * (p_wrong[i] - p_true[i]) / p_true[i];
    CHECK_MSG(chi2 > 10 * chi2_crit(5), "expected the test to separate the distributions (%.1f)",
              chi2);
}

/* ---- agreement with the reference on random inputs ---------------------------------------------
 */

/* Same survivors and identical surviving scores as the full-sort reference. */
static int agree(const fm_sampling_options *o, const float *l, int64_t v, const int32_t *h,
                 size_t nh, const char *what) {
    fm_error err;
    float *got = malloc((size_t)v * sizeof *got), *want = malloc((size_t)v * sizeof *want);
    int ok = process(o, l, v, h, nh, got, &err) == FM_OK;
    CHECK_MSG(ok, "%s: %s", what, err.msg);
    ref_process(o, l, v, h, nh, want);
    for (int64_t i = 0; ok && i < v; i++)
        if (memcmp(&got[i], &want[i], sizeof got[i]) != 0) {
            CHECK_MSG(0,
                      "%s (T %g k %lld p %g min_p %g keep %lld r %g): id %lld expected %g, seen %g",
                      what, o->temperature, (long long)o->top_k, o->top_p, o->min_p,
                      (long long)o->min_keep, o->repetition_penalty, (long long)i, want[i], got[i]);
            ok = 0;
        }
    free(got);
    free(want);
    return ok;
}

static void random_logits(float *l, int64_t v, int quantised) {
    for (int64_t i = 0; i < v; i++) {
        double x = tuniform() * 10 - 5;
        l[i] = quantised ? (float)floor(x * 2) / 2 : (float)x; /* quantised: many ties */
        if (trand() % 17 == 0) l[i] = -INFINITY;
    }
}

static void test_matches_reference(void) {
    int cases = getenv("FM_TEST_QUICK") ? 150 : 600;
    for (int c = 0; c < cases; c++) {
        int64_t v = 1 + (int64_t)(trand() % 300);
        float *l = malloc((size_t)v * sizeof *l);
        int32_t h[50];
        size_t nh = trand() % 50;
        random_logits(l, v, c % 2);
        l[trand() % (uint64_t)v] = 1.0f; /* at least one finite score */
        for (size_t i = 0; i < nh; i++)
            h[i] = (int32_t)(trand() % (uint64_t)v);
        fm_sampling_options o = sampling(
            c % 5 == 0 ? 1.0 : 0.2 + tuniform() * 2, c % 3 == 0 ? 0 : 1 + (int64_t)(trand() % 40),
            c % 4 == 0 ? 1.0 : tuniform(), c % 3 == 1 ? tuniform() * 0.3 : 0);
        o.min_keep = 1 + (int64_t)(trand() % 3);
        o.repetition_penalty = c % 2 ? 1.0 : 0.5 + tuniform() * 1.5;
        if (!agree(&o, l, v, h, nh, "random case")) c = cases;
        free(l);
    }
}

/* Qwen2-sized vocabulary: top-k by heap and by selection (with ties), top-p deep in a flat
 * distribution and shallow in a peaked one, min-p. */
static void test_large_vocabulary(void) {
    const int64_t v = 151936;
    float *l = malloc((size_t)v * sizeof *l);
    int32_t h[64];
    for (int64_t i = 0; i < v; i++)
        l[i] = (float)(tuniform() * 0.5); /* flat: top-p 0.9 keeps ~90% */
    for (int i = 0; i < 64; i++)
        h[i] = (int32_t)(trand() % (uint64_t)v);
    fm_sampling_options o = sampling(0.7, 50, 0.9, 0);
    o.repetition_penalty = 1.05;
    agree(&o, l, v, h, 64, "top-k 50 + top-p");
    o = sampling(1.0, 0, 0.9, 0);
    agree(&o, l, v, h, 64, "top-p 0.9 over a flat distribution");
    for (int64_t i = 0; i < v; i++)
        l[i] = (float)(tuniform() * 30 - 25); /* peaked: the cut comes in the first chunk */
    agree(&o, l, v, h, 64, "top-p 0.9 over a peaked distribution");
    o = sampling(1.0, 0, 1, 0.05);
    agree(&o, l, v, h, 64, "min-p");
    for (int64_t i = 0; i + 1 < v; i += 3)
        l[i] = l[i + 1];           /* ties everywhere */
    o = sampling(0.9, 5000, 1, 0); /* past the heap: top-k by selection */
    agree(&o, l, v, h, 64, "top-k 5000");
    o = sampling(0.9, 700, 0.99, 0);
    agree(&o, l, v, h, 64, "top-k 700 with ties");
    free(l);
}

/* The Qwen2-VL-Instruct generation_config (do_sample, T 0.1, top_k 1, top_p 0.001, penalty 1.05)
 * always picks the argmax of the penalised logits, whatever the seed. */
static void test_qwen_defaults_are_greedy(void) {
    enum { V = 500 };
    fm_error err;
    float l[V];
    int32_t h[32];
    for (int c = 0; c < 100; c++) {
        fm_sampling_options o = sampling(0.1, 1, 0.001, 0);
        o.repetition_penalty = 1.05;
        o.seed = trand();
        for (int i = 0; i < V; i++)
            l[i] = (float)(tuniform() * 20 - 10);
        for (int i = 0; i < 32; i++)
            h[i] = (int32_t)(trand() % V);
        float best = -INFINITY, pen[V];
        int32_t want = -1, id = -1;
        memcpy(pen, l, sizeof pen);
        for (int i = 0; i < 32; i++) /* penalise each distinct id once */
            if (pen[h[i]] == l[h[i]]) pen[h[i]] = l[h[i]] < 0 ? l[h[i]] * 1.05f : l[h[i]] / 1.05f;
        for (int i = 0; i < V; i++)
            if (pen[i] > best) best = pen[i], want = i;
        fm_sampler *s = NULL;
        CHECK_OK(fm_sampler_new(&o, V, &s, &err), &err);
        CHECK_OK(fm_sampler_next(s, l, h, 32, &id, &err), &err);
        CHECK_MSG(id == want, "case %d: expected %d, seen %d", c, want, id);
        fm_sampler_free(s);
    }
}

/* ---- invalid values and bad input -------------------------------------------------------------
 */

static void test_nan_and_inf(void) {
    fm_error err;
    float l[] = {1, NAN, 2, INFINITY, -INFINITY, NAN}, out[6];
    int32_t id = -1;
    fm_sampling_options o;
    fm_sampling_options_init(&o);
    fm_sampler *s = NULL;
    CHECK_OK(fm_sampler_new(&o, 6, &s, &err), &err);
    CHECK_STATUS(FM_ERR_INPUT, fm_sampler_next(s, l, NULL, 0, &id, &err), &err);
    CHECK_CONTAINS(err.msg, "2 of 6 logits are NaN (first at id 1)");
    CHECK_EQ_INT(-1, id);
    fm_sampler_free(s);
    o.remove_invalid_values = true; /* NaN -> 0, +inf -> FLT_MAX, -inf -> -FLT_MAX */
    o.repetition_penalty = 2;
    int32_t h[] = {3, 0};
    CHECK_OK(process(&o, l, 6, h, 2, out, &err), &err);
    const float want[] = {0.5f, 0, 2, FLT_MAX, -FLT_MAX, 0}; /* penalty first: inf / 2 = inf */
    for (int i = 0; i < 6; i++)
        CHECK_MSG(out[i] == want[i], "id %d: expected %g, seen %g", i, want[i], out[i]);
    /* +inf without removal: greedy takes the first, sampling only the +inf tokens (evenly) */
    float inf2[] = {5, INFINITY, 7, INFINITY};
    fm_sampling_options_init(&o);
    CHECK_OK(fm_sampler_new(&o, 4, &s, &err), &err);
    CHECK_OK(fm_sampler_next(s, inf2, NULL, 0, &id, &err), &err);
    CHECK_EQ_INT(1, id);
    fm_sampler_free(s);
    o = sampling(0.5, 0, 0.9, 0.1);
    CHECK_OK(fm_sampler_new(&o, 4, &s, &err), &err);
    int seen[4] = {0};
    for (int k = 0; s && k < 2000; k++)
        if (fm_sampler_next(s, inf2, NULL, 0, &id, &err) == FM_OK) seen[id]++;
    CHECK(seen[0] == 0 && seen[2] == 0);
    CHECK_MSG(seen[1] > 900 && seen[3] > 900, "draws split %d / %d", seen[1], seen[3]);
    fm_sampler_free(s);
}

static void test_nothing_left(void) {
    fm_error err;
    float l[] = {-INFINITY, -INFINITY, -INFINITY}, out[3];
    int32_t id = -1;
    for (int mode = 0; mode < 2; mode++) {
        fm_sampling_options o = sampling(mode ? 0.7 : 1, 0, 1, 0);
        o.do_sample = mode == 1;
        fm_sampler *s = NULL;
        CHECK_OK(fm_sampler_new(&o, 3, &s, &err), &err);
        CHECK_STATUS(FM_ERR_INPUT, fm_sampler_next(s, l, NULL, 0, &id, &err), &err);
        CHECK_CONTAINS(err.msg, "every score is -inf");
        CHECK_STATUS(FM_ERR_INPUT, fm_sampler_process(s, l, NULL, 0, out, &err), &err);
        fm_sampler_free(s);
    }
    /* finite logits that overflow to -inf under a tiny temperature */
    float big[] = {-1e30f, -2e30f};
    fm_sampling_options o = sampling(1e-10, 0, 1, 0);
    fm_sampler *s = NULL;
    CHECK_OK(fm_sampler_new(&o, 2, &s, &err), &err);
    CHECK_STATUS(FM_ERR_INPUT, fm_sampler_next(s, big, NULL, 0, &id, &err), &err);
    CHECK_CONTAINS(err.msg, "temperature 1e-10");
    fm_sampler_free(s);
}

static void test_bad_input(void) {
    fm_error err;
    fm_sampling_options o;
    fm_sampling_options_init(&o);
    fm_sampler *s = NULL;
    float l[4] = {0, 1, 2, 3};
    int32_t id = -1, bad[] = {1, 4}, neg[] = {-1};
    CHECK_OK(fm_sampler_new(&o, 4, &s, &err), &err);
    CHECK_STATUS(FM_ERR_INPUT, fm_sampler_next(s, l, bad, 2, &id, &err), &err);
    CHECK_CONTAINS(err.msg, "history[1] = 4 is outside the vocabulary [0, 4)");
    CHECK_STATUS(FM_ERR_INPUT, fm_sampler_next(s, l, neg, 1, &id, &err), &err);
    CHECK_STATUS(FM_ERR_INVALID_ARG, fm_sampler_next(s, l, NULL, 3, &id, &err), &err);
    CHECK_STATUS(FM_ERR_INVALID_ARG, fm_sampler_next(s, NULL, NULL, 0, &id, &err), &err);
    CHECK_STATUS(FM_ERR_INVALID_ARG, fm_sampler_next(s, l, NULL, 0, NULL, &err), &err);
    CHECK_STATUS(FM_ERR_INVALID_ARG, fm_sampler_next(NULL, l, NULL, 0, &id, &err), &err);
    CHECK_EQ_INT(-1, id);
    fm_sampler_free(s);
    fm_sampler_free(NULL);
    fm_sampler_reseed(NULL, 1);

    /* each out-of-range option is refused by name */
    const char *names[] = {
        "temperature",        "temperature",        "top_k",   "top_p", "top_p", "min_p",
        "repetition_penalty", "repetition_penalty", "min_keep"};
    for (int c = 0; c < 9; c++) {
        fm_sampling_options_init(&o);
        switch (c) {
        case 0:
            o.temperature = -0.5;
            break;
        case 1:
            o.temperature = INFINITY;
            break;
        case 2:
            o.top_k = -1;
            break;
        case 3:
            o.top_p = 1.5;
            break;
        case 4:
            o.top_p = NAN;
            break;
        case 5:
            o.min_p = -0.1;
            break;
        case 6:
            o.repetition_penalty = 0;
            break;
        case 7:
            o.repetition_penalty = NAN;
            break;
        default:
            o.min_keep = 0;
            break;
        }
        s = (fm_sampler *)&o; /* must be reset to NULL on failure */
        CHECK_STATUS(FM_ERR_INVALID_ARG, fm_sampler_new(&o, 10, &s, &err), &err);
        CHECK_CONTAINS(err.msg, names[c]);
        CHECK(s == NULL);
    }
    fm_sampling_options_init(&o);
    CHECK_STATUS(FM_ERR_INVALID_ARG, fm_sampler_new(&o, 0, &s, &err), &err);
    CHECK_STATUS(FM_ERR_INVALID_ARG, fm_sampler_new(&o, (int64_t)INT32_MAX + 1, &s, &err), &err);
    CHECK_STATUS(FM_ERR_INVALID_ARG, fm_sampler_new(NULL, 10, &s, &err), &err);
    CHECK_STATUS(FM_ERR_INVALID_ARG, fm_sampler_new(&o, 10, NULL, &err), &err);
}

/* Every allocation of sampler creation failing in turn: FM_ERR_NOMEM, nothing leaked (ASan). */
static void test_alloc_failures(void) {
    fm_error err;
    for (int mode = 0; mode < 2; mode++) {
        fm_sampling_options o = sampling(0.9, 40, 0.9, 0.05);
        o.do_sample = mode == 1;
        o.repetition_penalty = 1.1;
        int failures = 0;
        for (uint64_t nth = 1; nth < 50; nth++) {
            fm_sampler *s = NULL;
            fm_fault_set(FM_FAULT_ALLOC, nth);
            fm_status st = fm_sampler_new(&o, 1000, &s, &err);
            uint64_t seen = fm_fault_count(FM_FAULT_ALLOC);
            fm_fault_set(FM_FAULT_ALLOC, 0);
            if (st == FM_OK) {
                CHECK(seen < nth); /* every allocation point has been failed once */
                float l[1000];
                int32_t id = -1;
                for (int i = 0; i < 1000; i++)
                    l[i] = (float)i / 100;
                fm_fault_set(FM_FAULT_ALLOC, 1); /* next() never allocates */
                CHECK_OK(fm_sampler_next(s, l, NULL, 0, &id, &err), &err);
                CHECK_EQ_INT(0, fm_fault_count(FM_FAULT_ALLOC));
                fm_fault_set(FM_FAULT_ALLOC, 0);
                fm_sampler_free(s);
                break;
            }
            failures++;
            CHECK_STATUS(FM_ERR_NOMEM, st, &err);
            CHECK(s == NULL);
        }
        CHECK_EQ_INT(mode == 1 ? 5 : 3, failures);
    }
}

int main(void) {
    RUN(test_top_k_keeps_ties);
    RUN(test_top_p_boundary);
    RUN(test_top_p_boundary_many);
    RUN(test_min_p);
    RUN(test_repetition_penalty);
    RUN(test_temperature);
    RUN(test_hf_order);
    RUN(test_greedy_ties);
    RUN(test_rng_reference_outputs);
    RUN(test_inverse_cdf);
    RUN(test_seed_reproducibility);
    RUN(test_sampling_frequencies);
    RUN(test_matches_reference);
    RUN(test_large_vocabulary);
    RUN(test_qwen_defaults_are_greedy);
    RUN(test_nan_and_inf);
    RUN(test_nothing_left);
    RUN(test_bad_input);
    RUN(test_alloc_failures);
    TEST_END();
}
