/* The Qwen2-VL language model through the module tree (fm_model_forward_text with a KV cache)
 * against the separate float64 reference that reads the checkpoint itself: text only, one and
 * two images (positions from get_rope_index), incremental decoding equal to a full recompute,
 * greedy continuations, bf16 weights and cache, several sequences in one batch, bad input. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fusemap/fusemap.h"
#include "support/check.h"
#include "support/qwen_fixture.h"
#include "support/text_ref64.h"

enum { IMG = 290, VSTART = 291, VEND = 292, VOCAB = 300 };
static const char *extra =
    "\"image_token_id\": 290, \"vision_start_token_id\": 291, \"vision_end_token_id\": 292, "
    "\"video_token_id\": 293, \"rope_scaling\": {\"type\": \"mrope\", \"mrope_section\": [2, 3, "
    "3]}";
static char *tmp;
static uint64_t seed = 0x9E3779B97F4A7C15ull;

static fm_qfix text_fixture(fm_dtype dt, bool tie) {
    fm_qfix q;
    fm_qfix_init(&q);
    q.text_layers = 2, q.text_hidden = 64, q.text_heads = 4, q.text_kv_heads = 2, q.text_inter = 96,
    q.vocab = VOCAB;
    q.hidden_size = 64; /* the vision merger's output = the decoder width */
    q.dtype = dt, q.tie = tie, q.scale = 0.12f, q.extra_config = extra;
    return q;
}

static char *write_fixture(const fm_qfix *q, const char *tag) {
    char *dir = fm_test_join(tmp, tag);
    fm_error e;
    CHECK_OK(fm_qfix_write(dir, q, &e), &e);
    return dir;
}

static fm_model *load(const char *dir, const char *fusion) {
    fm_load_options o;
    fm_load_options_init(&o);
    o.fusion_config = fusion;
    fm_model *m = NULL;
    fm_error e;
    CHECK_OK(fm_from_pretrained(dir, &o, &m, NULL, &e), &e);
    return m;
}

static double rel_l2(const float *a, const double *ref, int64_t n) {
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++)
        num += (a[i] - ref[i]) * (a[i] - ref[i]), den += ref[i] * ref[i];
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

/* A prompt: text ids, then for each image vision_start, its t·h·w/4 image tokens, vision_end. */
static int64_t make_prompt(int64_t *ids, int n_text, const int64_t *grid, int n_images) {
    int64_t n = 0;
    for (int i = 0; i < n_text; i++) {
        seed ^= seed << 13, seed ^= seed >> 7, seed ^= seed << 17;
        ids[n++] = (int64_t)(seed % 280);
        if (i == n_text / 2)
            for (int k = 0; k < n_images; k++) {
                ids[n++] = VSTART;
                for (int64_t j = 0; j < grid[3 * k] * grid[3 * k + 1] * grid[3 * k + 2] / 4; j++)
                    ids[n++] = IMG;
                ids[n++] = VEND;
            }
    }
    return n;
}

/* Forward of rows [from, to) of one sequence in slot `slot`, logits of every row. */
static fm_status forward_rows(fm_model *m, fm_kv_cache *c, const int64_t *ids, const int64_t *pos3,
                              int64_t T, int64_t from, int64_t to, int slot, const fm_tensor *img,
                              fm_tensor *logits, fm_error *e) {
    int64_t n = to - from;
    int64_t *p3 = malloc((size_t)(3 * n) * sizeof *p3);
    int32_t *sl = malloc((size_t)n * 4), *ps = malloc((size_t)n * 4), *lr = malloc((size_t)n * 4);
    for (int64_t i = 0; i < n; i++) {
        for (int a = 0; a < 3; a++)
            p3[a * n + i] = pos3[a * T + from + i];
        sl[i] = slot, ps[i] = (int32_t)(from + i), lr[i] = (int32_t)i;
    }
    fm_text_batch b = {.ids = ids + from,
                       .pos3 = p3,
                       .slot = sl,
                       .pos = ps,
                       .n = (size_t)n,
                       .image_embeds = img,
                       .logit_rows = lr,
                       .n_logits = (size_t)n};
    fm_status st = fm_model_forward_text(m, c, &b, NULL, logits, e);
    free(p3), free(sl), free(ps), free(lr);
    return st;
}

/* Prefill of the whole prompt vs the reference, every row; positions vs the reference's. */
static void check_prompt(const char *dir, fm_dtype cache_dt, const int64_t *grid, int n_images,
                         double tol, const char *what) {
    fm_tref_model ref;
    char why[256] = "";
    fm_model *m = load(dir, NULL);
    CHECK_MSG(fm_tref_load(dir, &ref, why, sizeof why) == 0, "%s: reference load: %s", what, why);
    int64_t ids[512], T = make_prompt(ids, 9, grid, n_images), k = 0;
    for (int64_t i = 0; i < T; i++)
        k += ids[i] == IMG;
    fm_tensor img = {0}, gt = {0}, logits = {0};
    fm_shape is = {2, {k, 64}}, gs = {2, {n_images, 3}};
    if (k)
        fm_tensor_alloc(&img, FM_DTYPE_F32, &is, NULL),
            fm_qfix_fill(img.data, (uint64_t)(k * 64), 1.0f, &seed);
    if (n_images)
        fm_tensor_alloc(&gt, FM_DTYPE_I64, &gs, NULL), memcpy(gt.data, grid, (size_t)n_images * 24);
    int64_t *pos3 = malloc((size_t)(3 * T) * sizeof *pos3),
            *want = malloc((size_t)(3 * T) * sizeof *want), next = 0;
    double *rl = malloc((size_t)(T * VOCAB) * sizeof *rl);
    fm_kv_cache *c = NULL;
    fm_error e;
    if (m && ref.l) {
        CHECK_OK(fm_model_rope_index(m, ids, T, n_images ? &gt : NULL, pos3, &next, &e), &e);
        fm_tref_positions(&ref, ids, T, grid, n_images, want);
        CHECK_MSG(!memcmp(pos3, want, (size_t)(3 * T) * sizeof *pos3),
                  "%s: rope index differs from the reference", what);
        int64_t mx = 0;
        for (int64_t i = 0; i < 3 * T; i++)
            mx = want[i] > mx ? want[i] : mx;
        CHECK_EQ_INT(mx + 1, next);
        CHECK_OK(fm_kv_cache_new(m, 1, T + 4, cache_dt, &c, &e), &e);
        CHECK_OK(forward_rows(m, c, ids, pos3, T, 0, T, 0, k ? &img : NULL, &logits, &e), &e);
        CHECK(fm_tref_forward(&ref, ids, T, k ? img.data : NULL, grid, n_images, rl) == 0);
        if (logits.data) {
            double err = rel_l2(logits.data, rl, T * VOCAB);
            CHECK_MSG(err <= tol, "%s: logits rel-L2 %.3g vs float64 reference (want <= %.0e)",
                      what, err, tol);
        }
    }
    fm_kv_cache_free(c);
    fm_tensor_free(&img), fm_tensor_free(&gt), fm_tensor_free(&logits);
    free(pos3), free(want), free(rl);
    fm_tref_free(&ref);
    fm_model_free(m);
}

static void test_logits_vs_ref64(void) {
    fm_qfix q = text_fixture(FM_DTYPE_F32, false);
    char *dir = write_fixture(&q, "f32");
    const int64_t one[] = {1, 4, 6}, two[] = {1, 4, 4, 1, 2, 6};
    check_prompt(dir, FM_DTYPE_F32, NULL, 0, 1e-5, "text only");
    check_prompt(dir, FM_DTYPE_F32, one, 1, 1e-5, "one image 1x4x6");
    check_prompt(dir, FM_DTYPE_F32, two, 2, 1e-5, "two images 1x4x4 + 1x2x6");
    const int64_t tall[] = {1, 6, 4, 3, 2, 2}; /* height, then time, is the largest extent */
    check_prompt(dir, FM_DTYPE_F32, tall, 2, 1e-5, "images 1x6x4 (tall) + 3x2x2 (temporal)");
    check_prompt(dir, FM_DTYPE_BF16, one, 1, 1e-2, "bf16 KV cache");
    free(dir);
    q = text_fixture(FM_DTYPE_BF16, true); /* bf16 weights, tied lm_head */
    dir = write_fixture(&q, "bf16");
    check_prompt(dir, FM_DTYPE_F32, two, 2, 1e-5, "bf16 weights (tied), two images");
    free(dir);
}

/* Prefill T - 3 rows, then three single-row steps: each step's logits equal the full forward's. */
static void test_incremental_equals_full(void) {
    fm_qfix q = text_fixture(FM_DTYPE_F32, false);
    char *dir = write_fixture(&q, "incr");
    fm_model *m = load(dir, NULL);
    const int64_t grid[] = {1, 4, 6};
    int64_t ids[256], T = make_prompt(ids, 10, grid, 1), k = 0, next;
    for (int64_t i = 0; i < T; i++)
        k += ids[i] == IMG;
    fm_tensor img = {0}, gt = {0}, full = {0}, step = {0};
    fm_shape is = {2, {k, 64}}, gs = {2, {1, 3}};
    fm_tensor_alloc(&img, FM_DTYPE_F32, &is, NULL),
        fm_qfix_fill(img.data, (uint64_t)(k * 64), 1.0f, &seed);
    fm_tensor_alloc(&gt, FM_DTYPE_I64, &gs, NULL), memcpy(gt.data, grid, 24);
    int64_t *pos3 = malloc((size_t)(3 * T) * sizeof *pos3);
    fm_kv_cache *a = NULL, *b = NULL;
    fm_error e;
    if (m) {
        CHECK_OK(fm_model_rope_index(m, ids, T, &gt, pos3, &next, &e), &e);
        CHECK_OK(fm_kv_cache_new(m, 1, T, FM_DTYPE_F32, &a, &e), &e);
        CHECK_OK(fm_kv_cache_new(m, 1, T, FM_DTYPE_F32, &b, &e), &e);
        CHECK_OK(forward_rows(m, a, ids, pos3, T, 0, T, 0, &img, &full, &e), &e);
        fm_tensor pre = {0};
        CHECK_OK(forward_rows(m, b, ids, pos3, T, 0, T - 3, 0, &img, &pre, &e),
                 &e); /* all images in the prefill */
        fm_tensor_free(&pre);
        for (int64_t t = T - 3; t < T && full.data; t++) {
            CHECK_OK(forward_rows(m, b, ids, pos3, T, t, t + 1, 0, NULL, &step, &e), &e);
            double num = 0, den = 0;
            const float *x = step.data, *y = (const float *)full.data + t * VOCAB;
            for (int64_t i = 0; x && i < VOCAB; i++)
                num += (x[i] - y[i]) * (double)(x[i] - y[i]), den += (double)y[i] * y[i];
            CHECK_MSG(x && sqrt(num / den) <= 1e-5,
                      "row %lld decoded alone vs in the full forward: rel-L2 %.3g", (long long)t,
                      sqrt(num / den));
            fm_tensor_free(&step);
        }
    }
    fm_kv_cache_free(a), fm_kv_cache_free(b);
    fm_tensor_free(&img), fm_tensor_free(&gt), fm_tensor_free(&full);
    free(pos3);
    fm_model_free(m);
    free(dir);
}

static int64_t argmax_f(const float *x, int64_t n) {
    int64_t b = 0;
    for (int64_t i = 1; i < n; i++)
        b = x[i] > x[b] ? i : b;
    return b;
}
static int64_t argmax_d(const double *x, int64_t n, double *margin) {
    int64_t b = 0, s = -1;
    for (int64_t i = 1; i < n; i++)
        if (x[i] > x[b])
            s = b, b = i;
        else if (s < 0 || x[i] > x[s])
            s = i;
    *margin = x[b] - x[s];
    return b;
}

/* 16 greedy tokens with the cache vs argmax of the reference's full recompute at every step. */
static void test_greedy_continuation(void) {
    fm_qfix q = text_fixture(FM_DTYPE_F32, true);
    q.scale = 0.2f;
    char *dir = write_fixture(&q, "greedy");
    fm_model *m = load(dir, NULL);
    fm_tref_model ref;
    char why[256];
    CHECK_MSG(fm_tref_load(dir, &ref, why, sizeof why) == 0, "reference: %s", why);
    int64_t ids[64], T = make_prompt(ids, 8, NULL, 0), n = T, next = 0;
    int64_t pos3[3 * 64];
    double *rl = malloc((size_t)(64 * VOCAB) * sizeof *rl), min_margin = 1e9;
    fm_kv_cache *c = NULL;
    fm_error e;
    int agree = 0;
    if (m && ref.l) {
        CHECK_OK(fm_model_rope_index(m, ids, T, NULL, pos3, &next, &e), &e);
        CHECK_OK(fm_kv_cache_new(m, 1, 64, FM_DTYPE_F32, &c, &e), &e);
        fm_tensor lg = {0};
        CHECK_OK(forward_rows(m, c, ids, pos3, T, 0, T, 0, NULL, &lg, &e), &e);
        for (int step = 0; step < 16 && lg.data; step++) {
            int64_t mine = argmax_f((const float *)lg.data + (lg.shape.dims[0] - 1) * VOCAB, VOCAB),
                    theirs;
            double margin;
            CHECK(fm_tref_forward(&ref, ids, n, NULL, NULL, 0, rl) == 0);
            theirs = argmax_d(rl + (n - 1) * VOCAB, VOCAB, &margin);
            min_margin = fmin(min_margin, margin);
            CHECK_MSG(mine == theirs, "step %d: greedy token %lld, reference %lld (margin %.3g)",
                      step, (long long)mine, (long long)theirs, margin);
            agree += mine == theirs;
            ids[n] = theirs;
            fm_tensor_free(&lg);
            int64_t row_pos[3] = {n, n,
                                  n}; /* a text token after text: the next position on all axes */
            int32_t sl = 0, ps = (int32_t)n, lr = 0;
            fm_text_batch b = {.ids = &ids[n],
                               .pos3 = row_pos,
                               .slot = &sl,
                               .pos = &ps,
                               .n = 1,
                               .logit_rows = &lr,
                               .n_logits = 1};
            CHECK_OK(fm_model_forward_text(m, c, &b, NULL, &lg, &e), &e);
            n++;
        }
        fm_tensor_free(&lg);
    }
    CHECK_EQ_INT(16, agree);
    fprintf(stderr, "greedy: 16 tokens, smallest reference top-2 margin %.3g\n", min_margin);
    fm_kv_cache_free(c);
    free(rl);
    fm_tref_free(&ref);
    fm_model_free(m);
    free(dir);
}

/* Two sequences in two slots: a batch with one new row of each equals each decoded alone. */
static void test_two_sequences_in_one_batch(void) {
    fm_qfix q = text_fixture(FM_DTYPE_BF16, false);
    char *dir = write_fixture(&q, "batch");
    fm_model *m = load(dir, NULL);
    int64_t a[32], b[32], Ta = make_prompt(a, 7, NULL, 0), Tb = make_prompt(b, 11, NULL, 0), next;
    int64_t pa[96], pb[96];
    fm_kv_cache *both = NULL, *alone = NULL;
    fm_error e;
    fm_tensor la = {0}, lb = {0}, lab = {0}, tmpl = {0};
    if (m) {
        CHECK_OK(fm_model_rope_index(m, a, Ta, NULL, pa, &next, &e), &e);
        CHECK_OK(fm_model_rope_index(m, b, Tb, NULL, pb, &next, &e), &e);
        CHECK_OK(fm_kv_cache_new(m, 2, 32, FM_DTYPE_BF16, &both, &e), &e);
        CHECK_OK(fm_kv_cache_new(m, 1, 32, FM_DTYPE_BF16, &alone, &e), &e);
        /* alone: prefill all but the last row, then the last row */
        CHECK_OK(forward_rows(m, alone, a, pa, Ta, 0, Ta - 1, 0, NULL, &tmpl, &e), &e);
        fm_tensor_free(&tmpl);
        CHECK_OK(forward_rows(m, alone, a, pa, Ta, Ta - 1, Ta, 0, NULL, &la, &e), &e);
        CHECK_OK(forward_rows(m, alone, b, pb, Tb, 0, Tb - 1, 0, NULL, &tmpl, &e), &e);
        fm_tensor_free(&tmpl);
        CHECK_OK(forward_rows(m, alone, b, pb, Tb, Tb - 1, Tb, 0, NULL, &lb, &e), &e);
        /* together: each prefilled in its own slot, then both last rows in one batch */
        CHECK_OK(forward_rows(m, both, a, pa, Ta, 0, Ta - 1, 0, NULL, &tmpl, &e), &e);
        fm_tensor_free(&tmpl);
        CHECK_OK(forward_rows(m, both, b, pb, Tb, 0, Tb - 1, 1, NULL, &tmpl, &e), &e);
        fm_tensor_free(&tmpl);
        int64_t ids[2] = {a[Ta - 1], b[Tb - 1]},
                p3[6] = {Ta - 1, Tb - 1, Ta - 1, Tb - 1, Ta - 1, Tb - 1};
        int32_t sl[2] = {0, 1}, ps[2] = {(int32_t)(Ta - 1), (int32_t)(Tb - 1)}, lr[2] = {0, 1};
        fm_text_batch bt = {
            .ids = ids, .pos3 = p3, .slot = sl, .pos = ps, .n = 2, .logit_rows = lr, .n_logits = 2};
        CHECK_OK(fm_model_forward_text(m, both, &bt, NULL, &lab, &e), &e);
        if (lab.data && la.data && lb.data) {
            const float *x = lab.data;
            double da = 0, db = 0;
            for (int i = 0; i < VOCAB; i++)
                da = fmax(da, fabs(x[i] - ((float *)la.data)[i])),
                db = fmax(db, fabs(x[VOCAB + i] - ((float *)lb.data)[i]));
            CHECK_MSG(da <= 1e-4 && db <= 1e-4, "batched rows vs alone: max |diff| %.3g and %.3g",
                      da, db);
        }
    }
    fm_tensor_free(&la), fm_tensor_free(&lb), fm_tensor_free(&lab);
    fm_kv_cache_free(both), fm_kv_cache_free(alone);
    fm_model_free(m);
    free(dir);
}

static void test_bad_input(void) {
    fm_qfix q = text_fixture(FM_DTYPE_F32, false);
    char *dir = write_fixture(&q, "bad");
    fm_model *m = load(dir, NULL);
    fm_kv_cache *c = NULL;
    fm_error e;
    fm_tensor lg = {0};
    if (m) {
        CHECK_STATUS(FM_ERR_LIMIT, fm_kv_cache_new(m, 1, 1 << 30, FM_DTYPE_F32, &c, &e), &e);
        CHECK_CONTAINS(e.msg, "max_position_embeddings");
        CHECK_STATUS(FM_ERR_INVALID_ARG, fm_kv_cache_new(m, 1, 8, FM_DTYPE_F16, &c, &e), &e);
        CHECK_OK(fm_kv_cache_new(m, 1, 8, FM_DTYPE_F32, &c, &e), &e);
        int64_t ids[2] = {5, VOCAB + 3}, p3[6] = {0, 1, 0, 1, 0, 1};
        int32_t sl[2] = {0, 0}, ps[2] = {0, 1}, lr[1] = {1};
        fm_text_batch b = {
            .ids = ids, .pos3 = p3, .slot = sl, .pos = ps, .n = 2, .logit_rows = lr, .n_logits = 1};
        CHECK_STATUS(FM_ERR_INPUT, fm_model_forward_text(m, c, &b, NULL, &lg, &e), &e);
        CHECK_CONTAINS(e.msg, "outside [0, 300)");
        ids[1] = IMG; /* an image token with two image features */
        fm_tensor two = {0};
        fm_shape ts = {2, {2, 64}};
        fm_tensor_alloc(&two, FM_DTYPE_F32, &ts, NULL);
        fm_qfix_fill(two.data, 128, 1.0f, &seed);
        b.image_embeds = &two;
        CHECK_STATUS(FM_ERR_INPUT, fm_model_forward_text(m, c, &b, NULL, &lg, &e), &e);
        CHECK_CONTAINS(e.msg, "1 image tokens (id 290) but 2 image features");
        /* without features an image id is an ordinary token (a generated <|image_pad|>, as
         * transformers embeds it after the prompt) */
        b.image_embeds = NULL;
        CHECK_OK(fm_model_forward_text(m, c, &b, NULL, &lg, &e), &e);
        fm_tensor_free(&lg), fm_tensor_free(&two);
        ids[1] = 7, ps[1] = 8; /* a position outside the cache */
        CHECK_STATUS(FM_ERR_INPUT, fm_model_forward_text(m, c, &b, NULL, &lg, &e), &e);
        CHECK_CONTAINS(e.msg, "position 8");
        ps[1] = 1, lr[0] = 5;
        CHECK_STATUS(FM_ERR_INPUT, fm_model_forward_text(m, c, &b, NULL, &lg, &e), &e);
        CHECK_CONTAINS(e.msg, "logit row 5");
        int64_t pr[8] = {1, VSTART, IMG, IMG, VEND, 2, 3, 4}, pos3[24], next;
        fm_tensor gt;
        fm_shape gs = {2, {1, 3}};
        fm_tensor_alloc(&gt, FM_DTYPE_I64, &gs, NULL);
        int64_t g[3] = {1, 4, 4}; /* needs 4 image tokens, the prompt has 2 */
        memcpy(gt.data, g, sizeof g);
        CHECK_STATUS(FM_ERR_INPUT, fm_model_rope_index(m, pr, 8, &gt, pos3, &next, &e), &e);
        CHECK_STATUS(FM_ERR_INPUT, fm_model_rope_index(m, pr, 8, NULL, pos3, &next, &e), &e);
        fm_tensor_free(&gt);
        CHECK(lg.data == NULL);
    }
    fm_kv_cache_free(c);
    fm_model_free(m);
    free(dir);
}

/* Logits of the whole prompt with one fresh cache. */
static fm_tensor prompt_logits(fm_model *m, const int64_t *ids, int64_t T, const fm_tensor *img,
                               const fm_tensor *gt) {
    fm_tensor lg = {0};
    int64_t *pos3 = malloc((size_t)(3 * T) * sizeof *pos3), next;
    fm_kv_cache *c = NULL;
    fm_error e;
    if (m) {
        CHECK_OK(fm_model_rope_index(m, ids, T, gt, pos3, &next, &e), &e);
        CHECK_OK(fm_kv_cache_new(m, 1, T, FM_DTYPE_F32, &c, &e), &e);
        if (c) CHECK_OK(forward_rows(m, c, ids, pos3, T, 0, T, 0, img, &lg, &e), &e);
    }
    fm_kv_cache_free(c);
    free(pos3);
    return lg;
}

static double max_rel(const fm_tensor *a, const fm_tensor *b) {
    double num = 0, den = 0;
    for (uint64_t i = 0; a->data && b->data && i < fm_tensor_numel(a); i++) {
        double d = ((float *)a->data)[i] - (double)((float *)b->data)[i];
        num += d * d, den += ((float *)b->data)[i] * (double)((float *)b->data)[i];
    }
    return a->data && b->data ? sqrt(num / den) : 1e9;
}

/* qkv + gate_up + patch_embeddings: logits equal unfused; the original-format save is the source
 * byte for byte; a runtime-format save loads back fused and unfused with the same logits. */
static void test_decoder_fusions(void) {
    static const char *three = "{\"qkv\": true, \"gate_up\": true, \"patch_embeddings\": true}";
    for (int dt = 0; dt < 2; dt++) {
        fm_qfix q = text_fixture(dt ? FM_DTYPE_BF16 : FM_DTYPE_F32, dt == 1);
        char tag[32];
        snprintf(tag, sizeof tag, "fuse%d", dt);
        char *dir = write_fixture(&q, tag);
        fm_load_report rep;
        fm_load_options o;
        fm_load_options_init(&o);
        o.fusion_config = three, o.strict = true;
        fm_model *plain = load(dir, "{}"), *fused = NULL;
        fm_error e;
        CHECK_OK(fm_from_pretrained(dir, &o, &fused, &rep, &e), &e);
        CHECK_EQ_INT(1 + 2 * 2,
                     (long long)rep.n_fused); /* patch embed + 2 layers x (attention, MLP) */
        if (rep.n_fused > 1)
            CHECK_CONTAINS(rep.fused[1], "Qwen2VLAttention -> FusedQwen2VLAttention (qkv)");
        fm_load_report_free(&rep);
        /* gate_proj and up_proj lie back to back in the file: the fused weight is a view of it */
        const fm_tensor *gu =
            fm_model_param(fused, "model.language_model.layers.0.mlp.gate_up_proj.weight");
        CHECK_MSG(gu && fm_tensor_is_mapped(gu),
                  "%s: gate_up_proj.weight zero-copy: expected a "
                  "mapped view, seen %s",
                  tag, gu ? "an owned copy" : "no such parameter");
        const int64_t grid[] = {1, 4, 6};
        int64_t ids[128], T = make_prompt(ids, 9, grid, 1), k = 0;
        for (int64_t i = 0; i < T; i++)
            k += ids[i] == IMG;
        fm_tensor img = {0}, gt = {0};
        fm_shape is = {2, {k, 64}}, gs = {2, {1, 3}};
        fm_tensor_alloc(&img, FM_DTYPE_F32, &is, NULL),
            fm_qfix_fill(img.data, (uint64_t)(k * 64), 1.0f, &seed);
        fm_tensor_alloc(&gt, FM_DTYPE_I64, &gs, NULL), memcpy(gt.data, grid, 24);
        fm_tensor lp = prompt_logits(plain, ids, T, &img, &gt),
                  lf = prompt_logits(fused, ids, T, &img, &gt);
        CHECK_MSG(max_rel(&lf, &lp) <= 1e-5, "%s: fused vs unfused logits rel-L2 %.3g", tag,
                  max_rel(&lf, &lp));
        /* a decode-sized forward (at most 8 rows): the parts share one pass over the fused
         * weight, each reading its own columns of it */
        const int64_t few[5] = {11, 22, 33, 44, 55};
        fm_tensor sp = prompt_logits(plain, few, 5, NULL, NULL),
                  sf = prompt_logits(fused, few, 5, NULL, NULL);
        CHECK_MSG(max_rel(&sf, &sp) <= 1e-5, "%s: 5-row fused vs unfused logits rel-L2 %.3g", tag,
                  max_rel(&sf, &sp));
        fm_tensor_free(&sp), fm_tensor_free(&sf);
        char *orig = fm_test_join(tmp, "orig"), *rt = fm_test_join(tmp, "runtime");
        char *a = fm_test_join(dir, "model.safetensors"),
             *b = fm_test_join(orig, "model.safetensors");
        if (fused) CHECK_OK(fm_save_pretrained(fused, orig, NULL, &e), &e);
        CHECK_MSG(fm_test_same_file(a, b),
                  "%s: original-format save of the fused model is the source byte for byte", tag);
        fm_save_pretrained_options so;
        fm_save_pretrained_options_init(&so);
        so.runtime_format = true;
        if (fused) CHECK_OK(fm_save_pretrained(fused, rt, &so, &e), &e);
        fm_model *back_fused = load(rt, NULL), *back_plain = load(rt, "{}");
        fm_tensor l1 = prompt_logits(back_fused, ids, T, &img, &gt),
                  l2 = prompt_logits(back_plain, ids, T, &img, &gt);
        CHECK_MSG(max_rel(&l1, &lp) <= 1e-5 && max_rel(&l2, &lp) <= 1e-5,
                  "%s: runtime-format save reloaded fused %.3g / unfused %.3g", tag,
                  max_rel(&l1, &lp), max_rel(&l2, &lp));
        fm_tensor_free(&l1), fm_tensor_free(&l2), fm_tensor_free(&lp), fm_tensor_free(&lf);
        fm_tensor_free(&img), fm_tensor_free(&gt);
        fm_model_free(back_fused), fm_model_free(back_plain), fm_model_free(plain),
            fm_model_free(fused);
        fm_test_rmtree(orig), fm_test_rmtree(rt);
        free(orig), free(rt), free(a), free(b), free(dir);
    }
}

/* fm_linear_forward_rows on a fused qkv_proj (f32 GEMM and GEMV rows, bf16) equals the
 * columns of the whole Linear's output; a range outside the features is refused. */
static void test_linear_rows(void) {
    for (int dt = 0; dt < 2; dt++) {
        fm_qfix q = text_fixture(dt ? FM_DTYPE_BF16 : FM_DTYPE_F32, false);
        char *dir = write_fixture(&q, dt ? "rows-bf16" : "rows-f32");
        fm_model *m = load(dir, "{\"qkv\": true}");
        fm_run_ctx *rc = NULL;
        fm_error e;
        if (m) CHECK_OK(fm_model_run_ctx(m, NULL, &rc, &e), &e);
        fm_module *lin =
            m ? fm_module_find(fm_model_root(m), "model.language_model.layers.1.self_attn.qkv_proj")
              : NULL;
        CHECK(lin != NULL);
        for (int64_t rows = 3; lin && rc && rows <= 40; rows += 37) {
            fm_tensor x = {0}, full = {0}, part = {0};
            fm_shape xs = {2, {rows, 64}};
            fm_tensor_alloc(&x, FM_DTYPE_F32, &xs, NULL);
            fm_qfix_fill(x.data, (uint64_t)rows * 64, 1.0f, &seed);
            size_t mark = fm_run_mark(rc);
            CHECK_OK(fm_module_forward(lin, rc, &x, 1, &full, 1, &e), &e);
            const int64_t range[3][2] = {{0, 64}, {64, 32}, {96, 32}}; /* q, k, v */
            for (int i = 0; i < 3 && full.data; i++) {
                part = (fm_tensor){0};
                CHECK_OK(fm_linear_forward_rows(lin, rc, &x, range[i][0], range[i][1], &part, &e),
                         &e);
                double worst = 0;
                for (int64_t r = 0; part.data && r < rows; r++)
                    for (int64_t c = 0; c < range[i][1]; c++)
                        worst = fmax(worst, fabs(((float *)part.data)[r * range[i][1] + c] -
                                                 ((float *)full.data)[r * 128 + range[i][0] + c]));
                CHECK_MSG(worst <= 1e-6,
                          "%s rows %lld part %d: max |diff| %.3g vs the whole Linear",
                          dt ? "bf16" : "f32", (long long)rows, i, worst);
            }
            part = (fm_tensor){0};
            CHECK_STATUS(FM_ERR_INVALID_ARG,
                         fm_linear_forward_rows(lin, rc, &x, 100, 29, &part, &e), &e);
            fm_run_release(rc, mark);
            fm_tensor_free(&x);
        }
        fm_model_free(m);
        free(dir);
    }
}

int main(void) {
    tmp = fm_test_tmpdir("decoder");
    RUN(test_decoder_fusions);
    RUN(test_linear_rows);
    RUN(test_logits_vs_ref64);
    RUN(test_incremental_equals_full);
    RUN(test_greedy_continuation);
    RUN(test_two_sequences_in_one_batch);
    RUN(test_bad_input);
    fm_test_rmtree(tmp);
    free(tmp);
    TEST_END();
}
