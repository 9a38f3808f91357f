/* Safetensors reader: valid files (fields, zero-copy views on random data, metadata,
 * escapes, whitespace, zero-size tensors), every malformed-input rule with its status and a
 * message naming the file and tensor, limits, fault injection, and "open reads no data". */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/testing.h"
#include "fusemap/io.h"
#include "support/check.h"
#include "support/st_fixtures.h"

static char *tmpdir;
static int quick;

/* Writes the bytes to TMP/<id>.safetensors; returns the malloc'd path. */
static char *put(const char *id, const uint8_t *b, size_t len) {
    char name[256];
    snprintf(name, sizeof name, "%s.safetensors", id);
    char *p = stfx_join(tmpdir, name);
    CHECK(p && stfx_write_file(p, b, len) == 0);
    return p;
}

/* ---- valid files -------------------------------------------------------------------------- */

static void test_minimal_empty(void) {
    uint8_t *b;
    size_t len;
    fm_error eb, *err = &eb;
    fm_st_file *f = NULL;
    CHECK(stfx_bytes_str("{}", NULL, 0, &b, &len) == 0);
    CHECK_EQ_INT(10, len);
    char *p = put("minimal", b, len);
    CHECK_OK(fm_st_open(p, &f, err), err);
    CHECK_EQ_INT(0, fm_st_count(f));
    CHECK(!fm_st_has_metadata(f));
    CHECK_EQ_INT(2, fm_st_header_len(f));
    CHECK_EQ_STR(p, fm_st_path(f));
    CHECK(fm_st_entry_at(f, 0) == NULL);
    CHECK_EQ_INT(-1, fm_st_find(f, "x"));
    fm_st_close(f);
    free(p);
    free(b);
}

/* Spec 3.4 vector 1: F32 "attn.0" [1,2,3] values 0..5, N = 64, file 96 bytes. */
static void test_reference_vector(void) {
    const char *h = "{\"attn.0\":{\"dtype\":\"F32\",\"shape\":[1,2,3],\"data_offsets\":[0,24]}}";
    float v[6] = {0, 1, 2, 3, 4, 5};
    uint8_t *b;
    size_t len;
    fm_error eb, *err = &eb;
    fm_st_file *f = NULL;
    CHECK(stfx_bytes_str(h, v, sizeof v, &b, &len) == 0);
    CHECK_EQ_INT(96, len);
    char *p = put("vec1", b, len);
    CHECK_OK(fm_st_open(p, &f, err), err);
    CHECK_EQ_INT(64, fm_st_header_len(f));
    CHECK_EQ_INT(1, fm_st_count(f));
    const fm_st_entry *e = fm_st_entry_at(f, 0);
    CHECK(e && e->dtype == FM_DTYPE_F32 && e->shape.ndim == 3 && e->shape.dims[2] == 3);
    CHECK(e && e->begin == 0 && e->end == 24 && e->name_len == 6);
    CHECK_EQ_STR("attn.0", e ? e->name : NULL);
    fm_tensor t;
    CHECK_OK(fm_st_tensor(f, 0, &t, err), err);
    CHECK(fm_tensor_is_mapped(&t));
    CHECK_EQ_INT(24, t.nbytes);
    fm_st_close(f); /* the view keeps the mapping */
    CHECK(t.data && memcmp(t.data, v, sizeof v) == 0);
    fm_tensor_free(&t);
    free(p);
    free(b);
}

/* Random tensors of several dtypes and shapes, header members in shuffled order: every view
 * must hold exactly the bytes placed at its offsets. */
static void random_file_roundtrip(uint64_t seed, int ntensors) {
    static const fm_dtype dts[] = {FM_DTYPE_F64, FM_DTYPE_I64, FM_DTYPE_F32,  FM_DTYPE_BF16,
                                   FM_DTYPE_F16, FM_DTYPE_U8,  FM_DTYPE_BOOL, FM_DTYPE_I32,
                                   FM_DTYPE_C64, FM_DTYPE_F4};
    size_t hcap = 256 + (size_t)ntensors * 160, hl = 0, dlen = 0;
    char *hdr = malloc(hcap);
    uint64_t *beg = calloc((size_t)ntensors, 8), *end = calloc((size_t)ntensors, 8);
    int *order = malloc(sizeof(int) * (size_t)ntensors);
    uint8_t rnd[8];
    char names[64];
    /* sizes first (writer order = index order), then the header in a shuffled order */
    int64_t shapes[256][3];
    int dt_of[256];
    for (int i = 0; i < ntensors; i++) {
        stfx_random_bytes(rnd, sizeof rnd, seed * 1000 + (uint64_t)i);
        dt_of[i] = rnd[0] % 10;
        shapes[i][0] = 1 + rnd[1] % 5;
        shapes[i][1] = rnd[2] % 7; /* may be 0: an empty tensor */
        shapes[i][2] = 2 * (1 + rnd[3] % 6);
        uint64_t n = (uint64_t)(shapes[i][0] * shapes[i][1] * shapes[i][2]);
        beg[i] = dlen;
        dlen += n * fm_dtype_bits(dts[dt_of[i]]) / 8;
        end[i] = dlen;
        order[i] = i;
    }
    for (int i = ntensors - 1; i > 0; i--) {
        stfx_random_bytes(rnd, 1, seed + (uint64_t)i * 7);
        int j = rnd[0] % (i + 1), tmp = order[i];
        order[i] = order[j];
        order[j] = tmp;
    }
    hl += (size_t)snprintf(hdr + hl, hcap - hl, " {\"__metadata__\":{\"format\":\"pt\"}");
    for (int k = 0; k < ntensors; k++) {
        int i = order[k];
        hl += (size_t)snprintf(hdr + hl, hcap - hl,
                               ",\"layer.%d.w\":{\"shape\":[%lld,%lld,%lld],\"data_offsets\":[%llu,"
                               "%llu],\"dtype\":\"%s\"}",
                               i, (long long)shapes[i][0], (long long)shapes[i][1],
                               (long long)shapes[i][2], (unsigned long long)beg[i],
                               (unsigned long long)end[i], fm_dtype_name(dts[dt_of[i]]));
    }
    hl += (size_t)snprintf(hdr + hl, hcap - hl, "}\n\t ");
    uint8_t *data = malloc(dlen ? dlen : 1), *b;
    size_t len;
    stfx_random_bytes(data, dlen, seed);
    CHECK(stfx_bytes_str(hdr, data, dlen, &b, &len) == 0);
    snprintf(names, sizeof names, "rand%llu", (unsigned long long)seed);
    char *p = put(names, b, len);
    fm_error eb, *err = &eb;
    fm_st_file *f = NULL, *fb = NULL;
    CHECK_OK(fm_st_open(p, &f, err), err);
    CHECK_OK(fm_st_open_buffer(b, len, "buf", &fb, err), err);
    CHECK_EQ_INT(ntensors, fm_st_count(f));
    CHECK_EQ_INT(ntensors, fm_st_count(fb));
    for (int i = 0; i < ntensors && f && fb; i++) {
        snprintf(names, sizeof names, "layer.%d.w", i);
        long k = fm_st_find(f, names);
        CHECK(k >= 0);
        if (k < 0) continue;
        const fm_st_entry *e = fm_st_entry_at(f, (size_t)k);
        CHECK(e->dtype == dts[dt_of[i]] && e->begin == beg[i] && e->end == end[i] &&
              e->shape.dims[1] == shapes[i][1]);
        fm_tensor t, tb;
        CHECK_OK(fm_st_tensor(f, (size_t)k, &t, err), err);
        CHECK_OK(fm_st_tensor(fb, (size_t)fm_st_find(fb, names), &tb, err), err);
        CHECK_EQ_INT(end[i] - beg[i], t.nbytes);
        CHECK(t.data != NULL && memcmp(t.data, data + beg[i], t.nbytes) == 0);
        CHECK(tb.data == b + 8 + hl + beg[i]);
        fm_tensor_free(&t);
        fm_tensor_free(&tb);
    }
    for (size_t i = 1; f && i < fm_st_count(f); i++) /* entries in data order */
        CHECK(fm_st_entry_at(f, i - 1)->end <= fm_st_entry_at(f, i)->begin);
    fm_st_close(f);
    fm_st_close(fb);
    free(p);
    free(b);
    free(data);
    free(hdr);
    free(beg);
    free(end);
    free(order);
}

static void test_random_files(void) {
    random_file_roundtrip(1, 1);
    random_file_roundtrip(2, 7);
    random_file_roundtrip(3, 40);
    if (!quick) random_file_roundtrip(4, 200);
}

static void test_metadata(void) {
    fm_error eb, *err = &eb;
    fm_st_file *f = NULL;
    uint8_t *b;
    size_t len;
    const char *h = "{\"__metadata__\":{\"format\":\"pt\",\"k\\\"\":\"v\\\\\\/"
                    "\",\"\\u00e9t\\u00e9\":\"\\ud83d\\ude00\",\"c\":\"\\b\\f\\r\\u0041\"},"
                    "\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]}}";
    CHECK(stfx_bytes_str(h, "xy", 2, &b, &len) == 0);
    CHECK_OK(fm_st_open_buffer(b, len, "meta", &f, err), err);
    CHECK(fm_st_has_metadata(f));
    CHECK_EQ_INT(4, fm_st_metadata_count(f));
    CHECK_EQ_STR("format", fm_st_metadata_at(f, 0)->key);
    CHECK_EQ_STR("pt", fm_st_metadata_at(f, 0)->value);
    CHECK_EQ_STR("k\"", fm_st_metadata_at(f, 1)->key);
    CHECK_EQ_STR("v\\/", fm_st_metadata_at(f, 1)->value);
    CHECK_EQ_STR("\xc3\xa9t\xc3\xa9", fm_st_metadata_at(f, 2)->key);
    CHECK_EQ_STR("\xf0\x9f\x98\x80", fm_st_metadata_at(f, 2)->value);
    CHECK_EQ_STR("\b\f\rA", fm_st_metadata_at(f, 3)->value);
    CHECK(fm_st_metadata_at(f, 4) == NULL);
    fm_st_close(f);
    free(b);
    /* null = absent; {} = present and empty */
    CHECK(stfx_bytes_str("{\"__metadata__\":null}", NULL, 0, &b, &len) == 0);
    CHECK_OK(fm_st_open_buffer(b, len, "null", &f, err), err);
    CHECK(!fm_st_has_metadata(f));
    fm_st_close(f);
    free(b);
    CHECK(stfx_bytes_str("{\"__metadata__\":{}}", NULL, 0, &b, &len) == 0);
    CHECK_OK(fm_st_open_buffer(b, len, "empty", &f, err), err);
    CHECK(fm_st_has_metadata(f));
    CHECK_EQ_INT(0, fm_st_metadata_count(f));
    fm_st_close(f);
    free(b);
}

/* Names: escapes decoded (NUL kept with its length), the empty name, non-ASCII, slashes;
 * leading/trailing JSON whitespace; unknown members skipped; zero-size tensors sharing an
 * offset; a scalar; an empty data region with only empty tensors (no mapping). */
static void test_names_and_shapes(void) {
    fm_error eb, *err = &eb;
    fm_st_file *f = NULL;
    uint8_t *b;
    size_t len;
    const char *h =
        " \t\r\n{\"a\\u0000b\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
        "\"\":{\"dtype\":\"I16\",\"shape\":[0,4],\"data_offsets\":[1,1]},"
        "\"z\":{\"dtype\":\"F8_E4M3\",\"shape\":[0],\"data_offsets\":[1,1],\"x\":[1,{\"y\":[true,"
        "null,-1.5e3]}],\"w\":\"s\"},"
        "\"caf\xc3\xa9/\\n\\t\":{\"dtype\":\"F64\",\"shape\":[],\"data_offsets\":[1,9]},"
        "\"big0\":{\"dtype\":\"U8\",\"shape\":[0,4294967296,4294967296],\"data_offsets\":[9,9]},"
        "\"f4\":{\"dtype\":\"F4\",\"shape\":[1,2],\"data_offsets\":[9,10]},"
        "\"f6\":{\"dtype\":\"F6_E2M3\",\"shape\":[4],\"data_offsets\":[10,13]}}\n  ";
    uint8_t data[13];
    stfx_random_bytes(data, sizeof data, 9);
    CHECK(stfx_bytes_str(h, data, sizeof data, &b, &len) == 0);
    char *p = put("names", b, len);
    CHECK_OK(fm_st_open(p, &f, err), err);
    CHECK_EQ_INT(7, fm_st_count(f));
    const fm_st_entry *e0 = fm_st_entry_at(f, 0);
    CHECK(e0 && e0->name_len == 3 && memcmp(e0->name, "a\0b", 3) == 0);
    CHECK_EQ_INT(-1, fm_st_find(f, "a"));
    long k = fm_st_find(f, "");
    CHECK(k >= 0 && fm_st_entry_at(f, (size_t)k)->shape.ndim == 2);
    k = fm_st_find(f, "caf\xc3\xa9/\n\t");
    CHECK(k >= 0);
    fm_tensor t;
    if (k >= 0) {
        CHECK_OK(fm_st_tensor(f, (size_t)k, &t, err), err);
        CHECK(t.shape.ndim == 0 && t.nbytes == 8 && memcmp(t.data, data + 1, 8) == 0);
        fm_tensor_free(&t);
    }
    k = fm_st_find(f, "big0");
    CHECK(k >= 0 && fm_st_entry_at(f, (size_t)k)->shape.dims[2] == 4294967296ll);
    fm_st_close(f);
    free(p);
    free(b);
    /* empty data region: views of empty tensors still have a non-NULL data pointer */
    CHECK(stfx_bytes_str("{\"e\":{\"dtype\":\"F32\",\"shape\":[3,0],\"data_offsets\":[0,0]}}", NULL,
                         0, &b, &len) == 0);
    p = put("emptydata", b, len);
    CHECK_OK(fm_st_open(p, &f, err), err);
    CHECK_OK(fm_st_tensor(f, 0, &t, err), err);
    CHECK(t.data != NULL && t.nbytes == 0 && t.shape.dims[0] == 3);
    fm_tensor bad;
    CHECK_STATUS(FM_ERR_INVALID_ARG, fm_st_tensor(f, 1, &bad, err), err);
    CHECK(bad.data == NULL && bad.storage == NULL);
    fm_st_close(f);
    fm_tensor_free(&t);
    free(p);
    free(b);
}

/* Nesting inside skipped members: depth 128 overall is accepted, 129 refused. */
static void test_depth_cap(void) {
    for (int extra = 0; extra <= 1; extra++) {
        int levels = 126 + extra; /* top object + tensor object + levels arrays */
        size_t cap = 256 + 2 * (size_t)levels;
        char *h = malloc(cap);
        size_t o = (size_t)snprintf(
            h, cap, "{\"t\":{\"dtype\":\"U8\",\"shape\":[],\"data_offsets\":[0,1],\"x\":");
        for (int i = 0; i < levels; i++)
            h[o++] = '[';
        for (int i = 0; i < levels; i++)
            h[o++] = ']';
        snprintf(h + o, cap - o, "}}");
        uint8_t *b;
        size_t len;
        fm_error eb, *err = &eb;
        fm_st_file *f = NULL;
        CHECK(stfx_bytes_str(h, "q", 1, &b, &len) == 0);
        fm_status st = fm_st_open_buffer(b, len, "deep", &f, err);
        CHECK_STATUS(extra ? FM_ERR_HEADER_JSON : FM_OK, st, err);
        if (extra) CHECK_CONTAINS(err->msg, "nested too deeply");
        fm_st_close(f);
        free(b);
        free(h);
    }
}

/* ---- malformed inputs ----------------------------------------------------------------------- */

typedef struct bad_case {
    const char *id;
    const char *header; /* NULL: only the prefix (see n) */
    size_t hlen;        /* 0 = strlen(header) */
    size_t dlen;        /* data bytes appended */
    int64_t n;          /* -1: N = hlen; otherwise the N field written */
    fm_status status;
    const char *needle; /* must appear in the message (besides the file path) */
} bad_case;

#define T1(dt, shape, off)                                                                         \
    "{\"t\":{\"dtype\":\"" dt "\",\"shape\":" shape ",\"data_offsets\":" off "}}"
#define U8OK "\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]}"

static const bad_case bad_cases[] = {
    {"empty_file", "", 0, 0, -2, FM_ERR_HEADER_TOO_SMALL, "too small"},
    {"seven_bytes", "", 0, 0, -7, FM_ERR_HEADER_TOO_SMALL, "too small"},
    {"n_over_limit", "{}", 0, 0, 100000001, FM_ERR_HEADER_TOO_LARGE, "100000001"},
    {"n_max_u64", "{}", 0, 0, -3, FM_ERR_HEADER_TOO_LARGE, "exceeds"},
    {"n_past_eof", "{}", 0, 0, 3, FM_ERR_HEADER_LENGTH, "past the end"},
    {"n_zero", "{}", 0, 0, 0, FM_ERR_HEADER_JSON, "EOF"},
    {"utf8_ff", "{\"\xff\":1}", 0, 0, -1, FM_ERR_HEADER_UTF8, "0xff"},
    {"utf8_overlong", "{\"\xc0\xaf\":1}", 0, 0, -1, FM_ERR_HEADER_UTF8, "UTF-8"},
    {"utf8_surrogate", "{\"\xed\xa0\x80\":1}", 0, 0, -1, FM_ERR_HEADER_UTF8, "UTF-8"},
    {"utf8_truncated", "{}\xe2\x82", 0, 0, -1, FM_ERR_HEADER_UTF8, "UTF-8"},
    {"bom", "\xef\xbb\xbf{}", 0, 0, -1, FM_ERR_HEADER_JSON, "must be a JSON object"},
    {"top_array", "[]", 0, 0, -1, FM_ERR_HEADER_JSON, "must be a JSON object"},
    {"trailing_comma", "{" U8OK ",}", 0, 4, -1, FM_ERR_HEADER_JSON, "expected a string"},
    {"comment", "{/*c*/}", 0, 0, -1, FM_ERR_HEADER_JSON, "invalid JSON"},
    {"two_values", "{}{}", 0, 0, -1, FM_ERR_HEADER_JSON, "trailing characters"},
    {"nul_padding", "{}\0\0\0\0\0\0", 8, 0, -1, FM_ERR_HEADER_JSON, "trailing characters"},
    {"eof_in_object", "{" U8OK, 0, 4, -1, FM_ERR_HEADER_JSON, "EOF"},
    {"unterminated_string", "{\"abc", 0, 0, -1, FM_ERR_HEADER_JSON, "unterminated string"},
    {"missing_dtype", "{\"t\":{\"shape\":[1],\"data_offsets\":[0,1]}}", 0, 1, -1,
     FM_ERR_HEADER_JSON, "without 'dtype'"},
    {"missing_shape", "{\"t\":{\"dtype\":\"U8\",\"data_offsets\":[0,1]}}", 0, 1, -1,
     FM_ERR_HEADER_JSON, "without 'shape'"},
    {"missing_offsets", "{\"t\":{\"dtype\":\"U8\",\"shape\":[1]}}", 0, 1, -1, FM_ERR_HEADER_JSON,
     "without 'data_offsets'"},
    {"unknown_dtype_case", T1("u8", "[1]", "[0,1]"), 0, 1, -1, FM_ERR_UNKNOWN_DTYPE,
     "unknown dtype 'u8'"},
    {"unknown_dtype_f128", T1("F128", "[1]", "[0,16]"), 0, 16, -1, FM_ERR_UNKNOWN_DTYPE, "'F128'"},
    {"dtype_not_string", "{\"t\":{\"dtype\":3,\"shape\":[1],\"data_offsets\":[0,1]}}", 0, 1, -1,
     FM_ERR_HEADER_JSON, "expected a string"},
    {"shape_not_array", T1("U8", "\"1\"", "[0,1]"), 0, 1, -1, FM_ERR_HEADER_JSON,
     "shape must be an array"},
    {"offsets_three", T1("U8", "[1]", "[0,1,2]"), 0, 1, -1, FM_ERR_HEADER_JSON, "exactly two"},
    {"offsets_one", T1("U8", "[1]", "[1]"), 0, 1, -1, FM_ERR_HEADER_JSON, "exactly two"},
    {"offsets_empty", T1("U8", "[1]", "[]"), 0, 1, -1, FM_ERR_HEADER_JSON, "exactly two"},
    {"fraction", T1("U8", "[1.0]", "[0,1]"), 0, 1, -1, FM_ERR_HEADER_JSON, "fraction or exponent"},
    {"exponent", T1("U8", "[1]", "[0,1e0]"), 0, 1, -1, FM_ERR_HEADER_JSON, "fraction or exponent"},
    {"negative", T1("U8", "[-1]", "[0,1]"), 0, 1, -1, FM_ERR_HEADER_JSON, "negative"},
    {"minus_zero", T1("U8", "[1]", "[-0,1]"), 0, 1, -1, FM_ERR_HEADER_JSON, "negative"},
    {"leading_zero", T1("U8", "[01]", "[0,1]"), 0, 1, -1, FM_ERR_HEADER_JSON, "leading zero"},
    {"quoted_number", T1("U8", "[\"1\"]", "[0,1]"), 0, 1, -1, FM_ERR_HEADER_JSON, "quoted number"},
    {"u64_overflow", T1("U8", "[18446744073709551616]", "[0,1]"), 0, 1, -1, FM_ERR_HEADER_JSON,
     "2^64-1"},
    {"meta_value_number", "{\"__metadata__\":{\"a\":1}}", 0, 0, -1, FM_ERR_HEADER_JSON,
     "must be strings"},
    {"meta_array", "{\"__metadata__\":[\"a\"]}", 0, 0, -1, FM_ERR_HEADER_JSON,
     "__metadata__ must be"},
    {"meta_twice", "{\"__metadata__\":{},\"__metadata__\":null}", 0, 0, -1, FM_ERR_HEADER_JSON,
     "second __metadata__"},
    {"meta_twice_escaped", "{\"__metadata__\":{},\"\\u005f_metadata__\":{}}", 0, 0, -1,
     FM_ERR_HEADER_JSON, "second __metadata__"},
    {"meta_dup_key", "{\"__metadata__\":{\"format\":\"pt\",\"x\":\"1\",\"format\":\"tf\"}}", 0, 0,
     -1, FM_ERR_HEADER_JSON, "duplicate __metadata__ key 'format'"},
    {"repeated_member",
     "{\"t\":{\"dtype\":\"U8\",\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 0, 1, -1,
     FM_ERR_HEADER_JSON, "repeated member"},
    {"dup_tensor",
     "{" U8OK ",\"b\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[4,5]}," U8OK "}", 0, 5, -1,
     FM_ERR_DUPLICATE_TENSOR, "duplicate tensor name 'a'"},
    {"dup_tensor_tiling",
     "{\"a\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[8,16]},\"a\":{\"dtype\":\"U8\","
     "\"shape\":[8],\"data_offsets\":[0,8]}}",
     0, 8, -1, FM_ERR_DUPLICATE_TENSOR, "'a'"},
    {"control_char", "{\"a\tb\":{}}", 0, 0, -1, FM_ERR_HEADER_JSON, "raw control character"},
    {"bad_escape", "{\"a\\xb\":{}}", 0, 0, -1, FM_ERR_HEADER_JSON, "invalid escape"},
    {"lone_high_surrogate", "{\"a\\ud800\":{}}", 0, 0, -1, FM_ERR_HEADER_JSON,
     "lone leading surrogate"},
    {"lone_low_surrogate", "{\"a\\udc00\":{}}", 0, 0, -1, FM_ERR_HEADER_JSON,
     "lone trailing surrogate"},
    {"bad_literal", "{\"t\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1],\"x\":tru}}", 0,
     1, -1, FM_ERR_HEADER_JSON, "expected a JSON value"},
    {"array_form", "{\"t\":[\"U8\",[1],[0,1]]}", 0, 1, -1, FM_ERR_HEADER_JSON, "array"},
    {"entry_not_object", "{\"t\":5}", 0, 0, -1, FM_ERR_HEADER_JSON, "must be an object"},
    {"gap", "{" U8OK ",\"b\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[5,6]}}", 0, 6, -1,
     FM_ERR_INVALID_OFFSET, "tensor 'b': invalid offset [5, 6]"},
    {"overlap", "{" U8OK ",\"b\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[2,4]}}", 0, 4,
     -1, FM_ERR_INVALID_OFFSET, "invalid offset [2, 4]"},
    {"not_from_zero", T1("U8", "[1]", "[1,2]"), 0, 2, -1, FM_ERR_INVALID_OFFSET, "tensor 't'"},
    {"reversed", T1("U8", "[0]", "[0,0]"), 0, 0, -4, FM_ERR_INVALID_OFFSET, "tensor 'r'"},
    {"shape_overflow", T1("U8", "[4294967296,4294967296,2]", "[0,1]"), 0, 1, -1,
     FM_ERR_VALIDATION_OVERFLOW, "overflows"},
    {"shape_overflow_quirk", T1("U8", "[4294967296,4294967296,0]", "[0,0]"), 0, 0, -1,
     FM_ERR_VALIDATION_OVERFLOW, "element count"},
    {"bits_overflow", T1("U8", "[4611686018427387904]", "[0,1]"), 0, 1, -1,
     FM_ERR_VALIDATION_OVERFLOW, "bit size"},
    {"f4_odd", T1("F4", "[3]", "[0,2]"), 0, 2, -1, FM_ERR_MISALIGNED_SLICE, "12 bits"},
    {"f6_two", T1("F6_E3M2", "[2]", "[0,2]"), 0, 2, -1, FM_ERR_MISALIGNED_SLICE,
     "not a whole number of bytes"},
    {"wrong_size", T1("F32", "[2]", "[0,4]"), 0, 4, -1, FM_ERR_TENSOR_INVALID_INFO, "needs 8"},
    {"first_error_wins",
     "{\"a\":{\"dtype\":\"U8\",\"shape\":[3],\"data_offsets\":[0,4]},\"b\":{\"dtype\":\"U8\","
     "\"shape\":[1],\"data_offsets\":[9,10]}}",
     0, 10, -1, FM_ERR_TENSOR_INVALID_INFO, "tensor 'a'"},
    {"trailing_bytes", "{" U8OK "}", 0, 5, -1, FM_ERR_INCOMPLETE_BUFFER, "trailing bytes"},
    {"truncated", "{" U8OK "}", 0, 3, -1, FM_ERR_INCOMPLETE_BUFFER, "truncated"},
    {"past_end_huge", T1("U8", "[1]", "[0,1]"), 0, 0, -5, FM_ERR_INCOMPLETE_BUFFER,
     "not fully covered"},
    {"rank_9", T1("U8", "[1,1,1,1,1,1,1,1,1]", "[0,1]"), 0, 1, -1, FM_ERR_LIMIT,
     "more than 8 dimensions"},
    {"dim_above_i64", T1("U8", "[9223372036854775808,0]", "[0,0]"), 0, 0, -1, FM_ERR_LIMIT,
     "above 2^63-1"},
};

/* Cases with N or bytes that a plain table row cannot express. */
static void make_bad_bytes(const bad_case *c, uint8_t **b, size_t *len) {
    size_t hlen = c->hlen ? c->hlen : strlen(c->header);
    uint8_t data[32];
    stfx_random_bytes(data, sizeof data, 5);
    if (c->n == -2) {
        *b = malloc(1);
        *len = 0;
        return;
    } /* empty file */
    if (c->n == -7) {
        stfx_bytes_n(2, "{}", 2, NULL, 0, b, len);
        *len = 7;
        return;
    }
    if (c->n == -3) {
        stfx_bytes_n(UINT64_MAX, "{}", 2, NULL, 0, b, len);
        return;
    }
    if (c->n == -4) { /* "r" begins where the chain stands but ends before it begins */
        const char *h = "{" U8OK ",\"r\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[4,2]}}";
        stfx_bytes_str(h, data, 4, b, len);
        return;
    }
    if (c->n == -5) { /* a consistent 2^60-byte tensor: only the coverage check can catch it */
        const char *h = "{\"t\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
                        "\"u\":{\"dtype\":\"U8\",\"shape\":[1152921504606846976],"
                        "\"data_offsets\":[1,1152921504606846977]}}";
        stfx_bytes_str(h, data, 4, b, len);
        return;
    }
    stfx_bytes_n(c->n >= 0 ? (uint64_t)c->n : hlen, c->header, hlen, data, c->dlen, b, len);
}

static void test_malformed(void) {
    size_t n = sizeof bad_cases / sizeof bad_cases[0];
    CHECK(n >= 30);
    for (size_t i = 0; i < n; i++) {
        const bad_case *c = &bad_cases[i];
        uint8_t *b = NULL;
        size_t len = 0;
        make_bad_bytes(c, &b, &len);
        char *p = put(c->id, b, len);
        fm_error eb, *err = &eb;
        fm_st_file *f = (fm_st_file *)err; /* must be reset to NULL */
        fm_status st = fm_st_open(p, &f, err);
        if (st != c->status || !strstr(err->msg, p) || !strstr(err->msg, c->needle) ||
            getenv("FM_TEST_VERBOSE"))
            fprintf(stderr, "  case %s: %s\n", c->id, err->msg);
        CHECK_STATUS(c->status, st, err);
        CHECK_EQ_INT(c->status, err->status);
        CHECK(f == NULL);
        CHECK_CONTAINS(err->msg, p);
        CHECK_CONTAINS(err->msg, c->needle);
        CHECK(strchr(err->msg, '\n') == NULL);
        /* the same rules on a buffer, named by its label */
        st = fm_st_open_buffer(b, len, c->id, &f, err);
        CHECK_STATUS(c->status, st, err);
        CHECK_CONTAINS(err->msg, c->id);
        CHECK(f == NULL);
        CHECK_STATUS(c->status, fm_st_open(p, &f, NULL), (fm_error *)NULL); /* err may be NULL */
        free(p);
        free(b);
    }
}

static void test_long_name_limit(void) {
    for (int over = 0; over <= 1; over++) {
        size_t nl = FM_ST_MAX_NAME_BYTES + (size_t)over;
        char *h = malloc(nl + 128);
        size_t o = (size_t)snprintf(h, nl + 128, "{\"");
        memset(h + o, 'n', nl);
        o += nl;
        snprintf(h + o, nl + 128 - o,
                 "\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}");
        uint8_t *b;
        size_t len;
        fm_error eb, *err = &eb;
        fm_st_file *f = NULL;
        CHECK(stfx_bytes_str(h, "z", 1, &b, &len) == 0);
        CHECK_STATUS(over ? FM_ERR_LIMIT : FM_OK, fm_st_open_buffer(b, len, "long", &f, err), err);
        if (over) CHECK_CONTAINS(err->msg, "4097 bytes (limit 4096)");
        fm_st_close(f);
        free(b);
        free(h);
    }
}

/* FM_ST_MAX_TENSORS + 1 zero-size entries (about 50 MB of header): FM_ERR_LIMIT. */
static void test_tensor_count_limit(void) {
    if (quick) return;
    size_t n = FM_ST_MAX_TENSORS + 1, cap = n * 56 + 16, o = 0;
    char *h = malloc(cap);
    h[o++] = '{';
    for (size_t i = 0; i < n; i++)
        o += (size_t)snprintf(h + o, cap - o,
                              "%s\"%zx\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[0,0]}",
                              i ? "," : "", i);
    h[o++] = '}';
    uint8_t *b;
    size_t len;
    fm_error eb, *err = &eb;
    fm_st_file *f = NULL;
    CHECK(stfx_bytes_n(o, h, o, NULL, 0, &b, &len) == 0);
    CHECK_STATUS(FM_ERR_LIMIT, fm_st_open_buffer(b, len, "many", &f, err), err);
    CHECK_CONTAINS(err->msg, "more than 1000000 tensors");
    free(b);
    free(h);
}

static void test_not_a_file(void) {
    fm_error eb, *err = &eb;
    fm_st_file *f = NULL;
    char *p = stfx_join(tmpdir, "does-not-exist.safetensors");
    CHECK_STATUS(FM_ERR_NOT_FOUND, fm_st_open(p, &f, err), err);
    CHECK_CONTAINS(err->msg, "does-not-exist.safetensors");
    CHECK_STATUS(FM_ERR_IO, fm_st_open(tmpdir, &f, err), err);
    CHECK_CONTAINS(err->msg, "not a regular file");
    CHECK_STATUS(FM_ERR_INVALID_ARG, fm_st_open(NULL, &f, err), err);
    CHECK(f == NULL);
    fm_st_close(NULL);
    CHECK_EQ_INT(0, fm_st_count(NULL));
    free(p);
}

/* Every allocation and the open can fail: NOMEM/IO with nothing leaked, then success. */
static void test_fault_injection(void) {
    const char *h = "{\"__metadata__\":{\"format\":\"pt\"},\"a\":{\"dtype\":\"F32\",\"shape\":[2],"
                    "\"data_offsets\":[0,8]},"
                    "\"b\":{\"dtype\":\"U8\",\"shape\":[3],\"data_offsets\":[8,11]}}";
    uint8_t data[11], *b;
    size_t len;
    stfx_random_bytes(data, sizeof data, 3);
    CHECK(stfx_bytes_str(h, data, sizeof data, &b, &len) == 0);
    char *p = put("faults", b, len);
    int ok = 0;
    for (uint64_t nth = 1; nth < 64 && !ok; nth++) {
        fm_error eb, *err = &eb;
        fm_st_file *f = NULL;
        fm_fault_set(FM_FAULT_ALLOC, nth);
        fm_status st = fm_st_open(p, &f, err);
        fm_fault_set(FM_FAULT_ALLOC, 0);
        if (st == FM_OK) {
            ok = 1;
            CHECK(nth > 3); /* path, struct, header, entries, index, storage at least */
            CHECK_EQ_INT(2, fm_st_count(f));
        } else {
            CHECK_STATUS(FM_ERR_NOMEM, st, err);
            CHECK(f == NULL);
        }
        fm_st_close(f);
    }
    CHECK(ok);
    fm_error eb, *err = &eb;
    fm_st_file *f = NULL;
    fm_fault_set(FM_FAULT_OPEN, 1);
    CHECK_STATUS(FM_ERR_IO, fm_st_open(p, &f, err), err);
    fm_fault_set(FM_FAULT_OPEN, 0);
    CHECK_CONTAINS(err->msg, "injected");
    free(p);
    free(b);
}

/* rchar of /proc/self/io: bytes this process read through read-type system calls. */
static long long rchar(void) {
    char buf[512];
    FILE *fp = fopen("/proc/self/io", "r");
    long long v = -1;
    if (!fp) return -1;
    while (fgets(buf, sizeof buf, fp))
        if (sscanf(buf, "rchar: %lld", &v) == 1) break;
    fclose(fp);
    return v;
}

/* Opening a 64 MiB file reads only the prefix and the header (mapping reads nothing). */
static void test_open_reads_no_data(void) {
    const uint64_t dlen = quick ? (8u << 20) : (64u << 20);
    char h[256];
    snprintf(h, sizeof h, "{\"w\":{\"dtype\":\"BF16\",\"shape\":[%llu],\"data_offsets\":[0,%llu]}}",
             (unsigned long long)(dlen / 2), (unsigned long long)dlen);
    uint8_t *b;
    size_t len;
    CHECK(stfx_bytes_str(h, NULL, 0, &b, &len) == 0);
    char *p = put("big", b, len);
    CHECK(truncate(p, (off_t)(len + dlen)) == 0); /* sparse data region */
    long long before = rchar();
    fm_error eb, *err = &eb;
    fm_st_file *f = NULL;
    CHECK_OK(fm_st_open(p, &f, err), err);
    long long after = rchar();
    if (before >= 0 && after >= 0) {
        /* the delta also holds the first read of /proc/self/io itself (a few hundred bytes) */
        CHECK_MSG(after - before >= (long long)len && after - before < (long long)len + 2048,
                  "read %lld bytes, prefix + header are %zu", after - before, len);
    }
    fm_tensor t;
    CHECK_OK(fm_st_tensor(f, 0, &t, err), err);
    CHECK(t.nbytes == dlen && ((const uint8_t *)t.data)[dlen - 1] == 0);
    fm_tensor_free(&t);
    fm_st_close(f);
    free(p);
    free(b);
}

int main(void) {
    quick = getenv("FM_TEST_QUICK") != NULL;
    tmpdir = stfx_mkdtemp();
    if (!tmpdir) {
        fprintf(stderr, "cannot create a temporary directory\n");
        return 1;
    }
    RUN(test_minimal_empty);
    RUN(test_reference_vector);
    RUN(test_random_files);
    RUN(test_metadata);
    RUN(test_names_and_shapes);
    RUN(test_depth_cap);
    RUN(test_malformed);
    RUN(test_long_name_limit);
    RUN(test_tensor_count_limit);
    RUN(test_not_a_file);
    RUN(test_fault_injection);
    RUN(test_open_reads_no_data);
    stfx_rmrf(tmpdir);
    free(tmpdir);
    TEST_END();
}
