/* Tests of Qwen2-VL preprocessing: smart_resize vectors, config parsing, bitwise normalisation,
 * patch flattening vs the spec loop nest and its inverse, Pillow+numpy end-to-end goldens. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/testing.h"
#include "fusemap/image.h"
#include "fusemap/qwen2_vl.h"
#include "support/check.h"
#include "support/img_fixtures.h"

static fm_error errbuf;
static fm_error *const err = &errbuf;

/* ---- smart_resize -------------------------------------------------------------------------- */

typedef struct sr_case {
    int64_t h, w, min_px, max_px, eh, ew;
} sr_case;

static void test_smart_resize_vectors(void) {
    const int64_t hub = 12845056, cls = 1003520;
    static sr_case v[] = {
        {480, 640, 3136, 0, 476, 644},    {1080, 1920, 3136, 0, 1092, 1932},
        {1080, 1920, 3136, 1, 728, 1316}, {3000, 4000, 3136, 1, 840, 1148},
        {42, 70, 3136, 0, 56, 56},        {20, 20, 3136, 0, 56, 56},
    };
    static const int64_t grids[][3] = {{34, 46, 391},  {78, 138, 2691}, {52, 94, 1222},
                                       {60, 82, 1230}, {4, 4, 4},       {4, 4, 4}};
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        int64_t oh = -1, ow = -1;
        CHECK_OK(fm_smart_resize(v[i].h, v[i].w, 28, v[i].min_px, v[i].max_px ? cls : hub, &oh, &ow,
                                 err),
                 err);
        CHECK_MSG(oh == v[i].eh && ow == v[i].ew, "%lldx%lld -> %lldx%lld, expected %lldx%lld",
                  (long long)v[i].h, (long long)v[i].w, (long long)oh, (long long)ow,
                  (long long)v[i].eh, (long long)v[i].ew);
        CHECK_EQ_INT(grids[i][0], oh / 14);
        CHECK_EQ_INT(grids[i][1], ow / 14);
        CHECK_EQ_INT(grids[i][2], (oh / 14) * (ow / 14) / 4);
    }
}

static void test_smart_resize_rounding_and_branches(void) {
    static sr_case v[] = {
        {70, 70, 784, 10000000, 56, 56},     /* 2.5 -> 2 (C round() would give 84) */
        {98, 98, 784, 10000000, 112, 112},   /* 3.5 -> 4 */
        {126, 126, 784, 10000000, 112, 112}, /* 4.5 -> 4 */
        {154, 154, 784, 10000000, 168, 168}, /* 5.5 -> 6 */
        {14, 14, 784, 10000000, 28, 28},     /* 0.5 -> 0, then the grow branch */
        {28, 5000, 784, 7840, 28, 1176},     /* shrink branch, clamped to factor */
        {5000, 28, 784, 7840, 1176, 28},
        {1, 200, 3136, 1003520, 28, 812}, /* ratio exactly 200 is allowed */
        {333, 777, 3136, 1003520, 336, 784},
        {2, 399, 3136, 1003520, 28, 812},
        /* exactly on the limits (strict comparisons): the rounded size is kept, though the
         * input itself is off the limit and the other branch would change it */
        {896, 1120, 3136, 1003520, 896, 1120}, /* 896 x 1120 = 1,003,520 = max_pixels */
        {900, 1115, 3136, 1003520, 896, 1120}, /* rounds onto max; shrinking gives 896 x 1092 */
        {50, 62, 3136, 1003520, 56, 56},       /* rounds onto min; growing gives 56 x 84 */
        {896, 1121, 3136, 1003520, 896, 1120},
        {900, 1140, 3136, 1003520, 868, 1120}, /* rounds to 896 x 1148 > max: shrunk */
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        int64_t oh = -1, ow = -1;
        CHECK_OK(fm_smart_resize(v[i].h, v[i].w, 28, v[i].min_px, v[i].max_px, &oh, &ow, err), err);
        CHECK_MSG(oh == v[i].eh && ow == v[i].ew, "%lldx%lld -> %lldx%lld, expected %lldx%lld",
                  (long long)v[i].h, (long long)v[i].w, (long long)oh, (long long)ow,
                  (long long)v[i].eh, (long long)v[i].ew);
    }
    int64_t oh = 7, ow = 7;
    CHECK_STATUS(FM_ERR_IMAGE, fm_smart_resize(1, 201, 28, 3136, 1003520, &oh, &ow, err), err);
    CHECK_CONTAINS(err->msg, "aspect ratio must be smaller than 200");
    CHECK_STATUS(FM_ERR_IMAGE, fm_smart_resize(20001, 100, 28, 3136, 1003520, &oh, &ow, err), err);
    CHECK(oh == 7 && ow == 7);
    CHECK_STATUS(FM_ERR_INVALID_ARG, fm_smart_resize(0, 10, 28, 3136, 1003520, &oh, &ow, err), err);
    CHECK_STATUS(FM_ERR_INVALID_ARG, fm_smart_resize(10, 10, 0, 3136, 1003520, &oh, &ow, err), err);
    CHECK_STATUS(FM_ERR_INVALID_ARG, fm_smart_resize(10, 10, 28, 5000, 4000, &oh, &ow, err), err);
}

/* ---- parameters ---------------------------------------------------------------------------- */

static fm_status parse(const char *json, fm_qwen2vl_preproc_params *p) {
    fm_qwen2vl_preproc_params_init(p);
    return fm_qwen2vl_preproc_params_parse(json, strlen(json), "pp.json", p, err);
}

static void test_params_defaults_and_hub(void) {
    fm_qwen2vl_preproc_params p;
    fm_qwen2vl_preproc_params_init(&p);
    CHECK(p.min_pixels == 3136 && p.max_pixels == 1003520 && p.patch_size == 14 &&
          p.merge_size == 2 && p.temporal_patch_size == 2 && p.resample == 3 && p.do_resize &&
          p.do_rescale && p.do_normalize);
    CHECK(p.rescale_factor == 1.0 / 255.0 && p.image_mean[0] == 0.48145466 &&
          p.image_std[2] == 0.27577711);
    CHECK_OK(fm_qwen2vl_preproc_params_validate(&p, err), err);
    const char *hub = "{\"min_pixels\": 3136, \"max_pixels\": 12845056, \"patch_size\": 14,\n"
                      " \"temporal_patch_size\": 2, \"merge_size\": 2,\n"
                      " \"image_mean\": [0.48145466, 0.4578275, 0.40821073],\n"
                      " \"image_std\": [0.26862954, 0.26130258, 0.27577711],\n"
                      " \"image_processor_type\": \"Qwen2VLImageProcessor\", \"processor_class\": "
                      "\"Qwen2VLProcessor\"}";
    CHECK_OK(parse(hub, &p), err);
    CHECK_EQ_INT(12845056, p.max_pixels);
    CHECK_EQ_INT(3136, p.min_pixels);
    CHECK_OK(
        parse("{\"size\": {\"shortest_edge\": 100, \"longest_edge\": 2000}, \"image_mean\": 0.5,"
              " \"rescale_factor\": 0.5, \"do_normalize\": false, \"patch_size\": 7}",
              &p),
        err);
    CHECK(p.min_pixels == 100 && p.max_pixels == 2000 && p.image_mean[1] == 0.5 &&
          p.rescale_factor == 0.5 && !p.do_normalize && p.patch_size == 7);
    /* min_pixels / max_pixels win over size */
    CHECK_OK(
        parse("{\"size\": {\"shortest_edge\": 100, \"longest_edge\": 2000}, \"max_pixels\": 9000}",
              &p),
        err);
    CHECK(p.min_pixels == 100 && p.max_pixels == 9000);
    CHECK_OK(parse("{\"size\": {\"height\": 5}, \"min_pixels\": 10, \"max_pixels\": 90}", &p), err);
    CHECK(p.min_pixels == 10 && p.max_pixels == 90);
}

static void expect_param_error(const char *json, fm_status st, const char *needle) {
    fm_qwen2vl_preproc_params p, before;
    fm_qwen2vl_preproc_params_init(&p);
    p.max_pixels = 4242;
    before = p;
    CHECK_STATUS(st, fm_qwen2vl_preproc_params_parse(json, strlen(json), "pp.json", &p, err), err);
    CHECK_CONTAINS(err->msg, "pp.json");
    CHECK_CONTAINS(err->msg, needle);
    CHECK(memcmp(&p, &before, sizeof p) == 0);
}

static void test_params_errors(void) {
    expect_param_error("{\"min_pixels\": 1,\n \"min_pixels\": 2}", FM_ERR_JSON, "pp.json:2:");
    expect_param_error("{\"min_pixels\": 1,\n\n  oops}", FM_ERR_JSON, "pp.json:3:");
    expect_param_error("[1, 2]", FM_ERR_CONFIG, "object");
    expect_param_error("{\"max_pixels\": \"big\"}", FM_ERR_CONFIG, "max_pixels");
    expect_param_error("{\"image_mean\": [1, 2]}", FM_ERR_CONFIG, "image_mean");
    expect_param_error("{\"image_std\": [1, 0, 2]}", FM_ERR_CONFIG, "image_std");
    expect_param_error("{\"size\": {\"shortest_edge\": 5}}", FM_ERR_CONFIG, "longest_edge");
    expect_param_error("{\"size\": 5}", FM_ERR_CONFIG, "size");
    expect_param_error("{\"min_pixels\": 5000, \"max_pixels\": 4000}", FM_ERR_CONFIG, "min_pixels");
    expect_param_error("{\"patch_size\": 0}", FM_ERR_CONFIG, "patch_size");
    expect_param_error("{\"resample\": 2}", FM_ERR_UNSUPPORTED, "resample");
    expect_param_error("{\"do_resize\": 1}", FM_ERR_CONFIG, "do_resize");
    expect_param_error("{\"do_convert_rgb\": false}", FM_ERR_UNSUPPORTED, "do_convert_rgb");
}

static void test_params_load_dir(void) {
    char *dir = imgfx_tmpdir();
    CHECK(dir != NULL);
    if (!dir) return;
    fm_qwen2vl_preproc_params p;
    bool found = true;
    CHECK_OK(fm_qwen2vl_preproc_params_load(dir, &p, &found, err), err);
    CHECK(!found && p.max_pixels == 1003520);
    char *path = imgfx_join(dir, "preprocessor_config.json");
    const char *j = "{\"max_pixels\": 12845056}";
    CHECK(imgfx_write_file(path, j, strlen(j)) == 0);
    CHECK_OK(fm_qwen2vl_preproc_params_load(dir, &p, &found, err), err);
    CHECK(found && p.max_pixels == 12845056);
    CHECK(imgfx_write_file(path, "{\"max_pixels\": }", 16) == 0);
    CHECK_STATUS(FM_ERR_JSON, fm_qwen2vl_preproc_params_load(dir, &p, &found, err), err);
    CHECK_CONTAINS(err->msg, "preprocessor_config.json:1:");
    CHECK_STATUS(FM_ERR_IO, fm_qwen2vl_preproc_params_load_file("/nonexistent/pp.json", &p, err),
                 err);
    free(path);
    imgfx_rmtree(dir);
}

/* ---- normalisation and flattening ------------------------------------------------------ */

/* Spec 3.6, PIL column, written out on its own. */
static float norm_formula(const fm_qwen2vl_preproc_params *p, int c, uint8_t u) {
    float x = p->do_rescale ? (float)((double)u * p->rescale_factor) : (float)u;
    if (!p->do_normalize) return x;
    float mean = (float)p->image_mean[c], sd = (float)p->image_std[c];
    float d = x - mean;
    return d / sd;
}

/* Normalised frames [T][3][H][W], the still image repeated T times (spec 3.7 padding). */
static float *frames_of(const fm_image *img, const fm_qwen2vl_preproc_params *p) {
    size_t H = img->height, W = img->width, T = (size_t)p->temporal_patch_size;
    float *f = malloc(sizeof(float) * T * 3 * H * W);
    for (size_t t = 0; t < T; t++)
        for (int c = 0; c < 3; c++)
            for (size_t y = 0; y < H; y++)
                for (size_t x = 0; x < W; x++)
                    f[((t * 3 + c) * H + y) * W + x] =
                        norm_formula(p, c, img->data[(y * W + x) * 3 + c]);
    return f;
}

/* The spec 3.7 loop nest verbatim: rows block-major, columns [C][T][P][P]. */
static void naive_flatten(const float *fr, int64_t H, int64_t W, const fm_qwen2vl_preproc_params *p,
                          float *pv) {
    const int64_t P = p->patch_size, m = p->merge_size, T = p->temporal_patch_size,
                  K = 3 * T * P * P;
    int64_t gt = 1, gh = H / P, gw = W / P;
    for (int64_t t = 0; t < gt; t++)
        for (int64_t bh = 0; bh < gh / m; bh++)
            for (int64_t bw = 0; bw < gw / m; bw++)
                for (int64_t ih = 0; ih < m; ih++)
                    for (int64_t iw = 0; iw < m; iw++) {
                        int64_t r = (((t * (gh / m) + bh) * (gw / m) + bw) * m + ih) * m + iw;
                        for (int64_t c = 0; c < 3; c++)
                            for (int64_t tt = 0; tt < T; tt++)
                                for (int64_t py = 0; py < P; py++)
                                    for (int64_t px = 0; px < P; px++) {
                                        int64_t k = ((c * T + tt) * P + py) * P + px;
                                        pv[r * K + k] = fr[(((t * T + tt) * 3 + c) * H +
                                                            (bh * m + ih) * P + py) *
                                                               W +
                                                           (bw * m + iw) * P + px];
                                    }
                    }
}

/* Inverse of the flattening: writes every element back and counts visits per element. */
static int unflatten_matches(const float *pv, const float *fr, int64_t H, int64_t W,
                             const fm_qwen2vl_preproc_params *p) {
    const int64_t P = p->patch_size, m = p->merge_size, T = p->temporal_patch_size,
                  K = 3 * T * P * P;
    const int64_t gw = W / P, n = (H / P) * gw;
    size_t total = (size_t)(T * 3 * H * W);
    float *back = calloc(total, sizeof(float));
    unsigned char *seen = calloc(total, 1);
    for (int64_t r = 0; r < n; r++) {
        int64_t iw = r % m, ih = (r / m) % m, blk = r / (m * m), bw = blk % (gw / m),
                bh = blk / (gw / m);
        for (int64_t k = 0; k < K; k++) {
            int64_t px = k % P, py = (k / P) % P, tt = (k / (P * P)) % T, c = k / (P * P * T);
            size_t idx =
                (size_t)(((tt * 3 + c) * H + (bh * m + ih) * P + py) * W + (bw * m + iw) * P + px);
            back[idx] = pv[r * K + k];
            seen[idx]++;
        }
    }
    int ok = 1;
    for (size_t i = 0; i < total; i++)
        ok &= seen[i] == 1;
    ok = ok && memcmp(back, fr, total * sizeof(float)) == 0;
    free(back), free(seen);
    return ok;
}

static void random_image(fm_image *img, uint32_t w, uint32_t h, uint64_t seed) {
    CHECK_OK(fm_image_alloc(img, w, h, err), err);
    if (img->data) imgfx_fill_random(img->data, (size_t)w * h * 3, seed);
}

static void flatten_case(uint32_t w, uint32_t h, const fm_qwen2vl_preproc_params *p,
                         uint64_t seed) {
    fm_image img = {0};
    random_image(&img, w, h, seed);
    fm_tensor pv = {0}, gt = {0};
    CHECK_OK(fm_qwen2vl_preprocess(&img, 1, p, &pv, &gt, err), err);
    int64_t P = p->patch_size, K = 3 * p->temporal_patch_size * P * P, n = (h / P) * (w / P);
    CHECK_MSG(pv.dtype == FM_DTYPE_F32 && pv.shape.ndim == 2 && pv.shape.dims[0] == n &&
                  pv.shape.dims[1] == K,
              "%ux%u: pixel_values shape [%lld, %lld]", w, h, (long long)pv.shape.dims[0],
              (long long)pv.shape.dims[1]);
    const int64_t *g = gt.data;
    CHECK(gt.dtype == FM_DTYPE_I64 && g && g[0] == 1 && g[1] == h / P && g[2] == w / P);
    if (pv.data && pv.shape.dims[0] == n) {
        float *fr = frames_of(&img, p), *ref = malloc(sizeof(float) * (size_t)(n * K));
        naive_flatten(fr, h, w, p, ref);
        CHECK_MSG(memcmp(ref, pv.data, sizeof(float) * (size_t)(n * K)) == 0,
                  "%ux%u: differs from the 3.7 formula", w, h);
        CHECK_MSG(unflatten_matches(pv.data, fr, h, w, p),
                  "%ux%u: unflatten does not recover the frames", w, h);
        free(fr), free(ref);
    }
    fm_tensor_free(&pv), fm_tensor_free(&gt);
    fm_image_free(&img);
}

static void test_flatten_vs_formula(void) {
    fm_qwen2vl_preproc_params p;
    fm_qwen2vl_preproc_params_init(&p);
    static const uint32_t sizes[][2] = {{84, 56}, {56, 84}, {140, 112}, {56, 56}, {252, 28}};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        int64_t oh, ow;
        CHECK_OK(fm_qwen2vl_image_geometry(sizes[i][0], sizes[i][1], &p, &oh, &ow, NULL, err), err);
        CHECK_MSG(oh == sizes[i][1] && ow == sizes[i][0], "%ux%u is not an identity size",
                  sizes[i][0], sizes[i][1]);
        flatten_case(sizes[i][0], sizes[i][1], &p, 1000 + i);
    }
    /* other geometry: P = 7, m = 3, T = 3 (factor 21) */
    p.patch_size = 7, p.merge_size = 3, p.temporal_patch_size = 3, p.min_pixels = 441;
    flatten_case(63, 42, &p, 77);
    p.merge_size = 1, p.temporal_patch_size = 1;
    flatten_case(35, 21, &p, 78);
}

static void test_normalisation_exact(void) {
    fm_qwen2vl_preproc_params p;
    fm_qwen2vl_preproc_params_init(&p);
    p.merge_size = 1, p.patch_size = 16, p.temporal_patch_size = 1,
    p.min_pixels = 256; /* one 16x16 patch */
    fm_image img = {0};
    CHECK_OK(fm_image_alloc(&img, 16, 16, err), err);
    for (int i = 0; i < 256; i++) /* every byte value in every channel, channels shifted */
        for (int c = 0; c < 3; c++)
            img.data[i * 3 + c] = (uint8_t)(i * 7 + c * 85);
    for (int variant = 0; variant < 5; variant++) {
        p.do_rescale = !(variant & 1), p.do_normalize = !(variant & 2);
        if (variant == 4)
            p.image_mean[1] = 0.123456789, p.image_std[1] = 3.3, p.rescale_factor = 0.0041;
        fm_tensor pv = {0}, gt = {0};
        CHECK_OK(fm_qwen2vl_preprocess(&img, 1, &p, &pv, &gt, err), err);
        const float *v = pv.data;
        int bad = 0;
        for (int c = 0; v && c < 3; c++)
            for (int i = 0; i < 256; i++) {
                float e = norm_formula(&p, c, img.data[i * 3 + c]);
                if (memcmp(&e, &v[c * 256 + i], sizeof e) != 0) bad++;
            }
        CHECK_MSG(v && bad == 0, "variant %d: %d values differ bitwise from the 3.6 formula",
                  variant, bad);
        fm_tensor_free(&pv), fm_tensor_free(&gt);
    }
    fm_image_free(&img);
}

static void test_multi_image_concat(void) {
    fm_qwen2vl_preproc_params p;
    fm_qwen2vl_preproc_params_init(&p);
    fm_image imgs[3] = {{0}};
    random_image(&imgs[0], 84, 56, 1);
    random_image(&imgs[1], 100, 60, 2); /* resized: 112x56 */
    random_image(&imgs[2], 56, 112, 3);
    fm_tensor pv = {0}, gt = {0};
    CHECK_OK(fm_qwen2vl_preprocess(imgs, 3, &p, &pv, &gt, err), err);
    const int64_t *g = gt.data;
    CHECK(gt.shape.ndim == 2 && gt.shape.dims[0] == 3 && gt.shape.dims[1] == 3);
    static const int64_t eg[9] = {1, 4, 6, 1, 4, 8, 1, 8, 4};
    CHECK(g && memcmp(g, eg, sizeof eg) == 0);
    CHECK_EQ_INT(24 + 32 + 32, pv.shape.dims[0]);
    size_t off = 0; /* each image's block equals that image processed alone */
    for (int i = 0; i < 3 && pv.data; i++) {
        fm_tensor one = {0}, og = {0};
        CHECK_OK(fm_qwen2vl_preprocess(&imgs[i], 1, &p, &one, &og, err), err);
        CHECK_MSG(one.data && memcmp((char *)pv.data + off, one.data, (size_t)one.nbytes) == 0,
                  "image %d block differs", i);
        off += (size_t)one.nbytes;
        fm_tensor_free(&one), fm_tensor_free(&og);
    }
    CHECK_EQ_INT(pv.nbytes, off);
    fm_tensor_free(&pv), fm_tensor_free(&gt);
    for (int i = 0; i < 3; i++)
        fm_image_free(&imgs[i]);
}

static void test_preprocess_errors(void) {
    fm_qwen2vl_preproc_params p;
    fm_qwen2vl_preproc_params_init(&p);
    fm_image ok = {0}, wide = {0};
    random_image(&ok, 56, 56, 5);
    random_image(&wide, 402, 2, 6);
    fm_tensor pv = {FM_DTYPE_U8, {0}, NULL, 0, NULL}, gt = pv;
    fm_image both[2] = {ok, wide};
    CHECK_STATUS(FM_ERR_IMAGE, fm_qwen2vl_preprocess(both, 2, &p, &pv, &gt, err), err);
    CHECK_CONTAINS(err->msg, "image 1");
    CHECK_CONTAINS(err->msg, "aspect ratio");
    CHECK(pv.dtype == FM_DTYPE_U8 && pv.data == NULL && gt.data == NULL);
    CHECK_EQ_INT(FM_ERR_IMAGE, fm_qwen2vl_preprocess(both, 2, &p, &pv, &gt, NULL));
    fm_image empty = {0};
    CHECK_STATUS(FM_ERR_IMAGE, fm_qwen2vl_preprocess(&empty, 1, &p, &pv, &gt, err), err);
    CHECK_STATUS(FM_ERR_INVALID_ARG, fm_qwen2vl_preprocess(&ok, 0, &p, &pv, &gt, err), err);
    p.do_resize = false;
    fm_image odd = {0};
    random_image(&odd, 60, 56, 7);
    CHECK_STATUS(FM_ERR_IMAGE, fm_qwen2vl_preprocess(&odd, 1, &p, &pv, &gt, err), err);
    CHECK_CONTAINS(err->msg, "multiple");
    CHECK_OK(fm_qwen2vl_preprocess(&ok, 1, &p, &pv, &gt, err), err);
    fm_tensor_free(&pv), fm_tensor_free(&gt);
    p.do_resize = true, p.resample = 2;
    CHECK_STATUS(FM_ERR_UNSUPPORTED, fm_qwen2vl_preprocess(&ok, 1, &p, &pv, &gt, err), err);
    p.resample = 3;
    for (uint64_t k = 1; k < 40; k++) { /* allocation failures: NOMEM, outputs untouched, no leak */
        fm_image two[2] = {ok, odd};
        fm_tensor a = {0}, b = {0};
        fm_fault_set(FM_FAULT_ALLOC, k);
        fm_status st = fm_qwen2vl_preprocess(two, 2, &p, &a, &b, err);
        fm_fault_set(FM_FAULT_ALLOC, 0);
        CHECK_MSG(st == FM_OK || (st == FM_ERR_NOMEM && a.data == NULL && b.data == NULL),
                  "k=%llu: %s", (unsigned long long)k, fm_status_name(st));
        fm_tensor_free(&a), fm_tensor_free(&b);
    }
    fm_image_free(&ok), fm_image_free(&wide), fm_image_free(&odd);
}

/* ---- goldens: Pillow decode + resize, numpy rescale/normalise/reshape ------------------------ */

static uint64_t fnv1a64(const uint8_t *b, size_t n) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

static void pipeline_line(const char *img_name, const char *cfg, const int64_t g[3], long rows,
                          unsigned long long hash, const char *floats) {
    char path[1024];
    const char *dd = imgfx_data_dir();
    fm_image img = {0};
    snprintf(path, sizeof path, "%s/image/%s", dd, img_name);
    CHECK_OK(fm_image_load(path, &img, err), err);
    fm_qwen2vl_preproc_params p;
    fm_qwen2vl_preproc_params_init(&p);
    snprintf(path, sizeof path, "%s/image/%s", dd, cfg);
    CHECK_OK(fm_qwen2vl_preproc_params_load_file(path, &p, err), err);
    fm_tensor pv = {0}, gt = {0};
    CHECK_OK(fm_qwen2vl_preprocess(&img, 1, &p, &pv, &gt, err), err);
    const int64_t *sg = gt.data;
    CHECK_MSG(sg && sg[0] == g[0] && sg[1] == g[1] && sg[2] == g[2] && pv.shape.dims[0] == rows,
              "%s + %s: grid/rows differ", img_name, cfg);
    unsigned long long h = pv.data ? fnv1a64(pv.data, (size_t)pv.nbytes) : 0;
    CHECK_MSG(h == hash, "%s + %s: pixel_values hash %016llx, Pillow+numpy %016llx", img_name, cfg,
              h, hash);
    if (strcmp(floats, "-") != 0 && pv.data) {
        snprintf(path, sizeof path, "%s/image/%s", dd, floats);
        size_t len = 0;
        uint8_t *ref = imgfx_read_file(path, &len);
        CHECK_MSG(ref && len == pv.nbytes && memcmp(ref, pv.data, len) == 0, "%s: floats differ",
                  floats);
        free(ref);
    }
    fm_tensor_free(&pv), fm_tensor_free(&gt);
    fm_image_free(&img);
}

static void test_pipeline_goldens(void) {
    char path[1024];
    snprintf(path, sizeof path, "%s/image/pipeline.txt", imgfx_data_dir());
    size_t len = 0;
    uint8_t *list = imgfx_read_file(path, &len);
    CHECK_MSG(list != NULL, "%s missing", path);
    if (!list) return;
    char *text = malloc(len + 1);
    memcpy(text, list, len);
    text[len] = 0;
    int n = 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        char img[256], cfg[256], fl[256];
        long long g0, g1, g2;
        long rows;
        unsigned long long hash;
        if (sscanf(line, "%255s %255s %lld %lld %lld %ld %llx %255s", img, cfg, &g0, &g1, &g2,
                   &rows, &hash, fl) != 8)
            continue;
        int64_t g[3] = {g0, g1, g2};
        pipeline_line(img, cfg, g, rows, hash, fl);
        n++;
    }
    CHECK_MSG(n >= 4, "only %d pipeline goldens", n);
    free(text), free(list);
}

int main(void) {
    RUN(test_smart_resize_vectors);
    RUN(test_smart_resize_rounding_and_branches);
    RUN(test_params_defaults_and_hub);
    RUN(test_params_errors);
    RUN(test_params_load_dir);
    RUN(test_flatten_vs_formula);
    RUN(test_normalisation_exact);
    RUN(test_multi_image_concat);
    RUN(test_preprocess_errors);
    RUN(test_pipeline_goldens);
    TEST_END();
}
