/* Checkpoint save tests: size strings, the greedy shard split, index bytes, saves over existing
 * checkpoints (stale weights dropped, other files kept), and failure sweeps (injected faults,
 * RLIMIT_FSIZE, permissions) that must leave the destination exactly as it was. */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/testing.h"
#include "fusemap/io.h"
#include "io/fsutil.h"
#include "support/check.h"
#include "support/wr_fixtures.h"

static bool quick(void) {
    return getenv("FM_TEST_QUICK") != NULL;
}

/* ---- size strings ------------------------------------------------------------------------- */
static void test_parse_size(void) {
    static const struct {
        const char *s;
        uint64_t v;
    } ok[] = {
        {"5GB", 5000000000ull},
        {"500MB", 500000000ull},
        {"10GiB", 10737418240ull},
        {"100", 100},
        {"5Gb", 625000000ull},
        {"5gb", 625000000ull},
        {"5gB", 5000000000ull},
        {"1KiB", 1024},
        {"1kib", 1024},
        {"3KB", 3000},
        {"3Kb", 375},
        {"7Mb", 875000},
        {"2TB", 2000000000000ull},
        {"1TiB", 1099511627776ull},
        {"1Tb", 125000000000ull},
        {"0", 0},
        {"50GB", FM_DEFAULT_MAX_SHARD_SIZE},
        {" 5 GB", 5000000000ull},
        {"9Kb", 1125},
        {"1Kb", 125},
    };
    fm_error eb, *err = &eb;
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        uint64_t v = 12345;
        CHECK_OK(fm_parse_size(ok[i].s, &v, err), err);
        CHECK_MSG(v == ok[i].v, "'%s': expected %llu, seen %llu", ok[i].s,
                  (unsigned long long)ok[i].v, (unsigned long long)v);
    }
    const char *bad[] = {"",    "GB", "5 G",  "5XB",   "-5GB", "5.5GB",
                         "abc", "5B", "0x10", "5GiBb", "+5",   "5 5MB"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        uint64_t v;
        CHECK_STATUS(FM_ERR_INVALID_ARG, fm_parse_size(bad[i], &v, err), err);
        char quoted[32];
        snprintf(quoted, sizeof quoted, "'%s'", bad[i]);
        CHECK_CONTAINS(err->msg, quoted);
    }
    uint64_t v;
    CHECK_STATUS(FM_ERR_OVERFLOW, fm_parse_size("99999999999999999999", &v, err), err);
    CHECK_STATUS(FM_ERR_OVERFLOW, fm_parse_size("20000000TiB", &v, err), err);
    CHECK_OK(fm_parse_size("18446744073709551615", &v, err), err);
    CHECK(v == UINT64_MAX);
}

/* ---- fixtures ----------------------------------------------------------------------------- */
typedef struct tset {
    size_t n;
    fm_tensor t[16];
    fm_st_item items[16];
    char names[16][32];
} tset;

/* U8 tensors of the given byte sizes (random data) with the given names. */
static void tset_make(tset *s, const uint64_t *sizes, const char *const *names, size_t n,
                      uint64_t seed) {
    memset(s, 0, sizeof *s);
    s->n = n;
    for (size_t i = 0; i < n; i++) {
        int64_t d = (int64_t)sizes[i];
        CHECK(wrfx_tensor(&s->t[i], FM_DTYPE_U8, 1, &d, NULL, seed * 100 + i) == 0);
        snprintf(s->names[i], sizeof s->names[i], "%s", names[i]);
        s->items[i] = (fm_st_item){s->names[i], &s->t[i]};
    }
}

static void tset_free(tset *s) {
    for (size_t i = 0; i < s->n; i++)
        fm_tensor_free(&s->t[i]);
}

/* The reference bytes of one shard: the subset (indices) written with {"format":"pt"}. */
static uint8_t *shard_bytes(const tset *s, const int *idx, size_t k, size_t *len) {
    fm_st_item sub[16];
    for (size_t i = 0; i < k; i++)
        sub[i] = s->items[idx[i]];
    fm_st_kv kv = {"format", "pt"};
    fm_st_write_options o;
    fm_st_write_options_init(&o);
    o.metadata = &kv;
    o.n_metadata = 1;
    FILE *f = tmpfile();
    int fd = fileno(f);
    fm_error eb;
    CHECK_OK(fm_st_write_fd(fd, "ref", sub, k, &o, &eb), &eb);
    off_t sz = lseek(fd, 0, SEEK_END);
    uint8_t *b = malloc(sz > 0 ? (size_t)sz : 1);
    ssize_t r = sz > 0 ? pread(fd, b, (size_t)sz, 0) : 0;
    *len = r > 0 ? (size_t)r : 0;
    fclose(f);
    return b;
}

static void check_file_bytes(const char *dir, const char *name, const uint8_t *exp,
                             size_t exp_len) {
    char *p = wrfx_join(dir, name);
    size_t len = 0;
    uint8_t *got = wrfx_read(p, &len);
    CHECK_MSG(got && len == exp_len && memcmp(got, exp, exp_len) == 0,
              "'%s': %zu bytes, expected %zu%s", name, got ? len : 0, exp_len,
              got ? "" : " (missing)");
    free(got);
    free(p);
}

static void check_shard(const char *dir, const char *name, const tset *s, const int *idx,
                        size_t k) {
    size_t len;
    uint8_t *exp = shard_bytes(s, idx, k, &len);
    check_file_bytes(dir, name, exp, len);
    free(exp);
}

/* Loads DIR with the reader and compares every tensor of the set byte for byte. */
static void check_loads(const char *dir, const tset *s, bool sharded) {
    fm_error eb, *err = &eb;
    fm_checkpoint *c = NULL;
    CHECK_OK(fm_checkpoint_open(dir, &c, err), err);
    if (!c) return;
    CHECK_EQ_INT(sharded, fm_checkpoint_is_sharded(c));
    CHECK_EQ_INT(s->n, fm_checkpoint_count(c));
    for (size_t i = 0; i < s->n; i++) {
        long k = fm_checkpoint_find(c, s->names[i]);
        CHECK_MSG(k >= 0, "tensor '%s' missing", s->names[i]);
        if (k < 0) continue;
        fm_tensor t;
        CHECK_OK(fm_checkpoint_tensor(c, (size_t)k, &t, err), err);
        CHECK(t.nbytes == s->t[i].nbytes &&
              (!t.nbytes || !memcmp(t.data, s->t[i].data, (size_t)t.nbytes)));
        fm_tensor_free(&t);
    }
    fm_checkpoint_close(c);
}

/* Entry names of dir (not recursive, without . and ..) joined by ',' in sorted order. */
static void dir_listing(const char *dir, char *out, size_t cap) {
    wrfx_snap s;
    out[0] = '\0';
    if (wrfx_snapshot(dir, &s) != 0) return;
    for (size_t i = 0; i < s.n; i++) {
        if (!strcmp(s.v[i].path, ".") || strchr(s.v[i].path, '/')) continue;
        size_t l = strlen(out);
        snprintf(out + l, cap - l, "%s%s", l ? "," : "", s.v[i].path);
    }
    wrfx_snap_free(&s);
}

static fm_status save(const char *dir, const tset *s, const fm_extra_file *ex, size_t nex,
                      uint64_t max, fm_error *err) {
    fm_save_options o;
    fm_save_options_init(&o);
    o.max_shard_size = max;
    return fm_checkpoint_save(dir, s->items, s->n, ex, nex, &o, err);
}

/* ---- layouts ------------------------------------------------------------------------------ */

/* One shard: model.safetensors only (no index), {"format":"pt"} metadata; the directory is created.
 */
static void test_single_shard(void) {
    char *root = wrfx_mkdtemp(), *dir = wrfx_join(root, "out");
    tset s;
    const char *names[] = {"w", "b", "a"};
    tset_make(&s, (uint64_t[]){16, 8, 3}, names, 3, 1);
    s.t[0].dtype = FM_DTYPE_F32;
    s.t[0].shape.dims[0] = 4; /* 16 bytes as 4 x F32 */
    fm_extra_file cfg = {"config.json", "{\"a\": 1}\n", 9};
    fm_error eb, *err = &eb;
    fm_save_options defaults;
    fm_save_options_init(&defaults);
    CHECK_EQ_INT(FM_DEFAULT_MAX_SHARD_SIZE, defaults.max_shard_size);
    CHECK(defaults.write_total_parameters);
    CHECK_OK(fm_checkpoint_save(dir, s.items, 3, &cfg, 1, NULL, err), err);
    char list[512];
    dir_listing(dir, list, sizeof list);
    CHECK_EQ_STR("config.json,model.safetensors", list);
    check_shard(dir, "model.safetensors", &s, (int[]){0, 1, 2}, 3);
    check_file_bytes(dir, "config.json", (const uint8_t *)"{\"a\": 1}\n", 9);
    char *mp = wrfx_join(dir, "model.safetensors");
    size_t len;
    uint8_t *b = wrfx_read(mp, &len);
    const char *head = "{\"__metadata__\":{\"format\":\"pt\"},\"w\":{";
    CHECK(b && len > 40 && !memcmp(b + 8, head, strlen(head)));
    free(b);
    free(mp);
    check_loads(dir, &s, false);
    CHECK_EQ_INT(0, wrfx_count_prefix(root, ".out.fusemap-"));
    tset_free(&s);
    wrfx_rmrf(root);
    free(dir);
    free(root);
}

static const char *const split_names[] = {"layers.10.w", "layers.2.w", "embed",
                                          "Zed",         "layers.1.b", "\xc3\xa9\xf0\x9f\x98\x80"};

/* Sizes [6,6,2,6,2,2], limit 10 -> [6], [6,2], [6,2,2]; the index as transformers writes it
 * (sorted keys by code point, indent 2, ensure_ascii, trailing newline). */
static void test_greedy_split(void) {
    char *root = wrfx_mkdtemp(), *dir = wrfx_join(root, "ck");
    tset s;
    tset_make(&s, (uint64_t[]){6, 6, 2, 6, 2, 2}, split_names, 6, 2);
    fm_error eb, *err = &eb;
    CHECK_OK(save(dir, &s, NULL, 0, 10, err), err);
    char list[512];
    dir_listing(dir, list, sizeof list);
    CHECK_EQ_STR("model-00001-of-00003.safetensors,model-00002-of-00003.safetensors,"
                 "model-00003-of-00003.safetensors,model.safetensors.index.json",
                 list);
    check_shard(dir, "model-00001-of-00003.safetensors", &s, (int[]){0}, 1);
    check_shard(dir, "model-00002-of-00003.safetensors", &s, (int[]){1, 2}, 2);
    check_shard(dir, "model-00003-of-00003.safetensors", &s, (int[]){3, 4, 5}, 3);
    const char *index = "{\n"
                        "  \"metadata\": {\n"
                        "    \"total_parameters\": 24,\n"
                        "    \"total_size\": 24\n"
                        "  },\n"
                        "  \"weight_map\": {\n"
                        "    \"Zed\": \"model-00003-of-00003.safetensors\",\n"
                        "    \"embed\": \"model-00002-of-00003.safetensors\",\n"
                        "    \"layers.1.b\": \"model-00003-of-00003.safetensors\",\n"
                        "    \"layers.10.w\": \"model-00001-of-00003.safetensors\",\n"
                        "    \"layers.2.w\": \"model-00002-of-00003.safetensors\",\n"
                        "    \"\\u00e9\\ud83d\\ude00\": \"model-00003-of-00003.safetensors\"\n"
                        "  }\n"
                        "}\n";
    check_file_bytes(dir, "model.safetensors.index.json", (const uint8_t *)index, strlen(index));
    check_loads(dir, &s, true);

    /* total_parameters: caller's value, or left out */
    fm_save_options o;
    fm_save_options_init(&o);
    o.max_shard_size = 10;
    o.total_parameters = 1234;
    CHECK_OK(fm_checkpoint_save(dir, s.items, s.n, NULL, 0, &o, err), err);
    char *ip = wrfx_join(dir, "model.safetensors.index.json");
    size_t len;
    char *text = (char *)wrfx_read(ip, &len);
    CHECK(text && len > 60 &&
          !memcmp(
              text,
              "{\n  \"metadata\": {\n    \"total_parameters\": 1234,\n    \"total_size\": 24\n  },",
              70));
    free(text);
    o.write_total_parameters = false;
    CHECK_OK(fm_checkpoint_save(dir, s.items, s.n, NULL, 0, &o, err), err);
    text = (char *)wrfx_read(ip, &len);
    CHECK(text && len > 50 &&
          !memcmp(text, "{\n  \"metadata\": {\n    \"total_size\": 24\n  },\n  \"weight_map\": {\n",
                  62));
    free(text);
    free(ip);
    tset_free(&s);
    wrfx_rmrf(root);
    free(dir);
    free(root);
}

/* An oversized tensor is a shard of its own at once, numbered before the open shard; equal to the
 * limit still fits (strictly-greater rule); no tensors gives an empty model.safetensors. */
static void test_split_edges(void) {
    char *root = wrfx_mkdtemp(), *dir = wrfx_join(root, "ck");
    fm_error eb, *err = &eb;
    tset s;
    const char *names[] = {"a", "b", "c", "d"};
    tset_make(&s, (uint64_t[]){4, 12, 4, 4}, names, 4, 3);
    CHECK_OK(save(dir, &s, NULL, 0, 10, err), err);
    check_shard(dir, "model-00001-of-00003.safetensors", &s, (int[]){1}, 1);
    check_shard(dir, "model-00002-of-00003.safetensors", &s, (int[]){0, 2}, 2);
    check_shard(dir, "model-00003-of-00003.safetensors", &s, (int[]){3}, 1);
    check_loads(dir, &s, true);
    tset_free(&s);

    tset_make(&s, (uint64_t[]){5, 5}, names, 2, 4); /* 5 + 5 == 10: one shard */
    CHECK_OK(save(dir, &s, NULL, 0, 10, err), err);
    char list[512];
    dir_listing(dir, list, sizeof list);
    CHECK_EQ_STR("model.safetensors", list);
    check_shard(dir, "model.safetensors", &s, (int[]){0, 1}, 2);
    tset_free(&s);

    tset_make(&s, (uint64_t[]){11}, names, 1, 5); /* one oversized tensor: still a single file */
    CHECK_OK(save(dir, &s, NULL, 0, 10, err), err);
    dir_listing(dir, list, sizeof list);
    CHECK_EQ_STR("model.safetensors", list);
    tset_free(&s);

    tset_make(&s, NULL, names, 0, 6);
    CHECK_OK(save(dir, &s, NULL, 0, 10, err), err);
    const char *empty = "{\"__metadata__\":{\"format\":\"pt\"}}"; /* 32 bytes: no padding */
    uint8_t exp[40] = {32};
    memcpy(exp + 8, empty, 32);
    check_file_bytes(dir, "model.safetensors", exp, 40);
    wrfx_rmrf(root);
    free(dir);
    free(root);
}

/* ---- saves over existing checkpoints ----------------------------------------------------------
 */

/* A sharded checkpoint (3 shards) with unrelated files: tokenizer.json, README.md, a subdirectory
 * with a file, a symlink, and a variant weights file that is not ours. */
static void make_existing(const char *dir, tset *s) {
    fm_error eb, *err = &eb;
    tset_make(s, (uint64_t[]){6, 6, 2, 6, 2, 2}, split_names, 6, 7);
    CHECK_OK(save(dir, s, NULL, 0, 10, err), err);
    char *p = wrfx_join(dir, "tokenizer.json");
    CHECK(wrfx_write(p, "{\"tok\": true}", 13) == 0);
    free(p);
    p = wrfx_join(dir, "README.md");
    CHECK(wrfx_write(p, "# model\n", 8) == 0);
    free(p);
    p = wrfx_join(dir, "assets");
    CHECK(mkdir(p, 0750) == 0);
    char *q = wrfx_join(p, "x.txt");
    CHECK(wrfx_write(q, "asset", 5) == 0);
    free(q);
    free(p);
    p = wrfx_join(dir, "readme.link");
    CHECK(symlink("README.md", p) == 0);
    free(p);
    p = wrfx_join(dir, "model.fp16.safetensors");
    CHECK(wrfx_write(p, "variant", 7) == 0);
    free(p);
    chmod(dir, 0751);
}

/* Sharded -> single -> sharded: stale weights go, everything else stays with its bytes, the
 * directory keeps its mode, the result loads. */
static void test_resave_over_existing(void) {
    char *root = wrfx_mkdtemp(), *dir = wrfx_join(root, "ck");
    fm_error eb, *err = &eb;
    tset old, s;
    make_existing(dir, &old);
    const char *names[] = {"new.a", "new.b"};
    tset_make(&s, (uint64_t[]){7, 9}, names, 2, 8);
    fm_extra_file cfg = {"config.json", "{}", 2};
    CHECK_OK(save(dir, &s, &cfg, 1, 100, err), err);
    char list[512];
    dir_listing(dir, list, sizeof list);
    CHECK_EQ_STR("README.md,assets,config.json,model.fp16.safetensors,model.safetensors,readme."
                 "link,tokenizer.json",
                 list);
    check_file_bytes(dir, "tokenizer.json", (const uint8_t *)"{\"tok\": true}", 13);
    check_file_bytes(dir, "README.md", (const uint8_t *)"# model\n", 8);
    check_file_bytes(dir, "assets/x.txt", (const uint8_t *)"asset", 5);
    check_file_bytes(dir, "readme.link", (const uint8_t *)"# model\n", 8);
    check_shard(dir, "model.safetensors", &s, (int[]){0, 1}, 2);
    check_loads(dir, &s, false);
    struct stat sb;
    CHECK(stat(dir, &sb) == 0 && (sb.st_mode & 07777) == 0751);
    char *ap = wrfx_join(dir, "assets");
    CHECK(stat(ap, &sb) == 0 && (sb.st_mode & 07777) == 0750);
    free(ap);

    /* single -> sharded; config.json replaced by a new extra */
    fm_extra_file cfg2 = {"config.json", "{\"v\": 2}", 8};
    CHECK_OK(save(dir, &old, &cfg2, 1, 10, err), err);
    dir_listing(dir, list, sizeof list);
    CHECK_EQ_STR(
        "README.md,assets,config.json,model-00001-of-00003.safetensors,"
        "model-00002-of-00003.safetensors,model-00003-of-00003.safetensors,model.fp16.safetensors,"
        "model.safetensors.index.json,readme.link,tokenizer.json",
        list);
    check_file_bytes(dir, "config.json", (const uint8_t *)"{\"v\": 2}", 8);
    check_loads(dir, &old, true);
    CHECK_EQ_INT(0, wrfx_count_prefix(root, ".ck.fusemap-"));
    tset_free(&old);
    tset_free(&s);
    wrfx_rmrf(root);
    free(dir);
    free(root);
}

/* Shards named only in the old index (non-standard names) are dropped too; an unparsable old
 * index is ignored (pattern-named shards still go). */
static void test_old_index_names(void) {
    char *root = wrfx_mkdtemp(), *dir = wrfx_join(root, "ck");
    CHECK(mkdir(dir, 0755) == 0);
    const char *idx =
        "{\"metadata\":{},\"weight_map\":{\"a\":\"model.safetensors-00001-of-00002.safetensors\","
        "\"b\":\"weights-b.safetensors\",\"c\":\"../escape.safetensors\",\"d\":\"notes.txt\"}}";
    const char *files[] = {"model.safetensors.index.json",
                           "model.safetensors-00001-of-00002.safetensors", "weights-b.safetensors",
                           "notes.txt", "model-00002-of-00002.safetensors"};
    for (int i = 0; i < 5; i++) {
        char *p = wrfx_join(dir, files[i]);
        CHECK(wrfx_write(p, i ? "x" : idx, i ? 1 : strlen(idx)) == 0);
        free(p);
    }
    char *esc = wrfx_join(root, "escape.safetensors");
    CHECK(wrfx_write(esc, "keep", 4) == 0);
    tset s;
    const char *names[] = {"t"};
    tset_make(&s, (uint64_t[]){3}, names, 1, 9);
    fm_error eb, *err = &eb;
    CHECK_OK(save(dir, &s, NULL, 0, 100, err), err);
    char list[256];
    dir_listing(dir, list, sizeof list);
    CHECK_EQ_STR("model.safetensors,notes.txt", list);
    CHECK(wrfx_exists(esc));
    /* garbage index */
    char *p = wrfx_join(dir, "model.safetensors.index.json");
    CHECK(wrfx_write(p, "not json", 8) == 0);
    free(p);
    p = wrfx_join(dir, "model-00001-of-00009.safetensors");
    CHECK(wrfx_write(p, "x", 1) == 0);
    free(p);
    CHECK_OK(save(dir, &s, NULL, 0, 100, err), err);
    dir_listing(dir, list, sizeof list);
    CHECK_EQ_STR("model.safetensors,notes.txt", list);
    tset_free(&s);
    free(esc);
    wrfx_rmrf(root);
    free(dir);
    free(root);
}

/* Loading from DIR and saving the loaded views (mapped from the files being replaced) back into
 * DIR with another shard size: the data survives (the old files stay until the commit). */
static void test_resave_from_own_views(void) {
    char *root = wrfx_mkdtemp(), *dir = wrfx_join(root, "ck");
    tset orig;
    make_existing(dir, &orig);
    fm_error eb, *err = &eb;
    fm_checkpoint *c = NULL;
    CHECK_OK(fm_checkpoint_open(dir, &c, err), err);
    size_t n = c ? fm_checkpoint_count(c) : 0;
    fm_tensor views[16];
    fm_st_item items[16];
    for (size_t i = 0; i < n && i < 16; i++) {
        CHECK_OK(fm_checkpoint_tensor(c, i, &views[i], err), err);
        items[i] = (fm_st_item){fm_checkpoint_entry_at(c, i)->name, &views[i]};
    }
    fm_save_options o;
    fm_save_options_init(&o);
    CHECK_OK(fm_checkpoint_save(dir, items, n, NULL, 0, &o, err), err);
    fm_checkpoint_close(c);
    for (size_t i = 0; i < n; i++)
        fm_tensor_free(&views[i]);
    check_loads(dir, &orig, false);
    tset_free(&orig);
    wrfx_rmrf(root);
    free(dir);
    free(root);
}

/* ---- failure sweeps ------------------------------------------------------------------------ */
static const char *fault_name(fm_fault_kind k) {
    static const char *const n[] = {"alloc", "write", "fsync", "rename", "open"};
    return (unsigned)k < 5 ? n[k] : "?";
}

/* For N = 1.. until a save succeeds: the N-th call of `kind` fails; the save reports an error
 * that names the failure, DIR keeps exactly its files and bytes, the parent holds no staging
 * directory. `fresh`: DIR does not exist before (it must still not exist after a failure). */
static void fault_sweep(fm_fault_kind kind, bool fresh, bool no_exchange) {
    char *root = wrfx_mkdtemp(), *dir = wrfx_join(root, "ck");
    tset old, s;
    if (!fresh) make_existing(dir, &old);
    const char *names[] = {"n.a", "n.b", "n.c"};
    tset_make(&s, (uint64_t[]){40, 30, 20}, names, 3, 11);
    fm_extra_file ex[2] = {{"config.json", "{\"new\": 1}", 10}, {"README.md", "# new\n", 6}};
    wrfx_snap before;
    CHECK(wrfx_snapshot(dir, &before) == 0);
    fm_fs_set_exchange_disabled(no_exchange);
    fm_error eb, *err = &eb;
    int failures = 0;
    uint64_t nth;
    for (nth = 1; nth < 1000; nth++) {
        fm_fault_set(kind, nth);
        fm_status st = save(dir, &s, ex, 2, 50, err);
        fm_fault_set(kind, 0);
        if (st == FM_OK) break;
        failures++;
        if (kind == FM_FAULT_ALLOC)
            CHECK_STATUS(FM_ERR_NOMEM, st, err);
        else
            CHECK_CONTAINS(err->msg, "injected");
        wrfx_snap after;
        char why[512];
        CHECK(wrfx_snapshot(dir, &after) == 0);
        CHECK_MSG(wrfx_snap_equal(&before, &after, why, sizeof why), "%s #%llu (%s): %s",
                  fault_name(kind), (unsigned long long)nth, err->msg, why);
        wrfx_snap_free(&after);
        CHECK_MSG(wrfx_count_prefix(root, ".ck.fusemap-") == 0, "%s #%llu: staging left behind",
                  fault_name(kind), (unsigned long long)nth);
        if (fm_t_case_failed) break;
    }
    fm_fs_set_exchange_disabled(false);
    CHECK_MSG(failures > 0, "%s: no failure injected", fault_name(kind));
    CHECK_MSG(nth < 1000, "%s: never succeeded", fault_name(kind));
    /* the successful save: new weights and extras, old unrelated files kept */
    check_shard(dir, "model-00001-of-00002.safetensors", &s, (int[]){0}, 1);
    check_shard(dir, "model-00002-of-00002.safetensors", &s, (int[]){1, 2}, 2);
    check_file_bytes(dir, "README.md", (const uint8_t *)"# new\n", 6);
    if (!fresh) check_file_bytes(dir, "tokenizer.json", (const uint8_t *)"{\"tok\": true}", 13);
    CHECK_EQ_INT(0, wrfx_count_prefix(root, ".ck.fusemap-"));
    wrfx_snap_free(&before);
    if (!fresh) tset_free(&old);
    tset_free(&s);
    wrfx_rmrf(root);
    free(dir);
    free(root);
}

static void test_fault_sweep_existing(void) {
    const fm_fault_kind kinds[] = {FM_FAULT_WRITE, FM_FAULT_FSYNC, FM_FAULT_RENAME, FM_FAULT_OPEN,
                                   FM_FAULT_ALLOC};
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++)
        fault_sweep(kinds[k], false, false);
}

static void test_fault_sweep_fresh(void) {
    const fm_fault_kind kinds[] = {FM_FAULT_WRITE, FM_FAULT_FSYNC, FM_FAULT_RENAME, FM_FAULT_OPEN,
                                   FM_FAULT_ALLOC};
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++)
        fault_sweep(kinds[k], true, false);
}

/* Without RENAME_EXCHANGE (as on file systems that lack it): the two-rename fallback. */
static void test_fault_sweep_fallback(void) {
    const fm_fault_kind kinds[] = {FM_FAULT_FSYNC, FM_FAULT_RENAME, FM_FAULT_OPEN};
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++)
        fault_sweep(kinds[k], false, true);
}

/* RLIMIT_FSIZE half way through a shard (in a child, SIGXFSZ ignored so write fails with EFBIG). */
static void test_rlimit_fsize(void) {
    char *root = wrfx_mkdtemp(), *dir = wrfx_join(root, "ck");
    tset old, s;
    make_existing(dir, &old);
    const char *names[] = {"big.a", "big.b"};
    tset_make(&s, (uint64_t[]){200000, 300000}, names, 2, 12);
    wrfx_snap before, after;
    CHECK(wrfx_snapshot(dir, &before) == 0);
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        signal(SIGXFSZ, SIG_IGN);
        struct rlimit rl = {250000, 250000};
        setrlimit(RLIMIT_FSIZE, &rl);
        fm_error eb;
        fm_status st = save(dir, &s, NULL, 0, FM_DEFAULT_MAX_SHARD_SIZE, &eb);
        int ok = st == FM_ERR_IO && strstr(eb.msg, "File too large") != NULL;
        if (!ok) fprintf(stderr, "child: %s: %s\n", fm_status_name(st), eb.msg);
        _exit(ok ? 0 : 1);
    }
    int status = 0;
    CHECK(pid > 0 && waitpid(pid, &status, 0) == pid);
    CHECK_MSG(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %d", status);
    char why[512];
    CHECK(wrfx_snapshot(dir, &after) == 0);
    CHECK_MSG(wrfx_snap_equal(&before, &after, why, sizeof why), "%s", why);
    CHECK_EQ_INT(0, wrfx_count_prefix(root, ".ck.fusemap-"));
    wrfx_snap_free(&before);
    wrfx_snap_free(&after);
    tset_free(&old);
    tset_free(&s);
    wrfx_rmrf(root);
    free(dir);
    free(root);
}

/* As root, saves run in a child that drops to uid/gid 65534 (root ignores permission bits). */
#define NOBODY 65534

/* In a child: drops to NOBODY (when root), then checks `dir` can be reached (stat). Exit codes:
 * 0 reached, 2 could not drop privileges, 3 could not reach it. */
static int probe_unprivileged(const char *dir) {
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        if (geteuid() == 0 && (setgid(NOBODY) != 0 || setuid(NOBODY) != 0)) _exit(2);
        struct stat sb;
        _exit(dir && stat(dir, &sb) != 0 ? 3 : 0);
    }
    int status = 0;
    if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status)) return -1;
    return WEXITSTATUS(status);
}

/* A fresh directory NOBODY can traverse: under $FM_TEST_TMP when its ancestors allow that, else
 * under /tmp. NULL when neither works. */
static char *reachable_tmpdir(void) {
    char *d = wrfx_mkdtemp();
    if (d && chmod(d, 0755) == 0 && probe_unprivileged(d) == 0) return d;
    if (d) wrfx_rmrf(d), free(d);
    d = strdup("/tmp/fusemap-ro-XXXXXX");
    if (d && mkdtemp(d) && chmod(d, 0755) == 0 && probe_unprivileged(d) == 0) return d;
    if (d) rmdir(d), free(d);
    return NULL;
}

/* Runs a save unprivileged (as NOBODY when the test runs as root). Returns the child's exit
 * code: 0 = the expected refusal naming the permission problem, 1 = anything else. */
static int save_unprivileged(const char *dir, const tset *s) {
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        if (geteuid() == 0 && (setgid(NOBODY) != 0 || setuid(NOBODY) != 0)) _exit(1);
        fm_error eb;
        fm_status st = save(dir, s, NULL, 0, FM_DEFAULT_MAX_SHARD_SIZE, &eb);
        int ok =
            st != FM_OK && (strstr(eb.msg, "Permission denied") || strstr(eb.msg, "not writable"));
        if (!ok) fprintf(stderr, "child: %s: %s\n", fm_status_name(st), eb.msg);
        _exit(ok ? 0 : 1);
    }
    int status = 0;
    if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status)) return 1;
    return WEXITSTATUS(status);
}

/* A read-only parent (no staging directory can be made) and a read-only checkpoint directory
 * (its contents may not be replaced): refused, nothing changes. As root the save runs in a child
 * that drops to an unprivileged uid, because chmod does not stop root; only a root that cannot
 * drop privileges (no CAP_SETUID) skips, and the runner allows that skip for this case alone. */
static void test_read_only(void) {
    if (geteuid() == 0 && probe_unprivileged(NULL) == 2)
        SKIP("running as root without the right to become uid %d (no CAP_SETUID): nothing can "
             "act unprivileged here",
             NOBODY);
    char *root = geteuid() == 0 ? reachable_tmpdir() : wrfx_mkdtemp();
    REQUIRE_MSG(root != NULL, "a temporary directory uid %d can reach ($FM_TEST_TMP or /tmp)",
                NOBODY);
    char *par = wrfx_join(root, "ro"), *dir = wrfx_join(par, "ck");
    CHECK(mkdir(par, 0755) == 0);
    tset old, s;
    make_existing(dir, &old);
    const char *names[] = {"x"};
    tset_make(&s, (uint64_t[]){10}, names, 1, 13);
    if (geteuid() == 0) {
        CHECK(chown(par, NOBODY, NOBODY) == 0);
        wrfx_snap t;
        if (wrfx_snapshot(dir, &t) == 0) {
            for (size_t i = 0; i < t.n; i++) {
                char *p = strcmp(t.v[i].path, ".") ? wrfx_join(dir, t.v[i].path) : strdup(dir);
                CHECK(lchown(p, NOBODY, NOBODY) == 0);
                free(p);
            }
        }
        wrfx_snap_free(&t);
    }
    for (int c = 0; c < 2; c++) {
        const char *ro =
            c == 0 ? par : dir; /* case 0: parent read-only; case 1: directory read-only */
        struct stat sb;
        CHECK(stat(ro, &sb) == 0);
        chmod(ro, 0555);
        wrfx_snap before, after;
        CHECK(wrfx_snapshot(dir, &before) == 0);
        int rc = save_unprivileged(dir, &s);
        CHECK_MSG(rc == 0,
                  "case %d: the unprivileged save is refused for the permissions (child "
                  "exit %d)",
                  c, rc);
        char why[512];
        CHECK(wrfx_snapshot(dir, &after) == 0);
        CHECK_MSG(wrfx_snap_equal(&before, &after, why, sizeof why), "case %d: %s", c, why);
        CHECK_EQ_INT(0, wrfx_count_prefix(par, ".ck.fusemap-"));
        chmod(ro, sb.st_mode & 07777);
        wrfx_snap_free(&before);
        wrfx_snap_free(&after);
    }
    tset_free(&old);
    tset_free(&s);
    wrfx_rmrf(root);
    free(dir);
    free(par);
    free(root);
}

/* Bad arguments are refused before anything is created. */
static void test_invalid_arguments(void) {
    char *root = wrfx_mkdtemp(), *dir = wrfx_join(root, "ck");
    fm_error eb, *err = &eb;
    tset s;
    const char *names[] = {"a", "b", "a"};
    tset_make(&s, (uint64_t[]){4, 4, 4}, names, 3, 14);
    /* the same name in two shards */
    CHECK_STATUS(FM_ERR_DUPLICATE_TENSOR, save(dir, &s, NULL, 0, 5, err), err);
    CHECK_CONTAINS(err->msg, "'a'");
    CHECK(!wrfx_exists(dir));
    s.n = 2;
    fm_extra_file bad[] = {{"model.safetensors", "x", 1},
                           {"sub/x.json", "x", 1},
                           {"..", "x", 1},
                           {"model-00001-of-00002.safetensors", "x", 1},
                           {"model.safetensors.index.json", "x", 1}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK_STATUS(FM_ERR_INVALID_ARG, save(dir, &s, &bad[i], 1, 100, err), err);
        CHECK_CONTAINS(err->msg, bad[i].name);
    }
    fm_extra_file twice[] = {{"c.json", "1", 1}, {"c.json", "2", 1}};
    CHECK_STATUS(FM_ERR_INVALID_ARG, save(dir, &s, twice, 2, 100, err), err);
    /* an invalid tensor */
    s.t[1].nbytes = 3;
    CHECK_STATUS(FM_ERR_TENSOR_INVALID_INFO, save(dir, &s, NULL, 0, 100, err), err);
    CHECK_CONTAINS(err->msg, "'b'");
    s.t[1].nbytes = 4;
    CHECK(!wrfx_exists(dir));
    /* a file where the directory should be; a missing parent */
    CHECK(wrfx_write(dir, "f", 1) == 0);
    CHECK_STATUS(FM_ERR_EXISTS, save(dir, &s, NULL, 0, 100, err), err);
    char *deep = wrfx_join(root, "no/such/dir");
    CHECK_STATUS(FM_ERR_NOT_FOUND, save(deep, &s, NULL, 0, 100, err), err);
    CHECK_STATUS(FM_ERR_INVALID_ARG, save("", &s, NULL, 0, 100, err), err);
    CHECK_STATUS(FM_ERR_INVALID_ARG, save("/", &s, NULL, 0, 100, err), err);
    CHECK_EQ_INT(2 + 1, wrfx_count_prefix(root, "")); /* ., .., ck */
    free(deep);
    s.n = 3;
    tset_free(&s);
    wrfx_rmrf(root);
    free(dir);
    free(root);
}

/* A save through a trailing slash and through "." resolves to the same directory. */
static void test_path_forms(void) {
    char *root = wrfx_mkdtemp(), *dir = wrfx_join(root, "ck"), *slash = wrfx_join(dir, "");
    char *dot = wrfx_join(dir, ".");
    fm_error eb, *err = &eb;
    tset s;
    const char *names[] = {"a"};
    tset_make(&s, (uint64_t[]){4}, names, 1, 15);
    CHECK_OK(save(slash, &s, NULL, 0, 100, err), err);
    CHECK(wrfx_exists(dir));
    CHECK_OK(save(dot, &s, NULL, 0, 100, err), err);
    char list[128];
    dir_listing(dir, list, sizeof list);
    CHECK_EQ_STR("model.safetensors", list);
    CHECK_EQ_INT(3, wrfx_count_prefix(root, ""));
    tset_free(&s);
    wrfx_rmrf(root);
    free(dot);
    free(slash);
    free(dir);
    free(root);
}

/* The copy used where hard links are refused keeps bytes and mode. */
static void test_copy_fallback(void) {
    char *root = wrfx_mkdtemp(), *a = wrfx_join(root, "a"), *b = wrfx_join(root, "b");
    uint8_t buf[3000];
    uint64_t seed = 1;
    for (size_t i = 0; i < sizeof buf; i++)
        buf[i] = (uint8_t)wrfx_rand(&seed);
    CHECK(wrfx_write(a, buf, sizeof buf) == 0);
    chmod(a, 0640);
    fm_error eb, *err = &eb;
    CHECK_OK(fm_fs_copy_file(a, b, err), err);
    check_file_bytes(root, "b", buf, sizeof buf);
    struct stat sb;
    CHECK(stat(b, &sb) == 0 && (sb.st_mode & 07777) == 0640 && sb.st_nlink == 1);
    CHECK_STATUS(FM_ERR_EXISTS, fm_fs_copy_file(a, b, err), err);
    wrfx_rmrf(root);
    free(a);
    free(b);
    free(root);
}

int main(void) {
    (void)quick;
    RUN(test_parse_size);
    RUN(test_single_shard);
    RUN(test_greedy_split);
    RUN(test_split_edges);
    RUN(test_resave_over_existing);
    RUN(test_old_index_names);
    RUN(test_resave_from_own_views);
    RUN(test_fault_sweep_existing);
    RUN(test_fault_sweep_fresh);
    RUN(test_fault_sweep_fallback);
    RUN(test_rlimit_fsize);
    RUN(test_read_only);
    RUN(test_invalid_arguments);
    RUN(test_path_forms);
    RUN(test_copy_fallback);
    TEST_END();
}
