/* Qwen2.5-VL's text decoder and top-level classes under transformers' names (the shared Qwen2
 * decoder and the Qwen2-VL top level through thin wrappers), the builder, and the registration.
 * The vision tower's classes are in vision.c. */
#include <string.h>

#include "models/qwen2_5_vl/qwen2_5_vl.h"

#define CFG(ctx) ((const fm_qwen25vl_config *)fm_build_ctx_model_cfg(ctx))

/* ---- text decoder: the shared Qwen2 decoder under Qwen2.5-VL's class names ------------------
 * (Qwen2MLP and Qwen2RMSNorm are transformers' names in both architectures: registered once.) */
static const fm_qwen2_class_names names = {
    .attention = "Qwen2_5_VLAttention",
    .mlp = "Qwen2MLP",
    .decoder_layer = "Qwen2_5_VLDecoderLayer",
    .rotary = "Qwen2_5_VLRotaryEmbedding",
    .text_model = "Qwen2_5_VLTextModel",
    .rmsnorm = "Qwen2RMSNorm",
};

static fm_status attention_init(fm_module *m, fm_build_ctx *ctx, const fm_args *a, fm_error *err) {
    (void)a;
    return fm_qwen2_attention_init(m, ctx, &CFG(ctx)->base.t, &names, err);
}
static fm_status decoder_layer_init(fm_module *m, fm_build_ctx *ctx, const fm_args *a,
                                    fm_error *err) {
    (void)a;
    return fm_qwen2_decoder_layer_init(m, ctx, &CFG(ctx)->base.t, &names, err);
}
static fm_status rotary_init(fm_module *m, fm_build_ctx *ctx, const fm_args *a, fm_error *err) {
    (void)a;
    return fm_qwen2_rotary_init(m, &CFG(ctx)->base.t, err);
}
static fm_status text_model_init(fm_module *m, fm_build_ctx *ctx, const fm_args *a, fm_error *err) {
    (void)a;
    return fm_qwen2_text_model_init(m, ctx, &CFG(ctx)->base.t, &names, err);
}

/* ---- top level: Qwen2-VL's forwards over Qwen2.5-VL's children ------------------------------- */
static fm_status model_init(fm_module *m, fm_build_ctx *ctx, const fm_args *a, fm_error *err) {
    (void)a;
    return fm_qwen2vl_model_init(m, ctx, "Qwen2_5_VisionTransformerPretrainedModel",
                                 "Qwen2_5_VLTextModel", err);
}
static fm_status for_cg_init(fm_module *m, fm_build_ctx *ctx, const fm_args *a, fm_error *err) {
    (void)a;
    return fm_qwen2vl_for_cg_init(m, ctx, "Qwen2_5_VLModel", err);
}

static const fm_module_class classes[] = {
    {.name = "Qwen2_5_VLAttention",
     .init = attention_init,
     .forward = fm_qwen2_attention_forward,
     .free_impl = fm_free},
    {.name = "Qwen2_5_VLDecoderLayer",
     .init = decoder_layer_init,
     .forward = fm_qwen2_decoder_layer_forward},
    {.name = "Qwen2_5_VLRotaryEmbedding",
     .init = rotary_init,
     .forward = fm_qwen2_rotary_forward,
     .free_impl = fm_free},
    {.name = "Qwen2_5_VLTextModel",
     .init = text_model_init,
     .forward = fm_qwen2_text_model_forward,
     .free_impl = fm_free},
    {.name = "Qwen2_5_VLModel",
     .init = model_init,
     .forward = fm_qwen2vl_model_forward,
     .free_impl = fm_free},
    {.name = "Qwen2_5_VLForConditionalGeneration",
     .init = for_cg_init,
     .forward = fm_qwen2vl_for_cg_forward},
};

/* ---- builder --------------------------------------------------------------------------------- */
static fm_status build(fm_build_ctx *ctx, const void *cfg, fm_module **root, fm_error *err) {
    (void)cfg;
    return fm_module_create(ctx, NULL, "", "Qwen2_5_VLForConditionalGeneration", NULL, root, err);
}

/* get_rope_index for images: every frame of an image at temporal position `next`
 * (second_per_grid_t = 0 for images, transformers v4.5x; spec §5.1). */
static fm_status rope_index(const void *cfg, const int64_t *ids, int64_t n, const int64_t *grid,
                            int64_t n_images, int64_t *pos3, int64_t *next, fm_error *err) {
    const fm_qwen25vl_config *c = cfg;
    return fm_qwen2vl_rope_index_step(&c->base.t, c->base.v.spatial_merge_size, 0, ids, n, grid,
                                      n_images, pos3, next, err);
}

/* The hooks taking an fm_qwen2vl_config read the config's first member. */
const fm_model_builder fm_qwen25vl_builder = {
    .model_type = "qwen2_5_vl",
    .architecture = "Qwen2_5_VLForConditionalGeneration",
    .parse_config = fm_qwen25vl_parse_config,
    .free_config = fm_free,
    .build = build,
    .tied_to = fm_qwen2vl_tied_to,
    .preprocess_images = fm_qwen2vl_preprocess_dir,
    .lm_info = fm_qwen2vl_lm_info,
    .rope_index = rope_index,
    .vision_tower = "model.visual",
};

fm_status fm_qwen25vl_register(fm_error *err) {
    fm_status st = FM_OK;
    for (size_t i = 0; st == FM_OK && i < sizeof classes / sizeof *classes; i++)
        st = fm_class_register(&classes[i], false, err);
    if (st == FM_OK) st = fm_qwen25vl_register_vision_classes(err);
    if (st == FM_OK) st = fm_model_builder_register(&fm_qwen25vl_builder, false, err);
    return st;
}
