/* The io observer of core/io_trace.h: one process-wide function pointer and its context. */
#include "core/io_trace.h"

#include <stdatomic.h>

static _Atomic(fm_io_observer_fn) observer;
static void *_Atomic observer_ctx;

void fm_io_observe(fm_io_observer_fn fn, void *ctx) {
    atomic_store(&observer, NULL);
    atomic_store(&observer_ctx, ctx);
    atomic_store(&observer, fn);
}

void fm_io_event(fm_fault_kind kind, const char *path, const char *path2) {
    fm_io_observer_fn fn = atomic_load(&observer);
    if (fn) fn(atomic_load(&observer_ctx), kind, path, path2);
}
