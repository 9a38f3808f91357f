/* Replays every seed corpus (fuzz/corpus/<harness>/) through its fuzz harness in-process, as
 * `make test` does without clang: no crash, sanitizer report or oracle failure, no corpus empty,
 * and each seed's accept/reject verdict as its name says (ok_* / bad_*, fuzz/README.md).
 * Also checks the archive helpers the harnesses share. */
#define FM_FUZZ_NO_ENTRY 1
#include "../fuzz/fuzz_checkpoint.c"
#include "../fuzz/fuzz_common.c"
#include "../fuzz/fuzz_config.c"
#include "../fuzz/fuzz_pattern.c"
#include "../fuzz/fuzz_pretrained.c"
#include "../fuzz/fuzz_size.c"
#include "../fuzz/fuzz_st_header.c"
#include "../fuzz/fuzz_template.c"
#include "../fuzz/fuzz_tokenizer.c"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "check.h"
#include "qwen_fixture.h"

typedef int (*harness_fn)(const uint8_t *data, size_t size);

static char corpus_root[2048];

/* $FM_FUZZ_CORPUS, else fuzz/corpus from the repository root (where run_tests.sh runs), else
 * relative to this source file. */
static int find_corpus(void) {
    const char *env = getenv("FM_FUZZ_CORPUS");
    const char *cands[] = {env, "fuzz/corpus", "../fuzz/corpus"};
    struct stat sb;
    for (size_t i = 0; i < sizeof cands / sizeof *cands; i++) {
        if (!cands[i] || stat(cands[i], &sb) || !S_ISDIR(sb.st_mode)) continue;
        snprintf(corpus_root, sizeof corpus_root, "%s", cands[i]);
        return 0;
    }
    char self[1024];
    snprintf(self, sizeof self, "%s", __FILE__);
    char *slash = strrchr(self, '/');
    if (!slash) return -1;
    snprintf(slash, sizeof self - (size_t)(slash - self), "/../fuzz/corpus");
    if (stat(self, &sb) || !S_ISDIR(sb.st_mode)) return -1;
    snprintf(corpus_root, sizeof corpus_root, "%s", self);
    return 0;
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Sorted names of the regular files in dir (caller frees each and the array). */
static char **list_files(const char *dir, size_t *n) {
    DIR *d = opendir(dir);
    char **v = NULL;
    *n = 0;
    if (!d) return NULL;
    for (struct dirent *e; (e = readdir(d));) {
        char path[4096 + 512];
        struct stat sb;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (e->d_name[0] == '.' || stat(path, &sb) || !S_ISREG(sb.st_mode)) continue;
        char **nv = realloc(v, (*n + 1) * sizeof *v);
        if (!nv) break;
        v = nv;
        if ((v[*n] = strdup(e->d_name))) (*n)++;
    }
    closedir(d);
    if (*n) qsort(v, *n, sizeof *v, cmp_str);
    return v;
}

/* The whole file in an exact-size heap block (so ASan sees any read past its end); NULL on
 * error. Caller frees with free(). */
static uint8_t *read_exact(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    struct stat sb;
    uint8_t *b = NULL;
    if (f && fstat(fileno(f), &sb) == 0 && (b = malloc(sb.st_size ? (size_t)sb.st_size : 1)) &&
        fread(b, 1, (size_t)sb.st_size, f) == (size_t)sb.st_size) {
        *len = (size_t)sb.st_size;
    } else {
        free(b);
        b = NULL;
    }
    if (f) fclose(f);
    return b;
}

/* Replays every seed of corpus/<name> and checks the harness's verdict against the seed's name
 * (ok_* accepted, bad_* rejected; fuzz/README.md). Returns the number replayed. */
static size_t replay_dir(const char *name, harness_fn fn) {
    char dir[4096];
    size_t n = 0, done = 0, ok = 0, bad = 0;
    snprintf(dir, sizeof dir, "%s/%s", corpus_root, name);
    char **files = list_files(dir, &n);
    for (size_t i = 0; i < n; i++) {
        char path[4096 + 512];
        size_t len = 0;
        snprintf(path, sizeof path, "%s/%s", dir, files[i]);
        int want = fmz_expected_verdict(files[i]);
        CHECK_MSG(want >= 0,
                  "seed %s/%s: the name must start with ok_ (accepted) or bad_ (rejected)", name,
                  files[i]);
        uint8_t *data = read_exact(path, &len);
        CHECK_MSG(data != NULL, "cannot read %s", path);
        fmz_take_verdict();
        if (data) fn(data, len), done++;
        int seen = fmz_take_verdict();
        CHECK_MSG(seen >= 0, "seed %s/%s: the harness reported no verdict (fmz_verdict)", name,
                  files[i]);
        if (want >= 0 && seen >= 0)
            CHECK_MSG(seen == want, "seed %s/%s: expected %s, the harness %s it", name, files[i],
                      want ? "accepted" : "rejected", seen ? "accepted" : "rejected");
        ok += seen == 1, bad += seen == 0;
        free(data);
        free(files[i]);
    }
    free(files);
    printf("corpus %-11s %zu inputs replayed: %zu accepted, %zu rejected\n", name, done, ok, bad);
    CHECK_MSG(ok > 0 && bad > 0,
              "corpus %s has seeds the harness accepts and seeds it rejects "
              "(%zu, %zu)",
              name, ok, bad);
    return done;
}

#define REPLAY_CASE(name)                                                                          \
    static void test_replay_##name(void) {                                                         \
        CHECK_MSG(corpus_root[0], "fuzz/corpus not found (set FM_FUZZ_CORPUS)");                   \
        if (corpus_root[0])                                                                        \
            CHECK_MSG(replay_dir(#name, fm_fuzz_##name) >= 8, "corpus %s has fewer than 8 inputs", \
                      #name);                                                                      \
    }
REPLAY_CASE(st_header)
REPLAY_CASE(checkpoint)
REPLAY_CASE(config)
REPLAY_CASE(pattern)
REPLAY_CASE(pretrained)
REPLAY_CASE(size)
REPLAY_CASE(template)
REPLAY_CASE(tokenizer)

/* Every corpus directory has a harness in this test (a new harness must be added above). */
static void test_every_corpus_has_a_harness(void) {
    static const char *const known[] = {"st_header",  "checkpoint", "config",   "pattern",
                                        "pretrained", "size",       "template", "tokenizer"};
    DIR *d = corpus_root[0] ? opendir(corpus_root) : NULL;
    CHECK(d != NULL);
    for (struct dirent *e; d && (e = readdir(d));) {
        if (e->d_name[0] == '.') continue;
        bool found = false;
        for (size_t i = 0; i < sizeof known / sizeof *known; i++)
            found |= !strcmp(known[i], e->d_name);
        CHECK_MSG(found, "fuzz/corpus/%s has no replay case in tests/test_fuzz_replay.c",
                  e->d_name);
    }
    if (d) closedir(d);
}

/* The archive format round-trips, clamps lengths, and names cannot leave the directory. */
static void test_archive_helpers(void) {
    uint8_t *buf = NULL;
    size_t len = 0;
    CHECK_EQ_INT(0, fmz_archive_add(&buf, &len, "config.json", "{}", 2));
    CHECK_EQ_INT(0, fmz_archive_add(&buf, &len, "../../etc/x", "abc", 3));
    CHECK_EQ_INT(0, fmz_archive_add(&buf, &len, "", "zz", 2));
    CHECK_EQ_INT(0, fmz_archive_add(&buf, &len, "tail", "0123456789", 10));
    fmz_file f[FMZ_MAX_FILES];
    size_t n = fmz_archive_parse(buf, len - 4, f, FMZ_MAX_FILES); /* last record cut short */
    CHECK_EQ_INT(3, n);
    CHECK_EQ_STR("config.json", f[0].name);
    CHECK_EQ_INT(2, f[0].len);
    CHECK_EQ_STR("_._.._etc_x", f[1].name);
    CHECK(f[1].len == 3 && !memcmp(f[1].data, "abc", 3));
    CHECK_EQ_STR("tail", f[2].name);
    CHECK_EQ_INT(6, f[2].len);
    char name[FMZ_MAX_NAME + 1];
    CHECK_EQ_INT(1, fmz_sanitize_name("..", 2, name));
    CHECK_EQ_STR("_.", name);
    CHECK_EQ_INT(0, fmz_sanitize_name("", 0, name));
    free(buf);
}

int main(void) {
    char *tmp = fm_test_tmpdir("fuzz-replay");
    if (tmp) setenv("FM_FUZZ_TMP", tmp, 1); /* the harnesses' scratch directories go here */
    find_corpus();
    RUN(test_archive_helpers);
    RUN(test_every_corpus_has_a_harness);
    RUN(test_replay_st_header);
    RUN(test_replay_checkpoint);
    RUN(test_replay_config);
    RUN(test_replay_pattern);
    RUN(test_replay_pretrained);
    RUN(test_replay_size);
    RUN(test_replay_template);
    RUN(test_replay_tokenizer);
    fmz_cleanup();
    if (tmp) fm_test_rmtree(tmp);
    free(tmp);
    TEST_END();
}
