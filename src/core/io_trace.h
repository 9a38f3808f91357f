/* Internal (tests only, not part of the public API): an observer of the file-system operations
 * the io layer performs through its fault-injectable wrappers (io/fsutil.h), told of each one
 * just before it runs. Tests record the order of writes, fsyncs and renames to check the
 * durability protocol of a save, or end the process at the N-th one to simulate a crash. */
#ifndef FUSEMAP_CORE_IO_TRACE_H
#define FUSEMAP_CORE_IO_TRACE_H

#include "core/testing.h"

/* kind: FM_FAULT_OPEN (open, mkdir, symlink), FM_FAULT_WRITE, FM_FAULT_FSYNC or
 * FM_FAULT_RENAME (rename, no-replace rename, exchange). path: the file, directory or (rename)
 * source; path2: the rename target, else NULL. Both borrowed for the call. Called on the thread
 * doing the operation, before the fault hook is consulted. */
typedef void (*fm_io_observer_fn)(void *ctx, fm_fault_kind kind, const char *path,
                                  const char *path2);

/* Installs the observer (NULL removes it). Process-wide; set it while no other thread does
 * I/O through the library. */
void fm_io_observe(fm_io_observer_fn fn, void *ctx);
/* Reports one operation to the observer, if any (called by io/fsutil.c). */
void fm_io_event(fm_fault_kind kind, const char *path, const char *path2);

#endif
