/* Qwen2-VL module classes of the text decoder and the top level with transformers' class names
 * and attribute order, the builder, and the architecture's registration (qwen2-vl.md §2).
 * Every submodule is created through fm_module_create by class name, so patches and fusion
 * overrides apply before instantiation. The vision tower's classes are in vision.c. */
#include <stdio.h>
#include <string.h>

#include "fusemap/qwen2_vl.h"

#include "models/build_util.h"
#include "models/qwen2_vl/qwen2_vl.h"

#define CFG(ctx) ((const fm_qwen2vl_config *)fm_build_ctx_model_cfg(ctx))

/* ---- text decoder: the shared Qwen2 decoder under Qwen2-VL's class names -------------------- */
static const fm_qwen2_class_names names = {
    .attention = "Qwen2VLAttention",
    .mlp = "Qwen2MLP",
    .decoder_layer = "Qwen2VLDecoderLayer",
    .rotary = "Qwen2VLRotaryEmbedding",
    .text_model = "Qwen2VLTextModel",
    .rmsnorm = "Qwen2RMSNorm",
};

static fm_status text_attention_init(fm_module *m, fm_build_ctx *ctx, const fm_args *a,
                                     fm_error *err) {
    (void)a;
    return fm_qwen2_attention_init(m, ctx, &CFG(ctx)->t, &names, err);
}
static fm_status text_mlp_init(fm_module *m, fm_build_ctx *ctx, const fm_args *a, fm_error *err) {
    (void)a;
    return fm_qwen2_mlp_init(m, ctx, &CFG(ctx)->t, err);
}
static fm_status decoder_layer_init(fm_module *m, fm_build_ctx *ctx, const fm_args *a,
                                    fm_error *err) {
    (void)a;
    return fm_qwen2_decoder_layer_init(m, ctx, &CFG(ctx)->t, &names, err);
}
static fm_status rotary_init(fm_module *m, fm_build_ctx *ctx, const fm_args *a, fm_error *err) {
    (void)a;
    return fm_qwen2_rotary_init(m, &CFG(ctx)->t, err);
}
static fm_status text_model_init(fm_module *m, fm_build_ctx *ctx, const fm_args *a, fm_error *err) {
    (void)a;
    return fm_qwen2_text_model_init(m, ctx, &CFG(ctx)->t, &names, err);
}

/* ---- top level ------------------------------------------------------------------------------ */
typedef struct vl_impl {
    int64_t image_token_id, hidden;
} vl_impl;

fm_status fm_qwen2vl_model_init(fm_module *m, fm_build_ctx *ctx, const char *visual_class,
                                const char *lm_class, fm_error *err) {
    MK(m, "visual", visual_class, NULL);
    MK(m, "language_model", lm_class, NULL);
    vl_impl *v = fm_malloc(sizeof *v);
    if (!v)
        return fm_error_set(err, FM_ERR_NOMEM, "out of memory building '%s'", fm_module_path(m));
    *v = (vl_impl){CFG(ctx)->t.image_token_id, CFG(ctx)->t.hidden_size};
    fm_module_set_impl(m, v);
    return FM_OK;
}

/* Qwen2VLModel: {ids I64 [T], pos3 I64 [3][T], image_embeds F32 [k][H], cache, rows} -> hidden
 * [T][H]: embed the ids, write the image features at the image tokens, run the language model. The
 * vision tower runs separately (fm_model_vision_forward), so image features are computed once
 * per image whatever the number of decoding steps. */
fm_status fm_qwen2vl_model_forward(fm_module *self, fm_run_ctx *rc, const fm_tensor *in,
                                   size_t n_in, fm_tensor *out, size_t n_out, fm_error *err) {
    const vl_impl *v = fm_module_impl(self);
    fm_module *lm = fm_module_child_named(self, "language_model");
    fm_status st = fm_module_check_input(self, in, n_in, 0, FM_DTYPE_I64, 1, -1, err);
    if (st == FM_OK && n_in < 5)
        st = fm_error_set(err, FM_ERR_INPUT,
                          "module '%s': needs ids, positions, image features, cache, rows",
                          fm_module_path(self));
    if (st != FM_OK || n_out < 1)
        return st != FM_OK ? st : fm_error_set(err, FM_ERR_INVALID_ARG, "one output");
    fm_shape hs = {2, {in[0].shape.dims[0], v->hidden}};
    st = fm_module_output(self, rc, &out[0], FM_DTYPE_F32, &hs, err);
    size_t mark = fm_run_mark(rc);
    fm_tensor emb = {0};
    const fm_tensor *img = in[2].shape.ndim == 2 && in[2].shape.dims[0] > 0 ? &in[2] : NULL;
    if (st == FM_OK)
        st = fm_qwen2_embed_with_images(fm_module_child_named(lm, "embed_tokens"), rc, &in[0], img,
                                        v->image_token_id, &emb, err);
    fm_tensor lin[4] = {emb, in[1], in[3], in[4]};
    if (st == FM_OK) st = fm_module_forward(lm, rc, lin, 4, &out[0], 1, err);
    fm_run_release(rc, mark);
    return st;
}

fm_status fm_qwen2vl_for_cg_init(fm_module *m, fm_build_ctx *ctx, const char *model_class,
                                 fm_error *err) {
    const fm_qwen2_text_config *t = &CFG(ctx)->t;
    MK(m, "model", model_class, NULL);
    MK(m, "lm_head", "Linear",
       &FM_ARGS(FM_I("in", t->hidden_size), FM_I("out", t->vocab_size), FM_I("bias", 0)));
    return FM_OK;
}

/* Qwen2VLForConditionalGeneration: the model's inputs + logit_rows I32 [R] -> logits F32 [R][V]
 * (lm_head only on the rows asked for: during generation, the last row of each sequence). */
fm_status fm_qwen2vl_for_cg_forward(fm_module *self, fm_run_ctx *rc, const fm_tensor *in,
                                    size_t n_in, fm_tensor *out, size_t n_out, fm_error *err) {
    fm_module *head = fm_module_child_named(self, "lm_head");
    fm_linear_geometry g;
    fm_status st = fm_linear_geometry_of(head, &g, err);
    if (st == FM_OK) st = fm_module_check_input(self, in, n_in, 5, FM_DTYPE_I32, 1, -1, err);
    if (st == FM_OK && n_in > 6 && fm_tensor_numel(&in[6]) > 0)
        st = fm_error_set(err, FM_ERR_INPUT, "%s has no DeepStack layers: no DeepStack features",
                          fm_module_class_of(self)->name);
    if (st != FM_OK || n_out < 1)
        return st != FM_OK ? st : fm_error_set(err, FM_ERR_INVALID_ARG, "one output");
    int64_t r = in[5].shape.dims[0], t = in[0].shape.dims[0];
    fm_shape ls = {2, {r, g.out_features}}, ss = {2, {r, g.in_features}};
    st = fm_module_output(self, rc, &out[0], FM_DTYPE_F32, &ls, err);
    size_t mark = fm_run_mark(rc);
    fm_tensor h = {0}, sel = {0};
    if (st == FM_OK)
        st = fm_module_forward(fm_module_child_named(self, "model"), rc, in, 5, &h, 1, err);
    if (st == FM_OK) st = fm_run_tensor(rc, FM_DTYPE_F32, &ss, &sel, err);
    const int32_t *rows = in[5].data;
    for (int64_t i = 0; st == FM_OK && i < r; i++) {
        if (rows[i] < 0 || rows[i] >= t)
            st = fm_error_set(err, FM_ERR_INPUT, "logit row %d outside the %lld rows", rows[i],
                              (long long)t);
        else
            memcpy((float *)sel.data + i * g.in_features, (float *)h.data + rows[i] * g.in_features,
                   (size_t)g.in_features * sizeof(float));
    }
    if (st == FM_OK) st = fm_module_forward(head, rc, &sel, 1, &out[0], 1, err);
    fm_run_release(rc, mark);
    return st;
}

static fm_status vl_model_init(fm_module *m, fm_build_ctx *ctx, const fm_args *a, fm_error *err) {
    (void)a;
    return fm_qwen2vl_model_init(m, ctx, "Qwen2VisionTransformerPretrainedModel",
                                 "Qwen2VLTextModel", err);
}

static fm_status for_cg_init(fm_module *m, fm_build_ctx *ctx, const fm_args *a, fm_error *err) {
    (void)a;
    return fm_qwen2vl_for_cg_init(m, ctx, "Qwen2VLModel", err);
}

static const fm_module_class qwen_classes[] = {
    {"Qwen2VLAttention", text_attention_init, NULL, fm_qwen2_attention_forward, fm_free, NULL},
    {"Qwen2MLP", text_mlp_init, NULL, fm_qwen2_mlp_forward, NULL, NULL},
    {"Qwen2VLDecoderLayer", decoder_layer_init, NULL, fm_qwen2_decoder_layer_forward, NULL, NULL},
    {"Qwen2VLRotaryEmbedding", rotary_init, NULL, fm_qwen2_rotary_forward, fm_free, NULL},
    {"Qwen2VLTextModel", text_model_init, NULL, fm_qwen2_text_model_forward, fm_free, NULL},
    {"Qwen2VLModel", vl_model_init, NULL, fm_qwen2vl_model_forward, fm_free, NULL},
    {"Qwen2VLForConditionalGeneration", for_cg_init, NULL, fm_qwen2vl_for_cg_forward, NULL, NULL},
};

/* ---- builder ------------------------------------------------------------------------------ */
static fm_status qwen2vl_build(fm_build_ctx *ctx, const void *cfg, fm_module **root,
                               fm_error *err) {
    (void)cfg;
    return fm_module_create(ctx, NULL, "", "Qwen2VLForConditionalGeneration", NULL, root, err);
}

const char *fm_qwen2vl_tied_to(const void *cfg, const char *param) {
    const fm_qwen2vl_config *c = cfg;
    if (c->tie_word_embeddings && !strcmp(param, "lm_head.weight"))
        return "model.language_model.embed_tokens.weight";
    return NULL;
}

/* The image processor with DIR/preprocessor_config.json (defaults when absent). */
fm_status fm_qwen2vl_preprocess_dir(const char *dir, const fm_image *imgs, size_t n, fm_tensor *pv,
                                    fm_tensor *grid, fm_error *err) {
    fm_qwen2vl_preproc_params p;
    fm_status st = fm_qwen2vl_preproc_params_load(dir, &p, NULL, err);
    if (st == FM_OK) st = fm_qwen2vl_preprocess(imgs, n, &p, pv, grid, err);
    return st;
}

void fm_qwen2vl_text_lm_info(const fm_qwen2_text_config *t, int64_t merge, fm_lm_info *o) {
    *o = (fm_lm_info){.layers = t->num_hidden_layers,
                      .kv_heads = t->num_key_value_heads,
                      .head_dim = t->head_dim,
                      .hidden = t->hidden_size,
                      .vocab = t->vocab_size,
                      .max_positions = t->max_position_embeddings,
                      .image_token_id = t->image_token_id,
                      .vision_start_token_id = t->vision_start_token_id,
                      .vision_end_token_id = t->vision_end_token_id,
                      .spatial_merge_size = merge};
    for (int i = 0; i < t->n_eos && i < FM_LM_MAX_EOS; i++)
        o->eos[o->n_eos++] = t->eos[i];
}

void fm_qwen2vl_lm_info(const void *cfg, fm_lm_info *o) {
    const fm_qwen2vl_config *c = cfg;
    fm_qwen2vl_text_lm_info(&c->t, c->v.spatial_merge_size, o);
}

static fm_status qwen2vl_rope(const void *cfg, const int64_t *ids, int64_t n, const int64_t *grid,
                              int64_t n_images, int64_t *pos3, int64_t *next, fm_error *err) {
    const fm_qwen2vl_config *c = cfg;
    return fm_qwen2vl_rope_index(&c->t, c->v.spatial_merge_size, ids, n, grid, n_images, pos3, next,
                                 err);
}

const fm_model_builder fm_qwen2vl_builder = {
    .model_type = "qwen2_vl",
    .architecture = "Qwen2VLForConditionalGeneration",
    .parse_config = fm_qwen2vl_parse_config,
    .free_config = fm_free,
    .build = qwen2vl_build,
    .tied_to = fm_qwen2vl_tied_to,
    .preprocess_images = fm_qwen2vl_preprocess_dir,
    .lm_info = fm_qwen2vl_lm_info,
    .rope_index = qwen2vl_rope,
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
