/* Safetensors writer tests: the reference's byte-exact vectors, serde escaping, dtype-rank order,
 * random files checked against an independent serializer and JSON parser, validation errors,
 * round trips through the reader, and the atomic single-file write under injected faults. */
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fusemap/io.h"
#include "io/fsutil.h"
#include "support/check.h"
#include "support/wr_fixtures.h"

static bool quick(void) {
    return getenv("FM_TEST_QUICK") != NULL;
}

/* Writes items through fm_st_write_fd into a temp file and returns the bytes (free()). */
static uint8_t *write_bytes(const fm_st_item *items, size_t n, const fm_st_write_options *o,
                            size_t *len, fm_status *st_out, fm_error *err) {
    char *dir = wrfx_mkdtemp(), *path = dir ? wrfx_join(dir, "x.safetensors") : NULL;
    uint8_t *bytes = NULL;
    int fd = path ? open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644) : -1;
    *st_out = FM_ERR_IO;
    if (fd >= 0) {
        *st_out = fm_st_write_fd(fd, path, items, n, o, err);
        close(fd);
        if (*st_out == FM_OK) bytes = wrfx_read(path, len);
    }
    if (dir) wrfx_rmrf(dir);
    free(path);
    free(dir);
    return bytes;
}

/* Expected file: LE length of the padded header, header text padded with spaces, data. */
static uint8_t *expected_file(const char *json, size_t pad_to, const void *data, size_t dlen,
                              size_t *len) {
    size_t jl = strlen(json), n = pad_to;
    uint8_t *b = malloc(8 + n + dlen + 1);
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)((uint64_t)n >> (8 * i));
    memcpy(b + 8, json, jl);
    memset(b + 8 + jl, ' ', n - jl);
    if (dlen) memcpy(b + 8 + n, data, dlen);
    *len = 8 + n + dlen;
    return b;
}

static void check_file(const fm_st_item *items, size_t n, const fm_st_write_options *o,
                       const char *json, size_t expect_n, const void *data, size_t dlen) {
    fm_error eb, *err = &eb;
    fm_status st;
    size_t got_len = 0, exp_len = 0;
    uint8_t *got = write_bytes(items, n, o, &got_len, &st, err);
    CHECK_OK(st, err);
    uint8_t *exp = expected_file(json, expect_n, data, dlen, &exp_len);
    CHECK_EQ_INT(exp_len, got_len);
    CHECK_MSG(got && got_len == exp_len && memcmp(got, exp, exp_len) == 0,
              "bytes differ; header seen: %.*s",
              got && got_len > 8 ? (int)(got_len - 8 < 400 ? got_len - 8 : 400) : 0,
              got ? (const char *)got + 8 : "");
    /* The header alone, as fm_st_serialize_header returns it. */
    uint8_t *hdr = NULL;
    uint64_t hl = 0;
    CHECK_OK(fm_st_serialize_header(items, n, o, &hdr, &hl, err), err);
    CHECK_EQ_INT(8 + expect_n, hl);
    CHECK(hdr && hl <= exp_len && memcmp(hdr, exp, (size_t)hl) == 0);
    fm_free(hdr);
    free(got);
    free(exp);
}

/* Vector 1: F32 "attn.0" [1,2,3], values 0..5, no metadata: N = 64, no padding, 96 bytes. */
static void test_vector1(void) {
    float v[6] = {0, 1, 2, 3, 4, 5};
    fm_tensor t;
    CHECK(wrfx_tensor(&t, FM_DTYPE_F32, 3, (int64_t[]){1, 2, 3}, v, 0) == 0);
    fm_st_item it = {"attn.0", &t};
    const char *json = "{\"attn.0\":{\"dtype\":\"F32\",\"shape\":[1,2,3],\"data_offsets\":[0,24]}}";
    CHECK_EQ_INT(64, strlen(json));
    check_file(&it, 1, NULL, json, 64, v, 24);
    fm_tensor_free(&t);
}

/* Vector 2: "attn0" [1,1,2,3]: 65 JSON bytes + 7 spaces, N = 72. */
static void test_vector2(void) {
    float v[6] = {0, 1, 2, 3, 4, 5};
    fm_tensor t;
    CHECK(wrfx_tensor(&t, FM_DTYPE_F32, 4, (int64_t[]){1, 1, 2, 3}, v, 0) == 0);
    fm_st_item it = {"attn0", &t};
    const char *json =
        "{\"attn0\":{\"dtype\":\"F32\",\"shape\":[1,1,2,3],\"data_offsets\":[0,24]}}";
    CHECK_EQ_INT(65, strlen(json));
    check_file(&it, 1, NULL, json, 72, v, 24);
    fm_tensor_free(&t);
}

/* Vector 3: nothing at all: "{}" + 6 spaces, N = 8. Vector 4: metadata {"framework":"pt"}. */
static void test_vector3_4_empty(void) {
    check_file(NULL, 0, NULL, "{}", 8, NULL, 0);
    fm_st_kv kv = {"framework", "pt"};
    fm_st_write_options o;
    fm_st_write_options_init(&o);
    o.metadata = &kv;
    o.n_metadata = 1;
    const char *json = "{\"__metadata__\":{\"framework\":\"pt\"}}";
    CHECK_EQ_INT(35, strlen(json));
    check_file(NULL, 0, &o, json, 40, NULL, 0);
}

/* Vector 5: F4 "attn.0" [1,2] is one byte: 60 JSON bytes + 4 spaces. */
static void test_vector5_f4(void) {
    uint8_t b = 0x5a;
    fm_tensor t;
    CHECK(wrfx_tensor(&t, FM_DTYPE_F4, 2, (int64_t[]){1, 2}, &b, 0) == 0);
    CHECK_EQ_INT(1, t.nbytes);
    fm_st_item it = {"attn.0", &t};
    const char *json = "{\"attn.0\":{\"dtype\":\"F4\",\"shape\":[1,2],\"data_offsets\":[0,1]}}";
    CHECK_EQ_INT(60, strlen(json));
    check_file(&it, 1, NULL, json, 64, &b, 1);
    fm_tensor_free(&t);
}

/* Intentional divergence: the reference writes the invalid `{},"__metadata__":{}}` for an empty
 * metadata dict with zero tensors; we write the valid {"__metadata__":{}}. Also empty metadata
 * with one tensor, and with_metadata = false omitting it. */
static void test_empty_metadata(void) {
    fm_st_write_options o;
    fm_st_write_options_init(&o);
    o.with_metadata = true;
    check_file(NULL, 0, &o, "{\"__metadata__\":{}}", 24, NULL, 0);
    uint8_t d[3] = {1, 2, 3};
    fm_tensor t;
    CHECK(wrfx_tensor(&t, FM_DTYPE_U8, 1, (int64_t[]){3}, d, 0) == 0);
    fm_st_item it = {"x", &t};
    check_file(
        &it, 1, &o,
        "{\"__metadata__\":{},\"x\":{\"dtype\":\"U8\",\"shape\":[3],\"data_offsets\":[0,3]}}", 72,
        d, 3);
    fm_tensor_free(&t);
}

/* The reference's escaping vector: ESC US VT BS FF CR become escapes, DEL, U+0080, U+2028 and an
 * emoji stay raw; a metadata key k" and value v\/ become "k\"" and "v\\/". */
static void test_escaping_vectors(void) {
    const char *name = "\x1b\x1f\x0b\x08\x0c\x0d\x7f\xc2\x80\xe2\x80\xa8\xf0\x9f\x98\x80";
    uint8_t d = 7;
    fm_tensor t;
    CHECK(wrfx_tensor(&t, FM_DTYPE_U8, 0, NULL, &d, 0) == 0);
    fm_st_item it = {name, &t};
    fm_st_kv kv = {"k\"", "v\\/"};
    fm_st_write_options o;
    fm_st_write_options_init(&o);
    o.metadata = &kv;
    o.n_metadata = 1;
    const char *json = "{\"__metadata__\":{\"k\\\"\":\"v\\\\/\"},"
                       "\"\\u001b\\u001f\\u000b\\b\\f\\r\x7f\xc2\x80\xe2\x80\xa8\xf0\x9f\x98\x80\":"
                       "{\"dtype\":\"U8\",\"shape\":[],\"data_offsets\":[0,1]}}";
    size_t jl = strlen(json);
    check_file(&it, 1, &o, json, (jl + 7) / 8 * 8, &d, 1);
    /* Tab, newline, quote, backslash, slash, 0x01 in a name. */
    const char *name2 = "a\tb\nc\"d\\e/f\x01g";
    fm_st_item it2 = {name2, &t};
    const char *json2 = "{\"a\\tb\\nc\\\"d\\\\e/"
                        "f\\u0001g\":{\"dtype\":\"U8\",\"shape\":[],\"data_offsets\":[0,1]}}";
    check_file(&it2, 1, NULL, json2, (strlen(json2) + 7) / 8 * 8, &d, 1);
    fm_tensor_free(&t);
}

/* ---- an independent reference serializer ------------------------------------------------- */
static const char *const rank_order[22] = {
    "U64", "I64", "F64",     "C64",         "F32",         "U32",     "I32",     "BF16",
    "F16", "U16", "I16",     "F8_E5M2FNUZ", "F8_E4M3FNUZ", "F8_E8M0", "F8_E4M3", "F8_E5M2",
    "I8",  "U8",  "F6_E3M2", "F6_E2M3",     "F4",          "BOOL"};
static const unsigned rank_bits[22] = {64, 64, 64, 64, 32, 32, 32, 16, 16, 16, 16,
                                       8,  8,  8,  8,  8,  8,  8,  6,  6,  4,  8};

static int order_pos(fm_dtype dt) {
    for (int i = 0; i < 22; i++)
        if (!strcmp(rank_order[i], fm_dtype_name(dt))) return i;
    return -1;
}

static const fm_st_item *sort_items;
static int ref_cmp(const void *pa, const void *pb) {
    const fm_st_item *a = &sort_items[*(const size_t *)pa], *b = &sort_items[*(const size_t *)pb];
    int ra = order_pos(a->tensor->dtype), rb = order_pos(b->tensor->dtype);
    if (ra != rb) return ra - rb;
    const unsigned char *x = (const unsigned char *)a->name, *y = (const unsigned char *)b->name;
    while (*x && *x == *y)
        x++, y++;
    return (int)*x - (int)*y;
}

static void ref_escape(FILE *f, const char *s) {
    static const char shorts[][2] = {{'\b', 'b'}, {'\f', 'f'}, {'\n', 'n'}, {'\r', 'r'},
                                     {'\t', 't'}, {'"', '"'},  {'\\', '\\'}};
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        int done = 0;
        for (size_t k = 0; k < sizeof shorts / sizeof shorts[0] && !done; k++)
            if (*p == (unsigned char)shorts[k][0]) fprintf(f, "\\%c", shorts[k][1]), done = 1;
        if (!done && *p < 0x20) fprintf(f, "\\u%04x", *p), done = 1;
        if (!done) fputc(*p, f);
    }
    fputc('"', f);
}

/* Whole expected file built with stdio from the rules of the spec. Caller frees. */
static uint8_t *ref_file(const fm_st_item *items, size_t n, size_t *len) {
    size_t *ord = malloc((n + 1) * sizeof *ord);
    for (size_t i = 0; i < n; i++)
        ord[i] = i;
    sort_items = items;
    qsort(ord, n, sizeof *ord, ref_cmp);
    char *json = NULL, *data = NULL;
    size_t jl = 0, dl = 0;
    FILE *f = open_memstream(&json, &jl), *g = open_memstream(&data, &dl);
    unsigned long long off = 0;
    fputc('{', f);
    for (size_t k = 0; k < n; k++) {
        const fm_st_item *it = &items[ord[k]];
        if (k) fputc(',', f);
        ref_escape(f, it->name);
        fprintf(f, ":{\"dtype\":\"%s\",\"shape\":[", rank_order[order_pos(it->tensor->dtype)]);
        unsigned long long numel = 1;
        for (int d = 0; d < it->tensor->shape.ndim; d++) {
            fprintf(f, "%s%lld", d ? "," : "", (long long)it->tensor->shape.dims[d]);
            numel *= (unsigned long long)it->tensor->shape.dims[d];
        }
        unsigned long long nb = numel * rank_bits[order_pos(it->tensor->dtype)] / 8;
        fprintf(f, "],\"data_offsets\":[%llu,%llu]}", off, off + nb);
        off += nb;
        fwrite(it->tensor->data, 1, nb, g);
    }
    fputc('}', f);
    fclose(f);
    fclose(g);
    size_t padded = (jl + 7) / 8 * 8;
    uint8_t *out = expected_file(json, padded, data, dl, len);
    free(json);
    free(data);
    free(ord);
    return out;
}

/* One tensor of each of the 22 dtypes: laid out in exactly the rank order of spec §3.2. Names
 * run against the rank order so name sorting cannot produce it by accident. */
static void test_all_dtypes_order(void) {
    fm_tensor t[FM_DTYPE_COUNT];
    fm_st_item items[FM_DTYPE_COUNT];
    char names[FM_DTYPE_COUNT][8];
    CHECK_EQ_INT(22, FM_DTYPE_COUNT);
    for (int i = 0; i < FM_DTYPE_COUNT; i++) {
        int64_t dim = (fm_dtype)i == FM_DTYPE_F4                         ? 2
                      : (i == FM_DTYPE_F6_E2M3 || i == FM_DTYPE_F6_E3M2) ? 4
                                                                         : 3;
        CHECK(wrfx_tensor(&t[i], (fm_dtype)i, 1, &dim, NULL, 100 + (uint64_t)i) == 0);
        snprintf(names[i], sizeof names[i], "t%02d", 50 - i * 2 + (i % 3));
        items[i] = (fm_st_item){names[i], &t[i]};
    }
    size_t exp_len, got_len;
    uint8_t *exp = ref_file(items, FM_DTYPE_COUNT, &exp_len);
    fm_error eb, *err = &eb;
    fm_status st;
    uint8_t *got = write_bytes(items, FM_DTYPE_COUNT, NULL, &got_len, &st, err);
    CHECK_OK(st, err);
    CHECK(got && got_len == exp_len && memcmp(got, exp, exp_len) == 0);
    /* dtype names appear in the header in exactly the rank order */
    const char *h = got ? (const char *)got + 8 : "";
    const char *prev = h;
    for (int k = 0; k < 22 && got; k++) {
        char pat[32];
        snprintf(pat, sizeof pat, "\"dtype\":\"%s\"", rank_order[k]);
        const char *at = strstr(h, pat);
        CHECK_MSG(at && at >= prev, "dtype %s out of order", rank_order[k]);
        if (at) prev = at;
    }
    free(exp);
    free(got);
    for (int i = 0; i < FM_DTYPE_COUNT; i++)
        fm_tensor_free(&t[i]);
}

/* Name order is bytes, shorter first: "" < "A" < "a" < "a.10" < "a.2" < "ab" < "b" < "é". */
static void test_name_order(void) {
    const char *names[] = {"b", "a.2", "\xc3\xa9", "ab", "a", "", "a.10", "A"};
    const char *sorted[] = {"", "A", "a", "a.10", "a.2", "ab", "b", "\xc3\xa9"};
    fm_tensor t[8];
    fm_st_item items[8];
    for (int i = 0; i < 8; i++) {
        CHECK(wrfx_tensor(&t[i], FM_DTYPE_BF16, 1, (int64_t[]){2}, NULL, (uint64_t)i) == 0);
        items[i] = (fm_st_item){names[i], &t[i]};
    }
    uint8_t *hdr = NULL;
    uint64_t hl = 0;
    fm_error eb, *err = &eb;
    CHECK_OK(fm_st_serialize_header(items, 8, NULL, &hdr, &hl, err), err);
    const char *h = hdr ? (const char *)hdr + 8 : "";
    const char *prev = h;
    for (int k = 0; k < 8 && hdr; k++) {
        char pat[32];
        snprintf(pat, sizeof pat, "\"%s\":{", sorted[k]);
        const char *at = strstr(prev, pat);
        CHECK_MSG(at != NULL, "name '%s' not after the previous one", sorted[k]);
        if (at) prev = at + 1;
    }
    fm_free(hdr);
    for (int i = 0; i < 8; i++)
        fm_tensor_free(&t[i]);
}

/* ---- random files -------------------------------------------------------------------------- */
static const char *const name_atoms[] = {"a",
                                         "b",
                                         "Z",
                                         "0",
                                         "9",
                                         ".",
                                         "/",
                                         "_",
                                         "\"",
                                         "\\",
                                         "\t",
                                         "\n",
                                         "\x01",
                                         "\x1f",
                                         "\x7f",
                                         "\xc3\xa9",
                                         "\xe2\x80\xa8",
                                         "\xf0\x9f\x98\x80",
                                         " ",
                                         "~"};

static void random_name(char *buf, size_t cap, uint64_t *rs, size_t idx) {
    size_t len = 0, atoms = (size_t)(wrfx_rand(rs) % 9);
    for (size_t k = 0; k < atoms; k++) {
        const char *a = name_atoms[wrfx_rand(rs) % (sizeof name_atoms / sizeof name_atoms[0])];
        if (len + strlen(a) + 8 >= cap) break;
        memcpy(buf + len, a, strlen(a));
        len += strlen(a);
    }
    /* a unique tail keeps names distinct without fixing their order */
    snprintf(buf + len, cap - len, "%c%zu", 'a' + (int)(wrfx_rand(rs) % 26), idx);
}

static void random_shape(fm_dtype dt, uint64_t *rs, int *ndim, int64_t *dims) {
    *ndim = (int)(wrfx_rand(rs) % 5);
    for (int d = 0; d < *ndim; d++)
        dims[d] = (int64_t)(wrfx_rand(rs) % 6);
    unsigned bits = fm_dtype_bits(dt);
    if (bits == 4 || bits == 6) { /* whole bytes: element count a multiple of 4 */
        *ndim = 2;
        dims[0] = (int64_t)(wrfx_rand(rs) % 3);
        dims[1] = 4 * (int64_t)(1 + wrfx_rand(rs) % 3);
    }
}

/* Random names/dtypes/shapes/data: bytes equal the independent serializer; the header parses as
 * JSON (jansson) and every name decodes back; the reader accepts the file and reading it back
 * and writing again gives identical bytes. */
static void test_random_files(void) {
    int rounds = quick() ? 4 : 12;
    for (int r = 0; r < rounds; r++) {
        uint64_t rs = 0x5eed0000u + (uint64_t)r;
        size_t n = 1 + (size_t)(wrfx_rand(&rs) % 40);
        fm_tensor *t = calloc(n, sizeof *t);
        fm_st_item *items = calloc(n, sizeof *items);
        char(*names)[96] = calloc(n, sizeof *names);
        for (size_t i = 0; i < n; i++) {
            fm_dtype dt = (fm_dtype)(wrfx_rand(&rs) % FM_DTYPE_COUNT);
            int ndim;
            int64_t dims[8];
            random_shape(dt, &rs, &ndim, dims);
            CHECK(wrfx_tensor(&t[i], dt, ndim, dims, NULL, wrfx_rand(&rs)) == 0);
            random_name(names[i], sizeof names[i], &rs, i);
            items[i] = (fm_st_item){names[i], &t[i]};
        }
        size_t exp_len, got_len;
        uint8_t *exp = ref_file(items, n, &exp_len);
        fm_error eb, *err = &eb;
        fm_status st;
        uint8_t *got = write_bytes(items, n, NULL, &got_len, &st, err);
        CHECK_OK(st, err);
        CHECK_MSG(got && got_len == exp_len && memcmp(got, exp, exp_len) == 0,
                  "round %d: bytes differ", r);
        if (got) {
            uint64_t hn = 0;
            for (int b = 0; b < 8; b++)
                hn |= (uint64_t)got[b] << (8 * b);
            CHECK_EQ_INT(0, hn % 8);
            json_error_t je;
            json_t *root = json_loadb((const char *)got + 8, (size_t)hn, 0, &je);
            CHECK_MSG(root != NULL, "round %d: header is not JSON: %s", r, je.text);
            for (size_t i = 0; root && i < n; i++)
                CHECK_MSG(json_object_get(root, names[i]) != NULL,
                          "round %d: name #%zu does not decode back", r, i);
            json_decref(root);
            fm_st_file *f = NULL;
            CHECK_OK(fm_st_open_buffer(got, got_len, "random", &f, err), err);
            CHECK_EQ_INT(n, fm_st_count(f));
            fm_st_close(f);
        }
        free(exp);
        free(got);
        for (size_t i = 0; i < n; i++)
            fm_tensor_free(&t[i]);
        free(t);
        free(items);
        free(names);
    }
}

/* Reads `bytes` with the reader, writes every tensor (views into the buffer) and the metadata back
 * and returns the new bytes (free()). */
static uint8_t *reread_rewrite(const uint8_t *bytes, size_t len, size_t *out_len) {
    fm_error eb, *err = &eb;
    fm_st_file *f = NULL;
    CHECK_OK(fm_st_open_buffer(bytes, len, "roundtrip", &f, err), err);
    if (!f) return NULL;
    size_t n = fm_st_count(f), nm = fm_st_metadata_count(f);
    fm_tensor *t = calloc(n + 1, sizeof *t);
    fm_st_item *items = calloc(n + 1, sizeof *items);
    fm_st_kv *meta = calloc(nm + 1, sizeof *meta);
    for (size_t i = 0; i < n; i++) {
        CHECK_OK(fm_st_tensor(f, i, &t[i], err), err);
        items[i] = (fm_st_item){fm_st_entry_at(f, i)->name, &t[i]};
    }
    for (size_t i = 0; i < nm; i++)
        meta[i] = *fm_st_metadata_at(f, i);
    fm_st_write_options o;
    fm_st_write_options_init(&o);
    o.metadata = meta;
    o.n_metadata = nm;
    o.with_metadata = fm_st_has_metadata(f);
    fm_status st;
    uint8_t *out = write_bytes(items, n, &o, out_len, &st, err);
    CHECK_OK(st, err);
    for (size_t i = 0; i < n; i++)
        fm_tensor_free(&t[i]);
    free(t);
    free(items);
    free(meta);
    fm_st_close(f);
    return out;
}

/* A file whose bytes the test writes itself in reference layout; also a writer-made file with
 * metadata and all dtypes: read then write reproduces them byte for byte. */
static void test_roundtrip_reader(void) {
    const char *json = "{\"__metadata__\":{\"format\":\"pt\"},"
                       "\"b.weight\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                       "\"a.weight\":{\"dtype\":\"BF16\",\"shape\":[1,2],\"data_offsets\":[8,12]},"
                       "\"\\u0001x\":{\"dtype\":\"F4\",\"shape\":[2],\"data_offsets\":[12,13]},"
                       "\"c\":{\"dtype\":\"BOOL\",\"shape\":[],\"data_offsets\":[13,14]},"
                       "\"z\":{\"dtype\":\"BOOL\",\"shape\":[0,3],\"data_offsets\":[14,14]}}";
    uint8_t data[14];
    uint64_t seed = 99;
    for (int i = 0; i < 14; i++)
        data[i] = (uint8_t)wrfx_rand(&seed);
    size_t len, out_len = 0;
    uint8_t *file = expected_file(json, (strlen(json) + 7) / 8 * 8, data, 14, &len);
    uint8_t *back = reread_rewrite(file, len, &out_len);
    CHECK_EQ_INT(len, out_len);
    CHECK_MSG(back && out_len == len && memcmp(back, file, len) == 0,
              "hand-made file not reproduced: %.*s",
              back ? (int)(out_len > 8 ? out_len - 8 : 0) : 0, back ? (const char *)back + 8 : "");
    free(back);
    free(file);

    /* writer output (22 dtypes, two metadata keys kept in file order) -> reader -> writer */
    fm_tensor t[FM_DTYPE_COUNT];
    fm_st_item items[FM_DTYPE_COUNT];
    char names[FM_DTYPE_COUNT][24];
    for (int i = 0; i < FM_DTYPE_COUNT; i++) {
        int64_t dims[2] = {2, 4};
        CHECK(wrfx_tensor(&t[i], (fm_dtype)i, 2, dims, NULL, 7 * (uint64_t)i) == 0);
        snprintf(names[i], sizeof names[i], "layer.%d.w", i);
        items[i] = (fm_st_item){names[i], &t[i]};
    }
    fm_st_kv kv[2] = {{"zeta", "1"}, {"format", "pt"}};
    fm_st_write_options o;
    fm_st_write_options_init(&o);
    o.metadata = kv;
    o.n_metadata = 2;
    fm_error eb, *err = &eb;
    fm_status st;
    uint8_t *w1 = write_bytes(items, FM_DTYPE_COUNT, &o, &len, &st, err);
    CHECK_OK(st, err);
    uint8_t *w2 = w1 ? reread_rewrite(w1, len, &out_len) : NULL;
    CHECK(w2 && out_len == len && memcmp(w1, w2, len) == 0);
    free(w1);
    free(w2);
    for (int i = 0; i < FM_DTYPE_COUNT; i++)
        fm_tensor_free(&t[i]);
}

/* ---- validation ---------------------------------------------------------------------------- */
static fm_status header_status(const fm_st_item *items, size_t n, const fm_st_write_options *o,
                               fm_error *err) {
    uint8_t *h = (uint8_t *)1;
    uint64_t hl = 1;
    fm_status st = fm_st_serialize_header(items, n, o, &h, &hl, err);
    if (st != FM_OK) {
        CHECK(h == NULL && hl == 0);
    }
    fm_free(st == FM_OK ? h : NULL);
    return st;
}

static void test_validation_errors(void) {
    fm_error eb, *err = &eb;
    fm_tensor a, b;
    CHECK(wrfx_tensor(&a, FM_DTYPE_F32, 1, (int64_t[]){4}, NULL, 1) == 0);
    CHECK(wrfx_tensor(&b, FM_DTYPE_F16, 1, (int64_t[]){4}, NULL, 2) == 0);
    /* duplicate names, also across dtypes */
    fm_st_item dup[3] = {{"w", &a}, {"v", &b}, {"w", &b}};
    CHECK_STATUS(FM_ERR_DUPLICATE_TENSOR, header_status(dup, 3, NULL, err), err);
    CHECK_CONTAINS(err->msg, "'w'");
    /* byte size that does not match shape x dtype */
    fm_tensor bad = a;
    bad.nbytes = 15;
    fm_st_item one = {"bad.size", &bad};
    CHECK_STATUS(FM_ERR_TENSOR_INVALID_INFO, header_status(&one, 1, NULL, err), err);
    CHECK_CONTAINS(err->msg, "bad.size");
    /* F4 with an odd element count */
    fm_tensor f4 = a;
    f4.dtype = FM_DTYPE_F4;
    f4.shape.dims[0] = 3;
    f4.nbytes = 1;
    one = (fm_st_item){"odd.f4", &f4};
    CHECK_STATUS(FM_ERR_MISALIGNED_SLICE, header_status(&one, 1, NULL, err), err);
    CHECK_CONTAINS(err->msg, "odd.f4");
    /* element count overflow (left-to-right rule) */
    fm_tensor ov = a;
    ov.shape.ndim = 3;
    ov.shape.dims[0] = (int64_t)1 << 32;
    ov.shape.dims[1] = (int64_t)1 << 32;
    ov.shape.dims[2] = 0;
    ov.nbytes = 0;
    one = (fm_st_item){"huge", &ov};
    CHECK_STATUS(FM_ERR_VALIDATION_OVERFLOW, header_status(&one, 1, NULL, err), err);
    /* bit count overflow */
    ov.shape.ndim = 1;
    ov.shape.dims[0] = (int64_t)1 << 62;
    CHECK_STATUS(FM_ERR_VALIDATION_OVERFLOW, header_status(&one, 1, NULL, err), err);
    /* meta tensor (no data) */
    fm_tensor meta = a;
    meta.data = NULL;
    one = (fm_st_item){"meta", &meta};
    CHECK_STATUS(FM_ERR_INVALID_ARG, header_status(&one, 1, NULL, err), err);
    /* reserved name, invalid UTF-8, NULL name, invalid dtype */
    one = (fm_st_item){"__metadata__", &a};
    CHECK_STATUS(FM_ERR_INVALID_ARG, header_status(&one, 1, NULL, err), err);
    one = (fm_st_item){"bad\xc3(", &a};
    CHECK_STATUS(FM_ERR_INVALID_ARG, header_status(&one, 1, NULL, err), err);
    one = (fm_st_item){"\xed\xa0\x80", &a}; /* a surrogate */
    CHECK_STATUS(FM_ERR_INVALID_ARG, header_status(&one, 1, NULL, err), err);
    one = (fm_st_item){NULL, &a};
    CHECK_STATUS(FM_ERR_INVALID_ARG, header_status(&one, 1, NULL, err), err);
    fm_tensor bd = a;
    bd.dtype = (fm_dtype)99;
    one = (fm_st_item){"dt", &bd};
    CHECK_STATUS(FM_ERR_UNKNOWN_DTYPE, header_status(&one, 1, NULL, err), err);
    /* duplicate metadata keys */
    fm_st_kv kv[2] = {{"k", "1"}, {"k", "2"}};
    fm_st_write_options o;
    fm_st_write_options_init(&o);
    o.metadata = kv;
    o.n_metadata = 2;
    CHECK_STATUS(FM_ERR_INVALID_ARG, header_status(NULL, 0, &o, err), err);
    CHECK_CONTAINS(err->msg, "duplicate");
    fm_tensor_free(&a);
    fm_tensor_free(&b);
}

/* N may be exactly 100,000,000; one byte more (padded to 100,000,008) is refused. */
static void test_header_limit(void) {
    size_t vlen = 100000000 - 25; /* {"__metadata__":{"k":"…"}} = 25 + vlen bytes */
    char *v = malloc(vlen + 2);
    memset(v, 'v', vlen + 1);
    v[vlen] = '\0';
    fm_st_kv kv = {"k", v};
    fm_st_write_options o;
    fm_st_write_options_init(&o);
    o.metadata = &kv;
    o.n_metadata = 1;
    fm_error eb, *err = &eb;
    uint8_t *h = NULL;
    uint64_t hl = 0;
    CHECK_OK(fm_st_serialize_header(NULL, 0, &o, &h, &hl, err), err);
    CHECK_EQ_INT(8 + 100000000ull, hl);
    fm_free(h);
    v[vlen] = 'v';
    v[vlen + 1] = '\0';
    CHECK_STATUS(FM_ERR_HEADER_TOO_LARGE, header_status(NULL, 0, &o, err), err);
    free(v);
}

/* Many pieces (more than one writev batch) and, outside quick mode, one tensor larger than a
 * write chunk: the file still equals the reference bytes. */
static void test_large_writes(void) {
    size_t n = 300;
    fm_tensor *t = calloc(n + 1, sizeof *t);
    fm_st_item *items = calloc(n + 1, sizeof *items);
    char(*names)[16] = calloc(n + 1, sizeof *names);
    for (size_t i = 0; i < n; i++) {
        int64_t d = (int64_t)(1 + i % 7);
        CHECK(wrfx_tensor(&t[i], i % 2 ? FM_DTYPE_F32 : FM_DTYPE_U8, 1, &d, NULL, i) == 0);
        snprintf(names[i], sizeof names[i], "p%zu", i);
        items[i] = (fm_st_item){names[i], &t[i]};
    }
    size_t count = n;
    if (!quick()) {
        int64_t d = (int64_t)(FM_FS_WRITE_CHUNK + 12345);
        CHECK(wrfx_tensor(&t[n], FM_DTYPE_U8, 1, &d, NULL, 4242) == 0);
        snprintf(names[n], sizeof names[n], "big");
        items[n] = (fm_st_item){names[n], &t[n]};
        count = n + 1;
    }
    size_t exp_len, got_len;
    uint8_t *exp = ref_file(items, count, &exp_len);
    fm_error eb, *err = &eb;
    fm_status st;
    uint8_t *got = write_bytes(items, count, NULL, &got_len, &st, err);
    CHECK_OK(st, err);
    CHECK(got && got_len == exp_len && memcmp(got, exp, exp_len) == 0);
    free(exp);
    free(got);
    for (size_t i = 0; i < count; i++)
        fm_tensor_free(&t[i]);
    free(t);
    free(items);
    free(names);
}

/* ---- atomic single-file write ---------------------------------------------------------------- */
/* Entries of dir besides . and .. */
static int count_entries(const char *dir) {
    return wrfx_count_prefix(dir, "") - 2;
}

/* fm_st_write_file replaces an existing file; under every injected fault (open, write, fsync,
 * rename, allocation) before the rename the old file keeps its bytes and no temporary remains. */
static void test_write_file_atomic(void) {
    char *dir = wrfx_mkdtemp();
    char *path = wrfx_join(dir, "w.safetensors");
    fm_tensor t[3];
    fm_st_item items[3];
    const char *nm[3] = {"x", "y", "z"};
    for (int i = 0; i < 3; i++) {
        CHECK(wrfx_tensor(&t[i], FM_DTYPE_F32, 2, (int64_t[]){3, 5}, NULL, 11 + (uint64_t)i) == 0);
        items[i] = (fm_st_item){nm[i], &t[i]};
    }
    CHECK(wrfx_write(path, "old bytes", 9) == 0);
    size_t exp_len, got_len;
    uint8_t *exp = ref_file(items, 3, &exp_len);
    fm_error eb, *err = &eb;
    const fm_fault_kind kinds[] = {FM_FAULT_OPEN, FM_FAULT_WRITE, FM_FAULT_FSYNC, FM_FAULT_RENAME,
                                   FM_FAULT_ALLOC};
    const char *kname[] = {"open", "write", "fsync", "rename", "alloc"};
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
        int failures = 0;
        for (uint64_t nth = 1; nth < 200; nth++) {
            fm_fault_set(kinds[k], nth);
            fm_status st = fm_st_write_file(path, items, 3, NULL, err);
            fm_fault_set(kinds[k], 0);
            uint8_t *got = wrfx_read(path, &got_len);
            if (st == FM_OK) {
                CHECK_MSG(got && got_len == exp_len && !memcmp(got, exp, exp_len),
                          "%s: new bytes wrong", kname[k]);
                free(got);
                CHECK(wrfx_write(path, "old bytes", 9) == 0);
                break;
            }
            failures++;
            if (kinds[k] != FM_FAULT_ALLOC) CHECK_CONTAINS(err->msg, "injected");
            /* the directory fsync comes after the rename: the new file is then in place */
            bool after_rename = strstr(err->msg, "durable") != NULL;
            if (!after_rename)
                CHECK_MSG(got && got_len == 9 && !memcmp(got, "old bytes", 9),
                          "%s #%llu: old file changed (%s)", kname[k], (unsigned long long)nth,
                          err->msg);
            else
                CHECK(wrfx_write(path, "old bytes", 9) == 0);
            CHECK_EQ_INT(1, count_entries(dir));
            free(got);
        }
        CHECK_MSG(failures > 0 || kinds[k] == FM_FAULT_ALLOC, "%s: no failure was injected",
                  kname[k]);
    }
    /* a fresh path, then a directory that does not exist */
    char *fresh = wrfx_join(dir, "fresh.safetensors");
    CHECK_OK(fm_st_write_file(fresh, items, 3, NULL, err), err);
    uint8_t *got = wrfx_read(fresh, &got_len);
    CHECK(got && got_len == exp_len && !memcmp(got, exp, exp_len));
    free(got);
    char *missing = wrfx_join(dir, "no/such.safetensors");
    CHECK_STATUS(FM_ERR_NOT_FOUND, fm_st_write_file(missing, items, 3, NULL, err), err);
    char *slash = wrfx_join(dir, "");
    CHECK_STATUS(FM_ERR_INVALID_ARG, fm_st_write_file(slash, items, 0, NULL, err),
                 err); /* names no file */
    free(slash);
    free(missing);
    free(fresh);
    free(exp);
    for (int i = 0; i < 3; i++)
        fm_tensor_free(&t[i]);
    wrfx_rmrf(dir);
    free(path);
    free(dir);
}

/* Writing to a descriptor that fails (read-only) reports the label and the system's reason. */
static void test_write_fd_error(void) {
    char *dir = wrfx_mkdtemp();
    char *path = wrfx_join(dir, "ro");
    CHECK(wrfx_write(path, "", 0) == 0);
    int fd = open(path, O_RDONLY);
    fm_tensor t;
    CHECK(wrfx_tensor(&t, FM_DTYPE_U8, 1, (int64_t[]){4}, NULL, 5) == 0);
    fm_st_item it = {"t", &t};
    fm_error eb, *err = &eb;
    CHECK_STATUS(FM_ERR_IO, fm_st_write_fd(fd, "my-label", &it, 1, NULL, err), err);
    CHECK_CONTAINS(err->msg, "my-label");
    CHECK_CONTAINS(err->msg, "Bad file descriptor");
    close(fd);
    fm_tensor_free(&t);
    wrfx_rmrf(dir);
    free(path);
    free(dir);
}

int main(void) {
    RUN(test_vector1);
    RUN(test_vector2);
    RUN(test_vector3_4_empty);
    RUN(test_vector5_f4);
    RUN(test_empty_metadata);
    RUN(test_escaping_vectors);
    RUN(test_all_dtypes_order);
    RUN(test_name_order);
    RUN(test_random_files);
    RUN(test_roundtrip_reader);
    RUN(test_validation_errors);
    RUN(test_header_limit);
    RUN(test_large_writes);
    RUN(test_write_file_atomic);
    RUN(test_write_fd_error);
    TEST_END();
}
