/* fusemap core: status codes, the error record, the allocation choke point and the
 * I/O fault-injection hooks every other subsystem goes through. */
#ifndef FUSEMAP_CORE_H
#define FUSEMAP_CORE_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* One status list, generated into the enum, the name table and the text table.
 * X(NAME, "short text") */
#define FM_STATUS_LIST(X)                                                                          \
    X(OK, "success")                                                                               \
    X(ERR_NOMEM, "out of memory")                                                                  \
    X(ERR_INVALID_ARG, "invalid argument")                                                         \
    X(ERR_IO, "I/O error")                                                                         \
    X(ERR_NOT_FOUND, "not found")                                                                  \
    X(ERR_EXISTS, "already exists")                                                                \
    X(ERR_LIMIT, "resource limit exceeded")                                                        \
    X(ERR_OVERFLOW, "arithmetic overflow")                                                         \
    X(ERR_JSON, "invalid JSON")                                                                    \
    X(ERR_CONFIG, "invalid configuration")                                                         \
    X(ERR_UNSUPPORTED, "unsupported")                                                              \
    X(ERR_HEADER_TOO_SMALL, "safetensors: header too small")                                       \
    X(ERR_HEADER_TOO_LARGE, "safetensors: header too large")                                       \
    X(ERR_HEADER_LENGTH, "safetensors: invalid header length")                                     \
    X(ERR_HEADER_UTF8, "safetensors: invalid UTF-8 in header")                                     \
    X(ERR_HEADER_JSON, "safetensors: invalid JSON in header")                                      \
    X(ERR_DUPLICATE_TENSOR, "safetensors: duplicate tensor name")                                  \
    X(ERR_UNKNOWN_DTYPE, "safetensors: unknown dtype")                                             \
    X(ERR_INVALID_OFFSET, "safetensors: invalid offset")                                           \
    X(ERR_VALIDATION_OVERFLOW, "safetensors: overflow computing buffer size")                      \
    X(ERR_MISALIGNED_SLICE, "safetensors: element bits not a multiple of 8")                       \
    X(ERR_TENSOR_INVALID_INFO, "safetensors: invalid shape, dtype or offset")                      \
    X(ERR_INCOMPLETE_BUFFER, "safetensors: file not fully covered")                                \
    X(ERR_INDEX, "invalid shard index")                                                            \
    X(ERR_SHAPE, "shape mismatch")                                                                 \
    X(ERR_DTYPE, "dtype mismatch")                                                                 \
    X(ERR_PATTERN, "invalid pattern")                                                              \
    X(ERR_CONVERSION, "weight conversion failed")                                                  \
    X(ERR_MISSING_KEYS, "missing keys")                                                            \
    X(ERR_UNEXPECTED_KEYS, "unexpected keys")                                                      \
    X(ERR_FUSION, "fusion error")                                                                  \
    X(ERR_IMAGE, "invalid image")                                                                  \
    X(ERR_INPUT, "invalid model input")                                                            \
    X(ERR_INTERNAL, "internal error")

typedef enum fm_status {
#define FM_X_ENUM(name, text) FM_##name,
    FM_STATUS_LIST(FM_X_ENUM)
#undef FM_X_ENUM
        FM_STATUS_COUNT
} fm_status;

/* "FM_ERR_IO" etc.; never NULL (unknown values give "FM_UNKNOWN"). */
const char *fm_status_name(fm_status s);
/* Human text of a status; never NULL. */
const char *fm_status_text(fm_status s);

#define FM_ERROR_MSG_MAX 1024

/* The error record every fallible call fills. Caller-owned; may be NULL when the
 * caller does not want details. `msg` names the file, key or tensor and the reason. */
typedef struct fm_error {
    fm_status status;
    char msg[FM_ERROR_MSG_MAX];
} fm_error;

void fm_error_clear(fm_error *err);
/* Sets err (if non-NULL) and returns `s`, so callers can `return fm_error_set(...)`. */
fm_status fm_error_set(fm_error *err, fm_status s, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
fm_status fm_error_setv(fm_error *err, fm_status s, const char *fmt, va_list ap);
/* Prepends "prefix: " to an existing message (context on the way up); keeps err->status.
 * Accepts NULL. Returns nothing on purpose: callers return their own status. */
void fm_error_prefix(fm_error *err, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* ---- allocation choke point -------------------------------------------------------
 * Every allocation of the library goes through these. fm_free accepts NULL. */
void *fm_malloc(size_t n);
void *fm_calloc(size_t count, size_t size);
void *fm_realloc(void *p, size_t n);
void fm_free(void *p);
char *fm_strdup(const char *s);
char *fm_strndup(const char *s, size_t n);
/* Aligned (64 bytes) allocation for kernel buffers; free with fm_free_aligned. */
void *fm_malloc_aligned(size_t n);
void fm_free_aligned(void *p);

/* ---- fault injection (tests) ---------------------------------------------------------
 * fm_fault_set(kind, n): the n-th call (1-based, counted from this call) of that kind fails;
 * n = 0 disables. fm_fault_count(kind) returns calls seen since the last set. Process-wide,
 * not meant for concurrent use. */
typedef enum fm_fault_kind {
    FM_FAULT_ALLOC = 0,
    FM_FAULT_WRITE,
    FM_FAULT_FSYNC,
    FM_FAULT_RENAME,
    FM_FAULT_OPEN,
    FM_FAULT_KIND_COUNT
} fm_fault_kind;
void fm_fault_set(fm_fault_kind kind, uint64_t nth);
uint64_t fm_fault_count(fm_fault_kind kind);
/* Returns 1 when this call of `kind` must fail (and counts it). Used by the library. */
int fm_fault_hit(fm_fault_kind kind);

/* ---- checked arithmetic -------------------------------------------------------------- */
/* Return 0 on success, -1 on overflow (out untouched on overflow). */
static inline int fm_mul_u64(uint64_t a, uint64_t b, uint64_t *out) {
    uint64_t r;
    if (__builtin_mul_overflow(a, b, &r)) return -1;
    *out = r;
    return 0;
}
static inline int fm_add_u64(uint64_t a, uint64_t b, uint64_t *out) {
    uint64_t r;
    if (__builtin_add_overflow(a, b, &r)) return -1;
    *out = r;
    return 0;
}

/* Number of threads kernels use when the caller passes 0: online cores. */
int fm_default_threads(void);

#ifdef __cplusplus
}
#endif
#endif
