/* Bicubic resampling identical to Pillow's Image.resize(..., BICUBIC) on 8-bit data (spec
 * qwen2-vl.md 3.5: double Keys weights, 22-bit fixed point, two passes, uint8 intermediate). */
#include "fusemap/image.h"

#include <math.h>
#include <string.h>

#define RS_PRECISION_BITS 22
#define RS_HALF (1 << (RS_PRECISION_BITS - 1))

/* Per-axis filter table: output o reads `count[o]` inputs from `first[o]` with fixed-point
 * weights w[o * ksize + j]. All arrays owned; released by axis_free. */
typedef struct rs_axis {
    uint32_t out, ksize;
    int32_t *first;
    int32_t *count;
    int32_t *w;
} rs_axis;

static void axis_free(rs_axis *a) {
    fm_free(a->first);
    fm_free(a->count);
    fm_free(a->w);
    memset(a, 0, sizeof *a);
}

/* Keys cubic convolution kernel with a = -0.5 (Pillow's BICUBIC), support 2. The operation
 * order is the one Pillow evaluates, so the doubles match exactly. */
static double keys_cubic(double x) {
    const double a = -0.5;
    if (x < 0.0) x = -x;
    if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
    if (x < 2.0) return (((x - 5.0) * x + 8.0) * x - 4.0) * a;
    return 0.0;
}

/* Double weights for output o (normalised to sum 1), converted to fixed point rounding half
 * away from zero. `tmp` holds ksize doubles. */
static void axis_fill_one(rs_axis *a, uint32_t in, uint32_t o, double scale, double support,
                          double ss, double *tmp) {
    double center = (o + 0.5) * scale;
    int xmin = (int)(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    int xmax = (int)(center + support + 0.5);
    if (xmax > (int)in) xmax = (int)in;
    xmax -= xmin;
    double sum = 0.0;
    for (int j = 0; j < xmax; j++) {
        tmp[j] = keys_cubic(((double)(j + xmin) - center + 0.5) * ss);
        sum += tmp[j];
    }
    int32_t *w = a->w + (size_t)o * a->ksize;
    for (uint32_t j = 0; j < a->ksize; j++) {
        double v = (int)j < xmax ? (sum != 0.0 ? tmp[j] / sum : tmp[j]) : 0.0;
        double f = v * (double)(1 << RS_PRECISION_BITS);
        w[j] = (int32_t)(v < 0 ? f - 0.5 : f + 0.5);
    }
    a->first[o] = xmin;
    a->count[o] = xmax < 0 ? 0 : xmax;
}

static fm_status axis_build(uint32_t in, uint32_t out, rs_axis *a, fm_error *err) {
    memset(a, 0, sizeof *a);
    /* Pillow takes the input extent from a float box: (float)in, exact below 2^24. */
    double scale = (double)(float)in / (double)out;
    double fscale = scale < 1.0 ? 1.0 : scale;
    double support = 2.0 * fscale;
    uint64_t ksize = (uint64_t)ceil(support) * 2 + 1, nw;
    if (fm_mul_u64(ksize, out, &nw) != 0 || nw > (uint64_t)SIZE_MAX / sizeof(int32_t) / 2)
        return fm_error_set(err, FM_ERR_OVERFLOW, "bicubic resize %u -> %u: filter table too large",
                            in, out);
    a->out = out;
    a->ksize = (uint32_t)ksize;
    a->first = fm_malloc((size_t)out * sizeof(int32_t));
    a->count = fm_malloc((size_t)out * sizeof(int32_t));
    a->w = fm_malloc((size_t)nw * sizeof(int32_t));
    double *tmp = fm_malloc((size_t)ksize * sizeof(double));
    if (!a->first || !a->count || !a->w || !tmp) {
        fm_free(tmp);
        axis_free(a);
        return fm_error_set(err, FM_ERR_NOMEM, "bicubic resize %u -> %u: filter table", in, out);
    }
    for (uint32_t o = 0; o < out; o++)
        axis_fill_one(a, in, o, scale, support, 1.0 / fscale, tmp);
    fm_free(tmp);
    return FM_OK;
}

/* Pillow's clip8: the accumulator (already holding the 0.5 rounding term) to a byte. */
static inline uint8_t clip8(int32_t acc) {
    if (acc >= (1 << RS_PRECISION_BITS << 8)) return 255;
    if (acc <= 0) return 0;
    return (uint8_t)(acc >> RS_PRECISION_BITS);
}

/* Horizontal pass over `rows` rows: src rows of src_w pixels -> dst rows of a->out pixels. */
static void pass_horizontal(const uint8_t *src, uint32_t src_w, uint8_t *dst, uint32_t rows,
                            uint32_t ch, const rs_axis *a) {
    for (uint32_t y = 0; y < rows; y++) {
        const uint8_t *s = src + (size_t)y * src_w * ch;
        uint8_t *d = dst + (size_t)y * a->out * ch;
        for (uint32_t o = 0; o < a->out; o++) {
            const int32_t *k = a->w + (size_t)o * a->ksize;
            const uint8_t *sp = s + (size_t)a->first[o] * ch;
            int32_t n = a->count[o];
            for (uint32_t c = 0; c < ch; c++) {
                int32_t acc = RS_HALF;
                for (int32_t j = 0; j < n; j++)
                    acc += (int32_t)sp[(size_t)j * ch + c] * k[j];
                d[(size_t)o * ch + c] = clip8(acc);
            }
        }
    }
}

/* Vertical pass: src rows (row_len bytes each; a->first is relative to src) -> a->out rows.
 * `acc` holds row_len accumulators (integer sums: the order of addition is irrelevant). */
static void pass_vertical(const uint8_t *src, size_t row_len, uint8_t *dst, const rs_axis *a,
                          int32_t *acc) {
    for (uint32_t o = 0; o < a->out; o++) {
        const int32_t *k = a->w + (size_t)o * a->ksize;
        for (size_t i = 0; i < row_len; i++)
            acc[i] = RS_HALF;
        for (int32_t j = 0; j < a->count[o]; j++) {
            const uint8_t *s = src + (size_t)(a->first[o] + j) * row_len;
            int32_t kj = k[j];
            for (size_t i = 0; i < row_len; i++)
                acc[i] += (int32_t)s[i] * kj;
        }
        uint8_t *d = dst + (size_t)o * row_len;
        for (size_t i = 0; i < row_len; i++)
            d[i] = clip8(acc[i]);
    }
}

static fm_status check_args(const uint8_t *src, uint32_t sw, uint32_t sh, uint32_t ch,
                            const uint8_t *dst, uint32_t dw, uint32_t dh, fm_error *err) {
    if (!src || !dst) return fm_error_set(err, FM_ERR_INVALID_ARG, "bicubic resize: NULL buffer");
    if (ch < 1 || ch > 4)
        return fm_error_set(err, FM_ERR_INVALID_ARG, "bicubic resize: %u channels (1..4 supported)",
                            ch);
    if (!sw || !sh || !dw || !dh)
        return fm_error_set(err, FM_ERR_INVALID_ARG, "bicubic resize: empty size %ux%u -> %ux%u",
                            sw, sh, dw, dh);
    uint64_t a, b;
    if (sw > INT32_MAX || sh > INT32_MAX || dw > INT32_MAX || dh > INT32_MAX ||
        fm_mul_u64((uint64_t)sw * ch, sh, &a) != 0 || fm_mul_u64((uint64_t)dw * ch, dh, &b) != 0 ||
        a > SIZE_MAX / 4 || b > SIZE_MAX / 4)
        return fm_error_set(err, FM_ERR_OVERFLOW, "bicubic resize: size %ux%u -> %ux%u too large",
                            sw, sh, dw, dh);
    return FM_OK;
}

/* Both passes: horizontal into a temporary restricted to the source rows the vertical
 * filter reads (as Pillow), then vertical into dst. */
static fm_status resize_both(const uint8_t *src, uint32_t sw, uint32_t ch, uint8_t *dst,
                             const rs_axis *ah, const rs_axis *av, fm_error *err) {
    uint32_t last = av->out - 1;
    int32_t y0 = av->first[0], y1 = av->first[last] + av->count[last];
    size_t row_len = (size_t)ah->out * ch;
    uint8_t *tmp = fm_malloc(row_len * (size_t)(y1 - y0));
    int32_t *acc = fm_malloc(row_len * sizeof(int32_t));
    if (!tmp || !acc) {
        fm_free(tmp);
        fm_free(acc);
        return fm_error_set(err, FM_ERR_NOMEM, "bicubic resize: %zu-byte intermediate",
                            row_len * (size_t)(y1 - y0));
    }
    pass_horizontal(src + (size_t)y0 * sw * ch, sw, tmp, (uint32_t)(y1 - y0), ch, ah);
    rs_axis shifted = *av; /* same tables, first[] made relative to row y0 */
    int32_t *first = fm_malloc((size_t)av->out * sizeof(int32_t));
    if (!first) {
        fm_free(tmp);
        fm_free(acc);
        return fm_error_set(err, FM_ERR_NOMEM, "bicubic resize: row table");
    }
    for (uint32_t o = 0; o < av->out; o++)
        first[o] = av->first[o] - y0;
    shifted.first = first;
    pass_vertical(tmp, row_len, dst, &shifted, acc);
    fm_free(first);
    fm_free(tmp);
    fm_free(acc);
    return FM_OK;
}

fm_status fm_resize_bicubic_u8(const uint8_t *src, uint32_t src_w, uint32_t src_h,
                               uint32_t channels, uint8_t *dst, uint32_t dst_w, uint32_t dst_h,
                               fm_error *err) {
    fm_status st = check_args(src, src_w, src_h, channels, dst, dst_w, dst_h, err);
    if (st != FM_OK) return st;
    bool need_h = dst_w != src_w, need_v = dst_h != src_h;
    if (!need_h && !need_v) {
        memcpy(dst, src, (size_t)src_w * src_h * channels);
        return FM_OK;
    }
    rs_axis ah = {0}, av = {0};
    if (need_h && (st = axis_build(src_w, dst_w, &ah, err)) != FM_OK) return st;
    if (need_v && (st = axis_build(src_h, dst_h, &av, err)) != FM_OK) {
        axis_free(&ah);
        return st;
    }
    if (need_h && need_v) {
        st = resize_both(src, src_w, channels, dst, &ah, &av, err);
    } else if (need_h) {
        pass_horizontal(src, src_w, dst, src_h, channels, &ah);
    } else {
        size_t row_len = (size_t)src_w * channels;
        int32_t *acc = fm_malloc(row_len * sizeof(int32_t));
        if (!acc)
            st = fm_error_set(err, FM_ERR_NOMEM, "bicubic resize: accumulator row");
        else
            pass_vertical(src, row_len, dst, &av, acc);
        fm_free(acc);
    }
    axis_free(&ah);
    axis_free(&av);
    return st;
}

fm_status fm_image_resize_bicubic(const fm_image *src, uint32_t width, uint32_t height,
                                  fm_image *out, fm_error *err) {
    if (!src || !src->data || !out)
        return fm_error_set(err, FM_ERR_INVALID_ARG, "fm_image_resize_bicubic: NULL image");
    fm_image r;
    fm_status st = fm_image_alloc(&r, width, height, err);
    if (st != FM_OK) return st;
    st = fm_resize_bicubic_u8(src->data, src->width, src->height, 3, r.data, width, height, err);
    if (st != FM_OK) {
        fm_image_free(&r);
        return st;
    }
    r.orientation = src->orientation;
    *out = r;
    return FM_OK;
}
