/* Streaming detokenization (spec §5.6): on random id sequences — bytes that split multi-byte
 * characters, invalid sequences, special and unknown ids — the chunks concatenate to
 * fm_tokenizer_decode of all the ids, each chunk is valid UTF-8 and at most 3 bytes are ever
 * held back. Also every allocation failure of load, encode, decode and the stream: a clean
 * FM_ERR_NOMEM and nothing leaked (ASan checks the leaks). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "check.h"
#include "core/testing.h"
#include "fusemap/tokenizer.h"

static fm_tokenizer *tok;

static const char *data_dir(void) {
    const char *d = getenv("FM_TEST_DATA");
    return d && *d ? d : "tests/data";
}

static uint64_t rng_state;
static uint32_t rnd(uint32_t n) {
    rng_state ^= rng_state << 13, rng_state ^= rng_state >> 7, rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state % n);
}

/* Id of the one-byte vocab token of byte b. */
static int32_t byte_token(uint8_t b) {
    for (int32_t id = 0; id < 256; id++) {
        size_t n;
        const char *s = fm_tokenizer_token_bytes(tok, id, &n);
        if (s && n == 1 && (uint8_t)s[0] == b && !fm_tokenizer_is_added(tok, id)) return id;
    }
    return -1;
}

static bool valid_utf8(const char *s, size_t n) {
    char *copy = malloc(n + 1);
    memcpy(copy, s, n);
    /* decode of a valid string returns it unchanged: a cheap validity oracle independent of the
     * streaming code would be better, so check the structure directly */
    size_t i = 0;
    bool ok = true;
    while (ok && i < n) {
        unsigned char c = (unsigned char)copy[i];
        size_t k = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        ok = k && i + k <= n && !(c >= 0x80 && c < 0xC2) && c <= 0xF4;
        for (size_t j = 1; ok && j < k; j++)
            ok = ((unsigned char)copy[i + j] & 0xC0) == 0x80;
        if (ok && k == 3) {
            unsigned d = (unsigned char)copy[i + 1];
            ok = !(c == 0xE0 && d < 0xA0) && !(c == 0xED && d > 0x9F);
        }
        if (ok && k == 4) {
            unsigned d = (unsigned char)copy[i + 1];
            ok = !(c == 0xF0 && d < 0x90) && !(c == 0xF4 && d > 0x8F);
        }
        i += k;
    }
    free(copy);
    return ok;
}

static void random_ids(int32_t *ids, size_t n, int32_t vocab, const int32_t *special, size_t ns) {
    static const uint8_t lead[] = {0xC3, 0xE4, 0xF0, 0xED, 0xC0, 0xF4, 0xE0, 0x80, 0xBF, 0xFF};
    for (size_t i = 0; i < n; i++) {
        uint32_t u = rnd(100);
        if (u < 35)
            ids[i] = byte_token((uint8_t)(0x80 + rnd(0x80))); /* continuation or lead */
        else if (u < 45)
            ids[i] = byte_token(lead[rnd(sizeof lead)]);
        else if (u < 85)
            ids[i] = (int32_t)rnd((uint32_t)vocab);
        else if (u < 95)
            ids[i] = special[rnd((uint32_t)ns)];
        else
            ids[i] = vocab + (int32_t)rnd(1000); /* unknown */
    }
}

/* Streams ids; returns true when the chunks concatenate to decode(ids). */
static bool stream_matches(const int32_t *ids, size_t n, bool skip, fm_detok_stream *s) {
    char *want = NULL, *got = malloc(4 * 64 * n + 16);
    size_t wlen = 0, glen = 0, len;
    const char *chunk;
    fm_error err;
    bool ok = fm_tokenizer_decode(tok, ids, n, skip, &want, &wlen, &err) == FM_OK;
    for (size_t i = 0; ok && i < n; i++) {
        ok = fm_detok_stream_push(s, ids[i], &chunk, &len, &err) == FM_OK && valid_utf8(chunk, len);
        if (ok) memcpy(got + glen, chunk, len), glen += len;
        /* what was emitted is a prefix of the full text, and at most 3 bytes lag behind */
        ok = ok && glen <= wlen && !memcmp(got, want, glen);
    }
    ok = ok && fm_detok_stream_finish(s, &chunk, &len, &err) == FM_OK && valid_utf8(chunk, len) &&
         len <= 9; /* a held tail of <= 3 bytes flushes to at most three U+FFFD */
    if (ok) memcpy(got + glen, chunk, len), glen += len;
    ok = ok && glen == wlen && !memcmp(got, want, wlen);
    fm_free(want);
    free(got);
    return ok;
}

static void test_stream_random(void) {
    rng_state = (uint64_t)time(NULL) * 0x9E3779B97F4A7C15ull | 1;
    uint64_t seed = rng_state;
    int32_t special[4] = {fm_tokenizer_token_to_id(tok, "<|im_start|>", 12),
                          fm_tokenizer_token_to_id(tok, "<|im_end|>", 10),
                          fm_tokenizer_token_to_id(tok, "<tool_call>", 11),
                          fm_tokenizer_token_to_id(tok, "<mask>", 6)};
    int32_t vocab = (int32_t)fm_tokenizer_vocab_size(tok);
    fm_detok_stream *s[2] = {NULL, NULL};
    fm_error err;
    CHECK_OK(fm_detok_stream_new(tok, false, &s[0], &err), &err);
    CHECK_OK(fm_detok_stream_new(tok, true, &s[1], &err), &err);
    if (!s[0] || !s[1]) return;
    size_t bad = 0;
    for (int iter = 0; iter < 3000; iter++) {
        int32_t ids[48];
        size_t n = 1 + rnd(48);
        random_ids(ids, n, vocab, special, 4);
        for (int skip = 0; skip < 2; skip++) {
            if (stream_matches(ids, n, skip, s[skip])) continue;
            if (bad++ < 3)
                fprintf(stderr, "  stream != decode (seed %llu, iteration %d, skip %d)\n",
                        (unsigned long long)seed, iter, skip);
        }
    }
    CHECK_EQ_INT(0, bad);
    fm_detok_stream_free(s[0]);
    fm_detok_stream_free(s[1]);
}

/* Explicit cases: a character split over three tokens, and a dangling lead byte at the end. */
static void test_stream_split_char(void) {
    fm_detok_stream *s = NULL;
    fm_error err;
    const char *chunk;
    size_t len;
    CHECK_OK(fm_detok_stream_new(tok, false, &s, &err), &err);
    if (!s) return;
    int32_t e4 = byte_token(0xE4), b8 = byte_token(0xB8), ad = byte_token(0xAD);
    CHECK_OK(fm_detok_stream_push(s, e4, &chunk, &len, &err), &err);
    CHECK_EQ_INT(0, len);
    CHECK_OK(fm_detok_stream_push(s, b8, &chunk, &len, &err), &err);
    CHECK_EQ_INT(0, len);
    CHECK_OK(fm_detok_stream_push(s, ad, &chunk, &len, &err), &err);
    CHECK(len == 3 && !memcmp(chunk, "\xe4\xb8\xad", 3));
    CHECK_OK(fm_detok_stream_push(s, e4, &chunk, &len, &err), &err);
    CHECK_EQ_INT(0, len);
    CHECK_OK(fm_detok_stream_push(s, byte_token('x'), &chunk, &len, &err), &err);
    CHECK_EQ_STR("\xef\xbf\xbdx", chunk); /* proven invalid as soon as 'x' arrives */
    CHECK_OK(fm_detok_stream_push(s, e4, &chunk, &len, &err), &err);
    CHECK_OK(fm_detok_stream_finish(s, &chunk, &len, &err), &err);
    CHECK_EQ_STR("\xef\xbf\xbd", chunk);
    CHECK_OK(fm_detok_stream_finish(s, &chunk, &len, &err), &err); /* reusable, now empty */
    CHECK_EQ_INT(0, len);
    fm_detok_stream_free(s);
    fm_detok_stream_free(NULL);
}

/* ---- allocation failures ----------------------------------------------------------------- */

/* Calls fn with the n-th allocation failing, for every n until a run needs no failure. */
static void sweep(const char *what, fm_status (*fn)(void)) {
    size_t clean = 0, runs = 0;
    for (uint64_t n = 1; n < 100000; n++, runs++) {
        fm_fault_set(FM_FAULT_ALLOC, n);
        fm_status st = fn();
        bool hit = fm_fault_count(FM_FAULT_ALLOC) >= n;
        fm_fault_set(FM_FAULT_ALLOC, 0);
        if (!hit) {
            CHECK_MSG(st == FM_OK, "%s: %s without an injected failure", what, fm_status_name(st));
            break;
        }
        if (st == FM_ERR_NOMEM)
            clean++;
        else
            CHECK_MSG(st == FM_OK,
                      "%s: allocation %llu failed -> %s, expected FM_ERR_NOMEM or "
                      "a fallback",
                      what, (unsigned long long)n, fm_status_name(st));
    }
    CHECK_MSG(runs > 0 && clean > 0, "%s: %zu failure points, %zu reported NOMEM", what, runs,
              clean);
}

static fm_status load_once(void) {
    char path[1024];
    snprintf(path, sizeof path, "%s/tokenizer/pairs", data_dir());
    fm_tokenizer *t = NULL;
    fm_error err;
    fm_status st = fm_tokenizer_open(path, &t, &err);
    if (st != FM_OK && t) return FM_ERR_INTERNAL; /* output set on failure */
    if (st == FM_ERR_NOMEM && !strstr(err.msg, "out of memory")) return FM_ERR_INTERNAL;
    fm_tokenizer_free(t);
    return st;
}

static const char ENC_TEXT[] =
    "<|im_start|>user\nUn cafe\xcc\x81 <mask> et <n\xcc\x83> !! "
    "supercalifragilisticexpialidocious 2024\r\n\t\xe4\xb8\xad<|im_end|>";

static fm_status encode_once(void) {
    int32_t *ids = NULL, *ref = NULL;
    size_t n = 0, nref = 0;
    fm_error err;
    uint8_t mask[sizeof ENC_TEXT] = {0};
    memset(mask + 20, 1, 10);
    fm_status st = fm_tokenizer_encode(tok, ENC_TEXT, sizeof ENC_TEXT - 1, mask,
                                       FM_TOKENIZE_SPECIAL, &ids, &n, &err);
    if (st == FM_OK) { /* a fallback (no word cache) must still give the same ids */
        fm_fault_set(FM_FAULT_ALLOC, 0);
        fm_tokenizer_encode(tok, ENC_TEXT, sizeof ENC_TEXT - 1, mask, FM_TOKENIZE_SPECIAL, &ref,
                            &nref, NULL);
        if (!ref || nref != n || memcmp(ref, ids, n * sizeof *ids)) st = FM_ERR_INTERNAL;
    } else if (ids) {
        st = FM_ERR_INTERNAL;
    }
    fm_free(ids), fm_free(ref);
    return st;
}

static fm_status decode_once(void) {
    int32_t ids[] = {1, 2, byte_token(0xE4), 3, 1257, 99999};
    char *text = NULL;
    size_t len;
    fm_status st = fm_tokenizer_decode(tok, ids, 6, true, &text, &len, NULL);
    fm_free(text);
    return st;
}

static fm_status stream_once(void) {
    fm_detok_stream *s = NULL;
    const char *c;
    size_t len;
    fm_status st = fm_detok_stream_new(tok, false, &s, NULL);
    for (int32_t id = 0; st == FM_OK && id < 40; id++)
        st = fm_detok_stream_push(s, id, &c, &len, NULL);
    if (st == FM_OK) st = fm_detok_stream_finish(s, &c, &len, NULL);
    fm_detok_stream_free(s);
    return st;
}

static void test_fault_load(void) {
    sweep("load", load_once);
}
static void test_fault_encode(void) {
    sweep("encode", encode_once);
}
static void test_fault_decode(void) {
    sweep("decode", decode_once);
}
static void test_fault_stream(void) {
    sweep("stream", stream_once);
}

int main(void) {
    char path[1024];
    fm_error err;
    snprintf(path, sizeof path, "%s/tokenizer/pairs", data_dir());
    if (fm_tokenizer_open(path, &tok, &err) != FM_OK) {
        fprintf(stderr, "cannot load %s: %s (run from the repository root)\n", path, err.msg);
        return 1;
    }
    RUN(test_stream_split_char);
    RUN(test_stream_random);
    RUN(test_fault_load);
    RUN(test_fault_encode);
    RUN(test_fault_decode);
    RUN(test_fault_stream);
    fm_tokenizer_free(tok);
    TEST_END();
}
