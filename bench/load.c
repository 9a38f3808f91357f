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
    for (; i < n; i++)
        s0 += p[i];
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
    char(*names)[32] = calloc(n, sizeof *names);
    fm_error err;
    if (!ts || !items || !names) die("out of memory", NULL);
    for (uint64_t i = 0; i < n; i++) {
        int64_t dims[2] = {(i + 1 == n && last_rows) ? (int64_t)last_rows : TENSOR_ROWS,
                           TENSOR_COLS};
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
    for (uint64_t i = 0; i < n; i++)
        fm_tensor_free(&ts[i]);
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
        for (size_t i = 0; i < fm_checkpoint_count(c); i++)
            bytes += fm_checkpoint_entry_at(c, i)->nbytes;
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
    if (argc % 2 == 0) goto usage; /* options come in pairs */
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *a = argv[i], *v = argv[i + 1];
        if (!strcmp(a, "--size-mb"))
            o->size_mb = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--shard-mb"))
            o->shard_mb = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--data-dir"))
            o->data_dir = v;
        else if (!strcmp(a, "--reps"))
            o->reps = atoi(v);
        else
            goto usage;
    }
    if (o->size_mb && o->shard_mb && o->reps > 0) return;
usage:
    fprintf(stderr, "usage: load [--size-mb N] [--shard-mb N] [--data-dir DIR] [--reps N]\n");
    exit(2);
}

enum { T_OPEN, T_TOUCH, T_READ, T_COPY, T_SEQ, T_WILLNEED, T_POPULATE, T_COUNT };

/* One round of every measurement; keeps the fastest time of each. The touch variants must all
 * see the same checksum (same bytes through the views whatever the advice). */
static void round_once(const fm_checkpoint *c, const char *dir, double best[T_COUNT],
                       uint64_t *file_bytes) {
    static const int advice[] = {[T_TOUCH] = -1,
                                 [T_SEQ] = MADV_SEQUENTIAL,
                                 [T_WILLNEED] = MADV_WILLNEED,
                                 [T_POPULATE] = MADV_POPULATE_READ};
    uint64_t sum, ref = 0;
    double t[T_COUNT];
    t[T_OPEN] = run_open(dir, 0, -1, &sum);
    t[T_READ] = run_read(c, 1, file_bytes, &sum);
    t[T_COPY] = run_read(c, 0, file_bytes, &sum);
    for (int k = T_TOUCH; k < T_COUNT; k++) {
        if (k == T_READ || k == T_COPY) continue;
        t[k] = run_open(dir, 1, advice[k], &sum);
        if (k != T_TOUCH && sum != ref) die("checksums differ between touch runs", NULL);
        ref = sum;
    }
    for (int k = 0; k < T_COUNT; k++)
        if (t[k] < best[k]) best[k] = t[k];
}

static void report(const fm_checkpoint *c, const bench_opts *o, const double b[T_COUNT],
                   uint64_t file_bytes) {
    static const char *const names[] = {
        [T_SEQ] = "sequential", [T_WILLNEED] = "willneed", [T_POPULATE] = "populate_read"};
    uint64_t data_bytes = 0;
    for (size_t i = 0; i < fm_checkpoint_count(c); i++)
        data_bytes += fm_checkpoint_entry_at(c, i)->nbytes;
    double gb = (double)file_bytes / 1e9;
    printf("{\"bench\":\"load\",\"bytes\":%llu,\"data_bytes\":%llu,\"files\":%zu,\"tensors\":%zu,"
           "\"cache\":\"warm\","
           "\"reps\":%d,\"open_s\":%.6f,\"touch_s\":%.4f,\"read_s\":%.4f,\"read_copy_s\":%.4f,"
           "\"touch_over_read\":%.3f,"
           "\"open_ms_per_gb\":%.3f,\"touch_gb_s\":%.2f,\"read_gb_s\":%.2f}\n",
           (unsigned long long)file_bytes, (unsigned long long)data_bytes,
           fm_checkpoint_shard_count(c), fm_checkpoint_count(c), o->reps, b[T_OPEN], b[T_TOUCH],
           b[T_READ], b[T_COPY], b[T_TOUCH] / b[T_READ], b[T_OPEN] * 1e3 / gb, gb / b[T_TOUCH],
           gb / b[T_READ]);
    for (int k = T_SEQ; k < T_COUNT; k++)
        printf("{\"bench\":\"load_madvise\",\"advice\":\"%s\",\"touch_s\":%.4f,\"touch_over_read\":"
               "%.3f}\n",
               names[k], b[k], b[k] / b[T_READ]);
}

int main(int argc, char **argv) {
    bench_opts o;
    parse(argc, argv, &o);
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/load-%llumb-shard%llumb", o.data_dir,
             (unsigned long long)o.size_mb, (unsigned long long)o.shard_mb);
    ensure_data(dir, &o);
    fm_checkpoint *c = open_ckpt(dir);
    uint64_t file_bytes, sum;
    double best[T_COUNT];
    for (int k = 0; k < T_COUNT; k++)
        best[k] = 1e30;
    run_read(c, 1, &file_bytes, &sum); /* warm the page cache */
    for (int r = 0; r < o.reps; r++)
        round_once(c, dir, best, &file_bytes);
    report(c, &o, best, file_bytes);
    fm_checkpoint_close(c);
    return 0;
}
