/* Qwen2-VL module classes with transformers' class names and attribute order, and the
 * builder (qwen2-vl.md §2). Every submodule is created through fm_module_create by class
 * name, so patches and fusion overrides apply before instantiation. */
#include <stdio.h>
#include <string.h>

#include "models/qwen2_vl/qwen2_vl.h"
#include "models/qwen2_vl/forward.h"
#include "nn/builtins.h"

#define CFG(ctx) ((const fm_qwen2vl_config *)fm_build_ctx_model_cfg(ctx))

/* Creates a child or returns the failure (inits below have `ctx` and `err` in scope). */
#define MK(parent, name, cls, args)                                                   \
    do {                                                                              \
        fm_status st_ = fm_module_create(ctx, parent, name, cls, args, NULL, err);    \
        if (st_ != FM_OK) return st_;                                                 \
    } while (0)

static const char *act_class(fm_act_kind k) {
    switch (k) {
    case FM_ACT_KIND_GELU: return "GELUActivation";
    case FM_ACT_KIND_SILU: return "SiLUActivation";
    case FM_ACT_KIND_GELU_TANH: return "GELUTanh";
    default: return "QuickGELUActivation";
    }
}

/* ---- vision ------------------------------------------------------------------------------- */
/* PatchEmbed(patch_size, temporal_patch_size, in_channels, embed_dim, bias=0):
 * proj = Conv3d(in, embed, kernel = stride = (T, P, P)). */
static fm_status patch_embed_init(fm_module *m, fm_build_ctx *ctx, const fm_args *a, fm_error *err) {
    int64_t P = fm_args_int(a, "patch_size", 14), T = fm_args_int(a, "temporal_patch_size", 2);
    MK(m, "proj", "Conv3d",
       &FM_ARGS(FM_I("in", fm_args_int(a, "in_channels", 3)), FM_I("out", fm_args_int(a, "embed_dim", 1152)),
                FM_I("k0", T), FM_I("k1", P), FM_I("k2", P), FM_I("s0", T), FM_I("s1", P), FM_I("s2", P),
                FM_I("bias", fm_args_int(a, "bias", 0))));
    return FM_OK;
}

static fm_status vision_attention_init(fm_module *m, fm_build_ctx *ctx, const fm_args *a, fm_error *err) {
    int64_t D = CFG(ctx)->v.embed_dim;
    (void)a;
    MK(m, "qkv", "Linear", &FM_ARGS(FM_I("in", D), FM_I("out", 3 * D), FM_I("bias", 1)));
    MK(m, "proj", "Linear", &FM_ARGS(FM_I("in", D), FM_I("out", D), FM_I("bias", 1)));
    return FM_OK;
}

static fm_status vision_mlp_init(fm_module *m, fm_build_ctx *ctx, const fm_args *a, fm_error *err) {
    const fm_qwen2vl_vision_config *v = &CFG(ctx)->v;
    (void)a;
    MK(m, "fc1", "Linear", &FM_ARGS(FM_I("in", v->embed_dim), FM_I("out", v->mlp_hidden)));
    MK(m, "act", act_class(v->act), NULL);
    MK(m, "fc2", "Linear", &FM_ARGS(FM_I("in", v->mlp_hidden), FM_I("out", v->embed_dim)));
    return FM_OK;
}

static fm_status vision_block_init(fm_module *m, fm_build_ctx *ctx, const fm_args *a, fm_error *err) {
    int64_t D = CFG(ctx)->v.embed_dim;
    (void)a;
    MK(m, "norm1", "LayerNorm", &FM_ARGS(FM_I("dim", D), FM_D("eps", 1e-6)));
    MK(m, "norm2", "LayerNorm", &FM_ARGS(FM_I("dim", D), FM_D("eps", 1e-6)));
    MK(m, "attn", "VisionAttention", NULL);
    MK(m, "mlp", "VisionMlp", NULL);
    return FM_OK;
}

/* PatchMerger(dim = out width, context_dim = embed, spatial_merge_size). */
static fm_status patch_merger_init(fm_module *m, fm_build_ctx *ctx, const fm_args *a, fm_error *err) {
    int64_t ctxd = fm_args_int(a, "context_dim", 0), ms = fm_args_int(a, "spatial_merge_size", 2);
    int64_t hid = ctxd * ms * ms, dim = fm_args_int(a, "dim", 0);
    fm_module *mlp = NULL;
    MK(m, "ln_q", "LayerNorm", &FM_ARGS(FM_I("dim", ctxd), FM_D("eps", 1e-6)));
    fm_status st = fm_module_create(ctx, m, "mlp", "Sequential", NULL, &mlp, err);
    if (st != FM_OK) return st;
    MK(mlp, "0", "Linear", &FM_ARGS(FM_I("in", hid), FM_I("out", hid)));
    MK(mlp, "1", "GELU", NULL);
    MK(mlp, "2", "Linear", &FM_ARGS(FM_I("in", hid), FM_I("out", dim)));
    return FM_OK;
}

static fm_status vision_tower_init(fm_module *m, fm_build_ctx *ctx, const fm_args *a, fm_error *err) {
    const fm_qwen2vl_vision_config *v = &CFG(ctx)->v;
    fm_module *blocks = NULL;
    (void)a;
    fm_status sti = fm_qwen2vl_tower_impl_new(m, v, err);
    if (sti != FM_OK) return sti;
    MK(m, "patch_embed", "PatchEmbed",
       &FM_ARGS(FM_I("patch_size", v->patch_size), FM_I("temporal_patch_size", v->temporal_patch_size),
                FM_I("in_channels", v->in_channels), FM_I("embed_dim", v->embed_dim)));
    MK(m, "rotary_pos_emb", "VisionRotaryEmbedding", NULL);
    fm_status st = fm_module_create(ctx, m, "blocks", "ModuleList", NULL, &blocks, err);
    for (int64_t i = 0; st == FM_OK && i < v->depth; i++) {
        char name[24];
        snprintf(name, sizeof name, "%lld", (long long)i);
        st = fm_module_create(ctx, blocks, name, "Qwen2VLVisionBlock", NULL, NULL, err);
    }
    if (st != FM_OK) return st;
    MK(m, "merger", "PatchMerger",
       &FM_ARGS(FM_I("dim", v->hidden_size), FM_I("context_dim", v->embed_dim),
                FM_I("spatial_merge_size", v->spatial_merge_size)));
    return FM_OK;
}

/* ---- text decoder ---------------------------------------------------------------------------- */
static fm_status text_attention_init(fm_module *m, fm_build_ctx *ctx, const fm_args *a, fm_error *err) {
    const fm_qwen2vl_text_config *t = &CFG(ctx)->t;
    int64_t hd = t->hidden_size / t->num_attention_heads;
    (void)a;
    MK(m, "q_proj", "Linear", &FM_ARGS(FM_I("in", t->hidden_size), FM_I("out", t->num_attention_heads * hd), FM_I("bias", 1)));
    MK(m, "k_proj", "Linear", &FM_ARGS(FM_I("in", t->hidden_size), FM_I("out", t->num_key_value_heads * hd), FM_I("bias", 1)));
    MK(m, "v_proj", "Linear", &FM_ARGS(FM_I("in", t->hidden_size), FM_I("out", t->num_key_value_heads * hd), FM_I("bias", 1)));
    MK(m, "o_proj", "Linear", &FM_ARGS(FM_I("in", t->num_attention_heads * hd), FM_I("out", t->hidden_size), FM_I("bias", 0)));
    return FM_OK;
}

static fm_status text_mlp_init(fm_module *m, fm_build_ctx *ctx, const fm_args *a, fm_error *err) {
    const fm_qwen2vl_text_config *t = &CFG(ctx)->t;
    (void)a;
    MK(m, "gate_proj", "Linear", &FM_ARGS(FM_I("in", t->hidden_size), FM_I("out", t->intermediate_size), FM_I("bias", 0)));
    MK(m, "up_proj", "Linear", &FM_ARGS(FM_I("in", t->hidden_size), FM_I("out", t->intermediate_size), FM_I("bias", 0)));
    MK(m, "down_proj", "Linear", &FM_ARGS(FM_I("in", t->intermediate_size), FM_I("out", t->hidden_size), FM_I("bias", 0)));
    MK(m, "act_fn", "SiLUActivation", NULL);
    return FM_OK;
}

static fm_status decoder_layer_init(fm_module *m, fm_build_ctx *ctx, const fm_args *a, fm_error *err) {
    const fm_qwen2vl_text_config *t = &CFG(ctx)->t;
    (void)a;
    MK(m, "self_attn", "Qwen2VLAttention", NULL);
    MK(m, "mlp", "Qwen2MLP", NULL);
    MK(m, "input_layernorm", "Qwen2RMSNorm", &FM_ARGS(FM_I("dim", t->hidden_size), FM_D("eps", t->rms_norm_eps)));
    MK(m, "post_attention_layernorm", "Qwen2RMSNorm", &FM_ARGS(FM_I("dim", t->hidden_size), FM_D("eps", t->rms_norm_eps)));
    return FM_OK;
}

static fm_status text_model_init(fm_module *m, fm_build_ctx *ctx, const fm_args *a, fm_error *err) {
    const fm_qwen2vl_text_config *t = &CFG(ctx)->t;
    fm_module *layers = NULL;
    (void)a;
    MK(m, "embed_tokens", "Embedding", &FM_ARGS(FM_I("num", t->vocab_size), FM_I("dim", t->hidden_size)));
    fm_status st = fm_module_create(ctx, m, "layers", "ModuleList", NULL, &layers, err);
    for (int64_t i = 0; st == FM_OK && i < t->num_hidden_layers; i++) {
        char name[24];
        snprintf(name, sizeof name, "%lld", (long long)i);
        st = fm_module_create(ctx, layers, name, "Qwen2VLDecoderLayer", NULL, NULL, err);
    }
    if (st != FM_OK) return st;
    MK(m, "norm", "Qwen2RMSNorm", &FM_ARGS(FM_I("dim", t->hidden_size), FM_D("eps", t->rms_norm_eps)));
    MK(m, "rotary_emb", "Qwen2VLRotaryEmbedding", NULL);
    return FM_OK;
}

/* ---- top level ------------------------------------------------------------------------------ */
static fm_status vl_model_init(fm_module *m, fm_build_ctx *ctx, const fm_args *a, fm_error *err) {
    (void)a;
    MK(m, "visual", "Qwen2VisionTransformerPretrainedModel", NULL);
    MK(m, "language_model", "Qwen2VLTextModel", NULL);
    return FM_OK;
}

static fm_status for_cg_init(fm_module *m, fm_build_ctx *ctx, const fm_args *a, fm_error *err) {
    const fm_qwen2vl_text_config *t = &CFG(ctx)->t;
    (void)a;
    MK(m, "model", "Qwen2VLModel", NULL);
    MK(m, "lm_head", "Linear", &FM_ARGS(FM_I("in", t->hidden_size), FM_I("out", t->vocab_size), FM_I("bias", 0)));
    return FM_OK;
}

static fm_status no_params(fm_module *m, fm_build_ctx *ctx, const fm_args *a, fm_error *err) {
    (void)m, (void)ctx, (void)a, (void)err;
    return FM_OK;
}

const fm_module_class fm_class_patch_embed = {"PatchEmbed", patch_embed_init, fm_qwen2vl_patch_embed_forward, NULL, NULL};
const fm_module_class fm_class_vision_tower = {"Qwen2VisionTransformerPretrainedModel", vision_tower_init,
                                               fm_qwen2vl_tower_forward, fm_qwen2vl_tower_impl_free, NULL};

static const fm_module_class qwen_classes[] = {
    {"VisionRotaryEmbedding", no_params, NULL, NULL, NULL},
    {"VisionAttention", vision_attention_init, NULL, NULL, NULL},
    {"VisionMlp", vision_mlp_init, NULL, NULL, NULL},
    {"Qwen2VLVisionBlock", vision_block_init, NULL, NULL, NULL},
    {"PatchMerger", patch_merger_init, NULL, NULL, NULL},
    {"GELUActivation", no_params, NULL, NULL, NULL},
    {"GELUTanh", no_params, NULL, NULL, NULL},
    {"Qwen2VLAttention", text_attention_init, NULL, NULL, NULL},
    {"Qwen2MLP", text_mlp_init, NULL, NULL, NULL},
    {"Qwen2VLDecoderLayer", decoder_layer_init, NULL, NULL, NULL},
    {"Qwen2VLRotaryEmbedding", no_params, NULL, NULL, NULL},
    {"Qwen2VLTextModel", text_model_init, NULL, NULL, NULL},
    {"Qwen2VLModel", vl_model_init, NULL, NULL, NULL},
    {"Qwen2VLForConditionalGeneration", for_cg_init, NULL, NULL, NULL},
};

/* ---- builder ------------------------------------------------------------------------------ */
static fm_status qwen2vl_build(fm_build_ctx *ctx, const void *cfg, fm_module **root, fm_error *err) {
    (void)cfg;
    return fm_module_create(ctx, NULL, "", "Qwen2VLForConditionalGeneration", NULL, root, err);
}

static const char *qwen2vl_tied_to(const void *cfg, const char *param) {
    const fm_qwen2vl_config *c = cfg;
    if (c->tie_word_embeddings && !strcmp(param, "lm_head.weight"))
        return "model.language_model.embed_tokens.weight";
    return NULL;
}

const fm_model_builder fm_qwen2vl_builder = {
    "qwen2_vl", "Qwen2VLForConditionalGeneration", fm_qwen2vl_parse_config, fm_free, qwen2vl_build,
    qwen2vl_tied_to,
};

void fm_models_register_builtin_classes(void) {
    for (size_t i = 0; i < sizeof qwen_classes / sizeof *qwen_classes; i++)
        fm_class_register(&qwen_classes[i], false, NULL);
    fm_class_register(&fm_class_patch_embed, false, NULL);
    fm_class_register(&fm_class_vision_tower, false, NULL);
    fm_model_builder_register(&fm_qwen2vl_builder, false, NULL);
}
