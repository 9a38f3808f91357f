/* Naive float64 Qwen2-VL / Qwen3-VL vision forward for the tests: written from the specs
 * independently of the library kernels (no BLAS, no shared helpers), every step in plain double
 * loops. */
#include "vision_ref64.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fusemap/io.h"

typedef struct ref_dims {
    int64_t n, d, hd, heads, mlp, k, m2;
} ref_dims;

/* y[r][o] = sum_i x[r][i] * W[o][i] + b[o]; W float (the model's weights), x and y double. */
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

static void layer_norm(double *y, const double *x, const float *g, const float *b, int64_t rows,
                       int64_t dim, double eps) {
    for (int64_t r = 0; r < rows; r++) {
        double mean = 0.0, var = 0.0;
        for (int64_t i = 0; i < dim; i++)
            mean += x[r * dim + i];
        mean /= (double)dim;
        for (int64_t i = 0; i < dim; i++)
            var += (x[r * dim + i] - mean) * (x[r * dim + i] - mean);
        var /= (double)dim;
        for (int64_t i = 0; i < dim; i++)
            y[r * dim + i] =
                (x[r * dim + i] - mean) / sqrt(var + eps) * (double)g[i] + (double)b[i];
    }
}

static double act64(double x, int act) {
    switch (act) {
    case FM_VREF_ACT_QUICK_GELU:
        return x / (1.0 + exp(-(double)1.702f * x));
    case FM_VREF_ACT_GELU:
        return 0.5 * x * (1.0 + erf(x / sqrt(2.0)));
    case FM_VREF_ACT_SILU:
        return x / (1.0 + exp(-x));
    case FM_VREF_ACT_GELU_TANH:
        return 0.5 * x * (1.0 + tanh(sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
    default:
        return NAN;
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
            int64_t in_slice = idx % (gh * gw), blk = in_slice / (m * m),
                    within = in_slice % (m * m);
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
static void attend(double *o, const double *qkv, int64_t s0, int64_t s1, int64_t h,
                   const ref_dims *dm, double *p) {
    double scale = 1.0 / sqrt((double)dm->hd);
    const int64_t ld = 3 * dm->d, qo = h * dm->hd, ko = dm->d + h * dm->hd,
                  vo = 2 * dm->d + h * dm->hd;
    for (int64_t i = s0; i < s1; i++) {
        double mx = -INFINITY, sum = 0.0;
        for (int64_t j = s0; j < s1; j++) {
            double s = 0.0;
            for (int64_t c = 0; c < dm->hd; c++)
                s += qkv[i * ld + qo + c] * qkv[j * ld + ko + c];
            p[j - s0] = s * scale;
            if (p[j - s0] > mx) mx = p[j - s0];
        }
        for (int64_t j = s0; j < s1; j++)
            sum += (p[j - s0] = exp(p[j - s0] - mx));
        for (int64_t c = 0; c < dm->hd; c++) {
            double acc = 0.0;
            for (int64_t j = s0; j < s1; j++)
                acc += p[j - s0] / sum * qkv[j * ld + vo + c];
            o[i * dm->d + qo + c] = acc;
        }
    }
}

static void block64(double *h, const fm_vref_block *b, const ref_dims *dm, const double *ang,
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
            for (int64_t hh = 0; hh < dm->heads; hh++)
                attend(t1, big, s0, s0 + len, hh, dm, p);
            s0 += len;
        }
    lin(big, t1, b->proj_w, b->proj_b, n, d, d);
    for (int64_t i = 0; i < n * d; i++)
        h[i] += big[i];
    layer_norm(t1, h, b->norm2_w, b->norm2_b, n, d, eps);
    lin(big, t1, b->fc1_w, b->fc1_b, n, dm->mlp, d);
    for (int64_t i = 0; i < n * dm->mlp; i++)
        big[i] = act64(big[i], act);
    lin(t1, big, b->fc2_w, b->fc2_b, n, d, dm->mlp);
    for (int64_t i = 0; i < n * d; i++)
        h[i] += t1[i];
}

/* LayerNorm eps of every norm in the tower: 1e-6 (qwen2-vl.md §4). */
#define REF_LN_EPS 1e-6

/* Qwen3-VL's learned position embedding, bilinear with aligned corners: patch (row, col) of a
 * gh x gw grid samples the side x side table at (row·(side-1)/(gh-1), col·(side-1)/(gw-1)),
 * computed here exactly in double (the library follows PyTorch's f32 linspace). */
static void add_pos64(double *h, const fm_vref_model *c, const int64_t *grid, int n_images,
                      int64_t d) {
    int64_t r = 0, m = c->spatial_merge_size, S = c->side;
    for (int img = 0; img < n_images; img++) {
        int64_t t = grid[3 * img], gh = grid[3 * img + 1], gw = grid[3 * img + 2];
        for (int64_t idx = 0; idx < t * gh * gw; idx++, r++) {
            int64_t in_slice = idx % (gh * gw), blk = in_slice / (m * m),
                    within = in_slice % (m * m);
            int64_t row = (blk / (gw / m)) * m + within / m;
            int64_t col = (blk % (gw / m)) * m + within % m;
            double y = gh > 1 ? (double)row * (double)(S - 1) / (double)(gh - 1) : 0.0;
            double x = gw > 1 ? (double)col * (double)(S - 1) / (double)(gw - 1) : 0.0;
            int64_t y0 = (int64_t)floor(y), x0 = (int64_t)floor(x);
            int64_t y1 = y0 + 1 < S ? y0 + 1 : S - 1, x1 = x0 + 1 < S ? x0 + 1 : S - 1;
            double dy = y - (double)y0, dx = x - (double)x0;
            for (int64_t i = 0; i < d; i++)
                h[r * d + i] += (1 - dy) * (1 - dx) * c->pos_embed[(y0 * S + x0) * d + i] +
                                (1 - dy) * dx * c->pos_embed[(y0 * S + x1) * d + i] +
                                dy * (1 - dx) * c->pos_embed[(y1 * S + x0) * d + i] +
                                dy * dx * c->pos_embed[(y1 * S + x1) * d + i];
        }
    }
}

/* A DeepStack merger on the block output h [n][d]: the m² rows of each merge group side by side,
 * LayerNorm over all m²·d values, fc1, GELU (erf), fc2 -> out [n/m²][hidden]. */
static void deepstack64(double *out, const double *h, const fm_vref_merger *g,
                        const fm_vref_model *c, const ref_dims *dm, double *t1, double *big) {
    int64_t rows = dm->n / dm->m2, mw = dm->m2 * dm->d;
    layer_norm(t1, h, g->norm_w, g->norm_b, rows, mw, REF_LN_EPS);
    lin(big, t1, g->fc1_w, g->fc1_b, rows, mw, mw);
    for (int64_t i = 0; i < rows * mw; i++)
        big[i] = act64(big[i], FM_VREF_ACT_GELU);
    lin(out, big, g->fc2_w, g->fc2_b, rows, c->hidden_size, mw);
}

int fm_vref64_forward(const fm_vref_model *c, const int64_t *grid, int n_images, const float *px,
                      double *out) {
    return fm_vref64_forward_ds(c, grid, n_images, px, out, NULL, NULL);
}

int fm_vref64_forward_ds(const fm_vref_model *c, const int64_t *grid, int n_images, const float *px,
                         double *out, double *ds, int *n_ds) {
    ref_dims dm = {0,
                   c->embed_dim,
                   c->embed_dim / c->num_heads,
                   c->num_heads,
                   c->mlp_hidden,
                   (int64_t)c->in_channels * c->temporal_patch_size * c->patch_size * c->patch_size,
                   (int64_t)c->spatial_merge_size * c->spatial_merge_size};
    int64_t max_seg = 1;
    for (int i = 0; i < n_images; i++) {
        dm.n += grid[3 * i] * grid[3 * i + 1] * grid[3 * i + 2];
        if (grid[3 * i + 1] * grid[3 * i + 2] > max_seg)
            max_seg = grid[3 * i + 1] * grid[3 * i + 2];
    }
    int64_t wide = 3 * dm.d > dm.mlp ? 3 * dm.d : dm.mlp;
    if (dm.m2 * dm.d > wide) wide = dm.m2 * dm.d;
    double *x = malloc((size_t)(dm.n * dm.k) * sizeof *x),
           *h = malloc((size_t)(dm.n * dm.d) * sizeof *h);
    double *t1 = malloc((size_t)(dm.n * dm.d) * sizeof *t1),
           *big = malloc((size_t)(dm.n * wide) * sizeof *big);
    double *ang = malloc((size_t)(dm.n * dm.hd / 2) * sizeof *ang),
           *p = malloc((size_t)max_seg * sizeof *p);
    int rc = -1, k = 0;
    if (!x || !h || !t1 || !big || !ang || !p) goto done;
    for (int64_t i = 0; i < dm.n * dm.k; i++)
        x[i] = px[i];
    lin(h, x, c->patch_w, c->patch_b, dm.n, dm.d, dm.k);
    if (c->qwen3) add_pos64(h, c, grid, n_images, dm.d);
    rope_angles(ang, grid, n_images, c->spatial_merge_size, dm.hd);
    for (int i = 0; i < c->depth; i++) {
        block64(h, &c->blocks[i], &dm, ang, grid, n_images, REF_LN_EPS, c->act, t1, big, p);
        int which = -1; /* the first merger listed for block i */
        for (int j = c->n_deepstack - 1; c->qwen3 && j >= 0; j--)
            if (c->deepstack_index[j] == i) which = j;
        if (which < 0) continue;
        if (ds)
            deepstack64(ds + (int64_t)k * (dm.n / dm.m2) * c->hidden_size, h, &c->deepstack[which],
                        c, &dm, t1, big);
        k++;
    }
    /* merger: norm per token (ln_q, or Qwen3-VL's merger.norm); token j of the merged sequence
     * concatenates rows m2*j .. m2*j+m2-1 */
    layer_norm(t1, h, c->ln_q_w, c->ln_q_b, dm.n, dm.d, REF_LN_EPS);
    int64_t rows = dm.n / dm.m2, mw = dm.m2 * dm.d;
    lin(big, t1, c->mlp0_w, c->mlp0_b, rows, mw, mw);
    for (int64_t i = 0; i < rows * mw; i++)
        big[i] = act64(big[i], FM_VREF_ACT_GELU);
    lin(out, big, c->mlp2_w, c->mlp2_b, rows, c->hidden_size, mw);
    if (n_ds) *n_ds = k;
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

/* ---- loading ------------------------------------------------------------------------------ */

static int cfg_int(json_t *vc, const char *key, int dflt) {
    json_t *v = json_object_get(vc, key);
    return json_is_integer(v) ? (int)json_integer_value(v) : dflt;
}

static int read_qwen3(json_t *vc, fm_vref_model *m) {
    m->qwen3 = 1;
    m->depth = cfg_int(vc, "depth", 27), m->embed_dim = cfg_int(vc, "hidden_size", 1152);
    m->hidden_size = cfg_int(vc, "out_hidden_size", 3584);
    m->num_heads = cfg_int(vc, "num_heads", 16);
    m->in_channels = cfg_int(vc, "in_channels", cfg_int(vc, "in_chans", 3));
    m->patch_size = cfg_int(vc, "patch_size", 16);
    m->temporal_patch_size = cfg_int(vc, "temporal_patch_size", 2);
    m->spatial_merge_size = cfg_int(vc, "spatial_merge_size", 2);
    m->mlp_hidden = cfg_int(vc, "intermediate_size", 4304);
    m->num_pos = cfg_int(vc, "num_position_embeddings", 2304);
    for (m->side = 0; (m->side + 1) * (m->side + 1) <= m->num_pos; m->side++)
        ;
    json_t *ds = json_object_get(vc, "deepstack_visual_indexes");
    if (!json_is_array(ds)) {
        m->n_deepstack = 3, m->deepstack_index[0] = 8, m->deepstack_index[1] = 16,
        m->deepstack_index[2] = 24;
        return 0;
    }
    m->n_deepstack = (int)json_array_size(ds);
    if (m->n_deepstack > FM_VREF_MAX_DEEPSTACK) return -1;
    for (int i = 0; i < m->n_deepstack; i++)
        m->deepstack_index[i] = (int)json_integer_value(json_array_get(ds, (size_t)i));
    return 0;
}

static int read_config(const char *dir, fm_vref_model *m, char *why, size_t n) {
    char path[4200];
    snprintf(path, sizeof path, "%s/config.json", dir);
    json_error_t je;
    json_t *root = json_load_file(path, 0, &je),
           *vc = root ? json_object_get(root, "vision_config") : NULL;
    if (!vc) {
        snprintf(why, n, "%s: no vision_config", path);
        json_decref(root);
        return -1;
    }
    const char *act = json_string_value(json_object_get(vc, "hidden_act")),
               *mt = json_string_value(json_object_get(root, "model_type"));
    static const char *const names[] = {"quick_gelu", "gelu", "silu", "gelu_pytorch_tanh"};
    m->act = FM_VREF_ACT_QUICK_GELU;
    if (mt && !strcmp(mt, "qwen3_vl")) {
        m->act = FM_VREF_ACT_GELU_TANH;
        for (int i = 0; act && i < 4; i++)
            if (!strcmp(act, names[i])) m->act = i;
        int bad = read_qwen3(vc, m);
        json_decref(root);
        if (bad) snprintf(why, n, "%s: too many deepstack_visual_indexes", path);
        return bad;
    }
    m->depth = cfg_int(vc, "depth", 32), m->embed_dim = cfg_int(vc, "embed_dim", 1280);
    m->hidden_size = cfg_int(vc, "hidden_size", 3584), m->num_heads = cfg_int(vc, "num_heads", 16);
    m->in_channels = cfg_int(vc, "in_channels", 3), m->patch_size = cfg_int(vc, "patch_size", 14);
    m->temporal_patch_size = cfg_int(vc, "temporal_patch_size", 2);
    m->spatial_merge_size = cfg_int(vc, "spatial_merge_size", 2);
    json_t *r = json_object_get(vc, "mlp_ratio");
    m->mlp_hidden = (int)((double)m->embed_dim * (json_is_number(r) ? json_number_value(r) : 4.0));
    for (int i = 0; act && i < 4; i++)
        if (!strcmp(act, names[i])) m->act = i;
    json_decref(root);
    return 0;
}

/* Tensor `name` (tried under visual.* and model.visual.*) as a fresh f32 array of `numel`
 * values; NULL when absent and optional. */
static float *get_f32(const fm_checkpoint *ck, const char *name, int64_t numel, int optional,
                      int *bad, char *why, size_t n) {
    char k1[256], k2[256];
    snprintf(k1, sizeof k1, "visual.%s", name);
    snprintf(k2, sizeof k2, "model.visual.%s", name);
    long i = fm_checkpoint_find(ck, k1);
    if (i < 0) i = fm_checkpoint_find(ck, k2);
    fm_tensor t = {0};
    if (i < 0 || fm_checkpoint_tensor(ck, (size_t)i, &t, NULL) != FM_OK ||
        (int64_t)fm_tensor_numel(&t) != numel) {
        if (!(i < 0 && optional) && !*bad)
            snprintf(why, n, "tensor %s missing or of the wrong size", k1), *bad = 1;
        fm_tensor_free(&t);
        return NULL;
    }
    float *v = malloc((size_t)numel * sizeof *v);
    if (!v || fm_convert(v, FM_DTYPE_F32, t.data, t.dtype, (uint64_t)numel) != FM_OK) {
        if (!*bad) snprintf(why, n, "tensor %s: cannot read as f32", k1), *bad = 1;
        free(v), v = NULL;
    }
    fm_tensor_free(&t);
    return v;
}

/* A Qwen3-VL merger's six tensors under `prefix` (norm over `norm` values). */
static void load_merger(const fm_checkpoint *ck, const char *prefix, int64_t norm, int64_t mw,
                        int64_t out, fm_vref_merger *g, int *bad, char *why, size_t n) {
    char nm[160];
#define G(field, suffix, count)                                                                    \
    snprintf(nm, sizeof nm, "%s.%s", prefix, suffix),                                              \
        g->field = get_f32(ck, nm, count, 0, bad, why, n)
    G(norm_w, "norm.weight", norm);
    G(norm_b, "norm.bias", norm);
    G(fc1_w, "linear_fc1.weight", mw * mw);
    G(fc1_b, "linear_fc1.bias", mw);
    G(fc2_w, "linear_fc2.weight", out * mw);
    G(fc2_b, "linear_fc2.bias", out);
#undef G
}

int fm_vref_load(const char *dir, fm_vref_model *m, char *why, size_t n) {
    memset(m, 0, sizeof *m);
    if (read_config(dir, m, why, n)) return -1;
    fm_checkpoint *ck = NULL;
    fm_error err;
    if (fm_checkpoint_open(dir, &ck, &err) != FM_OK) return snprintf(why, n, "%s", err.msg), -1;
    int64_t d = m->embed_dim, mlp = m->mlp_hidden,
            m2 = (int64_t)m->spatial_merge_size * m->spatial_merge_size;
    int64_t k = (int64_t)m->in_channels * m->temporal_patch_size * m->patch_size * m->patch_size;
    const char *fc1 = m->qwen3 ? "mlp.linear_fc1" : "mlp.fc1",
               *fc2 = m->qwen3 ? "mlp.linear_fc2" : "mlp.fc2";
    int bad = 0;
    m->patch_w = get_f32(ck, "patch_embed.proj.weight", d * k, 0, &bad, why, n);
    m->patch_b = get_f32(ck, "patch_embed.proj.bias", d, !m->qwen3, &bad, why, n);
    if (m->qwen3) m->pos_embed = get_f32(ck, "pos_embed.weight", m->num_pos * d, 0, &bad, why, n);
    m->blocks = calloc((size_t)(m->depth > 0 ? m->depth : 1), sizeof *m->blocks);
    for (int i = 0; m->blocks && i < m->depth; i++) {
        fm_vref_block *b = &m->blocks[i];
        char nm[128];
#define W(field, suffix, count)                                                                    \
    snprintf(nm, sizeof nm, "blocks.%d.%s", i, suffix),                                            \
        b->field = get_f32(ck, nm, count, 0, &bad, why, n)
        W(norm1_w, "norm1.weight", d);
        W(norm1_b, "norm1.bias", d);
        W(norm2_w, "norm2.weight", d);
        W(norm2_b, "norm2.bias", d);
        W(qkv_w, "attn.qkv.weight", 3 * d * d);
        W(qkv_b, "attn.qkv.bias", 3 * d);
        W(proj_w, "attn.proj.weight", d * d);
        W(proj_b, "attn.proj.bias", d);
#undef W
        snprintf(nm, sizeof nm, "blocks.%d.%s.weight", i, fc1);
        b->fc1_w = get_f32(ck, nm, mlp * d, 0, &bad, why, n);
        snprintf(nm, sizeof nm, "blocks.%d.%s.bias", i, fc1);
        b->fc1_b = get_f32(ck, nm, mlp, 0, &bad, why, n);
        snprintf(nm, sizeof nm, "blocks.%d.%s.weight", i, fc2);
        b->fc2_w = get_f32(ck, nm, d * mlp, 0, &bad, why, n);
        snprintf(nm, sizeof nm, "blocks.%d.%s.bias", i, fc2);
        b->fc2_b = get_f32(ck, nm, d, 0, &bad, why, n);
    }
    if (m->qwen3) {
        fm_vref_merger g = {0};
        load_merger(ck, "merger", d, m2 * d, m->hidden_size, &g, &bad, why, n);
        m->ln_q_w = g.norm_w, m->ln_q_b = g.norm_b, m->mlp0_w = g.fc1_w, m->mlp0_b = g.fc1_b;
        m->mlp2_w = g.fc2_w, m->mlp2_b = g.fc2_b;
        for (int i = 0; i < m->n_deepstack; i++) {
            char prefix[64];
            snprintf(prefix, sizeof prefix, "deepstack_merger_list.%d", i);
            load_merger(ck, prefix, m2 * d, m2 * d, m->hidden_size, &m->deepstack[i], &bad, why, n);
        }
    } else {
        m->ln_q_w = get_f32(ck, "merger.ln_q.weight", d, 0, &bad, why, n);
        m->ln_q_b = get_f32(ck, "merger.ln_q.bias", d, 0, &bad, why, n);
        m->mlp0_w = get_f32(ck, "merger.mlp.0.weight", m2 * d * m2 * d, 0, &bad, why, n);
        m->mlp0_b = get_f32(ck, "merger.mlp.0.bias", m2 * d, 0, &bad, why, n);
        m->mlp2_w =
            get_f32(ck, "merger.mlp.2.weight", (int64_t)m->hidden_size * m2 * d, 0, &bad, why, n);
        m->mlp2_b = get_f32(ck, "merger.mlp.2.bias", m->hidden_size, 0, &bad, why, n);
    }
    fm_checkpoint_close(ck);
    if (!m->blocks && !bad) snprintf(why, n, "out of memory"), bad = 1;
    if (bad) fm_vref_free(m);
    return bad ? -1 : 0;
}

void fm_vref_free(fm_vref_model *m) {
    for (int i = 0; m->blocks && i < m->depth; i++) {
        float **f = (float **)&m->blocks[i];
        for (size_t k = 0; k < sizeof(fm_vref_block) / sizeof(float *); k++)
            free(f[k]);
    }
    for (int i = 0; i < m->n_deepstack; i++) {
        float **f = (float **)&m->deepstack[i];
        for (size_t k = 0; k < sizeof(fm_vref_merger) / sizeof(float *); k++)
            free(f[k]);
    }
    free(m->blocks);
    free(m->patch_w), free(m->patch_b), free(m->ln_q_w), free(m->ln_q_b), free(m->pos_embed);
    free(m->mlp0_w), free(m->mlp0_b), free(m->mlp2_w), free(m->mlp2_b);
    memset(m, 0, sizeof *m);
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
