/* A fusion family registered from outside the library that changes a forward inside the vision
 * tower: "split_qkv" turns each block's attention `qkv` Linear (one [3D, D] GEMM) into three
 * Linears `q`, `k`, `v` ([D, D] each), loaded through a Chunk converter whose reverse,
 * Concatenate, restores the checkpoint's layout on save. The replacement class brings its own
 * forward (three projections, rotary, attention, output projection) written with the public
 * functional ops; the tower calls it through the class table like any other attention.
 *
 *   split_qkv MODEL_DIR OUT_DIR
 *
 * runs the vision tower unfused, with split_qkv, and with split_qkv + patch_embeddings on the
 * same input, saves the split model to OUT_DIR in the original format and compares the weights
 * byte for byte. Prints "split_qkv: OK" and exits 0 when everything matches. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fusemap/fusemap.h"

/* ---- the family ----------------------------------------------------------------------- */

/* An attention whose `qkv` is a Linear D -> 3D with bias, next to a `proj`. */
static bool split_fusable(const fm_module *m) {
    fm_linear_geometry g;
    if (fm_linear_geometry_of(fm_module_child_named(m, "qkv"), &g, NULL) != FM_OK ||
        !fm_module_child_named(m, "proj"))
        return false;
    return g.out_features == 3 * g.in_features && g.bias;
}

/* SplitX.init: the original init, then qkv [3D, D] replaced by q, k, v [D, D] (with biases). */
static fm_status split_init(fm_module *self, fm_build_ctx *ctx, const fm_args *args,
                            fm_error *err) {
    const fm_module_class *orig = fm_module_class_of(self)->data;
    fm_status st = orig->init(self, ctx, args, err);
    fm_linear_geometry g;
    if (st == FM_OK) st = fm_linear_geometry_of(fm_module_child_named(self, "qkv"), &g, err);
    if (st == FM_OK) st = fm_module_remove_child(self, "qkv", err);
    static const char *const names[3] = {"q", "k", "v"};
    for (int i = 0; st == FM_OK && i < 3; i++)
        st = fm_module_create(
            ctx, self, names[i], "Linear",
            &FM_ARGS(FM_I("in", g.in_features), FM_I("out", g.in_features), FM_I("bias", 1)), NULL,
            err);
    return st;
}

/* SplitX.forward: in = {x [N][D], cu_seqlens I32 [S+1], cos, sin [N][head_dim/2]} -> out[0]
 * [N][D], the contract of the attention it replaces. The head count follows from the rotary
 * tables: head_dim = 2 * their width. */
static fm_status split_forward(fm_module *self, fm_run_ctx *rc, const fm_tensor *in, size_t n_in,
                               fm_tensor *out, size_t n_out, fm_error *err) {
    fm_linear_geometry g;
    fm_status st = fm_linear_geometry_of(fm_module_child_named(self, "q"), &g, err);
    if (st == FM_OK)
        st = fm_module_check_input(self, in, n_in, 0, FM_DTYPE_F32, 2, g.in_features, err);
    if (st == FM_OK) st = fm_module_check_input(self, in, n_in, 1, FM_DTYPE_I32, 1, -1, err);
    if (st == FM_OK) st = fm_module_check_input(self, in, n_in, 2, FM_DTYPE_F32, 2, -1, err);
    if (st == FM_OK) st = fm_module_check_input(self, in, n_in, 3, FM_DTYPE_F32, 2, -1, err);
    if (st != FM_OK || n_out < 1)
        return st != FM_OK ? st : fm_error_set(err, FM_ERR_INVALID_ARG, "one output");
    int64_t d = g.in_features, hd = 2 * in[2].shape.dims[1], heads = hd ? d / hd : 0;
    if (heads < 1 || heads * hd != d)
        return fm_error_set(err, FM_ERR_INPUT, "rotary tables do not fit %lld columns",
                            (long long)d);
    st = fm_module_output(self, rc, &out[0], FM_DTYPE_F32, &in[0].shape,
                          err);    /* the output first ... */
    size_t mark = fm_run_mark(rc); /* ... then scratch */
    fm_tensor q = {0}, k = {0}, v = {0}, o = {0};
    if (st == FM_OK)
        st = fm_module_forward(fm_module_child_named(self, "q"), rc, &in[0], 1, &q, 1, err);
    if (st == FM_OK)
        st = fm_module_forward(fm_module_child_named(self, "k"), rc, &in[0], 1, &k, 1, err);
    if (st == FM_OK)
        st = fm_module_forward(fm_module_child_named(self, "v"), rc, &in[0], 1, &v, 1, err);
    if (st == FM_OK) st = fm_run_tensor(rc, FM_DTYPE_F32, &in[0].shape, &o, err);
    const float *cos_t = in[2].data, *sin_t = in[3].data;
    if (st == FM_OK) st = fm_op_rope(rc, fm_mat_of(&q), (int)heads, (int)hd, cos_t, sin_t, err);
    if (st == FM_OK) st = fm_op_rope(rc, fm_mat_of(&k), (int)heads, (int)hd, cos_t, sin_t, err);
    float scale = (float)pow((double)hd, -0.5);
    if (st == FM_OK)
        st = fm_op_attention(rc, fm_mat_of(&o), fm_mat_of(&q), fm_mat_of(&k), fm_mat_of(&v),
                             in[1].data, (int)in[1].shape.dims[0] - 1, (int)heads, (int)hd, scale,
                             err);
    if (st == FM_OK)
        st = fm_module_forward(fm_module_child_named(self, "proj"), rc, &o, 1, &out[0], 1, err);
    fm_run_release(rc, mark);
    return st;
}

static fm_status split_class(const fm_module_class *orig, const fm_module_class **out,
                             fm_error *err) {
    fm_module_class *c = calloc(1, sizeof *c);
    char *name = malloc(strlen(orig->name) + 6);
    if (!c || !name) return free(c), free(name), fm_error_set(err, FM_ERR_NOMEM, "out of memory");
    sprintf(name, "Split%s", orig->name);
    *c = (fm_module_class){.name = name,
                           .init = split_init,
                           .forward = split_forward,
                           .free_impl = orig->free_impl,
                           .data = orig};
    *out = c; /* kept for the life of the process, as the registry requires */
    return FM_OK;
}

/* "^" + path with dots escaped + suffix. */
static void anchored(char *dst, size_t n, const char *path, const char *suffix) {
    size_t w = 0;
    dst[w++] = '^';
    for (; *path && w + 3 < n; path++) {
        if (*path == '.') dst[w++] = '\\';
        dst[w++] = *path;
    }
    snprintf(dst + w, n - w, "%s", suffix);
}

/* Per attention: weight and bias each Chunk(dim 0) into q, k, v (reverse: Concatenate). */
static fm_status split_transforms(const fm_config *config, fm_module *const *modules, size_t n,
                                  fm_transform_list *out, fm_error *err) {
    (void)config;
    fm_op_desc chunk = {.kind = FM_OP_CHUNK, .dim = 0};
    static const char *const kinds[2] = {"weight", "bias"};
    for (size_t i = 0; i < n; i++)
        for (int kd = 0; kd < 2; kd++) {
            char src[512], q[512], k[512], v[512], suffix[64];
            const char *path = fm_module_path(modules[i]);
            snprintf(suffix, sizeof suffix, "\\.qkv\\.%s$", kinds[kd]);
            anchored(src, sizeof src, path, suffix);
            snprintf(suffix, sizeof suffix, "\\.q\\.%s$", kinds[kd]);
            anchored(q, sizeof q, path, suffix);
            snprintf(suffix, sizeof suffix, "\\.k\\.%s$", kinds[kd]);
            anchored(k, sizeof k, path, suffix);
            snprintf(suffix, sizeof suffix, "\\.v\\.%s$", kinds[kd]);
            anchored(v, sizeof v, path, suffix);
            const char *s[1] = {src}, *t[3] = {q, k, v};
            fm_transform *tr = NULL;
            fm_status st = fm_transform_converter_new(s, 1, t, 3, &chunk, 1, &tr, err);
            if (st == FM_OK)
                st = fm_transform_list_append(out, tr, err); /* takes tr, also on failure */
            if (st != FM_OK) return st;
        }
    return FM_OK;
}

static const char *const attn_paths[] = {"(^|\\.)attn$", NULL};
static const fm_fusion_spec split_qkv_spec = {
    .name = "split_qkv",
    .target_patterns = attn_paths,
    .is_fusable = split_fusable,
    .make_fused_class = split_class,
    .make_transforms = split_transforms,
};

/* ---- the demonstration ---------------------------------------------------------------- */
static int fail(const char *what, const fm_error *err) {
    fprintf(stderr, "split_qkv: %s: %s\n", what, err ? err->msg : "");
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

/* Vision embeddings of a fixed input (grid 1 x 4 x 6) for the model loaded with `fusion`. */
static int embeds(const char *dir, const char *fusion, fm_tensor *out, size_t *n_fused,
                  fm_model **keep) {
    fm_load_options o;
    fm_load_options_init(&o);
    o.fusion_config = fusion;
    o.strict = true;
    fm_model *m = NULL;
    fm_load_report rep;
    fm_error err;
    if (fm_from_pretrained(dir, &o, &m, &rep, &err) != FM_OK) return fail(fusion, &err);
    *n_fused = rep.n_fused;
    fm_load_report_free(&rep);
    const fm_tensor *pw = fm_model_param(m, "model.visual.patch_embed.proj.weight");
    if (!pw) pw = fm_model_param(m, "model.visual.patch_embed.linear_proj.weight");
    int64_t k = pw ? (int64_t)(fm_tensor_numel(pw) / (uint64_t)pw->shape.dims[0]) : 0;
    fm_shape ps = {2, {24, k}}, gs = {2, {1, 3}};
    fm_tensor pv, grid;
    if (fm_tensor_alloc(&pv, FM_DTYPE_F32, &ps, &err) != FM_OK ||
        fm_tensor_alloc(&grid, FM_DTYPE_I64, &gs, &err) != FM_OK)
        return fail("input", &err);
    for (int64_t i = 0; i < 24 * k; i++)
        ((float *)pv.data)[i] = (float)sin(0.37 * (double)i + 0.1);
    int64_t *g = grid.data;
    g[0] = 1, g[1] = 4, g[2] = 6;
    fm_status st = fm_model_vision_forward(m, &pv, &grid, NULL, out, &err);
    fm_tensor_free(&pv), fm_tensor_free(&grid);
    if (st != FM_OK) return fail("forward", &err);
    if (keep)
        *keep = m;
    else
        fm_model_free(m);
    return 0;
}

static int same_file(const char *a, const char *b) {
    FILE *f1 = fopen(a, "rb"), *f2 = fopen(b, "rb");
    int same = f1 && f2, c1 = 0, c2 = 0;
    while (same && (c1 = getc(f1)) == (c2 = getc(f2)) && c1 != EOF) {
    }
    same = same && c1 == c2;
    if (f1) fclose(f1);
    if (f2) fclose(f2);
    return same;
}

int main(int argc, char **argv) {
    if (argc != 3) return fprintf(stderr, "usage: split_qkv MODEL_DIR OUT_DIR\n"), 2;
    fm_error err;
    if (fm_fusion_register(&split_qkv_spec, false, &err) != FM_OK) return fail("register", &err);
    fm_tensor plain = {0}, split = {0}, both = {0};
    fm_model *split_model = NULL;
    size_t n0 = 0, n1 = 0, n2 = 0;
    if (embeds(argv[1], "{}", &plain, &n0, NULL) ||
        embeds(argv[1], "{\"split_qkv\": true}", &split, &n1, &split_model) ||
        embeds(argv[1], "{\"split_qkv\": true, \"patch_embeddings\": true}", &both, &n2, NULL))
        return 1;
    double e1 = rel_l2(&split, &plain), e2 = rel_l2(&both, &plain);
    printf("split_qkv: %zu attention modules replaced; vision output vs unfused relative L2 %.3g\n",
           n1, e1);
    printf("split_qkv + patch_embeddings: %zu modules replaced; relative L2 %.3g\n", n2, e2);
    if (fm_save_pretrained(split_model, argv[2], NULL, &err) != FM_OK) return fail("save", &err);
    char p1[4096], p2[4200];
    snprintf(p1, sizeof p1, "%s/model.safetensors", argv[1]);
    snprintf(p2, sizeof p2, "%s/model.safetensors", argv[2]);
    int same = same_file(p1, p2);
    printf("saved weights identical to the source: %s\n", same ? "yes" : "no");
    fm_tensor_free(&plain), fm_tensor_free(&split), fm_tensor_free(&both);
    fm_model_free(split_model);
    if (!(e1 <= 1e-5) || !(e2 <= 1e-5) || !same || n1 == 0 || n2 != n1 + 1)
        return fail("mismatch", NULL);
    printf("split_qkv: OK\n");
    return 0;
}
