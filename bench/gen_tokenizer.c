/* Writes a byte-level BPE tokenizer.json trained on the generated English-like corpus
 * (tests/support/tok_fixture.h): used for the committed test fixture
 * (scripts/tokenizer_fixture.sh) and by hand.
 *
 *   gen_tokenizer OUT.json [--merges N] [--corpus-bytes N] [--seed S] [--legacy] [--mixed]
 *                          [--no-added]
 *
 * --legacy writes merges as "a b" strings (else ["a", "b"] pairs); --mixed adds other scripts,
 * emoji and odd whitespace to the corpus; --no-added leaves out the fixture's added tokens. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tok_fixture.h"

int main(int argc, char **argv) {
    if (argc < 2) return fprintf(stderr, "usage: gen_tokenizer OUT.json [options]\n"), 2;
    tokfx_spec spec = {1000, false, true};
    size_t corpus_bytes = 300000;
    unsigned long long seed = 1;
    bool mixed = false;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--merges") && i + 1 < argc)
            spec.merges = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--corpus-bytes") && i + 1 < argc)
            corpus_bytes = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--seed") && i + 1 < argc)
            seed = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--legacy"))
            spec.legacy_merges = true;
        else if (!strcmp(argv[i], "--mixed"))
            mixed = true;
        else if (!strcmp(argv[i], "--no-added"))
            spec.added_tokens = false;
        else
            return fprintf(stderr, "gen_tokenizer: bad argument '%s'\n", argv[i]), 2;
    }
    size_t len = 0, jlen = 0;
    char *text = tokfx_corpus(corpus_bytes, seed, mixed, &len);
    char *json = text ? tokfx_train_json(text, len, &spec, &jlen) : NULL;
    FILE *f = json ? fopen(argv[1], "wb") : NULL;
    int ok = f && fwrite(json, 1, jlen, f) == jlen && fputc('\n', f) != EOF;
    if (f && fclose(f)) ok = 0;
    free(text);
    free(json);
    if (!ok) return fprintf(stderr, "gen_tokenizer: cannot write %s\n", argv[1]), 1;
    return 0;
}
