/* Direct Conv3d (the unfused patch-embedding path): each output is a sum of vectorised dot
 * products over contiguous runs of its kernel window; no im2col, no GEMM. */
#include <limits.h>

#include "nn/kernels.h"

fm_status fm_conv3d_out_dims(const fm_conv3d_params *p, const int64_t in_dims[3],
                             int64_t out_dims[3], fm_error *err) {
    static const char *const axis[3] = {"T", "H", "W"};
    if (!p || !in_dims || !out_dims)
        return fm_error_set(err, FM_ERR_INVALID_ARG, "conv3d: NULL argument");
    if (p->in_ch <= 0 || p->out_ch <= 0 || p->groups <= 0)
        return fm_error_set(err, FM_ERR_INVALID_ARG,
                            "conv3d: in_ch %d, out_ch %d, groups %d must be positive", p->in_ch,
                            p->out_ch, p->groups);
    if (p->in_ch % p->groups || p->out_ch % p->groups)
        return fm_error_set(err, FM_ERR_INVALID_ARG,
                            "conv3d: groups %d must divide in_ch %d and out_ch %d", p->groups,
                            p->in_ch, p->out_ch);
    for (int a = 0; a < 3; a++) {
        if (p->k[a] <= 0 || p->stride[a] <= 0 || p->dil[a] <= 0 || p->pad[a] < 0 ||
            in_dims[a] <= 0 || in_dims[a] > INT_MAX)
            return fm_error_set(err, FM_ERR_INVALID_ARG,
                                "conv3d: axis %s: kernel %d, stride %d, dilation %d, padding %d, "
                                "input %lld invalid",
                                axis[a], p->k[a], p->stride[a], p->dil[a], p->pad[a],
                                (long long)in_dims[a]);
        int64_t span = (int64_t)p->dil[a] * (p->k[a] - 1) + 1;
        int64_t room = in_dims[a] + 2 * (int64_t)p->pad[a];
        if (span > room)
            return fm_error_set(
                err, FM_ERR_INVALID_ARG,
                "conv3d: axis %s: dilated kernel %lld larger than padded input %lld", axis[a],
                (long long)span, (long long)room);
        out_dims[a] = (room - span) / p->stride[a] + 1;
    }
    return FM_OK;
}

typedef struct conv_job {
    float *y;       /* [batch][out_ch][oT][oH][oW] */
    const float *x; /* [batch][in_ch][T][H][W] */
    const float *w; /* [out_ch][in_ch/groups][kT][kH][kW] */
    const float *b; /* [out_ch] or NULL */
    const fm_conv3d_params *p;
    int64_t in[3], out[3];
    int64_t batch, cg, og; /* input / output channels per group */
    int64_t kvol;          /* kT * kH * kW */
    int64_t ocb;           /* output channels per task */
    int level;             /* how far window runs merge: 0 kw row, 1 (kh,kw), 2 (kt,kh,kw), 3 all */
} conv_job;

/* How far kernel-window runs merge into one contiguous dot product. Along an axis the window
 * rows join when the window spans the whole input on the axes inside it, without padding or
 * dilation: 1 = the kh rows of a (ic, kt) plane, 2 = the kt planes of a channel, 3 = all
 * channels of the group (then there is a single output position). */
static int merge_level(const fm_conv3d_params *p, const int64_t in[3]) {
    if (p->dil[2] != 1 || p->pad[2] != 0 || p->k[2] != in[2] || p->dil[1] != 1 || p->pad[1] != 0)
        return 0;
    if (p->k[1] != in[1] || p->dil[0] != 1 || p->pad[0] != 0) return 1;
    if (p->k[0] != in[0]) return 2;
    return 3;
}

/* One kernel row: sum over kw of x[iw0 + kw*dw] * w[kw], clipped to the input row. */
static float row_dot(const float *xr, const float *wr, int64_t iw0, int kw, int dw, int64_t width) {
    if (dw == 1) {
        int64_t k0 = iw0 < 0 ? -iw0 : 0;
        int64_t k1 = width - iw0 < kw ? width - iw0 : kw;
        return k1 > k0 ? fm_k_vdot(xr + iw0 + k0, wr + k0, k1 - k0) : 0.0f;
    }
    float acc = 0.0f;
    for (int k = 0; k < kw; k++) {
        int64_t iw = iw0 + (int64_t)k * dw;
        if (iw >= 0 && iw < width) acc += xr[iw] * wr[k];
    }
    return acc;
}

/* One output element. xg: x[n][first channel of the group]; wo: w[oc]. */
static float conv_point(const conv_job *j, const float *xg, const float *wo, int64_t ot, int64_t oh,
                        int64_t ow) {
    const fm_conv3d_params *p = j->p;
    int64_t hw = j->in[1] * j->in[2], thw = j->in[0] * hw;
    if (j->level == 3) return fm_k_vdot(xg, wo, j->cg * j->kvol);
    float acc = 0.0f;
    for (int64_t ic = 0; ic < j->cg; ic++) {
        const float *xc = xg + ic * thw, *wc = wo + ic * j->kvol;
        if (j->level == 2) { /* planes it = ot*s0 .. + k0 - 1, all rows and columns */
            acc += fm_k_vdot(xc + ot * p->stride[0] * hw, wc, j->kvol);
            continue;
        }
        for (int kt = 0; kt < p->k[0]; kt++) {
            int64_t it = ot * p->stride[0] - p->pad[0] + (int64_t)kt * p->dil[0];
            if (it < 0 || it >= j->in[0]) continue;
            const float *xt = xc + it * hw, *wt = wc + (int64_t)kt * p->k[1] * p->k[2];
            if (j->level == 1) { /* rows ih = oh*s1 .. + k1 - 1, all columns */
                acc += fm_k_vdot(xt + oh * p->stride[1] * j->in[2], wt, (int64_t)p->k[1] * p->k[2]);
                continue;
            }
            for (int kh = 0; kh < p->k[1]; kh++) {
                int64_t ih = oh * p->stride[1] - p->pad[1] + (int64_t)kh * p->dil[1];
                if (ih < 0 || ih >= j->in[1]) continue;
                acc += row_dot(xt + ih * j->in[2], wt + (int64_t)kh * p->k[2],
                               ow * p->stride[2] - p->pad[2], p->k[2], p->dil[2], j->in[2]);
            }
        }
    }
    return acc;
}

/* Task t = (output-channel block t / batch, batch item t % batch): consecutive tasks share
 * the block's weights (cache-resident) while the batch item's input stays in L1 across it. */
static void conv_body(void *ctx, int64_t t0, int64_t t1, int worker) {
    (void)worker;
    const conv_job *j = ctx;
    const fm_conv3d_params *p = j->p;
    int64_t opos = j->out[0] * j->out[1] * j->out[2];
    int64_t xstride = (int64_t)p->in_ch * j->in[0] * j->in[1] * j->in[2];
    for (int64_t t = t0; t < t1; t++) {
        int64_t n = t % j->batch, oc0 = (t / j->batch) * j->ocb;
        int64_t oc1 = oc0 + j->ocb < p->out_ch ? oc0 + j->ocb : p->out_ch;
        for (int64_t oc = oc0; oc < oc1; oc++) {
            const float *xg =
                j->x + n * xstride + (oc / j->og) * j->cg * j->in[0] * j->in[1] * j->in[2];
            const float *wo = j->w + oc * j->cg * j->kvol;
            float *yo = j->y + (n * p->out_ch + oc) * opos;
            float bias = j->b ? j->b[oc] : 0.0f;
            int64_t i = 0;
            for (int64_t ot = 0; ot < j->out[0]; ot++)
                for (int64_t oh = 0; oh < j->out[1]; oh++)
                    for (int64_t ow = 0; ow < j->out[2]; ow++)
                        yo[i++] = conv_point(j, xg, wo, ot, oh, ow) + bias;
        }
    }
}

void fm_k_conv3d(float *y, const float *x, const float *w, const float *b, int64_t batch,
                 const fm_conv3d_params *p, const int64_t in_dims[3], fm_threadpool *pool) {
    conv_job j = {.y = y, .x = x, .w = w, .b = b, .p = p, .batch = batch, .ocb = 16};
    if (batch <= 0 || fm_conv3d_out_dims(p, in_dims, j.out, NULL) != FM_OK) return;
    for (int a = 0; a < 3; a++)
        j.in[a] = in_dims[a];
    j.cg = p->in_ch / p->groups;
    j.og = p->out_ch / p->groups;
    j.kvol = (int64_t)p->k[0] * p->k[1] * p->k[2];
    j.level = merge_level(p, j.in);
    int64_t nblocks = (p->out_ch + j.ocb - 1) / j.ocb;
    /* chunk so one grab holds roughly 256 K multiply-adds */
    int64_t per_task = j.ocb * j.cg * j.kvol * j.out[0] * j.out[1] * j.out[2];
    int64_t grain = per_task > 0 ? (262144 + per_task - 1) / per_task : 1;
    fm_threadpool_for(pool, nblocks * batch, grain, conv_body, &j);
}
