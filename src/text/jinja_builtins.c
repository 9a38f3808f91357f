/* Builtins of the template language: the filters, tests, string / dict / loop methods and global
 * functions chat templates use, with Python's semantics (str methods work on code points; case
 * mapping is ASCII-only and refuses other text). Every result built from a user string keeps
 * that string's provenance mask. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "text/jinja_eval.h"

/* ---- arguments ----------------------------------------------------------------------------------
 */
/* Positional argument i, or the keyword `name`; NULL when absent. */
static const jj_value *arg(const jj_args *a, size_t i, const char *name) {
    if (i < a->npos) return &a->pos[i];
    for (size_t k = 0; name && k < a->nkw; k++)
        if (a->kw_lens[k] == strlen(name) && !memcmp(a->kw_names[k], name, a->kw_lens[k]))
            return &a->kw[k];
    return NULL;
}

/* At most `max_pos` positional arguments and only the keywords in `names` (NULL-terminated). */
static fm_status check_args(jj_ctx *c, const jj_node *at, const char *what, const jj_args *a,
                            size_t max_pos, const char *const *names) {
    if (a->npos > max_pos)
        return jj_fail(c, at, FM_ERR_INPUT,
                       "%s takes at most %zu positional argument(s), %zu given", what, max_pos,
                       a->npos);
    for (size_t k = 0; k < a->nkw; k++) {
        bool ok = false;
        for (const char *const *n = names; n && *n && !ok; n++)
            ok = strlen(*n) == a->kw_lens[k] && !memcmp(*n, a->kw_names[k], a->kw_lens[k]);
        if (!ok)
            return jj_fail(c, at, FM_ERR_INPUT, "%s: unexpected keyword argument '%.*s'", what,
                           (int)a->kw_lens[k], a->kw_names[k]);
    }
    return FM_OK;
}

static fm_status want_str(jj_ctx *c, const jj_node *at, const char *what, const jj_value *v) {
    if (v && v->t == JT_STR) return FM_OK;
    if (v && v->t == JT_UNDEF) return jj_undefined_error(c, at, v);
    return jj_fail(c, at, FM_ERR_INPUT, "%s: expected a string, got '%s'", what,
                   v ? jj_type_name(v) : "nothing");
}

static fm_status want_int(jj_ctx *c, const jj_node *at, const char *what, const jj_value *v,
                          int64_t *out) {
    if (v->t == JT_INT || v->t == JT_BOOL) return *out = v->t == JT_INT ? v->u.i : v->u.b, FM_OK;
    return jj_fail(c, at, FM_ERR_INPUT, "%s: expected an integer, got '%s'", what, jj_type_name(v));
}

static fm_status buf_value(jj_ctx *c, const jj_node *at, jj_buf *b, jj_value *out) {
    fm_status st = jj_buf_to_value(c->a, b, out) ? jj_oom(c, at) : FM_OK;
    jj_buf_free(b);
    return st;
}

/* ---- case mapping (ASCII) and stripping
 * ----------------------------------------------------------- */
static bool is_ascii(const jj_value *s) {
    for (size_t i = 0; i < s->u.s.n; i++)
        if ((unsigned char)s->u.s.p[i] >= 0x80) return false;
    return true;
}

/* mode: 'u' upper, 'l' lower, 'c' capitalize. */
static fm_status change_case(jj_ctx *c, const jj_node *at, const jj_value *s, char mode,
                             jj_value *out) {
    if (!is_ascii(s))
        return jj_fail(c, at, FM_ERR_UNSUPPORTED,
                       "case conversion of non-ASCII text is not supported");
    char *p = jj_alloc(c->a, s->u.s.n + 1);
    if (!p) return jj_oom(c, at);
    for (size_t i = 0; i < s->u.s.n; i++) {
        char ch = s->u.s.p[i];
        bool up = mode == 'u' || (mode == 'c' && i == 0);
        p[i] = up && ch >= 'a' && ch <= 'z'    ? (char)(ch - 32)
               : !up && ch >= 'A' && ch <= 'Z' ? (char)(ch + 32)
                                               : ch;
    }
    *out = jj_str(p, s->u.s.n, s->u.s.m);
    return jj_charge(c, at, s->u.s.n);
}

static bool in_chars(uint32_t cp, const jj_value *chars) {
    if (!chars) return jj_py_isspace(cp);
    for (size_t i = 0; i < chars->u.s.n;)
        if (jj_utf8_next(chars->u.s.p, chars->u.s.n, &i) == cp) return true;
    return false;
}

/* str.strip / lstrip / rstrip (which: 'b', 'l', 'r'); chars NULL = whitespace. */
static jj_value strip(const jj_value *s, const jj_value *chars, char which) {
    size_t from = 0, to = s->u.s.n;
    while (which != 'r' && from < to) {
        size_t k = from;
        if (!in_chars(jj_utf8_next(s->u.s.p, s->u.s.n, &k), chars)) break;
        from = k;
    }
    if (which != 'l') {
        size_t keep = from;
        for (size_t i = from; i < to;) {
            uint32_t cp = jj_utf8_next(s->u.s.p, s->u.s.n, &i);
            if (!in_chars(cp, chars)) keep = i;
        }
        to = keep;
    }
    return jj_substr(s, from, to);
}

/* ---- split / replace / find -------------------------------------------------------------------
 */
static fm_status list_push(jj_ctx *c, const jj_node *at, jj_value *list, size_t *cap, jj_value v) {
    jj_list *l = list->u.l;
    if (l->n == *cap) {
        size_t nc = *cap ? *cap * 2 : 8;
        jj_value *nv = jj_alloc(c->a, nc * sizeof *nv);
        if (!nv) return jj_oom(c, at);
        if (l->n) memcpy(nv, l->v, l->n * sizeof *nv);
        l->v = nv, *cap = nc;
    }
    l->v[l->n++] = v;
    return FM_OK;
}

static const char *find_sub(const char *h, size_t hn, const char *n, size_t nn, bool last) {
    if (!last) return memmem(h, hn, n, nn);
    for (size_t i = hn >= nn ? hn - nn + 1 : 0; i-- > 0;)
        if (!memcmp(h + i, n, nn)) return h + i;
    return NULL;
}

/* Whitespace split (sep None): runs of whitespace separate, none empty. */
static fm_status split_ws(jj_ctx *c, const jj_node *at, const jj_value *s, int64_t max,
                          jj_value *out, size_t *cap) {
    size_t i = 0, n = s->u.s.n;
    fm_status st = FM_OK;
    int64_t done = 0;
    while (st == FM_OK) {
        while (i < n) { /* skip whitespace */
            size_t k = i;
            if (!jj_py_isspace(jj_utf8_next(s->u.s.p, n, &k))) break;
            i = k;
        }
        if (i >= n) break;
        size_t start = i, end = n;
        if (max < 0 || done < max) {
            while (i < n) {
                size_t k = i;
                if (jj_py_isspace(jj_utf8_next(s->u.s.p, n, &k))) break;
                i = k;
            }
            end = i;
        } else {
            return list_push(c, at, out, cap, jj_substr(s, start, n)); /* the rest, as CPython */
        }
        st = list_push(c, at, out, cap, jj_substr(s, start, end));
        done++;
    }
    return st;
}

static fm_status do_split(jj_ctx *c, const jj_node *at, const jj_value *s, const jj_args *a,
                          bool right, jj_value *out) {
    const jj_value *sep = arg(a, 0, "sep"), *mx = arg(a, 1, "maxsplit");
    int64_t max = -1;
    size_t cap = 0;
    fm_status st = jj_new_list(c, at, 0, out);
    if (st == FM_OK && mx) st = want_int(c, at, "split", mx, &max);
    if (st == FM_OK) st = jj_charge(c, at, s->u.s.n);
    if (st != FM_OK) return st;
    if (!sep || sep->t == JT_NONE) {
        if (right && max >= 0)
            return jj_fail(c, at, FM_ERR_UNSUPPORTED,
                           "rsplit() with maxsplit and no separator is not supported");
        return split_ws(c, at, s, max, out, &cap);
    }
    if ((st = want_str(c, at, "split", sep)) != FM_OK) return st;
    if (!sep->u.s.n) return jj_fail(c, at, FM_ERR_INPUT, "split: empty separator");
    size_t from = 0, to = s->u.s.n;
    int64_t done = 0;
    while (st == FM_OK && (max < 0 || done < max)) {
        const char *hit = find_sub(s->u.s.p + from, to - from, sep->u.s.p, sep->u.s.n, right);
        if (!hit) break;
        size_t at_b = (size_t)(hit - s->u.s.p);
        st = list_push(c, at, out, &cap,
                       right ? jj_substr(s, at_b + sep->u.s.n, to) : jj_substr(s, from, at_b));
        if (right)
            to = at_b;
        else
            from = at_b + sep->u.s.n;
        done++;
    }
    if (st == FM_OK) st = list_push(c, at, out, &cap, jj_substr(s, from, to));
    for (size_t i = 0, j = out->u.l->n; right && st == FM_OK && i < j / 2; i++) {
        jj_value t = out->u.l->v[i];
        out->u.l->v[i] = out->u.l->v[j - 1 - i], out->u.l->v[j - 1 - i] = t;
    }
    return st;
}

static fm_status do_replace(jj_ctx *c, const jj_node *at, const jj_value *s, const jj_value *old,
                            const jj_value *new_, int64_t count, jj_value *out) {
    jj_buf b = {.max = c->lim.max_output};
    bool over = false;
    fm_status st = jj_charge(c, at, s->u.s.n);
    size_t i = 0, n = s->u.s.n;
    int64_t done = 0;
    while (st == FM_OK && (count < 0 || done < count)) {
        size_t hit;
        if (old->u.s.n == 0) { /* an empty pattern matches before every character and at the end */
            if (i > n) break;
            hit = i;
        } else {
            const char *h = memmem(s->u.s.p + i, n - i, old->u.s.p, old->u.s.n);
            if (!h) break;
            hit = (size_t)(h - s->u.s.p);
        }
        if (jj_buf_put(&b, s->u.s.p + i, hit - i, s->u.s.m ? s->u.s.m + i : NULL, &over) ||
            jj_buf_put(&b, new_->u.s.p, new_->u.s.n, new_->u.s.m, &over))
            st = jj_buf_fail(c, at, over);
        i = hit + old->u.s.n;
        if (old->u.s.n == 0) {
            if (hit >= n) {
                i = n + 1;
                done++;
                break;
            }
            size_t k = hit;
            jj_utf8_next(s->u.s.p, n, &k);
            if (st == FM_OK &&
                jj_buf_put(&b, s->u.s.p + hit, k - hit, s->u.s.m ? s->u.s.m + hit : NULL, &over))
                st = jj_buf_fail(c, at, over);
            i = k;
        }
        done++;
    }
    if (st == FM_OK && i < n &&
        jj_buf_put(&b, s->u.s.p + i, n - i, s->u.s.m ? s->u.s.m + i : NULL, &over))
        st = jj_buf_fail(c, at, over);
    if (st != FM_OK) return jj_buf_free(&b), st;
    return buf_value(c, at, &b, out);
}

/* Joins the string forms of items with sep (masks kept). */
static fm_status join_items(jj_ctx *c, const jj_node *at, const jj_value *items, size_t n,
                            const jj_value *sep, bool strict, jj_value *out) {
    jj_buf b = {.max = c->lim.max_output};
    bool over = false;
    fm_status st = FM_OK;
    for (size_t i = 0; st == FM_OK && i < n; i++) {
        jj_value s;
        if (strict && items[i].t != JT_STR)
            st = jj_fail(c, at, FM_ERR_INPUT, "sequence item %zu: expected str instance, %s found",
                         i, jj_type_name(&items[i]));
        if (st == FM_OK) st = jj_stringify(c, at, &items[i], &s);
        if (st == FM_OK &&
            ((i && sep && jj_buf_put(&b, sep->u.s.p, sep->u.s.n, sep->u.s.m, &over)) ||
             jj_buf_put(&b, s.u.s.p, s.u.s.n, s.u.s.m, &over)))
            st = jj_buf_fail(c, at, over);
    }
    if (st == FM_OK) st = jj_charge(c, at, b.n);
    if (st != FM_OK) return jj_buf_free(&b), st;
    return buf_value(c, at, &b, out);
}

/* ---- methods ------------------------------------------------------------------------------------
 */
enum {
    M_NONE,
    M_STARTSWITH,
    M_ENDSWITH,
    M_SPLIT,
    M_RSPLIT,
    M_STRIP,
    M_LSTRIP,
    M_RSTRIP,
    M_UPPER,
    M_LOWER,
    M_CAPITALIZE,
    M_REPLACE,
    M_FIND,
    M_RFIND,
    M_COUNT,
    M_JOIN,
    M_ITEMS,
    M_KEYS,
    M_VALUES,
    M_GET,
    M_CYCLE
};

static const struct {
    int type, id;
    const char *name;
} g_methods[] = {
    {JT_STR, M_STARTSWITH, "startswith"},
    {JT_STR, M_ENDSWITH, "endswith"},
    {JT_STR, M_SPLIT, "split"},
    {JT_STR, M_RSPLIT, "rsplit"},
    {JT_STR, M_STRIP, "strip"},
    {JT_STR, M_LSTRIP, "lstrip"},
    {JT_STR, M_RSTRIP, "rstrip"},
    {JT_STR, M_UPPER, "upper"},
    {JT_STR, M_LOWER, "lower"},
    {JT_STR, M_CAPITALIZE, "capitalize"},
    {JT_STR, M_REPLACE, "replace"},
    {JT_STR, M_FIND, "find"},
    {JT_STR, M_RFIND, "rfind"},
    {JT_STR, M_COUNT, "count"},
    {JT_STR, M_JOIN, "join"},
    {JT_DICT, M_ITEMS, "items"},
    {JT_DICT, M_KEYS, "keys"},
    {JT_DICT, M_VALUES, "values"},
    {JT_DICT, M_GET, "get"},
    {JT_LOOP, M_CYCLE, "cycle"},
};

int jj_method_id(const jj_value *v, const char *name, size_t nlen) {
    for (size_t i = 0; i < sizeof g_methods / sizeof *g_methods; i++)
        if (g_methods[i].type == v->t && strlen(g_methods[i].name) == nlen &&
            !memcmp(g_methods[i].name, name, nlen))
            return g_methods[i].id;
    return M_NONE;
}

static fm_status affix(jj_ctx *c, const jj_node *at, const jj_value *s, const jj_args *a, bool end,
                       jj_value *out) {
    const jj_value *p = arg(a, 0, NULL);
    fm_status st = check_args(c, at, end ? "endswith" : "startswith", a, 1, NULL);
    if (st == FM_OK && !p)
        st =
            jj_fail(c, at, FM_ERR_INPUT, "%s() needs an argument", end ? "endswith" : "startswith");
    if (st != FM_OK) return st;
    const jj_value *opts = p->t == JT_LIST ? p->u.l->v : p;
    size_t n = p->t == JT_LIST ? p->u.l->n : 1;
    bool r = false;
    for (size_t i = 0; st == FM_OK && i < n && !r; i++) {
        if ((st = want_str(c, at, end ? "endswith" : "startswith", &opts[i])) != FM_OK) break;
        size_t k = opts[i].u.s.n;
        r = k <= s->u.s.n && !memcmp(s->u.s.p + (end ? s->u.s.n - k : 0), opts[i].u.s.p, k);
    }
    *out = jj_bool(r);
    return st;
}

static fm_status str_find(jj_ctx *c, const jj_node *at, const jj_value *s, const jj_args *a, int id,
                          jj_value *out) {
    const jj_value *sub = arg(a, 0, NULL);
    fm_status st = check_args(c, at, "find/count", a, 1, NULL);
    if (st == FM_OK) st = want_str(c, at, "find/count", sub);
    if (st == FM_OK) st = jj_charge(c, at, s->u.s.n);
    if (st != FM_OK) return st;
    if (id == M_COUNT) {
        int64_t n = 0;
        if (!sub->u.s.n)
            return *out = jj_int((int64_t)jj_utf8_count(s->u.s.p, s->u.s.n) + 1), FM_OK;
        for (const char *p = s->u.s.p, *h;
             (h = memmem(p, s->u.s.n - (size_t)(p - s->u.s.p), sub->u.s.p, sub->u.s.n)); n++)
            p = h + sub->u.s.n;
        return *out = jj_int(n), FM_OK;
    }
    const char *h = find_sub(s->u.s.p, s->u.s.n, sub->u.s.p, sub->u.s.n, id == M_RFIND);
    *out = jj_int(h ? (int64_t)jj_utf8_count(s->u.s.p, (size_t)(h - s->u.s.p)) : -1);
    return FM_OK;
}

static fm_status str_method(jj_ctx *c, const jj_node *at, const jj_value *s, int id,
                            const jj_args *a, jj_value *out) {
    const jj_value *x = arg(a, 0, NULL);
    fm_status st = FM_OK;
    switch (id) {
    case M_STARTSWITH:
    case M_ENDSWITH:
        return affix(c, at, s, a, id == M_ENDSWITH, out);
    case M_SPLIT:
    case M_RSPLIT:
        return do_split(c, at, s, a, id == M_RSPLIT, out);
    case M_STRIP:
    case M_LSTRIP:
    case M_RSTRIP:
        if (x && x->t != JT_NONE && (st = want_str(c, at, "strip", x)) != FM_OK) return st;
        *out = strip(s, x && x->t == JT_STR ? x : NULL,
                     id == M_STRIP    ? 'b'
                     : id == M_LSTRIP ? 'l'
                                      : 'r');
        return jj_charge(c, at, s->u.s.n);
    case M_UPPER:
    case M_LOWER:
    case M_CAPITALIZE:
        return change_case(c, at, s, id == M_UPPER ? 'u' : id == M_LOWER ? 'l' : 'c', out);
    case M_REPLACE: {
        const jj_value *nw = arg(a, 1, NULL), *cnt = arg(a, 2, NULL);
        int64_t count = -1;
        if ((st = want_str(c, at, "replace", x)) == FM_OK) st = want_str(c, at, "replace", nw);
        if (st == FM_OK && cnt) st = want_int(c, at, "replace", cnt, &count);
        return st == FM_OK ? do_replace(c, at, s, x, nw, count, out) : st;
    }
    case M_FIND:
    case M_RFIND:
    case M_COUNT:
        return str_find(c, at, s, a, id, out);
    default: { /* M_JOIN */
        jj_value *items;
        size_t n;
        if (!x) return jj_fail(c, at, FM_ERR_INPUT, "join() needs an argument");
        st = jj_iterate(c, at, x, &items, &n);
        return st == FM_OK ? join_items(c, at, items, n, s, true, out) : st;
    }
    }
}

static fm_status dict_items(jj_ctx *c, const jj_node *at, const jj_dict *d, int id, jj_value *out) {
    fm_status st = jj_new_list(c, at, d->n, out);
    for (size_t i = 0; st == FM_OK && i < d->n; i++) {
        if (id == M_KEYS)
            out->u.l->v[i] = d->k[i];
        else if (id == M_VALUES)
            out->u.l->v[i] = d->v[i];
        else if ((st = jj_new_list(c, at, 2, &out->u.l->v[i])) == FM_OK) {
            out->u.l->v[i].tuple = 1;
            out->u.l->v[i].u.l->v[0] = d->k[i], out->u.l->v[i].u.l->v[1] = d->v[i];
        }
    }
    return st;
}

fm_status jj_call_method(jj_ctx *c, const jj_node *at, const jj_value *self, int id,
                         const jj_args *a, jj_value *out) {
    if (self->t == JT_STR) return str_method(c, at, self, id, a, out);
    if (self->t == JT_LOOP) { /* cycle */
        if (!a->npos)
            return jj_fail(c, at, FM_ERR_INPUT, "loop.cycle() needs at least one argument");
        return *out = a->pos[self->u.lp->index0 % a->npos], FM_OK;
    }
    if (id == M_GET) {
        const jj_value *k = arg(a, 0, NULL), *d = arg(a, 1, NULL);
        if (!k) return jj_fail(c, at, FM_ERR_INPUT, "get() needs a key");
        jj_value *v = jj_dict_find(self->u.d, k);
        return *out = v ? *v : d ? *d : jj_none(), FM_OK;
    }
    fm_status st = check_args(c, at, "items/keys/values", a, 0, NULL);
    return st == FM_OK ? dict_items(c, at, self->u.d, id, out) : st;
}

/* ---- tests --------------------------------------------------------------------------------------
 */
static const char *const g_tests[] = {
    "defined",     "undefined", "none",        "string",  "number",   "integer",  "float",
    "boolean",     "true",      "false",       "mapping", "iterable", "sequence", "callable",
    "even",        "odd",       "divisibleby", "eq",      "equalto",  "==",       "ne",
    "!=",          "lt",        "lessthan",    "<",       "le",       "<=",       "gt",
    "greaterthan", ">",         "ge",          ">=",      "in",       "lower",    "upper",
    "sameas",      "escaped",   NULL};

static int name_index(const char *const *list, const char *name, size_t n) {
    for (int i = 0; list[i]; i++)
        if (strlen(list[i]) == n && !memcmp(list[i], name, n)) return i;
    return -1;
}

bool jj_test_known(const char *name, size_t n) {
    return name_index(g_tests, name, n) >= 0;
}

static fm_status test_case(jj_ctx *c, const jj_node *at, const jj_value *v, bool upper, bool *out) {
    jj_value s;
    fm_status st = jj_stringify(c, at, v, &s);
    if (st != FM_OK) return st;
    if (!is_ascii(&s))
        return jj_fail(c, at, FM_ERR_UNSUPPORTED, "case tests on non-ASCII text are not supported");
    bool cased = false, ok = true;
    for (size_t i = 0; i < s.u.s.n; i++) {
        char ch = s.u.s.p[i];
        bool lo = ch >= 'a' && ch <= 'z', up = ch >= 'A' && ch <= 'Z';
        cased |= lo || up;
        ok &= upper ? !lo : !up;
    }
    *out = cased && ok;
    return FM_OK;
}

static fm_status test_number(jj_ctx *c, const jj_node *at, const jj_value *v, const jj_args *a,
                             const char *t, bool *out) {
    jj_value r, two = jj_int(2);
    const jj_value *d = arg(a, 0, "num");
    if (strcmp(t, "divisibleby") == 0 && !d)
        return jj_fail(c, at, FM_ERR_INPUT, "divisibleby needs a number");
    if (!(v->t == JT_INT || v->t == JT_BOOL || v->t == JT_FLOAT))
        return jj_fail(c, at, FM_ERR_INPUT, "test '%s' needs a number, got '%s'", t,
                       jj_type_name(v));
    const jj_value *div = d ? d : &two;
    if (!(div->t == JT_INT || div->t == JT_BOOL || div->t == JT_FLOAT))
        return jj_fail(c, at, FM_ERR_INPUT, "test '%s' needs a number argument", t);
    double x = v->t == JT_FLOAT ? v->u.f : (double)(v->t == JT_INT ? v->u.i : v->u.b);
    double y = div->t == JT_FLOAT ? div->u.f : (double)(div->t == JT_INT ? div->u.i : div->u.b);
    if (y == 0) return jj_fail(c, at, FM_ERR_INPUT, "modulo by zero");
    if (v->t != JT_FLOAT && div->t != JT_FLOAT) {
        int64_t xi = v->t == JT_INT ? v->u.i : v->u.b, yi = div->t == JT_INT ? div->u.i : div->u.b;
        int64_t m = yi == -1 ? 0 : xi % yi;
        r = jj_int(m);
    } else {
        r = jj_float(fmod(x, y));
    }
    bool zero = r.t == JT_INT ? r.u.i == 0 : r.u.f == 0.0;
    *out = strcmp(t, "odd") == 0 ? !zero : zero;
    return FM_OK;
}

static fm_status test_compare(jj_ctx *c, const jj_node *at, int idx, const jj_value *v,
                              const jj_args *a, bool *out) {
    static const int ops[] = {JO_EQ, JO_EQ, JO_EQ, JO_NE, JO_NE, JO_LT, JO_LT, JO_LT,
                              JO_LE, JO_LE, JO_GT, JO_GT, JO_GT, JO_GE, JO_GE, JO_IN};
    const jj_value *o = arg(a, 0, NULL);
    if (!o) return jj_fail(c, at, FM_ERR_INPUT, "test '%s' needs an argument", g_tests[idx]);
    return jj_compare(c, at, ops[idx - 17], v, o, out);
}

fm_status jj_call_test(jj_ctx *c, const jj_node *at, const char *name, size_t nlen,
                       const jj_value *v, const jj_args *a, bool *out) {
    int i = name_index(g_tests, name, nlen);
    int t = v->t;
    switch (i) {
    case 0:
        *out = t != JT_UNDEF;
        return FM_OK;
    case 1:
        *out = t == JT_UNDEF;
        return FM_OK;
    case 2:
        *out = t == JT_NONE;
        return FM_OK;
    case 3:
        *out = t == JT_STR;
        return FM_OK;
    case 4:
        *out = t == JT_INT || t == JT_FLOAT || t == JT_BOOL;
        return FM_OK;
    case 5:
        *out = t == JT_INT;
        return FM_OK;
    case 6:
        *out = t == JT_FLOAT;
        return FM_OK;
    case 7:
        *out = t == JT_BOOL;
        return FM_OK;
    case 8:
        *out = t == JT_BOOL && v->u.b;
        return FM_OK;
    case 9:
        *out = t == JT_BOOL && !v->u.b;
        return FM_OK;
    case 10:
        *out = t == JT_DICT;
        return FM_OK;
    case 11:
        *out = t == JT_STR || t == JT_LIST || t == JT_DICT || t == JT_UNDEF || t == JT_LOOP;
        return FM_OK;
    case 12:
        *out = t == JT_STR || t == JT_LIST || t == JT_DICT || t == JT_UNDEF;
        return FM_OK;
    case 13:
        *out = t == JT_FUNC || t == JT_LOOP;
        return FM_OK;
    case 14:
    case 15:
    case 16:
        return test_number(c, at, v, a, g_tests[i], out);
    case 33:
    case 34:
        return test_case(c, at, v, i == 34, out);
    case 35: { /* sameas: identity, approximated by type and value for scalars */
        const jj_value *o = arg(a, 0, NULL);
        if (!o) return jj_fail(c, at, FM_ERR_INPUT, "sameas needs an argument");
        *out = o->t == t && (t == JT_NONE || t == JT_UNDEF || (t == JT_BOOL && o->u.b == v->u.b) ||
                             (t >= JT_LIST && o->u.l == v->u.l));
        return FM_OK;
    }
    case 36:
        *out = false;
        return FM_OK;
    default:
        if (i >= 17 && i <= 32) return test_compare(c, at, i, v, a, out);
        return jj_fail(c, at, FM_ERR_UNSUPPORTED, "unknown test '%.*s'", (int)nlen, name);
    }
}

/* ---- filters ------------------------------------------------------------------------------------
 */
static const char *const g_filters[] = {
    "abs",        "capitalize", "count",      "default", "d",       "first", "float",
    "int",        "items",      "join",       "last",    "length",  "list",  "lower",
    "map",        "reject",     "rejectattr", "replace", "reverse", "safe",  "select",
    "selectattr", "string",     "tojson",     "trim",    "upper",   NULL};

bool jj_filter_known(const char *name, size_t n) {
    return name_index(g_filters, name, n) >= 0;
}

static fm_status f_length(jj_ctx *c, const jj_node *at, const jj_value *v, jj_value *out) {
    switch (v->t) {
    case JT_UNDEF:
        return *out = jj_int(0), FM_OK;
    case JT_STR:
        return *out = jj_int((int64_t)jj_utf8_count(v->u.s.p, v->u.s.n)), FM_OK;
    case JT_LIST:
        return *out = jj_int((int64_t)v->u.l->n), FM_OK;
    case JT_DICT:
        return *out = jj_int((int64_t)v->u.d->n), FM_OK;
    case JT_LOOP:
        return *out = jj_int((int64_t)v->u.lp->length), FM_OK;
    default:
        return jj_fail(c, at, FM_ERR_INPUT, "object of type '%s' has no len()", jj_type_name(v));
    }
}

static fm_status f_tojson(jj_ctx *c, const jj_node *at, const jj_value *v, const jj_args *a,
                          jj_value *out) {
    static const char *const kws[] = {"ensure_ascii", "indent", "separators", "sort_keys", NULL};
    const jj_value *ea = arg(a, 0, "ensure_ascii"), *ind = arg(a, 1, "indent"),
                   *sep = arg(a, 2, "separators"), *sk = arg(a, 3, "sort_keys");
    fm_status st = check_args(c, at, "tojson", a, 4, kws);
    int64_t indent = -1;
    if (st == FM_OK && ea && jj_truthy(ea))
        st = jj_fail(c, at, FM_ERR_UNSUPPORTED, "tojson(ensure_ascii=True) is not supported");
    if (st == FM_OK && sep && sep->t != JT_NONE)
        st = jj_fail(c, at, FM_ERR_UNSUPPORTED, "tojson(separators=...) is not supported");
    if (st == FM_OK && ind && ind->t != JT_NONE)
        st = want_int(c, at, "tojson indent", ind, &indent);
    if (st == FM_OK && (indent > 64 || (ind && ind->t != JT_NONE && indent < 0)))
        st = jj_fail(c, at, FM_ERR_UNSUPPORTED, "tojson: indent must be between 0 and 64");
    if (st != FM_OK) return st;
    jj_buf b = {.max = c->lim.max_output};
    const char *msg = NULL;
    bool over = false;
    int r = jj_to_json(&b, v, (int)indent, sk && jj_truthy(sk), &msg, &over);
    st = r == -1 ? jj_fail(c, at, FM_ERR_INPUT, "%s", msg)
         : r     ? jj_buf_fail(c, at, over)
                 : jj_charge(c, at, b.n);
    if (st != FM_OK) return jj_buf_free(&b), st;
    return buf_value(c, at, &b, out);
}

static fm_status f_join(jj_ctx *c, const jj_node *at, const jj_value *v, const jj_args *a,
                        jj_value *out) {
    static const char *const kws[] = {"d", "attribute", NULL};
    const jj_value *sep = arg(a, 0, "d");
    jj_value *items;
    size_t n;
    fm_status st = check_args(c, at, "join", a, 1, kws);
    if (st == FM_OK && arg(a, 1, "attribute"))
        st = jj_fail(c, at, FM_ERR_UNSUPPORTED, "join(attribute=...) is not supported");
    if (st == FM_OK && sep) st = want_str(c, at, "join", sep);
    if (st == FM_OK) st = jj_iterate(c, at, v, &items, &n);
    return st == FM_OK ? join_items(c, at, items, n, sep, false, out) : st;
}

static fm_status f_reverse(jj_ctx *c, const jj_node *at, const jj_value *v, jj_value *out) {
    jj_value *items;
    size_t n;
    fm_status st = jj_iterate(c, at, v, &items, &n);
    if (st != FM_OK) return st;
    if (v->t == JT_STR) {
        jj_value tmp;
        if ((st = jj_new_list(c, at, n, &tmp)) != FM_OK) return st;
        for (size_t i = 0; i < n; i++)
            tmp.u.l->v[i] = items[n - 1 - i];
        jj_value empty = jj_str("", 0, NULL);
        return join_items(c, at, tmp.u.l->v, n, &empty, true, out);
    }
    st = jj_new_list(c, at, n, out);
    for (size_t i = 0; st == FM_OK && i < n; i++)
        out->u.l->v[i] = items[n - 1 - i];
    return st;
}

/* int() / float() of a string the way Python parses it (whitespace around, '_' between digits). */
static bool parse_number_text(const jj_value *s, bool want_float, double *f, int64_t *i) {
    char tmp[128];
    size_t t = 0;
    jj_value st = strip(s, NULL, 'b');
    if (!st.u.s.n || st.u.s.n >= sizeof tmp) return false;
    for (size_t k = 0; k < st.u.s.n; k++)
        if (st.u.s.p[k] != '_') tmp[t++] = st.u.s.p[k];
    tmp[t] = '\0';
    char *end;
    errno = 0;
    if (want_float)
        *f = strtod(tmp, &end);
    else
        *i = strtoll(tmp, &end, 10);
    return *end == '\0' && errno == 0 &&
           (want_float || (tmp[0] != '0' || t == 1 || strspn(tmp, "0") == t));
}

static fm_status f_number(jj_ctx *c, const jj_node *at, const jj_value *v, const jj_args *a,
                          bool is_float, jj_value *out) {
    static const char *const kws[] = {"default", "base", NULL};
    const jj_value *d = arg(a, 0, "default");
    fm_status st = check_args(c, at, is_float ? "float" : "int", a, is_float ? 1 : 2, kws);
    if (st == FM_OK && arg(a, 1, "base") &&
        !(arg(a, 1, "base")->t == JT_INT && arg(a, 1, "base")->u.i == 10))
        st = jj_fail(c, at, FM_ERR_UNSUPPORTED, "int(base=...) other than 10 is not supported");
    if (st != FM_OK) return st;
    double f = 0;
    int64_t i = 0;
    bool ok = true;
    if (v->t == JT_INT || v->t == JT_BOOL)
        i = v->t == JT_INT ? v->u.i : v->u.b, f = (double)i;
    else if (v->t == JT_FLOAT)
        f = v->u.f, ok = isfinite(f) && fabs(f) < 9.2e18, i = ok ? (int64_t)f : 0;
    else if (v->t == JT_STR) {
        ok = parse_number_text(v, is_float, &f, &i);
        if (!is_float && !ok && parse_number_text(v, true, &f, &i))
            ok = isfinite(f) && fabs(f) < 9.2e18, i = (int64_t)f;
    } else
        ok = false;
    if (!ok) return *out = d ? *d : is_float ? jj_float(0.0) : jj_int(0), FM_OK;
    *out = is_float ? jj_float(f) : jj_int(i);
    return FM_OK;
}

/* map / select / reject / selectattr / rejectattr. */
static fm_status f_seq(jj_ctx *c, const jj_node *at, int which, const jj_value *v, const jj_args *a,
                       jj_value *out) {
    jj_value *items;
    size_t n, cap = 0, skip = which >= 3 ? 1 : 0; /* *attr filters take the attribute first */
    fm_status st = jj_iterate(c, at, v, &items, &n);
    const jj_value *attr = which == 0   ? arg(a, 99, "attribute")
                           : which >= 3 ? arg(a, 0, NULL)
                                        : NULL;
    const jj_value *name = arg(a, skip, NULL);
    if (st == FM_OK && (which >= 3 || (which == 0 && attr)) &&
        (st = want_str(c, at, "attribute", attr)) != FM_OK)
        return st;
    if (st == FM_OK && which == 0 && !attr && (st = want_str(c, at, "map", name)) != FM_OK)
        return st;
    if (st == FM_OK && name && which != 0 && (st = want_str(c, at, "test name", name)) != FM_OK)
        return st;
    if (st == FM_OK) st = jj_new_list(c, at, 0, out);
    jj_args rest = {.pos = a->npos > skip + 1 ? a->pos + skip + 1 : NULL,
                    .npos = a->npos > skip + 1 ? a->npos - skip - 1 : 0};
    for (size_t i = 0; st == FM_OK && i < n; i++) {
        jj_value x = items[i], r;
        if (attr) st = jj_getattr(c, at, &items[i], attr->u.s.p, attr->u.s.n, &x);
        if (st == FM_OK && which == 0) {
            if (!attr) st = jj_call_filter(c, at, name->u.s.p, name->u.s.n, &x, &rest, &r);
            if (st == FM_OK) st = list_push(c, at, out, &cap, attr ? x : r);
            continue;
        }
        bool keep = false;
        if (st == FM_OK && name)
            st = jj_call_test(c, at, name->u.s.p, name->u.s.n, &x, &rest, &keep);
        else
            keep = jj_truthy(&x);
        if (which == 2 || which == 4) keep = !keep;
        if (st == FM_OK && keep) st = list_push(c, at, out, &cap, items[i]);
    }
    return st;
}

static fm_status f_first_last(jj_ctx *c, const jj_node *at, const jj_value *v, bool last,
                              jj_value *out) {
    jj_value *items;
    size_t n;
    fm_status st = jj_iterate(c, at, v, &items, &n);
    if (st == FM_OK)
        *out = n ? items[last ? n - 1 : 0] : jj_undef(last ? "last" : "first", last ? 4 : 5);
    return st;
}

static fm_status f_string_ops(jj_ctx *c, const jj_node *at, int i, const jj_value *v,
                              const jj_args *a, jj_value *out) {
    jj_value s;
    fm_status st = jj_stringify(c, at, v->t == JT_UNDEF ? &(jj_value){.t = JT_STR} : v, &s);
    if (st != FM_OK) return st;
    switch (i) {
    case 1:
        return change_case(c, at, &s, 'c', out);
    case 13:
        return change_case(c, at, &s, 'l', out);
    case 25:
        return change_case(c, at, &s, 'u', out);
    case 22:
        return *out = s, FM_OK;
    case 24: {
        const jj_value *ch = arg(a, 0, "chars");
        if (ch && ch->t != JT_NONE && (st = want_str(c, at, "trim", ch)) != FM_OK) return st;
        *out = strip(&s, ch && ch->t == JT_STR ? ch : NULL, 'b');
        return jj_charge(c, at, s.u.s.n);
    }
    default: { /* 17 replace */
        const jj_value *old = arg(a, 0, "old"), *nw = arg(a, 1, "new"), *cnt = arg(a, 2, "count");
        int64_t count = -1;
        if ((st = want_str(c, at, "replace", old)) == FM_OK) st = want_str(c, at, "replace", nw);
        if (st == FM_OK && cnt && cnt->t != JT_NONE) st = want_int(c, at, "replace", cnt, &count);
        return st == FM_OK ? do_replace(c, at, &s, old, nw, count, out) : st;
    }
    }
}

fm_status jj_call_filter(jj_ctx *c, const jj_node *at, const char *name, size_t nlen,
                         const jj_value *v, const jj_args *a, jj_value *out) {
    int i = name_index(g_filters, name, nlen);
    jj_value *items;
    size_t n;
    fm_status st;
    switch (i) {
    case 0:
        if (v->t == JT_INT)
            return v->u.i == INT64_MIN ? jj_fail(c, at, FM_ERR_OVERFLOW, "abs overflows")
                                       : (*out = jj_int(llabs(v->u.i)), FM_OK);
        if (v->t == JT_BOOL) return *out = jj_int(v->u.b), FM_OK;
        if (v->t == JT_FLOAT) return *out = jj_float(fabs(v->u.f)), FM_OK;
        return jj_fail(c, at, FM_ERR_INPUT, "bad operand type for abs(): '%s'", jj_type_name(v));
    case 2:
    case 11:
        return f_length(c, at, v, out);
    case 3:
    case 4: {
        const jj_value *d = arg(a, 0, "default_value"), *b = arg(a, 1, "boolean");
        bool use = v->t == JT_UNDEF || (b && jj_truthy(b) && !jj_truthy(v));
        return *out = use ? (d ? *d : jj_str("", 0, NULL)) : *v, FM_OK;
    }
    case 5:
    case 10:
        return f_first_last(c, at, v, i == 10, out);
    case 6:
    case 7:
        return f_number(c, at, v, a, i == 6, out);
    case 8:
        if (v->t == JT_UNDEF) return jj_new_list(c, at, 0, out);
        if (v->t != JT_DICT)
            return jj_fail(c, at, FM_ERR_INPUT,
                           "items: can only get item pairs from a mapping, not '%s'",
                           jj_type_name(v));
        return dict_items(c, at, v->u.d, M_ITEMS, out);
    case 9:
        return f_join(c, at, v, a, out);
    case 12:
        if ((st = jj_iterate(c, at, v, &items, &n)) != FM_OK) return st;
        if ((st = jj_new_list(c, at, n, out)) == FM_OK && n)
            memcpy(out->u.l->v, items, n * sizeof *items);
        return st;
    case 14:
        return f_seq(c, at, 0, v, a, out);
    case 15:
        return f_seq(c, at, 2, v, a, out);
    case 16:
        return f_seq(c, at, 4, v, a, out);
    case 18:
        return f_reverse(c, at, v, out);
    case 19:
        return *out = *v, FM_OK;
    case 20:
        return f_seq(c, at, 1, v, a, out);
    case 21:
        return f_seq(c, at, 3, v, a, out);
    case 23:
        return f_tojson(c, at, v, a, out);
    case 1:
    case 13:
    case 17:
    case 22:
    case 24:
    case 25:
        return f_string_ops(c, at, i, v, a, out);
    default:
        return jj_fail(c, at, FM_ERR_UNSUPPORTED, "unknown filter '%.*s'", (int)nlen, name);
    }
}

/* ---- global functions ---------------------------------------------------------------------------
 */
#define JJ_MAX_RANGE 100000 /* Jinja2's sandbox limit */

static fm_status g_range(jj_ctx *c, const jj_node *at, const jj_args *a, jj_value *out) {
    int64_t v[3] = {0, 0, 1};
    fm_status st = check_args(c, at, "range", a, 3, NULL);
    if (st == FM_OK && a->npos == 0)
        st = jj_fail(c, at, FM_ERR_INPUT, "range expected at least 1 argument");
    for (size_t i = 0; st == FM_OK && i < a->npos; i++)
        st = want_int(c, at, "range", &a->pos[i], &v[a->npos == 1 ? 1 : i]);
    if (st != FM_OK) return st;
    if (v[2] == 0) return jj_fail(c, at, FM_ERR_INPUT, "range() arg 3 must not be zero");
    int64_t start = v[0], stop = v[1], step = v[2], len = 0;
    if (step > 0 && start < stop)
        len = (int64_t)(((uint64_t)stop - (uint64_t)start - 1) / (uint64_t)step + 1);
    if (step < 0 && start > stop)
        len = (int64_t)(((uint64_t)start - (uint64_t)stop - 1) / (uint64_t)(-(step + 1) + 1) + 1);
    if (len > JJ_MAX_RANGE)
        return jj_fail(c, at, FM_ERR_LIMIT, "range too big (more than %d items)", JJ_MAX_RANGE);
    st = jj_new_list(c, at, (size_t)len, out);
    for (int64_t i = 0; st == FM_OK && i < len; i++)
        out->u.l->v[i] = jj_int(start + i * step);
    return st;
}

static fm_status g_dict(jj_ctx *c, const jj_node *at, bool ns, const jj_args *a, jj_value *out) {
    fm_status st = jj_new_dict(c, at, ns ? JT_NS : JT_DICT, out);
    if (st == FM_OK && a->npos > 1)
        st = jj_fail(c, at, FM_ERR_INPUT, "%s() takes at most one positional argument",
                     ns ? "namespace" : "dict");
    if (st == FM_OK && a->npos == 1) {
        if (a->pos[0].t != JT_DICT)
            return jj_fail(c, at, FM_ERR_UNSUPPORTED,
                           "%s(): the positional argument must be a dict",
                           ns ? "namespace" : "dict");
        for (size_t i = 0; st == FM_OK && i < a->pos[0].u.d->n; i++)
            if (jj_dict_set(c->a, out->u.d, a->pos[0].u.d->k[i], a->pos[0].u.d->v[i]))
                st = jj_oom(c, at);
    }
    for (size_t k = 0; st == FM_OK && k < a->nkw; k++)
        if (jj_dict_set(c->a, out->u.d, jj_str(a->kw_names[k], a->kw_lens[k], NULL), a->kw[k]))
            st = jj_oom(c, at);
    return st;
}

fm_status jj_call_global(jj_ctx *c, const jj_node *at, int id, const jj_args *a, jj_value *out) {
    switch (id) {
    case 0:
        return g_range(c, at, a, out);
    case 1:
        return g_dict(c, at, true, a, out);
    case 2:
        return g_dict(c, at, false, a, out);
    default: {
        jj_value msg = jj_str("", 0, NULL);
        fm_status st = a->npos ? jj_stringify(c, at, &a->pos[0], &msg) : FM_OK;
        if (st != FM_OK) return st;
        return jj_fail(c, at, FM_ERR_INPUT, "the template raised an error: %.*s",
                       (int)(msg.u.s.n > 300 ? 300 : msg.u.s.n), msg.u.s.p);
    }
    }
}
