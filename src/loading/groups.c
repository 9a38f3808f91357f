/* Pieces shared by load and revert: natural key order (§6.1), the rename chain (§6.2), conversion
 * groups keyed by first target key, and running one group's op chain with the expansion of
 * pattern-level out-keys to full names (§6.4). */
#include <stdio.h>
#include <string.h>

#include "loading/internal.h"

/* ---- natural key order ----------------------------------------------------------------------- */
static bool all_digits(const char *s, size_t n) {
    if (!n) return false;
    for (size_t i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9') return false;
    return true;
}

/* Python dot_natural_key on one segment: digit runs as integers, before any non-digit segment. */
static int seg_cmp(const char *a, size_t la, const char *b, size_t lb) {
    bool da = all_digits(a, la), db = all_digits(b, lb);
    if (da != db) return da ? -1 : 1;
    if (da) {
        while (la > 1 && *a == '0')
            a++, la--;
        while (lb > 1 && *b == '0')
            b++, lb--;
        if (la != lb) return la < lb ? -1 : 1;
    }
    int c = memcmp(a, b, la < lb ? la : lb); /* UTF-8 byte order = code point order */
    if (c) return c < 0 ? -1 : 1;
    return la == lb ? 0 : (la < lb ? -1 : 1);
}

int fm_natural_key_cmp(const char *a, const char *b) {
    for (;;) {
        size_t la = strcspn(a, "."), lb = strcspn(b, ".");
        int c = seg_cmp(a, la, b, lb);
        if (c) return c;
        bool ea = a[la] == '\0', eb = b[lb] == '\0';
        if (ea || eb) return ea && eb ? 0 : (ea ? -1 : 1);
        a += la + 1;
        b += lb + 1;
    }
}

/* Stable merge sort of indices by name. */
static void merge_sort(size_t *v, size_t *tmp, size_t n, const fm_tensor_source *src) {
    if (n < 2) return;
    size_t h = n / 2, i = 0, j = h, k = 0;
    merge_sort(v, tmp, h, src);
    merge_sort(v + h, tmp, n - h, src);
    while (i < h && j < n)
        tmp[k++] = fm_natural_key_cmp(src->name(src->ctx, v[j]), src->name(src->ctx, v[i])) < 0
                       ? v[j++]
                       : v[i++];
    while (i < h)
        tmp[k++] = v[i++];
    while (j < n)
        tmp[k++] = v[j++];
    memcpy(v, tmp, n * sizeof *v);
}

fm_status fm_natural_order(const fm_tensor_source *src, size_t **order, fm_error *err) {
    size_t n = src->count;
    size_t *v = fm_malloc((n ? n : 1) * sizeof *v), *tmp = fm_malloc((n ? n : 1) * sizeof *tmp);
    if (!v || !tmp) {
        fm_free(v);
        fm_free(tmp);
        return fm_error_set(err, FM_ERR_NOMEM, "out of memory sorting %zu keys", n);
    }
    for (size_t i = 0; i < n; i++)
        v[i] = i;
    merge_sort(v, tmp, n, src);
    fm_free(tmp);
    *order = v;
    return FM_OK;
}

/* ---- rename chain ---------------------------------------------------------------------------- */
void fm_chain_result_clear(fm_chain_result *r) {
    if (!r) return;
    fm_free(r->key);
    fm_groups_clear(&r->groups);
    memset(r, 0, sizeof *r);
    r->conv = -1;
}

fm_status fm_rename_chain(fm_transform *const *ren, size_t nren, fm_transform *const *conv,
                          size_t nconv, const char *key, bool *ren_hit, bool *conv_hit,
                          fm_chain_result *r, fm_error *err) {
    memset(r, 0, sizeof *r);
    r->conv = -1;
    r->branch = -1;
    if (!(r->key = fm_strdup(key)))
        return fm_error_set(err, FM_ERR_NOMEM, "out of memory renaming '%s'", key);
    for (size_t i = 0; i < nren + nconv; i++) {
        const fm_transform *t = i < nren ? ren[i] : conv[i - nren];
        char *nk = NULL;
        int branch;
        fm_groups g;
        fm_status st = fm_transform_rename_groups(t, r->key, &nk, &branch, &g, err);
        if (st != FM_OK) {
            fm_chain_result_clear(r);
            return st;
        }
        fm_free(r->key);
        r->key = nk;
        if (branch < 0) continue;
        if (i < nren) {
            if (ren_hit) ren_hit[i] = true;
            fm_groups_clear(&g);
            continue;
        }
        if (conv_hit) conv_hit[i - nren] = true;
        r->conv = (long)(i - nren);
        r->branch = branch;
        r->groups = g;
        break;
    }
    return FM_OK;
}

/* ---- groups ------------------------------------------------------------------------------------
 */
fm_status fm_grp_set_init(fm_grp_set *s, size_t expected, fm_error *err) {
    memset(s, 0, sizeof *s);
    return fm_keymap_init(&s->map, expected, err);
}

static void grp_free(fm_grp *g) {
    for (size_t i = 0; i < g->ncolls; i++)
        fm_free(g->colls[i].idx);
    fm_free(g->colls);
    fm_groups_clear(&g->groups);
    fm_free(g->key);
}

void fm_grp_set_free(fm_grp_set *s) {
    if (!s) return;
    for (size_t i = 0; i < s->n; i++)
        grp_free(&s->v[i]);
    fm_free(s->v);
    fm_keymap_free(&s->map);
    memset(s, 0, sizeof *s);
}

fm_status fm_grp_get(fm_grp_set *s, const char *key, fm_grp **g, bool *created, fm_error *err) {
    size_t at;
    *created = false;
    if (fm_keymap_get(&s->map, key, &at)) {
        *g = &s->v[at];
        return FM_OK;
    }
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 16;
        fm_grp *v = fm_realloc(s->v, cap * sizeof *v);
        if (!v) return fm_error_set(err, FM_ERR_NOMEM, "out of memory grouping '%s'", key);
        s->v = v;
        s->cap = cap;
    }
    fm_grp *n = &s->v[s->n];
    memset(n, 0, sizeof *n);
    n->conv = -1;
    n->want = FM_DTYPE_INVALID;
    if (!(n->key = fm_strdup(key)))
        return fm_error_set(err, FM_ERR_NOMEM, "out of memory grouping '%s'", key);
    fm_status st = fm_keymap_put(&s->map, n->key, s->n, err);
    if (st != FM_OK) {
        fm_free(n->key);
        return st;
    }
    s->n++;
    *g = n;
    *created = true;
    return FM_OK;
}

fm_status fm_grp_add(fm_grp *g, int branch, size_t idx, fm_error *err) {
    fm_grp_coll *c = NULL;
    for (size_t i = 0; i < g->ncolls && !c; i++)
        if (g->colls[i].branch == branch) c = &g->colls[i];
    if (!c) {
        fm_grp_coll *v = fm_realloc(g->colls, (g->ncolls + 1) * sizeof *v);
        if (!v) return fm_error_set(err, FM_ERR_NOMEM, "out of memory grouping '%s'", g->key);
        g->colls = v;
        c = &g->colls[g->ncolls++];
        memset(c, 0, sizeof *c);
        c->branch = branch;
    }
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 4;
        size_t *v = fm_realloc(c->idx, cap * sizeof *v);
        if (!v) return fm_error_set(err, FM_ERR_NOMEM, "out of memory grouping '%s'", g->key);
        c->idx = v;
        c->cap = cap;
    }
    c->idx[c->n++] = idx;
    return FM_OK;
}

/* ---- running a group ------------------------------------------------------------------------- */
static fm_status get_cast(const fm_tensor_source *src, size_t i, fm_dtype want, bool cast_now,
                          fm_tensor *t, fm_error *err) {
    fm_status st = src->get(src->ctx, i, t, err);
    if (st != FM_OK) return st;
    fm_dtype odt = fm_op_out_dtype(t->dtype, want);
    if (!cast_now || odt == t->dtype) return FM_OK;
    fm_tensor c;
    st = fm_tensor_cast(&c, t, odt, err);
    if (st == FM_OK) fm_tensor_drop_pages(t); /* the cast copy replaces the mapped bytes */
    fm_tensor_free(t);
    *t = c;
    return st;
}

static fm_status named_new(fm_named_tensor **out, size_t n, fm_error *err) {
    *out = fm_calloc(n ? n : 1, sizeof **out);
    return *out ? FM_OK : fm_error_set(err, FM_ERR_NOMEM, "out of memory");
}

static fm_status plain_convert(const fm_grp *g, const fm_tensor_source *src, fm_named_tensor **out,
                               size_t *n_out, fm_error *err) {
    fm_status st = named_new(out, 1, err);
    if (st != FM_OK) return st;
    (*out)[0].name = fm_strdup(g->key);
    if (!(*out)[0].name) st = fm_error_set(err, FM_ERR_NOMEM, "out of memory");
    if (st == FM_OK) st = get_cast(src, g->src, g->want, true, &(*out)[0].tensor, err);
    if (st != FM_OK) {
        fm_named_tensors_free(*out, 1);
        *out = NULL;
        return st;
    }
    *n_out = 1;
    return FM_OK;
}

/* "'a.b' [2, 3] BF16, ..." for the first few tensors of the group (conversion messages). */
static void describe_inputs(const fm_grp *g, const fm_tensor_source *src, char *b, size_t cap) {
    size_t n = 0, total = 0, shown = 0;
    b[0] = '\0';
    for (size_t c = 0; c < g->ncolls; c++)
        total += g->colls[c].n;
    for (size_t c = 0; c < g->ncolls && n < cap; c++)
        for (size_t j = 0; j < g->colls[c].n && n < cap && shown < 4; j++, shown++) {
            size_t i = g->colls[c].idx[j];
            char sh[128] = "?";
            fm_dtype dt = FM_DTYPE_INVALID;
            fm_shape s;
            if (src->info) {
                src->info(src->ctx, i, &dt, &s);
                fm_shape_format(&s, sh, sizeof sh);
            }
            n += (size_t)snprintf(b + n, cap - n, "%s'%s' %s %s", shown ? ", " : "",
                                  src->name(src->ctx, i), sh,
                                  dt == FM_DTYPE_INVALID ? "" : fm_dtype_name(dt));
        }
    if (total > shown && n < cap) snprintf(b + n, cap - n, " and %zu more", total - shown);
}

/* Out-keys: "\N" filled from the claimed key's captures, then prefix/suffix taken around the
 * first out-key found inside the full first-target key (".*." read as ".0."). */
static fm_status expand_keys(const fm_grp *g, fm_opv_map *m, fm_error *err) {
    for (size_t i = 0; i < m->n; i++) {
        char *k = NULL;
        if (fm_pattern_max_ref(m->v[i].key) < 0 || !g->groups.n) continue;
        if (fm_pattern_expand_refs(m->v[i].key, &g->groups, &k, NULL) != FM_OK)
            continue; /* kept as is */
        fm_free(m->v[i].key);
        m->v[i].key = k;
    }
    char *full = fm_str_replace_all(g->key, ".*.", ".0.");
    if (!full) return fm_error_set(err, FM_ERR_NOMEM, "out of memory");
    const char *hit = NULL, *at = NULL;
    for (size_t i = 0; i < m->n && !hit; i++)
        if ((at = strstr(full, m->v[i].key))) hit = m->v[i].key;
    fm_status st = FM_OK;
    if (hit) {
        size_t pre = (size_t)(at - full);
        const char *post = at + strlen(hit);
        for (size_t i = 0; st == FM_OK && i < m->n; i++) {
            size_t lk = strlen(m->v[i].key), len = pre + lk + strlen(post) + 1;
            char *k = fm_malloc(len);
            if (!k) {
                st = fm_error_set(err, FM_ERR_NOMEM, "out of memory");
                break;
            }
            snprintf(k, len, "%.*s%s%s", (int)pre, full, m->v[i].key, post);
            fm_free(m->v[i].key);
            m->v[i].key = k;
        }
    }
    fm_free(full);
    return st;
}

static fm_status run_chain(const fm_grp *g, const fm_transform *conv, const fm_tensor_source *src,
                           fm_opv_map *m, fm_error *err) {
    char *const *s = fm_transform_sources(conv);
    char *const *t = fm_transform_targets(conv);
    size_t ns = fm_transform_source_count(conv), nt = fm_transform_target_count(conv);
    for (size_t i = 0; i < fm_transform_op_count(conv); i++) {
        const fm_op_desc *op = fm_transform_op(conv, i);
        fm_error e;
        fm_error_clear(&e);
        fm_status st = fm_opchain_step(op, m, s, ns, t, nt, g->want, &e);
        if (st == FM_ERR_NOMEM) return fm_error_set(err, st, "%s", e.msg);
        if (st != FM_OK) {
            char in[512];
            describe_inputs(g, src, in, sizeof in);
            return fm_error_set(err, FM_ERR_CONVERSION,
                                "%s on tensors destined for '%s' (checkpoint: %s): %s",
                                fm_op_name(op->kind), g->key, in, e.msg);
        }
    }
    fm_error e;
    fm_error_clear(&e);
    fm_status st = fm_opchain_finish(m, g->want, &e);
    if (st != FM_OK && st != FM_ERR_NOMEM)
        return fm_error_set(err, FM_ERR_CONVERSION, "finishing the tensors destined for '%s': %s",
                            g->key, e.msg);
    return st == FM_OK ? FM_OK : fm_error_set(err, st, "%s", e.msg);
}

/* After a chain: a source whose storage no output shares was copied (not viewed), so its mapped
 * pages can leave the resident set (the fused copy would otherwise sit beside them). */
static void drop_copied(const fm_tensor *srcs, size_t ns, const fm_named_tensor *out, size_t n) {
    for (size_t i = 0; i < ns; i++) {
        bool viewed = false;
        for (size_t j = 0; j < n && !viewed; j++)
            viewed = out[j].tensor.storage == srcs[i].storage;
        if (!viewed) fm_tensor_drop_pages(&srcs[i]);
    }
}

static size_t grp_tensor_count(const fm_grp *g) {
    size_t n = 0;
    for (size_t c = 0; c < g->ncolls; c++)
        n += g->colls[c].n;
    return n;
}

fm_status fm_grp_convert(const fm_grp *g, const fm_transform *conv, const fm_tensor_source *src,
                         fm_named_tensor **out, size_t *n_out, fm_error *err) {
    *out = NULL;
    *n_out = 0;
    if (g->conv < 0) return plain_convert(g, src, out, n_out, err);
    char *const *s = fm_transform_sources(conv);
    fm_opv_map m = {0};
    size_t ns = 0, cap = grp_tensor_count(g);
    fm_tensor *srcs = fm_calloc(cap ? cap : 1, sizeof *srcs); /* references to the inputs */
    fm_status st = srcs ? FM_OK : fm_error_set(err, FM_ERR_NOMEM, "out of memory");
    for (size_t c = 0; st == FM_OK && c < g->ncolls; c++)
        for (size_t j = 0; st == FM_OK && j < g->colls[c].n; j++) {
            fm_tensor t;
            st = get_cast(src, g->colls[c].idx[j], g->want, false, &t, err);
            if (st == FM_OK) fm_tensor_ref(&srcs[ns++], &t);
            if (st == FM_OK) st = fm_opv_map_push(&m, s[g->colls[c].branch], &t, err);
        }
    if (st == FM_OK) st = run_chain(g, conv, src, &m, err);
    if (st == FM_OK) st = expand_keys(g, &m, err);
    if (st == FM_OK) st = named_new(out, m.n, err);
    for (size_t i = 0; st == FM_OK && i < m.n; i++) {
        (*out)[i].name = m.v[i].key;
        (*out)[i].tensor = m.v[i].t[0];
        m.v[i].key = NULL;
        m.v[i].n = 0;
        *n_out = i + 1;
    }
    fm_opv_map_clear(&m);
    if (st == FM_OK) drop_copied(srcs, ns, *out, *n_out);
    for (size_t i = 0; i < ns; i++)
        fm_tensor_free(&srcs[i]);
    fm_free(srcs);
    if (st != FM_OK) {
        fm_named_tensors_free(*out, *n_out);
        *out = NULL;
        *n_out = 0;
    }
    return st;
}

void fm_named_tensors_free(fm_named_tensor *v, size_t n) {
    if (!v) return;
    for (size_t i = 0; i < n; i++) {
        fm_free(v[i].name);
        fm_tensor_free(&v[i].tensor);
    }
    fm_free(v);
}
