/* Weight transforms (spec §2–§3): WeightRenaming and WeightConverter objects with normalised
 * patterns, compiled branches, SEARCH-based renaming, reversal, and the transform list. Creating
 * a transform also builds its reverse once, so an irreversible one is refused up front. */
#include <stdio.h>
#include <string.h>

#include "loading/internal.h"

struct fm_transform {
    fm_transform_kind kind;
    size_t ns, nt, nops;
    char **src, **tgt;   /* normalised (owned) */
    char **osrc, **otgt; /* as given, kept for reversal (owned) */
    fm_op_desc *ops;     /* owned */
    fm_regex **re;       /* one compiled branch per source (shared references) */
    char *desc;          /* fm_transform_describe text (owned) */
};

static void free_strv(char **v, size_t n) {
    if (!v) return;
    for (size_t i = 0; i < n; i++)
        fm_free(v[i]);
    fm_free(v);
}

void fm_transform_free(fm_transform *t) {
    if (!t) return;
    free_strv(t->src, t->ns);
    free_strv(t->osrc, t->ns);
    free_strv(t->tgt, t->nt);
    free_strv(t->otgt, t->nt);
    if (t->re)
        for (size_t i = 0; i < t->ns; i++)
            fm_regex_release(t->re[i]);
    fm_free(t->re);
    fm_free(t->ops);
    fm_free(t->desc);
    fm_free(t);
}

static char **copy_strv(const char *const *v, size_t n) {
    char **o = fm_calloc(n ? n : 1, sizeof *o);
    if (!o) return NULL;
    for (size_t i = 0; i < n; i++) {
        if (!(o[i] = fm_strdup(v[i]))) {
            free_strv(o, n);
            return NULL;
        }
    }
    return o;
}

static const char *kind_name(fm_transform_kind k) {
    return k == FM_TRANSFORM_RENAMING ? "WeightRenaming" : "WeightConverter";
}

/* ---- description --------------------------------------------------------------------------- */
static size_t op_text(const fm_op_desc *op, char *b, size_t cap) {
    switch (op->kind) {
    case FM_OP_TRANSPOSE:
        return (size_t)snprintf(b, cap, "Transpose(dim0=%d, dim1=%d)", op->dim, op->dim1);
    case FM_OP_CONV3D_TO_LINEAR:
    case FM_OP_LINEAR_TO_CONV3D:
        return (size_t)snprintf(b, cap, "%s", fm_op_name(op->kind));
    default:
        return (size_t)snprintf(b, cap, "%s(dim=%d)", fm_op_name(op->kind), op->dim);
    }
}

static fm_status build_desc(fm_transform *t, fm_error *err) {
    size_t cap = 64 + 48 * t->nops;
    for (size_t i = 0; i < t->ns; i++)
        cap += strlen(t->src[i]) + 2;
    for (size_t i = 0; i < t->nt; i++)
        cap += strlen(t->tgt[i]) + 2;
    char *b = fm_malloc(cap);
    if (!b) return fm_error_set(err, FM_ERR_NOMEM, "out of memory describing a transform");
    size_t n = (size_t)snprintf(b, cap, "%s(", kind_name(t->kind));
    for (size_t i = 0; i < t->ns; i++)
        n += (size_t)snprintf(b + n, cap - n, "%s%s", i ? ", " : "", t->src[i]);
    n += (size_t)snprintf(b + n, cap - n, " -> ");
    for (size_t i = 0; i < t->nt; i++)
        n += (size_t)snprintf(b + n, cap - n, "%s%s", i ? ", " : "", t->tgt[i]);
    for (size_t i = 0; i < t->nops; i++) {
        n += (size_t)snprintf(b + n, cap - n, "%s", i ? ", " : "; ");
        n += op_text(&t->ops[i], b + n, cap - n);
    }
    snprintf(b + n, cap - n, ")");
    t->desc = b;
    return FM_OK;
}

/* ---- normalisation (§2.1) ----------------------------------------------------------------- */
static fm_status norm_targets(fm_transform *t, char **group, fm_error *err) {
    *group = NULL;
    for (size_t i = 0; i < t->nt; i++) {
        char *g = NULL;
        fm_status st = fm_pattern_normalize_target(t->otgt[i], &t->tgt[i], &g, err);
        if (st != FM_OK) return st;
        if (g && *group && strcmp(g, *group) != 0) {
            st = fm_error_set(err, FM_ERR_PATTERN,
                              "Multiple different capturing groups found in target patterns: {%s, "
                              "%s}. All target "
                              "patterns must use the same capturing group pattern.",
                              *group, g);
            fm_free(g);
            return st;
        }
        if (g && !*group) {
            *group = g;
        } else {
            fm_free(g);
        }
    }
    return FM_OK;
}

static fm_status norm_source(fm_transform *t, size_t i, const char *group, fm_error *err) {
    const char *s = t->osrc[i];
    char *o = NULL;
    if (strstr(s, "\\1")) {
        if (!group)
            return fm_error_set(
                err, FM_ERR_PATTERN,
                "Source pattern '%s' contains \\1 backreference, but no capturing groups found in "
                "target patterns.",
                s);
        o = fm_str_replace_first(s, "\\1", group);
    } else {
        o = fm_strdup(s);
    }
    if (o && t->ns == t->nt) { /* paired patterns: copy the target's anchors */
        const char *ot = t->otgt[i];
        size_t lo = strlen(o), lt = strlen(ot);
        bool pre = ot[0] == '^' && o[0] != '^',
             post = lt && ot[lt - 1] == '$' && !(lo && o[lo - 1] == '$');
        char *a = fm_malloc(lo + 3);
        if (a) snprintf(a, lo + 3, "%s%s%s", pre ? "^" : "", o, post ? "$" : "");
        fm_free(o);
        o = a;
    }
    if (!o) return fm_error_set(err, FM_ERR_NOMEM, "out of memory normalising source '%s'", s);
    t->src[i] = o;
    return FM_OK;
}

static fm_status compile_branches(fm_transform *t, fm_error *err) {
    long maxref = fm_pattern_max_ref(t->tgt[0]);
    for (size_t i = 0; i < t->ns; i++) {
        char *body = NULL;
        fm_status st = fm_pattern_branch_body(t->src[i], &body, err);
        if (st == FM_OK) st = fm_regex_compile(body, &t->re[i], err);
        fm_free(body);
        if (st != FM_OK) return st;
        if (maxref > (long)fm_regex_capture_count(t->re[i]))
            return fm_error_set(err, FM_ERR_PATTERN,
                                "target '%s' refers to group %ld but source '%s' has %u group(s)",
                                t->tgt[0], maxref, t->src[i], fm_regex_capture_count(t->re[i]));
    }
    return FM_OK;
}

/* ---- op-chain routing check ------------------------------------------------------------------
 * Simulates the spec's key-routing rules on entry counts (all source patterns present; -1: an
 * unknown count after SplitModulelist), refusing chains that would raise "Undefined Operation". */
static fm_status check_chain(const fm_transform *t, fm_error *err) {
    long e = (long)t->ns;
    for (size_t i = 0; i < t->nops; i++) {
        const fm_op_desc *op = &t->ops[i];
        bool bad = false;
        switch (op->kind) {
        case FM_OP_CHUNK:
            bad = (e != 1 && e != -1) || t->nt < 2;
            e = (long)t->nt;
            break;
        case FM_OP_CONCATENATE:
            bad = t->nt > 1;
            e = 1;
            break;
        case FM_OP_MERGE_MODULELIST:
            bad = e == 1 && t->nt != 1;
            break;
        case FM_OP_SPLIT_MODULELIST:
            bad = e == 1 && t->nt != 1;
            e = -1;
            break;
        default:
            bad = (e != 1 && e != -1) || (t->nt > 1 && t->ns != 1);
            break;
        }
        if (bad)
            return fm_error_set(
                err, FM_ERR_INVALID_ARG,
                "%s: op %zu (%s) cannot route %ld input entr%s to %zu target(s) (Undefined "
                "Operation)",
                t->desc, i, fm_op_name(op->kind), e, e == 1 ? "y" : "ies", t->nt);
    }
    return FM_OK;
}

static fm_status check_shape(fm_transform_kind kind, const char *const *s, size_t ns,
                             const char *const *tg, size_t nt, size_t nops, fm_error *err) {
    if (!ns || !nt || !s || !tg)
        return fm_error_set(err, FM_ERR_INVALID_ARG,
                            "%s needs at least one source and one target pattern", kind_name(kind));
    for (size_t i = 0; i < ns; i++)
        if (!s[i])
            return fm_error_set(err, FM_ERR_INVALID_ARG, "%s: source pattern %zu is NULL",
                                kind_name(kind), i);
    for (size_t i = 0; i < nt; i++)
        if (!tg[i])
            return fm_error_set(err, FM_ERR_INVALID_ARG, "%s: target pattern %zu is NULL",
                                kind_name(kind), i);
    if (kind == FM_TRANSFORM_CONVERTER && !nops)
        return fm_error_set(err, FM_ERR_INVALID_ARG,
                            "WeightConverter requires at least one operation.");
    if (kind == FM_TRANSFORM_CONVERTER && ns > 1 && nt > 1)
        return fm_error_set(err, FM_ERR_INVALID_ARG,
                            "WeightConverter: %zu source and %zu target patterns, but you can only "
                            "have one to many, "
                            "one to one or many to one.",
                            ns, nt);
    return FM_OK;
}

static fm_status transform_build(fm_transform_kind kind, const char *const *s, size_t ns,
                                 const char *const *tg, size_t nt, const fm_op_desc *ops,
                                 size_t nops, bool check_reverse, fm_transform **out,
                                 fm_error *err);

static fm_status build_parts(fm_transform *t, const char *const *s, const char *const *tg,
                             const fm_op_desc *ops, fm_error *err) {
    t->osrc = copy_strv(s, t->ns);
    t->otgt = copy_strv(tg, t->nt);
    t->src = fm_calloc(t->ns, sizeof *t->src);
    t->tgt = fm_calloc(t->nt, sizeof *t->tgt);
    t->re = fm_calloc(t->ns, sizeof *t->re);
    t->ops = fm_calloc(t->nops ? t->nops : 1, sizeof *t->ops);
    if (!t->osrc || !t->otgt || !t->src || !t->tgt || !t->re || !t->ops)
        return fm_error_set(err, FM_ERR_NOMEM, "out of memory creating a transform");
    for (size_t i = 0; i < t->nops; i++) {
        fm_status st = fm_op_validate(&ops[i], err);
        if (st != FM_OK) return st;
        t->ops[i] = ops[i];
    }
    char *group = NULL;
    fm_status st = norm_targets(t, &group, err);
    for (size_t i = 0; st == FM_OK && i < t->ns; i++)
        st = norm_source(t, i, group, err);
    fm_free(group);
    if (st == FM_OK) st = compile_branches(t, err);
    if (st == FM_OK) st = build_desc(t, err);
    if (st == FM_OK && t->kind == FM_TRANSFORM_CONVERTER) st = check_chain(t, err);
    return st;
}

static fm_status transform_build(fm_transform_kind kind, const char *const *s, size_t ns,
                                 const char *const *tg, size_t nt, const fm_op_desc *ops,
                                 size_t nops, bool check_reverse, fm_transform **out,
                                 fm_error *err) {
    *out = NULL;
    fm_status st = check_shape(kind, s, ns, tg, nt, nops, err);
    if (st != FM_OK) return st;
    fm_transform *t = fm_calloc(1, sizeof *t);
    if (!t) return fm_error_set(err, FM_ERR_NOMEM, "out of memory creating a transform");
    t->kind = kind;
    t->ns = ns;
    t->nt = nt;
    t->nops = kind == FM_TRANSFORM_CONVERTER ? nops : 0;
    st = build_parts(t, s, tg, ops, err);
    if (st == FM_OK && check_reverse) {
        fm_transform *r = NULL;
        st = fm_transform_reverse(t, &r, err);
        fm_transform_free(r);
        if (st != FM_OK && st != FM_ERR_NOMEM)
            fm_error_prefix(err, "%s is not reversible", t->desc ? t->desc : kind_name(kind));
    }
    if (st != FM_OK) {
        fm_transform_free(t);
        return st;
    }
    *out = t;
    return FM_OK;
}

fm_status fm_transform_renaming_new(const char *source, const char *target, fm_transform **out,
                                    fm_error *err) {
    const char *s[1] = {source}, *tg[1] = {target};
    if (!source || !target) {
        *out = NULL;
        return fm_error_set(err, FM_ERR_INVALID_ARG,
                            "WeightRenaming needs a source and a target pattern");
    }
    return transform_build(FM_TRANSFORM_RENAMING, s, 1, tg, 1, NULL, 0, true, out, err);
}

fm_status fm_transform_converter_new(const char *const *sources, size_t n_sources,
                                     const char *const *targets, size_t n_targets,
                                     const fm_op_desc *ops, size_t n_ops, fm_transform **out,
                                     fm_error *err) {
    if (n_ops && !ops) {
        *out = NULL;
        return fm_error_set(err, FM_ERR_INVALID_ARG, "WeightConverter: ops is NULL");
    }
    return transform_build(FM_TRANSFORM_CONVERTER, sources, n_sources, targets, n_targets, ops,
                           n_ops, true, out, err);
}

fm_status fm_transform_reverse(const fm_transform *t, fm_transform **out, fm_error *err) {
    *out = NULL;
    fm_op_desc stack_ops[16], *rops = t->nops <= 16 ? stack_ops : fm_malloc(t->nops * sizeof *rops);
    if (!rops) return fm_error_set(err, FM_ERR_NOMEM, "out of memory reversing %s", t->desc);
    fm_status st = FM_OK;
    for (size_t i = 0; st == FM_OK && i < t->nops; i++)
        st = fm_op_reverse(&t->ops[t->nops - 1 - i], &rops[i], err);
    if (st == FM_OK)
        st = transform_build(t->kind, (const char *const *)t->otgt, t->nt,
                             (const char *const *)t->osrc, t->ns, rops, t->nops, false, out, err);
    if (rops != stack_ops) fm_free(rops);
    return st;
}

fm_status fm_transform_clone(const fm_transform *t, fm_transform **out, fm_error *err) {
    *out = NULL;
    fm_transform *c = fm_calloc(1, sizeof *c);
    if (!c) return fm_error_set(err, FM_ERR_NOMEM, "out of memory cloning %s", t->desc);
    *c = (fm_transform){t->kind, t->ns, t->nt, t->nops, NULL, NULL, NULL, NULL, NULL, NULL, NULL};
    c->src = copy_strv((const char *const *)t->src, t->ns);
    c->tgt = copy_strv((const char *const *)t->tgt, t->nt);
    c->osrc = copy_strv((const char *const *)t->osrc, t->ns);
    c->otgt = copy_strv((const char *const *)t->otgt, t->nt);
    c->ops = fm_calloc(t->nops ? t->nops : 1, sizeof *c->ops);
    c->re = fm_calloc(t->ns, sizeof *c->re);
    c->desc = fm_strdup(t->desc);
    if (!c->src || !c->tgt || !c->osrc || !c->otgt || !c->ops || !c->re || !c->desc) {
        fm_transform_free(c);
        return fm_error_set(err, FM_ERR_NOMEM, "out of memory cloning %s", t->desc);
    }
    if (t->nops) memcpy(c->ops, t->ops, t->nops * sizeof *c->ops);
    for (size_t i = 0; i < t->ns; i++)
        c->re[i] = fm_regex_retain(t->re[i]);
    *out = c;
    return FM_OK;
}

/* ---- accessors ----------------------------------------------------------------------------- */
fm_transform_kind fm_transform_kind_of(const fm_transform *t) {
    return t->kind;
}
size_t fm_transform_source_count(const fm_transform *t) {
    return t->ns;
}
const char *fm_transform_source(const fm_transform *t, size_t i) {
    return i < t->ns ? t->src[i] : NULL;
}
size_t fm_transform_target_count(const fm_transform *t) {
    return t->nt;
}
const char *fm_transform_target(const fm_transform *t, size_t i) {
    return i < t->nt ? t->tgt[i] : NULL;
}
size_t fm_transform_op_count(const fm_transform *t) {
    return t->nops;
}
const fm_op_desc *fm_transform_op(const fm_transform *t, size_t i) {
    return i < t->nops ? &t->ops[i] : NULL;
}
const char *fm_transform_describe(const fm_transform *t) {
    return t->desc;
}
char *const *fm_transform_sources(const fm_transform *t) {
    return t->src;
}
char *const *fm_transform_targets(const fm_transform *t) {
    return t->tgt;
}

/* ---- renaming (§2.2) --------------------------------------------------------------------------
 * SEARCH over the alternation = for each branch its leftmost match; the smallest start wins,
 * ties go to the earlier branch (what an alternation tried position by position does). Each
 * branch is compiled on its own, so group numbers are local to it. */
static fm_status best_branch(const fm_transform *t, const char *key, pcre2_match_data *md,
                             int *best, fm_error *err) {
    size_t len = strlen(key), bstart = 0;
    *best = -1;
    for (size_t i = 0; i < t->ns; i++) {
        bool hit;
        fm_status st = fm_regex_search(t->re[i], key, len, md, &hit, err);
        if (st != FM_OK) return st;
        size_t start = (size_t)pcre2_get_ovector_pointer(md)[0];
        if (hit && (*best < 0 || start < bstart)) {
            *best = (int)i;
            bstart = start;
        }
    }
    return FM_OK;
}

fm_status fm_transform_rename_groups(const fm_transform *t, const char *key, char **out,
                                     int *branch, fm_groups *g, fm_error *err) {
    *out = NULL;
    *branch = -1;
    memset(g, 0, sizeof *g);
    uint32_t pairs = 1;
    for (size_t i = 0; i < t->ns; i++)
        if (fm_regex_capture_count(t->re[i]) + 1 > pairs)
            pairs = fm_regex_capture_count(t->re[i]) + 1;
    pcre2_match_data *md = fm_regex_match_data(t->re[0], pairs);
    if (!md) return fm_error_set(err, FM_ERR_NOMEM, "out of memory renaming '%s'", key);
    int best;
    fm_status st = best_branch(t, key, md, &best, err);
    if (st == FM_OK && best >= 0) {
        bool hit;
        st = fm_regex_search(t->re[best], key, strlen(key), md, &hit, err);
        if (st == FM_OK) st = fm_groups_from_match(t->re[best], md, key, g, err);
    }
    pcre2_match_data_free(md);
    if (st != FM_OK) return st;
    if (best < 0) {
        *out = fm_strdup(key);
        return *out ? FM_OK : fm_error_set(err, FM_ERR_NOMEM, "out of memory renaming '%s'", key);
    }
    char *repl = NULL;
    st = fm_pattern_expand_refs(t->tgt[0], g, &repl, err);
    if (st == FM_OK && !(*out = fm_str_replace_first(key, g->s[0], repl)))
        st = fm_error_set(err, FM_ERR_NOMEM, "out of memory renaming '%s'", key);
    fm_free(repl);
    if (st != FM_OK) {
        fm_groups_clear(g);
        return st;
    }
    *branch = best;
    return FM_OK;
}

fm_status fm_transform_rename(const fm_transform *t, const char *key, char **out, int *branch,
                              fm_error *err) {
    fm_groups g;
    fm_status st = fm_transform_rename_groups(t, key, out, branch, &g, err);
    fm_groups_clear(&g);
    return st;
}

/* ---- lists ---------------------------------------------------------------------------------- */
void fm_transform_list_free(fm_transform_list *l) {
    if (!l) return;
    for (size_t i = 0; i < l->count; i++)
        fm_transform_free(l->items[i]);
    fm_free(l->items);
    l->items = NULL;
    l->count = 0;
}

fm_status fm_transform_list_append(fm_transform_list *l, fm_transform *t, fm_error *err) {
    fm_transform **v = fm_realloc(l->items, (l->count + 1) * sizeof *v);
    if (!v) {
        fm_transform_free(t);
        return fm_error_set(err, FM_ERR_NOMEM, "out of memory appending a transform");
    }
    v[l->count++] = t;
    l->items = v;
    return FM_OK;
}

fm_status fm_transform_list_clone(const fm_transform_list *src, fm_transform_list *out,
                                  fm_error *err) {
    out->items = NULL;
    out->count = 0;
    for (size_t i = 0; src && i < src->count; i++) {
        fm_transform *c = NULL;
        fm_status st = fm_transform_clone(src->items[i], &c, err);
        if (st == FM_OK) st = fm_transform_list_append(out, c, err);
        if (st != FM_OK) {
            fm_transform_list_free(out);
            return st;
        }
    }
    return FM_OK;
}
