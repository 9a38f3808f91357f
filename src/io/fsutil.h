/* Internal file-system wrappers of the io subsystem (safetensors writer, atomic saves): each call
 * that can fail consults the fault hooks of core.h and reports FM_ERR_IO naming path and strerror.
 */
#ifndef FM_IO_FSUTIL_H
#define FM_IO_FSUTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "fusemap/core.h"

/* Largest number of bytes one write(2)/writev(2) call is asked to write. Bounded so that a
 * failure (EFBIG, ENOSPC) surfaces after a known amount and mapped pages stream through. */
#define FM_FS_WRITE_CHUNK ((size_t)64 << 20)

/* Fault kinds consulted:
 *   FM_FAULT_OPEN   open, mkdir, symlink creation, directory opens (listing, fsync)
 *   FM_FAULT_WRITE  every write(2)/writev(2) call
 *   FM_FAULT_FSYNC  every fsync(2)
 *   FM_FAULT_RENAME every rename, exchange and no-replace rename
 * An injected fault behaves like the call failing with EIO; the message says "injected fault".
 * Cleanup helpers (fm_fs_remove_tree) are never fault-injected: failure paths must be able to
 * undo their work. */

/* open(2) with O_CLOEXEC added. On success *out_fd is a descriptor the caller closes. */
fm_status fm_fs_open(const char *path, int flags, mode_t mode, int *out_fd, fm_error *err);
/* Opens a directory read-only (O_DIRECTORY); the caller closes *out_fd. */
fm_status fm_fs_open_dir(const char *path, int *out_fd, fm_error *err);
/* mkdir(2); FM_ERR_EXISTS when the path exists. */
fm_status fm_fs_mkdir(const char *path, mode_t mode, fm_error *err);
/* symlink(2): creates `path` pointing at `target`. */
fm_status fm_fs_symlink(const char *target, const char *path, fm_error *err);
/* Writes all `len` bytes (retries EINTR and short writes, at most FM_FS_WRITE_CHUNK a call).
 * `label` names the file in errors. */
fm_status fm_fs_write_all(int fd, const void *buf, size_t len, const char *label, fm_error *err);
/* Writes every piece of iov[0..n) in order with writev(2). `iov` is the caller's scratch: it is
 * consumed (bases advanced, lengths zeroed). */
fm_status fm_fs_writev_all(int fd, struct iovec *iov, size_t n, const char *label, fm_error *err);
fm_status fm_fs_fsync(int fd, const char *label, fm_error *err);
/* Opens, fsyncs and closes the directory at `path` (makes its entries durable). */
fm_status fm_fs_fsync_dir(const char *path, fm_error *err);
/* close(2) reporting its error (delayed write errors on network file systems). The descriptor
 * is released either way. */
fm_status fm_fs_close(int fd, const char *label, fm_error *err);
/* rename(2): replaces `to` if it exists. */
fm_status fm_fs_rename(const char *from, const char *to, fm_error *err);
/* rename that fails with FM_ERR_EXISTS when `to` exists (RENAME_NOREPLACE; where the file
 * system lacks it, a check followed by rename(2)). */
fm_status fm_fs_rename_noreplace(const char *from, const char *to, fm_error *err);
/* Atomically exchanges two existing paths (renameat2 RENAME_EXCHANGE). FM_ERR_UNSUPPORTED when
 * the kernel or file system lacks it (EINVAL, ENOSYS, EOPNOTSUPP): callers fall back. */
fm_status fm_fs_exchange(const char *a, const char *b, fm_error *err);
/* The same exchange without fault injection or the test switch, for undoing a committed exchange.
 * Returns 0 or -1 (errno set). */
int fm_fs_exchange_nofault(const char *a, const char *b);
/* Tests only: while `disabled`, fm_fs_exchange answers FM_ERR_UNSUPPORTED without trying, as on
 * a file system without RENAME_EXCHANGE, so the fallback path can be exercised. */
void fm_fs_set_exchange_disabled(bool disabled);
fm_status fm_fs_unlink(const char *path, fm_error *err);
/* Removes `path` and everything below it without following symbolic links; directories are
 * made writable first. Best effort, never fault-injected, allocates nothing through fm_malloc.
 * Returns 0, or -1 when something could not be removed (errno of the last failure). */
int fm_fs_remove_tree(const char *path);
/* Hard-links `from` to `to`; where the file system or kernel refuses the link (EXDEV, EPERM,
 * EMLINK, EACCES, ENOTSUP), copies instead (mode kept, data fsynced). */
fm_status fm_fs_link_or_copy(const char *from, const char *to, fm_error *err);
/* Copies a regular file to a new path (O_EXCL), keeping its permission bits; fsyncs the copy. */
fm_status fm_fs_copy_file(const char *from, const char *to, fm_error *err);
/* Reads a whole file of at most `max` bytes. *out is NUL-terminated; caller frees with fm_free.
 * FM_ERR_LIMIT when larger than `max`. */
fm_status fm_fs_read_file(const char *path, uint64_t max, char **out, size_t *out_len,
                          fm_error *err);
/* "dir/name" (no doubled slash). Caller frees with fm_free; NULL on out of memory. */
char *fm_fs_join(const char *dir, const char *name);
/* A fresh, not yet existing sibling path "DIR/.BASE.fusemap-TAGxxxxxxxxxxxx" (random suffix),
 * for temporary files and staging directories. Caller frees with fm_free; NULL on OOM. The name
 * is only likely to be free: create it with O_EXCL / mkdir / no-replace and retry on EEXIST. */
char *fm_fs_temp_name(const char *dir, const char *base, const char *tag);
/* Creates a temporary file beside `base` in `dir` (O_EXCL, mode 0666 less umask).
 * *out_path (caller frees with fm_free) and *out_fd (caller closes) on success. */
fm_status fm_fs_create_temp_file(const char *dir, const char *base, char **out_path, int *out_fd,
                                 fm_error *err);
/* Creates a temporary directory beside `base` in `dir` (mode 0777 less umask).
 * *out_path: caller frees with fm_free (and removes the directory). */
fm_status fm_fs_create_temp_dir(const char *dir, const char *base, char **out_path, fm_error *err);

#endif
