/* Qwen2-VL image preprocessing, PIL path (spec qwen2-vl.md 3): smart_resize,
 * preprocessor_config.json, rescale/normalise and patch flattening in spatial-merge order. */
#include "core/testing.h"
#include "fusemap/image.h"
#include "fusemap/qwen2_vl.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#define SR_MAX_RATIO 200.0

/* ---- smart_resize ----------------------------------------------------------------------- */

fm_status fm_smart_resize(int64_t height, int64_t width, int64_t factor, int64_t min_pixels,
                          int64_t max_pixels, int64_t *out_height, int64_t *out_width,
                          fm_error *err) {
    /* Bounds keep every product below 2^53, so the doubles below are exact where Python's
     * integers are, and true division is correctly rounded in both. */
    const int64_t lim = (int64_t)1 << 26;
    if (height <= 0 || width <= 0 || height > lim || width > lim || factor <= 0 || factor > lim)
        return fm_error_set(err, FM_ERR_INVALID_ARG,
                            "smart_resize: invalid size %lldx%lld or factor %lld",
                            (long long)height, (long long)width, (long long)factor);
    if (min_pixels <= 0 || max_pixels <= 0 || min_pixels > max_pixels ||
        max_pixels > ((int64_t)1 << 52))
        return fm_error_set(err, FM_ERR_INVALID_ARG,
                            "smart_resize: invalid pixel limits min %lld max %lld",
                            (long long)min_pixels, (long long)max_pixels);
    double h = (double)height, w = (double)width, f = (double)factor;
    double ratio = (h > w ? h : w) / (h > w ? w : h);
    if (ratio > SR_MAX_RATIO)
        return fm_error_set(err, FM_ERR_IMAGE,
                            "absolute aspect ratio must be smaller than 200, got %.17g (%lldx%lld)",
                            ratio, (long long)height, (long long)width);
    /* rint: round half to even in the default rounding mode, like Python's round(). */
    int64_t hb = (int64_t)rint(h / f) * factor, wb = (int64_t)rint(w / f) * factor;
    if (hb * wb > max_pixels) {
        double beta = sqrt((h * w) / (double)max_pixels);
        hb = (int64_t)floor(h / beta / f) * factor;
        wb = (int64_t)floor(w / beta / f) * factor;
        if (hb < factor) hb = factor;
        if (wb < factor) wb = factor;
    } else if (hb * wb < min_pixels) {
        double beta = sqrt((double)min_pixels / (h * w));
        hb = (int64_t)ceil(h * beta / f) * factor;
        wb = (int64_t)ceil(w * beta / f) * factor;
    }
    if (hb <= 0 || wb <= 0 || hb > UINT32_MAX || wb > UINT32_MAX)
        return fm_error_set(err, FM_ERR_INVALID_ARG,
                            "smart_resize: %lldx%lld gives an unusable target %lldx%lld",
                            (long long)height, (long long)width, (long long)hb, (long long)wb);
    if (out_height) *out_height = hb;
    if (out_width) *out_width = wb;
    return FM_OK;
}

/* ---- parameters ------------------------------------------------------------------------- */

void fm_qwen2vl_preproc_params_init(fm_qwen2vl_preproc_params *p) {
    static const double mean[3] = {0.48145466, 0.4578275, 0.40821073};
    static const double std[3] = {0.26862954, 0.26130258, 0.27577711};
    memset(p, 0, sizeof *p);
    p->do_resize = true;
    p->resample = 3;
    p->min_pixels = 56 * 56;
    p->max_pixels = 28 * 28 * 1280;
    p->do_rescale = true;
    p->rescale_factor = 1.0 / 255.0;
    p->do_normalize = true;
    memcpy(p->image_mean, mean, sizeof mean);
    memcpy(p->image_std, std, sizeof std);
    p->patch_size = 14;
    p->temporal_patch_size = 2;
    p->merge_size = 2;
}

fm_status fm_qwen2vl_preproc_params_validate(const fm_qwen2vl_preproc_params *p, fm_error *err) {
    if (!p) return fm_error_set(err, FM_ERR_INVALID_ARG, "preprocessor params: NULL");
    const int64_t big = 1 << 16;
    if (p->patch_size <= 0 || p->patch_size > big || p->merge_size <= 0 || p->merge_size > big ||
        p->temporal_patch_size <= 0 || p->temporal_patch_size > big ||
        p->patch_size * p->merge_size > big)
        return fm_error_set(
            err, FM_ERR_CONFIG,
            "preprocessor params: patch_size %lld, merge_size %lld, temporal_patch_size "
            "%lld must be positive and small",
            (long long)p->patch_size, (long long)p->merge_size, (long long)p->temporal_patch_size);
    if (p->min_pixels <= 0 || p->max_pixels <= 0 || p->min_pixels > p->max_pixels ||
        p->max_pixels > (int64_t)FM_IMAGE_MAX_PIXELS)
        return fm_error_set(
            err, FM_ERR_CONFIG,
            "preprocessor params: min_pixels %lld / max_pixels %lld must satisfy 0 < "
            "min <= max <= %llu",
            (long long)p->min_pixels, (long long)p->max_pixels, FM_IMAGE_MAX_PIXELS);
    if (p->resample != 3)
        return fm_error_set(err, FM_ERR_UNSUPPORTED,
                            "preprocessor params: resample %d is not supported (only 3 = BICUBIC)",
                            p->resample);
    for (int c = 0; c < 3; c++) {
        if (!isfinite(p->image_mean[c]) || !isfinite(p->image_std[c]) ||
            (float)p->image_std[c] == 0.0f)
            return fm_error_set(err, FM_ERR_CONFIG,
                                "preprocessor params: image_mean/image_std[%d] = %g/%g invalid", c,
                                p->image_mean[c], p->image_std[c]);
    }
    if (!isfinite(p->rescale_factor))
        return fm_error_set(err, FM_ERR_CONFIG,
                            "preprocessor params: rescale_factor is not finite");
    return FM_OK;
}

/* Reads an integer member if present. */
static fm_status json_opt_int(json_t *o, const char *key, const char *origin, int64_t *out,
                              fm_error *err) {
    json_t *v = json_object_get(o, key);
    if (!v) return FM_OK;
    if (!json_is_integer(v))
        return fm_error_set(err, FM_ERR_CONFIG, "%s: \"%s\" must be an integer", origin, key);
    *out = (int64_t)json_integer_value(v);
    return FM_OK;
}

static fm_status json_opt_bool(json_t *o, const char *key, const char *origin, bool *out,
                               fm_error *err) {
    json_t *v = json_object_get(o, key);
    if (!v) return FM_OK;
    if (!json_is_boolean(v))
        return fm_error_set(err, FM_ERR_CONFIG, "%s: \"%s\" must be true or false", origin, key);
    *out = json_is_true(v);
    return FM_OK;
}

static fm_status json_opt_num(json_t *o, const char *key, const char *origin, double *out,
                              fm_error *err) {
    json_t *v = json_object_get(o, key);
    if (!v) return FM_OK;
    if (!json_is_number(v))
        return fm_error_set(err, FM_ERR_CONFIG, "%s: \"%s\" must be a number", origin, key);
    *out = json_number_value(v);
    return FM_OK;
}

/* image_mean / image_std: three numbers, or one number for all channels. */
static fm_status json_opt_triple(json_t *o, const char *key, const char *origin, double out[3],
                                 fm_error *err) {
    json_t *v = json_object_get(o, key);
    if (!v) return FM_OK;
    if (json_is_number(v)) {
        out[0] = out[1] = out[2] = json_number_value(v);
        return FM_OK;
    }
    if (!json_is_array(v) || json_array_size(v) != 3)
        return fm_error_set(err, FM_ERR_CONFIG,
                            "%s: \"%s\" must be a number or a list of 3 numbers", origin, key);
    for (size_t i = 0; i < 3; i++) {
        json_t *e = json_array_get(v, i);
        if (!json_is_number(e))
            return fm_error_set(err, FM_ERR_CONFIG, "%s: \"%s\"[%zu] must be a number", origin, key,
                                i);
        out[i] = json_number_value(e);
    }
    return FM_OK;
}

/* size: {"shortest_edge": min, "longest_edge": max}; both keys required (as transformers
 * checks) unless min_pixels and max_pixels are both given, which replace them anyway. */
static fm_status json_size(json_t *root, const char *origin, fm_qwen2vl_preproc_params *q,
                           fm_error *err) {
    json_t *size = json_object_get(root, "size");
    if (!size || json_is_null(size)) return FM_OK;
    bool both_px = json_object_get(root, "min_pixels") && json_object_get(root, "max_pixels");
    if (!json_is_object(size))
        return fm_error_set(err, FM_ERR_CONFIG, "%s: \"size\" must be an object", origin);
    if (!json_object_get(size, "shortest_edge") || !json_object_get(size, "longest_edge")) {
        if (both_px) return FM_OK;
        return fm_error_set(err, FM_ERR_CONFIG,
                            "%s: \"size\" must contain \"shortest_edge\" and \"longest_edge\"",
                            origin);
    }
    fm_status st = json_opt_int(size, "shortest_edge", origin, &q->min_pixels, err);
    if (st == FM_OK) st = json_opt_int(size, "longest_edge", origin, &q->max_pixels, err);
    return st;
}

/* Every recognised key of a parsed document into q. */
static fm_status params_from_json(json_t *root, const char *origin, fm_qwen2vl_preproc_params *q,
                                  fm_error *err) {
    int64_t resample = q->resample;
    bool convert_rgb = true;
    fm_status st = json_size(root, origin, q, err);
    if (st == FM_OK) st = json_opt_int(root, "min_pixels", origin, &q->min_pixels, err);
    if (st == FM_OK) st = json_opt_int(root, "max_pixels", origin, &q->max_pixels, err);
    if (st == FM_OK) st = json_opt_int(root, "patch_size", origin, &q->patch_size, err);
    if (st == FM_OK)
        st = json_opt_int(root, "temporal_patch_size", origin, &q->temporal_patch_size, err);
    if (st == FM_OK) st = json_opt_int(root, "merge_size", origin, &q->merge_size, err);
    if (st == FM_OK) st = json_opt_int(root, "resample", origin, &resample, err);
    if (st == FM_OK) st = json_opt_num(root, "rescale_factor", origin, &q->rescale_factor, err);
    if (st == FM_OK) st = json_opt_triple(root, "image_mean", origin, q->image_mean, err);
    if (st == FM_OK) st = json_opt_triple(root, "image_std", origin, q->image_std, err);
    if (st == FM_OK) st = json_opt_bool(root, "do_resize", origin, &q->do_resize, err);
    if (st == FM_OK) st = json_opt_bool(root, "do_rescale", origin, &q->do_rescale, err);
    if (st == FM_OK) st = json_opt_bool(root, "do_normalize", origin, &q->do_normalize, err);
    if (st == FM_OK) st = json_opt_bool(root, "do_convert_rgb", origin, &convert_rgb, err);
    if (st != FM_OK) return st;
    if (!convert_rgb)
        return fm_error_set(err, FM_ERR_UNSUPPORTED,
                            "%s: do_convert_rgb false is not supported (images are decoded to RGB)",
                            origin);
    if (resample < INT32_MIN || resample > INT32_MAX)
        return fm_error_set(err, FM_ERR_CONFIG, "%s: \"resample\" out of range", origin);
    q->resample = (int)resample;
    st = fm_qwen2vl_preproc_params_validate(q, err);
    if (st != FM_OK) fm_error_prefix(err, "%s", origin);
    return st;
}

fm_status fm_qwen2vl_preproc_params_parse(const char *text, size_t len, const char *origin,
                                          fm_qwen2vl_preproc_params *p, fm_error *err) {
    if (!origin) origin = "preprocessor_config.json";
    if (!text || !p) return fm_error_set(err, FM_ERR_INVALID_ARG, "%s: NULL argument", origin);
    json_error_t je;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    if (!root)
        return fm_error_set(err, FM_ERR_JSON, "%s:%d:%d: %s", origin, je.line, je.column, je.text);
    fm_status st;
    if (!json_is_object(root)) {
        st = fm_error_set(err, FM_ERR_CONFIG, "%s: top level must be a JSON object", origin);
    } else {
        fm_qwen2vl_preproc_params q = *p; /* *p changes only on success */
        st = params_from_json(root, origin, &q, err);
        if (st == FM_OK) *p = q;
    }
    json_decref(root);
    return st;
}

fm_status fm_qwen2vl_preproc_params_load_file(const char *path, fm_qwen2vl_preproc_params *p,
                                              fm_error *err) {
    if (!path || !p)
        return fm_error_set(err, FM_ERR_INVALID_ARG, "preprocessor config: NULL argument");
    FILE *f = fm_fault_hit(FM_FAULT_OPEN) ? (errno = EIO, NULL) : fopen(path, "rb");
    if (!f) return fm_error_set(err, FM_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    char *buf = NULL;
    size_t len = 0, cap = 0;
    fm_status st = FM_OK;
    for (;;) {
        if (len == cap) {
            if (cap >= (16u << 20)) {
                st = fm_error_set(err, FM_ERR_LIMIT, "%s: larger than 16 MiB", path);
                break;
            }
            char *nb = fm_realloc(buf, cap = cap ? cap * 2 : 4096);
            if (!nb) {
                st = fm_error_set(err, FM_ERR_NOMEM, "%s: read buffer", path);
                break;
            }
            buf = nb;
        }
        size_t r = fread(buf + len, 1, cap - len, f);
        len += r;
        if (r == 0) {
            if (ferror(f)) st = fm_error_set(err, FM_ERR_IO, "%s: read error", path);
            break;
        }
    }
    fclose(f);
    if (st == FM_OK) st = fm_qwen2vl_preproc_params_parse(buf, len, path, p, err);
    fm_free(buf);
    return st;
}

fm_status fm_qwen2vl_preproc_params_apply_dir(const char *dir, fm_qwen2vl_preproc_params *p,
                                              bool *found, fm_error *err) {
    if (!dir || !p)
        return fm_error_set(err, FM_ERR_INVALID_ARG, "preprocessor config: NULL argument");
    if (found) *found = false;
    size_t n = strlen(dir) + sizeof "/preprocessor_config.json";
    char *path = fm_malloc(n);
    if (!path) return fm_error_set(err, FM_ERR_NOMEM, "%s: path buffer", dir);
    snprintf(path, n, "%s/preprocessor_config.json", dir);
    fm_status st = FM_OK;
    struct stat sb;
    if (stat(path, &sb) == 0 || errno != ENOENT) { /* absent: defaults; anything else: try */
        st = fm_qwen2vl_preproc_params_load_file(path, p, err);
        if (st == FM_OK && found) *found = true;
    }
    fm_free(path);
    return st;
}

fm_status fm_qwen2vl_preproc_params_load(const char *dir, fm_qwen2vl_preproc_params *p, bool *found,
                                         fm_error *err) {
    if (!dir || !p)
        return fm_error_set(err, FM_ERR_INVALID_ARG, "preprocessor config: NULL argument");
    fm_qwen2vl_preproc_params_init(p);
    return fm_qwen2vl_preproc_params_apply_dir(dir, p, found, err);
}

/* ---- geometry ---------------------------------------------------------------------------- */

fm_status fm_qwen2vl_image_geometry(uint32_t width, uint32_t height,
                                    const fm_qwen2vl_preproc_params *p, int64_t *out_h,
                                    int64_t *out_w, int64_t grid_thw[3], fm_error *err) {
    fm_status st = fm_qwen2vl_preproc_params_validate(p, err);
    if (st != FM_OK) return st;
    int64_t factor = p->patch_size * p->merge_size, h = height, w = width;
    if (p->do_resize) {
        st = fm_smart_resize(height, width, factor, p->min_pixels, p->max_pixels, &h, &w, err);
        if (st != FM_OK) return st;
    } else if (height == 0 || width == 0 || height % factor != 0 || width % factor != 0) {
        return fm_error_set(
            err, FM_ERR_IMAGE,
            "image of %ux%u (HxW) is not a multiple of patch_size*merge_size = %lld and "
            "do_resize is false",
            height, width, (long long)factor);
    }
    if (out_h) *out_h = h;
    if (out_w) *out_w = w;
    if (grid_thw) {
        grid_thw[0] = 1; /* one still frame, repeated to temporal_patch_size */
        grid_thw[1] = h / p->patch_size;
        grid_thw[2] = w / p->patch_size;
    }
    return FM_OK;
}

/* ---- pixel values ---------------------------------------------------------------------- */

/* The normalised value of every (channel, byte) pair, computed in the PIL backend's order
 * (spec 3.6): x = f32(f64(u) * rescale); y = f32(f32(x - f32(mean)) / f32(std)). */
typedef struct norm_lut {
    float v[3][256];
} norm_lut;

static void build_lut(const fm_qwen2vl_preproc_params *p, norm_lut *L) {
    float(*lut)[256] = L->v;
    for (int c = 0; c < 3; c++) {
        float mean = (float)p->image_mean[c], sd = (float)p->image_std[c];
        for (int u = 0; u < 256; u++) {
            float x = p->do_rescale ? (float)((double)u * p->rescale_factor) : (float)u;
            if (p->do_normalize) {
                float d = x - mean;
                x = d / sd;
            }
            lut[c][u] = x;
        }
    }
}

/* Rows of one image (H x W RGB8, already at target size) in spatial-merge order (spec 3.7):
 * row r = ((bh*(gw/m) + bw)*m + ih)*m + iw, column k = ((c*T + tt)*P + py)*P + px, every
 * temporal copy tt holding the same frame. */
static void flatten_image(const uint8_t *rgb, int64_t w, const int64_t grid[3],
                          const fm_qwen2vl_preproc_params *p, const norm_lut *L, float *out) {
    const float(*lut)[256] = L->v;
    const int64_t P = p->patch_size, m = p->merge_size, T = p->temporal_patch_size;
    const int64_t gh = grid[1], gw = grid[2], K = 3 * T * P * P;
    float *row = out;
    for (int64_t bh = 0; bh < gh / m; bh++)
        for (int64_t bw = 0; bw < gw / m; bw++)
            for (int64_t ih = 0; ih < m; ih++)
                for (int64_t iw = 0; iw < m; iw++, row += K) {
                    int64_t y0 = (bh * m + ih) * P, x0 = (bw * m + iw) * P;
                    for (int64_t c = 0; c < 3; c++) {
                        float *dst = row + c * T * P * P;
                        for (int64_t py = 0; py < P; py++) {
                            const uint8_t *src = rgb + ((y0 + py) * w + x0) * 3 + c;
                            for (int64_t px = 0; px < P; px++)
                                dst[py * P + px] = lut[c][src[px * 3]];
                        }
                        for (int64_t tt = 1; tt < T; tt++)
                            memcpy(dst + tt * P * P, dst, (size_t)(P * P) * sizeof(float));
                    }
                }
}

/* Target sizes and grids of all images; *rows_out = total rows. geo[i] = {h, w}. */
static fm_status plan_all(const fm_image *imgs, size_t n, const fm_qwen2vl_preproc_params *p,
                          int64_t (*geo)[2], int64_t *grids, uint64_t *rows_out, fm_error *err) {
    uint64_t rows = 0;
    for (size_t i = 0; i < n; i++) {
        if (!imgs[i].data || !imgs[i].width || !imgs[i].height)
            return fm_error_set(err, FM_ERR_IMAGE, "image %zu: empty image", i);
        fm_status st = fm_qwen2vl_image_geometry(imgs[i].width, imgs[i].height, p, &geo[i][0],
                                                 &geo[i][1], grids + 3 * i, err);
        if (st != FM_OK) {
            fm_error_prefix(err, "image %zu (%ux%u)", i, imgs[i].width, imgs[i].height);
            return st;
        }
        if (geo[i][0] * geo[i][1] > (int64_t)FM_IMAGE_MAX_PIXELS)
            return fm_error_set(err, FM_ERR_IMAGE,
                                "image %zu: resize target %lldx%lld exceeds %llu pixels", i,
                                (long long)geo[i][0], (long long)geo[i][1], FM_IMAGE_MAX_PIXELS);
        rows += (uint64_t)(grids[3 * i] * grids[3 * i + 1] * grids[3 * i + 2]);
    }
    *rows_out = rows;
    return FM_OK;
}

/* Resizes (when needed) and flattens image i into `out` (its first row). */
static fm_status process_one(const fm_image *img, size_t i, const int64_t geo[2],
                             const int64_t grid[3], const fm_qwen2vl_preproc_params *p,
                             const norm_lut *lut, float *out, fm_error *err) {
    fm_image resized = {0};
    const uint8_t *rgb = img->data;
    if (geo[0] != img->height || geo[1] != img->width) {
        fm_status st =
            fm_image_resize_bicubic(img, (uint32_t)geo[1], (uint32_t)geo[0], &resized, err);
        if (st != FM_OK) {
            fm_error_prefix(err, "image %zu", i);
            return st;
        }
        rgb = resized.data;
    }
    flatten_image(rgb, geo[1], grid, p, lut, out);
    fm_image_free(&resized);
    return FM_OK;
}

/* Allocates the two output tensors. */
static fm_status alloc_outputs(uint64_t rows, size_t n, int64_t K, fm_tensor *pv, fm_tensor *gt,
                               fm_error *err) {
    fm_shape s;
    int64_t dims[2] = {(int64_t)rows, K};
    fm_shape_make(&s, 2, dims);
    fm_status st = fm_tensor_alloc(pv, FM_DTYPE_F32, &s, err);
    if (st != FM_OK) {
        fm_error_prefix(err, "pixel_values [%llu, %lld]", (unsigned long long)rows, (long long)K);
        return st;
    }
    int64_t gdims[2] = {(int64_t)n, 3};
    fm_shape_make(&s, 2, gdims);
    st = fm_tensor_alloc(gt, FM_DTYPE_I64, &s, err);
    if (st != FM_OK) {
        fm_tensor_free(pv);
        fm_error_prefix(err, "image_grid_thw");
        return st;
    }
    return FM_OK;
}

fm_status fm_qwen2vl_preprocess(const fm_image *imgs, size_t n, const fm_qwen2vl_preproc_params *p,
                                fm_tensor *pixel_values, fm_tensor *grid_thw, fm_error *err) {
    if (!imgs || n == 0 || !pixel_values || !grid_thw)
        return fm_error_set(err, FM_ERR_INVALID_ARG,
                            "qwen2-vl preprocess: no images or NULL output");
    fm_status st = fm_qwen2vl_preproc_params_validate(p, err);
    if (st != FM_OK) return st;
    if (n > SIZE_MAX / (5 * sizeof(int64_t)))
        return fm_error_set(err, FM_ERR_OVERFLOW, "qwen2-vl preprocess: %zu images", n);
    int64_t(*geo)[2] = fm_malloc(n * sizeof *geo);
    int64_t *grids = fm_malloc(n * 3 * sizeof *grids);
    uint64_t rows = 0;
    fm_tensor pv = {0}, gt = {0};
    const int64_t K = 3 * p->temporal_patch_size * p->patch_size * p->patch_size;
    if (!geo || !grids)
        st = fm_error_set(err, FM_ERR_NOMEM, "qwen2-vl preprocess: %zu image plans", n);
    if (st == FM_OK) st = plan_all(imgs, n, p, geo, grids, &rows, err);
    if (st == FM_OK) st = alloc_outputs(rows, n, K, &pv, &gt, err);
    if (st == FM_OK) {
        norm_lut lut;
        build_lut(p, &lut);
        float *out = pv.data;
        for (size_t i = 0; i < n && st == FM_OK; i++) {
            st = process_one(&imgs[i], i, geo[i], grids + 3 * i, p, &lut, out, err);
            out += (size_t)(grids[3 * i] * grids[3 * i + 1] * grids[3 * i + 2] * K);
        }
        if (st == FM_OK) memcpy(gt.data, grids, n * 3 * sizeof *grids);
    }
    fm_free(geo);
    fm_free(grids);
    if (st != FM_OK) {
        fm_tensor_free(&pv);
        fm_tensor_free(&gt);
        return st;
    }
    *pixel_values = pv;
    *grid_thw = gt;
    return FM_OK;
}
