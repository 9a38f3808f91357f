/* Fusion discovery on a meta build (no weights, no patches), its cache, the fused-class
 * cache, and the per-load plan. The cache key is the architecture, the family and the whole
 * config (fusion_config excluded), so a second config never reuses a stale answer. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "fusemap/fusion.h"
#include "fusion/fusion_internal.h"

typedef struct found {
    char **paths;                    /* owned */
    const fm_module_class **classes; /* borrowed (registry / fused cache) */
    fm_module **modules;             /* borrowed from the meta tree during discovery only */
    size_t n;
    fm_transform_list on, off; /* owned: the family's transforms and defuse transforms */
} found;

typedef struct cache_entry {
    char *key; /* owned */
    found f;
    struct cache_entry *next;
} cache_entry;

typedef struct fused_entry {
    const fm_fusion_spec *spec;
    const fm_module_class *orig, *fused;
    struct fused_entry *next;
} fused_entry;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static cache_entry *cache;
static fused_entry *fused_classes; /* lives for the process: classes are referenced by models */
static _Atomic uint64_t discoveries;

static void found_free(found *f) {
    for (size_t i = 0; i < f->n; i++)
        fm_free(f->paths[i]);
    fm_free(f->paths);
    fm_free(f->classes);
    fm_free(f->modules);
    fm_transform_list_free(&f->on);
    fm_transform_list_free(&f->off);
    memset(f, 0, sizeof *f);
}

static fm_status found_push(found *f, const char *path, const fm_module_class *cls, fm_module *m,
                            fm_error *err) {
    char **np = fm_realloc(f->paths, (f->n + 1) * sizeof *np);
    if (np) f->paths = np;
    const fm_module_class **nc = np ? fm_realloc(f->classes, (f->n + 1) * sizeof *nc) : NULL;
    if (nc) f->classes = nc;
    fm_module **nm = nc ? fm_realloc(f->modules, (f->n + 1) * sizeof *nm) : NULL;
    if (nm) f->modules = nm;
    char *p = nm ? fm_strdup(path) : NULL;
    if (!p) return fm_error_set(err, FM_ERR_NOMEM, "out of memory during fusion discovery");
    f->paths[f->n] = p;
    f->modules[f->n] = m;
    f->classes[f->n++] = cls;
    return FM_OK;
}

/* Copy without the module pointers (they belong to a freed meta tree). */
static fm_status found_copy(const found *src, found *dst, fm_error *err) {
    memset(dst, 0, sizeof *dst);
    fm_status st = FM_OK;
    for (size_t i = 0; st == FM_OK && i < src->n; i++)
        st = found_push(dst, src->paths[i], src->classes[i], NULL, err);
    if (st == FM_OK) st = fm_transform_list_clone(&src->on, &dst->on, err);
    if (st == FM_OK) st = fm_transform_list_clone(&src->off, &dst->off, err);
    if (st != FM_OK) found_free(dst);
    return st;
}

void fm_fusion_cache_clear(void) {
    pthread_mutex_lock(&lock);
    while (cache) {
        cache_entry *e = cache;
        cache = e->next;
        found_free(&e->f);
        fm_free(e->key);
        fm_free(e);
    }
    pthread_mutex_unlock(&lock);
}

uint64_t fm_fusion_discovery_count(void) {
    return atomic_load(&discoveries);
}

/* ---- discovery ------------------------------------------------------------------------------ */
typedef struct walk_ctx {
    const fm_fusion_spec *spec;
    pcre2_code **pats;
    size_t n_pats;
    pcre2_match_data *md;
    found *out;
    fm_status st;
    fm_error *err;
} walk_ctx;

static bool path_matches(walk_ctx *w, const char *path) {
    if (!w->n_pats) return true;
    for (size_t i = 0; i < w->n_pats; i++)
        if (pcre2_match(w->pats[i], (PCRE2_SPTR)path, strlen(path), 0, 0, w->md, NULL) >= 0)
            return true;
    return false;
}

static int visit(fm_module *m, int depth, void *vctx) {
    walk_ctx *w = vctx;
    (void)depth;
    if (!path_matches(w, fm_module_path(m)) || !w->spec->is_fusable(m)) return 0;
    w->st = found_push(w->out, fm_module_path(m), fm_module_class_of(m), m, w->err);
    return w->st != FM_OK;
}

static fm_status compile_patterns(walk_ctx *w, fm_error *err) {
    const char *const *p = w->spec->target_patterns;
    while (p && p[w->n_pats])
        w->n_pats++;
    w->pats = fm_calloc(w->n_pats ? w->n_pats : 1, sizeof *w->pats);
    w->md = pcre2_match_data_create(8, NULL);
    if (!w->pats || !w->md)
        return fm_error_set(err, FM_ERR_NOMEM, "out of memory compiling fusion patterns");
    for (size_t i = 0; i < w->n_pats; i++) {
        int ec;
        PCRE2_SIZE off;
        w->pats[i] = pcre2_compile((PCRE2_SPTR)p[i], PCRE2_ZERO_TERMINATED, 0, &ec, &off, NULL);
        if (!w->pats[i]) {
            char msg[256];
            pcre2_get_error_message(ec, (PCRE2_UCHAR *)msg, sizeof msg);
            return fm_error_set(err, FM_ERR_PATTERN,
                                "fusion '%s': target pattern '%s' at offset %zu: %s", w->spec->name,
                                p[i], (size_t)off, msg);
        }
    }
    return FM_OK;
}

static fm_status discover_uncached(const fm_model_builder *b, const void *model_cfg,
                                   const fm_config *config, const fm_fusion_spec *spec, found *out,
                                   fm_error *err) {
    walk_ctx w = {spec, NULL, 0, NULL, out, FM_OK, err};
    fm_build_ctx *ctx = NULL;
    fm_module *root = NULL;
    fm_build_options bo = {NULL, FM_DTYPE_F32, model_cfg};
    atomic_fetch_add(&discoveries, 1);
    fm_status st = compile_patterns(&w, err);
    if (st == FM_OK) st = fm_build_ctx_new(&bo, &ctx, err);
    if (st == FM_OK) st = b->build(ctx, model_cfg, &root, err);
    if (st == FM_OK) fm_module_walk(root, visit, &w), st = w.st;
    if (st == FM_OK) st = spec->make_transforms(config, out->modules, out->n, &out->on, err);
    if (st == FM_OK && spec->make_defuse_transforms)
        st = spec->make_defuse_transforms(config, out->modules, out->n, &out->off, err);
    fm_free(out->modules);
    out->modules = NULL;
    fm_module_free(root);
    fm_build_ctx_free(ctx);
    for (size_t i = 0; w.pats && i < w.n_pats; i++)
        pcre2_code_free(w.pats[i]);
    fm_free(w.pats);
    pcre2_match_data_free(w.md);
    return st;
}

static fm_status cache_key(const fm_model_builder *b, const fm_config *config,
                           const fm_fusion_spec *spec, char **out, fm_error *err) {
    fm_config *c = NULL;
    char *text = NULL;
    fm_status st = fm_config_clone(config, &c, err);
    if (st == FM_OK && fm_config_type(c, "fusion_config") != FM_JSON_ABSENT)
        st = fm_config_remove(c, "fusion_config", err);
    if (st == FM_OK) st = fm_config_dump_compact(c, &text, err);
    fm_config_free(c);
    if (st != FM_OK) return st;
    size_t n = strlen(b->model_type) + strlen(spec->name) + strlen(text) + 3;
    *out = fm_malloc(n);
    if (*out) snprintf(*out, n, "%s|%s|%s", b->model_type, spec->name, text);
    fm_free(text);
    return *out ? FM_OK : fm_error_set(err, FM_ERR_NOMEM, "out of memory");
}

static fm_status discover(const fm_model_builder *b, const void *model_cfg, const fm_config *config,
                          const fm_fusion_spec *spec, found *out, fm_error *err) {
    char *key = NULL;
    memset(out, 0, sizeof *out);
    fm_status st = cache_key(b, config, spec, &key, err);
    if (st != FM_OK) return st;
    pthread_mutex_lock(&lock);
    cache_entry *e = cache;
    while (e && strcmp(e->key, key))
        e = e->next;
    if (e) st = found_copy(&e->f, out, err);
    pthread_mutex_unlock(&lock);
    if (e) return fm_free(key), st;
    st = discover_uncached(b, model_cfg, config, spec, out, err);
    cache_entry *ne = st == FM_OK ? fm_calloc(1, sizeof *ne) : NULL;
    if (st == FM_OK && (!ne || found_copy(out, &ne->f, err) != FM_OK)) {
        fm_free(ne);
        ne = NULL;
    }
    if (ne) {
        ne->key = key, key = NULL;
        pthread_mutex_lock(&lock);
        ne->next = cache;
        cache = ne;
        pthread_mutex_unlock(&lock);
    }
    fm_free(key);
    if (st != FM_OK) found_free(out);
    return st;
}

static fm_status fused_class_for(const fm_fusion_spec *spec, const fm_module_class *orig,
                                 const fm_module_class **out, fm_error *err) {
    fm_status st = FM_OK;
    pthread_mutex_lock(&lock);
    fused_entry *e = fused_classes;
    while (e && !(e->spec == spec && e->orig == orig))
        e = e->next;
    if (!e) {
        const fm_module_class *cls = NULL;
        st = spec->make_fused_class(orig, &cls, err);
        e = st == FM_OK ? fm_calloc(1, sizeof *e) : NULL;
        if (e)
            *e = (fused_entry){spec, orig, cls, fused_classes}, fused_classes = e;
        else if (st == FM_OK)
            st = fm_error_set(err, FM_ERR_NOMEM, "out of memory");
    }
    *out = e ? e->fused : NULL;
    pthread_mutex_unlock(&lock);
    return st;
}

/* ---- the plan ------------------------------------------------------------------------------- */
static bool same_sources(const fm_transform *a, const fm_transform *b) {
    size_t n = fm_transform_source_count(a);
    if (n != fm_transform_source_count(b)) return false;
    for (size_t i = 0; i < n; i++)
        if (strcmp(fm_transform_source(a, i), fm_transform_source(b, i))) return false;
    return true;
}

static fm_status check_conflicts(const char *family, const fm_transform_list *have,
                                 const fm_transform_list *add, fm_error *err) {
    for (size_t i = 0; i < add->count; i++)
        for (size_t j = 0; have && j < have->count; j++)
            if (same_sources(add->items[i], have->items[j]))
                return fm_error_set(err, FM_ERR_FUSION,
                                    "fusion '%s': %s conflicts with an existing conversion mapping "
                                    "%s (same source patterns)",
                                    family, fm_transform_describe(add->items[i]),
                                    fm_transform_describe(have->items[j]));
    return FM_OK;
}

static fm_status plan_push(fm_fusion_plan *p, const char *path, const fm_module_class *cls,
                           const char *family, fm_error *err) {
    char **np = fm_realloc(p->paths, (p->n + 1) * sizeof *np);
    if (np) p->paths = np;
    const fm_module_class **nc = np ? fm_realloc(p->classes, (p->n + 1) * sizeof *nc) : NULL;
    if (nc) p->classes = nc;
    char **nf = nc ? fm_realloc(p->families, (p->n + 1) * sizeof *nf) : NULL;
    if (nf) p->families = nf;
    char *a = nf ? fm_strdup(path) : NULL, *b = a ? fm_strdup(family) : NULL;
    if (!b)
        return fm_free(a),
               fm_error_set(err, FM_ERR_NOMEM, "out of memory building the fusion plan");
    p->paths[p->n] = a;
    p->families[p->n] = b;
    p->classes[p->n++] = cls;
    return FM_OK;
}

static fm_status append_all(fm_transform_list *dst, fm_transform_list *src, fm_error *err) {
    for (size_t i = 0; i < src->count; i++) {
        fm_transform *t = src->items[i];
        src->items[i] = NULL; /* append owns t from here, even when it fails */
        fm_status st = fm_transform_list_append(dst, t, err);
        if (st != FM_OK) return st;
    }
    return FM_OK;
}

static fm_status plan_family(const fm_fusion_spec *spec, bool enabled, const found *f,
                             const fm_transform_list *existing, fm_fusion_plan *p, fm_error *err) {
    fm_transform_list add = {0};
    fm_status st = FM_OK;
    for (size_t i = 0; enabled && st == FM_OK && i < f->n; i++) {
        const fm_module_class *fused = NULL;
        st = fused_class_for(spec, f->classes[i], &fused, err);
        if (st == FM_OK) st = plan_push(p, f->paths[i], fused, spec->name, err);
    }
    if (st == FM_OK) st = fm_transform_list_clone(enabled ? &f->on : &f->off, &add, err);
    if (st == FM_OK) st = check_conflicts(spec->name, existing, &add, err);
    if (st == FM_OK) st = check_conflicts(spec->name, &p->transforms, &add, err);
    if (st == FM_OK) st = append_all(&p->transforms, &add, err);
    fm_transform_list_free(&add);
    return st;
}

fm_status fm_fusion_plan_make(const fm_model_builder *b, const void *model_cfg,
                              const fm_config *config, const fm_config *fc,
                              const fm_transform_list *existing, fm_fusion_plan *p, fm_error *err) {
    const char **names = NULL;
    size_t n_names = 0, n_keys = fc ? fm_config_object_size(fc, "") : 0;
    memset(p, 0, sizeof *p);
    fm_status st = fm_fusion_list(&names, &n_names, err);
    /* enabled families in the user's order first, then the others (defuse only) */
    for (size_t pass = 0; st == FM_OK && pass < 2; pass++) {
        size_t count = pass == 0 ? n_keys : n_names;
        for (size_t i = 0; st == FM_OK && i < count; i++) {
            const char *name = pass == 0 ? fm_config_object_key(fc, "", i) : names[i];
            bool on = fm_fusion_family_enabled(fc, name);
            if ((pass == 0) != on) continue;
            const fm_fusion_spec *spec = fm_fusion_lookup(name);
            found f;
            st = discover(b, model_cfg, config, spec, &f, err);
            if (st == FM_OK && on && f.n == 0) {
                char **nu = fm_realloc(p->unmatched, (p->n_unmatched + 1) * sizeof *nu);
                if (nu) p->unmatched = nu, nu[p->n_unmatched] = fm_strdup(name);
                if (!nu || !nu[p->n_unmatched])
                    st = fm_error_set(err, FM_ERR_NOMEM, "out of memory");
                else
                    p->n_unmatched++;
            }
            if (st == FM_OK) st = plan_family(spec, on, &f, existing, p, err);
            found_free(&f);
        }
    }
    fm_free(names);
    if (st != FM_OK) fm_fusion_plan_free(p);
    return st;
}
