/* Instance-level fusion on a toy architecture registered from the test: two instances of one
 * patch-embedding class, only one of them fusable (stride == kernel, with bias). Only that
 * instance is replaced; the other stays a correct Conv3d. Also: strict mode when a requested
 * fusion matches nothing. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "file_util.h"
#include "fusemap/fusemap.h"
#include "qwen_fixture.h"

enum { C = 3, KT = 1, KH = 2, KW = 2, D = 8 };

typedef struct toy_cfg {
    int64_t a_stride, b_stride;
} toy_cfg;

static fm_status toy_parse(const fm_config *cfg, const char *origin, void **out, fm_error *err) {
    toy_cfg *c = calloc(1, sizeof *c);
    (void)origin, (void)err;
    c->a_stride = 2, c->b_stride = 1;
    fm_config_get_int(cfg, "a_stride", &c->a_stride, NULL);
    fm_config_get_int(cfg, "b_stride", &c->b_stride, NULL);
    *out = c;
    return FM_OK;
}

static fm_status toy_pe_init(fm_module *m, fm_build_ctx *ctx, const fm_args *a, fm_error *err) {
    int64_t s = fm_args_int(a, "stride", 2);
    return fm_module_create(ctx, m, "proj", "Conv3d",
                            &FM_ARGS(FM_I("in", C), FM_I("out", D), FM_I("k0", KT), FM_I("k1", KH),
                                     FM_I("k2", KW), FM_I("s0", 1), FM_I("s1", s), FM_I("s2", s),
                                     FM_I("bias", 1)),
                            NULL, err);
}

static fm_status toy_pe_forward(fm_module *self, fm_run_ctx *rc, const fm_tensor *in, size_t n_in,
                                fm_tensor *out, size_t n_out, fm_error *err) {
    fm_module *proj = fm_module_child_named(self, "proj");
    fm_shape s5 = {5, {in[0].shape.dims[0], C, KT, KH, KW}};
    fm_tensor v = {0}, y = {0};
    (void)n_in, (void)n_out;
    fm_status st = fm_tensor_reshape(&v, &in[0], &s5, err);
    if (st == FM_OK) st = fm_module_forward(proj, rc, &v, 1, &y, 1, err); /* y: scratch of rc */
    fm_tensor_free(&v);                                                   /* the view's reference */
    fm_shape s2 = {2, {in[0].shape.dims[0], D}};
    if (st == FM_OK) st = fm_tensor_reshape(out, &y, &s2, err);
    return st;
}

static fm_status toy_branch_init(fm_module *m, fm_build_ctx *ctx, const fm_args *a, fm_error *err) {
    return fm_module_create(ctx, m, "patch_embed", "ToyPatchEmbed", a, NULL, err);
}

static fm_status toy_root_init(fm_module *m, fm_build_ctx *ctx, const fm_args *a, fm_error *err) {
    const toy_cfg *c = fm_build_ctx_model_cfg(ctx);
    (void)a;
    fm_status st = fm_module_create(ctx, m, "a", "ToyBranch", &FM_ARGS(FM_I("stride", c->a_stride)),
                                    NULL, err);
    if (st == FM_OK)
        st = fm_module_create(ctx, m, "b", "ToyBranch", &FM_ARGS(FM_I("stride", c->b_stride)), NULL,
                              err);
    return st;
}

static fm_status toy_build(fm_build_ctx *ctx, const void *cfg, fm_module **root, fm_error *err) {
    (void)cfg;
    return fm_module_create(ctx, NULL, "", "ToyTwinModel", NULL, root, err);
}

static const fm_module_class toy_classes[] = {
    {.name = "ToyPatchEmbed", .init = toy_pe_init, .forward = toy_pe_forward},
    {.name = "ToyBranch", .init = toy_branch_init},
    {.name = "ToyTwinModel", .init = toy_root_init},
};
static const fm_model_builder toy_builder = {.model_type = "toy_patches",
                                             .architecture = "ToyTwinModel",
                                             .parse_config = toy_parse,
                                             .free_config = free,
                                             .build = toy_build};

static char *tmp;

static void write_toy(const char *dir, int a_stride, int b_stride) {
    char cfg[256], path[4300];
    fm_error err;
    const char *names[4] = {"a.patch_embed.proj.weight", "a.patch_embed.proj.bias",
                            "b.patch_embed.proj.weight", "b.patch_embed.proj.bias"};
    fm_tensor ts[4];
    fm_st_item items[4];
    uint64_t seed = 99;
    for (int i = 0; i < 4; i++) {
        fm_shape s = i % 2 ? (fm_shape){1, {D}} : (fm_shape){5, {D, C, KT, KH, KW}};
        fm_tensor_alloc(&ts[i], FM_DTYPE_F32, &s, &err);
        fm_qfix_fill(ts[i].data, fm_tensor_numel(&ts[i]), 0.5f, &seed);
        items[i] = (fm_st_item){names[i], &ts[i]};
    }
    snprintf(cfg, sizeof cfg,
             "{\n  \"a_stride\": %d,\n  \"b_stride\": %d,\n  \"model_type\": \"toy_patches\"\n}\n",
             a_stride, b_stride);
    fm_extra_file ex = {"config.json", cfg, strlen(cfg)};
    fm_save_options so;
    fm_save_options_init(&so);
    CHECK_OK(fm_checkpoint_save(dir, items, 4, &ex, 1, &so, &err), &err);
    for (int i = 0; i < 4; i++)
        fm_tensor_free(&ts[i]);
    (void)path;
}

static fm_model *load(const char *dir, const char *fusion, bool strict, fm_load_report *rep,
                      fm_error *err) {
    fm_load_options o;
    fm_load_options_init(&o);
    o.fusion_config = fusion, o.strict = strict;
    fm_model *m = NULL;
    return fm_from_pretrained(dir, &o, &m, rep, err) == FM_OK ? m : NULL;
}

static double run_pe(fm_model *x, fm_model *y, const char *path) {
    fm_module *a = fm_module_find(fm_model_root(x), path),
              *b = fm_module_find(fm_model_root(y), path);
    fm_shape s = {2, {7, C * KT * KH * KW}};
    fm_tensor in, oa = {0}, ob = {0};
    fm_error err;
    uint64_t seed = 5;
    fm_tensor_alloc(&in, FM_DTYPE_F32, &s, NULL);
    fm_qfix_fill(in.data, fm_tensor_numel(&in), 1.0f, &seed);
    fm_run_ctx *ra = NULL, *rb = NULL;
    CHECK_OK(fm_model_run_ctx(x, NULL, &ra, &err), &err);
    CHECK_OK(fm_model_run_ctx(y, NULL, &rb, &err), &err);
    if (ra && rb) CHECK_OK(fm_module_forward(a, ra, &in, 1, &oa, 1, &err), &err);
    if (ra && rb) CHECK_OK(fm_module_forward(b, rb, &in, 1, &ob, 1, &err), &err);
    double num = 0, den = 0;
    for (uint64_t i = 0; oa.data && ob.data && i < fm_tensor_numel(&oa); i++) {
        double d = ((float *)oa.data)[i] - ((float *)ob.data)[i];
        num += d * d, den += ((float *)ob.data)[i] * (double)((float *)ob.data)[i];
    }
    fm_tensor_free(&in), fm_tensor_free(&oa), fm_tensor_free(&ob);
    return den > 0 ? sqrt(num / den) : 1e9;
}

static void test_only_fusable_instance_is_replaced(void) {
    char dir[4200], out[4200];
    fm_error err;
    snprintf(dir, sizeof dir, "%s/twin", tmp);
    snprintf(out, sizeof out, "%s/twin-out", tmp);
    write_toy(dir, 2, 1);
    fm_load_report rep;
    fm_model *f = load(dir, "{\"patch_embeddings\": true}", true, &rep, &err);
    CHECK_MSG(f != NULL, "fused toy loads: %s", err.msg);
    CHECK_EQ_INT(1, rep.n_fused);
    if (rep.n_fused)
        CHECK_CONTAINS(rep.fused[0], "a.patch_embed: ToyPatchEmbed -> FusedToyPatchEmbed");
    fm_load_report_free(&rep);
    fm_model *u = load(dir, NULL, true, NULL, &err);
    if (!f || !u) {
        fm_model_free(f), fm_model_free(u);
        return;
    }
    CHECK_EQ_STR("FusedToyPatchEmbed",
                 fm_module_class_of(fm_module_find(fm_model_root(f), "a.patch_embed"))->name);
    CHECK_EQ_STR("ToyPatchEmbed",
                 fm_module_class_of(fm_module_find(fm_model_root(f), "b.patch_embed"))->name);
    const fm_tensor *bias = fm_model_param(f, "a.patch_embed.linear_proj.bias");
    CHECK(bias && fm_tensor_is_mapped(bias)); /* bias renamed, zero-copy */
    CHECK(fm_model_param(f, "b.patch_embed.proj.weight") != NULL);
    double ea = run_pe(f, u, "a.patch_embed"), eb = run_pe(f, u, "b.patch_embed");
    CHECK_MSG(ea <= 1e-5, "fused instance matches the Conv3d (rel L2 %.3g)", ea);
    CHECK_MSG(eb == 0.0, "unfused instance unchanged (rel L2 %.3g)", eb);
    CHECK_OK(fm_save_pretrained(f, out, NULL, &err), &err);
    const char *skip[] = {"config.json", NULL};
    CHECK_MSG(fm_test_same_dir(dir, out, skip), "original format saved byte for byte");
    fm_model_free(f), fm_model_free(u);
}

static void test_strict_unmatched_fusion(void) {
    char dir[4200];
    fm_error err;
    snprintf(dir, sizeof dir, "%s/none", tmp);
    write_toy(dir, 1, 1);
    fm_model *m = load(dir, "{\"patch_embeddings\": true}", true, NULL, &err);
    CHECK(m == NULL);
    CHECK_STATUS(FM_ERR_FUSION, err.status, &err);
    CHECK_CONTAINS(err.msg, "matches no module");
    fm_model_free(m);
    fm_load_report rep;
    m = load(dir, "{\"patch_embeddings\": true}", false, &rep,
             &err); /* non-strict: loads, nothing fused */
    CHECK(m != NULL);
    CHECK_EQ_INT(0, rep.n_fused);
    fm_load_report_free(&rep);
    fm_model_free(m);
}

int main(void) {
    fm_error err;
    CHECK_OK(fm_init(&err), &err);
    for (size_t i = 0; i < 3; i++)
        CHECK_OK(fm_class_register(&toy_classes[i], false, &err), &err);
    CHECK_OK(fm_model_builder_register(&toy_builder, false, &err), &err);
    tmp = fm_test_tmpdir("instances");
    RUN(test_only_fusable_instance_is_replaced);
    RUN(test_strict_unmatched_fusion);
    fm_test_rmtree(tmp);
    free(tmp);
    TEST_END();
}
