/* The conversion-mapping registry (spec §5): key (model_type or class name) -> ordered transform
 * list, process-wide behind a mutex, with the built-in Qwen2-VL entry between hub names
 * (visual.*, model.*) and runtime names (model.visual.*, model.language_model.*). */
#include <pthread.h>
#include <string.h>

#include "fusemap/loading.h"

typedef struct mapping_entry {
    char *key;              /* owned */
    fm_transform_list list; /* owned */
} mapping_entry;

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static mapping_entry *g_v;
static size_t g_n, g_cap;
static bool g_builtins; /* the built-in entries were added (lazily, on first use) */

/* Keys the built-in Qwen2-VL renamings are registered under (the Qwen2.5-VL class is an alias
 * of the same list, as in transformers' alias table). */
static const char *const qwen2_vl_keys[] = {"Qwen2VLForConditionalGeneration", "Qwen2_5_VLForConditionalGeneration"};

static fm_status qwen2_vl_list(fm_transform_list *l, fm_error *err) {
    static const char *const pairs[][2] = {
        {"^visual", "model.visual"},
        {"^model(?!\\.(language_model|visual))", "model.language_model"},
    };
    l->items = NULL;
    l->count = 0;
    for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
        fm_transform *t = NULL;
        fm_status st = fm_transform_renaming_new(pairs[i][0], pairs[i][1], &t, err);
        if (st == FM_OK) st = fm_transform_list_append(l, t, err);
        if (st != FM_OK) {
            fm_transform_list_free(l);
            return st;
        }
    }
    return FM_OK;
}

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
        return fm_error_set(err, FM_ERR_NOMEM, "out of memory registering conversion mapping '%s'", key);
    }
    g_v[g_n++] = (mapping_entry){k, *list};
    return FM_OK;
}

/* Adds the built-in entries that are absent. Lock held. Retried on the next call if it fails. */
static fm_status ensure_builtins(fm_error *err) {
    if (g_builtins) return FM_OK;
    for (size_t i = 0; i < sizeof qwen2_vl_keys / sizeof qwen2_vl_keys[0]; i++) {
        if (find_key(qwen2_vl_keys[i]) >= 0) continue;
        fm_transform_list l;
        fm_status st = qwen2_vl_list(&l, err);
        if (st == FM_OK) st = store(qwen2_vl_keys[i], &l, err);
        if (st != FM_OK) return st;
    }
    g_builtins = true;
    return FM_OK;
}

fm_status fm_conversion_mapping_register(const char *key, const fm_transform_list *list, bool overwrite,
                                         fm_error *err) {
    if (!key || !*key || !list)
        return fm_error_set(err, FM_ERR_INVALID_ARG, "conversion mapping needs a key and a transform list");
    fm_transform_list copy;
    fm_status st = fm_transform_list_clone(list, &copy, err);
    if (st != FM_OK) return st;
    pthread_mutex_lock(&g_mu);
    st = ensure_builtins(err);
    if (st == FM_OK && !overwrite && find_key(key) >= 0)
        st = fm_error_set(err, FM_ERR_EXISTS,
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
    fm_status st = ensure_builtins(err);
    long at = st == FM_OK ? find_key(key) : -1;
    if (st == FM_OK && at < 0)
        st = fm_error_set(err, FM_ERR_NOT_FOUND, "no conversion mapping registered for '%s'", key);
    if (st == FM_OK) st = fm_transform_list_clone(&g_v[at].list, out, err);
    pthread_mutex_unlock(&g_mu);
    return st;
}

fm_status fm_conversion_mapping_unregister(const char *key, fm_error *err) {
    if (!key) return fm_error_set(err, FM_ERR_INVALID_ARG, "conversion mapping key is NULL");
    pthread_mutex_lock(&g_mu);
    fm_status st = ensure_builtins(err);
    long at = st == FM_OK ? find_key(key) : -1;
    if (st == FM_OK && at < 0)
        st = fm_error_set(err, FM_ERR_NOT_FOUND, "no conversion mapping registered for '%s'; cannot unregister it",
                          key);
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
    fm_free(g_v);
    g_v = NULL;
    g_n = g_cap = 0;
    g_builtins = false;
    ensure_builtins(NULL); /* on failure the next call retries */
    pthread_mutex_unlock(&g_mu);
}
