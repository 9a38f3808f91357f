/* Template parser: tokens -> statement and expression nodes, with Jinja2's grammar and operator
 * precedence (parser.py): condexpr < or < and < not < compare < + - < ~ < * / // % < ** <
 * unary - + < postfix (. [] ()) and filters / tests. Anything outside the supported subset is
 * refused here, naming the construct and its line. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "text/jinja.h"

typedef struct parser {
    const jj_tok *t;
    size_t n, i;
    jj_arena *a;
    const char *origin;
    fm_error *err;
    int depth;      /* expression and block nesting */
    int loop_depth; /* for loops enclosing the current statement (macro bodies reset it) */
} parser;

static fm_status pfail(parser *p, uint32_t line, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
static fm_status pfail(parser *p, uint32_t line, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return fm_error_set(p->err, FM_ERR_INPUT, "%s: line %u: %s", p->origin, line, msg);
}

static fm_status poom(parser *p) {
    return fm_error_set(p->err, FM_ERR_NOMEM, "%s: out of memory", p->origin);
}

static const jj_tok *cur(parser *p) {
    return &p->t[p->i];
}
static const jj_tok *look(parser *p) {
    return &p->t[p->i + 1 < p->n ? p->i + 1 : p->i];
}
static void adv(parser *p) {
    if (p->i + 1 < p->n) p->i++;
}
static bool is_op(const jj_tok *t, const char *op) {
    return t->type == TK_OP && t->n == strlen(op) && !memcmp(t->s, op, t->n);
}
static bool is_name(const jj_tok *t, const char *kw) {
    return t->type == TK_NAME && t->n == strlen(kw) && !memcmp(t->s, kw, t->n);
}

/* How a token is named in messages. */
static const char *describe(const jj_tok *t, char *buf, size_t size) {
    switch (t->type) {
    case TK_EOF:
        return "end of template";
    case TK_DATA:
        return "template data";
    case TK_VAR_BEGIN:
        return "'{{'";
    case TK_VAR_END:
        return "'}}'";
    case TK_BLOCK_BEGIN:
        return "'{%'";
    case TK_BLOCK_END:
        return "'%}'";
    case TK_STRING:
        return "string";
    case TK_INT:
        return "integer";
    case TK_FLOAT:
        return "float";
    default:
        snprintf(buf, size, "'%.*s'", (int)(t->n > 64 ? 64 : t->n), t->s);
        return buf;
    }
}

static fm_status unexpected(parser *p, const char *wanted) {
    char b[96];
    return pfail(p, cur(p)->line, "expected %s, got %s", wanted, describe(cur(p), b, sizeof b));
}

static fm_status expect_op(parser *p, const char *op) {
    char w[16];
    if (!is_op(cur(p), op)) return snprintf(w, sizeof w, "'%s'", op), unexpected(p, w);
    adv(p);
    return FM_OK;
}

static jj_node *node(parser *p, int kind, uint32_t line) {
    jj_node *n = jj_alloc(p->a, sizeof *n);
    if (n) n->kind = (uint16_t)kind, n->line = line;
    return n;
}

/* Appends to a node list (capacity: the next power of two, implicit). */
static int push(parser *p, jj_nodes *l, jj_node *x) {
    if (l->n == 0 || (l->n & (l->n - 1)) == 0) {
        jj_node **v = jj_alloc(p->a, (l->n ? l->n * 2 : 1) * sizeof *v);
        if (!v) return -1;
        if (l->n) memcpy(v, l->v, l->n * sizeof *v);
        l->v = v;
    }
    l->v[l->n++] = x;
    return 0;
}

static fm_status enter(parser *p) {
    if (++p->depth > JJ_MAX_NESTING)
        return pfail(p, cur(p)->line, "nested too deeply (limit %d)", JJ_MAX_NESTING);
    return FM_OK;
}

/* ---- expressions ------------------------------------------------------------------------------
 */
static fm_status parse_expr(parser *p, bool condexpr, jj_node **out);
static fm_status parse_tuple(parser *p, bool condexpr, bool explicit_parens, jj_node **out);
static fm_status parse_unary(parser *p, bool with_filter, jj_node **out);
static fm_status parse_primary(parser *p, jj_node **out);
static fm_status parse_postfix(parser *p, jj_node **io);

/* "(args)" of a call, filter or test: positional, then name=value. */
static fm_status parse_call_args(parser *p, jj_nodes *args) {
    fm_status st = expect_op(p, "(");
    bool kw_seen = false;
    while (st == FM_OK && !is_op(cur(p), ")")) {
        if (args->n && (st = expect_op(p, ",")) != FM_OK) break;
        if (is_op(cur(p), ")")) break; /* trailing comma */
        if (is_op(cur(p), "*") || is_op(cur(p), "**"))
            return pfail(p, cur(p)->line, "*args / **kwargs in calls are not supported");
        jj_node *x = NULL;
        if (cur(p)->type == TK_NAME && is_op(look(p), "=")) {
            x = node(p, JN_KWARG, cur(p)->line);
            if (!x) return poom(p);
            x->name = cur(p)->s, x->nlen = cur(p)->n;
            adv(p), adv(p);
            st = parse_expr(p, true, &x->a);
            kw_seen = true;
        } else {
            if (kw_seen)
                return pfail(p, cur(p)->line, "positional argument after a keyword argument");
            st = parse_expr(p, true, &x);
        }
        if (st == FM_OK && push(p, args, x)) st = poom(p);
    }
    return st == FM_OK ? expect_op(p, ")") : st;
}

/* Subscript contents: an expression or a slice a:b:c (parts optional). */
static fm_status parse_subscript(parser *p, jj_node **io) {
    uint32_t line = cur(p)->line;
    jj_node *parts[3] = {NULL, NULL, NULL};
    fm_status st = FM_OK;
    int k = 0;
    adv(p); /* [ */
    if (!is_op(cur(p), ":")) st = parse_expr(p, true, &parts[0]);
    if (st == FM_OK && !is_op(cur(p), ":")) {
        if (is_op(cur(p), ",")) return pfail(p, line, "tuple subscripts are not supported");
        jj_node *g = node(p, JN_GETITEM, line);
        if (!g) return poom(p);
        g->a = *io, g->b = parts[0], *io = g;
        return expect_op(p, "]");
    }
    while (st == FM_OK && k < 2 && is_op(cur(p), ":")) {
        adv(p), k++;
        if (!is_op(cur(p), "]") && !is_op(cur(p), ":")) st = parse_expr(p, true, &parts[k]);
    }
    if (st != FM_OK) return st;
    jj_node *s = node(p, JN_SLICE, line);
    if (!s) return poom(p);
    s->a = *io, s->b = parts[0], s->c = parts[1], s->d = parts[2], *io = s;
    return expect_op(p, "]");
}

static fm_status parse_postfix(parser *p, jj_node **io) {
    for (;;) {
        const jj_tok *t = cur(p);
        fm_status st = FM_OK;
        if (is_op(t, ".")) {
            adv(p);
            jj_node *g = node(p, cur(p)->type == TK_INT ? JN_GETITEM : JN_GETATTR, t->line);
            if (!g) return poom(p);
            g->a = *io;
            if (cur(p)->type == TK_NAME) {
                g->name = cur(p)->s, g->nlen = cur(p)->n;
            } else if (cur(p)->type == TK_INT) {
                if (!(g->b = node(p, JN_CONST, t->line))) return poom(p);
                g->b->cval = jj_int(cur(p)->i);
            } else {
                return unexpected(p, "an attribute name");
            }
            adv(p);
            *io = g;
        } else if (is_op(t, "[")) {
            st = parse_subscript(p, io);
        } else if (is_op(t, "(")) {
            jj_node *c = node(p, JN_CALL, t->line);
            if (!c) return poom(p);
            c->a = *io, *io = c;
            st = parse_call_args(p, &c->args);
        } else {
            return FM_OK;
        }
        if (st != FM_OK) return st;
    }
}

static fm_status parse_filter_or_test(parser *p, jj_node **io, bool test) {
    uint32_t line = cur(p)->line;
    adv(p); /* | or is */
    jj_node *f = node(p, test ? JN_TEST : JN_FILTER, line);
    if (!f) return poom(p);
    if (test && is_name(cur(p), "not")) f->op = 1, adv(p);
    if (cur(p)->type != TK_NAME) return unexpected(p, test ? "a test name" : "a filter name");
    f->name = cur(p)->s, f->nlen = cur(p)->n, f->a = *io, *io = f;
    if (!(test ? jj_test_known : jj_filter_known)(f->name, f->nlen))
        return pfail(p, line, "unknown %s '%.*s'", test ? "test" : "filter", (int)f->nlen, f->name);
    adv(p);
    if (is_op(cur(p), ".")) return pfail(p, line, "dotted filter or test names are not supported");
    if (is_op(cur(p), "(")) return parse_call_args(p, &f->args);
    const jj_tok *t = cur(p);
    bool arg = test &&
               (t->type == TK_NAME || t->type == TK_STRING || t->type == TK_INT ||
                t->type == TK_FLOAT || is_op(t, "(") || is_op(t, "[") || is_op(t, "{")) &&
               !is_name(t, "else") && !is_name(t, "or") && !is_name(t, "and");
    if (!arg) return FM_OK;
    if (is_name(t, "is")) return pfail(p, t->line, "tests cannot be chained with 'is'");
    jj_node *x = NULL;
    fm_status st = parse_primary(p, &x);
    if (st == FM_OK) st = parse_postfix(p, &x);
    if (st == FM_OK && push(p, &f->args, x)) st = poom(p);
    return st;
}

static fm_status parse_filters(parser *p, jj_node **io) {
    for (;;) {
        fm_status st;
        if (is_op(cur(p), "|"))
            st = parse_filter_or_test(p, io, false);
        else if (is_name(cur(p), "is"))
            st = parse_filter_or_test(p, io, true);
        else if (is_op(cur(p), "(")) {
            jj_node *c = node(p, JN_CALL, cur(p)->line);
            if (!c) return poom(p);
            c->a = *io, *io = c;
            st = parse_call_args(p, &c->args);
        } else
            return FM_OK;
        if (st != FM_OK) return st;
    }
}

/* [a, b] or {k: v}: items until the closing bracket, trailing comma allowed. */
static fm_status parse_items(parser *p, jj_node *x, const char *close, bool pairs) {
    fm_status st = FM_OK;
    adv(p);
    while (st == FM_OK && !is_op(cur(p), close)) {
        if (x->args.n && (st = expect_op(p, ",")) != FM_OK) break;
        if (is_op(cur(p), close)) break;
        jj_node *it = NULL;
        if (pairs) {
            if (!(it = node(p, JN_PAIR, cur(p)->line))) return poom(p);
            st = parse_expr(p, true, &it->a);
            if (st == FM_OK) st = expect_op(p, ":");
            if (st == FM_OK) st = parse_expr(p, true, &it->b);
        } else {
            st = parse_expr(p, true, &it);
        }
        if (st == FM_OK && push(p, &x->args, it)) st = poom(p);
    }
    return st == FM_OK ? expect_op(p, close) : st;
}

static fm_status parse_literal(parser *p, jj_node **out) {
    const jj_tok *t = cur(p);
    jj_node *x = node(p, JN_CONST, t->line);
    if (!x) return poom(p);
    if (t->type == TK_INT) {
        x->cval = jj_int(t->i);
    } else if (t->type == TK_FLOAT) {
        x->cval = jj_float(t->f);
    } else { /* adjacent strings concatenate */
        size_t len = 0, k = p->i;
        for (; p->t[k].type == TK_STRING; k++)
            len += p->t[k].n;
        char *s = jj_alloc(p->a, len + 1);
        if (!s) return poom(p);
        for (len = 0; cur(p)->type == TK_STRING; adv(p))
            memcpy(s + len, cur(p)->s, cur(p)->n), len += cur(p)->n;
        x->cval = jj_str(s, len, NULL);
        *out = x;
        return FM_OK;
    }
    adv(p);
    *out = x;
    return FM_OK;
}

static fm_status parse_primary(parser *p, jj_node **out) {
    const jj_tok *t = cur(p);
    fm_status st = enter(p);
    if (st != FM_OK) return st;
    if (t->type == TK_NAME) {
        jj_node *x = node(p, JN_CONST, t->line);
        if (!x) return poom(p);
        if (is_name(t, "true") || is_name(t, "True"))
            x->cval = jj_bool(true);
        else if (is_name(t, "false") || is_name(t, "False"))
            x->cval = jj_bool(false);
        else if (is_name(t, "none") || is_name(t, "None"))
            x->cval = jj_none();
        else
            x->kind = JN_NAME, x->name = t->s, x->nlen = t->n;
        adv(p);
        *out = x;
    } else if (t->type == TK_STRING || t->type == TK_INT || t->type == TK_FLOAT) {
        st = parse_literal(p, out);
    } else if (is_op(t, "(")) {
        adv(p);
        if (is_op(cur(p), ")")) {
            if (!(*out = node(p, JN_TUPLE, t->line))) return poom(p);
        } else if ((st = parse_tuple(p, true, true, out)) != FM_OK) {
            return st;
        }
        st = expect_op(p, ")");
    } else if (is_op(t, "[") || is_op(t, "{")) {
        bool dict = is_op(t, "{");
        if (!(*out = node(p, dict ? JN_DICT : JN_LIST, t->line))) return poom(p);
        st = parse_items(p, *out, dict ? "}" : "]", dict);
    } else {
        st = unexpected(p, "an expression");
    }
    p->depth--;
    return st;
}

static fm_status parse_unary(parser *p, bool with_filter, jj_node **out) {
    const jj_tok *t = cur(p);
    fm_status st = enter(p);
    if (st == FM_OK && (is_op(t, "-") || is_op(t, "+"))) {
        jj_node *u = node(p, is_op(t, "-") ? JN_NEG : JN_POS, t->line);
        if (!u) return poom(p);
        adv(p);
        st = parse_unary(p, false, &u->a);
        *out = u;
    } else if (st == FM_OK) {
        st = parse_primary(p, out);
    }
    if (st == FM_OK) st = parse_postfix(p, out);
    if (st == FM_OK && with_filter) st = parse_filters(p, out);
    p->depth--;
    return st;
}

typedef fm_status (*sub_fn)(parser *p, jj_node **out);

/* Left-associative binary level: operands from `sub`, operators from ops[] (NULL-terminated). */
static fm_status binary_level(parser *p, jj_node **out, sub_fn sub, const char *const *ops,
                              const int *codes) {
    fm_status st = sub(p, out);
    for (;;) {
        int k = 0;
        while (st == FM_OK && ops[k] && !is_op(cur(p), ops[k]))
            k++;
        if (st != FM_OK || !ops[k]) return st;
        jj_node *b = node(p, JN_BINARY, cur(p)->line);
        if (!b) return poom(p);
        adv(p);
        b->op = (uint16_t)codes[k], b->a = *out;
        st = sub(p, &b->b);
        *out = b;
    }
}

static fm_status parse_unary_f(parser *p, jj_node **out) {
    return parse_unary(p, true, out);
}
static fm_status parse_pow(parser *p, jj_node **out) {
    static const char *const ops[] = {"**", NULL};
    static const int codes[] = {JO_POW};
    return binary_level(p, out, parse_unary_f, ops, codes);
}
static fm_status parse_math2(parser *p, jj_node **out) {
    static const char *const ops[] = {"*", "/", "//", "%", NULL};
    static const int codes[] = {JO_MUL, JO_DIV, JO_FLOORDIV, JO_MOD};
    return binary_level(p, out, parse_pow, ops, codes);
}
static fm_status parse_concat(parser *p, jj_node **out) {
    static const char *const ops[] = {"~", NULL};
    static const int codes[] = {JO_CONCAT};
    return binary_level(p, out, parse_math2, ops, codes);
}
static fm_status parse_math1(parser *p, jj_node **out) {
    static const char *const ops[] = {"+", "-", NULL};
    static const int codes[] = {JO_ADD, JO_SUB};
    return binary_level(p, out, parse_concat, ops, codes);
}

static int compare_op(parser *p) {
    static const char *const ops[] = {"==", "!=", "<", "<=", ">", ">="};
    static const int codes[] = {JO_EQ, JO_NE, JO_LT, JO_LE, JO_GT, JO_GE};
    for (int k = 0; k < 6; k++)
        if (is_op(cur(p), ops[k])) return adv(p), codes[k];
    if (is_name(cur(p), "in")) return adv(p), JO_IN;
    if (is_name(cur(p), "not") && is_name(look(p), "in")) return adv(p), adv(p), JO_NOTIN;
    return 0;
}

static fm_status parse_compare(parser *p, jj_node **out) {
    jj_node *first = NULL, *cmp = NULL;
    fm_status st = parse_math1(p, &first);
    for (int op; st == FM_OK && (op = compare_op(p));) {
        if (!cmp) {
            if (!(cmp = node(p, JN_COMPARE, first->line))) return poom(p);
            cmp->a = first;
        }
        jj_node *o = node(p, JN_OPERAND, cur(p)->line);
        if (!o) return poom(p);
        o->op = (uint16_t)op;
        st = parse_math1(p, &o->a);
        if (st == FM_OK && push(p, &cmp->args, o)) st = poom(p);
    }
    *out = cmp ? cmp : first;
    return st;
}

static fm_status parse_not(parser *p, jj_node **out) {
    if (!is_name(cur(p), "not")) return parse_compare(p, out);
    jj_node *x = node(p, JN_NOT, cur(p)->line);
    if (!x) return poom(p);
    adv(p);
    fm_status st = enter(p);
    if (st == FM_OK) st = parse_not(p, &x->a);
    p->depth--;
    *out = x;
    return st;
}

static fm_status logic_level(parser *p, jj_node **out, sub_fn sub, const char *kw, int kind) {
    fm_status st = sub(p, out);
    while (st == FM_OK && is_name(cur(p), kw)) {
        jj_node *x = node(p, kind, cur(p)->line);
        if (!x) return poom(p);
        adv(p);
        x->a = *out;
        st = sub(p, &x->b);
        *out = x;
    }
    return st;
}
static fm_status parse_and(parser *p, jj_node **out) {
    return logic_level(p, out, parse_not, "and", JN_AND);
}
static fm_status parse_or(parser *p, jj_node **out) {
    return logic_level(p, out, parse_and, "or", JN_OR);
}

static fm_status parse_expr(parser *p, bool condexpr, jj_node **out) {
    fm_status st = enter(p);
    if (st == FM_OK) st = parse_or(p, out);
    while (st == FM_OK && condexpr && is_name(cur(p), "if")) {
        jj_node *c = node(p, JN_COND, cur(p)->line);
        if (!c) return poom(p);
        adv(p);
        c->a = *out;
        st = parse_or(p, &c->b);
        if (st == FM_OK && is_name(cur(p), "else")) {
            adv(p);
            st = parse_expr(p, true, &c->c);
        }
        *out = c;
    }
    p->depth--;
    return st;
}

/* Expressions separated by commas: one without a comma is itself, else a tuple. */
static fm_status parse_tuple(parser *p, bool condexpr, bool explicit_parens, jj_node **out) {
    jj_node *tup = NULL, *x = NULL;
    uint32_t line = cur(p)->line;
    for (;;) {
        const jj_tok *t = cur(p);
        if (tup &&
            (t->type == TK_VAR_END || t->type == TK_BLOCK_END || is_op(t, ")") || is_name(t, "if")))
            break;
        fm_status st = parse_expr(p, condexpr, &x);
        if (st != FM_OK) return st;
        if (!is_op(cur(p), ",")) {
            if (!tup) return *out = x, FM_OK;
            if (push(p, &tup->args, x)) return poom(p);
            break;
        }
        adv(p);
        if (!tup && !(tup = node(p, JN_TUPLE, line))) return poom(p);
        if (push(p, &tup->args, x)) return poom(p);
    }
    (void)explicit_parens;
    *out = tup;
    return FM_OK;
}

/* ---- statements -------------------------------------------------------------------------------
 */
static fm_status parse_body(parser *p, const char *const *ends, jj_nodes *out, const char *block);

static fm_status expect_block_end(parser *p) {
    if (cur(p)->type != TK_BLOCK_END) return unexpected(p, "end of statement block '%}'");
    adv(p);
    return FM_OK;
}

/* for / set targets: a name, a tuple of names, or (set only) namespace.attr. */
static fm_status parse_target(parser *p, bool allow_attr, jj_node **out) {
    uint32_t line = cur(p)->line;
    jj_node *tup = NULL;
    bool paren = is_op(cur(p), "(");
    if (paren) adv(p);
    for (;;) {
        if (cur(p)->type != TK_NAME) return unexpected(p, "a variable name");
        jj_node *x = node(p, JN_NAME, cur(p)->line);
        if (!x) return poom(p);
        x->name = cur(p)->s, x->nlen = cur(p)->n;
        adv(p);
        if (allow_attr && !tup && !paren && is_op(cur(p), ".")) {
            adv(p);
            if (cur(p)->type != TK_NAME) return unexpected(p, "an attribute name");
            jj_node *g = node(p, JN_GETATTR, line);
            if (!g) return poom(p);
            g->a = x, g->name = cur(p)->s, g->nlen = cur(p)->n;
            adv(p);
            return *out = g, FM_OK;
        }
        if (!is_op(cur(p), ",")) {
            if (tup && push(p, &tup->args, x)) return poom(p);
            if (!tup) *out = x;
            break;
        }
        adv(p);
        if (!tup && !(tup = node(p, JN_TUPLE, line))) return poom(p);
        if (push(p, &tup->args, x)) return poom(p);
        if (paren && is_op(cur(p), ")")) break;
    }
    if (tup) *out = tup;
    return paren ? expect_op(p, ")") : FM_OK;
}

static fm_status parse_for(parser *p, jj_node *f) {
    fm_status st = parse_target(p, false, &f->a);
    if (st == FM_OK && !is_name(cur(p), "in")) st = unexpected(p, "'in'");
    if (st == FM_OK) adv(p), st = parse_tuple(p, false, false, &f->b);
    if (st == FM_OK && is_name(cur(p), "if")) adv(p), st = parse_expr(p, true, &f->c);
    if (st == FM_OK && is_name(cur(p), "recursive"))
        return pfail(p, f->line, "recursive for loops are not supported");
    if (st == FM_OK) st = expect_block_end(p);
    static const char *const ends[] = {"endfor", "else", NULL}, *const ends2[] = {"endfor", NULL};
    p->loop_depth++;
    if (st == FM_OK) st = parse_body(p, ends, &f->body, "for");
    p->loop_depth--;
    if (st == FM_OK && is_name(cur(p), "else")) {
        adv(p);
        st = expect_block_end(p);
        if (st == FM_OK) st = parse_body(p, ends2, &f->orelse, "for");
    }
    if (st == FM_OK) adv(p), st = expect_block_end(p); /* endfor */
    return st;
}

static fm_status parse_if(parser *p, jj_node *n) {
    static const char *const ends[] = {"elif", "else", "endif", NULL}, *const ends2[] = {"endif",
                                                                                         NULL};
    fm_status st = parse_tuple(p, true, false, &n->a);
    if (st == FM_OK) st = expect_block_end(p);
    if (st == FM_OK) st = parse_body(p, ends, &n->body, "if");
    if (st != FM_OK) return st;
    if (is_name(cur(p), "elif")) {
        jj_node *e = node(p, JN_IF, cur(p)->line);
        if (!e) return poom(p);
        adv(p);
        if (push(p, &n->orelse, e)) return poom(p);
        if ((st = enter(p)) == FM_OK) st = parse_if(p, e); /* consumes the shared endif */
        p->depth--;
        return st;
    }
    if (is_name(cur(p), "else")) {
        adv(p);
        st = expect_block_end(p);
        if (st == FM_OK) st = parse_body(p, ends2, &n->orelse, "if");
    }
    if (st == FM_OK) adv(p), st = expect_block_end(p); /* endif */
    return st;
}

static fm_status parse_set(parser *p, jj_node *n) {
    fm_status st = parse_target(p, true, &n->a);
    if (st != FM_OK) return st;
    if (is_op(cur(p), "=")) {
        adv(p);
        st = parse_tuple(p, true, false, &n->b);
        return st == FM_OK ? expect_block_end(p) : st;
    }
    if (is_op(cur(p), "|"))
        return pfail(p, n->line, "filters on block assignments are not supported");
    if (n->a->kind != JN_NAME)
        return pfail(p, n->line, "a block assignment needs a plain variable name");
    static const char *const ends[] = {"endset", NULL};
    n->kind = JN_SETBLOCK;
    st = expect_block_end(p);
    if (st == FM_OK) st = parse_body(p, ends, &n->body, "set");
    if (st == FM_OK) adv(p), st = expect_block_end(p);
    return st;
}

static fm_status parse_macro(parser *p, jj_node *m) {
    if (cur(p)->type != TK_NAME) return unexpected(p, "a macro name");
    m->name = cur(p)->s, m->nlen = cur(p)->n;
    adv(p);
    fm_status st = expect_op(p, "(");
    while (st == FM_OK && !is_op(cur(p), ")")) {
        if (m->args.n && (st = expect_op(p, ",")) != FM_OK) break;
        if (cur(p)->type != TK_NAME) return unexpected(p, "a parameter name");
        jj_node *a = node(p, JN_PARAM, cur(p)->line);
        if (!a) return poom(p);
        a->name = cur(p)->s, a->nlen = cur(p)->n;
        adv(p);
        if (is_op(cur(p), "="))
            adv(p), st = parse_expr(p, true, &a->a);
        else if (m->args.n && m->args.v[m->args.n - 1]->a)
            return pfail(p, a->line, "a parameter without a default follows one with a default");
        if (st == FM_OK && push(p, &m->args, a)) st = poom(p);
    }
    if (st == FM_OK) st = expect_op(p, ")");
    if (st == FM_OK) st = expect_block_end(p);
    static const char *const ends[] = {"endmacro", NULL};
    int loops = p->loop_depth;
    p->loop_depth = 0;
    if (st == FM_OK) st = parse_body(p, ends, &m->orelse, "macro");
    p->loop_depth = loops;
    m->body = m->orelse, m->orelse = (jj_nodes){0};
    if (st == FM_OK) {
        adv(p);
        if (cur(p)->type == TK_NAME) adv(p); /* {% endmacro name %} */
        st = expect_block_end(p);
    }
    return st;
}

static bool name_in(const jj_tok *t, const char *const *list) {
    for (; list && *list; list++)
        if (is_name(t, *list)) return true;
    return false;
}

/* One {% ... %} statement, the cursor after "{%". */
static fm_status parse_statement(parser *p, jj_node **out) {
    static const char *const unsupported[] = {"include", "import",    "from", "extends",    "block",
                                              "call",    "filter",    "with", "autoescape", "do",
                                              "trans",   "pluralize", NULL};
    const jj_tok *t = cur(p);
    uint32_t line = t->line;
    char b[96];
    if (t->type != TK_NAME) return unexpected(p, "a statement name");
    if (name_in(t, unsupported))
        return pfail(p, line, "'%.*s' statements are not supported", (int)t->n, t->s);
    jj_node *n = node(p, JN_OUTPUT, line);
    if (!n) return poom(p);
    adv(p);
    *out = n;
    if (is_name(t, "for")) return n->kind = JN_FOR, parse_for(p, n);
    if (is_name(t, "if")) return n->kind = JN_IF, parse_if(p, n);
    if (is_name(t, "set")) return n->kind = JN_SET, parse_set(p, n);
    if (is_name(t, "macro")) return n->kind = JN_MACRO, parse_macro(p, n);
    if (is_name(t, "break") || is_name(t, "continue")) {
        if (!p->loop_depth) return pfail(p, line, "'%.*s' outside a for loop", (int)t->n, t->s);
        n->kind = is_name(t, "break") ? JN_BREAK : JN_CONTINUE;
        return expect_block_end(p);
    }
    if (is_name(t, "generation")) {
        static const char *const ends[] = {"endgeneration", NULL};
        n->kind = JN_SCOPE;
        fm_status st = expect_block_end(p);
        if (st == FM_OK) st = parse_body(p, ends, &n->body, "generation");
        if (st == FM_OK) adv(p), st = expect_block_end(p);
        return st;
    }
    return pfail(p, line, "unknown or misplaced statement %s", describe(t, b, sizeof b));
}

/* Statements until a {% NAME %} with NAME in ends (cursor left on NAME) or the end (ends NULL). */
static fm_status parse_body(parser *p, const char *const *ends, jj_nodes *out, const char *block) {
    fm_status st = enter(p);
    while (st == FM_OK) {
        const jj_tok *t = cur(p);
        jj_node *n = NULL;
        if (t->type == TK_EOF) {
            if (ends)
                st = pfail(p, t->line,
                           "unexpected end of template: '%s' block not closed (expected '%s')",
                           block, ends[0]);
            break;
        }
        if (t->type == TK_DATA) {
            if (!(n = node(p, JN_DATA, t->line))) return poom(p);
            n->cval = jj_str(t->s, t->n, NULL);
            adv(p);
        } else if (t->type == TK_VAR_BEGIN) {
            if (!(n = node(p, JN_OUTPUT, t->line))) return poom(p);
            adv(p);
            st = parse_tuple(p, true, false, &n->a);
            if (st == FM_OK && cur(p)->type != TK_VAR_END)
                st = unexpected(p, "end of print statement '}}'");
            if (st == FM_OK) adv(p);
        } else if (t->type == TK_BLOCK_BEGIN) {
            if (name_in(look(p), ends)) {
                adv(p);
                break;
            }
            adv(p);
            st = parse_statement(p, &n);
        } else {
            st = unexpected(p, "template data or a tag");
        }
        if (st == FM_OK && push(p, out, n)) st = poom(p);
    }
    p->depth--;
    return st;
}

fm_status jj_parse(const jj_toks *toks, jj_arena *a, const char *origin, jj_nodes *out,
                   fm_error *err) {
    parser p = {.t = toks->v, .n = toks->n, .a = a, .origin = origin, .err = err};
    memset(out, 0, sizeof *out);
    return parse_body(&p, NULL, out, "template");
}
