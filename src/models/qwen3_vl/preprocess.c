/* Qwen3-VL's image preprocessing parameters: Qwen2VLImageProcessor (the Qwen2-VL code) with the
 * values Qwen3-VL checkpoints ship in preprocessor_config.json as the defaults. */
#include "fusemap/qwen3_vl.h"

void fm_qwen3vl_preproc_params_init(fm_qwen2vl_preproc_params *p) {
    fm_qwen2vl_preproc_params_init(p);
    p->patch_size = 16;
    p->min_pixels = 65536;
    p->max_pixels = 16777216;
    for (int c = 0; c < 3; c++)
        p->image_mean[c] = 0.5, p->image_std[c] = 0.5;
}

fm_status fm_qwen3vl_preproc_params_load(const char *dir, fm_qwen2vl_preproc_params *p, bool *found,
                                         fm_error *err) {
    if (!dir || !p)
        return fm_error_set(err, FM_ERR_INVALID_ARG, "preprocessor config: NULL argument");
    fm_qwen3vl_preproc_params_init(p);
    return fm_qwen2vl_preproc_params_apply_dir(dir, p, found, err);
}
