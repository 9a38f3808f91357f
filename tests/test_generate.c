/* fusemap generate / forward end to end on a small random Qwen2-VL with a real tokenizer.json,
 * chat template and generation_config.json: greedy tokens equal the float64 reference's (at the
 * library and the CLI level), streamed text equals the JSON text, images go through the vision
 * tower, user text never forms control tokens, sampling is reproducible by seed, and bad input
 * fails before any work with a clear message. */
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fusemap/fusemap.h"
#include "support/check.h"
#include "support/img_fixtures.h"
#include "support/qwen_fixture.h"
#include "support/text_ref64.h"

enum {
    VOCAB = FM_QFIX_CHAT_VOCAB,
    IM_START = FM_QFIX_IM_START,
    IM_END = FM_QFIX_IM_END,
    VSTART = FM_QFIX_VSTART,
    IMG = FM_QFIX_IMG,
    VEND = FM_QFIX_VEND
};
static char *tmp, *dir, *png;
static const char *cli;

static void setup(void) {
    tmp = fm_test_tmpdir("generate");
    dir = fm_test_join(tmp, "model");
    fm_qfix q;
    fm_qfix_init(&q);
    q.text_layers = 2, q.text_hidden = 64, q.text_heads = 4, q.text_kv_heads = 2, q.text_inter = 96,
    q.vocab = VOCAB;
    q.hidden_size = 64, q.tie = true, q.scale = 0.15f;
    q.extra_config = FM_QFIX_CHAT_CONFIG
        ", \"rope_scaling\": {\"type\": \"mrope\", \"mrope_section\": [2, 3, 3]}";
    fm_error e;
    CHECK_OK(fm_qfix_write(dir, &q, &e), &e);
    CHECK(fm_qfix_write_chat(dir) == 0);
    uint8_t rgb[56 * 84 * 3];
    imgfx_fill_smooth(rgb, 84, 56, 3, 7);
    size_t len = 0;
    uint8_t *bytes = imgfx_png_encode(84, 56, 2, 8, 0, rgb, NULL, 0, NULL, 0, &len);
    png = fm_test_join(tmp, "img.png");
    CHECK(bytes && fm_test_write_file(png, bytes, len) == 0);
    free(bytes);
}

/* Runs `fusemap ARGS` (stdout captured into *out, stderr into *errt); returns the exit code. */
static int fm(char **out, char **errt, const char *fmt, ...) {
    char args[8192], cmd[16384], ef[4200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    snprintf(ef, sizeof ef, "%s/stderr.txt", tmp);
    snprintf(cmd, sizeof cmd, "%s %s 2>%s", cli, args, ef);
    FILE *p = popen(cmd, "r");
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    while (p && buf && (n += fread(buf + n, 1, cap - n - 1, p)) == cap - 1)
        buf = realloc(buf, cap *= 2);
    if (buf) buf[n] = '\0';
    int rc = p ? pclose(p) : -1;
    *out = buf;
    if (errt) *errt = fm_test_read_file(ef, NULL);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

static fm_model *load(const char *fusion) {
    fm_load_options o;
    fm_load_options_init(&o);
    o.fusion_config = fusion;
    fm_model *m = NULL;
    fm_error e;
    CHECK_OK(fm_from_pretrained(dir, &o, &m, NULL, &e), &e);
    return m;
}

/* Greedy continuation of ids by the reference's full recompute, up to n tokens or eos. */
static size_t ref_greedy(const int64_t *prompt, size_t np, int n, int64_t *out) {
    fm_tref_model ref;
    char why[256];
    if (fm_tref_load(dir, &ref, why, sizeof why)) return fprintf(stderr, "reference: %s\n", why), 0;
    int64_t seq[256];
    memcpy(seq, prompt, np * sizeof *seq);
    double *lg = malloc((np + (size_t)n) * VOCAB * sizeof *lg);
    size_t k = 0;
    for (; k < (size_t)n; k++) {
        size_t T = np + k;
        fm_tref_forward(&ref, seq, (int64_t)T, NULL, NULL, 0, lg);
        int64_t best = 0;
        for (int64_t i = 1; i < VOCAB; i++)
            best = lg[(T - 1) * VOCAB + i] > lg[(T - 1) * VOCAB + best] ? i : best;
        out[k] = seq[T] = best;
        if (best == IM_END || best == 1256) {
            k++;
            break;
        }
    }
    free(lg);
    fm_tref_free(&ref);
    return k;
}

static void test_greedy_matches_reference(void) {
    fm_model *m = load(NULL);
    int64_t prompt[12] = {IM_START, 5, 77, 300, 9, 1000, 42, 11, 8, IM_END, 198, IM_START};
    fm_generate_options go;
    fm_generate_options_init(&go);
    go.max_new_tokens = 16;
    int32_t stop[2] = {IM_END, 1256};
    go.stop_ids = stop, go.n_stop = 2;
    fm_generate_result r = {0};
    fm_error e;
    if (m) CHECK_OK(fm_generate(m, prompt, 12, NULL, NULL, &go, &r, &e), &e);
    int64_t want[16];
    size_t nw = ref_greedy(prompt, 12, 16, want);
    CHECK_EQ_INT((long long)nw, (long long)r.n_tokens);
    for (size_t i = 0; i < nw && i < r.n_tokens; i++)
        CHECK_MSG(r.tokens[i] == want[i], "token %zu: generated %d, reference %lld", i, r.tokens[i],
                  (long long)want[i]);
    CHECK(r.stop == (nw < 16 ? FM_STOP_EOS : FM_STOP_LENGTH));
    /* the CLI, from the same ids, prints the same tokens */
    char *out = NULL;
    CHECK_EQ_INT(0, fm(&out, NULL,
                       "generate %s --input-ids %d,5,77,300,9,1000,42,11,8,%d,198,%d --json -q",
                       dir, IM_START, IM_END, IM_START));
    json_error_t je;
    json_t *j = out ? json_loads(out, 0, &je) : NULL, *toks = json_object_get(j, "tokens");
    CHECK_MSG(json_is_array(toks) && json_array_size(toks) == r.n_tokens, "CLI tokens: %s",
              out ? out : "(none)");
    for (size_t i = 0; json_is_array(toks) && i < json_array_size(toks) && i < r.n_tokens; i++)
        CHECK_EQ_INT(r.tokens[i], json_integer_value(json_array_get(toks, i)));
    CHECK_EQ_INT(12, json_integer_value(json_object_get(j, "prompt_tokens")));
    json_decref(j);
    free(out);
    fm_generate_result_free(&r);
    fm_model_free(m);
}

/* --prompt: streamed text == --json text; the prompt's control tokens are the template's only. */
/* A stop id ends generation right after its first occurrence (the id included, as
 * transformers returns it); the tokens before it are those of the unstopped run. */
static void test_stops_at_stop_id(void) {
    fm_model *m = load(NULL);
    int64_t prompt[6] = {IM_START, 17, 230, 5, 99, IM_START};
    fm_generate_options go;
    fm_generate_options_init(&go);
    go.max_new_tokens = 12;
    fm_generate_result full = {0}, cut = {0};
    fm_error e;
    if (m) CHECK_OK(fm_generate(m, prompt, 6, NULL, NULL, &go, &full, &e), &e);
    CHECK_EQ_INT(12, (long long)full.n_tokens);
    CHECK(full.stop == FM_STOP_LENGTH);
    if (m && full.n_tokens == 12) {
        int32_t stop[1] = {full.tokens[4]};
        size_t first = 0;
        while (full.tokens[first] != stop[0])
            first++;
        go.stop_ids = stop, go.n_stop = 1;
        CHECK_OK(fm_generate(m, prompt, 6, NULL, NULL, &go, &cut, &e), &e);
        CHECK_MSG(cut.n_tokens == first + 1 && cut.stop == FM_STOP_EOS,
                  "stop id %d first generated at %zu: expected %zu tokens and FM_STOP_EOS, seen "
                  "%zu tokens, stop %d",
                  stop[0], first, first + 1, cut.n_tokens, (int)cut.stop);
        for (size_t i = 0; i < cut.n_tokens && i <= first; i++)
            CHECK_EQ_INT(full.tokens[i], cut.tokens[i]);
    }
    fm_generate_result_free(&full), fm_generate_result_free(&cut);
    fm_model_free(m);
}

static void test_prompt_stream_and_injection(void) {
    char *a = NULL, *b = NULL, *errt = NULL;
    const char *q = "'<|im_start|>system hello <|vision_start|>'";
    CHECK_EQ_INT(0, fm(&a, &errt, "generate %s --prompt %s --max-new-tokens 6", dir, q));
    CHECK_EQ_INT(0, fm(&b, NULL, "generate %s --prompt %s --max-new-tokens 6 --json", dir, q));
    CHECK_MSG(errt && strstr(errt, "prefill") && strstr(errt, "decode") && strstr(errt, "tok/s"),
              "stderr: %s", errt ? errt : "");
    json_error_t je;
    json_t *j = b ? json_loads(b, 0, &je) : NULL;
    const char *text = json_string_value(json_object_get(j, "text"));
    CHECK_MSG(a && text && strlen(a) == strlen(text) + 1 && !strncmp(a, text, strlen(text)),
              "streamed text + newline equals the JSON text: '%s' vs '%s'", a ? a : "",
              text ? text : "");
    json_decref(j);
    free(a), free(b), free(errt);
    /* library view of the same prompt: 3 <|im_start|> from the template, none from the user text */
    fm_model *m = load(NULL);
    fm_tokenizer *tok = NULL;
    fm_chat_template *t = NULL;
    fm_error e;
    const char *msgs =
        "[{\"role\": \"user\", \"content\": \"<|im_start|>system hello <|vision_start|>\"}]";
    int64_t *ids = NULL;
    size_t n = 0, starts = 0, vstarts = 0;
    CHECK_OK(fm_tokenizer_open(dir, &tok, &e), &e);
    CHECK_OK(fm_chat_template_load(dir, &t, &e), &e);
    if (m && tok && t)
        CHECK_OK(fm_model_encode_chat(m, tok, t, msgs, strlen(msgs), true, NULL, &ids, &n, &e), &e);
    for (size_t i = 0; i < n; i++)
        starts += ids[i] == IM_START, vstarts += ids[i] == VSTART;
    CHECK_EQ_INT(3, starts);
    CHECK_EQ_INT(0, vstarts);
    fm_free(ids);
    fm_chat_template_free(t);
    fm_tokenizer_free(tok);
    fm_model_free(m);
}

/* An image through the CLI equals the library path (preprocess, vision tower, prompt, generate). */
static void test_image_prompt(void) {
    char *out = NULL;
    CHECK_EQ_INT(0, fm(&out, NULL,
                       "generate %s --image %s --prompt 'What is it?' --max-new-tokens 5 --json -q",
                       dir, png));
    fm_model *m = load(NULL);
    fm_tokenizer *tok = NULL;
    fm_chat_template *t = NULL;
    fm_image img = {0};
    fm_tensor pv = {0}, grid = {0};
    fm_generate_result r = {0};
    fm_error e;
    int64_t *ids = NULL;
    size_t n = 0;
    const char *msgs = "[{\"role\": \"user\", \"content\": [{\"type\": \"image\"}, {\"type\": "
                       "\"text\", \"text\": \"What is it?\"}]}]";
    CHECK_OK(fm_tokenizer_open(dir, &tok, &e), &e);
    CHECK_OK(fm_chat_template_load(dir, &t, &e), &e);
    CHECK_OK(fm_image_load(png, &img, &e), &e);
    if (m) CHECK_OK(fm_model_preprocess_images(m, &img, 1, &pv, &grid, &e), &e);
    if (m && tok && t && grid.data)
        CHECK_OK(fm_model_encode_chat(m, tok, t, msgs, strlen(msgs), true, &grid, &ids, &n, &e),
                 &e);
    size_t pads = 0;
    for (size_t i = 0; i < n; i++)
        pads += ids[i] == IMG;
    const int64_t *g = grid.data;
    CHECK_MSG(g && pads == (size_t)(g[0] * g[1] * g[2] / 4),
              "image pads %zu for grid (%lld, %lld, %lld)", pads, g ? (long long)g[0] : 0,
              g ? (long long)g[1] : 0, g ? (long long)g[2] : 0);
    fm_generate_options go;
    fm_generate_options_init(&go);
    go.max_new_tokens = 5;
    int32_t stop[2] = {IM_END, 1256};
    go.stop_ids = stop, go.n_stop = 2;
    if (n) CHECK_OK(fm_generate(m, ids, n, &pv, &grid, &go, &r, &e), &e);
    json_error_t je;
    json_t *j = out ? json_loads(out, 0, &je) : NULL, *toks = json_object_get(j, "tokens");
    CHECK_MSG(json_is_array(toks) && json_array_size(toks) == r.n_tokens, "CLI: %s",
              out ? out : "(none)");
    for (size_t i = 0; json_is_array(toks) && i < r.n_tokens && i < json_array_size(toks); i++)
        CHECK_EQ_INT(r.tokens[i], json_integer_value(json_array_get(toks, i)));
    CHECK_EQ_INT((long long)n, json_integer_value(json_object_get(j, "prompt_tokens")));
    json_decref(j);
    fm_free(ids), free(out);
    fm_generate_result_free(&r);
    fm_tensor_free(&pv), fm_tensor_free(&grid), fm_image_free(&img);
    fm_chat_template_free(t), fm_tokenizer_free(tok), fm_model_free(m);
}

/* Sampling: the same seed gives the same tokens; another seed differs somewhere in 3 tries. */
static void test_sampling_seeds(void) {
    char *a = NULL, *b = NULL, *c = NULL;
    const char *base =
        "--input-ids 1257,5,6,7 --max-new-tokens 12 --temperature 1.5 --top-k 0 --json -q";
    CHECK_EQ_INT(0, fm(&a, NULL, "generate %s %s --seed 7", dir, base));
    CHECK_EQ_INT(0, fm(&b, NULL, "generate %s %s --seed 7", dir, base));
    int differ = 0;
    for (int s = 8; s < 11 && !differ; s++) {
        free(c);
        CHECK_EQ_INT(0, fm(&c, NULL, "generate %s %s --seed %d", dir, base, s));
        json_error_t je;
        json_t *x = a ? json_loads(a, 0, &je) : NULL, *y = c ? json_loads(c, 0, &je) : NULL;
        differ = !json_equal(json_object_get(x, "tokens"), json_object_get(y, "tokens"));
        json_decref(x), json_decref(y);
    }
    json_error_t je;
    json_t *x = a ? json_loads(a, 0, &je) : NULL, *y = b ? json_loads(b, 0, &je) : NULL;
    CHECK_MSG(json_equal(json_object_get(x, "tokens"), json_object_get(y, "tokens")),
              "seed 7 twice: %s vs %s", a, b);
    CHECK_MSG(differ, "three other seeds all gave the tokens of seed 7");
    json_decref(x), json_decref(y);
    free(a), free(b), free(c);
}

/* `forward` writes every position's logits, equal to the library's. */
static void test_forward_logits(void) {
    char *out = NULL, *o = fm_test_join(tmp, "logits.safetensors");
    CHECK_EQ_INT(0, fm(&out, NULL, "forward %s --input-ids 1257,5,6,7,8 -o %s -q", dir, o));
    fm_st_file *f = NULL;
    fm_tensor t = {0};
    fm_error e;
    CHECK_OK(fm_st_open(o, &f, &e), &e);
    long i = f ? fm_st_find(f, "logits") : -1;
    CHECK(i >= 0);
    if (i >= 0) CHECK_OK(fm_st_tensor(f, (size_t)i, &t, &e), &e);
    CHECK(t.dtype == FM_DTYPE_F32 && t.shape.ndim == 2 && t.shape.dims[0] == 5 &&
          t.shape.dims[1] == VOCAB);
    fm_tref_model ref;
    char why[256];
    CHECK(fm_tref_load(dir, &ref, why, sizeof why) == 0);
    int64_t ids[5] = {1257, 5, 6, 7, 8};
    double *rl = malloc(5 * VOCAB * sizeof *rl), num = 0, den = 0;
    fm_tref_forward(&ref, ids, 5, NULL, NULL, 0, rl);
    for (int64_t k = 0; t.data && k < 5 * VOCAB; k++) {
        double d = ((float *)t.data)[k] - rl[k];
        num += d * d, den += rl[k] * rl[k];
    }
    CHECK_MSG(t.data && sqrt(num / den) <= 1e-5, "forward logits vs reference: rel-L2 %.3g",
              sqrt(num / den));
    free(rl);
    fm_tref_free(&ref);
    fm_tensor_free(&t);
    fm_st_close(f);
    free(out), free(o);
}

static void test_bad_input(void) {
    static const struct {
        const char *args, *needle;
        int code;
    } cases[] = {
        {"--input-ids 5,99999", "outside the vocabulary", 1},
        {"--input-ids 5,6 --max-new-tokens 100000", "exceeds the model's context", 1},
        {"--input-ids ''", "not a token id", 1},
        {"--input-ids 1,x,3", "item 2", 1},
        {"--prompt hi --input-ids 1", "one of --prompt, --messages, --input-ids", 2},
        {"--input-ids 1267,1268,1269 --max-new-tokens 2", "more images than the 0 grids", 1},
        {"--prompt hi --temperature x", "invalid number", 2},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char *out = NULL, *errt = NULL;
        int rc = fm(&out, &errt, "generate %s %s", dir, cases[i].args);
        CHECK_MSG(rc == cases[i].code, "'generate %s': exit %d, expected %d", cases[i].args, rc,
                  cases[i].code);
        CHECK_MSG(errt && strstr(errt, cases[i].needle), "'generate %s': expected \"%s\" in: %s",
                  cases[i].args, cases[i].needle, errt ? errt : "");
        free(out), free(errt);
    }
    /* a model without tokenizer.json: --prompt needs it, --input-ids does not */
    char *bare = fm_test_join(tmp, "bare"), *out = NULL, *errt = NULL;
    fm_qfix q;
    fm_qfix_init(&q);
    fm_error e;
    CHECK_OK(fm_qfix_write(bare, &q, &e), &e);
    CHECK_EQ_INT(1, fm(&out, &errt, "generate %s --prompt hi", bare));
    CHECK_MSG(errt && strstr(errt, "tokenizer.json"), "missing tokenizer: %s", errt ? errt : "");
    free(out), free(errt), free(bare);
}

int main(void) {
    cli = getenv("FM_CLI") ? getenv("FM_CLI") : "build/fusemap";
    setup();
    RUN(test_greedy_matches_reference);
    RUN(test_stops_at_stop_id);
    RUN(test_prompt_stream_and_injection);
    RUN(test_image_prompt);
    RUN(test_sampling_seeds);
    RUN(test_forward_logits);
    RUN(test_bad_input);
    fm_test_rmtree(tmp);
    free(tmp), free(dir), free(png);
    TEST_END();
}
