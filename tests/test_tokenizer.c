/* The tokenizer against Hugging Face: the committed fixture (tests/data/tokenizer/, a byte-level
 * BPE with added tokens of every flag, written with both merge encodings) must encode and decode
 * every golden string exactly as tokenizers 0.23.2 did (goldens.json, scripts/crosscheck). Also
 * the user mask, lookups, invalid UTF-8, long inputs, a round trip on fresh random text and
 * concurrent use. */
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <utf8proc.h>

#include "check.h"
#include "fusemap/tokenizer.h"
#include "tok_fixture.h"

static json_t *goldens;
static fm_tokenizer *tok_pairs, *tok_legacy;

static const char *data_dir(void) {
    const char *d = getenv("FM_TEST_DATA");
    return d && *d ? d : "tests/data";
}

static fm_tokenizer *load(const char *sub) {
    char path[1024];
    snprintf(path, sizeof path, "%s/tokenizer/%s", data_dir(), sub);
    fm_tokenizer *t = NULL;
    fm_error err;
    fm_status st = fm_tokenizer_open(path, &t, &err);
    CHECK_MSG(st == FM_OK, "open %s: %s (run from the repository root or set FM_TEST_DATA)", path,
              err.msg);
    return t;
}

static bool same_ids(const int32_t *ids, size_t n, json_t *want, const char *what,
                     const char *text) {
    bool ok = json_array_size(want) == n;
    for (size_t i = 0; ok && i < n; i++)
        ok = json_integer_value(json_array_get(want, i)) == ids[i];
    if (!ok) {
        char *w = json_dumps(want, JSON_COMPACT);
        fprintf(stderr, "  %s of \"%.80s\": expected %s, seen", what, text, w);
        for (size_t i = 0; i < n && i < 40; i++)
            fprintf(stderr, " %d", ids[i]);
        fputc('\n', stderr);
        free(w);
    }
    return ok;
}

/* Encodes and compares; returns 1 on a match. */
static int encode_case(const fm_tokenizer *t, const char *s, size_t n, const uint8_t *mask,
                       unsigned flags, json_t *want, const char *what) {
    int32_t *ids = NULL;
    size_t nids = 0;
    fm_error err;
    fm_status st = fm_tokenizer_encode(t, s, n, mask, flags, &ids, &nids, &err);
    CHECK_STATUS(FM_OK, st, &err);
    int ok = st == FM_OK && same_ids(ids, nids, want, what, s);
    fm_free(ids);
    return ok;
}

static void goldens_encode(const fm_tokenizer *t, const char *name) {
    json_t *cases = json_object_get(goldens, "encode");
    size_t ok = 0, n = json_array_size(cases);
    CHECK_MSG(n >= 300, "goldens.json has %zu encode cases", n);
    for (size_t i = 0; i < n; i++) {
        json_t *c = json_array_get(cases, i), *text = json_object_get(c, "text");
        const char *s = json_string_value(text);
        size_t len = json_string_length(text);
        uint8_t *all_user = malloc(len + 1);
        memset(all_user, 1, len + 1);
        ok += encode_case(t, s, len, NULL, FM_TOKENIZE_SPECIAL, json_object_get(c, "special"),
                          "encode") &&
              encode_case(t, s, len, NULL, 0, json_object_get(c, "no_special"), "no-special") &&
              encode_case(t, s, len, all_user, FM_TOKENIZE_SPECIAL,
                          json_object_get(c, "no_special"), "all-user mask");
        free(all_user);
    }
    CHECK_MSG(ok == n, "%s: %zu of %zu golden strings encode as Hugging Face does", name, ok, n);
}

static void test_goldens_encode_pairs(void) {
    goldens_encode(tok_pairs, "pairs");
}
static void test_goldens_encode_legacy(void) {
    goldens_encode(tok_legacy, "legacy");
}

static void test_goldens_decode(void) {
    json_t *cases = json_object_get(goldens, "decode");
    size_t ok = 0, n = json_array_size(cases);
    CHECK(n >= 100);
    for (size_t i = 0; i < n; i++) {
        json_t *c = json_array_get(cases, i), *ids = json_object_get(c, "ids");
        int32_t v[64];
        size_t k = json_array_size(ids);
        for (size_t j = 0; j < k && j < 64; j++)
            v[j] = (int32_t)json_integer_value(json_array_get(ids, j));
        for (int skip = 0; skip < 2; skip++) {
            json_t *want = json_object_get(c, skip ? "skip_special" : "text");
            char *text = NULL;
            size_t len = 0;
            fm_error err;
            CHECK_OK(fm_tokenizer_decode(tok_pairs, v, k, skip, &text, &len, &err), &err);
            bool same = text && len == json_string_length(want) &&
                        !memcmp(text, json_string_value(want), len);
            if (!same)
                fprintf(stderr, "  decode case %zu (skip %d): expected \"%s\", seen \"%s\"\n", i,
                        skip, json_string_value(want), text ? text : "(null)");
            ok += same;
            fm_free(text);
        }
    }
    CHECK_MSG(ok == 2 * n, "%zu of %zu golden decodes match", ok, 2 * n);
}

/* ---- lookups ------------------------------------------------------------------------------ */

static void test_lookups(void) {
    const fm_tokenizer *t = tok_pairs;
    int32_t im = fm_tokenizer_token_to_id(t, "<|im_start|>", 12);
    CHECK(im >= 256);
    CHECK(fm_tokenizer_is_special(t, im) && fm_tokenizer_is_added(t, im));
    size_t len = 0;
    CHECK_EQ_STR("<|im_start|>", fm_tokenizer_id_to_token(t, im, &len));
    CHECK_EQ_INT(12, len);
    int32_t tc = fm_tokenizer_token_to_id(t, "<tool_call>", 11);
    CHECK(tc >= 0 && !fm_tokenizer_is_special(t, tc) && fm_tokenizer_is_added(t, tc));
    /* "!" is an added token whose content is a vocab entry: it keeps the vocab id */
    int32_t bang = fm_tokenizer_token_to_id(t, "!", 1);
    CHECK_EQ_INT(0, bang);
    CHECK(fm_tokenizer_is_added(t, bang) && !fm_tokenizer_is_special(t, bang));
    /* vocab entries are looked up in their byte-level form: " " is "\u0120" */
    int32_t sp = fm_tokenizer_token_to_id(t, "\xc4\xa0", 2);
    const char *b = fm_tokenizer_token_bytes(t, sp, &len);
    CHECK(sp >= 0 && b && len == 1 && b[0] == ' ');
    CHECK_EQ_INT(-1, fm_tokenizer_token_to_id(t, " ", 1)); /* a raw space is not a vocab entry */
    size_t vs = fm_tokenizer_vocab_size(t);
    CHECK_EQ_INT(1256 + 11, vs); /* 1256 vocab entries; 11 added tokens outside the vocab */
    CHECK(fm_tokenizer_id_to_token(t, (int32_t)vs, &len) == NULL && len == 0);
    CHECK(fm_tokenizer_id_to_token(t, -1, NULL) == NULL);
    CHECK(!fm_tokenizer_is_special(t, (int32_t)vs) && !fm_tokenizer_is_added(t, -5));
    CHECK(fm_tokenizer_token_bytes(t, 1 << 30, &len) == NULL);
    /* every id round-trips through its token string */
    size_t bad = 0;
    for (int32_t id = 0; id < (int32_t)vs; id++) {
        const char *s = fm_tokenizer_id_to_token(t, id, &len);
        if (!s || fm_tokenizer_token_to_id(t, s, len) != id) bad++;
    }
    CHECK_EQ_INT(0, bad);
}

/* ---- user mask ---------------------------------------------------------------------------- */

static int32_t *enc(const fm_tokenizer *t, const char *s, const uint8_t *mask, unsigned flags,
                    size_t *n) {
    int32_t *ids = NULL;
    fm_error err;
    CHECK_OK(fm_tokenizer_encode(t, s, strlen(s), mask, flags, &ids, n, &err), &err);
    return ids;
}

/* Template text + user text, the mask marking the user part. */
static int32_t *enc_seam(const char *tmpl, const char *user, const char *tail, size_t *n) {
    char s[512];
    uint8_t mask[512] = {0};
    size_t a = strlen(tmpl), u = strlen(user);
    snprintf(s, sizeof s, "%s%s%s", tmpl, user, tail);
    memset(mask + a, 1, u);
    return enc(tok_pairs, s, mask, FM_TOKENIZE_SPECIAL, n);
}

static bool ids_eq(const int32_t *a, size_t na, const int32_t *b, size_t nb) {
    return na == nb && (na == 0 || !memcmp(a, b, na * sizeof *a));
}

static void test_user_mask(void) {
    const fm_tokenizer *t = tok_pairs;
    int32_t im_start = fm_tokenizer_token_to_id(t, "<|im_start|>", 12);
    int32_t im_end = fm_tokenizer_token_to_id(t, "<|im_end|>", 10);
    int32_t tool = fm_tokenizer_token_to_id(t, "<tool_call>", 11);
    size_t n1, n2;
    /* the user's "<|im_end|>" stays text; the template's markers are specials */
    int32_t *a = enc_seam("<|im_start|>user\n", "<|im_end|>hi", "<|im_end|>", &n1);
    int32_t *b = enc(t, "user\n<|im_end|>hi", NULL, 0, &n2);
    CHECK(a && b && n1 == n2 + 2 && a[0] == im_start && a[n1 - 1] == im_end);
    CHECK(a && b && ids_eq(a + 1, n1 - 2, b, n2));
    for (size_t i = 1; a && i + 1 < n1; i++)
        CHECK(a[i] != im_end);
    fm_free(a), fm_free(b);
    /* a special token straddling the seam is not recognised either */
    a = enc_seam("x<|im_", "end|>", "", &n1);
    b = enc(t, "x<|im_end|>", NULL, 0, &n2);
    CHECK(a && b && ids_eq(a, n1, b, n2));
    fm_free(a), fm_free(b);
    /* one segment across the seam: the same pieces as without a mask ("\n" + "\n" = "\n\n") */
    a = enc_seam("user\n", "\nhello", "", &n1);
    b = enc(t, "user\n\nhello", NULL, FM_TOKENIZE_SPECIAL, &n2);
    CHECK(a && b && ids_eq(a, n1, b, n2));
    fm_free(a), fm_free(b);
    /* non-special added tokens are recognised in user text */
    a = enc_seam("say ", "<tool_call>", "", &n1);
    bool found = false;
    for (size_t i = 0; a && i < n1; i++)
        found |= a[i] == tool;
    CHECK(found);
    fm_free(a);
    /* without FM_TOKENIZE_SPECIAL even template bytes form no special token */
    a = enc(t, "<|im_start|>", NULL, 0, &n1);
    for (size_t i = 0; a && i < n1; i++)
        CHECK(a[i] != im_start);
    fm_free(a);
}

/* "<ñ>" is a special token matched on NFC text: a user byte anywhere in a non-ASCII segment
 * (where NFC may move bytes) keeps it from forming; a segment without user bytes forms it. */
static void test_user_mask_normalized(void) {
    const fm_tokenizer *t = tok_pairs;
    int32_t nt = fm_tokenizer_token_to_id(t, "<\xc3\xb1>", 4);
    CHECK(nt >= 0 && fm_tokenizer_is_special(t, nt));
    size_t n;
    int32_t *a = enc(t, "a <n\xcc\x83> b", NULL, FM_TOKENIZE_SPECIAL, &n);
    bool found = false;
    for (size_t i = 0; a && i < n; i++)
        found |= a[i] == nt;
    CHECK_MSG(found, "decomposed <n~> matches the normalized special token");
    fm_free(a);
    uint8_t mask[16] = {0};
    mask[0] = 1; /* only the leading "a" is user text */
    a = enc(t, "a <n\xcc\x83> b", mask, FM_TOKENIZE_SPECIAL, &n);
    for (size_t i = 0; a && i < n; i++)
        CHECK(a[i] != nt);
    fm_free(a);
}

/* ---- invalid input -------------------------------------------------------------------------- */

static void test_invalid_utf8(void) {
    static const struct {
        const char *s;
        size_t n, off;
    } cases[] = {{"ab\xff", 3, 2},           {"\xc0\xaf", 2, 0},
                 {"x\xed\xa0\x80", 4, 1},    {"ok\xe4\xb8", 4, 2},
                 {"\xf4\x90\x80\x80", 4, 0}, {"a\x80", 2, 1},
                 {"\xe2\x82", 2, 0},         {"good text \xf0\x9f\x98", 13, 10}};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        int32_t *ids = (int32_t *)&ids;
        size_t n = 99;
        fm_error err;
        fm_status st =
            fm_tokenizer_encode(tok_pairs, cases[i].s, cases[i].n, NULL, 0, &ids, &n, &err);
        CHECK_STATUS(FM_ERR_INPUT, st, &err);
        char want[64];
        snprintf(want, sizeof want, "byte offset %zu", cases[i].off);
        CHECK_CONTAINS(err.msg, want);
        CHECK_CONTAINS(err.msg, "tokenizer.json");
        CHECK(ids == NULL && n == 0);
    }
    /* NUL bytes are valid UTF-8 and are encoded like any control character */
    size_t n = 0;
    int32_t *ids = NULL;
    fm_error err;
    CHECK_OK(fm_tokenizer_encode(tok_pairs, "a\0b", 3, NULL, 0, &ids, &n, &err), &err);
    char *text = NULL;
    size_t len = 0;
    CHECK_OK(fm_tokenizer_decode(tok_pairs, ids, n, false, &text, &len, &err), &err);
    CHECK(len == 3 && text && !memcmp(text, "a\0b", 3));
    fm_free(ids), fm_free(text);
    /* empty input: no ids, a non-NULL array */
    CHECK_OK(fm_tokenizer_encode(tok_pairs, NULL, 0, NULL, 0, &ids, &n, &err), &err);
    CHECK(ids != NULL && n == 0);
    fm_free(ids);
    CHECK_STATUS(FM_ERR_INVALID_ARG,
                 fm_tokenizer_encode(tok_pairs, "x", 1, NULL, 0, NULL, &n, &err), &err);
}

/* ---- decode rules (spec §1.5) ------------------------------------------------------------- */

/* Id of the one-byte token of byte b. */
static int32_t byte_token(uint8_t b) {
    for (int32_t id = 0; id < 256; id++) {
        size_t n;
        const char *s = fm_tokenizer_token_bytes(tok_pairs, id, &n);
        if (s && n == 1 && (uint8_t)s[0] == b && !fm_tokenizer_is_added(tok_pairs, id)) return id;
    }
    return -1;
}

static void expect_decode(const uint8_t *bytes, size_t n, const char *want) {
    int32_t ids[8];
    for (size_t i = 0; i < n; i++)
        ids[i] = byte_token(bytes[i]);
    char *text = NULL;
    size_t len;
    fm_error err;
    CHECK_OK(fm_tokenizer_decode(tok_pairs, ids, n, false, &text, &len, &err), &err);
    CHECK_EQ_STR(want, text);
    fm_free(text);
}

static void test_decode_lossy(void) {
    expect_decode((const uint8_t *)"\xe4\xb8", 2, "\xef\xbf\xbd");
    expect_decode((const uint8_t *)"\xf0\x80", 2, "\xef\xbf\xbd\xef\xbf\xbd");
    expect_decode((const uint8_t *)"\xc0\xaf", 2, "\xef\xbf\xbd\xef\xbf\xbd");
    expect_decode((const uint8_t *)"\xed\xa0\x80", 3, "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");
    expect_decode((const uint8_t *)"\xe4\xb8\xad", 3, "\xe4\xb8\xad");
    expect_decode((const uint8_t *)"a\xe4\xb8"
                                   "b",
                  4,
                  "a\xef\xbf\xbd"
                  "b");
    int32_t ids[3] = {byte_token('h'), 1 << 29, byte_token('i')}; /* unknown ids vanish */
    char *text = NULL;
    size_t len;
    fm_error err;
    CHECK_OK(fm_tokenizer_decode(tok_pairs, ids, 3, false, &text, &len, &err), &err);
    CHECK_EQ_STR("hi", text);
    fm_free(text);
}

/* ---- long inputs and a round trip on fresh random text ------------------------------------- */

static void roundtrip(const char *s, size_t n, const char *what) {
    int32_t *ids = NULL;
    size_t nids = 0, len = 0;
    char *text = NULL;
    fm_error err;
    CHECK_OK(fm_tokenizer_encode(tok_pairs, s, n, NULL, 0, &ids, &nids, &err), &err);
    CHECK_OK(fm_tokenizer_decode(tok_pairs, ids, nids, false, &text, &len, &err), &err);
    utf8proc_uint8_t *nfc = NULL;
    utf8proc_ssize_t nl = utf8proc_map((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)n, &nfc,
                                       UTF8PROC_STABLE | UTF8PROC_COMPOSE);
    bool same = text && nl >= 0 && (size_t)nl == len && !memcmp(text, nfc, len);
    CHECK_MSG(same, "%s: decode(encode(s)) == NFC(s) (%zu bytes in, %zu out)", what, n, len);
    free(nfc);
    fm_free(ids), fm_free(text);
}

static void test_long_inputs(void) {
    size_t n = 1 << 20;
    char *s = malloc(n + 2);
    for (size_t i = 0; i < n; i++)
        s[i] = (char)('a' + (i * 7919 % 26));
    clock_t c0 = clock();
    roundtrip(s, n, "1 MiB word");
    memset(s, ' ', n), s[n] = 'x';
    roundtrip(s, n + 1, "1 MiB of spaces then a letter");
    memset(s, '7', n);
    roundtrip(s, n, "1 MiB of digits");
    double secs = (double)(clock() - c0) / CLOCKS_PER_SEC;
    CHECK_MSG(secs < 20, "three 1 MiB pieces took %.1f s", secs);
    free(s);
}

static uint64_t rng_state;
static uint32_t rnd(uint32_t n) {
    rng_state ^= rng_state << 13, rng_state ^= rng_state >> 7, rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state % n);
}

/* A random valid code point from ranges that matter (ASCII, Latin with combining marks, CJK,
 * emoji, whitespace of several kinds). */
static uint32_t random_cp(void) {
    static const uint32_t ranges[][2] = {{0x20, 0x7e},     {0x09, 0x0d},     {0xa0, 0x17f},
                                         {0x300, 0x36f},   {0x1100, 0x11ff}, {0x3000, 0x30ff},
                                         {0x4e00, 0x4eff}, {0xac00, 0xacff}, {0x1f300, 0x1f6ff},
                                         {0x2000, 0x206f}, {0xfe00, 0xfe0f}, {0x10000, 0x1007f}};
    const uint32_t *r = ranges[rnd(sizeof ranges / sizeof *ranges)];
    return r[0] + rnd(r[1] - r[0] + 1);
}

static void test_random_roundtrip(void) {
    rng_state = (uint64_t)time(NULL) * 2654435761u | 1;
    uint64_t seed = rng_state;
    char s[4096];
    for (int iter = 0; iter < 300; iter++) {
        size_t n = 0, k = 1 + rnd(200);
        for (size_t i = 0; i < k; i++)
            n += utf8proc_encode_char((utf8proc_int32_t)random_cp(), (utf8proc_uint8_t *)s + n);
        char what[64];
        snprintf(what, sizeof what, "random text (seed %llu, iteration %d)",
                 (unsigned long long)seed, iter);
        roundtrip(s, n, what);
    }
}

/* ---- concurrency ---------------------------------------------------------------------------- */

static void *encode_all(void *arg) {
    json_t *cases = json_object_get(goldens, "encode");
    size_t *bad = arg;
    for (size_t i = 0; i < json_array_size(cases); i++) {
        json_t *c = json_array_get(cases, i), *text = json_object_get(c, "text");
        int32_t *ids = NULL;
        size_t n = 0;
        if (fm_tokenizer_encode(tok_pairs, json_string_value(text), json_string_length(text), NULL,
                                FM_TOKENIZE_SPECIAL, &ids, &n, NULL) != FM_OK ||
            !same_ids(ids, n, json_object_get(c, "special"), "threaded encode", ""))
            (*bad)++;
        fm_free(ids);
    }
    return NULL;
}

static void test_threads(void) {
    pthread_t th[3];
    size_t bad[3] = {0};
    for (int i = 0; i < 3; i++)
        CHECK_EQ_INT(0, pthread_create(&th[i], NULL, encode_all, &bad[i]));
    for (int i = 0; i < 3; i++)
        pthread_join(th[i], NULL);
    CHECK_EQ_INT(0, bad[0] + bad[1] + bad[2]);
}

int main(void) {
    char path[1024];
    json_error_t je;
    snprintf(path, sizeof path, "%s/tokenizer/goldens.json", data_dir());
    goldens = json_load_file(path, JSON_ALLOW_NUL, &je);
    if (!goldens) {
        fprintf(stderr, "cannot read %s: %s (run from the repository root)\n", path, je.text);
        return 1;
    }
    tok_pairs = load("pairs");
    tok_legacy = load("legacy/tokenizer.json");
    if (!tok_pairs || !tok_legacy) TEST_END();
    RUN(test_goldens_encode_pairs);
    RUN(test_goldens_encode_legacy);
    RUN(test_goldens_decode);
    RUN(test_lookups);
    RUN(test_user_mask);
    RUN(test_user_mask_normalized);
    RUN(test_invalid_utf8);
    RUN(test_decode_lossy);
    RUN(test_long_inputs);
    RUN(test_random_roundtrip);
    RUN(test_threads);
    fm_tokenizer_free(tok_pairs);
    fm_tokenizer_free(tok_legacy);
    json_decref(goldens);
    TEST_END();
}
