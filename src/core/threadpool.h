/* Internal: a small persistent pthread pool. Workers are created once per pool; each
 * fm_threadpool_for call hands them an index range cut into chunks (no thread creation). */
#ifndef FUSEMAP_CORE_THREADPOOL_H
#define FUSEMAP_CORE_THREADPOOL_H

#include <stdint.h>

#include "fusemap/core.h"

typedef struct fm_threadpool fm_threadpool;

/* Body of a parallel-for: processes indices [begin, end). `worker` is in
 * [0, fm_threadpool_threads(pool)) and is unique among the bodies running at the same time,
 * so it can index per-worker scratch. */
typedef void (*fm_parallel_fn)(void *ctx, int64_t begin, int64_t end, int worker);

/* A pool of `threads` participants (the caller of fm_threadpool_for counts as one, so
 * threads - 1 pthreads are started); 0 = fm_default_threads(). Caller frees *out with
 * fm_threadpool_free. FM_ERR_INVALID_ARG for threads < 0 or > 1024, FM_ERR_LIMIT when a
 * thread cannot be started, FM_ERR_NOMEM. */
fm_status fm_threadpool_new(int threads, fm_threadpool **out, fm_error *err);
/* Stops and joins the workers; accepts NULL. Must not run concurrently with a for call. */
void fm_threadpool_free(fm_threadpool *p);
/* Participants; 1 for a NULL pool. */
int fm_threadpool_threads(const fm_threadpool *p);

/* Runs fn over [0, n) in chunks of at least `grain` indices (grain < 1 counts as 1) and
 * returns when every index is done. A NULL pool, a one-thread pool or n <= grain runs fn
 * once on the calling thread with worker 0. Concurrent calls on one pool are serialised.
 * A call made from inside a body of the same pool runs inline, with that body's worker id.
 * Which thread runs an index is unspecified: bodies must compute the same result for an
 * index whoever runs it (that is what makes results independent of the thread count). */
void fm_threadpool_for(fm_threadpool *p, int64_t n, int64_t grain, fm_parallel_fn fn, void *ctx);

#endif
