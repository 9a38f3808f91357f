/* Stand-alone driver that replaces libFuzzer: linked with one harness, it runs every regular
 * file of each directory (or each file) named on the command line through
 * LLVMFuzzerTestOneInput once, in name order. A crash, sanitizer report or oracle failure ends
 * the process abnormally. Each input's verdict (fmz_verdict) must match its name: ok_* accepted,
 * bad_* rejected (fuzz/README.md); a mismatch, a name with neither prefix or a missing verdict
 * is reported and makes the exit status 1. Otherwise it prints "replayed N inputs" and exits 0.
 *   replay_NAME [--list] DIR|FILE...   (--list: print each input's verdict, check nothing) */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int list_only, mismatches;

static int read_file(const char *path, uint8_t **out, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    uint8_t *b = NULL;
    size_t cap = 0, n = 0;
    for (;;) {
        if (cap - n < 65536) {
            uint8_t *nb = realloc(b, cap = cap ? 2 * cap : 65536);
            if (!nb) break;
            b = nb;
        }
        size_t r = fread(b + n, 1, cap - n, f);
        n += r;
        if (r == 0) break;
    }
    int bad = ferror(f) || !b;
    fclose(f);
    if (bad) return free(b), -1;
    *out = b, *len = n;
    return 0;
}

/* One input: the harness gets an exact-size heap copy, so ASan sees reads past the end. */
static int run_file(const char *path) {
    uint8_t *b = NULL, *exact = NULL;
    size_t n = 0;
    if (read_file(path, &b, &n)) {
        fprintf(stderr, "replay: cannot read %s\n", path);
        return -1;
    }
    exact = malloc(n ? n : 1);
    if (!exact) return free(b), -1;
    memcpy(exact, b, n);
    free(b);
    fmz_take_verdict();
    LLVMFuzzerTestOneInput(exact, n);
    free(exact);
    int seen = fmz_take_verdict();
    const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
    int want = fmz_expected_verdict(base);
    const char *said = seen == 1 ? "accepted" : seen == 0 ? "rejected" : "no verdict";
    if (list_only) {
        printf("%-9s %s\n", said, path);
    } else if (seen < 0 || want < 0 || seen != want) {
        mismatches++;
        fprintf(stderr, "replay: %s: %s, %s\n", path, said,
                want < 0 ? "but the name must start with ok_ or bad_"
                : want   ? "expected accepted (ok_*)"
                         : "expected rejected (bad_*)");
    }
    return 0;
}

static int cmp_names(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Every regular file of dir in name order; returns the count or -1. */
static long run_dir(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    char **names = NULL;
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char **nv = realloc(names, (n + 1) * sizeof *names);
        if (!nv || !(nv[n] = strdup(e->d_name))) return free(nv ? nv : names), closedir(d), -1;
        names = nv, n++;
    }
    closedir(d);
    if (n) qsort(names, n, sizeof *names, cmp_names);
    long count = 0;
    for (size_t i = 0; i < n; i++) {
        char path[4096];
        struct stat sb;
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        if (stat(path, &sb) == 0 && S_ISREG(sb.st_mode) && run_file(path) == 0) count++;
        free(names[i]);
    }
    free(names);
    return count;
}

int main(int argc, char **argv) {
    long total = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--list")) {
            list_only = 1;
            continue;
        }
        struct stat sb;
        long c = stat(argv[i], &sb) == 0 && S_ISDIR(sb.st_mode) ? run_dir(argv[i])
                                                                : (run_file(argv[i]) ? -1 : 1);
        if (c < 0) {
            fprintf(stderr, "replay: cannot read %s\n", argv[i]);
            return 2;
        }
        total += c;
    }
    printf("replayed %ld inputs%s\n", total, mismatches ? ", verdicts differ from names" : "");
    return mismatches ? 1 : 0;
}
