/* `fusemap verify MODEL_DIR --fuse NAME...`: loads the model fused and unfused, runs both on
 * the same random input of the model's shape, and checks that every weight the fused model
 * would save equals the checkpoint's bytes. Exit 1 when outputs differ beyond the threshold
 * or any weight differs. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "common.h"

typedef struct verify_args {
    const char *dir;
    double threshold;
    int threads;
    fm_cli_fusion fusion;
} verify_args;

static int parse(verify_args *a, int argc, char **argv) {
    a->threshold = 1e-5;
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        int f = fm_cli_fusion_arg(&a->fusion, argc, argv, &i);
        if (f < 0) return 2;
        if (f) continue;
        if ((!strcmp(s, "--threshold") || !strcmp(s, "--threads")) && i + 1 >= argc)
            return fm_cli_usage_error("%s needs a value", s);
        if (!strcmp(s, "--threshold")) {
            char *end;
            a->threshold = strtod(argv[++i], &end);
            if (*end || !(a->threshold >= 0))
                return fm_cli_usage_error("--threshold: invalid number '%s'", argv[i]);
        } else if (!strcmp(s, "--threads")) {
            a->threads = atoi(argv[++i]);
            if (a->threads < 1) return fm_cli_usage_error("--threads: expected a positive integer");
        } else if (s[0] == '-')
            return fm_cli_usage_error("verify: unknown option '%s'", s);
        else if (!a->dir)
            a->dir = s;
        else
            return fm_cli_usage_error("verify: unexpected argument '%s'", s);
    }
    if (!a->dir || (!a->fusion.n_fuse && !a->fusion.json))
        return fm_cli_usage_error("usage: fusemap verify MODEL_DIR --fuse NAME... [--threshold X]");
    if (a->fusion.json && a->fusion.n_fuse)
        return fm_cli_usage_error("use either --fuse or --fusion-config, not both");
    return 0;
}

/* A random input of the model's shape: two images, grids (1, 2m, 2m) and (2, 2m, 4m). */
static fm_status make_input(const fm_model *m, fm_tensor *pv, fm_tensor *grid, fm_error *err) {
    const fm_config *c = fm_model_config(m);
    int64_t ms = 2, P = 14, T = 2, C = 3;
    fm_config_get_int(c, "vision_config.spatial_merge_size", &ms, NULL);
    fm_config_get_int(c, "vision_config.patch_size", &P, NULL);
    fm_config_get_int(c, "vision_config.temporal_patch_size", &T, NULL);
    fm_config_get_int(c, "vision_config.in_channels", &C, NULL);
    int64_t g[6] = {1, 2 * ms, 2 * ms, 2, 2 * ms, 4 * ms};
    fm_shape gs = {2, {2, 3}}, ps = {2, {g[0] * g[1] * g[2] + g[3] * g[4] * g[5], C * T * P * P}};
    fm_status st = fm_tensor_alloc(grid, FM_DTYPE_I64, &gs, err);
    if (st == FM_OK) memcpy(grid->data, g, sizeof g);
    if (st == FM_OK) st = fm_tensor_alloc(pv, FM_DTYPE_F32, &ps, err);
    uint64_t s = 0x9E3779B97F4A7C15ull;
    for (uint64_t i = 0; st == FM_OK && i < fm_tensor_numel(pv); i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        ((float *)pv->data)[i] = (float)((double)(s >> 11) / 9007199254740992.0 * 4.0 - 2.0);
    }
    return st;
}

static void compare_outputs(const fm_tensor *a, const fm_tensor *b, double *max_abs,
                            double *rel_l2) {
    double num = 0, den = 0;
    *max_abs = 0;
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

static int verify(verify_args *a) {
    fm_error err;
    fm_model *fused = NULL, *plain = NULL;
    fm_load_options lo;
    fm_load_options_init(&lo);
    lo.fusion_config = fm_cli_fusion_config(&a->fusion);
    lo.strict = true;
    fm_tensor pv = {0}, grid = {0}, of = {0}, ou = {0};
    fm_load_report rep;
    fm_status st = fm_from_pretrained(a->dir, &lo, &fused, &rep, &err);
    if (st == FM_OK) fm_cli_print_report(stderr, a->dir, &rep);
    fm_load_report_free(&rep);
    lo.fusion_config = "{}";
    lo.strict = false;
    if (st == FM_OK) st = fm_from_pretrained(a->dir, &lo, &plain, NULL, &err);
    if (st == FM_OK) st = make_input(fused, &pv, &grid, &err);
    fm_run_options ro = {a->threads, NULL, NULL};
    if (st == FM_OK) st = fm_model_vision_forward(fused, &pv, &grid, &ro, &of, &err);
    if (st == FM_OK) st = fm_model_vision_forward(plain, &pv, &grid, &ro, &ou, &err);
    size_t bad = 0, checked = 0;
    if (st == FM_OK) st = compare_weights(fused, a->dir, &bad, &checked, &err);
    int rc_exit = st == FM_OK ? 0 : fm_cli_fail(&err);
    if (st == FM_OK) {
        double max_abs, rel;
        compare_outputs(&of, &ou, &max_abs, &rel);
        printf("outputs: fused vs unfused max |diff| %.3g, relative L2 %.3g (threshold %.3g)\n",
               max_abs, rel, a->threshold);
        printf("weights: %zu checked, %zu differ from the checkpoint\n", checked, bad);
        if (!(rel <= a->threshold) || bad) {
            rc_exit = fm_cli_errorf("verify failed: %s",
                                    bad ? "saved weights differ from the checkpoint"
                                        : "fused outputs differ beyond the threshold");
        } else {
            printf("verify: OK\n");
        }
    }
    fm_tensor_free(&pv), fm_tensor_free(&grid), fm_tensor_free(&of), fm_tensor_free(&ou);
    fm_model_free(fused);
    fm_model_free(plain);
    return rc_exit;
}

int fm_cli_verify(int argc, char **argv) {
    verify_args a;
    memset(&a, 0, sizeof a);
    int rc = parse(&a, argc, argv);
    if (!rc) rc = verify(&a);
    fm_cli_fusion_free(&a.fusion);
    return rc;
}
