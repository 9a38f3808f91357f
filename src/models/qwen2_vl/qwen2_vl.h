/* Internal: the parsed Qwen2-VL configuration and the Qwen2-VL model builder. */
#ifndef FUSEMAP_MODELS_QWEN2_VL_H
#define FUSEMAP_MODELS_QWEN2_VL_H

#include <stdbool.h>
#include <stdint.h>

#include "fusemap/io.h"
#include "fusemap/nn.h"
#include "models/qwen2/decoder.h"

typedef struct fm_qwen2vl_vision_config {
    int64_t depth, embed_dim, hidden_size, num_heads, in_channels, patch_size;
    int64_t temporal_patch_size, spatial_merge_size, mlp_hidden;
    double mlp_ratio;
    fm_activation act; /* vision_config.hidden_act */
} fm_qwen2vl_vision_config;

typedef struct fm_qwen2vl_config {
    fm_qwen2vl_vision_config v;
    fm_qwen2_text_config t;
    bool tie_word_embeddings;
} fm_qwen2vl_config;

/* Parses hub (flat text keys + vision_config) and v5 (text_config) layouts; refuses values
 * that make no sense with the key named. *out freed with fm_free. */
fm_status fm_qwen2vl_parse_config(const fm_config *cfg, const char *origin, void **out,
                                  fm_error *err);

extern const fm_model_builder fm_qwen2vl_builder;

/* Registers the Qwen2-VL module classes, builder and hub <-> runtime key mapping (the line in
 * the api layer's table of built-in architectures). */
fm_status fm_qwen2vl_register(fm_error *err);

/* Parts of the registration: the vision tower's classes (vision.c) and the key mapping
 * (mapping.c). */
fm_status fm_qwen2vl_register_vision_classes(fm_error *err);
fm_status fm_qwen2vl_register_mapping(fm_error *err);

/* get_rope_index for images (generation.md §4.2): ids [n], grids [n_images][3] in order of
 * appearance -> pos3 [3][n] (t, h, w rows) and the next free position (max + 1). An image
 * counts where a vision_start token is followed by the image token; its tokens must number
 * t·(h/m)·(w/m). FM_ERR_INPUT when ids and grids disagree. Videos are refused. */
fm_status fm_qwen2vl_rope_index(const fm_qwen2_text_config *t, int64_t merge, const int64_t *ids,
                                int64_t n, const int64_t *grid_thw, int64_t n_images, int64_t *pos3,
                                int64_t *next, fm_error *err);
/* The same with the temporal position of frame f = next + f·frame_step (Qwen2-VL: 1; Qwen2.5-VL
 * images: 0, transformers v4.5x's second_per_grid_t = 0); the text after an image continues at
 * next + max((t - 1)·frame_step + 1, h/m, w/m). */
fm_status fm_qwen2vl_rope_index_step(const fm_qwen2_text_config *t, int64_t merge,
                                     int64_t frame_step, const int64_t *ids, int64_t n,
                                     const int64_t *grid_thw, int64_t n_images, int64_t *pos3,
                                     int64_t *next, fm_error *err);

/* ---- pieces Qwen2.5-VL reuses ------------------------------------------------------------------
 * Its parsed config starts with an fm_qwen2vl_config (its vision fields in Qwen2-VL's terms), so
 * the constructors below, and the classes it registers as aliases of PatchEmbed,
 * VisionRotaryEmbedding and VisionAttention, read it alike. */

/* Validates image_grid_thw [n_images][3] (t, h, w >= 1, h and w multiples of merge, totals
 * within int32): *patches = sum of t·h·w, *segments = sum of t. FM_ERR_INPUT naming the image. */
fm_status fm_qwen2vl_check_grid(const int64_t *grid, int n_images, int64_t merge, int64_t *patches,
                                int *segments, fm_error *err);
/* Vision block forward: {h [N][D], cu_seqlens I32 [S+1], cos, sin} -> [N][D] (may alias h):
 * h += attn(norm1(h), cu, cos, sin); h += mlp(norm2(h)), every child through its class. */
fm_status fm_qwen2vl_block_forward(fm_module *self, fm_run_ctx *rc, const fm_tensor *in,
                                   size_t n_in, fm_tensor *out, size_t n_out, fm_error *err);
/* PatchMerger(dim, context_dim, spatial_merge_size) with `ln_q` of class norm_class, and its
 * forward: [N][context] -> ln_q per row, m² rows per group, mlp -> [N/m²][dim]. */
fm_status fm_qwen2vl_merger_init(fm_module *m, fm_build_ctx *ctx, const fm_args *a,
                                 const char *norm_class, fm_error *err);
fm_status fm_qwen2vl_merger_forward(fm_module *self, fm_run_ctx *rc, const fm_tensor *in,
                                    size_t n_in, fm_tensor *out, size_t n_out, fm_error *err);
/* The top level: <X>Model (children `visual`, `language_model` of the given classes) and
 * <X>ForConditionalGeneration (`model`, `lm_head`); forwards as documented in classes.c. */
fm_status fm_qwen2vl_model_init(fm_module *m, fm_build_ctx *ctx, const char *visual_class,
                                const char *lm_class, fm_error *err);
fm_status fm_qwen2vl_model_forward(fm_module *self, fm_run_ctx *rc, const fm_tensor *in,
                                   size_t n_in, fm_tensor *out, size_t n_out, fm_error *err);
fm_status fm_qwen2vl_for_cg_init(fm_module *m, fm_build_ctx *ctx, const char *model_class,
                                 fm_error *err);
fm_status fm_qwen2vl_for_cg_forward(fm_module *self, fm_run_ctx *rc, const fm_tensor *in,
                                    size_t n_in, fm_tensor *out, size_t n_out, fm_error *err);
/* Builder hooks over an fm_qwen2vl_config: tied lm_head, language-model info, and the image
 * processor with DIR/preprocessor_config.json. */
const char *fm_qwen2vl_tied_to(const void *cfg, const char *param);
void fm_qwen2vl_lm_info(const void *cfg, fm_lm_info *out);
/* The fm_lm_info of a Qwen2-family decoder whose vision tower merges merge x merge patches
 * (shared by the architectures whose configs embed fm_qwen2_text_config). */
void fm_qwen2vl_text_lm_info(const fm_qwen2_text_config *t, int64_t merge, fm_lm_info *out);
fm_status fm_qwen2vl_preprocess_dir(const char *dir, const fm_image *imgs, size_t n,
                                    fm_tensor *pixel_values, fm_tensor *grid_thw, fm_error *err);

/* ---- vision tower parts Qwen3-VL reuses (vision.c; contracts at each definition) -------------
 * Its config is not an fm_qwen2vl_config, so it registers its own classes over these functions:
 *   PatchEmbed(patch_size, temporal_patch_size, in_channels, embed_dim, bias):
 *       in[0] F32 [N][C·T·P·P] -> [N][embed_dim] (Conv3d `proj`);
 *   VisionRotaryEmbedding(dim): in[0] I32 [N][2] (row, col) -> cos, sin F32 [N][dim];
 *   VisionAttention (built by fm_qwen2vl_vision_attention_build): {x [N][D], cu_seqlens I32
 *       [S+1], cos, sin [N][hd/2]} -> [N][D];
 *   the vision block: fm_qwen2vl_block_forward. */
fm_status fm_qwen2vl_patch_embed_init(fm_module *m, fm_build_ctx *ctx, const fm_args *a,
                                      fm_error *err);
fm_status fm_qwen2vl_patch_embed_prepare(fm_module *self, fm_run_ctx *rc, fm_error *err);
fm_status fm_qwen2vl_patch_embed_forward(fm_module *self, fm_run_ctx *rc, const fm_tensor *in,
                                         size_t n_in, fm_tensor *out, size_t n_out, fm_error *err);
fm_status fm_qwen2vl_vision_rotary_init(fm_module *m, fm_build_ctx *ctx, const fm_args *a,
                                        fm_error *err);
fm_status fm_qwen2vl_vision_rotary_forward(fm_module *self, fm_run_ctx *rc, const fm_tensor *in,
                                           size_t n_in, fm_tensor *out, size_t n_out,
                                           fm_error *err);
fm_status fm_qwen2vl_vision_attention_build(fm_module *m, fm_build_ctx *ctx, int64_t dim,
                                            int64_t heads, fm_error *err);
fm_status fm_qwen2vl_vision_attention_forward(fm_module *self, fm_run_ctx *rc, const fm_tensor *in,
                                              size_t n_in, fm_tensor *out, size_t n_out,
                                              fm_error *err);
/* (the vision block: fm_qwen2vl_block_forward above) An un-gated vision MLP whose children are
 * names[0] (Linear), names[1] (activation), names[2] (Linear): in[0] [N][D] ->
 * names[2](names[1](names[0](x))). */
fm_status fm_qwen2vl_vision_mlp_run(fm_module *self, fm_run_ctx *rc, const fm_tensor *in,
                                    size_t n_in, fm_tensor *out, size_t n_out,
                                    const char *const names[3], fm_error *err);

/* A tower's per-grid plan, remade only when image_grid_thw changes: one attention segment per
 * image and temporal slice (cu [n_seg + 1]) and each patch row's (row, col) in the block-major
 * order of the pixel rows (pos [n][2]). The owner sets `merge` and clears it with
 * fm_qwen2vl_plan_clear (which keeps `merge`). */
typedef struct fm_qwen2vl_plan {
    int64_t merge; /* spatial_merge_size */
    int64_t *grid; /* [n_images][3]: the grid the plan was made for */
    int n_images;
    int64_t n; /* patches */
    int n_seg;
    int32_t *cu;  /* [n_seg + 1] */
    int32_t *pos; /* [n][2] */
} fm_qwen2vl_plan;

void fm_qwen2vl_plan_clear(fm_qwen2vl_plan *p);
/* Checks a tower's inputs {pixel_values F32 [N][k], image_grid_thw I64 [n][3]} and brings the
 * plan up to date (FM_ERR_INPUT naming the module for bad grids or a row count that is not the
 * grid's). */
fm_status fm_qwen2vl_plan_inputs(fm_module *tower, fm_qwen2vl_plan *p, int64_t k,
                                 const fm_tensor *in, size_t n_in, fm_error *err);
/* The tower's child `rotary_pos_emb` over the plan's positions -> rope[0], rope[1] cos, sin
 * [n][hd/2] in rc's scratch; *cu a borrowed view of the plan's cu_seqlens. */
fm_status fm_qwen2vl_plan_rope(fm_module *tower, fm_run_ctx *rc, const fm_qwen2vl_plan *p,
                               int64_t hd, fm_tensor rope[2], fm_tensor *cu, fm_error *err);

#endif
