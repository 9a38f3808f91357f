/* A small open-addressing hash map from borrowed strings to indices (FNV-1a, linear probing,
 * load factor <= 1/2), used to look up parameters and conversion groups by name. */
#include <string.h>

#include "loading/internal.h"

static uint64_t hash_str(const char *s) {
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static fm_status keymap_alloc(fm_keymap *m, size_t cap, fm_error *err) {
    m->keys = fm_calloc(cap, sizeof *m->keys);
    m->vals = fm_calloc(cap, sizeof *m->vals);
    if (!m->keys || !m->vals) {
        fm_free(m->keys);
        fm_free(m->vals);
        m->keys = NULL;
        m->vals = NULL;
        return fm_error_set(err, FM_ERR_NOMEM, "out of memory growing a key map to %zu slots", cap);
    }
    m->cap = cap;
    m->count = 0;
    return FM_OK;
}

fm_status fm_keymap_init(fm_keymap *m, size_t expected, fm_error *err) {
    size_t cap = 16;
    while (cap < expected * 2 + 2)
        cap *= 2;
    return keymap_alloc(m, cap, err);
}

void fm_keymap_free(fm_keymap *m) {
    if (!m) return;
    fm_free(m->keys);
    fm_free(m->vals);
    memset(m, 0, sizeof *m);
}

static size_t slot_of(const fm_keymap *m, const char *key) {
    size_t i = (size_t)hash_str(key) & (m->cap - 1);
    while (m->keys[i] && strcmp(m->keys[i], key) != 0)
        i = (i + 1) & (m->cap - 1);
    return i;
}

fm_status fm_keymap_put(fm_keymap *m, const char *key, size_t val, fm_error *err) {
    if ((m->count + 1) * 2 > m->cap) {
        fm_keymap old = *m;
        fm_status st = keymap_alloc(m, old.cap * 2, err);
        if (st != FM_OK) {
            *m = old;
            return st;
        }
        for (size_t i = 0; i < old.cap; i++) {
            if (!old.keys[i]) continue;
            size_t s = slot_of(m, old.keys[i]);
            m->keys[s] = old.keys[i];
            m->vals[s] = old.vals[i];
            m->count++;
        }
        fm_keymap_free(&old);
    }
    size_t s = slot_of(m, key);
    if (!m->keys[s]) m->count++;
    m->keys[s] = key;
    m->vals[s] = val;
    return FM_OK;
}

bool fm_keymap_get(const fm_keymap *m, const char *key, size_t *val) {
    if (!m->cap) return false;
    size_t s = slot_of(m, key);
    if (!m->keys[s]) return false;
    *val = m->vals[s];
    return true;
}
