/* `fusemap convert SRC DST`: load (optionally fused, cast, strict), warn about the load
 * report's problems, save atomically in the original layout (or the runtime layout on request). */
#include <stdio.h>
#include <string.h>

#include "commands.h"
#include "common.h"

enum { OPT_DTYPE = FM_CLI_OPT_OWN, OPT_MAX_SHARD, OPT_RUNTIME };

static const fm_cli_opt opts[] = {
    {OPT_DTYPE, "--dtype", NULL, "TYPE", "auto",
     "cast floating-point weights on load to TYPE: auto (as stored), f32, bf16 or f16"},
    {OPT_MAX_SHARD, "--max-shard-size", NULL, "SIZE",
     "the source's shard layout; 50GB for a single-file source",
     "split the weights into shards of at most SIZE (\"5GB\", \"500MB\", bytes)"},
    {OPT_RUNTIME, "--save-runtime-format", NULL, NULL, NULL,
     "save the fused runtime layout instead of the original checkpoint layout"},
    FM_CLI_OPTS_FUSION,
    FM_CLI_OPT_STRICT_ENTRY,
    FM_CLI_OPT_QUIET_ENTRY,
};

const fm_cli_help fm_cli_convert_help = {
    "convert SRC DST [options]",
    "Loads the model directory SRC and saves it to DST atomically (DST is replaced only when\n"
    "everything is written). Without options the saved checkpoint is SRC's, byte for byte;\n"
    "with a fusion it is still written in the original layout, plus fusion_config in config.json.\n"
    "Warnings about weights that were not used or not found go to stderr.\n",
    opts,
    sizeof opts / sizeof *opts,
    "fusemap convert Qwen2-VL-2B-Instruct out --fuse patch_embeddings\n"
    "fusemap convert Qwen2-VL-2B-Instruct out-f32 --dtype f32 --max-shard-size 2GB\n",
};

typedef struct convert_args {
    const char *src, *dst;
    fm_dtype dtype;
    fm_save_pretrained_options so;
    fm_cli_common c;
} convert_args;

static int on_opt(const fm_cli_command *cmd, void *ctx, int id, const char *v) {
    convert_args *a = ctx;
    fm_error err;
    switch (id) {
    case OPT_DTYPE:
        if (fm_cli_parse_dtype(v, &a->dtype))
            return fm_cli_usage(cmd, "--dtype: expected auto, f32, bf16 or f16, got '%s'", v);
        return 0;
    case OPT_MAX_SHARD:
        if (fm_parse_size(v, &a->so.max_shard_size, &err) != FM_OK || !a->so.max_shard_size)
            return fm_cli_usage(cmd, "--max-shard-size: invalid size '%s'", v);
        return 0;
    case OPT_RUNTIME:
        a->so.runtime_format = true;
        return 0;
    default:
        if (!a->src)
            a->src = v;
        else if (!a->dst)
            a->dst = v;
        else
            return fm_cli_usage(cmd, "convert: unexpected argument '%s'", v);
        return 0;
    }
}

static int convert(convert_args *a) {
    fm_load_options lo;
    if (fm_cli_load_options(&a->c, &lo)) return 1;
    lo.dtype = a->dtype;
    fm_error err;
    fm_error_clear(&err);
    fm_model *m = NULL;
    fm_load_report rep;
    double t0 = fm_cli_now();
    fm_status st = fm_cli_load(a->src, &lo, a->c.quiet, &m, &rep, &err);
    if (st == FM_OK && !a->c.quiet) fm_cli_print_report(stderr, a->src, &rep);
    fm_load_report_free(&rep);
    double t1 = fm_cli_now();
    if (st == FM_OK) st = fm_cli_save(m, a->dst, &a->so, a->c.quiet, &err);
    if (st == FM_OK && !a->c.quiet)
        fprintf(stderr, "saved %s (%s layout): load %.3f s, save %.3f s\n", a->dst,
                a->so.runtime_format ? "runtime" : "original", t1 - t0, fm_cli_now() - t1);
    fm_model_free(m);
    return st == FM_OK ? 0 : fm_cli_fail(&err);
}

int fm_cli_convert_run(const fm_cli_command *self, int argc, char **argv) {
    convert_args a;
    memset(&a, 0, sizeof a);
    a.dtype = FM_DTYPE_INVALID;
    fm_save_pretrained_options_init(&a.so);
    int rc = fm_cli_parse(self, argc, argv, &a.c, on_opt, &a);
    if (rc == FM_CLI_GO && (!a.src || !a.dst)) rc = fm_cli_usage(self, "convert needs SRC and DST");
    if (rc == FM_CLI_GO) rc = convert(&a);
    fm_cli_common_free(&a.c);
    return rc;
}
