/* Batched generation (fm_batch) on a small random Qwen2-VL: sequences started at different steps
 * (prefills between decode steps), greedy and seeded sampling, an image prompt, more running
 * sequences than one decode forward takes, a sequence cancelled midway and its slot reused:
 * every sequence's tokens equal fm_generate's for it alone, bit for bit; bad starts fail without
 * claiming a slot. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fusemap/fusemap.h"
#include "support/check.h"
#include "support/img_fixtures.h"
#include "support/qwen_fixture.h"

enum { VOCAB = 1280, IMG = 1268, VSTART = 1267, VEND = 1269, MAXP = 24 };
static char *tmp, *dir;
static fm_model *model;
static fm_tensor pv, grid; /* one preprocessed image */

/* One request: its prompt and options, its tokens alone (fm_generate) and batched. */
typedef struct req {
    int64_t ids[MAXP + 64];
    size_t n;
    bool image;
    fm_generate_options o;
    fm_generate_result alone, batched;
    int seq;
    int cancel_after; /* on_token returns false at this token (0: never) */
    int seen;
    /* FNV-1a of each step's logits bytes: alone [0], batched [1] */
    uint64_t logit_hash[2][128];
    int n_hash[2], phase;
} req;

static void on_logits(void *ctx, const float *logits, int64_t vocab) {
    req *r = ctx;
    uint64_t h = 1469598103934665603ull;
    const unsigned char *p = (const unsigned char *)logits;
    for (int64_t i = 0; i < vocab * 4; i++)
        h = (h ^ p[i]) * 1099511628211ull;
    if (r->n_hash[r->phase] < 128) r->logit_hash[r->phase][r->n_hash[r->phase]++] = h;
}

static bool on_token(void *ctx, int32_t id, const char *text, size_t len) {
    req *r = ctx;
    (void)text, (void)len;
    if (id >= 0) r->seen++;
    return !(r->cancel_after && r->seen >= r->cancel_after);
}

static void setup(void) {
    tmp = fm_test_tmpdir("batch");
    dir = fm_test_join(tmp, "model");
    fm_qfix q;
    fm_qfix_init(&q);
    q.text_layers = 2, q.text_hidden = 64, q.text_heads = 4, q.text_kv_heads = 2, q.text_inter = 96,
    q.vocab = VOCAB, q.hidden_size = 64, q.tie = true, q.scale = 0.15f;
    q.extra_config =
        "\"image_token_id\": 1268, \"vision_start_token_id\": 1267, \"vision_end_token_id\": 1269, "
        "\"video_token_id\": 1270, \"eos_token_id\": 1258, "
        "\"rope_scaling\": {\"type\": \"mrope\", \"mrope_section\": [2, 3, 3]}";
    fm_error e;
    CHECK_OK(fm_qfix_write(dir, &q, &e), &e);
    fm_load_options lo;
    fm_load_options_init(&lo);
    CHECK_OK(fm_from_pretrained(dir, &lo, &model, NULL, &e), &e);
    fm_image img = {0};
    if (model) CHECK_OK(fm_image_alloc(&img, 84, 56, &e), &e);
    if (img.data) imgfx_fill_smooth(img.data, 84, 56, 3, 5);
    if (img.data) CHECK_OK(fm_model_preprocess_images(model, &img, 1, &pv, &grid, &e), &e);
    fm_image_free(&img);
}

/* Request i: a prompt of its own (with the image when `image`), greedy or seeded sampling. */
static void make_req(req *r, int i, bool image, int max_new) {
    memset(r, 0, sizeof *r);
    uint64_t s = 0x9e3779b97f4a7c15ull * (uint64_t)(i + 1);
    r->n = 0;
    if (image) {
        const int64_t *g = grid.data;
        int64_t pads = g[0] * g[1] * g[2] / 4;
        r->ids[r->n++] = VSTART;
        for (int64_t k = 0; k < pads && r->n < MAXP + 60; k++)
            r->ids[r->n++] = IMG;
        r->ids[r->n++] = VEND;
    }
    for (int k = 0; k < 3 + i % 9; k++)
        r->ids[r->n++] = (int64_t)((s >> (5 * k)) % 1200);
    r->image = image;
    fm_generate_options_init(&r->o);
    r->o.max_new_tokens = max_new;
    if (i % 2) {
        r->o.sampling.do_sample = true, r->o.sampling.temperature = 1.3, r->o.sampling.top_k = 0,
        r->o.sampling.seed = (uint64_t)i * 7 + 1;
    }
    r->o.on_token = on_token, r->o.on_logits = on_logits, r->o.ctx = r;
    r->seq = -1;
}

static void run_alone(req *r) {
    fm_error e;
    int cancel = r->cancel_after;
    r->cancel_after = 0;
    CHECK_OK(fm_generate(model, r->ids, r->n, r->image ? &pv : NULL, r->image ? &grid : NULL, &r->o,
                         &r->alone, &e),
             &e);
    r->cancel_after = cancel, r->seen = 0, r->phase = 1;
}

static void start(fm_batch *b, req *r) {
    fm_error e;
    CHECK_OK(fm_batch_start(b, r->ids, r->n, r->image ? &pv : NULL, r->image ? &grid : NULL, &r->o,
                            &r->seq, &e),
             &e);
    CHECK(r->seq >= 0);
}

static void end(fm_batch *b, req *r) {
    fm_error e;
    CHECK_OK(fm_batch_end(b, r->seq, &r->batched, &e), &e);
    r->seq = -1;
}

/* The batched tokens equal the lone ones (a prefix of them when cancelled). */
static void compare(const req *r, int i) {
    const fm_generate_result *a = &r->alone, *b = &r->batched;
    bool cancelled = b->stop == FM_STOP_CANCELLED;
    CHECK_MSG(cancelled ? b->n_tokens <= a->n_tokens : b->n_tokens == a->n_tokens,
              "request %d: %zu tokens batched, %zu alone (stop %d vs %d)", i, b->n_tokens,
              a->n_tokens, (int)b->stop, (int)a->stop);
    if (!cancelled) CHECK_EQ_INT(a->stop, b->stop);
    CHECK_EQ_INT(a->prompt_tokens, b->prompt_tokens);
    for (size_t k = 0; k < a->n_tokens && k < b->n_tokens; k++)
        if (a->tokens[k] != b->tokens[k]) {
            CHECK_MSG(0, "request %d token %zu: batched %d, alone %d", i, k, b->tokens[k],
                      a->tokens[k]);
            break;
        }
    /* the logits of every step, bit for bit: no row depends on the others */
    CHECK_EQ_INT(r->n_hash[0] >= (int)b->n_tokens ? (int)b->n_tokens : -1, r->n_hash[1]);
    for (int k = 0; k < r->n_hash[1] && k < r->n_hash[0]; k++)
        if (r->logit_hash[0][k] != r->logit_hash[1][k]) {
            CHECK_MSG(0, "request %d step %d: the logits differ from the lone run's", i, k);
            break;
        }
}

/* Four slots; starts between steps, a cancel by the caller and one by on_token, slot reuse. */
static void test_interleaved_equals_alone(void) {
    REQUIRE(model && grid.data);
    enum { N = 7 };
    req r[N];
    for (int i = 0; i < N; i++) {
        make_req(&r[i], i, i == 2 || i == 5, 20 + 3 * i);
        run_alone(&r[i]);
    }
    r[4].cancel_after = 5;
    fm_batch_options bo;
    fm_batch_options_init(&bo);
    bo.slots = 4, bo.capacity = 200;
    fm_batch *b = NULL;
    fm_error e;
    REQUIRE_OK(fm_batch_new(model, &bo, &b, &e), &e);
    start(b, &r[0]), start(b, &r[1]);
    for (int k = 0; k < 3; k++)
        CHECK_OK(fm_batch_step(b, &e), &e);
    start(b, &r[2]);
    CHECK_OK(fm_batch_step(b, &e), &e);
    start(b, &r[3]);
    CHECK_EQ_INT(0, fm_batch_free_slots(b));
    int none = 5;
    CHECK_STATUS(FM_ERR_LIMIT, fm_batch_start(b, r[4].ids, r[4].n, NULL, NULL, &r[4].o, &none, &e),
                 &e);
    CHECK_EQ_INT(-1, none);
    CHECK_OK(fm_batch_step(b, &e), &e);
    end(b, &r[1]); /* cancelled by the caller midway (or already finished) */
    start(b, &r[4]);
    int next = 5;
    while (fm_batch_running(b) || next < N) {
        for (int i = 0; i < N; i++)
            if (r[i].seq >= 0 && fm_batch_finished(b, r[i].seq)) end(b, &r[i]);
        if (next < N && fm_batch_free_slots(b)) start(b, &r[next++]);
        CHECK_OK(fm_batch_step(b, &e), &e);
    }
    for (int i = 0; i < N; i++)
        if (r[i].seq >= 0) end(b, &r[i]);
    CHECK_EQ_INT(4, fm_batch_free_slots(b));
    CHECK_EQ_INT(FM_STOP_CANCELLED, r[4].batched.stop);
    CHECK_EQ_INT(5, r[4].batched.n_tokens);
    CHECK_MSG(r[1].batched.n_tokens < r[1].alone.n_tokens || r[1].alone.stop == FM_STOP_EOS,
              "request 1 ended after 4 tokens: %zu of %zu", r[1].batched.n_tokens,
              r[1].alone.n_tokens);
    for (int i = 0; i < N; i++) {
        compare(&r[i], i);
        fm_generate_result_free(&r[i].alone), fm_generate_result_free(&r[i].batched);
    }
    fm_batch_free(b);
}

/* Eleven sequences in eleven slots: the decode step takes two forwards (8 + 3 rows). */
static void test_more_rows_than_one_forward(void) {
    REQUIRE(model);
    enum { N = 11 };
    req r[N];
    fm_batch_options bo;
    fm_batch_options_init(&bo);
    bo.slots = N, bo.capacity = 64, bo.kv_dtype = FM_DTYPE_BF16;
    fm_batch *b = NULL;
    fm_error e;
    REQUIRE_OK(fm_batch_new(model, &bo, &b, &e), &e);
    int want_running = 0;
    for (int i = 0; i < N; i++) {
        make_req(&r[i], 20 + i, false, 12);
        r[i].o.kv_dtype = FM_DTYPE_BF16;
        run_alone(&r[i]);
        want_running += r[i].alone.n_tokens > 1;
        start(b, &r[i]);
    }
    CHECK_EQ_INT(want_running, fm_batch_running(b));
    CHECK_MSG(want_running > FM_BATCH_MAX_ROWS, "%d sequences run: not more than one forward",
              want_running);
    while (fm_batch_running(b))
        CHECK_OK(fm_batch_step(b, &e), &e);
    for (int i = 0; i < N; i++) {
        end(b, &r[i]);
        compare(&r[i], i);
        fm_generate_result_free(&r[i].alone), fm_generate_result_free(&r[i].batched);
    }
    fm_batch_free(b);
}

/* Bad starts claim no slot; bad handles and options are refused. */
static void test_bad_input(void) {
    REQUIRE(model);
    fm_batch_options bo;
    fm_batch_options_init(&bo);
    fm_batch *b = NULL;
    fm_error e;
    CHECK_STATUS(FM_ERR_LIMIT, fm_batch_new(model, &bo, &b, &e), &e); /* capacity 0 */
    CHECK(b == NULL);
    bo.slots = 2, bo.capacity = 16;
    REQUIRE_OK(fm_batch_new(model, &bo, &b, &e), &e);
    CHECK_EQ_INT(16, fm_batch_capacity(b));
    CHECK_EQ_INT(2, fm_batch_slots(b));
    req r;
    make_req(&r, 3, false, 14);
    int seq = 7;
    CHECK_STATUS(FM_ERR_LIMIT, fm_batch_start(b, r.ids, r.n, NULL, NULL, &r.o, &seq, &e), &e);
    CHECK_CONTAINS(e.msg, "positions of a sequence");
    CHECK_EQ_INT(-1, seq);
    r.ids[1] = VOCAB;
    r.o.max_new_tokens = 2;
    CHECK_STATUS(FM_ERR_INPUT, fm_batch_start(b, r.ids, r.n, NULL, NULL, &r.o, &seq, &e), &e);
    CHECK_EQ_INT(2, fm_batch_free_slots(b));
    r.ids[1] = 5;
    CHECK_STATUS(FM_ERR_INVALID_ARG, fm_batch_start(b, r.ids, r.n, &pv, NULL, &r.o, &seq, &e), &e);
    CHECK_STATUS(FM_ERR_INVALID_ARG, fm_batch_end(b, 0, NULL, &e), &e);
    CHECK_STATUS(FM_ERR_INVALID_ARG, fm_batch_end(b, 9, NULL, &e), &e);
    CHECK(fm_batch_finished(b, 0));
    CHECK_OK(fm_batch_step(b, &e), &e); /* nothing to decode */
    CHECK_OK(fm_batch_start(b, r.ids, r.n, NULL, NULL, &r.o, &seq, &e), &e);
    CHECK_EQ_INT(1, fm_batch_free_slots(b));
    fm_batch_free(b); /* ends the sequence still held */
}

int main(void) {
    setup();
    RUN(test_interleaved_equals_alone);
    RUN(test_more_rows_than_one_forward);
    RUN(test_bad_input);
    fm_tensor_free(&pv), fm_tensor_free(&grid);
    fm_model_free(model);
    fm_test_rmtree(tmp);
    free(tmp), free(dir);
    TEST_END();
}
