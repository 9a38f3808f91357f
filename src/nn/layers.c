/* The generic layer classes (torch.nn and transformers-activation counterparts): Linear,
 * Conv3d, LayerNorm, RMSNorm, Embedding, activations and containers — their constructors,
 * geometry accessors and registration. Parameters are declared in the order PyTorch registers
 * them, so named_parameters() matches transformers. Forwards: layers_forward.c. */
#include <pthread.h>
#include <string.h>

#include "nn/layers.h"

static fm_status add_vec(fm_module *m, const char *name, int64_t n, fm_build_ctx *ctx,
                         fm_error *err) {
    fm_shape s = {1, {n}};
    return fm_module_add_param(m, name, fm_build_ctx_dtype(ctx), &s, err);
}

static fm_status need_positive(fm_module *m, const char *what, int64_t v, fm_error *err) {
    if (v > 0) return FM_OK;
    return fm_error_set(err, FM_ERR_CONFIG, "module '%s': %s must be positive, got %lld",
                        fm_module_path(m), what, (long long)v);
}

/* ---- Linear(in, out, bias=1): weight [out][in], bias [out] ---------------------------- */
static fm_status linear_init(fm_module *m, fm_build_ctx *ctx, const fm_args *a, fm_error *err) {
    fm_linear_impl li;
    memset(&li, 0, sizeof li);
    li.g = (fm_linear_geometry){fm_args_int(a, "in", 0), fm_args_int(a, "out", 0),
                                fm_args_int(a, "bias", 1) != 0};
    fm_status st = need_positive(m, "in_features", li.g.in_features, err);
    if (st == FM_OK) st = need_positive(m, "out_features", li.g.out_features, err);
    if (st != FM_OK) return st;
    fm_shape w = {2, {li.g.out_features, li.g.in_features}};
    st = fm_module_add_param(m, "weight", fm_build_ctx_dtype(ctx), &w, err);
    if (st == FM_OK && li.g.bias) st = add_vec(m, "bias", li.g.out_features, ctx, err);
    if (st == FM_OK) st = fm_module_set_impl_copy(m, &li, sizeof li, err);
    return st;
}

/* ---- Conv3d(in, out, k0..k2, s0..s2, p0..p2, d0..d2, groups, bias) ---------------------- */
static fm_status conv3d_geometry(fm_module *m, const fm_args *a, fm_conv3d_geometry *c,
                                 fm_error *err) {
    static const char *kn[3] = {"k0", "k1", "k2"}, *sn[3] = {"s0", "s1", "s2"};
    static const char *pn[3] = {"p0", "p1", "p2"}, *dn[3] = {"d0", "d1", "d2"};
    memset(c, 0, sizeof *c);
    c->in_channels = fm_args_int(a, "in", 0);
    c->out_channels = fm_args_int(a, "out", 0);
    c->groups = fm_args_int(a, "groups", 1);
    c->bias = fm_args_int(a, "bias", 1) != 0;
    for (int i = 0; i < 3; i++) {
        c->kernel[i] = fm_args_int(a, kn[i], 1);
        c->stride[i] = fm_args_int(a, sn[i], 1);
        c->padding[i] = fm_args_int(a, pn[i], 0);
        c->dilation[i] = fm_args_int(a, dn[i], 1);
        if (c->kernel[i] <= 0 || c->stride[i] <= 0 || c->dilation[i] <= 0 || c->padding[i] < 0)
            return fm_error_set(err, FM_ERR_CONFIG,
                                "module '%s': invalid Conv3d geometry on axis %d",
                                fm_module_path(m), i);
    }
    fm_status st = need_positive(m, "in_channels", c->in_channels, err);
    if (st == FM_OK) st = need_positive(m, "out_channels", c->out_channels, err);
    if (st == FM_OK) st = need_positive(m, "groups", c->groups, err);
    if (st == FM_OK && (c->in_channels % c->groups || c->out_channels % c->groups))
        st = fm_error_set(err, FM_ERR_CONFIG,
                          "module '%s': channels %lld/%lld not divisible by groups %lld",
                          fm_module_path(m), (long long)c->in_channels, (long long)c->out_channels,
                          (long long)c->groups);
    return st;
}

static fm_status conv3d_init(fm_module *m, fm_build_ctx *ctx, const fm_args *a, fm_error *err) {
    fm_conv3d_impl c;
    memset(&c, 0, sizeof c);
    fm_status st = conv3d_geometry(m, a, &c.g, err);
    if (st != FM_OK) return st;
    fm_shape w = {5,
                  {c.g.out_channels, c.g.in_channels / c.g.groups, c.g.kernel[0], c.g.kernel[1],
                   c.g.kernel[2]}};
    st = fm_module_add_param(m, "weight", fm_build_ctx_dtype(ctx), &w, err);
    if (st == FM_OK && c.g.bias) st = add_vec(m, "bias", c.g.out_channels, ctx, err);
    if (st == FM_OK) st = fm_module_set_impl_copy(m, &c, sizeof c, err);
    return st;
}

/* ---- LayerNorm(dim, eps = 1e-5): weight, bias; RMSNorm(dim, eps = 1e-6): weight ------------- */
static fm_status norm_init(fm_module *m, fm_build_ctx *ctx, const fm_args *a, bool with_bias,
                           double dflt_eps, fm_error *err) {
    fm_norm_impl n;
    memset(&n, 0, sizeof n);
    n.dim = fm_args_int(a, "dim", 0);
    n.eps = fm_args_double(a, "eps", dflt_eps);
    fm_status st = need_positive(m, "normalized_shape", n.dim, err);
    if (st == FM_OK && !(n.eps >= 0))
        st = fm_error_set(err, FM_ERR_CONFIG, "module '%s': eps must be >= 0, got %g",
                          fm_module_path(m), n.eps);
    if (st == FM_OK) st = add_vec(m, "weight", n.dim, ctx, err);
    if (st == FM_OK && with_bias) st = add_vec(m, "bias", n.dim, ctx, err);
    if (st == FM_OK) st = fm_module_set_impl_copy(m, &n, sizeof n, err);
    return st;
}
static fm_status layernorm_init(fm_module *m, fm_build_ctx *ctx, const fm_args *a, fm_error *err) {
    return norm_init(m, ctx, a, true, 1e-5, err);
}
static fm_status rmsnorm_init(fm_module *m, fm_build_ctx *ctx, const fm_args *a, fm_error *err) {
    return norm_init(m, ctx, a, false, 1e-6, err);
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

/* Activations: the class data is the fm_activation it computes. */
static const fm_activation act_quick_gelu = FM_ACTIVATION_QUICK_GELU, act_gelu = FM_ACTIVATION_GELU,
                           act_silu = FM_ACTIVATION_SILU, act_gelu_tanh = FM_ACTIVATION_GELU_TANH;
static fm_status act_init(fm_module *m, fm_build_ctx *ctx, const fm_args *a, fm_error *err) {
    return no_params_init(m, ctx, a, err);
}

const fm_module_class fm_class_linear = {"Linear",          linear_init,         fm_linear_prepare,
                                         fm_linear_forward, fm_linear_impl_free, NULL};
const fm_module_class fm_class_conv3d = {"Conv3d",          conv3d_init,         fm_conv3d_prepare,
                                         fm_conv3d_forward, fm_conv3d_impl_free, NULL};
const fm_module_class fm_class_layernorm = {
    "LayerNorm", layernorm_init, fm_norm_prepare, fm_layernorm_forward, fm_norm_impl_free, NULL};
const fm_module_class fm_class_rmsnorm = {"RMSNorm",          rmsnorm_init,      fm_norm_prepare,
                                          fm_rmsnorm_forward, fm_norm_impl_free, NULL};
const fm_module_class fm_class_embedding = {"Embedding",          embedding_init, NULL,
                                            fm_embedding_forward, NULL,           NULL};
const fm_module_class fm_class_module_list = {"ModuleList", no_params_init, NULL, NULL, NULL, NULL};
const fm_module_class fm_class_sequential = {"Sequential",          no_params_init, NULL,
                                             fm_sequential_forward, NULL,           NULL};

static const fm_module_class activation_classes[] = {
    {"QuickGELUActivation", act_init, NULL, fm_activation_forward, NULL, &act_quick_gelu},
    {"GELUActivation", act_init, NULL, fm_activation_forward, NULL, &act_gelu},
    {"GELU", act_init, NULL, fm_activation_forward, NULL, &act_gelu}, /* torch.nn.GELU() */
    {"SiLUActivation", act_init, NULL, fm_activation_forward, NULL, &act_silu},
    {"SiLU", act_init, NULL, fm_activation_forward, NULL, &act_silu}, /* torch.nn.SiLU() */
    {"GELUTanh", act_init, NULL, fm_activation_forward, NULL, &act_gelu_tanh},
};

/* ---- geometry accessors ------------------------------------------------------------------ */
fm_status fm_linear_geometry_of(const fm_module *m, fm_linear_geometry *out, fm_error *err) {
    const fm_linear_impl *li =
        m && fm_module_class_of(m)->init == linear_init ? fm_module_impl(m) : NULL;
    if (!li)
        return fm_error_set(err, FM_ERR_INVALID_ARG, "module '%s' is not a Linear",
                            m ? fm_module_path(m) : "?");
    *out = li->g;
    return FM_OK;
}

fm_status fm_conv3d_geometry_of(const fm_module *m, fm_conv3d_geometry *out, fm_error *err) {
    const fm_conv3d_impl *c =
        m && fm_module_class_of(m)->init == conv3d_init ? fm_module_impl(m) : NULL;
    if (!c)
        return fm_error_set(err, FM_ERR_INVALID_ARG, "module '%s' is not a Conv3d",
                            m ? fm_module_path(m) : "?");
    *out = c->g;
    return FM_OK;
}

bool fm_activation_of(const fm_module *m, fm_activation *kind) {
    const fm_module_class *c = m ? fm_module_class_of(m) : NULL;
    if (!c || c->init != act_init || !c->data) return false;
    *kind = *(const fm_activation *)c->data;
    return true;
}

bool fm_activation_from_name(const char *name, fm_activation *out) {
    static const struct {
        const char *name;
        fm_activation act;
    } map[] = {
        {"quick_gelu", FM_ACTIVATION_QUICK_GELU},
        {"gelu", FM_ACTIVATION_GELU},
        {"silu", FM_ACTIVATION_SILU},
        {"swish", FM_ACTIVATION_SILU},
        {"gelu_pytorch_tanh", FM_ACTIVATION_GELU_TANH},
        {"gelu_new", FM_ACTIVATION_GELU_TANH},
    };
    for (size_t i = 0; name && i < sizeof map / sizeof map[0]; i++)
        if (!strcmp(map[i].name, name)) return *out = map[i].act, true;
    return false;
}

const char *fm_activation_class_name(fm_activation a) {
    static const char *const names[FM_ACTIVATION_COUNT] = {"QuickGELUActivation", "GELUActivation",
                                                           "SiLUActivation", "GELUTanh"};
    return (unsigned)a < FM_ACTIVATION_COUNT ? names[a] : NULL;
}

/* ---- registration ------------------------------------------------------------------------- */
static const fm_module_class *const layer_classes[] = {
    &fm_class_linear,    &fm_class_conv3d,      &fm_class_layernorm,  &fm_class_rmsnorm,
    &fm_class_embedding, &fm_class_module_list, &fm_class_sequential,
};

static pthread_once_t builtins_once = PTHREAD_ONCE_INIT;
static fm_status builtins_status;
static fm_error builtins_err;

static void register_all(void) {
    fm_status st = FM_OK;
    for (size_t i = 0; st == FM_OK && i < sizeof layer_classes / sizeof *layer_classes; i++)
        st = fm_class_register_builtin(layer_classes[i], &builtins_err);
    for (size_t i = 0; st == FM_OK && i < sizeof activation_classes / sizeof *activation_classes;
         i++)
        st = fm_class_register_builtin(&activation_classes[i], &builtins_err);
    builtins_status = st;
}

fm_status fm_nn_register_builtins(fm_error *err) {
    pthread_once(&builtins_once, register_all);
    if (builtins_status != FM_OK && err) *err = builtins_err;
    return builtins_status;
}
