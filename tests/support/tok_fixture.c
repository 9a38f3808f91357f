/* Byte-level BPE trainer and tokenizer.json writer for tests and benchmarks (tok_fixture.h).
 * Training: the corpus is split with Qwen2's pattern, identical pieces are counted once with
 * their frequency, then merges are learnt most frequent pair first (ties: smaller ids first)
 * with a lazy max-heap; a merge rewrites only the words that hold the pair. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <jansson.h>
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tok_fixture.h"

const char tokfx_qwen2_pattern[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+"
    "[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

/* ---- growable arrays and a string -> index map -------------------------------------------- */

static int grow(void **p, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return 0;
    size_t n = *cap ? *cap * 2 : 64;
    while (n < need)
        n *= 2;
    void *q = realloc(*p, n * elem);
    if (!q) return -1;
    *p = q, *cap = n;
    return 0;
}

static uint64_t hash_bytes(const void *p, size_t n, uint64_t h) {
    const unsigned char *s = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ s[i]) * 0x100000001b3ull;
    return h ^ (h >> 29);
}

typedef struct tok_t {
    char *s; /* raw bytes */
    size_t n;
} tok_t;

typedef struct word_t {
    int32_t *sym;
    uint32_t len, stamp;
    uint64_t count;
} word_t;

typedef struct pair_t {
    int32_t a, b;
    int64_t count;
    uint32_t *where; /* words that held the pair at some point (may repeat, may be stale) */
    size_t nw, cw;
} pair_t;

typedef struct heap_t {
    int64_t count;
    int32_t a, b;
} heap_t;

typedef struct trainer {
    tok_t *tok;
    size_t ntok, ctok;
    word_t *word;
    size_t nword, cword;
    pair_t *pair;
    size_t npair, cpair;
    int64_t *pslot; /* pair hash: index + 1, 0 empty */
    size_t pmask;
    int64_t *tslot; /* token-string hash: id + 1 */
    size_t tmask;
    heap_t *heap;
    size_t nheap, cheap;
    int32_t (*merge)[2];
    size_t nmerge, cmerge;
    uint32_t stamp;
} trainer;

/* ---- tokens ----------------------------------------------------------------------------- */

static int64_t *tok_slot(trainer *t, const char *s, size_t n) {
    for (size_t i = hash_bytes(s, n, 14695981039346656037ull) & t->tmask;; i = (i + 1) & t->tmask) {
        int64_t v = t->tslot[i];
        if (!v || (t->tok[v - 1].n == n && !memcmp(t->tok[v - 1].s, s, n))) return &t->tslot[i];
    }
}

static int rehash_tokens(trainer *t) {
    size_t cap = (t->tmask + 1) * 2;
    free(t->tslot);
    if (!(t->tslot = calloc(cap, sizeof *t->tslot))) return -1;
    t->tmask = cap - 1;
    for (size_t i = 0; i < t->ntok; i++)
        *tok_slot(t, t->tok[i].s, t->tok[i].n) = (int64_t)i + 1;
    return 0;
}

/* Id of the token with these bytes, added when new; -1 on OOM. */
static int32_t tok_id(trainer *t, const char *s, size_t n) {
    if ((t->ntok + 1) * 2 > t->tmask + 1 && rehash_tokens(t)) return -1;
    int64_t *slot = tok_slot(t, s, n);
    if (*slot) return (int32_t)(*slot - 1);
    if (grow((void **)&t->tok, &t->ctok, t->ntok + 1, sizeof *t->tok)) return -1;
    char *c = malloc(n + 1);
    if (!c) return -1;
    memcpy(c, s, n);
    t->tok[t->ntok] = (tok_t){c, n};
    *slot = (int64_t)++t->ntok;
    return (int32_t)(t->ntok - 1);
}

/* GPT-2's bytes_to_unicode order: printable Latin-1 bytes first, then the other 68. */
static bool printable(unsigned b) {
    return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
}

static uint32_t b2u(unsigned b) {
    if (printable(b)) return b;
    uint32_t k = 0;
    for (unsigned x = 0; x < b; x++)
        k += !printable(x);
    return 0x100 + k;
}

static int32_t byte_ids[256];

static int add_alphabet(trainer *t) {
    for (int pass = 0; pass < 2; pass++)
        for (unsigned b = 0; b < 256; b++) {
            if (printable(b) != (pass == 0)) continue;
            char c = (char)b;
            if ((byte_ids[b] = tok_id(t, &c, 1)) < 0) return -1;
        }
    return 0;
}

/* ---- pairs and the heap ------------------------------------------------------------------- */

static int64_t *pair_slot(trainer *t, int32_t a, int32_t b) {
    uint64_t h = ((uint64_t)(uint32_t)a << 32 | (uint32_t)b) * 0x9e3779b97f4a7c15ull;
    for (size_t i = (h ^ (h >> 31)) & t->pmask;; i = (i + 1) & t->pmask) {
        int64_t v = t->pslot[i];
        if (!v || (t->pair[v - 1].a == a && t->pair[v - 1].b == b)) return &t->pslot[i];
    }
}

static int rehash_pairs(trainer *t) {
    size_t cap = t->pmask ? (t->pmask + 1) * 2 : 1024;
    free(t->pslot);
    if (!(t->pslot = calloc(cap, sizeof *t->pslot))) return -1;
    t->pmask = cap - 1;
    for (size_t i = 0; i < t->npair; i++)
        *pair_slot(t, t->pair[i].a, t->pair[i].b) = (int64_t)i + 1;
    return 0;
}

/* Adds delta occurrences of (a, b) in word w (noting w in the pair's word list when `note`);
 * returns the pair index, -1 on OOM. */
static int64_t pair_add(trainer *t, int32_t a, int32_t b, int64_t delta, uint32_t w, bool note) {
    if ((t->npair + 1) * 2 > t->pmask + 1 && rehash_pairs(t)) return -1;
    int64_t *slot = pair_slot(t, a, b);
    if (!*slot) {
        if (grow((void **)&t->pair, &t->cpair, t->npair + 1, sizeof *t->pair)) return -1;
        t->pair[t->npair] = (pair_t){a, b, 0, NULL, 0, 0};
        *slot = (int64_t)++t->npair;
    }
    pair_t *p = &t->pair[*slot - 1];
    p->count += delta;
    if (note) {
        if (grow((void **)&p->where, &p->cw, p->nw + 1, sizeof *p->where)) return -1;
        p->where[p->nw++] = w;
    }
    return *slot - 1;
}

static bool heap_above(const heap_t *x, const heap_t *y) {
    if (x->count != y->count) return x->count > y->count;
    return x->a != y->a ? x->a < y->a : x->b < y->b;
}

static int heap_push(trainer *t, heap_t x) {
    if (grow((void **)&t->heap, &t->cheap, t->nheap + 1, sizeof *t->heap)) return -1;
    size_t i = t->nheap++;
    while (i && heap_above(&x, &t->heap[(i - 1) / 2]))
        t->heap[i] = t->heap[(i - 1) / 2], i = (i - 1) / 2;
    t->heap[i] = x;
    return 0;
}

static heap_t heap_pop(trainer *t) {
    heap_t top = t->heap[0], x = t->heap[--t->nheap];
    size_t i = 0, n = t->nheap;
    for (size_t c; (c = 2 * i + 1) < n; i = c) {
        if (c + 1 < n && heap_above(&t->heap[c + 1], &t->heap[c])) c++;
        if (!heap_above(&t->heap[c], &x)) break;
        t->heap[i] = t->heap[c];
    }
    if (n) t->heap[i] = x;
    return top;
}

/* ---- words ------------------------------------------------------------------------------- */

/* Adds (sign +1) or removes (-1) the pairs of word w; the word is noted in the lists of the
 * pairs that hold `fresh` (every pair when fresh < 0). */
static int word_pairs(trainer *t, uint32_t w, int64_t sign, int32_t fresh) {
    word_t *x = &t->word[w];
    for (uint32_t i = 0; i + 1 < x->len; i++) {
        int32_t a = x->sym[i], b = x->sym[i + 1];
        bool note = sign > 0 && (fresh < 0 || a == fresh || b == fresh);
        if (pair_add(t, a, b, sign * (int64_t)x->count, w, note) < 0) return -1;
    }
    return 0;
}

/* Counts the pieces of the corpus (Qwen2's split) as words of byte tokens. */
static int count_words(trainer *t, const char *text, size_t len) {
    int ec;
    PCRE2_SIZE eo;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)tokfx_qwen2_pattern, PCRE2_ZERO_TERMINATED,
                                   PCRE2_UTF | PCRE2_UCP, &ec, &eo, NULL);
    pcre2_match_data *md = re ? pcre2_match_data_create(1, NULL) : NULL;
    trainer pieces = {0}; /* reuse the token map: piece bytes -> word index */
    int rc = md ? 0 : -1;
    if (md) pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* speed only */
    pieces.tmask = 1023;
    if (rc == 0 && !(pieces.tslot = calloc(1024, sizeof *pieces.tslot))) rc = -1;
    for (size_t pos = 0; rc == 0 && pos < len;) {
        if (pcre2_match(re, (PCRE2_SPTR)text, len, pos, PCRE2_NO_UTF_CHECK, md, NULL) < 0) break;
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        if (ov[1] == ov[0]) break;
        size_t before = pieces.ntok;
        int32_t w = tok_id(&pieces, text + ov[0], ov[1] - ov[0]);
        if (w < 0 || (pieces.ntok > before &&
                      grow((void **)&t->word, &t->cword, t->nword + 1, sizeof *t->word))) {
            rc = -1;
            break;
        }
        if (pieces.ntok > before) {
            word_t *x = &t->word[t->nword++];
            *x = (word_t){malloc((ov[1] - ov[0]) * sizeof(int32_t)), (uint32_t)(ov[1] - ov[0]), 0,
                          0};
            if (!x->sym) rc = -1;
            for (size_t i = 0; rc == 0 && i < x->len; i++)
                x->sym[i] = byte_ids[(unsigned char)text[ov[0] + i]];
        }
        t->word[w].count++;
        pos = ov[1];
    }
    for (size_t i = 0; i < pieces.ntok; i++)
        free(pieces.tok[i].s);
    free(pieces.tok);
    free(pieces.tslot);
    pcre2_match_data_free(md);
    pcre2_code_free(re);
    return rc;
}

/* Replaces every (a, b) in word w by id, left to right. */
static void rewrite(word_t *x, int32_t a, int32_t b, int32_t id) {
    uint32_t o = 0;
    for (uint32_t i = 0; i < x->len; i++) {
        if (i + 1 < x->len && x->sym[i] == a && x->sym[i + 1] == b)
            x->sym[o++] = id, i++;
        else
            x->sym[o++] = x->sym[i];
    }
    x->len = o;
}

static int apply_merge(trainer *t, size_t pi, int32_t id) {
    int32_t a = t->pair[pi].a, b = t->pair[pi].b;
    size_t nw = t->pair[pi].nw;
    uint32_t *ws = malloc((nw ? nw : 1) * sizeof *ws);
    if (!ws) return -1;
    memcpy(ws, t->pair[pi].where, nw * sizeof *ws);
    t->stamp++;
    int rc = 0;
    for (size_t k = 0; rc == 0 && k < nw; k++) {
        word_t *x = &t->word[ws[k]];
        if (x->stamp == t->stamp) continue;
        x->stamp = t->stamp;
        rc = word_pairs(t, ws[k], -1, -1);
        rewrite(&t->word[ws[k]], a, b, id);
        if (rc == 0) rc = word_pairs(t, ws[k], +1, id);
        for (uint32_t i = 0; rc == 0 && i + 1 < t->word[ws[k]].len; i++) {
            const int32_t *s = t->word[ws[k]].sym;
            if (s[i] != id && s[i + 1] != id) continue;
            int64_t p = *pair_slot(t, s[i], s[i + 1]) - 1;
            rc = heap_push(t, (heap_t){t->pair[p].count, s[i], s[i + 1]});
        }
    }
    free(ws);
    return rc;
}

static int learn(trainer *t, size_t merges) {
    for (uint32_t w = 0; w < t->nword; w++)
        if (word_pairs(t, w, +1, -1)) return -1;
    for (size_t i = 0; i < t->npair; i++)
        if (heap_push(t, (heap_t){t->pair[i].count, t->pair[i].a, t->pair[i].b})) return -1;
    while (t->nmerge < merges && t->nheap) {
        heap_t top = heap_pop(t);
        int64_t pi = *pair_slot(t, top.a, top.b) - 1;
        if (t->pair[pi].count != top.count) { /* stale: requeue a count that went down */
            if (t->pair[pi].count > 0 && t->pair[pi].count < top.count &&
                heap_push(t, (heap_t){t->pair[pi].count, top.a, top.b}))
                return -1;
            continue;
        }
        if (top.count < 2) break;
        tok_t *ta = &t->tok[top.a], *tb = &t->tok[top.b];
        char buf[1024];
        if (ta->n + tb->n > sizeof buf) continue;
        memcpy(buf, ta->s, ta->n);
        memcpy(buf + ta->n, tb->s, tb->n);
        int32_t id = tok_id(t, buf, ta->n + tb->n);
        if (id < 0 || grow((void **)&t->merge, &t->cmerge, t->nmerge + 1, sizeof *t->merge) ||
            apply_merge(t, (size_t)pi, id))
            return -1;
        t->merge[t->nmerge][0] = top.a, t->merge[t->nmerge][1] = top.b;
        t->nmerge++;
    }
    return 0;
}

/* ---- tokenizer.json ----------------------------------------------------------------------- */

/* The byte-level form of a token: each byte as its bytes_to_unicode character, in UTF-8. */
static char *byte_level(const tok_t *x) {
    char *o = malloc(2 * x->n + 1);
    size_t k = 0;
    if (!o) return NULL;
    for (size_t i = 0; i < x->n; i++) {
        uint32_t cp = b2u((unsigned char)x->s[i]);
        if (cp < 0x80)
            o[k++] = (char)cp;
        else
            o[k++] = (char)(0xC0 | (cp >> 6)), o[k++] = (char)(0x80 | (cp & 0x3F));
    }
    o[k] = '\0';
    return o;
}

static json_t *json_vocab(const trainer *t) {
    json_t *v = json_object();
    for (size_t i = 0; v && i < t->ntok; i++) {
        char *s = byte_level(&t->tok[i]);
        if (!s || json_object_set_new(v, s, json_integer((json_int_t)i))) json_decref(v), v = NULL;
        free(s);
    }
    return v;
}

static json_t *json_merges(const trainer *t, bool legacy) {
    json_t *m = json_array();
    for (size_t i = 0; m && i < t->nmerge; i++) {
        char *a = byte_level(&t->tok[t->merge[i][0]]), *b = byte_level(&t->tok[t->merge[i][1]]);
        json_t *e = NULL;
        if (a && b && legacy) {
            char *line = malloc(strlen(a) + strlen(b) + 2);
            if (line) sprintf(line, "%s %s", a, b), e = json_string(line);
            free(line);
        } else if (a && b) {
            e = json_pack("[ss]", a, b);
        }
        if (!e || json_array_append_new(m, e)) json_decref(m), m = NULL;
        free(a), free(b);
    }
    return m;
}

/* The fixture's added tokens: every flag, overlaps, a normalized special, a vocab entry. */
typedef struct added_def {
    const char *content;
    bool single_word, lstrip, rstrip, normalized, special;
} added_def;

static const added_def ADDED[] = {
    {"<|endoftext|>", false, false, false, false, true},
    {"<|im_start|>", false, false, false, false, true},
    {"<|im_end|>", false, false, false, false, true},
    {"<tool_call>", false, false, false, false, false},
    {"<mask>", false, true, true, false, true},
    {"!", false, false, false, false, false}, /* a vocab entry: keeps its vocab id */
    {"<sw>", true, false, false, false, false},
    {"<lst>", false, true, false, false, false},
    {"<rst>", false, false, true, false, true},
    {"<|im", false, false, false, false, false},
    {"caf\xc3\xa9", false, false, false, true, false},
    {"<\xc3\xb1>", false, false, false, true, true},
};

static json_t *json_added(trainer *t) {
    json_t *arr = json_array();
    int64_t next = (int64_t)t->ntok;
    for (size_t i = 0; arr && i < sizeof ADDED / sizeof *ADDED; i++) {
        const added_def *d = &ADDED[i];
        int64_t *slot = tok_slot(t, d->content, strlen(d->content));
        int64_t id = *slot ? *slot - 1 : next++;
        json_t *o = json_pack("{sI ss sb sb sb sb sb}", "id", (json_int_t)id, "content", d->content,
                              "single_word", d->single_word, "lstrip", d->lstrip, "rstrip",
                              d->rstrip, "normalized", d->normalized, "special", d->special);
        if (!o || json_array_append_new(arr, o)) json_decref(arr), arr = NULL;
    }
    return arr;
}

static json_t *json_pipeline(void) {
    return json_pack(
        "{s{ss} s{ss s[{ss s{ss} ss sb} {ss sb sb sb}]} s{ss sb sb sb} s{ss sb sb sb}}",
        "normalizer", "type", "NFC", "pre_tokenizer", "type", "Sequence", "pretokenizers", "type",
        "Split", "pattern", "Regex", tokfx_qwen2_pattern, "behavior", "Isolated", "invert", 0,
        "type", "ByteLevel", "add_prefix_space", 0, "trim_offsets", 0, "use_regex", 0,
        "post_processor", "type", "ByteLevel", "add_prefix_space", 0, "trim_offsets", 0,
        "use_regex", 0, "decoder", "type", "ByteLevel", "add_prefix_space", 0, "trim_offsets", 0,
        "use_regex", 0);
}

static char *write_json(trainer *t, const tokfx_spec *spec, size_t *out_len) {
    json_t *root = json_pack("{ss so so}", "version", "1.0", "truncation", json_null(), "padding",
                             json_null());
    json_t *pipe = json_pipeline(), *added = spec->added_tokens ? json_added(t) : json_array();
    json_t *model =
        json_pack("{ss so so ss ss sb sb sb}", "type", "BPE", "dropout", json_null(), "unk_token",
                  json_null(), "continuing_subword_prefix", "", "end_of_word_suffix", "",
                  "fuse_unk", 0, "byte_fallback", 0, "ignore_merges", 0);
    json_t *vocab = json_vocab(t), *merges = json_merges(t, spec->legacy_merges);
    char *out = NULL;
    if (root && pipe && added && model && vocab && merges) {
        json_object_set(root, "added_tokens", added);
        json_object_update(root, pipe);
        json_object_set(model, "vocab", vocab);
        json_object_set(model, "merges", merges);
        json_object_set(root, "model", model);
        out = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    }
    json_decref(root), json_decref(pipe), json_decref(added), json_decref(model);
    json_decref(vocab), json_decref(merges);
    if (out) *out_len = strlen(out);
    return out;
}

static void trainer_free(trainer *t) {
    for (size_t i = 0; i < t->ntok; i++)
        free(t->tok[i].s);
    for (size_t i = 0; i < t->nword; i++)
        free(t->word[i].sym);
    for (size_t i = 0; i < t->npair; i++)
        free(t->pair[i].where);
    free(t->tok), free(t->word), free(t->pair), free(t->pslot), free(t->tslot), free(t->heap);
    free(t->merge);
}

char *tokfx_train_json(const char *text, size_t len, const tokfx_spec *spec, size_t *out_len) {
    trainer t = {0};
    t.tmask = 1023;
    char *out = NULL;
    if ((t.tslot = calloc(1024, sizeof *t.tslot)) && add_alphabet(&t) == 0 &&
        count_words(&t, text, len) == 0 && learn(&t, spec->merges) == 0)
        out = write_json(&t, spec, out_len);
    trainer_free(&t);
    return out;
}
