/* Fuzz harness: the safetensors header parser and validator (fm_st_open_buffer) on raw file
 * bytes, every accessor on what it accepts, and a write/re-read round trip as an oracle. */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fusemap/io.h"
#include "fuzz_common.h"

/* Reads every accepted entry through the public accessors; views are checked byte by byte. */
static void sth_walk(const fm_st_file *f) {
    uint32_t h = (uint32_t)fm_st_header_len(f);
    for (size_t i = 0; i < fm_st_count(f); i++) {
        const fm_st_entry *e = fm_st_entry_at(f, i);
        if (!e || e->end < e->begin) fmz_fail("st_header", "entry missing or end < begin");
        if (strlen(e->name) == e->name_len && fm_st_find(f, e->name) < 0)
            fmz_fail("st_header", "fm_st_find misses an accepted name");
        fm_tensor t;
        if (fm_st_tensor(f, i, &t, NULL) == FM_OK) {
            if (t.nbytes != e->end - e->begin)
                fmz_fail("st_header", "view size differs from offsets");
            h ^= fmz_touch(t.data, (size_t)t.nbytes);
            fm_tensor_free(&t);
        }
    }
    for (size_t i = 0; i < fm_st_metadata_count(f); i++) {
        const fm_st_kv *kv = fm_st_metadata_at(f, i);
        h ^= fmz_touch(kv->key, strlen(kv->key)) ^ fmz_touch(kv->value, strlen(kv->value));
    }
    fmz_sink(h ^ (uint32_t)fm_st_has_metadata(f));
}

/* Bytes written to an anonymous memory file; malloc'd copy in *out. 0 on success. */
static int sth_write_mem(const fm_st_item *items, size_t n, const fm_st_write_options *o,
                         uint8_t **out, size_t *len) {
    int fd = memfd_create("fuzz-st", MFD_CLOEXEC);
    if (fd < 0) return -1;
    int rc = -1;
    *out = NULL;
    if (fm_st_write_fd(fd, "memfd", items, n, o, NULL) == FM_OK) {
        off_t end = lseek(fd, 0, SEEK_END);
        uint8_t *b = end >= 0 ? malloc((size_t)end + 1) : NULL;
        if (b && pread(fd, b, (size_t)end, 0) == end)
            *out = b, *len = (size_t)end, rc = 0;
        else
            free(b);
    }
    close(fd);
    return rc;
}

/* The re-read file must hold the same tensors (names, dtypes, shapes, bytes) and metadata. */
static void sth_compare(const fm_st_file *a, const fm_st_file *b) {
    if (fm_st_count(a) != fm_st_count(b)) fmz_fail("st_header round trip", "tensor count differs");
    if (fm_st_metadata_count(a) != fm_st_metadata_count(b))
        fmz_fail("st_header round trip", "metadata count");
    for (size_t i = 0; i < fm_st_count(a); i++) {
        const fm_st_entry *x = fm_st_entry_at(a, i);
        long j = fm_st_find(b, x->name);
        if (j < 0) fmz_fail("st_header round trip", "tensor lost");
        const fm_st_entry *y = fm_st_entry_at(b, (size_t)j);
        if (x->dtype != y->dtype || !fm_shape_equal(&x->shape, &y->shape) ||
            x->end - x->begin != y->end - y->begin)
            fmz_fail("st_header round trip", "dtype, shape or size changed");
    }
}

static void sth_round_trip(const fm_st_file *f) {
    size_t n = fm_st_count(f), nm = fm_st_metadata_count(f);
    fm_tensor *ts = calloc(n + 1, sizeof *ts);
    fm_st_item *items = calloc(n + 1, sizeof *items);
    fm_st_kv *kv = calloc(nm + 1, sizeof *kv);
    bool ok = ts && items && kv;
    for (size_t i = 0; ok && i < n; i++) {
        const fm_st_entry *e = fm_st_entry_at(f, i);
        /* names with an escaped NUL cannot be passed to the writer as C strings */
        ok = strlen(e->name) == e->name_len && fm_st_tensor(f, i, &ts[i], NULL) == FM_OK;
        items[i] = (fm_st_item){e->name, &ts[i]};
    }
    for (size_t i = 0; ok && i < nm; i++)
        kv[i] = *fm_st_metadata_at(f, i);
    fm_st_write_options o;
    fm_st_write_options_init(&o);
    o.metadata = kv, o.n_metadata = nm, o.with_metadata = fm_st_has_metadata(f);
    uint8_t *buf = NULL;
    size_t len = 0;
    if (ok && sth_write_mem(items, n, &o, &buf, &len) == 0) {
        fm_st_file *g = NULL;
        fm_error err;
        if (fm_st_open_buffer(buf, len, "rewritten", &g, &err) != FM_OK)
            fmz_fail("st_header round trip: the reader refuses what the writer wrote", err.msg);
        sth_compare(f, g);
        fm_st_close(g);
    }
    free(buf);
    for (size_t i = 0; ts && i < n; i++)
        fm_tensor_free(&ts[i]);
    free(ts), free(items), free(kv);
}

int fm_fuzz_st_header(const uint8_t *data, size_t size);
int fm_fuzz_st_header(const uint8_t *data, size_t size) {
    fm_st_file *f = NULL;
    fm_error err;
    fm_status st = fm_st_open_buffer(data, size, "fuzz.safetensors", &f, &err);
    fmz_note("st_open_buffer (%zu bytes): %s %s", size, fm_status_name(st), st ? err.msg : "");
    fmz_verdict(st == FM_OK);
    if (st != FM_OK) {
        if (f) fmz_fail("st_header", "output set on failure");
        return 0;
    }
    sth_walk(f);
    sth_round_trip(f);
    fm_st_close(f);
    return 0;
}

FM_FUZZ_TARGET(fm_fuzz_st_header)
