/* Hostile and unsupported tokenizer.json files: every limit, every unsupported component and
 * every malformed entry is a clear error naming the file and the key (and for merges the line),
 * with no output and nothing leaked. Also the BPE details checked by hand on a tiny vocab: rank
 * order, ignore_merges, unk_token / fuse_unk, a String split, GPT-2's ByteLevel regex, and a
 * catastrophic regex stopped by PCRE2's match limit. */
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "file_util.h"
#include "fusemap/io.h"
#include "fusemap/tokenizer.h"
#include "tok_fixture.h"

#define LABEL "tiny/tokenizer.json"

/* ---- a tiny valid tokenizer: the 256 byte tokens, "ab", "abc", "Ġa"; merges a+b, ab+c, Ġ+a -- */

static bool printable(unsigned b) {
    return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
}

/* The byte-level character of byte b, as UTF-8. */
static const char *bl(unsigned b, char out[4]) {
    uint32_t cp = b;
    if (!printable(b)) {
        cp = 0x100;
        for (unsigned x = 0; x < b; x++)
            cp += !printable(x);
    }
    if (cp < 0x80)
        out[0] = (char)cp, out[1] = 0;
    else
        out[0] = (char)(0xC0 | (cp >> 6)), out[1] = (char)(0x80 | (cp & 0x3F)), out[2] = 0;
    return out;
}

static json_t *base(void) {
    json_t *vocab = json_object();
    char c[4];
    for (unsigned b = 0; b < 256; b++)
        json_object_set_new(vocab, bl(b, c), json_integer(b));
    json_object_set_new(vocab, "ab", json_integer(256));
    json_object_set_new(vocab, "abc", json_integer(257));
    json_object_set_new(vocab,
                        "\xc4\xa0"
                        "a",
                        json_integer(258));
    json_t *root = json_pack(
        "{ss sn sn s[{si ss sb sb sb sb sb}] s{ss} s{ss s[{ss s{ss} ss sb} {ss sb sb sb}]} "
        "s{ss sb sb sb} s{ss sb sb sb} s{ss sn sn ss ss sb sb sb so s[sss]}}",
        "version", "1.0", "truncation", "padding", "added_tokens", "id", 259, "content", "<s>",
        "single_word", 0, "lstrip", 0, "rstrip", 0, "normalized", 0, "special", 1, "normalizer",
        "type", "NFC", "pre_tokenizer", "type", "Sequence", "pretokenizers", "type", "Split",
        "pattern", "Regex", tokfx_qwen2_pattern, "behavior", "Isolated", "invert", 0, "type",
        "ByteLevel", "add_prefix_space", 0, "trim_offsets", 0, "use_regex", 0, "post_processor",
        "type", "ByteLevel", "add_prefix_space", 0, "trim_offsets", 0, "use_regex", 0, "decoder",
        "type", "ByteLevel", "add_prefix_space", 0, "trim_offsets", 0, "use_regex", 0, "model",
        "type", "BPE", "dropout", "unk_token", "continuing_subword_prefix", "",
        "end_of_word_suffix", "", "fuse_unk", 0, "byte_fallback", 0, "ignore_merges", 0, "vocab",
        vocab, "merges", "a b", "ab c", "\xc4\xa0 a");
    if (!root) fprintf(stderr, "base(): json_pack failed\n");
    return root;
}

static json_t *at(json_t *root, const char *path) { /* "model.vocab" style, objects only */
    char buf[128];
    snprintf(buf, sizeof buf, "%s", path);
    json_t *v = root;
    for (char *tok = strtok(buf, "."); v && tok; tok = strtok(NULL, "."))
        v = json_object_get(v, tok);
    return v;
}

static fm_status parse_json(json_t *root, const fm_tokenizer_limits *lim, fm_tokenizer **t,
                            fm_error *err) {
    char *text = json_dumps(root, JSON_COMPACT);
    fm_status st = fm_tokenizer_parse(text, strlen(text), LABEL, lim, t, err);
    free(text);
    return st;
}

/* Parses and expects status `want` with both substrings in the message (NULL: skip). */
static void expect(json_t *root, const fm_tokenizer_limits *lim, fm_status want, const char *s1,
                   const char *s2, const char *name) {
    fm_tokenizer *t = (fm_tokenizer *)&t;
    fm_error err;
    fm_status st = parse_json(root, lim, &t, &err);
    if (st != want) fprintf(stderr, "  case %s:\n", name);
    CHECK_STATUS(want, st, &err);
    if (want != FM_OK) {
        CHECK(t == NULL);
        CHECK_CONTAINS(err.msg, LABEL);
        if (s1) CHECK_CONTAINS(err.msg, s1);
        if (s2) CHECK_CONTAINS(err.msg, s2);
    }
    if (st == FM_OK) fm_tokenizer_free(t);
    json_decref(root);
}

#define SET(root, path, key, val) json_object_set_new(at(root, path), key, val)

/* ---- the whole file -------------------------------------------------------------------------- */

static void test_json_level(void) {
    fm_tokenizer *t = NULL;
    fm_error err;
    CHECK_STATUS(FM_ERR_JSON, fm_tokenizer_parse("{\"a\": ", 6, LABEL, NULL, &t, &err), &err);
    CHECK_CONTAINS(err.msg, LABEL ":1:");
    CHECK_STATUS(FM_ERR_CONFIG, fm_tokenizer_parse("[1]", 3, LABEL, NULL, &t, &err), &err);
    CHECK_CONTAINS(err.msg, "expected a JSON object");
    const char dup[] = "{\"model\": {\"vocab\": {\"a\": 1, \"a\": 2}}}";
    CHECK_STATUS(FM_ERR_JSON, fm_tokenizer_parse(dup, sizeof dup - 1, LABEL, NULL, &t, &err), &err);
    CHECK_CONTAINS(err.msg, "duplicate");
    /* nesting: 65 levels (our limit), and far past jansson's own parser depth */
    for (int depth = FM_JSON_MAX_DEPTH + 1; depth <= 5000; depth += 4934) {
        size_t n = (size_t)depth * 2 + 16;
        char *s = malloc(n);
        size_t k = (size_t)sprintf(s, "{\"x\":");
        for (int i = 1; i < depth; i++)
            s[k++] = '[';
        for (int i = 1; i < depth; i++)
            s[k++] = ']';
        s[k++] = '}';
        CHECK_STATUS(FM_ERR_LIMIT, fm_tokenizer_parse(s, k, LABEL, NULL, &t, &err), &err);
        CHECK_CONTAINS(err.msg, "nesting");
        free(s);
    }
    CHECK(t == NULL);
    CHECK_STATUS(FM_ERR_INVALID_ARG, fm_tokenizer_parse(NULL, 0, LABEL, NULL, &t, &err), &err);
    CHECK_STATUS(FM_ERR_INVALID_ARG, fm_tokenizer_parse("{}", 2, LABEL, NULL, NULL, &err), &err);
}

static void test_file_limits(void) {
    char *dir = fm_test_tmpdir("tok-errors");
    char path[4200];
    fm_tokenizer *t = NULL;
    fm_error err;
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    int fd = open(path, O_CREAT | O_WRONLY | O_TRUNC, 0644); /* sparse: no disk used */
    CHECK(fd >= 0 && ftruncate(fd, (off_t)FM_TOK_MAX_FILE_BYTES + 1) == 0);
    if (fd >= 0) close(fd);
    CHECK_STATUS(FM_ERR_LIMIT, fm_tokenizer_open(dir, &t, &err), &err);
    CHECK_CONTAINS(err.msg, "file size limit");
    CHECK_CONTAINS(err.msg, "tokenizer.json");
    fm_tokenizer_limits lim;
    fm_tokenizer_limits_init(&lim);
    lim.max_file_bytes = 10;
    CHECK_STATUS(FM_ERR_LIMIT, fm_tokenizer_parse("{\"model\": {}}", 13, LABEL, &lim, &t, &err),
                 &err);
    CHECK_CONTAINS(err.msg, "file size limit of 10");
    remove(path);
    CHECK_STATUS(FM_ERR_NOT_FOUND, fm_tokenizer_open(dir, &t, &err), &err);
    CHECK_CONTAINS(err.msg, "tokenizer.json");
    CHECK(t == NULL);
    fm_test_rmtree(dir);
    free(dir);
}

/* ---- top level and components --------------------------------------------------------------- */

static void test_components(void) {
    json_t *r;
    expect(base(), NULL, FM_OK, NULL, NULL, "base");
    r = base(), SET(r, "", "version", json_string("2.0"));
    expect(r, NULL, FM_ERR_UNSUPPORTED, "version", NULL, "version");
    r = base(), SET(r, "", "truncation", json_object());
    expect(r, NULL, FM_ERR_UNSUPPORTED, "truncation", NULL, "truncation");
    r = base(), SET(r, "", "padding", json_pack("{si}", "length", 8));
    expect(r, NULL, FM_ERR_UNSUPPORTED, "padding", NULL, "padding");
    r = base(), json_object_del(r, "model");
    expect(r, NULL, FM_ERR_CONFIG, "model", NULL, "no model");
    r = base(), SET(r, "model", "type", json_string("WordPiece"));
    expect(r, NULL, FM_ERR_UNSUPPORTED, "model.type", "WordPiece", "model type");
    r = base(), SET(r, "model", "dropout", json_real(0.1));
    expect(r, NULL, FM_ERR_UNSUPPORTED, "model.dropout", NULL, "dropout");
    r = base(), SET(r, "model", "dropout", json_real(0.0));
    expect(r, NULL, FM_OK, NULL, NULL, "dropout 0.0 is no dropout");
    r = base(), SET(r, "model", "byte_fallback", json_true());
    expect(r, NULL, FM_ERR_UNSUPPORTED, "model.byte_fallback", NULL, "byte_fallback");
    r = base(), SET(r, "model", "continuing_subword_prefix", json_string("##"));
    expect(r, NULL, FM_ERR_UNSUPPORTED, "model.continuing_subword_prefix", NULL, "prefix");
    r = base(), SET(r, "model", "end_of_word_suffix", json_string("</w>"));
    expect(r, NULL, FM_ERR_UNSUPPORTED, "model.end_of_word_suffix", NULL, "suffix");
    r = base(), SET(r, "model", "fuse_unk", json_string("yes"));
    expect(r, NULL, FM_ERR_CONFIG, "model.fuse_unk", NULL, "fuse_unk type");
    r = base(), SET(r, "", "normalizer", json_pack("{ss}", "type", "NFKC"));
    expect(r, NULL, FM_ERR_UNSUPPORTED, "normalizer.type", "NFKC", "NFKC");
    r = base(), SET(r, "", "normalizer",
                    json_pack("{ss s[{ss}{ss}]}", "type", "Sequence", "normalizers", "type", "NFC",
                              "type", "Lowercase"));
    expect(r, NULL, FM_ERR_UNSUPPORTED, "normalizer.normalizers[1].type", "Lowercase", "seq");
    r = base(), SET(r, "", "normalizer", json_null());
    expect(r, NULL, FM_OK, NULL, NULL, "no normalizer");
    json_t *many = json_array();
    for (int i = 0; i < 17; i++)
        json_array_append_new(many, json_pack("{ss}", "type", "NFC"));
    r = base(),
    SET(r, "", "normalizer", json_pack("{ss so}", "type", "Sequence", "normalizers", many));
    expect(r, NULL, FM_ERR_LIMIT, "normalizer", "steps limit", "17 normalizers");
    r = base(), SET(r, "", "decoder", json_null());
    expect(r, NULL, FM_ERR_UNSUPPORTED, "decoder", NULL, "no decoder");
    r = base(), SET(r, "", "decoder", json_pack("{ss}", "type", "WordPiece"));
    expect(r, NULL, FM_ERR_UNSUPPORTED, "decoder.type", "WordPiece", "decoder type");
    r = base(), SET(r, "", "post_processor",
                    json_pack("{ss s[{s{ss}} {s{ss}}]}", "type", "TemplateProcessing", "single",
                              "SpecialToken", "id", "<s>", "Sequence", "id", "A"));
    expect(r, NULL, FM_ERR_UNSUPPORTED, "post_processor.type", "BOS", "template adds a token");
    r = base(), SET(r, "", "post_processor",
                    json_pack("{ss s[{s{ss}}]}", "type", "TemplateProcessing", "single", "Sequence",
                              "id", "A"));
    expect(r, NULL, FM_OK, NULL, NULL, "template that adds nothing");
}

static json_t *split_of(json_t *r) {
    return json_array_get(at(r, "pre_tokenizer.pretokenizers"), 0);
}

static void test_pre_tokenizer(void) {
    json_t *r;
    r = base(), SET(r, "", "pre_tokenizer", json_null());
    expect(r, NULL, FM_ERR_UNSUPPORTED, "pre_tokenizer", NULL, "no pre-tokenizer");
    r = base(), SET(r, "", "pre_tokenizer", json_pack("{ss}", "type", "Whitespace"));
    expect(r, NULL, FM_ERR_UNSUPPORTED, "pre_tokenizer.type", "Whitespace", "whitespace");
    r = base(), json_object_set_new(split_of(r), "behavior", json_string("Removed"));
    expect(r, NULL, FM_ERR_UNSUPPORTED, "pre_tokenizer.pretokenizers[0].behavior", NULL, "beh");
    r = base(), json_object_set_new(split_of(r), "invert", json_true());
    expect(r, NULL, FM_ERR_UNSUPPORTED, "pretokenizers[0].invert", NULL, "invert");
    r = base(), json_object_set_new(split_of(r), "pattern", json_pack("{ss}", "Regex", "(a"));
    expect(r, NULL, FM_ERR_UNSUPPORTED, "pretokenizers[0].pattern", "PCRE2", "bad regex");
    r = base(), json_object_set_new(split_of(r), "pattern", json_pack("{si}", "Regex", 5));
    expect(r, NULL, FM_ERR_CONFIG, "pretokenizers[0].pattern", NULL, "pattern not a string");
    char *longpat = malloc(FM_TOK_MAX_REGEX_BYTES + 2);
    memset(longpat, 'a', FM_TOK_MAX_REGEX_BYTES + 1), longpat[FM_TOK_MAX_REGEX_BYTES + 1] = 0;
    r = base(), json_object_set_new(split_of(r), "pattern", json_pack("{ss}", "Regex", longpat));
    expect(r, NULL, FM_ERR_LIMIT, "pattern length limit", NULL, "long pattern");
    free(longpat);
    r = base(), json_object_set_new(json_array_get(at(r, "pre_tokenizer.pretokenizers"), 1),
                                    "add_prefix_space", json_true());
    expect(r, NULL, FM_ERR_UNSUPPORTED, "add_prefix_space", NULL, "prefix space");
    r = base(), json_array_remove(at(r, "pre_tokenizer.pretokenizers"), 1);
    expect(r, NULL, FM_ERR_UNSUPPORTED, "no ByteLevel", NULL, "no ByteLevel");
    r = base(), json_array_append(at(r, "pre_tokenizer.pretokenizers"), split_of(r));
    expect(r, NULL, FM_ERR_UNSUPPORTED, "pretokenizers[2]", "after ByteLevel", "split after BL");
    r = base();
    for (int i = 0; i < 16; i++)
        json_array_insert_new(at(r, "pre_tokenizer.pretokenizers"), 0,
                              json_pack("{ss s{ss} ss}", "type", "Split", "pattern", "Regex", "x",
                                        "behavior", "Isolated"));
    expect(r, NULL, FM_ERR_LIMIT, "steps limit", NULL, "too many splits");
}

/* ---- vocab, merges, added tokens ------------------------------------------------------------ */

static void test_vocab(void) {
    json_t *r;
    fm_tokenizer_limits small;
    fm_tokenizer_limits_init(&small);
    small.max_vocab = 300;
    r = base(), SET(r, "model", "vocab", json_array());
    expect(r, NULL, FM_ERR_CONFIG, "model.vocab", "expected an object", "vocab array");
    r = base(), SET(r, "model.vocab", "zz", json_integer(-1));
    expect(r, NULL, FM_ERR_CONFIG, "model.vocab[\"zz\"]", NULL, "negative id");
    r = base(), SET(r, "model.vocab", "zz", json_string("7"));
    expect(r, NULL, FM_ERR_CONFIG, "model.vocab[\"zz\"]", NULL, "string id");
    r = base(), SET(r, "model.vocab", "zz", json_integer(300));
    expect(r, &small, FM_ERR_LIMIT, "model.vocab[\"zz\"]", "vocab limit of 300", "id limit");
    r = base();
    for (int i = 0; i < 45; i++) {
        char k[16];
        snprintf(k, sizeof k, "x%d", i);
        SET(r, "model.vocab", k, json_integer(259 + i));
    }
    expect(r, &small, FM_ERR_LIMIT, "model.vocab", "vocab limit of 300", "count limit");
    r = base(), SET(r, "model.vocab", "zz", json_integer(5));
    expect(r, NULL, FM_ERR_CONFIG, "id 5 is given to both", NULL, "duplicate id");
    char *tok = malloc(FM_TOK_MAX_TOKEN_BYTES + 2);
    memset(tok, 'q', FM_TOK_MAX_TOKEN_BYTES + 1), tok[FM_TOK_MAX_TOKEN_BYTES + 1] = 0;
    r = base(), SET(r, "model.vocab", tok, json_integer(400));
    expect(r, NULL, FM_ERR_LIMIT, "model.vocab", "token length limit of 4096", "long token");
    free(tok);
}

static void set_merges(json_t *r, json_t *merges) {
    SET(r, "model", "merges", merges);
}

static void test_merges(void) {
    json_t *r;
    r = base(), set_merges(r, json_object());
    expect(r, NULL, FM_ERR_CONFIG, "model.merges", "expected an array", "merges object");
    r = base(), set_merges(r, json_pack("[sss]", "a b", "ab c d", "x y"));
    expect(r, NULL, FM_ERR_CONFIG, "model.merges[1]", "line 2", "three parts");
    r = base(), set_merges(r, json_pack("[ss]", "a b", "abc"));
    expect(r, NULL, FM_ERR_CONFIG, "model.merges[1]", "line 2", "no space");
    r = base(), set_merges(r, json_pack("[sss]", "#version: 0.2", "a b", "a  b"));
    expect(r, NULL, FM_ERR_CONFIG, "model.merges[2]", "line 2", "#version is not a line");
    r = base(), set_merges(r, json_pack("[sss]", "#version: 0.2", "a b", "ab c"));
    expect(r, NULL, FM_OK, NULL, NULL, "#version skipped");
    r = base(), set_merges(r, json_pack("[ss]", "a b", "ab zz"));
    expect(r, NULL, FM_ERR_CONFIG, "token \"zz\" is not in model.vocab", "line 2", "oov part");
    r = base(), set_merges(r, json_pack("[[ss][ss]]", "a", "b", "a", "c"));
    expect(r, NULL, FM_ERR_CONFIG, "token \"ac\" is not in model.vocab", "model.merges[1]",
           "oov merged");
    r = base(), set_merges(r, json_pack("[s[ss]]", "a b", "ab", "c"));
    expect(r, NULL, FM_ERR_CONFIG, "model.merges[1]", "like the entries before it", "mixed");
    r = base(), set_merges(r, json_pack("[[sss]]", "a", "b", "c"));
    expect(r, NULL, FM_ERR_CONFIG, "model.merges[0]", "pair of two strings", "three-element pair");
    r = base(), set_merges(r, json_pack("[i]", 5));
    expect(r, NULL, FM_ERR_CONFIG, "model.merges[0]", NULL, "number");
    fm_tokenizer_limits small;
    fm_tokenizer_limits_init(&small);
    small.max_merges = 2;
    expect(base(), &small, FM_ERR_LIMIT, "model.merges", "merges limit of 2", "merge count");
}

static json_t *added(int id, const char *content, bool special) {
    return json_pack("{si ss sb sb sb sb sb}", "id", id, "content", content, "single_word", 0,
                     "lstrip", 0, "rstrip", 0, "normalized", 0, "special", special);
}

static void test_added(void) {
    json_t *r;
    r = base(), SET(r, "", "added_tokens", json_object());
    expect(r, NULL, FM_ERR_CONFIG, "added_tokens", "expected an array", "not array");
    r = base(), json_array_append_new(at(r, "added_tokens"), json_pack("{ss}", "content", "x"));
    expect(r, NULL, FM_ERR_CONFIG, "added_tokens[1]", "\"id\"", "no id");
    r = base(), json_array_append_new(at(r, "added_tokens"), added(260, "", true));
    expect(r, NULL, FM_ERR_CONFIG, "added_tokens[1].content", NULL, "empty content");
    r = base(), json_array_append_new(at(r, "added_tokens"), added(300, "</s>", true));
    expect(r, NULL, FM_ERR_CONFIG, "added_tokens[1]", "tokenizers gives this token id 260",
           "id mismatch");
    r = base(), json_array_append_new(at(r, "added_tokens"), added(260, "<s>", true));
    expect(r, NULL, FM_ERR_CONFIG, "added_tokens[1]", "repeats added_tokens[0]", "dup content");
    r = base(), json_array_append_new(at(r, "added_tokens"), added(0, "ab", false));
    expect(r, NULL, FM_ERR_CONFIG, "added_tokens[1]", "id 256", "vocab content, wrong id");
    r = base(), json_array_append_new(at(r, "added_tokens"), added(256, "ab", false));
    expect(r, NULL, FM_OK, NULL, NULL, "vocab content keeps its id");
    r = base(),
    json_object_set_new(json_array_get(at(r, "added_tokens"), 0), "lstrip", json_integer(1));
    expect(r, NULL, FM_ERR_CONFIG, "added_tokens[0].lstrip", NULL, "flag type");
    /* a vocab with a hole: 258 entries, ids 0..256 and 258; tokenizers gives the next added
     * token id 258, which is a vocab id */
    r = base(), json_object_del(at(r, "model.vocab"), "abc");
    set_merges(r, json_pack("[ss]", "a b", "\xc4\xa0 a"));
    json_object_set_new(json_array_get(at(r, "added_tokens"), 0), "id", json_integer(258));
    expect(r, NULL, FM_ERR_CONFIG, "added_tokens[0]", "already model.vocab's", "id collision");
    fm_tokenizer_limits small;
    fm_tokenizer_limits_init(&small);
    small.max_added = 1;
    r = base(), json_array_append_new(at(r, "added_tokens"), added(260, "</s>", true));
    expect(r, &small, FM_ERR_LIMIT, "added_tokens", "added tokens limit of 1", "count");
    char *tok = malloc(FM_TOK_MAX_TOKEN_BYTES + 2);
    memset(tok, 'q', FM_TOK_MAX_TOKEN_BYTES + 1), tok[FM_TOK_MAX_TOKEN_BYTES + 1] = 0;
    r = base(), json_array_append_new(at(r, "added_tokens"), added(260, tok, true));
    expect(r, NULL, FM_ERR_LIMIT, "added_tokens[1].content", "token length limit", "long");
    free(tok);
    /* the default limit of added tokens itself, just past it */
    r = base();
    json_t *list = at(r, "added_tokens");
    for (unsigned i = 1; i <= FM_TOK_MAX_ADDED; i++) {
        char c[24];
        snprintf(c, sizeof c, "<t%u>", i);
        json_array_append_new(list, added((int)(259 + i), c, false));
    }
    expect(r, NULL, FM_ERR_LIMIT, "added_tokens", "added tokens limit of 65536", "default");
}

/* ---- BPE details by hand ------------------------------------------------------------------ */

static int32_t *encode(json_t *root, const char *text, size_t *n, fm_status *st) {
    fm_tokenizer *t = NULL;
    fm_error err;
    int32_t *ids = NULL;
    *n = 0;
    *st = parse_json(root, NULL, &t, &err);
    CHECK_OK(*st, &err);
    if (*st == FM_OK) *st = fm_tokenizer_encode(t, text, strlen(text), NULL, 0, &ids, n, &err);
    fm_tokenizer_free(t);
    json_decref(root);
    return ids;
}

static void expect_ids(json_t *root, const char *text, const int32_t *want, size_t nwant,
                       const char *name) {
    size_t n;
    fm_status st;
    int32_t *ids = encode(root, text, &n, &st);
    bool ok = st == FM_OK && n == nwant && !memcmp(ids, want, n * sizeof *ids);
    CHECK_MSG(ok, "%s: \"%s\" -> %zu ids (first %d), expected %zu", name, text, n, n ? ids[0] : -1,
              nwant);
    fm_free(ids);
}

/* After a vocab change: "<s>" gets the id tokenizers would give it (the vocab entry count). */
static json_t *renumber(json_t *r) {
    json_object_set_new(json_array_get(at(r, "added_tokens"), 0), "id",
                        json_integer((json_int_t)json_object_size(at(r, "model.vocab"))));
    return r;
}

/* base() without the vocab entry "z" (the byte 'z' has no token; "Ġa" takes its id). */
static json_t *without_z(const char *unk, bool fuse) {
    json_t *r = base();
    json_object_del(at(r, "model.vocab"), "z");
    SET(r, "model.vocab",
        "\xc4\xa0"
        "a",
        json_integer('z'));
    if (unk) SET(r, "model", "unk_token", json_string(unk));
    SET(r, "model", "fuse_unk", json_boolean(fuse));
    return renumber(r);
}

/* In base() the byte tokens have the byte's value as id. */
static void test_bpe_by_hand(void) {
    /* "abc abc" -> "abc", " abc"; a+b (rank 0), then ab+c (rank 1); Ġ+a (rank 2) comes too late */
    expect_ids(base(), "abc abc", (int32_t[]){257, ' ', 257}, 3, "rank order");
    /* " ab": Ġ a b; a+b has the lower rank, so Ġ+a never applies */
    expect_ids(base(), " ab", (int32_t[]){' ', 256}, 2, "lowest rank first");
    /* " a": only Ġ+a applies */
    expect_ids(base(), " a", (int32_t[]){258}, 1, "single merge");
    /* ignore_merges: a piece that is a vocab entry is taken whole, merges or not */
    json_t *r = base();
    SET(r, "model.vocab",
        "\xc4\xa0"
        "ab",
        json_integer(259));
    SET(r, "model", "ignore_merges", json_true());
    expect_ids(renumber(r), " ab", (int32_t[]){259}, 1, "ignore_merges");
    /* bytes missing from the vocab: dropped without unk_token, unk (fused or not) with it */
    /* dropped bytes leave no symbol, so their neighbours meet and merge (as in tokenizers) */
    expect_ids(without_z(NULL, false), "azzb", (int32_t[]){256}, 1, "dropped");
    expect_ids(without_z("Q", false), "azzb", (int32_t[]){'a', 'Q', 'Q', 'b'}, 4, "unk");
    expect_ids(without_z("Q", true), "azzb", (int32_t[]){'a', 'Q', 'b'}, 3, "fuse_unk");
    size_t n;
    fm_status st;
    fm_free(encode(without_z("<unk>", false), "z", &n, &st));
    CHECK_STATUS(FM_ERR_CONFIG, st, NULL);
}

static void test_other_splits(void) {
    /* a literal String pattern: "b" is its own piece, so a+b never meets */
    json_t *r = base();
    json_object_set_new(split_of(r), "pattern", json_pack("{ss}", "String", "b"));
    expect_ids(r, "abc", (int32_t[]){'a', 'b', 'c'}, 3, "String split");
    /* GPT-2: ByteLevel with use_regex and no Split: "x", " abc" -> x, Ġ, abc */
    r = base();
    SET(r, "", "pre_tokenizer",
        json_pack("{ss sb sb sb}", "type", "ByteLevel", "add_prefix_space", 0, "trim_offsets", 0,
                  "use_regex", 1));
    expect_ids(r, "x abc", (int32_t[]){'x', ' ', 257}, 3, "GPT-2 regex");
    /* a catastrophic pattern: PCRE2's match limit stops it with an error, not a hang */
    r = base();
    json_object_set_new(split_of(r), "pattern", json_pack("{ss}", "Regex", "(a+)+$"));
    size_t n;
    fm_status st;
    fm_free(encode(r, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa!", &n, &st));
    CHECK_STATUS(FM_ERR_LIMIT, st, NULL);
}

int main(void) {
    RUN(test_json_level);
    RUN(test_file_limits);
    RUN(test_components);
    RUN(test_pre_tokenizer);
    RUN(test_vocab);
    RUN(test_merges);
    RUN(test_added);
    RUN(test_bpe_by_hand);
    RUN(test_other_splits);
    TEST_END();
}
