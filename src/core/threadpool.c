/* A small persistent pthread pool: threads - 1 workers sleep on a condition variable and
 * share each parallel-for with the caller through an atomic chunk counter. */
#include "core/threadpool.h"

#include <pthread.h>
#include <stdatomic.h>

struct fm_threadpool {
    int n;                  /* participants, caller included */
    int started;            /* pthreads actually started (n - 1 on success) */
    pthread_t *tids;        /* [n - 1], owned */
    pthread_mutex_t mu;     /* guards gen, stop, active */
    pthread_cond_t wake;    /* workers wait here for a new generation */
    pthread_cond_t done;    /* the caller waits here for active == 0 */
    pthread_mutex_t run_mu; /* serialises concurrent fm_threadpool_for callers */
    uint64_t gen;           /* bumped once per job */
    int stop;
    int active; /* workers still inside the current job */
    /* The current job (written by the caller before gen is bumped, under mu). */
    fm_parallel_fn fn;
    void *ctx;
    int64_t total, grain;
    _Atomic int64_t next;
};

typedef struct worker_arg {
    fm_threadpool *p;
    int id;
} worker_arg;

/* Which pool body the current thread is running (for inline nested calls). */
static _Thread_local const fm_threadpool *tl_pool;
static _Thread_local int tl_worker;

static void run_chunks(fm_threadpool *p, int id) {
    const fm_threadpool *prev_pool = tl_pool;
    int prev_worker = tl_worker;
    tl_pool = p;
    tl_worker = id;
    for (;;) {
        int64_t b = atomic_fetch_add_explicit(&p->next, p->grain, memory_order_relaxed);
        if (b >= p->total) break;
        int64_t e = p->total - b < p->grain ? p->total : b + p->grain;
        p->fn(p->ctx, b, e, id);
    }
    tl_pool = prev_pool;
    tl_worker = prev_worker;
}

static void *worker_main(void *argp) {
    worker_arg *a = argp;
    fm_threadpool *p = a->p;
    int id = a->id;
    uint64_t seen = 0;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->stop && p->gen == seen)
            pthread_cond_wait(&p->wake, &p->mu);
        if (p->stop) break;
        seen = p->gen;
        pthread_mutex_unlock(&p->mu);
        run_chunks(p, id);
        pthread_mutex_lock(&p->mu);
        if (--p->active == 0) pthread_cond_signal(&p->done);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

/* Stops and joins the started workers (shared by free and the failure path of new). */
static void stop_workers(fm_threadpool *p) {
    pthread_mutex_lock(&p->mu);
    p->stop = 1;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->started; i++)
        pthread_join(p->tids[i], NULL);
    p->started = 0;
}

static void destroy(fm_threadpool *p) {
    pthread_cond_destroy(&p->wake);
    pthread_cond_destroy(&p->done);
    pthread_mutex_destroy(&p->mu);
    pthread_mutex_destroy(&p->run_mu);
    fm_free(p->tids);
    fm_free(p);
}

/* Starts workers 1..n-1; args (borrowed, inside p's block) outlive the threads. On failure the
 * started ones are joined again. */
static fm_status start_workers(fm_threadpool *p, worker_arg *args, fm_error *err) {
    for (int i = 1; i < p->n; i++) {
        args[i - 1].p = p;
        args[i - 1].id = i;
        int rc = pthread_create(&p->tids[i - 1], NULL, worker_main, &args[i - 1]);
        if (rc != 0) {
            stop_workers(p);
            return fm_error_set(err, FM_ERR_LIMIT,
                                "thread pool: cannot start worker %d of %d (error %d)", i, p->n - 1,
                                rc);
        }
        p->started++;
    }
    return FM_OK;
}

fm_status fm_threadpool_new(int threads, fm_threadpool **out, fm_error *err) {
    if (!out) return fm_error_set(err, FM_ERR_INVALID_ARG, "thread pool: out is NULL");
    *out = NULL;
    if (threads < 0 || threads > 1024)
        return fm_error_set(err, FM_ERR_INVALID_ARG, "thread pool: thread count %d outside 0..1024",
                            threads);
    if (threads == 0) threads = fm_default_threads();
    fm_threadpool *p = fm_calloc(1, sizeof *p);
    /* One block: n - 1 thread ids followed by n - 1 worker arguments (both live as long as p). */
    size_t nw = (size_t)threads - 1;
    void *block = p ? fm_calloc(1, nw * (sizeof(pthread_t) + sizeof(worker_arg)) + 1) : NULL;
    if (!p || !block) {
        fm_free(p);
        fm_free(block);
        return fm_error_set(err, FM_ERR_NOMEM, "thread pool: out of memory for %d threads",
                            threads);
    }
    p->n = threads;
    p->tids = block;
    pthread_mutex_init(&p->mu, NULL);
    pthread_mutex_init(&p->run_mu, NULL);
    pthread_cond_init(&p->wake, NULL);
    pthread_cond_init(&p->done, NULL);
    atomic_init(&p->next, 0);
    worker_arg *args = (worker_arg *)((char *)block + nw * sizeof(pthread_t));
    fm_status st = start_workers(p, args, err);
    if (st != FM_OK) {
        destroy(p);
        return st;
    }
    *out = p;
    return FM_OK;
}

void fm_threadpool_free(fm_threadpool *p) {
    if (!p) return;
    stop_workers(p);
    destroy(p);
}

int fm_threadpool_threads(const fm_threadpool *p) {
    return p ? p->n : 1;
}

void fm_threadpool_for(fm_threadpool *p, int64_t n, int64_t grain, fm_parallel_fn fn, void *ctx) {
    if (n <= 0 || !fn) return;
    if (grain < 1) grain = 1;
    if (p && tl_pool == p) { /* nested call from one of our own bodies */
        fn(ctx, 0, n, tl_worker);
        return;
    }
    if (!p || p->n == 1 || n <= grain) {
        fn(ctx, 0, n, 0);
        return;
    }
    pthread_mutex_lock(&p->run_mu);
    pthread_mutex_lock(&p->mu);
    p->fn = fn;
    p->ctx = ctx;
    p->total = n;
    p->grain = grain;
    atomic_store(&p->next, 0);
    p->active = p->n - 1;
    p->gen++;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    run_chunks(p, 0);
    pthread_mutex_lock(&p->mu);
    while (p->active > 0)
        pthread_cond_wait(&p->done, &p->mu);
    pthread_mutex_unlock(&p->mu);
    pthread_mutex_unlock(&p->run_mu);
}
