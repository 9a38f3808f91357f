/* The keyed op chain (spec §4): each op maps an ordered "pattern -> tensors" map to the next one
 * with the spec's key-routing rules. MergeModulelist stays lazy (a virtual stack) so that a
 * following Concatenate — the MoE gate/up chain — allocates its result exactly once. */
#include <stdio.h>
#include <string.h>

#include "loading/internal.h"

static void opv_free(fm_opv *e) {
    for (size_t i = 0; i < e->n; i++)
        fm_tensor_free(&e->t[i]);
    fm_free(e->t);
    fm_free(e->key);
    memset(e, 0, sizeof *e);
}

void fm_opv_map_clear(fm_opv_map *m) {
    if (!m) return;
    for (size_t i = 0; i < m->n; i++)
        opv_free(&m->v[i]);
    fm_free(m->v);
    memset(m, 0, sizeof *m);
}

static fm_opv *map_find(fm_opv_map *m, const char *key) {
    for (size_t i = 0; i < m->n; i++)
        if (strcmp(m->v[i].key, key) == 0) return &m->v[i];
    return NULL;
}

static fm_status tensors_push(fm_opv *e, fm_tensor *t, fm_error *err) {
    if (e->n == e->cap) {
        size_t cap = e->cap ? e->cap * 2 : 4;
        fm_tensor *v = fm_realloc(e->t, cap * sizeof *v);
        if (!v) {
            fm_tensor_free(t);
            return fm_error_set(err, FM_ERR_NOMEM, "out of memory collecting tensors for '%s'",
                                e->key);
        }
        e->t = v;
        e->cap = cap;
    }
    e->t[e->n++] = *t;
    memset(t, 0, sizeof *t);
    return FM_OK;
}

/* A new entry at the end (key copied). */
static fm_opv *map_append(fm_opv_map *m, const char *key, fm_opv_kind kind, fm_error *err) {
    if (m->n == m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 4;
        fm_opv *v = fm_realloc(m->v, cap * sizeof *v);
        if (!v) {
            fm_error_set(err, FM_ERR_NOMEM, "out of memory in the op chain");
            return NULL;
        }
        m->v = v;
        m->cap = cap;
    }
    fm_opv *e = &m->v[m->n];
    memset(e, 0, sizeof *e);
    if (!(e->key = fm_strdup(key))) {
        fm_error_set(err, FM_ERR_NOMEM, "out of memory in the op chain");
        return NULL;
    }
    e->kind = kind;
    e->stack_dim = -1;
    m->n++;
    return e;
}

fm_status fm_opv_map_push(fm_opv_map *m, const char *key, fm_tensor *t, fm_error *err) {
    fm_opv *e = map_find(m, key);
    if (!e && !(e = map_append(m, key, FM_OPV_LIST, err))) {
        fm_tensor_free(t);
        return err ? err->status : FM_ERR_NOMEM;
    }
    return tensors_push(e, t, err);
}

/* Sets `key` to the single tensor t (Python dict assignment: an existing key keeps its place and
 * gets the new value). Takes t. */
static fm_status map_put(fm_opv_map *m, const char *key, fm_tensor *t, fm_error *err) {
    fm_opv *e = map_find(m, key);
    if (e) {
        for (size_t i = 0; i < e->n; i++)
            fm_tensor_free(&e->t[i]);
        e->n = 0;
        e->kind = FM_OPV_TENSOR;
        e->stack_dim = -1;
    } else if (!(e = map_append(m, key, FM_OPV_TENSOR, err))) {
        fm_tensor_free(t);
        return err ? err->status : FM_ERR_NOMEM;
    }
    return tensors_push(e, t, err);
}

/* The entry as one tensor (a new reference): a list's first tensor, a materialised stack. */
static fm_status opv_tensor(const fm_opv *e, fm_dtype want, fm_tensor *out, fm_error *err) {
    if (e->kind != FM_OPV_STACK) {
        fm_tensor_ref(out, &e->t[0]);
        return FM_OK;
    }
    fm_op_piece pc = {e->t, e->n, e->stack_dim};
    return fm_op_concat_pieces("MergeModulelist", &pc, 1, e->stack_dim, want, out, err);
}

/* ---- the ops -----------------------------------------------------------------------------------
 */
static fm_status undefined(const fm_opv_map *m, size_t nt, fm_error *err) {
    return fm_error_set(err, FM_ERR_INVALID_ARG,
                        "Undefined Operation encountered! (%zu input entries, %zu targets)", m->n,
                        nt);
}

static fm_status op_chunk(const fm_op_desc *op, const fm_opv_map *m, char *const *tgt, size_t nt,
                          fm_dtype want, fm_opv_map *o, fm_error *err) {
    if (m->n != 1 || nt < 2) return undefined(m, nt, err);
    fm_tensor x, *pcs = fm_calloc(nt, sizeof *pcs);
    if (!pcs) return fm_error_set(err, FM_ERR_NOMEM, "out of memory");
    size_t n = 0;
    fm_status st = opv_tensor(&m->v[0], want, &x, err);
    if (st == FM_OK) {
        st = fm_op_chunk(&x, op->dim, nt, pcs, &n, err);
        if (st == FM_OK && n != nt) {
            char a[256];
            st = fm_error_set(err, FM_ERR_SHAPE,
                              "splitting %s along dim %d gives %zu pieces for %zu targets",
                              fm_shape_format(&x.shape, a, sizeof a), op->dim, n, nt);
        }
        fm_tensor_free(&x);
    }
    for (size_t i = 0; i < n; i++)
        if (st == FM_OK) st = map_put(o, tgt[i], &pcs[i], err);
    fm_tensors_free(pcs, n);
    return st;
}

static fm_status op_concat(const fm_op_desc *op, const fm_opv_map *m, char *const *src, size_t ns,
                           char *const *tgt, size_t nt, fm_dtype want, fm_opv_map *o,
                           fm_error *err) {
    if (nt > 1) return undefined(m, nt, err);
    size_t np = 0;
    for (size_t i = 0; i < m->n; i++)
        np += m->v[i].kind == FM_OPV_LIST ? m->v[i].n : 1;
    fm_op_piece *pcs = fm_calloc(np ? np : 1, sizeof *pcs);
    if (!pcs) return fm_error_set(err, FM_ERR_NOMEM, "out of memory");
    np = 0;
    for (size_t s = 0; s < ns; s++) { /* source order; lists flattened; absent patterns skipped */
        for (size_t i = 0; i < m->n; i++) {
            const fm_opv *e = &m->v[i];
            if (strcmp(e->key, src[s]) != 0) continue;
            if (e->kind == FM_OPV_STACK)
                pcs[np++] = (fm_op_piece){e->t, e->n, e->stack_dim};
            else
                for (size_t j = 0; j < e->n; j++)
                    pcs[np++] = (fm_op_piece){&e->t[j], 1, -1};
            break;
        }
    }
    fm_tensor r;
    fm_status st =
        np ? fm_op_concat_pieces("Concatenate", pcs, np, op->dim, want, &r, err)
           : fm_error_set(err, FM_ERR_INVALID_ARG, "none of the source patterns has tensors");
    fm_free(pcs);
    return st == FM_OK ? map_put(o, tgt[0], &r, err) : st;
}

/* Stacks each list lazily (checked now, copied by whoever consumes it). */
static fm_status op_merge(const fm_op_desc *op, fm_opv_map *m, char *const *tgt, size_t nt,
                          fm_dtype want, fm_opv_map *o, fm_error *err) {
    if (m->n == 1 && nt != 1) return undefined(m, nt, err);
    for (size_t i = 0; i < m->n; i++) {
        fm_opv *e = &m->v[i];
        const char *key = m->n == 1 ? tgt[0] : e->key;
        if (e->kind == FM_OPV_LIST) {
            int rank = e->t[0].shape.ndim, d = op->dim < 0 ? op->dim + rank + 1 : op->dim;
            if (d < 0 || d > rank || rank >= FM_MAX_DIMS)
                return fm_error_set(err, FM_ERR_SHAPE, "cannot stack %dD tensors along dim %d",
                                    rank, op->dim);
            fm_op_piece pc = {e->t, e->n, d};
            fm_shape shape;
            fm_status st = fm_op_pieces_shape("MergeModulelist", &pc, 1, d, want, &shape, err);
            if (st != FM_OK) return st;
            e->kind = FM_OPV_STACK;
            e->stack_dim = d;
        }
        fm_opv *ne = map_append(o, key, e->kind, err);
        if (!ne) return err ? err->status : FM_ERR_NOMEM;
        ne->t = e->t;
        ne->n = e->n;
        ne->cap = e->cap;
        ne->stack_dim = e->stack_dim;
        e->t = NULL;
        e->n = e->cap = 0;
    }
    return FM_OK;
}

/* Replaces every '*' of pattern by i. */
static char *star_key(const char *pattern, size_t i) {
    char num[24];
    snprintf(num, sizeof num, "%zu", i);
    return fm_str_replace_all(pattern, "*", num);
}

static fm_status op_split(const fm_op_desc *op, const fm_opv_map *m, char *const *tgt, size_t nt,
                          fm_dtype want, fm_opv_map *o, fm_error *err) {
    if (m->n == 1 && nt != 1) return undefined(m, nt, err);
    fm_status st = FM_OK;
    for (size_t i = 0; st == FM_OK && i < m->n; i++) {
        const fm_opv *e = &m->v[i];
        fm_tensor x, *parts = NULL;
        st = opv_tensor(e, want, &x, err);
        if (st != FM_OK) break;
        int rank = x.shape.ndim, d = op->dim < 0 ? op->dim + rank : op->dim;
        size_t n = d >= 0 && d < rank ? (size_t)x.shape.dims[d] : 0;
        parts = fm_calloc(n ? n : 1, sizeof *parts);
        st = parts ? fm_op_unstack(&x, op->dim, parts, err)
                   : fm_error_set(err, FM_ERR_NOMEM, "out of memory");
        fm_tensor_free(&x);
        for (size_t j = 0; st == FM_OK && j < n; j++) {
            char *k = star_key(m->n == 1 ? tgt[0] : e->key, j);
            st = k ? map_put(o, k, &parts[j], err)
                   : fm_error_set(err, FM_ERR_NOMEM, "out of memory");
            fm_free(k);
        }
        if (parts) fm_tensors_free(parts, n);
    }
    return st;
}

/* Transpose, Conv3dToLinear, LinearToConv3d: one entry in, one out. */
static fm_status op_single(const fm_op_desc *op, const fm_opv_map *m, char *const *src, size_t ns,
                           char *const *tgt, size_t nt, fm_dtype want, fm_opv_map *o,
                           fm_error *err) {
    if (m->n != 1 || (nt > 1 && ns != 1)) return undefined(m, nt, err);
    const char *key = nt > 1 ? src[0] : tgt[0];
    fm_tensor x, r;
    fm_status st = opv_tensor(&m->v[0], want, &x, err);
    if (st != FM_OK) return st;
    if (op->kind == FM_OP_TRANSPOSE)
        st = fm_op_transpose(&x, op->dim, op->dim1, want, &r, err);
    else if (op->kind == FM_OP_CONV3D_TO_LINEAR)
        st = fm_op_conv3d_to_linear(&x, &r, err);
    else
        st = fm_op_linear_to_conv3d(&x, op->in_channels, op->kernel, &r, err);
    fm_tensor_free(&x);
    return st == FM_OK ? map_put(o, key, &r, err) : st;
}

fm_status fm_opchain_step(const fm_op_desc *op, fm_opv_map *m, char *const *src, size_t ns,
                          char *const *tgt, size_t nt, fm_dtype want, fm_error *err) {
    fm_opv_map o = {0};
    fm_status st;
    if (m->n == 0) return fm_error_set(err, FM_ERR_INVALID_ARG, "no input tensors");
    switch (op->kind) {
    case FM_OP_CHUNK:
        st = op_chunk(op, m, tgt, nt, want, &o, err);
        break;
    case FM_OP_CONCATENATE:
        st = op_concat(op, m, src, ns, tgt, nt, want, &o, err);
        break;
    case FM_OP_MERGE_MODULELIST:
        st = op_merge(op, m, tgt, nt, want, &o, err);
        break;
    case FM_OP_SPLIT_MODULELIST:
        st = op_split(op, m, tgt, nt, want, &o, err);
        break;
    default:
        st = op_single(op, m, src, ns, tgt, nt, want, &o, err);
        break;
    }
    fm_opv_map_clear(m);
    if (st != FM_OK) {
        fm_opv_map_clear(&o);
        return st;
    }
    *m = o;
    return FM_OK;
}

fm_status fm_opchain_finish(fm_opv_map *m, fm_dtype want, fm_error *err) {
    for (size_t i = 0; i < m->n; i++) {
        fm_opv *e = &m->v[i];
        fm_tensor x;
        fm_status st = opv_tensor(e, want, &x, err);
        if (st == FM_OK && fm_op_out_dtype(x.dtype, want) != x.dtype) {
            fm_tensor c;
            st = fm_tensor_cast(&c, &x, fm_op_out_dtype(x.dtype, want), err);
            fm_tensor_free(&x);
            x = c;
        }
        if (st != FM_OK) return st;
        for (size_t j = 0; j < e->n; j++)
            fm_tensor_free(&e->t[j]);
        e->t[0] = x;
        e->n = 1;
        e->kind = FM_OPV_TENSOR;
        e->stack_dim = -1;
    }
    return FM_OK;
}
