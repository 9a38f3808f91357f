/* The fusion registry, fusion_config validation, discovery on a meta build (cached by
 * builder, family and the config values the decision depends on), and the per-load plan:
 * per-instance class overrides plus the weight transforms of every enabled family. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "fusemap/fusion.h"
#include "fusion/fusion_internal.h"

/* ---- registry --------------------------------------------------------------------------- */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static const fm_fusion_spec *specs[32];
static size_t n_specs;
static int builtins_done;

static void ensure_builtins(void) {
    if (builtins_done) return;
    builtins_done = 1;
    specs[n_specs++] = &fm_fusion_patch_embeddings;
}

fm_status fm_fusion_register(const fm_fusion_spec *spec, bool overwrite, fm_error *err) {
    if (!spec || !spec->name || !spec->is_fusable || !spec->make_fused_class ||
        !spec->make_transforms)
        return fm_error_set(
            err, FM_ERR_INVALID_ARG,
            "a fusion spec needs a name, is_fusable, make_fused_class and make_transforms");
    fm_status st = FM_OK;
    pthread_mutex_lock(&lock);
    ensure_builtins();
    size_t i = 0;
    while (i < n_specs && strcmp(specs[i]->name, spec->name))
        i++;
    if (i < n_specs && !overwrite)
        st = fm_error_set(err, FM_ERR_EXISTS, "fusion '%s' is already registered (pass overwrite)",
                          spec->name);
    else if (i == n_specs && n_specs == sizeof specs / sizeof *specs)
        st = fm_error_set(err, FM_ERR_LIMIT, "too many fusion families");
    else
        specs[i] = spec, n_specs += (i == n_specs);
    pthread_mutex_unlock(&lock);
    return st;
}

const fm_fusion_spec *fm_fusion_lookup(const char *name) {
    const fm_fusion_spec *hit = NULL;
    pthread_mutex_lock(&lock);
    ensure_builtins();
    for (size_t i = 0; !hit && i < n_specs; i++)
        if (!strcmp(specs[i]->name, name)) hit = specs[i];
    pthread_mutex_unlock(&lock);
    return hit;
}

fm_status fm_fusion_list(const char ***names, size_t *n, fm_error *err) {
    pthread_mutex_lock(&lock);
    ensure_builtins();
    const char **v = fm_calloc(n_specs ? n_specs : 1, sizeof *v);
    for (size_t i = 0; v && i < n_specs; i++)
        v[i] = specs[i]->name;
    *n = v ? n_specs : 0;
    pthread_mutex_unlock(&lock);
    *names = v;
    return v ? FM_OK : fm_error_set(err, FM_ERR_NOMEM, "out of memory listing fusions");
}

/* ---- validation ------------------------------------------------------------------------- */
static void known_names(char *buf, size_t size) {
    size_t off = 0;
    pthread_mutex_lock(&lock);
    ensure_builtins();
    buf[0] = '\0';
    for (size_t i = 0; i < n_specs && off < size; i++)
        off += (size_t)snprintf(buf + off, size - off, "%s%s", i ? ", " : "", specs[i]->name);
    pthread_mutex_unlock(&lock);
}

fm_status fm_fusion_config_validate(const fm_config *fc, const char *origin, fm_error *err) {
    size_t n = fm_config_object_size(fc, "");
    for (size_t i = 0; i < n; i++) {
        const char *key = fm_config_object_key(fc, "", i);
        if (!fm_fusion_lookup(key)) {
            char known[512];
            known_names(known, sizeof known);
            return fm_error_set(err, FM_ERR_FUSION,
                                "%s: fusion_config: unknown fusion type '%s' (known: %s)", origin,
                                key, known);
        }
        fm_json_type t = fm_config_type(fc, key);
        if (t != FM_JSON_BOOL && t != FM_JSON_OBJECT)
            return fm_error_set(err, FM_ERR_FUSION,
                                "%s: fusion_config: invalid value for '%s': expected true, false "
                                "or an object of options",
                                origin, key);
    }
    return FM_OK;
}

bool fm_fusion_family_enabled(const fm_config *fc, const char *key) {
    if (!fc) return false;
    fm_json_type t = fm_config_type(fc, key);
    if (t == FM_JSON_OBJECT) return true;
    bool b = false;
    return t == FM_JSON_BOOL && fm_config_get_bool(fc, key, &b, NULL) == FM_OK && b;
}

void fm_fusion_plan_free(fm_fusion_plan *p) {
    if (!p) return;
    for (size_t i = 0; i < p->n; i++)
        fm_free(p->paths[i]), fm_free(p->families[i]);
    fm_free(p->paths);
    fm_free(p->classes);
    fm_free(p->families);
    for (size_t i = 0; i < p->n_unmatched; i++)
        fm_free(p->unmatched[i]);
    fm_free(p->unmatched);
    fm_transform_list_free(&p->transforms);
    memset(p, 0, sizeof *p);
}
