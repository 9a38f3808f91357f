/* Every CLI command on every malformed model directory of a small corpus: exit code 1, exactly
 * one line on stderr ("fusemap: error: ..."), and no output file left behind. Usage errors
 * exit 2. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "check.h"
#include "file_util.h"
#include "qwen_fixture.h"

static char *tmp;
static const char *cli;

typedef struct bad_dir {
    const char *name;
    void (*make)(const char *dir);
    unsigned skip; /* commands that legitimately accept it (bit c): see the table */
} bad_dir;

static void good(const char *dir) {
    fm_qfix q;
    fm_qfix_init(&q);
    fm_error err;
    fm_qfix_write(dir, &q, &err);
}

static void replace_file(const char *dir, const char *name, const char *text, size_t len) {
    char p[4300];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    fm_test_write_file(p, text, len);
}

static void truncate_weights(const char *dir, long keep) {
    char p[4300];
    size_t len = 0;
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    char *b = fm_test_read_file(p, &len);
    if (b) fm_test_write_file(p, b, keep >= 0 ? (size_t)keep : len + (size_t)keep);
    free(b);
}

static void mk_no_config(const char *d) {
    good(d);
    char p[4300];
    snprintf(p, sizeof p, "%s/config.json", d);
    remove(p);
}
static void mk_bad_json(const char *d) {
    good(d);
    replace_file(d, "config.json", "{\"model_type\": ", 15);
}
static void mk_dup_key(const char *d) {
    good(d);
    replace_file(d, "config.json", "{\"a\": 1, \"a\": 2}", 16);
}
static void mk_unknown_model(const char *d) {
    good(d);
    replace_file(d, "config.json", "{\"model_type\": \"nope\"}", 22);
}
static void mk_no_weights(const char *d) {
    good(d);
    char p[4300];
    snprintf(p, sizeof p, "%s/model.safetensors", d);
    remove(p);
}
static void mk_truncated(const char *d) {
    good(d);
    truncate_weights(d, -5);
}
static void mk_tiny(const char *d) {
    good(d);
    truncate_weights(d, 5);
}
static void mk_huge_header(const char *d) {
    good(d);
    unsigned char b[16] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00, 0x00, '{', '}'};
    replace_file(d, "model.safetensors", (const char *)b, 10);
}
static void mk_bad_index(const char *d) {
    good(d);
    replace_file(d, "model.safetensors.index.json",
                 "{\"weight_map\": {\"x\": \"../evil.safetensors\"}}", 45);
}
static void mk_garbage_header(const char *d) {
    good(d);
    const char b[] = "\x10\0\0\0\0\0\0\0{\"a\":{\"dtype\":1}}";
    replace_file(d, "model.safetensors", b, sizeof b - 1);
}
static void mk_bad_fusion(const char *d) {
    fm_qfix q;
    fm_qfix_init(&q);
    q.extra_config = "\"fusion_config\": {\"warp_drive\": true}";
    fm_error err;
    fm_qfix_write(d, &q, &err);
}

/* inspect (bit 0) reads weights and config.json's syntax only, so a missing config.json, an
 * unknown model_type or a bad stored fusion_config do not stop it; verify (bit 3) passes its
 * own --fuse, which replaces a stored fusion_config. */
static const bad_dir corpus[] = {
    {"no-config", mk_no_config, 1},
    {"bad-json", mk_bad_json, 0},
    {"dup-key", mk_dup_key, 0},
    {"unknown-model", mk_unknown_model, 1},
    {"no-weights", mk_no_weights, 0},
    {"truncated", mk_truncated, 0},
    {"tiny", mk_tiny, 0},
    {"huge-header", mk_huge_header, 0},
    {"bad-index", mk_bad_index, 0},
    {"garbage-header", mk_garbage_header, 0},
    {"bad-fusion", mk_bad_fusion, 1 | 8},
};

/* Runs a command line; returns the exit code and stderr's line count and first line. */
static int run(const char *args, int *lines, char *first, size_t n) {
    char cmd[16384], errf[4300];
    snprintf(errf, sizeof errf, "%s/stderr.txt", tmp);
    snprintf(cmd, sizeof cmd, "%s %s >/dev/null 2>%s", cli, args, errf);
    int rc = system(cmd);
    size_t len = 0;
    char *text = fm_test_read_file(errf, &len);
    *lines = 0;
    first[0] = '\0';
    for (size_t i = 0; text && i < len; i++)
        *lines += text[i] == '\n';
    if (text) snprintf(first, n, "%.*s", (int)strcspn(text, "\n"), text);
    free(text);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

static int exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0;
}

static void test_every_command_on_every_bad_dir(void) {
    char img[4300];
    snprintf(img, sizeof img, "%s/img.png", tmp);
    for (size_t i = 0; i < sizeof corpus / sizeof *corpus; i++) {
        char dir[4300], out[4300], args[12000], first[1024];
        snprintf(dir, sizeof dir, "%s/%s", tmp, corpus[i].name);
        corpus[i].make(dir);
        const char *cmds[4] = {"inspect %s", "convert %s %s",
                               "run %s --pixel-values %s/pv.safetensors -o %s",
                               "verify %s --fuse patch_embeddings"};
        for (int c = 0; c < 4; c++) {
            if (corpus[i].skip & (1u << c)) continue;
            snprintf(out, sizeof out, "%s/out-%s-%d", tmp, corpus[i].name, c);
            if (c == 0 || c == 3)
                snprintf(args, sizeof args, cmds[c], dir);
            else if (c == 1)
                snprintf(args, sizeof args, cmds[c], dir, out);
            else
                snprintf(args, sizeof args, cmds[c], dir, tmp, out);
            int lines = 0;
            int rc = run(args, &lines, first, sizeof first);
            CHECK_MSG(rc == 1, "%s on %s: exit code 1, got %d (%s)", cmds[c], corpus[i].name, rc,
                      first);
            CHECK_MSG(lines == 1, "%s on %s: one stderr line, got %d", cmds[c], corpus[i].name,
                      lines);
            CHECK_MSG(!strncmp(first, "fusemap: error: ", 16), "%s on %s: '%s'", cmds[c],
                      corpus[i].name, first);
            CHECK_MSG(!exists(out), "%s on %s: no output left at %s", cmds[c], corpus[i].name, out);
        }
    }
}

static void test_usage_errors_exit_2(void) {
    const char *cases[] = {"",
                           "frobnicate",
                           "inspect",
                           "convert onlyone",
                           "run dir -o",
                           "run dir -o x",
                           "convert a b --dtype f8",
                           "run d --image a.png --pixel-values b -o o",
                           "verify d",
                           "convert a b --fuse x --fusion-config {}"};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        int lines;
        char first[1024];
        int rc = run(cases[i], &lines, first, sizeof first);
        CHECK_MSG(rc == 2, "'fusemap %s' exits 2, got %d", cases[i], rc);
    }
}

/* pixel_values [rows][cols] F32 + image_grid_thw [[1, gh, gw]] I64 into path. */
static void write_pv(const char *path, int64_t rows, int64_t cols, int64_t gh, int64_t gw) {
    fm_tensor pv, g;
    fm_shape ps = {2, {rows, cols}}, gs = {2, {1, 3}};
    uint64_t seed = 3;
    fm_tensor_alloc(&pv, FM_DTYPE_F32, &ps, NULL);
    fm_tensor_alloc(&g, FM_DTYPE_I64, &gs, NULL);
    fm_qfix_fill(pv.data, fm_tensor_numel(&pv), 1.0f, &seed);
    int64_t gv[3] = {1, gh, gw};
    memcpy(g.data, gv, sizeof gv);
    fm_st_item items[2] = {{"pixel_values", &pv}, {"image_grid_thw", &g}};
    fm_st_write_options o;
    fm_st_write_options_init(&o);
    fm_error err;
    CHECK_OK(fm_st_write_file(path, items, 2, &o, &err), &err);
    fm_tensor_free(&pv), fm_tensor_free(&g);
}

static void test_run_shape_mismatch(void) {
    char dir[4300], pv[4300], out[4300], args[16000], first[1024];
    int lines;
    snprintf(dir, sizeof dir, "%s/good", tmp);
    snprintf(out, sizeof out, "%s/run-out.safetensors", tmp);
    good(dir);
    snprintf(pv, sizeof pv, "%s/pv-cols.safetensors", tmp);
    write_pv(pv, 16, 1000, 4, 4); /* the model wants 3*2*14*14 = 1176 columns */
    snprintf(args, sizeof args, "run %s --pixel-values %s -o %s", dir, pv, out);
    CHECK_EQ_INT(1, run(args, &lines, first, sizeof first));
    CHECK_CONTAINS(first, "[16, 1000]");
    CHECK_CONTAINS(first, "1176");
    CHECK(!exists(out));
    snprintf(pv, sizeof pv, "%s/pv-rows.safetensors", tmp);
    write_pv(pv, 20, 1176, 4, 4); /* the grid describes 16 patches */
    snprintf(args, sizeof args, "run %s --pixel-values %s -o %s", dir, pv, out);
    CHECK_EQ_INT(1, run(args, &lines, first, sizeof first));
    CHECK_CONTAINS(first, "[20, 1176]");
    CHECK_CONTAINS(first, "16 patches");
    CHECK(!exists(out));
    snprintf(pv, sizeof pv, "%s/pv.safetensors", tmp); /* a valid one: runs */
    snprintf(args, sizeof args, "run %s --pixel-values %s -o %s", dir, pv, out);
    CHECK_EQ_INT(0, run(args, &lines, first, sizeof first));
    CHECK(exists(out));
}

int main(void) {
    cli = getenv("FM_CLI");
    if (!cli) cli = "build/fusemap";
    tmp = fm_test_tmpdir("clierr");
    char pv[4300];
    snprintf(pv, sizeof pv, "%s/pv.safetensors", tmp); /* valid inputs: `run` fails on the model */
    write_pv(pv, 16, 1176, 4, 4);
    RUN(test_every_command_on_every_bad_dir);
    RUN(test_run_shape_mismatch);
    RUN(test_usage_errors_exit_2);
    fm_test_rmtree(tmp);
    free(tmp);
    TEST_END();
}
