/* The CLI end to end on generated checkpoints: convert (byte-identical, --dtype, shard size,
 * runtime format, fusion), inspect --modules with a fusion, run on PNG and JPEG images (fused
 * and unfused agree; EXIF orientation after IDAT matches the library on upright pixels) and on
 * pixel_values, verify. */
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

static char *tmp, *src;
static const char *cli;

/* Runs `fusemap ARGS`, capturing stdout+stderr; returns the exit code. Caller frees *out. */
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

static void test_convert(void) {
    char *out = NULL;
    CHECK_EQ_INT(0, fm(&out, "convert %s %s/c-same", src, tmp));
    CHECK_CONTAINS(out, "load report for");
    free(out);
    char a[4300], b[4300];
    snprintf(a, sizeof a, "%s/model.safetensors", src);
    snprintf(b, sizeof b, "%s/c-same/model.safetensors", tmp);
    CHECK_MSG(fm_test_same_file(a, b), "convert without options writes the source's bytes");

    CHECK_EQ_INT(0, fm(NULL, "convert %s %s/c-f32 --dtype f32 --max-shard-size 40KB", src, tmp));
    fm_checkpoint *ck = NULL;
    fm_error err;
    snprintf(a, sizeof a, "%s/c-f32", tmp);
    CHECK_OK(fm_checkpoint_open(a, &ck, &err), &err);
    CHECK(ck && fm_checkpoint_is_sharded(ck) && fm_checkpoint_shard_count(ck) > 1);
    long i = ck ? fm_checkpoint_find(ck, "visual.blocks.0.attn.qkv.weight") : -1;
    CHECK(i >= 0 && fm_checkpoint_entry_at(ck, (size_t)i)->dtype == FM_DTYPE_F32);
    fm_checkpoint_close(ck);

    CHECK_EQ_INT(
        0, fm(NULL, "convert %s %s/c-rt --fuse patch_embeddings --save-runtime-format", src, tmp));
    snprintf(a, sizeof a, "%s/c-rt", tmp);
    CHECK_OK(fm_checkpoint_open(a, &ck, &err), &err);
    CHECK(ck && fm_checkpoint_find(ck, "model.visual.patch_embed.linear_proj.weight") >= 0);
    fm_checkpoint_close(ck);
    /* ... and converting it unfused (LinearToConv3d on load) and back: the same bytes again */
    CHECK_EQ_INT(0, fm(NULL, "convert %s/c-rt %s/c-back --fusion-config '{}'", tmp, tmp));
    snprintf(a, sizeof a, "%s/c-rt/model.safetensors", tmp);
    snprintf(b, sizeof b, "%s/c-back/model.safetensors", tmp);
    CHECK_MSG(fm_test_same_file(a, b),
              "runtime layout -> unfused -> original format: byte for byte");
    /* and the unfused model in its runtime format holds the source's values under runtime names:
     * converting that with the hub mapping gives the source file again */
    CHECK_EQ_INT(0, fm(NULL, "convert %s/c-rt %s/c-unf --fusion-config '{}' --save-runtime-format",
                       tmp, tmp));
    fm_checkpoint *cs = NULL, *cu = NULL;
    snprintf(a, sizeof a, "%s/c-unf", tmp);
    CHECK_OK(fm_checkpoint_open(src, &cs, &err), &err);
    CHECK_OK(fm_checkpoint_open(a, &cu, &err), &err);
    long is = cs ? fm_checkpoint_find(cs, "visual.patch_embed.proj.weight") : -1;
    long iu = cu ? fm_checkpoint_find(cu, "model.visual.patch_embed.proj.weight") : -1;
    fm_tensor ts = {0}, tu = {0};
    if (is >= 0 && iu >= 0) {
        CHECK_OK(fm_checkpoint_tensor(cs, (size_t)is, &ts, &err), &err);
        CHECK_OK(fm_checkpoint_tensor(cu, (size_t)iu, &tu, &err), &err);
    }
    CHECK_MSG(ts.data && tu.data && fm_shape_equal(&ts.shape, &tu.shape) &&
                  ts.nbytes == tu.nbytes && !memcmp(ts.data, tu.data, ts.nbytes),
              "the Conv3d weight after fuse -> runtime layout -> unfuse equals the source's");
    fm_tensor_free(&ts), fm_tensor_free(&tu);
    fm_checkpoint_close(cs), fm_checkpoint_close(cu);
}

static void test_inspect_modules_fused(void) {
    char *out = NULL;
    CHECK_EQ_INT(0, fm(&out, "inspect %s --modules --fuse patch_embeddings", src));
    CHECK_CONTAINS(out, "FusedPatchEmbed [replaces PatchEmbed]");
    CHECK_CONTAINS(out, "model.visual.patch_embed.linear_proj");
    CHECK_CONTAINS(out, "weight [32, 1176]");
    free(out);
    CHECK_EQ_INT(0, fm(&out, "inspect %s --modules", src));
    CHECK_CONTAINS(out, "model.visual.patch_embed.proj");
    CHECK(out && !strstr(out, "Fused"));
    free(out);
}

static fm_tensor read_embeds(const char *path, int64_t *rows, int64_t *cols) {
    fm_st_file *f = NULL;
    fm_error err;
    fm_tensor t = {0};
    CHECK_OK(fm_st_open(path, &f, &err), &err);
    long i = f ? fm_st_find(f, "image_embeds") : -1;
    CHECK(i >= 0 && f && fm_st_find(f, "image_grid_thw") >= 0);
    if (i >= 0) fm_st_tensor(f, (size_t)i, &t, &err);
    *rows = t.shape.dims[0], *cols = t.shape.dims[1];
    fm_st_close(f);
    return t;
}

static void test_run_images(void) {
    uint32_t w = 84, h = 56; /* a multiple of 28 in both directions: preprocessing keeps the size */
    uint8_t *rgb = malloc((size_t)w * h * 3);
    size_t len = 0;
    imgfx_fill_smooth(rgb, w, h, 3, 7);
    char png[4300], jpg[4300], o1[4300], o2[4300];
    snprintf(png, sizeof png, "%s/a.png", tmp);
    snprintf(jpg, sizeof jpg, "%s/b.jpg", tmp);
    uint8_t *p = imgfx_png_encode(w, h, 2, 8, 0, rgb, NULL, 0, NULL, 0, &len);
    imgfx_write_file(png, p, len);
    free(p);
    p = imgfx_jpeg_encode(rgb, w, h, 3, 90, 0, 0, &len);
    imgfx_write_file(jpg, p, len);
    free(p), free(rgb);
    snprintf(o1, sizeof o1, "%s/e1.safetensors", tmp);
    snprintf(o2, sizeof o2, "%s/e2.safetensors", tmp);
    char *out = NULL;
    CHECK_EQ_INT(0, fm(&out, "run %s --image %s --image %s -o %s --threads 2", src, png, jpg, o1));
    CHECK_CONTAINS(out,
                   "image_grid_thw [2, 3] -> image_embeds [12, 48]"); /* 2 x (4x6 patches / 4) */
    free(out);
    CHECK_EQ_INT(0, fm(&out, "run %s --image %s --image %s -o %s --fuse patch_embeddings", src, png,
                       jpg, o2));
    CHECK_CONTAINS(out, "(fused)");
    free(out);
    int64_t r1, c1, r2, c2;
    fm_tensor a = read_embeds(o1, &r1, &c1), b = read_embeds(o2, &r2, &c2);
    CHECK(r1 == 12 && c1 == 48 && r2 == 12 && c2 == 48);
    double num = 0, den = 0;
    for (uint64_t i = 0; a.data && b.data && i < fm_tensor_numel(&a); i++) {
        float x, y;
        memcpy(&x, (char *)a.data + 4 * i, 4), memcpy(&y, (char *)b.data + 4 * i, 4);
        num += (x - (double)y) * (x - (double)y), den += (double)y * y;
    }
    CHECK_MSG(den > 0 && sqrt(num / den) <= 1e-5, "fused vs unfused CLI outputs: rel L2 %.3g",
              sqrt(num / den));
    fm_tensor_free(&a), fm_tensor_free(&b);
}

/* Stored pixels S that Pillow's exif_transpose turns into the upright image U (u_w x u_h) for
 * orientation o (6: ROTATE_270, 7: TRANSVERSE): the inverse of each transposition, written out
 * here independently of the library's table. S is u_h wide and u_w tall. */
static void store_for_orientation(const uint8_t *u, uint32_t u_w, uint32_t u_h, int o, uint8_t *s) {
    uint32_t s_w = u_h, s_h = u_w;
    for (uint32_t ys = 0; ys < s_h; ys++) {
        for (uint32_t xs = 0; xs < s_w; xs++) {
            /* o=6: D(x, y) = S(y, s_h-1-x); o=7: D(x, y) = S(s_w-1-y, s_h-1-x) */
            uint32_t x = s_h - 1 - ys, y = o == 6 ? xs : s_w - 1 - xs;
            memcpy(s + ((size_t)ys * s_w + xs) * 3, u + ((size_t)y * u_w + x) * 3, 3);
        }
    }
}

/* Library path on the upright pixels: preprocess + vision forward, one thread. */
static fm_tensor library_embeds(const uint8_t *u, uint32_t w, uint32_t h) {
    fm_error err;
    fm_load_options lo;
    fm_load_options_init(&lo);
    fm_model *m = NULL;
    fm_qwen2vl_preproc_params p;
    fm_image img = {0};
    fm_tensor pv = {0}, grid = {0}, emb = {0};
    fm_run_options ro = {1, NULL, NULL};
    CHECK_OK(fm_from_pretrained(src, &lo, &m, NULL, &err), &err);
    CHECK_OK(fm_qwen2vl_preproc_params_load(src, &p, NULL, &err), &err);
    CHECK_OK(fm_image_alloc(&img, w, h, &err), &err);
    if (img.data) memcpy(img.data, u, (size_t)w * h * 3);
    if (m && img.data) CHECK_OK(fm_qwen2vl_preprocess(&img, 1, &p, &pv, &grid, &err), &err);
    if (pv.data) CHECK_OK(fm_model_vision_forward(m, &pv, &grid, &ro, &emb, &err), &err);
    fm_tensor_free(&pv), fm_tensor_free(&grid), fm_image_free(&img);
    fm_model_free(m);
    return emb;
}

/* `run --image` on a PNG whose eXIf (orientation 6 or 7) follows IDAT, as libpng writes it,
 * gives the embeddings of the upright pixels through the library, bit for bit; and the same
 * as a plain PNG of the upright pixels. */
static void test_run_exif_after_idat(void) {
    uint32_t w = 56, h = 84; /* multiples of 28: preprocessing keeps the size */
    uint8_t *u = malloc((size_t)w * h * 3), *st = malloc((size_t)w * h * 3);
    imgfx_fill_smooth(u, w, h, 3, 15);
    fm_tensor ref = library_embeds(u, w, h);
    CHECK(ref.data != NULL);
    for (int o = 6; ref.data && o <= 7; o++) {
        uint8_t tiff[26];
        size_t len = 0;
        imgfx_tiff_orientation(tiff, (unsigned)o, o == 6);
        store_for_orientation(u, w, h, o, st);
        uint8_t *png = imgfx_png_encode_exif(st, h, w, 0, tiff, 26, 1, &len);
        char in[4300], out[4300];
        snprintf(in, sizeof in, "%s/exif%d.png", tmp, o);
        snprintf(out, sizeof out, "%s/exif%d.safetensors", tmp, o);
        CHECK(png && imgfx_write_file(in, png, len) == 0);
        free(png);
        char *log = NULL;
        CHECK_EQ_INT(0, fm(&log, "run %s --image %s -o %s --threads 1", src, in, out));
        CHECK_CONTAINS(log, "image_grid_thw [1, 3] -> image_embeds [6, 48]"); /* 6x4 patches / 4 */
        free(log);
        int64_t r, c;
        fm_tensor e = read_embeds(out, &r, &c);
        size_t nb = (size_t)fm_tensor_numel(&ref) * 4;
        CHECK_MSG(e.data && fm_tensor_numel(&e) == fm_tensor_numel(&ref) &&
                      memcmp(e.data, ref.data, nb) == 0,
                  "orientation %d: CLI embeddings differ from the library's on the upright pixels",
                  o);
        fm_tensor_free(&e);
    }
    /* and a rotated copy without EXIF really gives other embeddings (the check can fail) */
    if (ref.data) {
        size_t len = 0;
        uint8_t *png = imgfx_png_encode(h, w, 2, 8, 0, st, NULL, 0, NULL, 0, &len);
        char in[4300], out[4300];
        snprintf(in, sizeof in, "%s/noexif.png", tmp);
        snprintf(out, sizeof out, "%s/noexif.safetensors", tmp);
        CHECK(png && imgfx_write_file(in, png, len) == 0);
        free(png);
        CHECK_EQ_INT(0, fm(NULL, "run %s --image %s -o %s --threads 1", src, in, out));
        int64_t r, c;
        fm_tensor e = read_embeds(out, &r, &c);
        CHECK(e.data && (fm_tensor_numel(&e) != fm_tensor_numel(&ref) ||
                         memcmp(e.data, ref.data, (size_t)fm_tensor_numel(&ref) * 4) != 0));
        fm_tensor_free(&e);
    }
    fm_tensor_free(&ref);
    free(u), free(st);
}

/* `run` with two different images, the second EXIF-rotated (orientation 6, stored 20x12): the
 * output equals the library's own path (load each image, apply its EXIF orientation, preprocess
 * both, forward) exactly, and the rotated image's grid is the upright one. */
static void test_run_two_images_exif(void) {
    uint32_t w = 84, h = 56;
    uint8_t *rgb = malloc((size_t)w * h * 3);
    size_t len = 0;
    imgfx_fill_smooth(rgb, w, h, 3, 11);
    char png[4300], jpg[4300], out_path[4300];
    snprintf(png, sizeof png, "%s/first.png", tmp);
    snprintf(jpg, sizeof jpg, "%s/image/orient6.jpg", imgfx_data_dir());
    snprintf(out_path, sizeof out_path, "%s/two.safetensors", tmp);
    uint8_t *p = imgfx_png_encode(w, h, 2, 8, 0, rgb, NULL, 0, NULL, 0, &len);
    REQUIRE(p && imgfx_write_file(png, p, len) == 0);
    free(p), free(rgb);
    char *log = NULL;
    CHECK_EQ_INT(
        0, fm(&log, "run %s --image %s --image %s -o %s --threads 2", src, png, jpg, out_path));
    free(log);
    /* the library path */
    fm_error err;
    fm_qwen2vl_preproc_params pp;
    REQUIRE_OK(fm_qwen2vl_preproc_params_load(src, &pp, NULL, &err), &err);
    fm_image imgs[2] = {{0}, {0}};
    const char *files[2] = {png, jpg};
    for (int i = 0; i < 2; i++) {
        REQUIRE_OK(fm_image_load(files[i], &imgs[i], &err), &err);
        REQUIRE_OK(fm_image_apply_orientation(&imgs[i], &err), &err);
    }
    CHECK(imgs[1].width == 12 && imgs[1].height == 20); /* stored 20 wide, 12 high */
    fm_tensor pv = {0}, grid = {0}, want = {0};
    REQUIRE_OK(fm_qwen2vl_preprocess(imgs, 2, &pp, &pv, &grid, &err), &err);
    fm_model *m = NULL;
    REQUIRE_OK(fm_from_pretrained(src, NULL, &m, NULL, &err), &err);
    fm_run_options ro;
    fm_run_options_init(&ro);
    ro.threads = 2;
    CHECK_OK(fm_model_vision_forward(m, &pv, &grid, &ro, &want, &err), &err);
    /* what the CLI wrote */
    fm_st_file *f = NULL;
    REQUIRE_OK(fm_st_open(out_path, &f, &err), &err);
    long ie = fm_st_find(f, "image_embeds"), ig = fm_st_find(f, "image_grid_thw");
    REQUIRE(ie >= 0 && ig >= 0);
    fm_tensor got = {0}, got_grid = {0};
    REQUIRE_OK(fm_st_tensor(f, (size_t)ie, &got, &err), &err);
    REQUIRE_OK(fm_st_tensor(f, (size_t)ig, &got_grid, &err), &err);
    const int64_t upright[6] = {1, 4, 6, 1, 6, 4}; /* 56x84 and the rotated 12x20 -> 84x56 */
    CHECK_MSG(got_grid.nbytes == sizeof upright && !memcmp(got_grid.data, upright, sizeof upright),
              "image_grid_thw of the CLI run is [[1, 4, 6], [1, 6, 4]] (second image upright)");
    CHECK_MSG(grid.nbytes == got_grid.nbytes && !memcmp(grid.data, got_grid.data, grid.nbytes),
              "the CLI's image_grid_thw equals the library's");
    CHECK_MSG(want.data && got.nbytes == want.nbytes && !memcmp(got.data, want.data, want.nbytes),
              "the CLI's image_embeds equal the library's preprocessing + forward of both images");
    fm_tensor_free(&got), fm_tensor_free(&got_grid);
    fm_st_close(f);
    fm_tensor_free(&pv), fm_tensor_free(&grid), fm_tensor_free(&want);
    fm_image_free(&imgs[0]), fm_image_free(&imgs[1]);
    fm_model_free(m);
}

static void test_verify(void) {
    char *out = NULL;
    CHECK_EQ_INT(0, fm(&out, "verify %s --fuse patch_embeddings", src));
    CHECK_CONTAINS(out, "verify: OK");
    CHECK_CONTAINS(out, "0 differ from the checkpoint");
    CHECK_CONTAINS(out, "vision outputs: fused vs unfused");
    CHECK_CONTAINS(out, "model logits: fused vs unfused"); /* the whole model, to logits */
    free(out);
    CHECK_EQ_INT(
        1, fm(&out, "verify %s --fuse patch_embeddings --threshold 0", src)); /* 0 is unreachable */
    free(out);
}

int main(void) {
    cli = getenv("FM_CLI");
    if (!cli) cli = "build/fusemap";
    tmp = fm_test_tmpdir("e2e");
    src = malloc(4300);
    snprintf(src, 4300, "%s/src", tmp);
    fm_qfix q;
    fm_qfix_init(&q);
    q.dtype = FM_DTYPE_BF16;
    fm_error err;
    if (fm_qfix_write(src, &q, &err) != FM_OK) return fprintf(stderr, "%s\n", err.msg), 1;
    RUN(test_convert);
    RUN(test_inspect_modules_fused);
    RUN(test_run_images);
    RUN(test_run_exif_after_idat);
    RUN(test_run_two_images_exif);
    RUN(test_verify);
    fm_test_rmtree(tmp);
    free(tmp), free(src);
    TEST_END();
}
