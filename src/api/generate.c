/* Text generation: the prompt's image features (vision tower), positions (get_rope_index) and
 * prefill, then one token per step with the KV cache, each next token chosen by the sampler in
 * transformers' order; streaming text through the tokenizer's detokenizer. */
#include <string.h>
#include <time.h>

#include "api/model_internal.h"
#include "fusemap/generate.h"
#include "fusemap/tokenizer.h"

void fm_generate_options_init(fm_generate_options *o) {
    memset(o, 0, sizeof *o);
    fm_sampling_options_init(&o->sampling);
    o->max_new_tokens = 20;
    o->kv_dtype = FM_DTYPE_F32;
}

void fm_generate_result_free(fm_generate_result *r) {
    if (!r) return;
    fm_free(r->tokens);
    fm_free(r->text);
    memset(r, 0, sizeof *r);
}

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* Everything one generation holds. */
typedef struct gen {
    fm_model *m;
    const fm_generate_options *o;
    fm_lm_info li;
    fm_kv_cache *cache;
    fm_sampler *sampler;
    fm_detok_stream *detok;
    int32_t *history; /* prompt + generated ids */
    size_t n_history, n_prompt;
    int64_t next;              /* the next free M-RoPE position */
    fm_vision_features images; /* image features [k][hidden] (+ DeepStack [K][k][hidden]) */
    fm_generate_result *r;
} gen;

static fm_status check_prompt(const gen *g, const int64_t *ids, size_t n, fm_error *err) {
    if (!n) return fm_error_set(err, FM_ERR_INPUT, "empty prompt: nothing to generate from");
    if (g->o->max_new_tokens < 1)
        return fm_error_set(err, FM_ERR_INVALID_ARG, "max_new_tokens must be >= 1, got %lld",
                            (long long)g->o->max_new_tokens);
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= g->li.vocab)
            return fm_error_set(err, FM_ERR_INPUT,
                                "prompt token %zu is id %lld, outside the vocabulary [0, %lld)", i,
                                (long long)ids[i], (long long)g->li.vocab);
    if ((int64_t)n + g->o->max_new_tokens > g->li.max_positions)
        return fm_error_set(
            err, FM_ERR_LIMIT,
            "prompt of %zu tokens + %lld new tokens exceeds the model's context of %lld "
            "(max_position_embeddings)",
            n, (long long)g->o->max_new_tokens, (long long)g->li.max_positions);
    return FM_OK;
}

/* Prompt positions, image features, the cache; the prefill forward's logits of the last row. */
static fm_status prefill(gen *g, const int64_t *ids, size_t n, const fm_tensor *pv,
                         const fm_tensor *grid, fm_tensor *logits, fm_error *err) {
    fm_run_options ro;
    fm_run_options_init(&ro);
    ro.threads = g->o->threads;
    int64_t *pos3 = fm_malloc(3 * n * sizeof *pos3);
    int32_t *slot = fm_calloc(n, sizeof *slot), *pos = fm_malloc(n * sizeof *pos),
            last = (int32_t)n - 1;
    fm_status st = pos3 && slot && pos
                       ? FM_OK
                       : fm_error_set(err, FM_ERR_NOMEM, "out of memory for a %zu-token prompt", n);
    if (st == FM_OK) st = fm_model_rope_index(g->m, ids, (int64_t)n, grid, pos3, &g->next, err);
    if (st == FM_OK && pv) st = fm_model_vision_features(g->m, pv, grid, &ro, &g->images, err);
    if (st == FM_OK)
        st = fm_kv_cache_new(g->m, 1, (int64_t)n + g->o->max_new_tokens, g->o->kv_dtype, &g->cache,
                             err);
    for (size_t i = 0; pos && i < n; i++)
        pos[i] = (int32_t)i;
    fm_text_batch b = {.ids = ids,
                       .pos3 = pos3,
                       .slot = slot,
                       .pos = pos,
                       .n = n,
                       .image_embeds = pv ? &g->images.image_embeds : NULL,
                       .logit_rows = &last,
                       .n_logits = 1,
                       .deepstack_embeds = g->images.deepstack.data ? &g->images.deepstack : NULL};
    if (st == FM_OK) st = fm_model_forward_text(g->m, g->cache, &b, &ro, logits, err);
    fm_free(pos3), fm_free(slot), fm_free(pos);
    return st;
}

/* Records token id and streams its text; *go_on is false when the caller cancelled. */
static fm_status emit(gen *g, int32_t id, bool *go_on, fm_error *err) {
    fm_generate_result *r = g->r;
    r->tokens[r->n_tokens++] = id;
    g->history[g->n_history++] = id;
    const char *text = NULL;
    size_t len = 0;
    fm_status st = g->detok ? fm_detok_stream_push(g->detok, id, &text, &len, err) : FM_OK;
    *go_on = true;
    if (st == FM_OK && g->o->on_token) *go_on = g->o->on_token(g->o->ctx, id, text, len);
    return st;
}

static bool is_stop(const gen *g, int32_t id) {
    for (size_t i = 0; i < g->o->n_stop; i++)
        if (g->o->stop_ids[i] == id) return true;
    return false;
}

/* The decoding loop after the prefill's logits. */
static fm_status decode(gen *g, fm_tensor *logits, fm_error *err) {
    fm_run_options ro;
    fm_run_options_init(&ro);
    ro.threads = g->o->threads;
    fm_status st = FM_OK;
    g->r->stop = FM_STOP_LENGTH;
    for (int64_t step = 0; st == FM_OK && step < g->o->max_new_tokens; step++) {
        int32_t id = 0;
        bool go_on = true;
        st = fm_sampler_next(g->sampler, logits->data, g->history, g->n_history, &id, err);
        if (st == FM_OK) st = emit(g, id, &go_on, err);
        if (st != FM_OK) break;
        if (is_stop(g, id)) {
            g->r->stop = FM_STOP_EOS;
            break;
        }
        if (!go_on) {
            g->r->stop = FM_STOP_CANCELLED;
            break;
        }
        if (step + 1 == g->o->max_new_tokens) break;
        int64_t tok = id, p3[3] = {g->next, g->next, g->next};
        int32_t slot = 0, pos = (int32_t)(g->n_history - 1), row = 0;
        fm_text_batch b = {.ids = &tok,
                           .pos3 = p3,
                           .slot = &slot,
                           .pos = &pos,
                           .n = 1,
                           .logit_rows = &row,
                           .n_logits = 1};
        fm_tensor_free(logits);
        st = fm_model_forward_text(g->m, g->cache, &b, &ro, logits, err);
        g->next++;
    }
    return st;
}

static fm_status setup(gen *g, size_t n, fm_error *err) {
    fm_generate_result *r = g->r;
    size_t cap = n + (size_t)g->o->max_new_tokens;
    g->history = fm_malloc(cap * sizeof *g->history);
    r->tokens = fm_malloc((size_t)g->o->max_new_tokens * sizeof *r->tokens);
    if (!g->history || !r->tokens)
        return fm_error_set(err, FM_ERR_NOMEM, "out of memory for %zu tokens", cap);
    fm_status st = fm_sampler_new(&g->o->sampling, g->li.vocab, &g->sampler, err);
    if (st == FM_OK && g->o->tokenizer)
        st = fm_detok_stream_new(g->o->tokenizer, true, &g->detok, err);
    return st;
}

static fm_status finish_text(gen *g, fm_error *err) {
    if (!g->o->tokenizer) return FM_OK;
    const char *tail = NULL;
    size_t len = 0;
    fm_status st = fm_detok_stream_finish(g->detok, &tail, &len, err);
    if (st == FM_OK && len && g->o->on_token) g->o->on_token(g->o->ctx, -1, tail, len);
    if (st == FM_OK)
        st = fm_tokenizer_decode(g->o->tokenizer, g->r->tokens, g->r->n_tokens, true, &g->r->text,
                                 &g->r->text_len, err);
    return st;
}

fm_status fm_generate(struct fm_model *m, const int64_t *ids, size_t n,
                      const fm_tensor *pixel_values, const fm_tensor *image_grid_thw,
                      const fm_generate_options *o, fm_generate_result *out, fm_error *err) {
    gen g;
    memset(&g, 0, sizeof g);
    memset(out, 0, sizeof *out);
    g.m = m, g.o = o, g.r = out;
    fm_tensor logits = {0};
    if ((pixel_values == NULL) != (image_grid_thw == NULL))
        return fm_error_set(err, FM_ERR_INVALID_ARG, "pixel_values and image_grid_thw go together");
    fm_status st = fm_model_lm_info(m, &g.li, err);
    if (st == FM_OK) st = check_prompt(&g, ids, n, err);
    if (st == FM_OK) st = setup(&g, n, err);
    for (size_t i = 0; st == FM_OK && i < n; i++)
        g.history[g.n_history++] = (int32_t)ids[i];
    out->prompt_tokens = (int64_t)n;
    double t0 = now_s();
    if (st == FM_OK) st = prefill(&g, ids, n, pixel_values, image_grid_thw, &logits, err);
    double t1 = now_s();
    if (st == FM_OK) st = decode(&g, &logits, err);
    if (st == FM_OK) st = finish_text(&g, err);
    out->prefill_s = t1 - t0, out->decode_s = now_s() - t1;
    fm_tensor_free(&logits);
    fm_vision_features_free(&g.images);
    fm_kv_cache_free(g.cache);
    fm_sampler_free(g.sampler);
    fm_detok_stream_free(g.detok);
    fm_free(g.history);
    if (st != FM_OK) fm_generate_result_free(out);
    return st;
}
