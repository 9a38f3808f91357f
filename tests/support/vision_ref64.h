/* Test support: a separate, naive float64 forward of the Qwen2-VL vision tower (spec
 * qwen2-vl.md §4), the yardstick for the float32 forward in src/models/qwen2_vl/vision.c. */
#ifndef FM_TEST_VISION_REF64_H
#define FM_TEST_VISION_REF64_H

#include <stdint.h>

#include "models/qwen2_vl/vision.h"

/* out: [N / merge²][hidden_size] doubles (caller-allocated). Reads the same weight structs
 * (the patch weight as [D][C*T*P*P], which is also the Conv3d weight's memory layout when the
 * kernel covers the whole patch). grid_thw: [n_images][3]. Returns 0, or -1 when out of memory.
 * Also writes the per-token hidden state after the last block into last_hidden ([N][D]) when
 * non-NULL. */
int fm_vref64_forward(const fm_qwen2vl_vision_cfg *cfg, const fm_qwen2vl_vision_w *w,
                      const int64_t *grid_thw, int n_images, const float *pixel_values,
                      double *out, double *last_hidden);

/* Relative L2 error ||a - ref|| / ||ref|| of n float values against doubles. */
double fm_vref64_rel_l2(const float *a, const double *ref, int64_t n);

#endif
