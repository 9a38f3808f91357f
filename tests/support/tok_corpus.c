/* English-like text for the tokenizer's tests and benchmark (tok_fixture.h): Zipf-distributed
 * words — the most common English function words first, then generated words built from
 * syllables — in sentences with capitals, commas, final punctuation, numbers, contractions,
 * quotes and paragraph breaks. `mixed` adds other scripts, emoji and odd whitespace. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tok_fixture.h"

#define N_GENERATED 60000

static const char *const COMMON[] = {
    "the",    "of",      "and",      "to",        "a",      "in",     "is",      "you",
    "that",   "it",      "he",       "was",       "for",    "on",     "are",     "as",
    "with",   "his",     "they",     "I",         "at",     "be",     "this",    "have",
    "from",   "or",      "one",      "had",       "by",     "word",   "but",     "not",
    "what",   "all",     "were",     "we",        "when",   "your",   "can",     "said",
    "there",  "use",     "an",       "each",      "which",  "she",    "do",      "how",
    "their",  "if",      "will",     "up",        "other",  "about",  "out",     "many",
    "then",   "them",    "these",    "so",        "some",   "her",    "would",   "make",
    "like",   "him",     "into",     "time",      "has",    "look",   "two",     "more",
    "write",  "go",      "see",      "number",    "no",     "way",    "could",   "people",
    "my",     "than",    "first",    "water",     "been",   "call",   "who",     "oil",
    "its",    "now",     "find",     "long",      "down",   "day",    "did",     "get",
    "come",   "made",    "may",      "part",      "over",   "new",    "sound",   "take",
    "only",   "little",  "work",     "know",      "place",  "year",   "live",    "me",
    "back",   "give",    "most",     "very",      "after",  "thing",  "our",     "just",
    "name",   "good",    "sentence", "man",       "think",  "say",    "great",   "where",
    "help",   "through", "much",     "before",    "line",   "right",  "too",     "mean",
    "old",    "any",     "same",     "tell",      "boy",    "follow", "came",    "want",
    "show",   "also",    "around",   "form",      "three",  "small",  "set",     "put",
    "end",    "does",    "another",  "well",      "large",  "must",   "big",     "even",
    "such",   "because", "turn",     "here",      "why",    "ask",    "went",    "men",
    "read",   "need",    "land",     "different", "home",   "us",     "move",    "try",
    "kind",   "hand",    "picture",  "again",     "change", "off",    "play",    "spell",
    "air",    "away",    "animal",   "house",     "point",  "page",   "letter",  "mother",
    "answer", "found",   "study",    "still",     "learn",  "should", "America", "world",
    "model",  "image",   "token",    "vision"};
#define N_COMMON (sizeof COMMON / sizeof *COMMON)

static const char *const ONSET[] = {"",   "b",  "c",  "d",  "f",  "g",  "h",  "j",  "k",  "l",
                                    "m",  "n",  "p",  "r",  "s",  "t",  "v",  "w",  "y",  "z",
                                    "br", "cr", "dr", "fl", "gr", "pl", "pr", "sh", "st", "str",
                                    "th", "tr", "ch", "sp", "sc", "wh", "qu", "bl", "cl", "gl"};
static const char *const NUCLEUS[] = {"a",  "e",  "i",  "o",  "u", "ea", "ou",
                                      "ai", "ie", "oo", "ee", "y", "io", "au"};
static const char *const CODA[] = {"",   "",   "",   "n",   "r",  "s",  "t",  "l",
                                   "m",  "nd", "ng", "st",  "rt", "ck", "ll", "ss",
                                   "nt", "rd", "th", "ght", "sh", "x"};
static const char *const SUFFIX[] = {"",     "",    "",    "",     "s",    "ed",
                                     "ing",  "er",  "ly",  "tion", "ness", "ment",
                                     "able", "ous", "ive", "al",   "est",  "ity"};
static const char *const MIXED[] = {"日本語の文章です。",
                                    "中文的句子",
                                    "한국어 문장",
                                    "مرحبا",
                                    "नमस्ते",
                                    "Привет, мир",
                                    "Ελληνικά",
                                    "😀",
                                    "👍🏽",
                                    "👨\u200d👩\u200d👧",
                                    "🇫🇷",
                                    "café",
                                    "cafe\u0301",
                                    "naïve",
                                    "Å",
                                    "e\u0301",
                                    "\u00a0",
                                    "\u3000",
                                    "\t",
                                    "\r\n",
                                    "  ",
                                    "\u2003",
                                    "½",
                                    "²",
                                    "٣",
                                    "ſ",
                                    "ß",
                                    "ﬁ",
                                    "€",
                                    "—"};
#define N_MIXED (sizeof MIXED / sizeof *MIXED)

typedef struct rng {
    uint64_t s;
} rng;

static uint64_t next(rng *r) {
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static size_t below(rng *r, size_t n) {
    return (size_t)(next(r) % n);
}
static double unit(rng *r) {
    return (double)(next(r) >> 11) / 9007199254740992.0;
}
#define PICK(r, a) ((a)[below(r, sizeof(a) / sizeof *(a))])

typedef struct lexicon {
    char **words; /* N_COMMON + N_GENERATED, by rank */
    double *cdf;
    size_t n;
} lexicon;

static char *generated_word(rng *r) {
    char buf[64];
    size_t syl = 1 + below(r, 3) + (below(r, 4) == 0);
    buf[0] = '\0';
    for (size_t i = 0; i < syl; i++) {
        strcat(buf, PICK(r, ONSET));
        strcat(buf, PICK(r, NUCLEUS));
        if (i + 1 == syl || below(r, 3) == 0) strcat(buf, PICK(r, CODA));
    }
    strcat(buf, PICK(r, SUFFIX));
    return strdup(buf);
}

static int lexicon_init(lexicon *lx, rng *r) {
    lx->n = N_COMMON + N_GENERATED;
    lx->words = calloc(lx->n, sizeof *lx->words);
    lx->cdf = malloc(lx->n * sizeof *lx->cdf);
    if (!lx->words || !lx->cdf) return -1;
    double sum = 0;
    for (size_t i = 0; i < lx->n; i++) {
        lx->words[i] = i < N_COMMON ? strdup(COMMON[i]) : generated_word(r);
        if (!lx->words[i]) return -1;
        sum += 1.0 / pow((double)i + 2.7, 1.07); /* Zipf-Mandelbrot, like English word ranks */
        lx->cdf[i] = sum;
    }
    for (size_t i = 0; i < lx->n; i++)
        lx->cdf[i] /= sum;
    return 0;
}

static void lexicon_free(lexicon *lx) {
    for (size_t i = 0; lx->words && i < lx->n; i++)
        free(lx->words[i]);
    free(lx->words);
    free(lx->cdf);
}

static const char *sample(const lexicon *lx, rng *r) {
    double u = unit(r);
    size_t lo = 0, hi = lx->n - 1;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (lx->cdf[mid] < u)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lx->words[lo];
}

typedef struct sbuf {
    char *p;
    size_t n, cap;
} sbuf;

static int put(sbuf *b, const char *s) {
    size_t k = strlen(s);
    if (b->n + k + 1 > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 1 << 16;
        while (cap < b->n + k + 1)
            cap *= 2;
        char *q = realloc(b->p, cap);
        if (!q) return -1;
        b->p = q, b->cap = cap;
    }
    memcpy(b->p + b->n, s, k + 1);
    b->n += k;
    return 0;
}

/* One word with its decorations: capital, contraction, number, quote, mixed-script piece. */
static int word(sbuf *b, const lexicon *lx, rng *r, bool first, bool mixed) {
    char w[96];
    size_t roll = below(r, 100);
    if (roll < 3)
        snprintf(w, sizeof w, "%zu", below(r, 3000));
    else if (roll < 4)
        snprintf(w, sizeof w, "%zu.%zu", below(r, 100), below(r, 100));
    else if (roll < 5)
        snprintf(w, sizeof w, "%zu%%", below(r, 100));
    else
        snprintf(w, sizeof w, "%s", sample(lx, r));
    if (first || below(r, 40) == 0) w[0] = (char)(w[0] >= 'a' && w[0] <= 'z' ? w[0] - 32 : w[0]);
    if (roll >= 5 && roll < 8)
        strcat(w, PICK(r, ((const char *const[]){"'s", "n't", "'re", "'ll", "'ve", "'d", "'m"})));
    if (mixed && below(r, 12) == 0) return put(b, MIXED[below(r, N_MIXED)]);
    if (below(r, 60) == 0) return put(b, "\"") || put(b, w) || put(b, "\"");
    return put(b, w);
}

static int sentence(sbuf *b, const lexicon *lx, rng *r, bool mixed) {
    size_t n = 4 + below(r, 20);
    for (size_t i = 0; i < n; i++) {
        if (i && put(b, " ")) return -1;
        if (word(b, lx, r, i == 0, mixed)) return -1;
        if (i + 1 < n && below(r, 9) == 0 && put(b, below(r, 6) ? "," : ";")) return -1;
    }
    return put(b, PICK(r, ((const char *const[]){".", ".", ".", ".", "?", "!", "...", ":"})));
}

char *tokfx_corpus(size_t bytes, uint64_t seed, bool mixed, size_t *out_len) {
    rng lang = {0x5EED}; /* one lexicon for every seed: texts of one language */
    rng r = {seed * 0x2545F4914F6CDD1Dull + 1};
    lexicon lx = {0};
    sbuf b = {0};
    int rc = lexicon_init(&lx, &lang);
    while (rc == 0 && b.n < bytes) {
        rc = sentence(&b, &lx, &r, mixed);
        if (rc == 0) rc = put(&b, below(&r, 7) ? " " : below(&r, 3) ? "\n" : "\n\n");
    }
    lexicon_free(&lx);
    if (rc) {
        free(b.p);
        return NULL;
    }
    *out_len = b.n;
    return b.p;
}
