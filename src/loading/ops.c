/* Conversion ops on tensors (spec §4): chunk/concatenate, stack/unstack, transpose and the
 * Conv3d<->Linear reshapes, with their reverse descriptors. Reshapes and contiguous slices are
 * views (data never read); every copying op allocates its output exactly once and converts the
 * dtype while copying when a cast is asked for. */
#include <string.h>

#include "fusemap/loading.h"
#include "loading/internal.h"

static const char *const op_names[FM_OP_KIND_COUNT] = {
    "Conv3dToLinear",  "LinearToConv3d",  "Concatenate", "Chunk",
    "MergeModulelist", "SplitModulelist", "Transpose",
};

const char *fm_op_name(fm_op_kind k) {
    return (unsigned)k < FM_OP_KIND_COUNT ? op_names[k] : "UnknownOp";
}

fm_status fm_op_validate(const fm_op_desc *op, fm_error *err) {
    if (!op || (unsigned)op->kind >= FM_OP_KIND_COUNT)
        return fm_error_set(err, FM_ERR_INVALID_ARG, "unknown conversion op kind %d",
                            op ? (int)op->kind : -1);
    bool has_dim = op->kind != FM_OP_CONV3D_TO_LINEAR && op->kind != FM_OP_LINEAR_TO_CONV3D;
    if (has_dim && (op->dim < -FM_MAX_DIMS || op->dim >= FM_MAX_DIMS))
        return fm_error_set(err, FM_ERR_INVALID_ARG, "%s: dim %d outside -%d..%d",
                            op_names[op->kind], op->dim, FM_MAX_DIMS, FM_MAX_DIMS - 1);
    if (op->kind == FM_OP_TRANSPOSE && (op->dim1 < -FM_MAX_DIMS || op->dim1 >= FM_MAX_DIMS))
        return fm_error_set(err, FM_ERR_INVALID_ARG, "Transpose: dim1 %d outside -%d..%d", op->dim1,
                            FM_MAX_DIMS, FM_MAX_DIMS - 1);
    if ((op->kind == FM_OP_CHUNK || op->kind == FM_OP_CONCATENATE)
            ? (op->n_sizes < 0 || op->n_sizes > FM_OP_MAX_PARTS)
            : op->n_sizes != 0)
        return fm_error_set(err, FM_ERR_INVALID_ARG,
                            "%s: %d part sizes (Chunk and Concatenate take 0..%d)",
                            op_names[op->kind], op->n_sizes, FM_OP_MAX_PARTS);
    for (int i = 0; i < op->n_sizes; i++)
        if (op->sizes[i] <= 0)
            return fm_error_set(err, FM_ERR_INVALID_ARG, "%s: part size %d is %lld, must be > 0",
                                op_names[op->kind], i, (long long)op->sizes[i]);
    if (!has_dim &&
        (op->in_channels <= 0 || op->kernel[0] <= 0 || op->kernel[1] <= 0 || op->kernel[2] <= 0))
        return fm_error_set(err, FM_ERR_INVALID_ARG,
                            "%s: in_channels %lld and kernel (%lld, %lld, %lld) must be > 0",
                            op_names[op->kind], (long long)op->in_channels,
                            (long long)op->kernel[0], (long long)op->kernel[1],
                            (long long)op->kernel[2]);
    return FM_OK;
}

fm_status fm_op_reverse(const fm_op_desc *op, fm_op_desc *out, fm_error *err) {
    fm_status st = fm_op_validate(op, err);
    if (st != FM_OK) return st;
    static const fm_op_kind rev[FM_OP_KIND_COUNT] = {
        FM_OP_LINEAR_TO_CONV3D, FM_OP_CONV3D_TO_LINEAR, FM_OP_CHUNK,     FM_OP_CONCATENATE,
        FM_OP_SPLIT_MODULELIST, FM_OP_MERGE_MODULELIST, FM_OP_TRANSPOSE,
    };
    fm_op_desc r = *op;
    r.kind = rev[op->kind];
    if (op->kind == FM_OP_TRANSPOSE) {
        r.dim = op->dim1;
        r.dim1 = op->dim;
    }
    *out = r;
    return FM_OK;
}

void fm_tensors_free(fm_tensor *v, size_t n) {
    if (!v) return;
    for (size_t i = 0; i < n; i++)
        fm_tensor_free(&v[i]);
    fm_free(v);
}

/* ---- helpers --------------------------------------------------------------------------------- */
/* Python-style dim: -rank..rank-1 -> 0..rank-1. */
static fm_status norm_dim(const char *op, int dim, int rank, int *out, fm_error *err) {
    *out = 0;
    if (dim < -rank || dim >= rank || rank == 0)
        return fm_error_set(err, FM_ERR_SHAPE, "%s: dim %d out of range for a %dD tensor", op, dim,
                            rank);
    *out = dim < 0 ? dim + rank : dim;
    return FM_OK;
}

fm_dtype fm_op_out_dtype(fm_dtype have, fm_dtype cast) {
    if (cast == FM_DTYPE_INVALID || !fm_dtype_is_float(have) || !fm_dtype_is_float(cast))
        return have;
    return cast;
}

/* Data must be present and whole bytes per element for ops that copy or slice. */
static fm_status need_bytes(const char *op, const fm_tensor *t, fm_error *err) {
    if (!t->data && t->nbytes)
        return fm_error_set(err, FM_ERR_INVALID_ARG, "%s: tensor has no data (meta)", op);
    if (fm_dtype_bits(t->dtype) % 8)
        return fm_error_set(err, FM_ERR_DTYPE, "%s: %s elements are not whole bytes", op,
                            fm_dtype_name(t->dtype));
    return FM_OK;
}

static void move_elems(void *dst, fm_dtype ddt, const void *src, fm_dtype sdt, uint64_t n) {
    if (ddt == sdt) {
        memcpy(dst, src, (size_t)(n * (fm_dtype_bits(sdt) / 8)));
    } else {
        fm_convert(dst, ddt, src, sdt, n);
    }
}

static int64_t prod_dims(const fm_shape *s, int from, int to) {
    int64_t p = 1;
    for (int i = from; i < to; i++)
        p *= s->dims[i];
    return p;
}

/* Moves a contiguous block of shape S (rank of D) to/from the region of the contiguous tensor
 * `big` (shape D) that starts at element offsets off. scatter: block -> region. Converts
 * between the two dtypes. Shapes were validated by the caller (numel fits in memory). */
static void block_move(uint8_t *big, const fm_shape *D, fm_dtype big_dt, const int64_t *off,
                       uint8_t *blk, fm_dtype blk_dt, const fm_shape *S, bool scatter) {
    int R = D->ndim, p = -1;
    if (prod_dims(S, 0, R) == 0) return;
    for (int i = 0; i < R; i++)
        if (S->dims[i] != D->dims[i] || off[i] != 0) p = i;
    size_t bes = fm_dtype_bits(big_dt) / 8, kes = fm_dtype_bits(blk_dt) / 8;
    if (p < 0) {
        uint64_t n = (uint64_t)prod_dims(S, 0, R);
        if (scatter)
            move_elems(big, big_dt, blk, blk_dt, n);
        else
            move_elems(blk, blk_dt, big, big_dt, n);
        return;
    }
    int64_t inner = prod_dims(D, p + 1, R), run = S->dims[p] * inner, stride[FM_MAX_DIMS],
            idx[FM_MAX_DIMS] = {0};
    for (int i = 0; i <= p; i++)
        stride[i] = prod_dims(D, i + 1, R);
    int64_t outer = prod_dims(S, 0, p);
    for (int64_t o = 0; o < outer; o++) {
        int64_t at = off[p] * stride[p];
        for (int i = 0; i < p; i++)
            at += (idx[i] + off[i]) * stride[i];
        uint8_t *b = big + (size_t)at * bes, *k = blk + (size_t)(o * run) * kes;
        if (scatter)
            move_elems(b, big_dt, k, blk_dt, (uint64_t)run);
        else
            move_elems(k, blk_dt, b, big_dt, (uint64_t)run);
        for (int i = p - 1; i >= 0 && ++idx[i] == S->dims[i]; i--)
            idx[i] = 0;
    }
}

/* ---- concatenate / stack over pieces (a piece may be a virtual stack) ------------------------ */
static void piece_shape(const fm_op_piece *pc, fm_shape *s) {
    *s = pc->parts[0].shape;
    if (pc->stack_dim < 0) return;
    for (int i = s->ndim; i > pc->stack_dim; i--)
        s->dims[i] = s->dims[i - 1];
    s->dims[pc->stack_dim] = (int64_t)pc->n;
    s->ndim++;
}

static fm_status check_part(const char *op, const fm_tensor *t, const fm_tensor *first,
                            fm_dtype cast, fm_error *err) {
    fm_status st = need_bytes(op, t, err);
    if (st != FM_OK) return st;
    if (fm_op_out_dtype(t->dtype, cast) != fm_op_out_dtype(first->dtype, cast))
        return fm_error_set(err, FM_ERR_DTYPE, "%s: tensors have different dtypes (%s and %s)", op,
                            fm_dtype_name(first->dtype), fm_dtype_name(t->dtype));
    return FM_OK;
}

/* Validates the pieces and computes the output shape (dim already normalised). */
static fm_status pieces_shape(const char *op, const fm_op_piece *pcs, size_t np, int dim,
                              fm_dtype cast, fm_shape *out, fm_error *err) {
    char a[256], b[256];
    piece_shape(&pcs[0], out);
    out->dims[dim] = 0;
    for (size_t i = 0; i < np; i++) {
        fm_shape s;
        for (size_t j = 0; j < pcs[i].n; j++) {
            const fm_tensor *t = &pcs[i].parts[j];
            fm_status st = check_part(op, t, &pcs[0].parts[0], cast, err);
            if (st != FM_OK) return st;
            if (j && !fm_shape_equal(&t->shape, &pcs[i].parts[0].shape))
                return fm_error_set(err, FM_ERR_SHAPE,
                                    "%s: stacked tensors differ in shape (%s and %s)", op,
                                    fm_shape_format(&pcs[i].parts[0].shape, a, sizeof a),
                                    fm_shape_format(&t->shape, b, sizeof b));
        }
        piece_shape(&pcs[i], &s);
        bool ok = s.ndim == out->ndim;
        for (int d = 0; ok && d < s.ndim; d++)
            ok = d == dim || s.dims[d] == out->dims[d];
        if (!ok)
            return fm_error_set(err, FM_ERR_SHAPE, "%s: shapes %s and %s differ outside dim %d", op,
                                fm_shape_format(&pcs[0].parts[0].shape, a, sizeof a),
                                fm_shape_format(&s, b, sizeof b), dim);
        if (fm_add_u64((uint64_t)out->dims[dim], (uint64_t)s.dims[dim],
                       (uint64_t *)&out->dims[dim]))
            return fm_error_set(err, FM_ERR_OVERFLOW, "%s: size along dim %d overflows", op, dim);
    }
    return FM_OK;
}

fm_status fm_op_pieces_shape(const char *op, const fm_op_piece *pcs, size_t np, int dim,
                             fm_dtype cast, fm_shape *out, fm_error *err) {
    if (np == 0) return fm_error_set(err, FM_ERR_INVALID_ARG, "%s: no tensors to join", op);
    for (size_t i = 0; i < np; i++) {
        if (pcs[i].n == 0 || (pcs[i].stack_dim < 0 && pcs[i].n != 1))
            return fm_error_set(err, FM_ERR_INTERNAL, "%s: malformed piece %zu", op, i);
        int r = pcs[i].parts[0].shape.ndim;
        if (pcs[i].stack_dim >= 0 && (r >= FM_MAX_DIMS || pcs[i].stack_dim > r))
            return fm_error_set(err, FM_ERR_SHAPE, "%s: cannot stack %dD tensors along dim %d", op,
                                r, pcs[i].stack_dim);
    }
    fm_shape vs;
    piece_shape(&pcs[0], &vs);
    int d;
    fm_status st = norm_dim(op, dim, vs.ndim, &d, err);
    return st == FM_OK ? pieces_shape(op, pcs, np, d, cast, out, err) : st;
}

/* True when the concatenation of plain parts along d is already laid out in memory: one
 * storage, no cast, every dim before d of extent 1, each part starting where the previous
 * ends. The gate_proj/up_proj pair of a hub checkpoint (names sorted, data packed) is. */
static bool concat_is_view(const fm_op_piece *pcs, size_t np, const fm_shape *os, int d,
                           fm_dtype odt) {
    for (int i = 0; i < d; i++)
        if (os->dims[i] != 1) return false;
    const uint8_t *next = NULL;
    for (size_t i = 0; i < np; i++) {
        const fm_tensor *t = &pcs[i].parts[0];
        if (pcs[i].n != 1 || pcs[i].stack_dim >= 0 || !t->data || t->dtype != odt ||
            t->storage != pcs[0].parts[0].storage || (i && (const uint8_t *)t->data != next))
            return false;
        next = (const uint8_t *)t->data + t->nbytes;
    }
    return np > 0;
}

fm_status fm_op_concat_pieces(const char *op, const fm_op_piece *pcs, size_t np, int dim,
                              fm_dtype cast, fm_tensor *out, fm_error *err) {
    memset(out, 0, sizeof *out);
    fm_shape os;
    fm_status st = fm_op_pieces_shape(op, pcs, np, dim, cast, &os, err);
    if (st != FM_OK) return st;
    int d = dim < 0 ? dim + os.ndim : dim;
    fm_dtype odt = fm_op_out_dtype(pcs[0].parts[0].dtype, cast);
    if (concat_is_view(pcs, np, &os, d, odt)) /* zero-copy: a view over all the parts */
        return fm_tensor_view(out, pcs[0].parts[0].storage, pcs[0].parts[0].data, odt, &os, err);
    fm_tensor o;
    st = fm_tensor_alloc(&o, odt, &os, err);
    if (st != FM_OK) return st;
    int64_t at = 0;
    for (size_t i = 0; i < np; i++) {
        for (size_t j = 0; j < pcs[i].n; j++) {
            const fm_tensor *t = &pcs[i].parts[j];
            int64_t off[FM_MAX_DIMS] = {0};
            fm_shape bs = t->shape;
            if (pcs[i].stack_dim >= 0) { /* the part is a block of extent 1 along the stack dim */
                int sd = pcs[i].stack_dim;
                for (int k = bs.ndim; k > sd; k--)
                    bs.dims[k] = bs.dims[k - 1];
                bs.dims[sd] = 1;
                bs.ndim++;
                off[sd] = (int64_t)j;
            }
            off[d] += at;
            block_move(o.data, &os, odt, off, t->data, t->dtype, &bs, true);
        }
        fm_shape s;
        piece_shape(&pcs[i], &s);
        at += s.dims[d];
    }
    *out = o;
    return FM_OK;
}

fm_status fm_op_concatenate(const fm_tensor *xs, size_t n, int dim, fm_dtype cast, fm_tensor *out,
                            fm_error *err) {
    fm_op_piece pcs[64], *p = n <= 64 ? pcs : fm_malloc(n * sizeof *p);
    if (n == 0) return fm_op_concat_pieces("Concatenate", NULL, 0, dim, cast, out, err);
    if (!p) {
        memset(out, 0, sizeof *out);
        return fm_error_set(err, FM_ERR_NOMEM, "Concatenate: out of memory");
    }
    for (size_t i = 0; i < n; i++)
        p[i] = (fm_op_piece){&xs[i], 1, -1};
    fm_status st = fm_op_concat_pieces("Concatenate", p, n, dim, cast, out, err);
    if (p != pcs) fm_free(p);
    return st;
}

fm_status fm_op_stack(const fm_tensor *xs, size_t n, int dim, fm_dtype cast, fm_tensor *out,
                      fm_error *err) {
    memset(out, 0, sizeof *out);
    if (n == 0)
        return fm_error_set(err, FM_ERR_INVALID_ARG, "MergeModulelist: no tensors to stack");
    int d;
    fm_status st = norm_dim("MergeModulelist", dim, xs[0].shape.ndim + 1, &d, err);
    if (st != FM_OK) return st;
    if (xs[0].shape.ndim >= FM_MAX_DIMS)
        return fm_error_set(err, FM_ERR_SHAPE,
                            "MergeModulelist: stacking %dD tensors exceeds %d dims",
                            xs[0].shape.ndim, FM_MAX_DIMS);
    fm_op_piece pc = {xs, n, d};
    return fm_op_concat_pieces("MergeModulelist", &pc, 1, d, cast, out, err);
}

/* ---- slicing: chunk / unstack --------------------------------------------------------------- */
/* out := x[..., start:start+len, ...] along d (squeezing d when asked): a view when the slice is
 * contiguous (all dims before d have extent 1) or x is meta, else one copy. */
static fm_status slice_along(const fm_tensor *x, int d, int64_t start, int64_t len, bool squeeze,
                             fm_tensor *out, fm_error *err) {
    fm_shape ps = x->shape, fs;
    ps.dims[d] = len;
    fs = ps;
    if (squeeze) {
        for (int i = d; i < fs.ndim - 1; i++)
            fs.dims[i] = fs.dims[i + 1];
        fs.ndim--;
    }
    if (!x->data) return fm_tensor_init_meta(out, x->dtype, &fs, err);
    size_t es = fm_dtype_bits(x->dtype) / 8;
    if (prod_dims(&x->shape, 0, d) == 1) {
        uint8_t *at =
            (uint8_t *)x->data + (size_t)(start * prod_dims(&x->shape, d + 1, x->shape.ndim)) * es;
        if (x->storage) return fm_tensor_view(out, x->storage, at, x->dtype, &fs, err);
    }
    fm_status st = fm_tensor_alloc(out, x->dtype, &fs, err);
    if (st != FM_OK) return st;
    int64_t off[FM_MAX_DIMS] = {0};
    off[d] = start;
    block_move(x->data, &x->shape, x->dtype, off, out->data, x->dtype, &ps, false);
    return FM_OK;
}

fm_status fm_op_chunk(const fm_tensor *x, int dim, size_t k, fm_tensor *out, size_t *n_out,
                      fm_error *err) {
    *n_out = 0;
    int d;
    fm_status st = norm_dim("Chunk", dim, x->shape.ndim, &d, err);
    if (st == FM_OK && k == 0)
        st = fm_error_set(err, FM_ERR_INVALID_ARG, "Chunk: chunk count must be > 0");
    if (st == FM_OK && x->data) st = need_bytes("Chunk", x, err);
    if (st != FM_OK) return st;
    int64_t n = x->shape.dims[d], piece = (n + (int64_t)k - 1) / (int64_t)k;
    size_t count = n == 0 ? k : (size_t)((n + piece - 1) / piece);
    for (size_t i = 0; i < count; i++) {
        int64_t start = (int64_t)i * piece, len = n - start < piece ? n - start : piece;
        st = slice_along(x, d, start, len, false, &out[i], err);
        if (st != FM_OK) {
            for (size_t j = 0; j < i; j++)
                fm_tensor_free(&out[j]);
            return st;
        }
    }
    *n_out = count;
    return FM_OK;
}

fm_status fm_op_split(const fm_tensor *x, int dim, const int64_t *sizes, size_t n, fm_tensor *out,
                      fm_error *err) {
    int d;
    fm_status st = norm_dim("Chunk", dim, x->shape.ndim, &d, err);
    if (st == FM_OK && x->data) st = need_bytes("Chunk", x, err);
    if (st != FM_OK) return st;
    int64_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += sizes[i];
    if (total != x->shape.dims[d]) {
        char a[256];
        return fm_error_set(err, FM_ERR_SHAPE,
                            "Chunk: parts of %lld in total cannot split %s along dim %d",
                            (long long)total, fm_shape_format(&x->shape, a, sizeof a), dim);
    }
    for (size_t i = 0, start = 0; i < n; start += (size_t)sizes[i], i++) {
        st = slice_along(x, d, (int64_t)start, sizes[i], false, &out[i], err);
        if (st != FM_OK) {
            for (size_t j = 0; j < i; j++)
                fm_tensor_free(&out[j]);
            return st;
        }
    }
    return FM_OK;
}

/* Sources of a Concatenate with sizes must have those extents along dim. */
fm_status fm_op_check_parts(const fm_op_desc *op, const fm_tensor *xs, size_t n, fm_error *err) {
    if (!op->n_sizes) return FM_OK;
    if ((size_t)op->n_sizes != n)
        return fm_error_set(err, FM_ERR_SHAPE, "Concatenate: %zu sources for %d part sizes", n,
                            op->n_sizes);
    for (size_t i = 0; i < n; i++) {
        int d;
        fm_status st = norm_dim("Concatenate", op->dim, xs[i].shape.ndim, &d, err);
        if (st != FM_OK) return st;
        if (xs[i].shape.dims[d] != op->sizes[i]) {
            char a[256];
            return fm_error_set(err, FM_ERR_SHAPE,
                                "Concatenate: source %zu is %s, its part along dim %d must be %lld",
                                i, fm_shape_format(&xs[i].shape, a, sizeof a), op->dim,
                                (long long)op->sizes[i]);
        }
    }
    return FM_OK;
}

fm_status fm_op_unstack(const fm_tensor *x, int dim, fm_tensor *out, fm_error *err) {
    int d;
    fm_status st = norm_dim("SplitModulelist", dim, x->shape.ndim, &d, err);
    if (st == FM_OK && x->data) st = need_bytes("SplitModulelist", x, err);
    if (st != FM_OK) return st;
    for (int64_t i = 0; i < x->shape.dims[d]; i++) {
        st = slice_along(x, d, i, 1, true, &out[i], err);
        if (st != FM_OK) {
            for (int64_t j = 0; j < i; j++)
                fm_tensor_free(&out[j]);
            return st;
        }
    }
    return FM_OK;
}

/* ---- transpose ---------------------------------------------------------------------------------
 */
/* True when swapping a and b leaves the memory order unchanged (only size-1 dims move). */
static bool swap_is_view(const fm_shape *s, int a, int b) {
    if (a == b) return true;
    int lo = a < b ? a : b, hi = a < b ? b : a;
    if (s->dims[lo] != 1 && s->dims[hi] != 1) return false;
    for (int i = lo + 1; i < hi; i++)
        if (s->dims[i] != 1) return s->dims[lo] == 1 && s->dims[hi] == 1;
    return true;
}

static void transpose_copy(const fm_tensor *x, int a, int b, fm_tensor *o) {
    const fm_shape *s = &x->shape;
    int64_t A = prod_dims(s, 0, a), Da = s->dims[a], B = prod_dims(s, a + 1, b), Db = s->dims[b],
            C = prod_dims(s, b + 1, s->ndim);
    size_t ses = fm_dtype_bits(x->dtype) / 8, des = fm_dtype_bits(o->dtype) / 8;
    const uint8_t *src = x->data;
    uint8_t *dst = o->data;
    for (int64_t i = 0; i < A; i++)
        for (int64_t xb = 0; xb < Db; xb++)
            for (int64_t m = 0; m < B; m++)
                for (int64_t y = 0; y < Da; y++) {
                    int64_t so = (((i * Da + y) * B + m) * Db + xb) * C,
                            dof = (((i * Db + xb) * B + m) * Da + y) * C;
                    move_elems(dst + (size_t)dof * des, o->dtype, src + (size_t)so * ses, x->dtype,
                               (uint64_t)C);
                }
}

fm_status fm_op_transpose(const fm_tensor *x, int dim0, int dim1, fm_dtype cast, fm_tensor *out,
                          fm_error *err) {
    memset(out, 0, sizeof *out);
    int a, b;
    fm_status st = norm_dim("Transpose", dim0, x->shape.ndim, &a, err);
    if (st == FM_OK) st = norm_dim("Transpose", dim1, x->shape.ndim, &b, err);
    if (st != FM_OK) return st;
    fm_shape s = x->shape;
    s.dims[a] = x->shape.dims[b];
    s.dims[b] = x->shape.dims[a];
    fm_dtype odt = fm_op_out_dtype(x->dtype, cast);
    if (odt == x->dtype && swap_is_view(&x->shape, a, b)) return fm_tensor_reshape(out, x, &s, err);
    st = need_bytes("Transpose", x, err);
    if (st == FM_OK) st = fm_tensor_alloc(out, odt, &s, err);
    if (st != FM_OK) return st;
    if (a > b) {
        int t = a;
        a = b;
        b = t;
    }
    if (a == b) {
        move_elems(out->data, odt, x->data, x->dtype, fm_tensor_numel(x));
    } else {
        transpose_copy(x, a, b, out);
    }
    return FM_OK;
}

/* ---- Conv3d <-> Linear ---------------------------------------------------------------------- */
fm_status fm_op_conv3d_to_linear(const fm_tensor *x, fm_tensor *out, fm_error *err) {
    memset(out, 0, sizeof *out);
    if (x->shape.ndim == 2) {
        fm_tensor_ref(out, x);
        return FM_OK;
    }
    if (x->shape.ndim != 5)
        return fm_error_set(err, FM_ERR_SHAPE, "Conv3dToLinear expects a 5D or 2D tensor, got %dD",
                            x->shape.ndim);
    fm_shape s;
    int64_t dims[2] = {x->shape.dims[0], prod_dims(&x->shape, 1, 5)};
    fm_shape_make(&s, 2, dims);
    return fm_tensor_reshape(out, x, &s, err);
}

fm_status fm_op_linear_to_conv3d(const fm_tensor *x, int64_t in_channels, const int64_t kernel[3],
                                 fm_tensor *out, fm_error *err) {
    memset(out, 0, sizeof *out);
    char a[256], b[256];
    if (x->shape.ndim < 1)
        return fm_error_set(err, FM_ERR_SHAPE,
                            "LinearToConv3d expects at least a 1D tensor, got 0D");
    int64_t dims[5] = {x->shape.dims[0], in_channels, kernel[0], kernel[1], kernel[2]};
    fm_shape s;
    uint64_t n_in, n_out;
    if (fm_shape_make(&s, 5, dims) != FM_OK || fm_shape_numel(&s, &n_out) != FM_OK ||
        fm_shape_numel(&x->shape, &n_in) != FM_OK || n_in != n_out) {
        s.ndim = 5;
        memcpy(s.dims, dims, sizeof dims);
        return fm_error_set(err, FM_ERR_SHAPE, "Cannot reshape tensor with shape %s into %s",
                            fm_shape_format(&x->shape, a, sizeof a),
                            fm_shape_format(&s, b, sizeof b));
    }
    return fm_tensor_reshape(out, x, &s, err);
}

/* ---- one op over a plain tensor list --------------------------------------------------------- */
static fm_status apply_cast(fm_tensor *v, size_t n, fm_dtype cast, fm_error *err) {
    for (size_t i = 0; i < n; i++) {
        fm_dtype odt = fm_op_out_dtype(v[i].dtype, cast);
        if (odt == v[i].dtype) continue;
        fm_tensor c;
        fm_status st = fm_tensor_cast(&c, &v[i], odt, err);
        if (st != FM_OK) return st;
        fm_tensor_free(&v[i]);
        v[i] = c;
    }
    return FM_OK;
}

static fm_status apply_one(const fm_op_desc *op, const fm_tensor *in, size_t n_in, size_t n_targets,
                           fm_dtype cast, fm_tensor *o, size_t *n, fm_error *err) {
    *n = 1;
    switch (op->kind) {
    case FM_OP_CONV3D_TO_LINEAR:
        return fm_op_conv3d_to_linear(&in[0], o, err);
    case FM_OP_LINEAR_TO_CONV3D:
        return fm_op_linear_to_conv3d(&in[0], op->in_channels, op->kernel, o, err);
    case FM_OP_CONCATENATE: {
        fm_status st = fm_op_check_parts(op, in, n_in, err);
        return st == FM_OK ? fm_op_concatenate(in, n_in, op->dim, cast, o, err) : st;
    }
    case FM_OP_MERGE_MODULELIST:
        return fm_op_stack(in, n_in, op->dim, cast, o, err);
    case FM_OP_TRANSPOSE:
        return fm_op_transpose(&in[0], op->dim, op->dim1, cast, o, err);
    case FM_OP_CHUNK: {
        if (op->n_sizes) {
            if ((size_t)op->n_sizes != n_targets)
                return fm_error_set(err, FM_ERR_SHAPE, "Chunk: %d part sizes for %zu targets",
                                    op->n_sizes, n_targets);
            fm_status st = fm_op_split(&in[0], op->dim, op->sizes, n_targets, o, err);
            *n = st == FM_OK ? n_targets : 0;
            return st;
        }
        fm_status st = fm_op_chunk(&in[0], op->dim, n_targets, o, n, err);
        if (st == FM_OK && *n != n_targets) {
            char a[256];
            for (size_t i = 0; i < *n; i++)
                fm_tensor_free(&o[i]);
            st = fm_error_set(err, FM_ERR_SHAPE,
                              "Chunk: splitting %s along dim %d gives %zu pieces, not %zu",
                              fm_shape_format(&in[0].shape, a, sizeof a), op->dim, *n, n_targets);
            *n = 0;
        }
        return st;
    }
    case FM_OP_SPLIT_MODULELIST: {
        int d;
        fm_status st = norm_dim("SplitModulelist", op->dim, in[0].shape.ndim, &d, err);
        *n = st == FM_OK ? (size_t)in[0].shape.dims[d] : 0;
        return st == FM_OK ? fm_op_unstack(&in[0], d, o, err) : st;
    }
    default:
        return fm_error_set(err, FM_ERR_INVALID_ARG, "unknown op kind %d", (int)op->kind);
    }
}

fm_status fm_op_apply(const fm_op_desc *op, const fm_tensor *in, size_t n_in, size_t n_targets,
                      fm_dtype cast, fm_tensor **out, size_t *n_out, fm_error *err) {
    *out = NULL;
    *n_out = 0;
    fm_status st = fm_op_validate(op, err);
    if (st != FM_OK) return st;
    if (n_in == 0)
        return fm_error_set(err, FM_ERR_INVALID_ARG, "%s: no input tensors", op_names[op->kind]);
    size_t cap = 1;
    if (op->kind == FM_OP_CHUNK) cap = n_targets;
    if (op->kind == FM_OP_SPLIT_MODULELIST) {
        int d;
        st = norm_dim("SplitModulelist", op->dim, in[0].shape.ndim, &d, err);
        if (st != FM_OK) return st;
        cap = (size_t)in[0].shape.dims[d];
    }
    fm_tensor *o = fm_calloc(cap ? cap : 1, sizeof *o);
    if (!o) return fm_error_set(err, FM_ERR_NOMEM, "%s: out of memory", op_names[op->kind]);
    size_t n = 0;
    st = apply_one(op, in, n_in, n_targets, cast, o, &n, err);
    if (st == FM_OK) st = apply_cast(o, n, cast, err);
    if (st != FM_OK) {
        fm_tensors_free(o, n);
        return st;
    }
    *out = o;
    *n_out = n;
    return FM_OK;
}
