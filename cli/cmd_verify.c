/* `fusemap verify MODEL_DIR --fuse NAME...`: loads the model fused and unfused, runs both
 * vision towers on the same random images of the model's shape and, when the model has a
 * language model, both whole models (text and those images) to logits; checks that every
 * weight the fused model would save equals the checkpoint's bytes. Exit 1 when outputs differ
 * beyond the threshold or any weight differs. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "common.h"

enum { OPT_THRESHOLD = FM_CLI_OPT_OWN, OPT_THREADS };

static const fm_cli_opt opts[] = {
    FM_CLI_OPTS_FUSION, /* one of them is required */
    {OPT_THRESHOLD, "--threshold", NULL, "X", "1e-5",
     "largest relative L2 difference allowed between fused and unfused outputs"},
    {OPT_THREADS, "--threads", NULL, "N", "all cores", "threads of the forwards (1..1024)"},
    FM_CLI_OPT_QUIET_ENTRY,
};

const fm_cli_help fm_cli_verify_help = {
    "verify MODEL_DIR (--fuse NAME [--fuse NAME]... | --fusion-config JSON) [options]",
    "Loads the model fused (strictly: any missing or unexpected weight is an error) and unfused,\n"
    "runs both vision towers on random images of the model's shape (image embeddings, and\n"
    "DeepStack features where the model has them) and both whole models on a random prompt\n"
    "holding those images (all rows' logits), compares the outputs, then checks that every\n"
    "weight the fused model would save equals the checkpoint's bytes. Exit 1 when the outputs\n"
    "differ beyond the threshold or any weight differs.\n",
    opts,
    sizeof opts / sizeof *opts,
    "fusemap verify Qwen2-VL-2B-Instruct --fuse patch_embeddings\n"
    "fusemap verify Qwen2-VL-2B-Instruct --fusion-config '{\"patch_embeddings\": true}' "
    "--threshold 1e-6\n",
};

typedef struct verify_args {
    const char *dir;
    double threshold;
    int threads;
    fm_cli_common c;
} verify_args;

static int on_opt(const fm_cli_command *cmd, void *ctx, int id, const char *v) {
    verify_args *a = ctx;
    char *end;
    long t;
    switch (id) {
    case OPT_THRESHOLD:
        a->threshold = strtod(v, &end);
        if (*end || end == v || !(a->threshold >= 0))
            return fm_cli_usage(cmd, "--threshold: invalid number '%s'", v);
        return 0;
    case OPT_THREADS:
        t = strtol(v, &end, 10);
        if (*end || end == v || t < 1 || t > 1024)
            return fm_cli_usage(cmd, "--threads: expected 1..1024, got '%s'", v);
        a->threads = (int)t;
        return 0;
    default:
        if (a->dir) return fm_cli_usage(cmd, "verify: unexpected argument '%s'", v);
        a->dir = v;
        return 0;
    }
}

/* The patch geometry (C, T, P) of the unfused model's patch embedding: the Conv3d `proj` of the
 * tower's `patch_embed`, read from the module (a config may spell the channels in_chans or
 * in_channels; the weight is what counts). */
static fm_status patch_geometry(const fm_model *plain, int64_t *c, int64_t *t, int64_t *p,
                                fm_error *err) {
    const fm_model_builder *b =
        fm_model_builder_find(fm_model_type(plain), fm_model_architecture(plain));
    char path[512];
    snprintf(path, sizeof path, "%s.patch_embed.proj", b && b->vision_tower ? b->vision_tower : "");
    fm_conv3d_geometry g;
    fm_module *proj = b && b->vision_tower ? fm_module_find(fm_model_root(plain), path) : NULL;
    if (!proj || fm_conv3d_geometry_of(proj, &g, NULL) != FM_OK)
        return fm_error_set(err, FM_ERR_UNSUPPORTED,
                            "verify: the model has no Conv3d patch embedding ('%s')", path);
    *c = g.in_channels, *t = g.kernel[0], *p = g.kernel[1];
    return FM_OK;
}

/* A random input of the model's shape: two images, grids (1, 2m, 2m) and (2, 2m, 4m). */
static fm_status make_input(const fm_model *plain, fm_tensor *pv, fm_tensor *grid, fm_error *err) {
    int64_t ms = 2, P = 14, T = 2, C = 3;
    fm_config_get_int(fm_model_config(plain), "vision_config.spatial_merge_size", &ms, NULL);
    fm_status st = patch_geometry(plain, &C, &T, &P, err);
    int64_t g[6] = {1, 2 * ms, 2 * ms, 2, 2 * ms, 4 * ms};
    fm_shape gs = {2, {2, 3}}, ps = {2, {g[0] * g[1] * g[2] + g[3] * g[4] * g[5], C * T * P * P}};
    if (st == FM_OK) st = fm_tensor_alloc(grid, FM_DTYPE_I64, &gs, err);
    if (st == FM_OK) memcpy(grid->data, g, sizeof g);
    if (st == FM_OK) st = fm_tensor_alloc(pv, FM_DTYPE_F32, &ps, err);
    uint64_t s = 0x9E3779B97F4A7C15ull;
    for (uint64_t i = 0; st == FM_OK && i < fm_tensor_numel(pv); i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        ((float *)pv->data)[i] = (float)((double)(s >> 11) / 9007199254740992.0 * 4.0 - 2.0);
    }
    return st;
}

/* A random prompt around the two images of make_input: text, <vision_start>, the first image's
 * tokens, <vision_end>, text, the second image, text (grid NULL: 16 text tokens). Text ids
 * avoid the vision markers. */
static fm_status make_prompt(const fm_lm_info *li, const fm_tensor *grid, int64_t **ids, size_t *n,
                             fm_error *err) {
    int64_t k[2] = {0, 0}, ms2 = li->spatial_merge_size * li->spatial_merge_size;
    for (int i = 0; grid && i < 2; i++) {
        const int64_t *g = (const int64_t *)grid->data + 3 * i;
        k[i] = g[0] * g[1] * g[2] / ms2;
    }
    size_t len = 16 + 6 + (size_t)(k[0] + k[1]);
    int64_t *p = fm_malloc(len * sizeof *p);
    if (!p) return fm_error_set(err, FM_ERR_NOMEM, "verify: out of memory");
    uint64_t s = 0xD1B54A32D192ED03ull;
    size_t i = 0;
    for (int part = 0; part < 3; part++) {
        for (int j = 0; j < (part == 2 ? 6 : 5); j++) {
            int64_t id;
            do {
                s ^= s << 13, s ^= s >> 7, s ^= s << 17;
                id = (int64_t)(s % (uint64_t)li->vocab);
            } while (id == li->image_token_id || id == li->vision_start_token_id ||
                     id == li->vision_end_token_id);
            p[i++] = id;
        }
        if (part == 2 || !grid) continue;
        p[i++] = li->vision_start_token_id;
        for (int64_t j = 0; j < k[part]; j++)
            p[i++] = li->image_token_id;
        p[i++] = li->vision_end_token_id;
    }
    *ids = p, *n = i;
    return FM_OK;
}

/* All rows' logits of the whole model on ids with the images' features `img` (and their
 * DeepStack features, for a model with them). */
static fm_status model_logits(fm_model *m, const int64_t *ids, size_t n, const fm_tensor *grid,
                              const fm_vision_features *img, const fm_run_options *ro,
                              fm_tensor *logits, fm_error *err) {
    int64_t *pos3 = fm_malloc(3 * n * sizeof *pos3), next = 0;
    int32_t *slot = fm_calloc(n, sizeof *slot), *pos = fm_malloc(n * sizeof *pos);
    fm_kv_cache *c = NULL;
    fm_status st = pos3 && slot && pos ? FM_OK : fm_error_set(err, FM_ERR_NOMEM, "out of memory");
    if (st == FM_OK) st = fm_model_rope_index(m, ids, (int64_t)n, grid, pos3, &next, err);
    if (st == FM_OK) st = fm_kv_cache_new(m, 1, (int64_t)n, FM_DTYPE_F32, &c, err);
    for (size_t i = 0; st == FM_OK && i < n; i++)
        pos[i] = (int32_t)i;
    fm_text_batch b = {.ids = ids,
                       .pos3 = pos3,
                       .slot = slot,
                       .pos = pos,
                       .n = n,
                       .image_embeds = img ? &img->image_embeds : NULL,
                       .logit_rows = pos, /* logits of every row */
                       .n_logits = n,
                       .deepstack_embeds = img && img->deepstack.data ? &img->deepstack : NULL};
    if (st == FM_OK) st = fm_model_forward_text(m, c, &b, ro, logits, err);
    fm_kv_cache_free(c);
    fm_free(pos3), fm_free(slot), fm_free(pos);
    return st;
}

static void compare_outputs(const fm_tensor *a, const fm_tensor *b, double *max_abs,
                            double *rel_l2) {
    double num = 0, den = 0;
    *max_abs = 0;
    if (!a->data || !b->data || !fm_shape_equal(&a->shape, &b->shape)) {
        *max_abs = *rel_l2 = INFINITY; /* one output missing, or of another shape */
        return;
    }
    const float *x = a->data, *y = b->data;
    for (uint64_t i = 0; i < fm_tensor_numel(a); i++) {
        double d = (double)x[i] - (double)y[i];
        num += d * d, den += (double)y[i] * y[i];
        if (fabs(d) > *max_abs || d != d) *max_abs = fabs(d);
    }
    *rel_l2 = den > 0 ? sqrt(num / den) : sqrt(num);
}

/* Every tensor the fused model would save must equal the checkpoint's (name, dtype, shape, bytes).
 */
static fm_status compare_weights(const fm_model *fused, const char *dir, size_t *n_bad,
                                 size_t *n_checked, fm_error *err) {
    fm_named_tensor *sd = NULL;
    size_t n = 0;
    fm_checkpoint *ck = NULL;
    *n_bad = *n_checked = 0;
    fm_status st = fm_model_save_state_dict(fused, false, &sd, &n, err);
    if (st == FM_OK) st = fm_checkpoint_open(dir, &ck, err);
    for (size_t i = 0; st == FM_OK && i < fm_checkpoint_count(ck); i++) {
        const fm_ckpt_entry *e = fm_checkpoint_entry_at(ck, i);
        size_t j = 0;
        while (j < n && strcmp(sd[j].name, e->name))
            j++;
        fm_tensor t;
        bool same = j < n && sd[j].tensor.dtype == e->dtype &&
                    fm_shape_equal(&sd[j].tensor.shape, &e->shape);
        if (same && (st = fm_checkpoint_tensor(ck, i, &t, err)) == FM_OK) {
            same = t.nbytes == sd[j].tensor.nbytes &&
                   !memcmp(t.data, sd[j].tensor.data, (size_t)t.nbytes);
            fm_tensor_free(&t);
        }
        if (!same && (*n_bad)++ < 5)
            fprintf(stderr, "  weight differs from the checkpoint: %s\n", e->name);
        (*n_checked)++;
    }
    if (st == FM_OK && n != fm_checkpoint_count(ck)) {
        fprintf(stderr, "  the fused model would save %zu tensors, the checkpoint has %zu\n", n,
                fm_checkpoint_count(ck));
        (*n_bad)++;
    }
    fm_checkpoint_close(ck);
    fm_named_tensors_free(sd, n);
    return st;
}

/* Prints one comparison line; returns whether it is within the threshold. */
static bool report(const char *what, const fm_tensor *f, const fm_tensor *u, double threshold) {
    double max_abs, rel;
    compare_outputs(f, u, &max_abs, &rel);
    printf("%s: fused vs unfused max |diff| %.3g, relative L2 %.3g (threshold %.3g)\n", what,
           max_abs, rel, threshold);
    return rel <= threshold;
}

/* Both models' logits on a random prompt with the images (when the model has an LM). */
static fm_status lm_outputs(fm_model *fused, fm_model *plain, const fm_tensor *grid,
                            const fm_vision_features *of, const fm_vision_features *ou,
                            const fm_run_options *ro, fm_tensor *lf, fm_tensor *lu, bool *has_lm,
                            fm_error *err) {
    fm_lm_info li;
    fm_error ignored;
    *has_lm = fm_model_lm_info(fused, &li, &ignored) == FM_OK;
    if (!*has_lm) return FM_OK;
    /* a vocabulary without the vision markers (a toy config): a text-only prompt */
    bool images = li.image_token_id >= 0 && li.image_token_id < li.vocab &&
                  li.vision_start_token_id >= 0 && li.vision_start_token_id < li.vocab &&
                  li.vision_end_token_id >= 0 && li.vision_end_token_id < li.vocab;
    int64_t *ids = NULL;
    size_t n = 0;
    fm_status st = make_prompt(&li, images ? grid : NULL, &ids, &n, err);
    if (!images) grid = NULL, of = ou = NULL;
    if (st == FM_OK) st = model_logits(fused, ids, n, grid, of, ro, lf, err);
    if (st == FM_OK) st = model_logits(plain, ids, n, grid, ou, ro, lu, err);
    fm_free(ids);
    return st;
}

static int verify(verify_args *a) {
    fm_error err;
    fm_model *fused = NULL, *plain = NULL;
    fm_load_options lo;
    if (fm_cli_load_options(&a->c, &lo)) return 1;
    lo.strict = true;
    fm_tensor pv = {0}, grid = {0}, lf = {0}, lu = {0};
    fm_vision_features of = {{0}, {0}}, ou = {{0}, {0}};
    fm_load_report rep;
    fm_status st = fm_cli_load(a->dir, &lo, a->c.quiet, &fused, &rep, &err);
    if (st == FM_OK && !a->c.quiet) fm_cli_print_report(stderr, a->dir, &rep);
    fm_load_report_free(&rep);
    lo.fusion_config = "{}";
    lo.strict = false;
    if (st == FM_OK)
        st = fm_cli_load(a->dir, &lo, true, &plain, NULL, &err); /* the fused load warned */
    if (st == FM_OK) st = make_input(plain, &pv, &grid, &err);
    fm_run_options ro = {a->threads, NULL, NULL};
    if (st == FM_OK) st = fm_model_vision_features(fused, &pv, &grid, &ro, &of, &err);
    if (st == FM_OK) st = fm_model_vision_features(plain, &pv, &grid, &ro, &ou, &err);
    bool has_lm = false;
    if (st == FM_OK) st = lm_outputs(fused, plain, &grid, &of, &ou, &ro, &lf, &lu, &has_lm, &err);
    size_t bad = 0, checked = 0;
    if (st == FM_OK) st = compare_weights(fused, a->dir, &bad, &checked, &err);
    int rc_exit = st == FM_OK ? 0 : fm_cli_fail(&err);
    if (st == FM_OK) {
        bool ok = report("vision outputs", &of.image_embeds, &ou.image_embeds, a->threshold);
        if (of.deepstack.data || ou.deepstack.data)
            ok = report("deepstack", &of.deepstack, &ou.deepstack, a->threshold) && ok;
        if (has_lm) ok = report("model logits", &lf, &lu, a->threshold) && ok;
        printf("weights: %zu checked, %zu differ from the checkpoint\n", checked, bad);
        if (!ok || bad) {
            rc_exit = fm_cli_errorf("verify failed: %s",
                                    bad ? "saved weights differ from the checkpoint"
                                        : "fused outputs differ beyond the threshold");
        } else {
            printf("verify: OK\n");
        }
    }
    fm_tensor_free(&pv), fm_tensor_free(&grid), fm_tensor_free(&lf), fm_tensor_free(&lu);
    fm_vision_features_free(&of), fm_vision_features_free(&ou);
    fm_model_free(fused);
    fm_model_free(plain);
    return rc_exit;
}

int fm_cli_verify_run(const fm_cli_command *self, int argc, char **argv) {
    verify_args a;
    memset(&a, 0, sizeof a);
    a.threshold = 1e-5;
    int rc = fm_cli_parse(self, argc, argv, &a.c, on_opt, &a);
    if (rc == FM_CLI_GO && (!a.dir || (!a.c.fusion.n_fuse && !a.c.fusion.json)))
        rc = fm_cli_usage(self, "verify needs MODEL_DIR and --fuse or --fusion-config");
    if (rc == FM_CLI_GO) rc = verify(&a);
    fm_cli_common_free(&a.c);
    return rc;
}
