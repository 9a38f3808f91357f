/* `fusemap inspect`: runs the built CLI ($FM_CLI, default build/fusemap) on fixture
 * directories and checks exit codes, the table, the --json document (parsed with jansson,
 * fields and totals recomputed here) and one-line errors for malformed inputs. */
#include <fcntl.h>
#include <jansson.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fusemap/io.h"
#include "support/check.h"
#include "support/st_fixtures.h"

extern char **environ;

static const char *cli;
static char *tmproot;

typedef struct cli_result {
    int code;        /* exit status; -1 if it did not exit normally */
    char *out, *err; /* whole stdout / stderr, NUL-terminated; free() */
} cli_result;

static char *slurp(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return strdup("");
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    size_t got = fread(b, 1, (size_t)n, f);
    b[got] = '\0';
    fclose(f);
    return b;
}

/* Runs `fusemap inspect ARGS...` (NULL-terminated) capturing both streams. */
static cli_result run_inspect(const char *a1, const char *a2, const char *a3) {
    cli_result r = {-1, NULL, NULL};
    char *o = stfx_join(tmproot, "stdout"), *e = stfx_join(tmproot, "stderr");
    char *argv[] = {(char *)cli, "inspect", (char *)a1, (char *)a2, (char *)a3, NULL};
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, o, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_addopen(&fa, 2, e, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    pid_t pid;
    int status;
    if (posix_spawn(&pid, cli, &fa, NULL, argv, environ) == 0 && waitpid(pid, &status, 0) == pid)
        r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    posix_spawn_file_actions_destroy(&fa);
    r.out = slurp(o);
    r.err = slurp(e);
    free(o);
    free(e);
    return r;
}

static void result_free(cli_result *r) {
    free(r->out);
    free(r->err);
}

static char *new_dir(void) {
    char *p = stfx_new_dir(tmproot);
    CHECK(p != NULL);
    return p;
}

static void write_st(const char *dir, const char *name, const stfx_tensor *ts, size_t n,
                     uint64_t seed) {
    CHECK(stfx_write_built(dir, name, ts, n, seed) == 0);
}

static const char *config_text = "{\n  \"architectures\": [\"Qwen2VLForConditionalGeneration\"],\n "
                                 " \"model_type\": \"qwen2_vl\",\n"
                                 "  \"vision_config\": {\"depth\": 2, \"embed_dim\": 16}\n}\n";

static const stfx_tensor tens_a[] = {
    {"visual.patch_embed.proj.weight", "BF16", 5, {16, 3, 2, 14, 14}},
    {"visual.blocks.0.norm1.weight", "F32", 1, {16}},
    {"visual.blocks.0.attn.qkv.bias", "BF16", 1, {48}},
};
static const stfx_tensor tens_b[] = {
    {"lm_head.weight", "F16", 2, {4, 16}},
    {"position_ids", "I64", 2, {1, 7}},
};

static uint64_t numel(const stfx_tensor *t) {
    uint64_t n = 1;
    for (int i = 0; i < t->ndim; i++)
        n *= (uint64_t)t->dims[i];
    return n;
}

/* Checks one tensors[] element against its definition. */
static void check_tensor_json(json_t *t, const stfx_tensor *want, const char *shard) {
    CHECK_EQ_STR(want->name, json_string_value(json_object_get(t, "name")));
    CHECK_EQ_STR(want->dtype, json_string_value(json_object_get(t, "dtype")));
    CHECK_EQ_STR(shard, json_string_value(json_object_get(t, "shard")));
    CHECK_EQ_INT(stfx_nbytes(want), json_integer_value(json_object_get(t, "bytes")));
    json_t *shape = json_object_get(t, "shape");
    CHECK_EQ_INT(want->ndim, json_array_size(shape));
    for (int d = 0; d < want->ndim; d++)
        CHECK_EQ_INT(want->dims[d], json_integer_value(json_array_get(shape, (size_t)d)));
}

static void check_key_order(json_t *o, const char *const *keys, size_t n) {
    size_t i = 0;
    for (void *it = json_object_iter(o); it && i < n; it = json_object_iter_next(o, it), i++)
        CHECK_EQ_STR(keys[i], json_object_iter_key(it));
    CHECK_EQ_INT(n, json_object_size(o));
}

static void test_json_sharded(void) {
    char *d = new_dir();
    write_st(d, "model-00001-of-00002.safetensors", tens_a, 3, 10);
    write_st(d, "model-00002-of-00002.safetensors", tens_b, 2, 20);
    CHECK(stfx_write_text(d, "config.json", config_text) == 0);
    CHECK(stfx_write_text(
              d, "model.safetensors.index.json",
              "{\"metadata\":{\"total_size\":1},\"weight_map\":{"
              "\"lm_head.weight\":\"model-00002-of-00002.safetensors\","
              "\"position_ids\":\"model-00002-of-00002.safetensors\","
              "\"visual.blocks.0.attn.qkv.bias\":\"model-00001-of-00002.safetensors\","
              "\"visual.blocks.0.norm1.weight\":\"model-00001-of-00002.safetensors\","
              "\"visual.patch_embed.proj.weight\":\"model-00001-of-00002.safetensors\"}}") == 0);
    cli_result r = run_inspect(d, "--json", NULL);
    CHECK_EQ_INT(0, r.code);
    CHECK_EQ_STR("", r.err);
    json_error_t je;
    json_t *doc = json_loads(r.out, JSON_REJECT_DUPLICATES, &je);
    CHECK_MSG(doc != NULL, "output is not JSON (%s): %.200s", je.text, r.out);
    if (doc) {
        static const char *const top[] = {"model_type", "architectures", "tensors", "totals"};
        check_key_order(doc, top, 4);
        CHECK_EQ_STR("qwen2_vl", json_string_value(json_object_get(doc, "model_type")));
        json_t *arch = json_object_get(doc, "architectures");
        CHECK_EQ_INT(1, json_array_size(arch));
        CHECK_EQ_STR("Qwen2VLForConditionalGeneration", json_string_value(json_array_get(arch, 0)));
        json_t *ts = json_object_get(doc, "tensors");
        CHECK_EQ_INT(5, json_array_size(ts));
        for (size_t i = 0; i < 3 && json_array_size(ts) == 5; i++)
            check_tensor_json(json_array_get(ts, i), &tens_a[i],
                              "model-00001-of-00002.safetensors");
        for (size_t i = 0; i < 2 && json_array_size(ts) == 5; i++)
            check_tensor_json(json_array_get(ts, 3 + i), &tens_b[i],
                              "model-00002-of-00002.safetensors");
        json_t *tot = json_object_get(doc, "totals");
        static const char *const tkeys[] = {"tensors", "parameters", "bytes", "bytes_per_dtype"};
        check_key_order(tot, tkeys, 4);
        uint64_t params = 0, bytes = 0, bf16 = 0;
        for (size_t i = 0; i < 3; i++) {
            params += numel(&tens_a[i]);
            bytes += stfx_nbytes(&tens_a[i]);
            if (!strcmp(tens_a[i].dtype, "BF16")) bf16 += stfx_nbytes(&tens_a[i]);
        }
        for (size_t i = 0; i < 2; i++)
            params += numel(&tens_b[i]), bytes += stfx_nbytes(&tens_b[i]);
        CHECK_EQ_INT(5, json_integer_value(json_object_get(tot, "tensors")));
        CHECK_EQ_INT(params, json_integer_value(json_object_get(tot, "parameters")));
        CHECK_EQ_INT(bytes, json_integer_value(json_object_get(tot, "bytes")));
        json_t *per = json_object_get(tot, "bytes_per_dtype");
        CHECK_EQ_INT(4, json_object_size(per)); /* BF16, F32, F16, I64 */
        CHECK_EQ_INT(bf16, json_integer_value(json_object_get(per, "BF16")));
        CHECK_EQ_INT(64, json_integer_value(json_object_get(per, "F32")));
        CHECK_EQ_INT(56, json_integer_value(json_object_get(per, "I64")));
        json_decref(doc);
    }
    result_free(&r);
    stfx_rmrf(d);
    free(d);
}

static void test_table_single(void) {
    char *d = new_dir();
    write_st(d, "model.safetensors", tens_a, 3, 30);
    CHECK(stfx_write_text(d, "config.json", config_text) == 0);
    cli_result r = run_inspect(d, NULL, NULL);
    CHECK_EQ_INT(0, r.code);
    CHECK_CONTAINS(r.out, "model_type:    qwen2_vl");
    CHECK_CONTAINS(r.out, "architectures: Qwen2VLForConditionalGeneration");
    CHECK_CONTAINS(r.out, "single file");
    CHECK_CONTAINS(r.out, "visual.patch_embed.proj.weight");
    CHECK_CONTAINS(r.out, "[16, 3, 2, 14, 14]");
    CHECK_CONTAINS(r.out, "model.safetensors");
    CHECK_CONTAINS(r.out, "37632"); /* 16*3*2*14*14 elements * 2 bytes */
    CHECK_CONTAINS(r.out, "totals: 3 tensors, 18880 parameters, 37792 bytes");
    result_free(&r);
    stfx_rmrf(d);
    free(d);
}

/* No config.json: null model_type, empty architectures; a control byte in a name is escaped in
 * the table and exact in JSON. */
static void test_no_config_and_odd_names(void) {
    char *d = new_dir(), *p = stfx_join(d, "model.safetensors");
    CHECK(stfx_write_st(p, "{\"a\\nb\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]}}",
                        "xy", 2) == 0);
    cli_result r = run_inspect(d, NULL, NULL);
    CHECK_EQ_INT(0, r.code);
    CHECK_CONTAINS(r.out, "a\\x0ab");
    CHECK_CONTAINS(r.out, "model_type:    (none)");
    result_free(&r);
    r = run_inspect("--json", d, NULL);
    CHECK_EQ_INT(0, r.code);
    json_t *doc = json_loads(r.out, 0, NULL);
    CHECK(doc != NULL);
    CHECK(json_is_null(json_object_get(doc, "model_type")));
    CHECK_EQ_INT(0, json_array_size(json_object_get(doc, "architectures")));
    CHECK(json_is_array(json_object_get(doc, "architectures")));
    CHECK_EQ_STR("a\nb", json_string_value(json_object_get(
                             json_array_get(json_object_get(doc, "tensors"), 0), "name")));
    json_decref(doc);
    result_free(&r);
    stfx_rmrf(d);
    free(d);
    free(p);
}

/* Exit 1 with exactly one line "fusemap: error: <file>: <reason>". */
static void expect_one_line_error(const char *dir, const char *file_part, const char *reason) {
    cli_result r = run_inspect(dir, "--json", NULL);
    CHECK_EQ_INT(1, r.code);
    CHECK_EQ_STR("", r.out);
    CHECK(strncmp(r.err, "fusemap: error: ", 16) == 0);
    CHECK_CONTAINS(r.err, file_part);
    CHECK_CONTAINS(r.err, reason);
    size_t n = strlen(r.err);
    CHECK_MSG(n > 0 && r.err[n - 1] == '\n' && strchr(r.err, '\n') == r.err + n - 1,
              "not one line: %s", r.err);
    result_free(&r);
}

static void test_malformed_inputs(void) {
    char *d = new_dir(), *p = stfx_join(d, "model.safetensors");
    /* gap between tensors */
    CHECK(stfx_write_st(p,
                        "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
                        "\"b\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[2,3]}}",
                        "xyz", 3) == 0);
    expect_one_line_error(d, "model.safetensors: tensor 'b'", "invalid offset");
    /* unknown dtype */
    CHECK(stfx_write_st(p, "{\"a\":{\"dtype\":\"Q7\",\"shape\":[1],\"data_offsets\":[0,1]}}", "x",
                        1) == 0);
    expect_one_line_error(d, "model.safetensors: tensor 'a'", "unknown dtype 'Q7'");
    /* truncated */
    CHECK(stfx_write_st(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", "x",
                        1) == 0);
    expect_one_line_error(d, "model.safetensors", "not fully covered");
    /* an index naming a missing shard */
    CHECK(stfx_write_text(d, "model.safetensors.index.json",
                          "{\"weight_map\":{\"a\":\"gone.safetensors\"}}") == 0);
    expect_one_line_error(d, "model.safetensors.index.json", "does not exist");
    /* malformed config.json beside a good checkpoint */
    char *idx = stfx_join(d, "model.safetensors.index.json");
    CHECK(unlink(idx) == 0);
    write_st(d, "model.safetensors", tens_b, 2, 1);
    CHECK(stfx_write_text(d, "config.json", "{\"model_type\": \"x\",}") == 0);
    expect_one_line_error(d, "config.json:1:20: ", "string or '}' expected near '}'");
    /* no weights at all, and no directory */
    char *e = new_dir();
    expect_one_line_error(e, e, "no model.safetensors");
    char *missing = stfx_join(e, "missing");
    expect_one_line_error(missing, "missing", "no such directory");
    stfx_rmrf(d);
    stfx_rmrf(e);
    free(d);
    free(e);
    free(p);
    free(idx);
    free(missing);
}

static void test_usage(void) {
    cli_result r = run_inspect(NULL, NULL, NULL);
    CHECK_EQ_INT(2, r.code);
    CHECK_CONTAINS(r.err, "usage: fusemap inspect DIR");
    result_free(&r);
    r = run_inspect(tmproot, "--bogus", NULL);
    CHECK_EQ_INT(2, r.code);
    CHECK_CONTAINS(r.err, "unknown option '--bogus'");
    result_free(&r);
    r = run_inspect(tmproot, tmproot, NULL);
    CHECK_EQ_INT(2, r.code);
    CHECK_CONTAINS(r.err, "unexpected argument");
    result_free(&r);
    r = run_inspect("--modules", tmproot, NULL); /* a directory that is no model: bad input */
    CHECK_EQ_INT(1, r.code);
    CHECK_CONTAINS(r.err, "fusemap: error: ");
    result_free(&r);
    r = run_inspect(tmproot, "--fuse", NULL); /* --fuse without its value: usage */
    CHECK_EQ_INT(2, r.code);
    result_free(&r);
}

int main(void) {
    cli = getenv("FM_CLI");
    if (!cli || !*cli) cli = "build/fusemap";
    if (access(cli, X_OK) != 0) {
        fprintf(stderr, "FAIL: the CLI '%s' is not built (set FM_CLI)\n", cli);
        printf("RESULT 0 1\n");
        return 1;
    }
    tmproot = stfx_mkdtemp();
    if (!tmproot) {
        fprintf(stderr, "cannot create a temporary directory\n");
        return 1;
    }
    RUN(test_json_sharded);
    RUN(test_table_single);
    RUN(test_no_config_and_odd_names);
    RUN(test_malformed_inputs);
    RUN(test_usage);
    stfx_rmrf(tmproot);
    free(tmproot);
    TEST_END();
}
