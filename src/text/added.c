/* Added tokens: split a text on them as tokenizers' AddedVocabulary does — leftmost-longest
 * matches taken left to right without overlap; a match that may not be used (single_word
 * failing, a special token when specials are off or a user byte is inside it) is skipped as a
 * whole and its text stays plain; lstrip / rstrip absorb the whitespace beside a match. */
#include <stdlib.h>

#include "text/tok_internal.h"

/* \w and \s as Rust's regex crate defines them with Unicode (UTS #18 Annex C), which
 * tokenizers uses for single_word and lstrip / rstrip. */
static const char WORD_CLASS[] = "[\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}\\p{Join_Control}]";
static const char SPACE_CLASS[] = "\\p{White_Space}";

typedef struct sort_key {
    uint32_t first, len, idx;
    int32_t id;
} sort_key;

/* By first byte, then longest first (ties cannot happen: contents are unique). */
static int cmp_key(const void *pa, const void *pb) {
    const sort_key *a = pa, *b = pb;
    if (a->first != b->first) return a->first < b->first ? -1 : 1;
    if (a->len != b->len) return a->len > b->len ? -1 : 1;
    return a->id < b->id ? -1 : a->id > b->id;
}

static fm_status build_set(fm_tokenizer *t, tk_addset *set, bool normalized, fm_error *err) {
    size_t cap = t->n_added ? t->n_added : 1;
    sort_key *keys = fm_malloc(cap * sizeof *keys);
    set->order = fm_malloc(cap * sizeof *set->order);
    set->n = 0;
    if (!keys || !set->order) {
        fm_free(keys);
        return fm_error_set(err, FM_ERR_NOMEM, "%s: out of memory", t->label);
    }
    for (size_t i = 0; i < t->n_added; i++) {
        const tk_added *a = &t->added[i];
        if (a->normalized == normalized)
            keys[set->n++] = (sort_key){(uint8_t)t->arena[a->off], a->len, (uint32_t)i, a->id};
    }
    qsort(keys, set->n, sizeof *keys, cmp_key);
    size_t k = 0;
    for (unsigned b = 0; b < 256; b++) {
        set->start[b] = (uint32_t)k;
        while (k < set->n && keys[k].first == b)
            set->order[k] = keys[k].idx, k++;
    }
    set->start[256] = (uint32_t)k;
    fm_free(keys);
    return FM_OK;
}

static fm_status compile_class(fm_tokenizer *t, const char *pat, pcre2_code **out, fm_error *err) {
    tk_regex re = {0};
    fm_status st = tk_regex_compile(t, pat, strlen(pat), false, "added token flags", &re, err);
    *out = re.code;
    return st;
}

fm_status tk_addsets_build(fm_tokenizer *t, fm_error *err) {
    fm_status st = build_set(t, &t->raw_set, false, err);
    if (st == FM_OK) st = build_set(t, &t->norm_set, true, err);
    bool word = false, space = false;
    for (size_t i = 0; i < t->n_added; i++) {
        word |= t->added[i].single_word;
        space |= t->added[i].lstrip || t->added[i].rstrip;
    }
    if (st == FM_OK && word) st = compile_class(t, WORD_CLASS, &t->word_re, err);
    if (st == FM_OK && space) st = compile_class(t, SPACE_CLASS, &t->space_re, err);
    return st;
}

/* True when the code point matches the one-character class `re`. Uses the encode call's match
 * data (free here: no regex iteration is in progress while added tokens are split). */
static bool class_has(const tk_enc *e, pcre2_code *re, uint32_t cp) {
    char u[4];
    size_t n = tk_utf8_put(cp, u);
    return re && pcre2_match(re, (PCRE2_SPTR)u, n, 0, PCRE2_NO_UTF_CHECK, e->md, NULL) >= 0;
}

static bool is_word_char(const tk_enc *e, uint32_t cp) {
    if (cp < 0x80)
        return (cp >= '0' && cp <= '9') || (cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z') ||
               cp == '_';
    return class_has(e, e->t->word_re, cp);
}

static bool is_space(const tk_enc *e, uint32_t cp) {
    if (cp < 0x80) return cp == ' ' || (cp >= 0x09 && cp <= 0x0D);
    return class_has(e, e->t->space_re, cp);
}

/* ---- splitting ------------------------------------------------------------------------------ */

/* The longest added token of `set` at the leftmost position >= pos, or NULL. */
static const tk_added *find_next(const fm_tokenizer *t, const tk_addset *set, const char *s,
                                 size_t n, size_t pos, size_t *at) {
    for (size_t i = pos; i < n; i++) {
        uint8_t b = (uint8_t)s[i];
        for (uint32_t k = set->start[b]; k < set->start[b + 1]; k++) {
            const tk_added *a = &t->added[set->order[k]];
            if (a->len <= n - i && !memcmp(s + i, t->arena + a->off, a->len)) {
                *at = i;
                return a;
            }
        }
    }
    return NULL;
}

static bool single_word_ok(const tk_enc *e, const char *s, size_t n, size_t q, size_t end) {
    size_t adv;
    if (q > 0 && is_word_char(e, tk_utf8_prev((const uint8_t *)s, q, &adv))) return false;
    return end == n || !is_word_char(e, tk_utf8_next((const uint8_t *)s + end, n - end, &adv));
}

static bool usable(const tk_enc *e, const tk_added *a, const char *s, size_t n, size_t q,
                   const uint8_t *mask, bool specials) {
    size_t end = q + a->len;
    if (a->special) {
        if (!specials) return false;
        for (size_t i = q; mask && i < end; i++)
            if (mask[i]) return false;
    }
    return !a->single_word || single_word_ok(e, s, n, q, end);
}

static size_t strip_left(const tk_enc *e, const char *s, size_t q, size_t floor) {
    size_t back;
    while (q > floor && is_space(e, tk_utf8_prev((const uint8_t *)s, q, &back)))
        q -= back;
    return q < floor ? floor : q;
}

static size_t strip_right(const tk_enc *e, const char *s, size_t n, size_t end) {
    size_t adv;
    while (end < n && is_space(e, tk_utf8_next((const uint8_t *)s + end, n - end, &adv)))
        end += adv;
    return end;
}

fm_status tk_split_added(tk_enc *e, const tk_addset *set, const char *s, size_t n,
                         const uint8_t *mask, bool specials, tk_plain_fn plain) {
    const fm_tokenizer *t = e->t;
    size_t seg = 0, pos = 0, q;
    fm_status st = FM_OK;
    while (st == FM_OK && pos < n) {
        const tk_added *a = set->n ? find_next(t, set, s, n, pos, &q) : NULL;
        if (!a) break;
        size_t end = q + a->len;
        if (!usable(e, a, s, n, q, mask, specials)) {
            pos = end; /* skipped whole, as tokenizers' find_iter does */
            continue;
        }
        size_t start = a->lstrip ? strip_left(e, s, q, seg) : q;
        if (a->rstrip) end = strip_right(e, s, n, end);
        if (start > seg) st = plain(e, s + seg, start - seg, mask ? mask + seg : NULL);
        if (st == FM_OK) st = tk_enc_push(e, a->id);
        seg = pos = end;
    }
    if (st == FM_OK && seg < n) st = plain(e, s + seg, n - seg, mask ? mask + seg : NULL);
    return st;
}
