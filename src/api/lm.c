/* The language model of a loaded model: its KV cache, prefill positions and one forward over a
 * batch of rows, reached through the root module's class forward (its contract is in
 * fm_model_builder). */
#include <string.h>

#include "api/model_internal.h"

struct fm_kv_cache {
    fm_tensor t; /* [layers][2][slots][kv_heads][capacity][head_dim] */
    int slots;
    int64_t capacity;
};

fm_status fm_model_lm_info(const fm_model *m, fm_lm_info *out, fm_error *err) {
    memset(out, 0, sizeof *out);
    if (!m->builder->lm_info || !m->builder->rope_index)
        return fm_error_set(err, FM_ERR_UNSUPPORTED, "model %s has no language model",
                            m->architecture);
    m->builder->lm_info(m->model_cfg, out);
    return FM_OK;
}

fm_status fm_kv_cache_new(const fm_model *m, int slots, int64_t capacity, fm_dtype dtype,
                          fm_kv_cache **out, fm_error *err) {
    fm_lm_info li;
    *out = NULL;
    fm_status st = fm_model_lm_info(m, &li, err);
    if (st != FM_OK) return st;
    if (dtype != FM_DTYPE_F32 && dtype != FM_DTYPE_BF16)
        return fm_error_set(err, FM_ERR_INVALID_ARG, "KV cache dtype must be F32 or BF16, got %s",
                            fm_dtype_name(dtype));
    if (slots < 1 || slots > 4096)
        return fm_error_set(err, FM_ERR_INVALID_ARG, "KV cache slots must be 1..4096, got %d",
                            slots);
    if (capacity < 1 || capacity > li.max_positions)
        return fm_error_set(
            err, FM_ERR_LIMIT,
            "KV cache of %lld positions: the model's context (max_position_embeddings) "
            "is %lld",
            (long long)capacity, (long long)li.max_positions);
    fm_kv_cache *c = fm_calloc(1, sizeof *c);
    if (!c) return fm_error_set(err, FM_ERR_NOMEM, "out of memory creating a KV cache");
    fm_shape s = {6, {li.layers, 2, slots, li.kv_heads, capacity, li.head_dim}};
    st = fm_tensor_alloc(&c->t, dtype, &s, err);
    if (st != FM_OK) {
        fm_free(c);
        fm_error_prefix(err, "KV cache (%d slots x %lld positions)", slots, (long long)capacity);
        return st;
    }
    c->slots = slots;
    c->capacity = capacity;
    *out = c;
    return FM_OK;
}

void fm_kv_cache_free(fm_kv_cache *c) {
    if (!c) return;
    fm_tensor_free(&c->t);
    fm_free(c);
}

int64_t fm_kv_cache_capacity(const fm_kv_cache *c) {
    return c->capacity;
}
int fm_kv_cache_slots(const fm_kv_cache *c) {
    return c->slots;
}
fm_dtype fm_kv_cache_dtype(const fm_kv_cache *c) {
    return c->t.dtype;
}
uint64_t fm_kv_cache_bytes_per_token(const fm_kv_cache *c) {
    const fm_shape *s = &c->t.shape;
    return (uint64_t)(s->dims[0] * 2 * s->dims[3] * s->dims[5]) * (fm_dtype_bits(c->t.dtype) / 8);
}

fm_status fm_model_rope_index(const fm_model *m, const int64_t *ids, int64_t n,
                              const fm_tensor *grid, int64_t *pos3, int64_t *next, fm_error *err) {
    fm_lm_info li;
    fm_status st = fm_model_lm_info(m, &li, err);
    if (st != FM_OK) return st;
    int64_t k = grid && grid->data ? grid->shape.dims[0] : 0;
    if (k && (grid->dtype != FM_DTYPE_I64 || grid->shape.ndim != 2 || grid->shape.dims[1] != 3))
        return fm_error_set(err, FM_ERR_INPUT, "image_grid_thw must be I64 [k, 3]");
    return m->builder->rope_index(m->model_cfg, ids, n, k ? grid->data : NULL, k, pos3, next, err);
}

/* The batch as the root module's input tensors (views of the caller's arrays; rows I32 [n][2]
 * is built in scratch); in[6] the DeepStack features when given. */
static fm_status batch_inputs(fm_run_ctx *rc, const fm_model *m, fm_kv_cache *c,
                              const fm_text_batch *b, fm_tensor in[7], fm_error *err) {
    int64_t n = (int64_t)b->n;
    int32_t *rows = NULL;
    fm_status st = fm_run_scratch(rc, (size_t)(n ? n : 1) * 2 * sizeof *rows, (void **)&rows, err);
    if (st != FM_OK) return st;
    for (int64_t i = 0; i < n; i++)
        rows[2 * i] = b->slot[i], rows[2 * i + 1] = b->pos[i];
    fm_lm_info li;
    m->builder->lm_info(m->model_cfg, &li);
    in[0] = (fm_tensor){FM_DTYPE_I64, {1, {n}}, (void *)b->ids, (uint64_t)n * 8, NULL};
    in[1] = (fm_tensor){FM_DTYPE_I64, {2, {3, n}}, (void *)b->pos3, (uint64_t)n * 24, NULL};
    in[2] = b->image_embeds ? *b->image_embeds
                            : (fm_tensor){FM_DTYPE_F32, {2, {0, li.hidden}}, NULL, 0, NULL};
    in[3] = c->t;
    in[3].storage = NULL; /* a borrowed view for the call */
    in[4] = (fm_tensor){FM_DTYPE_I32, {2, {n, 2}}, rows, (uint64_t)n * 8, NULL};
    in[5] = (fm_tensor){FM_DTYPE_I32,
                        {1, {(int64_t)b->n_logits}},
                        (void *)b->logit_rows,
                        (uint64_t)b->n_logits * 4,
                        NULL};
    in[6] = b->deepstack_embeds ? *b->deepstack_embeds : (fm_tensor){0};
    return FM_OK;
}

fm_status fm_model_forward_text(fm_model *m, fm_kv_cache *c, const fm_text_batch *b,
                                const fm_run_options *o, fm_tensor *logits, fm_error *err) {
    fm_lm_info li;
    memset(logits, 0, sizeof *logits);
    fm_status st = fm_model_lm_info(m, &li, err);
    if (st != FM_OK) return st;
    if (!b || !b->n || !b->ids || !b->pos3 || !b->slot || !b->pos || !b->logit_rows || !b->n_logits)
        return fm_error_set(err, FM_ERR_INVALID_ARG,
                            "text batch: ids, positions, slots and logit rows are required");
    fm_run_ctx *rc = NULL;
    st = fm_model_run_ctx(m, o, &rc, err);
    if (st != FM_OK) return st;
    size_t mark = fm_run_mark(rc);
    fm_tensor in[7], y = {0};
    st = batch_inputs(rc, m, c, b, in, err);
    if (st == FM_OK)
        st = fm_module_forward(m->root, rc, in, b->deepstack_embeds ? 7 : 6, &y, 1, err);
    if (st == FM_OK) st = fm_tensor_alloc(logits, FM_DTYPE_F32, &y.shape, err);
    if (st == FM_OK) memcpy(logits->data, y.data, y.nbytes);
    fm_run_release(rc, mark);
    return st;
}
