/* Internal: the progress contract of core.h (fm_progress_fn) in one place. Intermediate reports
 * are clamped below the total and dropped when they would not advance; only fm_progress_finish
 * reports done == total. */
#ifndef FM_CORE_PROGRESS_H
#define FM_CORE_PROGRESS_H

#include <stdint.h>

#include "fusemap/core.h"

typedef struct fm_progress {
    fm_progress_fn fn; /* NULL: every call is a no-op */
    void *ctx;
    uint64_t total, last;
} fm_progress;

/* Sets up and reports (0, total). */
static inline void fm_progress_start(fm_progress *p, fm_progress_fn fn, void *ctx, uint64_t total) {
    p->fn = fn;
    p->ctx = ctx;
    p->total = total;
    p->last = 0;
    if (fn && total) fn(ctx, 0, total);
}

/* Reports `done` (clamped to total - 1) when it advances. */
static inline void fm_progress_report(fm_progress *p, uint64_t done) {
    if (!p->fn || !p->total) return;
    if (done >= p->total) done = p->total - 1;
    if (done <= p->last) return;
    p->last = done;
    p->fn(p->ctx, done, p->total);
}

/* The last call: done == total. Call only when the operation succeeded. */
static inline void fm_progress_finish(fm_progress *p) {
    if (p->fn) p->fn(p->ctx, p->total, p->total);
    p->fn = NULL;
}

#endif
