/* Element conversion between the float dtypes (F16, BF16, F32, F64): round to nearest even, NaN
 * kept NaN (sign and top payload bits kept, made quiet), overflow to Inf, subnormals exact. */
#include "fusemap/tensor.h"

#include <string.h>

/* Design notes.
 * - Every loop is branch-free (all candidates are computed, then selected with bit masks) so
 *   that gcc and clang auto-vectorise them at -O2 -march=native (checked with -fopt-info-vec
 *   and -Rpass=loop-vectorize: all eight loops vectorise, 64-byte vectors on AVX-512).
 * - Loads and stores go through fixed-size memcpy: no buffer needs any alignment (the compiler
 *   emits plain unaligned vector loads). Typed public entry points forward to the void* cores,
 *   so fm_convert never forms a misaligned typed pointer.
 * - Narrowing rounds in the integer domain (add half-ulp-minus-one plus the kept LSB, shift),
 *   except for results that are subnormal in the target: there one hardware add of a power-of-two
 *   "magic" constant, whose ulp equals the target's subnormal step, does the RNE rounding
 *   (the default rounding mode is assumed; the library never changes it).
 * - f64 -> f16/bf16 work on the 64-bit pattern directly, so they round once. */

static inline uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}
static inline float bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static inline uint64_t f64_bits(double d) {
    uint64_t u;
    memcpy(&u, &d, 8);
    return u;
}
static inline double bits_f64(uint64_t u) {
    double d;
    memcpy(&d, &u, 8);
    return d;
}
static inline uint16_t load_u16(const unsigned char *p) {
    uint16_t v;
    memcpy(&v, p, 2);
    return v;
}
static inline void store_u16(unsigned char *p, uint16_t v) {
    memcpy(p, &v, 2);
}
static inline float load_f32(const unsigned char *p) {
    float v;
    memcpy(&v, p, 4);
    return v;
}
static inline void store_f32(unsigned char *p, float v) {
    memcpy(p, &v, 4);
}
static inline double load_f64(const unsigned char *p) {
    double v;
    memcpy(&v, p, 8);
    return v;
}
static inline void store_f64(unsigned char *p, double v) {
    memcpy(p, &v, 8);
}

/* ---- one element ----------------------------------------------------------------------
 * Selections use masks rather than ?: so that gcc's if-conversion never leaves a branch. */

static inline uint32_t sel32(uint32_t cond, uint32_t a, uint32_t b) {
    uint32_t m = 0u - cond; /* cond is 0 or 1 */
    return (a & m) | (b & ~m);
}
static inline uint64_t sel64(uint64_t cond, uint64_t a, uint64_t b) {
    uint64_t m = 0u - cond;
    return (a & m) | (b & ~m);
}

/* bf16 -> f32 is a shift; a NaN gets its quiet bit (0x0040 in bf16) set. */
static inline float bf16_to_f32_1(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    uint32_t nan = (u & 0x7fffffffu) > 0x7f800000u;
    return bits_f32(u | (nan << 22));
}

/* f16 -> f32: normals rebias the exponent (+112), Inf/NaN force exponent 255 (NaN quietened),
 * subnormals are m * 2^-24 computed exactly in float (int->float of m < 1024 is exact and the
 * scale is a power of two). */
static inline float f16_to_f32_1(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t em = h & 0x7fffu;
    uint32_t normal = (em << 13) + (112u << 23);
    uint32_t mant = (em & 0x3ffu) << 13;
    uint32_t special = 0x7f800000u | mant | ((uint32_t)(mant != 0) << 22);
    uint32_t sub = f32_bits((float)(int32_t)em * 0x1p-24f);
    uint32_t mag = sel32(em < 0x0400u, sub, sel32(em >= 0x7c00u, special, normal));
    return bits_f32(sign | mag);
}

/* f32 -> bf16: RNE on the low 16 bits. Carries move into the exponent correctly, including
 * the largest finite values rounding to Inf and subnormals (same exponent field in both). */
static inline uint16_t f32_to_bf16_1(float f) {
    uint32_t u = f32_bits(f);
    uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    uint32_t nan = (u >> 16) | 0x0040u;
    return (uint16_t)sel32((u & 0x7fffffffu) > 0x7f800000u, nan, rounded);
}

/* f32 -> f16. |x| >= 65536 (or Inf) -> Inf; NaN -> quiet NaN with the top 9 payload bits;
 * |x| < 2^-14 -> subnormal via the magic add (0.5 has ulp 2^-24, the f16 subnormal step);
 * otherwise rebias and RNE on the 13 dropped bits (65520 and above carries into Inf). */
static inline uint16_t f32_to_f16_1(float f) {
    uint32_t u = f32_bits(f);
    uint32_t sign = (u >> 16) & 0x8000u;
    uint32_t a = u & 0x7fffffffu;
    uint32_t nan = 0x7e00u | ((a >> 13) & 0x3ffu);
    uint32_t sub = f32_bits(bits_f32(a) + 0.5f) - f32_bits(0.5f);
    uint32_t normal = (a + 0xc8000fffu + ((a >> 13) & 1u)) >> 13; /* 0xc8000000 = -112 << 23 */
    uint32_t fin = sel32(a >= 0x47800000u, 0x7c00u, sel32(a < 0x38800000u, sub, normal));
    return (uint16_t)(sign | sel32(a > 0x7f800000u, nan, fin));
}

/* f64 -> 16-bit float with E exponent bits and M mantissa bits (bias 2^(E-1)-1), one rounding.
 * Normal results: rebias in the integer domain, RNE on the 52-M dropped bits, clamp to Inf.
 * Subnormal results (|x| < 2^(1-bias)): add MAGIC, a power of two whose ulp is the target's
 * subnormal step 2^(1-bias-M); the difference of the bit patterns is the encoded magnitude
 * (a carry into the smallest normal encodes correctly). */
#define FM_F64_TO_16(name, E, M, MAGIC)                                                            \
    static inline uint16_t name(double d) {                                                        \
        const uint64_t bias = (1u << ((E)-1)) - 1;                                                 \
        const uint64_t inf = ((1ull << (E)) - 1) << (M);                                           \
        const int drop = 52 - (M);                                                                 \
        uint64_t u = f64_bits(d);                                                                  \
        uint64_t sign = (u >> 48) & 0x8000u;                                                       \
        uint64_t a = u & 0x7fffffffffffffffull;                                                    \
        uint64_t nan = inf | (1ull << ((M)-1)) | ((a >> drop) & ((1ull << (M)) - 1));              \
        uint64_t sub = f64_bits(bits_f64(a) + (MAGIC)) - f64_bits(MAGIC);                          \
        uint64_t r = (a + ((1ull << (drop - 1)) - 1) + ((a >> drop) & 1u)) >> drop;                \
        uint64_t normal = r - ((1023 - bias) << (M));                                              \
        normal = sel64(normal > inf, inf, normal);                                                 \
        uint64_t fin = sel64(a < ((1024 - bias) << 52), sub, normal);                              \
        return (uint16_t)(sign | sel64(a > 0x7ff0000000000000ull, nan, fin));                      \
    }
/* bf16: bias 127, subnormal step 2^-133 = ulp of 2^-81. f16: bias 15, step 2^-24 = ulp of 2^28. */
FM_F64_TO_16(f64_to_bf16_1, 8, 7, 0x1p-81)
FM_F64_TO_16(f64_to_f16_1, 5, 10, 0x1p28)
#undef FM_F64_TO_16

/* ---- loops over raw bytes (no alignment required; buffers must not overlap) -------------
 * Blocks of FM_BLOCK elements with a constant inner trip count: gcc's -O2 "very cheap"
 * vectoriser cost model only takes loops whose count is a known multiple of the vector
 * width; the scalar tail handles the rest. */
#define FM_BLOCK 64
#define FM_CONVERT_LOOP(name, SRC_SZ, DST_SZ, LOAD, STORE, ONE)                                    \
    static void name(void *restrict dst, const void *restrict src, uint64_t n) {                   \
        unsigned char *restrict d = dst;                                                           \
        const unsigned char *restrict s = src;                                                     \
        uint64_t i = 0;                                                                            \
        for (; n - i >= FM_BLOCK; i += FM_BLOCK) {                                                 \
            unsigned char *restrict db = d + i * (DST_SZ);                                         \
            const unsigned char *restrict sb = s + i * (SRC_SZ);                                   \
            for (int j = 0; j < FM_BLOCK; j++)                                                     \
                STORE(db + j * (DST_SZ), ONE(LOAD(sb + j * (SRC_SZ))));                            \
        }                                                                                          \
        for (; i < n; i++)                                                                         \
            STORE(d + i * (DST_SZ), ONE(LOAD(s + i * (SRC_SZ))));                                  \
    }
#define FM_TO_F32(x) ((float)(x))
#define FM_TO_F64(x) ((double)(x))
FM_CONVERT_LOOP(loop_bf16_f32, 2, 4, load_u16, store_f32, bf16_to_f32_1)
FM_CONVERT_LOOP(loop_f16_f32, 2, 4, load_u16, store_f32, f16_to_f32_1)
FM_CONVERT_LOOP(loop_f32_bf16, 4, 2, load_f32, store_u16, f32_to_bf16_1)
FM_CONVERT_LOOP(loop_f32_f16, 4, 2, load_f32, store_u16, f32_to_f16_1)
FM_CONVERT_LOOP(loop_f64_f32, 8, 4, load_f64, store_f32, FM_TO_F32)
FM_CONVERT_LOOP(loop_f32_f64, 4, 8, load_f32, store_f64, FM_TO_F64)
FM_CONVERT_LOOP(loop_f64_bf16, 8, 2, load_f64, store_u16, f64_to_bf16_1)
FM_CONVERT_LOOP(loop_f64_f16, 8, 2, load_f64, store_u16, f64_to_f16_1)
#undef FM_CONVERT_LOOP
#undef FM_TO_F32
#undef FM_TO_F64

void fm_bf16_to_f32(float *dst, const uint16_t *src, uint64_t n) {
    loop_bf16_f32(dst, src, n);
}
void fm_f16_to_f32(float *dst, const uint16_t *src, uint64_t n) {
    loop_f16_f32(dst, src, n);
}
void fm_f32_to_bf16(uint16_t *dst, const float *src, uint64_t n) {
    loop_f32_bf16(dst, src, n);
}
void fm_f32_to_f16(uint16_t *dst, const float *src, uint64_t n) {
    loop_f32_f16(dst, src, n);
}
void fm_f64_to_f32(float *dst, const double *src, uint64_t n) {
    loop_f64_f32(dst, src, n);
}
void fm_f32_to_f64(double *dst, const float *src, uint64_t n) {
    loop_f32_f64(dst, src, n);
}
void fm_f64_to_bf16(uint16_t *dst, const double *src, uint64_t n) {
    loop_f64_bf16(dst, src, n);
}
void fm_f64_to_f16(uint16_t *dst, const double *src, uint64_t n) {
    loop_f64_f16(dst, src, n);
}

/* ---- any float dtype to any float dtype ------------------------------------------------- */

typedef void (*convert_fn)(void *restrict, const void *restrict, uint64_t);

/* Index of a float dtype in the tables below: F16 0, BF16 1, F32 2, F64 3; -1 otherwise. */
static int float_index(fm_dtype dt) {
    switch (dt) {
    case FM_DTYPE_F16:
        return 0;
    case FM_DTYPE_BF16:
        return 1;
    case FM_DTYPE_F32:
        return 2;
    case FM_DTYPE_F64:
        return 3;
    default:
        return -1;
    }
}

/* Direct kernels; pairs without one (F16 <-> BF16, F16/BF16 -> F64) go through f32, which
 * is exact on the widening step, so they still round at most once. */
static const convert_fn to_f32[4] = {loop_f16_f32, loop_bf16_f32, NULL, loop_f64_f32};
static const convert_fn from_f32[4] = {loop_f32_f16, loop_f32_bf16, NULL, loop_f32_f64};

#define FM_CONVERT_CHUNK 1024

fm_status fm_convert(void *dst, fm_dtype dst_dt, const void *src, fm_dtype src_dt, uint64_t n) {
    int si = float_index(src_dt), di = float_index(dst_dt);
    if (si < 0 || di < 0) return FM_ERR_DTYPE;
    size_t ssz = fm_dtype_bits(src_dt) / 8, dsz = fm_dtype_bits(dst_dt) / 8;
    if (si == di) {
        uint64_t bytes;
        if (fm_mul_u64(n, ssz, &bytes) || bytes > SIZE_MAX) return FM_ERR_OVERFLOW;
        if (bytes) memmove(dst, src, (size_t)bytes);
        return FM_OK;
    }
    if (si == 3 && di <= 1) { /* f64 -> 16-bit: dedicated single-rounding kernels */
        (di == 0 ? loop_f64_f16 : loop_f64_bf16)(dst, src, n);
        return FM_OK;
    }
    if (si == 2) {
        from_f32[di](dst, src, n);
        return FM_OK;
    }
    if (di == 2) {
        to_f32[si](dst, src, n);
        return FM_OK;
    }
    float buf[FM_CONVERT_CHUNK]; /* two steps through a stack buffer of f32 */
    for (uint64_t i = 0; i < n; i += FM_CONVERT_CHUNK) {
        uint64_t m = n - i < FM_CONVERT_CHUNK ? n - i : FM_CONVERT_CHUNK;
        to_f32[si](buf, (const unsigned char *)src + i * ssz, m);
        from_f32[di]((unsigned char *)dst + i * dsz, buf, m);
    }
    return FM_OK;
}
