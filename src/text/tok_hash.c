/* Hash tables of the tokenizer: token string -> id (vocab, added tokens) and (left, right) ->
 * (rank, merged id) (BPE merges). Fixed capacity chosen at load (the counts are known from the
 * JSON), at most half full, so probes stay short and no rehash is ever needed. */
#include "fusemap/core.h"
#include "text/tok_internal.h"

#define K1 0x9e3779b97f4a7c15ull
#define K2 0xd6e8feb86659fd93ull

uint64_t tk_hash_bytes(const void *p, size_t n) {
    const uint8_t *s = p;
    uint64_t h = K1 ^ ((uint64_t)n * K2);
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, s, 8);
        h = (h ^ w) * K2;
        h ^= h >> 29;
        s += 8, n -= 8;
    }
    uint64_t w = 0;
    memcpy(&w, s, n);
    h = (h ^ w) * K1;
    h ^= h >> 32;
    h *= K2;
    h ^= h >> 29;
    return h;
}

/* Smallest power of two >= 2 * expected (at least 16); 0 when that overflows. */
static size_t table_size(size_t expected) {
    size_t cap = 16;
    while (cap < expected * 2) {
        if (cap > SIZE_MAX / 4) return 0;
        cap *= 2;
    }
    return cap;
}

fm_status tk_strmap_init(tk_strmap *m, size_t expected) {
    size_t cap = table_size(expected);
    m->slot = cap ? fm_malloc(cap * sizeof *m->slot) : NULL;
    m->mask = 0;
    if (!m->slot) return FM_ERR_NOMEM;
    for (size_t i = 0; i < cap; i++)
        m->slot[i].val = -1;
    m->mask = cap - 1;
    return FM_OK;
}

void tk_strmap_free(tk_strmap *m) {
    fm_free(m->slot);
    m->slot = NULL;
    m->mask = 0;
}

int32_t tk_strmap_put(tk_strmap *m, const char *base, uint32_t off, uint32_t len, int32_t val) {
    uint64_t h64 = tk_hash_bytes(base + off, len);
    uint32_t h = (uint32_t)(h64 >> 32);
    for (size_t i = (size_t)h64 & m->mask;; i = (i + 1) & m->mask) {
        tk_strslot *s = &m->slot[i];
        if (s->val < 0) {
            *s = (tk_strslot){h, off, len, val};
            return -1;
        }
        if (s->hash == h && s->len == len && !memcmp(base + s->off, base + off, len)) return s->val;
    }
}

int32_t tk_strmap_get(const tk_strmap *m, const char *base, const char *key, size_t len) {
    if (!m->slot || len > UINT32_MAX) return -1;
    uint64_t h64 = tk_hash_bytes(key, len);
    uint32_t h = (uint32_t)(h64 >> 32);
    for (size_t i = (size_t)h64 & m->mask;; i = (i + 1) & m->mask) {
        const tk_strslot *s = &m->slot[i];
        if (s->val < 0) return -1;
        if (s->hash == h && s->len == len && !memcmp(base + s->off, key, len)) return s->val;
    }
}

fm_status tk_pairmap_init(tk_pairmap *m, size_t expected) {
    size_t cap = table_size(expected);
    m->slot = cap ? fm_malloc(cap * sizeof *m->slot) : NULL;
    m->mask = 0;
    if (!m->slot) return FM_ERR_NOMEM;
    for (size_t i = 0; i < cap; i++)
        m->slot[i] = (tk_pairslot){UINT64_MAX, -1, -1};
    m->mask = cap - 1;
    return FM_OK;
}

void tk_pairmap_free(tk_pairmap *m) {
    fm_free(m->slot);
    m->slot = NULL;
    m->mask = 0;
}

void tk_pairmap_put(tk_pairmap *m, int32_t a, int32_t b, int32_t rank, int32_t id) {
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    for (size_t i = (size_t)tk_hash_pair(a, b) & m->mask;; i = (i + 1) & m->mask) {
        tk_pairslot *s = &m->slot[i];
        if (s->key == UINT64_MAX || s->key == key) {
            *s = (tk_pairslot){key, rank, id};
            return;
        }
    }
}
