/* fm_tokenizer_encode: validate UTF-8, split on the raw-text added tokens (with the user mask
 * guarding special tokens), then for every plain segment NFC, the normalized added tokens, the
 * pre-tokenizer and BPE (tokenizers' TokenizerImpl::encode_single_sequence order). */
#include "text/tok_internal.h"

fm_status tk_enc_push(tk_enc *e, int32_t id) {
    if (e->n_ids == e->cap_ids) {
        size_t cap = e->cap_ids ? e->cap_ids * 2 : 256;
        int32_t *p = fm_realloc(e->ids, cap * sizeof *p);
        if (!p) return fm_error_set(e->err, FM_ERR_NOMEM, "%s: encode: out of memory", e->t->label);
        e->ids = p, e->cap_ids = cap;
    }
    e->ids[e->n_ids++] = id;
    return FM_OK;
}

static bool all_ascii(const char *s, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, s + i, 8);
        if (w & 0x8080808080808080ull) return false;
    }
    for (; i < n; i++)
        if ((unsigned char)s[i] & 0x80) return false;
    return true;
}

static bool any_set(const uint8_t *mask, size_t n) {
    for (size_t i = 0; mask && i < n; i++)
        if (mask[i]) return true;
    return false;
}

static fm_status plain_pieces(tk_enc *e, const char *s, size_t n, const uint8_t *mask) {
    (void)mask;
    return tk_pretokenize(e, 0, s, n);
}

fm_status tk_encode_segment(tk_enc *e, const char *s, size_t n, const uint8_t *mask) {
    const fm_tokenizer *t = e->t;
    if (!t->nfc || all_ascii(s, n)) {
        if (t->norm_set.n)
            return tk_split_added(e, &t->norm_set, s, n, mask, e->specials, plain_pieces);
        return tk_pretokenize(e, 0, s, n);
    }
    char *ns = NULL;
    size_t nn = 0;
    fm_status st = tk_nfc(s, n, &ns, &nn, e->err);
    if (st != FM_OK) return st;
    /* NFC may move bytes, so the mask no longer lines up: a segment holding user bytes gets no
     * normalized special tokens at all (never one formed from user text). */
    if (t->norm_set.n)
        st = tk_split_added(e, &t->norm_set, ns, nn, NULL, e->specials && !any_set(mask, n),
                            plain_pieces);
    else
        st = tk_pretokenize(e, 0, ns, nn);
    fm_free(ns);
    return st;
}

fm_status fm_tokenizer_encode(const fm_tokenizer *t, const char *text, size_t len,
                              const uint8_t *user_mask, unsigned flags, int32_t **ids,
                              size_t *n_ids, fm_error *err) {
    if (!ids || !n_ids) return fm_error_set(err, FM_ERR_INVALID_ARG, "encode: no output pointer");
    *ids = NULL, *n_ids = 0;
    if (!t || (!text && len))
        return fm_error_set(err, FM_ERR_INVALID_ARG, "encode: no tokenizer or text");
    size_t bad = tk_utf8_invalid_at((const uint8_t *)text, len);
    if (bad < len)
        return fm_error_set(err, FM_ERR_INPUT,
                            "%s: encode: input is not valid UTF-8 at byte "
                            "offset %zu",
                            t->label, bad);
    tk_enc e = {
        .t = t, .mask = user_mask, .specials = (flags & FM_TOKENIZE_SPECIAL) != 0, .err = err};
    e.md = pcre2_match_data_create(1, t->gctx);
    e.mctx = e.md ? pcre2_match_context_create(t->gctx) : NULL;
    fm_status st =
        e.mctx ? FM_OK : fm_error_set(err, FM_ERR_NOMEM, "%s: encode: out of memory", t->label);
    if (st == FM_OK && len)
        st = tk_split_added(&e, &t->raw_set, text, len, user_mask, e.specials, tk_encode_segment);
    if (st == FM_OK && !e.ids && !(e.ids = fm_malloc(sizeof *e.ids)))
        st = fm_error_set(err, FM_ERR_NOMEM, "%s: encode: out of memory", t->label);
    if (st == FM_OK) {
        *ids = e.ids, *n_ids = e.n_ids;
        e.ids = NULL;
    }
    tk_enc_release(&e);
    return st;
}
