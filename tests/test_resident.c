/* Resident memory of mapped checkpoints: fm_tensor_drop_pages releases a file mapping's pages
 * (the data reads back unchanged) and never touches a caller's buffer; the loading engine drops
 * the mapped sources it copied (a cast, a concatenation of parts that are not back to back) and
 * keeps those its outputs view. Measured page by page in /proc/self/pagemap over the tensors'
 * own bytes, so neither heap reuse nor fault-around of the neighbours blurs the figures. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/testing.h"
#include "fusemap/io.h"
#include "fusemap/loading.h"
#include "support/check.h"
#include "support/eng_fixtures.h"
#include "support/st_fixtures.h"

static char *tmpdir;

/* Bytes of the whole pages in [p, p + n) present in this process's page tables (bit 63 of
 * /proc/self/pagemap); -1 when pagemap cannot be read. */
static long long resident_in(const void *p, size_t n) {
    FILE *f = fopen("/proc/self/pagemap", "rb");
    if (!f) return -1;
    uintptr_t pg = (uintptr_t)sysconf(_SC_PAGESIZE), lo = ((uintptr_t)p + pg - 1) / pg,
              hi = ((uintptr_t)p + n) / pg;
    long long count = 0;
    uint64_t e;
    for (uintptr_t i = lo; i < hi && count >= 0; i++)
        if (fseek(f, (long)(i * 8), SEEK_SET) != 0 || fread(&e, 8, 1, f) != 1)
            count = -1;
        else
            count += (long long)(e >> 63);
    fclose(f);
    return count < 0 ? -1 : count * (long long)pg;
}

static volatile unsigned long sink;

/* Reads every 64th byte of t (faults each page of a mapping in). */
static void touch(const fm_tensor *t) {
    unsigned long s = 0;
    for (uint64_t i = 0; i < t->nbytes; i += 64)
        s += ((const uint8_t *)t->data)[i];
    sink = s;
}

static const int64_t kRows = 1024, kCols = 4096; /* bf16: 8 MiB per part */
static const long long kPart = 1024LL * 4096 * 2;

/* TMP/parts.safetensors with bf16 "p.0", "p.1", "p.2" of random bytes, back to back in that
 * order (the writer sorts by name within a dtype). *want: the three parts' bytes, in order. */
static char *write_parts(uint8_t **want) {
    uint64_t state = 0x5eed;
    fm_tensor t[3];
    fm_st_item it[3];
    const char *names[3] = {"p.0", "p.1", "p.2"};
    int64_t dims[2] = {kRows, kCols};
    *want = malloc(3 * (size_t)kPart);
    for (int i = 0; i < 3; i++) {
        t[i] = eng_tensor(FM_DTYPE_BF16, 2, dims, &state);
        memcpy(*want + (size_t)i * kPart, t[i].data, (size_t)kPart);
        it[i] = (fm_st_item){names[i], &t[i]};
    }
    char *p = stfx_join(tmpdir, "parts.safetensors");
    fm_error e;
    CHECK_OK(fm_st_write_file(p, it, 3, NULL, &e), &e);
    for (int i = 0; i < 3; i++)
        fm_tensor_free(&t[i]);
    return p;
}

/* Where f's three parts begin (its first tensor's data; the parts are back to back). */
static const void *parts_at(fm_st_file *f) {
    fm_tensor t;
    fm_error e;
    CHECK_OK(fm_st_tensor(f, 0, &t, &e), &e);
    const void *a = t.data;
    fm_tensor_free(&t); /* f keeps the mapping */
    return a;
}

/* The parts file, written and opened; parts_close closes and frees it (the file stays). */
typedef struct parts {
    char *path;
    uint8_t *want; /* the three parts' bytes, in order */
    fm_st_file *f;
    const void *at; /* parts_at(f) */
} parts;

static parts parts_open(void) {
    parts x = {0};
    fm_error e;
    x.path = write_parts(&x.want);
    CHECK_OK(fm_st_open(x.path, &x.f, &e), &e);
    x.at = x.f ? parts_at(x.f) : NULL;
    return x;
}

static void parts_close(parts *x) {
    fm_st_close(x->f);
    free(x->want);
    free(x->path);
}

static void test_drop_pages_file_and_buffer(void) {
    uint8_t *want = NULL;
    char *p = write_parts(&want);
    fm_error e;
    fm_st_file *f = NULL;
    CHECK_OK(fm_st_open(p, &f, &e), &e);
    fm_tensor t;
    CHECK_OK(fm_st_tensor(f, 1, &t, &e), &e);
    touch(&t);
    long long before = resident_in(t.data, (size_t)kPart);
    fm_tensor_drop_pages(&t);
    long long after = resident_in(t.data, (size_t)kPart);
    if (before >= 0) {
        CHECK_MSG(before >= kPart * 7 / 8, "touching 8 MiB left %lld bytes resident", before);
        CHECK_MSG(after < kPart / 8, "after dropping, %lld of %lld bytes still resident", after,
                  before);
    }
    CHECK_MSG(memcmp(t.data, want + kPart, (size_t)kPart) == 0,
              "the dropped tensor reads back changed");
    fm_tensor_free(&t);
    fm_st_close(f);

    /* a caller's buffer wrapped as a mapping is not file-backed: nothing may be dropped */
    FILE *fp = fopen(p, "rb");
    CHECK(fp != NULL);
    fseek(fp, 0, SEEK_END);
    long len = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    uint8_t *buf = malloc((size_t)len);
    CHECK(fread(buf, 1, (size_t)len, fp) == (size_t)len);
    fclose(fp);
    CHECK_OK(fm_st_open_buffer(buf, (uint64_t)len, "buffer", &f, &e), &e);
    CHECK_OK(fm_st_tensor(f, 2, &t, &e), &e);
    fm_tensor_drop_pages(&t);
    CHECK_MSG(memcmp(t.data, want + 2 * kPart, (size_t)kPart) == 0,
              "a buffer-backed tensor changed after fm_tensor_drop_pages");
    fm_tensor_free(&t);
    fm_st_close(f);
    free(buf);
    free(want);
    free(p);
}

/* fm_tensor_source over one safetensors file. */
static const char *st_name(void *ctx, size_t i) {
    return fm_st_entry_at(ctx, i)->name;
}
static fm_status st_get(void *ctx, size_t i, fm_tensor *out, fm_error *err) {
    return fm_st_tensor(ctx, i, out, err);
}

/* Loads "p.<order[0..2]>" concatenated along rows into one bf16 parameter. */
static void load_concat(fm_st_file *f, const int *order, fm_tensor *out) {
    char s0[8], s1[8], s2[8];
    snprintf(s0, sizeof s0, "p.%d", order[0]);
    snprintf(s1, sizeof s1, "p.%d", order[1]);
    snprintf(s2, sizeof s2, "p.%d", order[2]);
    const char *src[3] = {s0, s1, s2}, *dst[1] = {"w"};
    fm_op_desc cat = {.kind = FM_OP_CONCATENATE, .dim = 0};
    fm_transform_list tl = {0};
    fm_transform *x = NULL;
    fm_error e;
    CHECK_OK(fm_transform_converter_new(src, 3, dst, 1, &cat, 1, &x, &e), &e);
    CHECK_OK(fm_transform_list_append(&tl, x, &e), &e);
    fm_param_spec ps = {"w", FM_DTYPE_BF16, {2, {3 * kRows, kCols}}};
    fm_tensor_source source = {fm_st_count(f), st_name, NULL, st_get, f};
    CHECK_OK(fm_weights_load(&tl, &source, &ps, 1, NULL, out, NULL, NULL, &e), &e);
    fm_transform_list_free(&tl);
}

static void test_load_drops_copied_sources(void) {
    parts x = parts_open();
    fm_st_file *f = x.f;
    fm_error e;
    /* in file order: a view of the file, whose pages the parameter reads: with the parts faulted
     * in first, the load must leave them resident */
    for (size_t i = 0; i < 3; i++) {
        fm_tensor part;
        CHECK_OK(fm_st_tensor(f, i, &part, &e), &e);
        touch(&part);
        fm_tensor_free(&part);
    }
    fm_tensor w = {0};
    load_concat(f, (const int[]){0, 1, 2}, &w);
    CHECK_MSG(fm_storage_kind_of(w.storage) == FM_STORAGE_MAPPED, "expected a view of the file");
    long long kept = resident_in(x.at, 3 * (size_t)kPart);
    if (kept >= 0)
        CHECK_MSG(kept >= 3 * kPart * 7 / 8, "loading a view left %lld of its %lld bytes resident",
                  kept, 3 * kPart);
    CHECK_MSG(memcmp(w.data, x.want, 3 * (size_t)kPart) == 0, "the viewed concatenation differs");
    fm_tensor_free(&w);
    parts_close(&x);

    /* reversed: a copy, after which the parts' pages leave the process */
    x = parts_open();
    f = x.f;
    load_concat(f, (const int[]){2, 1, 0}, &w);
    CHECK_MSG(fm_storage_kind_of(w.storage) == FM_STORAGE_OWNED, "expected an owned copy");
    long long left = resident_in(x.at, 3 * (size_t)kPart);
    if (left >= 0)
        CHECK_MSG(left < kPart / 8,
                  "the load copied the parts, yet %lld bytes of them stay resident", left);
    for (int i = 0; i < 3; i++)
        CHECK_MSG(memcmp((uint8_t *)w.data + (size_t)i * kPart, x.want + (size_t)(2 - i) * kPart,
                         (size_t)kPart) == 0,
                  "part %d of the copied concatenation differs", i);
    fm_tensor_free(&w);
    parts_close(&x);
}

/* A cast on load (bf16 file, f32 parameter): the bf16 pages leave once converted. */
static void test_cast_drops_source(void) {
    parts pf = parts_open();
    fm_error e;
    fm_param_spec ps = {"p.1", FM_DTYPE_F32, {2, {kRows, kCols}}};
    fm_tensor_source source = {fm_st_count(pf.f), st_name, NULL, st_get, pf.f};
    fm_weights_load_options o;
    fm_weights_load_options_init(&o);
    o.cast = FM_DTYPE_F32;
    fm_tensor w = {0};
    CHECK_OK(fm_weights_load(NULL, &source, &ps, 1, &o, &w, NULL, NULL, &e), &e);
    long long left = resident_in((const uint8_t *)pf.at + kPart, (size_t)kPart);
    if (left >= 0)
        CHECK_MSG(left < kPart / 8,
                  "after the f32 cast, %lld bytes of the bf16 source stay resident", left);
    const uint16_t *b = (const uint16_t *)(pf.want + kPart);
    const float *x = w.data;
    size_t bad = 0;
    for (size_t i = 0; i < (size_t)(kRows * kCols); i++) {
        uint32_t u = (uint32_t)b[i] << 16, v;
        memcpy(&v, &x[i], 4);
        bad += u != v && !(x[i] != x[i]); /* NaN payloads may be quieted */
    }
    CHECK_MSG(bad == 0, "%zu elements of the f32 cast differ from the bf16 bytes", bad);
    fm_tensor_free(&w);
    parts_close(&pf);
}

int main(void) {
    tmpdir = stfx_mkdtemp();
    if (!tmpdir) {
        fprintf(stderr, "cannot create a temporary directory\n");
        return 1;
    }
    if (resident_in(&tmpdir, 1) < 0)
        fprintf(stderr, "# /proc/self/pagemap unreadable: resident-size checks skipped\n");
    RUN(test_drop_pages_file_and_buffer);
    RUN(test_load_drops_copied_sources);
    RUN(test_cast_drops_source);
    stfx_rmrf(tmpdir);
    free(tmpdir);
    TEST_END();
}
