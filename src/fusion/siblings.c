/* Fusion of sibling Linear layers that read the same input (the `qkv` and `gate_up` families,
 * generation.md §6): a module's `q_proj`, `k_proj`, `v_proj` (or `gate_proj`, `up_proj`)
 * become one Linear `qkv_proj` whose rows are theirs, stacked in order. The fused class keeps
 * the original class's forward unchanged: its children of the original names become slices
 * (class FusedLinearSlice) that hand out their columns of one fused GEMM, run once per forward
 * on the module's input. So the family needs to know nothing of the module's computation, and
 * every architecture whose attention or MLP calls these children on its input fuses alike.
 * Weights load by Concatenate with the parts' sizes recorded; saving reverses it with a Chunk of
 * exactly those (uneven, for GQA) sizes. */
#include <stdio.h>
#include <string.h>

#include "fusemap/fusion.h"
#include "fusion/fusion_internal.h"

#define MAX_PARTS 4

typedef struct sibling_spec {
    const char *fused;
    const char *parts[MAX_PARTS];
    int n;
} sibling_spec;

static const sibling_spec qkv_spec = {"qkv_proj", {"q_proj", "k_proj", "v_proj"}, 3};
static const sibling_spec gate_up_spec = {"gate_up_proj", {"gate_proj", "up_proj"}, 2};

/* The fused class with its spec (the class struct first, so a class pointer is the whole). */
typedef struct fused_siblings_class {
    fm_module_class cls;
    const sibling_spec *spec;
} fused_siblings_class;

/* ---- FusedLinearSlice(offset, width, total): columns [offset, offset + width) of the fused
 * Linear's output. While its parent's forward runs on few rows, the parent hands it the fused
 * output for the parent's input (`x`, `rows`); otherwise it computes its own rows of the fused
 * weight (fm_linear_forward_rows). */
typedef struct slice_impl {
    int64_t offset, width, total;
    const void *x; /* the input the cached output belongs to (NULL: none) */
    int64_t rows;
    const float *y; /* [rows][total], scratch of the parent's caller */
    fm_module *fused;
} slice_impl;

static fm_status slice_init(fm_module *m, fm_build_ctx *ctx, const fm_args *a, fm_error *err) {
    slice_impl *s = fm_calloc(1, sizeof *s);
    (void)ctx;
    if (!s)
        return fm_error_set(err, FM_ERR_NOMEM, "out of memory building '%s'", fm_module_path(m));
    s->offset = fm_args_int(a, "offset", 0), s->width = fm_args_int(a, "width", 0),
    s->total = fm_args_int(a, "total", 0);
    fm_module_set_impl(m, s);
    if (s->width > 0 && s->offset >= 0 && s->offset + s->width <= s->total) return FM_OK;
    return fm_error_set(err, FM_ERR_CONFIG, "module '%s': slice [%lld, +%lld) outside %lld columns",
                        fm_module_path(m), (long long)s->offset, (long long)s->width,
                        (long long)s->total);
}

/* in[0] F32 [rows][in] -> out[0] F32 [rows][width]. */
static fm_status slice_forward(fm_module *self, fm_run_ctx *rc, const fm_tensor *in, size_t n_in,
                               fm_tensor *out, size_t n_out, fm_error *err) {
    slice_impl *s = fm_module_impl(self);
    fm_status st = fm_module_check_input(self, in, n_in, 0, FM_DTYPE_F32, 2, -1, err);
    if (st != FM_OK || n_out < 1)
        return st != FM_OK ? st : fm_error_set(err, FM_ERR_INVALID_ARG, "one output");
    int64_t rows = in[0].shape.dims[0];
    fm_shape os = {2, {rows, s->width}};
    st = fm_module_output(self, rc, &out[0], FM_DTYPE_F32, &os, err);
    if (st != FM_OK) return st;
    if (!(s->x == in[0].data && s->rows == rows && s->y)) /* no shared GEMM: this part's rows */
        return fm_linear_forward_rows(s->fused, rc, &in[0], s->offset, s->width, &out[0], err);
    for (int64_t r = 0; r < rows; r++)
        memcpy((float *)out[0].data + r * s->width, s->y + r * s->total + s->offset,
               (size_t)s->width * sizeof(float));
    return FM_OK;
}

static const fm_module_class slice_class = {
    .name = "FusedLinearSlice", .init = slice_init, .forward = slice_forward, .free_impl = fm_free};

/* ---- the fused class ------------------------------------------------------------------------- */
static bool parts_geometry(const fm_module *m, const sibling_spec *sp, fm_linear_geometry *g) {
    if (fm_module_child_named(m, sp->fused)) return false;
    for (int i = 0; i < sp->n; i++) {
        if (fm_linear_geometry_of(fm_module_child_named(m, sp->parts[i]), &g[i], NULL) != FM_OK)
            return false;
        if (g[i].in_features != g[0].in_features || g[i].bias != g[0].bias) return false;
    }
    return true;
}

static fm_status fused_init(fm_module *self, fm_build_ctx *ctx, const fm_args *args,
                            fm_error *err) {
    const fused_siblings_class *fc = (const fused_siblings_class *)fm_module_class_of(self);
    const sibling_spec *sp = fc->spec;
    fm_status st = ((const fm_module_class *)fc->cls.data)->init(self, ctx, args, err);
    fm_linear_geometry g[MAX_PARTS];
    if (st != FM_OK) return st;
    if (!parts_geometry(self, sp, g))
        return fm_error_set(err, FM_ERR_FUSION,
                            "module '%s': %s cannot fuse this instance (parts are not Linear "
                            "layers of one input width)",
                            fm_module_path(self), fc->cls.name);
    int64_t total = 0;
    for (int i = 0; st == FM_OK && i < sp->n; i++)
        total += g[i].out_features, st = fm_module_remove_child(self, sp->parts[i], err);
    fm_module *fused = NULL;
    if (st == FM_OK)
        st = fm_module_create(
            ctx, self, sp->fused, "Linear",
            &FM_ARGS(FM_I("in", g[0].in_features), FM_I("out", total), FM_I("bias", g[0].bias)),
            &fused, err);
    for (int i = 0, off = 0; st == FM_OK && i < sp->n; off += (int)g[i].out_features, i++) {
        fm_module *s = NULL;
        st = fm_module_create(
            ctx, self, sp->parts[i], "FusedLinearSlice",
            &FM_ARGS(FM_I("offset", off), FM_I("width", g[i].out_features), FM_I("total", total)),
            &s, err);
        if (st == FM_OK) ((slice_impl *)fm_module_impl(s))->fused = fused;
    }
    return st;
}

static void hand_out(fm_module *self, const sibling_spec *sp, const void *x, int64_t rows,
                     const float *y) {
    for (int i = 0; i < sp->n; i++) {
        slice_impl *s = fm_module_impl(fm_module_child_named(self, sp->parts[i]));
        s->x = x, s->rows = rows, s->y = y;
    }
}

/* Up to this many rows (decoding: matrix-vector products bound by reading the weights) the
 * parts share one pass over the fused weight; above it (prefill: GEMMs bound by arithmetic)
 * each part computes its own rows of the fused weight straight into its output, which saves
 * copying every column of a [rows][total] product into the parts' buffers. */
#define SHARED_PASS_MAX_ROWS 8

/* For few rows, one fused GEMM on the module's input handed to the slices; then the original
 * forward. The fused output stays in the caller's scratch frame (below this module's output). */
static fm_status fused_forward(fm_module *self, fm_run_ctx *rc, const fm_tensor *in, size_t n_in,
                               fm_tensor *out, size_t n_out, fm_error *err) {
    const fused_siblings_class *fc = (const fused_siblings_class *)fm_module_class_of(self);
    const fm_module_class *orig = fc->cls.data;
    fm_tensor y = {0};
    fm_status st = fm_module_check_input(self, in, n_in, 0, FM_DTYPE_F32, 2, -1, err);
    if (st == FM_OK && in[0].shape.dims[0] > SHARED_PASS_MAX_ROWS)
        return orig->forward(self, rc, in, n_in, out, n_out, err);
    if (st == FM_OK)
        st = fm_module_forward(fm_module_child_named(self, fc->spec->fused), rc, &in[0], 1, &y, 1,
                               err);
    if (st != FM_OK) return st;
    hand_out(self, fc->spec, in[0].data, in[0].shape.dims[0], y.data);
    st = orig->forward(self, rc, in, n_in, out, n_out, err);
    hand_out(self, fc->spec, NULL, 0, NULL);
    return st;
}

static fm_status make_class(const sibling_spec *sp, const fm_module_class *orig,
                            const fm_module_class **out, fm_error *err) {
    fm_status st = fm_class_register(&slice_class, false, NULL);
    if (st != FM_OK && st != FM_ERR_EXISTS)
        return fm_error_set(err, st, "cannot register FusedLinearSlice");
    if (!orig->forward)
        return fm_error_set(err, FM_ERR_FUSION, "class %s has no forward to fuse around",
                            orig->name);
    fused_siblings_class *c = fm_calloc(1, sizeof *c);
    size_t n = strlen(orig->name) + 6;
    char *name = c ? fm_malloc(n) : NULL;
    if (!name) {
        fm_free(c);
        return fm_error_set(err, FM_ERR_NOMEM, "out of memory creating Fused%s", orig->name);
    }
    snprintf(name, n, "Fused%s", orig->name);
    c->cls = (fm_module_class){.name = name,
                               .init = fused_init,
                               .prepare = orig->prepare,
                               .forward = fused_forward,
                               .free_impl = orig->free_impl,
                               .data = orig};
    c->spec = sp;
    *out = &c->cls;
    return FM_OK;
}

/* ---- transforms --------------------------------------------------------------------------------
 */
/* "^" + path (regex-escaped) + "\." + child + "\." + param + "$". */
static void key_pattern(char *dst, size_t n, const char *path, const char *child,
                        const char *param) {
    size_t w = 0;
    dst[w++] = '^';
    for (; *path && w + 3 < n; path++) {
        if (strchr("\\.^$|?*+()[]{}", *path)) dst[w++] = '\\';
        dst[w++] = *path;
    }
    snprintf(dst + w, n - w, "\\.%s\\.%s$", child, param);
}

/* Concatenate (load) or Chunk (defuse) of weight and bias for one module, sizes recorded. */
static fm_status module_transforms(const sibling_spec *sp, fm_module *m, bool to_fused,
                                   fm_transform_list *out, fm_error *err) {
    fm_linear_geometry g[MAX_PARTS];
    if (!parts_geometry(m, sp, g))
        return fm_error_set(err, FM_ERR_FUSION, "module '%s' is not fusable", fm_module_path(m));
    fm_op_desc op = {.kind = to_fused ? FM_OP_CONCATENATE : FM_OP_CHUNK, .n_sizes = sp->n};
    for (int i = 0; i < sp->n; i++)
        op.sizes[i] = g[i].out_features;
    static const char *const params[2] = {"weight", "bias"};
    fm_status st = FM_OK;
    for (int p = 0; st == FM_OK && p < (g[0].bias ? 2 : 1); p++) {
        char parts[MAX_PARTS][512], fused[512];
        const char *pp[MAX_PARTS], *fp = fused;
        for (int i = 0; i < sp->n; i++)
            key_pattern(parts[i], sizeof parts[i], fm_module_path(m), sp->parts[i], params[p]),
                pp[i] = parts[i];
        key_pattern(fused, sizeof fused, fm_module_path(m), sp->fused, params[p]);
        fm_transform *t = NULL;
        st = to_fused ? fm_transform_converter_new(pp, (size_t)sp->n, &fp, 1, &op, 1, &t, err)
                      : fm_transform_converter_new(&fp, 1, pp, (size_t)sp->n, &op, 1, &t, err);
        if (st == FM_OK) st = fm_transform_list_append(out, t, err); /* takes t, also on failure */
    }
    return st;
}

static fm_status all_transforms(const sibling_spec *sp, fm_module *const *modules, size_t n,
                                bool to_fused, fm_transform_list *out, fm_error *err) {
    fm_status st = FM_OK;
    for (size_t i = 0; st == FM_OK && i < n; i++)
        st = module_transforms(sp, modules[i], to_fused, out, err);
    return st;
}

/* ---- the two families
 * ---------------------------------------------------------------------------- */
static bool qkv_fusable(const fm_module *m) {
    fm_linear_geometry g[MAX_PARTS];
    return parts_geometry(m, &qkv_spec, g);
}
static fm_status qkv_class(const fm_module_class *orig, const fm_module_class **out,
                           fm_error *err) {
    return make_class(&qkv_spec, orig, out, err);
}
static fm_status qkv_transforms(const fm_config *c, fm_module *const *m, size_t n,
                                fm_transform_list *out, fm_error *err) {
    (void)c;
    return all_transforms(&qkv_spec, m, n, true, out, err);
}
static fm_status qkv_defuse(const fm_config *c, fm_module *const *m, size_t n,
                            fm_transform_list *out, fm_error *err) {
    (void)c;
    return all_transforms(&qkv_spec, m, n, false, out, err);
}

static bool gate_up_fusable(const fm_module *m) {
    fm_linear_geometry g[MAX_PARTS];
    return parts_geometry(m, &gate_up_spec, g) && g[0].out_features == g[1].out_features;
}
static fm_status gate_up_class(const fm_module_class *orig, const fm_module_class **out,
                               fm_error *err) {
    return make_class(&gate_up_spec, orig, out, err);
}
static fm_status gate_up_transforms(const fm_config *c, fm_module *const *m, size_t n,
                                    fm_transform_list *out, fm_error *err) {
    (void)c;
    return all_transforms(&gate_up_spec, m, n, true, out, err);
}
static fm_status gate_up_defuse(const fm_config *c, fm_module *const *m, size_t n,
                                fm_transform_list *out, fm_error *err) {
    (void)c;
    return all_transforms(&gate_up_spec, m, n, false, out, err);
}

static const char *const attn_targets[] = {"(^|\\.)(self_attn|attn|attention)$", NULL};
static const char *const mlp_targets[] = {"(^|\\.)mlp$", NULL};

const fm_fusion_spec fm_fusion_qkv = {
    .name = "qkv",
    .target_patterns = attn_targets,
    .is_fusable = qkv_fusable,
    .make_fused_class = qkv_class,
    .make_transforms = qkv_transforms,
    .make_defuse_transforms = qkv_defuse,
};

const fm_fusion_spec fm_fusion_gate_up = {
    .name = "gate_up",
    .target_patterns = mlp_targets,
    .is_fusable = gate_up_fusable,
    .make_fused_class = gate_up_class,
    .make_transforms = gate_up_transforms,
    .make_defuse_transforms = gate_up_defuse,
};
