/* Reference kernels: the plainest loops computing the same float32 math as the optimised
 * kernels (libm for every transcendental), used by the tests as the yardstick. */
#include <math.h>
#include <string.h>

#include "nn/kernels.h"

void fm_ref_linear(float *y, const float *x, const float *w, const float *b, int64_t m, int64_t n,
                   int64_t k) {
    for (int64_t i = 0; i < m; i++) {
        for (int64_t j = 0; j < n; j++) {
            float acc = 0.0f;
            for (int64_t p = 0; p < k; p++)
                acc += x[i * k + p] * w[j * k + p];
            y[i * n + j] = b ? acc + b[j] : acc;
        }
    }
}

void fm_ref_layernorm(float *y, const float *x, const float *g, const float *b, int64_t rows,
                      int64_t dim, float eps) {
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * dim;
        float mean = 0.0f, var = 0.0f;
        for (int64_t i = 0; i < dim; i++)
            mean += xr[i];
        mean /= (float)dim;
        for (int64_t i = 0; i < dim; i++)
            var += (xr[i] - mean) * (xr[i] - mean);
        var /= (float)dim;
        float rstd = 1.0f / sqrtf(var + eps);
        for (int64_t i = 0; i < dim; i++)
            y[r * dim + i] = (xr[i] - mean) * rstd * (g ? g[i] : 1.0f) + (b ? b[i] : 0.0f);
    }
}

void fm_ref_rmsnorm(float *y, const float *x, const float *g, int64_t rows, int64_t dim,
                    float eps) {
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * dim;
        float ms = 0.0f;
        for (int64_t i = 0; i < dim; i++)
            ms += xr[i] * xr[i];
        ms /= (float)dim;
        float rstd = 1.0f / sqrtf(ms + eps);
        for (int64_t i = 0; i < dim; i++)
            y[r * dim + i] = (g ? g[i] : 1.0f) * (xr[i] * rstd);
    }
}

static float ref_act1(float x, fm_activation act) {
    switch (act) {
    case FM_ACTIVATION_QUICK_GELU:
        return x * (1.0f / (1.0f + expf(-1.702f * x)));
    case FM_ACTIVATION_GELU:
        return 0.5f * x * (1.0f + erff(x * (float)M_SQRT1_2));
    case FM_ACTIVATION_SILU:
        return x / (1.0f + expf(-x));
    case FM_ACTIVATION_GELU_TANH:
        return 0.5f * x *
               (1.0f + tanhf((float)(M_SQRT2 * M_2_SQRTPI * 0.5) * (x + 0.044715f * x * x * x)));
    default:
        return x;
    }
}

void fm_ref_act(float *y, const float *x, int64_t n, fm_activation act) {
    for (int64_t i = 0; i < n; i++)
        y[i] = ref_act1(x[i], act);
}

void fm_ref_softmax_rows(float *s, int64_t rows, int64_t cols, int64_t ld) {
    for (int64_t r = 0; r < rows; r++) {
        float *row = s + r * ld;
        float mx = row[0], sum = 0.0f;
        for (int64_t i = 1; i < cols; i++)
            mx = row[i] > mx ? row[i] : mx;
        for (int64_t i = 0; i < cols; i++) {
            row[i] = expf(row[i] - mx);
            sum += row[i];
        }
        for (int64_t i = 0; i < cols; i++)
            row[i] /= sum;
    }
}

void fm_ref_vision_rope_table(float *cos_t, float *sin_t, const int32_t *pos, int64_t n,
                              int head_dim) {
    int half = head_dim / 2, quarter = head_dim / 4;
    for (int64_t r = 0; r < n; r++) {
        for (int d = 0; d < head_dim; d++) {
            int i = d % half;               /* emb = concat(theta, theta) */
            int axis = i < quarter ? 0 : 1; /* theta = concat(row angles, col angles) */
            int f = i % quarter;
            float inv = 1.0f / powf(10000.0f, (float)(2 * f) / (float)half);
            float th = (float)pos[2 * r + axis] * inv;
            cos_t[r * head_dim + d] = cosf(th);
            sin_t[r * head_dim + d] = sinf(th);
        }
    }
}

void fm_ref_rope_apply(float *x, int64_t ld, int64_t rows, int heads, int head_dim,
                       const float *cos_t, const float *sin_t) {
    int half = head_dim / 2;
    float tmp[1024]; /* one head; head_dim <= 1024 */
    for (int64_t r = 0; r < rows; r++) {
        for (int h = 0; h < heads; h++) {
            float *xh = x + r * ld + (int64_t)h * head_dim;
            const float *c = cos_t + r * head_dim, *s = sin_t + r * head_dim;
            for (int d = 0; d < head_dim; d++) {
                float rot = d < half ? -xh[d + half] : xh[d - half]; /* rotate_half */
                tmp[d] = xh[d] * c[d] + rot * s[d];
            }
            memcpy(xh, tmp, (size_t)head_dim * sizeof *tmp);
        }
    }
}

/* Scores are recomputed per pass instead of stored, so the reference needs no scratch. */
static float ref_score(const float *q, const float *k, int hd, float scale) {
    float acc = 0.0f;
    for (int d = 0; d < hd; d++)
        acc += q[d] * k[d];
    return acc * scale;
}

void fm_ref_attention(float *o, int64_t ldo, const float *q, const float *k, const float *v,
                      int64_t ldqkv, const int32_t *cu, int n_seg, int heads, int head_dim,
                      float scale) {
    for (int s = 0; s < n_seg; s++) {
        for (int h = 0; h < heads; h++) {
            int64_t col = (int64_t)h * head_dim;
            for (int64_t i = cu[s]; i < cu[s + 1]; i++) {
                const float *qi = q + i * ldqkv + col;
                float mx = -INFINITY, sum = 0.0f;
                for (int64_t j = cu[s]; j < cu[s + 1]; j++) {
                    float sc = ref_score(qi, k + j * ldqkv + col, head_dim, scale);
                    mx = sc > mx ? sc : mx;
                }
                for (int64_t j = cu[s]; j < cu[s + 1]; j++)
                    sum += expf(ref_score(qi, k + j * ldqkv + col, head_dim, scale) - mx);
                float *oi = o + i * ldo + col;
                for (int d = 0; d < head_dim; d++)
                    oi[d] = 0.0f;
                for (int64_t j = cu[s]; j < cu[s + 1]; j++) {
                    float p = expf(ref_score(qi, k + j * ldqkv + col, head_dim, scale) - mx) / sum;
                    for (int d = 0; d < head_dim; d++)
                        oi[d] += p * v[j * ldqkv + col + d];
                }
            }
        }
    }
}

void fm_ref_conv3d(float *y, const float *x, const float *w, const float *b, int64_t batch,
                   const fm_conv3d_params *p, const int64_t in_dims[3]) {
    int64_t od[3];
    if (fm_conv3d_out_dims(p, in_dims, od, NULL) != FM_OK) return;
    int64_t cg = p->in_ch / p->groups, og = p->out_ch / p->groups;
    for (int64_t n = 0; n < batch; n++)
        for (int64_t oc = 0; oc < p->out_ch; oc++)
            for (int64_t ot = 0; ot < od[0]; ot++)
                for (int64_t oh = 0; oh < od[1]; oh++)
                    for (int64_t ow = 0; ow < od[2]; ow++) {
                        float acc = 0.0f;
                        for (int64_t ic = 0; ic < cg; ic++)
                            for (int kt = 0; kt < p->k[0]; kt++)
                                for (int kh = 0; kh < p->k[1]; kh++)
                                    for (int kw = 0; kw < p->k[2]; kw++) {
                                        int64_t it = ot * p->stride[0] - p->pad[0] + kt * p->dil[0];
                                        int64_t ih = oh * p->stride[1] - p->pad[1] + kh * p->dil[1];
                                        int64_t iw = ow * p->stride[2] - p->pad[2] + kw * p->dil[2];
                                        if (it < 0 || it >= in_dims[0] || ih < 0 ||
                                            ih >= in_dims[1] || iw < 0 || iw >= in_dims[2])
                                            continue;
                                        int64_t c = (oc / og) * cg + ic;
                                        float xv =
                                            x[(((n * p->in_ch + c) * in_dims[0] + it) * in_dims[1] +
                                               ih) *
                                                  in_dims[2] +
                                              iw];
                                        float wv =
                                            w[(((oc * cg + ic) * p->k[0] + kt) * p->k[1] + kh) *
                                                  p->k[2] +
                                              kw];
                                        acc += xv * wv;
                                    }
                        if (b) acc += b[oc];
                        y[(((n * p->out_ch + oc) * od[0] + ot) * od[1] + oh) * od[2] + ow] = acc;
                    }
}

/* ---- decoder kernels ------------------------------------------------------------------- */

/* Element i of a weight buffer of dtype dt, widened exactly (the tensor layer's converters). */
static float ref_widen(const void *w, fm_dtype dt, int64_t i) {
    float f;
    if (dt == FM_DTYPE_F32)
        memcpy(&f, (const unsigned char *)w + 4 * i, 4);
    else if (dt == FM_DTYPE_BF16)
        fm_bf16_to_f32(&f, (const uint16_t *)(const void *)((const unsigned char *)w + 2 * i), 1);
    else
        fm_f16_to_f32(&f, (const uint16_t *)(const void *)((const unsigned char *)w + 2 * i), 1);
    return f;
}

void fm_ref_linear_w(float *y, const float *x, const void *w, fm_dtype wdt, const float *b,
                     int64_t m, int64_t n, int64_t k) {
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) {
            float acc = 0.0f;
            for (int64_t p = 0; p < k; p++)
                acc += x[i * k + p] * ref_widen(w, wdt, j * k + p);
            y[i * n + j] = b ? acc + b[j] : acc;
        }
}

void fm_ref_swiglu(float *y, const float *g, const float *u, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        y[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

void fm_ref_mrope_table(float *cos_t, float *sin_t, const int64_t *pos3, int64_t T, int head_dim,
                        double theta, const int sections[3], int interleaved) {
    int half = head_dim / 2;
    for (int64_t r = 0; r < T; r++)
        for (int d = 0; d < head_dim; d++) {
            int j = d % half, axis = 0;
            if (interleaved)
                axis = j % 3 == 1 && j < 3 * sections[1]   ? 1
                       : j % 3 == 2 && j < 3 * sections[2] ? 2
                                                           : 0;
            else
                axis = j < sections[0] ? 0 : j < sections[0] + sections[1] ? 1 : 2;
            float inv = 1.0f / powf((float)theta, (float)(2 * j) / (float)head_dim);
            float th = (float)pos3[axis * T + r] * inv;
            cos_t[r * head_dim + d] = cosf(th);
            sin_t[r * head_dim + d] = sinf(th);
        }
}

void fm_ref_attention_cache(float *o, int64_t ldo, const float *q, int64_t ldq, const void *kc,
                            const void *vc, fm_dtype cdt, int64_t cap, int n_kv,
                            const int32_t *slot, const int32_t *pos, int64_t rows, int n_heads,
                            int head_dim, float scale) {
    int rep = n_heads / n_kv;
    for (int64_t r = 0; r < rows; r++)
        for (int h = 0; h < n_heads; h++) {
            int g = h / rep;
            int64_t base = ((int64_t)slot[r] * n_kv + g) * cap * head_dim;
            const float *qh = q + r * ldq + (int64_t)h * head_dim;
            float *oh = o + r * ldo + (int64_t)h * head_dim;
            float mx = -INFINITY, sum = 0.0f;
            for (int64_t t = 0; t <= pos[r]; t++) {
                float s = 0.0f;
                for (int d = 0; d < head_dim; d++)
                    s += qh[d] * ref_widen(kc, cdt, base + t * head_dim + d);
                mx = s * scale > mx ? s * scale : mx;
            }
            for (int d = 0; d < head_dim; d++)
                oh[d] = 0.0f;
            for (int64_t t = 0; t <= pos[r]; t++) {
                float s = 0.0f;
                for (int d = 0; d < head_dim; d++)
                    s += qh[d] * ref_widen(kc, cdt, base + t * head_dim + d);
                float p = expf(s * scale - mx);
                sum += p;
                for (int d = 0; d < head_dim; d++)
                    oh[d] += p * ref_widen(vc, cdt, base + t * head_dim + d);
            }
            for (int d = 0; d < head_dim; d++)
                oh[d] /= sum;
        }
}
