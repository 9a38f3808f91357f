/* fusemap tensors: the dtype table (every safetensors dtype), overflow-checked shapes,
 * tensors whose data is either owned or a view into a mapped file, and dtype conversion. */
#ifndef FUSEMAP_TENSOR_H
#define FUSEMAP_TENSOR_H

#include <stdbool.h>
#include <stdint.h>

#include "fusemap/core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* X(NAME, bits per element, writer rank) — rank drives the safetensors writer order
 * (higher rank first), exactly as the reference serializer. */
#define FM_DTYPE_LIST(X)                                                                           \
    X(BOOL, 8, 0)                                                                                  \
    X(F4, 4, 1)                                                                                    \
    X(F6_E2M3, 6, 2)                                                                               \
    X(F6_E3M2, 6, 3)                                                                               \
    X(U8, 8, 4)                                                                                    \
    X(I8, 8, 5)                                                                                    \
    X(F8_E5M2, 8, 6)                                                                               \
    X(F8_E4M3, 8, 7)                                                                               \
    X(F8_E8M0, 8, 8)                                                                               \
    X(F8_E4M3FNUZ, 8, 9)                                                                           \
    X(F8_E5M2FNUZ, 8, 10)                                                                          \
    X(I16, 16, 11)                                                                                 \
    X(U16, 16, 12)                                                                                 \
    X(F16, 16, 13)                                                                                 \
    X(BF16, 16, 14)                                                                                \
    X(I32, 32, 15)                                                                                 \
    X(U32, 32, 16)                                                                                 \
    X(F32, 32, 17)                                                                                 \
    X(C64, 64, 18)                                                                                 \
    X(F64, 64, 19)                                                                                 \
    X(I64, 64, 20)                                                                                 \
    X(U64, 64, 21)

typedef enum fm_dtype {
#define FM_X_DT(name, bits, rank) FM_DTYPE_##name,
    FM_DTYPE_LIST(FM_X_DT)
#undef FM_X_DT
        FM_DTYPE_COUNT,
    FM_DTYPE_INVALID = -1
} fm_dtype;

/* Safetensors name ("BF16"); NULL for an invalid dtype. */
FM_API const char *fm_dtype_name(fm_dtype dt);
/* Exact, case-sensitive lookup of a safetensors name of `len` bytes; FM_DTYPE_INVALID if unknown.
 */
FM_API fm_dtype fm_dtype_from_name(const char *name, size_t len);
FM_API unsigned fm_dtype_bits(fm_dtype dt);
FM_API unsigned fm_dtype_rank(fm_dtype dt);
/* True for F16, BF16, F32, F64 (the dtypes fm_convert handles). */
FM_API bool fm_dtype_is_float(fm_dtype dt);

#define FM_MAX_DIMS 8

/* A shape: up to FM_MAX_DIMS int64 dims, each >= 0. ndim 0 is a scalar (1 element). */
typedef struct fm_shape {
    int ndim;
    int64_t dims[FM_MAX_DIMS];
} fm_shape;

/* Builds a shape; FM_ERR_INVALID_ARG for ndim outside 0..8 or a negative dim. */
FM_API fm_status fm_shape_make(fm_shape *out, int ndim, const int64_t *dims);
FM_API bool fm_shape_equal(const fm_shape *a, const fm_shape *b);
/* Element count, left-to-right checked product (the reference rule); FM_ERR_OVERFLOW on overflow.
 */
FM_API fm_status fm_shape_numel(const fm_shape *s, uint64_t *out);
/* Byte size for dtype; FM_ERR_OVERFLOW, or FM_ERR_INVALID_ARG if bits are not a multiple of 8. */
FM_API fm_status fm_shape_nbytes(const fm_shape *s, fm_dtype dt, uint64_t *out);
/* "[1280, 3, 2, 14, 14]" into buf (always NUL-terminated); returns buf. */
FM_API char *fm_shape_format(const fm_shape *s, char *buf, size_t size);

/* ---- storage ----------------------------------------------------------------------
 * Reference-counted bytes backing tensor data: either owned heap memory or a file
 * mapping. A mapping lives while any tensor (or reader) holds a reference. */
typedef struct fm_storage fm_storage;

typedef enum fm_storage_kind { FM_STORAGE_OWNED = 0, FM_STORAGE_MAPPED = 1 } fm_storage_kind;

/* Owned storage of n bytes (64-byte aligned, uninitialised). Caller releases with
 * fm_storage_release. */
FM_API fm_status fm_storage_alloc(uint64_t n, fm_storage **out, fm_error *err);
/* Wraps a mapping of `len` bytes at `base`; `unmap(base, len, ctx)` runs when the last reference
 * goes. */
FM_API fm_status fm_storage_wrap_mapping(void *base, uint64_t len,
                                         void (*unmap)(void *, uint64_t, void *), void *ctx,
                                         fm_storage **out, fm_error *err);
/* Declares a mapping made by fm_storage_wrap_mapping a read-only (PROT_READ) mapping of a file
 * that stays intact: only then may fm_tensor_drop_pages release its pages, since they read back
 * from the file. A mapping of anything else (a caller's buffer) must never be marked. */
FM_API void fm_storage_mark_file_backed(fm_storage *s);
FM_API void fm_storage_retain(fm_storage *s);
FM_API void fm_storage_release(fm_storage *s); /* accepts NULL */
FM_API fm_storage_kind fm_storage_kind_of(const fm_storage *s);
FM_API void *fm_storage_data(const fm_storage *s);
FM_API uint64_t fm_storage_size(const fm_storage *s);

/* ---- tensors ------------------------------------------------------------------------
 * A small value type. Contiguous row-major. `data` points into `storage` (one reference
 * held by the tensor) or is NULL for a meta tensor (shape and dtype only). Copying the
 * struct does not add a reference: use fm_tensor_ref. Free with fm_tensor_free. */
typedef struct fm_tensor {
    fm_dtype dtype;
    fm_shape shape;
    void *data;          /* borrowed from storage; NULL on meta tensors */
    uint64_t nbytes;     /* numel * bits / 8 */
    fm_storage *storage; /* one reference; NULL on meta tensors */
} fm_tensor;

/* Meta tensor (no data). */
FM_API fm_status fm_tensor_init_meta(fm_tensor *t, fm_dtype dt, const fm_shape *shape,
                                     fm_error *err);
/* Owned, uninitialised data. */
FM_API fm_status fm_tensor_alloc(fm_tensor *t, fm_dtype dt, const fm_shape *shape, fm_error *err);
/* A view of nbytes at `data` inside `storage` (takes a new reference on storage). */
FM_API fm_status fm_tensor_view(fm_tensor *t, fm_storage *storage, void *data, fm_dtype dt,
                                const fm_shape *shape, fm_error *err);
/* Another reference to the same data (new reference on storage). */
FM_API void fm_tensor_ref(fm_tensor *dst, const fm_tensor *src);
/* Same data, new shape of equal element count (zero-copy). */
FM_API fm_status fm_tensor_reshape(fm_tensor *dst, const fm_tensor *src, const fm_shape *shape,
                                   fm_error *err);
/* Releases the storage reference and zeroes the struct; accepts NULL. */
FM_API void fm_tensor_free(fm_tensor *t);
/* Advice after copying a tensor out of a file mapping (a cast, a concatenation): the whole pages
 * inside t's bytes leave this process's resident set. The data does not change: a later read
 * faults the pages back in from the file. Does nothing unless t's storage is marked
 * file-backed (fm_storage_mark_file_backed). */
FM_API void fm_tensor_drop_pages(const fm_tensor *t);
/* True when the data is a view into a mapped file (zero-copy). */
FM_API bool fm_tensor_is_mapped(const fm_tensor *t);
FM_API uint64_t fm_tensor_numel(const fm_tensor *t);

/* Converted copy into a new owned tensor of dtype `dt` (a plain copy when dtypes are equal).
 * Float dtypes (F16/BF16/F32/F64) convert between each other; others must be equal. */
FM_API fm_status fm_tensor_cast(fm_tensor *dst, const fm_tensor *src, fm_dtype dt, fm_error *err);

/* ---- element conversion (round to nearest even; NaN stays NaN, Inf, subnormals exact) --
 * Buffers may be unaligned for the 16-bit and 64-bit sources; they must not overlap. */
FM_API void fm_bf16_to_f32(float *dst, const uint16_t *src, uint64_t n);
FM_API void fm_f16_to_f32(float *dst, const uint16_t *src, uint64_t n);
FM_API void fm_f32_to_bf16(uint16_t *dst, const float *src, uint64_t n);
FM_API void fm_f32_to_f16(uint16_t *dst, const float *src, uint64_t n);
FM_API void fm_f64_to_f32(float *dst, const double *src, uint64_t n);
FM_API void fm_f32_to_f64(double *dst, const float *src, uint64_t n);
FM_API void fm_f64_to_bf16(uint16_t *dst, const double *src, uint64_t n); /* single rounding */
FM_API void fm_f64_to_f16(uint16_t *dst, const double *src, uint64_t n);  /* single rounding */
/* Any float dtype to any float dtype, n elements (raw bytes, may be unaligned). */
FM_API fm_status fm_convert(void *dst, fm_dtype dst_dt, const void *src, fm_dtype src_dt,
                            uint64_t n);

#ifdef __cplusplus
}
#endif
#endif
