/* Internal: forwards of the Qwen2-VL vision tower and its patch embedding modules. */
#ifndef FUSEMAP_MODELS_QWEN2_VL_FORWARD_H
#define FUSEMAP_MODELS_QWEN2_VL_FORWARD_H

#include "fusemap/nn.h"
#include "models/qwen2_vl/qwen2_vl.h"

extern const fm_module_class fm_class_patch_embed, fm_class_vision_tower;

/* PatchEmbed: in[0] f32 [N][C*T*P*P] -> out[0] f32 [N][D] (Conv3d on [N][C][T][P][P]). */
fm_status fm_qwen2vl_patch_embed_forward(fm_module *self, fm_run_ctx *rc, const fm_tensor *in,
                                         size_t n_in, fm_tensor *out, size_t n_out, fm_error *err);
/* Tower: in[0] pixel_values f32 [N][C*T*P*P], in[1] image_grid_thw i64 [n][3]
 * -> out[0] f32 [N/merge^2][hidden_size]. */
fm_status fm_qwen2vl_tower_forward(fm_module *self, fm_run_ctx *rc, const fm_tensor *in, size_t n_in,
                                   fm_tensor *out, size_t n_out, fm_error *err);

/* Tower state (config copy + lazily prepared f32 weights and plan). */
fm_status fm_qwen2vl_tower_impl_new(fm_module *m, const fm_qwen2vl_vision_config *v, fm_error *err);
void fm_qwen2vl_tower_impl_free(void *impl);

#endif
