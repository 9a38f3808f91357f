/* Tokenizer benchmark: trains a byte-level BPE of realistic size (default 40,000 merges, Qwen2's
 * split pattern and special tokens) on a generated English-like corpus, then encodes a different
 * text of the same language on one thread — as one call, and line by line (one call per line, a
 * fresh word cache each time) — and decodes it. Prints one JSON object per line.
 *
 *   tokenize [--text-mb N] [--train-mb N] [--merges N] [--reps N]
 *
 * mb_per_s is decimal MB (10^6 bytes) of input text per second, best of --reps runs. Target:
 * >= 5 MB/s for the single call. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fusemap/tokenizer.h"
#include "tok_fixture.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double encode_whole(const fm_tokenizer *t, const char *s, size_t n, size_t *ntok) {
    int32_t *ids = NULL;
    double t0 = now();
    if (fm_tokenizer_encode(t, s, n, NULL, FM_TOKENIZE_SPECIAL, &ids, ntok, NULL) != FM_OK)
        return -1;
    double dt = now() - t0;
    fm_free(ids);
    return dt;
}

static double encode_lines(const fm_tokenizer *t, const char *s, size_t n, size_t *lines) {
    double t0 = now();
    *lines = 0;
    for (size_t i = 0; i < n;) {
        const char *nl = memchr(s + i, '\n', n - i);
        size_t end = nl ? (size_t)(nl - s) + 1 : n, k;
        int32_t *ids = NULL;
        if (fm_tokenizer_encode(t, s + i, end - i, NULL, FM_TOKENIZE_SPECIAL, &ids, &k, NULL))
            return -1;
        fm_free(ids);
        i = end, (*lines)++;
    }
    return now() - t0;
}

static double decode_all(const fm_tokenizer *t, const char *s, size_t n) {
    int32_t *ids = NULL;
    size_t k = 0, len = 0;
    char *text = NULL;
    if (fm_tokenizer_encode(t, s, n, NULL, 0, &ids, &k, NULL) != FM_OK) return -1;
    double t0 = now();
    fm_status st = fm_tokenizer_decode(t, ids, k, false, &text, &len, NULL);
    double dt = now() - t0;
    if (st != FM_OK || len != n) dt = -1; /* ASCII text: decode gives it back */
    fm_free(ids), fm_free(text);
    return dt;
}

int main(int argc, char **argv) {
    double text_mb = 20, train_mb = 8;
    tokfx_spec spec = {40000, false, true};
    int reps = 3;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--text-mb") && i + 1 < argc)
            text_mb = atof(argv[++i]);
        else if (!strcmp(argv[i], "--train-mb") && i + 1 < argc)
            train_mb = atof(argv[++i]);
        else if (!strcmp(argv[i], "--merges") && i + 1 < argc)
            spec.merges = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc)
            reps = atoi(argv[++i]);
        else
            return fprintf(stderr, "tokenize: bad argument '%s'\n", argv[i]), 2;
    }
    size_t tlen = 0, jlen = 0, n = 0;
    double t0 = now();
    char *train = tokfx_corpus((size_t)(train_mb * 1e6), 1, false, &tlen);
    char *json = train ? tokfx_train_json(train, tlen, &spec, &jlen) : NULL;
    char *text = json ? tokfx_corpus((size_t)(text_mb * 1e6), 2, false, &n) : NULL;
    double setup = now() - t0;
    fm_tokenizer *t = NULL;
    fm_error err;
    t0 = now();
    if (!text || fm_tokenizer_parse(json, jlen, "bench tokenizer.json", NULL, &t, &err) != FM_OK)
        return fprintf(stderr, "tokenize: setup failed: %s\n", text ? err.msg : "out of memory"), 1;
    double load = now() - t0, best = 1e30, best_lines = 1e30, best_dec = 1e30;
    size_t ntok = 0, lines = 0;
    for (int r = 0; r < reps; r++) {
        double a = encode_whole(t, text, n, &ntok), b = encode_lines(t, text, n, &lines);
        double c = decode_all(t, text, n);
        if (a < 0 || b < 0 || c < 0) return fprintf(stderr, "tokenize: encode/decode failed\n"), 1;
        best = a < best ? a : best, best_lines = b < best_lines ? b : best_lines;
        best_dec = c < best_dec ? c : best_dec;
    }
    printf("{\"bench\":\"tokenize\",\"text_mb\":%.1f,\"merges\":%zu,\"vocab\":%zu,\"tokens\":%zu,"
           "\"bytes_per_token\":%.2f,\"load_ms\":%.1f,\"setup_s\":%.1f,\"encode_s\":%.3f,"
           "\"mb_per_s\":%.2f,\"lines\":%zu,\"mb_per_s_per_line_calls\":%.2f,"
           "\"decode_mb_per_s\":%.1f}\n",
           (double)n / 1e6, spec.merges, fm_tokenizer_vocab_size(t), ntok, (double)n / (double)ntok,
           load * 1e3, setup, best, (double)n / 1e6 / best, lines, (double)n / 1e6 / best_lines,
           (double)n / 1e6 / best_dec);
    fm_tokenizer_free(t);
    free(train), free(json), free(text);
    return 0;
}
