/* Internal: the safetensors writer with progress, for the atomic checkpoint save. */
#ifndef FM_IO_ST_WRITE_H
#define FM_IO_ST_WRITE_H

#include "fusemap/io.h"
#include "io/fsutil.h"

/* fm_st_write_fd, calling fn (may be NULL) after each write with the tensor data bytes of this
 * file written so far (the header not counted). */
fm_status fm_st_write_fd_notify(int fd, const char *label, const fm_st_item *items, size_t n,
                                const fm_st_write_options *o, fm_fs_written_fn fn, void *ctx,
                                fm_error *err);

#endif
