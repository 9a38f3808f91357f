/* Tensor basics (src/tensor/tensor.c): dtype table, checked shape arithmetic (with the
 * reference's left-to-right overflow quirk), sub-byte dtypes, storage reference counts, views,
 * zero-copy reshape and fm_tensor_cast. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "core/testing.h"
#include "fusemap/tensor.h"
#include "support/check.h"

static fm_shape shp(int ndim, const int64_t *dims) {
    fm_shape s;
    fm_status st = fm_shape_make(&s, ndim, dims);
    CHECK_EQ_INT(FM_OK, st);
    return s;
}

static void test_dtype_table(void) {
    CHECK_EQ_INT(22, FM_DTYPE_COUNT);
    for (int i = 0; i < FM_DTYPE_COUNT; i++) {
        const char *n = fm_dtype_name((fm_dtype)i);
        CHECK(n != NULL);
        CHECK_EQ_INT(i, fm_dtype_from_name(n, strlen(n)));
    }
    CHECK_EQ_STR("BF16", fm_dtype_name(FM_DTYPE_BF16));
    CHECK_EQ_INT(FM_DTYPE_INVALID, fm_dtype_from_name("bf16", 4));
    CHECK_EQ_INT(FM_DTYPE_INVALID, fm_dtype_from_name("BF16X", 5));
    CHECK_EQ_INT(FM_DTYPE_INVALID, fm_dtype_from_name("BF1", 3));
    CHECK_EQ_INT(FM_DTYPE_F16, fm_dtype_from_name("F16garbage", 3));
    CHECK(fm_dtype_name(FM_DTYPE_INVALID) == NULL);
    CHECK(fm_dtype_name((fm_dtype)FM_DTYPE_COUNT) == NULL);
    CHECK_EQ_INT(4, fm_dtype_bits(FM_DTYPE_F4));
    CHECK_EQ_INT(6, fm_dtype_bits(FM_DTYPE_F6_E3M2));
    CHECK_EQ_INT(64, fm_dtype_bits(FM_DTYPE_C64));
    CHECK_EQ_INT(0, fm_dtype_bits(FM_DTYPE_INVALID));
    CHECK_EQ_INT(21, fm_dtype_rank(FM_DTYPE_U64));
    CHECK_EQ_INT(14, fm_dtype_rank(FM_DTYPE_BF16));
    CHECK(fm_dtype_is_float(FM_DTYPE_BF16) && fm_dtype_is_float(FM_DTYPE_F64));
    CHECK(!fm_dtype_is_float(FM_DTYPE_F8_E4M3) && !fm_dtype_is_float(FM_DTYPE_C64));
}

static void test_shape_make_and_format(void) {
    fm_shape s;
    int64_t d[9] = {1280, 3, 2, 14, 14, 1, 1, 1, 1};
    char buf[64];
    CHECK_EQ_INT(FM_ERR_INVALID_ARG, fm_shape_make(&s, 9, d));
    CHECK_EQ_INT(FM_ERR_INVALID_ARG, fm_shape_make(&s, -1, d));
    int64_t neg[2] = {3, -1};
    CHECK_EQ_INT(FM_ERR_INVALID_ARG, fm_shape_make(&s, 2, neg));
    s = shp(5, d);
    CHECK_EQ_STR("[1280, 3, 2, 14, 14]", fm_shape_format(&s, buf, sizeof buf));
    s = shp(0, NULL);
    CHECK_EQ_STR("[]", fm_shape_format(&s, buf, sizeof buf));
    s = shp(5, d);
    CHECK_EQ_STR("[1280,", fm_shape_format(&s, buf, 7)); /* truncated, still terminated */
    fm_shape a = shp(2, d), b = shp(2, d), c = shp(3, d);
    CHECK(fm_shape_equal(&a, &b) && !fm_shape_equal(&a, &c));
    b.dims[1] = 4;
    CHECK(!fm_shape_equal(&a, &b));
}

static void test_numel_overflow(void) {
    const int64_t P32 = (int64_t)1 << 32;
    uint64_t n = 77;
    fm_shape s = shp(0, NULL);
    CHECK_OK(fm_shape_numel(&s, &n), (fm_error *)NULL);
    CHECK_EQ_INT(1, n);             /* scalar */
    int64_t d1[3] = {P32, P32, 0};  /* partial product 2^64 overflows before the 0 */
    int64_t d2[3] = {0, P32, P32};  /* 0 first: the product stays 0 */
    int64_t d3[2] = {P32, P32 - 1}; /* 2^64 - 2^32 fits */
    int64_t d4[2] = {INT64_MAX, 2}; /* 2^64 - 2 fits in u64 */
    int64_t d5[2] = {INT64_MAX, 3};
    s = shp(3, d1);
    n = 77;
    CHECK_EQ_INT(FM_ERR_OVERFLOW, fm_shape_numel(&s, &n));
    CHECK_EQ_INT(77, n); /* untouched */
    s = shp(3, d2);
    CHECK_OK(fm_shape_numel(&s, &n), (fm_error *)NULL);
    CHECK_EQ_INT(0, n);
    s = shp(2, d3);
    CHECK_OK(fm_shape_numel(&s, &n), (fm_error *)NULL);
    CHECK(n == 0xffffffff00000000ull);
    s = shp(2, d4);
    CHECK_OK(fm_shape_numel(&s, &n), (fm_error *)NULL);
    CHECK(n == UINT64_MAX - 1);
    s = shp(2, d5);
    CHECK_EQ_INT(FM_ERR_OVERFLOW, fm_shape_numel(&s, &n));
    s.ndim = 100; /* corrupt rank: refused without reading past dims */
    CHECK_EQ_INT(FM_ERR_INVALID_ARG, fm_shape_numel(&s, &n));
}

static void test_nbytes_rules(void) {
    uint64_t nb = 0;
    int64_t d;
    fm_shape s;
    struct {
        fm_dtype dt;
        int64_t n;
        fm_status st;
        uint64_t bytes;
    } c[] = {
        {FM_DTYPE_F4, 4, FM_OK, 2},
        {FM_DTYPE_F4, 3, FM_ERR_INVALID_ARG, 0},
        {FM_DTYPE_F4, 0, FM_OK, 0},
        {FM_DTYPE_F6_E2M3, 4, FM_OK, 3},
        {FM_DTYPE_F6_E3M2, 8, FM_OK, 6},
        {FM_DTYPE_F6_E2M3, 6, FM_ERR_INVALID_ARG, 0},
        {FM_DTYPE_F6_E3M2, 2, FM_ERR_INVALID_ARG, 0},
        {FM_DTYPE_BF16, 15, FM_OK, 30},
        {FM_DTYPE_C64, 3, FM_OK, 24},
        {FM_DTYPE_U8, (int64_t)1 << 60, FM_OK, (uint64_t)1 << 60},
        {FM_DTYPE_U8, (int64_t)1 << 62, FM_ERR_OVERFLOW, 0}, /* bits overflow, bytes would fit */
        {FM_DTYPE_F4, (int64_t)1 << 61, FM_OK, (uint64_t)1 << 60},
        {FM_DTYPE_F4, (int64_t)1 << 62, FM_ERR_OVERFLOW, 0},
    };
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        d = c[i].n;
        s = shp(1, &d);
        nb = 12345;
        fm_status st = fm_shape_nbytes(&s, c[i].dt, &nb);
        CHECK_MSG(st == c[i].st, "case %zu (%s x %lld): status %s", i, fm_dtype_name(c[i].dt),
                  (long long)d, fm_status_name(st));
        if (c[i].st == FM_OK)
            CHECK_MSG(nb == c[i].bytes, "case %zu: %llu bytes", i, (unsigned long long)nb);
    }
    /* a tensor header refuses odd F4 counts and names the shape */
    fm_tensor t;
    fm_error errv, *err = &errv;
    int64_t d2[2] = {3, 3};
    s = shp(2, d2);
    CHECK_EQ_INT(FM_ERR_INVALID_ARG, fm_tensor_init_meta(&t, FM_DTYPE_F4, &s, err));
    CHECK_CONTAINS(err->msg, "[3, 3]");
    CHECK_CONTAINS(err->msg, "F4");
    int64_t d3[3] = {(int64_t)1 << 32, (int64_t)1 << 32, 0};
    s = shp(3, d3);
    CHECK_EQ_INT(FM_ERR_OVERFLOW, fm_tensor_init_meta(&t, FM_DTYPE_F32, &s, err));
    CHECK_CONTAINS(err->msg, "overflow");
    CHECK_EQ_INT(FM_ERR_INVALID_ARG, fm_tensor_init_meta(&t, FM_DTYPE_INVALID, &s, err));
}

/* ---- storage and views --------------------------------------------------------------------- */

static int unmap_calls;
static void fake_unmap(void *base, uint64_t len, void *ctx) {
    (void)base;
    (void)len;
    (void)ctx;
    unmap_calls++;
}

static void test_view_outlives_owner(void) {
    fm_tensor t, v, r;
    fm_error errv, *err = &errv;
    int64_t d[2] = {4, 8};
    fm_shape s = shp(2, d);
    CHECK_OK(fm_tensor_alloc(&t, FM_DTYPE_F32, &s, err), err);
    float *p = t.data;
    for (int i = 0; i < 32; i++)
        p[i] = (float)i * 1.5f;
    CHECK(!fm_tensor_is_mapped(&t));
    CHECK_EQ_INT(32, fm_tensor_numel(&t));
    int64_t vd[1] = {8};
    fm_shape vs = shp(1, vd);
    CHECK_OK(fm_tensor_view(&v, t.storage, p + 8, FM_DTYPE_F32, &vs, err), err);
    fm_tensor_ref(&r, &t);
    fm_tensor_free(&t);
    CHECK(t.data == NULL && t.storage == NULL);
    /* still alive through v and r (ASan would flag a use after free) */
    CHECK(((float *)v.data)[0] == 12.0f && ((float *)v.data)[7] == 22.5f);
    fm_tensor_free(&r);
    CHECK(((float *)v.data)[3] == 16.5f);
    fm_tensor_free(&v);
    fm_tensor_free(&v); /* second free of a zeroed tensor is harmless */
    fm_tensor_free(NULL);
    fm_storage_release(NULL);
}

static void test_mapped_storage_refcount(void) {
    static unsigned char mem[512];
    unsigned char *region = mem + 16; /* the "mapping": 256 bytes inside mem */
    fm_storage *st;
    fm_error errv, *err = &errv;
    unmap_calls = 0;
    CHECK_OK(fm_storage_wrap_mapping(region, 256, fake_unmap, NULL, &st, err), err);
    CHECK_EQ_INT(FM_STORAGE_MAPPED, fm_storage_kind_of(st));
    CHECK_EQ_INT(256, fm_storage_size(st));
    int64_t d[1] = {16};
    fm_shape s = shp(1, d);
    fm_tensor a, b, c;
    CHECK_OK(fm_tensor_view(&a, st, region + 3, FM_DTYPE_BF16, &s, err), err);  /* unaligned ok */
    CHECK_OK(fm_tensor_view(&b, st, region + 224, FM_DTYPE_F16, &s, err), err); /* ends at 256 */
    CHECK(fm_tensor_is_mapped(&a));
    /* out of bounds: one byte too far, before the start, and a zero-size view past the end */
    CHECK_EQ_INT(FM_ERR_INVALID_ARG, fm_tensor_view(&c, st, region + 225, FM_DTYPE_F16, &s, err));
    CHECK_CONTAINS(err->msg, "outside");
    CHECK_EQ_INT(FM_ERR_INVALID_ARG, fm_tensor_view(&c, st, region - 1, FM_DTYPE_U8, &s, err));
    int64_t z[1] = {0};
    fm_shape zs = shp(1, z);
    CHECK_EQ_INT(FM_ERR_INVALID_ARG, fm_tensor_view(&c, st, region + 257, FM_DTYPE_U8, &zs, err));
    CHECK(c.storage == NULL);
    CHECK_OK(fm_tensor_view(&c, st, region + 256, FM_DTYPE_U8, &zs, err), err); /* empty, at end */
    fm_tensor_free(&c);
    CHECK_EQ_INT(FM_ERR_INVALID_ARG, fm_tensor_view(&c, NULL, region, FM_DTYPE_U8, &s, err));
    fm_storage_release(st); /* the reader's reference */
    CHECK_EQ_INT(0, unmap_calls);
    fm_tensor_free(&a);
    CHECK_EQ_INT(0, unmap_calls);
    fm_tensor_free(&b);
    CHECK_EQ_INT(1, unmap_calls); /* exactly once, with the last reference */
}

static void test_reshape_zero_copy(void) {
    fm_tensor t, r;
    fm_error errv, *err = &errv;
    int64_t d[3] = {2, 3, 4}, d2[2] = {6, 4}, d3[2] = {5, 5};
    fm_shape s = shp(3, d), s2 = shp(2, d2), s3 = shp(2, d3);
    CHECK_OK(fm_tensor_alloc(&t, FM_DTYPE_I32, &s, err), err);
    int32_t *p = t.data;
    for (int i = 0; i < 24; i++)
        p[i] = i * 7 - 3;
    CHECK_OK(fm_tensor_reshape(&r, &t, &s2, err), err);
    CHECK(r.data == t.data && r.storage == t.storage);
    CHECK(fm_shape_equal(&r.shape, &s2) && r.nbytes == 96 && r.dtype == FM_DTYPE_I32);
    CHECK_EQ_INT(FM_ERR_SHAPE, fm_tensor_reshape(&r, &t, &s3, err));
    CHECK_CONTAINS(err->msg, "[2, 3, 4]");
    CHECK_CONTAINS(err->msg, "[5, 5]");
    fm_tensor_free(&t);
    CHECK_EQ_INT(158, ((int32_t *)r.data)[23]);
    CHECK_OK(fm_tensor_reshape(&r, &r, &s, err), err); /* in place: the one reference stays */
    CHECK(fm_shape_equal(&r.shape, &s));
    fm_tensor_free(&r); /* the last reference: ASan's leak check sees the storage freed */
}

static void test_cast(void) {
    fm_tensor t, c, bad;
    fm_error errv, *err = &errv;
    int64_t d[2] = {3, 37};
    fm_shape s = shp(2, d);
    CHECK_OK(fm_tensor_alloc(&t, FM_DTYPE_F32, &s, err), err);
    float *p = t.data;
    uint32_t x = 12345;
    for (int i = 0; i < 111; i++) {
        x = x * 1103515245u + 12345u;
        p[i] = ((float)(x >> 8) - 8388608.0f) * 1e-3f;
    }
    fm_dtype targets[4] = {FM_DTYPE_BF16, FM_DTYPE_F16, FM_DTYPE_F64, FM_DTYPE_F32};
    for (int k = 0; k < 4; k++) {
        CHECK_OK(fm_tensor_cast(&c, &t, targets[k], err), err);
        CHECK(c.dtype == targets[k] && fm_shape_equal(&c.shape, &s));
        CHECK(c.data != t.data && c.storage != t.storage);
        CHECK_EQ_INT(111 * fm_dtype_bits(targets[k]) / 8, c.nbytes);
        unsigned char want[111 * 8];
        fm_convert(want, targets[k], p, FM_DTYPE_F32, 111);
        CHECK(memcmp(want, c.data, (size_t)c.nbytes) == 0);
        if (targets[k] == FM_DTYPE_F64) CHECK(((double *)c.data)[5] == (double)p[5]);
        if (targets[k] == FM_DTYPE_BF16) { /* within bf16 precision of the source */
            float back[111];
            fm_bf16_to_f32(back, c.data, 111);
            for (int i = 0; i < 111; i++)
                CHECK(fabsf(back[i] - p[i]) <= fabsf(p[i]) * 0x1p-8f);
        }
        fm_tensor_free(&c);
    }
    fm_tensor it;
    CHECK_OK(fm_tensor_alloc(&it, FM_DTYPE_I32, &s, err), err);
    CHECK_EQ_INT(FM_ERR_DTYPE, fm_tensor_cast(&bad, &it, FM_DTYPE_F32, err));
    CHECK_CONTAINS(err->msg, "I32");
    CHECK(bad.storage == NULL);
    memset(it.data, 0x5a, (size_t)it.nbytes);
    CHECK_OK(fm_tensor_cast(&c, &it, FM_DTYPE_I32, err), err); /* equal dtypes: a copy */
    CHECK(memcmp(c.data, it.data, (size_t)it.nbytes) == 0 && c.data != it.data);
    fm_tensor_free(&c);
    fm_tensor m;
    CHECK_OK(fm_tensor_init_meta(&m, FM_DTYPE_F32, &s, err), err);
    CHECK(m.data == NULL && m.nbytes == 444);
    CHECK_EQ_INT(FM_ERR_INVALID_ARG, fm_tensor_cast(&c, &m, FM_DTYPE_BF16, err));
    fm_tensor_free(&it);
    fm_tensor_free(&t);
}

/* Allocation failures leave the tensor zeroed and leak nothing (ASan checks the leak). */
static void test_alloc_failure(void) {
    fm_tensor t;
    fm_error errv, *err = &errv;
    int64_t d[1] = {100};
    fm_shape s = shp(1, d);
    for (int nth = 1; nth <= 2; nth++) {
        fm_fault_set(FM_FAULT_ALLOC, (uint64_t)nth);
        CHECK_EQ_INT(FM_ERR_NOMEM, fm_tensor_alloc(&t, FM_DTYPE_F32, &s, err));
        CHECK(t.data == NULL && t.storage == NULL);
    }
    fm_fault_set(FM_FAULT_ALLOC, 0);
    fm_tensor src;
    CHECK_OK(fm_tensor_alloc(&src, FM_DTYPE_F32, &s, err), err);
    memset(src.data, 0, 400);
    fm_fault_set(FM_FAULT_ALLOC, 2);
    CHECK_EQ_INT(FM_ERR_NOMEM, fm_tensor_cast(&t, &src, FM_DTYPE_BF16, err));
    fm_fault_set(FM_FAULT_ALLOC, 0);
    fm_tensor_free(&src);
}

int main(void) {
    RUN(test_dtype_table);
    RUN(test_shape_make_and_format);
    RUN(test_numel_overflow);
    RUN(test_nbytes_rules);
    RUN(test_view_outlives_owner);
    RUN(test_mapped_storage_refcount);
    RUN(test_reshape_zero_copy);
    RUN(test_cast);
    RUN(test_alloc_failure);
    TEST_END();
}
