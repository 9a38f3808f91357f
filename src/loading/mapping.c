/* The conversion-mapping registry (spec §5): key (model_type or class name) -> ordered transform
 * list, process-wide behind a mutex. The architectures of the library register their entries
 * as defaults at start-up (fm_init); reset restores the defaults. */
#include <pthread.h>
#include <string.h>

#include "loading/defaults.h"

typedef struct mapping_entry {
    char *key;              /* owned */
    fm_transform_list list; /* owned */
} mapping_entry;

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static mapping_entry *g_v;
static size_t g_n, g_cap;

static long find_key(const char *key) {
    for (size_t i = 0; i < g_n; i++)
        if (strcmp(g_v[i].key, key) == 0) return (long)i;
    return -1;
}

/* Stores `list` (taken) under key, replacing an existing entry in place. Lock held. */
static fm_status store(const char *key, fm_transform_list *list, fm_error *err) {
    long at = find_key(key);
    if (at >= 0) {
        fm_transform_list_free(&g_v[at].list);
        g_v[at].list = *list;
        return FM_OK;
    }
    char *k = fm_strdup(key);
    if (k && g_n == g_cap) {
        size_t cap = g_cap ? g_cap * 2 : 8;
        mapping_entry *v = fm_realloc(g_v, cap * sizeof *v);
        if (v) {
            g_v = v;
            g_cap = cap;
        }
    }
    if (!k || g_n == g_cap) {
        fm_free(k);
        fm_transform_list_free(list);
        return fm_error_set(err, FM_ERR_NOMEM, "out of memory registering conversion mapping '%s'",
                            key);
    }
    g_v[g_n++] = (mapping_entry){k, *list};
    return FM_OK;
}

/* Defaults: entries the library's architectures register at start-up (fm_init); reset
 * restores exactly these. Lock held for both tables. */
static mapping_entry *g_def;
static size_t g_n_def;

fm_status fm_conversion_mapping_register_default(const char *key, const fm_transform_list *list,
                                                 fm_error *err) {
    fm_transform_list live, kept;
    fm_status st = fm_transform_list_clone(list, &live, err);
    if (st != FM_OK) return st;
    st = fm_transform_list_clone(list, &kept, err);
    if (st != FM_OK) return fm_transform_list_free(&live), st;
    pthread_mutex_lock(&g_mu);
    char *k = fm_strdup(key);
    mapping_entry *nd = k ? fm_realloc(g_def, (g_n_def + 1) * sizeof *nd) : NULL;
    if (!nd) {
        fm_free(k);
        fm_transform_list_free(&kept);
        fm_transform_list_free(&live);
        st = fm_error_set(err, FM_ERR_NOMEM, "out of memory registering conversion mapping '%s'",
                          key);
    } else {
        g_def = nd;
        g_def[g_n_def++] = (mapping_entry){k, kept};
        st = store(key, &live, err);
    }
    pthread_mutex_unlock(&g_mu);
    return st;
}

fm_status fm_conversion_mapping_register(const char *key, const fm_transform_list *list,
                                         bool overwrite, fm_error *err) {
    if (!key || !*key || !list)
        return fm_error_set(err, FM_ERR_INVALID_ARG,
                            "conversion mapping needs a key and a transform list");
    fm_transform_list copy;
    fm_status st = fm_transform_list_clone(list, &copy, err);
    if (st != FM_OK) return st;
    pthread_mutex_lock(&g_mu);
    if (!overwrite && find_key(key) >= 0)
        st = fm_error_set(
            err, FM_ERR_EXISTS,
            "Conversion mapping for '%s' already exists. Pass overwrite=true to replace it.", key);
    if (st == FM_OK) {
        st = store(key, &copy, err);
    } else {
        fm_transform_list_free(&copy);
    }
    pthread_mutex_unlock(&g_mu);
    return st;
}

fm_status fm_conversion_mapping_get(const char *key, fm_transform_list *out, fm_error *err) {
    out->items = NULL;
    out->count = 0;
    if (!key) return fm_error_set(err, FM_ERR_INVALID_ARG, "conversion mapping key is NULL");
    pthread_mutex_lock(&g_mu);
    fm_status st = FM_OK;
    long at = find_key(key);
    if (st == FM_OK && at < 0)
        st = fm_error_set(err, FM_ERR_NOT_FOUND, "no conversion mapping registered for '%s'", key);
    if (st == FM_OK) st = fm_transform_list_clone(&g_v[at].list, out, err);
    pthread_mutex_unlock(&g_mu);
    return st;
}

fm_status fm_conversion_mapping_unregister(const char *key, fm_error *err) {
    if (!key) return fm_error_set(err, FM_ERR_INVALID_ARG, "conversion mapping key is NULL");
    pthread_mutex_lock(&g_mu);
    fm_status st = FM_OK;
    long at = find_key(key);
    if (st == FM_OK && at < 0)
        st = fm_error_set(err, FM_ERR_NOT_FOUND,
                          "no conversion mapping registered for '%s'; cannot unregister it", key);
    if (st == FM_OK) {
        fm_free(g_v[at].key);
        fm_transform_list_free(&g_v[at].list);
        memmove(&g_v[at], &g_v[at + 1], (g_n - (size_t)at - 1) * sizeof *g_v);
        g_n--;
    }
    pthread_mutex_unlock(&g_mu);
    return st;
}

void fm_conversion_mapping_reset(void) {
    pthread_mutex_lock(&g_mu);
    for (size_t i = 0; i < g_n; i++) {
        fm_free(g_v[i].key);
        fm_transform_list_free(&g_v[i].list);
    }
    g_n = 0;
    for (size_t i = 0; i < g_n_def; i++) {
        fm_transform_list l;
        if (fm_transform_list_clone(&g_def[i].list, &l, NULL) == FM_OK)
            store(g_def[i].key, &l, NULL);
    }
    pthread_mutex_unlock(&g_mu);
}
