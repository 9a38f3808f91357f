/* Internal: native-width float vectors for the decoder kernels (GNU C vector extensions, gcc
 * and clang), with fused multiply-add where the target has it. */
#ifndef FUSEMAP_NN_VEC_H
#define FUSEMAP_NN_VEC_H

#include <stdint.h>
#include <string.h>

/* Why not plain FM_VL-lane arrays here: with several accumulators per loop (rows x weight
 * rows), gcc -O2 keeps such arrays on the stack and reloads them every step, and separate
 * mul + add (the build has -ffp-contract=off) halve the multiply throughput that batched
 * decode needs. Vector-typed locals stay in registers and fm_v_fma is one instruction.
 * FM_VW is the target's native width (64-byte vectors lowered onto 32-byte registers make gcc
 * spill), so lane sums, and with them the last bits of a result, depend on the ISA the
 * library was built for; on one build they never depend on the thread count. */
#if !defined(__GNUC__)
#error "fusemap's decoder kernels need GNU C vector extensions (gcc or clang)"
#endif

#if defined(__AVX512F__)
#include <immintrin.h>
#define FM_VW 16
#elif defined(__AVX__)
#include <immintrin.h>
#define FM_VW 8
#else
#if defined(__ARM_NEON) && defined(__ARM_FEATURE_FMA)
#include <arm_neon.h>
#endif
#define FM_VW 4
#endif

typedef float fm_vf __attribute__((vector_size(FM_VW * 4)));
typedef uint32_t fm_vu __attribute__((vector_size(FM_VW * 4)));
typedef int32_t fm_vi __attribute__((vector_size(FM_VW * 4)));

/* Pins a vector value in a register: an empty asm that the compiler must assume reads and
 * writes v. Used on values loaded once and used several times, which gcc otherwise re-reads
 * from memory as an operand of every use (on Zen 4 that doubles the 512-bit loads per fma, and
 * loads, not fmas, become the limit). No instruction is emitted. */
#if defined(__x86_64__) || defined(__i386__)
#define FM_V_REG(v) __asm__("" : "+v"(v))
#elif defined(__aarch64__)
#define FM_V_REG(v) __asm__("" : "+w"(v))
#else
#define FM_V_REG(v) ((void)0)
#endif

/* Loads and stores through memcpy: no alignment needed (unaligned vector moves). */
static inline fm_vf fm_v_load(const void *p) {
    fm_vf v;
    memcpy(&v, p, sizeof v);
    return v;
}
static inline void fm_v_store(void *p, fm_vf v) {
    memcpy(p, &v, sizeof v);
}
static inline fm_vf fm_v_zero(void) {
    return (fm_vf){0};
}
static inline fm_vf fm_v_set1(float a) {
    return (fm_vf){0} + a;
}

/* acc + a * b, rounded once where the target has FMA (else mul then add). */
static inline fm_vf fm_v_fma(fm_vf acc, fm_vf a, fm_vf b) {
#if defined(__AVX512F__)
    return (fm_vf)_mm512_fmadd_ps((__m512)a, (__m512)b, (__m512)acc);
#elif defined(__AVX__) && defined(__FMA__)
    return (fm_vf)_mm256_fmadd_ps((__m256)a, (__m256)b, (__m256)acc);
#elif defined(__ARM_NEON) && defined(__ARM_FEATURE_FMA)
    return (fm_vf)vfmaq_f32((float32x4_t)acc, (float32x4_t)a, (float32x4_t)b);
#else
    return acc + a * b;
#endif
}

/* 2·FM_VW bf16 values at p (2-byte alignment is enough), split into the even-index elements
 * (p[0], p[2], ...) and the odd ones: one shift and one mask per vector, exact. */
static inline void fm_v_bf16_pairs(const void *p, fm_vf *even, fm_vf *odd) {
    fm_vu u;
    memcpy(&u, p, sizeof u);
    FM_V_REG(u);
    *even = (fm_vf)(u << 16);
    *odd = (fm_vf)(u & 0xffff0000u);
}

/* f16 bit patterns in the low 16 bits of each lane -> f32, exact (normals rebias the
 * exponent, subnormals are m * 2^-24 computed exactly, Inf/NaN keep their class). */
static inline fm_vf fm_v_f16_widen(fm_vu h) {
    fm_vu sign = (h & 0x8000u) << 16, em = h & 0x7fffu;
    fm_vu normal = (em << 13) + (112u << 23);
    fm_vu mant = (em & 0x3ffu) << 13;
    fm_vu special = 0x7f800000u | mant | ((fm_vu)(mant != 0u) & (1u << 22));
    fm_vu sub = (fm_vu)(__builtin_convertvector((fm_vi)em, fm_vf) * 0x1p-24f);
    fm_vu is_sub = (fm_vu)(em < 0x0400u), is_spec = (fm_vu)(em >= 0x7c00u);
    fm_vu mag = (sub & is_sub) | (~is_sub & ((special & is_spec) | (normal & ~is_spec)));
    return (fm_vf)(sign | mag);
}
static inline void fm_v_f16_pairs(const void *p, fm_vf *even, fm_vf *odd) {
    fm_vu u;
    memcpy(&u, p, sizeof u);
    FM_V_REG(u);
    *even = fm_v_f16_widen(u & 0xffffu);
    *odd = fm_v_f16_widen(u >> 16);
}

/* Lane sum and max, pairwise in a fixed order. */
static inline float fm_v_sum(fm_vf v) {
#if FM_VW == 16
    /* the same adds as the loop below, in vector registers */
    __m256 h =
        _mm256_add_ps(_mm512_castps512_ps256((__m512)v),
                      _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd((__m512)v), 1)));
    __m128 q = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
    __m128 d = _mm_add_ps(q, _mm_movehl_ps(q, q));
    return _mm_cvtss_f32(_mm_add_ss(d, _mm_movehdup_ps(d)));
#else
    float t[FM_VW];
    memcpy(t, &v, sizeof t);
    for (int w = FM_VW / 2; w >= 1; w /= 2)
        for (int l = 0; l < w; l++)
            t[l] = t[l] + t[l + w];
    return t[0];
#endif
}
static inline float fm_v_max(fm_vf v) {
    float t[FM_VW];
    memcpy(t, &v, sizeof t);
    for (int w = FM_VW / 2; w >= 1; w /= 2)
        for (int l = 0; l < w; l++)
            t[l] = t[l] > t[l + w] ? t[l] : t[l + w];
    return t[0];
}

/* The pair layout of activations that meet 16-bit weights: each block of 2·FM_VW floats
 * becomes its even-index elements then its odd ones (matching fm_v_*_pairs). */
static inline void fm_v_to_pairs(float *dst, const float *src) {
    for (int l = 0; l < FM_VW; l++) {
        dst[l] = src[2 * l];
        dst[FM_VW + l] = src[2 * l + 1];
    }
}
/* Inverse of fm_v_to_pairs. */
static inline void fm_v_from_pairs(float *dst, const float *src) {
    for (int l = 0; l < FM_VW; l++) {
        dst[2 * l] = src[l];
        dst[2 * l + 1] = src[FM_VW + l];
    }
}

#endif
