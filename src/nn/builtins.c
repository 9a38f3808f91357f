/* Built-in generic module classes (torch.nn counterparts): Linear, Conv3d, LayerNorm,
 * RMSNorm, Embedding, activations and containers. Parameters are declared in the order
 * PyTorch registers them, so named_parameters() matches transformers. */
#include <pthread.h>
#include <string.h>

#include "fusemap/nn.h"
#include "nn/builtins.h"

static fm_status add_vec(fm_module *m, const char *name, int64_t n, fm_build_ctx *ctx, fm_error *err) {
    fm_shape s = {1, {n}};
    return fm_module_add_param(m, name, fm_build_ctx_dtype(ctx), &s, err);
}

static fm_status need_positive(fm_module *m, const char *what, int64_t v, fm_error *err) {
    if (v > 0) return FM_OK;
    return fm_error_set(err, FM_ERR_CONFIG, "module '%s': %s must be positive, got %lld",
                        fm_module_path(m), what, (long long)v);
}

static void *impl_dup(const void *src, size_t n) {
    void *p = fm_malloc(n);
    if (p) memcpy(p, src, n);
    return p;
}

static fm_status set_impl(fm_module *m, const void *v, size_t n, fm_error *err) {
    void *p = impl_dup(v, n);
    if (!p) return fm_error_set(err, FM_ERR_NOMEM, "out of memory building '%s'", fm_module_path(m));
    fm_module_set_impl(m, p);
    return FM_OK;
}

/* ---- Linear(in, out, bias=1): weight [out][in], bias [out] ---------------------------- */
static fm_status linear_init(fm_module *m, fm_build_ctx *ctx, const fm_args *a, fm_error *err) {
    fm_linear_impl li = {fm_args_int(a, "in", 0), fm_args_int(a, "out", 0), fm_args_int(a, "bias", 1) != 0};
    fm_status st = need_positive(m, "in_features", li.in, err);
    if (st == FM_OK) st = need_positive(m, "out_features", li.out, err);
    if (st != FM_OK) return st;
    fm_shape w = {2, {li.out, li.in}};
    st = fm_module_add_param(m, "weight", fm_build_ctx_dtype(ctx), &w, err);
    if (st == FM_OK && li.bias) st = add_vec(m, "bias", li.out, ctx, err);
    if (st == FM_OK) st = set_impl(m, &li, sizeof li, err);
    return st;
}

/* ---- Conv3d(in, out, k0..k2, s0..s2, p0..p2, d0..d2, groups, bias) ---------------------- */
static fm_status conv3d_init(fm_module *m, fm_build_ctx *ctx, const fm_args *a, fm_error *err) {
    fm_conv3d_impl c;
    memset(&c, 0, sizeof c);
    c.in = fm_args_int(a, "in", 0);
    c.out = fm_args_int(a, "out", 0);
    c.groups = fm_args_int(a, "groups", 1);
    c.bias = fm_args_int(a, "bias", 1) != 0;
    static const char *kn[3] = {"k0", "k1", "k2"}, *sn[3] = {"s0", "s1", "s2"};
    static const char *pn[3] = {"p0", "p1", "p2"}, *dn[3] = {"d0", "d1", "d2"};
    for (int i = 0; i < 3; i++) {
        c.k[i] = fm_args_int(a, kn[i], 1);
        c.s[i] = fm_args_int(a, sn[i], 1);
        c.p[i] = fm_args_int(a, pn[i], 0);
        c.d[i] = fm_args_int(a, dn[i], 1);
        if (c.k[i] <= 0 || c.s[i] <= 0 || c.d[i] <= 0 || c.p[i] < 0)
            return fm_error_set(err, FM_ERR_CONFIG, "module '%s': invalid Conv3d geometry on axis %d",
                                fm_module_path(m), i);
    }
    fm_status st = need_positive(m, "in_channels", c.in, err);
    if (st == FM_OK) st = need_positive(m, "out_channels", c.out, err);
    if (st == FM_OK) st = need_positive(m, "groups", c.groups, err);
    if (st != FM_OK) return st;
    if (c.in % c.groups || c.out % c.groups)
        return fm_error_set(err, FM_ERR_CONFIG, "module '%s': channels %lld/%lld not divisible by groups %lld",
                            fm_module_path(m), (long long)c.in, (long long)c.out, (long long)c.groups);
    fm_shape w = {5, {c.out, c.in / c.groups, c.k[0], c.k[1], c.k[2]}};
    st = fm_module_add_param(m, "weight", fm_build_ctx_dtype(ctx), &w, err);
    if (st == FM_OK && c.bias) st = add_vec(m, "bias", c.out, ctx, err);
    if (st == FM_OK) st = set_impl(m, &c, sizeof c, err);
    return st;
}

/* ---- LayerNorm(dim, eps): weight, bias ---------------------------------------------------- */
static fm_status layernorm_init(fm_module *m, fm_build_ctx *ctx, const fm_args *a, fm_error *err) {
    fm_norm_impl n = {fm_args_int(a, "dim", 0), fm_args_double(a, "eps", 1e-5)};
    fm_status st = need_positive(m, "normalized_shape", n.dim, err);
    if (st == FM_OK) st = add_vec(m, "weight", n.dim, ctx, err);
    if (st == FM_OK) st = add_vec(m, "bias", n.dim, ctx, err);
    if (st == FM_OK) st = set_impl(m, &n, sizeof n, err);
    return st;
}

/* ---- RMSNorm(dim, eps): weight -------------------------------------------------------------- */
static fm_status rmsnorm_init(fm_module *m, fm_build_ctx *ctx, const fm_args *a, fm_error *err) {
    fm_norm_impl n = {fm_args_int(a, "dim", 0), fm_args_double(a, "eps", 1e-6)};
    fm_status st = need_positive(m, "hidden_size", n.dim, err);
    if (st == FM_OK) st = add_vec(m, "weight", n.dim, ctx, err);
    if (st == FM_OK) st = set_impl(m, &n, sizeof n, err);
    return st;
}

/* ---- Embedding(num, dim): weight [num][dim] ------------------------------------------------ */
static fm_status embedding_init(fm_module *m, fm_build_ctx *ctx, const fm_args *a, fm_error *err) {
    int64_t num = fm_args_int(a, "num", 0), dim = fm_args_int(a, "dim", 0);
    fm_status st = need_positive(m, "num_embeddings", num, err);
    if (st == FM_OK) st = need_positive(m, "embedding_dim", dim, err);
    if (st != FM_OK) return st;
    fm_shape w = {2, {num, dim}};
    return fm_module_add_param(m, "weight", fm_build_ctx_dtype(ctx), &w, err);
}

static fm_status no_params_init(fm_module *m, fm_build_ctx *ctx, const fm_args *a, fm_error *err) {
    (void)m, (void)ctx, (void)a, (void)err;
    return FM_OK;
}

const fm_module_class fm_class_linear = {"Linear", linear_init, fm_linear_forward, fm_free, NULL};
const fm_module_class fm_class_conv3d = {"Conv3d", conv3d_init, fm_conv3d_forward, fm_free, NULL};
const fm_module_class fm_class_layernorm = {"LayerNorm", layernorm_init, NULL, fm_free, NULL};
const fm_module_class fm_class_rmsnorm = {"Qwen2RMSNorm", rmsnorm_init, NULL, fm_free, NULL};
const fm_module_class fm_class_embedding = {"Embedding", embedding_init, NULL, NULL, NULL};
const fm_module_class fm_class_gelu = {"GELU", no_params_init, NULL, NULL, NULL};
const fm_module_class fm_class_quick_gelu = {"QuickGELUActivation", no_params_init, NULL, NULL, NULL};
const fm_module_class fm_class_silu = {"SiLUActivation", no_params_init, NULL, NULL, NULL};
const fm_module_class fm_class_module_list = {"ModuleList", no_params_init, NULL, NULL, NULL};
const fm_module_class fm_class_sequential = {"Sequential", no_params_init, NULL, NULL, NULL};

static const fm_module_class *const builtin_classes[] = {
    &fm_class_linear, &fm_class_conv3d, &fm_class_layernorm, &fm_class_rmsnorm,
    &fm_class_embedding, &fm_class_gelu, &fm_class_quick_gelu, &fm_class_silu,
    &fm_class_module_list, &fm_class_sequential,
};

static pthread_once_t builtins_once = PTHREAD_ONCE_INIT;

static void register_all(void) {
    for (size_t i = 0; i < sizeof builtin_classes / sizeof *builtin_classes; i++)
        fm_class_register(builtin_classes[i], false, NULL);
    fm_models_register_builtin_classes();
}

void fm_nn_register_builtins(void) { pthread_once(&builtins_once, register_all); }
