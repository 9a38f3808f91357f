/* `fusemap run MODEL_DIR (--pixel-values IN | --image FILE...) -o OUT`: load the model
 * (optionally fused), preprocess or read the inputs, run the vision tower, write
 * image_embeds + image_grid_thw atomically. Shapes and timings go to stderr. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "commands.h"
#include "common.h"
#include "fusemap/image.h"

typedef struct run_args {
    const char *dir, *pixel_values, *out;
    const char *images[64];
    int n_images, threads;
    fm_cli_fusion fusion;
} run_args;

static int parse(run_args *a, int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        int f = fm_cli_fusion_arg(&a->fusion, argc, argv, &i);
        if (f < 0) return 2;
        if (f) continue;
        int needs = !strcmp(s, "--pixel-values") || !strcmp(s, "--image") || !strcmp(s, "-o") ||
                    !strcmp(s, "--output") || !strcmp(s, "--threads");
        if (needs && i + 1 >= argc) return fm_cli_usage_error("%s needs a value", s);
        if (!strcmp(s, "--pixel-values"))
            a->pixel_values = argv[++i];
        else if (!strcmp(s, "--image")) {
            if (a->n_images == 64) return fm_cli_usage_error("at most 64 --image");
            a->images[a->n_images++] = argv[++i];
        } else if (!strcmp(s, "-o") || !strcmp(s, "--output"))
            a->out = argv[++i];
        else if (!strcmp(s, "--threads")) {
            char *end;
            long t = strtol(argv[++i], &end, 10);
            if (*end || t < 1 || t > 1024)
                return fm_cli_usage_error("--threads: expected 1..1024, got '%s'", argv[i]);
            a->threads = (int)t;
        } else if (s[0] == '-')
            return fm_cli_usage_error("run: unknown option '%s'", s);
        else if (!a->dir)
            a->dir = s;
        else
            return fm_cli_usage_error("run: unexpected argument '%s'", s);
    }
    if (!a->dir || !a->out || (!a->pixel_values && !a->n_images))
        return fm_cli_usage_error(
            "usage: fusemap run MODEL_DIR (--pixel-values IN | --image FILE...) -o OUT");
    if (a->pixel_values && a->n_images)
        return fm_cli_usage_error("use either --pixel-values or --image, not both");
    if (a->fusion.json && a->fusion.n_fuse)
        return fm_cli_usage_error("use either --fuse or --fusion-config, not both");
    return 0;
}

/* Reads pixel_values (F32) and image_grid_thw (I64) from IN (views, freed by the caller). */
static fm_status read_inputs(const char *path, fm_tensor *pv, fm_tensor *grid, fm_error *err) {
    fm_st_file *f = NULL;
    fm_status st = fm_st_open(path, &f, err);
    long ip = st == FM_OK ? fm_st_find(f, "pixel_values") : -1,
         ig = st == FM_OK ? fm_st_find(f, "image_grid_thw") : -1;
    if (st == FM_OK && (ip < 0 || ig < 0))
        st = fm_error_set(err, FM_ERR_INPUT,
                          "%s: needs tensors 'pixel_values' and 'image_grid_thw'", path);
    if (st == FM_OK) st = fm_st_tensor(f, (size_t)ip, pv, err);
    if (st == FM_OK) st = fm_st_tensor(f, (size_t)ig, grid, err);
    if (st == FM_OK && (pv->dtype != FM_DTYPE_F32 || grid->dtype != FM_DTYPE_I64))
        st = fm_error_set(err, FM_ERR_INPUT,
                          "%s: pixel_values must be F32 (is %s) and image_grid_thw I64 (is %s)",
                          path, fm_dtype_name(pv->dtype), fm_dtype_name(grid->dtype));
    fm_tensor aligned;
    if (st == FM_OK &&
        ((uintptr_t)pv->data % 4 || (uintptr_t)grid->data % 8)) { /* unaligned file layout */
        st = fm_tensor_cast(&aligned, pv, FM_DTYPE_F32, err);
        if (st == FM_OK) fm_tensor_free(pv), *pv = aligned;
        if (st == FM_OK) st = fm_tensor_cast(&aligned, grid, FM_DTYPE_I64, err);
        if (st == FM_OK) fm_tensor_free(grid), *grid = aligned;
    }
    fm_st_close(f);
    return st;
}

static fm_status preprocess(const run_args *a, fm_tensor *pv, fm_tensor *grid, fm_error *err) {
    fm_qwen2vl_preproc_params p;
    fm_image imgs[64];
    memset(imgs, 0, sizeof imgs);
    fm_status st = fm_qwen2vl_preproc_params_load(a->dir, &p, NULL, err);
    /* transformers' load_image applies the EXIF orientation before preprocessing */
    for (int i = 0; st == FM_OK && i < a->n_images; i++) {
        st = fm_image_load(a->images[i], &imgs[i], err);
        if (st == FM_OK) st = fm_image_apply_orientation(&imgs[i], err);
    }
    if (st == FM_OK) st = fm_qwen2vl_preprocess(imgs, (size_t)a->n_images, &p, pv, grid, err);
    for (int i = 0; i < a->n_images; i++)
        fm_image_free(&imgs[i]);
    return st;
}

static void progress(void *ctx, int done, int total) {
    (void)ctx;
    fprintf(stderr, "\r  forward: block %d/%d", done, total);
    if (done == total) fputc('\n', stderr);
}

static fm_status write_output(const char *path, const fm_tensor *emb, const fm_tensor *grid,
                              fm_error *err) {
    fm_st_item items[2] = {{"image_embeds", emb}, {"image_grid_thw", grid}};
    fm_st_kv meta = {"format", "pt"};
    fm_st_write_options o;
    fm_st_write_options_init(&o);
    o.metadata = &meta, o.n_metadata = 1, o.with_metadata = true;
    return fm_st_write_file(path, items, 2, &o, err);
}

static int run(run_args *a) {
    fm_error err;
    fm_load_options lo;
    fm_load_options_init(&lo);
    lo.fusion_config = fm_cli_fusion_config(&a->fusion);
    fm_model *m = NULL;
    fm_tensor pv = {0}, grid = {0}, emb = {0};
    char s1[128], s2[128], s3[128];
    fm_load_report rep;
    double t0 = fm_cli_now();
    fm_status st = fm_from_pretrained(a->dir, &lo, &m, &rep, &err);
    size_t n_fused = rep.n_fused;
    fm_load_report_free(&rep);
    double t1 = fm_cli_now();
    if (st == FM_OK)
        st = a->pixel_values ? read_inputs(a->pixel_values, &pv, &grid, &err)
                             : preprocess(a, &pv, &grid, &err);
    double t2 = fm_cli_now();
    fm_run_options ro = {a->threads, isatty(2) ? progress : NULL, NULL};
    if (st == FM_OK) st = fm_model_vision_forward(m, &pv, &grid, &ro, &emb, &err);
    double t3 = fm_cli_now();
    if (st == FM_OK) st = write_output(a->out, &emb, &grid, &err);
    if (st == FM_OK) {
        fprintf(stderr, "pixel_values %s, image_grid_thw %s -> image_embeds %s%s\n",
                fm_shape_format(&pv.shape, s1, sizeof s1),
                fm_shape_format(&grid.shape, s2, sizeof s2),
                fm_shape_format(&emb.shape, s3, sizeof s3), n_fused ? " (fused)" : "");
        fprintf(stderr, "timings: load %.3f s, %s %.3f s, forward %.3f s\n", t1 - t0,
                a->pixel_values ? "read inputs" : "preprocess", t2 - t1, t3 - t2);
    }
    fm_tensor_free(&pv), fm_tensor_free(&grid), fm_tensor_free(&emb);
    fm_model_free(m);
    return st == FM_OK ? 0 : fm_cli_fail(&err);
}

int fm_cli_run(int argc, char **argv) {
    run_args a;
    memset(&a, 0, sizeof a);
    int rc = parse(&a, argc, argv);
    if (!rc) rc = run(&a);
    fm_cli_fusion_free(&a.fusion);
    return rc;
}
