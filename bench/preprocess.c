/* Preprocessing benchmark: Qwen2-VL preprocessing (bicubic resize, rescale/normalise, patch
 * flattening) of a hub-size image, 1080x1920 -> 1092x1932 (10764 patches of 1176 floats) with
 * the hub's max_pixels. Prints one JSON object per line: the median and best of --reps runs.
 *
 *   preprocess [--reps N] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fusemap/image.h"
#include "fusemap/qwen2_vl.h"
#include "img_fixtures.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    int reps = 7;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
    }
    if (reps < 1 || reps > 1000) reps = 7;
    fm_qwen2vl_preproc_params p;
    fm_qwen2vl_preproc_params_init(&p);
    p.max_pixels = 12845056;
    fm_image img = {0};
    fm_error err;
    if (fm_image_alloc(&img, 1920, 1080, &err) != FM_OK) {
        fprintf(stderr, "preprocess: %s\n", err.msg);
        return 1;
    }
    imgfx_fill_smooth(img.data, 1920, 1080, 3, 9);
    double *t = malloc((size_t)reps * sizeof *t);
    int64_t patches = 0;
    for (int r = 0; t && r < reps; r++) {
        fm_tensor pv = {0}, gt = {0};
        double t0 = now();
        if (fm_qwen2vl_preprocess(&img, 1, &p, &pv, &gt, &err) != FM_OK) {
            fprintf(stderr, "preprocess: %s\n", err.msg);
            return 1;
        }
        t[r] = now() - t0;
        patches = pv.shape.dims[0];
        fm_tensor_free(&pv), fm_tensor_free(&gt);
    }
    if (!t) return 1;
    qsort(t, (size_t)reps, sizeof *t, cmp_double);
    printf("{\"bench\": \"preprocess\", \"image\": \"1080x1920\", \"resized\": \"1092x1932\", "
           "\"patches\": %lld, \"reps\": %d, \"median_ms\": %.2f, \"best_ms\": %.2f}\n",
           (long long)patches, reps, 1e3 * t[reps / 2], 1e3 * t[0]);
    free(t);
    fm_image_free(&img);
    return 0;
}
