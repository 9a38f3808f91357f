/* Rotary tables for the decoder: multimodal RoPE (the sectioned layout and the interleaved one
 * of the vision-language decoders) with the f32 rounding steps of transformers (generation spec
 * §4). */
#include <math.h>

#include "nn/kernels.h"

/* Frequency j's axis (0 = t, 1 = h, 2 = w). Sectioned: the first sections[0] frequencies take
 * t, the next sections[1] h, the rest w (transformers doubles mrope_section over the full
 * head_dim, so d and d + hd/2 share the axis of frequency d mod hd/2). Interleaved: t, except
 * h on j % 3 == 1 below 3·sections[1] and w on j % 3 == 2 below 3·sections[2]. */
static int mrope_axis(int j, const int sections[3], int interleaved) {
    if (interleaved) {
        if (j % 3 == 1 && j < 3 * sections[1]) return 1;
        if (j % 3 == 2 && j < 3 * sections[2]) return 2;
        return 0;
    }
    if (j < sections[0]) return 0;
    return j < sections[0] + sections[1] ? 1 : 2;
}

/* torch's `1.0 / (theta ** (arange(0, hd, 2).float() / hd))` in f32: the exponent is an f32
 * division, the power an f32 result (computed in double and rounded once: within the 1 ulp of
 * torch's f32 pow, exact in nearly every case), the reciprocal an f32 division. */
static float inv_freq(int j, int head_dim, double theta) {
    float e = (float)(2 * j) / (float)head_dim;
    float p = (float)pow((double)(float)theta, (double)e);
    return 1.0f / p;
}

void fm_k_mrope_table(float *cos_t, float *sin_t, const int64_t *pos3, int64_t T, int head_dim,
                      double theta, const int sections[3], int interleaved) {
    int h2 = head_dim / 2;
    float inv[512];
    int axis[512];
    for (int j = 0; j < h2 && j < 512; j++) {
        inv[j] = inv_freq(j, head_dim, theta);
        axis[j] = mrope_axis(j, sections, interleaved);
    }
    for (int64_t r = 0; r < T; r++)
        for (int j = 0; j < h2; j++) {
            float ang = (float)pos3[axis[j] * T + r] * inv[j]; /* f32 product, as torch's matmul */
            cos_t[r * h2 + j] = (float)cos((double)ang);
            sin_t[r * h2 + j] = (float)sin((double)ang);
        }
}
