/* Helpers shared by the fuzz harnesses (see fuzz_common.h). Harness code, not library code:
 * plain libc allocation, and it may print right before it stops the process on a finding. */
#include "fuzz_common.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

void fmz_fail(const char *what, const char *detail) {
    fprintf(stderr, "FUZZ ORACLE FAILED: %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
    abort();
}

static int verdict = -1;

void fmz_verdict(int accepted) {
    verdict = accepted != 0;
}

int fmz_take_verdict(void) {
    int v = verdict;
    verdict = -1;
    return v;
}

int fmz_expected_verdict(const char *name) {
    return !strncmp(name, "ok_", 3) ? 1 : !strncmp(name, "bad_", 4) ? 0 : -1;
}

void fmz_note(const char *fmt, ...) {
    static int verbose = -1;
    if (verbose < 0) verbose = getenv("FM_FUZZ_VERBOSE") && atoi(getenv("FM_FUZZ_VERBOSE")) > 0;
    if (!verbose) return;
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

uint8_t fmz_u8(fmz_reader *r) {
    if (!r->n) return 0;
    r->n--;
    return *r->p++;
}

uint32_t fmz_u32(fmz_reader *r) {
    uint32_t v = 0;
    for (int i = 0; i < 4; i++)
        v |= (uint32_t)fmz_u8(r) << (8 * i);
    return v;
}

/* ---- archive ------------------------------------------------------------------------------- */
int fmz_sanitize_name(const char *in, size_t n, char out[FMZ_MAX_NAME + 1]) {
    size_t k = 0;
    for (size_t i = 0; i < n && k < FMZ_MAX_NAME; i++) {
        char c = in[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                 c == '.' || c == '_' || c == '-';
        out[k++] = ok ? c : '_';
    }
    out[k] = '\0';
    if (k && out[0] == '.') out[0] = '_'; /* no ".", "..", hidden or staging-like names */
    return k > 0;
}

size_t fmz_archive_parse(const uint8_t *d, size_t n, fmz_file *files, size_t max) {
    fmz_reader r = {d, n};
    size_t count = 0;
    while (r.n && count < max) {
        size_t nl = fmz_u8(&r);
        if (nl > r.n) nl = r.n;
        const char *name = (const char *)r.p;
        r.p += nl, r.n -= nl;
        size_t dl = fmz_u32(&r);
        if (dl > r.n) dl = r.n;
        fmz_file *f = &files[count];
        f->data = r.p, f->len = dl;
        r.p += dl, r.n -= dl;
        if (fmz_sanitize_name(name, nl, f->name)) count++;
    }
    return count;
}

int fmz_archive_add(uint8_t **buf, size_t *len, const char *name, const void *data, size_t dlen) {
    size_t nl = strlen(name);
    if (nl > 255 || dlen > UINT32_MAX) return -1;
    uint8_t *b = realloc(*buf, *len + 1 + nl + 4 + dlen);
    if (!b) return -1;
    uint8_t *p = b + *len;
    *p++ = (uint8_t)nl;
    memcpy(p, name, nl), p += nl;
    for (int i = 0; i < 4; i++)
        *p++ = (uint8_t)(dlen >> (8 * i));
    if (dlen) memcpy(p, data, dlen);
    *buf = b;
    *len += 1 + nl + 4 + dlen;
    return 0;
}

/* ---- scratch directory ----------------------------------------------------------------------- */
static char scratch[4096];

static int usable_dir(const char *d) {
    struct stat sb;
    return d && *d && stat(d, &sb) == 0 && S_ISDIR(sb.st_mode) && access(d, W_OK | X_OK) == 0;
}

static const char *scratch_dir(void) {
    if (scratch[0]) return scratch;
    const char *cands[] = {getenv("FM_FUZZ_TMP"), "/dev/shm", getenv("TMPDIR"), "/tmp"};
    for (size_t i = 0; i < sizeof cands / sizeof *cands; i++) {
        if (!usable_dir(cands[i])) continue;
        char tmp[sizeof scratch];
        if (snprintf(tmp, sizeof tmp, "%s/fusemap-fuzz-XXXXXX", cands[i]) >= (int)sizeof tmp)
            continue;
        if (!mkdtemp(tmp)) continue;
        memcpy(scratch, tmp, sizeof scratch);
        atexit(fmz_cleanup);
        return scratch;
    }
    return NULL;
}

int fmz_path(const char *sub, char *buf, size_t size) {
    const char *base = scratch_dir();
    if (!base) return -1;
    int w = snprintf(buf, size, "%s/%s", base, sub);
    return w < 0 || (size_t)w >= size ? -1 : 0;
}

/* Removes the entries of the open directory dfd, recursing (depth-limited) into directories;
 * entries that cannot be removed are left (the loop ends when getdents64 has nothing more).
 * getdents64 into a stack buffer instead of nftw/opendir: those allocate tens of kilobytes per
 * call, which under ASan dominated the time of the directory harnesses. */
static void rm_contents(int dfd, int depth) {
    char buf[4096] __attribute__((aligned(8)));
    for (;;) {
        long n = syscall(SYS_getdents64, dfd, buf, sizeof buf);
        if (n <= 0) return;
        for (long off = 0; off < n;) {
            struct dirent64 *e = (struct dirent64 *)(void *)(buf + off);
            off += e->d_reclen;
            const char *nm = e->d_name;
            if (!strcmp(nm, ".") || !strcmp(nm, "..")) continue;
            if (unlinkat(dfd, nm, 0) == 0 || depth >= 16) continue;
            int sub = openat(dfd, nm, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (sub < 0 && fchmodat(dfd, nm, 0700, 0) == 0) /* a save may leave read-only dirs */
                sub = openat(dfd, nm, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (sub >= 0) rm_contents(sub, depth + 1), close(sub);
            unlinkat(dfd, nm, AT_REMOVEDIR);
        }
    }
}

void fmz_rmtree(const char *path) {
    if (!path || !*path) return;
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        unlink(path);
        return;
    }
    rm_contents(fd, 0);
    close(fd);
    rmdir(path);
}

int fmz_dir_fresh(const char *dir) {
    fmz_rmtree(dir);
    return mkdir(dir, 0700) == 0 || errno == EEXIST ? 0 : -1;
}

static int write_all(const char *path, const uint8_t *p, size_t n) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) return -1;
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w <= 0) {
            close(fd);
            return -1;
        }
        p += w, n -= (size_t)w;
    }
    return close(fd);
}

int fmz_write_files(const char *dir, const fmz_file *files, size_t n) {
    char path[4096 + FMZ_MAX_NAME + 2];
    for (size_t i = 0; i < n; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, files[i].name);
        if (write_all(path, files[i].data, files[i].len)) return -1;
    }
    return 0;
}

void fmz_cleanup(void) {
    if (!scratch[0]) return;
    fmz_rmtree(scratch);
    scratch[0] = '\0';
}

/* ---- memory touching ------------------------------------------------------------------------- */
uint32_t fmz_touch(const void *p, size_t n) {
    const uint8_t *b = p;
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 16777619u;
    return h;
}

static volatile uint32_t fmz_sink_value;
void fmz_sink(uint32_t v) {
    fmz_sink_value ^= v;
}
