/* Operators of the template language with Python semantics: attribute and item access as Jinja2's
 * sandbox does them (getattr then getitem, and the reverse for []), slicing by code point,
 * arithmetic with Python's int / float rules (64-bit ints: overflow is an error), comparisons,
 * membership, and string concatenation carrying the provenance masks. */
#include <math.h>
#include <string.h>

#include "text/jinja_eval.h"

/* ---- attribute and item access ----------------------------------------------------------------
 */
static fm_status bound_method(jj_ctx *c, const jj_node *at, const jj_value *self, int id,
                              jj_value *out) {
    jj_func *f = jj_alloc(c->a, sizeof *f);
    if (!f) return jj_oom(c, at);
    f->kind = JF_METHOD, f->id = id, f->self = *self;
    *out = (jj_value){.t = JT_FUNC, .u.fn = f};
    return FM_OK;
}

static bool name_is(const char *name, size_t n, const char *s) {
    return strlen(s) == n && !memcmp(name, s, n);
}

static fm_status loop_attr(jj_ctx *c, const jj_node *at, const jj_value *v, const char *name,
                           size_t n, jj_value *out) {
    const jj_loop *lp = v->u.lp;
    int64_t i = (int64_t)lp->index0, len = (int64_t)lp->length;
    if (name_is(name, n, "index"))
        *out = jj_int(i + 1);
    else if (name_is(name, n, "index0"))
        *out = jj_int(i);
    else if (name_is(name, n, "revindex"))
        *out = jj_int(len - i);
    else if (name_is(name, n, "revindex0"))
        *out = jj_int(len - i - 1);
    else if (name_is(name, n, "first"))
        *out = jj_bool(i == 0);
    else if (name_is(name, n, "last"))
        *out = jj_bool(i == len - 1);
    else if (name_is(name, n, "length"))
        *out = jj_int(len);
    else if (name_is(name, n, "depth"))
        *out = jj_int(1);
    else if (name_is(name, n, "depth0"))
        *out = jj_int(0);
    else if (name_is(name, n, "previtem"))
        *out = i > 0 ? lp->items[i - 1] : jj_undef("previtem", 8);
    else if (name_is(name, n, "nextitem"))
        *out = i + 1 < len ? lp->items[i + 1] : jj_undef("nextitem", 8);
    else if (name_is(name, n, "changed"))
        return jj_fail(c, at, FM_ERR_UNSUPPORTED, "loop.changed is not supported");
    else {
        int id = jj_method_id(v, name, n);
        return id ? bound_method(c, at, v, id, out) : (*out = jj_undef(name, n), FM_OK);
    }
    return FM_OK;
}

fm_status jj_getattr(jj_ctx *c, const jj_node *at, const jj_value *v, const char *name, size_t nlen,
                     jj_value *out) {
    if (v->t == JT_UNDEF) return jj_undefined_error(c, at, v);
    if (v->t == JT_LOOP) return loop_attr(c, at, v, name, nlen, out);
    int id = jj_method_id(v, name, nlen);
    if (id) return bound_method(c, at, v, id, out);
    jj_value *x = v->t == JT_DICT || v->t == JT_NS ? jj_dict_get(v->u.d, name, nlen) : NULL;
    *out = x ? *x : jj_undef(name, nlen);
    return FM_OK;
}

/* Python index normalisation: negative counts from the end; -1 when out of range. */
static int64_t norm_index(int64_t i, size_t n) {
    if (i < 0) i += (int64_t)n;
    return i >= 0 && (uint64_t)i < n ? i : -1;
}

fm_status jj_getitem(jj_ctx *c, const jj_node *at, const jj_value *obj, const jj_value *key,
                     jj_value *out) {
    if (obj->t == JT_UNDEF) return jj_undefined_error(c, at, obj);
    bool int_key = key->t == JT_INT || key->t == JT_BOOL;
    int64_t k = key->t == JT_INT ? key->u.i : key->t == JT_BOOL ? key->u.b : 0;
    jj_value *x = NULL;
    if (obj->t == JT_DICT) {
        x = jj_dict_find(obj->u.d, key);
    } else if (obj->t == JT_LIST && int_key) {
        int64_t i = norm_index(k, obj->u.l->n);
        x = i >= 0 ? &obj->u.l->v[i] : NULL;
    } else if (obj->t == JT_STR && int_key) {
        int64_t i = norm_index(k, jj_utf8_count(obj->u.s.p, obj->u.s.n));
        if (i >= 0) {
            size_t from = jj_utf8_offset(obj->u.s.p, obj->u.s.n, (size_t)i);
            size_t to = from;
            jj_utf8_next(obj->u.s.p, obj->u.s.n, &to);
            return *out = jj_substr(obj, from, to), FM_OK;
        }
    }
    if (x) return *out = *x, FM_OK;
    if (key->t == JT_STR) return jj_getattr(c, at, obj, key->u.s.p, key->u.s.n, out);
    *out = jj_undef(NULL, 0);
    return FM_OK;
}

fm_status jj_eval_getitem(jj_ctx *c, jj_scope *s, const jj_node *n, jj_value *out) {
    jj_value obj, key;
    fm_status st = jj_eval(c, s, n->a, &obj);
    if (st == FM_OK) st = jj_eval(c, s, n->b, &key);
    return st == FM_OK ? jj_getitem(c, n, &obj, &key, out) : st;
}

/* ---- slicing ------------------------------------------------------------------------------------
 */
static fm_status slice_part(jj_ctx *c, jj_scope *s, const jj_node *x, int64_t dflt, int64_t *out) {
    jj_value v;
    *out = dflt;
    if (!x) return FM_OK;
    fm_status st = jj_eval(c, s, x, &v);
    if (st != FM_OK || v.t == JT_NONE) return st;
    if (v.t != JT_INT && v.t != JT_BOOL)
        return jj_fail(c, x, FM_ERR_INPUT, "slice indices must be integers or None, not '%s'",
                       jj_type_name(&v));
    *out = v.t == JT_INT ? v.u.i : v.u.b;
    return FM_OK;
}

/* CPython's PySlice_AdjustIndices: clamps start/stop, returns the slice length. */
static size_t slice_adjust(int64_t len, int64_t *start, int64_t *stop, int64_t step) {
    int64_t *p[2] = {start, stop};
    for (int k = 0; k < 2; k++) {
        if (*p[k] < 0) {
            *p[k] = *p[k] < -len ? (step < 0 ? -1 : 0) : *p[k] + len;
        } else if (*p[k] >= len) {
            *p[k] = step < 0 ? len - 1 : len;
        }
    }
    if (step < 0) return *stop < *start ? (size_t)((*start - *stop - 1) / -step + 1) : 0;
    return *start < *stop ? (size_t)((*stop - *start - 1) / step + 1) : 0;
}

static fm_status slice_str(jj_ctx *c, const jj_node *at, const jj_value *v, int64_t start,
                           int64_t step, size_t count, jj_value *out) {
    size_t from = jj_utf8_offset(v->u.s.p, v->u.s.n, (size_t)(start < 0 ? 0 : start));
    if (step == 1) {
        size_t to = from + jj_utf8_offset(v->u.s.p + from, v->u.s.n - from, count);
        return *out = jj_substr(v, from, to), FM_OK;
    }
    size_t ncp = jj_utf8_count(v->u.s.p, v->u.s.n),
           *offs = jj_alloc(c->a, (ncp + 1) * sizeof *offs);
    jj_buf b = {.max = c->lim.max_output};
    if (!offs) return jj_oom(c, at);
    for (size_t i = 0, k = 0; k <= ncp; k++) {
        offs[k] = i;
        if (i < v->u.s.n) jj_utf8_next(v->u.s.p, v->u.s.n, &i);
    }
    fm_status st = jj_charge(c, at, v->u.s.n);
    bool over = false;
    for (size_t k = 0; st == FM_OK && k < count; k++) {
        size_t i = (size_t)(start + (int64_t)k * step);
        if (jj_buf_put(&b, v->u.s.p + offs[i], offs[i + 1] - offs[i],
                       v->u.s.m ? v->u.s.m + offs[i] : NULL, &over))
            st = jj_buf_fail(c, at, over);
    }
    if (st == FM_OK && jj_buf_to_value(c->a, &b, out)) st = jj_oom(c, at);
    jj_buf_free(&b);
    return st;
}

fm_status jj_eval_slice(jj_ctx *c, jj_scope *s, const jj_node *n, jj_value *out) {
    jj_value v;
    int64_t start, stop, step;
    fm_status st = jj_eval(c, s, n->a, &v);
    if (st == FM_OK) st = slice_part(c, s, n->d, 1, &step);
    if (st != FM_OK) return st;
    if (step == 0) return jj_fail(c, n, FM_ERR_INPUT, "slice step cannot be zero");
    if ((st = slice_part(c, s, n->b, step < 0 ? INT64_MAX : 0, &start)) != FM_OK) return st;
    if ((st = slice_part(c, s, n->c, step < 0 ? INT64_MIN : INT64_MAX, &stop)) != FM_OK) return st;
    if (v.t == JT_UNDEF) return jj_undefined_error(c, n, &v);
    if (v.t != JT_STR && v.t != JT_LIST) return *out = jj_undef(NULL, 0), FM_OK;
    int64_t len = v.t == JT_STR ? (int64_t)jj_utf8_count(v.u.s.p, v.u.s.n) : (int64_t)v.u.l->n;
    size_t count = slice_adjust(len, &start, &stop, step);
    if (v.t == JT_STR) return slice_str(c, n, &v, start, step, count, out);
    st = jj_new_list(c, n, count, out);
    for (size_t k = 0; st == FM_OK && k < count; k++)
        out->u.l->v[k] = v.u.l->v[start + (int64_t)k * step];
    out->tuple = v.tuple;
    return st;
}

/* ---- arithmetic ---------------------------------------------------------------------------------
 */
static bool is_num(const jj_value *v) {
    return v->t == JT_INT || v->t == JT_FLOAT || v->t == JT_BOOL;
}
static bool is_intlike(const jj_value *v) {
    return v->t == JT_INT || v->t == JT_BOOL;
}
static int64_t ival(const jj_value *v) {
    return v->t == JT_INT ? v->u.i : v->u.b;
}
static double fval(const jj_value *v) {
    return v->t == JT_FLOAT ? v->u.f : (double)ival(v);
}

static const char *op_text(int op) {
    static const char *const t[] = {"",   "+",  "-", "*",  "/", "//", "%",  "**",    "~",
                                    "==", "!=", "<", "<=", ">", ">=", "in", "not in"};
    return op > 0 && op < (int)(sizeof t / sizeof *t) ? t[op] : "?";
}

static fm_status type_error(jj_ctx *c, const jj_node *at, int op, const jj_value *a,
                            const jj_value *b) {
    if (a->t == JT_UNDEF) return jj_undefined_error(c, at, a);
    if (b->t == JT_UNDEF) return jj_undefined_error(c, at, b);
    return jj_fail(c, at, FM_ERR_INPUT, "unsupported operand type(s) for %s: '%s' and '%s'",
                   op_text(op), jj_type_name(a), jj_type_name(b));
}

static fm_status overflow(jj_ctx *c, const jj_node *at) {
    return jj_fail(c, at, FM_ERR_OVERFLOW, "integer result outside the 64-bit range");
}

static fm_status int_arith(jj_ctx *c, const jj_node *at, int op, int64_t x, int64_t y,
                           jj_value *out) {
    int64_t r = 0;
    bool ovf = false;
    if ((op == JO_FLOORDIV || op == JO_MOD) && y == 0)
        return jj_fail(c, at, FM_ERR_INPUT, "integer division or modulo by zero");
    switch (op) {
    case JO_ADD:
        ovf = __builtin_add_overflow(x, y, &r);
        break;
    case JO_SUB:
        ovf = __builtin_sub_overflow(x, y, &r);
        break;
    case JO_MUL:
        ovf = __builtin_mul_overflow(x, y, &r);
        break;
    case JO_FLOORDIV:
        if (x == INT64_MIN && y == -1) return overflow(c, at);
        r = x / y - ((x % y != 0) && ((x < 0) != (y < 0)));
        break;
    case JO_MOD:
        if (y == -1) return *out = jj_int(0), FM_OK;
        r = x % y;
        if (r != 0 && ((r < 0) != (y < 0))) r += y;
        break;
    default: /* JO_POW with y >= 0 */
        r = 1;
        for (int64_t b = x, e = y; e > 0 && !ovf; e >>= 1) {
            if (e & 1) ovf |= __builtin_mul_overflow(r, b, &r);
            if (e > 1) ovf |= __builtin_mul_overflow(b, b, &b);
        }
    }
    if (ovf) return overflow(c, at);
    *out = jj_int(r);
    return FM_OK;
}

/* Python float // and %: the sign of the remainder follows the divisor. */
static double py_fmod(double x, double y) {
    double m = fmod(x, y);
    if (m != 0.0) return (y < 0) != (m < 0) ? m + y : m;
    return copysign(0.0, y);
}

/* CPython's float_floor_div. */
static double py_floordiv(double x, double y) {
    double mod = fmod(x, y), div = (x - mod) / y;
    if (mod != 0.0 && (y < 0) != (mod < 0)) div -= 1.0;
    if (div == 0.0) return copysign(0.0, x / y);
    double f = floor(div);
    return div - f > 0.5 ? f + 1.0 : f;
}

static fm_status float_arith(jj_ctx *c, const jj_node *at, int op, double x, double y,
                             jj_value *out) {
    if ((op == JO_DIV || op == JO_FLOORDIV || op == JO_MOD) && y == 0.0)
        return jj_fail(c, at, FM_ERR_INPUT, "float division by zero");
    double r;
    switch (op) {
    case JO_ADD:
        r = x + y;
        break;
    case JO_SUB:
        r = x - y;
        break;
    case JO_MUL:
        r = x * y;
        break;
    case JO_DIV:
        r = x / y;
        break;
    case JO_MOD:
        r = py_fmod(x, y);
        break;
    case JO_FLOORDIV:
        r = py_floordiv(x, y);
        break;
    default:
        if (x == 0.0 && y < 0)
            return jj_fail(c, at, FM_ERR_INPUT, "0.0 cannot be raised to a negative power");
        if (x < 0 && y != floor(y))
            return jj_fail(c, at, FM_ERR_UNSUPPORTED,
                           "negative number to a fractional power (complex result)");
        r = pow(x, y);
    }
    *out = jj_float(r);
    return FM_OK;
}

static fm_status repeat(jj_ctx *c, const jj_node *at, const jj_value *seq, int64_t times,
                        jj_value *out) {
    size_t t = times > 0 ? (size_t)times : 0;
    if (seq->t == JT_LIST ? seq->u.l->n == 0 : seq->u.s.n == 0)
        t = 0; /* empty * n: no n-step loop */
    if (t == 0 && seq->t == JT_STR) return *out = jj_str("", 0, NULL), FM_OK;
    if (seq->t == JT_LIST) {
        uint64_t n;
        if (fm_mul_u64(seq->u.l->n, t, &n) || n > c->lim.max_output)
            return jj_buf_fail(c, at, true);
        fm_status st = jj_new_list(c, at, (size_t)n, out);
        for (size_t i = 0; st == FM_OK && i < n; i++)
            out->u.l->v[i] = seq->u.l->v[i % seq->u.l->n];
        out->tuple = seq->tuple;
        return st;
    }
    uint64_t n;
    if (fm_mul_u64(seq->u.s.n, t, &n) || n > c->lim.max_output) return jj_buf_fail(c, at, true);
    jj_buf b = {.max = c->lim.max_output};
    bool over = false;
    fm_status st = jj_charge(c, at, n);
    for (size_t i = 0; st == FM_OK && i < t; i++)
        if (jj_buf_put(&b, seq->u.s.p, seq->u.s.n, seq->u.s.m, &over))
            st = jj_buf_fail(c, at, over);
    if (st == FM_OK && jj_buf_to_value(c->a, &b, out)) st = jj_oom(c, at);
    jj_buf_free(&b);
    return st;
}

static fm_status concat_lists(jj_ctx *c, const jj_node *at, const jj_value *a, const jj_value *b,
                              jj_value *out) {
    size_t n = a->u.l->n + b->u.l->n;
    fm_status st = jj_new_list(c, at, n, out);
    if (st != FM_OK) return st;
    memcpy(out->u.l->v, a->u.l->v, a->u.l->n * sizeof(jj_value));
    memcpy(out->u.l->v + a->u.l->n, b->u.l->v, b->u.l->n * sizeof(jj_value));
    out->tuple = a->tuple;
    return FM_OK;
}

static fm_status binary(jj_ctx *c, const jj_node *at, int op, const jj_value *a, const jj_value *b,
                        jj_value *out) {
    if (op == JO_CONCAT) {
        jj_value x, y;
        fm_status st = jj_stringify(c, at, a->t == JT_UNDEF ? &(jj_value){.t = JT_STR} : a, &x);
        if (st == FM_OK)
            st = jj_stringify(c, at, b->t == JT_UNDEF ? &(jj_value){.t = JT_STR} : b, &y);
        return st == FM_OK ? jj_concat(c, at, &x, &y, out) : st;
    }
    if (is_num(a) && is_num(b)) {
        if (is_intlike(a) && is_intlike(b) && op != JO_DIV && !(op == JO_POW && ival(b) < 0))
            return int_arith(c, at, op, ival(a), ival(b), out);
        return float_arith(c, at, op, fval(a), fval(b), out);
    }
    if (op == JO_ADD && a->t == JT_STR && b->t == JT_STR) return jj_concat(c, at, a, b, out);
    if (op == JO_ADD && a->t == JT_LIST && b->t == JT_LIST && a->tuple == b->tuple)
        return concat_lists(c, at, a, b, out);
    if (op == JO_MUL && (a->t == JT_STR || a->t == JT_LIST) && is_intlike(b))
        return repeat(c, at, a, ival(b), out);
    if (op == JO_MUL && (b->t == JT_STR || b->t == JT_LIST) && is_intlike(a))
        return repeat(c, at, b, ival(a), out);
    if (op == JO_MOD && a->t == JT_STR)
        return jj_fail(c, at, FM_ERR_UNSUPPORTED, "string formatting with '%%' is not supported");
    return type_error(c, at, op, a, b);
}

fm_status jj_eval_binary(jj_ctx *c, jj_scope *s, const jj_node *n, jj_value *out) {
    jj_value a, b;
    fm_status st = jj_eval(c, s, n->a, &a);
    if (st == FM_OK) st = jj_eval(c, s, n->b, &b);
    return st == FM_OK ? binary(c, n, n->op, &a, &b, out) : st;
}

fm_status jj_eval_unary(jj_ctx *c, jj_scope *s, const jj_node *n, jj_value *out) {
    jj_value v;
    fm_status st = jj_eval(c, s, n->a, &v);
    if (st != FM_OK) return st;
    if (v.t == JT_UNDEF) return jj_undefined_error(c, n, &v);
    bool neg = n->kind == JN_NEG;
    if (v.t == JT_FLOAT) return *out = jj_float(neg ? -v.u.f : v.u.f), FM_OK;
    if (!is_intlike(&v))
        return jj_fail(c, n, FM_ERR_INPUT, "bad operand type for unary %c: '%s'", neg ? '-' : '+',
                       jj_type_name(&v));
    if (neg && ival(&v) == INT64_MIN) return overflow(c, n);
    *out = jj_int(neg ? -ival(&v) : ival(&v));
    return FM_OK;
}

/* ---- comparisons --------------------------------------------------------------------------------
 */
static fm_status contains(jj_ctx *c, const jj_node *at, const jj_value *hay, const jj_value *needle,
                          bool *out) {
    *out = false;
    switch (hay->t) {
    case JT_UNDEF:
        return FM_OK;
    case JT_STR:
        if (needle->t != JT_STR)
            return jj_fail(c, at, FM_ERR_INPUT,
                           "'in <string>' requires string as left operand, not %s",
                           jj_type_name(needle));
        *out = needle->u.s.n == 0 ||
               memmem(hay->u.s.p, hay->u.s.n, needle->u.s.p, needle->u.s.n) != NULL;
        return jj_charge(c, at, hay->u.s.n);
    case JT_LIST:
        for (size_t i = 0; i < hay->u.l->n && !*out; i++)
            *out = jj_equal(&hay->u.l->v[i], needle);
        return jj_charge(c, at, hay->u.l->n);
    case JT_DICT:
        *out = jj_dict_find(hay->u.d, needle) != NULL;
        return jj_charge(c, at, hay->u.d->n);
    default:
        return jj_fail(c, at, FM_ERR_INPUT, "argument of type '%s' is not iterable",
                       jj_type_name(hay));
    }
}

/* Ordering (<0, 0, >0) for numbers, strings and sequences; error for other pairs. */
static fm_status order(jj_ctx *c, const jj_node *at, int op, const jj_value *a, const jj_value *b,
                       int *out, int level) {
    if (is_num(a) && is_num(b)) {
        if (is_intlike(a) && is_intlike(b))
            *out = (ival(a) > ival(b)) - (ival(a) < ival(b));
        else
            *out = (fval(a) > fval(b)) - (fval(a) < fval(b));
        return FM_OK;
    }
    if (a->t == JT_STR && b->t == JT_STR) {
        size_t n = a->u.s.n < b->u.s.n ? a->u.s.n : b->u.s.n;
        int r = memcmp(a->u.s.p, b->u.s.p, n);
        *out = r ? (r > 0) - (r < 0) : (a->u.s.n > b->u.s.n) - (a->u.s.n < b->u.s.n);
        return FM_OK;
    }
    if (a->t == JT_LIST && b->t == JT_LIST && a->tuple == b->tuple && level < 100) {
        size_t i = 0;
        while (i < a->u.l->n && i < b->u.l->n && jj_equal(&a->u.l->v[i], &b->u.l->v[i]))
            i++;
        if (i < a->u.l->n && i < b->u.l->n)
            return order(c, at, op, &a->u.l->v[i], &b->u.l->v[i], out, level + 1);
        *out = (a->u.l->n > b->u.l->n) - (a->u.l->n < b->u.l->n);
        return FM_OK;
    }
    if (a->t == JT_UNDEF) return jj_undefined_error(c, at, a);
    if (b->t == JT_UNDEF) return jj_undefined_error(c, at, b);
    return jj_fail(c, at, FM_ERR_INPUT, "'%s' not supported between instances of '%s' and '%s'",
                   op_text(op), jj_type_name(a), jj_type_name(b));
}

fm_status jj_compare(jj_ctx *c, const jj_node *at, int op, const jj_value *a, const jj_value *b,
                     bool *out) {
    int o = 0;
    fm_status st = FM_OK;
    switch (op) {
    case JO_EQ:
        *out = jj_equal(a, b);
        return FM_OK;
    case JO_NE:
        *out = !jj_equal(a, b);
        return FM_OK;
    case JO_IN:
        return contains(c, at, b, a, out);
    case JO_NOTIN:
        st = contains(c, at, b, a, out), *out = !*out;
        return st;
    default:
        break;
    }
    if ((st = order(c, at, op, a, b, &o, 0)) != FM_OK) return st;
    *out = op == JO_LT ? o < 0 : op == JO_LE ? o <= 0 : op == JO_GT ? o > 0 : o >= 0;
    return FM_OK;
}
