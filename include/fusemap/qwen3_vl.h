/* fusemap Qwen3-VL: the image preprocessing parameters of Qwen3-VL checkpoints, for programs
 * that drive the Qwen2-VL processor (fusemap/qwen2_vl.h) directly; fm_model_preprocess_images
 * (fusemap/models.h) applies them for a loaded Qwen3-VL model. See docs/preprocessing.md. */
#ifndef FUSEMAP_QWEN3_VL_H
#define FUSEMAP_QWEN3_VL_H

#include <stdbool.h>

#include "fusemap/core.h"
#include "fusemap/qwen2_vl.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Qwen3-VL's released processor values (qwen2_5-vl-and-qwen3-vl.md §6): the Qwen2-VL defaults
 * with patch_size 16 (factor 32 with merge_size 2), min_pixels 65536 (size.shortest_edge),
 * max_pixels 16777216 (size.longest_edge), image_mean = image_std = 0.5 per channel. */
FM_API void fm_qwen3vl_preproc_params_init(fm_qwen2vl_preproc_params *p);
/* Initialises *p with fm_qwen3vl_preproc_params_init, then applies DIR/preprocessor_config.json
 * when it exists (as fm_qwen2vl_preproc_params_load does for Qwen2-VL). */
FM_API fm_status fm_qwen3vl_preproc_params_load(const char *dir, fm_qwen2vl_preproc_params *p,
                                                bool *found, fm_error *err);

#ifdef __cplusplus
}
#endif
#endif
