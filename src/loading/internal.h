/* Internal declarations shared by the loading sources: op validation and joined pieces, the
 * keyed op chain (spec §4 key routing), transform renaming with capture groups, and a small
 * string -> index hash map. Not installed. */
#ifndef FM_LOADING_INTERNAL_H
#define FM_LOADING_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>

#include "fusemap/loading.h"
#include "loading/pattern.h"

/* ---- ops (ops.c) ------------------------------------------------------------------------------ */
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
/* Concatenates the pieces along dim into one new tensor: exactly one allocation, dtype
 * conversion (cast) done while copying. `op` names the op in messages. */
fm_status fm_op_concat_pieces(const char *op, const fm_op_piece *pcs, size_t np, int dim, fm_dtype cast,
                              fm_tensor *out, fm_error *err);

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
 * copying ops; `layer` the first target key (messages). On failure the map is left valid. */
fm_status fm_opchain_step(const fm_op_desc *op, fm_opv_map *m, char *const *src, size_t ns, char *const *tgt,
                          size_t nt, fm_dtype want, const char *layer, fm_error *err);
/* Leaves one tensor per entry: the first tensor of a list, a materialised stack, with any
 * cast still pending applied. */
fm_status fm_opchain_finish(fm_opv_map *m, fm_dtype want, fm_error *err);

/* ---- transforms (transform.c) ------------------------------------------------------------------ */
/* fm_transform_rename that also returns the capture groups of the winning branch (g->s[0]: the
 * matched text); g is zeroed when nothing matched. Caller clears g with fm_groups_clear. */
fm_status fm_transform_rename_groups(const fm_transform *t, const char *key, char **out, int *branch,
                                     fm_groups *g, fm_error *err);
/* The normalised pattern arrays (borrowed until the transform is freed). */
char *const *fm_transform_sources(const fm_transform *t);
char *const *fm_transform_targets(const fm_transform *t);

/* ---- string -> index map (keymap.c) ------------------------------------------------------------ */
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

#endif
