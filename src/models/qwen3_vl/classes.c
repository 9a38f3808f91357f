/* Qwen3-VL module classes of the text decoder and the top level with transformers' class names
 * and attribute order, the builder, and the architecture's registration
 * (qwen2_5-vl-and-qwen3-vl.md §2.3-2.5, §5.2). The decoder is the shared Qwen2-family decoder
 * (models/qwen2) configured as Qwen3: q_norm/k_norm, no q/k/v bias, head_dim from the config,
 * interleaved M-RoPE, DeepStack features added after the first layers. The vision tower's
 * classes are in vision.c. */
#include <stdio.h>
#include <string.h>

#include "fusemap/qwen2_vl.h"
#include "fusemap/qwen3_vl.h"

#include "models/build_util.h"
#include "models/qwen2_vl/qwen2_vl.h"
#include "models/qwen3_vl/qwen3_vl.h"

#define CFG(ctx) ((const fm_qwen3vl_config *)fm_build_ctx_model_cfg(ctx))

/* ---- text decoder: the shared decoder under Qwen3-VL's class names ----------------------------
 */
static const fm_qwen2_class_names names = {
    .attention = "Qwen3VLTextAttention",
    .mlp = "Qwen3VLTextMLP",
    .decoder_layer = "Qwen3VLTextDecoderLayer",
    .rotary = "Qwen3VLTextRotaryEmbedding",
    .text_model = "Qwen3VLTextModel",
    .rmsnorm = "Qwen3VLTextRMSNorm",
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
    int64_t image_token_id, hidden, deepstack; /* deepstack = K, features per image token */
} vl_impl;

static fm_status vl_model_init(fm_module *m, fm_build_ctx *ctx, const fm_args *a, fm_error *err) {
    (void)a;
    MK(m, "visual", "Qwen3VLVisionModel", NULL);
    MK(m, "language_model", "Qwen3VLTextModel", NULL);
    vl_impl *v = fm_malloc(sizeof *v);
    if (!v)
        return fm_error_set(err, FM_ERR_NOMEM, "out of memory building '%s'", fm_module_path(m));
    *v = (vl_impl){CFG(ctx)->t.image_token_id, CFG(ctx)->t.hidden_size, CFG(ctx)->v.n_deepstack};
    fm_module_set_impl(m, v);
    return FM_OK;
}

/* The DeepStack input beside k image features: absent (NULL) only when there is nothing to add
 * (no image rows or a model without DeepStack layers); else F32 [K][k][H]. */
static fm_status check_deepstack(const fm_module *self, const vl_impl *v, const fm_tensor *img,
                                 const fm_tensor *ds, fm_error *err) {
    int64_t k = img ? img->shape.dims[0] : 0;
    bool given = ds && ds->shape.ndim >= 1 && fm_tensor_numel(ds) > 0;
    if (!given && (k == 0 || v->deepstack == 0)) return FM_OK;
    if (!given)
        return fm_error_set(err, FM_ERR_INPUT,
                            "module '%s': %lld image features without their DeepStack features "
                            "F32 [%lld][%lld][%lld] (fm_model_vision_features gives both)",
                            fm_module_path(self), (long long)k, (long long)v->deepstack,
                            (long long)k, (long long)v->hidden);
    if (ds->dtype != FM_DTYPE_F32 || ds->shape.ndim != 3 || ds->shape.dims[0] != v->deepstack ||
        ds->shape.dims[1] != k || ds->shape.dims[2] != v->hidden || !ds->data) {
        char s[128];
        return fm_error_set(err, FM_ERR_INPUT,
                            "module '%s': DeepStack features are %s %s, expected F32 "
                            "[%lld][%lld][%lld]",
                            fm_module_path(self), fm_dtype_name(ds->dtype),
                            fm_shape_format(&ds->shape, s, sizeof s), (long long)v->deepstack,
                            (long long)k, (long long)v->hidden);
    }
    return FM_OK;
}

/* Rows of ids [T] holding image_token_id, ascending, into scratch (the visual positions). */
static fm_status visual_rows(fm_run_ctx *rc, const fm_tensor *ids, int64_t token, int64_t k,
                             fm_tensor *out, fm_error *err) {
    fm_shape s = {1, {k}};
    fm_status st = fm_run_tensor(rc, FM_DTYPE_I64, &s, out, err);
    const int64_t *id = ids->data;
    int64_t *r = out->data;
    for (int64_t i = 0, j = 0; st == FM_OK && i < ids->shape.dims[0]; i++)
        if (id[i] == token && j < k) r[j++] = i;
    return st;
}

/* Qwen3VLModel: {ids I64 [T], pos3 I64 [3][T], image_embeds F32 [k][H], cache, rows,
 * [deepstack F32 [K][k][H]]} -> hidden [T][H]: embed the ids, write the image features at the
 * image tokens, run the language model with the DeepStack features at the same rows. The vision
 * tower runs separately (fm_model_vision_features), once per image. */
static fm_status vl_model_forward(fm_module *self, fm_run_ctx *rc, const fm_tensor *in, size_t n_in,
                                  fm_tensor *out, size_t n_out, fm_error *err) {
    const vl_impl *v = fm_module_impl(self);
    fm_module *lm = fm_module_child_named(self, "language_model");
    fm_status st = fm_module_check_input(self, in, n_in, 0, FM_DTYPE_I64, 1, -1, err);
    if (st == FM_OK && n_in < 5)
        st = fm_error_set(err, FM_ERR_INPUT,
                          "module '%s': needs ids, positions, image features, cache, rows",
                          fm_module_path(self));
    const fm_tensor *img = st == FM_OK && in[2].shape.ndim == 2 && in[2].shape.dims[0] > 0 ? &in[2]
                                                                                           : NULL,
                    *ds = n_in > 5 ? &in[5] : NULL;
    if (st == FM_OK) st = check_deepstack(self, v, img, ds, err);
    if (st != FM_OK || n_out < 1)
        return st != FM_OK ? st : fm_error_set(err, FM_ERR_INVALID_ARG, "one output");
    fm_shape hs = {2, {in[0].shape.dims[0], v->hidden}};
    st = fm_module_output(self, rc, &out[0], FM_DTYPE_F32, &hs, err);
    size_t mark = fm_run_mark(rc);
    fm_tensor emb = {0}, rows = {0};
    if (st == FM_OK)
        st = fm_qwen2_embed_with_images(fm_module_child_named(lm, "embed_tokens"), rc, &in[0], img,
                                        v->image_token_id, &emb, err);
    bool with_ds = st == FM_OK && img && v->deepstack > 0;
    if (with_ds) st = visual_rows(rc, &in[0], v->image_token_id, img->shape.dims[0], &rows, err);
    fm_tensor lin[6] = {emb, in[1], in[3], in[4], rows, with_ds ? *ds : (fm_tensor){0}};
    if (st == FM_OK) st = fm_module_forward(lm, rc, lin, with_ds ? 6 : 4, &out[0], 1, err);
    fm_run_release(rc, mark);
    return st;
}

static fm_status for_cg_init(fm_module *m, fm_build_ctx *ctx, const fm_args *a, fm_error *err) {
    const fm_qwen2_text_config *t = &CFG(ctx)->t;
    (void)a;
    MK(m, "model", "Qwen3VLModel", NULL);
    MK(m, "lm_head", "Linear",
       &FM_ARGS(FM_I("in", t->hidden_size), FM_I("out", t->vocab_size), FM_I("bias", 0)));
    return FM_OK;
}

/* Qwen3VLForConditionalGeneration: {ids, pos3, image_embeds, cache, rows, logit_rows I32 [R],
 * [deepstack F32 [K][k][H]]} -> logits F32 [R][V] (lm_head only on the rows asked for). */
static fm_status for_cg_forward(fm_module *self, fm_run_ctx *rc, const fm_tensor *in, size_t n_in,
                                fm_tensor *out, size_t n_out, fm_error *err) {
    fm_module *head = fm_module_child_named(self, "lm_head");
    fm_linear_geometry g;
    fm_status st = fm_linear_geometry_of(head, &g, err);
    if (st == FM_OK) st = fm_module_check_input(self, in, n_in, 5, FM_DTYPE_I32, 1, -1, err);
    if (st != FM_OK || n_out < 1)
        return st != FM_OK ? st : fm_error_set(err, FM_ERR_INVALID_ARG, "one output");
    int64_t r = in[5].shape.dims[0], t = in[0].shape.dims[0];
    fm_shape ls = {2, {r, g.out_features}}, ss = {2, {r, g.in_features}};
    st = fm_module_output(self, rc, &out[0], FM_DTYPE_F32, &ls, err);
    size_t mark = fm_run_mark(rc);
    fm_tensor h = {0}, sel = {0};
    fm_tensor min[6] = {in[0], in[1], in[2], in[3], in[4], n_in > 6 ? in[6] : (fm_tensor){0}};
    if (st == FM_OK)
        st = fm_module_forward(fm_module_child_named(self, "model"), rc, min, n_in > 6 ? 6 : 5, &h,
                               1, err);
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

static const fm_module_class qwen3_classes[] = {
    {"Qwen3VLTextAttention", text_attention_init, NULL, fm_qwen2_attention_forward, fm_free, NULL},
    {"Qwen3VLTextMLP", text_mlp_init, NULL, fm_qwen2_mlp_forward, NULL, NULL},
    {"Qwen3VLTextDecoderLayer", decoder_layer_init, NULL, fm_qwen2_decoder_layer_forward, NULL,
     NULL},
    {"Qwen3VLTextRotaryEmbedding", rotary_init, NULL, fm_qwen2_rotary_forward, fm_free, NULL},
    {"Qwen3VLTextModel", text_model_init, NULL, fm_qwen2_text_model_forward, fm_free, NULL},
    {"Qwen3VLModel", vl_model_init, NULL, vl_model_forward, fm_free, NULL},
    {"Qwen3VLForConditionalGeneration", for_cg_init, NULL, for_cg_forward, NULL, NULL},
};

/* ---- builder ------------------------------------------------------------------------------ */
static fm_status qwen3vl_build(fm_build_ctx *ctx, const void *cfg, fm_module **root,
                               fm_error *err) {
    (void)cfg;
    return fm_module_create(ctx, NULL, "", "Qwen3VLForConditionalGeneration", NULL, root, err);
}

static const char *qwen3vl_tied_to(const void *cfg, const char *param) {
    const fm_qwen3vl_config *c = cfg;
    if (c->tie_word_embeddings && !strcmp(param, "lm_head.weight"))
        return "model.language_model.embed_tokens.weight";
    return NULL;
}

/* Qwen3-VL's image processor (Qwen2VLImageProcessor with its hub values) with
 * DIR/preprocessor_config.json applied over them when present. */
static fm_status qwen3vl_preprocess(const char *dir, const fm_image *imgs, size_t n, fm_tensor *pv,
                                    fm_tensor *grid, fm_error *err) {
    fm_qwen2vl_preproc_params p;
    fm_status st = fm_qwen3vl_preproc_params_load(dir, &p, NULL, err);
    if (st == FM_OK) st = fm_qwen2vl_preprocess(imgs, n, &p, pv, grid, err);
    return st;
}

static void qwen3vl_lm_info(const void *cfg, fm_lm_info *o) {
    const fm_qwen3vl_config *c = cfg;
    fm_qwen2vl_text_lm_info(&c->t, c->v.spatial_merge_size, o);
}

/* Images are positioned as in Qwen2-VL (v4.57 get_rope_index: frame k of an image at s + k). */
static fm_status qwen3vl_rope(const void *cfg, const int64_t *ids, int64_t n, const int64_t *grid,
                              int64_t n_images, int64_t *pos3, int64_t *next, fm_error *err) {
    const fm_qwen3vl_config *c = cfg;
    return fm_qwen2vl_rope_index(&c->t, c->v.spatial_merge_size, ids, n, grid, n_images, pos3, next,
                                 err);
}

const fm_model_builder fm_qwen3vl_builder = {
    .model_type = "qwen3_vl",
    .architecture = "Qwen3VLForConditionalGeneration",
    .parse_config = fm_qwen3vl_parse_config,
    .free_config = fm_free,
    .build = qwen3vl_build,
    .tied_to = qwen3vl_tied_to,
    .preprocess_images = qwen3vl_preprocess,
    .lm_info = qwen3vl_lm_info,
    .rope_index = qwen3vl_rope,
    .vision_tower = "model.visual",
};

fm_status fm_qwen3vl_register(fm_error *err) {
    fm_status st = fm_class_register_alias("Qwen3VLTextRMSNorm", "RMSNorm", false, err);
    for (size_t i = 0; st == FM_OK && i < sizeof qwen3_classes / sizeof *qwen3_classes; i++)
        st = fm_class_register(&qwen3_classes[i], false, err);
    if (st == FM_OK) st = fm_qwen3vl_register_vision_classes(err);
    if (st == FM_OK) st = fm_model_builder_register(&fm_qwen3vl_builder, false, err);
    return st;
}
