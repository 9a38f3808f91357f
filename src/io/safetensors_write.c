/* Safetensors writer: the exact bytes of the reference serializer (dtype-rank/name order, compact
 * JSON with serde_json escaping, space padding to 8) after validating every tensor; atomic file
 * write. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "fusemap/io.h"
#include "io/fsutil.h"

/* One tensor in file order. Pointers borrowed from the caller's items for the call. */
typedef struct wr_entry {
    const char *name;
    size_t name_len;
    const fm_tensor *t;
    unsigned rank;
    uint64_t nbytes, begin;
} wr_entry;

/* What a write needs: entries sorted in file order, the header (8-byte prefix included). */
typedef struct wr_plan {
    wr_entry *ents; /* fm_malloc'd */
    size_t n;
    uint8_t *hdr; /* fm_malloc'd */
    uint64_t hdr_len;
} wr_plan;

static void plan_free(wr_plan *p) {
    fm_free(p->ents);
    fm_free(p->hdr);
    memset(p, 0, sizeof *p);
}

void fm_st_write_options_init(fm_st_write_options *o) {
    if (!o) return;
    memset(o, 0, sizeof *o);
}

/* ---- validation --------------------------------------------------------------------------- */

/* Strict UTF-8: no overlong forms, no surrogates, nothing above U+10FFFF. */
static bool utf8_valid(const unsigned char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        if (len == 0 || i + len > n) return false;
        uint32_t cp = len == 1 ? c : len == 2 ? (c & 0x1f) : len == 3 ? (c & 0x0f) : (c & 0x07);
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xc0) != 0x80) return false;
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        static const uint32_t min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
        if (cp < min_cp[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
        i += len;
    }
    return true;
}

/* Byte size of one tensor by the reference's rules, checked against t->nbytes. */
static fm_status tensor_size(const char *name, const fm_tensor *t, uint64_t *out, fm_error *err) {
    if ((unsigned)t->dtype >= FM_DTYPE_COUNT)
        return fm_error_set(err, FM_ERR_UNKNOWN_DTYPE, "tensor '%.200s': invalid dtype %d", name,
                            (int)t->dtype);
    if (t->shape.ndim < 0 || t->shape.ndim > FM_MAX_DIMS)
        return fm_error_set(err, FM_ERR_TENSOR_INVALID_INFO,
                            "tensor '%.200s': rank %d outside 0..%d", name, t->shape.ndim,
                            FM_MAX_DIMS);
    uint64_t numel = 1, bits;
    for (int d = 0; d < t->shape.ndim; d++) {
        if (t->shape.dims[d] < 0)
            return fm_error_set(err, FM_ERR_TENSOR_INVALID_INFO,
                                "tensor '%.200s': negative dimension", name);
        if (fm_mul_u64(numel, (uint64_t)t->shape.dims[d], &numel))
            return fm_error_set(err, FM_ERR_VALIDATION_OVERFLOW,
                                "tensor '%.200s': element count overflows", name);
    }
    if (fm_mul_u64(numel, fm_dtype_bits(t->dtype), &bits))
        return fm_error_set(err, FM_ERR_VALIDATION_OVERFLOW, "tensor '%.200s': bit count overflows",
                            name);
    if (bits % 8)
        return fm_error_set(err, FM_ERR_MISALIGNED_SLICE,
                            "tensor '%.200s': %llu elements of %s are not whole bytes", name,
                            (unsigned long long)numel, fm_dtype_name(t->dtype));
    if (bits / 8 != t->nbytes)
        return fm_error_set(err, FM_ERR_TENSOR_INVALID_INFO,
                            "tensor '%.200s': holds %llu bytes, shape and %s need %llu", name,
                            (unsigned long long)t->nbytes, fm_dtype_name(t->dtype),
                            (unsigned long long)(bits / 8));
    if (t->nbytes > 0 && !t->data)
        return fm_error_set(err, FM_ERR_INVALID_ARG, "tensor '%.200s': no data (meta tensor)",
                            name);
    *out = bits / 8;
    return FM_OK;
}

static fm_status check_item(const fm_st_item *it, size_t i, wr_entry *e, fm_error *err) {
    if (!it->name) return fm_error_set(err, FM_ERR_INVALID_ARG, "tensor #%zu: no name", i);
    if (!it->tensor)
        return fm_error_set(err, FM_ERR_INVALID_ARG, "tensor '%.200s': no tensor", it->name);
    size_t len = strlen(it->name);
    if (!utf8_valid((const unsigned char *)it->name, len))
        return fm_error_set(err, FM_ERR_INVALID_ARG, "tensor #%zu: name is not valid UTF-8", i);
    if (strcmp(it->name, "__metadata__") == 0)
        return fm_error_set(err, FM_ERR_INVALID_ARG,
                            "tensor #%zu: the name '__metadata__' is reserved", i);
    e->name = it->name;
    e->name_len = len;
    e->t = it->tensor;
    e->rank = fm_dtype_rank(it->tensor->dtype);
    return tensor_size(it->name, it->tensor, &e->nbytes, err);
}

static int cmp_bytes(const char *a, size_t al, const char *b, size_t bl) {
    int c = memcmp(a, b, al < bl ? al : bl);
    if (c) return c;
    return al < bl ? -1 : al > bl ? 1 : 0;
}

static int cmp_by_name(const void *pa, const void *pb) {
    const wr_entry *a = pa, *b = pb;
    return cmp_bytes(a->name, a->name_len, b->name, b->name_len);
}

/* File order: dtype rank descending, then name bytes ascending. */
static int cmp_file_order(const void *pa, const void *pb) {
    const wr_entry *a = pa, *b = pb;
    if (a->rank != b->rank) return a->rank > b->rank ? -1 : 1;
    return cmp_bytes(a->name, a->name_len, b->name, b->name_len);
}

static int cmp_cstr_ptr(const void *pa, const void *pb) {
    return strcmp(*(const char *const *)pa, *(const char *const *)pb);
}

/* Keys and values present and UTF-8, keys unique. */
static fm_status check_metadata(const fm_st_write_options *o, fm_error *err) {
    if (o->n_metadata == 0) return FM_OK;
    if (!o->metadata)
        return fm_error_set(err, FM_ERR_INVALID_ARG, "metadata: %zu entries but no array",
                            o->n_metadata);
    const char **keys = fm_malloc(o->n_metadata * sizeof *keys);
    if (!keys) return fm_error_set(err, FM_ERR_NOMEM, "metadata: out of memory");
    fm_status st = FM_OK;
    for (size_t i = 0; i < o->n_metadata && st == FM_OK; i++) {
        const fm_st_kv *kv = &o->metadata[i];
        if (!kv->key || !kv->value)
            st = fm_error_set(err, FM_ERR_INVALID_ARG, "metadata entry #%zu: missing key or value",
                              i);
        else if (!utf8_valid((const unsigned char *)kv->key, strlen(kv->key)) ||
                 !utf8_valid((const unsigned char *)kv->value, strlen(kv->value)))
            st = fm_error_set(err, FM_ERR_INVALID_ARG, "metadata entry #%zu: not valid UTF-8", i);
        keys[i] = kv->key;
    }
    if (st == FM_OK) {
        qsort(keys, o->n_metadata, sizeof *keys, cmp_cstr_ptr);
        for (size_t i = 1; i < o->n_metadata && st == FM_OK; i++)
            if (strcmp(keys[i - 1], keys[i]) == 0)
                st = fm_error_set(err, FM_ERR_INVALID_ARG, "metadata: duplicate key '%.200s'",
                                  keys[i]);
    }
    fm_free(keys);
    return st;
}

/* Validates every item, rejects duplicate names, sorts into file order and assigns offsets. */
static fm_status build_entries(const fm_st_item *items, size_t n, wr_plan *p, fm_error *err) {
    if (n > 0 && !items)
        return fm_error_set(err, FM_ERR_INVALID_ARG, "%zu tensors but no item array", n);
    p->ents = fm_calloc(n ? n : 1, sizeof *p->ents);
    if (!p->ents) return fm_error_set(err, FM_ERR_NOMEM, "out of memory for %zu tensor entries", n);
    p->n = n;
    for (size_t i = 0; i < n; i++) {
        fm_status st = check_item(&items[i], i, &p->ents[i], err);
        if (st != FM_OK) return st;
    }
    qsort(p->ents, n, sizeof *p->ents, cmp_by_name);
    for (size_t i = 1; i < n; i++)
        if (cmp_by_name(&p->ents[i - 1], &p->ents[i]) == 0)
            return fm_error_set(err, FM_ERR_DUPLICATE_TENSOR, "tensor '%.200s' given twice",
                                p->ents[i].name);
    qsort(p->ents, n, sizeof *p->ents, cmp_file_order);
    uint64_t off = 0;
    for (size_t i = 0; i < n; i++) {
        p->ents[i].begin = off;
        if (fm_add_u64(off, p->ents[i].nbytes, &off))
            return fm_error_set(err, FM_ERR_VALIDATION_OVERFLOW,
                                "total data size overflows at tensor '%.200s'", p->ents[i].name);
    }
    return FM_OK;
}

/* ---- JSON emission ------------------------------------------------------------------------ */

/* Appends to buf, or only counts when buf is NULL (the sizing pass). */
typedef struct emitter {
    uint8_t *buf;
    uint64_t len;
} emitter;

static void put(emitter *e, const void *s, size_t n) {
    if (e->buf && n) memcpy(e->buf + e->len, s, n);
    e->len += n;
}

static void put_lit(emitter *e, const char *s) {
    put(e, s, strlen(s));
}

static void put_u64(emitter *e, uint64_t v) {
    char b[24];
    int n = snprintf(b, sizeof b, "%llu", (unsigned long long)v);
    put(e, b, (size_t)n);
}

/* serde_json string escaping: \" \\ \b \f \n \r \t, other C0 bytes as \u00xx (lowercase hex),
 * everything else (DEL, '/', non-ASCII) raw. */
static void put_json_string(emitter *e, const char *s, size_t n) {
    static const char hex[] = "0123456789abcdef";
    put(e, "\"", 1);
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        const char *esc = NULL;
        char u[7];
        switch (c) {
        case '"':
            esc = "\\\"";
            break;
        case '\\':
            esc = "\\\\";
            break;
        case 0x08:
            esc = "\\b";
            break;
        case 0x0c:
            esc = "\\f";
            break;
        case 0x0a:
            esc = "\\n";
            break;
        case 0x0d:
            esc = "\\r";
            break;
        case 0x09:
            esc = "\\t";
            break;
        default:
            if (c < 0x20) {
                memcpy(u, "\\u00", 4);
                u[4] = hex[c >> 4];
                u[5] = hex[c & 15];
                u[6] = '\0';
                esc = u;
            }
        }
        if (!esc) continue;
        put(e, s + run, i - run);
        put_lit(e, esc);
        run = i + 1;
    }
    put(e, s + run, n - run);
    put(e, "\"", 1);
}

static void emit_metadata(emitter *e, const fm_st_write_options *o) {
    put_lit(e, "\"__metadata__\":{");
    for (size_t i = 0; i < o->n_metadata; i++) {
        if (i) put(e, ",", 1);
        put_json_string(e, o->metadata[i].key, strlen(o->metadata[i].key));
        put(e, ":", 1);
        put_json_string(e, o->metadata[i].value, strlen(o->metadata[i].value));
    }
    put(e, "}", 1);
}

static void emit_entry(emitter *e, const wr_entry *w) {
    put_json_string(e, w->name, w->name_len);
    put_lit(e, ":{\"dtype\":\"");
    put_lit(e, fm_dtype_name(w->t->dtype));
    put_lit(e, "\",\"shape\":[");
    for (int d = 0; d < w->t->shape.ndim; d++) {
        if (d) put(e, ",", 1);
        put_u64(e, (uint64_t)w->t->shape.dims[d]);
    }
    put_lit(e, "],\"data_offsets\":[");
    put_u64(e, w->begin);
    put(e, ",", 1);
    put_u64(e, w->begin + w->nbytes);
    put_lit(e, "]}");
}

/* The JSON object. Metadata is written when given (even empty); with zero tensors an empty
 * metadata map gives {"__metadata__":{}} — the reference emits an invalid header there. */
static void emit_body(emitter *e, const wr_plan *p, const fm_st_write_options *o) {
    bool meta = o->with_metadata || o->n_metadata > 0;
    put(e, "{", 1);
    if (meta) {
        emit_metadata(e, o);
        if (p->n) put(e, ",", 1);
    }
    for (size_t i = 0; i < p->n; i++) {
        if (i) put(e, ",", 1);
        emit_entry(e, &p->ents[i]);
    }
    put(e, "}", 1);
}

/* Sizes the header, enforces the 1e8 limit, then writes prefix + JSON + padding. */
static fm_status build_header(wr_plan *p, const fm_st_write_options *o, fm_error *err) {
    emitter count = {NULL, 0};
    emit_body(&count, p, o);
    uint64_t json = count.len, padded = (json + 7) & ~(uint64_t)7;
    if (padded > FM_ST_MAX_HEADER_BYTES)
        return fm_error_set(err, FM_ERR_HEADER_TOO_LARGE,
                            "header of %llu bytes exceeds the limit of %llu",
                            (unsigned long long)padded, (unsigned long long)FM_ST_MAX_HEADER_BYTES);
    p->hdr = fm_malloc((size_t)(8 + padded));
    if (!p->hdr)
        return fm_error_set(err, FM_ERR_NOMEM, "out of memory for a %llu-byte header",
                            (unsigned long long)padded);
    for (int b = 0; b < 8; b++)
        p->hdr[b] = (uint8_t)(padded >> (8 * b));
    emitter e = {p->hdr + 8, 0};
    emit_body(&e, p, o);
    memset(p->hdr + 8 + json, ' ', (size_t)(padded - json));
    p->hdr_len = 8 + padded;
    return FM_OK;
}

static fm_status plan_build(const fm_st_item *items, size_t n, const fm_st_write_options *o,
                            wr_plan *p, fm_error *err) {
    fm_st_write_options defaults;
    fm_st_write_options_init(&defaults);
    if (!o) o = &defaults;
    memset(p, 0, sizeof *p);
    fm_status st = check_metadata(o, err);
    if (st == FM_OK) st = build_entries(items, n, p, err);
    if (st == FM_OK) st = build_header(p, o, err);
    if (st != FM_OK) plan_free(p);
    return st;
}

fm_status fm_st_serialize_header(const fm_st_item *items, size_t n, const fm_st_write_options *o,
                                 uint8_t **out, uint64_t *out_len, fm_error *err) {
    if (!out || !out_len)
        return fm_error_set(err, FM_ERR_INVALID_ARG, "serialize header: no output");
    *out = NULL;
    *out_len = 0;
    wr_plan p;
    fm_status st = plan_build(items, n, o, &p, err);
    if (st != FM_OK) return st;
    *out = p.hdr;
    *out_len = p.hdr_len;
    p.hdr = NULL;
    plan_free(&p);
    return FM_OK;
}

/* ---- writing ----------------------------------------------------------------------------- */

/* Header and every tensor straight from its memory (views into mappings: no copy). */
static fm_status plan_write(int fd, const char *label, const wr_plan *p, fm_error *err) {
    struct iovec *iov = fm_malloc((p->n + 1) * sizeof *iov);
    if (!iov) return fm_error_set(err, FM_ERR_NOMEM, "write '%s': out of memory", label);
    iov[0].iov_base = p->hdr;
    iov[0].iov_len = (size_t)p->hdr_len;
    for (size_t i = 0; i < p->n; i++) {
        iov[i + 1].iov_base = p->ents[i].t->data;
        iov[i + 1].iov_len = (size_t)p->ents[i].nbytes;
    }
    fm_status st = fm_fs_writev_all(fd, iov, p->n + 1, label, err);
    fm_free(iov);
    return st;
}

fm_status fm_st_write_fd(int fd, const char *label, const fm_st_item *items, size_t n,
                         const fm_st_write_options *o, fm_error *err) {
    if (!label) label = "(fd)";
    wr_plan p;
    fm_status st = plan_build(items, n, o, &p, err);
    if (st != FM_OK) {
        fm_error_prefix(err, "write '%s'", label);
        return st;
    }
    st = plan_write(fd, label, &p, err);
    plan_free(&p);
    return st;
}

/* Splits PATH into a directory ("." when none) and a last component; FM_ERR_INVALID_ARG when the
 * path names no file. *dir: caller frees with fm_free; *base borrowed from path. */
static fm_status split_path(const char *path, char **dir, const char **base, fm_error *err) {
    const char *slash = strrchr(path, '/');
    *base = slash ? slash + 1 : path;
    if (!**base || !strcmp(*base, ".") || !strcmp(*base, ".."))
        return fm_error_set(err, FM_ERR_INVALID_ARG, "'%s' does not name a file", path);
    *dir = slash ? fm_strndup(path, slash == path ? 1 : (size_t)(slash - path)) : fm_strdup(".");
    if (!*dir) return fm_error_set(err, FM_ERR_NOMEM, "'%s': out of memory", path);
    return FM_OK;
}

/* Temp file beside the target, data, fsync, close, rename, fsync of the directory. */
static fm_status write_atomically(const char *path, const char *dir, const char *base,
                                  const wr_plan *p, fm_error *err) {
    char *tmp = NULL;
    int fd = -1;
    fm_status st = fm_fs_create_temp_file(dir, base, &tmp, &fd, err);
    if (st != FM_OK) return st;
    st = plan_write(fd, tmp, p, err);
    if (st == FM_OK) st = fm_fs_fsync(fd, tmp, err);
    fm_status cst = fm_fs_close(fd, tmp, st == FM_OK ? err : NULL);
    if (st == FM_OK) st = cst;
    if (st == FM_OK) st = fm_fs_rename(tmp, path, err);
    if (st != FM_OK) {
        unlink(tmp);
        fm_free(tmp);
        return st;
    }
    fm_free(tmp);
    st = fm_fs_fsync_dir(dir, err);
    if (st != FM_OK) fm_error_prefix(err, "'%s' was replaced but may not be durable", path);
    return st;
}

fm_status fm_st_write_file(const char *path, const fm_st_item *items, size_t n,
                           const fm_st_write_options *o, fm_error *err) {
    if (!path) return fm_error_set(err, FM_ERR_INVALID_ARG, "write safetensors: no path");
    char *dir = NULL;
    const char *base = NULL;
    fm_status st = split_path(path, &dir, &base, err);
    if (st != FM_OK) return st;
    wr_plan p;
    st = plan_build(items, n, o, &p, err);
    if (st != FM_OK) {
        fm_free(dir);
        fm_error_prefix(err, "write '%s'", path);
        return st;
    }
    st = write_atomically(path, dir, base, &p, err);
    plan_free(&p);
    fm_free(dir);
    return st;
}
