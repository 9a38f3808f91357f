/* Load benchmark: generates (once, cached) a sharded bf16 checkpoint with fm_checkpoint_save,
 * then times (a) open+validate, (b) open+validate+touch every byte through the views, and
 * (c) a plain sequential read() of the same files, all on a warm page cache (dropping the
 * cache needs root). Prints one JSON object per line.
 *
 *   load [--size-mb N] [--shard-mb N] [--data-dir DIR] [--reps N]
 *
 * Sizes are decimal MB (10^6 bytes), like the shard sizes transformers writes. Targets:
 * touch_over_read <= 1.2 and open <= 5 ms per GB. Both (b) and (c) fold every 8-byte word into
 * the same checksum, so the ratio compares delivering the bytes, not two different loops;
 * read_copy_s is (c) without the checksum. The madvise lines time (b) with MADV_SEQUENTIAL,
 * MADV_WILLNEED or MADV_POPULATE_READ applied to each whole mapping first. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fusemap/io.h"

#define TENSOR_ROWS 2000
#define TENSOR_COLS 4000 /* 8e6 bf16 elements = 16 MB per tensor */
#define READ_BUF (4u << 20)
#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22 /* Linux 5.14 */
#endif

typedef struct bench_opts {
    uint64_t size_mb, shard_mb;
    const char *data_dir;
    int reps;
} bench_opts;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void die(const char *what, const fm_error *err) {
    fprintf(stderr, "load: %s: %s\n", what, err ? err->msg : "");
    exit(1);
}

/* The checksum both (b) and (c) compute: 8-byte words (unaligned-safe), then the tail. */
static uint64_t checksum(const uint8_t *p, uint64_t n) {
    uint64_t s0 = 0, s1 = 0, i = 0;
    for (; i + 16 <= n; i += 16) {
        uint64_t a, b;
        memcpy(&a, p + i, 8);
        memcpy(&b, p + i + 8, 8);
        s0 += a;
        s1 += b;
    }
    for (; i < n; i++) s0 += p[i];
    return s0 + s1;
}

/* ---- generation ------------------------------------------------------------------------- */

static uint64_t expected_tensors(const bench_opts *o, uint64_t *last_rows) {
    uint64_t total = o->size_mb * 1000000ull, per = (uint64_t)TENSOR_ROWS * TENSOR_COLS * 2;
    uint64_t n = total / per, rest = total % per;
    *last_rows = rest / ((uint64_t)TENSOR_COLS * 2);
    return n + (*last_rows ? 1 : 0);
}

static void fill(uint16_t *p, uint64_t n, uint64_t seed) {
    uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;
    for (uint64_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        p[i] = (uint16_t)(0x3c00 | (x & 0x3ff)); /* finite bf16 values */
    }
}

static void generate(const char *dir, const bench_opts *o) {
    uint64_t last_rows, n = expected_tensors(o, &last_rows);
    fm_tensor *ts = calloc(n, sizeof *ts);
    fm_st_item *items = calloc(n, sizeof *items);
    char (*names)[32] = calloc(n, sizeof *names);
    fm_error err;
    if (!ts || !items || !names) die("out of memory", NULL);
    for (uint64_t i = 0; i < n; i++) {
        int64_t dims[2] = {(i + 1 == n && last_rows) ? (int64_t)last_rows : TENSOR_ROWS, TENSOR_COLS};
        fm_shape s;
        fm_shape_make(&s, 2, dims);
        if (fm_tensor_alloc(&ts[i], FM_DTYPE_BF16, &s, &err) != FM_OK) die("alloc", &err);
        fill(ts[i].data, fm_tensor_numel(&ts[i]), i);
        snprintf(names[i], sizeof names[i], "layers.%04llu.weight", (unsigned long long)i);
        items[i].name = names[i];
        items[i].tensor = &ts[i];
    }
    fm_save_options so;
    fm_save_options_init(&so);
    so.max_shard_size = o->shard_mb * 1000000ull;
    double t0 = now();
    if (fm_checkpoint_save(dir, items, n, NULL, 0, &so, &err) != FM_OK) die("save", &err);
    printf("{\"bench\":\"load_generate\",\"dir\":\"%s\",\"tensors\":%llu,\"save_s\":%.3f}\n", dir,
           (unsigned long long)n, now() - t0);
    for (uint64_t i = 0; i < n; i++) fm_tensor_free(&ts[i]);
    free(ts);
    free(items);
    free(names);
}

/* Reuses DIR when it opens and holds the expected tensors and bytes. */
static void ensure_data(const char *dir, const bench_opts *o) {
    uint64_t last_rows, n = expected_tensors(o, &last_rows);
    fm_checkpoint *c = NULL;
    fm_error err;
    if (fm_checkpoint_open(dir, &c, &err) == FM_OK) {
        uint64_t bytes = 0;
        for (size_t i = 0; i < fm_checkpoint_count(c); i++) bytes += fm_checkpoint_entry_at(c, i)->nbytes;
        bool ok = fm_checkpoint_count(c) == n && bytes == o->size_mb * 1000000ull;
        fm_checkpoint_close(c);
        if (ok) return;
    }
    mkdir(o->data_dir, 0755);
    generate(dir, o);
}

/* ---- measurements ------------------------------------------------------------------------ */

static fm_checkpoint *open_ckpt(const char *dir) {
    fm_checkpoint *c = NULL;
    fm_error err;
    if (fm_checkpoint_open(dir, &c, &err) != FM_OK) die("open", &err);
    return c;
}

/* Applies `advice` to each shard's whole mapping (base and size of the view's storage). */
static void advise(const fm_checkpoint *c, int advice) {
    for (size_t s = 0; s < fm_checkpoint_shard_count(c); s++) {
        const fm_st_file *f = fm_checkpoint_shard(c, s);
        fm_tensor t;
        fm_error err;
        if (fm_st_count(f) == 0 || fm_st_tensor(f, 0, &t, &err) != FM_OK) continue;
        madvise(fm_storage_data(t.storage), fm_storage_size(t.storage), advice);
        fm_tensor_free(&t);
    }
}

/* (a) when touch == 0, (b) otherwise; advice < 0: none. Returns seconds; *sum the checksum. */
static double run_open(const char *dir, int touch, int advice, uint64_t *sum) {
    double t0 = now();
    fm_checkpoint *c = open_ckpt(dir);
    if (advice >= 0) advise(c, advice);
    uint64_t s = 0;
    for (size_t i = 0; touch && i < fm_checkpoint_count(c); i++) {
        fm_tensor t;
        fm_error err;
        if (fm_checkpoint_tensor(c, i, &t, &err) != FM_OK) die("view", &err);
        s += checksum(t.data, t.nbytes);
        fm_tensor_free(&t);
    }
    fm_checkpoint_close(c);
    *sum = s;
    return now() - t0;
}

/* (c): every shard file read sequentially into one buffer; with `sum`, the same checksum. */
static double run_read(const fm_checkpoint *c, int sum, uint64_t *total, uint64_t *out) {
    static uint8_t *buf;
    if (!buf && !(buf = aligned_alloc(4096, READ_BUF))) die("out of memory", NULL);
    char path[4096];
    uint64_t s = 0, bytes = 0;
    double t0 = now();
    for (size_t i = 0; i < fm_checkpoint_shard_count(c); i++) {
        snprintf(path, sizeof path, "%s", fm_st_path(fm_checkpoint_shard(c, i)));
        int fd = open(path, O_RDONLY);
        if (fd < 0) die("open for read()", NULL);
        ssize_t r;
        while ((r = read(fd, buf, READ_BUF)) > 0) {
            if (sum) s += checksum(buf, (uint64_t)r);
            bytes += (uint64_t)r;
        }
        close(fd);
    }
    *total = bytes;
    *out = s;
    return now() - t0;
}

static void parse(int argc, char **argv, bench_opts *o) {
    o->size_mb = 2000;
    o->shard_mb = 500;
    o->data_dir = "build/bench-data";
    o->reps = 3;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) goto usage;
        if (!strcmp(a, "--size-mb")) o->size_mb = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--shard-mb")) o->shard_mb = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--data-dir")) o->data_dir = v;
        else if (!strcmp(a, "--reps")) o->reps = atoi(v);
        else goto usage;
        i++;
    }
    if (o->size_mb && o->shard_mb && o->reps > 0) return;
usage:
    fprintf(stderr, "usage: load [--size-mb N] [--shard-mb N] [--data-dir DIR] [--reps N]\n");
    exit(2);
}

int main(int argc, char **argv) {
    bench_opts o;
    parse(argc, argv, &o);
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/load-%llumb-shard%llumb", o.data_dir, (unsigned long long)o.size_mb,
             (unsigned long long)o.shard_mb);
    ensure_data(dir, &o);
    fm_checkpoint *c = open_ckpt(dir);
    uint64_t file_bytes, data_bytes = 0, s_read, s_touch, s_dummy;
    for (size_t i = 0; i < fm_checkpoint_count(c); i++) data_bytes += fm_checkpoint_entry_at(c, i)->nbytes;
    run_read(c, 1, &file_bytes, &s_read); /* warm the page cache */
    double open_s = 1e9, touch_s = 1e9, read_s = 1e9, copy_s = 1e9, seq_s = 1e9, wn_s = 1e9, pop_s = 1e9;
    for (int r = 0; r < o.reps; r++) {
        double t;
        if ((t = run_open(dir, 0, -1, &s_dummy)) < open_s) open_s = t;
        if ((t = run_open(dir, 1, -1, &s_touch)) < touch_s) touch_s = t;
        if ((t = run_read(c, 1, &file_bytes, &s_read)) < read_s) read_s = t;
        if ((t = run_read(c, 0, &file_bytes, &s_dummy)) < copy_s) copy_s = t;
        if ((t = run_open(dir, 1, MADV_SEQUENTIAL, &s_dummy)) < seq_s) seq_s = t;
        if ((t = run_open(dir, 1, MADV_WILLNEED, &s_dummy)) < wn_s) wn_s = t;
        if ((t = run_open(dir, 1, MADV_POPULATE_READ, &s_dummy)) < pop_s) pop_s = t;
    }
    double gb = (double)file_bytes / 1e9;
    printf("{\"bench\":\"load\",\"bytes\":%llu,\"data_bytes\":%llu,\"files\":%zu,\"tensors\":%zu,\"cache\":\"warm\",\"reps\":%d,"
           "\"open_s\":%.6f,\"touch_s\":%.4f,\"read_s\":%.4f,\"read_copy_s\":%.4f,\"touch_over_read\":%.3f,"
           "\"open_ms_per_gb\":%.3f,\"touch_gb_s\":%.2f,\"read_gb_s\":%.2f}\n",
           (unsigned long long)file_bytes, (unsigned long long)data_bytes, fm_checkpoint_shard_count(c), fm_checkpoint_count(c), o.reps, open_s,
           touch_s, read_s, copy_s, touch_s / read_s, open_s * 1e3 / gb, gb / touch_s, gb / read_s);
    printf("{\"bench\":\"load_madvise\",\"advice\":\"sequential\",\"touch_s\":%.4f,\"touch_over_read\":%.3f}\n", seq_s,
           seq_s / read_s);
    printf("{\"bench\":\"load_madvise\",\"advice\":\"willneed\",\"touch_s\":%.4f,\"touch_over_read\":%.3f}\n", wn_s,
           wn_s / read_s);
    printf("{\"bench\":\"load_madvise\",\"advice\":\"populate_read\",\"touch_s\":%.4f,\"touch_over_read\":%.3f}\n",
           pop_s, pop_s / read_s);
    fm_checkpoint_close(c);
    return 0;
}
