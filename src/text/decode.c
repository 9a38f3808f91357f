/* Decoding (tokenizers' Tokenizer::decode with the ByteLevel decoder): each id's bytes, special
 * ids dropped on request, unknown ids dropped, then one lossy UTF-8 conversion of the whole byte
 * string. The streaming detokenizer emits the same text incrementally. Also the id and token
 * accessors. */
#include "text/tok_internal.h"

static const tk_entry *entry(const fm_tokenizer *t, int32_t id) {
    if (!t || id < 0 || (size_t)id >= t->n_ids || !t->ent[id].kind) return NULL;
    return &t->ent[id];
}

int32_t fm_tokenizer_token_to_id(const fm_tokenizer *t, const char *token, size_t len) {
    if (!t || (!token && len)) return -1;
    int32_t i = tk_strmap_get(&t->added_map, t->arena, token ? token : "", len);
    if (i >= 0) return t->added[i].id;
    return tk_strmap_get(&t->vocab, t->arena, token ? token : "", len);
}

const char *fm_tokenizer_id_to_token(const fm_tokenizer *t, int32_t id, size_t *len) {
    const tk_entry *e = entry(t, id);
    if (len) *len = e ? e->len : 0;
    return e ? t->arena + e->off : NULL;
}

const char *fm_tokenizer_token_bytes(const fm_tokenizer *t, int32_t id, size_t *len) {
    const tk_entry *e = entry(t, id);
    if (len) *len = e ? e->dlen : 0;
    return e ? t->darena + e->doff : NULL;
}

size_t fm_tokenizer_vocab_size(const fm_tokenizer *t) {
    return t ? t->n_ids : 0;
}

bool fm_tokenizer_is_special(const fm_tokenizer *t, int32_t id) {
    const tk_entry *e = entry(t, id);
    return e && (e->kind & TK_IS_SPECIAL);
}

bool fm_tokenizer_is_added(const fm_tokenizer *t, int32_t id) {
    const tk_entry *e = entry(t, id);
    return e && (e->kind & TK_IS_ADDED);
}

/* The bytes id contributes to a decode, or NULL when it contributes nothing. */
static const tk_entry *emitted(const fm_tokenizer *t, int32_t id, bool skip_special) {
    const tk_entry *e = entry(t, id);
    if (!e || (skip_special && (e->kind & TK_IS_SPECIAL))) return NULL;
    return e;
}

fm_status fm_tokenizer_decode(const fm_tokenizer *t, const int32_t *ids, size_t n,
                              bool skip_special, char **text, size_t *len, fm_error *err) {
    if (!text || !len) return fm_error_set(err, FM_ERR_INVALID_ARG, "decode: no output pointer");
    *text = NULL, *len = 0;
    if (!t || (!ids && n)) return fm_error_set(err, FM_ERR_INVALID_ARG, "decode: no tokenizer");
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        const tk_entry *e = emitted(t, ids[i], skip_special);
        if (e) total += e->dlen;
    }
    if (total > (SIZE_MAX - 1) / 4)
        return fm_error_set(err, FM_ERR_OVERFLOW, "%s: decode: output too large", t->label);
    char *bytes = fm_malloc(total + 1), *out = bytes ? fm_malloc(3 * total + 1) : NULL;
    if (!out) {
        fm_free(bytes);
        return fm_error_set(err, FM_ERR_NOMEM, "%s: decode: out of memory", t->label);
    }
    size_t o = 0, olen = 0;
    for (size_t i = 0; i < n; i++) {
        const tk_entry *e = emitted(t, ids[i], skip_special);
        if (e) memcpy(bytes + o, t->darena + e->doff, e->dlen), o += e->dlen;
    }
    tk_utf8_lossy((const uint8_t *)bytes, o, true, out, &olen);
    fm_free(bytes);
    out[olen] = '\0';
    *text = out, *len = olen;
    return FM_OK;
}

/* ---- streaming ---------------------------------------------------------------------------- */

struct fm_detok_stream {
    const fm_tokenizer *t; /* borrowed */
    bool skip_special;
    uint8_t held[4]; /* incomplete tail: at most 3 bytes of a valid prefix */
    size_t n_held;
    uint8_t *in; /* held + the new token's bytes */
    char *out;
    size_t cap; /* bytes of `in`; `out` holds 3 * cap + 1 */
};

fm_status fm_detok_stream_new(const fm_tokenizer *t, bool skip_special, fm_detok_stream **out,
                              fm_error *err) {
    if (!out) return fm_error_set(err, FM_ERR_INVALID_ARG, "detok stream: no output pointer");
    *out = NULL;
    if (!t) return fm_error_set(err, FM_ERR_INVALID_ARG, "detok stream: no tokenizer");
    fm_detok_stream *s = fm_calloc(1, sizeof *s);
    if (!s) return fm_error_set(err, FM_ERR_NOMEM, "%s: detok stream: out of memory", t->label);
    s->t = t, s->skip_special = skip_special;
    *out = s;
    return FM_OK;
}

static fm_status stream_reserve(fm_detok_stream *s, size_t need, fm_error *err) {
    if (need <= s->cap) return FM_OK;
    size_t cap = s->cap ? s->cap : 64;
    while (cap < need)
        cap *= 2;
    uint8_t *in = fm_malloc(cap);
    char *out = in ? fm_malloc(3 * cap + 1) : NULL;
    if (!out) {
        fm_free(in);
        return fm_error_set(err, FM_ERR_NOMEM, "%s: detok stream: out of memory", s->t->label);
    }
    fm_free(s->in);
    fm_free(s->out);
    s->in = in, s->out = out, s->cap = cap;
    return FM_OK;
}

/* Converts held + bytes; keeps an incomplete tail unless final. */
static fm_status stream_emit(fm_detok_stream *s, const char *b, size_t n, bool final,
                             const char **text, size_t *len, fm_error *err) {
    *text = "", *len = 0;
    fm_status st = stream_reserve(s, s->n_held + n + 1, err);
    if (st != FM_OK) return st;
    memcpy(s->in, s->held, s->n_held);
    if (n) memcpy(s->in + s->n_held, b, n);
    size_t total = s->n_held + n, olen = 0;
    size_t used = tk_utf8_lossy(s->in, total, final, s->out, &olen);
    s->n_held = total - used; /* < 4: only a valid, incomplete prefix is held */
    memcpy(s->held, s->in + used, s->n_held);
    s->out[olen] = '\0';
    *text = s->out, *len = olen;
    return FM_OK;
}

fm_status fm_detok_stream_push(fm_detok_stream *s, int32_t id, const char **text, size_t *len,
                               fm_error *err) {
    if (!s || !text || !len)
        return fm_error_set(err, FM_ERR_INVALID_ARG, "detok stream: missing argument");
    const tk_entry *e = emitted(s->t, id, s->skip_special);
    return stream_emit(s, e ? s->t->darena + e->doff : NULL, e ? e->dlen : 0, false, text, len,
                       err);
}

fm_status fm_detok_stream_finish(fm_detok_stream *s, const char **text, size_t *len,
                                 fm_error *err) {
    if (!s || !text || !len)
        return fm_error_set(err, FM_ERR_INVALID_ARG, "detok stream: missing argument");
    return stream_emit(s, NULL, 0, true, text, len, err);
}

void fm_detok_stream_free(fm_detok_stream *s) {
    if (!s) return;
    fm_free(s->in);
    fm_free(s->out);
    fm_free(s);
}
