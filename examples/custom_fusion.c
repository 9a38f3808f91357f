/* A fusion family registered from outside the library: "custom_gate_up" fuses a Qwen2 MLP's
 * gate_proj and up_proj (two GEMMs over the same input) into one gate_up_proj GEMM, with a
 * Concatenate converter on load and its Chunk reverse on save, so checkpoints keep their
 * original layout.
 *
 *   custom_fusion MODEL_DIR OUT_DIR
 *
 * loads MODEL_DIR unfused and fused, runs layer 0's MLP both ways and the vision tower,
 * saves the fused model to OUT_DIR in the original format and checks the weights come back
 * byte for byte. Prints "custom_fusion: OK" and exits 0 when everything matches. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fusemap/fusemap.h"

/* ---- the family ----------------------------------------------------------------------- */
static bool gate_up_fusable(const fm_module *m) {
    fm_linear_geometry g, u; /* both children must be Linear layers of one shape, without bias */
    if (fm_linear_geometry_of(fm_module_child_named(m, "gate_proj"), &g, NULL) != FM_OK ||
        fm_linear_geometry_of(fm_module_child_named(m, "up_proj"), &u, NULL) != FM_OK)
        return false;
    return g.in_features == u.in_features && g.out_features == u.out_features && !g.bias && !u.bias;
}

/* FusedQwen2MLP.init: the original init, then gate_proj + up_proj -> gate_up_proj [2I, H]. */
static fm_status fused_init(fm_module *self, fm_build_ctx *ctx, const fm_args *args,
                            fm_error *err) {
    const fm_module_class *orig = fm_module_class_of(self)->data;
    fm_status st = orig->init(self, ctx, args, err);
    if (st != FM_OK) return st;
    fm_shape s =
        fm_module_param_named(fm_module_child_named(self, "gate_proj"), "weight")->tensor.shape;
    st = fm_module_remove_child(self, "gate_proj", err);
    if (st == FM_OK) st = fm_module_remove_child(self, "up_proj", err);
    if (st == FM_OK)
        st = fm_module_create(
            ctx, self, "gate_up_proj", "Linear",
            &FM_ARGS(FM_I("in", s.dims[1]), FM_I("out", 2 * s.dims[0]), FM_I("bias", 0)), NULL,
            err);
    return st;
}

/* FusedQwen2MLP.forward: in[0] F32 [rows, H] -> out[0] [rows, H]:
 * y = down(silu(g) * u) where [g | u] = x · gate_upᵀ. The output is placed first (the caller's
 * buffer or scratch); temporaries are scratch released before returning. */
static fm_status fused_forward(fm_module *self, fm_run_ctx *rc, const fm_tensor *in, size_t n_in,
                               fm_tensor *out, size_t n_out, fm_error *err) {
    fm_module *gate_up = fm_module_child_named(self, "gate_up_proj"),
              *down = fm_module_child_named(self, "down_proj");
    fm_linear_geometry gd;
    fm_status st = fm_linear_geometry_of(down, &gd, err);
    if (st == FM_OK)
        st = fm_module_check_input(self, in, n_in, 0, FM_DTYPE_F32, 2, gd.out_features, err);
    if (st != FM_OK || n_out < 1)
        return st != FM_OK ? st : fm_error_set(err, FM_ERR_INVALID_ARG, "one output");
    st = fm_module_output(self, rc, &out[0], FM_DTYPE_F32, &in[0].shape, err);
    size_t mark = fm_run_mark(rc);
    fm_tensor gu = {0}, h = {0};
    if (st == FM_OK) st = fm_module_forward(gate_up, rc, &in[0], 1, &gu, 1, err); /* [rows, 2I] */
    int64_t rows = in[0].shape.dims[0], I = gd.in_features;
    fm_shape hs = {2, {rows, I}};
    if (st == FM_OK) st = fm_run_tensor(rc, FM_DTYPE_F32, &hs, &h, err); /* [rows, I] */
    for (int64_t r = 0; st == FM_OK && r < rows; r++)
        for (int64_t j = 0; j < I; j++) {
            float g = ((float *)gu.data)[r * 2 * I + j], u = ((float *)gu.data)[r * 2 * I + I + j];
            ((float *)h.data)[r * I + j] = g / (1.0f + expf(-g)) * u;
        }
    if (st == FM_OK) st = fm_module_forward(down, rc, &h, 1, &out[0], 1, err);
    fm_run_release(rc, mark);
    return st;
}

static fm_status gate_up_class(const fm_module_class *orig, const fm_module_class **out,
                               fm_error *err) {
    fm_module_class *c = calloc(1, sizeof *c);
    char *name = malloc(strlen(orig->name) + sizeof "Custom");
    if (!c || !name) return free(c), free(name), fm_error_set(err, FM_ERR_NOMEM, "out of memory");
    sprintf(name, "Custom%s", orig->name);
    *c = (fm_module_class){.name = name,
                           .init = fused_init,
                           .forward = fused_forward,
                           .free_impl = orig->free_impl,
                           .data = orig};
    *out = c; /* kept for the life of the process, as the registry requires */
    return FM_OK;
}

static void esc(char *dst, size_t n, const char *path, const char *suffix) {
    size_t w = 0;
    dst[w++] = '^';
    for (; *path && w + 3 < n; path++) {
        if (*path == '.') dst[w++] = '\\';
        dst[w++] = *path;
    }
    snprintf(dst + w, n - w, "%s", suffix);
}

static fm_status gate_up_transforms(const fm_config *config, fm_module *const *modules, size_t n,
                                    fm_transform_list *out, fm_error *err) {
    (void)config;
    fm_op_desc cat = {.kind = FM_OP_CONCATENATE};
    for (size_t i = 0; i < n; i++) {
        char g[512], u[512], gu[512];
        const char *path = fm_module_path(modules[i]);
        esc(g, sizeof g, path, "\\.gate_proj\\.weight$");
        esc(u, sizeof u, path, "\\.up_proj\\.weight$");
        esc(gu, sizeof gu, path, "\\.gate_up_proj\\.weight$");
        const char *src[2] = {g, u}, *dst[1] = {gu};
        fm_transform *t = NULL;
        fm_status st = fm_transform_converter_new(src, 2, dst, 1, &cat, 1, &t, err);
        if (st == FM_OK) st = fm_transform_list_append(out, t, err); /* takes t, also on failure */
        if (st != FM_OK) return st;
    }
    return FM_OK;
}

static const char *const mlp_paths[] = {"(^|\\.)mlp$", NULL};
static const fm_fusion_spec gate_up_spec = {"custom_gate_up", mlp_paths,          gate_up_fusable,
                                            gate_up_class,    gate_up_transforms, NULL};

/* ---- the demonstration ---------------------------------------------------------------- */
static int fail(const char *what, const fm_error *err) {
    fprintf(stderr, "custom_fusion: %s: %s\n", what, err ? err->msg : "");
    return 1;
}

static double rel_l2(const fm_tensor *a, const fm_tensor *b) {
    double num = 0, den = 0;
    for (uint64_t i = 0; i < fm_tensor_numel(a); i++) {
        double d = (double)((float *)a->data)[i] - ((float *)b->data)[i];
        num += d * d, den += (double)((float *)b->data)[i] * ((float *)b->data)[i];
    }
    return sqrt(num / (den > 0 ? den : 1));
}

/* Reference: the unfused MLP from its three Linear modules. */
static fm_status unfused_mlp(fm_module *mlp, fm_run_ctx *rc, const fm_tensor *x, fm_tensor *y,
                             fm_error *err) {
    fm_tensor g = {0}, u = {0};
    fm_status st = fm_module_forward(fm_module_child_named(mlp, "gate_proj"), rc, x, 1, &g, 1, err);
    if (st == FM_OK)
        st = fm_module_forward(fm_module_child_named(mlp, "up_proj"), rc, x, 1, &u, 1, err);
    for (uint64_t i = 0; st == FM_OK && i < fm_tensor_numel(&g); i++) {
        float gv = ((float *)g.data)[i];
        ((float *)g.data)[i] = gv / (1.0f + expf(-gv)) * ((float *)u.data)[i];
    }
    if (st == FM_OK)
        st = fm_module_forward(fm_module_child_named(mlp, "down_proj"), rc, &g, 1, y, 1, err);
    return st;
}

int main(int argc, char **argv) {
    if (argc != 3) return fprintf(stderr, "usage: custom_fusion MODEL_DIR OUT_DIR\n"), 2;
    fm_error err;
    fm_model *plain = NULL, *fused = NULL;
    fm_load_options o;
    fm_load_options_init(&o);
    if (fm_fusion_register(&gate_up_spec, false, &err) != FM_OK) return fail("register", &err);
    o.fusion_config = "{}";
    if (fm_from_pretrained(argv[1], &o, &plain, NULL, &err) != FM_OK)
        return fail("load unfused", &err);
    o.fusion_config = "{\"custom_gate_up\": true}";
    o.strict = true;
    fm_load_report rep;
    if (fm_from_pretrained(argv[1], &o, &fused, &rep, &err) != FM_OK)
        return fail("load fused", &err);
    printf("fused modules: %zu (first: %s)\n", rep.n_fused, rep.n_fused ? rep.fused[0] : "-");
    fm_load_report_free(&rep);

    const char *path = "model.language_model.layers.0.mlp";
    fm_module *a = fm_module_find(fm_model_root(plain), path),
              *b = fm_module_find(fm_model_root(fused), path);
    if (!a || !b || strcmp(fm_module_class_of(b)->name, "CustomQwen2MLP"))
        return fail("fused class missing", NULL);
    int64_t H = fm_module_param_named(fm_module_child_named(a, "gate_proj"), "weight")
                    ->tensor.shape.dims[1];
    fm_shape xs = {2, {5, H}};
    fm_tensor x, ya = {0}, yb = {0};
    fm_tensor_alloc(&x, FM_DTYPE_F32, &xs, &err);
    for (int64_t i = 0; i < 5 * H; i++)
        ((float *)x.data)[i] = (float)sin(0.37 * (double)i + 0.1);
    fm_run_ctx *rca = NULL, *rcb = NULL; /* each model's own run context (pool + scratch) */
    if (fm_model_run_ctx(plain, NULL, &rca, &err) != FM_OK ||
        fm_model_run_ctx(fused, NULL, &rcb, &err) != FM_OK)
        return fail("run context", &err);
    if (unfused_mlp(a, rca, &x, &ya, &err) != FM_OK) return fail("unfused MLP", &err);
    if (fm_module_forward(b, rcb, &x, 1, &yb, 1, &err) != FM_OK) return fail("fused MLP", &err);
    double e =
        rel_l2(&yb, &ya); /* ya, yb are scratch of their run contexts, valid until released */
    printf("layer 0 MLP: fused vs unfused relative L2 %.3g\n", e);

    if (fm_save_pretrained(fused, argv[2], NULL, &err) != FM_OK) return fail("save", &err);
    char p1[4096], p2[4200];
    snprintf(p1, sizeof p1, "%s/model.safetensors", argv[1]);
    snprintf(p2, sizeof p2, "%s/model.safetensors", argv[2]);
    FILE *f1 = fopen(p1, "rb"), *f2 = fopen(p2, "rb");
    int same = f1 && f2, c1 = 0, c2 = 0;
    while (same && (c1 = getc(f1)) == (c2 = getc(f2)) && c1 != EOF) {
    }
    same = same && c1 == c2;
    if (f1) fclose(f1);
    if (f2) fclose(f2);
    printf("saved weights identical to the source: %s\n", same ? "yes" : "no");

    /* Families that touch different keys compose: both at once, then save the original layout. */
    fm_model *both = NULL;
    o.fusion_config = "{\"patch_embeddings\": true, \"custom_gate_up\": true}";
    if (fm_from_pretrained(argv[1], &o, &both, &rep, &err) != FM_OK)
        return fail("load with two families", &err);
    printf("two families: %zu fused modules\n", rep.n_fused);
    fm_load_report_free(&rep);
    char p3[4096];
    snprintf(p3, sizeof p3, "%s-both", argv[2]);
    if (fm_save_pretrained(both, p3, NULL, &err) != FM_OK) return fail("save two families", &err);
    fm_model_free(both);
    snprintf(p2, sizeof p2, "%s/model.safetensors", p3);
    f1 = fopen(p1, "rb"), f2 = fopen(p2, "rb");
    int same2 = f1 && f2;
    while (same2 && (c1 = getc(f1)) == (c2 = getc(f2)) && c1 != EOF) {
    }
    same2 = same2 && c1 == c2;
    if (f1) fclose(f1);
    if (f2) fclose(f2);
    printf("two families, saved weights identical to the source: %s\n", same2 ? "yes" : "no");
    same = same && same2;
    fm_tensor_free(&x);
    fm_model_free(plain);
    fm_model_free(fused);
    if (!(e <= 1e-5) || !same) return fail("mismatch", NULL);
    printf("custom_fusion: OK\n");
    return 0;
}
