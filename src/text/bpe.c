/* BPE on one pre-tokenized piece, as tokenizers' models/bpe (word.rs merge_all): one symbol per
 * byte (its byte-level character's vocab id; unknown -> unk_token, fused when fuse_unk, or
 * dropped), then repeatedly the adjacent pair with the lowest merge rank is merged, leftmost
 * first on equal rank, until no adjacent pair has a merge. A binary heap of (rank, position)
 * with stale-entry checks makes it O(n log n) per piece. A word cache (per encode call) keeps
 * the ids of pieces already seen. */
#include "text/tok_internal.h"

#define CACHE_MAX_WORD 255 /* longer pieces are not cached */
#define CACHE_MIN_SLOTS 1024u
#define CACHE_MAX_SLOTS (1u << 17)

typedef struct cache_slot {
    uint64_t hash;
    uint32_t koff, klen; /* klen UINT32_MAX: empty */
    uint32_t ioff, nids;
} cache_slot;

struct tk_cache {
    cache_slot *slot;
    size_t mask, count;
    char *keys;
    size_t klen, kcap;
    int32_t *ids;
    size_t ilen, icap;
};

/* ---- word cache ----------------------------------------------------------------------------- */

static tk_cache *cache_new(void) {
    tk_cache *c = fm_calloc(1, sizeof *c);
    if (c && !(c->slot = fm_malloc(CACHE_MIN_SLOTS * sizeof *c->slot))) {
        fm_free(c);
        return NULL;
    }
    if (!c) return NULL;
    for (size_t i = 0; i < CACHE_MIN_SLOTS; i++)
        c->slot[i].klen = UINT32_MAX;
    c->mask = CACHE_MIN_SLOTS - 1;
    return c;
}

static void cache_free(tk_cache *c) {
    if (!c) return;
    fm_free(c->slot);
    fm_free(c->keys);
    fm_free(c->ids);
    fm_free(c);
}

static cache_slot *cache_find(tk_cache *c, uint64_t h, const uint8_t *s, size_t n) {
    for (size_t i = (size_t)h & c->mask;; i = (i + 1) & c->mask) {
        cache_slot *x = &c->slot[i];
        if (x->klen == UINT32_MAX) return x;
        if (x->hash == h && x->klen == n && !memcmp(c->keys + x->koff, s, n)) return x;
    }
}

/* Doubles the table (up to CACHE_MAX_SLOTS); false when it may not grow or memory is short. */
static bool cache_grow(tk_cache *c) {
    size_t cap = (c->mask + 1) * 2;
    if (cap > CACHE_MAX_SLOTS) return false;
    cache_slot *ns = fm_malloc(cap * sizeof *ns), *old = c->slot;
    if (!ns) return false;
    for (size_t i = 0; i < cap; i++)
        ns[i].klen = UINT32_MAX;
    size_t oldcap = c->mask + 1;
    c->slot = ns, c->mask = cap - 1;
    for (size_t i = 0; i < oldcap; i++) {
        if (old[i].klen == UINT32_MAX) continue;
        size_t j = (size_t)old[i].hash & c->mask;
        while (ns[j].klen != UINT32_MAX)
            j = (j + 1) & c->mask;
        ns[j] = old[i];
    }
    fm_free(old);
    return true;
}

static bool reserve(void **p, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return true;
    size_t n = *cap ? *cap : 4096;
    while (n < need)
        n *= 2;
    void *q = fm_realloc(*p, n * elem);
    if (!q) return false;
    *p = q, *cap = n;
    return true;
}

/* Remembers ids for the piece; a full cache or short memory only skips remembering. */
static void cache_put(tk_cache *c, uint64_t h, const uint8_t *s, size_t n, const int32_t *ids,
                      size_t nids) {
    if ((c->count + 1) * 2 > c->mask + 1 && !cache_grow(c)) return;
    if (!reserve((void **)&c->keys, &c->kcap, c->klen + n, 1) ||
        !reserve((void **)&c->ids, &c->icap, c->ilen + nids, sizeof *c->ids))
        return;
    cache_slot *x = cache_find(c, h, s, n);
    memcpy(c->keys + c->klen, s, n);
    memcpy(c->ids + c->ilen, ids, nids * sizeof *ids);
    *x = (cache_slot){h, (uint32_t)c->klen, (uint32_t)n, (uint32_t)c->ilen, (uint32_t)nids};
    c->klen += n, c->ilen += nids, c->count++;
}

/* ---- the merge loop ----------------------------------------------------------------------- */

static bool heap_less(const tk_heapent *a, const tk_heapent *b) {
    return a->rank < b->rank || (a->rank == b->rank && a->pos < b->pos);
}

static void heap_push(tk_heapent *h, size_t *n, tk_heapent x) {
    size_t i = (*n)++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!heap_less(&x, &h[p])) break;
        h[i] = h[p];
        i = p;
    }
    h[i] = x;
}

static tk_heapent heap_pop(tk_heapent *h, size_t *n) {
    tk_heapent top = h[0], x = h[--*n];
    size_t i = 0, m = *n;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= m) break;
        if (c + 1 < m && heap_less(&h[c + 1], &h[c])) c++;
        if (!heap_less(&h[c], &x)) break;
        h[i] = h[c];
        i = c;
    }
    if (m) h[i] = x;
    return top;
}

static void push_pair(const tk_pairmap *mg, tk_sym *sym, tk_heapent *h, size_t *nh, int32_t i) {
    int32_t j = sym[i].next;
    if (j < 0) return;
    const tk_pairslot *p = tk_pairmap_get(mg, sym[i].id, sym[j].id);
    if (p) heap_push(h, nh, (tk_heapent){p->rank, i, p->id});
}

static void merge_all(const fm_tokenizer *t, tk_sym *sym, size_t ns, tk_heapent *h) {
    size_t nh = 0;
    for (size_t i = 0; i + 1 < ns; i++)
        push_pair(&t->merges, sym, h, &nh, (int32_t)i);
    while (nh) {
        tk_heapent top = heap_pop(h, &nh);
        tk_sym *l = &sym[top.pos];
        if (l->len == 0 || l->next < 0) continue;
        tk_sym *r = &sym[l->next];
        const tk_pairslot *p = tk_pairmap_get(&t->merges, l->id, r->id);
        if (!p || p->id != top.id) continue; /* stale: the pair here changed */
        l->id = top.id;
        l->len += r->len;
        l->next = r->next;
        r->len = 0;
        if (l->next >= 0) sym[l->next].prev = top.pos;
        if (l->prev >= 0) push_pair(&t->merges, sym, h, &nh, l->prev);
        push_pair(&t->merges, sym, h, &nh, top.pos);
    }
}

/* ---- one piece ---------------------------------------------------------------------------- */

static fm_status scratch(tk_enc *e, size_t n) {
    if (n <= e->cap_sym) return FM_OK;
    size_t cap = e->cap_sym ? e->cap_sym : 64;
    while (cap < n)
        cap *= 2;
    tk_sym *s = fm_realloc(e->sym, cap * sizeof *s);
    if (s) e->sym = s;
    tk_heapent *h = s ? fm_realloc(e->heap, 3 * cap * sizeof *h) : NULL;
    if (!h) return fm_error_set(e->err, FM_ERR_NOMEM, "%s: encode: out of memory", e->t->label);
    e->heap = h, e->cap_sym = cap;
    return FM_OK;
}

static void add_sym(tk_sym *sym, size_t *ns, int32_t id, int32_t len) {
    size_t i = (*ns)++;
    sym[i] = (tk_sym){id, (int32_t)i - 1, -1, len};
    if (i > 0) sym[i - 1].next = (int32_t)i;
}

/* One symbol per byte; bytes without a vocab entry become unk_token (fused runs when
 * fuse_unk) or vanish when there is none. */
static fm_status init_syms(tk_enc *e, const uint8_t *s, size_t n, size_t *ns) {
    const fm_tokenizer *t = e->t;
    int32_t unk_len = 0;
    *ns = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t id = t->byte_id[s[i]];
        if (id >= 0) {
            if (unk_len) add_sym(e->sym, ns, t->unk_id, unk_len), unk_len = 0;
            add_sym(e->sym, ns, id, 1);
            continue;
        }
        if (t->unk_id == -1) continue;
        if (t->unk_id < 0)
            return fm_error_set(e->err, FM_ERR_CONFIG,
                                "%s: model.unk_token \"%.64s\" is not in "
                                "model.vocab",
                                t->label, t->unk_token);
        if (unk_len && !t->fuse_unk) add_sym(e->sym, ns, t->unk_id, unk_len), unk_len = 0;
        unk_len++;
    }
    if (unk_len) add_sym(e->sym, ns, t->unk_id, unk_len);
    return FM_OK;
}

/* ignore_merges: a piece that is itself a vocab entry is that entry. */
static fm_status whole_piece(tk_enc *e, const uint8_t *s, size_t n, int32_t *id) {
    *id = -1;
    if (!reserve((void **)&e->mapped, &e->cap_mapped, 2 * n, 1))
        return fm_error_set(e->err, FM_ERR_NOMEM, "%s: encode: out of memory", e->t->label);
    size_t o = 0;
    for (size_t i = 0; i < n; i++)
        o += tk_utf8_put(tk_b2u(s[i]), e->mapped + o);
    *id = tk_strmap_get(&e->t->vocab, e->t->arena, e->mapped, o);
    return FM_OK;
}

static fm_status bpe_compute(tk_enc *e, const uint8_t *s, size_t n) {
    size_t ns;
    fm_status st = scratch(e, n);
    if (st == FM_OK) st = init_syms(e, s, n, &ns);
    if (st != FM_OK || ns == 0) return st;
    merge_all(e->t, e->sym, ns, e->heap);
    for (int32_t i = 0; i >= 0 && st == FM_OK; i = e->sym[i].next)
        st = tk_enc_push(e, e->sym[i].id);
    return st;
}

fm_status tk_bpe_word(tk_enc *e, const uint8_t *s, size_t n) {
    const fm_tokenizer *t = e->t;
    if (n == 1 && t->byte_id[s[0]] >= 0) return tk_enc_push(e, t->byte_id[s[0]]);
    if (t->ignore_merges) {
        int32_t id;
        fm_status st = whole_piece(e, s, n, &id);
        if (st != FM_OK || id >= 0) return st == FM_OK ? tk_enc_push(e, id) : st;
    }
    if (n > (size_t)INT32_MAX / 4)
        return fm_error_set(e->err, FM_ERR_LIMIT,
                            "%s: encode: a pre-tokenized piece of %zu bytes "
                            "is too long",
                            t->label, n);
    if (n > CACHE_MAX_WORD) return bpe_compute(e, s, n);
    if (!e->cache && !(e->cache = cache_new())) return bpe_compute(e, s, n);
    uint64_t h = tk_hash_bytes(s, n);
    cache_slot *x = cache_find(e->cache, h, s, n);
    if (x->klen != UINT32_MAX) {
        for (uint32_t i = 0; i < x->nids; i++) {
            fm_status st = tk_enc_push(e, e->cache->ids[x->ioff + i]);
            if (st != FM_OK) return st;
        }
        return FM_OK;
    }
    size_t before = e->n_ids;
    fm_status st = bpe_compute(e, s, n);
    if (st == FM_OK) cache_put(e->cache, h, s, n, e->ids + before, e->n_ids - before);
    return st;
}

void tk_enc_release(tk_enc *e) {
    fm_free(e->ids);
    fm_free(e->sym);
    fm_free(e->heap);
    fm_free(e->mapped);
    cache_free(e->cache);
    pcre2_match_data_free(e->md);
    pcre2_match_context_free(e->mctx);
    pcre2_jit_stack_free(e->jstack);
    memset(e, 0, sizeof *e);
}
