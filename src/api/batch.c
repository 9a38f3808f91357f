/* Batched generation: sequences in the slots of one KV cache, each prefilled alone, then decoded
 * together one token per step in forwards of one row per sequence; each next token chosen by the
 * sequence's own sampler, its text streamed through its own detokenizer. fm_generate is a batch
 * of one slot (src/api/generate.c). */
#include <string.h>
#include <time.h>

#include "api/model_internal.h"
#include "fusemap/generate.h"
#include "fusemap/tokenizer.h"
#include "nn/kernels.h"

_Static_assert(FM_BATCH_MAX_ROWS <= FM_K_GEMV_MAX_M,
               "decode rows must stay on the GEMV path, whose rows are independent");

/* One sequence (one slot). */
typedef struct bseq {
    bool used;    /* a sequence holds the slot */
    bool running; /* `last` is to be fed to the next step */
    fm_generate_options o;
    fm_sampler *sampler;
    fm_detok_stream *detok;
    int32_t *history; /* prompt + generated ids */
    size_t n_history;
    int64_t next; /* the next free M-RoPE position */
    int32_t last; /* the latest token, not yet in the cache */
    fm_generate_result r;
    fm_status st; /* the sequence's own failure */
    fm_error err;
    double t_decode; /* when its prefill ended */
} bseq;

struct fm_batch {
    fm_model *m;
    fm_batch_options o;
    fm_lm_info li;
    fm_kv_cache *cache;
    bseq *seqs; /* [slots] */
    /* step buffers, FM_BATCH_MAX_ROWS each */
    int64_t ids[FM_BATCH_MAX_ROWS], pos3[3 * FM_BATCH_MAX_ROWS];
    int32_t slot[FM_BATCH_MAX_ROWS], pos[FM_BATCH_MAX_ROWS], rows[FM_BATCH_MAX_ROWS];
};

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

void fm_batch_options_init(fm_batch_options *o) {
    memset(o, 0, sizeof *o);
    o->slots = 1;
    o->kv_dtype = FM_DTYPE_F32;
}

fm_status fm_batch_new(struct fm_model *m, const fm_batch_options *o, fm_batch **out,
                       fm_error *err) {
    *out = NULL;
    fm_batch *b = fm_calloc(1, sizeof *b);
    if (!b) return fm_error_set(err, FM_ERR_NOMEM, "out of memory for a batch");
    b->m = m, b->o = *o;
    fm_status st = fm_model_lm_info(m, &b->li, err);
    if (st == FM_OK) st = fm_kv_cache_new(m, o->slots, o->capacity, o->kv_dtype, &b->cache, err);
    if (st == FM_OK && !(b->seqs = fm_calloc((size_t)o->slots, sizeof *b->seqs)))
        st = fm_error_set(err, FM_ERR_NOMEM, "out of memory for %d sequences", o->slots);
    if (st != FM_OK) {
        fm_batch_free(b);
        return st;
    }
    *out = b;
    return FM_OK;
}

static void seq_release(bseq *s) {
    fm_sampler_free(s->sampler);
    fm_detok_stream_free(s->detok);
    fm_free(s->history);
    fm_generate_result_free(&s->r);
    memset(s, 0, sizeof *s);
}

void fm_batch_free(fm_batch *b) {
    if (!b) return;
    for (int i = 0; b->seqs && i < b->o.slots; i++)
        seq_release(&b->seqs[i]);
    fm_free(b->seqs);
    fm_kv_cache_free(b->cache);
    fm_free(b);
}

int fm_batch_slots(const fm_batch *b) {
    return b->o.slots;
}
int64_t fm_batch_capacity(const fm_batch *b) {
    return b->o.capacity;
}
int fm_batch_free_slots(const fm_batch *b) {
    int n = 0;
    for (int i = 0; i < b->o.slots; i++)
        n += !b->seqs[i].used;
    return n;
}
int fm_batch_running(const fm_batch *b) {
    int n = 0;
    for (int i = 0; i < b->o.slots; i++)
        n += b->seqs[i].running;
    return n;
}
bool fm_batch_finished(const fm_batch *b, int seq) {
    return seq < 0 || seq >= b->o.slots || !b->seqs[seq].running;
}

/* The checks before any work; capacity: the positions of a slot. */
static fm_status check_prompt(const fm_lm_info *li, int64_t capacity, const int64_t *ids, size_t n,
                              const fm_generate_options *o, fm_error *err) {
    if (!n) return fm_error_set(err, FM_ERR_INPUT, "empty prompt: nothing to generate from");
    if (o->max_new_tokens < 1)
        return fm_error_set(err, FM_ERR_INVALID_ARG, "max_new_tokens must be >= 1, got %lld",
                            (long long)o->max_new_tokens);
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= li->vocab)
            return fm_error_set(err, FM_ERR_INPUT,
                                "prompt token %zu is id %lld, outside the vocabulary [0, %lld)", i,
                                (long long)ids[i], (long long)li->vocab);
    if ((int64_t)n + o->max_new_tokens > li->max_positions)
        return fm_error_set(
            err, FM_ERR_LIMIT,
            "prompt of %zu tokens + %lld new tokens exceeds the model's context of %lld "
            "(max_position_embeddings)",
            n, (long long)o->max_new_tokens, (long long)li->max_positions);
    if ((int64_t)n + o->max_new_tokens > capacity)
        return fm_error_set(err, FM_ERR_LIMIT,
                            "prompt of %zu tokens + %lld new tokens exceeds the %lld positions of "
                            "a sequence",
                            n, (long long)o->max_new_tokens, (long long)capacity);
    return FM_OK;
}

/* Histories, result arrays, sampler and detokenizer of a new sequence. */
static fm_status seq_setup(bseq *s, const fm_batch *b, const int64_t *ids, size_t n,
                           fm_error *err) {
    size_t cap = n + (size_t)s->o.max_new_tokens;
    s->history = fm_malloc(cap * sizeof *s->history);
    s->r.tokens = fm_malloc((size_t)s->o.max_new_tokens * sizeof *s->r.tokens);
    if (!s->history || !s->r.tokens)
        return fm_error_set(err, FM_ERR_NOMEM, "out of memory for %zu tokens", cap);
    for (size_t i = 0; i < n; i++)
        s->history[s->n_history++] = (int32_t)ids[i];
    s->r.prompt_tokens = (int64_t)n;
    fm_status st = fm_sampler_new(&s->o.sampling, b->li.vocab, &s->sampler, err);
    if (st == FM_OK && s->o.tokenizer)
        st = fm_detok_stream_new(s->o.tokenizer, true, &s->detok, err);
    return st;
}

/* Prompt positions, image features and the prefill forward into the sequence's slot; the logits
 * of its last row. */
static fm_status prefill(fm_batch *b, bseq *s, int slot_ix, const int64_t *ids, size_t n,
                         const fm_tensor *pv, const fm_tensor *grid, fm_tensor *logits,
                         fm_error *err) {
    fm_run_options ro;
    fm_run_options_init(&ro);
    ro.threads = b->o.threads;
    fm_vision_features images = {{0}, {0}}; /* image features (+ DeepStack features) */
    int64_t *pos3 = fm_malloc(3 * n * sizeof *pos3);
    int32_t *slot = fm_malloc(n * sizeof *slot), *pos = fm_malloc(n * sizeof *pos),
            last = (int32_t)n - 1;
    fm_status st = pos3 && slot && pos
                       ? FM_OK
                       : fm_error_set(err, FM_ERR_NOMEM, "out of memory for a %zu-token prompt", n);
    if (st == FM_OK) st = fm_model_rope_index(b->m, ids, (int64_t)n, grid, pos3, &s->next, err);
    if (st == FM_OK && pv) st = fm_model_vision_features(b->m, pv, grid, &ro, &images, err);
    for (size_t i = 0; pos && slot && i < n; i++)
        pos[i] = (int32_t)i, slot[i] = slot_ix;
    fm_text_batch tb = {.ids = ids,
                        .pos3 = pos3,
                        .slot = slot,
                        .pos = pos,
                        .n = n,
                        .image_embeds = pv ? &images.image_embeds : NULL,
                        .logit_rows = &last,
                        .n_logits = 1,
                        .deepstack_embeds = images.deepstack.data ? &images.deepstack : NULL};
    if (st == FM_OK) st = fm_model_forward_text(b->m, b->cache, &tb, &ro, logits, err);
    fm_vision_features_free(&images);
    fm_free(pos3), fm_free(slot), fm_free(pos);
    return st;
}

/* Flushes the detokenizer (the tail through on_token when `notify`) and decodes the text. */
static fm_status finish_text(bseq *s, bool notify, fm_error *err) {
    if (!s->o.tokenizer) return FM_OK;
    const char *tail = NULL;
    size_t len = 0;
    fm_status st = fm_detok_stream_finish(s->detok, &tail, &len, err);
    if (st == FM_OK && len && notify && s->o.on_token) s->o.on_token(s->o.ctx, -1, tail, len);
    if (st == FM_OK)
        st = fm_tokenizer_decode(s->o.tokenizer, s->r.tokens, s->r.n_tokens, true, &s->r.text,
                                 &s->r.text_len, err);
    return st;
}

/* The sequence stops running: why, its text, its decode time. */
static void seq_finish(bseq *s, fm_stop_reason why) {
    s->running = false;
    s->r.stop = why;
    s->r.decode_s = now_s() - s->t_decode;
    if (s->st == FM_OK) s->st = finish_text(s, true, &s->err);
}

static void seq_fail(bseq *s, fm_status st, const fm_error *err) {
    s->running = false;
    s->st = st;
    if (err) s->err = *err;
}

static bool is_stop(const bseq *s, int32_t id) {
    for (size_t i = 0; i < s->o.n_stop; i++)
        if (s->o.stop_ids[i] == id) return true;
    return false;
}

/* Chooses the sequence's next token from its logits row, records and streams it, and decides
 * whether it goes on. */
static fm_status choose(bseq *s, const float *logits, int64_t vocab, fm_error *err) {
    int32_t id = 0;
    if (s->o.on_logits) s->o.on_logits(s->o.ctx, logits, vocab);
    fm_status st = fm_sampler_next(s->sampler, logits, s->history, s->n_history, &id, err);
    if (st != FM_OK) return st;
    s->r.tokens[s->r.n_tokens++] = id;
    s->history[s->n_history++] = id;
    const char *text = NULL;
    size_t len = 0;
    if (s->detok) st = fm_detok_stream_push(s->detok, id, &text, &len, err);
    if (st != FM_OK) return st;
    bool go_on = s->o.on_token ? s->o.on_token(s->o.ctx, id, text, len) : true;
    s->last = id;
    if (is_stop(s, id))
        seq_finish(s, FM_STOP_EOS);
    else if (!go_on)
        seq_finish(s, FM_STOP_CANCELLED);
    else if ((int64_t)s->r.n_tokens == s->o.max_new_tokens)
        seq_finish(s, FM_STOP_LENGTH);
    return FM_OK;
}

static int free_slot(const fm_batch *b) {
    for (int i = 0; i < b->o.slots; i++)
        if (!b->seqs[i].used) return i;
    return -1;
}

fm_status fm_batch_start(fm_batch *b, const int64_t *ids, size_t n, const fm_tensor *pixel_values,
                         const fm_tensor *image_grid_thw, const fm_generate_options *o, int *seq,
                         fm_error *err) {
    *seq = -1;
    if ((pixel_values == NULL) != (image_grid_thw == NULL))
        return fm_error_set(err, FM_ERR_INVALID_ARG, "pixel_values and image_grid_thw go together");
    fm_status st = check_prompt(&b->li, b->o.capacity, ids, n, o, err);
    if (st != FM_OK) return st;
    int ix = free_slot(b);
    if (ix < 0)
        return fm_error_set(err, FM_ERR_LIMIT, "every one of the %d slots holds a sequence",
                            b->o.slots);
    bseq *s = &b->seqs[ix];
    memset(s, 0, sizeof *s);
    s->used = true, s->o = *o;
    *seq = ix;
    fm_tensor logits = {0};
    double t0 = now_s();
    st = seq_setup(s, b, ids, n, err);
    if (st == FM_OK) st = prefill(b, s, ix, ids, n, pixel_values, image_grid_thw, &logits, err);
    s->t_decode = now_s();
    s->r.prefill_s = s->t_decode - t0;
    s->running = st == FM_OK;
    if (st == FM_OK) st = choose(s, logits.data, b->li.vocab, err);
    fm_tensor_free(&logits);
    if (st != FM_OK) seq_fail(s, st, err);
    return st;
}

/* One forward over the running sequences listed in ix[0..k), then each one's next token. */
static fm_status step_rows(fm_batch *b, const int *ix, int k, fm_error *err) {
    for (int i = 0; i < k; i++) {
        const bseq *s = &b->seqs[ix[i]];
        b->ids[i] = s->last;
        b->pos3[i] = b->pos3[k + i] = b->pos3[2 * k + i] = s->next;
        b->slot[i] = ix[i], b->pos[i] = (int32_t)(s->n_history - 1), b->rows[i] = i;
    }
    fm_run_options ro;
    fm_run_options_init(&ro);
    ro.threads = b->o.threads;
    fm_text_batch tb = {.ids = b->ids,
                        .pos3 = b->pos3,
                        .slot = b->slot,
                        .pos = b->pos,
                        .n = (size_t)k,
                        .logit_rows = b->rows,
                        .n_logits = (size_t)k};
    fm_tensor logits = {0};
    fm_status st = fm_model_forward_text(b->m, b->cache, &tb, &ro, &logits, err), first = st;
    for (int i = 0; i < k; i++) {
        bseq *s = &b->seqs[ix[i]];
        if (st != FM_OK) {
            seq_fail(s, st, err);
            continue;
        }
        s->next++;
        fm_error e;
        fm_status si =
            choose(s, (const float *)logits.data + (int64_t)i * b->li.vocab, b->li.vocab, &e);
        if (si != FM_OK) seq_fail(s, si, &e);
        if (si != FM_OK && first == FM_OK && (first = si) && err) *err = e;
    }
    fm_tensor_free(&logits);
    return first;
}

fm_status fm_batch_step(fm_batch *b, fm_error *err) {
    int ix[FM_BATCH_MAX_ROWS], k = 0;
    fm_status first = FM_OK;
    fm_error e;
    for (int i = 0; i <= b->o.slots; i++) {
        if (k == FM_BATCH_MAX_ROWS || (i == b->o.slots && k)) {
            fm_status st = step_rows(b, ix, k, &e);
            if (st != FM_OK && first == FM_OK && (first = st) && err) *err = e;
            k = 0;
        }
        if (i < b->o.slots && b->seqs[i].running) ix[k++] = i;
    }
    return first;
}

fm_status fm_batch_end(fm_batch *b, int seq, fm_generate_result *out, fm_error *err) {
    if (seq < 0 || seq >= b->o.slots || !b->seqs[seq].used)
        return fm_error_set(err, FM_ERR_INVALID_ARG, "no sequence %d in the batch", seq);
    bseq *s = &b->seqs[seq];
    if (s->running) {
        s->running = false;
        s->r.stop = FM_STOP_CANCELLED;
        s->r.decode_s = now_s() - s->t_decode;
        s->st = finish_text(s, false, &s->err);
    }
    fm_status st = s->st;
    if (st != FM_OK) {
        if (err) *err = s->err;
    } else if (out) {
        *out = s->r;
        memset(&s->r, 0, sizeof s->r);
    }
    seq_release(s);
    return st;
}

fm_status fm_generate(struct fm_model *m, const int64_t *ids, size_t n,
                      const fm_tensor *pixel_values, const fm_tensor *image_grid_thw,
                      const fm_generate_options *o, fm_generate_result *out, fm_error *err) {
    memset(out, 0, sizeof *out);
    if ((pixel_values == NULL) != (image_grid_thw == NULL))
        return fm_error_set(err, FM_ERR_INVALID_ARG, "pixel_values and image_grid_thw go together");
    fm_batch_options bo;
    fm_batch_options_init(&bo);
    bo.kv_dtype = o->kv_dtype, bo.threads = o->threads;
    fm_lm_info li;
    fm_status st = fm_model_lm_info(m, &li, err);
    if (st == FM_OK) st = check_prompt(&li, li.max_positions, ids, n, o, err);
    bo.capacity = (int64_t)n + o->max_new_tokens; /* exactly what the sequence needs */
    fm_batch *b = NULL;
    int seq = -1;
    if (st == FM_OK) st = fm_batch_new(m, &bo, &b, err);
    if (st == FM_OK) st = fm_batch_start(b, ids, n, pixel_values, image_grid_thw, o, &seq, err);
    while (st == FM_OK && !fm_batch_finished(b, seq))
        st = fm_batch_step(b, err);
    if (seq >= 0) {
        fm_status end = fm_batch_end(b, seq, out, st == FM_OK ? err : NULL);
        if (st == FM_OK) st = end;
    }
    fm_batch_free(b);
    return st;
}
