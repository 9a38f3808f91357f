/* The load report's problems as CLI warnings, for every command that loads a model: a
 * checkpoint with a weight the architecture has no place for (a `proj.bias` beside the bias-free
 * patch-embedding Conv3d) warns on stderr that it "was not used", --quiet removes the warning,
 * --strict makes it an error (exit 1, no output written); stdout and -o files are the same with
 * and without the warnings. Missing weights and lossy casts warn too. */
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "check.h"
#include "file_util.h"
#include "fusemap/io.h"
#include "qwen_fixture.h"

static char *tmp, *extra_dir, *missing_dir, *plain_dir, *pv_path;
static const char *cli;

typedef struct result {
    int code;
    char *out, *err; /* whole stdout / stderr (malloc'd) */
} result;

static result fm(const char *fmt, ...) {
    char args[8192], cmd[16384];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    char *o = fm_test_join(tmp, "stdout"), *e = fm_test_join(tmp, "stderr");
    snprintf(cmd, sizeof cmd, "%s %s >%s 2>%s </dev/null", cli, args, o, e);
    int rc = system(cmd);
    result r = {WIFEXITED(rc) ? WEXITSTATUS(rc) : -1, fm_test_read_file(o, NULL),
                fm_test_read_file(e, NULL)};
    if (!r.out) r.out = strdup("");
    if (!r.err) r.err = strdup("");
    free(o), free(e);
    return r;
}

static void result_free(result *r) {
    free(r->out), free(r->err);
}

static int lines(const char *s) {
    int n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

static int exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0;
}

/* Rewrites DIR/model.safetensors with `add` (a new F32 tensor of n zeros) or without `drop`. */
static void edit_checkpoint(const char *dir, const char *add, int64_t n, const char *drop) {
    char *path = fm_test_join(dir, "model.safetensors");
    fm_st_file *f = NULL;
    fm_error err;
    CHECK_OK(fm_st_open(path, &f, &err), &err);
    size_t count = f ? fm_st_count(f) : 0, k = 0;
    fm_st_item *items = calloc(count + 1, sizeof *items);
    fm_tensor *ts = calloc(count + 1, sizeof *ts);
    for (size_t i = 0; i < count; i++) {
        const char *name = fm_st_entry_at(f, i)->name;
        if (drop && !strcmp(name, drop)) continue;
        fm_st_tensor(f, i, &ts[k], &err);
        items[k] = (fm_st_item){name, &ts[k]};
        k++;
    }
    if (add) {
        fm_shape s = {1, {n}};
        fm_tensor_alloc(&ts[k], FM_DTYPE_F32, &s, NULL);
        memset(ts[k].data, 0, ts[k].nbytes);
        items[k] = (fm_st_item){add, &ts[k]};
        k++;
    }
    fm_st_kv meta = {"format", "pt"};
    fm_st_write_options o;
    fm_st_write_options_init(&o);
    o.metadata = &meta, o.n_metadata = 1, o.with_metadata = true;
    CHECK_OK(fm_st_write_file(path, items, k, &o, &err), &err);
    for (size_t i = 0; i < k; i++)
        fm_tensor_free(&ts[i]);
    fm_st_close(f);
    free(items), free(ts), free(path);
}

static char *make_fixture(const char *tag, const char *add, const char *drop) {
    char *dir = fm_test_join(tmp, tag);
    fm_qfix q;
    fm_qfix_init(&q);
    fm_error err;
    CHECK_OK(fm_qfix_write(dir, &q, &err), &err);
    if (add || drop) edit_checkpoint(dir, add, q.embed_dim, drop);
    return dir;
}

static const char *const unused_key = "model.visual.patch_embed.proj.bias";

/* The warning is one line on stderr naming the key and saying it was not used. */
static void check_unused_warning(const char *what, const result *r) {
    CHECK_MSG(r->code == 0, "%s: exit 0, got %d (%s)", what, r->code, r->err);
    const char *w = strstr(r->err, "fusemap: warning: ");
    CHECK_MSG(w != NULL, "%s: a warning on stderr, got '%s'", what, r->err);
    if (!w) return;
    size_t len = strcspn(w, "\n");
    char line[2048];
    snprintf(line, sizeof line, "%.*s", (int)len, w);
    CHECK_CONTAINS(line, unused_key);
    CHECK_CONTAINS(line, "was not used");
}

static void test_inspect_modules(void) {
    result a = fm("inspect %s --modules --json", extra_dir),
           q = fm("inspect %s --modules --json --quiet", extra_dir),
           s = fm("inspect %s --modules --json --strict", extra_dir);
    check_unused_warning("inspect --modules", &a);
    CHECK_MSG(!strstr(a.out, "fusemap: warning"), "no warning on stdout: %s", a.out);
    json_error_t je;
    json_t *doc = json_loads(a.out, 0, &je);
    CHECK_MSG(doc != NULL, "stdout is one JSON document despite the warning (%s)", je.text);
    json_decref(doc);
    CHECK_EQ_INT(0, q.code);
    CHECK_EQ_STR("", q.err);
    CHECK_EQ_STR(a.out, q.out); /* --quiet changes stderr only */
    CHECK_EQ_INT(1, s.code);
    CHECK_EQ_INT(1, lines(s.err));
    CHECK_CONTAINS(s.err, "fusemap: error: ");
    CHECK_CONTAINS(s.err, unused_key);
    CHECK_EQ_STR("", s.out);
    result_free(&a), result_free(&q), result_free(&s);
    /* the checkpoint table reads no model: nothing to warn about */
    result t = fm("inspect %s", extra_dir);
    CHECK_EQ_INT(0, t.code);
    CHECK_EQ_STR("", t.err);
    CHECK_CONTAINS(t.out, "visual.patch_embed.proj.bias");
    result_free(&t);
}

static void test_convert(void) {
    char *o1 = fm_test_join(tmp, "conv-loud"), *o2 = fm_test_join(tmp, "conv-quiet"),
         *o3 = fm_test_join(tmp, "conv-strict");
    result a = fm("convert %s %s", extra_dir, o1), q = fm("convert %s %s -q", extra_dir, o2),
           s = fm("convert %s %s --strict", extra_dir, o3);
    check_unused_warning("convert", &a);
    CHECK_EQ_INT(0, q.code);
    CHECK_EQ_STR("", q.err);
    CHECK_MSG(fm_test_same_dir(o1, o2, NULL),
              "convert writes the same files with and without --quiet");
    CHECK_EQ_INT(1, s.code);
    CHECK_EQ_INT(1, lines(s.err));
    CHECK_CONTAINS(s.err, unused_key);
    CHECK_MSG(!exists(o3), "--strict failure leaves no %s", o3);
    result_free(&a), result_free(&q), result_free(&s);
    free(o1), free(o2), free(o3);
}

static void test_run(void) {
    char *o1 = fm_test_join(tmp, "run-loud.safetensors"),
         *o2 = fm_test_join(tmp, "run-quiet.safetensors"),
         *o3 = fm_test_join(tmp, "run-strict.safetensors");
    result a = fm("run %s --pixel-values %s -o %s", extra_dir, pv_path, o1),
           q = fm("run %s --pixel-values %s -o %s --quiet", extra_dir, pv_path, o2),
           s = fm("run %s --pixel-values %s -o %s --strict", extra_dir, pv_path, o3);
    check_unused_warning("run", &a);
    CHECK_CONTAINS(a.err, "image_embeds"); /* the informational lines stay without --quiet */
    CHECK_EQ_INT(0, q.code);
    CHECK_EQ_STR("", q.err);
    CHECK_MSG(fm_test_same_file(o1, o2), "run -o writes the same bytes with and without --quiet");
    CHECK_EQ_INT(1, s.code);
    CHECK_EQ_INT(1, lines(s.err));
    CHECK_CONTAINS(s.err, unused_key);
    CHECK_MSG(!exists(o3), "--strict failure leaves no %s", o3);
    result_free(&a), result_free(&q), result_free(&s);
    free(o1), free(o2), free(o3);
}

/* verify always loads the fused model strictly: the unused weight fails it, quiet or not. */
static void test_verify(void) {
    result a = fm("verify %s --fuse patch_embeddings", extra_dir),
           q = fm("verify %s --fuse patch_embeddings -q", extra_dir);
    CHECK_EQ_INT(1, a.code);
    CHECK_EQ_INT(1, lines(a.err));
    CHECK_CONTAINS(a.err, "model.visual.patch_embed");
    CHECK_CONTAINS(a.err, "unexpected");
    CHECK_EQ_INT(1, q.code);
    CHECK_EQ_STR(a.err, q.err); /* errors are never silenced */
    result_free(&a), result_free(&q);
    result p = fm("verify %s --fuse patch_embeddings", plain_dir);
    CHECK_EQ_INT(0, p.code);
    CHECK_MSG(!strstr(p.err, "fusemap: warning"), "a clean checkpoint gives no warning: %s", p.err);
    result_free(&p);
}

static void test_missing_weight(void) {
    result a = fm("inspect %s --modules", missing_dir),
           q = fm("inspect %s --modules -q", missing_dir),
           s = fm("inspect %s --modules --strict", missing_dir);
    CHECK_EQ_INT(0, a.code);
    CHECK_CONTAINS(a.err, "fusemap: warning: ");
    CHECK_CONTAINS(a.err, "model.visual.blocks.1.mlp.fc1.bias");
    CHECK_CONTAINS(a.err, "missing from the checkpoint");
    CHECK_EQ_INT(1, lines(a.err));
    CHECK_EQ_STR("", q.err);
    CHECK_EQ_STR(a.out, q.out);
    CHECK_EQ_INT(1, s.code);
    CHECK_CONTAINS(s.err, "missing");
    result_free(&a), result_free(&q), result_free(&s);
}

static void test_lossy_cast(void) {
    char *o1 = fm_test_join(tmp, "cast-bf16"), *o2 = fm_test_join(tmp, "cast-bf16-q"),
         *o3 = fm_test_join(tmp, "cast-f32");
    result a = fm("convert %s %s --dtype bf16", plain_dir, o1),
           q = fm("convert %s %s --dtype bf16 --quiet", plain_dir, o2);
    CHECK_EQ_INT(0, a.code);
    CHECK_CONTAINS(a.err, "fusemap: warning: ");
    CHECK_CONTAINS(a.err, "cast from F32 to BF16");
    CHECK_CONTAINS(a.err, "precision");
    CHECK_EQ_STR("", q.err);
    CHECK_MSG(fm_test_same_dir(o1, o2, NULL),
              "the cast checkpoint is the same with and without --quiet");
    result_free(&a), result_free(&q);
    /* back to f32 widens: nothing is lost, no warning */
    result w = fm("convert %s %s --dtype f32", o1, o3);
    CHECK_EQ_INT(0, w.code);
    CHECK_MSG(!strstr(w.err, "fusemap: warning"), "a widening cast warns nothing: %s", w.err);
    result_free(&w);
    free(o1), free(o2), free(o3);
}

static void write_pv(const char *path) {
    fm_tensor pv, g;
    fm_shape ps = {2, {16, 1176}}, gs = {2, {1, 3}};
    uint64_t seed = 5;
    fm_tensor_alloc(&pv, FM_DTYPE_F32, &ps, NULL);
    fm_tensor_alloc(&g, FM_DTYPE_I64, &gs, NULL);
    fm_qfix_fill(pv.data, fm_tensor_numel(&pv), 1.0f, &seed);
    int64_t gv[3] = {1, 4, 4};
    memcpy(g.data, gv, sizeof gv);
    fm_st_item items[2] = {{"pixel_values", &pv}, {"image_grid_thw", &g}};
    fm_st_write_options o;
    fm_st_write_options_init(&o);
    fm_error err;
    CHECK_OK(fm_st_write_file(path, items, 2, &o, &err), &err);
    fm_tensor_free(&pv), fm_tensor_free(&g);
}

int main(void) {
    cli = getenv("FM_CLI");
    if (!cli) cli = "build/fusemap";
    tmp = fm_test_tmpdir("cliwarn");
    extra_dir = make_fixture("extra", "visual.patch_embed.proj.bias", NULL);
    missing_dir = make_fixture("missing", NULL, "visual.blocks.1.mlp.fc1.bias");
    plain_dir = make_fixture("plain", NULL, NULL);
    pv_path = fm_test_join(tmp, "pv.safetensors");
    write_pv(pv_path);
    RUN(test_inspect_modules);
    RUN(test_convert);
    RUN(test_run);
    RUN(test_verify);
    RUN(test_missing_weight);
    RUN(test_lossy_cast);
    fm_test_rmtree(tmp);
    free(extra_dir), free(missing_dir), free(plain_dir), free(pv_path), free(tmp);
    TEST_END();
}
