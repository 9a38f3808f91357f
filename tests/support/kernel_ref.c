/* Naive double-precision reference kernels (see kernel_ref.h). Nothing here calls the library. */
#include "kernel_ref.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void kref_linear(float *y, const float *x, const float *w, const float *b, int64_t m, int64_t n,
                 int64_t k) {
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) {
            double acc = b ? (double)b[j] : 0.0;
            for (int64_t p = 0; p < k; p++)
                acc += (double)x[i * k + p] * (double)w[j * k + p];
            y[i * n + j] = (float)acc;
        }
}

void kref_layernorm(float *y, const float *x, const float *g, const float *b, int64_t rows,
                    int64_t dim, double eps) {
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * dim;
        double mean = 0.0, var = 0.0;
        for (int64_t i = 0; i < dim; i++)
            mean += xr[i];
        mean /= (double)dim;
        for (int64_t i = 0; i < dim; i++)
            var += (xr[i] - mean) * (xr[i] - mean);
        var /= (double)dim;
        for (int64_t i = 0; i < dim; i++)
            y[r * dim + i] =
                (float)((xr[i] - mean) / sqrt(var + eps) * (g ? g[i] : 1.0) + (b ? b[i] : 0.0));
    }
}

void kref_rmsnorm(float *y, const float *x, const float *g, int64_t rows, int64_t dim, double eps) {
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * dim;
        double ms = 0.0;
        for (int64_t i = 0; i < dim; i++)
            ms += (double)xr[i] * xr[i];
        ms /= (double)dim;
        for (int64_t i = 0; i < dim; i++)
            y[r * dim + i] = (float)((g ? g[i] : 1.0) * (xr[i] / sqrt(ms + eps)));
    }
}

static double act1(double x, int act) {
    switch (act) {
    case 0:
        return x / (1.0 + exp(-(double)1.702f * x));
    case 1:
        return 0.5 * x * (1.0 + erf(x / sqrt(2.0)));
    case 2:
        return x / (1.0 + exp(-x));
    case 3:
        return 0.5 * x * (1.0 + tanh(sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
    default:
        return NAN;
    }
}

void kref_act(float *y, const float *x, int64_t n, int act) {
    for (int64_t i = 0; i < n; i++)
        y[i] = (float)act1(x[i], act);
}

void kref_softmax_rows(float *s, int64_t rows, int64_t cols, int64_t ld) {
    double *e = malloc((size_t)(cols > 0 ? cols : 1) * sizeof *e);
    for (int64_t r = 0; e && r < rows; r++) {
        float *row = s + r * ld;
        double mx = -INFINITY, sum = 0.0;
        for (int64_t i = 0; i < cols; i++)
            mx = row[i] > mx ? row[i] : mx;
        for (int64_t i = 0; i < cols; i++)
            sum += (e[i] = exp(row[i] - mx));
        for (int64_t i = 0; i < cols; i++)
            row[i] = (float)(e[i] / sum);
    }
    free(e);
}

void kref_vision_rope_table(float *cos_t, float *sin_t, const int32_t *pos, int64_t n,
                            int head_dim) {
    int half = head_dim / 2, quarter = head_dim / 4;
    for (int64_t r = 0; r < n; r++)
        for (int d = 0; d < head_dim; d++) {
            int i = d % half, f = i % quarter, axis = i < quarter ? 0 : 1;
            double angle = pos[2 * r + axis] * pow(10000.0, -2.0 * f / half);
            cos_t[r * head_dim + d] = (float)cos(angle);
            sin_t[r * head_dim + d] = (float)sin(angle);
        }
}

void kref_rope_apply(float *x, int64_t ld, int64_t rows, int heads, int head_dim,
                     const float *cos_t, const float *sin_t) {
    int half = head_dim / 2;
    double tmp[1024];
    for (int64_t r = 0; r < rows; r++)
        for (int h = 0; h < heads; h++) {
            float *xh = x + r * ld + (int64_t)h * head_dim;
            const float *c = cos_t + r * head_dim, *s = sin_t + r * head_dim;
            for (int d = 0; d < head_dim && d < 1024; d++) {
                double rot = d < half ? -(double)xh[d + half] : (double)xh[d - half];
                tmp[d] = (double)xh[d] * c[d] + rot * s[d];
            }
            for (int d = 0; d < head_dim && d < 1024; d++)
                xh[d] = (float)tmp[d];
        }
}

void kref_attention(float *o, int64_t ldo, const float *q, const float *k, const float *v,
                    int64_t ldqkv, const int32_t *cu, int n_seg, int heads, int head_dim,
                    double scale) {
    int64_t longest = 1;
    for (int s = 0; s < n_seg; s++)
        if (cu[s + 1] - cu[s] > longest) longest = cu[s + 1] - cu[s];
    double *p = malloc((size_t)longest * sizeof *p), *acc = malloc((size_t)head_dim * sizeof *acc);
    for (int s = 0; p && acc && s < n_seg; s++)
        for (int h = 0; h < heads; h++) {
            int64_t col = (int64_t)h * head_dim, n = cu[s + 1] - cu[s];
            for (int64_t i = cu[s]; i < cu[s + 1]; i++) {
                double mx = -INFINITY, sum = 0.0;
                for (int64_t j = 0; j < n; j++) {
                    double dot = 0.0;
                    for (int d = 0; d < head_dim; d++)
                        dot += (double)q[i * ldqkv + col + d] * k[(cu[s] + j) * ldqkv + col + d];
                    p[j] = dot * scale;
                    mx = p[j] > mx ? p[j] : mx;
                }
                for (int64_t j = 0; j < n; j++)
                    sum += (p[j] = exp(p[j] - mx));
                memset(acc, 0, (size_t)head_dim * sizeof *acc);
                for (int64_t j = 0; j < n; j++)
                    for (int d = 0; d < head_dim; d++)
                        acc[d] += p[j] / sum * v[(cu[s] + j) * ldqkv + col + d];
                for (int d = 0; d < head_dim; d++)
                    o[i * ldo + col + d] = (float)acc[d];
            }
        }
    free(p);
    free(acc);
}

void kref_conv3d(float *y, const float *x, const float *w, const float *b, int64_t batch, int in_ch,
                 int out_ch, int groups, const int k[3], const int stride[3], const int pad[3],
                 const int dil[3], const int64_t in_dims[3]) {
    int64_t od[3];
    for (int a = 0; a < 3; a++)
        od[a] = (in_dims[a] + 2 * pad[a] - (int64_t)dil[a] * (k[a] - 1) - 1) / stride[a] + 1;
    int64_t cg = in_ch / groups, og = out_ch / groups;
    int64_t plane = in_dims[0] * in_dims[1] * in_dims[2], oplane = od[0] * od[1] * od[2];
    for (int64_t n = 0; n < batch; n++)
        for (int64_t oc = 0; oc < out_ch; oc++)
            for (int64_t o = 0; o < oplane; o++) {
                int64_t ot = o / (od[1] * od[2]), oh = o / od[2] % od[1], ow = o % od[2];
                double acc = b ? (double)b[oc] : 0.0;
                for (int64_t ic = 0; ic < cg; ic++)
                    for (int kt = 0; kt < k[0]; kt++)
                        for (int kh = 0; kh < k[1]; kh++)
                            for (int kw = 0; kw < k[2]; kw++) {
                                int64_t it = ot * stride[0] - pad[0] + (int64_t)kt * dil[0];
                                int64_t ih = oh * stride[1] - pad[1] + (int64_t)kh * dil[1];
                                int64_t iw = ow * stride[2] - pad[2] + (int64_t)kw * dil[2];
                                if (it < 0 || ih < 0 || iw < 0 || it >= in_dims[0] ||
                                    ih >= in_dims[1] || iw >= in_dims[2])
                                    continue;
                                int64_t c = (oc / og) * cg + ic;
                                double xv = x[(n * in_ch + c) * plane +
                                              (it * in_dims[1] + ih) * in_dims[2] + iw];
                                double wv =
                                    w[(((oc * cg + ic) * k[0] + kt) * k[1] + kh) * k[2] + kw];
                                acc += xv * wv;
                            }
                y[(n * out_ch + oc) * oplane + o] = (float)acc;
            }
}
