/* Internals of the tokenizer (src/text/): the loaded tokenizer record, its hash tables, the
 * UTF-8 and byte-level helpers, and the per-call encode context shared by encode.c, added.c,
 * pretok.c and bpe.c. */
#ifndef FM_TEXT_TOK_INTERNAL_H
#define FM_TEXT_TOK_INTERNAL_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "fusemap/tokenizer.h"
#include "text/utf8.h"

/* ---- hashing ------------------------------------------------------------------------------ */
uint64_t tk_hash_bytes(const void *p, size_t n);

static inline uint64_t tk_hash_pair(int32_t a, int32_t b) {
    uint64_t x = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    x ^= x >> 31;
    x *= 0x9e3779b97f4a7c15ull;
    x ^= x >> 29;
    return x;
}

/* String -> int32 map with a fixed capacity chosen at init (open addressing, linear probing).
 * Keys are (offset, length) into an arena whose base the caller passes to every call, so the
 * arena may move between calls. */
typedef struct tk_strslot {
    uint32_t hash, off, len;
    int32_t val; /* -1: empty slot */
} tk_strslot;
typedef struct tk_strmap {
    tk_strslot *slot; /* owned */
    size_t mask;
} tk_strmap;

/* Room for `expected` keys. FM_ERR_NOMEM is the only failure. */
fm_status tk_strmap_init(tk_strmap *m, size_t expected);
void tk_strmap_free(tk_strmap *m);
/* Inserts key -> val unless present; returns the value already there, or -1 after inserting. */
int32_t tk_strmap_put(tk_strmap *m, const char *base, uint32_t off, uint32_t len, int32_t val);
int32_t tk_strmap_get(const tk_strmap *m, const char *base, const char *key, size_t len);

/* (left id, right id) -> (rank, merged id): the BPE merge table. */
typedef struct tk_pairslot {
    uint64_t key; /* UINT64_MAX: empty */
    int32_t rank, id;
} tk_pairslot;
typedef struct tk_pairmap {
    tk_pairslot *slot; /* owned */
    size_t mask;
} tk_pairmap;

fm_status tk_pairmap_init(tk_pairmap *m, size_t expected);
void tk_pairmap_free(tk_pairmap *m);
/* Inserts or overwrites (a later duplicate merge wins, as a Rust HashMap collect does). */
void tk_pairmap_put(tk_pairmap *m, int32_t a, int32_t b, int32_t rank, int32_t id);

static inline const tk_pairslot *tk_pairmap_get(const tk_pairmap *m, int32_t a, int32_t b) {
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    size_t i = (size_t)tk_hash_pair(a, b) & m->mask;
    for (;; i = (i + 1) & m->mask) {
        const tk_pairslot *s = &m->slot[i];
        if (s->key == key) return s;
        if (s->key == UINT64_MAX) return NULL;
    }
}

/* ---- the tokenizer ------------------------------------------------------------------------ */
enum { TK_IS_VOCAB = 1, TK_IS_ADDED = 2, TK_IS_SPECIAL = 4 };

typedef struct tk_entry {
    uint32_t off, len;   /* token string (vocab entry or added content) in t->arena */
    uint32_t doff, dlen; /* the bytes it decodes to, in t->darena */
    uint8_t kind;        /* TK_IS_* bits; 0 = unknown id */
} tk_entry;

typedef struct tk_added {
    int32_t id;
    uint32_t off, len; /* the form matched: content, or its normalized form; in t->arena */
    bool special, single_word, lstrip, rstrip, normalized;
} tk_added;

/* The added tokens matched in one pass (raw text or normalized segments), indexed by first
 * byte, longest first, so the first candidate that matches at a position is the longest. */
typedef struct tk_addset {
    uint32_t *order; /* owned; indices into t->added */
    uint32_t start[257];
    size_t n;
} tk_addset;

typedef struct tk_regex {
    pcre2_code *code; /* owned */
    bool jit;
} tk_regex;

struct fm_tokenizer {
    char *label; /* owned; names the file in errors */
    fm_tokenizer_limits lim;
    pcre2_general_context *gctx; /* owned; PCRE2 allocates through fm_malloc */
    char *arena;                 /* owned; every token string, each NUL-terminated */
    size_t arena_len, arena_cap;
    char *darena; /* owned; decoded bytes of every id */
    size_t darena_len;
    tk_entry *ent; /* owned; n_ids entries */
    size_t n_ids;
    size_t n_vocab;      /* model.vocab entries */
    tk_strmap vocab;     /* model.vocab: token -> id */
    tk_strmap added_map; /* added content -> index into added */
    tk_pairmap merges;
    int32_t byte_id[256]; /* id of the one-character token of each byte; -1 if absent */
    int32_t unk_id;       /* -1: no unk_token; -2: unk_token not in the vocab */
    char *unk_token;      /* owned; NULL when none */
    bool fuse_unk, ignore_merges, nfc;
    tk_added *added; /* owned */
    size_t n_added;
    tk_addset raw_set, norm_set;
    tk_regex split[FM_TOK_MAX_STAGES];
    size_t n_split;
    pcre2_code *word_re, *space_re; /* owned; \w and \s as Rust's regex defines them */
};

/* Appends len bytes plus a NUL to t->arena; *off receives their offset. */
fm_status tk_arena_add(fm_tokenizer *t, const char *s, size_t len, uint32_t *off, fm_error *err);

/* tokenizer_json.c */
fm_status tk_parse_root(fm_tokenizer *t, void *root, fm_error *err);
/* tokenizer_vocab.c: model.vocab, model.merges, added_tokens, decoded bytes. */
fm_status tk_load_vocab(fm_tokenizer *t, void *model, fm_error *err);
fm_status tk_load_merges(fm_tokenizer *t, void *model, fm_error *err);
fm_status tk_load_added(fm_tokenizer *t, void *added_tokens, fm_error *err);
fm_status tk_build_decoded(fm_tokenizer *t, fm_error *err);
/* pretok.c */
fm_status tk_regex_compile(fm_tokenizer *t, const char *pattern, size_t len, bool literal,
                           const char *key, tk_regex *out, fm_error *err);
fm_status tk_nfc(const char *s, size_t n, char **out, size_t *out_len, fm_error *err);
/* added.c */
fm_status tk_addsets_build(fm_tokenizer *t, fm_error *err);

/* ---- per-call encode context -------------------------------------------------------------- */
typedef struct tk_cache tk_cache; /* bpe.c: the word cache of one encode call */

typedef struct tk_heapent {
    int32_t rank, pos, id;
} tk_heapent;

typedef struct tk_sym {
    int32_t id, prev, next, len; /* len 0: merged away */
} tk_sym;

typedef struct tk_enc {
    const fm_tokenizer *t;
    const uint8_t *mask; /* NULL or one byte per input byte */
    bool specials;       /* FM_TOKENIZE_SPECIAL */
    fm_error *err;
    int32_t *ids; /* output (owned until handed to the caller) */
    size_t n_ids, cap_ids;
    pcre2_match_data *md;
    pcre2_match_context *mctx;
    pcre2_jit_stack *jstack;
    tk_sym *sym; /* BPE scratch */
    tk_heapent *heap;
    size_t cap_sym;
    char *mapped; /* ignore_merges scratch: a piece in byte-level characters */
    size_t cap_mapped;
    tk_cache *cache;
} tk_enc;

fm_status tk_enc_push(tk_enc *e, int32_t id);
/* Text between added tokens: normalize, normalized added tokens, pre-tokenize, BPE. `mask` is
 * NULL or the user mask of these bytes. */
fm_status tk_encode_segment(tk_enc *e, const char *s, size_t n, const uint8_t *mask);
/* Splits s[0..n) on the added tokens of `set`, pushing the ids of matches and calling `plain`
 * for the text between them. Special tokens match only when `specials` is set and no byte of
 * the match is a user byte (`mask`: NULL or one byte per byte of s). */
typedef fm_status (*tk_plain_fn)(tk_enc *e, const char *s, size_t n, const uint8_t *mask);
fm_status tk_split_added(tk_enc *e, const tk_addset *set, const char *s, size_t n,
                         const uint8_t *mask, bool specials, tk_plain_fn plain);
/* pretok.c: the pre-tokenizer stages from `stage` on, then BPE on every piece. */
fm_status tk_pretokenize(tk_enc *e, size_t stage, const char *s, size_t n);
/* bpe.c */
fm_status tk_bpe_word(tk_enc *e, const uint8_t *s, size_t n);
void tk_enc_release(tk_enc *e);

#endif
