/* Naive float64 Qwen2.5-VL vision forward for the tests, written from the spec independently of
 * the library (plain double loops, no reordering: windows are an attention mask). The only
 * quantities kept in f32 are those the spec defines in f32: the rotary inverse frequencies and
 * the angle position·inv_freq. */
#include "vision25_ref64.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fusemap/io.h"
#include "vision_ref64.h"

/* Where patch r sits: image, frame, patch row and column (block-major rows, merge m). */
typedef struct where {
    int img;
    int64_t frame, row, col;
} where;

static void locate(const int64_t *grid, int n_images, int64_t m, where *w) {
    int64_t r = 0;
    for (int i = 0; i < n_images; i++) {
        int64_t t = grid[3 * i], gh = grid[3 * i + 1], gw = grid[3 * i + 2];
        for (int64_t idx = 0; idx < t * gh * gw; idx++, r++) {
            int64_t in_frame = idx % (gh * gw), blk = in_frame / (m * m), k = in_frame % (m * m);
            w[r] = (where){i, idx / (gh * gw), (blk / (gw / m)) * m + k / m,
                           (blk % (gw / m)) * m + k % m};
        }
    }
}

/* May patch a attend to patch b? Same image and frame; in a windowed block also the same
 * window of cells merged cells per side. */
static int same_span(const where *a, const where *b, int windowed, int64_t m, int64_t cells) {
    if (a->img != b->img || a->frame != b->frame) return 0;
    if (!windowed) return 1;
    int64_t side = m * cells; /* patches per window side */
    return a->row / side == b->row / side && a->col / side == b->col / side;
}

static void lin(double *y, const double *x, const float *w, const float *b, int64_t rows,
                int64_t out, int64_t in) {
    for (int64_t r = 0; r < rows; r++)
        for (int64_t o = 0; o < out; o++) {
            double acc = b ? (double)b[o] : 0.0;
            for (int64_t i = 0; i < in; i++)
                acc += x[r * in + i] * (double)w[o * in + i];
            y[r * out + o] = acc;
        }
}

static void rms_norm(double *y, const double *x, const float *g, int64_t rows, int64_t dim) {
    for (int64_t r = 0; r < rows; r++) {
        double ss = 0.0;
        for (int64_t i = 0; i < dim; i++)
            ss += x[r * dim + i] * x[r * dim + i];
        double inv = 1.0 / sqrt(ss / (double)dim + 1e-6);
        for (int64_t i = 0; i < dim; i++)
            y[r * dim + i] = x[r * dim + i] * inv * (double)g[i];
    }
}

static double act64(double x, int act) {
    switch (act) {
    case FM_VREF_ACT_SILU:
        return x / (1.0 + exp(-x));
    case FM_VREF_ACT_GELU:
        return 0.5 * x * (1.0 + erf(x / sqrt(2.0)));
    case FM_VREF_ACT_QUICK_GELU:
        return x / (1.0 + exp(-(double)1.702f * x));
    default:
        return 0.5 * x * (1.0 + tanh(sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
    }
}

/* x·cos + rotate_half(x)·sin over one head, angles [row·f | col·f] with f32 f and products. */
static void rope(double *x, const where *w, int64_t hd) {
    double tmp[1024];
    int64_t half = hd / 2, quarter = hd / 4;
    for (int64_t d = 0; d < hd; d++) {
        int64_t j = d % half, i = j % quarter;
        float inv = 1.0f / powf(10000.0f, (float)(2 * i) / (float)half);
        double ang = (double)((float)(j < quarter ? w->row : w->col) * inv);
        double rot = d < half ? -x[d + half] : x[d - half];
        tmp[d] = x[d] * cos(ang) + rot * sin(ang);
    }
    memcpy(x, tmp, (size_t)hd * sizeof *tmp);
}

typedef struct bufs {
    double *a, *qkv, *o, *g, *u, *p;
} bufs;

static void attention(const fm_v25ref_model *c, const where *w, int64_t n, int windowed, bufs *b) {
    int64_t d = c->dim, hd = d / c->heads;
    for (int64_t r = 0; r < n; r++)
        for (int64_t h = 0; h < c->heads; h++) {
            rope(b->qkv + r * 3 * d + h * hd, &w[r], hd);     /* q */
            rope(b->qkv + r * 3 * d + d + h * hd, &w[r], hd); /* k */
        }
    for (int64_t h = 0; h < c->heads; h++)
        for (int64_t i = 0; i < n; i++) {
            double mx = -INFINITY, sum = 0.0;
            for (int64_t j = 0; j < n; j++) {
                b->p[j] = -INFINITY;
                if (!same_span(&w[i], &w[j], windowed, c->merge, c->window_cells)) continue;
                double s = 0.0;
                for (int64_t e = 0; e < hd; e++)
                    s += b->qkv[i * 3 * d + h * hd + e] * b->qkv[j * 3 * d + d + h * hd + e];
                b->p[j] = s / sqrt((double)hd);
                mx = fmax(mx, b->p[j]);
            }
            for (int64_t j = 0; j < n; j++)
                sum += b->p[j] = isinf(b->p[j]) ? 0.0 : exp(b->p[j] - mx);
            for (int64_t e = 0; e < hd; e++) {
                double acc = 0.0;
                for (int64_t j = 0; j < n; j++)
                    acc += b->p[j] / sum * b->qkv[j * 3 * d + 2 * d + h * hd + e];
                b->o[i * d + h * hd + e] = acc;
            }
        }
}

static void block(const fm_v25ref_model *c, const fm_v25ref_block *k, double *x, const where *w,
                  int64_t n, int windowed, bufs *b) {
    int64_t d = c->dim, in = c->inter;
    rms_norm(b->a, x, k->norm1_w, n, d);
    lin(b->qkv, b->a, k->qkv_w, k->qkv_b, n, 3 * d, d);
    attention(c, w, n, windowed, b);
    lin(b->a, b->o, k->proj_w, k->proj_b, n, d, d);
    for (int64_t i = 0; i < n * d; i++)
        x[i] += b->a[i];
    rms_norm(b->a, x, k->norm2_w, n, d);
    lin(b->g, b->a, k->gate_w, k->gate_b, n, in, d);
    lin(b->u, b->a, k->up_w, k->up_b, n, in, d);
    for (int64_t i = 0; i < n * in; i++)
        b->g[i] = act64(b->g[i], c->act) * b->u[i];
    lin(b->a, b->g, k->down_w, k->down_b, n, d, in);
    for (int64_t i = 0; i < n * d; i++)
        x[i] += b->a[i];
}

int fm_v25ref_forward(const fm_v25ref_model *c, const int64_t *grid, int n_images, const float *px,
                      double *out) {
    int64_t n = 0, d = c->dim, m2 = (int64_t)c->merge * c->merge,
            k = (int64_t)c->channels * c->temporal * c->patch * c->patch;
    for (int i = 0; i < n_images; i++)
        n += grid[3 * i] * grid[3 * i + 1] * grid[3 * i + 2];
    int64_t wide = 3 * d > c->inter ? 3 * d : c->inter;
    if (m2 * d > wide) wide = m2 * d;
    double *x = malloc((size_t)(n * k) * sizeof *x), *h = malloc((size_t)(n * d) * sizeof *h);
    where *w = malloc((size_t)n * sizeof *w);
    bufs b = {malloc((size_t)(n * wide) * sizeof(double)),
              malloc((size_t)(n * 3 * d) * sizeof(double)),
              malloc((size_t)(n * d) * sizeof(double)),
              malloc((size_t)(n * c->inter) * sizeof(double)),
              malloc((size_t)(n * c->inter) * sizeof(double)),
              malloc((size_t)n * sizeof(double))};
    int rc = -1;
    if (!x || !h || !w || !b.a || !b.qkv || !b.o || !b.g || !b.u || !b.p) goto done;
    for (int64_t i = 0; i < n * k; i++)
        x[i] = px[i];
    lin(h, x, c->patch_w, NULL, n, d, k);
    locate(grid, n_images, c->merge, w);
    for (int i = 0; i < c->depth; i++)
        block(c, &c->blocks[i], h, w, n, !c->full[i], &b);
    rms_norm(b.o, h, c->ln_q_w, n, d); /* rows m2·j .. m2·j + m2 - 1 form merged cell j */
    lin(b.a, b.o, c->mlp0_w, c->mlp0_b, n / m2, m2 * d, m2 * d);
    for (int64_t i = 0; i < n / m2 * m2 * d; i++)
        b.a[i] = act64(b.a[i], FM_VREF_ACT_GELU);
    lin(out, b.a, c->mlp2_w, c->mlp2_b, n / m2, c->out_dim, m2 * d);
    rc = 0;
done:
    free(x), free(h), free(w);
    free(b.a), free(b.qkv), free(b.o), free(b.g), free(b.u), free(b.p);
    return rc;
}

/* ---- loading -------------------------------------------------------------------------------- */
static int jint(json_t *o, const char *k, int d) {
    json_t *v = json_object_get(o, k);
    return json_is_integer(v) ? (int)json_integer_value(v) : d;
}

static int read_config(const char *dir, fm_v25ref_model *m, char *why, size_t n) {
    char path[4200];
    snprintf(path, sizeof path, "%s/config.json", dir);
    json_error_t je;
    json_t *root = json_load_file(path, 0, &je), *vc = json_object_get(root, "vision_config");
    if (!json_is_object(vc)) {
        json_decref(root);
        return snprintf(why, n, "%s: no vision_config", path), -1;
    }
    m->depth = jint(vc, "depth", 32), m->dim = jint(vc, "hidden_size", 3584);
    m->out_dim = jint(vc, "out_hidden_size", 3584), m->heads = jint(vc, "num_heads", 16);
    m->inter = jint(vc, "intermediate_size", 3420), m->patch = jint(vc, "patch_size", 14);
    m->temporal = jint(vc, "temporal_patch_size", 2), m->merge = jint(vc, "spatial_merge_size", 2);
    m->window_cells = jint(vc, "window_size", 112) / m->merge / m->patch;
    m->full = calloc((size_t)(m->depth > 0 ? m->depth : 1), 1);
    json_t *fl = json_object_get(vc, "fullatt_block_indexes"),
           *dflt = json_pack("[iiii]", 7, 15, 23, 31);
    size_t i;
    json_t *v;
    json_array_foreach(json_is_array(fl) ? fl : dflt, i, v) {
        int64_t b = json_integer_value(v);
        if (m->full && b >= 0 && b < m->depth) m->full[b] = 1;
    }
    json_decref(dflt);
    const char *act = json_string_value(json_object_get(vc, "hidden_act"));
    m->act = !act || !strcmp(act, "silu") ? FM_VREF_ACT_SILU
             : !strcmp(act, "gelu")       ? FM_VREF_ACT_GELU
             : !strcmp(act, "quick_gelu") ? FM_VREF_ACT_QUICK_GELU
                                          : FM_VREF_ACT_GELU_TANH;
    json_decref(root);
    return m->full ? 0 : (snprintf(why, n, "out of memory"), -1);
}

/* Tensor visual.NAME or model.visual.NAME as fresh f32; its shape into *shape when asked. */
static float *get(const fm_checkpoint *ck, const char *name, int64_t numel, fm_shape *shape,
                  int *bad, char *why, size_t n) {
    char k1[256], k2[256];
    snprintf(k1, sizeof k1, "visual.%s", name);
    snprintf(k2, sizeof k2, "model.visual.%s", name);
    long i = fm_checkpoint_find(ck, k1);
    if (i < 0) i = fm_checkpoint_find(ck, k2);
    fm_tensor t = {0};
    float *v = NULL;
    if (i >= 0 && fm_checkpoint_tensor(ck, (size_t)i, &t, NULL) == FM_OK && shape) {
        *shape = t.shape;
        numel = (int64_t)fm_tensor_numel(&t);
    }
    if (i < 0 || !t.data || (int64_t)fm_tensor_numel(&t) != numel ||
        !(v = malloc((size_t)numel * sizeof *v)) ||
        fm_convert(v, FM_DTYPE_F32, t.data, t.dtype, (uint64_t)numel) != FM_OK) {
        if (!*bad) snprintf(why, n, "tensor %s missing, of the wrong size or unreadable", k1);
        *bad = 1;
        free(v), v = NULL;
    }
    fm_tensor_free(&t);
    return v;
}

int fm_v25ref_load(const char *dir, fm_v25ref_model *m, char *why, size_t n) {
    memset(m, 0, sizeof *m);
    if (read_config(dir, m, why, n)) return -1;
    fm_checkpoint *ck = NULL;
    fm_error e;
    if (fm_checkpoint_open(dir, &ck, &e) != FM_OK) {
        fm_v25ref_free(m);
        return snprintf(why, n, "%s", e.msg), -1;
    }
    int64_t d = m->dim, in = m->inter, m2 = (int64_t)m->merge * m->merge;
    int bad = 0;
    fm_shape ps = {0};
    m->patch_w = get(ck, "patch_embed.proj.weight", 0, &ps, &bad, why, n);
    m->channels = ps.ndim == 5 ? (int)ps.dims[1] : 0; /* the weight's shape is the truth */
    m->blocks = calloc((size_t)(m->depth > 0 ? m->depth : 1), sizeof *m->blocks);
    for (int i = 0; m->blocks && i < m->depth; i++) {
        fm_v25ref_block *b = &m->blocks[i];
        char nm[128];
#define W(f, s, c)                                                                                 \
    snprintf(nm, sizeof nm, "blocks.%d.%s", i, s), b->f = get(ck, nm, c, NULL, &bad, why, n)
        W(norm1_w, "norm1.weight", d);
        W(norm2_w, "norm2.weight", d);
        W(qkv_w, "attn.qkv.weight", 3 * d * d);
        W(qkv_b, "attn.qkv.bias", 3 * d);
        W(proj_w, "attn.proj.weight", d * d);
        W(proj_b, "attn.proj.bias", d);
        W(gate_w, "mlp.gate_proj.weight", in * d);
        W(gate_b, "mlp.gate_proj.bias", in);
        W(up_w, "mlp.up_proj.weight", in * d);
        W(up_b, "mlp.up_proj.bias", in);
        W(down_w, "mlp.down_proj.weight", d * in);
        W(down_b, "mlp.down_proj.bias", d);
#undef W
    }
    m->ln_q_w = get(ck, "merger.ln_q.weight", d, NULL, &bad, why, n);
    m->mlp0_w = get(ck, "merger.mlp.0.weight", m2 * d * m2 * d, NULL, &bad, why, n);
    m->mlp0_b = get(ck, "merger.mlp.0.bias", m2 * d, NULL, &bad, why, n);
    m->mlp2_w = get(ck, "merger.mlp.2.weight", (int64_t)m->out_dim * m2 * d, NULL, &bad, why, n);
    m->mlp2_b = get(ck, "merger.mlp.2.bias", m->out_dim, NULL, &bad, why, n);
    fm_checkpoint_close(ck);
    if (!m->blocks && !bad) snprintf(why, n, "out of memory"), bad = 1;
    if (!bad &&
        (int64_t)m->channels * m->temporal * m->patch * m->patch * d !=
            (ps.ndim == 5 ? ps.dims[0] * ps.dims[1] * ps.dims[2] * ps.dims[3] * ps.dims[4] : 0))
        snprintf(why, n, "patch_embed.proj.weight: shape does not match the config"), bad = 1;
    if (bad) fm_v25ref_free(m);
    return bad ? -1 : 0;
}

void fm_v25ref_free(fm_v25ref_model *m) {
    for (int i = 0; m->blocks && i < m->depth; i++) {
        float **f = (float **)&m->blocks[i];
        for (size_t k = 0; k < sizeof(fm_v25ref_block) / sizeof(float *); k++)
            free(f[k]);
    }
    free(m->blocks), free(m->full), free(m->patch_w), free(m->ln_q_w);
    free(m->mlp0_w), free(m->mlp0_b), free(m->mlp2_w), free(m->mlp2_b);
    memset(m, 0, sizeof *m);
}
