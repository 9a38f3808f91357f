/* Internal to src/text: the Jinja-subset interpreter behind chat templates. Lexer
 * (jinja_lex.c) -> parser (jinja_parse.c) -> tree-walking evaluator (jinja_eval.c) over values
 * (jinja_value.c) with the filters, tests and methods of jinja_builtins.c. Semantics follow
 * Python Jinja2 as transformers configures it (trim_blocks, lstrip_blocks, loopcontrols,
 * default Undefined); see docs/chat-template.md for the supported subset.
 *
 * Provenance: every string value carries an optional per-byte mask (1 = the byte came from user
 * data: messages and extra variables); template literals have none. Operations carry masks
 * through, and the render result is text plus a parallel mask. */
#ifndef FM_TEXT_JINJA_H
#define FM_TEXT_JINJA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fusemap/core.h"

/* ---- limits ---------------------------------------------------------------------------------- */
#define JJ_MAX_TEMPLATE_BYTES ((size_t)1 << 20) /* template source */
#define JJ_MAX_NESTING 100                      /* blocks and expression nesting while parsing */
#define JJ_MAX_NAME 256                         /* identifier length */

/* ---- arena: every value and AST node lives in one; freed at once ----------------------------- */
typedef struct jj_chunk jj_chunk;
typedef struct jj_arena {
    jj_chunk *head;
    size_t used;  /* bytes handed out (charged against limit) */
    size_t limit; /* 0 = unlimited */
    bool over;    /* the last failure was the limit, not out of memory */
} jj_arena;
void *jj_alloc(jj_arena *a, size_t n); /* 16-aligned, zeroed; NULL on OOM or over the limit */
void jj_arena_free(jj_arena *a);

/* ---- values ---------------------------------------------------------------------------------- */
typedef enum jj_type {
    JT_UNDEF, /* s.p/s.n: the name or key that was missing (for messages) */
    JT_NONE,
    JT_BOOL,
    JT_INT,
    JT_FLOAT,
    JT_STR,
    JT_LIST, /* also tuples (flag tuple) */
    JT_DICT,
    JT_NS,   /* namespace(): a mutable dict */
    JT_FUNC, /* macro, global function, bound method */
    JT_LOOP  /* the `loop` variable of a for */
} jj_type;

typedef struct jj_list jj_list;
typedef struct jj_dict jj_dict;
typedef struct jj_func jj_func;
typedef struct jj_loop jj_loop;

typedef struct jj_value {
    uint8_t t;
    uint8_t tuple; /* JT_LIST created as a tuple: repr uses () */
    union {
        bool b;
        int64_t i;
        double f;
        struct {
            const char *p;    /* UTF-8, not NUL-terminated */
            const uint8_t *m; /* NULL = no user byte; else n flags */
            size_t n;
        } s;
        jj_list *l;
        jj_dict *d;
        jj_func *fn;
        jj_loop *lp;
    } u;
} jj_value;

struct jj_list {
    size_t n;
    jj_value *v;
};
/* Insertion-ordered; keys are strings (JT_STR) in practice, any scalar allowed. */
struct jj_dict {
    size_t n, cap;
    jj_value *k, *v;
};

static inline jj_value jj_undef(const char *name, size_t n) {
    jj_value v = {.t = JT_UNDEF};
    v.u.s.p = name, v.u.s.n = n;
    return v;
}
static inline jj_value jj_none(void) {
    return (jj_value){.t = JT_NONE};
}
static inline jj_value jj_bool(bool b) {
    jj_value v = {.t = JT_BOOL};
    v.u.b = b;
    return v;
}
static inline jj_value jj_int(int64_t i) {
    jj_value v = {.t = JT_INT};
    v.u.i = i;
    return v;
}
static inline jj_value jj_float(double f) {
    jj_value v = {.t = JT_FLOAT};
    v.u.f = f;
    return v;
}
static inline jj_value jj_str(const char *p, size_t n, const uint8_t *m) {
    jj_value v = {.t = JT_STR};
    v.u.s.p = p, v.u.s.n = n, v.u.s.m = m;
    return v;
}

/* ---- string builder (masked): growable, fm_realloc, freed with jj_buf_free ------------------ */
typedef struct jj_buf {
    char *p;
    uint8_t *m; /* allocated lazily at the first user byte */
    size_t n, cap, mcap;
    size_t max; /* appends past this fail (0 = no limit) */
} jj_buf;
/* 0, or -1 on OOM / over max (*over set when it was the limit). */
int jj_buf_put(jj_buf *b, const char *p, size_t n, const uint8_t *m, bool *over);
/* Appends n bytes all marked `user`. */
int jj_buf_put_flag(jj_buf *b, const char *p, size_t n, bool user, bool *over);
void jj_buf_free(jj_buf *b);
/* Copies the builder into the arena as a string value; NULL data on failure. */
int jj_buf_to_value(jj_arena *a, const jj_buf *b, jj_value *out);

/* ---- UTF-8 helpers (input is valid UTF-8) ------------------------------------------------------
 */
uint32_t jj_utf8_next(const char *s, size_t n, size_t *i); /* decodes at *i, advances */
size_t jj_utf8_count(const char *s, size_t n);             /* code points */
size_t jj_utf8_offset(const char *s, size_t n,
                      size_t cp); /* byte offset of code point cp (clamped) */
bool jj_py_isspace(uint32_t cp);  /* Python str.isspace() */

/* ---- value helpers (jinja_value.c) -------------------------------------------------------------
 */
bool jj_truthy(const jj_value *v);
const char *jj_type_name(const jj_value *v); /* Python-ish: "str", "int", "list", ... */
/* Python ==. */
bool jj_equal(const jj_value *a, const jj_value *b);
/* Python str(v) appended to b (masks kept for strings). `repr` = repr(v). -1 with *msg on an
 * error (unprintable value), -2 on OOM/limit. */
int jj_to_string(jj_buf *b, const jj_value *v, bool repr, const char **msg, bool *over);
/* json.dumps(v, ensure_ascii=False, indent=indent (<0: None), sort_keys). Same returns. */
int jj_to_json(jj_buf *b, const jj_value *v, int indent, bool sort_keys, const char **msg,
               bool *over);
/* Dict lookup by string key; NULL if absent. */
jj_value *jj_dict_get(const jj_dict *d, const char *k, size_t n);
jj_value *jj_dict_find(const jj_dict *d, const jj_value *key);
/* Sets (insert or replace). 0 or -1 (arena full). */
int jj_dict_set(jj_arena *a, jj_dict *d, jj_value key, jj_value val);

/* ---- AST --------------------------------------------------------------------------------------
 */
typedef enum jj_kind {
    /* statements */
    JN_DATA,     /* cval: literal text */
    JN_OUTPUT,   /* a: expression */
    JN_IF,       /* a: cond, body, orelse */
    JN_FOR,      /* a: target, b: iterable, c: filter (or NULL), body, orelse */
    JN_SET,      /* a: target, b: value */
    JN_SETBLOCK, /* a: target, body */
    JN_MACRO,    /* name, args: JN_PARAM (name, a = default), body */
    JN_BREAK,
    JN_CONTINUE,
    JN_SCOPE, /* body rendered as is ({% generation %}) */
    /* expressions */
    JN_CONST, /* cval */
    JN_NAME,  /* name */
    JN_LIST,  /* args */
    JN_TUPLE, /* args */
    JN_DICT,  /* args: JN_PAIR (a: key, b: value) */
    JN_PAIR,
    JN_GETATTR, /* a: object, name */
    JN_GETITEM, /* a: object, b: key */
    JN_SLICE,   /* a: object, b/c/d: start/stop/step or NULL */
    JN_CALL,    /* a: callee, args (JN_KWARG for keywords: name, a) */
    JN_KWARG,
    JN_PARAM,
    JN_FILTER,  /* a: value, name, args */
    JN_TEST,    /* a: value, name, args, op = 1 when negated */
    JN_NOT,     /* a */
    JN_NEG,     /* a */
    JN_POS,     /* a */
    JN_BINARY,  /* op: JO_*, a, b */
    JN_AND,     /* a, b */
    JN_OR,      /* a, b */
    JN_COMPARE, /* a: first operand, args: JN_OPERAND (op, a) */
    JN_OPERAND,
    JN_COND /* a: then, b: condition, c: else (or NULL) */
} jj_kind;

typedef enum jj_op {
    JO_ADD = 1,
    JO_SUB,
    JO_MUL,
    JO_DIV,
    JO_FLOORDIV,
    JO_MOD,
    JO_POW,
    JO_CONCAT,
    JO_EQ,
    JO_NE,
    JO_LT,
    JO_LE,
    JO_GT,
    JO_GE,
    JO_IN,
    JO_NOTIN
} jj_op;

typedef struct jj_node jj_node;
typedef struct jj_nodes {
    jj_node **v;
    size_t n;
} jj_nodes;

struct jj_node {
    uint16_t kind, op;
    uint32_t line;
    const char *name; /* borrowed from the template source copy */
    size_t nlen;
    jj_value cval;
    jj_node *a, *b, *c, *d;
    jj_nodes args, body, orelse;
};

/* ---- lexer -------------------------------------------------------------------------------------
 */
typedef enum jj_tok_type {
    TK_EOF,
    TK_DATA,        /* text; value s/n */
    TK_VAR_BEGIN,   /* {{ */
    TK_VAR_END,     /* }} */
    TK_BLOCK_BEGIN, /* {% */
    TK_BLOCK_END,   /* %} */
    TK_NAME,
    TK_STRING, /* value decoded into the arena: s/n */
    TK_INT,
    TK_FLOAT,
    TK_OP /* s/n: the operator text */
} jj_tok_type;

typedef struct jj_tok {
    uint8_t type;
    uint32_t line;
    const char *s;
    size_t n;
    int64_t i;
    double f;
} jj_tok;

typedef struct jj_toks {
    jj_tok *v;
    size_t n, cap;
} jj_toks;

/* Tokenizes the whole source (already a NUL-terminated private copy). Strings are decoded into
 * `a`. Errors name `origin` and the line. The token array is fm_realloc'd: free with fm_free. */
fm_status jj_lex(const char *src, size_t len, jj_arena *a, const char *origin, jj_toks *out,
                 fm_error *err);

/* ---- parser ------------------------------------------------------------------------------------
 */
/* Parses tokens into a statement list in `a`. */
fm_status jj_parse(const jj_toks *toks, jj_arena *a, const char *origin, jj_nodes *out,
                   fm_error *err);

/* ---- evaluator ---------------------------------------------------------------------------------
 */
typedef struct jj_limits {
    size_t max_output;       /* bytes of rendered text (also any one intermediate string) */
    uint64_t max_iterations; /* loop iterations, all loops together */
    uint32_t max_depth;      /* macro call depth */
    size_t max_memory;       /* bytes of values allocated while rendering */
    uint64_t max_work;       /* bytes processed by string operations and printing */
} jj_limits;

typedef struct jj_var {
    const char *name;
    size_t nlen;
    jj_value val;
} jj_var;

/* Renders `body` with the given global variables (names and values borrowed for the call; values
 * may live in `vals_arena`, which must stay alive until the output has been copied). On success
 * *text / *mask (n bytes each, text NUL-terminated, mask all flags) are fm_malloc'd. */
fm_status jj_render(const jj_nodes *body, const char *origin, const jj_var *vars, size_t n_vars,
                    jj_arena *vals_arena, const jj_limits *lim, char **text, uint8_t **mask,
                    size_t *len, fm_error *err);

/* ---- builtins (jinja_builtins.c), used by the evaluator ------------------------------------- */
typedef struct jj_ctx jj_ctx;
typedef struct jj_args {
    const jj_value *pos;
    size_t npos;
    const char *const *kw_names;
    const size_t *kw_lens;
    const jj_value *kw;
    size_t nkw;
} jj_args;

/* Each returns FM_OK or an error already set through jj_fail. *found = false when the name is
 * not a known filter/test/method (the caller reports it). */
fm_status jj_call_filter(jj_ctx *c, const jj_node *at, const char *name, size_t nlen,
                         const jj_value *v, const jj_args *args, jj_value *out);
fm_status jj_call_test(jj_ctx *c, const jj_node *at, const char *name, size_t nlen,
                       const jj_value *v, const jj_args *args, bool *out);
/* Whether a filter / test of that name exists (the parser refuses unknown ones, as Jinja does). */
bool jj_filter_known(const char *name, size_t n);
bool jj_test_known(const char *name, size_t n);
/* Method `name` of v (str/dict/loop), or 0 when v has no such method. */
int jj_method_id(const jj_value *v, const char *name, size_t nlen);
fm_status jj_call_method(jj_ctx *c, const jj_node *at, const jj_value *self, int id,
                         const jj_args *args, jj_value *out);

/* Shared with the builtins: error reporting and allocation inside an evaluation. */
fm_status jj_fail(jj_ctx *c, const jj_node *at, fm_status st, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;
jj_arena *jj_ctx_arena(jj_ctx *c);
size_t jj_ctx_max_string(jj_ctx *c);
/* Reports an allocation failure (limit or OOM) at `at`. */
fm_status jj_oom(jj_ctx *c, const jj_node *at);
/* Iterates v as Python would (list, tuple, dict keys, string characters, undefined = empty).
 * *items points into the arena. Error for non-iterables. */
fm_status jj_iterate(jj_ctx *c, const jj_node *at, const jj_value *v, jj_value **items, size_t *n);
/* str(v) as a string value (masks kept). */
fm_status jj_stringify(jj_ctx *c, const jj_node *at, const jj_value *v, jj_value *out);
/* Python getattr-then-getitem as Jinja does for `v.name`. */
fm_status jj_getattr(jj_ctx *c, const jj_node *at, const jj_value *v, const char *name, size_t nlen,
                     jj_value *out);
/* Runs the test `name` on v (for select/reject). */
fm_status jj_compare(jj_ctx *c, const jj_node *at, int op, const jj_value *a, const jj_value *b,
                     bool *out);

#endif
