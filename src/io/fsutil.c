/* File-system wrappers for the writer and the atomic save: fault hooks, EINTR and short-write
 * handling, error messages that name the path and the system's reason. */
#include "io/fsutil.h"
#include "core/testing.h"

#include "core/io_trace.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#ifndef RENAME_NOREPLACE
#define RENAME_NOREPLACE (1 << 0)
#endif
#ifndef RENAME_EXCHANGE
#define RENAME_EXCHANGE (1 << 1)
#endif

#define FS_IOV_BATCH 64
#define FS_REMOVE_MAX_DEPTH 128

static atomic_bool exchange_disabled;

/* Status for a failed system call: missing paths and existing paths get their own codes. */
static fm_status status_for_errno(int e) {
    if (e == ENOENT || e == ENOTDIR) return FM_ERR_NOT_FOUND;
    if (e == EEXIST || e == ENOTEMPTY) return FM_ERR_EXISTS;
    if (e == ENOMEM) return FM_ERR_NOMEM;
    return FM_ERR_IO;
}

/* Sets "OP 'PATH': strerror" (plus the injected-fault note) and returns the status. */
static fm_status sys_error(fm_error *err, const char *op, const char *path, int e, bool injected) {
    char buf[256];
    const char *text = strerror_r(e, buf, sizeof buf);
    return fm_error_set(err, status_for_errno(e), "%s '%s': %s%s", op, path ? path : "(null)", text,
                        injected ? " (injected fault)" : "");
}

/* Reports the operation to the io observer (core/io_trace.h), then consults the fault hook; on a
 * hit sets errno = EIO and returns true. */
static bool injected_at(fm_fault_kind kind, const char *path, const char *path2) {
    fm_io_event(kind, path, path2);
    if (!fm_fault_hit(kind)) return false;
    errno = EIO;
    return true;
}

fm_status fm_fs_open(const char *path, int flags, mode_t mode, int *out_fd, fm_error *err) {
    *out_fd = -1;
    if (injected_at(FM_FAULT_OPEN, path, NULL)) return sys_error(err, "open", path, EIO, true);
    int fd;
    do
        fd = open(path, flags | O_CLOEXEC, mode);
    while (fd < 0 && errno == EINTR);
    if (fd < 0) return sys_error(err, "open", path, errno, false);
    *out_fd = fd;
    return FM_OK;
}

fm_status fm_fs_open_dir(const char *path, int *out_fd, fm_error *err) {
    return fm_fs_open(path, O_RDONLY | O_DIRECTORY, 0, out_fd, err);
}

fm_status fm_fs_mkdir(const char *path, mode_t mode, fm_error *err) {
    if (injected_at(FM_FAULT_OPEN, path, NULL)) return sys_error(err, "mkdir", path, EIO, true);
    if (mkdir(path, mode) != 0) return sys_error(err, "mkdir", path, errno, false);
    return FM_OK;
}

fm_status fm_fs_symlink(const char *target, const char *path, fm_error *err) {
    if (injected_at(FM_FAULT_OPEN, path, NULL)) return sys_error(err, "symlink", path, EIO, true);
    if (symlink(target, path) != 0) return sys_error(err, "symlink", path, errno, false);
    return FM_OK;
}

fm_status fm_fs_write_all(int fd, const void *buf, size_t len, const char *label, fm_error *err) {
    struct iovec one = {.iov_base = (void *)buf, .iov_len = len};
    return fm_fs_writev_all(fd, &one, 1, label, err);
}

/* Fills `batch` with up to FS_IOV_BATCH non-empty pieces from iov[i..n), FM_FS_WRITE_CHUNK bytes
 * at most. Returns the number of pieces. */
static int fill_batch(struct iovec *batch, const struct iovec *iov, size_t i, size_t n) {
    int cnt = 0;
    size_t total = 0;
    for (size_t j = i; j < n && cnt < FS_IOV_BATCH && total < FM_FS_WRITE_CHUNK; j++) {
        size_t take = iov[j].iov_len;
        if (take == 0) continue;
        if (take > FM_FS_WRITE_CHUNK - total) take = FM_FS_WRITE_CHUNK - total;
        batch[cnt].iov_base = iov[j].iov_base;
        batch[cnt].iov_len = take;
        cnt++;
        total += take;
    }
    return cnt;
}

/* Consumes `w` written bytes from iov starting at *i. */
static void advance(struct iovec *iov, size_t n, size_t *i, size_t w) {
    while (w > 0 && *i < n) {
        if (iov[*i].iov_len <= w) {
            w -= iov[*i].iov_len;
            iov[*i].iov_len = 0;
            (*i)++;
        } else {
            iov[*i].iov_base = (char *)iov[*i].iov_base + w;
            iov[*i].iov_len -= w;
            w = 0;
        }
    }
}

fm_status fm_fs_writev_all(int fd, struct iovec *iov, size_t n, const char *label, fm_error *err) {
    return fm_fs_writev_all_notify(fd, iov, n, label, NULL, NULL, err);
}

fm_status fm_fs_writev_all_notify(int fd, struct iovec *iov, size_t n, const char *label,
                                  fm_fs_written_fn fn, void *ctx, fm_error *err) {
    size_t i = 0;
    uint64_t written = 0;
    struct iovec batch[FS_IOV_BATCH];
    while (i < n) {
        if (iov[i].iov_len == 0) {
            i++;
            continue;
        }
        int cnt = fill_batch(batch, iov, i, n);
        if (injected_at(FM_FAULT_WRITE, label, NULL))
            return sys_error(err, "write", label, EIO, true);
        ssize_t w = writev(fd, batch, cnt);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) return sys_error(err, "write", label, errno, false);
        if (w == 0) return sys_error(err, "write", label, EIO, false);
        advance(iov, n, &i, (size_t)w);
        written += (uint64_t)w;
        if (fn) fn(ctx, written);
    }
    return FM_OK;
}

fm_status fm_fs_fsync(int fd, const char *label, fm_error *err) {
    if (injected_at(FM_FAULT_FSYNC, label, NULL)) return sys_error(err, "fsync", label, EIO, true);
    int rc;
    do
        rc = fsync(fd);
    while (rc != 0 && errno == EINTR);
    if (rc != 0) return sys_error(err, "fsync", label, errno, false);
    return FM_OK;
}

fm_status fm_fs_fsync_dir(const char *path, fm_error *err) {
    int fd;
    fm_status st = fm_fs_open_dir(path, &fd, err);
    if (st != FM_OK) return st;
    st = fm_fs_fsync(fd, path, err);
    close(fd);
    return st;
}

fm_status fm_fs_close(int fd, const char *label, fm_error *err) {
    /* Linux releases the descriptor even when close fails (EINTR included): never retry. */
    if (close(fd) != 0 && errno != EINTR) return sys_error(err, "close", label, errno, false);
    return FM_OK;
}

fm_status fm_fs_rename(const char *from, const char *to, fm_error *err) {
    if (injected_at(FM_FAULT_RENAME, from, to)) return sys_error(err, "rename", from, EIO, true);
    if (rename(from, to) != 0) {
        int e = errno;
        char what[64 + PATH_MAX];
        snprintf(what, sizeof what, "rename to '%s' of", to);
        return sys_error(err, what, from, e, false);
    }
    return FM_OK;
}

static int renameat2_raw(const char *from, const char *to, unsigned flags) {
#ifdef SYS_renameat2
    return (int)syscall(SYS_renameat2, AT_FDCWD, from, AT_FDCWD, to, flags);
#else
    (void)from, (void)to, (void)flags;
    errno = ENOSYS;
    return -1;
#endif
}

static bool unsupported_errno(int e) {
    return e == EINVAL || e == ENOSYS || e == EOPNOTSUPP;
}

fm_status fm_fs_rename_noreplace(const char *from, const char *to, fm_error *err) {
    if (injected_at(FM_FAULT_RENAME, from, to)) return sys_error(err, "rename", from, EIO, true);
    if (renameat2_raw(from, to, RENAME_NOREPLACE) == 0) return FM_OK;
    int e = errno;
    if (unsupported_errno(e)) {
        struct stat st;
        if (lstat(to, &st) == 0)
            e = EEXIST;
        else if (rename(from, to) == 0)
            return FM_OK;
        else
            e = errno;
    }
    char what[64 + PATH_MAX];
    snprintf(what, sizeof what, "rename to '%s' of", to);
    return sys_error(err, what, from, e, false);
}

void fm_fs_set_exchange_disabled(bool disabled) {
    atomic_store(&exchange_disabled, disabled);
}

fm_status fm_fs_exchange(const char *a, const char *b, fm_error *err) {
    if (atomic_load(&exchange_disabled))
        return fm_error_set(err, FM_ERR_UNSUPPORTED, "exchange '%s' with '%s': disabled for tests",
                            a, b);
    if (injected_at(FM_FAULT_RENAME, a, b)) return sys_error(err, "exchange", a, EIO, true);
    if (renameat2_raw(a, b, RENAME_EXCHANGE) == 0) return FM_OK;
    int e = errno;
    char what[64 + PATH_MAX];
    snprintf(what, sizeof what, "exchange with '%s' of", b);
    fm_status st = sys_error(err, what, a, e, false);
    if (unsupported_errno(e)) {
        if (err) err->status = FM_ERR_UNSUPPORTED;
        return FM_ERR_UNSUPPORTED;
    }
    return st;
}

int fm_fs_exchange_nofault(const char *a, const char *b) {
    return renameat2_raw(a, b, RENAME_EXCHANGE);
}

fm_status fm_fs_unlink(const char *path, fm_error *err) {
    if (unlink(path) != 0) return sys_error(err, "unlink", path, errno, false);
    return FM_OK;
}

/* ---- recursive removal (cleanup: no faults, no fm allocations) ------------------------- */
static int remove_at(int dirfd, const char *name, int depth);

/* Removes every entry of the open directory `fd` (consumed). Several passes because entries
 * removed while reading may make readdir skip others. */
static int remove_contents(int fd, int depth) {
    DIR *d = fdopendir(fd);
    if (!d) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    int rc = 0, saved = 0;
    for (int pass = 0; pass < 4; pass++) {
        int seen = 0;
        struct dirent *e;
        rewinddir(d);
        while ((e = readdir(d)) != NULL) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
            seen++;
            if (remove_at(dirfd(d), e->d_name, depth + 1) != 0) {
                rc = -1;
                saved = errno;
            }
        }
        if (seen == 0 || rc != 0) break;
    }
    closedir(d);
    errno = saved;
    return rc;
}

static int remove_at(int dirfd, const char *name, int depth) {
    if (unlinkat(dirfd, name, 0) == 0 || errno == ENOENT) return 0;
    if (errno != EISDIR && errno != EPERM) return -1;
    if (depth > FS_REMOVE_MAX_DEPTH) {
        errno = ELOOP;
        return -1;
    }
    int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return -1;
    (void)fchmod(fd, 0700); /* a read-only subdirectory must still be emptied */
    int rc = remove_contents(fd, depth);
    int saved = errno;
    if (unlinkat(dirfd, name, AT_REMOVEDIR) != 0 && errno != ENOENT) return -1;
    errno = saved;
    return rc;
}

int fm_fs_remove_tree(const char *path) {
    if (!path) return 0;
    return remove_at(AT_FDCWD, path, 0);
}

/* ---- copies and links -------------------------------------------------------------------- */
static bool link_refused(int e) {
    return e == EXDEV || e == EPERM || e == EMLINK || e == EACCES || e == ENOTSUP ||
           e == EOPNOTSUPP;
}

fm_status fm_fs_link_or_copy(const char *from, const char *to, fm_error *err) {
    if (link(from, to) == 0) return FM_OK;
    int e = errno;
    if (link_refused(e)) return fm_fs_copy_file(from, to, err);
    char what[64 + PATH_MAX];
    snprintf(what, sizeof what, "link to '%s' of", to);
    return sys_error(err, what, from, e, false);
}

/* Copies every byte of `in` to `out` through a bounce buffer. */
static fm_status copy_fd(int in, int out, const char *from, const char *to, fm_error *err) {
    size_t cap = (size_t)1 << 20;
    char *buf = fm_malloc(cap);
    if (!buf) return fm_error_set(err, FM_ERR_NOMEM, "copy '%s': out of memory", from);
    fm_status st = FM_OK;
    for (;;) {
        ssize_t r = read(in, buf, cap);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            st = sys_error(err, "read", from, errno, false);
            break;
        }
        if (r == 0) break;
        st = fm_fs_write_all(out, buf, (size_t)r, to, err);
        if (st != FM_OK) break;
    }
    fm_free(buf);
    return st;
}

fm_status fm_fs_copy_file(const char *from, const char *to, fm_error *err) {
    int in, out;
    struct stat sb;
    fm_status st = fm_fs_open(from, O_RDONLY, 0, &in, err);
    if (st != FM_OK) return st;
    if (fstat(in, &sb) != 0) {
        st = sys_error(err, "stat", from, errno, false);
        close(in);
        return st;
    }
    st = fm_fs_open(to, O_WRONLY | O_CREAT | O_EXCL, sb.st_mode & 07777, &out, err);
    if (st != FM_OK) {
        close(in);
        return st;
    }
    st = copy_fd(in, out, from, to, err);
    if (st == FM_OK) st = fm_fs_fsync(out, to, err);
    close(in);
    fm_status cst = fm_fs_close(out, to, st == FM_OK ? err : NULL);
    if (st == FM_OK) st = cst;
    if (st != FM_OK) unlink(to);
    return st;
}

/* Reads exactly `len` bytes (a file that shrinks meanwhile is an I/O error). */
static fm_status read_exact(int fd, char *buf, size_t len, const char *path, fm_error *err) {
    size_t got = 0;
    while (got < len) {
        ssize_t r = read(fd, buf + got, len - got);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return sys_error(err, "read", path, errno, false);
        if (r == 0)
            return fm_error_set(err, FM_ERR_IO, "read '%s': file shrank while reading", path);
        got += (size_t)r;
    }
    return FM_OK;
}

fm_status fm_fs_read_file(const char *path, uint64_t max, char **out, size_t *out_len,
                          fm_error *err) {
    int fd;
    struct stat sb;
    memset(&sb, 0, sizeof sb);
    *out = NULL;
    *out_len = 0;
    fm_status st = fm_fs_open(path, O_RDONLY, 0, &fd, err);
    if (st != FM_OK) return st;
    if (fstat(fd, &sb) != 0) {
        st = sys_error(err, "stat", path, errno, false);
    } else if (!S_ISREG(sb.st_mode)) {
        st = fm_error_set(err, FM_ERR_IO, "read '%s': not a regular file", path);
    } else if ((uint64_t)sb.st_size > max) {
        st = fm_error_set(err, FM_ERR_LIMIT, "read '%s': %lld bytes exceed the limit of %llu", path,
                          (long long)sb.st_size, (unsigned long long)max);
    }
    char *buf = NULL;
    size_t len = (size_t)sb.st_size;
    if (st == FM_OK && !(buf = fm_malloc(len + 1)))
        st = fm_error_set(err, FM_ERR_NOMEM, "read '%s': out of memory", path);
    if (st == FM_OK) st = read_exact(fd, buf, len, path, err);
    close(fd);
    if (st != FM_OK) {
        fm_free(buf);
        return st;
    }
    buf[len] = '\0';
    *out = buf;
    *out_len = len;
    return FM_OK;
}

/* ---- names ----------------------------------------------------------------------------- */
char *fm_fs_join(const char *dir, const char *name) {
    size_t dl = strlen(dir), nl = strlen(name);
    bool slash = dl > 0 && dir[dl - 1] != '/';
    char *p = fm_malloc(dl + (slash ? 1 : 0) + nl + 1);
    if (!p) return NULL;
    memcpy(p, dir, dl);
    if (slash) p[dl++] = '/';
    memcpy(p + dl, name, nl + 1);
    return p;
}

/* 64 random bits: getrandom, mixed with a counter, the pid and the clock so that a failing
 * getrandom still gives distinct names. */
static uint64_t random_bits(void) {
    static _Atomic uint64_t counter;
    uint64_t r = 0;
    struct timespec ts;
    if (getrandom(&r, sizeof r, GRND_NONBLOCK) != (ssize_t)sizeof r) r = 0;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t c = atomic_fetch_add(&counter, 1);
    r ^= ((uint64_t)getpid() << 32) ^ (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20);
    r ^= c * 0x9e3779b97f4a7c15ull;
    return r;
}

char *fm_fs_temp_name(const char *dir, const char *base, const char *tag) {
    char leaf[NAME_MAX + 1];
    /* Keep the leaf within NAME_MAX: long bases are cut (the name only has to be unique). */
    int n = snprintf(leaf, sizeof leaf, ".%.200s.fusemap-%s%012llx", base, tag ? tag : "",
                     (unsigned long long)(random_bits() & 0xffffffffffffull));
    if (n < 0) return NULL;
    return fm_fs_join(dir, leaf);
}

#define FS_TEMP_TRIES 32

fm_status fm_fs_create_temp_file(const char *dir, const char *base, char **out_path, int *out_fd,
                                 fm_error *err) {
    *out_path = NULL;
    *out_fd = -1;
    for (int t = 0; t < FS_TEMP_TRIES; t++) {
        char *p = fm_fs_temp_name(dir, base, "");
        if (!p)
            return fm_error_set(err, FM_ERR_NOMEM, "temporary file in '%s': out of memory", dir);
        fm_status st = fm_fs_open(p, O_WRONLY | O_CREAT | O_EXCL, 0666, out_fd, err);
        if (st == FM_OK) {
            *out_path = p;
            return FM_OK;
        }
        fm_free(p);
        if (st != FM_ERR_EXISTS) return st;
    }
    return fm_error_set(err, FM_ERR_EXISTS, "temporary file in '%s': no free name", dir);
}

fm_status fm_fs_create_temp_dir(const char *dir, const char *base, char **out_path, fm_error *err) {
    *out_path = NULL;
    for (int t = 0; t < FS_TEMP_TRIES; t++) {
        char *p = fm_fs_temp_name(dir, base, "");
        if (!p)
            return fm_error_set(err, FM_ERR_NOMEM, "staging directory in '%s': out of memory", dir);
        fm_status st = fm_fs_mkdir(p, 0777, err);
        if (st == FM_OK) {
            *out_path = p;
            return FM_OK;
        }
        fm_free(p);
        if (st != FM_ERR_EXISTS) return st;
    }
    return fm_error_set(err, FM_ERR_EXISTS, "staging directory in '%s': no free name", dir);
}
