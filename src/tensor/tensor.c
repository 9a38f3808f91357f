/* The dtype table, overflow-checked shape math, reference-counted storage (owned memory
 * or a file mapping) and tensor views. */
#include "fusemap/tensor.h"

#include "core/threadpool.h"

#include <assert.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static const struct {
    const char *name;
    unsigned bits, rank;
} dtype_table[] = {
#define FM_X_DT(name, bits, rank) {#name, bits, rank},
    FM_DTYPE_LIST(FM_X_DT)
#undef FM_X_DT
};

const char *fm_dtype_name(fm_dtype dt) {
    if ((unsigned)dt >= FM_DTYPE_COUNT) return NULL;
    return dtype_table[dt].name;
}

fm_dtype fm_dtype_from_name(const char *name, size_t len) {
    for (int i = 0; i < FM_DTYPE_COUNT; i++) {
        const char *n = dtype_table[i].name;
        if (strlen(n) == len && memcmp(n, name, len) == 0) return (fm_dtype)i;
    }
    return FM_DTYPE_INVALID;
}

unsigned fm_dtype_bits(fm_dtype dt) {
    return (unsigned)dt < FM_DTYPE_COUNT ? dtype_table[dt].bits : 0;
}

unsigned fm_dtype_rank(fm_dtype dt) {
    return (unsigned)dt < FM_DTYPE_COUNT ? dtype_table[dt].rank : 0;
}

bool fm_dtype_is_float(fm_dtype dt) {
    return dt == FM_DTYPE_F16 || dt == FM_DTYPE_BF16 || dt == FM_DTYPE_F32 || dt == FM_DTYPE_F64;
}

fm_status fm_shape_make(fm_shape *out, int ndim, const int64_t *dims) {
    if (ndim < 0 || ndim > FM_MAX_DIMS) return FM_ERR_INVALID_ARG;
    memset(out, 0, sizeof *out);
    out->ndim = ndim;
    for (int i = 0; i < ndim; i++) {
        if (dims[i] < 0) return FM_ERR_INVALID_ARG;
        out->dims[i] = dims[i];
    }
    return FM_OK;
}

bool fm_shape_equal(const fm_shape *a, const fm_shape *b) {
    if (a->ndim != b->ndim) return false;
    for (int i = 0; i < a->ndim; i++)
        if (a->dims[i] != b->dims[i]) return false;
    return true;
}

fm_status fm_shape_numel(const fm_shape *s, uint64_t *out) {
    uint64_t n = 1;
    if (s->ndim < 0 || s->ndim > FM_MAX_DIMS) return FM_ERR_INVALID_ARG; /* never read past dims */
    for (int i = 0; i < s->ndim; i++) {
        if (s->dims[i] < 0 || fm_mul_u64(n, (uint64_t)s->dims[i], &n)) return FM_ERR_OVERFLOW;
    }
    *out = n;
    return FM_OK;
}

fm_status fm_shape_nbytes(const fm_shape *s, fm_dtype dt, uint64_t *out) {
    uint64_t n, bits;
    fm_status st = fm_shape_numel(s, &n);
    if (st != FM_OK) return st;
    if (fm_mul_u64(n, fm_dtype_bits(dt), &bits)) return FM_ERR_OVERFLOW;
    if (bits % 8) return FM_ERR_INVALID_ARG;
    *out = bits / 8;
    return FM_OK;
}

char *fm_shape_format(const fm_shape *s, char *buf, size_t size) {
    size_t off = 0;
    if (size == 0) return buf;
    buf[0] = '\0';
    if (s->ndim < 0 || s->ndim > FM_MAX_DIMS) {
        snprintf(buf, size, "[invalid rank %d]", s->ndim);
        return buf;
    }
    off += (size_t)snprintf(buf + off, size - off, "[");
    for (int i = 0; i < s->ndim && off < size; i++)
        off +=
            (size_t)snprintf(buf + off, size - off, "%s%lld", i ? ", " : "", (long long)s->dims[i]);
    if (off < size) snprintf(buf + off, size - off, "]");
    return buf;
}

/* ---- storage ---------------------------------------------------------------------------- */
struct fm_storage {
    _Atomic long refs;
    fm_storage_kind kind;
    void *base;
    uint64_t len;
    void (*unmap)(void *, uint64_t, void *);
    void *ctx;
    bool file_backed; /* a read-only mapping of a file: dropped pages read back from it */
};

fm_status fm_storage_alloc(uint64_t n, fm_storage **out, fm_error *err) {
    *out = NULL;
    if (n > SIZE_MAX - 64)
        return fm_error_set(err, FM_ERR_NOMEM, "cannot allocate %llu bytes", (unsigned long long)n);
    fm_storage *s = fm_calloc(1, sizeof *s);
    void *p = s ? fm_malloc_aligned((size_t)n) : NULL;
    if (!p) {
        fm_free(s);
        return fm_error_set(err, FM_ERR_NOMEM, "cannot allocate %llu bytes", (unsigned long long)n);
    }
    atomic_init(&s->refs, 1);
    s->kind = FM_STORAGE_OWNED;
    s->base = p;
    s->len = n;
    *out = s;
    return FM_OK;
}

fm_status fm_storage_wrap_mapping(void *base, uint64_t len, void (*unmap)(void *, uint64_t, void *),
                                  void *ctx, fm_storage **out, fm_error *err) {
    fm_storage *s = fm_calloc(1, sizeof *s);
    *out = NULL;
    if (!s) return fm_error_set(err, FM_ERR_NOMEM, "out of memory wrapping a mapping");
    atomic_init(&s->refs, 1);
    s->kind = FM_STORAGE_MAPPED;
    s->base = base;
    s->len = len;
    s->unmap = unmap;
    s->ctx = ctx;
    *out = s;
    return FM_OK;
}

void fm_storage_retain(fm_storage *s) {
    if (s) atomic_fetch_add(&s->refs, 1);
}

void fm_storage_release(fm_storage *s) {
    if (!s || atomic_fetch_sub(&s->refs, 1) != 1) return;
    if (s->kind == FM_STORAGE_OWNED) {
        fm_free_aligned(s->base);
    } else if (s->unmap) {
        s->unmap(s->base, s->len, s->ctx);
    }
    fm_free(s);
}

void fm_storage_mark_file_backed(fm_storage *s) {
    assert(s->kind == FM_STORAGE_MAPPED);
    s->file_backed = true;
}

void fm_tensor_drop_pages(const fm_tensor *t) {
    if (!t->storage || !t->storage->file_backed || !t->data) return;
    uintptr_t pg = (uintptr_t)sysconf(_SC_PAGESIZE), lo = (uintptr_t)t->data,
              hi = lo + (uintptr_t)t->nbytes;
    lo = (lo + pg - 1) & ~(pg - 1); /* whole pages only: the neighbours keep theirs */
    hi &= ~(pg - 1);
    if (hi > lo)
        madvise((void *)lo, hi - lo, MADV_DONTNEED); /* advice: a failure changes nothing */
}

fm_storage_kind fm_storage_kind_of(const fm_storage *s) {
    return s->kind;
}
void *fm_storage_data(const fm_storage *s) {
    return s->base;
}
uint64_t fm_storage_size(const fm_storage *s) {
    return s->len;
}

/* ---- tensors --------------------------------------------------------------------------- */
static fm_status tensor_header(fm_tensor *t, fm_dtype dt, const fm_shape *shape, fm_error *err) {
    memset(t, 0, sizeof *t);
    if ((unsigned)dt >= FM_DTYPE_COUNT)
        return fm_error_set(err, FM_ERR_INVALID_ARG, "invalid dtype %d", (int)dt);
    if (shape->ndim < 0 || shape->ndim > FM_MAX_DIMS)
        return fm_error_set(err, FM_ERR_INVALID_ARG, "rank %d outside 0..%d", shape->ndim,
                            FM_MAX_DIMS);
    fm_status st = fm_shape_nbytes(shape, dt, &t->nbytes);
    if (st != FM_OK) {
        char b[256];
        return fm_error_set(
            err, st, "shape %s of %s: %s", fm_shape_format(shape, b, sizeof b), fm_dtype_name(dt),
            st == FM_ERR_OVERFLOW ? "size overflows" : "not a whole number of bytes");
    }
    t->dtype = dt;
    t->shape = *shape;
    return FM_OK;
}

fm_status fm_tensor_init_meta(fm_tensor *t, fm_dtype dt, const fm_shape *shape, fm_error *err) {
    return tensor_header(t, dt, shape, err);
}

fm_status fm_tensor_alloc(fm_tensor *t, fm_dtype dt, const fm_shape *shape, fm_error *err) {
    fm_status st = tensor_header(t, dt, shape, err);
    if (st != FM_OK) return st;
    st = fm_storage_alloc(t->nbytes, &t->storage, err);
    if (st != FM_OK) {
        memset(t, 0, sizeof *t);
        return st;
    }
    t->data = fm_storage_data(t->storage);
    return FM_OK;
}

fm_status fm_tensor_view(fm_tensor *t, fm_storage *storage, void *data, fm_dtype dt,
                         const fm_shape *shape, fm_error *err) {
    if (!storage) {
        memset(t, 0, sizeof *t);
        return fm_error_set(err, FM_ERR_INVALID_ARG, "view without storage");
    }
    fm_status st = tensor_header(t, dt, shape, err);
    if (st != FM_OK) return st;
    uint8_t *base = fm_storage_data(storage), *p = data;
    if (p < base || (uint64_t)(p - base) > fm_storage_size(storage) ||
        t->nbytes > fm_storage_size(storage) - (uint64_t)(p - base)) {
        memset(t, 0, sizeof *t);
        return fm_error_set(err, FM_ERR_INVALID_ARG, "view of %llu bytes outside its storage",
                            (unsigned long long)t->nbytes);
    }
    fm_storage_retain(storage);
    t->storage = storage;
    t->data = data;
    return FM_OK;
}

void fm_tensor_ref(fm_tensor *dst, const fm_tensor *src) {
    *dst = *src;
    fm_storage_retain(dst->storage);
}

fm_status fm_tensor_reshape(fm_tensor *dst, const fm_tensor *src, const fm_shape *shape,
                            fm_error *err) {
    uint64_t a, b;
    char s1[256], s2[256];
    if (fm_shape_numel(&src->shape, &a) || fm_shape_numel(shape, &b) || a != b)
        return fm_error_set(err, FM_ERR_SHAPE, "cannot reshape tensor with shape %s into %s",
                            fm_shape_format(&src->shape, s1, sizeof s1),
                            fm_shape_format(shape, s2, sizeof s2));
    fm_tensor tmp = *src;
    tmp.shape = *shape;
    if (dst != src)
        fm_storage_retain(tmp.storage); /* in place (dst == src) keeps its one reference */
    *dst = tmp;
    return FM_OK;
}

void fm_tensor_free(fm_tensor *t) {
    if (!t) return;
    fm_storage_release(t->storage);
    memset(t, 0, sizeof *t);
}

bool fm_tensor_is_mapped(const fm_tensor *t) {
    return t->storage && fm_storage_kind_of(t->storage) == FM_STORAGE_MAPPED;
}

uint64_t fm_tensor_numel(const fm_tensor *t) {
    uint64_t n = 0;
    fm_shape_numel(&t->shape, &n);
    return n;
}

/* Large conversions run on all cores: the work is bound by page faults on the fresh output
 * and by memory bandwidth, both of which scale with threads. Chunks are independent, so the
 * result does not depend on the thread count. */
#define CAST_CHUNK ((uint64_t)1 << 18)

typedef struct cast_job {
    void *dst;
    const void *src;
    fm_dtype ddt, sdt;
    uint64_t n;
} cast_job;

static void cast_chunks(void *ctx, int64_t begin, int64_t end, int worker) {
    const cast_job *j = ctx;
    unsigned db = fm_dtype_bits(j->ddt) / 8, sb = fm_dtype_bits(j->sdt) / 8;
    (void)worker;
    for (int64_t c = begin; c < end; c++) {
        uint64_t off = (uint64_t)c * CAST_CHUNK,
                 n = j->n - off < CAST_CHUNK ? j->n - off : CAST_CHUNK;
        fm_convert((uint8_t *)j->dst + off * db, j->ddt, (const uint8_t *)j->src + off * sb, j->sdt,
                   n);
    }
}

/* One pool for the process, made on first use (a model load casts hundreds of tensors). */
static fm_threadpool *cast_pool;
static pthread_once_t cast_pool_once = PTHREAD_ONCE_INIT;
static void cast_pool_make(void) {
    if (fm_default_threads() > 1 && fm_threadpool_new(0, &cast_pool, NULL) != FM_OK)
        cast_pool = NULL;
}

static fm_status convert_parallel(void *dst, fm_dtype ddt, const void *src, fm_dtype sdt,
                                  uint64_t n) {
    uint64_t chunks = (n + CAST_CHUNK - 1) / CAST_CHUNK;
    if (chunks < 2) return fm_convert(dst, ddt, src, sdt, n);
    pthread_once(&cast_pool_once, cast_pool_make);
    if (!cast_pool) return fm_convert(dst, ddt, src, sdt, n);
    cast_job j = {dst, src, ddt, sdt, n};
    fm_threadpool_for(cast_pool, (int64_t)chunks, 1, cast_chunks, &j);
    return FM_OK;
}

fm_status fm_tensor_cast(fm_tensor *dst, const fm_tensor *src, fm_dtype dt, fm_error *err) {
    fm_tensor out;
    memset(dst, 0, sizeof *dst);
    if (!src->data) return fm_error_set(err, FM_ERR_INVALID_ARG, "cannot cast a meta tensor");
    if (src->dtype != dt && !(fm_dtype_is_float(src->dtype) && fm_dtype_is_float(dt)))
        return fm_error_set(err, FM_ERR_DTYPE, "cannot convert %s to %s", fm_dtype_name(src->dtype),
                            fm_dtype_name(dt));
    fm_status st = fm_tensor_alloc(&out, dt, &src->shape, err);
    if (st != FM_OK) return st;
    if (src->dtype == dt) {
        memcpy(out.data, src->data, (size_t)src->nbytes);
    } else if ((st = convert_parallel(out.data, dt, src->data, src->dtype, fm_tensor_numel(src))) !=
               FM_OK) {
        fm_tensor_free(&out);
        return fm_error_set(err, st, "cannot convert %s to %s", fm_dtype_name(src->dtype),
                            fm_dtype_name(dt));
    }
    *dst = out;
    return FM_OK;
}
