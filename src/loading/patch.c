/* The patch registry (monkey patching, spec §9): class name or Python-re pattern -> replacement
 * class. One process-wide registry behind a mutex, and snapshots (fm_patch_map) that a build
 * resolves through, so a build only ever sees the mapping as it was when it started. */
#include <pthread.h>
#include <string.h>

#include "fusemap/loading.h"
#include "loading/pattern.h"

typedef struct patch_entry {
    char *key;                         /* owned */
    const struct fm_module_class *cls; /* borrowed: classes are static descriptors */
    fm_regex *re;                      /* the key compiled as a pattern (shared reference) */
} patch_entry;

/* Entries in registration order. `mu` guards `md` for resolution; for the global registry it
 * guards everything. A snapshot's other fields are changed only by its owner (fm_patch_map_add). */
struct fm_patch_map {
    pthread_mutex_t mu;
    patch_entry *v;
    size_t n, cap;
    pcre2_match_data *md; /* one offset pair: resolution needs only "matched or not" */
};

static fm_patch_map g_reg = {PTHREAD_MUTEX_INITIALIZER, NULL, 0, 0, NULL};

/* ---- map internals (caller holds whatever lock applies) ------------------------------------- */
static long find_exact(const fm_patch_map *m, const char *key) {
    for (size_t i = 0; i < m->n; i++)
        if (strcmp(m->v[i].key, key) == 0) return (long)i;
    return -1;
}

static void entries_clear(fm_patch_map *m) {
    for (size_t i = 0; i < m->n; i++) {
        fm_free(m->v[i].key);
        fm_regex_release(m->v[i].re);
    }
    fm_free(m->v);
    m->v = NULL;
    m->n = m->cap = 0;
}

static fm_status ensure_room(fm_patch_map *m, fm_error *err) {
    if (!m->md && !(m->md = fm_match_data_new(1)))
        return fm_error_set(err, FM_ERR_NOMEM, "out of memory in the patch registry");
    if (m->n < m->cap) return FM_OK;
    size_t cap = m->cap ? m->cap * 2 : 8;
    patch_entry *v = fm_realloc(m->v, cap * sizeof *v);
    if (!v) return fm_error_set(err, FM_ERR_NOMEM, "out of memory in the patch registry");
    m->v = v;
    m->cap = cap;
    return FM_OK;
}

static fm_status map_add(fm_patch_map *m, const char *key, const struct fm_module_class *cls,
                         bool overwrite, fm_error *err) {
    if (!key || !*key) return fm_error_set(err, FM_ERR_INVALID_ARG, "patch mapping key is empty");
    if (!cls)
        return fm_error_set(err, FM_ERR_INVALID_ARG, "replacement class for '%s' is NULL", key);
    long at = find_exact(m, key);
    if (at >= 0) {
        if (!overwrite)
            return fm_error_set(err, FM_ERR_EXISTS,
                                "Class '%s' already has a patch mapping registered. Use "
                                "overwrite=true to replace it.",
                                key);
        m->v[at].cls = cls; /* keeps its registration position, as a Python dict does */
        return FM_OK;
    }
    fm_regex *re = NULL;
    fm_status st = fm_regex_compile(key, &re, err);
    if (st == FM_OK) st = ensure_room(m, err);
    char *k = st == FM_OK ? fm_strdup(key) : NULL;
    if (st == FM_OK && !k)
        st = fm_error_set(err, FM_ERR_NOMEM, "out of memory in the patch registry");
    if (st != FM_OK) {
        fm_regex_release(re);
        return st;
    }
    m->v[m->n++] = (patch_entry){k, cls, re};
    return FM_OK;
}

/* Exact key first; otherwise the first pattern (registration order) found in the name. */
static const struct fm_module_class *map_resolve(const fm_patch_map *m, const char *name) {
    long at = find_exact(m, name);
    if (at >= 0) return m->v[at].cls;
    size_t len = strlen(name);
    for (size_t i = 0; i < m->n; i++) {
        bool hit = false; /* a matching error (backtracking limit) counts as no match */
        if (fm_regex_search(m->v[i].re, name, len, m->md, &hit, NULL) == FM_OK && hit)
            return m->v[i].cls;
    }
    return NULL;
}

/* ---- maps --------------------------------------------------------------------------------- */
fm_patch_map *fm_patch_map_new(void) {
    fm_patch_map *m = fm_calloc(1, sizeof *m);
    if (!m) return NULL;
    if (pthread_mutex_init(&m->mu, NULL) != 0) {
        fm_free(m);
        return NULL;
    }
    return m;
}

void fm_patch_map_free(fm_patch_map *m) {
    if (!m || m == &g_reg) return;
    entries_clear(m);
    pcre2_match_data_free(m->md);
    pthread_mutex_destroy(&m->mu);
    fm_free(m);
}

fm_status fm_patch_map_add(fm_patch_map *m, const char *key, const struct fm_module_class *cls,
                           bool overwrite, fm_error *err) {
    if (!m) return fm_error_set(err, FM_ERR_INVALID_ARG, "patch map is NULL");
    return map_add(m, key, cls, overwrite, err);
}

const struct fm_module_class *fm_patch_map_resolve(const fm_patch_map *m, const char *name) {
    if (!m || !name || !m->n) return NULL;
    fm_patch_map *mm = (fm_patch_map *)m; /* the lock and match data are scratch state */
    pthread_mutex_lock(&mm->mu);
    const struct fm_module_class *c = map_resolve(m, name);
    pthread_mutex_unlock(&mm->mu);
    return c;
}

size_t fm_patch_map_count(const fm_patch_map *m) {
    return m ? m->n : 0;
}

/* ---- the global registry ----------------------------------------------------------------------
 */
fm_status fm_patch_register(const char *key, const struct fm_module_class *cls, bool overwrite,
                            fm_error *err) {
    pthread_mutex_lock(&g_reg.mu);
    fm_status st = map_add(&g_reg, key, cls, overwrite, err);
    pthread_mutex_unlock(&g_reg.mu);
    return st;
}

fm_status fm_patch_unregister(const char *key, fm_error *err) {
    if (!key) return fm_error_set(err, FM_ERR_INVALID_ARG, "patch mapping key is NULL");
    pthread_mutex_lock(&g_reg.mu);
    long at = find_exact(&g_reg, key);
    if (at >= 0) {
        fm_free(g_reg.v[at].key);
        fm_regex_release(g_reg.v[at].re);
        memmove(&g_reg.v[at], &g_reg.v[at + 1], (g_reg.n - (size_t)at - 1) * sizeof *g_reg.v);
        g_reg.n--;
    }
    pthread_mutex_unlock(&g_reg.mu);
    if (at < 0)
        return fm_error_set(err, FM_ERR_NOT_FOUND,
                            "Class '%s' not found in patch mapping. Cannot unregister it.", key);
    return FM_OK;
}

void fm_patch_clear(void) {
    pthread_mutex_lock(&g_reg.mu);
    entries_clear(&g_reg);
    pcre2_match_data_free(g_reg.md);
    g_reg.md = NULL;
    pthread_mutex_unlock(&g_reg.mu);
}

const struct fm_module_class *fm_patch_resolve(const char *name) {
    if (!name) return NULL;
    pthread_mutex_lock(&g_reg.mu);
    const struct fm_module_class *c = g_reg.n ? map_resolve(&g_reg, name) : NULL;
    pthread_mutex_unlock(&g_reg.mu);
    return c;
}

void fm_patch_keys_free(char **keys, size_t n) {
    if (!keys) return;
    for (size_t i = 0; i < n; i++)
        fm_free(keys[i]);
    fm_free(keys);
}

fm_status fm_patch_list(char ***keys, size_t *n, fm_error *err) {
    *keys = NULL;
    *n = 0;
    pthread_mutex_lock(&g_reg.mu);
    size_t cnt = g_reg.n;
    char **v = fm_calloc(cnt ? cnt : 1, sizeof *v);
    bool ok = v != NULL;
    for (size_t i = 0; ok && i < cnt; i++)
        ok = (v[i] = fm_strdup(g_reg.v[i].key)) != NULL;
    pthread_mutex_unlock(&g_reg.mu);
    if (!ok) {
        fm_patch_keys_free(v, cnt);
        return fm_error_set(err, FM_ERR_NOMEM, "out of memory listing the patch registry");
    }
    *keys = v;
    *n = cnt;
    return FM_OK;
}

fm_status fm_patch_snapshot(fm_patch_map **out, fm_error *err) {
    *out = NULL;
    fm_patch_map *m = fm_patch_map_new();
    if (!m) return fm_error_set(err, FM_ERR_NOMEM, "out of memory taking a patch snapshot");
    fm_status st = FM_OK;
    pthread_mutex_lock(&g_reg.mu);
    for (size_t i = 0; st == FM_OK && i < g_reg.n; i++) {
        char *k = NULL;
        st = ensure_room(m, err);
        if (st == FM_OK && !(k = fm_strdup(g_reg.v[i].key)))
            st = fm_error_set(err, FM_ERR_NOMEM, "out of memory taking a patch snapshot");
        if (st == FM_OK)
            m->v[m->n++] = (patch_entry){k, g_reg.v[i].cls, fm_regex_retain(g_reg.v[i].re)};
    }
    pthread_mutex_unlock(&g_reg.mu);
    if (st != FM_OK) {
        fm_patch_map_free(m);
        return st;
    }
    *out = m;
    return FM_OK;
}
