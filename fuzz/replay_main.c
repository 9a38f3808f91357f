/* Stand-alone driver that replaces libFuzzer: linked with one harness, it runs every regular
 * file of each directory (or each file) named on the command line through
 * LLVMFuzzerTestOneInput once, in name order. A crash, sanitizer report or oracle failure ends
 * the process abnormally; otherwise it prints "replayed N inputs" and exits 0. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

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
    LLVMFuzzerTestOneInput(exact, n);
    free(exact);
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
        struct stat sb;
        long c = stat(argv[i], &sb) == 0 && S_ISDIR(sb.st_mode) ? run_dir(argv[i])
                                                                : (run_file(argv[i]) ? -1 : 1);
        if (c < 0) {
            fprintf(stderr, "replay: cannot read %s\n", argv[i]);
            return 2;
        }
        total += c;
    }
    printf("replayed %ld inputs\n", total);
    return 0;
}
