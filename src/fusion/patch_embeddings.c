/* The patch_embeddings fusion family: a patch embedding whose `proj` is a Conv3d with
 * stride == kernel, padding 0, dilation 1, groups 1 becomes one Linear over C·kT·kH·kW
 * (`linear_proj`): the convolution of a flattened patch is a GEMM. Weight by Conv3dToLinear,
 * bias by renaming, both zero-copy. */
#include <stdio.h>
#include <string.h>

#include "fusemap/fusion.h"

/* The geometry of m's `proj` when it is a Conv3d that a Linear can replace: stride == kernel,
 * padding 0, dilation 1, groups 1 (read from the module, not from a config field). */
static bool fusable_conv(const fm_module *m, fm_conv3d_geometry *g) {
    if (fm_conv3d_geometry_of(fm_module_child_named(m, "proj"), g, NULL) != FM_OK || g->groups != 1)
        return false;
    for (int i = 0; i < 3; i++)
        if (g->stride[i] != g->kernel[i] || g->padding[i] != 0 || g->dilation[i] != 1) return false;
    return true;
}

static bool is_fusable(const fm_module *m) {
    fm_conv3d_geometry g;
    return fusable_conv(m, &g);
}

/* FusedX.init: the original init, then `proj` (Conv3d) replaced by `linear_proj` (Linear). */
static fm_status fused_init(fm_module *self, fm_build_ctx *ctx, const fm_args *args,
                            fm_error *err) {
    const fm_module_class *orig = fm_module_class_of(self)->data;
    fm_status st = orig->init(self, ctx, args, err);
    if (st != FM_OK) return st;
    fm_conv3d_geometry c;
    if (!fusable_conv(self, &c))
        return fm_error_set(
            err, FM_ERR_FUSION,
            "module '%s': %s cannot fuse this instance (no stride==kernel Conv3d proj)",
            fm_module_path(self), fm_module_class_of(self)->name);
    st = fm_module_remove_child(self, "proj", err);
    int64_t in = c.in_channels * c.kernel[0] * c.kernel[1] * c.kernel[2];
    if (st == FM_OK)
        st = fm_module_create(
            ctx, self, "linear_proj", "Linear",
            &FM_ARGS(FM_I("in", in), FM_I("out", c.out_channels), FM_I("bias", c.bias)), NULL, err);
    return st;
}

/* FusedX.forward: in[0] F32 [..., C·kT·kH·kW values per patch] viewed as (-1, C·kT·kH·kW), one
 * Linear (linear_proj) -> out[0] F32 [patches, embed_dim]. */
static fm_status fused_forward(fm_module *self, fm_run_ctx *rc, const fm_tensor *in, size_t n_in,
                               fm_tensor *out, size_t n_out, fm_error *err) {
    fm_module *lin = fm_module_child_named(self, "linear_proj");
    fm_linear_geometry g;
    fm_status st = fm_linear_geometry_of(lin, &g, err);
    if (st == FM_OK) st = fm_module_check_input(self, in, n_in, 0, FM_DTYPE_F32, -1, -1, err);
    if (st != FM_OK || n_out < 1)
        return st != FM_OK
                   ? st
                   : fm_error_set(err, FM_ERR_INVALID_ARG, "%s: one output", fm_module_path(self));
    uint64_t numel = fm_tensor_numel(&in[0]);
    if (numel % (uint64_t)g.in_features) {
        char b[128];
        return fm_error_set(err, FM_ERR_INPUT,
                            "module '%s': input %s is not a whole number of %lld-value patches",
                            fm_module_path(self), fm_shape_format(&in[0].shape, b, sizeof b),
                            (long long)g.in_features);
    }
    fm_shape flat = {2, {(int64_t)(numel / (uint64_t)g.in_features), g.in_features}};
    fm_tensor view = {0}; /* holds a reference to the input's storage */
    st = fm_tensor_reshape(&view, &in[0], &flat, err);
    if (st == FM_OK) st = fm_module_forward(lin, rc, &view, 1, out, 1, err);
    fm_tensor_free(&view);
    return st;
}

static fm_status make_fused_class(const fm_module_class *orig, const fm_module_class **out,
                                  fm_error *err) {
    fm_module_class *cls = fm_calloc(1, sizeof *cls);
    size_t n = strlen(orig->name) + 6;
    char *name = cls ? fm_malloc(n) : NULL;
    if (!name) {
        fm_free(cls);
        return fm_error_set(err, FM_ERR_NOMEM, "out of memory creating Fused%s", orig->name);
    }
    snprintf(name, n, "Fused%s", orig->name);
    *cls = (fm_module_class){name, fused_init, NULL, fused_forward, orig->free_impl, orig};
    *out = cls;
    return FM_OK;
}

/* Escapes regex metacharacters of a module path. Caller frees. */
static char *regex_escape(const char *s) {
    char *o = fm_malloc(2 * strlen(s) + 1), *w = o;
    for (; o && *s; s++) {
        if (strchr("\\.^$|?*+()[]{}", *s)) *w++ = '\\';
        *w++ = *s;
    }
    if (o) *w = '\0';
    return o;
}

/* For one accepted module: weight converter + bias renaming; to_fused = the load direction. */
static fm_status module_transforms(fm_module *m, bool to_fused, fm_transform_list *out,
                                   fm_error *err) {
    fm_conv3d_geometry c;
    if (!fusable_conv(m, &c))
        return fm_error_set(err, FM_ERR_FUSION, "module '%s' is not a fusable patch embedding",
                            fm_module_path(m));
    char *esc = regex_escape(fm_module_path(m));
    if (!esc) return fm_error_set(err, FM_ERR_NOMEM, "out of memory");
    char conv_w[1024], lin_w[1024], conv_b[1024], lin_b[1024];
    snprintf(conv_w, sizeof conv_w, "^%s\\.proj\\.weight$", esc);
    snprintf(lin_w, sizeof lin_w, "^%s\\.linear_proj\\.weight$", esc);
    snprintf(conv_b, sizeof conv_b, "^%s\\.proj\\.bias$", esc);
    snprintf(lin_b, sizeof lin_b, "^%s\\.linear_proj\\.bias$", esc);
    fm_free(esc);
    fm_op_desc op = {.kind = to_fused ? FM_OP_CONV3D_TO_LINEAR : FM_OP_LINEAR_TO_CONV3D,
                     .in_channels = c.in_channels,
                     .kernel = {c.kernel[0], c.kernel[1], c.kernel[2]}};
    const char *ws = to_fused ? conv_w : lin_w, *wt = to_fused ? lin_w : conv_w;
    fm_transform *w = NULL, *b = NULL;
    fm_status st = fm_transform_converter_new(&ws, 1, &wt, 1, &op, 1, &w, err);
    if (st == FM_OK) st = fm_transform_list_append(out, w, err), w = NULL;
    if (st == FM_OK && c.bias)
        st = fm_transform_renaming_new(to_fused ? conv_b : lin_b, to_fused ? lin_b : conv_b, &b,
                                       err);
    if (st == FM_OK && b) st = fm_transform_list_append(out, b, err), b = NULL;
    fm_transform_free(w);
    fm_transform_free(b);
    return st;
}

static fm_status make_transforms(const fm_config *config, fm_module *const *modules, size_t n,
                                 fm_transform_list *out, fm_error *err) {
    fm_status st = FM_OK;
    (void)config;
    for (size_t i = 0; st == FM_OK && i < n; i++)
        st = module_transforms(modules[i], true, out, err);
    return st;
}

static fm_status make_defuse_transforms(const fm_config *config, fm_module *const *modules,
                                        size_t n, fm_transform_list *out, fm_error *err) {
    fm_status st = FM_OK;
    (void)config;
    for (size_t i = 0; st == FM_OK && i < n; i++)
        st = module_transforms(modules[i], false, out, err);
    return st;
}

static const char *const targets[] = {"(^|\\.)patch_embed$", NULL};

const fm_fusion_spec fm_fusion_patch_embeddings = {
    "patch_embeddings", targets,         is_fusable,
    make_fused_class,   make_transforms, make_defuse_transforms,
};
