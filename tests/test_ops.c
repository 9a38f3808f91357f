/* Conversion ops (src/loading/ops.c, opchain.c): every op against a naive element-by-element
 * reference on random shapes and dtypes, every op followed by its reverse giving the input back
 * byte for byte, zero-copy views (data pointer, storage and mapping lifetime), exactly one
 * allocation per join, casts while copying, error texts, and the keyed chain's lazy stack. */
#include <stdlib.h>
#include <string.h>

#include "core/testing.h"
#include "fusemap/loading.h"
#include "loading/internal.h"
#include "support/check.h"
#include "support/eng_fixtures.h"

static int quick(void) {
    return getenv("FM_TEST_QUICK") != NULL;
}

static const fm_dtype kDtypes[] = {FM_DTYPE_U8,  FM_DTYPE_BOOL, FM_DTYPE_I16, FM_DTYPE_BF16,
                                   FM_DTYPE_F32, FM_DTYPE_F64,  FM_DTYPE_I64};

/* ---- naive references (element by element, byte moves) ------------------------------------- */
static void coords_of(const fm_shape *s, uint64_t flat, int64_t *c) {
    for (int i = s->ndim - 1; i >= 0; i--) {
        c[i] = s->dims[i] ? (int64_t)(flat % (uint64_t)s->dims[i]) : 0;
        flat = s->dims[i] ? flat / (uint64_t)s->dims[i] : 0;
    }
}
static uint64_t flat_of(const fm_shape *s, const int64_t *c) {
    uint64_t f = 0;
    for (int i = 0; i < s->ndim; i++)
        f = f * (uint64_t)s->dims[i] + (uint64_t)c[i];
    return f;
}
static size_t esz(const fm_tensor *t) {
    return fm_dtype_bits(t->dtype) / 8;
}

/* Output of a concatenation along d, computed element by element. */
static fm_tensor ref_concat(const fm_tensor *xs, size_t n, int d) {
    fm_shape s = xs[0].shape;
    s.dims[d] = 0;
    for (size_t i = 0; i < n; i++)
        s.dims[d] += xs[i].shape.dims[d];
    fm_tensor o;
    fm_tensor_alloc(&o, xs[0].dtype, &s, NULL);
    size_t es = esz(&o);
    for (uint64_t f = 0; f < fm_tensor_numel(&o); f++) {
        int64_t c[FM_MAX_DIMS];
        coords_of(&s, f, c);
        size_t k = 0;
        while (c[d] >= xs[k].shape.dims[d])
            c[d] -= xs[k++].shape.dims[d];
        memcpy((uint8_t *)o.data + f * es, (uint8_t *)xs[k].data + flat_of(&xs[k].shape, c) * es,
               es);
    }
    return o;
}

static fm_tensor ref_stack(const fm_tensor *xs, size_t n, int d) {
    fm_shape s = xs[0].shape;
    for (int i = s.ndim; i > d; i--)
        s.dims[i] = s.dims[i - 1];
    s.dims[d] = (int64_t)n;
    s.ndim++;
    fm_tensor o;
    fm_tensor_alloc(&o, xs[0].dtype, &s, NULL);
    size_t es = esz(&o);
    for (uint64_t f = 0; f < fm_tensor_numel(&o); f++) {
        int64_t c[FM_MAX_DIMS], ic[FM_MAX_DIMS];
        coords_of(&s, f, c);
        for (int i = 0, j = 0; i < s.ndim; i++)
            if (i != d) ic[j++] = c[i];
        memcpy((uint8_t *)o.data + f * es,
               (uint8_t *)xs[c[d]].data + flat_of(&xs[0].shape, ic) * es, es);
    }
    return o;
}

static fm_tensor ref_transpose(const fm_tensor *x, int a, int b) {
    fm_shape s = x->shape;
    s.dims[a] = x->shape.dims[b];
    s.dims[b] = x->shape.dims[a];
    fm_tensor o;
    fm_tensor_alloc(&o, x->dtype, &s, NULL);
    size_t es = esz(&o);
    for (uint64_t f = 0; f < fm_tensor_numel(&o); f++) {
        int64_t c[FM_MAX_DIMS], t;
        coords_of(&s, f, c);
        t = c[a], c[a] = c[b], c[b] = t;
        memcpy((uint8_t *)o.data + f * es, (uint8_t *)x->data + flat_of(&x->shape, c) * es, es);
    }
    return o;
}

/* x[..., start:start+len, ...] along d. */
static fm_tensor ref_slice(const fm_tensor *x, int d, int64_t start, int64_t len) {
    fm_shape s = x->shape;
    s.dims[d] = len;
    fm_tensor o;
    fm_tensor_alloc(&o, x->dtype, &s, NULL);
    size_t es = esz(&o);
    for (uint64_t f = 0; f < fm_tensor_numel(&o); f++) {
        int64_t c[FM_MAX_DIMS];
        coords_of(&s, f, c);
        c[d] += start;
        memcpy((uint8_t *)o.data + f * es, (uint8_t *)x->data + flat_of(&x->shape, c) * es, es);
    }
    return o;
}

static fm_tensor rand_tensor(uint64_t *st, fm_dtype dt, int rank, int64_t lo, int64_t hi) {
    int64_t dims[FM_MAX_DIMS];
    for (int i = 0; i < rank; i++)
        dims[i] = eng_rand_range(st, lo, hi);
    return eng_tensor(dt, rank, dims, st);
}

static void free_all(fm_tensor *v, size_t n) {
    for (size_t i = 0; i < n; i++)
        fm_tensor_free(&v[i]);
}

/* ---- Conv3d <-> Linear --------------------------------------------------------------------------
 */
static void test_conv3d_linear_roundtrip(void) {
    uint64_t st = 11;
    int64_t d5[5] = {2, 3, 2, 3, 5}; /* kT, kH, kW all different: an axis swap shows */
    fm_tensor x = eng_tensor(FM_DTYPE_F32, 5, d5, &st), y, z;
    fm_error e;
    CHECK_OK(fm_op_conv3d_to_linear(&x, &y, &e), &e);
    CHECK_EQ_INT(2, y.shape.ndim);
    CHECK_EQ_INT(2, y.shape.dims[0]);
    CHECK_EQ_INT(90, y.shape.dims[1]);
    CHECK(y.data == x.data && y.storage == x.storage);
    int64_t k[3] = {2, 3, 5};
    CHECK_OK(fm_op_linear_to_conv3d(&y, 3, k, &z, &e), &e);
    CHECK(eng_same_bytes(&x, &z));
    CHECK_MSG(fm_shape_equal(&x.shape, &z.shape),
              "LinearToConv3d gives (2, 3, 2, 3, 5), seen "
              "(%lld, %lld, %lld, %lld, %lld)",
              (long long)z.shape.dims[0], (long long)z.shape.dims[1], (long long)z.shape.dims[2],
              (long long)z.shape.dims[3], (long long)z.shape.dims[4]);
    CHECK(z.data == x.data);
    /* the same through fm_op_apply and fm_op_reverse, input passed as one bare tensor */
    fm_op_desc op = {.kind = FM_OP_CONV3D_TO_LINEAR, .in_channels = 3, .kernel = {2, 3, 5}}, rop;
    CHECK_OK(fm_op_reverse(&op, &rop, &e), &e);
    CHECK_EQ_INT(FM_OP_LINEAR_TO_CONV3D, rop.kind);
    fm_tensor *a = NULL, *b = NULL;
    size_t na = 0, nb = 0;
    CHECK_OK(fm_op_apply(&op, &x, 1, 1, FM_DTYPE_INVALID, &a, &na, &e), &e);
    CHECK_OK(fm_op_apply(&rop, a, na, 1, FM_DTYPE_INVALID, &b, &nb, &e), &e);
    CHECK(nb == 1 && eng_same_bytes(&b[0], &x));
    fm_tensors_free(a, na);
    fm_tensors_free(b, nb);
    fm_tensor_free(&x);
    fm_tensor_free(&y);
    fm_tensor_free(&z);
}

static void test_conv3d_linear_errors(void) {
    uint64_t st = 12;
    int64_t d3[3] = {2, 3, 4}, d2[2] = {2, 25}, k[3] = {2, 2, 2};
    fm_tensor x3 = eng_tensor(FM_DTYPE_BF16, 3, d3, &st),
              x2 = eng_tensor(FM_DTYPE_BF16, 2, d2, &st), o;
    fm_error e;
    CHECK_STATUS(FM_ERR_SHAPE, fm_op_conv3d_to_linear(&x3, &o, &e), &e);
    CHECK_CONTAINS(e.msg, "Conv3dToLinear expects a 5D or 2D tensor, got 3D");
    CHECK_OK(fm_op_conv3d_to_linear(&x2, &o, &e), &e); /* already fused: passes through */
    CHECK(o.data == x2.data && fm_shape_equal(&o.shape, &x2.shape));
    fm_tensor_free(&o);
    CHECK_STATUS(FM_ERR_SHAPE, fm_op_linear_to_conv3d(&x2, 3, k, &o, &e), &e);
    CHECK_CONTAINS(e.msg, "Cannot reshape tensor with shape [2, 25] into [2, 3, 2, 2, 2]");
    fm_tensor_free(&x3);
    fm_tensor_free(&x2);
}

/* A reshape of a mapped tensor keeps the mapping alive by reference, never copies. */
static void test_zero_copy_mapping_lifetime(void) {
    uint64_t st = 13;
    eng_unmaps = 0;
    int64_t d5[5] = {4, 3, 2, 2, 2};
    fm_storage *map = eng_mapping(16 + 4 * 24 * 2, &st);
    fm_tensor v, lin;
    fm_shape s = eng_shape(5, d5);
    fm_error e;
    CHECK_OK(fm_tensor_view(&v, map, (uint8_t *)fm_storage_data(map) + 16, FM_DTYPE_BF16, &s, &e),
             &e);
    fm_storage_release(map);
    CHECK_OK(fm_op_conv3d_to_linear(&v, &lin, &e), &e);
    CHECK(fm_tensor_is_mapped(&lin) && lin.storage == v.storage && lin.data == v.data);
    fm_tensor_free(&v);
    CHECK_EQ_INT(0, eng_unmaps); /* lin still holds the mapping */
    fm_tensor_free(&lin);
    CHECK_EQ_INT(1, eng_unmaps);
}

/* ---- chunk
 * ---------------------------------------------------------------------------------------- */
static void test_chunk_semantics(void) {
    uint64_t st = 14;
    int64_t d[2] = {5, 4};
    fm_tensor x = eng_tensor(FM_DTYPE_F32, 2, d, &st), p[4];
    size_t n = 0;
    fm_error e;
    CHECK_OK(fm_op_chunk(&x, 0, 3, p, &n, &e), &e); /* ceil(5/3) = 2: 2, 2, 1 */
    CHECK_EQ_INT(3, n);
    int64_t want[3] = {2, 2, 1};
    for (size_t i = 0; i < n && i < 3; i++) {
        CHECK_EQ_INT(want[i], p[i].shape.dims[0]);
        CHECK(p[i].storage == x.storage); /* dim 0: views */
        CHECK(p[i].data == (uint8_t *)x.data + i * 2 * 4 * 4);
    }
    free_all(p, n);
    int64_t d4[2] = {4, 4};
    fm_tensor y = eng_tensor(FM_DTYPE_F32, 2, d4, &st);
    CHECK_OK(fm_op_chunk(&y, 0, 3, p, &n, &e), &e); /* ceil(4/3) = 2: only 2 pieces */
    CHECK_EQ_INT(2, n);
    free_all(p, n);
    fm_op_desc op = {.kind = FM_OP_CHUNK};
    fm_tensor *o = NULL;
    CHECK_STATUS(FM_ERR_SHAPE, fm_op_apply(&op, &y, 1, 3, FM_DTYPE_INVALID, &o, &n, &e), &e);
    CHECK(o == NULL && n == 0);
    int64_t d0[2] = {0, 3};
    fm_tensor z = eng_tensor(FM_DTYPE_F32, 2, d0, &st);
    CHECK_OK(fm_op_chunk(&z, 0, 3, p, &n, &e), &e); /* torch: k empty pieces */
    CHECK_EQ_INT(3, n);
    free_all(p, n);
    CHECK_STATUS(FM_ERR_INVALID_ARG, fm_op_chunk(&x, 0, 0, p, &n, &e), &e);
    CHECK_STATUS(FM_ERR_SHAPE, fm_op_chunk(&x, 2, 2, p, &n, &e), &e);
    /* dim 1 of a (5, 4): not contiguous, so copies matching the reference */
    CHECK_OK(fm_op_chunk(&x, -1, 2, p, &n, &e), &e);
    CHECK_EQ_INT(2, n);
    for (size_t i = 0; i < n; i++) {
        fm_tensor r = ref_slice(&x, 1, (int64_t)i * 2, 2);
        CHECK(p[i].storage != x.storage);
        CHECK(eng_same_bytes(&p[i], &r));
        fm_tensor_free(&r);
    }
    free_all(p, n);
    fm_tensor_free(&x);
    fm_tensor_free(&y);
    fm_tensor_free(&z);
}

/* ---- property tests
 * ------------------------------------------------------------------------------- */
static void prop_chunk_concat(uint64_t *st, fm_dtype dt) {
    int rank = (int)eng_rand_range(st, 1, 4), d = (int)eng_rand_range(st, 0, rank - 1);
    fm_tensor x = rand_tensor(st, dt, rank, 1, 5), p[8], j;
    size_t k = (size_t)eng_rand_range(st, 1, 6), n = 0;
    fm_error e;
    CHECK_OK(fm_op_chunk(&x, d, k, p, &n, &e), &e);
    int64_t at = 0, piece = (x.shape.dims[d] + (int64_t)k - 1) / (int64_t)k;
    for (size_t i = 0; i < n; i++) {
        fm_tensor r = ref_slice(&x, d, at, p[i].shape.dims[d]);
        CHECK(eng_same_bytes(&p[i], &r));
        CHECK(i + 1 == n || p[i].shape.dims[d] == piece);
        at += p[i].shape.dims[d];
        fm_tensor_free(&r);
    }
    CHECK_EQ_INT(x.shape.dims[d], at);
    CHECK_OK(fm_op_concatenate(p, n, d, FM_DTYPE_INVALID, &j, &e), &e); /* reverse(chunk(x)) == x */
    CHECK(eng_same_bytes(&j, &x));
    fm_tensor_free(&j);
    free_all(p, n);
    fm_tensor_free(&x);
}

static void prop_concat_chunk(uint64_t *st, fm_dtype dt) {
    int rank = (int)eng_rand_range(st, 1, 4), d = (int)eng_rand_range(st, 0, rank - 1);
    size_t n = (size_t)eng_rand_range(st, 1, 5);
    int64_t dims[FM_MAX_DIMS];
    for (int i = 0; i < rank; i++)
        dims[i] = eng_rand_range(st, 1, 4);
    fm_tensor xs[5], c, back[5];
    for (size_t i = 0; i < n; i++) {
        if (i && eng_rand(st) % 2 == 0) dims[d] = eng_rand_range(st, 1, 4); /* unequal along d */
        xs[i] = eng_tensor(dt, rank, dims, st);
    }
    fm_error e;
    CHECK_OK(fm_op_concatenate(xs, n, d - rank, FM_DTYPE_INVALID, &c, &e), &e); /* negative dim */
    fm_tensor r = ref_concat(xs, n, d);
    CHECK(eng_same_bytes(&c, &r));
    fm_tensor_free(&r);
    bool equal = true;
    for (size_t i = 1; i < n; i++)
        equal = equal && xs[i].shape.dims[d] == xs[0].shape.dims[d];
    if (equal) { /* the reverse (Chunk) is exact when the pieces were equal */
        size_t m = 0;
        CHECK_OK(fm_op_chunk(&c, d, n, back, &m, &e), &e);
        CHECK_EQ_INT(n, m);
        for (size_t i = 0; i < m && i < n; i++)
            CHECK(eng_same_bytes(&back[i], &xs[i]));
        free_all(back, m);
    }
    fm_tensor_free(&c);
    free_all(xs, n);
}

static void prop_stack_unstack(uint64_t *st, fm_dtype dt) {
    int rank = (int)eng_rand_range(st, 0, 3), d = (int)eng_rand_range(st, 0, rank);
    size_t n = (size_t)eng_rand_range(st, 1, 5);
    int64_t dims[FM_MAX_DIMS];
    for (int i = 0; i < rank; i++)
        dims[i] = eng_rand_range(st, 1, 4);
    fm_tensor xs[5], s, parts[5], again;
    for (size_t i = 0; i < n; i++)
        xs[i] = eng_tensor(dt, rank, dims, st);
    fm_error e;
    CHECK_OK(fm_op_stack(xs, n, d, FM_DTYPE_INVALID, &s, &e), &e);
    fm_tensor r = ref_stack(xs, n, d);
    CHECK(eng_same_bytes(&s, &r));
    fm_tensor_free(&r);
    CHECK_OK(fm_op_unstack(&s, d, parts, &e), &e); /* Split(Merge(x)) == x */
    for (size_t i = 0; i < n; i++)
        CHECK(eng_same_bytes(&parts[i], &xs[i]));
    CHECK_OK(fm_op_stack(parts, n, d, FM_DTYPE_INVALID, &again, &e), &e); /* Merge(Split(y)) == y */
    CHECK(eng_same_bytes(&again, &s));
    fm_tensor_free(&again);
    free_all(parts, n);
    fm_tensor_free(&s);
    free_all(xs, n);
}

static void prop_transpose(uint64_t *st, fm_dtype dt) {
    int rank = (int)eng_rand_range(st, 1, 5), a = (int)eng_rand_range(st, 0, rank - 1),
        b = (int)eng_rand_range(st, 0, rank - 1);
    fm_tensor x = rand_tensor(st, dt, rank, 1, 4), y, z;
    fm_error e;
    CHECK_OK(fm_op_transpose(&x, a, b, FM_DTYPE_INVALID, &y, &e), &e);
    fm_tensor r = ref_transpose(&x, a, b);
    CHECK(eng_same_bytes(&y, &r));
    fm_tensor_free(&r);
    fm_op_desc op = {.kind = FM_OP_TRANSPOSE, .dim = a, .dim1 = b}, rop;
    CHECK_OK(fm_op_reverse(&op, &rop, &e), &e);
    CHECK_OK(fm_op_transpose(&y, rop.dim, rop.dim1, FM_DTYPE_INVALID, &z, &e), &e);
    CHECK(eng_same_bytes(&z, &x));
    fm_tensor_free(&x);
    fm_tensor_free(&y);
    fm_tensor_free(&z);
}

/* Every op kind through fm_op_apply, then its fm_op_reverse: the input comes back bytewise. */
static void prop_apply_reverse(uint64_t *st, fm_dtype dt) {
    fm_op_kind k = (fm_op_kind)eng_rand_range(st, 0, FM_OP_KIND_COUNT - 1);
    int rank = (int)eng_rand_range(st, 2, 4), d = (int)eng_rand_range(st, 0, rank - 1);
    fm_op_desc op = {.kind = k,
                     .dim = d,
                     .dim1 = (int)eng_rand_range(st, 0, rank - 1),
                     .in_channels = 2,
                     .kernel = {1, 2, 2}},
               rop;
    int64_t dims[FM_MAX_DIMS];
    for (int i = 0; i < rank; i++)
        dims[i] = eng_rand_range(st, 1, 4);
    fm_tensor in[4];
    size_t n_in = 1, n_t = 1;
    if (k == FM_OP_CONV3D_TO_LINEAR) {
        int64_t c5[5] = {dims[0], 2, 1, 2, 2};
        in[0] = eng_tensor(dt, 5, c5, st);
    } else if (k == FM_OP_LINEAR_TO_CONV3D) {
        int64_t c2[2] = {dims[0], 8};
        in[0] = eng_tensor(dt, 2, c2, st);
    } else if (k == FM_OP_CONCATENATE || k == FM_OP_MERGE_MODULELIST) {
        n_in = (size_t)eng_rand_range(st, 2, 4);
        for (size_t i = 0; i < n_in; i++)
            in[i] = eng_tensor(dt, rank, dims, st);
    } else {
        if (k == FM_OP_CHUNK)
            dims[d] = (int64_t)(n_t = (size_t)eng_rand_range(st, 2, 3)) * eng_rand_range(st, 1, 3);
        in[0] = eng_tensor(dt, rank, dims, st);
    }
    size_t rev_targets = k == FM_OP_CONCATENATE ? n_in : 1;
    fm_tensor *a = NULL, *b = NULL;
    size_t na = 0, nb = 0;
    fm_error e;
    CHECK_OK(fm_op_reverse(&op, &rop, &e), &e);
    CHECK_OK(fm_op_apply(&op, in, n_in, n_t, FM_DTYPE_INVALID, &a, &na, &e), &e);
    if (a) CHECK_OK(fm_op_apply(&rop, a, na, rev_targets, FM_DTYPE_INVALID, &b, &nb, &e), &e);
    size_t expect_n = k == FM_OP_SPLIT_MODULELIST ? 1 : n_in;
    CHECK_MSG(nb == expect_n, "%s: %zu outputs after the reverse, want %zu", fm_op_name(k), nb,
              expect_n);
    for (size_t i = 0; i < nb && i < expect_n; i++)
        CHECK_MSG(eng_same_bytes(&b[i], &in[i]), "%s then %s changed tensor %zu", fm_op_name(k),
                  fm_op_name(rop.kind), i);
    fm_tensors_free(a, na);
    fm_tensors_free(b, nb);
    free_all(in, n_in);
}

static void test_properties_random(void) {
    uint64_t st = 0x9e3779b97f4a7c15ull;
    int trials = quick() ? 40 : 300;
    for (int t = 0; t < trials; t++) {
        fm_dtype dt = kDtypes[eng_rand(&st) % (sizeof kDtypes / sizeof kDtypes[0])];
        prop_chunk_concat(&st, dt);
        prop_concat_chunk(&st, dt);
        prop_stack_unstack(&st, dt);
        prop_transpose(&st, dt);
        prop_apply_reverse(&st, dt);
    }
}

/* ---- allocation counts
 * ---------------------------------------------------------------------------- */
static uint64_t allocs_of_one_tensor(void) {
    int64_t d[1] = {8};
    fm_shape s = eng_shape(1, d);
    fm_tensor t;
    fm_fault_set(FM_FAULT_ALLOC, UINT64_MAX);
    fm_tensor_alloc(&t, FM_DTYPE_F32, &s, NULL);
    uint64_t n = fm_fault_count(FM_FAULT_ALLOC);
    fm_fault_set(FM_FAULT_ALLOC, 0);
    fm_tensor_free(&t);
    return n;
}

static void test_join_allocates_once(void) {
    uint64_t st = 15, one = allocs_of_one_tensor();
    int64_t d[3] = {4, 3, 5};
    fm_tensor xs[6], o;
    for (int i = 0; i < 6; i++)
        xs[i] = eng_tensor(i % 2 ? FM_DTYPE_BF16 : FM_DTYPE_F32, 3, d, &st);
    fm_tensor bf[3] = {xs[1], xs[3], xs[5]};
    fm_error e;
    CHECK(one >= 1);
    fm_fault_set(FM_FAULT_ALLOC, UINT64_MAX);
    CHECK_OK(fm_op_concatenate(bf, 3, 1, FM_DTYPE_INVALID, &o, &e), &e);
    CHECK_EQ_INT(one, fm_fault_count(FM_FAULT_ALLOC));
    fm_tensor_free(&o);
    fm_fault_set(FM_FAULT_ALLOC, UINT64_MAX); /* mixed dtypes, converted while joining */
    CHECK_OK(fm_op_concatenate(xs, 6, 0, FM_DTYPE_F32, &o, &e), &e);
    CHECK_EQ_INT(one, fm_fault_count(FM_FAULT_ALLOC));
    CHECK_EQ_INT(FM_DTYPE_F32, o.dtype);
    fm_tensor_free(&o);
    fm_fault_set(FM_FAULT_ALLOC, UINT64_MAX);
    CHECK_OK(fm_op_stack(bf, 3, 0, FM_DTYPE_F64, &o, &e), &e);
    CHECK_EQ_INT(one, fm_fault_count(FM_FAULT_ALLOC));
    fm_tensor_free(&o);
    /* MoE gate/up: cat(stack(w1s), stack(w3s), dim 1) straight from the parts, one allocation */
    fm_tensor w1[3] = {xs[0], xs[2], xs[4]};
    fm_op_piece pcs[2] = {{w1, 3, 0}, {bf, 3, 0}};
    fm_fault_set(FM_FAULT_ALLOC, UINT64_MAX);
    CHECK_OK(fm_op_concat_pieces("Concatenate", pcs, 2, 1, FM_DTYPE_F32, &o, &e), &e);
    CHECK_EQ_INT(one, fm_fault_count(FM_FAULT_ALLOC));
    fm_fault_set(FM_FAULT_ALLOC, 0);
    fm_tensor s1, s3, c1[2], r;
    fm_tensor conv[3];
    for (int i = 0; i < 3; i++)
        fm_tensor_cast(&conv[i], &bf[i], FM_DTYPE_F32, NULL);
    fm_op_stack(w1, 3, 0, FM_DTYPE_INVALID, &s1, NULL);
    fm_op_stack(conv, 3, 0, FM_DTYPE_INVALID, &s3, NULL);
    c1[0] = s1;
    c1[1] = s3;
    r = ref_concat(c1, 2, 1);
    CHECK(eng_same_bytes(&o, &r));
    free_all(conv, 3);
    fm_tensor_free(&s1);
    fm_tensor_free(&s3);
    fm_tensor_free(&r);
    fm_tensor_free(&o);
    free_all(xs, 6);
}

/* BF16 -> F32 while concatenating: each value is exactly the bf16 bits shifted up. */
static void test_cast_while_joining(void) {
    uint64_t st = 16;
    int64_t d[2] = {3, 7};
    fm_tensor xs[2] = {eng_tensor(FM_DTYPE_BF16, 2, d, &st), eng_tensor(FM_DTYPE_BF16, 2, d, &st)},
              o;
    for (int i = 0; i < 2; i++) { /* finite values only: clear the top exponent bit */
        uint16_t *p = xs[i].data;
        for (int j = 0; j < 21; j++)
            p[j] &= 0xBFFF;
    }
    fm_error e;
    CHECK_OK(fm_op_concatenate(xs, 2, 0, FM_DTYPE_F32, &o, &e), &e);
    CHECK_EQ_INT(FM_DTYPE_F32, o.dtype);
    CHECK_EQ_INT(6, o.shape.dims[0]);
    const uint32_t *f = o.data;
    int bad = 0;
    for (int i = 0; i < 42; i++) {
        uint16_t h = ((const uint16_t *)xs[i / 21].data)[i % 21];
        bad += f[i] != (uint32_t)h << 16;
    }
    CHECK_EQ_INT(0, bad);
    fm_tensor_free(&o);
    /* integers are never cast */
    int64_t di[1] = {4};
    fm_tensor ints[2] = {eng_tensor(FM_DTYPE_I32, 1, di, &st),
                         eng_tensor(FM_DTYPE_I32, 1, di, &st)};
    CHECK_OK(fm_op_concatenate(ints, 2, 0, FM_DTYPE_F32, &o, &e), &e);
    CHECK_EQ_INT(FM_DTYPE_I32, o.dtype);
    fm_tensor_free(&o);
    /* mixed dtypes without a cast are refused */
    fm_tensor mix[2] = {xs[0], ints[0]};
    CHECK_STATUS(FM_ERR_DTYPE, fm_op_concatenate(mix, 2, 0, FM_DTYPE_INVALID, &o, &e), &e);
    free_all(ints, 2);
    free_all(xs, 2);
}

static void test_split_squeezes_only_its_dim(void) {
    uint64_t st = 17;
    int64_t d[3] = {3, 1, 4};
    fm_tensor x = eng_tensor(FM_DTYPE_F16, 3, d, &st), p[3];
    fm_error e;
    CHECK_OK(fm_op_unstack(&x, 0, p, &e), &e);
    for (int i = 0; i < 3; i++) { /* (1, 4), not (4): spec §11.8 deviation */
        CHECK_EQ_INT(2, p[i].shape.ndim);
        CHECK_EQ_INT(1, p[i].shape.dims[0]);
        CHECK_EQ_INT(4, p[i].shape.dims[1]);
        CHECK(p[i].storage == x.storage);
    }
    free_all(p, 3);
    fm_tensor_free(&x);
}

static void test_transpose_views(void) {
    uint64_t st = 18;
    int64_t d[2] = {1, 5}, d3[3] = {2, 1, 3}, d3b[3] = {2, 3, 1};
    fm_tensor x = eng_tensor(FM_DTYPE_F32, 2, d, &st), y = eng_tensor(FM_DTYPE_F32, 3, d3, &st),
              z = eng_tensor(FM_DTYPE_F32, 3, d3b, &st), o;
    fm_error e;
    CHECK_OK(fm_op_transpose(&x, 0, 1, FM_DTYPE_INVALID, &o, &e), &e);
    CHECK(o.data == x.data && o.shape.dims[0] == 5);
    fm_tensor_free(&o);
    CHECK_OK(fm_op_transpose(&y, 0, 1, FM_DTYPE_INVALID, &o, &e), &e);
    CHECK(o.data == y.data);
    fm_tensor_free(&o);
    CHECK_OK(fm_op_transpose(&z, 0, 2, FM_DTYPE_INVALID, &o, &e), &e); /* order changes: a copy */
    fm_tensor r = ref_transpose(&z, 0, 2);
    CHECK(o.data != z.data && eng_same_bytes(&o, &r));
    fm_tensor_free(&r);
    fm_tensor_free(&o);
    CHECK_OK(fm_op_transpose(&x, 0, 1, FM_DTYPE_F64, &o, &e), &e); /* a cast forces a copy */
    CHECK(o.dtype == FM_DTYPE_F64 && o.data != x.data);
    fm_tensor_free(&o);
    fm_tensor_free(&x);
    fm_tensor_free(&y);
    fm_tensor_free(&z);
}

/* Ops that only reshape or slice never need data. */
static void test_meta_tensors(void) {
    int64_t d5[5] = {8, 3, 2, 4, 4}, k[3] = {2, 4, 4};
    fm_shape s = eng_shape(5, d5);
    fm_tensor m, l, c, p[2];
    size_t n;
    fm_error e;
    CHECK_OK(fm_tensor_init_meta(&m, FM_DTYPE_BF16, &s, &e), &e);
    CHECK_OK(fm_op_conv3d_to_linear(&m, &l, &e), &e);
    CHECK(l.data == NULL && l.shape.dims[1] == 96);
    CHECK_OK(fm_op_linear_to_conv3d(&l, 3, k, &c, &e), &e);
    CHECK(fm_shape_equal(&c.shape, &m.shape));
    CHECK_OK(fm_op_chunk(&l, 0, 2, p, &n, &e), &e);
    CHECK(n == 2 && p[0].data == NULL && p[1].shape.dims[0] == 4);
    free_all(p, n);
    fm_tensor two[2] = {l, l}, o;
    CHECK_STATUS(FM_ERR_INVALID_ARG, fm_op_concatenate(two, 2, 0, FM_DTYPE_INVALID, &o, &e), &e);
    fm_tensor_free(&m);
    fm_tensor_free(&l);
    fm_tensor_free(&c);
}

static void test_reverse_table_and_bad_ops(void) {
    static const fm_op_kind rev[FM_OP_KIND_COUNT][2] = {
        {FM_OP_CONV3D_TO_LINEAR, FM_OP_LINEAR_TO_CONV3D},
        {FM_OP_LINEAR_TO_CONV3D, FM_OP_CONV3D_TO_LINEAR},
        {FM_OP_CONCATENATE, FM_OP_CHUNK},
        {FM_OP_CHUNK, FM_OP_CONCATENATE},
        {FM_OP_MERGE_MODULELIST, FM_OP_SPLIT_MODULELIST},
        {FM_OP_SPLIT_MODULELIST, FM_OP_MERGE_MODULELIST},
        {FM_OP_TRANSPOSE, FM_OP_TRANSPOSE}};
    fm_error e;
    for (int i = 0; i < FM_OP_KIND_COUNT; i++) {
        fm_op_desc op = {.kind = rev[i][0],
                         .dim = 1,
                         .dim1 = 2,
                         .in_channels = 3,
                         .kernel = {1, 2, 2}},
                   r, rr;
        CHECK_OK(fm_op_reverse(&op, &r, &e), &e);
        CHECK_EQ_INT(rev[i][1], r.kind);
        CHECK_OK(fm_op_reverse(&r, &rr, &e), &e);
        CHECK(memcmp(&rr, &op, sizeof op) == 0);
        if (op.kind == FM_OP_TRANSPOSE) CHECK(r.dim == 2 && r.dim1 == 1);
    }
    CHECK_EQ_STR("MergeModulelist", fm_op_name(FM_OP_MERGE_MODULELIST));
    fm_op_desc bad = {.kind = (fm_op_kind)99},
               conv0 = {.kind = FM_OP_CONV3D_TO_LINEAR, .kernel = {2, 2, 2}},
               dim9 = {.kind = FM_OP_CHUNK, .dim = 9}, out;
    CHECK_STATUS(FM_ERR_INVALID_ARG, fm_op_reverse(&bad, &out, &e), &e);
    CHECK_STATUS(FM_ERR_INVALID_ARG, fm_op_reverse(&conv0, &out, &e), &e);
    CHECK_STATUS(FM_ERR_INVALID_ARG, fm_op_reverse(&dim9, &out, &e), &e);
}

static void test_subbyte_refused(void) {
    int64_t d[1] = {4};
    fm_shape s = eng_shape(1, d);
    fm_tensor a[2], o;
    fm_error e;
    fm_tensor_alloc(&a[0], FM_DTYPE_F4, &s, NULL);
    fm_tensor_alloc(&a[1], FM_DTYPE_F4, &s, NULL);
    CHECK_STATUS(FM_ERR_DTYPE, fm_op_concatenate(a, 2, 0, FM_DTYPE_INVALID, &o, &e), &e);
    CHECK_CONTAINS(e.msg, "F4");
    free_all(a, 2);
}

/* ---- the keyed chain: routing and the lazy stack --------------------------------------------- */
static void test_keyed_moe_chain(void) {
    uint64_t st = 19;
    int64_t d[2] = {3, 4};
    char *src[2] = {"experts.*.w1.weight", "experts.*.w3.weight"},
         *tgt[1] = {"experts.gate_up_proj"};
    fm_opv_map m = {0};
    fm_tensor keep[6];
    fm_error e;
    for (int i = 0; i < 6; i++) { /* natural order interleaves the two patterns */
        fm_tensor t = eng_tensor(FM_DTYPE_F32, 2, d, &st);
        fm_tensor_ref(&keep[i], &t);
        CHECK_OK(fm_opv_map_push(&m, src[i % 2], &t, &e), &e);
    }
    fm_op_desc merge = {.kind = FM_OP_MERGE_MODULELIST},
               cat = {.kind = FM_OP_CONCATENATE, .dim = 1};
    CHECK_OK(fm_opchain_step(&merge, &m, src, 2, tgt, 1, FM_DTYPE_INVALID, &e), &e);
    CHECK_EQ_INT(2, m.n);
    for (size_t i = 0; i < m.n; i++) { /* lazy: the parts are the inputs themselves */
        CHECK_EQ_INT(FM_OPV_STACK, m.v[i].kind);
        CHECK_EQ_STR(src[i], m.v[i].key);
        for (size_t j = 0; j < m.v[i].n; j++)
            CHECK(m.v[i].t[j].data == keep[2 * j + i].data);
    }
    CHECK_OK(fm_opchain_step(&cat, &m, src, 2, tgt, 1, FM_DTYPE_INVALID, &e), &e);
    CHECK_OK(fm_opchain_finish(&m, FM_DTYPE_INVALID, &e), &e);
    CHECK_EQ_INT(1, m.n);
    CHECK_EQ_STR("experts.gate_up_proj", m.v[0].key);
    fm_tensor w1[3] = {keep[0], keep[2], keep[4]}, w3[3] = {keep[1], keep[3], keep[5]}, s[2];
    s[0] = ref_stack(w1, 3, 0);
    s[1] = ref_stack(w3, 3, 0);
    fm_tensor r = ref_concat(s, 2, 1);
    CHECK(eng_same_bytes(&m.v[0].t[0], &r));
    CHECK_EQ_INT(3, r.shape.ndim);
    fm_tensor_free(&r);
    free_all(s, 2);
    fm_opv_map_clear(&m);
    /* routing errors ("Undefined Operation"): Chunk needs >= 2 targets, Concatenate one */
    fm_tensor t = eng_tensor(FM_DTYPE_F32, 2, d, &st);
    CHECK_OK(fm_opv_map_push(&m, "qkv", &t, &e), &e);
    fm_op_desc chunk = {.kind = FM_OP_CHUNK};
    char *one[1] = {"qkv"}, *q[1] = {"q"};
    CHECK_STATUS(FM_ERR_INVALID_ARG,
                 fm_opchain_step(&chunk, &m, one, 1, q, 1, FM_DTYPE_INVALID, &e), &e);
    CHECK_CONTAINS(e.msg, "Undefined Operation");
    CHECK_EQ_INT(0, m.n);
    fm_opv_map_clear(&m);
    free_all(keep, 6);
}

/* Uneven parts (GQA q/k/v): Chunk with sizes splits exactly so, along dim 0 and dim 1; the
 * Concatenate that records the sizes checks its sources, and the two reverse each other. */
static void test_uneven_parts(void) {
    uint64_t st = 77;
    fm_error e;
    int64_t d2[2] = {12, 5};
    fm_tensor x = eng_tensor(FM_DTYPE_BF16, 2, d2, &st), parts[3] = {{0}}, *out = NULL;
    const int64_t sz[3] = {8, 2, 2};
    for (int dim = 0; dim < 2; dim++) {
        int64_t dd[2] = {dim ? 5 : 12, dim ? 12 : 5};
        fm_tensor y = dim ? eng_tensor(FM_DTYPE_F32, 2, dd, &st) : x;
        fm_op_desc chunk = {.kind = FM_OP_CHUNK, .dim = dim, .n_sizes = 3, .sizes = {8, 2, 2}}, cat;
        size_t n = 0;
        CHECK_OK(fm_op_apply(&chunk, &y, 1, 3, FM_DTYPE_INVALID, &out, &n, &e), &e);
        CHECK_EQ_INT(3, n);
        for (size_t i = 0, at = 0; out && i < n; at += (size_t)sz[i], i++) {
            fm_tensor want = ref_slice(&y, dim, (int64_t)at, sz[i]);
            CHECK_MSG(fm_shape_equal(&out[i].shape, &want.shape) &&
                          !memcmp(out[i].data, want.data, want.nbytes),
                      "dim %d part %zu: expected rows %zu..%zu of the input", dim, i, at,
                      at + (size_t)sz[i]);
            fm_tensor_free(&want);
        }
        CHECK_OK(fm_op_reverse(&chunk, &cat, &e), &e);
        CHECK(cat.kind == FM_OP_CONCATENATE && cat.n_sizes == 3 && cat.sizes[0] == 8 &&
              cat.sizes[2] == 2);
        fm_tensor *back = NULL;
        size_t nb = 0;
        if (out) CHECK_OK(fm_op_apply(&cat, out, 3, 1, FM_DTYPE_INVALID, &back, &nb, &e), &e);
        CHECK(back && !memcmp(back[0].data, y.data, y.nbytes));
        if (out) { /* sources that do not fit the recorded sizes */
            fm_tensor sw[3] = {out[1], out[0], out[2]};
            fm_tensor *bad = NULL;
            size_t nbad = 0;
            CHECK_STATUS(FM_ERR_SHAPE,
                         fm_op_apply(&cat, sw, 3, 1, FM_DTYPE_INVALID, &bad, &nbad, &e), &e);
            CHECK_CONTAINS(e.msg, "must be 8");
        }
        fm_tensors_free(back, nb), fm_tensors_free(out, n);
        out = NULL;
        if (dim) fm_tensor_free(&y);
    }
    fm_op_desc wrong = {.kind = FM_OP_CHUNK, .n_sizes = 3, .sizes = {8, 2, 3}},
               neg = {.kind = FM_OP_CHUNK, .n_sizes = 2, .sizes = {12, 0}};
    fm_op_desc on_transpose = {.kind = FM_OP_TRANSPOSE, .dim1 = 1, .n_sizes = 1, .sizes = {1}};
    size_t n = 0;
    CHECK_STATUS(FM_ERR_SHAPE, fm_op_apply(&wrong, &x, 1, 3, FM_DTYPE_INVALID, &out, &n, &e), &e);
    CHECK_CONTAINS(e.msg, "13 in total");
    CHECK_STATUS(FM_ERR_INVALID_ARG, fm_op_apply(&neg, &x, 1, 2, FM_DTYPE_INVALID, &out, &n, &e),
                 &e);
    CHECK_STATUS(FM_ERR_INVALID_ARG, fm_op_reverse(&on_transpose, &wrong, &e), &e);
    (void)parts;
    fm_tensor_free(&x);
}

/* Parts that already lie back to back in one storage join as a view (no copy): the fused
 * gate_up of a hub checkpoint (gate_proj then up_proj, packed) stays zero-copy. Any other
 * arrangement copies, with the same values. */
static void test_concat_adjacent_views(void) {
    fm_error e;
    fm_storage *sto = NULL;
    CHECK_OK(fm_storage_alloc(24 * sizeof(float), &sto, &e), &e);
    float *base = fm_storage_data(sto);
    uint64_t seed = 99;
    for (int i = 0; i < 24; i++)
        base[i] = (float)eng_rand_range(&seed, -1000, 1000) / 7.0f;
    fm_shape s23 = {2, {2, 3}}, s13 = {2, {1, 3}};
    fm_tensor v[3], w[2], o, r;
    for (int i = 0; i < 3; i++)
        CHECK_OK(fm_tensor_view(&v[i], sto, base + 6 * i, FM_DTYPE_F32, &s23, &e), &e);
    CHECK_OK(fm_op_concatenate(v, 3, 0, FM_DTYPE_INVALID, &o, &e), &e);
    CHECK_MSG(o.data == v[0].data && o.storage == sto,
              "adjacent parts: expected a view at %p, "
              "seen data %p",
              v[0].data, o.data);
    CHECK_EQ_INT(6, o.shape.dims[0]);
    r = ref_concat(v, 3, 0);
    CHECK(eng_same_bytes(&o, &r));
    fm_tensor_free(&o), fm_tensor_free(&r);
    /* along dim 1 (rows interleave), out of order, with a cast, from another storage: copies */
    fm_tensor swapped[2] = {v[1], v[0]};
    struct {
        const fm_tensor *xs;
        size_t n;
        int dim;
        fm_dtype cast;
    } cases[4] = {{v, 2, 1, FM_DTYPE_INVALID},
                  {swapped, 2, 0, FM_DTYPE_INVALID},
                  {v, 2, 0, FM_DTYPE_F64},
                  {w, 2, 0, FM_DTYPE_INVALID}};
    CHECK_OK(fm_tensor_view(&w[0], sto, base + 18, FM_DTYPE_F32, &s13, &e), &e);
    CHECK_OK(fm_tensor_alloc(&w[1], FM_DTYPE_F32, &s13, &e), &e);
    memcpy(w[1].data, base + 21, 3 * sizeof(float)); /* equal bytes, another storage */
    for (int c = 0; c < 4; c++) {
        CHECK_OK(fm_op_concatenate(cases[c].xs, cases[c].n, cases[c].dim, cases[c].cast, &o, &e),
                 &e);
        CHECK_MSG(o.storage != sto, "case %d: expected a copy, seen a view of the parts", c);
        if (cases[c].cast == FM_DTYPE_INVALID) {
            r = ref_concat(cases[c].xs, cases[c].n, cases[c].dim);
            CHECK(eng_same_bytes(&o, &r));
            fm_tensor_free(&r);
        }
        fm_tensor_free(&o);
    }
    free_all(v, 3), free_all(w, 2);
    fm_storage_release(sto);
}

int main(void) {
    RUN(test_uneven_parts);
    RUN(test_conv3d_linear_roundtrip);
    RUN(test_conv3d_linear_errors);
    RUN(test_zero_copy_mapping_lifetime);
    RUN(test_chunk_semantics);
    RUN(test_properties_random);
    RUN(test_join_allocates_once);
    RUN(test_concat_adjacent_views);
    RUN(test_cast_while_joining);
    RUN(test_split_squeezes_only_its_dim);
    RUN(test_transpose_views);
    RUN(test_meta_tensors);
    RUN(test_reverse_table_and_bad_ops);
    RUN(test_subbyte_refused);
    RUN(test_keyed_moe_chain);
    TEST_END();
}
