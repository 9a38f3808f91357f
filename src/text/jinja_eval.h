/* Internal to the evaluator and its builtins (jinja_eval.c, jinja_ops.c, jinja_builtins.c): the
 * evaluation context, scopes, function and loop objects. */
#ifndef FM_TEXT_JINJA_EVAL_H
#define FM_TEXT_JINJA_EVAL_H

#include "text/jinja.h"

typedef struct jj_scope {
    struct jj_scope *parent;
    jj_var *v;
    size_t n, cap;
} jj_scope;

typedef enum jj_func_kind { JF_MACRO, JF_GLOBAL, JF_METHOD } jj_func_kind;

struct jj_func {
    int kind;
    int id;               /* global index or method id */
    jj_value self;        /* bound receiver of a method */
    const jj_node *macro; /* JN_MACRO */
    jj_scope *closure;    /* the scope the macro was defined in */
};

struct jj_loop {
    jj_value *items;
    size_t index0, length;
};

enum { JJ_FLOW_NONE, JJ_FLOW_BREAK, JJ_FLOW_CONTINUE };

struct jj_ctx {
    jj_arena *a;
    const char *origin;
    fm_error *err;
    jj_limits lim;
    jj_buf *out;
    uint64_t iters, work;
    uint32_t depth;
    int flow;
};

fm_status jj_eval(jj_ctx *c, jj_scope *s, const jj_node *n, jj_value *out);
fm_status jj_scope_set(jj_ctx *c, const jj_node *at, jj_scope *s, const char *name, size_t n,
                       jj_value v);
fm_status jj_capture(jj_ctx *c, jj_scope *s, const jj_node *at, const jj_nodes *body,
                     jj_value *out);
fm_status jj_count_iteration(jj_ctx *c, const jj_node *at);
fm_status jj_charge(jj_ctx *c, const jj_node *at, uint64_t units);
fm_status jj_buf_fail(jj_ctx *c, const jj_node *at, bool over);
fm_status jj_undefined_error(jj_ctx *c, const jj_node *at, const jj_value *v);
fm_status jj_new_list(jj_ctx *c, const jj_node *at, size_t n, jj_value *out);
fm_status jj_new_dict(jj_ctx *c, const jj_node *at, jj_type t, jj_value *out);
jj_value jj_substr(const jj_value *s, size_t from, size_t to);
fm_status jj_concat(jj_ctx *c, const jj_node *at, const jj_value *x, const jj_value *y,
                    jj_value *out);

/* jinja_ops.c */
fm_status jj_eval_getitem(jj_ctx *c, jj_scope *s, const jj_node *n, jj_value *out);
fm_status jj_eval_slice(jj_ctx *c, jj_scope *s, const jj_node *n, jj_value *out);
fm_status jj_eval_unary(jj_ctx *c, jj_scope *s, const jj_node *n, jj_value *out);
fm_status jj_eval_binary(jj_ctx *c, jj_scope *s, const jj_node *n, jj_value *out);
fm_status jj_getitem(jj_ctx *c, const jj_node *at, const jj_value *obj, const jj_value *key,
                     jj_value *out);

/* jinja_builtins.c */
fm_status jj_call_global(jj_ctx *c, const jj_node *at, int id, const jj_args *a, jj_value *out);

#endif
