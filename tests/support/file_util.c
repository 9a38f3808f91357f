/* Test support: temporary directories, whole-file reads and writes, comparisons. */
#include "file_util.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

char *fm_test_tmpdir(const char *tag) {
    const char *base = getenv("FM_TEST_TMP");
    if (!base || !*base) base = "/tmp";
    size_t n = strlen(base) + strlen(tag) + 24;
    char *path = malloc(n);
    if (!path) return NULL;
    snprintf(path, n, "%s/fusemap-%s-XXXXXX", base, tag);
    if (!mkdtemp(path)) {
        free(path);
        return NULL;
    }
    return path;
}

char *fm_test_join(const char *a, const char *b) {
    size_t n = strlen(a) + strlen(b) + 2;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/%s", a, b);
    return p;
}

int fm_test_rmtree(const char *path) {
    struct stat sb;
    if (!path || lstat(path, &sb) != 0) return 0;
    if (!S_ISDIR(sb.st_mode)) return unlink(path);
    chmod(path, 0700);
    DIR *d = opendir(path);
    if (!d) return -1;
    struct dirent *e;
    int rc = 0;
    while ((e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char *c = fm_test_join(path, e->d_name);
        if (!c || fm_test_rmtree(c) != 0) rc = -1;
        free(c);
    }
    closedir(d);
    return rmdir(path) != 0 ? -1 : rc;
}

char *fm_test_read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    if (buf) buf[n] = '\0';
    if (buf && len) *len = (size_t)n;
    return buf;
}

int fm_test_same_file(const char *a, const char *b) {
    size_t la, lb;
    char *x = fm_test_read_file(a, &la), *y = fm_test_read_file(b, &lb);
    int same = x && y && la == lb && !memcmp(x, y, la);
    free(x);
    free(y);
    return same;
}

static int skipped(const char *name, const char *const *skip) {
    for (; skip && *skip; skip++)
        if (!strcmp(name, *skip)) return 1;
    return 0;
}

static int all_in(const char *a, const char *b, const char *const *skip, int compare, int verbose) {
    DIR *d = opendir(a);
    int ok = d != NULL;
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (e->d_name[0] == '.' || skipped(e->d_name, skip)) continue;
        char pa[4096], pb[4096];
        snprintf(pa, sizeof pa, "%s/%s", a, e->d_name);
        snprintf(pb, sizeof pb, "%s/%s", b, e->d_name);
        struct stat st;
        if (stat(pb, &st) != 0) {
            if (verbose) fprintf(stderr, "  %s is in %s but not in %s\n", e->d_name, a, b);
            ok = 0;
        } else if (compare && !fm_test_same_file(pa, pb)) {
            if (verbose) fprintf(stderr, "  %s differs between %s and %s\n", e->d_name, a, b);
            ok = 0;
        }
    }
    if (d) closedir(d);
    return ok;
}

int fm_test_same_dir(const char *a, const char *b, const char *const *skip) {
    int x = all_in(a, b, skip, 1, 1), y = all_in(b, a, skip, 0, 1);
    return x && y;
}

int fm_test_same_dir_quiet(const char *a, const char *b, const char *const *skip) {
    return all_in(a, b, skip, 1, 0) && all_in(b, a, skip, 0, 0);
}

int fm_test_write_file(const char *path, const void *data, size_t len) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = fwrite(data, 1, len, f);
    return (fclose(f) == 0 && w == len) ? 0 : -1;
}
