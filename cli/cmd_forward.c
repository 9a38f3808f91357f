/* `fusemap forward MODEL_DIR --input-ids 1,2,3 [--pixel-values IN] -o OUT`: the language model's
 * logits for every position of a prompt (the whole-model counterpart of `run`), written as
 * `logits` F32 [seq, vocab] atomically. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "common.h"

enum { OPT_IDS = FM_CLI_OPT_OWN, OPT_PIXEL_VALUES, OPT_OUTPUT, OPT_THREADS, OPT_KV_DTYPE };

static const fm_cli_opt opts[] = {
    {OPT_IDS, "--input-ids", NULL, "IDS", "required",
     "the prompt's token ids, comma-separated (e.g. 1,2,3)"},
    {OPT_PIXEL_VALUES, "--pixel-values", NULL, "FILE", "none",
     "pixel_values (F32) and image_grid_thw (I64) of the prompt's images, as `run` reads them"},
    {OPT_OUTPUT, "--output", "-o", "FILE", "required",
     "where to write logits F32 [seq, vocab] (safetensors)"},
    {OPT_THREADS, "--threads", NULL, "N", "all cores", "threads of the forward (1..1024)"},
    {OPT_KV_DTYPE, "--kv-dtype", NULL, "f32|bf16", "f32", "the KV cache's element type"},
    FM_CLI_OPTS_FUSION,
    FM_CLI_OPT_STRICT_ENTRY,
    FM_CLI_OPT_QUIET_ENTRY,
};

const fm_cli_help fm_cli_forward_help = {
    "forward MODEL_DIR --input-ids IDS [--pixel-values FILE] -o OUT [options]",
    "Runs the whole model (vision tower for the images, then the language model) over the prompt\n"
    "and writes the logits of every position, F32 [seq, vocab], to OUT. No tokenizer, no chat\n"
    "template: the ids are used as given (image tokens must match the grids).\n",
    opts,
    sizeof opts / sizeof *opts,
    "fusemap forward Qwen2-VL-2B-Instruct --input-ids 151644,8948,198 -o logits.safetensors\n"
    "fusemap forward Qwen2-VL-2B-Instruct --input-ids \"$IDS\" --pixel-values px.safetensors -o "
    "logits.safetensors "
    "--fuse qkv\n",
};

typedef struct forward_args {
    const char *dir, *ids, *pixel_values, *out;
    int threads;
    fm_dtype kv;
    fm_cli_common c;
} forward_args;

static int on_opt(const fm_cli_command *cmd, void *ctx, int id, const char *v) {
    forward_args *a = ctx;
    switch (id) {
    case OPT_IDS:
        a->ids = v;
        return 0;
    case OPT_PIXEL_VALUES:
        a->pixel_values = v;
        return 0;
    case OPT_OUTPUT:
        a->out = v;
        return 0;
    case OPT_THREADS:
        return fm_cli_parse_threads(cmd, v, &a->threads);
    case OPT_KV_DTYPE:
        return fm_cli_parse_kv_dtype(cmd, v, &a->kv);
    default:
        if (a->dir) return fm_cli_usage(cmd, "forward: unexpected argument '%s'", v);
        a->dir = v;
        return 0;
    }
}

static fm_status write_logits(const char *path, const fm_tensor *logits, fm_error *err) {
    fm_st_item items[1] = {{"logits", logits}};
    fm_st_kv meta = {"format", "pt"};
    fm_st_write_options o;
    fm_st_write_options_init(&o);
    o.metadata = &meta, o.n_metadata = 1, o.with_metadata = true;
    return fm_st_write_file(path, items, 1, &o, err);
}

/* Every row of the prompt in one forward, logits of all rows. */
static fm_status all_logits(fm_model *m, const forward_args *a, const int64_t *ids, size_t n,
                            fm_tensor *logits, fm_error *err) {
    fm_tensor pv = {0}, grid = {0};
    fm_vision_features img = {{0}, {0}};
    fm_run_options ro = {a->threads, NULL, NULL};
    int64_t *pos3 = fm_malloc(3 * n * sizeof *pos3), next = 0;
    int32_t *slot = fm_calloc(n, sizeof *slot), *pos = fm_malloc(n * sizeof *pos),
            *rows = fm_malloc(n * sizeof *rows);
    fm_kv_cache *c = NULL;
    fm_status st =
        pos3 && slot && pos && rows ? FM_OK : fm_error_set(err, FM_ERR_NOMEM, "out of memory");
    if (st == FM_OK && a->pixel_values)
        st = fm_cli_read_pixel_values(a->pixel_values, &pv, &grid, err);
    if (st == FM_OK)
        st = fm_model_rope_index(m, ids, (int64_t)n, a->pixel_values ? &grid : NULL, pos3, &next,
                                 err);
    if (st == FM_OK && a->pixel_values)
        st = fm_model_vision_features(m, &pv, &grid, &ro, &img, err);
    if (st == FM_OK) st = fm_kv_cache_new(m, 1, (int64_t)n, a->kv, &c, err);
    for (size_t i = 0; st == FM_OK && i < n; i++)
        pos[i] = rows[i] = (int32_t)i;
    fm_text_batch b = {.ids = ids,
                       .pos3 = pos3,
                       .slot = slot,
                       .pos = pos,
                       .n = n,
                       .image_embeds = a->pixel_values ? &img.image_embeds : NULL,
                       .logit_rows = rows,
                       .n_logits = n,
                       .deepstack_embeds = img.deepstack.data ? &img.deepstack : NULL};
    if (st == FM_OK) st = fm_model_forward_text(m, c, &b, &ro, logits, err);
    fm_kv_cache_free(c);
    fm_tensor_free(&pv), fm_tensor_free(&grid), fm_vision_features_free(&img);
    fm_free(pos3), fm_free(slot), fm_free(pos), fm_free(rows);
    return st;
}

static int run(forward_args *a) {
    fm_error err;
    fm_load_options lo;
    if (fm_cli_load_options(&a->c, &lo)) return 1;
    int64_t *ids = NULL;
    size_t n = 0;
    fm_model *m = NULL;
    fm_tensor logits = {0};
    fm_status st = fm_cli_parse_ids(a->ids, &ids, &n, &err);
    if (st == FM_OK) st = fm_cli_load(a->dir, &lo, a->c.quiet, &m, NULL, &err);
    if (st == FM_OK) st = all_logits(m, a, ids, n, &logits, &err);
    if (st == FM_OK) st = write_logits(a->out, &logits, &err);
    if (st == FM_OK && !a->c.quiet) {
        char s[64];
        fprintf(stderr, "%zu ids -> logits %s\n", n, fm_shape_format(&logits.shape, s, sizeof s));
    }
    fm_tensor_free(&logits);
    fm_free(ids);
    fm_model_free(m);
    return st == FM_OK ? 0 : fm_cli_fail(&err);
}

int fm_cli_forward_run(const fm_cli_command *self, int argc, char **argv) {
    forward_args a;
    memset(&a, 0, sizeof a);
    a.kv = FM_DTYPE_F32;
    int rc = fm_cli_parse(self, argc, argv, &a.c, on_opt, &a);
    if (rc == FM_CLI_GO && (!a.dir || !a.ids || !a.out))
        rc = fm_cli_usage(self, "forward needs MODEL_DIR, --input-ids and -o");
    if (rc == FM_CLI_GO) rc = run(&a);
    fm_cli_common_free(&a.c);
    return rc;
}
