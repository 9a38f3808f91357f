/* Raw safetensors fixtures and temp-dir helpers for the reader tests (see st_fixtures.h). */
#include "st_fixtures.h"

#include "file_util.h"

#include <sys/stat.h>

#include "fusemap/tensor.h"

#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int stfx_bytes_n(uint64_t n_field, const void *header, size_t hlen, const void *data, size_t dlen,
                 uint8_t **out, size_t *out_len) {
    size_t len = 8 + hlen + dlen;
    uint8_t *b = malloc(len ? len : 1);
    if (!b) return -1;
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)(n_field >> (8 * i));
    if (hlen) memcpy(b + 8, header, hlen);
    if (dlen) {
        if (data)
            memcpy(b + 8 + hlen, data, dlen);
        else
            memset(b + 8 + hlen, 0, dlen);
    }
    *out = b;
    *out_len = len;
    return 0;
}

int stfx_bytes_str(const char *header, const void *data, size_t dlen, uint8_t **out,
                   size_t *out_len) {
    size_t hlen = strlen(header);
    return stfx_bytes_n(hlen, header, hlen, data, dlen, out, out_len);
}

int stfx_write_file(const char *path, const void *bytes, size_t len) {
    return fm_test_write_file(path, bytes, len);
}

int stfx_write_st(const char *path, const char *header, const void *data, size_t dlen) {
    uint8_t *b;
    size_t len;
    if (stfx_bytes_str(header, data, dlen, &b, &len)) return -1;
    int r = stfx_write_file(path, b, len);
    free(b);
    return r;
}

char *stfx_join(const char *dir, const char *name) {
    return fm_test_join(dir, name);
}

int stfx_write_text(const char *dir, const char *name, const char *text) {
    char *p = stfx_join(dir, name);
    if (!p) return -1;
    int r = stfx_write_file(p, text, strlen(text));
    free(p);
    return r;
}

char *stfx_mkdtemp(void) {
    const char *base = getenv("FM_TEST_TMP");
    if (!base || !*base) base = "/tmp";
    char *p = stfx_join(base, "fm-st-XXXXXX");
    if (p && !mkdtemp(p)) {
        free(p);
        return NULL;
    }
    return p;
}

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

int stfx_rmrf(const char *path) {
    return nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS) == 0 ? 0 : -1;
}

void stfx_random_bytes(void *buf, size_t n, uint64_t seed) {
    uint8_t *b = buf;
    uint64_t x = seed * 0x9e3779b97f4a7c15ull + 0x632be59bd9b4e019ull;
    for (size_t i = 0; i < n; i++) {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        b[i] = (uint8_t)((x * 0x2545f4914f6cdd1dull) >> 56);
    }
}

uint64_t stfx_nbytes(const stfx_tensor *t) {
    uint64_t n = 1;
    for (int i = 0; i < t->ndim; i++)
        n *= (uint64_t)t->dims[i];
    fm_dtype dt = fm_dtype_from_name(t->dtype, strlen(t->dtype));
    return dt == FM_DTYPE_INVALID ? n : n * fm_dtype_bits(dt) / 8;
}

int stfx_build(const stfx_tensor *ts, size_t n, const char *meta, uint64_t seed, uint8_t **out,
               size_t *out_len) {
    size_t cap = 64 + (meta ? strlen(meta) : 0), hl = 0;
    uint64_t dlen = 0;
    for (size_t i = 0; i < n; i++)
        cap += strlen(ts[i].name) + strlen(ts[i].dtype) + 96 + 22 * 8;
    char *h = malloc(cap);
    if (!h) return -1;
    hl += (size_t)snprintf(h, cap, "{");
    if (meta) hl += (size_t)snprintf(h + hl, cap - hl, "\"__metadata__\":%s", meta);
    for (size_t i = 0; i < n; i++) {
        uint64_t nb = stfx_nbytes(&ts[i]);
        hl += (size_t)snprintf(h + hl, cap - hl, "%s\"%s\":{\"dtype\":\"%s\",\"shape\":[",
                               (meta || i) ? "," : "", ts[i].name, ts[i].dtype);
        for (int d = 0; d < ts[i].ndim; d++)
            hl += (size_t)snprintf(h + hl, cap - hl, "%s%lld", d ? "," : "",
                                   (long long)ts[i].dims[d]);
        hl += (size_t)snprintf(h + hl, cap - hl, "],\"data_offsets\":[%llu,%llu]}",
                               (unsigned long long)dlen, (unsigned long long)(dlen + nb));
        dlen += nb;
    }
    hl += (size_t)snprintf(h + hl, cap - hl, "}");
    while (hl % 8)
        h[hl++] = ' ';
    int r = stfx_bytes_n(hl, h, hl, NULL, (size_t)dlen, out, out_len);
    free(h);
    if (r) return r;
    uint64_t off = 8 + hl;
    for (size_t i = 0; i < n; i++) {
        uint64_t nb = stfx_nbytes(&ts[i]);
        stfx_random_bytes(*out + off, (size_t)nb, seed + i);
        off += nb;
    }
    return 0;
}

char *stfx_new_dir(const char *root) {
    static int counter;
    char name[32];
    snprintf(name, sizeof name, "d%d", counter++);
    char *p = fm_test_join(root, name);
    if (p && mkdir(p, 0755) != 0) {
        free(p);
        return NULL;
    }
    return p;
}

int stfx_write_built(const char *dir, const char *name, const stfx_tensor *ts, size_t n,
                     uint64_t seed) {
    uint8_t *b;
    size_t len;
    char *p = fm_test_join(dir, name);
    int rc = p ? stfx_build(ts, n, "{\"format\":\"pt\"}", seed, &b, &len) : -1;
    if (rc == 0) rc = fm_test_write_file(p, b, len), free(b);
    free(p);
    return rc;
}
