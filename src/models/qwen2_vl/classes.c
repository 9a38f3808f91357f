/* Qwen2-VL module classes of the text decoder and the top level with transformers' class names
 * and attribute order, the builder, and the architecture's registration (qwen2-vl.md §2).
 * Every submodule is created through fm_module_create by class name, so patches and fusion
 * overrides apply before instantiation. The vision tower's classes are in vision.c. */
#include <stdio.h>
#include <string.h>

#include "models/qwen2_vl/qwen2_vl.h"

#define CFG(ctx) ((const fm_qwen2vl_config *)fm_build_ctx_model_cfg(ctx))

/* Creates a child or returns the failure (inits below have `ctx` and `err` in scope). */
#define MK(parent, name, cls, args)                                                                \
    do {                                                                                           \
        fm_status st_ = fm_module_create(ctx, parent, name, cls, args, NULL, err);                 \
        if (st_ != FM_OK) return st_;                                                              \
    } while (0)

/* ---- text decoder ---------------------------------------------------------------------------- */
static fm_status text_attention_init(fm_module *m, fm_build_ctx *ctx, const fm_args *a,
                                     fm_error *err) {
    const fm_qwen2vl_text_config *t = &CFG(ctx)->t;
    int64_t hd = t->hidden_size / t->num_attention_heads;
    (void)a;
    MK(m, "q_proj", "Linear",
       &FM_ARGS(FM_I("in", t->hidden_size), FM_I("out", t->num_attention_heads * hd),
                FM_I("bias", 1)));
    MK(m, "k_proj", "Linear",
       &FM_ARGS(FM_I("in", t->hidden_size), FM_I("out", t->num_key_value_heads * hd),
                FM_I("bias", 1)));
    MK(m, "v_proj", "Linear",
       &FM_ARGS(FM_I("in", t->hidden_size), FM_I("out", t->num_key_value_heads * hd),
                FM_I("bias", 1)));
    MK(m, "o_proj", "Linear",
       &FM_ARGS(FM_I("in", t->num_attention_heads * hd), FM_I("out", t->hidden_size),
                FM_I("bias", 0)));
    return FM_OK;
}

static fm_status text_mlp_init(fm_module *m, fm_build_ctx *ctx, const fm_args *a, fm_error *err) {
    const fm_qwen2vl_text_config *t = &CFG(ctx)->t;
    (void)a;
    MK(m, "gate_proj", "Linear",
       &FM_ARGS(FM_I("in", t->hidden_size), FM_I("out", t->intermediate_size), FM_I("bias", 0)));
    MK(m, "up_proj", "Linear",
       &FM_ARGS(FM_I("in", t->hidden_size), FM_I("out", t->intermediate_size), FM_I("bias", 0)));
    MK(m, "down_proj", "Linear",
       &FM_ARGS(FM_I("in", t->intermediate_size), FM_I("out", t->hidden_size), FM_I("bias", 0)));
    MK(m, "act_fn", "SiLUActivation", NULL);
    return FM_OK;
}

static fm_status decoder_layer_init(fm_module *m, fm_build_ctx *ctx, const fm_args *a,
                                    fm_error *err) {
    const fm_qwen2vl_text_config *t = &CFG(ctx)->t;
    (void)a;
    MK(m, "self_attn", "Qwen2VLAttention", NULL);
    MK(m, "mlp", "Qwen2MLP", NULL);
    MK(m, "input_layernorm", "Qwen2RMSNorm",
       &FM_ARGS(FM_I("dim", t->hidden_size), FM_D("eps", t->rms_norm_eps)));
    MK(m, "post_attention_layernorm", "Qwen2RMSNorm",
       &FM_ARGS(FM_I("dim", t->hidden_size), FM_D("eps", t->rms_norm_eps)));
    return FM_OK;
}

static fm_status text_model_init(fm_module *m, fm_build_ctx *ctx, const fm_args *a, fm_error *err) {
    const fm_qwen2vl_text_config *t = &CFG(ctx)->t;
    fm_module *layers = NULL;
    (void)a;
    MK(m, "embed_tokens", "Embedding",
       &FM_ARGS(FM_I("num", t->vocab_size), FM_I("dim", t->hidden_size)));
    fm_status st = fm_module_create(ctx, m, "layers", "ModuleList", NULL, &layers, err);
    for (int64_t i = 0; st == FM_OK && i < t->num_hidden_layers; i++) {
        char name[24];
        snprintf(name, sizeof name, "%lld", (long long)i);
        st = fm_module_create(ctx, layers, name, "Qwen2VLDecoderLayer", NULL, NULL, err);
    }
    if (st != FM_OK) return st;
    MK(m, "norm", "Qwen2RMSNorm",
       &FM_ARGS(FM_I("dim", t->hidden_size), FM_D("eps", t->rms_norm_eps)));
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
    MK(m, "lm_head", "Linear",
       &FM_ARGS(FM_I("in", t->hidden_size), FM_I("out", t->vocab_size), FM_I("bias", 0)));
    return FM_OK;
}

static fm_status no_params(fm_module *m, fm_build_ctx *ctx, const fm_args *a, fm_error *err) {
    (void)m, (void)ctx, (void)a, (void)err;
    return FM_OK;
}

static const fm_module_class qwen_classes[] = {
    {"Qwen2VLAttention", text_attention_init, NULL, NULL, NULL, NULL},
    {"Qwen2MLP", text_mlp_init, NULL, NULL, NULL, NULL},
    {"Qwen2VLDecoderLayer", decoder_layer_init, NULL, NULL, NULL, NULL},
    {"Qwen2VLRotaryEmbedding", no_params, NULL, NULL, NULL, NULL},
    {"Qwen2VLTextModel", text_model_init, NULL, NULL, NULL, NULL},
    {"Qwen2VLModel", vl_model_init, NULL, NULL, NULL, NULL},
    {"Qwen2VLForConditionalGeneration", for_cg_init, NULL, NULL, NULL, NULL},
};

/* ---- builder ------------------------------------------------------------------------------ */
static fm_status qwen2vl_build(fm_build_ctx *ctx, const void *cfg, fm_module **root,
                               fm_error *err) {
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
    .model_type = "qwen2_vl",
    .architecture = "Qwen2VLForConditionalGeneration",
    .parse_config = fm_qwen2vl_parse_config,
    .free_config = fm_free,
    .build = qwen2vl_build,
    .tied_to = qwen2vl_tied_to,
    .vision_tower = "model.visual",
};

fm_status fm_qwen2vl_register(fm_error *err) {
    fm_status st = fm_class_register_alias("Qwen2RMSNorm", "RMSNorm", false, err);
    for (size_t i = 0; st == FM_OK && i < sizeof qwen_classes / sizeof *qwen_classes; i++)
        st = fm_class_register(&qwen_classes[i], false, err);
    if (st == FM_OK) st = fm_qwen2vl_register_vision_classes(err);
    if (st == FM_OK) st = fm_qwen2vl_register_mapping(err);
    if (st == FM_OK) st = fm_model_builder_register(&fm_qwen2vl_builder, false, err);
    return st;
}
