/* Every command on a small random Qwen2.5-VL checkpoint: inspect (fused module tree), convert
 * (byte-identical, runtime format and back, bf16 sharded), run (images; fused = unfused = the
 * library), forward and generate with pixel values (logits and greedy tokens = the float64
 * references), verify (each fusion family, and a one-channel model spelled in_chans), and a
 * refused architecture. */
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "check.h"
#include "file_util.h"
#include "fusemap/fusemap.h"
#include "img_fixtures.h"
#include "qwen_fixture.h"
#include "text_ref64.h"
#include "vision25_ref64.h"

enum { IMG = 290, VSTART = 291, VEND = 292, VOCAB = 300, H = 48 };
static char *tmp, *src, *png, *jpg;
static const char *cli;

/* Runs `fusemap ARGS` (stdout + stderr into *out); returns the exit code. */
static int fm(char **out, const char *fmt, ...) {
    char args[12000], cmd[16384], log[4300];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    snprintf(log, sizeof log, "%s/cmd.log", tmp);
    snprintf(cmd, sizeof cmd, "%s %s > %s 2>&1", cli, args, log);
    int rc = system(cmd);
    char *text = fm_test_read_file(log, NULL);
    if (out)
        *out = text;
    else
        free(text);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

static char *path_in(const char *dir, const char *name) {
    return fm_test_join(dir, name);
}

static fm_tensor read_tensor(const char *file, const char *name) {
    fm_st_file *f = NULL;
    fm_tensor t = {0}, copy = {0};
    fm_error e;
    CHECK_OK(fm_st_open(file, &f, &e), &e);
    long i = f ? fm_st_find(f, name) : -1;
    CHECK_MSG(i >= 0, "%s: no tensor %s", file, name);
    if (i >= 0 && fm_st_tensor(f, (size_t)i, &t, &e) == FM_OK &&
        fm_tensor_alloc(&copy, t.dtype, &t.shape, &e) == FM_OK)
        memcpy(copy.data, t.data, (size_t)t.nbytes);
    fm_tensor_free(&t);
    fm_st_close(f);
    return copy;
}

static double rel(const fm_tensor *a, const fm_tensor *b) {
    double num = 0, den = 0;
    const float *x = a->data, *y = b->data;
    if (!x || !y || fm_tensor_numel(a) != fm_tensor_numel(b)) return INFINITY;
    for (uint64_t i = 0; i < fm_tensor_numel(a); i++)
        num += (x[i] - y[i]) * (double)(x[i] - y[i]), den += (double)y[i] * y[i];
    return sqrt(num / den);
}

/* ---- inspect, convert --------------------------------------------------------------------------
 */
static void test_inspect(void) {
    char *out = NULL;
    CHECK_EQ_INT(0, fm(&out, "inspect %s", src));
    CHECK_CONTAINS(out, "model_type:    qwen2_5_vl");
    CHECK_CONTAINS(out, "visual.blocks.1.mlp.gate_proj.bias");
    free(out);
    CHECK_EQ_INT(
        0, fm(&out, "inspect %s --modules --fuse gate_up --fuse qkv --fuse patch_embeddings", src));
    CHECK_CONTAINS(out, "FusedQwen2_5_VisionPatchEmbed [replaces Qwen2_5_VisionPatchEmbed]");
    CHECK_CONTAINS(out, "FusedQwen2_5_VLMLP [replaces Qwen2_5_VLMLP]");
    CHECK_CONTAINS(out, "FusedQwen2_5_VLAttention [replaces Qwen2_5_VLAttention]");
    CHECK_CONTAINS(out, "model.visual.blocks.0.mlp.gate_up_proj");
    CHECK_CONTAINS(out, "weight [80, 32] BF16, bias [80] BF16");
    CHECK(out && !strstr(out, "FusedQwen2_5_VLVisionAttention")); /* its qkv is already one */
    free(out);
}

static void test_convert(void) {
    char *out = NULL, *same = path_in(tmp, "c-same"), *rt = path_in(tmp, "c-rt"),
         *back = path_in(tmp, "c-back"), *sh = path_in(tmp, "c-sh");
    const char *skip[] = {"config.json", NULL};
    CHECK_EQ_INT(0, fm(&out, "convert %s %s", src, same));
    CHECK_CONTAINS(out, "load report for");
    free(out);
    CHECK_MSG(fm_test_same_dir(src, same, skip), "convert without options writes the source");
    CHECK_EQ_INT(0, fm(NULL,
                       "convert %s %s --fuse patch_embeddings --fuse gate_up --fuse qkv "
                       "--save-runtime-format",
                       src, rt));
    fm_checkpoint *ck = NULL;
    fm_error e;
    CHECK_OK(fm_checkpoint_open(rt, &ck, &e), &e);
    long i = ck ? fm_checkpoint_find(ck, "model.visual.blocks.0.mlp.gate_up_proj.weight") : -1;
    CHECK(i >= 0 && fm_checkpoint_entry_at(ck, (size_t)i)->shape.dims[0] == 80);
    CHECK(ck && fm_checkpoint_find(ck, "model.visual.patch_embed.linear_proj.weight") >= 0);
    CHECK(ck &&
          fm_checkpoint_find(ck, "model.language_model.layers.0.self_attn.qkv_proj.bias") >= 0);
    fm_checkpoint_close(ck);
    CHECK_EQ_INT(0, fm(NULL, "convert %s %s --fusion-config '{}'", rt, back));
    CHECK_MSG(fm_test_same_dir(rt, back, skip), "runtime layout -> unfused -> saved: same bytes");
    CHECK_EQ_INT(0, fm(NULL, "convert %s %s --dtype f32 --max-shard-size 30KB", src, sh));
    CHECK_OK(fm_checkpoint_open(sh, &ck, &e), &e);
    CHECK(ck && fm_checkpoint_is_sharded(ck) && fm_checkpoint_shard_count(ck) > 1);
    i = ck ? fm_checkpoint_find(ck, "visual.blocks.1.mlp.up_proj.bias") : -1;
    CHECK(i >= 0 && fm_checkpoint_entry_at(ck, (size_t)i)->dtype == FM_DTYPE_F32);
    fm_checkpoint_close(ck);
    fm_test_rmtree(same), fm_test_rmtree(rt), fm_test_rmtree(back), fm_test_rmtree(sh);
    free(same), free(rt), free(back), free(sh);
}

/* ---- run ------------------------------------------------------------------------------------- */
static void test_run(void) {
    char *o1 = path_in(tmp, "e1.safetensors"), *o2 = path_in(tmp, "e2.safetensors"), *out = NULL;
    CHECK_EQ_INT(0, fm(&out, "run %s --image %s --image %s -o %s --threads 2", src, png, jpg, o1));
    CHECK_CONTAINS(out, "image_grid_thw [2, 3] -> image_embeds [30, 48]"); /* 6 + 24 cells */
    free(out);
    CHECK_EQ_INT(0, fm(&out,
                       "run %s --image %s --image %s -o %s --threads 2 --fuse gate_up "
                       "--fuse patch_embeddings",
                       src, png, jpg, o2));
    CHECK_CONTAINS(out, "(fused)");
    free(out);
    fm_tensor a = read_tensor(o1, "image_embeds"), b = read_tensor(o2, "image_embeds");
    CHECK_MSG(rel(&b, &a) <= 1e-5, "fused vs unfused run: rel-L2 %.3g", rel(&b, &a));
    /* the library: decode, preprocess with the model's processor, forward */
    fm_model *m = NULL;
    fm_image imgs[2] = {{0}, {0}};
    fm_tensor pv = {0}, grid = {0}, want = {0};
    fm_error e;
    CHECK_OK(fm_from_pretrained(src, NULL, &m, NULL, &e), &e);
    CHECK_OK(fm_image_load(png, &imgs[0], &e), &e);
    CHECK_OK(fm_image_load(jpg, &imgs[1], &e), &e);
    if (m) CHECK_OK(fm_model_preprocess_images(m, imgs, 2, &pv, &grid, &e), &e);
    fm_run_options ro = {2, NULL, NULL};
    if (pv.data) CHECK_OK(fm_model_vision_forward(m, &pv, &grid, &ro, &want, &e), &e);
    CHECK_MSG(want.data && a.data && want.nbytes == a.nbytes &&
                  !memcmp(want.data, a.data, a.nbytes),
              "run's image_embeds equal the library's preprocessing + forward");
    fm_tensor_free(&a), fm_tensor_free(&b), fm_tensor_free(&pv), fm_tensor_free(&grid),
        fm_tensor_free(&want);
    fm_image_free(&imgs[0]), fm_image_free(&imgs[1]);
    fm_model_free(m);
    free(o1), free(o2);
}

/* ---- forward and generate with pixel values ------------------------------------------------- */
static const int64_t grid[] = {1, 8, 12}; /* windows: the merged 4x6 grid makes 2x3 of them */

/* pixel_values + image_grid_thw of one random 8x12-patch image, as `run` reads them. */
static char *write_pixels(fm_tensor *pv) {
    fm_shape ps = {2, {96, 3 * 2 * 14 * 14}}, gs = {2, {1, 3}};
    fm_tensor gt = {0};
    uint64_t s = 77;
    CHECK_OK(fm_tensor_alloc(pv, FM_DTYPE_F32, &ps, NULL), NULL);
    CHECK_OK(fm_tensor_alloc(&gt, FM_DTYPE_I64, &gs, NULL), NULL);
    if (pv->data) fm_qfix_fill(pv->data, fm_tensor_numel(pv), 2.0f, &s);
    if (gt.data) memcpy(gt.data, grid, sizeof grid);
    fm_st_item items[2] = {{"image_grid_thw", &gt}, {"pixel_values", pv}};
    char *file = path_in(tmp, "px.safetensors");
    fm_error e;
    CHECK_OK(fm_st_write_file(file, items, 2, NULL, &e), &e);
    fm_tensor_free(&gt);
    return file;
}

/* "5,9,...,VSTART,IMG x24,VEND,..." and the same ids in *ids. */
static int64_t prompt(int64_t *ids, char *text, size_t n) {
    int64_t k = 0;
    const int64_t head[] = {5, 9, 200, 17}, tail[] = {33, 101};
    for (int i = 0; i < 4; i++)
        ids[k++] = head[i];
    ids[k++] = VSTART;
    for (int i = 0; i < 24; i++)
        ids[k++] = IMG;
    ids[k++] = VEND;
    for (int i = 0; i < 2; i++)
        ids[k++] = tail[i];
    size_t w = 0;
    for (int64_t i = 0; i < k; i++)
        w += (size_t)snprintf(text + w, n - w, "%s%lld", i ? "," : "", (long long)ids[i]);
    return k;
}

/* The float64 references' logits of ids (the image's features from vision25_ref64). */
static double *ref_logits(const int64_t *ids, int64_t T, const fm_tensor *pv) {
    fm_v25ref_model vr;
    fm_tref_model tr;
    char why[256] = "";
    double *lg = malloc((size_t)(T * VOCAB) * sizeof *lg), feat[24 * H];
    float f32[24 * H];
    CHECK_MSG(fm_v25ref_load(src, &vr, why, sizeof why) == 0, "vision reference: %s", why);
    CHECK_MSG(fm_tref_load(src, &tr, why, sizeof why) == 0, "text reference: %s", why);
    if (vr.blocks && tr.l) {
        CHECK(fm_v25ref_forward(&vr, grid, 1, pv->data, feat) == 0);
        for (int i = 0; i < 24 * H; i++)
            f32[i] = (float)feat[i];
        CHECK(fm_tref_forward(&tr, ids, T, f32, grid, 1, lg) == 0);
    }
    fm_v25ref_free(&vr), fm_tref_free(&tr);
    return lg;
}

static void test_forward_and_generate(void) {
    fm_tensor pv = {0};
    char *px = write_pixels(&pv), *o = path_in(tmp, "logits.safetensors"), text[2048], *out = NULL;
    int64_t ids[64];
    int64_t T = prompt(ids, text, sizeof text);
    CHECK_EQ_INT(0, fm(&out, "forward %s --input-ids %s --pixel-values %s -o %s --fuse qkv", src,
                       text, px, o));
    free(out);
    fm_tensor lg = read_tensor(o, "logits");
    double *want = ref_logits(ids, T, &pv), num = 0, den = 0;
    CHECK(lg.shape.ndim == 2 && lg.shape.dims[0] == T && lg.shape.dims[1] == VOCAB);
    for (int64_t i = 0; lg.data && i < T * VOCAB; i++) {
        double d = ((float *)lg.data)[i] - want[i];
        num += d * d, den += want[i] * want[i];
    }
    CHECK_MSG(lg.data && sqrt(num / den) <= 1e-5, "forward logits vs float64: rel-L2 %.3g",
              sqrt(num / den));
    fm_tensor_free(&lg);
    free(want);
    /* greedy tokens: each the argmax of the references' recomputation of the whole sequence */
    CHECK_EQ_INT(0, fm(&out,
                       "generate %s --input-ids %s --pixel-values %s --max-new-tokens 5 --json -q "
                       "--fuse gate_up --fuse patch_embeddings",
                       src, text, px));
    json_error_t je;
    json_t *j = out ? json_loads(out, 0, &je) : NULL, *toks = json_object_get(j, "tokens");
    CHECK_MSG(json_is_array(toks) && json_array_size(toks) == 5, "generate: %s", out ? out : "");
    for (size_t k = 0; json_is_array(toks) && k < json_array_size(toks); k++) {
        double *lk = ref_logits(ids, T + (int64_t)k, &pv);
        int64_t best = 0;
        for (int64_t v = 1; v < VOCAB; v++)
            best = lk[(T + (int64_t)k - 1) * VOCAB + v] > lk[(T + (int64_t)k - 1) * VOCAB + best]
                       ? v
                       : best;
        CHECK_EQ_INT(best, json_integer_value(json_array_get(toks, k)));
        ids[T + (int64_t)k] = best;
        free(lk);
    }
    json_decref(j);
    free(out), free(px), free(o);
    fm_tensor_free(&pv);
}

/* ---- verify ---------------------------------------------------------------------------------- */
static void test_verify(void) {
    static const char *const fams[] = {"patch_embeddings", "gate_up", "qkv",
                                       "patch_embeddings --fuse gate_up --fuse qkv"};
    for (int i = 0; i < 4; i++) {
        char *out = NULL;
        CHECK_EQ_INT(0, fm(&out, "verify %s --fuse %s", src, fams[i]));
        CHECK_MSG(out && strstr(out, "verify: OK") && strstr(out, "0 differ from the checkpoint"),
                  "verify --fuse %s: %s", fams[i], out ? out : "");
        free(out);
    }
    /* a one-channel patch embedding spelled the hub's way: verify reads the module's geometry */
    fm_qfix q;
    fm_qfix_init_qwen25(&q);
    q.in_channels = 1, q.channels_key = "in_chans";
    char *one = path_in(tmp, "one-channel"), *out = NULL;
    fm_error e;
    CHECK_OK(fm_qfix_write(one, &q, &e), &e);
    CHECK_EQ_INT(0, fm(&out, "verify %s --fuse patch_embeddings --fuse gate_up", one));
    CHECK_CONTAINS(out, "verify: OK");
    free(out);
    fm_test_rmtree(one);
    free(one);
}

/* ---- refused architecture ------------------------------------------------------------------- */
static void test_refused_architecture(void) {
    char *dir = path_in(tmp, "glm"), *cfg = NULL, *out = NULL;
    fm_qfix q;
    fm_qfix_init_qwen25(&q);
    fm_error e;
    CHECK_OK(fm_qfix_write(dir, &q, &e), &e);
    cfg = path_in(dir, "config.json");
    json_error_t je;
    json_t *c = json_load_file(cfg, 0, &je);
    json_object_set_new(c, "model_type", json_string("glm4v"));
    CHECK(c && json_dump_file(c, cfg, 0) == 0);
    json_decref(c);
    CHECK_EQ_INT(1, fm(&out, "run %s --image %s -o %s/x.safetensors", dir, png, tmp));
    CHECK_CONTAINS(out, "unsupported model_type 'glm4v' (supported: qwen2_vl, qwen2_5_vl");
    free(out);
    free(dir), free(cfg);
}

int main(void) {
    cli = getenv("FM_CLI") ? getenv("FM_CLI") : "build/fusemap";
    tmp = fm_test_tmpdir("q25cli");
    src = path_in(tmp, "src");
    fm_qfix q;
    fm_qfix_init_qwen25(&q); /* patch 14, windows of 2x2 merged cells, full block 1 */
    q.dtype = FM_DTYPE_BF16, q.hidden_size = H, q.text_hidden = H, q.text_layers = 2,
    q.vocab = VOCAB, q.scale = 0.15f;
    q.extra_config = "\"image_token_id\": 290, \"vision_start_token_id\": 291, "
                     "\"vision_end_token_id\": 292, \"video_token_id\": 293, "
                     "\"rope_scaling\": {\"type\": \"mrope\", \"mrope_section\": [2, 1, 3]}";
    fm_error e;
    if (fm_qfix_write(src, &q, &e) != FM_OK) return fprintf(stderr, "%s\n", e.msg), 1;
    /* a 84x56 PNG (grid 4x6) and a 168x112 JPEG (grid 8x12): sizes kept by smart_resize */
    uint8_t *rgb = malloc(168 * 112 * 3);
    size_t len = 0;
    png = path_in(tmp, "a.png"), jpg = path_in(tmp, "b.jpg");
    imgfx_fill_smooth(rgb, 84, 56, 3, 5);
    uint8_t *bytes = imgfx_png_encode(84, 56, 2, 8, 0, rgb, NULL, 0, NULL, 0, &len);
    imgfx_write_file(png, bytes, len);
    free(bytes);
    imgfx_fill_smooth(rgb, 168, 112, 3, 9);
    bytes = imgfx_jpeg_encode(rgb, 168, 112, 3, 90, 0, 0, &len);
    imgfx_write_file(jpg, bytes, len);
    free(bytes), free(rgb);
    RUN(test_inspect);
    RUN(test_convert);
    RUN(test_run);
    RUN(test_forward_and_generate);
    RUN(test_verify);
    RUN(test_refused_architecture);
    fm_test_rmtree(tmp);
    free(tmp), free(src), free(png), free(jpg);
    TEST_END();
}
