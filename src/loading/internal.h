/* Internal declarations shared by the loading sources: op validation and joined pieces, the
 * keyed op chain (spec §4 key routing), transform renaming with capture groups, and a small
 * string -> index hash map. Not installed. */
#ifndef FM_LOADING_INTERNAL_H
#define FM_LOADING_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>

#include "fusemap/loading.h"
#include "loading/pattern.h"

/* ---- ops (ops.c) ------------------------------------------------------------------------------
 */
/* Checks kind and parameters (dims in -8..7, Conv3d parameters > 0). */
fm_status fm_op_validate(const fm_op_desc *op, fm_error *err);
/* The dtype a copy of a `have` tensor ends in when `cast` is asked for: cast applies to float
 * tensors only (FM_DTYPE_INVALID keeps the stored dtype). */
fm_dtype fm_op_out_dtype(fm_dtype have, fm_dtype cast);

/* One input of a join: parts[0] alone (stack_dim < 0, n == 1), or a virtual stack of n
 * equally shaped parts along stack_dim that is never materialised on its own. */
typedef struct fm_op_piece {
    const fm_tensor *parts; /* borrowed for the call */
    size_t n;
    int stack_dim;
} fm_op_piece;
/* Validates pieces for a join along dim (Python-style, against the pieces' rank) and computes the
 * result's shape, reading no data. */
fm_status fm_op_pieces_shape(const char *op, const fm_op_piece *pcs, size_t np, int dim,
                             fm_dtype cast, fm_shape *out, fm_error *err);
/* Concatenates the pieces along dim into one new tensor: exactly one allocation, dtype
 * conversion (cast) done while copying. `op` names the op in messages. */
fm_status fm_op_concat_pieces(const char *op, const fm_op_piece *pcs, size_t np, int dim,
                              fm_dtype cast, fm_tensor *out, fm_error *err);

/* ---- keyed op chain (opchain.c) -------------------------------------------------------------- */
typedef enum fm_opv_kind {
    FM_OPV_LIST = 0, /* tensors collected for one pattern (a list) */
    FM_OPV_STACK,    /* a MergeModulelist result kept lazy: its parts stacked along stack_dim */
    FM_OPV_TENSOR    /* one tensor produced by an op */
} fm_opv_kind;

typedef struct fm_opv {
    char *key; /* owned */
    fm_opv_kind kind;
    fm_tensor *t; /* owned array of n tensors, one reference each */
    size_t n, cap;
    int stack_dim;
} fm_opv;

/* Ordered map key -> value (insertion order, like a Python dict). */
typedef struct fm_opv_map {
    fm_opv *v;
    size_t n, cap;
} fm_opv_map;

void fm_opv_map_clear(fm_opv_map *m); /* frees everything and zeroes */
/* Appends t to the LIST entry `key` (created at the end when new). Takes t's reference (t is
 * zeroed), also on failure. */
fm_status fm_opv_map_push(fm_opv_map *m, const char *key, fm_tensor *t, fm_error *err);
/* Runs one op over the map with the spec's key routing. `src`/`tgt` are the transform's
 * normalised patterns; `want` the cast target (FM_DTYPE_INVALID: keep dtypes), applied by
 * copying ops. The error message is the bare reason (the caller names the op and the key).
 * The input map is consumed: on failure it is left empty. */
fm_status fm_opchain_step(const fm_op_desc *op, fm_opv_map *m, char *const *src, size_t ns,
                          char *const *tgt, size_t nt, fm_dtype want, fm_error *err);
/* Leaves one tensor per entry: the first tensor of a list, a materialised stack, with any
 * cast still pending applied. */
fm_status fm_opchain_finish(fm_opv_map *m, fm_dtype want, fm_error *err);

/* ---- transforms (transform.c) ------------------------------------------------------------------
 */
/* fm_transform_rename that also returns the capture groups of the winning branch (g->s[0]: the
 * matched text); g is zeroed when nothing matched. Caller clears g with fm_groups_clear. */
fm_status fm_transform_rename_groups(const fm_transform *t, const char *key, char **out,
                                     int *branch, fm_groups *g, fm_error *err);
/* The normalised pattern arrays (borrowed until the transform is freed). */
char *const *fm_transform_sources(const fm_transform *t);
char *const *fm_transform_targets(const fm_transform *t);

/* ---- string -> index map (keymap.c) ------------------------------------------------------------
 */
typedef struct fm_keymap {
    const char **keys; /* borrowed: each key must outlive the map */
    size_t *vals;
    size_t cap, count;
} fm_keymap;
fm_status fm_keymap_init(fm_keymap *m, size_t expected, fm_error *err);
void fm_keymap_free(fm_keymap *m); /* accepts a zeroed map */
/* Inserts or replaces. */
fm_status fm_keymap_put(fm_keymap *m, const char *key, size_t val, fm_error *err);
bool fm_keymap_get(const fm_keymap *m, const char *key, size_t *val);

/* ---- conversion groups (groups.c), shared by load and revert ----------------------------------
 */
typedef struct fm_grp_coll {
    int branch;  /* the converter's source pattern these tensors matched */
    size_t *idx; /* source indices, in natural-key order (the stacking order) */
    size_t n, cap;
} fm_grp_coll;

/* Everything destined for one first-target key: one converter instance, or one plain tensor. */
typedef struct fm_grp {
    char *key;          /* first target key (owned; the group map borrows it) */
    long conv;          /* index into the converter array; -1: a plain (renamed) tensor */
    size_t src;         /* plain: the source index */
    fm_grp_coll *colls; /* converter: one collection per matched source pattern, first-seen order */
    size_t ncolls;
    fm_groups groups; /* converter: captures of the first key it claimed (for "\N" in out-keys) */
    fm_dtype want;    /* cast target for float tensors, FM_DTYPE_INVALID: keep */
} fm_grp;

typedef struct fm_grp_set {
    fm_grp *v; /* insertion order */
    size_t n, cap;
    fm_keymap map; /* key -> index into v */
} fm_grp_set;

fm_status fm_grp_set_init(fm_grp_set *s, size_t expected, fm_error *err);
void fm_grp_set_free(fm_grp_set *s);
/* The group for key, created (conv -1, src 0, want INVALID) when absent; *g is valid until the next
 * fm_grp_get. */
fm_status fm_grp_get(fm_grp_set *s, const char *key, fm_grp **g, bool *created, fm_error *err);
fm_status fm_grp_add(fm_grp *g, int branch, size_t idx, fm_error *err);

/* Result of renaming one key through a transform chain. */
typedef struct fm_chain_result {
    char *key;        /* owned */
    long conv;        /* claiming converter (index into conv[]) or -1 */
    int branch;       /* its matching source pattern */
    fm_groups groups; /* its captures */
} fm_chain_result;
void fm_chain_result_clear(fm_chain_result *r);
/* Every renaming in order (chained), then the first converter that matches claims the key (§6.2).
 * ren_hit[i] / conv_hit[i] (may be NULL) are set for the transforms that matched. */
fm_status fm_rename_chain(fm_transform *const *ren, size_t nren, fm_transform *const *conv,
                          size_t nconv, const char *key, bool *ren_hit, bool *conv_hit,
                          fm_chain_result *r, fm_error *err);

/* Source indices sorted by fm_natural_key_cmp (stable). Caller frees *order with fm_free. */
fm_status fm_natural_order(const fm_tensor_source *src, size_t **order, fm_error *err);

/* Materialises a group and runs it: a plain group yields its tensor under g->key (cast to want);
 * a converter group runs its op chain and expands the out-keys to full names (§6.4). *out: caller
 * frees with fm_named_tensors_free. An op failure returns FM_ERR_CONVERSION with a message naming
 * the op, the first target key, the tensors involved and the reason; source access errors and
 * out-of-memory keep their own status. */
fm_status fm_grp_convert(const fm_grp *g, const fm_transform *conv, const fm_tensor_source *src,
                         fm_named_tensor **out, size_t *n_out, fm_error *err);

#endif
