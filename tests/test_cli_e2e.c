/* The CLI end to end on generated checkpoints: convert (byte-identical, --dtype, shard size,
 * runtime format, fusion), inspect --modules with a fusion, run on PNG and JPEG images (fused
 * and unfused agree) and on pixel_values, verify. */
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
    /* ... and converting it back (unfused) gives the source's weights again */
    CHECK_EQ_INT(0, fm(NULL, "convert %s/c-rt %s/c-back --fusion-config '{}'", tmp, tmp));
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

static void test_verify(void) {
    char *out = NULL;
    CHECK_EQ_INT(0, fm(&out, "verify %s --fuse patch_embeddings", src));
    CHECK_CONTAINS(out, "verify: OK");
    CHECK_CONTAINS(out, "0 differ from the checkpoint");
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
    RUN(test_verify);
    fm_test_rmtree(tmp);
    free(tmp), free(src);
    TEST_END();
}
