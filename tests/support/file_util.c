/* Test support: whole-file reads and comparisons, directory listings. */
#include "file_util.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

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

static int all_in(const char *a, const char *b, const char *const *skip, int compare) {
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
            fprintf(stderr, "  %s is in %s but not in %s\n", e->d_name, a, b);
            ok = 0;
        } else if (compare && !fm_test_same_file(pa, pb)) {
            fprintf(stderr, "  %s differs between %s and %s\n", e->d_name, a, b);
            ok = 0;
        }
    }
    if (d) closedir(d);
    return ok;
}

int fm_test_same_dir(const char *a, const char *b, const char *const *skip) {
    int x = all_in(a, b, skip, 1), y = all_in(b, a, skip, 0);
    return x && y;
}

int fm_test_write_file(const char *path, const void *data, size_t len) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = fwrite(data, 1, len, f);
    return (fclose(f) == 0 && w == len) ? 0 : -1;
}
