/* Tree-walking evaluator: statements write masked text into a builder, expressions produce
 * values with Python / Jinja2 semantics (scoping of for bodies and macros, Undefined, operator
 * rules). Every resource is bounded by jj_limits: output and string size, loop iterations and
 * macro calls, macro depth, memory of values, and work (bytes processed by string operations). */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "text/jinja_eval.h"

/* ---- context, errors ----------------------------------------------------------------------------
 */
fm_status jj_fail(jj_ctx *c, const jj_node *at, fm_status st, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (at) return fm_error_set(c->err, st, "%s: line %u: %s", c->origin, at->line, msg);
    return fm_error_set(c->err, st, "%s: %s", c->origin, msg);
}

jj_arena *jj_ctx_arena(jj_ctx *c) {
    return c->a;
}
size_t jj_ctx_max_string(jj_ctx *c) {
    return c->lim.max_output;
}

fm_status jj_oom(jj_ctx *c, const jj_node *at) {
    if (c->a->over) {
        c->a->over = false;
        return jj_fail(c, at, FM_ERR_LIMIT, "rendering needs more than %zu bytes of memory (limit)",
                       c->lim.max_memory);
    }
    return jj_fail(c, at, FM_ERR_NOMEM, "out of memory");
}

fm_status jj_buf_fail(jj_ctx *c, const jj_node *at, bool over) {
    if (over)
        return jj_fail(c, at, FM_ERR_LIMIT, "text longer than %zu bytes (output limit)",
                       c->lim.max_output);
    return jj_fail(c, at, FM_ERR_NOMEM, "out of memory");
}

fm_status jj_charge(jj_ctx *c, const jj_node *at, uint64_t units) {
    c->work += units;
    if (c->work > c->lim.max_work)
        return jj_fail(c, at, FM_ERR_LIMIT, "rendering takes more than %llu units of work (limit)",
                       (unsigned long long)c->lim.max_work);
    return FM_OK;
}

fm_status jj_undefined_error(jj_ctx *c, const jj_node *at, const jj_value *v) {
    if (v->u.s.n)
        return jj_fail(c, at, FM_ERR_INPUT, "'%.*s' is undefined",
                       (int)(v->u.s.n > 100 ? 100 : v->u.s.n), v->u.s.p);
    return jj_fail(c, at, FM_ERR_INPUT, "a value is undefined");
}

/* ---- scopes -------------------------------------------------------------------------------------
 */
static jj_value *scope_find(const jj_scope *s, const char *name, size_t n) {
    for (; s; s = s->parent)
        for (size_t i = s->n; i-- > 0;)
            if (s->v[i].nlen == n && !memcmp(s->v[i].name, name, n)) return &s->v[i].val;
    return NULL;
}

fm_status jj_scope_set(jj_ctx *c, const jj_node *at, jj_scope *s, const char *name, size_t n,
                       jj_value v) {
    for (size_t i = 0; i < s->n; i++)
        if (s->v[i].nlen == n && !memcmp(s->v[i].name, name, n)) return s->v[i].val = v, FM_OK;
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 8;
        jj_var *nv = jj_alloc(c->a, cap * sizeof *nv);
        if (!nv) return jj_oom(c, at);
        if (s->n) memcpy(nv, s->v, s->n * sizeof *nv);
        s->v = nv, s->cap = cap;
    }
    s->v[s->n++] = (jj_var){name, n, v};
    return FM_OK;
}

static jj_scope *scope_new(jj_ctx *c, jj_scope *parent) {
    jj_scope *s = jj_alloc(c->a, sizeof *s);
    if (s) s->parent = parent;
    return s;
}

/* Global functions: range, namespace, dict, raise_exception. */
static const char *const g_globals[] = {"range", "namespace", "dict", "raise_exception"};

static fm_status lookup(jj_ctx *c, const jj_scope *s, const jj_node *n, jj_value *out) {
    jj_value *v = scope_find(s, n->name, n->nlen);
    if (v) return *out = *v, FM_OK;
    for (size_t g = 0; g < sizeof g_globals / sizeof *g_globals; g++) {
        if (strlen(g_globals[g]) != n->nlen || memcmp(g_globals[g], n->name, n->nlen)) continue;
        jj_func *f = jj_alloc(c->a, sizeof *f);
        if (!f) return jj_oom(c, n);
        f->kind = JF_GLOBAL, f->id = (int)g;
        *out = (jj_value){.t = JT_FUNC, .u.fn = f};
        return FM_OK;
    }
    *out = jj_undef(n->name, n->nlen);
    return FM_OK;
}

/* ---- small value helpers ------------------------------------------------------------------------
 */
fm_status jj_new_list(jj_ctx *c, const jj_node *at, size_t n, jj_value *out) {
    jj_list *l = jj_alloc(c->a, sizeof *l);
    jj_value *v = l ? jj_alloc(c->a, (n ? n : 1) * sizeof *v) : NULL;
    if (!v) return jj_oom(c, at);
    l->n = n, l->v = v;
    *out = (jj_value){.t = JT_LIST, .u.l = l};
    return FM_OK;
}

fm_status jj_new_dict(jj_ctx *c, const jj_node *at, jj_type t, jj_value *out) {
    jj_dict *d = jj_alloc(c->a, sizeof *d);
    if (!d) return jj_oom(c, at);
    *out = (jj_value){.t = (uint8_t)t, .u.d = d};
    return FM_OK;
}

fm_status jj_stringify(jj_ctx *c, const jj_node *at, const jj_value *v, jj_value *out) {
    if (v->t == JT_STR) return *out = *v, FM_OK;
    jj_buf b = {.max = c->lim.max_output};
    const char *msg = NULL;
    bool over = false;
    int r = jj_to_string(&b, v, false, &msg, &over);
    fm_status st = r == -1 ? jj_fail(c, at, FM_ERR_INPUT, "%s", msg)
                   : r     ? jj_buf_fail(c, at, over)
                           : FM_OK;
    if (st == FM_OK) st = jj_charge(c, at, b.n);
    if (st == FM_OK && jj_buf_to_value(c->a, &b, out)) st = jj_oom(c, at);
    jj_buf_free(&b);
    return st;
}

/* Substring [from, to) of a string value (byte offsets), mask kept. */
jj_value jj_substr(const jj_value *s, size_t from, size_t to) {
    return jj_str(s->u.s.p + from, to - from, s->u.s.m ? s->u.s.m + from : NULL);
}

/* Concatenation of two strings into the arena. */
fm_status jj_concat(jj_ctx *c, const jj_node *at, const jj_value *x, const jj_value *y,
                    jj_value *out) {
    size_t n = x->u.s.n + y->u.s.n;
    if (n > c->lim.max_output) return jj_buf_fail(c, at, true);
    fm_status st = jj_charge(c, at, n);
    if (st != FM_OK) return st;
    char *p = jj_alloc(c->a, n + 1);
    uint8_t *m = x->u.s.m || y->u.s.m ? jj_alloc(c->a, n ? n : 1) : NULL;
    if (!p || ((x->u.s.m || y->u.s.m) && !m)) return jj_oom(c, at);
    if (x->u.s.n) memcpy(p, x->u.s.p, x->u.s.n);
    if (y->u.s.n) memcpy(p + x->u.s.n, y->u.s.p, y->u.s.n);
    if (m) memset(m, 0, n ? n : 1);
    if (m && x->u.s.m) memcpy(m, x->u.s.m, x->u.s.n);
    if (m && y->u.s.m) memcpy(m + x->u.s.n, y->u.s.m, y->u.s.n);
    *out = jj_str(p, n, m);
    return FM_OK;
}

/* ---- iteration ----------------------------------------------------------------------------------
 */
fm_status jj_iterate(jj_ctx *c, const jj_node *at, const jj_value *v, jj_value **items, size_t *n) {
    static jj_value none;
    *items = &none, *n = 0;
    if (v->t == JT_UNDEF) return FM_OK;
    if (v->t == JT_LIST) return *items = v->u.l->v, *n = v->u.l->n, FM_OK;
    if (v->t == JT_DICT) return *items = v->u.d->k, *n = v->u.d->n, FM_OK;
    if (v->t != JT_STR)
        return jj_fail(c, at, FM_ERR_INPUT, "'%s' object is not iterable", jj_type_name(v));
    size_t cnt = jj_utf8_count(v->u.s.p, v->u.s.n);
    jj_value *out = jj_alloc(c->a, (cnt ? cnt : 1) * sizeof *out);
    if (!out) return jj_oom(c, at);
    fm_status st = jj_charge(c, at, v->u.s.n);
    for (size_t i = 0, k = 0; st == FM_OK && i < v->u.s.n; k++) {
        size_t from = i;
        jj_utf8_next(v->u.s.p, v->u.s.n, &i);
        out[k] = jj_substr(v, from, i);
    }
    *items = out, *n = cnt;
    return st;
}

/* Binds a for/set target (name or tuple of names) in scope s. */
static fm_status assign(jj_ctx *c, jj_scope *s, const jj_node *target, const jj_value *v) {
    if (target->kind == JN_NAME) return jj_scope_set(c, target, s, target->name, target->nlen, *v);
    jj_value *items;
    size_t n;
    fm_status st = jj_iterate(c, target, v, &items, &n);
    if (st != FM_OK) return st;
    if (n != target->args.n)
        return jj_fail(c, target, FM_ERR_INPUT, "%s values to unpack (expected %zu, got %zu)",
                       n > target->args.n ? "too many" : "not enough", target->args.n, n);
    for (size_t i = 0; st == FM_OK && i < n; i++)
        st = assign(c, s, target->args.v[i], &items[i]);
    return st;
}

/* ---- statements ---------------------------------------------------------------------------------
 */
static fm_status exec_body(jj_ctx *c, jj_scope *s, const jj_nodes *body);

static fm_status write_value(jj_ctx *c, const jj_node *at, const jj_value *v) {
    const char *msg = NULL;
    bool over = false;
    size_t before = c->out->n;
    int r = jj_to_string(c->out, v, false, &msg, &over);
    if (r == -1) return jj_fail(c, at, FM_ERR_INPUT, "%s", msg);
    if (r) return jj_buf_fail(c, at, over);
    return jj_charge(c, at, c->out->n - before);
}

fm_status jj_count_iteration(jj_ctx *c, const jj_node *at) {
    if (++c->iters > c->lim.max_iterations)
        return jj_fail(c, at, FM_ERR_LIMIT,
                       "more than %llu loop iterations and macro calls (limit)",
                       (unsigned long long)c->lim.max_iterations);
    return FM_OK;
}

/* The items a for loop visits: its iterable, filtered by `if` (evaluated with the target bound). */
static fm_status loop_items(jj_ctx *c, jj_scope *s, const jj_node *f, jj_value **items, size_t *n) {
    jj_value it;
    fm_status st = jj_eval(c, s, f->b, &it);
    if (st == FM_OK && it.t == JT_NONE)
        return jj_fail(c, f->b, FM_ERR_INPUT, "'NoneType' object is not iterable");
    if (st == FM_OK) st = jj_iterate(c, f->b, &it, items, n);
    if (st != FM_OK || !f->c) return st;
    jj_value *kept = jj_alloc(c->a, (*n ? *n : 1) * sizeof *kept);
    if (!kept) return jj_oom(c, f);
    size_t k = 0;
    for (size_t i = 0; st == FM_OK && i < *n; i++) {
        jj_scope *fs = scope_new(c, s);
        jj_value cond;
        if (!fs) return jj_oom(c, f);
        st = jj_count_iteration(c, f);
        if (st == FM_OK) st = assign(c, fs, f->a, &(*items)[i]);
        if (st == FM_OK) st = jj_eval(c, fs, f->c, &cond);
        if (st == FM_OK && jj_truthy(&cond)) kept[k++] = (*items)[i];
    }
    *items = kept, *n = k;
    return st;
}

static fm_status exec_for(jj_ctx *c, jj_scope *s, const jj_node *f) {
    jj_value *items;
    size_t n;
    fm_status st = loop_items(c, s, f, &items, &n);
    jj_loop *lp = st == FM_OK ? jj_alloc(c->a, sizeof *lp) : NULL;
    if (st == FM_OK && !lp) st = jj_oom(c, f);
    if (st != FM_OK) return st;
    lp->items = items, lp->length = n;
    for (size_t i = 0; i < n; i++) {
        jj_scope *is = scope_new(c, s);
        if (!is) return jj_oom(c, f);
        lp->index0 = i;
        st = jj_count_iteration(c, f);
        if (st == FM_OK) st = assign(c, is, f->a, &items[i]);
        if (st == FM_OK)
            st = jj_scope_set(c, f, is, "loop", 4, (jj_value){.t = JT_LOOP, .u.lp = lp});
        if (st == FM_OK) st = exec_body(c, is, &f->body);
        if (st != FM_OK) return st;
        int flow = c->flow;
        c->flow = JJ_FLOW_NONE;
        if (flow == JJ_FLOW_BREAK) break;
    }
    return n == 0 ? exec_body(c, s, &f->orelse) : FM_OK;
}

/* Renders a body into a fresh builder and returns it as a string value (macros, block sets). */
fm_status jj_capture(jj_ctx *c, jj_scope *s, const jj_node *at, const jj_nodes *body,
                     jj_value *out) {
    jj_buf b = {.max = c->lim.max_output}, *saved = c->out;
    c->out = &b;
    fm_status st = exec_body(c, s, body);
    c->out = saved;
    if (st == FM_OK && jj_buf_to_value(c->a, &b, out)) st = jj_oom(c, at);
    jj_buf_free(&b);
    return st;
}

static fm_status exec_set(jj_ctx *c, jj_scope *s, const jj_node *n) {
    jj_value v;
    fm_status st =
        n->kind == JN_SETBLOCK ? jj_capture(c, s, n, &n->body, &v) : jj_eval(c, s, n->b, &v);
    if (st != FM_OK) return st;
    if (n->a->kind != JN_GETATTR) return assign(c, s, n->a, &v);
    jj_value ns;
    if ((st = lookup(c, s, n->a->a, &ns)) != FM_OK) return st;
    if (ns.t != JT_NS)
        return jj_fail(c, n, FM_ERR_INPUT, "can only set attributes of a namespace, '%.*s' is %s",
                       (int)n->a->a->nlen, n->a->a->name, jj_type_name(&ns));
    if (jj_dict_set(c->a, ns.u.d, jj_str(n->a->name, n->a->nlen, NULL), v)) return jj_oom(c, n);
    return FM_OK;
}

static fm_status exec_macro(jj_ctx *c, jj_scope *s, const jj_node *n) {
    jj_func *f = jj_alloc(c->a, sizeof *f);
    if (!f) return jj_oom(c, n);
    f->kind = JF_MACRO, f->macro = n, f->closure = s;
    return jj_scope_set(c, n, s, n->name, n->nlen, (jj_value){.t = JT_FUNC, .u.fn = f});
}

static fm_status exec(jj_ctx *c, jj_scope *s, const jj_node *n) {
    jj_value v;
    fm_status st;
    switch (n->kind) {
    case JN_DATA: {
        bool over = false;
        return jj_buf_put(c->out, n->cval.u.s.p, n->cval.u.s.n, NULL, &over)
                   ? jj_buf_fail(c, n, over)
                   : FM_OK;
    }
    case JN_OUTPUT:
        st = jj_eval(c, s, n->a, &v);
        return st == FM_OK ? write_value(c, n, &v) : st;
    case JN_IF:
        if ((st = jj_eval(c, s, n->a, &v)) != FM_OK) return st;
        return exec_body(c, s, jj_truthy(&v) ? &n->body : &n->orelse);
    case JN_FOR:
        return exec_for(c, s, n);
    case JN_SET:
    case JN_SETBLOCK:
        return exec_set(c, s, n);
    case JN_MACRO:
        return exec_macro(c, s, n);
    case JN_BREAK:
    case JN_CONTINUE:
        c->flow = n->kind == JN_BREAK ? JJ_FLOW_BREAK : JJ_FLOW_CONTINUE;
        return FM_OK;
    case JN_SCOPE:
        return exec_body(c, s, &n->body);
    default:
        return jj_fail(c, n, FM_ERR_INTERNAL, "unexpected node %d", n->kind);
    }
}

static fm_status exec_body(jj_ctx *c, jj_scope *s, const jj_nodes *body) {
    for (size_t i = 0; i < body->n; i++) {
        fm_status st = exec(c, s, body->v[i]);
        if (st != FM_OK) return st;
        if (c->flow) return FM_OK;
    }
    return FM_OK;
}

/* ---- calls --------------------------------------------------------------------------------------
 */
static fm_status call_macro(jj_ctx *c, const jj_node *at, const jj_func *f, const jj_args *a,
                            jj_value *out) {
    const jj_node *m = f->macro;
    if (a->npos > m->args.n)
        return jj_fail(c, at, FM_ERR_INPUT, "macro '%.*s' takes not more than %zu argument(s)",
                       (int)m->nlen, m->name, m->args.n);
    if (c->depth >= c->lim.max_depth)
        return jj_fail(c, at, FM_ERR_LIMIT, "macro calls nested deeper than %u (limit)",
                       c->lim.max_depth);
    jj_scope *s = scope_new(c, f->closure);
    fm_status st = s ? jj_count_iteration(c, at) : jj_oom(c, at);
    for (size_t k = 0; st == FM_OK && k < a->nkw; k++) {
        size_t i = 0;
        while (i < m->args.n && (m->args.v[i]->nlen != a->kw_lens[k] ||
                                 memcmp(m->args.v[i]->name, a->kw_names[k], a->kw_lens[k])))
            i++;
        if (i == m->args.n || i < a->npos)
            return jj_fail(c, at, FM_ERR_INPUT, "macro '%.*s': unexpected keyword argument '%.*s'",
                           (int)m->nlen, m->name, (int)a->kw_lens[k], a->kw_names[k]);
    }
    for (size_t i = 0; st == FM_OK && i < m->args.n; i++) {
        const jj_node *p = m->args.v[i];
        jj_value v = jj_undef(p->name, p->nlen);
        size_t k = 0;
        while (k < a->nkw && (a->kw_lens[k] != p->nlen || memcmp(a->kw_names[k], p->name, p->nlen)))
            k++;
        if (i < a->npos)
            v = a->pos[i];
        else if (k < a->nkw)
            v = a->kw[k];
        else if (p->a)
            st = jj_eval(c, s, p->a, &v);
        if (st == FM_OK) st = jj_scope_set(c, p, s, p->name, p->nlen, v);
    }
    c->depth++;
    if (st == FM_OK) st = jj_capture(c, s, at, &m->body, out);
    c->depth--;
    return st;
}

static fm_status eval_args(jj_ctx *c, jj_scope *s, const jj_nodes *list, jj_args *a) {
    memset(a, 0, sizeof *a);
    size_t n = list->n ? list->n : 1;
    jj_value *pos = jj_alloc(c->a, n * sizeof *pos), *kw = jj_alloc(c->a, n * sizeof *kw);
    const char **names = jj_alloc(c->a, n * sizeof *names);
    size_t *lens = jj_alloc(c->a, n * sizeof *lens);
    if (!pos || !kw || !names || !lens) return jj_oom(c, list->n ? list->v[0] : NULL);
    a->pos = pos, a->kw = kw, a->kw_names = names, a->kw_lens = lens;
    for (size_t i = 0; i < list->n; i++) {
        const jj_node *x = list->v[i];
        bool is_kw = x->kind == JN_KWARG;
        fm_status st = jj_eval(c, s, is_kw ? x->a : x, is_kw ? &kw[a->nkw] : &pos[a->npos]);
        if (st != FM_OK) return st;
        if (is_kw)
            names[a->nkw] = x->name, lens[a->nkw++] = x->nlen;
        else
            a->npos++;
    }
    return FM_OK;
}

static fm_status eval_call(jj_ctx *c, jj_scope *s, const jj_node *n, jj_value *out) {
    jj_value f;
    jj_args a;
    fm_status st = jj_eval(c, s, n->a, &f);
    if (st == FM_OK) st = eval_args(c, s, &n->args, &a);
    if (st != FM_OK) return st;
    if (f.t == JT_UNDEF) return jj_undefined_error(c, n, &f);
    if (f.t != JT_FUNC)
        return jj_fail(c, n, FM_ERR_INPUT, "'%s' object is not callable", jj_type_name(&f));
    switch (f.u.fn->kind) {
    case JF_MACRO:
        return call_macro(c, n, f.u.fn, &a, out);
    case JF_GLOBAL:
        return jj_call_global(c, n, f.u.fn->id, &a, out);
    default:
        return jj_call_method(c, n, &f.u.fn->self, f.u.fn->id, &a, out);
    }
}

static fm_status eval_filter_or_test(jj_ctx *c, jj_scope *s, const jj_node *n, jj_value *out) {
    jj_value v;
    jj_args a;
    fm_status st = jj_eval(c, s, n->a, &v);
    if (st == FM_OK) st = eval_args(c, s, &n->args, &a);
    if (st != FM_OK) return st;
    if (n->kind == JN_FILTER) return jj_call_filter(c, n, n->name, n->nlen, &v, &a, out);
    bool r = false;
    st = jj_call_test(c, n, n->name, n->nlen, &v, &a, &r);
    *out = jj_bool(n->op ? !r : r);
    return st;
}

/* ---- containers ---------------------------------------------------------------------------------
 */
static fm_status eval_list(jj_ctx *c, jj_scope *s, const jj_node *n, jj_value *out) {
    fm_status st = jj_new_list(c, n, n->args.n, out);
    for (size_t i = 0; st == FM_OK && i < n->args.n; i++)
        st = jj_eval(c, s, n->args.v[i], &out->u.l->v[i]);
    out->tuple = n->kind == JN_TUPLE;
    return st;
}

static fm_status eval_dict(jj_ctx *c, jj_scope *s, const jj_node *n, jj_value *out) {
    fm_status st = jj_new_dict(c, n, JT_DICT, out);
    for (size_t i = 0; st == FM_OK && i < n->args.n; i++) {
        jj_value k, v;
        st = jj_eval(c, s, n->args.v[i]->a, &k);
        if (st == FM_OK) st = jj_eval(c, s, n->args.v[i]->b, &v);
        if (st == FM_OK &&
            (k.t == JT_LIST || k.t == JT_DICT || k.t == JT_NS || k.t == JT_UNDEF || k.t == JT_LOOP))
            return jj_fail(c, n, FM_ERR_INPUT, "unhashable dict key of type '%s'",
                           jj_type_name(&k));
        if (st == FM_OK && jj_dict_set(c->a, out->u.d, k, v)) st = jj_oom(c, n);
    }
    return st;
}

/* ---- logic --------------------------------------------------------------------------------------
 */
static fm_status eval_compare(jj_ctx *c, jj_scope *s, const jj_node *n, jj_value *out) {
    jj_value left, right;
    fm_status st = jj_eval(c, s, n->a, &left);
    bool r = true;
    for (size_t i = 0; st == FM_OK && r && i < n->args.n; i++) {
        st = jj_eval(c, s, n->args.v[i]->a, &right);
        if (st == FM_OK) st = jj_compare(c, n->args.v[i], n->args.v[i]->op, &left, &right, &r);
        left = right;
    }
    *out = jj_bool(r);
    return st;
}

fm_status jj_eval(jj_ctx *c, jj_scope *s, const jj_node *n, jj_value *out) {
    fm_status st;
    jj_value v;
    switch (n->kind) {
    case JN_CONST:
        return *out = n->cval, FM_OK;
    case JN_NAME:
        return lookup(c, s, n, out);
    case JN_LIST:
    case JN_TUPLE:
        return eval_list(c, s, n, out);
    case JN_DICT:
        return eval_dict(c, s, n, out);
    case JN_GETATTR:
        st = jj_eval(c, s, n->a, &v);
        return st == FM_OK ? jj_getattr(c, n, &v, n->name, n->nlen, out) : st;
    case JN_GETITEM:
        return jj_eval_getitem(c, s, n, out);
    case JN_SLICE:
        return jj_eval_slice(c, s, n, out);
    case JN_CALL:
        return eval_call(c, s, n, out);
    case JN_FILTER:
    case JN_TEST:
        return eval_filter_or_test(c, s, n, out);
    case JN_NOT:
        st = jj_eval(c, s, n->a, &v);
        *out = jj_bool(!jj_truthy(&v));
        return st;
    case JN_NEG:
    case JN_POS:
        return jj_eval_unary(c, s, n, out);
    case JN_BINARY:
        return jj_eval_binary(c, s, n, out);
    case JN_AND:
    case JN_OR:
        if ((st = jj_eval(c, s, n->a, out)) != FM_OK) return st;
        if (jj_truthy(out) == (n->kind == JN_OR)) return FM_OK;
        return jj_eval(c, s, n->b, out);
    case JN_COMPARE:
        return eval_compare(c, s, n, out);
    case JN_COND:
        if ((st = jj_eval(c, s, n->b, &v)) != FM_OK) return st;
        if (jj_truthy(&v)) return jj_eval(c, s, n->a, out);
        if (n->c) return jj_eval(c, s, n->c, out);
        return *out = jj_undef(NULL, 0), FM_OK;
    default:
        return jj_fail(c, n, FM_ERR_INTERNAL, "unexpected node %d", n->kind);
    }
}

/* ---- entry point --------------------------------------------------------------------------------
 */
fm_status jj_render(const jj_nodes *body, const char *origin, const jj_var *vars, size_t n_vars,
                    jj_arena *vals_arena, const jj_limits *lim, char **text, uint8_t **mask,
                    size_t *len, fm_error *err) {
    jj_buf out = {.max = lim->max_output};
    jj_ctx c = {.a = vals_arena, .origin = origin, .err = err, .lim = *lim, .out = &out};
    jj_scope *globals = scope_new(&c, NULL), *root = globals ? scope_new(&c, globals) : NULL;
    fm_status st = root ? FM_OK : jj_oom(&c, NULL);
    for (size_t i = 0; st == FM_OK && i < n_vars; i++)
        st = jj_scope_set(&c, NULL, globals, vars[i].name, vars[i].nlen, vars[i].val);
    if (st == FM_OK) st = exec_body(&c, root, body);
    if (st == FM_OK && jj_buf_put(&out, "", 0, NULL, NULL)) st = jj_oom(&c, NULL); /* text exists */
    if (st == FM_OK && !out.m && !(out.m = fm_calloc(out.n ? out.n : 1, 1))) st = jj_oom(&c, NULL);
    if (st == FM_OK) {
        *text = out.p, *mask = out.m, *len = out.n;
        return FM_OK;
    }
    jj_buf_free(&out);
    return st;
}
