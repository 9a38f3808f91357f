/* tokenizer.json's model.vocab, model.merges and added_tokens: limits, validation with errors
 * naming the entry, the id table, the merge table (both merge encodings, tokenizers'
 * serialization.rs / model.rs rules) and the decoded bytes of every id. */
#include <jansson.h>
#include <stdio.h>

#include "text/tok_internal.h"

/* A printable, bounded rendering of a token for error messages. */
static const char *show(const char *s, size_t n, char buf[80]) {
    size_t o = 0;
    for (size_t i = 0; i < n && o < 64; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != 0x7F && c != '"' && c != '\\')
            buf[o++] = (char)c;
        else
            o += (size_t)snprintf(buf + o, 80 - o, "\\x%02x", c);
    }
    if (o >= 64) memcpy(buf + 64, "...", 4), o = 67;
    buf[o] = '\0';
    return buf;
}

/* Makes t->ent cover ids [0, n). New entries are unknown (kind 0). */
static fm_status grow_ids(fm_tokenizer *t, size_t n, fm_error *err) {
    if (n <= t->n_ids) return FM_OK;
    tk_entry *e = fm_realloc(t->ent, n * sizeof *e);
    if (!e) return fm_error_set(err, FM_ERR_NOMEM, "%s: out of memory", t->label);
    memset(e + t->n_ids, 0, (n - t->n_ids) * sizeof *e);
    t->ent = e, t->n_ids = n;
    return FM_OK;
}

/* ---- model.vocab ---------------------------------------------------------------------------- */

static fm_status vocab_id(fm_tokenizer *t, const char *key, json_t *v, int32_t *id, fm_error *err) {
    char b[80];
    json_int_t x = json_is_integer(v) ? json_integer_value(v) : -1;
    if (x < 0)
        return fm_error_set(err, FM_ERR_CONFIG,
                            "%s: model.vocab[\"%s\"]: expected an id "
                            "(integer >= 0)",
                            t->label, show(key, strlen(key), b));
    if (x >= (json_int_t)t->lim.max_vocab)
        return fm_error_set(err, FM_ERR_LIMIT,
                            "%s: model.vocab[\"%s\"]: id %lld is not below the "
                            "vocab limit of %u",
                            t->label, show(key, strlen(key), b), (long long)x, t->lim.max_vocab);
    *id = (int32_t)x;
    return FM_OK;
}

static fm_status vocab_entry(fm_tokenizer *t, const char *key, size_t klen, int32_t id,
                             fm_error *err) {
    char b[80], b2[80];
    if (klen > t->lim.max_token_bytes)
        return fm_error_set(err, FM_ERR_LIMIT,
                            "%s: model.vocab: token \"%s\" of %zu bytes exceeds "
                            "the token length limit of %u bytes",
                            t->label, show(key, klen, b), klen, t->lim.max_token_bytes);
    fm_status st = grow_ids(t, (size_t)id + 1, err);
    if (st != FM_OK) return st;
    tk_entry *e = &t->ent[id];
    if (e->kind)
        return fm_error_set(err, FM_ERR_CONFIG,
                            "%s: model.vocab: id %d is given to both \"%s\" "
                            "and \"%s\"",
                            t->label, id, show(t->arena + e->off, e->len, b), show(key, klen, b2));
    uint32_t off;
    if ((st = tk_arena_add(t, key, klen, &off, err)) != FM_OK) return st;
    e->off = off, e->len = (uint32_t)klen, e->kind = TK_IS_VOCAB;
    tk_strmap_put(&t->vocab, t->arena, off, (uint32_t)klen, id); /* keys are unique in JSON */
    return FM_OK;
}

fm_status tk_load_vocab(fm_tokenizer *t, void *modelp, fm_error *err) {
    json_t *vocab = json_object_get(modelp, "vocab");
    if (!json_is_object(vocab))
        return fm_error_set(err, FM_ERR_CONFIG, "%s: model.vocab: expected an object", t->label);
    size_t n = json_object_size(vocab);
    if (n > t->lim.max_vocab)
        return fm_error_set(err, FM_ERR_LIMIT,
                            "%s: model.vocab: %zu entries exceed the vocab "
                            "limit of %u",
                            t->label, n, t->lim.max_vocab);
    if (tk_strmap_init(&t->vocab, n) != FM_OK)
        return fm_error_set(err, FM_ERR_NOMEM, "%s: out of memory", t->label);
    const char *key;
    json_t *v;
    json_object_foreach(vocab, key, v) {
        int32_t id = -1;
        fm_status st = vocab_id(t, key, v, &id, err);
        if (st == FM_OK) st = vocab_entry(t, key, strlen(key), id, err);
        if (st != FM_OK) return st;
    }
    t->n_vocab = n;
    return FM_OK;
}

/* ---- model.merges --------------------------------------------------------------------------- */

typedef struct merge_in {
    const char *a, *b;
    size_t alen, blen;
} merge_in;

/* Reads entry i: a legacy "a b" string or an ["a", "b"] pair. *skip for "#version" lines.
 * `line` is the 1-based rank tokenizers reports. */
static fm_status merge_parts(fm_tokenizer *t, json_t *v, size_t i, size_t line, int *kind,
                             merge_in *m, bool *skip, fm_error *err) {
    char b[80];
    int k = json_is_string(v) ? 1 : json_is_array(v) ? 2 : 0;
    *skip = false;
    if (!k || (*kind && k != *kind))
        return fm_error_set(err, FM_ERR_CONFIG, "%s: model.merges[%zu]: expected %s", t->label, i,
                            *kind == 1   ? "a string \"a b\" like the entries before it"
                            : *kind == 2 ? "a pair [\"a\", \"b\"] like the entries before it"
                                         : "a string \"a b\" or a pair [\"a\", \"b\"]");
    *kind = k;
    if (k == 2) {
        json_t *a = json_array_get(v, 0), *c = json_array_get(v, 1);
        if (json_array_size(v) != 2 || !json_is_string(a) || !json_is_string(c))
            return fm_error_set(err, FM_ERR_CONFIG,
                                "%s: model.merges[%zu] (line %zu): expected "
                                "a pair of two strings",
                                t->label, i, line);
        *m = (merge_in){json_string_value(a), json_string_value(c), json_string_length(a),
                        json_string_length(c)};
        return FM_OK;
    }
    const char *s = json_string_value(v);
    size_t n = json_string_length(v);
    if (n >= 8 && !memcmp(s, "#version", 8)) return *skip = true, FM_OK;
    const char *sp = memchr(s, ' ', n);
    if (!sp || memchr(sp + 1, ' ', n - (size_t)(sp + 1 - s)))
        return fm_error_set(err, FM_ERR_CONFIG,
                            "%s: model.merges[%zu]: bad merge \"%s\" at line "
                            "%zu (expected two tokens separated by one space)",
                            t->label, i, show(s, n, b), line);
    *m = (merge_in){s, sp + 1, (size_t)(sp - s), n - (size_t)(sp + 1 - s)};
    return FM_OK;
}

static fm_status merge_lookup(fm_tokenizer *t, const char *s, size_t n, size_t i, size_t line,
                              int32_t *id, fm_error *err) {
    char b[80];
    *id = tk_strmap_get(&t->vocab, t->arena, s, n);
    if (*id < 0)
        return fm_error_set(err, FM_ERR_CONFIG,
                            "%s: model.merges[%zu] (line %zu): token \"%s\" is "
                            "not in model.vocab",
                            t->label, i, line, show(s, n, b));
    return FM_OK;
}

static fm_status merge_add(fm_tokenizer *t, const merge_in *m, size_t i, size_t rank, char *scratch,
                           fm_error *err) {
    char b[80];
    int32_t a, c, ac;
    fm_status st = merge_lookup(t, m->a, m->alen, i, rank + 1, &a, err);
    if (st == FM_OK) st = merge_lookup(t, m->b, m->blen, i, rank + 1, &c, err);
    if (st != FM_OK) return st;
    if (m->alen + m->blen > t->lim.max_token_bytes) /* longer than any vocab entry */
        return fm_error_set(err, FM_ERR_CONFIG,
                            "%s: model.merges[%zu] (line %zu): merged token "
                            "\"%s\" is not in model.vocab",
                            t->label, i, rank + 1, show(m->a, m->alen, b));
    memcpy(scratch, m->a, m->alen);
    memcpy(scratch + m->alen, m->b, m->blen);
    st = merge_lookup(t, scratch, m->alen + m->blen, i, rank + 1, &ac, err);
    if (st == FM_OK) tk_pairmap_put(&t->merges, a, c, (int32_t)rank, ac);
    return st;
}

fm_status tk_load_merges(fm_tokenizer *t, void *modelp, fm_error *err) {
    json_t *merges = json_object_get(modelp, "merges");
    if (merges && !json_is_null(merges) && !json_is_array(merges))
        return fm_error_set(err, FM_ERR_CONFIG, "%s: model.merges: expected an array", t->label);
    size_t n = json_array_size(merges);
    if (n > t->lim.max_merges)
        return fm_error_set(err, FM_ERR_LIMIT,
                            "%s: model.merges: %zu entries exceed the merges "
                            "limit of %u",
                            t->label, n, t->lim.max_merges);
    char *scratch = fm_malloc(2 * (size_t)t->lim.max_token_bytes + 2);
    if (!scratch || tk_pairmap_init(&t->merges, n) != FM_OK) {
        fm_free(scratch);
        return fm_error_set(err, FM_ERR_NOMEM, "%s: out of memory", t->label);
    }
    fm_status st = FM_OK;
    int kind = 0;
    size_t rank = 0;
    for (size_t i = 0; i < n && st == FM_OK; i++) {
        merge_in m = {0};
        bool skip = false;
        st = merge_parts(t, json_array_get(merges, i), i, rank + 1, &kind, &m, &skip, err);
        if (st == FM_OK && !skip) st = merge_add(t, &m, i, rank++, scratch, err);
    }
    fm_free(scratch);
    return st;
}

/* ---- added_tokens --------------------------------------------------------------------------- */

static fm_status get_flag(fm_tokenizer *t, json_t *obj, const char *name, const char *key,
                          bool dflt, bool *out, fm_error *err) {
    json_t *v = json_object_get(obj, name);
    *out = dflt;
    if (!v || json_is_null(v)) return FM_OK;
    if (!json_is_boolean(v))
        return fm_error_set(err, FM_ERR_CONFIG, "%s: %s.%s: expected true or false", t->label, key,
                            name);
    *out = json_is_true(v);
    return FM_OK;
}

static fm_status added_fields(fm_tokenizer *t, json_t *v, size_t i, tk_added *a,
                              const char **content, size_t *clen, fm_error *err) {
    char key[48];
    snprintf(key, sizeof key, "added_tokens[%zu]", i);
    json_t *id = json_object_get(v, "id"), *c = json_object_get(v, "content");
    if (!json_is_object(v) || !json_is_integer(id) || !json_is_string(c))
        return fm_error_set(err, FM_ERR_CONFIG,
                            "%s: %s: expected an object with an integer "
                            "\"id\" and a string \"content\"",
                            t->label, key);
    json_int_t x = json_integer_value(id);
    if (x < 0 || x >= (json_int_t)t->lim.max_vocab)
        return fm_error_set(err, x < 0 ? FM_ERR_CONFIG : FM_ERR_LIMIT,
                            "%s: %s.id: %lld is not "
                            "in 0..%u (the vocab limit)",
                            t->label, key, (long long)x, t->lim.max_vocab - 1);
    *content = json_string_value(c), *clen = json_string_length(c);
    if (*clen == 0 || *clen > t->lim.max_token_bytes)
        return fm_error_set(err, *clen ? FM_ERR_LIMIT : FM_ERR_CONFIG,
                            "%s: %s.content: %zu bytes "
                            "(must be 1..%u, the token length limit)",
                            t->label, key, *clen, t->lim.max_token_bytes);
    a->id = (int32_t)x;
    fm_status st = get_flag(t, v, "special", key, false, &a->special, err);
    if (st == FM_OK) st = get_flag(t, v, "single_word", key, false, &a->single_word, err);
    if (st == FM_OK) st = get_flag(t, v, "lstrip", key, false, &a->lstrip, err);
    if (st == FM_OK) st = get_flag(t, v, "rstrip", key, false, &a->rstrip, err);
    if (st == FM_OK) st = get_flag(t, v, "normalized", key, !a->special, &a->normalized, err);
    return st;
}

/* The id tokenizers gives an added token (tokenizers ignores the file's id and only warns):
 * its vocab id when the content is a vocab entry, else the next id after the vocab entry count
 * or after the largest added id so far, whichever is larger (added_vocabulary.rs). */
static int64_t expected_id(const fm_tokenizer *t, int32_t vocab_id, int64_t max_added) {
    if (vocab_id >= 0) return vocab_id;
    return max_added >= (int64_t)t->n_vocab ? max_added + 1 : (int64_t)t->n_vocab;
}

/* The id rules: the id tokenizers would give, and not another vocab entry's id. */
static fm_status added_id_ok(fm_tokenizer *t, size_t i, const tk_added *a, const char *content,
                             size_t clen, int32_t vid, int64_t max_added, fm_error *err) {
    char b[80], b2[80];
    int64_t want = expected_id(t, vid, max_added);
    if (a->id != want)
        return fm_error_set(err, FM_ERR_CONFIG,
                            "%s: added_tokens[%zu] (\"%s\"): id %d in the file, but tokenizers "
                            "gives this token id %lld (%s)",
                            t->label, i, show(content, clen, b), a->id, (long long)want,
                            vid >= 0
                                ? "its model.vocab id"
                                : "the next id after the vocab and the added tokens before it");
    const tk_entry *e = (size_t)a->id < t->n_ids ? &t->ent[a->id] : NULL;
    if (vid < 0 && e && e->kind)
        return fm_error_set(err, FM_ERR_CONFIG,
                            "%s: added_tokens[%zu] (\"%s\"): id %d is already model.vocab's "
                            "\"%s\"",
                            t->label, i, show(content, clen, b), a->id,
                            show(t->arena + e->off, e->len, b2));
    return FM_OK;
}

/* The form a normalized token is matched in: its NFC when the normalizer is NFC. */
static fm_status added_match_form(fm_tokenizer *t, tk_added *a, const char *content, size_t clen,
                                  fm_error *err) {
    if (!a->normalized || !t->nfc) return FM_OK;
    char *norm = NULL;
    size_t nlen = 0;
    fm_status st = tk_nfc(content, clen, &norm, &nlen, err);
    if (st == FM_OK) st = tk_arena_add(t, norm, nlen, &a->off, err);
    if (st == FM_OK) a->len = (uint32_t)nlen;
    fm_free(norm);
    return st;
}

static fm_status added_entry(fm_tokenizer *t, size_t i, tk_added *a, const char *content,
                             size_t clen, int64_t *max_added, fm_error *err) {
    char b[80];
    uint32_t off;
    fm_status st = tk_arena_add(t, content, clen, &off, err);
    if (st != FM_OK) return st;
    int32_t prev = tk_strmap_put(&t->added_map, t->arena, off, (uint32_t)clen, (int32_t)i);
    if (prev >= 0)
        return fm_error_set(err, FM_ERR_CONFIG,
                            "%s: added_tokens[%zu]: content \"%s\" repeats added_tokens[%d]",
                            t->label, i, show(content, clen, b), prev);
    int32_t vid = tk_strmap_get(&t->vocab, t->arena, content, clen);
    st = added_id_ok(t, i, a, content, clen, vid, *max_added, err);
    if (st == FM_OK) st = grow_ids(t, (size_t)a->id + 1, err);
    if (st != FM_OK) return st;
    tk_entry *e = &t->ent[a->id];
    if (vid < 0) e->off = off, e->len = (uint32_t)clen;
    e->kind |= TK_IS_ADDED | (a->special ? TK_IS_SPECIAL : 0);
    if (a->id > *max_added) *max_added = a->id;
    a->off = off, a->len = (uint32_t)clen;
    return added_match_form(t, a, content, clen, err);
}

fm_status tk_load_added(fm_tokenizer *t, void *list, fm_error *err) {
    json_t *arr = list;
    if (arr && !json_is_null(arr) && !json_is_array(arr))
        return fm_error_set(err, FM_ERR_CONFIG, "%s: added_tokens: expected an array", t->label);
    size_t n = json_array_size(arr);
    if (n > t->lim.max_added)
        return fm_error_set(err, FM_ERR_LIMIT,
                            "%s: added_tokens: %zu entries exceed the added "
                            "tokens limit of %u",
                            t->label, n, t->lim.max_added);
    t->added = fm_calloc(n ? n : 1, sizeof *t->added);
    if (!t->added || tk_strmap_init(&t->added_map, n) != FM_OK)
        return fm_error_set(err, FM_ERR_NOMEM, "%s: out of memory", t->label);
    int64_t max_added = -1;
    for (size_t i = 0; i < n; i++) {
        const char *content = NULL;
        size_t clen = 0;
        tk_added *a = &t->added[i];
        fm_status st = added_fields(t, json_array_get(arr, i), i, a, &content, &clen, err);
        if (st == FM_OK) st = added_entry(t, i, a, content, clen, &max_added, err);
        if (st != FM_OK) return st;
        t->n_added = i + 1;
    }
    return FM_OK;
}

/* ---- decoded bytes -------------------------------------------------------------------------- */

/* ByteLevel decoder on one token (tokenizers decoders/byte_level.rs): the bytes of its
 * characters when every one is in the byte-level alphabet, else its own UTF-8. */
static size_t decode_token(const int16_t *u2b, const char *s, size_t n, char *out) {
    size_t i = 0, o = 0, adv;
    while (i < n) {
        uint32_t cp = tk_utf8_next((const uint8_t *)s + i, n - i, &adv);
        if (cp >= 0x144 || u2b[cp] < 0) {
            memcpy(out, s, n);
            return n;
        }
        out[o++] = (char)u2b[cp];
        i += adv;
    }
    return o;
}

fm_status tk_build_decoded(fm_tokenizer *t, fm_error *err) {
    int16_t u2b[0x144];
    for (uint32_t cp = 0; cp < 0x144; cp++)
        u2b[cp] = (int16_t)tk_u2b(cp);
    size_t total = 1;
    for (size_t id = 0; id < t->n_ids; id++)
        total += t->ent[id].len;
    if (!(t->darena = fm_malloc(total)))
        return fm_error_set(err, FM_ERR_NOMEM, "%s: out of memory", t->label);
    size_t o = 0;
    for (size_t id = 0; id < t->n_ids; id++) {
        tk_entry *e = &t->ent[id];
        if (!e->kind) continue;
        e->doff = (uint32_t)o;
        e->dlen = (uint32_t)decode_token(u2b, t->arena + e->off, e->len, t->darena + o);
        o += e->dlen;
    }
    t->darena_len = o;
    return FM_OK;
}
