/* The allocation choke point and the fault-injection counters tests use to make the
 * N-th allocation, write, fsync, rename or open fail. */
#include "fusemap/core.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static _Atomic uint64_t fault_nth[FM_FAULT_KIND_COUNT];
static _Atomic uint64_t fault_seen[FM_FAULT_KIND_COUNT];

void fm_fault_set(fm_fault_kind kind, uint64_t nth) {
    if ((unsigned)kind >= FM_FAULT_KIND_COUNT) return;
    atomic_store(&fault_seen[kind], 0);
    atomic_store(&fault_nth[kind], nth);
}

uint64_t fm_fault_count(fm_fault_kind kind) {
    if ((unsigned)kind >= FM_FAULT_KIND_COUNT) return 0;
    return atomic_load(&fault_seen[kind]);
}

int fm_fault_hit(fm_fault_kind kind) {
    uint64_t nth = atomic_load_explicit(&fault_nth[kind], memory_order_relaxed);
    if (nth == 0) return 0;
    uint64_t seen = atomic_fetch_add(&fault_seen[kind], 1) + 1;
    return seen == nth;
}

void *fm_malloc(size_t n) {
    if (fm_fault_hit(FM_FAULT_ALLOC)) return NULL;
    return malloc(n ? n : 1);
}

void *fm_calloc(size_t count, size_t size) {
    if (fm_fault_hit(FM_FAULT_ALLOC)) return NULL;
    if (count == 0 || size == 0) return calloc(1, 1);
    return calloc(count, size);
}

void *fm_realloc(void *p, size_t n) {
    if (fm_fault_hit(FM_FAULT_ALLOC)) return NULL;
    return realloc(p, n ? n : 1);
}

void fm_free(void *p) {
    free(p);
}

char *fm_strdup(const char *s) {
    if (!s) return NULL;
    return fm_strndup(s, strlen(s));
}

char *fm_strndup(const char *s, size_t n) {
    if (!s) return NULL;
    char *d = fm_malloc(n + 1);
    if (!d) return NULL;
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

/* Large buffers (tensor data) are 2 MiB aligned and advised for transparent huge pages:
 * first-touch page faults dominate casting a checkpoint on load, and huge pages cut them. */
#define HUGE_THRESHOLD ((size_t)4 << 20)
#define HUGE_ALIGN ((size_t)2 << 20)

void *fm_malloc_aligned(size_t n) {
    if (fm_fault_hit(FM_FAULT_ALLOC)) return NULL;
    void *p = NULL;
    size_t align = n >= HUGE_THRESHOLD ? HUGE_ALIGN : 64;
    if (posix_memalign(&p, align, n ? n : 64) != 0) return NULL;
#ifdef MADV_HUGEPAGE
    if (n >= HUGE_THRESHOLD) madvise(p, n & ~(HUGE_ALIGN - 1), MADV_HUGEPAGE);
#endif
    return p;
}

void fm_free_aligned(void *p) {
    free(p);
}

int fm_default_threads(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}
