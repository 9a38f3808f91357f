/* Float dtype conversions (src/tensor/convert.c) against independent references: field decoding
 * with ldexp for widening, and nearest-value search over a table of every 16-bit value (with
 * exact double arithmetic) for narrowing. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fusemap/tensor.h"
#include "support/check.h"

/* ---- helpers ---------------------------------------------------------------------------- */

static uint32_t fbits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}
static float bitsf(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static uint64_t dbits(double d) {
    uint64_t u;
    memcpy(&u, &d, 8);
    return u;
}
static double bitsd(uint64_t u) {
    double d;
    memcpy(&d, &u, 8);
    return d;
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rnd64(void) { /* splitmix64 */
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static int quick(void) {
    return getenv("FM_TEST_QUICK") != NULL;
}

/* A 16-bit binary format: E exponent bits, M mantissa bits. */
typedef struct fmt16 {
    const char *name;
    int E, M;
    uint16_t inf; /* +Inf pattern */
    double *val;  /* val[p] for p in [0, inf]; val[inf] = 2^(emax+1) (virtual next value) */
} fmt16;

static fmt16 F16 = {"f16", 5, 10, 0x7c00, NULL};
static fmt16 BF16 = {"bf16", 8, 7, 0x7f80, NULL};

/* Independent decoder: sign, exponent and mantissa fields scaled with ldexp. */
static double decode16(const fmt16 *f, uint16_t p) {
    int bias = (1 << (f->E - 1)) - 1;
    int e = (p >> f->M) & ((1 << f->E) - 1);
    int m = p & ((1 << f->M) - 1);
    double s = (p & 0x8000) ? -1.0 : 1.0;
    if (e == (1 << f->E) - 1) return m ? NAN : s * INFINITY;
    if (e == 0) return s * ldexp(m, 1 - bias - f->M);
    return s * ldexp(m + (1 << f->M), e - bias - f->M);
}

static void fmt_init(fmt16 *f) {
    if (f->val) return;
    f->val = malloc(((size_t)f->inf + 1) * sizeof(double));
    for (unsigned p = 0; p < f->inf; p++)
        f->val[p] = decode16(f, (uint16_t)p);
    int bias = (1 << (f->E - 1)) - 1;
    f->val[f->inf] = ldexp(1.0, bias + 1);
}

/* Correctly rounded (nearest, ties to even) 16-bit pattern of a non-NaN double. Differences
 * against the two neighbours are exact in double (Sterbenz, or a zero neighbour). */
static uint16_t ref_round(const fmt16 *f, double x) {
    uint16_t sign = signbit(x) ? 0x8000 : 0;
    double a = fabs(x);
    unsigned lo = 0, hi = f->inf; /* largest p with val[p] <= a */
    if (a >= f->val[f->inf]) return sign | f->inf;
    while (lo < hi) {
        unsigned mid = (lo + hi + 1) / 2;
        if (f->val[mid] <= a)
            lo = mid;
        else
            hi = mid - 1;
    }
    if (f->val[lo] == a) return sign | (uint16_t)lo;
    double dl = a - f->val[lo], dh = f->val[lo + 1] - a;
    unsigned p = dl < dh ? lo : dh < dl ? lo + 1 : ((lo & 1) ? lo + 1 : lo);
    return sign | (uint16_t)p;
}

static int is_nan16(const fmt16 *f, uint16_t p) {
    return (p & 0x7fff) > f->inf;
}

static uint16_t conv_f32_16(const fmt16 *f, float x) {
    uint16_t o;
    (f == &F16 ? fm_f32_to_f16 : fm_f32_to_bf16)(&o, &x, 1);
    return o;
}
static uint16_t conv_f64_16(const fmt16 *f, double x) {
    uint16_t o;
    (f == &F16 ? fm_f64_to_f16 : fm_f64_to_bf16)(&o, &x, 1);
    return o;
}
static float conv_16_f32(const fmt16 *f, uint16_t p) {
    float o;
    (f == &F16 ? fm_f16_to_f32 : fm_bf16_to_f32)(&o, &p, 1);
    return o;
}

/* ---- widening ----------------------------------------------------------------------------- */

/* Every 16-bit pattern, converted in one call, against the decoder. NaNs keep sign and payload
 * and get the quiet bit. */
static void exhaustive_widen(const fmt16 *f, void (*fn)(float *, const uint16_t *, uint64_t)) {
    uint16_t *src = malloc(65536 * 2);
    float *dst = malloc(65536 * 4);
    for (unsigned p = 0; p < 65536; p++)
        src[p] = (uint16_t)p;
    fn(dst, src, 65536);
    int bad = 0;
    for (unsigned p = 0; p < 65536 && bad < 5; p++) {
        uint32_t seen = fbits(dst[p]), want;
        if (is_nan16(f, (uint16_t)p)) {
            uint32_t mant = (uint32_t)(p & ((1u << f->M) - 1)) << (23 - f->M);
            want = ((p & 0x8000u) << 16) | 0x7f800000u | 0x00400000u | mant;
        } else {
            want = fbits((float)decode16(f, (uint16_t)p)); /* exact: every value fits f32 */
        }
        if (seen != want) {
            bad++;
            CHECK_MSG(seen == want, "%s 0x%04x: expected f32 0x%08x, seen 0x%08x", f->name, p, want,
                      seen);
        }
    }
    free(src);
    free(dst);
}

static void test_bf16_to_f32_exhaustive(void) {
    exhaustive_widen(&BF16, fm_bf16_to_f32);
}
static void test_f16_to_f32_exhaustive(void) {
    exhaustive_widen(&F16, fm_f16_to_f32);
}

/* ---- round trips -------------------------------------------------------------------------- */

static void round_trip(const fmt16 *f) {
    int bad = 0;
    for (unsigned p = 0; p < 65536 && bad < 5; p++) {
        float x = conv_16_f32(f, (uint16_t)p);
        uint16_t back = conv_f32_16(f, x);
        uint16_t back64 = conv_f64_16(f, (double)x);
        int ok;
        if (is_nan16(f, (uint16_t)p)) {
            uint16_t quiet = (uint16_t)(1u << (f->M - 1));
            ok = is_nan16(f, back) && (back & 0x8000) == (p & 0x8000) && back == (p | quiet) &&
                 back64 == back;
        } else {
            ok = back == p && back64 == p;
        }
        if (!ok) {
            bad++;
            CHECK_MSG(ok, "%s 0x%04x -> %a -> 0x%04x (via f64 0x%04x)", f->name, p, (double)x, back,
                      back64);
        }
    }
}

static void test_round_trip_f16(void) {
    round_trip(&F16);
}
static void test_round_trip_bf16(void) {
    round_trip(&BF16);
}

/* ---- narrowing against the reference ------------------------------------------------------ */

static int bad_narrow;

static void expect16(const fmt16 *f, const char *path, double x, uint16_t want, uint16_t seen) {
    if (want == seen || bad_narrow >= 8) return;
    bad_narrow++;
    CHECK_MSG(want == seen, "%s %s(%a = %.17g): expected 0x%04x, seen 0x%04x", path, f->name, x, x,
              want, seen);
}

/* Halfway points between every pair of adjacent positive values (including max finite and the
 * virtual 2^(emax+1), i.e. the overflow boundary), both signs, and their neighbours in f32 and in
 * f64. The f64 neighbours catch double rounding through f32. */
static void halfway(const fmt16 *f) {
    bad_narrow = 0;
    for (unsigned p = 0; p < f->inf; p++) {
        double mid = (f->val[p] + f->val[p + 1]) / 2;
        uint16_t even = (uint16_t)((p & 1) ? p + 1 : p);
        CHECK((double)(float)mid == mid);
        for (int s = 0; s < 2; s++) {
            uint16_t sg = s ? 0x8000 : 0;
            double m = s ? -mid : mid;
            float mf = (float)m;
            float up = nextafterf(mf, s ? -INFINITY : INFINITY), dn = nextafterf(mf, 0.0f);
            double upd = nextafter(m, s ? -INFINITY : INFINITY), dnd = nextafter(m, 0.0);
            /* the reference must agree with the direct expectation */
            expect16(f, "ref", m, sg | even, ref_round(f, m));
            expect16(f, "ref", up, sg | (uint16_t)(p + 1), ref_round(f, up));
            expect16(f, "ref", dn, sg | (uint16_t)p, ref_round(f, dn));
            expect16(f, "f32", m, sg | even, conv_f32_16(f, mf));
            expect16(f, "f32", up, sg | (uint16_t)(p + 1), conv_f32_16(f, up));
            expect16(f, "f32", dn, sg | (uint16_t)p, conv_f32_16(f, dn));
            expect16(f, "f64", m, sg | even, conv_f64_16(f, m));
            expect16(f, "f64", upd, sg | (uint16_t)(p + 1), conv_f64_16(f, upd));
            expect16(f, "f64", dnd, sg | (uint16_t)p, conv_f64_16(f, dnd));
        }
    }
}

static void test_halfway_f16(void) {
    halfway(&F16);
}
static void test_halfway_bf16(void) {
    halfway(&BF16);
}

/* A random f32: half of them uniform bit patterns, half with the exponent in the interesting
 * range of `f` (subnormals of the target up to past its overflow). */
static float rand_f32_for(const fmt16 *f) {
    uint64_t r = rnd64();
    uint32_t u = (uint32_t)r;
    if (r >> 63) return bitsf(u);
    int bias = (1 << (f->E - 1)) - 1;
    int lo = 127 - bias - f->M - 3, hi = 127 + bias + 3; /* biased f32 exponents */
    if (lo < 0) lo = 0;
    if (hi > 254) hi = 254;
    uint32_t e = (uint32_t)(lo + (int)((r >> 32) % (uint64_t)(hi - lo + 1)));
    return bitsf((u & 0x807fffffu) | (e << 23));
}

static double rand_f64_for(const fmt16 *f) {
    uint64_t r = rnd64(), u = rnd64();
    if (r & 1) return bitsd(u);
    int bias = (1 << (f->E - 1)) - 1;
    int lo = 1023 - bias - f->M - 3, hi = 1023 + bias + 3;
    uint64_t e = (uint64_t)(lo + (int)((r >> 32) % (uint64_t)(hi - lo + 1)));
    return bitsd((u & 0x800fffffffffffffull) | (e << 52));
}

/* Random values in blocks (odd length to exercise the scalar tail), plus a strided sweep over
 * all 2^32 f32 patterns. */
static void random_narrow(const fmt16 *f) {
    enum { BLK = 4099 };
    float xf[BLK];
    double xd[BLK];
    uint16_t of[BLK], od[BLK];
    long blocks = quick() ? 50 : 1000; /* ~4.1M values of each width */
    bad_narrow = 0;
    for (long b = 0; b < blocks; b++) {
        for (int i = 0; i < BLK; i++) {
            xf[i] = rand_f32_for(f);
            xd[i] = rand_f64_for(f);
        }
        (f == &F16 ? fm_f32_to_f16 : fm_f32_to_bf16)(of, xf, BLK);
        (f == &F16 ? fm_f64_to_f16 : fm_f64_to_bf16)(od, xd, BLK);
        for (int i = 0; i < BLK; i++) {
            if (isnan(xf[i]))
                CHECK(is_nan16(f, of[i]) && (of[i] >> 15) == (fbits(xf[i]) >> 31));
            else
                expect16(f, "f32", xf[i], ref_round(f, xf[i]), of[i]);
            if (isnan(xd[i]))
                CHECK(is_nan16(f, od[i]) && (od[i] >> 15) == (dbits(xd[i]) >> 63));
            else
                expect16(f, "f64", xd[i], ref_round(f, xd[i]), od[i]);
        }
    }
    uint64_t step = quick() ? 65537 : 1021;
    for (uint64_t u = 7; u < (1ull << 32); u += step) {
        float x = bitsf((uint32_t)u);
        if (!isnan(x)) expect16(f, "f32 sweep", x, ref_round(f, x), conv_f32_16(f, x));
    }
}

static void test_random_f16(void) {
    random_narrow(&F16);
}
static void test_random_bf16(void) {
    random_narrow(&BF16);
}

/* Fixed edge cases with hand-written expectations. */
static void test_edges(void) {
    struct {
        double x;
        uint16_t f16, bf16;
    } c[] = {
        {0.0, 0x0000, 0x0000},         {-0.0, 0x8000, 0x8000},
        {1.0, 0x3c00, 0x3f80},         {-2.5, 0xc100, 0xc020},
        {65504.0, 0x7bff, 0x4780},     {65519.99, 0x7bff, 0x4780},
        {65520.0, 0x7c00, 0x4780},     {-65520.0, 0xfc00, 0xc780},
        {1e10, 0x7c00, 0x5015},        {INFINITY, 0x7c00, 0x7f80},
        {-INFINITY, 0xfc00, 0xff80},   {0x1p-24, 0x0001, 0x3380},
        {0x1p-25, 0x0000, 0x3300},     /* tie to even (0) */
        {0x1.8p-24, 0x0002, 0x33c0},   /* tie to even (2) */
        {0x1p-14, 0x0400, 0x3880},     /* smallest normal f16 */
        {0x1.ff8p-15, 0x03ff, 0x3880}, /* largest f16 subnormal */
        {0x1.ffcp-15, 0x0400, 0x3880}, /* tie: rounds up into the smallest normal */
        {0x1p-133, 0x0000, 0x0001},    /* smallest bf16 subnormal */
        {0x1p-134, 0x0000, 0x0000},    /* tie to even */
        {0x1.8p-133, 0x0000, 0x0002},  {0x1p-126, 0x0000, 0x0080},
        {0x1.fep127, 0x7c00, 0x7f7f}, /* max finite bf16 */
        {0x1.ffp127, 0x7c00, 0x7f80}, /* halfway to 2^128: ties to even = Inf */
        {1e-300, 0x0000, 0x0000},      {5e-324, 0x0000, 0x0000},
        {1e300, 0x7c00, 0x7f80},
    };
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        double x = c[i].x;
        CHECK_MSG(conv_f64_16(&F16, x) == c[i].f16, "f64->f16(%a) = 0x%04x", x,
                  conv_f64_16(&F16, x));
        CHECK_MSG(conv_f64_16(&BF16, x) == c[i].bf16, "f64->bf16(%a) = 0x%04x", x,
                  conv_f64_16(&BF16, x));
        if ((double)(float)x == x || isinf(x)) {
            CHECK_MSG(conv_f32_16(&F16, (float)x) == c[i].f16, "f32->f16(%a)", x);
            CHECK_MSG(conv_f32_16(&BF16, (float)x) == c[i].bf16, "f32->bf16(%a)", x);
        }
    }
}

/* NaNs never become Inf (payload only in the low bits that narrowing drops), keep their sign,
 * and are quiet. */
static void test_nan_narrowing(void) {
    uint32_t f32n[] = {0x7f800001u, 0xff800001u, 0x7fc00000u, 0xffffffffu,
                       0x7f802000u, 0x7f801fffu, 0x7fa00000u, 0x7f80ffffu};
    for (size_t i = 0; i < sizeof f32n / sizeof f32n[0]; i++) {
        float x = bitsf(f32n[i]);
        uint16_t h = conv_f32_16(&F16, x), b = conv_f32_16(&BF16, x);
        uint16_t sg = (uint16_t)((f32n[i] >> 16) & 0x8000u);
        CHECK_MSG(is_nan16(&F16, h) && (h & 0x8000) == sg && (h & 0x0200), "f16 of 0x%08x: 0x%04x",
                  f32n[i], h);
        CHECK_MSG(is_nan16(&BF16, b) && (b & 0x8000) == sg && (b & 0x0040),
                  "bf16 of 0x%08x: 0x%04x", f32n[i], b);
        CHECK_EQ_INT(0x7e00 | ((f32n[i] >> 13) & 0x3ff), h & 0x7fff);
        CHECK_EQ_INT(0x7fc0 | ((f32n[i] >> 16) & 0x7f), b & 0x7fff);
    }
    uint64_t f64n[] = {0x7ff0000000000001ull, 0xfff0000000000001ull, 0x7ff8000000000000ull,
                       0x7ff0000010000000ull, 0xffffffffffffffffull};
    for (size_t i = 0; i < sizeof f64n / sizeof f64n[0]; i++) {
        double x = bitsd(f64n[i]);
        uint16_t sg = (uint16_t)((f64n[i] >> 48) & 0x8000u);
        uint16_t h = conv_f64_16(&F16, x), b = conv_f64_16(&BF16, x);
        float f;
        fm_f64_to_f32(&f, &x, 1);
        CHECK_MSG(is_nan16(&F16, h) && (h & 0x8000) == sg && (h & 0x0200),
                  "f16 of 0x%016llx: 0x%04x", (unsigned long long)f64n[i], h);
        CHECK_MSG(is_nan16(&BF16, b) && (b & 0x8000) == sg && (b & 0x0040),
                  "bf16 of 0x%016llx: 0x%04x", (unsigned long long)f64n[i], b);
        CHECK(isnan(f) && (fbits(f) >> 31) == (f64n[i] >> 63));
        double back;
        fm_f32_to_f64(&back, &f, 1);
        CHECK(isnan(back) && (dbits(back) >> 63) == (f64n[i] >> 63));
    }
}

/* ---- f64 <-> f32 -------------------------------------------------------------------------- */

/* r must be the nearest float to x, ties to even; beyond the overflow threshold, Inf. */
static int nearest_f32(double x, float r) {
    const double ovf = 0x1.ffffffp127; /* halfway between FLT_MAX and 2^128 */
    if (fabs(x) >= ovf) return isinf(r) && !signbit(r) == !signbit(x);
    if (!isfinite(r) || (!signbit(r) != !signbit(x))) return 0;
    double dr = fabs(x - (double)r);
    float nb[2] = {nextafterf(r, INFINITY), nextafterf(r, -INFINITY)};
    for (int k = 0; k < 2; k++) {
        if (!isfinite(nb[k])) continue;
        double dn = fabs(x - (double)nb[k]);
        if (dn < dr || (dn == dr && (fbits(r) & 1))) return 0;
    }
    return 1;
}

static void test_f64_f32(void) {
    enum { N = 4099 };
    double x[N + 1];
    float r[N + 1];
    int bad = 0;
    long rounds = quick() ? 20 : 300;
    for (long k = 0; k < rounds; k++) {
        for (int i = 0; i < N; i++) {
            uint64_t u = rnd64();
            uint64_t e = 1023 - 140 + (rnd64() % 272); /* 2^-140 .. past 2^128 */
            x[i] = bitsd((u & 0x800fffffffffffffull) | (e << 52));
            if (i % 3 == 0) { /* halfway between adjacent floats, and just off it */
                float a = bitsf((uint32_t)rnd64() & 0x7f7fffffu);
                double mid = ((double)a + (double)nextafterf(a, INFINITY)) / 2;
                x[i] = i % 2 ? mid : nextafter(mid, (i % 4) ? INFINITY : 0.0);
            }
        }
        fm_f64_to_f32(r, x, N);
        for (int i = 0; i < N && bad < 5; i++) {
            if (nearest_f32(x[i], r[i])) continue;
            bad++;
            CHECK_MSG(0, "f64->f32(%a) = %a", x[i], (double)r[i]);
        }
    }
    /* Subnormal results, overflow edge and zeros. */
    double sp[] = {0x1p-149,
                   0x1p-150,
                   0x1.8p-149,
                   0x1.000001p-150,
                   0x1p-127,
                   -0x1.fffffcp-127,
                   0x1.fffffep-127,
                   0x1.fffffefp127,
                   0x1.ffffffp127,
                   -0x1.ffffffp127,
                   0x1.fffffe8p127,
                   -0.0,
                   0.0};
    float want[] = {0x1p-149f,
                    0.0f,
                    0x1p-148f,
                    0x1p-149f,
                    0x1p-127f,
                    -0x1.fffffcp-127f,
                    0x1p-126f,
                    0x1.fffffep127f,
                    INFINITY,
                    -INFINITY,
                    0x1.fffffep127f,
                    -0.0f,
                    0.0f};
    fm_f64_to_f32(r, sp, sizeof sp / sizeof sp[0]);
    for (size_t i = 0; i < sizeof sp / sizeof sp[0]; i++)
        CHECK_MSG(fbits(r[i]) == fbits(want[i]), "f64->f32(%a) = %a, expected %a", sp[i],
                  (double)r[i], (double)want[i]);
}

/* f32 -> f64 is exact: compare with an ldexp decode of the fields. */
static void test_f32_f64(void) {
    enum { N = 4099 };
    float x[N];
    double r[N];
    int bad = 0;
    for (long k = 0; k < (quick() ? 10 : 200); k++) {
        for (int i = 0; i < N; i++)
            x[i] = bitsf((uint32_t)rnd64());
        fm_f32_to_f64(r, x, N);
        for (int i = 0; i < N && bad < 5; i++) {
            uint32_t u = fbits(x[i]);
            int e = (u >> 23) & 0xff;
            uint32_t m = u & 0x7fffff;
            double s = (u >> 31) ? -1.0 : 1.0, want;
            int ok;
            if (e == 255 && m) {
                ok = isnan(r[i]) && (dbits(r[i]) >> 63) == (u >> 31);
            } else {
                want = e == 255 ? s * INFINITY
                       : e == 0 ? s * ldexp(m, -149)
                                : s * ldexp(m + 0x800000u, e - 150);
                ok = dbits(want) == dbits(r[i]);
            }
            if (!ok) {
                bad++;
                CHECK_MSG(ok, "f32->f64(0x%08x) = %a", u, r[i]);
            }
        }
    }
}

/* ---- layout: unaligned buffers, tails, fm_convert ---------------------------------------- */

static const fm_dtype float_dts[4] = {FM_DTYPE_F16, FM_DTYPE_BF16, FM_DTYPE_F32, FM_DTYPE_F64};

/* Value of element i of a buffer of dtype dt (an independent reader). */
static double read_elem(const unsigned char *p, fm_dtype dt, size_t i) {
    uint16_t h;
    float f;
    double d;
    switch (dt) {
    case FM_DTYPE_F16:
        memcpy(&h, p + 2 * i, 2);
        return decode16(&F16, h);
    case FM_DTYPE_BF16:
        memcpy(&h, p + 2 * i, 2);
        return decode16(&BF16, h);
    case FM_DTYPE_F32:
        memcpy(&f, p + 4 * i, 4);
        return f;
    default:
        memcpy(&d, p + 8 * i, 8);
        return d;
    }
}

/* Correct rounding of x into dt, as raw bytes. */
static void ref_store(unsigned char *p, fm_dtype dt, size_t i, double x) {
    uint16_t h;
    float f;
    switch (dt) {
    case FM_DTYPE_F16:
        h = ref_round(&F16, x);
        memcpy(p + 2 * i, &h, 2);
        break;
    case FM_DTYPE_BF16:
        h = ref_round(&BF16, x);
        memcpy(p + 2 * i, &h, 2);
        break;
    case FM_DTYPE_F32:
        f = (float)x;
        memcpy(p + 4 * i, &f, 4);
        break; /* checked in test_f64_f32 */
    default:
        memcpy(p + 8 * i, &x, 8);
        break;
    }
}

/* Every pair of float dtypes, several lengths (below, at and above the 64-element block, and
 * one spanning the 1024-element staging chunk), source and destination at odd offsets. */
static void test_convert_all_pairs_unaligned(void) {
    size_t lens[] = {0, 1, 63, 64, 65, 200, 1029, 2500};
    unsigned char *src = malloc(2500 * 8 + 16), *dst = malloc(2500 * 8 + 16),
                  *want = malloc(2500 * 8 + 16);
    for (int a = 0; a < 4; a++) {
        for (int b = 0; b < 4; b++) {
            fm_dtype sdt = float_dts[a], ddt = float_dts[b];
            for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
                size_t n = lens[li], dsz = fm_dtype_bits(ddt) / 8;
                unsigned char *s = src + 1 + li % 7, *d = dst + 3;
                for (size_t i = 0; i < n; i++) { /* finite random values of the source dtype */
                    double v = ldexp((double)(int32_t)(uint32_t)rnd64(), -(int)(rnd64() % 60));
                    ref_store(s, sdt, i, v);
                }
                for (size_t i = 0; i < n; i++)
                    ref_store(want, ddt, i, read_elem(s, sdt, i));
                memset(d, 0xAB, n * dsz + 8);
                fm_status st = fm_convert(d, ddt, s, sdt, n);
                CHECK_STATUS(FM_OK, st, (fm_error *)NULL);
                CHECK_MSG(memcmp(d, want, n * dsz) == 0, "%s -> %s, n=%zu", fm_dtype_name(sdt),
                          fm_dtype_name(ddt), n);
                CHECK_MSG(d[n * dsz] == 0xAB, "%s -> %s wrote past the end", fm_dtype_name(sdt),
                          fm_dtype_name(ddt));
            }
        }
    }
    free(src);
    free(dst);
    free(want);
}

static void test_convert_rejects_non_float(void) {
    unsigned char a[16] = {0}, b[16] = {0};
    CHECK_EQ_INT(FM_ERR_DTYPE, fm_convert(a, FM_DTYPE_I32, b, FM_DTYPE_F32, 2));
    CHECK_EQ_INT(FM_ERR_DTYPE, fm_convert(a, FM_DTYPE_F32, b, FM_DTYPE_U8, 2));
    CHECK_EQ_INT(FM_ERR_DTYPE, fm_convert(a, FM_DTYPE_F8_E4M3, b, FM_DTYPE_F8_E4M3, 2));
    CHECK_EQ_INT(FM_ERR_DTYPE, fm_convert(a, (fm_dtype)99, b, FM_DTYPE_F32, 2));
    CHECK_EQ_INT(FM_OK, fm_convert(a, FM_DTYPE_F32, b, FM_DTYPE_F32, 0));
}

int main(void) {
    fmt_init(&F16);
    fmt_init(&BF16);
    RUN(test_bf16_to_f32_exhaustive);
    RUN(test_f16_to_f32_exhaustive);
    RUN(test_round_trip_f16);
    RUN(test_round_trip_bf16);
    RUN(test_halfway_f16);
    RUN(test_halfway_bf16);
    RUN(test_edges);
    RUN(test_nan_narrowing);
    RUN(test_random_f16);
    RUN(test_random_bf16);
    RUN(test_f64_f32);
    RUN(test_f32_f64);
    RUN(test_convert_all_pairs_unaligned);
    RUN(test_convert_rejects_non_float);
    free(F16.val);
    free(BF16.val);
    TEST_END();
}
