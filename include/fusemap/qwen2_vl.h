/* fusemap Qwen2-VL: the image preprocessing of Qwen2VLImageProcessor (PIL path), for programs
 * that drive it directly; fm_model_preprocess_images (fusemap/models.h) runs it for a loaded
 * Qwen2-VL model with the model directory's preprocessor_config.json. See docs/preprocessing.md. */
#ifndef FUSEMAP_QWEN2_VL_H
#define FUSEMAP_QWEN2_VL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fusemap/core.h"
#include "fusemap/image.h"
#include "fusemap/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Qwen2-VL preprocessing ---------------------------------------------------------------
 * Qwen2VLImageProcessor, PIL path (transformers v4 slow processor / v5
 * Qwen2VLImageProcessorPil): spec qwen2-vl.md section 3. */

/* The newest smart_resize: (height, width) -> multiples of `factor` with
 * min_pixels <= area <= max_pixels (Python rounding: halves to even), the shrink branch
 * clamped to at least `factor`. FM_ERR_IMAGE when max(h,w)/min(h,w) > 200;
 * FM_ERR_INVALID_ARG for non-positive sizes or limits, min_pixels > max_pixels, or a result
 * beyond uint32. */
FM_API fm_status fm_smart_resize(int64_t height, int64_t width, int64_t factor, int64_t min_pixels,
                                 int64_t max_pixels, int64_t *out_height, int64_t *out_width,
                                 fm_error *err);

/* Preprocessor parameters. Defaults (fm_qwen2vl_preproc_params_init) are the class
 * defaults of spec section 3.2; hub checkpoints override min/max pixels in their
 * preprocessor_config.json, so read it (fm_qwen2vl_preproc_params_load). */
typedef struct fm_qwen2vl_preproc_params {
    bool do_resize;              /* true */
    int resample;                /* PIL code; only 3 (BICUBIC) is supported */
    int64_t min_pixels;          /* 3136 (size.shortest_edge) */
    int64_t max_pixels;          /* 1003520 (size.longest_edge) */
    bool do_rescale;             /* true */
    double rescale_factor;       /* 1/255 */
    bool do_normalize;           /* true */
    double image_mean[3];        /* OpenAI CLIP mean */
    double image_std[3];         /* OpenAI CLIP std */
    int64_t patch_size;          /* 14 */
    int64_t temporal_patch_size; /* 2 */
    int64_t merge_size;          /* 2 */
} fm_qwen2vl_preproc_params;

FM_API void fm_qwen2vl_preproc_params_init(fm_qwen2vl_preproc_params *p);
/* Range checks (positive sizes, min <= max, std != 0, resample 3): FM_ERR_CONFIG otherwise. */
FM_API fm_status fm_qwen2vl_preproc_params_validate(const fm_qwen2vl_preproc_params *p,
                                                    fm_error *err);
/* Overrides *p (initialised by the caller) with the keys found in a preprocessor_config.json
 * text: min_pixels / max_pixels (these win over size.shortest_edge / size.longest_edge),
 * size, patch_size, temporal_patch_size, merge_size, image_mean, image_std (3 numbers or one),
 * rescale_factor, do_resize, do_rescale, do_normalize, resample, do_convert_rgb (must be true
 * or absent: decoded images are RGB already). Unknown keys are ignored. Duplicate keys, syntax
 * errors (with line:column), wrong types or out-of-range values give FM_ERR_JSON / FM_ERR_CONFIG
 * naming `origin` and the key; *p is untouched on failure. */
FM_API fm_status fm_qwen2vl_preproc_params_parse(const char *text, size_t len, const char *origin,
                                                 fm_qwen2vl_preproc_params *p, fm_error *err);
/* Same, from a file. */
FM_API fm_status fm_qwen2vl_preproc_params_load_file(const char *path, fm_qwen2vl_preproc_params *p,
                                                     fm_error *err);
/* Initialises *p to the defaults, then applies DIR/preprocessor_config.json when it exists
 * (a missing file is not an error; an unreadable or invalid one is, and leaves *p at the
 * defaults). *found (may be NULL) tells whether the file was applied. */
FM_API fm_status fm_qwen2vl_preproc_params_load(const char *dir, fm_qwen2vl_preproc_params *p,
                                                bool *found, fm_error *err);
/* Applies DIR/preprocessor_config.json over *p (initialised by the caller, e.g. with another
 * model's defaults) when it exists, as fm_qwen2vl_preproc_params_load does; *p is untouched when
 * the file is absent or invalid. */
FM_API fm_status fm_qwen2vl_preproc_params_apply_dir(const char *dir, fm_qwen2vl_preproc_params *p,
                                                     bool *found, fm_error *err);

/* Target size and grid of one still image: (*out_h, *out_w) the resize target, grid_thw =
 * (1, out_h / patch, out_w / patch). With do_resize false the size must already be a
 * multiple of patch_size * merge_size (FM_ERR_IMAGE otherwise). Output pointers may be NULL. */
FM_API fm_status fm_qwen2vl_image_geometry(uint32_t width, uint32_t height,
                                           const fm_qwen2vl_preproc_params *p, int64_t *out_h,
                                           int64_t *out_w, int64_t grid_thw[3], fm_error *err);

/* Preprocesses n still images (borrowed for the call) as the processor's
 * `images=[...]` call: per image resize -> rescale/normalise -> temporal repeat to
 * temporal_patch_size frames -> patches in spatial-merge order. Outputs (fresh owned tensors;
 * caller frees each with fm_tensor_free; untouched on failure):
 *   pixel_values F32 [sum of grid_t*gh*gw, 3 * temporal_patch_size * patch_size^2]
 *   grid_thw     I64 [n, 3] = (1, gh, gw) per image. */
FM_API fm_status fm_qwen2vl_preprocess(const fm_image *imgs, size_t n,
                                       const fm_qwen2vl_preproc_params *p, fm_tensor *pixel_values,
                                       fm_tensor *grid_thw, fm_error *err);

#ifdef __cplusplus
}
#endif
#endif
