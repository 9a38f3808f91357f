/* Biased, non-square patch embeddings through the generic layers and the patch_embeddings
 * fusion. Qwen2-VL's PatchEmbed has no bias in transformers, but the generic Conv3d and Linear
 * carry one and FusedPatchEmbed renames `proj.bias` to `linear_proj.bias`; a toy architecture
 * registered here has two of them: a.patch_embed (a test class around a Conv3d with kernel =
 * stride = (2, 3, 5), bias) and b.patch_embed (the library's PatchEmbed built with bias = 1).
 * - forward, unfused (Conv3d) and fused (Linear), against a float64 reference computed here from
 *   the tensors written to the checkpoint;
 * - the whole cycle: fuse -> runtime-format save -> unfused reload (LinearToConv3d with the
 *   non-square kernel, bias renamed back) -> saves: in the original format, byte for byte the
 *   runtime-layout checkpoint it was loaded from (a save reverts what fired at load); in the
 *   runtime format (the unfused module names), byte for byte the source checkpoint;
 * - what must not fuse: a padded and a grouped Conv3d patch embedding (stride == kernel). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "file_util.h"
#include "fusemap/fusemap.h"
#include "qwen_fixture.h"

enum { C = 3, KT = 2, KH = 3, KW = 5, DA = 7 }; /* a.patch_embed: Conv3d(3 -> 7, (2, 3, 5)) */
enum { BP = 4, BT = 2, DB = 6 };                /* b.patch_embed: PatchEmbed(4, 2, 3 -> 6) */

typedef struct pe_case {
    const char *path;
    int64_t k, out, dims[5]; /* k = values per patch; weight dims (out, C, kT, kH, kW) */
} pe_case;
static const pe_case cases[2] = {
    {"a.patch_embed", C *KT *KH *KW, DA, {DA, C, KT, KH, KW}},
    {"b.patch_embed", C *BT *BP *BP, DB, {DB, C, BT, BP, BP}},
};

/* ---- the toy architecture ------------------------------------------------------------------ */
static fm_status toy_parse(const fm_config *cfg, const char *origin, void **out, fm_error *err) {
    (void)cfg, (void)origin, (void)err;
    *out = fm_malloc(1);
    return *out ? FM_OK : FM_ERR_NOMEM;
}

/* ToyPatchEmbed3: proj = Conv3d(C -> DA, kernel = stride = (KT, KH, KW), bias). */
static fm_status toy_pe_init(fm_module *m, fm_build_ctx *ctx, const fm_args *a, fm_error *err) {
    (void)a;
    return fm_module_create(ctx, m, "proj", "Conv3d",
                            &FM_ARGS(FM_I("in", C), FM_I("out", DA), FM_I("k0", KT), FM_I("k1", KH),
                                     FM_I("k2", KW), FM_I("s0", KT), FM_I("s1", KH), FM_I("s2", KW),
                                     FM_I("bias", 1)),
                            NULL, err);
}

/* in[0] F32 [N][C*KT*KH*KW] -> view (N, C, KT, KH, KW) -> Conv3d -> out[0] [N][DA]. */
static fm_status toy_pe_forward(fm_module *self, fm_run_ctx *rc, const fm_tensor *in, size_t n_in,
                                fm_tensor *out, size_t n_out, fm_error *err) {
    (void)n_in, (void)n_out;
    int64_t n = in[0].shape.dims[0];
    fm_shape s5 = {5, {n, C, KT, KH, KW}}, s2 = {2, {n, DA}};
    fm_tensor v = {0}, y = {0};
    fm_status st = fm_tensor_reshape(&v, &in[0], &s5, err);
    if (st == FM_OK)
        st = fm_module_forward(fm_module_child_named(self, "proj"), rc, &v, 1, &y, 1, err);
    fm_tensor_free(&v); /* the view's reference to the input */
    if (st == FM_OK) st = fm_tensor_reshape(out, &y, &s2, err);
    return st;
}

static fm_status branch_a_init(fm_module *m, fm_build_ctx *ctx, const fm_args *a, fm_error *err) {
    (void)a;
    return fm_module_create(ctx, m, "patch_embed", "ToyPatchEmbed3", NULL, NULL, err);
}

static fm_status branch_b_init(fm_module *m, fm_build_ctx *ctx, const fm_args *a, fm_error *err) {
    (void)a;
    return fm_module_create(ctx, m, "patch_embed", "PatchEmbed",
                            &FM_ARGS(FM_I("patch_size", BP), FM_I("temporal_patch_size", BT),
                                     FM_I("in_channels", C), FM_I("embed_dim", DB),
                                     FM_I("bias", 1)),
                            NULL, err);
}

static fm_status root_init(fm_module *m, fm_build_ctx *ctx, const fm_args *a, fm_error *err) {
    (void)a;
    fm_status st = fm_module_create(ctx, m, "a", "ToyBiasBranchA", NULL, NULL, err);
    if (st == FM_OK) st = fm_module_create(ctx, m, "b", "ToyBiasBranchB", NULL, NULL, err);
    return st;
}

static fm_status toy_build(fm_build_ctx *ctx, const void *cfg, fm_module **root, fm_error *err) {
    (void)cfg;
    return fm_module_create(ctx, NULL, "", "ToyBiasModel", NULL, root, err);
}

static const fm_module_class toy_classes[] = {
    {.name = "ToyPatchEmbed3", .init = toy_pe_init, .forward = toy_pe_forward},
    {.name = "ToyBiasBranchA", .init = branch_a_init},
    {.name = "ToyBiasBranchB", .init = branch_b_init},
    {.name = "ToyBiasModel", .init = root_init},
};
static const fm_model_builder toy_builder = {.model_type = "toy_bias_patches",
                                             .architecture = "ToyBiasModel",
                                             .parse_config = toy_parse,
                                             .free_config = fm_free,
                                             .build = toy_build};

/* ---- checkpoint and reference ------------------------------------------------------------------
 */
static char *tmp;
static float *w_of[2], *b_of[2]; /* the values written, for the reference */

static void write_source(const char *dir) {
    static const char cfg[] = "{\n  \"model_type\": \"toy_bias_patches\"\n}\n";
    const char *names[4] = {"a.patch_embed.proj.weight", "a.patch_embed.proj.bias",
                            "b.patch_embed.proj.weight", "b.patch_embed.proj.bias"};
    fm_tensor ts[4];
    fm_st_item items[4];
    uint64_t seed = 4242;
    fm_error err;
    for (int i = 0; i < 4; i++) {
        const pe_case *c = &cases[i / 2];
        fm_shape s = i % 2 ? (fm_shape){1, {c->out}} : (fm_shape){5, {0}};
        if (i % 2 == 0) memcpy(s.dims, c->dims, sizeof c->dims);
        REQUIRE_OK(fm_tensor_alloc(&ts[i], FM_DTYPE_F32, &s, &err), &err);
        /* biases as large as the products, so a dropped bias shows */
        fm_qfix_fill(ts[i].data, fm_tensor_numel(&ts[i]), i % 2 ? 1.0f : 0.3f, &seed);
        items[i] = (fm_st_item){names[i], &ts[i]};
        float **keep = i % 2 ? &b_of[i / 2] : &w_of[i / 2];
        free(*keep);
        *keep = malloc(ts[i].nbytes);
        memcpy(*keep, ts[i].data, ts[i].nbytes);
    }
    fm_extra_file ex = {"config.json", cfg, strlen(cfg)};
    fm_save_options so;
    fm_save_options_init(&so);
    CHECK_OK(fm_checkpoint_save(dir, items, 4, &ex, 1, &so, &err), &err);
    for (int i = 0; i < 4; i++)
        fm_tensor_free(&ts[i]);
}

/* out[r][o] = b[o] + sum_j x[r][j] W[o][j]: a Conv3d whose kernel covers the whole patch, with
 * the patch flattened in (C, T, H, W) order like the weight. */
static void reference(const pe_case *c, const float *w, const float *b, const float *x, int64_t n,
                      double *out) {
    for (int64_t r = 0; r < n; r++)
        for (int64_t o = 0; o < c->out; o++) {
            double acc = b[o];
            for (int64_t j = 0; j < c->k; j++)
                acc += (double)x[r * c->k + j] * w[o * c->k + j];
            out[r * c->out + o] = acc;
        }
}

static fm_model *load(const char *dir, const char *fusion, fm_error *err) {
    fm_load_options o;
    fm_load_options_init(&o);
    o.fusion_config = fusion, o.strict = true;
    fm_model *m = NULL;
    CHECK_OK(fm_from_pretrained(dir, &o, &m, NULL, err), err);
    return m;
}

/* Runs case c's module of m on fresh random patches; rel-L2 against the reference. */
static double run_vs_ref(fm_model *m, int ci, uint64_t seed) {
    const pe_case *c = &cases[ci];
    fm_module *pe = fm_module_find(fm_model_root(m), c->path);
    REQUIRE_MSG(pe != NULL, "%s in the tree", c->path);
    int64_t n = 11;
    fm_shape s = {2, {n, c->k}};
    fm_tensor in = {0}, out = {0};
    fm_error err;
    REQUIRE_OK(fm_tensor_alloc(&in, FM_DTYPE_F32, &s, &err), &err);
    fm_qfix_fill(in.data, fm_tensor_numel(&in), 1.0f, &seed);
    fm_run_ctx *rc = NULL;
    REQUIRE_OK(fm_model_run_ctx(m, NULL, &rc, &err), &err);
    size_t mark = fm_run_mark(rc);
    REQUIRE_OK(fm_module_forward(pe, rc, &in, 1, &out, 1, &err), &err);
    REQUIRE_MSG(fm_tensor_numel(&out) == (uint64_t)(n * c->out), "%s: output %lld values", c->path,
                (long long)fm_tensor_numel(&out));
    double *want = malloc((size_t)(n * c->out) * sizeof *want), num = 0, den = 0;
    reference(c, w_of[ci], b_of[ci], in.data, n, want);
    for (int64_t i = 0; i < n * c->out; i++) {
        double d = ((float *)out.data)[i] - want[i];
        num += d * d, den += want[i] * want[i];
    }
    fm_run_release(rc, mark);
    fm_tensor_free(&in);
    free(want);
    return sqrt(num / den);
}

/* ---- tests
 * ---------------------------------------------------------------------------------------- */
static void test_forward_vs_reference(void) {
    char *src = fm_test_join(tmp, "fwd-src");
    write_source(src);
    fm_error err;
    fm_model *plain = load(src, NULL, &err),
             *fused = load(src, "{\"patch_embeddings\": true}", &err);
    REQUIRE(plain && fused);
    for (int ci = 0; ci < 2; ci++) {
        const char *p = cases[ci].path;
        char lin[128];
        snprintf(lin, sizeof lin, "%s.linear_proj.bias", p);
        CHECK_MSG(fm_model_param(fused, lin) != NULL, "fused %s carries linear_proj.bias", p);
        double ep = run_vs_ref(plain, ci, 11 + ci), ef = run_vs_ref(fused, ci, 21 + ci);
        CHECK_MSG(ep <= 1e-6, "%s unfused (Conv3d + bias): rel-L2 %.3g vs float64 reference", p,
                  ep);
        CHECK_MSG(ef <= 1e-6, "%s fused (Linear + bias): rel-L2 %.3g vs float64 reference", p, ef);
    }
    fm_model_free(plain), fm_model_free(fused);
    free(src);
}

static int same_tensor(const fm_tensor *t, const float *v, const int64_t *dims, int ndim) {
    if (!t || t->dtype != FM_DTYPE_F32 || t->shape.ndim != ndim) return 0;
    for (int d = 0; d < ndim; d++)
        if (t->shape.dims[d] != dims[d]) return 0;
    return memcmp(t->data, v, t->nbytes) == 0;
}

static void test_fuse_runtime_unfuse_cycle(void) {
    char *src = fm_test_join(tmp, "cyc-src"), *rt = fm_test_join(tmp, "cyc-rt");
    char *back = fm_test_join(tmp, "cyc-back");
    write_source(src);
    fm_error err;
    fm_model *fused = load(src, "{\"patch_embeddings\": true}", &err);
    REQUIRE(fused);
    fm_save_pretrained_options so;
    fm_save_pretrained_options_init(&so);
    so.runtime_format = true;
    REQUIRE_OK(fm_save_pretrained(fused, rt, &so, &err), &err);
    fm_checkpoint *ck = NULL;
    REQUIRE_OK(fm_checkpoint_open(rt, &ck, &err), &err);
    for (int ci = 0; ci < 2; ci++) {
        char w[128], b[128];
        snprintf(w, sizeof w, "%s.linear_proj.weight", cases[ci].path);
        snprintf(b, sizeof b, "%s.linear_proj.bias", cases[ci].path);
        long iw = fm_checkpoint_find(ck, w);
        CHECK_MSG(iw >= 0 && fm_checkpoint_entry_at(ck, (size_t)iw)->shape.ndim == 2,
                  "runtime format holds %s as a 2-D weight", w);
        CHECK_MSG(fm_checkpoint_find(ck, b) >= 0, "runtime format holds %s", b);
    }
    fm_checkpoint_close(ck);
    /* unfused reload of the runtime layout: the defuse transforms bring Conv3d weights back */
    fm_model *plain = load(rt, "{}", &err);
    REQUIRE_MSG(plain != NULL, "runtime layout loads unfused: %s", err.msg);
    for (int ci = 0; ci < 2; ci++) {
        const pe_case *c = &cases[ci];
        char w[128], b[128];
        snprintf(w, sizeof w, "%s.proj.weight", c->path);
        snprintf(b, sizeof b, "%s.proj.bias", c->path);
        CHECK_MSG(same_tensor(fm_model_param(plain, w), w_of[ci], c->dims, 5),
                  "%s back to (%lld, %lld, %lld, %lld, %lld) with the source's values", w,
                  (long long)c->dims[0], (long long)c->dims[1], (long long)c->dims[2],
                  (long long)c->dims[3], (long long)c->dims[4]);
        CHECK_MSG(same_tensor(fm_model_param(plain, b), b_of[ci], &c->out, 1),
                  "%s renamed back with the source's values", b);
        double e = run_vs_ref(plain, ci, 31 + ci);
        CHECK_MSG(e <= 1e-6, "%s after the cycle: rel-L2 %.3g vs the reference", c->path, e);
    }
    /* saved in its original format: the runtime layout it came from, byte for byte */
    char a[4300], z[4300];
    REQUIRE_OK(fm_save_pretrained(plain, back, NULL, &err), &err);
    snprintf(a, sizeof a, "%s/model.safetensors", rt);
    snprintf(z, sizeof z, "%s/model.safetensors", back);
    CHECK_MSG(fm_test_same_file(a, z),
              "original-format save of the unfused reload is byte for byte "
              "the runtime-layout checkpoint it was loaded from");
    /* saved in its runtime format (Conv3d names, 5-D weights): the source, byte for byte */
    fm_test_rmtree(back);
    REQUIRE_OK(fm_save_pretrained(plain, back, &so, &err), &err);
    snprintf(a, sizeof a, "%s/model.safetensors", src);
    CHECK_MSG(fm_test_same_file(a, z), "runtime-format save of the unfused reload is byte for byte "
                                       "the source checkpoint");
    fm_model_free(fused), fm_model_free(plain);
    free(src), free(rt), free(back);
}

/* ---- what must not fuse ---------------------------------------------------------------------- */
/* A second toy: p.patch_embed pads H by 1 (stride == kernel still, but the window then covers a
 * zero row, which a Linear over the patch cannot), g.patch_embed is grouped (groups = 3: the
 * weight holds a third of a dense Linear's). Asking for patch_embeddings fuses neither. */
static fm_status unf_pe_init(fm_module *m, fm_build_ctx *ctx, const fm_args *a, fm_error *err) {
    int64_t pad = fm_args_int(a, "pad", 0), groups = fm_args_int(a, "groups", 1);
    return fm_module_create(ctx, m, "proj", "Conv3d",
                            &FM_ARGS(FM_I("in", C), FM_I("out", 6), FM_I("k0", KT), FM_I("k1", KH),
                                     FM_I("k2", KW), FM_I("s0", KT), FM_I("s1", KH), FM_I("s2", KW),
                                     FM_I("p1", pad), FM_I("groups", groups), FM_I("bias", 1)),
                            NULL, err);
}
static fm_status unf_branch_init(fm_module *m, fm_build_ctx *ctx, const fm_args *a, fm_error *err) {
    return fm_module_create(ctx, m, "patch_embed", "ToyUnfusablePE", a, NULL, err);
}
static fm_status unf_root_init(fm_module *m, fm_build_ctx *ctx, const fm_args *a, fm_error *err) {
    (void)a;
    fm_status st =
        fm_module_create(ctx, m, "p", "ToyUnfusableBranch", &FM_ARGS(FM_I("pad", 1)), NULL, err);
    if (st == FM_OK)
        st = fm_module_create(ctx, m, "g", "ToyUnfusableBranch", &FM_ARGS(FM_I("groups", 3)), NULL,
                              err);
    return st;
}
static fm_status unf_build(fm_build_ctx *ctx, const void *cfg, fm_module **root, fm_error *err) {
    (void)cfg;
    return fm_module_create(ctx, NULL, "", "ToyUnfusableModel", NULL, root, err);
}
static const fm_module_class unf_classes[] = {
    {.name = "ToyUnfusablePE", .init = unf_pe_init}, /* built and loaded, never run */
    {.name = "ToyUnfusableBranch", .init = unf_branch_init},
    {.name = "ToyUnfusableModel", .init = unf_root_init},
};
static const fm_model_builder unf_builder = {.model_type = "toy_unfusable_patches",
                                             .architecture = "ToyUnfusableModel",
                                             .parse_config = toy_parse,
                                             .free_config = fm_free,
                                             .build = unf_build};

static void test_padded_and_grouped_not_fused(void) {
    static const char cfg[] = "{\n  \"model_type\": \"toy_unfusable_patches\"\n}\n";
    const char *names[4] = {"g.patch_embed.proj.bias", "g.patch_embed.proj.weight",
                            "p.patch_embed.proj.bias", "p.patch_embed.proj.weight"};
    fm_shape shapes[4] = {{1, {6}}, {5, {6, 1, KT, KH, KW}}, {1, {6}}, {5, {6, C, KT, KH, KW}}};
    fm_tensor ts[4];
    fm_st_item items[4];
    uint64_t seed = 77;
    fm_error err;
    for (int i = 0; i < 4; i++) {
        REQUIRE_OK(fm_tensor_alloc(&ts[i], FM_DTYPE_F32, &shapes[i], &err), &err);
        fm_qfix_fill(ts[i].data, fm_tensor_numel(&ts[i]), 0.5f, &seed);
        items[i] = (fm_st_item){names[i], &ts[i]};
    }
    char *dir = fm_test_join(tmp, "unfusable");
    fm_extra_file ex = {"config.json", cfg, strlen(cfg)};
    CHECK_OK(fm_checkpoint_save(dir, items, 4, &ex, 1, NULL, &err), &err);
    for (int i = 0; i < 4; i++)
        fm_tensor_free(&ts[i]);
    fm_load_options o;
    fm_load_options_init(&o);
    o.fusion_config = "{\"patch_embeddings\": true}";
    fm_load_report rep;
    fm_model *m = NULL;
    CHECK_OK(fm_from_pretrained(dir, &o, &m, &rep, &err), &err);
    CHECK_MSG(rep.n_fused == 0,
              "neither the padded nor the grouped Conv3d is fused (%zu fused%s%s)", rep.n_fused,
              rep.n_fused ? ": " : "", rep.n_fused ? rep.fused[0] : "");
    fm_load_report_free(&rep);
    for (int i = 0; m && i < 2; i++) {
        const char *path = i ? "g.patch_embed" : "p.patch_embed";
        fm_module *pe = fm_module_find(fm_model_root(m), path);
        CHECK_MSG(pe && !strcmp(fm_module_class_of(pe)->name, "ToyUnfusablePE"),
                  "%s keeps its class", path);
    }
    fm_model_free(m);
    free(dir);
}

int main(void) {
    fm_error err;
    if (fm_init(&err) != FM_OK) return fprintf(stderr, "%s\n", err.msg), 1;
    for (size_t i = 0; i < sizeof toy_classes / sizeof *toy_classes; i++)
        if (fm_class_register(&toy_classes[i], false, &err) != FM_OK)
            return fprintf(stderr, "%s\n", err.msg), 1;
    for (size_t i = 0; i < sizeof unf_classes / sizeof *unf_classes; i++)
        if (fm_class_register(&unf_classes[i], false, &err) != FM_OK)
            return fprintf(stderr, "%s\n", err.msg), 1;
    if (fm_model_builder_register(&toy_builder, false, &err) != FM_OK ||
        fm_model_builder_register(&unf_builder, false, &err) != FM_OK)
        return fprintf(stderr, "%s\n", err.msg), 1;
    tmp = fm_test_tmpdir("patchbias");
    if (!tmp) return fprintf(stderr, "no temporary directory\n"), 1;
    RUN(test_forward_vs_reference);
    RUN(test_fuse_runtime_unfuse_cycle);
    RUN(test_padded_and_grouped_not_fused);
    fm_test_rmtree(tmp);
    free(tmp);
    for (int i = 0; i < 2; i++)
        free(w_of[i]), free(b_of[i]);
    TEST_END();
}
