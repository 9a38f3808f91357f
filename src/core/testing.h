/* Internal test hooks of the core layer: I/O and allocation fault injection. Linked statically
 * by the tests (libfusemap.so does not export them). */
#ifndef FUSEMAP_CORE_TESTING_H
#define FUSEMAP_CORE_TESTING_H

#include <stdint.h>

#include "core/testing.h"
#include "fusemap/core.h"

/* ---- fault injection (tests) ---------------------------------------------------------
 * fm_fault_set(kind, n): the n-th call (1-based, counted from this call) of that kind fails;
 * n = 0 disables. fm_fault_count(kind) returns calls seen since the last set. Process-wide,
 * not meant for concurrent use. */
typedef enum fm_fault_kind {
    FM_FAULT_ALLOC = 0,
    FM_FAULT_WRITE,
    FM_FAULT_FSYNC,
    FM_FAULT_RENAME,
    FM_FAULT_OPEN,
    FM_FAULT_KIND_COUNT
} fm_fault_kind;
void fm_fault_set(fm_fault_kind kind, uint64_t nth);
uint64_t fm_fault_count(fm_fault_kind kind);
/* Returns 1 when this call of `kind` must fail (and counts it). Used by the library. */
int fm_fault_hit(fm_fault_kind kind);

#endif
