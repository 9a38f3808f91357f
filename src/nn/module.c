/* The module tree: creation through the class registry (with per-instance overrides and a
 * patch snapshot consulted first), parameters, traversal and named_parameters. */
#include "fusemap/nn.h"
#include "nn/layers.h"

#include <assert.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

struct fm_module {
    char *name;                 /* owned */
    char *path;                 /* owned, dotted from the root */
    char *requested;            /* owned: the class name asked for */
    const fm_module_class *cls; /* borrowed (registry / fusion cache lifetime) */
    fm_module *parent;          /* borrowed */
    fm_module **children;       /* owned */
    size_t n_children, cap_children;
    fm_param *params; /* owned */
    size_t n_params, cap_params;
    void *impl;    /* owned, freed by cls->free_impl */
    bool prepared; /* the class's prepare ran since the last load / invalidate */
};

typedef struct override_entry {
    char *path;
    const fm_module_class *cls;
} override_entry;

struct fm_build_ctx {
    fm_build_options opt;
    override_entry *ov; /* owned */
    size_t n_ov;
};

/* ---- args ------------------------------------------------------------------------------- */
static const fm_arg *args_find(const fm_args *a, const char *key) {
    for (size_t i = 0; a && i < a->n; i++)
        if (!strcmp(a->v[i].key, key)) return &a->v[i];
    return NULL;
}
int64_t fm_args_int(const fm_args *a, const char *key, int64_t dflt) {
    const fm_arg *v = args_find(a, key);
    return v ? v->i : dflt;
}
double fm_args_double(const fm_args *a, const char *key, double dflt) {
    const fm_arg *v = args_find(a, key);
    return v ? v->d : dflt;
}
bool fm_args_has(const fm_args *a, const char *key) {
    return args_find(a, key) != NULL;
}

/* ---- class registry -------------------------------------------------------------------- */
static pthread_mutex_t class_lock = PTHREAD_MUTEX_INITIALIZER;
static const fm_module_class **classes; /* entries borrowed; array owned */
static size_t n_classes, cap_classes;

static long class_index(const char *name) {
    for (size_t i = 0; i < n_classes; i++)
        if (!strcmp(classes[i]->name, name)) return (long)i;
    return -1;
}

static fm_status class_register(const fm_module_class *cls, bool overwrite, fm_error *err);

fm_status fm_class_register_builtin(const fm_module_class *cls, fm_error *err) {
    return class_register(cls, false, err);
}

fm_status fm_class_register(const fm_module_class *cls, bool overwrite, fm_error *err) {
    fm_status st = fm_nn_register_builtins(err);
    return st == FM_OK ? class_register(cls, overwrite, err) : st;
}

static fm_status class_register(const fm_module_class *cls, bool overwrite, fm_error *err) {
    if (!cls || !cls->name || !cls->init)
        return fm_error_set(err, FM_ERR_INVALID_ARG, "module class must have a name and an init");
    fm_status st = FM_OK;
    pthread_mutex_lock(&class_lock);
    long i = class_index(cls->name);
    if (i >= 0 && !overwrite) {
        st = fm_error_set(err, FM_ERR_EXISTS, "module class '%s' is already registered", cls->name);
    } else if (i >= 0) {
        classes[i] = cls;
    } else {
        if (n_classes == cap_classes) {
            size_t cap = cap_classes ? cap_classes * 2 : 64;
            const fm_module_class **nc = fm_realloc(classes, cap * sizeof *nc);
            if (!nc)
                st = fm_error_set(err, FM_ERR_NOMEM, "out of memory registering '%s'", cls->name);
            else
                classes = nc, cap_classes = cap;
        }
        if (st == FM_OK) classes[n_classes++] = cls;
    }
    pthread_mutex_unlock(&class_lock);
    return st;
}

fm_status fm_class_register_alias(const char *name, const char *existing, bool overwrite,
                                  fm_error *err) {
    const fm_module_class *src = fm_class_lookup(existing);
    if (!src)
        return fm_error_set(err, FM_ERR_NOT_FOUND, "cannot alias '%s': no module class named '%s'",
                            name, existing);
    fm_module_class *copy = fm_malloc(sizeof *copy);
    char *nm = fm_strdup(name);
    if (!copy || !nm) {
        fm_free(copy);
        fm_free(nm);
        return fm_error_set(err, FM_ERR_NOMEM, "out of memory registering '%s'", name);
    }
    *copy = *src;
    copy->name = nm;
    fm_status st = fm_class_register(copy, overwrite, err);
    if (st != FM_OK) fm_free(nm), fm_free(copy);
    return st; /* on success the copy lives for the process (the registry points to it) */
}

const fm_module_class *fm_class_lookup(const char *name) {
    fm_nn_register_builtins(NULL);
    pthread_mutex_lock(&class_lock);
    long i = class_index(name);
    const fm_module_class *c = i >= 0 ? classes[i] : NULL;
    pthread_mutex_unlock(&class_lock);
    return c;
}

/* ---- build context ---------------------------------------------------------------------- */
fm_status fm_build_ctx_new(const fm_build_options *o, fm_build_ctx **out, fm_error *err) {
    fm_build_ctx *c = fm_calloc(1, sizeof *c);
    *out = NULL;
    if (!c) return fm_error_set(err, FM_ERR_NOMEM, "out of memory creating a build context");
    c->opt = *o;
    *out = c;
    return FM_OK;
}

fm_status fm_build_ctx_override(fm_build_ctx *ctx, const char *path, const fm_module_class *cls,
                                fm_error *err) {
    override_entry *nv = fm_realloc(ctx->ov, (ctx->n_ov + 1) * sizeof *nv);
    if (!nv) return fm_error_set(err, FM_ERR_NOMEM, "out of memory adding an override");
    ctx->ov = nv;
    nv[ctx->n_ov].path = fm_strdup(path);
    nv[ctx->n_ov].cls = cls;
    if (!nv[ctx->n_ov].path)
        return fm_error_set(err, FM_ERR_NOMEM, "out of memory adding an override");
    ctx->n_ov++;
    return FM_OK;
}

void fm_build_ctx_free(fm_build_ctx *ctx) {
    if (!ctx) return;
    for (size_t i = 0; i < ctx->n_ov; i++)
        fm_free(ctx->ov[i].path);
    fm_free(ctx->ov);
    fm_free(ctx);
}

const void *fm_build_ctx_model_cfg(const fm_build_ctx *ctx) {
    return ctx->opt.model_cfg;
}
fm_dtype fm_build_ctx_dtype(const fm_build_ctx *ctx) {
    return ctx->opt.dtype;
}

static const fm_module_class *resolve_class(const fm_build_ctx *ctx, const char *path,
                                            const char *name) {
    for (size_t i = 0; i < ctx->n_ov; i++)
        if (!strcmp(ctx->ov[i].path, path)) return ctx->ov[i].cls;
    if (ctx->opt.resolve) {
        const fm_module_class *p = ctx->opt.resolve(ctx->opt.resolve_ctx, name);
        if (p) return p;
    }
    return fm_class_lookup(name);
}

/* ---- modules ------------------------------------------------------------------------------ */
static char *join_path(const char *parent, const char *name) {
    size_t a = strlen(parent), b = strlen(name);
    char *p = fm_malloc(a + b + 2);
    if (!p) return NULL;
    if (a == 0) {
        memcpy(p, name, b + 1);
    } else {
        memcpy(p, parent, a);
        p[a] = '.';
        memcpy(p + a + 1, name, b + 1);
    }
    return p;
}

static fm_status attach_child(fm_module *parent, fm_module *child, fm_error *err) {
    if (parent->n_children == parent->cap_children) {
        size_t cap = parent->cap_children ? parent->cap_children * 2 : 4;
        fm_module **nc = fm_realloc(parent->children, cap * sizeof *nc);
        if (!nc)
            return fm_error_set(err, FM_ERR_NOMEM, "out of memory adding module '%s'", child->path);
        parent->children = nc;
        parent->cap_children = cap;
    }
    parent->children[parent->n_children++] = child;
    return FM_OK;
}

fm_status fm_module_create(fm_build_ctx *ctx, fm_module *parent, const char *name,
                           const char *class_name, const fm_args *args, fm_module **out,
                           fm_error *err) {
    if (out) *out = NULL;
    fm_module *m = fm_calloc(1, sizeof *m);
    if (!m) return fm_error_set(err, FM_ERR_NOMEM, "out of memory creating module '%s'", name);
    m->name = fm_strdup(name);
    m->path = join_path(parent ? parent->path : "", name);
    m->requested = fm_strdup(class_name);
    m->parent = parent;
    if (!m->name || !m->path || !m->requested) {
        fm_module_free(m);
        return fm_error_set(err, FM_ERR_NOMEM, "out of memory creating module '%s'", name);
    }
    m->cls = resolve_class(ctx, m->path, class_name);
    if (!m->cls) {
        fm_status st =
            fm_error_set(err, FM_ERR_NOT_FOUND, "module '%s': no module class named '%s'",
                         m->path[0] ? m->path : "(root)", class_name);
        fm_module_free(m);
        return st;
    }
    fm_status st = parent ? attach_child(parent, m, err) : FM_OK;
    if (st != FM_OK) {
        fm_module_free(m);
        return st;
    }
    /* Once attached, the parent owns m even if init fails (freed with the parent). */
    st = m->cls->init(m, ctx, args ? args : &FM_NO_ARGS, err);
    if (st != FM_OK && !parent) {
        fm_module_free(m);
        return st;
    }
    if (st == FM_OK && out) *out = m;
    return st;
}

void fm_module_free(fm_module *m) {
    if (!m) return;
    for (size_t i = 0; i < m->n_children; i++)
        fm_module_free(m->children[i]);
    fm_free(m->children);
    for (size_t i = 0; i < m->n_params; i++) {
        fm_free(m->params[i].name);
        fm_tensor_free(&m->params[i].tensor);
    }
    fm_free(m->params);
    if (m->impl && m->cls && m->cls->free_impl) m->cls->free_impl(m->impl);
    fm_free(m->name);
    fm_free(m->path);
    fm_free(m->requested);
    fm_free(m);
}

fm_status fm_module_add_param(fm_module *m, const char *name, fm_dtype dt, const fm_shape *shape,
                              fm_error *err) {
    if (m->n_params == m->cap_params) {
        size_t cap = m->cap_params ? m->cap_params * 2 : 2;
        fm_param *np = fm_realloc(m->params, cap * sizeof *np);
        if (!np)
            return fm_error_set(err, FM_ERR_NOMEM, "out of memory adding %s.%s", m->path, name);
        m->params = np;
        m->cap_params = cap;
    }
    fm_param *p = &m->params[m->n_params];
    memset(p, 0, sizeof *p);
    fm_status st = fm_tensor_init_meta(&p->tensor, dt, shape, err);
    if (st != FM_OK) {
        fm_error_prefix(err, "parameter %s.%s", m->path, name);
        return st;
    }
    p->name = fm_strdup(name);
    if (!p->name)
        return fm_error_set(err, FM_ERR_NOMEM, "out of memory adding %s.%s", m->path, name);
    m->n_params++;
    return FM_OK;
}

const char *fm_module_name(const fm_module *m) {
    return m->name;
}
const char *fm_module_path(const fm_module *m) {
    return m->path;
}
const fm_module_class *fm_module_class_of(const fm_module *m) {
    return m->cls;
}
const char *fm_module_requested_class(const fm_module *m) {
    return m->requested;
}
fm_module *fm_module_parent(const fm_module *m) {
    return m->parent;
}
size_t fm_module_child_count(const fm_module *m) {
    return m->n_children;
}
fm_module *fm_module_child(const fm_module *m, size_t i) {
    return i < m->n_children ? m->children[i] : NULL;
}
size_t fm_module_param_count(const fm_module *m) {
    return m->n_params;
}
fm_param *fm_module_param(fm_module *m, size_t i) {
    return i < m->n_params ? &m->params[i] : NULL;
}
void fm_module_set_impl(fm_module *m, void *impl) {
    m->impl = impl;
}
fm_status fm_module_set_impl_copy(fm_module *m, const void *v, size_t n, fm_error *err) {
    void *p = fm_malloc(n ? n : 1);
    if (!p)
        return fm_error_set(err, FM_ERR_NOMEM, "out of memory building '%s'", fm_module_path(m));
    memcpy(p, v, n);
    m->impl = p;
    return FM_OK;
}
void *fm_module_impl(const fm_module *m) {
    return m->impl;
}

fm_module *fm_module_child_named(const fm_module *m, const char *name) {
    for (size_t i = 0; i < m->n_children; i++)
        if (!strcmp(m->children[i]->name, name)) return m->children[i];
    return NULL;
}

fm_param *fm_module_param_named(fm_module *m, const char *name) {
    for (size_t i = 0; i < m->n_params; i++)
        if (!strcmp(m->params[i].name, name)) return &m->params[i];
    return NULL;
}

fm_module *fm_module_find(fm_module *m, const char *path) {
    char seg[256];
    while (m && *path) {
        const char *dot = strchr(path, '.');
        size_t len = dot ? (size_t)(dot - path) : strlen(path);
        if (len >= sizeof seg) return NULL;
        memcpy(seg, path, len);
        seg[len] = '\0';
        m = fm_module_child_named(m, seg);
        path = dot ? dot + 1 : path + len;
    }
    return m;
}

static int walk(fm_module *m, int depth, fm_module_visit_fn fn, void *ctx) {
    int r = fn(m, depth, ctx);
    for (size_t i = 0; !r && i < m->n_children; i++)
        r = walk(m->children[i], depth + 1, fn, ctx);
    return r;
}

int fm_module_walk(fm_module *root, fm_module_visit_fn fn, void *ctx) {
    return walk(root, 0, fn, ctx);
}

typedef struct collect_ctx {
    fm_param_ref *v;
    size_t n, cap;
    fm_status st;
} collect_ctx;

static int collect_params(fm_module *m, int depth, void *vctx) {
    collect_ctx *c = vctx;
    (void)depth;
    for (size_t i = 0; i < m->n_params; i++) {
        if (c->n == c->cap) {
            size_t cap = c->cap ? c->cap * 2 : 64;
            fm_param_ref *nv = fm_realloc(c->v, cap * sizeof *nv);
            if (!nv) return c->st = FM_ERR_NOMEM, 1;
            c->v = nv;
            c->cap = cap;
        }
        char *name = join_path(m->path, m->params[i].name);
        if (!name) return c->st = FM_ERR_NOMEM, 1;
        c->v[c->n++] = (fm_param_ref){name, m, i};
    }
    return 0;
}

fm_status fm_module_named_params(fm_module *root, fm_param_ref **out, size_t *n, fm_error *err) {
    collect_ctx c = {0};
    fm_module_walk(root, collect_params, &c);
    if (c.st != FM_OK) {
        fm_param_refs_free(c.v, c.n);
        *out = NULL;
        *n = 0;
        return fm_error_set(err, c.st, "out of memory listing parameters");
    }
    *out = c.v;
    *n = c.n;
    return FM_OK;
}

void fm_param_refs_free(fm_param_ref *v, size_t n) {
    for (size_t i = 0; v && i < n; i++)
        fm_free(v[i].name);
    fm_free(v);
}

/* ---- model builder registry -------------------------------------------------------------- */
static pthread_mutex_t builder_lock = PTHREAD_MUTEX_INITIALIZER;
static const fm_model_builder *builders[32];
static size_t n_builders;

fm_status fm_model_builder_register(const fm_model_builder *b, bool overwrite, fm_error *err) {
    if (!b || !b->model_type || !b->build || !b->parse_config)
        return fm_error_set(err, FM_ERR_INVALID_ARG,
                            "model builder needs model_type, parse_config and build");
    fm_status st = FM_OK;
    pthread_mutex_lock(&builder_lock);
    size_t i = 0;
    while (i < n_builders && strcmp(builders[i]->model_type, b->model_type))
        i++;
    if (i < n_builders && !overwrite)
        st = fm_error_set(err, FM_ERR_EXISTS, "a builder for model_type '%s' is already registered",
                          b->model_type);
    else if (i == n_builders && n_builders == sizeof builders / sizeof *builders)
        st = fm_error_set(err, FM_ERR_LIMIT, "too many model builders");
    else
        builders[i] = b, n_builders += (i == n_builders);
    pthread_mutex_unlock(&builder_lock);
    return st;
}

const fm_model_builder *fm_model_builder_find(const char *model_type, const char *architecture) {
    const fm_model_builder *hit = NULL;
    pthread_mutex_lock(&builder_lock);
    for (size_t i = 0; !hit && model_type && i < n_builders; i++)
        if (!strcmp(builders[i]->model_type, model_type)) hit = builders[i];
    for (size_t i = 0; !hit && architecture && i < n_builders; i++)
        if (builders[i]->architecture && !strcmp(builders[i]->architecture, architecture))
            hit = builders[i];
    pthread_mutex_unlock(&builder_lock);
    return hit;
}

/* ---- forward dispatch ------------------------------------------------------------------------ */
bool fm_module_is_prepared(const fm_module *m) {
    return m->prepared;
}

void fm_module_invalidate(fm_module *m) {
    m->prepared = false;
    for (size_t i = 0; i < m->n_children; i++)
        fm_module_invalidate(m->children[i]);
}

fm_status fm_module_prepare(fm_module *m, fm_run_ctx *rc, fm_error *err) {
    if (m->prepared) return FM_OK;
    for (size_t i = 0; i < m->n_children; i++) {
        fm_status st = fm_module_prepare(m->children[i], rc, err);
        if (st != FM_OK) return st;
    }
    if (m->cls->prepare) {
        fm_status st = m->cls->prepare(m, rc, err);
        if (st != FM_OK) return st;
    }
    m->prepared = true;
    return FM_OK;
}

fm_status fm_module_forward(fm_module *m, fm_run_ctx *rc, const fm_tensor *in, size_t n_in,
                            fm_tensor *out, size_t n_out, fm_error *err) {
    assert(m && rc && (in || !n_in) && (out || !n_out));
    if (!m->prepared) {
        fm_status st = fm_module_prepare(m, rc, err);
        if (st != FM_OK) return st;
    }
    if (!m->cls->forward)
        return fm_error_set(err, FM_ERR_UNSUPPORTED, "module '%s' (%s) has no forward", m->path,
                            m->cls->name);
    return m->cls->forward(m, rc, in, n_in, out, n_out, err);
}

static const char *path_or_root(const fm_module *m) {
    return m->path[0] ? m->path : "(root)";
}

fm_status fm_module_output(fm_module *m, fm_run_ctx *rc, fm_tensor *out, fm_dtype dt,
                           const fm_shape *shape, fm_error *err) {
    if (!out->data) return fm_run_tensor(rc, dt, shape, out, err);
    if (out->dtype == dt && fm_shape_equal(&out->shape, shape)) return FM_OK;
    char a[128], b[128];
    return fm_error_set(
        err, FM_ERR_INPUT, "module '%s': output buffer is %s %s, the module produces %s %s",
        path_or_root(m), fm_dtype_name(out->dtype), fm_shape_format(&out->shape, a, sizeof a),
        fm_dtype_name(dt), fm_shape_format(shape, b, sizeof b));
}

fm_status fm_module_check_input(const fm_module *m, const fm_tensor *in, size_t n_in, size_t i,
                                fm_dtype dt, int ndim, int64_t last, fm_error *err) {
    char a[128];
    if (i >= n_in)
        return fm_error_set(err, FM_ERR_INPUT, "module '%s' (%s): input %zu missing (%zu given)",
                            path_or_root(m), m->cls->name, i, n_in);
    const fm_tensor *t = &in[i];
    int nd = t->shape.ndim;
    if (t->dtype == dt && t->data && (ndim < 0 || nd == ndim) && nd >= 1 &&
        (last < 0 || t->shape.dims[nd - 1] == last))
        return FM_OK;
    return fm_error_set(
        err, FM_ERR_INPUT,
        "module '%s' (%s): input %zu is %s %s%s, expected %s with %d dims, last %lld",
        path_or_root(m), m->cls->name, i, fm_dtype_name(t->dtype),
        fm_shape_format(&t->shape, a, sizeof a), t->data ? "" : " (no data)", fm_dtype_name(dt),
        ndim, (long long)last);
}

fm_status fm_module_remove_child(fm_module *m, const char *name, fm_error *err) {
    for (size_t i = 0; i < m->n_children; i++) {
        if (strcmp(m->children[i]->name, name)) continue;
        fm_module_free(m->children[i]);
        memmove(&m->children[i], &m->children[i + 1],
                (m->n_children - i - 1) * sizeof *m->children);
        m->n_children--;
        return FM_OK;
    }
    return fm_error_set(err, FM_ERR_NOT_FOUND, "module '%s' has no child '%s'", m->path, name);
}
