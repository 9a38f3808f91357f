/* Run contexts: the thread pool every kernel of a forward runs on, the scratch arena forwards
 * place their outputs and temporaries in, and the progress callback. */
#include <assert.h>
#include <cblas.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#include "nn/run.h"

/* The arena is a stack of blocks; a position is the number of bytes below it across blocks
 * (block i starts at the sum of the capacities before it). Releasing to 0 with more than one
 * block replaces them by one block of the high-water size: the next forward of the same shape
 * then allocates nothing. */
typedef struct arena_block {
    unsigned char *base; /* fm_malloc_aligned */
    size_t cap;
} arena_block;

struct fm_run_ctx {
    fm_run_options opt;
    fm_threadpool *pool;
    arena_block *blocks;
    size_t n_blocks;
    size_t top;  /* current position */
    size_t high; /* highest position reached since the last consolidation */
};

#define ARENA_ALIGN 64
#define ARENA_MIN_BLOCK (1u << 20)

/* OpenBLAS's thread count is process-wide. fusemap parallelises every forward on its own pool
 * and calls sgemm from several pool threads at once, so it sets OpenBLAS to one thread, once,
 * before its first run context exists, and never changes it again (docs/threads.md). */
static pthread_once_t blas_once = PTHREAD_ONCE_INIT;
static void blas_single_thread(void) {
    openblas_set_num_threads(1);
}

void fm_run_options_init(fm_run_options *o) {
    memset(o, 0, sizeof *o);
}

fm_status fm_run_ctx_new(const fm_run_options *o, fm_run_ctx **out, fm_error *err) {
    fm_run_options d;
    *out = NULL;
    if (!o) fm_run_options_init(&d), o = &d;
    if (o->threads < 0 || o->threads > 1024)
        return fm_error_set(err, FM_ERR_INVALID_ARG, "threads must be in 0..1024, got %d",
                            o->threads);
    pthread_once(&blas_once, blas_single_thread);
    fm_run_ctx *rc = fm_calloc(1, sizeof *rc);
    if (!rc) return fm_error_set(err, FM_ERR_NOMEM, "out of memory creating a run context");
    rc->opt = *o;
    if (!rc->opt.threads) rc->opt.threads = fm_default_threads();
    fm_status st = fm_threadpool_new(rc->opt.threads, &rc->pool, err);
    if (st != FM_OK) {
        fm_free(rc);
        return st;
    }
    *out = rc;
    return FM_OK;
}

static void free_blocks(fm_run_ctx *rc) {
    for (size_t i = 0; i < rc->n_blocks; i++)
        fm_free_aligned(rc->blocks[i].base);
    fm_free(rc->blocks);
    rc->blocks = NULL;
    rc->n_blocks = 0;
}

void fm_run_ctx_free(fm_run_ctx *rc) {
    if (!rc) return;
    fm_threadpool_free(rc->pool);
    free_blocks(rc);
    fm_free(rc);
}

int fm_run_ctx_threads(const fm_run_ctx *rc) {
    return rc->opt.threads;
}
fm_threadpool *fm_run_pool(const fm_run_ctx *rc) {
    return rc->pool;
}

void fm_run_ctx_set_progress(fm_run_ctx *rc, void (*progress)(void *ctx, int done, int total),
                             void *ctx) {
    rc->opt.progress = progress;
    rc->opt.progress_ctx = ctx;
}

void fm_run_ctx_progress(fm_run_ctx *rc, int done, int total) {
    if (rc->opt.progress) rc->opt.progress(rc->opt.progress_ctx, done, total);
}

size_t fm_run_mark(const fm_run_ctx *rc) {
    return rc->top;
}

/* Start position of block i. */
static size_t block_start(const fm_run_ctx *rc, size_t i) {
    size_t s = 0;
    for (size_t k = 0; k < i; k++)
        s += rc->blocks[k].cap;
    return s;
}

/* One block of the high-water size in place of several (only when nothing is live). */
static void consolidate(fm_run_ctx *rc) {
    if (rc->n_blocks <= 1) return;
    size_t want = rc->high;
    free_blocks(rc);
    arena_block *b = fm_malloc(sizeof *b);
    void *base = b ? fm_malloc_aligned(want) : NULL;
    if (!base) { /* keep going without a block; the next scratch call allocates again */
        fm_free(b);
        return;
    }
    *b = (arena_block){base, want};
    rc->blocks = b;
    rc->n_blocks = 1;
}

void fm_run_release(fm_run_ctx *rc, size_t mark) {
    assert(mark <= rc->top);
    rc->top = mark;
    if (mark == 0) consolidate(rc);
}

static size_t align_up(size_t n) {
    return (n + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1);
}

/* The block holding position `pos` and the offset in it; n_blocks when past the end. */
static size_t block_at(const fm_run_ctx *rc, size_t pos, size_t *off) {
    size_t s = 0;
    for (size_t i = 0; i < rc->n_blocks; i++) {
        if (pos < s + rc->blocks[i].cap) {
            *off = pos - s;
            return i;
        }
        s += rc->blocks[i].cap;
    }
    *off = 0;
    return rc->n_blocks;
}

static fm_status add_block(fm_run_ctx *rc, size_t need, fm_error *err) {
    size_t cap = rc->n_blocks ? 2 * rc->blocks[rc->n_blocks - 1].cap : ARENA_MIN_BLOCK;
    if (cap < need) cap = align_up(need);
    arena_block *nb = fm_realloc(rc->blocks, (rc->n_blocks + 1) * sizeof *nb);
    if (!nb) return fm_error_set(err, FM_ERR_NOMEM, "out of memory growing the scratch arena");
    rc->blocks = nb;
    void *base = fm_malloc_aligned(cap);
    if (!base)
        return fm_error_set(err, FM_ERR_NOMEM, "out of memory for %zu bytes of scratch", cap);
    rc->blocks[rc->n_blocks++] = (arena_block){base, cap};
    return FM_OK;
}

fm_status fm_run_scratch(fm_run_ctx *rc, size_t bytes, void **out, fm_error *err) {
    size_t n = align_up(bytes ? bytes : 1), off;
    *out = NULL;
    if (n < bytes)
        return fm_error_set(err, FM_ERR_OVERFLOW, "scratch request of %zu bytes overflows", bytes);
    for (;;) {
        size_t i = block_at(rc, rc->top, &off);
        if (i < rc->n_blocks && off + n <= rc->blocks[i].cap) {
            *out = rc->blocks[i].base + off;
            rc->top += n;
            if (rc->top > rc->high) rc->high = rc->top;
            return FM_OK;
        }
        /* skip the rest of block i (or start a new one) */
        if (i + 1 < rc->n_blocks) {
            rc->top = block_start(rc, i + 1);
            continue;
        }
        if (i < rc->n_blocks) rc->top = block_start(rc, rc->n_blocks);
        fm_status st = add_block(rc, n, err);
        if (st != FM_OK) return st;
    }
}

fm_status fm_run_tensor(fm_run_ctx *rc, fm_dtype dt, const fm_shape *shape, fm_tensor *out,
                        fm_error *err) {
    uint64_t nb;
    memset(out, 0, sizeof *out);
    fm_status st = fm_shape_nbytes(shape, dt, &nb);
    if (st != FM_OK || nb > SIZE_MAX)
        return fm_error_set(err, FM_ERR_OVERFLOW, "scratch tensor size overflows");
    void *p = NULL;
    st = fm_run_scratch(rc, (size_t)nb, &p, err);
    if (st != FM_OK) return st;
    out->dtype = dt;
    out->shape = *shape;
    out->data = p;
    out->nbytes = nb;
    return FM_OK;
}
