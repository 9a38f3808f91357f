/* Naive float64 Qwen2 / Qwen3 decoder for the tests: written from the specs (generation.md §3-4,
 * qwen2_5-vl-and-qwen3-vl.md §5.2) independently of the library (plain double loops, its own
 * rope index and RoPE). The only quantities kept in f32 are those the spec defines in f32:
 * inv_freq and the angle pos·inv_freq. */
#include "text_ref64.h"

#include <jansson.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fusemap/io.h"

/* ---- config ------------------------------------------------------------------------------- */
static int64_t jint(json_t *o, const char *k, int64_t d) {
    json_t *v = json_object_get(o, k);
    return json_is_integer(v) ? json_integer_value(v) : d;
}
static double jnum(json_t *o, const char *k, double d) {
    json_t *v = json_object_get(o, k);
    return json_is_number(v) ? json_number_value(v) : d;
}

/* The RoPE dict as transformers reads it: text_config's rope_parameters or rope_scaling, else
 * the top-level rope_scaling. */
static json_t *rope_dict(json_t *root, json_t *tc) {
    json_t *d = json_object_get(tc, "rope_parameters");
    if (!json_is_object(d)) d = json_object_get(tc, "rope_scaling");
    if (!json_is_object(d)) d = json_object_get(root, "rope_scaling");
    return json_is_object(d) ? d : NULL;
}

static int read_config(const char *dir, fm_tref_model *m, char *why, size_t n) {
    char path[4200];
    snprintf(path, sizeof path, "%s/config.json", dir);
    json_error_t je;
    json_t *root = json_load_file(path, 0, &je);
    if (!root) return snprintf(why, n, "%s: %s", path, je.text), -1;
    const char *mt = json_string_value(json_object_get(root, "model_type"));
    m->qwen3 = mt && !strcmp(mt, "qwen3_vl");
    json_t *tc = json_object_get(root, "text_config");
    if (!json_is_object(tc)) tc = root;
    m->hidden = jint(tc, "hidden_size", 0), m->inter = jint(tc, "intermediate_size", 0);
    m->layers = jint(tc, "num_hidden_layers", 0), m->heads = jint(tc, "num_attention_heads", 1);
    m->kv_heads = jint(tc, "num_key_value_heads", m->heads), m->vocab = jint(tc, "vocab_size", 0);
    m->head_dim = m->qwen3 ? jint(tc, "head_dim", 128) : m->hidden / m->heads;
    m->eps = jnum(tc, "rms_norm_eps", 1e-5);
    json_t *rs = rope_dict(root, tc);
    m->theta = jnum(rs, "rope_theta",
                    jnum(tc, "rope_theta", jnum(root, "rope_theta", m->qwen3 ? 5e6 : 1e6)));
    json_t *sec = rs ? json_object_get(rs, "mrope_section") : NULL;
    m->sections[0] = (int)(m->head_dim / 2), m->sections[1] = m->sections[2] = 0;
    if (m->qwen3) m->sections[0] = 24, m->sections[1] = m->sections[2] = 20;
    for (int i = 0; json_is_array(sec) && i < 3; i++)
        m->sections[i] = (int)json_integer_value(json_array_get(sec, (size_t)i));
    m->image_token = jint(root, "image_token_id", 151655),
    m->vision_start = jint(root, "vision_start_token_id", 151652);
    m->merge = jint(json_object_get(root, "vision_config"), "spatial_merge_size", 2);
    m->frame_step = mt && !strcmp(mt, "qwen2_5_vl") ? 0 : 1; /* images: second_per_grid_t = 0 */
    json_decref(root);
    return m->hidden > 0 && m->vocab > 0 ? 0 : (snprintf(why, n, "%s: no text sizes", path), -1);
}

/* ---- weights ------------------------------------------------------------------------------ */
static float *tensor_f32(const fm_checkpoint *ck, const char *name, int64_t numel, int *bad,
                         char *why, size_t n) {
    if (!bad) return NULL; /* a tensor this architecture does not have */
    char alt[256];
    long i = fm_checkpoint_find(ck, name);
    if (i < 0 && !strncmp(name, "model.", 6)) {
        snprintf(alt, sizeof alt, "model.language_model.%s", name + 6);
        i = fm_checkpoint_find(ck, alt);
    }
    fm_tensor t = {0};
    if (i < 0 || fm_checkpoint_tensor(ck, (size_t)i, &t, NULL) != FM_OK ||
        (int64_t)fm_tensor_numel(&t) != numel) {
        if (!*bad) snprintf(why, n, "tensor %s missing or of the wrong size", name);
        *bad = 1;
        fm_tensor_free(&t);
        return NULL;
    }
    float *v = malloc((size_t)numel * sizeof *v);
    if (!v || fm_convert(v, FM_DTYPE_F32, t.data, t.dtype, (uint64_t)numel) != FM_OK)
        free(v), v = NULL, *bad = 1;
    fm_tensor_free(&t);
    return v;
}

int fm_tref_load(const char *dir, fm_tref_model *m, char *why, size_t n) {
    memset(m, 0, sizeof *m);
    if (read_config(dir, m, why, n)) return -1;
    fm_checkpoint *ck = NULL;
    fm_error e;
    if (fm_checkpoint_open(dir, &ck, &e) != FM_OK) return snprintf(why, n, "%s", e.msg), -1;
    int64_t h = m->hidden, q = m->heads * m->head_dim, kv = m->kv_heads * m->head_dim,
            im = m->inter;
    int bad = 0;
    m->embed = tensor_f32(ck, "model.embed_tokens.weight", m->vocab * h, &bad, why, n);
    m->norm = tensor_f32(ck, "model.norm.weight", h, &bad, why, n);
    m->lm_head = fm_checkpoint_find(ck, "lm_head.weight") >= 0
                     ? tensor_f32(ck, "lm_head.weight", m->vocab * h, &bad, why, n)
                     : m->embed;
    m->l = calloc((size_t)(m->layers ? m->layers : 1), sizeof *m->l);
    for (int64_t i = 0; m->l && i < m->layers; i++) {
        fm_tref_layer *L = &m->l[i];
        char k[160];
#define W(f, s, c)                                                                                 \
    snprintf(k, sizeof k, "model.layers.%lld.%s", (long long)i, s),                                \
        L->f = tensor_f32(ck, k, c, &bad, why, n)
        int *qb = m->qwen3 ? NULL : &bad, *qn = m->qwen3 ? &bad : NULL;
#define O(f, s, c, b)                                                                              \
    snprintf(k, sizeof k, "model.layers.%lld.%s", (long long)i, s),                                \
        L->f = tensor_f32(ck, k, c, b, why, n)
        W(q_w, "self_attn.q_proj.weight", q * h);
        O(q_b, "self_attn.q_proj.bias", q, qb);
        W(k_w, "self_attn.k_proj.weight", kv * h);
        O(k_b, "self_attn.k_proj.bias", kv, qb);
        W(v_w, "self_attn.v_proj.weight", kv * h);
        O(v_b, "self_attn.v_proj.bias", kv, qb);
        O(q_norm, "self_attn.q_norm.weight", m->head_dim, qn);
        O(k_norm, "self_attn.k_norm.weight", m->head_dim, qn);
        W(o_w, "self_attn.o_proj.weight", h * q);
        W(gate_w, "mlp.gate_proj.weight", im * h);
        W(up_w, "mlp.up_proj.weight", im * h);
        W(down_w, "mlp.down_proj.weight", h * im);
        W(in_norm, "input_layernorm.weight", h);
        W(post_norm, "post_attention_layernorm.weight", h);
#undef O
#undef W
    }
    fm_checkpoint_close(ck);
    if (bad || !m->l) {
        fm_tref_free(m);
        return -1;
    }
    return 0;
}

void fm_tref_free(fm_tref_model *m) {
    for (int64_t i = 0; m->l && i < m->layers; i++) {
        float **f = (float **)&m->l[i];
        for (size_t k = 0; k < sizeof(fm_tref_layer) / sizeof(float *); k++)
            free(f[k]);
    }
    free(m->l);
    if (m->lm_head != m->embed) free(m->lm_head);
    free(m->embed), free(m->norm);
    memset(m, 0, sizeof *m);
}

/* ---- positions (get_rope_index, images only) ------------------------------------------------ */
void fm_tref_positions(const fm_tref_model *m, const int64_t *ids, int64_t T, const int64_t *grid,
                       int n_images, int64_t *pos) {
    int64_t p = 0, i = 0;
    int img = 0;
    while (i < T) {
        bool starts_image =
            i > 0 && ids[i - 1] == m->vision_start && ids[i] == m->image_token && img < n_images;
        if (!starts_image) {
            pos[i] = pos[T + i] = pos[2 * T + i] = p++;
            i++;
            continue;
        }
        int64_t gt = grid[3 * img], gh = grid[3 * img + 1] / m->merge,
                gw = grid[3 * img + 2] / m->merge;
        for (int64_t k = 0; k < gt * gh * gw; k++, i++) {
            pos[i] = p + k / (gh * gw) * m->frame_step;
            pos[T + i] = p + (k / gw) % gh;
            pos[2 * T + i] = p + k % gw;
        }
        int64_t mx = (gt - 1) * m->frame_step + 1;
        if (gh > mx) mx = gh;
        if (gw > mx) mx = gw;
        p += mx;
        img++;
    }
}

/* ---- forward -------------------------------------------------------------------------------- */
static void rmsnorm(double *y, const double *x, const float *w, int64_t d, double eps) {
    double ss = 0;
    for (int64_t i = 0; i < d; i++)
        ss += x[i] * x[i];
    double r = 1.0 / sqrt(ss / (double)d + eps);
    for (int64_t i = 0; i < d; i++)
        y[i] = x[i] * r * w[i];
}

static void matvec(double *y, const float *w, const float *b, const double *x, int64_t out,
                   int64_t in) {
    for (int64_t o = 0; o < out; o++) {
        double a = b ? b[o] : 0;
        for (int64_t i = 0; i < in; i++)
            a += (double)w[o * in + i] * x[i];
        y[o] = a;
    }
}

/* rotate_half RoPE of one head with the token's angles per frequency j (axis from the sections). */
static void rope(double *x, const fm_tref_model *m, const int64_t *pos, int64_t T, int64_t t) {
    int64_t hd = m->head_dim, half = hd / 2;
    double tmp[2048];
    for (int64_t d = 0; d < hd; d++) {
        int64_t j = d % half;
        int axis = j < m->sections[0] ? 0 : j < m->sections[0] + m->sections[1] ? 1 : 2;
        if (m->qwen3) /* interleaved: h on j = 1, 4, ..., w on j = 2, 5, ..., t elsewhere */
            axis = j % 3 == 1 && j < 3 * m->sections[1]   ? 1
                   : j % 3 == 2 && j < 3 * m->sections[2] ? 2
                                                          : 0;
        float inv = 1.0f / powf((float)m->theta, (float)(2 * j) / (float)hd);
        double ang = (double)((float)pos[axis * T + t] * inv);
        double rot = d < half ? -x[d + half] : x[d - half];
        tmp[d] = x[d] * cos(ang) + rot * sin(ang);
    }
    memcpy(x, tmp, (size_t)hd * sizeof *tmp);
}

int fm_tref_forward(const fm_tref_model *m, const int64_t *ids, int64_t T, const float *img,
                    const int64_t *grid, int n_images, double *logits) {
    return fm_tref_forward_ds(m, ids, T, img, NULL, 0, grid, n_images, logits);
}

/* x[t] += f[j] for the j-th image token t. */
static void add_deepstack(double *x, const fm_tref_model *m, const int64_t *ids, int64_t T,
                          const float *f) {
    for (int64_t t = 0, j = 0; t < T; t++) {
        if (ids[t] != m->image_token) continue;
        for (int64_t i = 0; i < m->hidden; i++)
            x[t * m->hidden + i] += f[j * m->hidden + i];
        j++;
    }
}

int fm_tref_forward_ds(const fm_tref_model *m, const int64_t *ids, int64_t T, const float *img,
                       const float *ds, int n_ds, const int64_t *grid, int n_images,
                       double *logits) {
    int64_t k_img = 0;
    for (int64_t t = 0; t < T; t++)
        k_img += ids[t] == m->image_token;
    int64_t h = m->hidden, hd = m->head_dim, q = m->heads * hd, kv = m->kv_heads * hd,
            im = m->inter;
    double *x = malloc((size_t)(T * h) * sizeof *x), *y = malloc((size_t)h * sizeof *y);
    double *Q = malloc((size_t)(T * q) * sizeof *Q), *K = malloc((size_t)(T * kv) * sizeof *K);
    double *V = malloc((size_t)(T * kv) * sizeof *V), *O = malloc((size_t)q * sizeof *O),
           *t1 = malloc((size_t)h * sizeof *t1);
    double *g = malloc((size_t)im * sizeof *g), *u = malloc((size_t)im * sizeof *u),
           *p = malloc((size_t)T * sizeof *p);
    int64_t *pos = malloc((size_t)(3 * T) * sizeof *pos);
    int rc = -1;
    if (!x || !y || !Q || !K || !V || !O || !t1 || !g || !u || !p || !pos) goto done;
    fm_tref_positions(m, ids, T, grid, n_images, pos);
    for (int64_t t = 0, k = 0; t < T; t++) {
        bool is_image = ids[t] == m->image_token && img;
        for (int64_t i = 0; i < h; i++)
            x[t * h + i] = is_image ? img[k * h + i] : m->embed[ids[t] * h + i];
        k += is_image;
    }
    for (int64_t l = 0; l < m->layers; l++) {
        const fm_tref_layer *L = &m->l[l];
        for (int64_t t = 0; t < T; t++) {
            rmsnorm(y, x + t * h, L->in_norm, h, m->eps);
            matvec(Q + t * q, L->q_w, L->q_b, y, q, h);
            matvec(K + t * kv, L->k_w, L->k_b, y, kv, h);
            matvec(V + t * kv, L->v_w, L->v_b, y, kv, h);
            for (int64_t hh = 0; L->q_norm && hh < m->heads; hh++)
                rmsnorm(Q + t * q + hh * hd, Q + t * q + hh * hd, L->q_norm, hd, m->eps);
            for (int64_t hh = 0; L->k_norm && hh < m->kv_heads; hh++)
                rmsnorm(K + t * kv + hh * hd, K + t * kv + hh * hd, L->k_norm, hd, m->eps);
            for (int64_t hh = 0; hh < m->heads; hh++)
                rope(Q + t * q + hh * hd, m, pos, T, t);
            for (int64_t hh = 0; hh < m->kv_heads; hh++)
                rope(K + t * kv + hh * hd, m, pos, T, t);
        }
        for (int64_t t = 0; t < T; t++) {
            for (int64_t hh = 0; hh < m->heads; hh++) {
                int64_t gkv = hh / (m->heads / m->kv_heads);
                double mx = -INFINITY, sum = 0;
                for (int64_t j = 0; j <= t; j++) {
                    double s = 0;
                    for (int64_t d = 0; d < hd; d++)
                        s += Q[t * q + hh * hd + d] * K[j * kv + gkv * hd + d];
                    p[j] = s / sqrt((double)hd);
                    if (p[j] > mx) mx = p[j];
                }
                for (int64_t j = 0; j <= t; j++)
                    sum += (p[j] = exp(p[j] - mx));
                for (int64_t d = 0; d < hd; d++) {
                    double a = 0;
                    for (int64_t j = 0; j <= t; j++)
                        a += p[j] / sum * V[j * kv + gkv * hd + d];
                    O[hh * hd + d] = a;
                }
            }
            matvec(t1, L->o_w, NULL, O, h, q);
            for (int64_t i = 0; i < h; i++)
                x[t * h + i] += t1[i];
        }
        for (int64_t t = 0; t < T; t++) {
            rmsnorm(y, x + t * h, L->post_norm, h, m->eps);
            matvec(g, L->gate_w, NULL, y, im, h);
            matvec(u, L->up_w, NULL, y, im, h);
            for (int64_t i = 0; i < im; i++)
                g[i] = g[i] / (1.0 + exp(-g[i])) * u[i];
            matvec(t1, L->down_w, NULL, g, h, im);
            for (int64_t i = 0; i < h; i++)
                x[t * h + i] += t1[i];
        }
        if (ds && l < n_ds) add_deepstack(x, m, ids, T, ds + l * k_img * h);
    }
    for (int64_t t = 0; t < T; t++) {
        rmsnorm(y, x + t * h, m->norm, h, m->eps);
        matvec(logits + t * m->vocab, m->lm_head, NULL, y, m->vocab, h);
    }
    rc = 0;
done:
    free(x), free(y), free(Q), free(K), free(V), free(O), free(t1), free(g), free(u), free(p),
        free(pos);
    return rc;
}
