/* Checkpoint directories: single file and sharded (index + shards) on random data, entry
 * order, lookups and views; every index rule (bad JSON, shapes of the document, shard names
 * that escape the directory, missing/unmapped/doubled tensors) with its status and message. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/testing.h"
#include "fusemap/io.h"
#include "support/check.h"
#include "support/st_fixtures.h"

static char *tmproot;

/* A fresh empty directory under the test root; caller frees the string. */
static char *new_dir(void) {
    char *p = stfx_new_dir(tmproot);
    CHECK(p != NULL);
    return p;
}

static void write_shard(const char *dir, const char *name, const stfx_tensor *ts, size_t n,
                        uint64_t seed) {
    CHECK(stfx_write_built(dir, name, ts, n, seed) == 0);
}

/* Checks tensor `name` of c against stfx_random_bytes(seed) of the expected size. */
static void check_tensor_bytes(const fm_checkpoint *c, const char *name, const stfx_tensor *t,
                               uint64_t seed) {
    fm_error eb, *err = &eb;
    long k = fm_checkpoint_find(c, name);
    CHECK_MSG(k >= 0, "tensor %s not found", name);
    if (k < 0) return;
    fm_tensor v;
    CHECK_OK(fm_checkpoint_tensor(c, (size_t)k, &v, err), err);
    uint64_t nb = stfx_nbytes(t);
    uint8_t *want = malloc(nb ? nb : 1);
    stfx_random_bytes(want, nb, seed);
    CHECK_EQ_INT(nb, v.nbytes);
    CHECK_EQ_INT(nb, fm_checkpoint_entry_at(c, (size_t)k)->nbytes);
    CHECK(v.data && memcmp(v.data, want, nb) == 0);
    CHECK(fm_tensor_is_mapped(&v));
    free(want);
    fm_tensor_free(&v);
}

static const stfx_tensor shard_a[] = {
    {"model.layers.0.w", "F32", 2, {5, 3}},
    {"model.layers.0.b", "BF16", 1, {7}},
    {"model.embed", "I64", 2, {2, 2}},
};
static const stfx_tensor shard_b[] = {
    {"model.layers.1.w", "F16", 3, {2, 3, 4}},
    {"lm_head.weight", "U8", 1, {9}},
};

static void test_single_file(void) {
    fm_error eb, *err = &eb;
    char *d = new_dir();
    write_shard(d, "model.safetensors", shard_a, 3, 100);
    fm_checkpoint *c = NULL;
    CHECK_OK(fm_checkpoint_open(d, &c, err), err);
    CHECK(!fm_checkpoint_is_sharded(c));
    CHECK_EQ_INT(3, fm_checkpoint_count(c));
    CHECK_EQ_INT(1, fm_checkpoint_shard_count(c));
    CHECK_EQ_STR(d, fm_checkpoint_dir(c));
    for (size_t i = 0; i < 3; i++) {
        const fm_ckpt_entry *e = fm_checkpoint_entry_at(c, i);
        CHECK_EQ_STR("model.safetensors", e->shard);
        CHECK_EQ_STR(shard_a[i].name, e->name); /* data order = build order */
        CHECK_EQ_INT(0, e->shard_index);
        CHECK_EQ_INT(i, e->index_in_shard);
        check_tensor_bytes(c, shard_a[i].name, &shard_a[i], 100 + i);
    }
    CHECK(fm_checkpoint_entry_at(c, 3) == NULL);
    CHECK_EQ_INT(-1, fm_checkpoint_find(c, "nope"));
    CHECK(fm_checkpoint_shard(c, 0) != NULL && fm_st_count(fm_checkpoint_shard(c, 0)) == 3);
    fm_checkpoint_close(c);
    stfx_rmrf(d);
    free(d);
}

/* Index keys in a different order from the files, with extra metadata and unknown keys. */
static const char *good_index =
    "{\n  \"metadata\": {\"total_size\": 1234, \"total_parameters\": 5, \"tool\": {\"x\": [1]}},\n"
    "  \"other\": 1,\n  \"weight_map\": {\n"
    "    \"lm_head.weight\": \"model-00002-of-00002.safetensors\",\n"
    "    \"model.embed\": \"model-00001-of-00002.safetensors\",\n"
    "    \"model.layers.0.b\": \"model-00001-of-00002.safetensors\",\n"
    "    \"model.layers.0.w\": \"model-00001-of-00002.safetensors\",\n"
    "    \"model.layers.1.w\": \"model-00002-of-00002.safetensors\"\n  }\n}\n";

static char *sharded_dir(void) {
    char *d = new_dir();
    write_shard(d, "model-00001-of-00002.safetensors", shard_a, 3, 200);
    write_shard(d, "model-00002-of-00002.safetensors", shard_b, 2, 300);
    CHECK(stfx_write_text(d, "model.safetensors.index.json", good_index) == 0);
    return d;
}

static void test_sharded(void) {
    fm_error eb, *err = &eb;
    char *d = sharded_dir();
    /* a stray single file: the index wins */
    write_shard(d, "model.safetensors", shard_b, 1, 1);
    fm_checkpoint *c = NULL;
    CHECK_OK(fm_checkpoint_open(d, &c, err), err);
    CHECK(fm_checkpoint_is_sharded(c));
    CHECK_EQ_INT(5, fm_checkpoint_count(c));
    CHECK_EQ_INT(2, fm_checkpoint_shard_count(c));
    static const char *const order[] = {"model.layers.0.w", "model.layers.0.b", "model.embed",
                                        "model.layers.1.w", "lm_head.weight"};
    for (size_t i = 0; i < 5; i++) {
        const fm_ckpt_entry *e = fm_checkpoint_entry_at(c, i);
        CHECK_EQ_STR(order[i], e->name);
        CHECK_EQ_STR(i < 3 ? "model-00001-of-00002.safetensors"
                           : "model-00002-of-00002.safetensors",
                     e->shard);
        CHECK_EQ_INT(i < 3 ? 0 : 1, e->shard_index);
        CHECK_EQ_INT(i < 3 ? i : i - 3, e->index_in_shard);
        CHECK_EQ_INT(i, fm_checkpoint_find(c, order[i]));
    }
    for (size_t i = 0; i < 3; i++)
        check_tensor_bytes(c, shard_a[i].name, &shard_a[i], 200 + i);
    for (size_t i = 0; i < 2; i++)
        check_tensor_bytes(c, shard_b[i].name, &shard_b[i], 300 + i);
    /* views outlive the checkpoint */
    fm_tensor v, bad;
    CHECK_STATUS(FM_ERR_INVALID_ARG, fm_checkpoint_tensor(c, 5, &bad, err), err);
    CHECK(bad.data == NULL && bad.storage == NULL);
    CHECK_OK(fm_checkpoint_tensor(c, 4, &v, err), err);
    fm_checkpoint_close(c);
    uint8_t want[9];
    stfx_random_bytes(want, 9, 301);
    CHECK(memcmp(v.data, want, 9) == 0);
    fm_tensor_free(&v);
    stfx_rmrf(d);
    free(d);
}

static void test_not_found(void) {
    fm_error eb, *err = &eb;
    fm_checkpoint *c = (fm_checkpoint *)err;
    char *d = new_dir();
    CHECK_STATUS(FM_ERR_NOT_FOUND, fm_checkpoint_open(d, &c, err), err);
    CHECK(c == NULL);
    CHECK_CONTAINS(err->msg, d);
    CHECK_CONTAINS(err->msg, "no model.safetensors");
    char *missing = stfx_join(d, "nothing-here");
    CHECK_STATUS(FM_ERR_NOT_FOUND, fm_checkpoint_open(missing, &c, err), err);
    CHECK_CONTAINS(err->msg, "nothing-here");
    CHECK(stfx_write_text(d, "plain", "x") == 0);
    char *file = stfx_join(d, "plain");
    CHECK_STATUS(FM_ERR_NOT_FOUND, fm_checkpoint_open(file, &c, err), err);
    CHECK_CONTAINS(err->msg, "not a directory");
    /* a broken single file reports its own safetensors error */
    char *single = stfx_join(d, "model.safetensors");
    CHECK(stfx_write_st(single, "{}", "junk", 4) == 0);
    free(single);
    CHECK_STATUS(FM_ERR_INCOMPLETE_BUFFER, fm_checkpoint_open(d, &c, err), err);
    CHECK_CONTAINS(err->msg, "model.safetensors: file not fully covered");
    fm_checkpoint_close(NULL);
    CHECK_EQ_INT(0, fm_checkpoint_count(NULL));
    stfx_rmrf(d);
    free(d);
    free(missing);
    free(file);
}

typedef struct index_case {
    const char *id;
    const char *index; /* replaces the good index; NULL keeps it */
    fm_status status;
    const char *needle;
} index_case;

#define WM_HEAD                                                                                    \
    "{\"weight_map\":{\"lm_head.weight\":\"model-00002-of-00002.safetensors\",\"model.embed\":"    \
    "\"model-00001-of-00002.safetensors\",\"model.layers.0.b\":\"model-00001-of-00002."            \
    "safetensors\",\"model.layers.0.w\":\"model-00001-of-00002.safetensors\""
#define WM_LAST ",\"model.layers.1.w\":\"model-00002-of-00002.safetensors\""

static const index_case index_cases[] = {
    {"bad_json", "{\"weight_map\": {\"a\": \"x\",}\n}", FM_ERR_INDEX,
     "model.safetensors.index.json:1:"},
    {"bad_json_line", "{\n\n  \"weight_map\": [\n", FM_ERR_INDEX, ".json:4:"},
    {"duplicate_key", WM_HEAD WM_LAST ",\"model.embed\":\"model-00001-of-00002.safetensors\"}}",
     FM_ERR_INDEX, "duplicate"},
    {"top_array", "[]", FM_ERR_INDEX, "top level must be an object"},
    {"no_weight_map", "{\"metadata\":{}}", FM_ERR_INDEX, "no 'weight_map'"},
    {"weight_map_array", "{\"weight_map\":[]}", FM_ERR_INDEX, "'weight_map' must be an object"},
    {"metadata_string", "{\"metadata\":\"x\",\"weight_map\":{}}", FM_ERR_INDEX,
     "'metadata' must be an object"},
    {"value_not_string", WM_HEAD ",\"model.layers.1.w\":2}}", FM_ERR_INDEX,
     "'model.layers.1.w': shard name is not a string"},
    {"slash", WM_HEAD ",\"model.layers.1.w\":\"sub/model-00002-of-00002.safetensors\"}}",
     FM_ERR_INDEX, "path separator"},
    {"dotdot", WM_HEAD ",\"model.layers.1.w\":\"../model-00002-of-00002.safetensors\"}}",
     FM_ERR_INDEX, "path separator"},
    {"just_dotdot", WM_HEAD ",\"model.layers.1.w\":\"..\"}}", FM_ERR_INDEX, "'..'"},
    {"absolute", WM_HEAD ",\"model.layers.1.w\":\"/etc/passwd\"}}", FM_ERR_INDEX, "absolute path"},
    {"empty_name", WM_HEAD ",\"model.layers.1.w\":\"\"}}", FM_ERR_INDEX, "empty shard name"},
    {"backslash", WM_HEAD ",\"model.layers.1.w\":\"a\\\\b\"}}", FM_ERR_INDEX, "path separator"},
    {"missing_shard", WM_HEAD ",\"model.layers.1.w\":\"model-00003-of-00003.safetensors\"}}",
     FM_ERR_INDEX,
     "shard 'model-00003-of-00003.safetensors' (listed for tensor 'model.layers.1.w') does not "
     "exist"},
    {"not_in_shard", WM_HEAD WM_LAST ",\"ghost\":\"model-00001-of-00002.safetensors\"}}",
     FM_ERR_INDEX,
     "tensor 'ghost' is mapped to shard 'model-00001-of-00002.safetensors' but that file does not "
     "contain it"},
    {"wrong_shard", WM_HEAD ",\"model.layers.1.w\":\"model-00001-of-00002.safetensors\"}}",
     FM_ERR_INDEX,
     "tensor 'model.layers.1.w' is mapped to shard 'model-00001-of-00002.safetensors'"},
    {"unmapped", WM_HEAD "}}", FM_ERR_INDEX,
     "tensor 'model.layers.1.w' is in shard 'model-00002-of-00002.safetensors' but not in "
     "weight_map"},
};

static void test_index_errors(void) {
    size_t n = sizeof index_cases / sizeof index_cases[0];
    for (size_t i = 0; i < n; i++) {
        const index_case *ic = &index_cases[i];
        fm_error eb, *err = &eb;
        char *d = sharded_dir();
        CHECK(stfx_write_text(d, "model.safetensors.index.json", ic->index) == 0);
        fm_checkpoint *c = (fm_checkpoint *)err;
        fm_status st = fm_checkpoint_open(d, &c, err);
        if (st != ic->status || !strstr(err->msg, ic->needle) || getenv("FM_TEST_VERBOSE"))
            fprintf(stderr, "  case %s: %s\n", ic->id, err->msg);
        CHECK_STATUS(ic->status, st, err);
        CHECK(c == NULL);
        CHECK_CONTAINS(err->msg, "model.safetensors.index.json");
        CHECK_CONTAINS(err->msg, ic->needle);
        stfx_rmrf(d);
        free(d);
    }
}

/* The same tensor in two shards, the map naming one of them. */
static void test_tensor_in_two_shards(void) {
    fm_error eb, *err = &eb;
    char *d = sharded_dir();
    const stfx_tensor both[] = {shard_b[0], shard_b[1], shard_a[1]};
    write_shard(d, "model-00002-of-00002.safetensors", both, 3, 300);
    fm_checkpoint *c = NULL;
    CHECK_STATUS(FM_ERR_INDEX, fm_checkpoint_open(d, &c, err), err);
    CHECK_CONTAINS(
        err->msg,
        "tensor 'model.layers.0.b' is in two shards, 'model-00001-of-00002.safetensors' and "
        "'model-00002-of-00002.safetensors'");
    stfx_rmrf(d);
    free(d);
}

/* A malformed shard reports its own error, naming the shard file. */
static void test_bad_shard(void) {
    fm_error eb, *err = &eb;
    char *d = sharded_dir();
    char *p = stfx_join(d, "model-00002-of-00002.safetensors");
    CHECK(truncate(p, 40) == 0);
    fm_checkpoint *c = NULL;
    CHECK_STATUS(FM_ERR_HEADER_LENGTH, fm_checkpoint_open(d, &c, err), err);
    CHECK_CONTAINS(err->msg, "model-00002-of-00002.safetensors: header length");
    stfx_rmrf(d);
    free(d);
    free(p);
}

/* Symlinked shards: inside the directory accepted, resolving outside refused. */
static void test_symlinks(void) {
    fm_error eb, *err = &eb;
    char *d = sharded_dir(), *outside = new_dir();
    char *real = stfx_join(d, "model-00002-of-00002.safetensors");
    char *moved = stfx_join(d, "blob-2");
    CHECK(rename(real, moved) == 0);
    CHECK(symlink("blob-2", real) == 0);
    fm_checkpoint *c = NULL;
    CHECK_OK(fm_checkpoint_open(d, &c, err), err);
    CHECK_EQ_INT(5, fm_checkpoint_count(c));
    fm_checkpoint_close(c);
    char *far = stfx_join(outside, "blob-2");
    CHECK(rename(moved, far) == 0);
    CHECK(unlink(real) == 0);
    CHECK(symlink(far, real) == 0);
    c = NULL;
    CHECK_STATUS(FM_ERR_INDEX, fm_checkpoint_open(d, &c, err), err);
    CHECK_CONTAINS(err->msg, "outside the checkpoint directory");
    CHECK_CONTAINS(err->msg, "model-00002-of-00002.safetensors");
    CHECK(c == NULL);
    CHECK(unlink(real) == 0 && symlink("nowhere", real) == 0); /* dangling */
    CHECK_STATUS(FM_ERR_INDEX, fm_checkpoint_open(d, &c, err), err);
    CHECK_CONTAINS(err->msg, "does not exist");
    stfx_rmrf(d);
    stfx_rmrf(outside);
    free(d);
    free(outside);
    free(real);
    free(moved);
    free(far);
}

static void test_empty_weight_map(void) {
    fm_error eb, *err = &eb;
    char *d = new_dir();
    CHECK(stfx_write_text(d, "model.safetensors.index.json",
                          "{\"metadata\":{},\"weight_map\":{}}") == 0);
    fm_checkpoint *c = NULL;
    CHECK_OK(fm_checkpoint_open(d, &c, err), err);
    CHECK_EQ_INT(0, fm_checkpoint_count(c));
    CHECK_EQ_INT(0, fm_checkpoint_shard_count(c));
    CHECK(fm_checkpoint_is_sharded(c));
    fm_checkpoint_close(c);
    stfx_rmrf(d);
    free(d);
}

/* Each library allocation and each open may fail: NOMEM/IO, nothing leaked, then success. */
static void test_fault_injection(void) {
    char *d = sharded_dir();
    static const fm_fault_kind kinds[] = {FM_FAULT_ALLOC, FM_FAULT_OPEN};
    for (int k = 0; k < 2; k++) {
        int ok = 0;
        for (uint64_t nth = 1; nth < 200 && !ok; nth++) {
            fm_error eb, *err = &eb;
            fm_checkpoint *c = NULL;
            fm_fault_set(kinds[k], nth);
            fm_status st = fm_checkpoint_open(d, &c, err);
            fm_fault_set(kinds[k], 0);
            if (st == FM_OK) {
                ok = 1;
                CHECK_EQ_INT(5, fm_checkpoint_count(c));
                CHECK(nth > 2);
            } else {
                CHECK_STATUS(k == 0 ? FM_ERR_NOMEM : FM_ERR_IO, st, err);
                CHECK(c == NULL);
            }
            fm_checkpoint_close(c);
        }
        CHECK(ok);
    }
    stfx_rmrf(d);
    free(d);
}

int main(void) {
    tmproot = stfx_mkdtemp();
    if (!tmproot) {
        fprintf(stderr, "cannot create a temporary directory\n");
        return 1;
    }
    RUN(test_single_file);
    RUN(test_sharded);
    RUN(test_not_found);
    RUN(test_index_errors);
    RUN(test_tensor_in_two_shards);
    RUN(test_bad_shard);
    RUN(test_symlinks);
    RUN(test_empty_weight_map);
    RUN(test_fault_injection);
    stfx_rmrf(tmproot);
    free(tmproot);
    TEST_END();
}
