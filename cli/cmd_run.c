/* `fusemap run MODEL_DIR (--pixel-values IN | --image FILE...) -o OUT`: load the model
 * (optionally fused), preprocess or read the inputs, run the vision tower, write
 * image_embeds + image_grid_thw (+ deepstack_embeds for a model with DeepStack) atomically.
 * Shapes and timings go to stderr. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "common.h"
#include "fusemap/image.h"
#include "progress.h"

enum { OPT_IMAGE = FM_CLI_OPT_OWN, OPT_PIXEL_VALUES, OPT_OUTPUT, OPT_THREADS };

#define MAX_IMAGES FM_CLI_MAX_IMAGES

static const fm_cli_opt opts[] = {
    {OPT_IMAGE, "--image", NULL, "FILE", "none",
     "a PNG or JPEG image, preprocessed by the model's image processor\n"
     "(one file per flag, repeatable: --image a.png --image b.png;\n"
     "at most 64; EXIF orientation applied first)"},
    {OPT_PIXEL_VALUES, "--pixel-values", NULL, "FILE", "none",
     "a safetensors file with pixel_values (F32) and image_grid_thw (I64), instead of --image"},
    {OPT_OUTPUT, "--output", "-o", "FILE", "required",
     "where to write image_embeds, image_grid_thw (and deepstack_embeds)\n"
     "(safetensors, atomically)"},
    {OPT_THREADS, "--threads", NULL, "N", "all cores", "threads of the forward (1..1024)"},
    FM_CLI_OPTS_FUSION,
    FM_CLI_OPT_STRICT_ENTRY,
    FM_CLI_OPT_QUIET_ENTRY,
};

const fm_cli_help fm_cli_run_help = {
    "run MODEL_DIR (--image FILE [--image FILE]... | --pixel-values FILE) -o OUT [options]",
    "Loads the model, preprocesses the images (or reads pixel_values), runs the vision tower and\n"
    "writes image_embeds [patches / merge^2, hidden] F32 and image_grid_thw to OUT, and for a\n"
    "model with DeepStack (Qwen3-VL) deepstack_embeds [K, patches / merge^2, hidden] F32. Shapes\n"
    "and timings go to stderr, and a progress line while the forward runs on a terminal.\n",
    opts,
    sizeof opts / sizeof *opts,
    "fusemap run Qwen2-VL-2B-Instruct --image cat.png -o embeds.safetensors --fuse "
    "patch_embeddings\n"
    "fusemap run Qwen2-VL-2B-Instruct --pixel-values inputs.safetensors -o embeds.safetensors "
    "--threads 4\n",
};

typedef struct run_args {
    const char *dir, *pixel_values, *out;
    const char *images[MAX_IMAGES];
    int n_images, threads;
    const char *last_image;          /* the --image value just parsed (cleared by the next token) */
    const char *stray, *stray_image; /* a word right after an --image value, and that value */
    fm_cli_common c;
} run_args;

static int on_opt(const fm_cli_command *cmd, void *ctx, int id, const char *v) {
    run_args *a = ctx;
    char *end;
    long t;
    const char *after_image = a->last_image;
    a->last_image = NULL;
    switch (id) {
    case OPT_IMAGE:
        if (v[0] == '-' && v[1])
            return fm_cli_usage(cmd, "--image needs a file, got the option '%s'", v);
        if (a->n_images == MAX_IMAGES) return fm_cli_usage(cmd, "at most %d --image", MAX_IMAGES);
        a->images[a->n_images++] = a->last_image = v;
        return 0;
    case OPT_PIXEL_VALUES:
        a->pixel_values = v;
        return 0;
    case OPT_OUTPUT:
        a->out = v;
        return 0;
    case OPT_THREADS:
        t = strtol(v, &end, 10);
        if (*end || end == v || t < 1 || t > 1024)
            return fm_cli_usage(cmd, "--threads: expected 1..1024, got '%s'", v);
        a->threads = (int)t;
        return 0;
    default: /* MODEL_DIR; a word right after an --image value may be a second image */
        if (after_image && !a->stray) a->stray = v, a->stray_image = after_image;
        if (a->dir && a->stray)
            return fm_cli_usage(cmd, "one file per --image (--image %s --image %s)", a->stray_image,
                                a->stray);
        if (a->dir) return fm_cli_usage(cmd, "run: unexpected argument '%s'", v);
        a->dir = v;
        return 0;
    }
}

static int check_args(const fm_cli_command *cmd, const run_args *a) {
    if (!a->dir || !a->out || (!a->pixel_values && !a->n_images))
        return fm_cli_usage(cmd, "run needs MODEL_DIR, --image or --pixel-values, and -o");
    if (a->pixel_values && a->n_images)
        return fm_cli_usage(cmd, "use either --pixel-values or --image, not both");
    return FM_CLI_GO;
}

static fm_status write_output(const char *path, const fm_vision_features *f, const fm_tensor *grid,
                              fm_error *err) {
    fm_st_item items[3] = {{"image_embeds", &f->image_embeds},
                           {"image_grid_thw", grid},
                           {"deepstack_embeds", &f->deepstack}};
    fm_st_kv meta = {"format", "pt"};
    fm_st_write_options o;
    fm_st_write_options_init(&o);
    o.metadata = &meta, o.n_metadata = 1, o.with_metadata = true;
    return fm_st_write_file(path, items, f->deepstack.data ? 3 : 2, &o, err);
}

static int run(run_args *a) {
    fm_error err;
    fm_load_options lo;
    if (fm_cli_load_options(&a->c, &lo)) return 1;
    fm_model *m = NULL;
    fm_tensor pv = {0}, grid = {0};
    fm_vision_features emb = {{0}, {0}};
    char s1[128], s2[128], s3[128], s4[160] = "";
    fm_load_report rep;
    double t0 = fm_cli_now();
    fm_status st = fm_cli_load(a->dir, &lo, a->c.quiet, &m, &rep, &err);
    size_t n_fused = rep.n_fused;
    fm_load_report_free(&rep);
    double t1 = fm_cli_now();
    if (st == FM_OK)
        st = a->pixel_values
                 ? fm_cli_read_pixel_values(a->pixel_values, &pv, &grid, &err)
                 : fm_cli_preprocess_images(m, a->images, a->n_images, &pv, &grid, &err);
    double t2 = fm_cli_now();
    fm_cli_meter meter;
    fm_cli_meter_start(&meter, "forward", "blocks", fm_cli_progress_wanted(a->c.quiet));
    fm_run_options ro = {a->threads, fm_cli_meter_count, &meter};
    if (st == FM_OK) st = fm_model_vision_features(m, &pv, &grid, &ro, &emb, &err);
    fm_cli_meter_clear(&meter);
    double t3 = fm_cli_now();
    if (st == FM_OK) st = write_output(a->out, &emb, &grid, &err);
    if (st == FM_OK && !a->c.quiet) {
        if (emb.deepstack.data) {
            char s5[128];
            snprintf(s4, sizeof s4, ", deepstack_embeds %s",
                     fm_shape_format(&emb.deepstack.shape, s5, sizeof s5));
        }
        fprintf(
            stderr, "pixel_values %s, image_grid_thw %s -> image_embeds %s%s%s\n",
            fm_shape_format(&pv.shape, s1, sizeof s1), fm_shape_format(&grid.shape, s2, sizeof s2),
            fm_shape_format(&emb.image_embeds.shape, s3, sizeof s3), s4, n_fused ? " (fused)" : "");
        fprintf(stderr, "timings: load %.3f s, %s %.3f s, forward %.3f s\n", t1 - t0,
                a->pixel_values ? "read inputs" : "preprocess", t2 - t1, t3 - t2);
    }
    fm_tensor_free(&pv), fm_tensor_free(&grid), fm_vision_features_free(&emb);
    fm_model_free(m);
    return st == FM_OK ? 0 : fm_cli_fail(&err);
}

int fm_cli_run_run(const fm_cli_command *self, int argc, char **argv) {
    run_args a;
    memset(&a, 0, sizeof a);
    int rc = fm_cli_parse(self, argc, argv, &a.c, on_opt, &a);
    if (rc == FM_CLI_GO) rc = check_args(self, &a);
    if (rc == FM_CLI_GO) rc = run(&a);
    fm_cli_common_free(&a.c);
    return rc;
}
