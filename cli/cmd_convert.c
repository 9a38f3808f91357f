/* `fusemap convert SRC DST`: load (optionally fused, cast, strict), print the load report,
 * save atomically in the original layout (or the runtime layout on request). */
#include <stdio.h>
#include <string.h>

#include "commands.h"
#include "common.h"

typedef struct convert_args {
    const char *src, *dst;
    fm_load_options lo;
    fm_save_pretrained_options so;
    fm_cli_fusion fusion;
} convert_args;

static int parse(convert_args *a, int argc, char **argv) {
    fm_load_options_init(&a->lo);
    fm_save_pretrained_options_init(&a->so);
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        int f = fm_cli_fusion_arg(&a->fusion, argc, argv, &i);
        if (f < 0) return 2;
        if (f) continue;
        if (!strcmp(s, "--strict"))
            a->lo.strict = true;
        else if (!strcmp(s, "--save-runtime-format"))
            a->so.runtime_format = true;
        else if ((!strcmp(s, "--dtype") || !strcmp(s, "--max-shard-size")) && i + 1 >= argc)
            return fm_cli_usage_error("%s needs a value", s);
        else if (!strcmp(s, "--dtype")) {
            if (fm_cli_parse_dtype(argv[++i], &a->lo.dtype))
                return fm_cli_usage_error("--dtype: expected auto, f32, bf16 or f16, got '%s'",
                                          argv[i]);
        } else if (!strcmp(s, "--max-shard-size")) {
            fm_error err;
            if (fm_parse_size(argv[++i], &a->so.max_shard_size, &err) != FM_OK ||
                !a->so.max_shard_size)
                return fm_cli_usage_error("--max-shard-size: invalid size '%s'", argv[i]);
        } else if (s[0] == '-')
            return fm_cli_usage_error("convert: unknown option '%s'", s);
        else if (!a->src)
            a->src = s;
        else if (!a->dst)
            a->dst = s;
        else
            return fm_cli_usage_error("convert: unexpected argument '%s'", s);
    }
    if (!a->src || !a->dst) return fm_cli_usage_error("usage: fusemap convert SRC DST [options]");
    if (a->fusion.json && a->fusion.n_fuse)
        return fm_cli_usage_error("use either --fuse or --fusion-config, not both");
    a->lo.fusion_config = fm_cli_fusion_config(&a->fusion);
    return 0;
}

int fm_cli_convert(int argc, char **argv) {
    convert_args a;
    memset(&a, 0, sizeof a);
    int rc = parse(&a, argc, argv);
    if (rc) return fm_cli_fusion_free(&a.fusion), rc;
    fm_error err;
    fm_error_clear(&err);
    fm_model *m = NULL;
    fm_load_report rep;
    double t0 = fm_cli_now();
    fm_status st = fm_from_pretrained(a.src, &a.lo, &m, &rep, &err);
    if (st == FM_OK) fm_cli_print_report(stderr, a.src, &rep); /* on failure: one error line */
    fm_load_report_free(&rep);
    double t1 = fm_cli_now();
    if (st == FM_OK) st = fm_save_pretrained(m, a.dst, &a.so, &err);
    if (st == FM_OK)
        fprintf(stderr, "saved %s (%s layout): load %.3f s, save %.3f s\n", a.dst,
                a.so.runtime_format ? "runtime" : "original", t1 - t0, fm_cli_now() - t1);
    fm_model_free(m);
    fm_cli_fusion_free(&a.fusion);
    return st == FM_OK ? 0 : fm_cli_fail(&err);
}
