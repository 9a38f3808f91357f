/* The safetensors reader: bounded pread of the prefix and header, full validation (spec
 * sections 1-2, stricter on duplicates), then one read-only mapping wrapped in a storage so
 * zero-copy views outlive the reader. Tensor bytes are never read or copied here. */
#include "fusemap/io.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/fsutil.h"
#include "io/st_header.h"

struct fm_st_file {
    char *path;          /* owned: the path (or buffer label) used in every message */
    char *header;        /* owned: the N header bytes, decoded in place; names point here */
    uint64_t header_len; /* N */
    fm_st_header h;      /* entries sorted by (begin, end, name) */
    size_t *by_name;     /* owned: indices into h.entries, sorted by name bytes */
    fm_storage *storage; /* one reference: the file mapping, the caller's buffer, or empty */
    uint8_t *data;       /* start of the data region inside storage (borrowed from it) */
    uint64_t data_len;
};

/* Backing for files whose data region is empty: no mapping of length 0 is ever made. */
static uint8_t empty_region[1];

static const char *errno_text(int e, char *buf, size_t size) {
    return strerror_r(e, buf, size); /* GNU variant (_GNU_SOURCE): returns the text */
}

/* ---- validation after parsing ------------------------------------------------------------ */

static int cmp_offsets(const void *a, const void *b) {
    const fm_st_entry *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    size_t n = x->name_len < y->name_len ? x->name_len : y->name_len;
    int c = memcmp(x->name, y->name, n);
    if (c) return c;
    return x->name_len < y->name_len ? -1 : x->name_len > y->name_len;
}

/* Writers list entries in data order: skip the sort then (a large header sorts in seconds). */
static bool in_offset_order(const fm_st_header *h) {
    for (size_t i = 1; i < h->n_entries; i++)
        if (cmp_offsets(&h->entries[i - 1], &h->entries[i]) > 0) return false;
    return true;
}

static int cmp_names(const fm_st_entry *x, const char *name, size_t len) {
    size_t n = x->name_len < len ? x->name_len : len;
    int c = memcmp(x->name, name, n);
    if (c) return c;
    return x->name_len < len ? -1 : x->name_len > len;
}

static int cmp_entry_ptr_names(const void *a, const void *b) {
    const fm_st_entry *x = *(const fm_st_entry *const *)a, *y = *(const fm_st_entry *const *)b;
    return cmp_names(x, y->name, y->name_len);
}

/* Builds f->by_name and rejects duplicate names (FM_ERR_DUPLICATE_TENSOR): the reference
 * keeps the last silently, which lets two parsers disagree on the same file. */
static fm_status build_name_index(fm_st_file *f, fm_error *err) {
    size_t n = f->h.n_entries;
    const fm_st_entry **v = fm_malloc((n ? n : 1) * sizeof *v);
    f->by_name = fm_malloc((n ? n : 1) * sizeof *f->by_name);
    if (!v || !f->by_name) {
        fm_free(v);
        return fm_error_set(err, FM_ERR_NOMEM, "%s: out of memory indexing %zu tensors", f->path,
                            n);
    }
    for (size_t i = 0; i < n; i++)
        v[i] = &f->h.entries[i];
    qsort(v, n, sizeof *v, cmp_entry_ptr_names);
    fm_status st = FM_OK;
    for (size_t i = 0; i < n; i++) {
        f->by_name[i] = (size_t)(v[i] - f->h.entries);
        if (i && st == FM_OK && cmp_entry_ptr_names(&v[i - 1], &v[i]) == 0) {
            char q[FM_ST_QUOTE_MAX];
            st = fm_error_set(err, FM_ERR_DUPLICATE_TENSOR,
                              "%s: duplicate tensor name '%s' in header", f->path,
                              fm_st_quote_name(q, sizeof q, v[i]->name, v[i]->name_len));
        }
    }
    fm_free(v);
    return st;
}

/* "[a, b]" with dims read as uint64_t (the stored bit pattern, see st_header.h). */
static const char *fmt_dims(const fm_st_entry *e, char *buf, size_t size) {
    size_t o = (size_t)snprintf(buf, size, "[");
    for (int i = 0; i < e->shape.ndim && o < size; i++)
        o += (size_t)snprintf(buf + o, size - o, "%s%llu", i ? ", " : "",
                              (unsigned long long)(uint64_t)e->shape.dims[i]);
    if (o < size) snprintf(buf + o, size - o, "]");
    return buf;
}

/* "<path>: tensor '<name>': <reason>" with status st. */
static fm_status entry_error(const fm_st_file *f, const fm_st_entry *e, fm_error *err, fm_status st,
                             const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 5, 6)))
#endif
    ;
static fm_status entry_error(const fm_st_file *f, const fm_st_entry *e, fm_error *err, fm_status st,
                             const char *fmt, ...) {
    char q[FM_ST_QUOTE_MAX], reason[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof reason, fmt, ap);
    va_end(ap);
    return fm_error_set(err, st, "%s: tensor '%s': %s", f->path,
                        fm_st_quote_name(q, sizeof q, e->name, e->name_len), reason);
}

/* Spec 2.2 steps 7-10 for one entry, `cursor` being where the chain stands. */
static fm_status check_entry(const fm_st_file *f, const fm_st_entry *e, uint64_t cursor,
                             fm_error *err) {
    char sh[256];
    unsigned long long b = e->begin, en = e->end;
    if (e->begin != cursor || e->end < e->begin)
        return entry_error(f, e, err, FM_ERR_INVALID_OFFSET,
                           "invalid offset [%llu, %llu] (the previous tensor ends at %llu)", b, en,
                           (unsigned long long)cursor);
    uint64_t numel = 1, bits;
    for (int i = 0; i < e->shape.ndim; i++)
        if (fm_mul_u64(numel, (uint64_t)e->shape.dims[i], &numel))
            return entry_error(f, e, err, FM_ERR_VALIDATION_OVERFLOW,
                               "element count of shape %s overflows", fmt_dims(e, sh, sizeof sh));
    const char *dt = fm_dtype_name(e->dtype);
    if (fm_mul_u64(numel, fm_dtype_bits(e->dtype), &bits))
        return entry_error(f, e, err, FM_ERR_VALIDATION_OVERFLOW,
                           "bit size of shape %s of %s overflows", fmt_dims(e, sh, sizeof sh), dt);
    if (bits % 8)
        return entry_error(f, e, err, FM_ERR_MISALIGNED_SLICE,
                           "shape %s of %s is %llu bits, not a whole number of bytes",
                           fmt_dims(e, sh, sizeof sh), dt, (unsigned long long)bits);
    if (e->end - e->begin != bits / 8)
        return entry_error(
            f, e, err, FM_ERR_TENSOR_INVALID_INFO,
            "data_offsets [%llu, %llu] span %llu bytes but shape %s of %s needs %llu", b, en,
            en - b, fmt_dims(e, sh, sizeof sh), dt, (unsigned long long)(bits / 8));
    return FM_OK;
}

/* Dims above INT64_MAX pass the reference only inside zero-element shapes; fm_shape holds
 * int64 dims, so we refuse them (documented limit). */
static fm_status check_dims_fit(const fm_st_file *f, fm_error *err) {
    for (size_t i = 0; i < f->h.n_entries; i++) {
        const fm_st_entry *e = &f->h.entries[i];
        for (int d = 0; d < e->shape.ndim; d++) {
            if (e->shape.dims[d] >= 0) continue;
            char sh[256];
            return entry_error(f, e, err, FM_ERR_LIMIT,
                               "shape %s has a dimension above 2^63-1 (fusemap limit)",
                               fmt_dims(e, sh, sizeof sh));
        }
    }
    return FM_OK;
}

/* Everything after the prefix checks: parse, duplicates, offset chain, coverage. */
static fm_status validate(fm_st_file *f, uint64_t total_len, fm_error *err) {
    fm_status st = fm_st_header_parse(f->header, (size_t)f->header_len, f->path, &f->h, err);
    if (st != FM_OK) return st;
    if (!in_offset_order(&f->h))
        qsort(f->h.entries, f->h.n_entries, sizeof *f->h.entries, cmp_offsets);
    if ((st = build_name_index(f, err)) != FM_OK) return st;
    uint64_t cursor = 0, covered;
    for (size_t i = 0; i < f->h.n_entries; i++) {
        if ((st = check_entry(f, &f->h.entries[i], cursor, err)) != FM_OK) return st;
        cursor = f->h.entries[i].end;
    }
    if (fm_add_u64(8 + f->header_len, cursor, &covered) || covered != total_len)
        return fm_error_set(
            err, FM_ERR_INCOMPLETE_BUFFER,
            "%s: file not fully covered: it is %llu bytes, the prefix and header take %llu and the "
            "tensors %llu more (%s)",
            f->path, (unsigned long long)total_len, (unsigned long long)(8 + f->header_len),
            (unsigned long long)cursor,
            cursor > total_len - 8 - f->header_len ? "truncated file or offsets past the end"
                                                   : "trailing bytes after the last tensor");
    f->data_len = cursor;
    return check_dims_fit(f, err);
}

/* Spec 2.1 steps 1-4 on the 8-byte prefix; *n is N. */
static fm_status check_prefix(const uint8_t *b, uint64_t total, const char *label, uint64_t *n,
                              fm_error *err) {
    if (total < 8)
        return fm_error_set(err, FM_ERR_HEADER_TOO_SMALL,
                            "%s: %llu bytes, too small for the 8-byte header length", label,
                            (unsigned long long)total);
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | b[i];
    if (v > FM_ST_MAX_HEADER_BYTES)
        return fm_error_set(err, FM_ERR_HEADER_TOO_LARGE,
                            "%s: header length %llu exceeds the limit of %llu bytes", label,
                            (unsigned long long)v, FM_ST_MAX_HEADER_BYTES);
    if (v > total - 8)
        return fm_error_set(err, FM_ERR_HEADER_LENGTH,
                            "%s: header length %llu runs past the end of the %llu-byte file", label,
                            (unsigned long long)v, (unsigned long long)total);
    *n = v;
    return FM_OK;
}

static fm_status new_file(const char *label, uint64_t n, fm_st_file **out, fm_error *err) {
    fm_st_file *f = fm_calloc(1, sizeof *f);
    if (f) f->path = fm_strdup(label);
    if (f && f->path) f->header = fm_malloc(n ? (size_t)n : 1);
    if (!f || !f->path || !f->header) {
        fm_st_close(f);
        return fm_error_set(err, FM_ERR_NOMEM, "%s: out of memory for a %llu-byte header", label,
                            (unsigned long long)n);
    }
    f->header_len = n;
    *out = f;
    return FM_OK;
}

/* ---- files --------------------------------------------------------------------------------- */

static fm_status pread_full(int fd, void *buf, uint64_t len, uint64_t off, const char *label,
                            fm_error *err) {
    uint8_t *p = buf;
    while (len) {
        size_t chunk = len > (1u << 30) ? (1u << 30) : (size_t)len;
        ssize_t r = pread(fd, p, chunk, (off_t)off);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            char eb[128];
            return fm_error_set(err, FM_ERR_IO, "%s: read failed at offset %llu: %s", label,
                                (unsigned long long)off,
                                r == 0 ? "file shrank while being read"
                                       : errno_text(errno, eb, sizeof eb));
        }
        p += r;
        off += (uint64_t)r;
        len -= (uint64_t)r;
    }
    return FM_OK;
}

static void unmap_file(void *base, uint64_t len, void *ctx) {
    (void)ctx;
    munmap(base, (size_t)len);
}

/* Maps the whole validated file read-only. Truncating the file while it is mapped makes
 * later accesses to the lost pages raise SIGBUS: the file must stay intact while any view
 * lives (the same contract as the reference's mmap-based loader). No madvise: bench/load
 * measured SEQUENTIAL, WILLNEED and POPULATE_READ within noise of none on a warm cache. */
static fm_status map_file(fm_st_file *f, int fd, uint64_t total, fm_error *err) {
    if (f->data_len == 0) /* nothing to map: views of empty tensors point at a static byte */
        return fm_storage_wrap_mapping(empty_region, 0, NULL, NULL, &f->storage, err);
    if (total > SIZE_MAX)
        return fm_error_set(err, FM_ERR_LIMIT, "%s: file too large to map on this platform",
                            f->path);
    void *m = mmap(NULL, (size_t)total, PROT_READ, MAP_PRIVATE, fd, 0);
    if (m == MAP_FAILED) {
        char eb[128];
        return fm_error_set(err, FM_ERR_IO, "%s: mmap failed: %s", f->path,
                            errno_text(errno, eb, sizeof eb));
    }
    fm_status st = fm_storage_wrap_mapping(m, total, unmap_file, NULL, &f->storage, err);
    if (st != FM_OK) {
        munmap(m, (size_t)total);
        fm_error_prefix(err, "%s", f->path);
        return st;
    }
    fm_storage_mark_file_backed(f->storage); /* PROT_READ, MAP_PRIVATE: pages read back */
    f->data = (uint8_t *)m + 8 + f->header_len;
    return FM_OK;
}

/* Opens through the io file wrappers (fault hooks, NOT_FOUND for a missing path) and
 * requires a regular file. */
static fm_status open_fd(const char *path, int *fd, uint64_t *size, fm_error *err) {
    struct stat sb;
    fm_status st = fm_fs_open(path, O_RDONLY, 0, fd, err);
    if (st != FM_OK) return st;
    if (fstat(*fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        st = fm_error_set(err, FM_ERR_IO, "%s: not a regular file", path);
        close(*fd);
        *fd = -1;
        return st;
    }
    *size = (uint64_t)sb.st_size;
    return FM_OK;
}

fm_status fm_st_open(const char *path, fm_st_file **out, fm_error *err) {
    if (!out) return fm_error_set(err, FM_ERR_INVALID_ARG, "fm_st_open: out is NULL");
    *out = NULL;
    if (!path) return fm_error_set(err, FM_ERR_INVALID_ARG, "fm_st_open: path is NULL");
    int fd = -1;
    uint64_t total = 0, n = 0;
    uint8_t prefix[8] = {0};
    fm_st_file *f = NULL;
    fm_status st = open_fd(path, &fd, &total, err);
    if (st != FM_OK) return st;
    if (total >= 8) st = pread_full(fd, prefix, 8, 0, path, err);
    if (st == FM_OK) st = check_prefix(prefix, total, path, &n, err);
    if (st == FM_OK) st = new_file(path, n, &f, err);
    if (st == FM_OK) st = pread_full(fd, f->header, n, 8, path, err);
    if (st == FM_OK) st = validate(f, total, err);
    if (st == FM_OK) st = map_file(f, fd, total, err);
    close(fd);
    if (st != FM_OK) {
        fm_st_close(f);
        return st;
    }
    *out = f;
    return FM_OK;
}

fm_status fm_st_open_buffer(const void *buf, uint64_t len, const char *label, fm_st_file **out,
                            fm_error *err) {
    if (!out) return fm_error_set(err, FM_ERR_INVALID_ARG, "fm_st_open_buffer: out is NULL");
    *out = NULL;
    if (!label) label = "<buffer>";
    if (!buf && len) return fm_error_set(err, FM_ERR_INVALID_ARG, "%s: NULL buffer", label);
    uint64_t n = 0;
    fm_st_file *f = NULL;
    fm_status st = check_prefix(buf, len, label, &n, err);
    if (st == FM_OK) st = new_file(label, n, &f, err);
    if (st == FM_OK) {
        memcpy(f->header, (const uint8_t *)buf + 8, (size_t)n);
        st = validate(f, len, err);
    }
    /* The caller's buffer backs the views: no unmap, valid while the caller keeps it. */
    if (st == FM_OK)
        st = fm_storage_wrap_mapping((void *)(uintptr_t)buf, len, NULL, NULL, &f->storage, err);
    if (st != FM_OK) {
        fm_st_close(f);
        return st;
    }
    f->data = (uint8_t *)(uintptr_t)buf + 8 + n;
    *out = f;
    return FM_OK;
}

void fm_st_close(fm_st_file *f) {
    if (!f) return;
    fm_storage_release(f->storage); /* the mapping lives on while views hold it */
    fm_st_header_free(&f->h);
    fm_free(f->by_name);
    fm_free(f->header);
    fm_free(f->path);
    fm_free(f);
}

/* ---- accessors ------------------------------------------------------------------------------ */

const char *fm_st_path(const fm_st_file *f) {
    return f ? f->path : NULL;
}
size_t fm_st_count(const fm_st_file *f) {
    return f ? f->h.n_entries : 0;
}
uint64_t fm_st_header_len(const fm_st_file *f) {
    return f ? f->header_len : 0;
}
bool fm_st_has_metadata(const fm_st_file *f) {
    return f && f->h.has_metadata;
}
size_t fm_st_metadata_count(const fm_st_file *f) {
    return f ? f->h.n_meta : 0;
}

const fm_st_entry *fm_st_entry_at(const fm_st_file *f, size_t i) {
    return f && i < f->h.n_entries ? &f->h.entries[i] : NULL;
}

const fm_st_kv *fm_st_metadata_at(const fm_st_file *f, size_t i) {
    return f && i < f->h.n_meta ? &f->h.meta[i] : NULL;
}

long fm_st_find(const fm_st_file *f, const char *name) {
    if (!f || !name) return -1;
    size_t len = strlen(name), lo = 0, hi = f->h.n_entries;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = cmp_names(&f->h.entries[f->by_name[mid]], name, len);
        if (c == 0) return (long)f->by_name[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return -1;
}

fm_status fm_st_tensor(const fm_st_file *f, size_t i, fm_tensor *out, fm_error *err) {
    if (!out) return fm_error_set(err, FM_ERR_INVALID_ARG, "fm_st_tensor: out is NULL");
    memset(out, 0, sizeof *out);
    if (!f || i >= f->h.n_entries)
        return fm_error_set(err, FM_ERR_INVALID_ARG,
                            "%s: tensor index %zu out of range (%zu tensors)",
                            f ? f->path : "(null)", i, f ? f->h.n_entries : (size_t)0);
    const fm_st_entry *e = &f->h.entries[i];
    uint8_t *p = f->data_len ? f->data + e->begin : fm_storage_data(f->storage);
    fm_status st = fm_tensor_view(out, f->storage, p, e->dtype, &e->shape, err);
    if (st != FM_OK) {
        char q[FM_ST_QUOTE_MAX];
        fm_error_prefix(err, "%s: tensor '%s'", f->path,
                        fm_st_quote_name(q, sizeof q, e->name, e->name_len));
    }
    return st;
}
