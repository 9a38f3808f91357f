/* The weight-loading engine (spec §6, §8.2): maps checkpoint tensors onto model parameters
 * through renamings and converters, fills the load report, and reverts a runtime state dict to
 * the checkpoint layout for saving. Simplified: no TP, quantization, device maps, scoping or
 * base-model prefix. */
#include <stdio.h>
#include <string.h>

#include "loading/internal.h"

/* ---- report -----------------------------------------------------------------------------------
 */
static void strv_free(char **v, size_t n) {
    for (size_t i = 0; v && i < n; i++)
        fm_free(v[i]);
    fm_free(v);
}

void fm_load_report_free(fm_load_report *r) {
    if (!r) return;
    strv_free(r->missing, r->n_missing);
    strv_free(r->unexpected, r->n_unexpected);
    for (size_t i = 0; i < r->n_mismatched; i++)
        fm_free(r->mismatched[i].key);
    fm_free(r->mismatched);
    for (size_t i = 0; i < r->n_conversion_errors; i++) {
        fm_free(r->conversion_errors[i].key);
        fm_free(r->conversion_errors[i].message);
    }
    fm_free(r->conversion_errors);
    strv_free(r->fired, r->n_fired);
    strv_free(r->fused, r->n_fused);
    memset(r, 0, sizeof *r);
}

void fm_weights_load_options_init(fm_weights_load_options *o) {
    memset(o, 0, sizeof *o);
    o->cast = FM_DTYPE_INVALID;
}

/* Appends a copy of s. */
static fm_status strv_push(char ***v, size_t *n, const char *s, fm_error *err) {
    char *c = fm_strdup(s);
    char **nv = c ? fm_realloc(*v, (*n + 1) * sizeof *nv) : NULL;
    if (!nv) {
        fm_free(c);
        return fm_error_set(err, FM_ERR_NOMEM, "out of memory filling the load report");
    }
    nv[(*n)++] = c;
    *v = nv;
    return FM_OK;
}

/* ---- load state --------------------------------------------------------------------------------
 */
typedef struct load_ctx {
    const fm_transform_list *tl;
    fm_transform **ren, **conv; /* borrowed from tl, in list order */
    size_t nren, nconv;
    size_t *ren_at, *conv_at; /* their indices in tl */
    bool *fired;              /* per tl index */
    bool *ren_hit, *conv_hit; /* per-key scratch */
    const fm_tensor_source *src;
    const fm_param_spec *params;
    size_t np;
    fm_keymap pmap;  /* parameter name -> index */
    fm_keymap unexp; /* dedupe of report->unexpected (borrows its strings) */
    fm_grp_set groups;
    unsigned char *state; /* per parameter: 0 untouched, 1 loaded, 2 mismatched */
    fm_tensor *out;
    bool cast;
    fm_load_report *rep;
    fm_status first_st; /* first shape mismatch or conversion error */
    fm_error first;
} load_ctx;

static void ctx_free(load_ctx *c) {
    fm_free(c->ren);
    fm_free(c->conv);
    fm_free(c->ren_at);
    fm_free(c->conv_at);
    fm_free(c->fired);
    fm_free(c->ren_hit);
    fm_free(c->conv_hit);
    fm_free(c->state);
    fm_keymap_free(&c->pmap);
    fm_keymap_free(&c->unexp);
    fm_grp_set_free(&c->groups);
}

static fm_status ctx_init(load_ctx *c, fm_error *err) {
    size_t nt = c->tl ? c->tl->count : 0;
    c->ren = fm_calloc(nt + 1, sizeof *c->ren);
    c->conv = fm_calloc(nt + 1, sizeof *c->conv);
    c->ren_at = fm_calloc(nt + 1, sizeof *c->ren_at);
    c->conv_at = fm_calloc(nt + 1, sizeof *c->conv_at);
    c->fired = fm_calloc(nt + 1, sizeof *c->fired);
    c->ren_hit = fm_calloc(nt + 1, sizeof *c->ren_hit);
    c->conv_hit = fm_calloc(nt + 1, sizeof *c->conv_hit);
    c->state = fm_calloc(c->np + 1, 1);
    if (!c->ren || !c->conv || !c->ren_at || !c->conv_at || !c->fired || !c->ren_hit ||
        !c->conv_hit || !c->state)
        return fm_error_set(err, FM_ERR_NOMEM, "out of memory starting a load");
    for (size_t i = 0; i < nt; i++) {
        fm_transform *t = c->tl->items[i];
        if (fm_transform_kind_of(t) == FM_TRANSFORM_RENAMING) {
            c->ren_at[c->nren] = i;
            c->ren[c->nren++] = t;
        } else {
            c->conv_at[c->nconv] = i;
            c->conv[c->nconv++] = t;
        }
    }
    fm_status st = fm_keymap_init(&c->pmap, c->np, err);
    if (st == FM_OK) st = fm_keymap_init(&c->unexp, 16, err);
    if (st == FM_OK) st = fm_grp_set_init(&c->groups, c->np, err);
    for (size_t i = 0; st == FM_OK && i < c->np; i++) {
        size_t dup;
        if (!c->params[i].name)
            return fm_error_set(err, FM_ERR_INVALID_ARG, "parameter %zu has no name", i);
        if (fm_keymap_get(&c->pmap, c->params[i].name, &dup))
            return fm_error_set(err, FM_ERR_INVALID_ARG, "parameter '%s' is listed twice",
                                c->params[i].name);
        st = fm_keymap_put(&c->pmap, c->params[i].name, i, err);
    }
    return st;
}

static fm_status add_unexpected(load_ctx *c, const char *key, fm_error *err) {
    size_t dummy;
    if (fm_keymap_get(&c->unexp, key, &dummy)) return FM_OK;
    fm_status st = strv_push(&c->rep->unexpected, &c->rep->n_unexpected, key, err);
    if (st == FM_OK)
        st = fm_keymap_put(&c->unexp, c->rep->unexpected[c->rep->n_unexpected - 1], 0, err);
    return st;
}

/* A claimed key with no parameter: every target it would have produced is unexpected (§6.3). */
static fm_status unexpected_targets(load_ctx *c, const fm_chain_result *r, fm_error *err) {
    const fm_transform *t = c->conv[r->conv];
    char *t0 = NULL;
    fm_status st = FM_OK;
    if (fm_pattern_expand_refs(fm_transform_target(t, 0), &r->groups, &t0, NULL) != FM_OK &&
        !(t0 = fm_strdup(fm_transform_target(t, 0))))
        return fm_error_set(err, FM_ERR_NOMEM, "out of memory");
    for (size_t i = 0; st == FM_OK && i < fm_transform_target_count(t); i++) {
        char *ti = NULL, *k = NULL;
        if (fm_pattern_expand_refs(fm_transform_target(t, i), &r->groups, &ti, NULL) != FM_OK)
            ti = fm_strdup(fm_transform_target(t, i));
        k = ti ? fm_str_replace_all(r->key, t0, ti) : NULL;
        st = k ? add_unexpected(c, k, err) : fm_error_set(err, FM_ERR_NOMEM, "out of memory");
        fm_free(ti);
        fm_free(k);
    }
    fm_free(t0);
    return st;
}

/* Routes a key that names parameter p into its group (one group per first target key). */
static fm_status route_param(load_ctx *c, size_t i, fm_chain_result *r, size_t p, fm_error *err) {
    fm_grp *g;
    bool created;
    fm_status st = fm_grp_get(&c->groups, r->key, &g, &created, err);
    if (st != FM_OK) return st;
    if (!created && (g->conv < 0 || g->conv != r->conv)) /* already taken: the first key wins */
        return add_unexpected(c, c->src->name(c->src->ctx, i), err);
    if (created) {
        g->conv = r->conv;
        g->src = i;
        g->want = c->cast && fm_dtype_is_float(c->params[p].dtype) ? c->params[p].dtype
                                                                   : FM_DTYPE_INVALID;
        g->groups = r->groups;
        memset(&r->groups, 0, sizeof r->groups);
    }
    if (r->conv >= 0 && (st = fm_grp_add(g, r->branch, i, err)) != FM_OK) return st;
    for (size_t j = 0; j < c->nren; j++)
        if (c->ren_hit[j]) c->fired[c->ren_at[j]] = true;
    for (size_t j = 0; j < c->nconv; j++)
        if (c->conv_hit[j]) c->fired[c->conv_at[j]] = true;
    return FM_OK;
}

static fm_status route_key(load_ctx *c, size_t i, fm_error *err) {
    const char *orig = c->src->name(c->src->ctx, i);
    memset(c->ren_hit, 0, c->nren * sizeof *c->ren_hit);
    memset(c->conv_hit, 0, c->nconv * sizeof *c->conv_hit);
    fm_chain_result r;
    fm_status st =
        fm_rename_chain(c->ren, c->nren, c->conv, c->nconv, orig, c->ren_hit, c->conv_hit, &r, err);
    if (st != FM_OK) return st;
    size_t p;
    bool known = fm_keymap_get(&c->pmap, r.key, &p);
    if (!known &&
        fm_keymap_get(&c->pmap, orig, &p)) { /* renaming would lose a real parameter: don't */
        fm_chain_result_clear(&r);
        memset(c->ren_hit, 0, c->nren * sizeof *c->ren_hit);
        memset(c->conv_hit, 0, c->nconv * sizeof *c->conv_hit);
        if (!(r.key = fm_strdup(orig))) return fm_error_set(err, FM_ERR_NOMEM, "out of memory");
        known = true;
    }
    if (known)
        st = route_param(c, i, &r, p, err);
    else if (r.conv >= 0)
        st = unexpected_targets(c, &r, err);
    else
        st = add_unexpected(c, r.key, err);
    fm_chain_result_clear(&r);
    return st;
}

/* ---- setting parameters ------------------------------------------------------------------------
 */
static void note_first(load_ctx *c, fm_status st, const char *msg) {
    if (c->first_st != FM_OK) return;
    c->first_st = st;
    fm_error_set(&c->first, st, "%s", msg);
}

static fm_status set_param(load_ctx *c, fm_named_tensor *nt, fm_error *err) {
    size_t p;
    fm_status st = FM_OK;
    if (!fm_keymap_get(&c->pmap, nt->name, &p)) {
        st = add_unexpected(c, nt->name, err);
    } else if (!fm_shape_equal(&nt->tensor.shape, &c->params[p].shape)) {
        fm_mismatch *v = fm_realloc(c->rep->mismatched, (c->rep->n_mismatched + 1) * sizeof *v);
        char *k = v ? fm_strdup(nt->name) : NULL;
        if (v) c->rep->mismatched = v;
        if (!k) return fm_error_set(err, FM_ERR_NOMEM, "out of memory filling the load report");
        v[c->rep->n_mismatched++] = (fm_mismatch){k, nt->tensor.shape, c->params[p].shape};
        if (c->state[p] == 0) c->state[p] = 2;
        char a[256], b[256], msg[FM_ERROR_MSG_MAX];
        snprintf(msg, sizeof msg,
                 "shape mismatch for '%s': the model expects %s, the checkpoint has %s", nt->name,
                 fm_shape_format(&c->params[p].shape, a, sizeof a),
                 fm_shape_format(&nt->tensor.shape, b, sizeof b));
        note_first(c, FM_ERR_SHAPE, msg);
    } else {
        fm_tensor_free(&c->out[p]);
        c->out[p] = nt->tensor;
        memset(&nt->tensor, 0, sizeof nt->tensor);
        c->state[p] = 1;
    }
    return st;
}

static fm_status add_conversion_error(load_ctx *c, const char *key, const char *msg,
                                      fm_error *err) {
    fm_conversion_error *v =
        fm_realloc(c->rep->conversion_errors, (c->rep->n_conversion_errors + 1) * sizeof *v);
    if (!v) return fm_error_set(err, FM_ERR_NOMEM, "out of memory filling the load report");
    c->rep->conversion_errors = v;
    char *k = fm_strdup(key), *m = fm_strdup(msg);
    if (!k || !m) {
        fm_free(k);
        fm_free(m);
        return fm_error_set(err, FM_ERR_NOMEM, "out of memory filling the load report");
    }
    v[c->rep->n_conversion_errors++] = (fm_conversion_error){k, m};
    note_first(c, FM_ERR_CONVERSION, msg);
    return FM_OK;
}

static fm_status convert_groups(load_ctx *c, fm_error *err) {
    for (size_t gi = 0; gi < c->groups.n; gi++) {
        const fm_grp *g = &c->groups.v[gi];
        fm_named_tensor *outs = NULL;
        size_t n = 0;
        fm_error e;
        fm_error_clear(&e);
        fm_status st =
            fm_grp_convert(g, g->conv >= 0 ? c->conv[g->conv] : NULL, c->src, &outs, &n, &e);
        if (st == FM_ERR_CONVERSION) {
            st = add_conversion_error(c, g->key, e.msg, err);
            if (st != FM_OK) return st;
            continue;
        }
        if (st != FM_OK) return fm_error_set(err, st, "%s", e.msg);
        for (size_t k = 0; st == FM_OK && k < n; k++)
            st = set_param(c, &outs[k], err);
        fm_named_tensors_free(outs, n);
        if (st != FM_OK) return st;
    }
    return FM_OK;
}

static fm_status finish_report(load_ctx *c, fm_transform_list *fired_out, fm_error *err) {
    fm_status st = FM_OK;
    for (size_t p = 0; st == FM_OK && p < c->np; p++)
        if (c->state[p] == 0)
            st = strv_push(&c->rep->missing, &c->rep->n_missing, c->params[p].name, err);
    for (size_t i = 0; st == FM_OK && c->tl && i < c->tl->count; i++) {
        if (!c->fired[i]) continue;
        st = strv_push(&c->rep->fired, &c->rep->n_fired, fm_transform_describe(c->tl->items[i]),
                       err);
        if (st == FM_OK && fired_out) {
            fm_transform *t = NULL;
            st = fm_transform_clone(c->tl->items[i], &t, err);
            if (st == FM_OK) st = fm_transform_list_append(fired_out, t, err);
        }
    }
    return st;
}

static fm_status load_run(load_ctx *c, fm_transform_list *fired_out, fm_error *err) {
    size_t *order = NULL;
    fm_status st = ctx_init(c, err);
    if (st == FM_OK) st = fm_natural_order(c->src, &order, err);
    for (size_t k = 0; st == FM_OK && k < c->src->count; k++)
        st = route_key(c, order[k], err);
    fm_free(order);
    if (st == FM_OK) st = convert_groups(c, err);
    if (st == FM_OK) st = finish_report(c, fired_out, err);
    return st;
}

fm_status fm_weights_load(const fm_transform_list *transforms, const fm_tensor_source *src,
                          const fm_param_spec *params, size_t n_params,
                          const fm_weights_load_options *o, fm_tensor *out_tensors,
                          fm_transform_list *fired_out, fm_load_report *report, fm_error *err) {
    fm_load_report local;
    fm_load_report *rep = report ? report : &local;
    memset(rep, 0, sizeof *rep);
    if (fired_out) *fired_out = (fm_transform_list){NULL, 0};
    if (!src || !src->name || !src->get || (n_params && (!params || !out_tensors)))
        return fm_error_set(err, FM_ERR_INVALID_ARG,
                            "fm_weights_load: missing source, parameters or outputs");
    if (n_params) memset(out_tensors, 0, n_params * sizeof *out_tensors);
    load_ctx c;
    memset(&c, 0, sizeof c);
    c.tl = transforms;
    c.src = src;
    c.params = params;
    c.np = n_params;
    c.out = out_tensors;
    c.rep = rep;
    c.cast = o && o->cast != FM_DTYPE_INVALID;
    fm_status st = load_run(&c, fired_out, err);
    bool fatal = st != FM_OK; /* out of memory, I/O, bad arguments: no report either */
    if (st == FM_OK && c.first_st != FM_OK) st = fm_error_set(err, c.first_st, "%s", c.first.msg);
    ctx_free(&c);
    if (st != FM_OK) {
        for (size_t i = 0; i < n_params; i++)
            fm_tensor_free(&out_tensors[i]);
        fm_transform_list_free(fired_out);
        if (fatal) fm_load_report_free(rep);
    }
    if (rep == &local) fm_load_report_free(&local);
    return st;
}

/* ---- revert (save direction, §8.2) ---------------------------------------------------------- */
typedef struct revert_ctx {
    fm_transform_list rev;      /* reversed fired transforms, reversed order (owned) */
    fm_transform **ren, **conv; /* borrowed from rev */
    size_t nren, nconv;
    fm_tensor_source src;
    const fm_named_tensor *state;
    fm_grp_set groups;
    fm_named_tensor *out;
    size_t n_out, cap;
    fm_keymap names; /* output names (borrowed from out) */
} revert_ctx;

static const char *state_name(void *ctx, size_t i) {
    return ((const fm_named_tensor *)ctx)[i].name;
}
static void state_info(void *ctx, size_t i, fm_dtype *dt, fm_shape *s) {
    const fm_named_tensor *v = ctx;
    *dt = v[i].tensor.dtype;
    *s = v[i].tensor.shape;
}
static fm_status state_get(void *ctx, size_t i, fm_tensor *out, fm_error *err) {
    (void)err;
    fm_tensor_ref(out, &((const fm_named_tensor *)ctx)[i].tensor);
    return FM_OK;
}

static fm_status revert_init(revert_ctx *c, const fm_transform_list *fired, fm_error *err) {
    size_t nt = fired ? fired->count : 0;
    fm_status st = FM_OK;
    for (size_t i = nt; st == FM_OK && i-- > 0;) {
        fm_transform *r = NULL;
        st = fm_transform_reverse(fired->items[i], &r, err);
        if (st == FM_OK) st = fm_transform_list_append(&c->rev, r, err);
    }
    if (st != FM_OK) return st;
    c->ren = fm_calloc(nt + 1, sizeof *c->ren);
    c->conv = fm_calloc(nt + 1, sizeof *c->conv);
    if (!c->ren || !c->conv)
        return fm_error_set(err, FM_ERR_NOMEM, "out of memory reverting weights");
    for (size_t i = 0; i < nt; i++) {
        fm_transform *t = c->rev.items[i];
        if (fm_transform_kind_of(t) == FM_TRANSFORM_CONVERTER)
            c->conv[c->nconv++] = t;
        else
            c->ren[c->nren++] = t;
    }
    st = fm_grp_set_init(&c->groups, c->src.count, err);
    if (st == FM_OK) st = fm_keymap_init(&c->names, c->src.count, err);
    return st;
}

static fm_status clash(const revert_ctx *c, const char *key, size_t a, size_t b, fm_error *err) {
    return fm_error_set(err, FM_ERR_CONVERSION,
                        "runtime tensors '%s' and '%s' both revert to checkpoint key '%s'",
                        c->state[a].name, c->state[b].name, key);
}

/* Converter first (the first match claims), then every renaming (§8.2). */
static fm_status revert_route(revert_ctx *c, size_t i, fm_error *err) {
    fm_chain_result a, b;
    fm_status st =
        fm_rename_chain(NULL, 0, c->conv, c->nconv, c->state[i].name, NULL, NULL, &a, err);
    if (st != FM_OK) return st;
    st = fm_rename_chain(c->ren, c->nren, NULL, 0, a.key, NULL, NULL, &b, err);
    fm_grp *g = NULL;
    bool created = false;
    if (st == FM_OK) st = fm_grp_get(&c->groups, a.conv >= 0 ? a.key : b.key, &g, &created, err);
    if (st == FM_OK && !created && (g->conv < 0 || g->conv != a.conv))
        st = clash(c, g->key, g->conv < 0 ? g->src : g->colls[0].idx[0], i, err);
    if (st == FM_OK && created) {
        g->conv = a.conv;
        g->src = i;
        g->groups = a.groups;
        memset(&a.groups, 0, sizeof a.groups);
    }
    if (st == FM_OK && a.conv >= 0) st = fm_grp_add(g, a.branch, i, err);
    fm_chain_result_clear(&a);
    fm_chain_result_clear(&b);
    return st;
}

static fm_status revert_emit(revert_ctx *c, const fm_grp *g, fm_named_tensor *nt, fm_error *err) {
    if (g->conv >= 0) { /* converter outputs still go through the renamings */
        fm_chain_result r;
        fm_status st = fm_rename_chain(c->ren, c->nren, NULL, 0, nt->name, NULL, NULL, &r, err);
        if (st != FM_OK) return st;
        fm_free(nt->name);
        nt->name = r.key;
        r.key = NULL;
        fm_chain_result_clear(&r);
    }
    size_t prev;
    if (fm_keymap_get(&c->names, nt->name, &prev))
        return fm_error_set(err, FM_ERR_CONVERSION,
                            "two runtime tensors revert to checkpoint key '%s' (one from '%s')",
                            nt->name, g->key);
    if (c->n_out == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 16;
        fm_named_tensor *v = fm_realloc(c->out, cap * sizeof *v);
        if (!v) return fm_error_set(err, FM_ERR_NOMEM, "out of memory reverting weights");
        c->out = v;
        c->cap = cap;
    }
    fm_status st = fm_keymap_put(&c->names, nt->name, c->n_out, err);
    if (st != FM_OK) return st;
    c->out[c->n_out++] = *nt;
    memset(nt, 0, sizeof *nt);
    return FM_OK;
}

static fm_status revert_run(revert_ctx *c, const fm_transform_list *fired, fm_error *err) {
    size_t *order = NULL;
    fm_status st = revert_init(c, fired, err);
    if (st == FM_OK) st = fm_natural_order(&c->src, &order, err);
    for (size_t k = 0; st == FM_OK && k < c->src.count; k++)
        st = revert_route(c, order[k], err);
    fm_free(order);
    for (size_t gi = 0; st == FM_OK && gi < c->groups.n; gi++) {
        const fm_grp *g = &c->groups.v[gi];
        fm_named_tensor *outs = NULL;
        size_t n = 0;
        st = fm_grp_convert(g, g->conv >= 0 ? c->conv[g->conv] : NULL, &c->src, &outs, &n, err);
        for (size_t k = 0; st == FM_OK && k < n; k++)
            st = revert_emit(c, g, &outs[k], err);
        fm_named_tensors_free(outs, n);
    }
    return st;
}

fm_status fm_weights_revert(const fm_transform_list *fired, const fm_named_tensor *state, size_t n,
                            fm_named_tensor **out, size_t *n_out, fm_error *err) {
    *out = NULL;
    *n_out = 0;
    if (n && !state)
        return fm_error_set(err, FM_ERR_INVALID_ARG, "fm_weights_revert: state is NULL");
    for (size_t i = 0; i < n; i++)
        if (!state[i].name)
            return fm_error_set(err, FM_ERR_INVALID_ARG,
                                "fm_weights_revert: tensor %zu has no name", i);
    revert_ctx c;
    memset(&c, 0, sizeof c);
    c.state = state;
    c.src = (fm_tensor_source){n, state_name, state_info, state_get, (void *)state};
    fm_status st = revert_run(&c, fired, err);
    fm_grp_set_free(&c.groups);
    fm_keymap_free(&c.names);
    fm_free(c.ren);
    fm_free(c.conv);
    fm_transform_list_free(&c.rev);
    if (st != FM_OK) {
        fm_named_tensors_free(c.out, c.n_out);
        return st;
    }
    *out = c.out;
    *n_out = c.n_out;
    return FM_OK;
}
