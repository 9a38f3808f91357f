/* Fuzz harness: tokenizer.json loading (fm_tokenizer_parse with small limits), then encode,
 * decode and streaming decode on a text. Input: the tokenizer.json text, optionally followed by
 * a NUL byte and the text to encode (else a fixed probe text is used). Oracles: an all-zero user
 * mask encodes as no mask; an all-user mask encodes as specials off; every id encode returns is
 * known; the streamed chunks concatenate to decode. fm_fuzz_tokenizer_accepted tells whether the
 * last input loaded (seeds are named ok_* / bad_* after it). */
#include <stdlib.h>
#include <string.h>

#include "fusemap/tokenizer.h"
#include "fuzz_common.h"

/* 1 when the last input's tokenizer.json loaded, 0 when it was rejected. */
int fm_fuzz_tokenizer_accepted;

static const char TKH_PROBE[] = "<|im_start|>user\nHello,  world! I'M 2024\r\n\tcafe\xcc\x81 "
                                "\xe4\xb8\xad\xe6\x96\x87 \xf0\x9f\x98\x80<|im_end|>  ";

static void tkh_same(const int32_t *a, size_t na, const int32_t *b, size_t nb, const char *what) {
    if (na != nb || (na && memcmp(a, b, na * sizeof *a))) fmz_fail("tokenizer", what);
}

/* Decode and stream decode must agree; returns the decoded text's length. */
static void tkh_decode(const fm_tokenizer *t, const int32_t *ids, size_t n, bool skip) {
    char *text = NULL, *acc = NULL;
    size_t len = 0, alen = 0, clen;
    const char *chunk;
    fm_detok_stream *s = NULL;
    if (fm_tokenizer_decode(t, ids, n, skip, &text, &len, NULL) != FM_OK) return;
    acc = malloc(len + 1);
    bool ok = acc && fm_detok_stream_new(t, skip, &s, NULL) == FM_OK;
    for (size_t i = 0; ok && i < n; i++) {
        ok = fm_detok_stream_push(s, ids[i], &chunk, &clen, NULL) == FM_OK;
        if (ok && alen + clen > len) fmz_fail("tokenizer", "stream emits more than decode");
        if (ok) memcpy(acc + alen, chunk, clen), alen += clen;
    }
    if (ok && fm_detok_stream_finish(s, &chunk, &clen, NULL) == FM_OK) {
        if (alen + clen != len || memcmp(acc, text, alen) || memcmp(text + alen, chunk, clen))
            fmz_fail("tokenizer", "stream chunks differ from decode");
    }
    fmz_sink(fmz_touch(text, len));
    fm_detok_stream_free(s);
    free(acc);
    fm_free(text);
}

static void tkh_encode(const fm_tokenizer *t, const char *s, size_t n) {
    int32_t *a = NULL, *b = NULL, *c = NULL, *d = NULL;
    size_t na = 0, nb = 0, nc = 0, nd = 0;
    uint8_t *zeros = calloc(n + 1, 1), *ones = malloc(n + 1);
    if (!zeros || !ones) goto done;
    memset(ones, 1, n + 1);
    fm_status st = fm_tokenizer_encode(t, s, n, NULL, FM_TOKENIZE_SPECIAL, &a, &na, NULL);
    fmz_note("encode (%zu bytes): %s -> %zu ids", n, fm_status_name(st), na);
    if (st != FM_OK) {
        if (a) fmz_fail("tokenizer", "ids set on failure");
        goto done;
    }
    for (size_t i = 0; i < na; i++)
        if (!fm_tokenizer_id_to_token(t, a[i], NULL))
            fmz_fail("tokenizer", "encode gave an unknown id");
    if (fm_tokenizer_encode(t, s, n, zeros, FM_TOKENIZE_SPECIAL, &b, &nb, NULL) == FM_OK)
        tkh_same(a, na, b, nb, "a zero mask changed the ids");
    if (fm_tokenizer_encode(t, s, n, NULL, 0, &c, &nc, NULL) == FM_OK &&
        fm_tokenizer_encode(t, s, n, ones, FM_TOKENIZE_SPECIAL, &d, &nd, NULL) == FM_OK)
        tkh_same(c, nc, d, nd, "an all-user mask differs from specials off");
    tkh_decode(t, a, na, false);
    tkh_decode(t, a, na, true);
done:
    free(zeros), free(ones);
    fm_free(a), fm_free(b), fm_free(c), fm_free(d);
}

int fm_fuzz_tokenizer(const uint8_t *data, size_t size);
int fm_fuzz_tokenizer(const uint8_t *data, size_t size) {
    const uint8_t *nul = memchr(data, 0, size);
    size_t jlen = nul ? (size_t)(nul - data) : size;
    fm_tokenizer_limits lim;
    fm_tokenizer_limits_init(&lim);
    lim.max_file_bytes = 1 << 20, lim.max_vocab = 1 << 16, lim.max_merges = 1 << 16;
    lim.max_added = 512, lim.max_token_bytes = 256;
    fm_tokenizer *t = NULL;
    fm_error err;
    fm_status st = fm_tokenizer_parse((const char *)data, jlen, "fuzz.json", &lim, &t, &err);
    fmz_note("tokenizer_parse (%zu bytes): %s %s", jlen, fm_status_name(st), st ? err.msg : "");
    fm_fuzz_tokenizer_accepted = st == FM_OK;
    fmz_verdict(st == FM_OK); /* ok_* seeds load, bad_* are rejected */
    if (st != FM_OK) {
        if (t) fmz_fail("tokenizer", "output set on failure");
        return 0;
    }
    if (nul)
        tkh_encode(t, (const char *)nul + 1, size - jlen - 1);
    else
        tkh_encode(t, TKH_PROBE, sizeof TKH_PROBE - 1);
    int32_t ids[6] = {0, 1, 255, 256, (int32_t)fm_tokenizer_vocab_size(t) - 1, 1 << 30};
    tkh_decode(t, ids, 6, false);
    fm_tokenizer_free(t);
    return 0;
}

FM_FUZZ_TARGET(fm_fuzz_tokenizer)
