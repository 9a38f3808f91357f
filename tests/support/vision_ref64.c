/* Naive float64 Qwen2-VL vision forward for the tests: written from the spec independently of
 * the library kernels (no BLAS, no shared helpers), every step in plain double loops. */
#include "vision_ref64.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct ref_dims {
    int64_t n, d, hd, heads, mlp, k, m2;
} ref_dims;

/* y[r][o] = sum_i x[r][i] * W[o][i] + b[o]; W float (the model's weights), x and y double. */
static void lin(double *y, const double *x, const float *w, const float *b, int64_t rows,
                int64_t out, int64_t in) {
    for (int64_t r = 0; r < rows; r++)
        for (int64_t o = 0; o < out; o++) {
            double acc = b ? (double)b[o] : 0.0;
            for (int64_t i = 0; i < in; i++) acc += x[r * in + i] * (double)w[o * in + i];
            y[r * out + o] = acc;
        }
}

static void layer_norm(double *y, const double *x, const float *g, const float *b, int64_t rows,
                       int64_t dim, double eps) {
    for (int64_t r = 0; r < rows; r++) {
        double mean = 0.0, var = 0.0;
        for (int64_t i = 0; i < dim; i++) mean += x[r * dim + i];
        mean /= (double)dim;
        for (int64_t i = 0; i < dim; i++) var += (x[r * dim + i] - mean) * (x[r * dim + i] - mean);
        var /= (double)dim;
        for (int64_t i = 0; i < dim; i++)
            y[r * dim + i] = (x[r * dim + i] - mean) / sqrt(var + eps) * (double)g[i] + (double)b[i];
    }
}

static double act64(double x, int act) {
    switch (act) {
    case FM_ACT_QUICK_GELU: return x / (1.0 + exp(-(double)1.702f * x));
    case FM_ACT_GELU: return 0.5 * x * (1.0 + erf(x / sqrt(2.0)));
    case FM_ACT_SILU: return x / (1.0 + exp(-x));
    case FM_ACT_GELU_TANH: return 0.5 * x * (1.0 + tanh(sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
    default: return NAN;
    }
}

/* Rotary angles per token: the (row, col) patch coordinate of token r is decoded from r
 * (block-major order, merge m). The angle table is the model's exactly specified f32 quantity
 * (inv_freq = f32(1/f32(10000^f32(2i/(hd/2)))), theta = f32(pos * inv_freq)); only cos/sin
 * and everything after are evaluated in double. angles: [N][hd/2]. */
static void rope_angles(double *ang, const int64_t *grid, int n_images, int64_t m, int64_t hd) {
    int64_t r = 0, half = hd / 2, quarter = hd / 4;
    for (int img = 0; img < n_images; img++) {
        int64_t t = grid[3 * img], gh = grid[3 * img + 1], gw = grid[3 * img + 2];
        for (int64_t idx = 0; idx < t * gh * gw; idx++, r++) {
            int64_t in_slice = idx % (gh * gw), blk = in_slice / (m * m), within = in_slice % (m * m);
            int64_t row = (blk / (gw / m)) * m + within / m;
            int64_t col = (blk % (gw / m)) * m + within % m;
            for (int64_t i = 0; i < quarter; i++) {
                float inv = 1.0f / powf(10000.0f, (float)(2 * i) / (float)half);
                ang[r * half + i] = (double)((float)row * inv);
                ang[r * half + quarter + i] = (double)((float)col * inv);
            }
        }
    }
}

/* out = x*cos + rotate_half(x)*sin over one head of hd values. */
static void rope64(double *x, const double *ang, int64_t hd) {
    double tmp[1024];
    int64_t half = hd / 2;
    for (int64_t d = 0; d < hd; d++) {
        double a = ang[d % half];
        double rot = d < half ? -x[d + half] : x[d - half];
        tmp[d] = x[d] * cos(a) + rot * sin(a);
    }
    memcpy(x, tmp, (size_t)hd * sizeof *tmp);
}

/* Softmax attention of one segment [s0, s1) and head h; qkv [N][3D]; o [N][D]. */
static void attend(double *o, const double *qkv, int64_t s0, int64_t s1, int64_t h, const ref_dims *dm,
                   double *p) {
    double scale = 1.0 / sqrt((double)dm->hd);
    const int64_t ld = 3 * dm->d, qo = h * dm->hd, ko = dm->d + h * dm->hd, vo = 2 * dm->d + h * dm->hd;
    for (int64_t i = s0; i < s1; i++) {
        double mx = -INFINITY, sum = 0.0;
        for (int64_t j = s0; j < s1; j++) {
            double s = 0.0;
            for (int64_t c = 0; c < dm->hd; c++) s += qkv[i * ld + qo + c] * qkv[j * ld + ko + c];
            p[j - s0] = s * scale;
            if (p[j - s0] > mx) mx = p[j - s0];
        }
        for (int64_t j = s0; j < s1; j++) sum += (p[j - s0] = exp(p[j - s0] - mx));
        for (int64_t c = 0; c < dm->hd; c++) {
            double acc = 0.0;
            for (int64_t j = s0; j < s1; j++) acc += p[j - s0] / sum * qkv[j * ld + vo + c];
            o[i * dm->d + qo + c] = acc;
        }
    }
}

static void block64(double *h, const fm_qwen2vl_block_w *b, const ref_dims *dm, const double *ang,
                    const int64_t *grid, int n_images, double eps, int act, double *t1, double *big,
                    double *p) {
    int64_t n = dm->n, d = dm->d;
    layer_norm(t1, h, b->norm1_w, b->norm1_b, n, d, eps);
    lin(big, t1, b->qkv_w, b->qkv_b, n, 3 * d, d);
    for (int64_t r = 0; r < n; r++)
        for (int64_t hh = 0; hh < dm->heads; hh++) {
            rope64(big + r * 3 * d + hh * dm->hd, ang + r * (dm->hd / 2), dm->hd);     /* q */
            rope64(big + r * 3 * d + d + hh * dm->hd, ang + r * (dm->hd / 2), dm->hd); /* k */
        }
    int64_t s0 = 0;
    for (int img = 0; img < n_images; img++)
        for (int64_t t = 0; t < grid[3 * img]; t++) {
            int64_t len = grid[3 * img + 1] * grid[3 * img + 2];
            for (int64_t hh = 0; hh < dm->heads; hh++) attend(t1, big, s0, s0 + len, hh, dm, p);
            s0 += len;
        }
    lin(big, t1, b->proj_w, b->proj_b, n, d, d);
    for (int64_t i = 0; i < n * d; i++) h[i] += big[i];
    layer_norm(t1, h, b->norm2_w, b->norm2_b, n, d, eps);
    lin(big, t1, b->fc1_w, b->fc1_b, n, dm->mlp, d);
    for (int64_t i = 0; i < n * dm->mlp; i++) big[i] = act64(big[i], act);
    lin(t1, big, b->fc2_w, b->fc2_b, n, d, dm->mlp);
    for (int64_t i = 0; i < n * d; i++) h[i] += t1[i];
}

int fm_vref64_forward(const fm_qwen2vl_vision_cfg *c, const fm_qwen2vl_vision_w *w,
                      const int64_t *grid, int n_images, const float *px, double *out,
                      double *last_hidden) {
    ref_dims dm = {0, c->embed_dim, c->embed_dim / c->num_heads, c->num_heads, c->mlp_hidden,
                   (int64_t)c->in_channels * c->temporal_patch_size * c->patch_size * c->patch_size,
                   (int64_t)c->spatial_merge_size * c->spatial_merge_size};
    int64_t max_seg = 1;
    for (int i = 0; i < n_images; i++) {
        dm.n += grid[3 * i] * grid[3 * i + 1] * grid[3 * i + 2];
        if (grid[3 * i + 1] * grid[3 * i + 2] > max_seg) max_seg = grid[3 * i + 1] * grid[3 * i + 2];
    }
    int64_t wide = 3 * dm.d > dm.mlp ? 3 * dm.d : dm.mlp;
    double *x = malloc((size_t)(dm.n * dm.k) * sizeof *x), *h = malloc((size_t)(dm.n * dm.d) * sizeof *h);
    double *t1 = malloc((size_t)(dm.n * dm.d) * sizeof *t1), *big = malloc((size_t)(dm.n * wide) * sizeof *big);
    double *ang = malloc((size_t)(dm.n * dm.hd / 2) * sizeof *ang), *p = malloc((size_t)max_seg * sizeof *p);
    int rc = -1;
    if (!x || !h || !t1 || !big || !ang || !p) goto done;
    for (int64_t i = 0; i < dm.n * dm.k; i++) x[i] = px[i];
    lin(h, x, w->patch_w, w->patch_b, dm.n, dm.d, dm.k);
    rope_angles(ang, grid, n_images, c->spatial_merge_size, dm.hd);
    for (int i = 0; i < c->depth; i++)
        block64(h, &w->blocks[i], &dm, ang, grid, n_images, (double)c->ln_eps, c->act, t1, big, p);
    if (last_hidden) memcpy(last_hidden, h, (size_t)(dm.n * dm.d) * sizeof *h);
    /* merger: ln_q per token; token j of the merged sequence concatenates rows m2*j .. m2*j+m2-1 */
    layer_norm(t1, h, w->ln_q_w, w->ln_q_b, dm.n, dm.d, (double)c->ln_eps);
    int64_t rows = dm.n / dm.m2, mw = dm.m2 * dm.d;
    lin(big, t1, w->mlp0_w, w->mlp0_b, rows, mw, mw);
    for (int64_t i = 0; i < rows * mw; i++) big[i] = act64(big[i], FM_ACT_GELU);
    lin(out, big, w->mlp2_w, w->mlp2_b, rows, c->hidden_size, mw);
    rc = 0;
done:
    free(x);
    free(h);
    free(t1);
    free(big);
    free(ang);
    free(p);
    return rc;
}

double fm_vref64_rel_l2(const float *a, const double *ref, int64_t n) {
    double num = 0.0, den = 0.0;
    for (int64_t i = 0; i < n; i++) {
        double d = (double)a[i] - ref[i];
        num += d * d;
        den += ref[i] * ref[i];
    }
    return den > 0.0 ? sqrt(num / den) : sqrt(num);
}
