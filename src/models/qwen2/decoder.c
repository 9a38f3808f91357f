/* The Qwen2-family text decoder's module classes (generation.md §3): constructors in
 * transformers' attribute order and forwards in the order of the PyTorch code they mirror.
 * Every child runs through its class (fm_module_forward), so a fused projection or MLP brings
 * its own forward. Activations are f32; weights stay in their stored dtype (the Linear layers
 * read bf16/f16 directly); the KV cache is F32 or BF16. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "models/build_util.h"
#include "models/qwen2/decoder.h"
#include "nn/kernels.h"
#include "nn/run.h"

#define ONE_OUTPUT(self, n_out, err)                                                               \
    do {                                                                                           \
        if ((n_out) < 1)                                                                           \
            return fm_error_set(err, FM_ERR_INVALID_ARG, "module '%s': one output",                \
                                fm_module_path(self));                                             \
    } while (0)

typedef struct attn_impl {
    int64_t heads, kv_heads, head_dim;
} attn_impl;

typedef struct rotary_impl {
    int64_t head_dim;
    double theta;
    int sections[3];
    bool interleaved;
} rotary_impl;

typedef struct text_impl {
    int64_t layers, kv_heads, head_dim, hidden;
} text_impl;

/* ---- constructors ------------------------------------------------------------------------- */
fm_status fm_qwen2_attention_init(fm_module *m, fm_build_ctx *ctx, const fm_qwen2_text_config *t,
                                  const fm_qwen2_class_names *n, fm_error *err) {
    int64_t h = t->hidden_size, hd = t->head_dim, q = t->num_attention_heads * hd,
            kv = t->num_key_value_heads * hd;
    int64_t bias = t->qkv_bias;
    MK(m, "q_proj", "Linear", &FM_ARGS(FM_I("in", h), FM_I("out", q), FM_I("bias", bias)));
    MK(m, "k_proj", "Linear", &FM_ARGS(FM_I("in", h), FM_I("out", kv), FM_I("bias", bias)));
    MK(m, "v_proj", "Linear", &FM_ARGS(FM_I("in", h), FM_I("out", kv), FM_I("bias", bias)));
    MK(m, "o_proj", "Linear", &FM_ARGS(FM_I("in", q), FM_I("out", h), FM_I("bias", 0)));
    if (t->qk_norm) {
        MK(m, "q_norm", n->rmsnorm, &FM_ARGS(FM_I("dim", hd), FM_D("eps", t->rms_norm_eps)));
        MK(m, "k_norm", n->rmsnorm, &FM_ARGS(FM_I("dim", hd), FM_D("eps", t->rms_norm_eps)));
    }
    attn_impl a = {t->num_attention_heads, t->num_key_value_heads, hd};
    return fm_module_set_impl_copy(m, &a, sizeof a, err);
}

fm_status fm_qwen2_mlp_init(fm_module *m, fm_build_ctx *ctx, const fm_qwen2_text_config *t,
                            fm_error *err) {
    int64_t h = t->hidden_size, i = t->intermediate_size;
    MK(m, "gate_proj", "Linear", &FM_ARGS(FM_I("in", h), FM_I("out", i), FM_I("bias", 0)));
    MK(m, "up_proj", "Linear", &FM_ARGS(FM_I("in", h), FM_I("out", i), FM_I("bias", 0)));
    MK(m, "down_proj", "Linear", &FM_ARGS(FM_I("in", i), FM_I("out", h), FM_I("bias", 0)));
    MK(m, "act_fn", fm_activation_class_name(t->act), NULL);
    return FM_OK;
}

fm_status fm_qwen2_decoder_layer_init(fm_module *m, fm_build_ctx *ctx,
                                      const fm_qwen2_text_config *t, const fm_qwen2_class_names *n,
                                      fm_error *err) {
    MK(m, "self_attn", n->attention, NULL);
    MK(m, "mlp", n->mlp, NULL);
    MK(m, "input_layernorm", n->rmsnorm,
       &FM_ARGS(FM_I("dim", t->hidden_size), FM_D("eps", t->rms_norm_eps)));
    MK(m, "post_attention_layernorm", n->rmsnorm,
       &FM_ARGS(FM_I("dim", t->hidden_size), FM_D("eps", t->rms_norm_eps)));
    return FM_OK;
}

fm_status fm_qwen2_rotary_init(fm_module *m, const fm_qwen2_text_config *t, fm_error *err) {
    rotary_impl r = {t->head_dim,
                     t->rope_theta,
                     {t->mrope_section[0], t->mrope_section[1], t->mrope_section[2]},
                     t->mrope_interleaved};
    return fm_module_set_impl_copy(m, &r, sizeof r, err);
}

fm_status fm_qwen2_text_model_init(fm_module *m, fm_build_ctx *ctx, const fm_qwen2_text_config *t,
                                   const fm_qwen2_class_names *n, fm_error *err) {
    fm_module *layers = NULL;
    MK(m, "embed_tokens", "Embedding",
       &FM_ARGS(FM_I("num", t->vocab_size), FM_I("dim", t->hidden_size)));
    fm_status st = fm_module_create(ctx, m, "layers", "ModuleList", NULL, &layers, err);
    for (int64_t i = 0; st == FM_OK && i < t->num_hidden_layers; i++) {
        char name[24];
        snprintf(name, sizeof name, "%lld", (long long)i);
        st = fm_module_create(ctx, layers, name, n->decoder_layer, NULL, NULL, err);
    }
    if (st != FM_OK) return st;
    MK(m, "norm", n->rmsnorm, &FM_ARGS(FM_I("dim", t->hidden_size), FM_D("eps", t->rms_norm_eps)));
    MK(m, "rotary_emb", n->rotary, NULL);
    text_impl ti = {t->num_hidden_layers, t->num_key_value_heads, t->head_dim, t->hidden_size};
    return fm_module_set_impl_copy(m, &ti, sizeof ti, err);
}

/* ---- the KV cache and row tensors every attention receives ------------------------------------
 */
/* {k cache, v cache} [S][nkv][cap][hd] of F32 or BF16 and rows I32 [T][2] (slot, position). */
static fm_status check_cache(const fm_module *m, const fm_tensor *in, size_t n_in, size_t at,
                             int64_t rows, int64_t kv_heads, int64_t head_dim, fm_error *err) {
    if (n_in < at + 3)
        return fm_error_set(err, FM_ERR_INPUT,
                            "module '%s': needs the k cache, v cache and rows inputs",
                            fm_module_path(m));
    const fm_tensor *kc = &in[at], *vc = &in[at + 1];
    bool ok = (kc->dtype == FM_DTYPE_F32 || kc->dtype == FM_DTYPE_BF16) && vc->dtype == kc->dtype &&
              kc->shape.ndim == 4 && fm_shape_equal(&kc->shape, &vc->shape) &&
              kc->shape.dims[1] == kv_heads && kc->shape.dims[3] == head_dim && kc->data &&
              vc->data;
    if (!ok)
        return fm_error_set(err, FM_ERR_INPUT,
                            "module '%s': KV cache must be F32/BF16 [slots][%lld][cap][%lld]",
                            fm_module_path(m), (long long)kv_heads, (long long)head_dim);
    fm_status st = fm_module_check_input(m, in, n_in, at + 2, FM_DTYPE_I32, 2, 2, err);
    if (st == FM_OK && in[at + 2].shape.dims[0] != rows)
        st = fm_error_set(err, FM_ERR_INPUT,
                          "module '%s': %lld rows of (slot, position) for %lld rows",
                          fm_module_path(m), (long long)in[at + 2].shape.dims[0], (long long)rows);
    return st;
}

/* Splits rows I32 [T][2] into slot and position arrays in scratch, checking each against the
 * cache (slot < S, 0 <= position < capacity). */
static fm_status row_arrays(fm_module *m, fm_run_ctx *rc, const fm_tensor *rows,
                            const fm_tensor *cache, int32_t **slot, int32_t **pos, fm_error *err) {
    int64_t t = rows->shape.dims[0];
    const int32_t *r = rows->data;
    fm_status st = fm_run_scratch(rc, (size_t)(t ? t : 1) * sizeof(int32_t), (void **)slot, err);
    if (st == FM_OK)
        st = fm_run_scratch(rc, (size_t)(t ? t : 1) * sizeof(int32_t), (void **)pos, err);
    for (int64_t i = 0; st == FM_OK && i < t; i++) {
        (*slot)[i] = r[2 * i], (*pos)[i] = r[2 * i + 1];
        if (r[2 * i] < 0 || r[2 * i] >= cache->shape.dims[0] || r[2 * i + 1] < 0 ||
            r[2 * i + 1] >= cache->shape.dims[2])
            st = fm_error_set(err, FM_ERR_INPUT,
                              "module '%s': row %lld is (slot %d, position %d), the cache has %lld "
                              "slots of %lld positions",
                              fm_module_path(m), (long long)i, r[2 * i], r[2 * i + 1],
                              (long long)cache->shape.dims[0], (long long)cache->shape.dims[2]);
    }
    return st;
}

/* ---- attention: {x [T][H], cos, sin [T][hd/2], k cache, v cache, rows} -> [T][H]
 * ------------------- q, k, v = q_proj(x), k_proj(x), v_proj(x); [q, k = q_norm, k_norm per head];
 * RoPE(q, k); cache[slot][pos] = k, v; o = softmax(q kᵀ / sqrt(hd)) v over positions 0..pos;
 * o_proj(o). */
static fm_status qk_norm(fm_module *self, fm_run_ctx *rc, fm_tensor *x, int64_t heads, int64_t hd,
                         const char *name, fm_error *err) {
    fm_module *norm = fm_module_child_named(self, name);
    if (!norm) return FM_OK;
    fm_shape per_head = {2, {x->shape.dims[0] * heads, hd}};
    fm_tensor v = {0};
    fm_status st = fm_tensor_reshape(&v, x, &per_head, err);
    if (st == FM_OK) st = fm_module_forward(norm, rc, &v, 1, &v, 1, err); /* in place, per head */
    fm_tensor_free(&v);
    return st;
}

fm_status fm_qwen2_attention_forward(fm_module *self, fm_run_ctx *rc, const fm_tensor *in,
                                     size_t n_in, fm_tensor *out, size_t n_out, fm_error *err) {
    const attn_impl *a = fm_module_impl(self);
    ONE_OUTPUT(self, n_out, err);
    fm_status st = fm_module_check_input(self, in, n_in, 0, FM_DTYPE_F32, 2, -1, err);
    int64_t t = st == FM_OK ? in[0].shape.dims[0] : 0, hd = a->head_dim;
    if (st == FM_OK) st = fm_module_check_input(self, in, n_in, 1, FM_DTYPE_F32, 2, hd / 2, err);
    if (st == FM_OK) st = fm_module_check_input(self, in, n_in, 2, FM_DTYPE_F32, 2, hd / 2, err);
    if (st == FM_OK) st = check_cache(self, in, n_in, 3, t, a->kv_heads, hd, err);
    if (st == FM_OK) st = fm_module_output(self, rc, &out[0], FM_DTYPE_F32, &in[0].shape, err);
    if (st != FM_OK) return st;
    size_t mark = fm_run_mark(rc);
    fm_tensor q = {0}, k = {0}, v = {0}, o = {0};
    int32_t *slot = NULL, *pos = NULL;
    st = fm_module_forward(fm_module_child_named(self, "q_proj"), rc, &in[0], 1, &q, 1,
                           err); /* [T][nh·hd] */
    if (st == FM_OK)
        st = fm_module_forward(fm_module_child_named(self, "k_proj"), rc, &in[0], 1, &k, 1, err);
    if (st == FM_OK)
        st = fm_module_forward(fm_module_child_named(self, "v_proj"), rc, &in[0], 1, &v, 1, err);
    if (st == FM_OK) st = qk_norm(self, rc, &q, a->heads, hd, "q_norm", err);
    if (st == FM_OK) st = qk_norm(self, rc, &k, a->kv_heads, hd, "k_norm", err);
    const float *cos_t = in[1].data, *sin_t = in[2].data;
    if (st == FM_OK) st = fm_op_rope(rc, fm_mat_of(&q), (int)a->heads, (int)hd, cos_t, sin_t, err);
    if (st == FM_OK)
        st = fm_op_rope(rc, fm_mat_of(&k), (int)a->kv_heads, (int)hd, cos_t, sin_t, err);
    if (st == FM_OK) st = row_arrays(self, rc, &in[5], &in[3], &slot, &pos, err);
    fm_shape os = {2, {t, a->heads * hd}};
    if (st == FM_OK) st = fm_run_tensor(rc, FM_DTYPE_F32, &os, &o, err); /* [T][nh·hd] */
    float *scratch = NULL;
    size_t sf = st == FM_OK ? fm_k_attention_cache_scratch_floats(slot, pos, t, (int)a->heads,
                                                                  (int)a->kv_heads, (int)hd,
                                                                  fm_run_ctx_threads(rc))
                            : 0;
    if (st == FM_OK && sf) st = fm_run_scratch(rc, sf * sizeof(float), (void **)&scratch, err);
    if (st == FM_OK) {
        const fm_tensor *kc = &in[3], *vc = &in[4];
        int64_t cap = kc->shape.dims[2];
        fm_threadpool *pool = fm_run_pool(rc);
        fm_k_kv_write(kc->data, vc->data, kc->dtype, cap, (int)a->kv_heads, (int)hd, slot, pos, t,
                      k.data, a->kv_heads * hd, v.data, a->kv_heads * hd, pool);
        fm_k_attention_cache(o.data, a->heads * hd, q.data, a->heads * hd, kc->data, vc->data,
                             kc->dtype, cap, (int)a->kv_heads, slot, pos, t, (int)a->heads, (int)hd,
                             (float)pow((double)hd, -0.5), scratch, pool);
    }
    if (st == FM_OK)
        st = fm_module_forward(fm_module_child_named(self, "o_proj"), rc, &o, 1, &out[0], 1, err);
    fm_run_release(rc, mark);
    return st;
}

/* ---- MLP: {x [T][H]} -> down_proj(act(gate_proj(x)) * up_proj(x)) [T][H]
 * -------------------------- */
fm_status fm_qwen2_mlp_forward(fm_module *self, fm_run_ctx *rc, const fm_tensor *in, size_t n_in,
                               fm_tensor *out, size_t n_out, fm_error *err) {
    ONE_OUTPUT(self, n_out, err);
    fm_status st = fm_module_check_input(self, in, n_in, 0, FM_DTYPE_F32, 2, -1, err);
    if (st == FM_OK) st = fm_module_output(self, rc, &out[0], FM_DTYPE_F32, &in[0].shape, err);
    if (st != FM_OK) return st;
    size_t mark = fm_run_mark(rc);
    fm_tensor g = {0}, u = {0};
    fm_module *act = fm_module_child_named(self, "act_fn");
    fm_activation kind;
    st = fm_module_forward(fm_module_child_named(self, "gate_proj"), rc, &in[0], 1, &g, 1,
                           err); /* [T][I] */
    if (st == FM_OK)
        st = fm_module_forward(fm_module_child_named(self, "up_proj"), rc, &in[0], 1, &u, 1, err);
    int64_t rows = g.shape.dims[0], cols = g.shape.dims[1];
    if (st == FM_OK && fm_activation_of(act, &kind) && kind == FM_ACTIVATION_SILU) {
        fm_k_swiglu(g.data, cols, g.data, cols, u.data, cols, rows, cols,
                    fm_run_pool(rc)); /* g = silu(g) * u */
    } else if (st == FM_OK) {
        st = fm_module_forward(act, rc, &g, 1, &g, 1, err);
        float *gp = g.data;
        const float *up = u.data;
        for (int64_t i = 0; st == FM_OK && i < rows * cols; i++)
            gp[i] *= up[i];
    }
    if (st == FM_OK)
        st =
            fm_module_forward(fm_module_child_named(self, "down_proj"), rc, &g, 1, &out[0], 1, err);
    fm_run_release(rc, mark);
    return st;
}

/* ---- decoder layer: {h, cos, sin, k cache, v cache, rows} -> h' (may alias h)
 * ----------------------- h = h + self_attn(input_layernorm(h), ...);  h = h +
 * mlp(post_attention_layernorm(h)) */
fm_status fm_qwen2_decoder_layer_forward(fm_module *self, fm_run_ctx *rc, const fm_tensor *in,
                                         size_t n_in, fm_tensor *out, size_t n_out, fm_error *err) {
    ONE_OUTPUT(self, n_out, err);
    fm_status st = fm_module_check_input(self, in, n_in, 0, FM_DTYPE_F32, 2, -1, err);
    if (st == FM_OK && n_in < 6)
        st = fm_error_set(err, FM_ERR_INPUT,
                          "module '%s': needs h, cos, sin, k cache, v cache, rows",
                          fm_module_path(self));
    if (st == FM_OK) st = fm_module_output(self, rc, &out[0], FM_DTYPE_F32, &in[0].shape, err);
    if (st != FM_OK) return st;
    if (out[0].data != in[0].data) memcpy(out[0].data, in[0].data, in[0].nbytes);
    int64_t n = (int64_t)fm_tensor_numel(&out[0]);
    size_t mark = fm_run_mark(rc);
    fm_tensor a = {0}, b = {0}, side[6] = {{0}, in[1], in[2], in[3], in[4], in[5]};
    st = fm_module_forward(fm_module_child_named(self, "input_layernorm"), rc, &out[0], 1, &a, 1,
                           err);
    side[0] = a;
    if (st == FM_OK)
        st = fm_module_forward(fm_module_child_named(self, "self_attn"), rc, side, 6, &b, 1, err);
    if (st == FM_OK) fm_k_add(out[0].data, b.data, n, fm_run_pool(rc));
    if (st == FM_OK)
        st = fm_module_forward(fm_module_child_named(self, "post_attention_layernorm"), rc, &out[0],
                               1, &a, 1, err);
    if (st == FM_OK)
        st = fm_module_forward(fm_module_child_named(self, "mlp"), rc, &a, 1, &b, 1, err);
    if (st == FM_OK) fm_k_add(out[0].data, b.data, n, fm_run_pool(rc));
    fm_run_release(rc, mark);
    return st;
}

/* ---- rotary embedding: {pos3 I64 [3][T]} -> {cos, sin F32 [T][hd/2]} (M-RoPE, §4.1) -------------
 */
fm_status fm_qwen2_rotary_forward(fm_module *self, fm_run_ctx *rc, const fm_tensor *in, size_t n_in,
                                  fm_tensor *out, size_t n_out, fm_error *err) {
    const rotary_impl *r = fm_module_impl(self);
    fm_status st = fm_module_check_input(self, in, n_in, 0, FM_DTYPE_I64, 2, -1, err);
    if (st == FM_OK && (in[0].shape.dims[0] != 3 || n_out < 2))
        st = fm_error_set(err, FM_ERR_INPUT,
                          "module '%s': positions must be I64 [3][T] with two outputs",
                          fm_module_path(self));
    fm_shape os = {2, {st == FM_OK ? in[0].shape.dims[1] : 0, r->head_dim / 2}};
    if (st == FM_OK) st = fm_module_output(self, rc, &out[0], FM_DTYPE_F32, &os, err);
    if (st == FM_OK) st = fm_module_output(self, rc, &out[1], FM_DTYPE_F32, &os, err);
    if (st == FM_OK)
        fm_k_mrope_table(out[0].data, out[1].data, in[0].data, os.dims[0], (int)r->head_dim,
                         r->theta, r->sections, r->interleaved);
    return st;
}

/* ---- text model: {inputs_embeds [T][H], pos3 [3][T], cache [L][2][S][nkv][cap][hd], rows} ->
 * [T][H] - The rotary tables are computed once and shared by every layer; layer i gets cache[i][0],
 * [i][1]. Optional DeepStack (Qwen3-VL): in[4] visual rows I64 [k], in[5] features F32 [K][k][H];
 * after layer i < K finishes, x[rows[j]] += features[i][j] (transformers' _deepstack_process). */
static fm_status check_full_cache(const fm_module *m, const text_impl *ti, const fm_tensor *c,
                                  fm_error *err) {
    bool ok = c->shape.ndim == 6 && c->shape.dims[0] == ti->layers && c->shape.dims[1] == 2 &&
              c->shape.dims[3] == ti->kv_heads && c->shape.dims[5] == ti->head_dim && c->data &&
              (c->dtype == FM_DTYPE_F32 || c->dtype == FM_DTYPE_BF16);
    if (ok) return FM_OK;
    return fm_error_set(err, FM_ERR_INPUT,
                        "module '%s': KV cache must be F32/BF16 [%lld][2][slots][%lld][cap][%lld]",
                        fm_module_path(m), (long long)ti->layers, (long long)ti->kv_heads,
                        (long long)ti->head_dim);
}

/* Layer i's K and V views of the whole cache. */
static void layer_cache(const fm_tensor *c, int64_t i, fm_tensor *kc, fm_tensor *vc) {
    fm_shape s = {4, {c->shape.dims[2], c->shape.dims[3], c->shape.dims[4], c->shape.dims[5]}};
    uint64_t one =
        (uint64_t)(s.dims[0] * s.dims[1] * s.dims[2] * s.dims[3]) * (fm_dtype_bits(c->dtype) / 8);
    *kc = (fm_tensor){c->dtype, s, (char *)c->data + (uint64_t)(2 * i) * one, one, NULL};
    *vc = (fm_tensor){c->dtype, s, (char *)c->data + (uint64_t)(2 * i + 1) * one, one, NULL};
}

/* The optional DeepStack inputs {visual rows I64 [k] (ascending, < T), features F32 [K][k][H]}
 * (n_in >= 6; k = 0 or K = 0: none) -> *ds_k layers to feed, checked against T and H. */
static fm_status check_deepstack(const fm_module *m, const text_impl *ti, const fm_tensor *in,
                                 size_t n_in, int64_t *ds_k, fm_error *err) {
    *ds_k = 0;
    if (n_in < 6) return FM_OK;
    const fm_tensor *vr = &in[4], *ds = &in[5];
    int64_t t = in[0].shape.dims[0], k = vr->shape.ndim == 1 ? vr->shape.dims[0] : -1;
    bool ok = vr->dtype == FM_DTYPE_I64 && k >= 0 && ds->dtype == FM_DTYPE_F32 &&
              ds->shape.ndim == 3 && ds->shape.dims[1] == k && ds->shape.dims[2] == ti->hidden &&
              (k == 0 || (vr->data && ds->data));
    const int64_t *r = vr->data;
    for (int64_t i = 0; ok && i < k; i++)
        ok = r[i] >= 0 && r[i] < t && (i == 0 || r[i] > r[i - 1]);
    if (!ok)
        return fm_error_set(err, FM_ERR_INPUT,
                            "module '%s': DeepStack inputs must be visual rows I64 [k] (ascending, "
                            "< %lld) and features F32 [K][k][%lld]",
                            fm_module_path(m), (long long)t, (long long)ti->hidden);
    *ds_k = k ? ds->shape.dims[0] : 0;
    return FM_OK;
}

/* x[rows[j]] += f[j] for the k visual rows (DeepStack, after a decoder layer). */
static void deepstack_add(float *x, int64_t h, const int64_t *rows, int64_t k, const float *f) {
    for (int64_t j = 0; j < k; j++)
        for (int64_t c = 0; c < h; c++)
            x[rows[j] * h + c] += f[j * h + c];
}

fm_status fm_qwen2_text_model_forward(fm_module *self, fm_run_ctx *rc, const fm_tensor *in,
                                      size_t n_in, fm_tensor *out, size_t n_out, fm_error *err) {
    const text_impl *ti = fm_module_impl(self);
    int64_t ds_layers = 0;
    ONE_OUTPUT(self, n_out, err);
    fm_status st = fm_module_check_input(self, in, n_in, 0, FM_DTYPE_F32, 2, ti->hidden, err);
    if (st == FM_OK)
        st = fm_module_check_input(self, in, n_in, 1, FM_DTYPE_I64, 2, in[0].shape.dims[0], err);
    if (st == FM_OK && n_in < 4)
        st = fm_error_set(err, FM_ERR_INPUT, "module '%s': needs the KV cache and rows",
                          fm_module_path(self));
    if (st == FM_OK) st = check_full_cache(self, ti, &in[2], err);
    if (st == FM_OK) st = check_deepstack(self, ti, in, n_in, &ds_layers, err);
    if (st == FM_OK) st = fm_module_output(self, rc, &out[0], FM_DTYPE_F32, &in[0].shape, err);
    if (st != FM_OK) return st;
    size_t mark = fm_run_mark(rc);
    fm_tensor rope[2] = {{0}, {0}};
    st = fm_module_forward(fm_module_child_named(self, "rotary_emb"), rc, &in[1], 1, rope, 2, err);
    memcpy(out[0].data, in[0].data, in[0].nbytes);
    fm_module *layers = fm_module_child_named(self, "layers");
    for (int64_t i = 0; st == FM_OK && i < ti->layers; i++) {
        fm_tensor lin[6] = {out[0], rope[0], rope[1], {0}, {0}, in[3]};
        layer_cache(&in[2], i, &lin[3], &lin[4]);
        st = fm_module_forward(fm_module_child(layers, (size_t)i), rc, lin, 6, &out[0], 1, err);
        if (st == FM_OK && i < ds_layers) {
            int64_t k = in[4].shape.dims[0];
            deepstack_add(out[0].data, ti->hidden, in[4].data, k,
                          (const float *)in[5].data + i * k * ti->hidden);
        }
    }
    if (st == FM_OK)
        st =
            fm_module_forward(fm_module_child_named(self, "norm"), rc, &out[0], 1, &out[0], 1, err);
    fm_run_release(rc, mark);
    return st;
}

/* ---- embeddings with image features scattered in
 * ---------------------------------------------------- */
fm_status fm_qwen2_embed_with_images(fm_module *embed_tokens, fm_run_ctx *rc, const fm_tensor *ids,
                                     const fm_tensor *image_embeds, int64_t image_token_id,
                                     fm_tensor *out, fm_error *err) {
    fm_status st = fm_module_forward(embed_tokens, rc, ids, 1, out, 1, err);
    if (st != FM_OK) return st;
    int64_t t = ids->shape.dims[0], h = out->shape.dims[1], count = 0,
            have = image_embeds ? image_embeds->shape.dims[0] : 0;
    const int64_t *id = ids->data;
    for (int64_t i = 0; i < t; i++)
        count += id[i] == image_token_id;
    if (image_embeds && count != have) /* no features: image ids embed as ordinary tokens */
        return fm_error_set(
            err, FM_ERR_INPUT,
            "the prompt has %lld image tokens (id %lld) but %lld image features were given",
            (long long)count, (long long)image_token_id, (long long)have);
    if (have && (image_embeds->dtype != FM_DTYPE_F32 || image_embeds->shape.ndim != 2 ||
                 image_embeds->shape.dims[1] != h))
        return fm_error_set(err, FM_ERR_INPUT, "image features must be F32 [%lld][%lld]",
                            (long long)have, (long long)h);
    const float *src = have ? image_embeds->data : NULL;
    for (int64_t i = 0, k = 0; i < t && have; i++)
        if (id[i] == image_token_id)
            memcpy((float *)out->data + i * h, src + (k++) * h, (size_t)h * sizeof(float));
    return FM_OK;
}
