/* Qwen3-VL through the module tree against separate float64 references that read the checkpoint
 * themselves (tests/support/vision_ref64.c, text_ref64.c): the vision tower with its learned
 * position table interpolated to grids smaller and larger than the table, several images, t = 2,
 * and the DeepStack features; the decoder's logits with q/k norms, head_dim from the config,
 * interleaved M-RoPE and DeepStack; the whole model from pixels to logits; greedy continuations
 * of an image prompt. Fusion: every combination of patch_embeddings, qkv and gate_up equals the
 * unfused model, saves byte-identical checkpoints (single file and sharded, f32 and bf16) and
 * runtime-format checkpoints that load back both ways. Config spellings, preprocessing values,
 * refusals and bad input. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fusemap/fusemap.h"
#include "support/check.h"
#include "support/img_fixtures.h"
#include "support/qwen_fixture.h"
#include "support/text_ref64.h"
#include "support/vision_ref64.h"

enum { IMG = 290, VSTART = 291, VEND = 292, VID = 293, VOCAB = 300, H = 64 };
static const char *ids_json = "\"image_token_id\": 290, \"vision_start_token_id\": 291, "
                              "\"vision_end_token_id\": 292, \"video_token_id\": 293";
static char *tmp;
static uint64_t seed = 0x9E3779B97F4A7C15ull;
static double worst_vision, worst_logits; /* largest errors against the references */

/* ---- fixtures ------------------------------------------------------------------------------ */
/* A small Qwen3-VL: vision depth 3 (DeepStack after blocks 0 and 2), width 64 in 4 heads, patch
 * 4, a 6 x 6 position table; decoder 3 layers of width 64, 4 heads of 24 (head_dim != 64 / 4),
 * 2 KV heads, interleaved sections [4, 4, 4]. */
static fm_qfix model_fixture(fm_dtype dt, bool tie) {
    fm_qfix q;
    fm_qfix_init_qwen3(&q);
    q.depth = 3, q.embed_dim = 64, q.num_heads = 4, q.mlp_ratio = 2, q.hidden_size = H;
    q.patch_size = 4, q.num_position_embeddings = 36;
    q.deepstack[0] = 0, q.deepstack[1] = 2, q.n_deepstack = 2;
    q.text_layers = 3, q.text_hidden = H, q.text_heads = 4, q.text_kv_heads = 2,
    q.text_head_dim = 24, q.text_inter = 96, q.vocab = VOCAB;
    q.mrope[0] = 4, q.mrope[1] = 4, q.mrope[2] = 4;
    q.dtype = dt, q.tie = tie, q.scale = 0.1f, q.pos_scale = 0.5f, q.extra_config = ids_json;
    return q;
}

static char *write_fixture(const fm_qfix *q, const char *tag) {
    char *d = fm_test_join(tmp, tag);
    fm_error e;
    CHECK_OK(fm_qfix_write(d, q, &e), &e);
    return d;
}

static fm_model *load(const char *d, const char *fusion) {
    fm_load_options o;
    fm_load_options_init(&o);
    o.fusion_config = fusion;
    fm_model *m = NULL;
    fm_error e;
    CHECK_OK(fm_from_pretrained(d, &o, &m, NULL, &e), &e);
    return m;
}

static int64_t patches(const int64_t *g, int n) {
    int64_t s = 0;
    for (int i = 0; i < n; i++)
        s += g[3 * i] * g[3 * i + 1] * g[3 * i + 2];
    return s;
}

static int64_t row_values(const fm_qfix *q) {
    return (int64_t)q->in_channels * q->temporal_patch_size * q->patch_size * q->patch_size;
}

/* pixel_values F32 [N][k] (random in [-2, 2]) and image_grid_thw I64 [n][3]. */
static void make_pixels(const int64_t *grid, int n, int64_t k, fm_tensor *pv, fm_tensor *gt) {
    fm_shape ps = {2, {patches(grid, n), k}}, gs = {2, {n, 3}};
    CHECK(fm_tensor_alloc(pv, FM_DTYPE_F32, &ps, NULL) == FM_OK);
    CHECK(fm_tensor_alloc(gt, FM_DTYPE_I64, &gs, NULL) == FM_OK);
    if (pv->data) fm_qfix_fill(pv->data, fm_tensor_numel(pv), 2.0f, &seed);
    if (gt->data) memcpy(gt->data, grid, (size_t)n * 3 * sizeof *grid);
}

static double rel_l2_d(const float *a, const double *ref, int64_t n) {
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++)
        num += (a[i] - ref[i]) * (a[i] - ref[i]), den += ref[i] * ref[i];
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

static double rel_l2_f(const fm_tensor *a, const fm_tensor *b) {
    double num = 0, den = 0;
    if (!a->data || !b->data || fm_tensor_numel(a) != fm_tensor_numel(b)) return 1e9;
    for (uint64_t i = 0; i < fm_tensor_numel(a); i++) {
        double x = ((float *)a->data)[i], y = ((float *)b->data)[i];
        num += (x - y) * (x - y), den += y * y;
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

static fm_status features(fm_model *m, const fm_tensor *pv, const fm_tensor *gt, int threads,
                          fm_vision_features *out, fm_error *e) {
    fm_run_options ro;
    fm_run_options_init(&ro);
    ro.threads = threads;
    return fm_model_vision_features(m, pv, gt, &ro, out, e);
}

/* ---- the vision tower ---------------------------------------------------------------------- */
/* One grid set through the model: image embeddings and every DeepStack feature vs the f64 path. */
static void check_vision_set(fm_model *m, const fm_vref_model *ref, const fm_qfix *q,
                             const int64_t *grid, int n, const char *what) {
    fm_tensor pv = {0}, gt = {0};
    fm_vision_features f = {{0}, {0}};
    make_pixels(grid, n, row_values(q), &pv, &gt);
    int64_t tokens = patches(grid, n) / 4, no = tokens * q->hidden_size;
    double *want = malloc((size_t)no * sizeof *want), *ds = malloc((size_t)(8 * no) * sizeof *ds);
    int k = -1;
    fm_error e;
    CHECK(fm_vref64_forward_ds(ref, grid, n, pv.data, want, ds, &k) == 0);
    CHECK_OK(features(m, &pv, &gt, 2, &f, &e), &e);
    double rms = 0;
    for (int64_t i = 0; i < no; i++)
        rms += want[i] * want[i] / (double)no;
    CHECK_MSG(sqrt(rms) > 1e-2, "%s: reference output rms %.3g too small to be a check", what,
              sqrt(rms));
    if (f.image_embeds.data) {
        CHECK_EQ_INT(no, fm_tensor_numel(&f.image_embeds));
        double err = rel_l2_d(f.image_embeds.data, want, no);
        worst_vision = fmax(worst_vision, err);
        CHECK_MSG(err <= 1e-5, "%s: image embeddings rel-L2 %.3g vs float64 (want <= 1e-5)", what,
                  err);
    }
    CHECK_MSG(f.deepstack.data && f.deepstack.shape.ndim == 3 && f.deepstack.shape.dims[0] == k &&
                  f.deepstack.shape.dims[1] == tokens &&
                  f.deepstack.shape.dims[2] == q->hidden_size,
              "%s: DeepStack features [%d][%lld][%d] expected", what, k, (long long)tokens,
              q->hidden_size);
    for (int i = 0; f.deepstack.data && i < k && i < f.deepstack.shape.dims[0]; i++) {
        double err = rel_l2_d((const float *)f.deepstack.data + i * no, ds + i * no, no);
        worst_vision = fmax(worst_vision, err);
        CHECK_MSG(err <= 1e-5, "%s: DeepStack feature %d rel-L2 %.3g vs float64", what, i, err);
    }
    free(want), free(ds);
    fm_tensor_free(&pv), fm_tensor_free(&gt);
    fm_vision_features_free(&f);
}

static void check_vision(const fm_qfix *q, const char *what, int expect_k) {
    char *d = write_fixture(q, "vision");
    fm_vref_model ref;
    char why[256] = "";
    CHECK_MSG(fm_vref_load(d, &ref, why, sizeof why) == 0, "%s: reference load: %s", what, why);
    fm_model *plain = load(d, "{}"), *fused = load(d, "{\"patch_embeddings\": true}");
    /* grids smaller and larger than the 6 x 6 table, not square, t = 2, several images */
    const int64_t g1[] = {1, 4, 4}, g2[] = {1, 6, 10}, g3[] = {2, 4, 6}, g4[] = {1, 12, 8},
                  g5[] = {1, 4, 4, 2, 2, 8, 1, 6, 2};
    const int64_t *sets[] = {g1, g2, g3, g4, g5};
    const int n[] = {1, 1, 1, 1, 3};
    for (int s = 0; s < 5 && plain && fused && ref.blocks; s++) {
        char w[160];
        snprintf(w, sizeof w, "%s, grid set %d unfused", what, s);
        check_vision_set(plain, &ref, q, sets[s], n[s], w);
        snprintf(w, sizeof w, "%s, grid set %d fused", what, s);
        check_vision_set(fused, &ref, q, sets[s], n[s], w);
    }
    int k = -1;
    if (ref.blocks) { /* the tapped blocks' count */
        fm_tensor pv = {0}, gt = {0};
        make_pixels(g1, 1, row_values(q), &pv, &gt);
        double *o = malloc(4 * (size_t)q->hidden_size * sizeof *o),
               *ds = malloc(32 * (size_t)q->hidden_size * sizeof *ds);
        fm_vref64_forward_ds(&ref, g1, 1, pv.data, o, ds, &k);
        free(o), free(ds), fm_tensor_free(&pv), fm_tensor_free(&gt);
    }
    CHECK_EQ_INT(expect_k, k);
    fm_model_free(plain), fm_model_free(fused);
    fm_vref_free(&ref);
    fm_test_rmtree(d);
    free(d);
}

static void test_vision_vs_ref64(void) {
    fm_qfix q = model_fixture(FM_DTYPE_F32, false);
    check_vision(&q, "f32, DeepStack after blocks 0 and 2", 2);
    q = model_fixture(FM_DTYPE_BF16, false);
    q.depth = 4, q.embed_dim = 48, q.num_heads = 3, q.mlp_ratio = 3; /* head dim 16 */
    q.num_position_embeddings = 50; /* not a square: a 7 x 7 grid, one row unused */
    q.deepstack[0] = 2, q.deepstack[1] = 1, q.deepstack[2] = 9, q.deepstack[3] = 1,
    q.n_deepstack = 4; /* merger 1 after block 1, merger 0 after block 2; 9 is past the depth */
    q.in_channels = 1, q.channels_key = "in_chans"; /* Qwen2-VL's spelling, one channel */
    check_vision(&q, "bf16, unsorted and repeated indexes, in_chans 1", 2);
}

/* ---- the decoder --------------------------------------------------------------------------- */
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

/* Logits of every row of one prefill with a fresh cache; image features optional. */
static fm_status prompt_logits(fm_model *m, const int64_t *ids, int64_t T, const fm_tensor *gt,
                               const fm_tensor *img, const fm_tensor *ds, fm_tensor *lg,
                               fm_error *e) {
    int64_t *pos3 = malloc((size_t)(3 * T) * sizeof *pos3), next = 0;
    int32_t *sl = calloc((size_t)T, 4), *ps = malloc((size_t)T * 4), *lr = malloc((size_t)T * 4);
    fm_kv_cache *c = NULL;
    for (int64_t i = 0; i < T; i++)
        ps[i] = lr[i] = (int32_t)i;
    fm_status st = fm_model_rope_index(m, ids, T, gt, pos3, &next, e);
    if (st == FM_OK) st = fm_kv_cache_new(m, 1, T, FM_DTYPE_F32, &c, e);
    fm_text_batch b = {.ids = ids,
                       .pos3 = pos3,
                       .slot = sl,
                       .pos = ps,
                       .n = (size_t)T,
                       .image_embeds = img,
                       .logit_rows = lr,
                       .n_logits = (size_t)T,
                       .deepstack_embeds = ds};
    if (st == FM_OK) st = fm_model_forward_text(m, c, &b, NULL, lg, e);
    fm_kv_cache_free(c);
    free(pos3), free(sl), free(ps), free(lr);
    return st;
}

/* Random image features [k][H] and DeepStack features [K][k][H] for the prompt's k image tokens
 * straight into the decoder, vs the reference; positions vs the reference's. */
static void check_decoder(const char *d, const int64_t *grid, int n_images, int K, double tol,
                          const char *what) {
    fm_tref_model ref;
    char why[256] = "";
    fm_model *m = load(d, NULL);
    CHECK_MSG(fm_tref_load(d, &ref, why, sizeof why) == 0, "%s: reference load: %s", what, why);
    int64_t ids[512], T = make_prompt(ids, 9, grid, n_images), k = 0;
    for (int64_t i = 0; i < T; i++)
        k += ids[i] == IMG;
    fm_tensor img = {0}, gt = {0}, ds = {0}, lg = {0};
    fm_shape is = {2, {k, H}}, gs = {2, {n_images, 3}}, dss = {3, {K, k, H}};
    if (k) {
        fm_tensor_alloc(&img, FM_DTYPE_F32, &is, NULL);
        fm_tensor_alloc(&ds, FM_DTYPE_F32, &dss, NULL);
        fm_qfix_fill(img.data, (uint64_t)(k * H), 1.0f, &seed);
        fm_qfix_fill(ds.data, (uint64_t)(K * k * H), 1.0f, &seed);
    }
    if (n_images)
        fm_tensor_alloc(&gt, FM_DTYPE_I64, &gs, NULL), memcpy(gt.data, grid, (size_t)n_images * 24);
    int64_t *pos3 = malloc((size_t)(3 * T) * sizeof *pos3),
            *want = malloc((size_t)(3 * T) * sizeof *want), next = 0;
    double *rl = malloc((size_t)(T * VOCAB) * sizeof *rl);
    fm_error e;
    if (m && ref.l) {
        CHECK_OK(fm_model_rope_index(m, ids, T, n_images ? &gt : NULL, pos3, &next, &e), &e);
        fm_tref_positions(&ref, ids, T, grid, n_images, want);
        CHECK_MSG(!memcmp(pos3, want, (size_t)(3 * T) * sizeof *pos3),
                  "%s: rope index differs from the reference", what);
        CHECK_OK(prompt_logits(m, ids, T, n_images ? &gt : NULL, k ? &img : NULL, k ? &ds : NULL,
                               &lg, &e),
                 &e);
        CHECK(fm_tref_forward_ds(&ref, ids, T, k ? img.data : NULL, k ? ds.data : NULL, K, grid,
                                 n_images, rl) == 0);
        if (lg.data) {
            double err = rel_l2_d(lg.data, rl, T * VOCAB);
            worst_logits = fmax(worst_logits, err);
            CHECK_MSG(err <= tol, "%s: logits rel-L2 %.3g vs float64 reference (want <= %.0e)",
                      what, err, tol);
        }
        if (k && lg.data) { /* the DeepStack features count: without them the logits move */
            double *r0 = malloc((size_t)(T * VOCAB) * sizeof *r0);
            CHECK(fm_tref_forward_ds(&ref, ids, T, img.data, NULL, 0, grid, n_images, r0) == 0);
            CHECK_MSG(rel_l2_d(lg.data, r0, T * VOCAB) > 100 * tol,
                      "%s: DeepStack features change nothing", what);
            free(r0);
        }
    }
    fm_tensor_free(&img), fm_tensor_free(&gt), fm_tensor_free(&ds), fm_tensor_free(&lg);
    free(pos3), free(want), free(rl);
    fm_tref_free(&ref);
    fm_model_free(m);
}

static void test_decoder_vs_ref64(void) {
    const int64_t one[] = {1, 4, 6}, two[] = {1, 4, 4, 1, 2, 6}, video_like[] = {2, 4, 4};
    fm_qfix q = model_fixture(FM_DTYPE_F32, false);
    char *d = write_fixture(&q, "dec-f32");
    check_decoder(d, NULL, 0, 2, 1e-5, "text only");
    check_decoder(d, one, 1, 2, 1e-5, "one image 1x4x6");
    check_decoder(d, two, 2, 2, 1e-5, "two images");
    check_decoder(d, video_like, 1, 2, 1e-5, "an image with t = 2");
    fm_test_rmtree(d), free(d);
    q = model_fixture(FM_DTYPE_BF16, true); /* bf16 weights, tied lm_head, rope_parameters */
    q.v5_layout = true, q.n_deepstack = 3, q.deepstack[2] = 1, q.text_head_dim = 16;
    q.mrope[0] = 2, q.mrope[1] = 3, q.mrope[2] = 3;
    d = write_fixture(&q, "dec-bf16");
    check_decoder(d, two, 2, 3, 1e-5, "bf16 tied, rope_parameters, three DeepStack layers");
    fm_test_rmtree(d), free(d);
}

/* Pixels -> vision tower -> decoder, against the reference tower feeding the reference decoder. */
static void test_whole_model_vs_ref64(void) {
    fm_qfix q = model_fixture(FM_DTYPE_F32, false);
    char *d = write_fixture(&q, "whole");
    fm_model *m = load(d, NULL);
    fm_vref_model vref;
    fm_tref_model tref;
    char why[256] = "";
    CHECK_MSG(fm_vref_load(d, &vref, why, sizeof why) == 0, "vision reference: %s", why);
    CHECK_MSG(fm_tref_load(d, &tref, why, sizeof why) == 0, "text reference: %s", why);
    const int64_t grid[] = {1, 4, 6, 1, 6, 4};
    int64_t ids[256], T = make_prompt(ids, 8, grid, 2), k = patches(grid, 2) / 4;
    fm_tensor pv = {0}, gt = {0}, lg = {0};
    fm_vision_features f = {{0}, {0}};
    make_pixels(grid, 2, row_values(&q), &pv, &gt);
    double *emb = malloc((size_t)(k * H) * sizeof *emb), *dsd = malloc((size_t)(2 * k * H) * 8),
           *rl = malloc((size_t)(T * VOCAB) * sizeof *rl);
    float *embf = malloc((size_t)(k * H) * 4), *dsf = malloc((size_t)(2 * k * H) * 4);
    int K = 0;
    fm_error e;
    if (m && vref.blocks && tref.l) {
        CHECK(fm_vref64_forward_ds(&vref, grid, 2, pv.data, emb, dsd, &K) == 0);
        for (int64_t i = 0; i < k * H; i++)
            embf[i] = (float)emb[i];
        for (int64_t i = 0; i < K * k * H; i++)
            dsf[i] = (float)dsd[i];
        CHECK(fm_tref_forward_ds(&tref, ids, T, embf, dsf, K, grid, 2, rl) == 0);
        CHECK_OK(features(m, &pv, &gt, 0, &f, &e), &e);
        CHECK_OK(prompt_logits(m, ids, T, &gt, &f.image_embeds, &f.deepstack, &lg, &e), &e);
        double err = lg.data ? rel_l2_d(lg.data, rl, T * VOCAB) : 1e9;
        worst_logits = fmax(worst_logits, err);
        CHECK_MSG(err <= 1e-5, "pixels to logits: rel-L2 %.3g vs the float64 references", err);
    }
    free(emb), free(dsd), free(rl), free(embf), free(dsf);
    fm_tensor_free(&pv), fm_tensor_free(&gt), fm_tensor_free(&lg);
    fm_vision_features_free(&f);
    fm_vref_free(&vref), fm_tref_free(&tref);
    fm_model_free(m);
    fm_test_rmtree(d), free(d);
}

/* fm_generate on an image prompt: greedy tokens equal the references' argmax at every step
 * (full recompute of the sequence by the f64 decoder fed by the f64 tower). */
static void test_greedy_image_prompt(void) {
    fm_qfix q = model_fixture(FM_DTYPE_F32, true);
    q.scale = 0.2f;
    char *d = write_fixture(&q, "greedy");
    fm_model *m = load(d, NULL);
    fm_vref_model vref;
    fm_tref_model tref;
    char why[256] = "";
    CHECK_MSG(fm_vref_load(d, &vref, why, sizeof why) == 0, "vision reference: %s", why);
    CHECK_MSG(fm_tref_load(d, &tref, why, sizeof why) == 0, "text reference: %s", why);
    const int64_t grid[] = {1, 4, 8};
    int64_t ids[128], T = make_prompt(ids, 6, grid, 1), k = patches(grid, 1) / 4;
    fm_tensor pv = {0}, gt = {0};
    make_pixels(grid, 1, row_values(&q), &pv, &gt);
    enum { STEPS = 12 };
    double *emb = malloc((size_t)(k * H) * 8), *dsd = malloc((size_t)(2 * k * H) * 8),
           *rl = malloc((size_t)((T + STEPS) * VOCAB) * 8);
    float *embf = malloc((size_t)(k * H) * 4), *dsf = malloc((size_t)(2 * k * H) * 4);
    int K = 0;
    fm_generate_options go;
    fm_generate_options_init(&go);
    go.max_new_tokens = STEPS;
    fm_generate_result r = {0};
    fm_error e;
    if (m && vref.blocks && tref.l) {
        CHECK(fm_vref64_forward_ds(&vref, grid, 1, pv.data, emb, dsd, &K) == 0);
        for (int64_t i = 0; i < k * H; i++)
            embf[i] = (float)emb[i];
        for (int64_t i = 0; i < K * k * H; i++)
            dsf[i] = (float)dsd[i];
        CHECK_OK(fm_generate(m, ids, (size_t)T, &pv, &gt, &go, &r, &e), &e);
        CHECK_EQ_INT(STEPS, r.n_tokens);
        double min_margin = 1e9;
        for (int s = 0; s < STEPS && s < (int)r.n_tokens; s++) {
            int64_t n = T + s, best = 0, second = -1;
            CHECK(fm_tref_forward_ds(&tref, ids, n, embf, dsf, K, grid, 1, rl) == 0);
            const double *x = rl + (n - 1) * VOCAB;
            for (int64_t i = 1; i < VOCAB; i++)
                if (x[i] > x[best])
                    second = best, best = i;
                else if (second < 0 || x[i] > x[second])
                    second = i;
            min_margin = fmin(min_margin, x[best] - x[second]);
            CHECK_MSG(r.tokens[s] == best, "step %d: generated %d, reference %lld", s, r.tokens[s],
                      (long long)best);
            ids[n] = best;
        }
        fprintf(stderr, "greedy: %d tokens, smallest reference top-2 margin %.3g\n", STEPS,
                min_margin);
    }
    fm_generate_result_free(&r);
    free(emb), free(dsd), free(rl), free(embf), free(dsf);
    fm_tensor_free(&pv), fm_tensor_free(&gt);
    fm_vref_free(&vref), fm_tref_free(&tref);
    fm_model_free(m);
    fm_test_rmtree(d), free(d);
}

/* ---- fusion -------------------------------------------------------------------------------- */
typedef struct run_out {
    fm_vision_features f;
    fm_tensor logits;
} run_out;

/* Vision features of two images and the logits of a prompt holding them. */
static run_out run_model(fm_model *m, const fm_qfix *q) {
    run_out o = {{{0}, {0}}, {0}};
    const int64_t grid[] = {1, 4, 6, 2, 2, 4};
    uint64_t keep = seed; /* the same inputs on every call */
    seed = 0x1234567ull;
    fm_tensor pv = {0}, gt = {0};
    int64_t ids[128], T = make_prompt(ids, 7, grid, 2);
    make_pixels(grid, 2, row_values(q), &pv, &gt);
    seed = keep;
    fm_error e;
    if (m) CHECK_OK(features(m, &pv, &gt, 2, &o.f, &e), &e);
    if (o.f.image_embeds.data)
        CHECK_OK(prompt_logits(m, ids, T, &gt, &o.f.image_embeds, &o.f.deepstack, &o.logits, &e),
                 &e);
    fm_tensor_free(&pv), fm_tensor_free(&gt);
    return o;
}

static void run_out_free(run_out *o) {
    fm_vision_features_free(&o->f);
    fm_tensor_free(&o->logits);
}

static void check_same(const run_out *a, const run_out *b, const char *what) {
    double e1 = rel_l2_f(&a->f.image_embeds, &b->f.image_embeds),
           e2 = rel_l2_f(&a->f.deepstack, &b->f.deepstack), e3 = rel_l2_f(&a->logits, &b->logits);
    CHECK_MSG(e1 <= 1e-5 && e2 <= 1e-5 && e3 <= 1e-5,
              "%s: rel-L2 image embeddings %.3g, DeepStack %.3g, logits %.3g (want <= 1e-5)", what,
              e1, e2, e3);
}

static const char *const families[3] = {"patch_embeddings", "qkv", "gate_up"};

static void fusion_json(int mask, char *buf, size_t n) {
    size_t w = (size_t)snprintf(buf, n, "{");
    for (int f = 0; f < 3; f++)
        if (mask & (1 << f))
            w += (size_t)snprintf(buf + w, n - w, "%s\"%s\": true", w > 1 ? ", " : "", families[f]);
    snprintf(buf + w, n - w, "}");
}

/* Every tensor file of two checkpoint directories byte for byte (config.json aside). */
static void check_same_tensors(const char *a, const char *b, const char *what) {
    static const char *const skip[] = {"config.json", NULL};
    CHECK_MSG(fm_test_same_dir(a, b, skip) == 1, "%s: the saved checkpoint differs from the source",
              what);
}

static void check_fusions(const fm_qfix *q, const char *tag) {
    char *d = write_fixture(q, tag);
    fm_model *plain = load(d, "{}");
    run_out base = run_model(plain, q);
    for (int mask = 1; mask < 8; mask++) {
        char fj[128], what[192];
        fusion_json(mask, fj, sizeof fj);
        snprintf(what, sizeof what, "%s %s", tag, fj);
        fm_load_options o;
        fm_load_options_init(&o);
        o.fusion_config = fj, o.strict = true;
        fm_load_report rep;
        fm_model *fused = NULL;
        fm_error e;
        CHECK_OK(fm_from_pretrained(d, &o, &fused, &rep, &e), &e);
        size_t want = (mask & 1) + (mask & 2 ? 3 : 0) + (mask & 4 ? 3 : 0);
        CHECK_MSG(rep.n_fused == want, "%s: %zu modules fused, expected %zu", what, rep.n_fused,
                  want);
        fm_load_report_free(&rep);
        run_out got = run_model(fused, q);
        check_same(&got, &base, what);
        run_out_free(&got);
        char *orig = fm_test_join(tmp, "orig"), *rt = fm_test_join(tmp, "runtime");
        if (fused) CHECK_OK(fm_save_pretrained(fused, orig, NULL, &e), &e);
        check_same_tensors(d, orig, what);
        fm_save_pretrained_options so;
        fm_save_pretrained_options_init(&so);
        so.runtime_format = true;
        if (fused) CHECK_OK(fm_save_pretrained(fused, rt, &so, &e), &e);
        fm_model *back_fused = load(rt, NULL), *back_plain = load(rt, "{}");
        run_out r1 = run_model(back_fused, q), r2 = run_model(back_plain, q);
        snprintf(what, sizeof what, "%s %s runtime format reloaded fused", tag, fj);
        check_same(&r1, &base, what);
        snprintf(what, sizeof what, "%s %s runtime format reloaded unfused", tag, fj);
        check_same(&r2, &base, what);
        run_out_free(&r1), run_out_free(&r2);
        fm_model_free(back_fused), fm_model_free(back_plain), fm_model_free(fused);
        fm_test_rmtree(orig), fm_test_rmtree(rt);
        free(orig), free(rt);
    }
    run_out_free(&base);
    fm_model_free(plain);
    fm_test_rmtree(d), free(d);
}

static void test_fusion_combinations(void) {
    fm_qfix q = model_fixture(FM_DTYPE_F32, false);
    check_fusions(&q, "f32 single file");
    q = model_fixture(FM_DTYPE_BF16, true);
    q.max_shard = 40000; /* several shards */
    check_fusions(&q, "bf16 sharded tied");
}

/* ---- config, preprocessing, refusals, bad input ---------------------------------------------- */
static char *write_config_variant(const char *tag, const char *from, const char *to) {
    fm_qfix q = model_fixture(FM_DTYPE_F32, false);
    char *d = write_fixture(&q, tag), *p = fm_test_join(d, "config.json");
    char *text = fm_test_read_file(p, NULL), *at = text ? strstr(text, from) : NULL;
    CHECK_MSG(at != NULL, "fixture config has no '%s'", from);
    if (at) {
        size_t n = strlen(text) + strlen(to) + 1;
        char *out = malloc(n);
        snprintf(out, n, "%.*s%s%s", (int)(at - text), text, to, at + strlen(from));
        CHECK(fm_test_write_file(p, out, strlen(out)) == 0);
        free(out);
    }
    free(text), free(p);
    return d;
}

static void expect_load_error(const char *d, fm_status want, const char *needle,
                              const char *needle2) {
    fm_load_options o;
    fm_load_options_init(&o);
    fm_model *m = NULL;
    fm_error e;
    CHECK_STATUS(want, fm_from_pretrained(d, &o, &m, NULL, &e), &e);
    CHECK(m == NULL);
    CHECK_MSG(strstr(e.msg, needle) && (!needle2 || strstr(e.msg, needle2)),
              "expected '%s'%s%s in: %s", needle, needle2 ? " and " : "", needle2 ? needle2 : "",
              e.msg);
    fm_model_free(m);
}

static void test_refusals(void) {
    static const char *const others[] = {"qwen3_vl_moe", "glm4v"};
    for (int i = 0; i < 2; i++) {
        char to[64];
        snprintf(to, sizeof to, "\"model_type\": \"%s\",\n  \"text", others[i]);
        char *d = write_config_variant(others[i], "\"model_type\": \"qwen3_vl\",\n  \"text", to);
        expect_load_error(d, FM_ERR_UNSUPPORTED, others[i], "supported: qwen2_vl");
        fm_load_options o;
        fm_load_options_init(&o);
        fm_model *m = NULL;
        fm_error e;
        fm_from_pretrained(d, &o, &m, NULL, &e);
        CHECK_MSG(strstr(e.msg, "qwen3_vl,") || strstr(e.msg, "qwen3_vl)"),
                  "the supported list names qwen3_vl: %s", e.msg);
        fm_test_rmtree(d), free(d);
    }
    char *d = write_config_variant("bias", "\"attention_bias\": false", "\"attention_bias\": true");
    expect_load_error(d, FM_ERR_CONFIG, "text_config.attention_bias", NULL);
    fm_test_rmtree(d), free(d);
    d = write_config_variant("heads", "\"num_heads\": 4", "\"num_heads\": 5");
    expect_load_error(d, FM_ERR_CONFIG, "vision_config.hidden_size", "num_heads");
    fm_test_rmtree(d), free(d);
    d = write_config_variant("ds", "\"deepstack_visual_indexes\": [0, 2]",
                             "\"deepstack_visual_indexes\": \"0\"");
    expect_load_error(d, FM_ERR_CONFIG, "deepstack_visual_indexes", NULL);
    fm_test_rmtree(d), free(d);
}

/* Hub variants that must load alike: no mrope_section (transformers' [24, 20, 20]), flat text
 * keys instead of text_config, tie_word_embeddings only inside text_config. */
static void test_config_spellings(void) {
    fm_qfix q = model_fixture(FM_DTYPE_F32, false);
    q.text_head_dim = 128, q.mrope[0] = 24, q.mrope[1] = 20, q.mrope[2] = 20;
    char *a = write_fixture(&q, "sect-explicit"), *p = fm_test_join(a, "config.json");
    char *text = fm_test_read_file(p, NULL), *at = text ? strstr(text, "\"mrope_section\"") : NULL;
    const int64_t grid[] = {1, 4, 6};
    int64_t ids[64], T = make_prompt(ids, 6, grid, 1), k = 6;
    fm_tensor img = {0}, ds = {0}, gt = {0}, l1 = {0}, l2 = {0};
    fm_shape is = {2, {k, H}}, dss = {3, {2, k, H}}, gs = {2, {1, 3}};
    fm_tensor_alloc(&img, FM_DTYPE_F32, &is, NULL), fm_tensor_alloc(&ds, FM_DTYPE_F32, &dss, NULL);
    fm_tensor_alloc(&gt, FM_DTYPE_I64, &gs, NULL), memcpy(gt.data, grid, sizeof grid);
    fm_qfix_fill(img.data, (uint64_t)(k * H), 1.0f, &seed);
    fm_qfix_fill(ds.data, (uint64_t)(2 * k * H), 1.0f, &seed);
    fm_model *m1 = load(a, NULL), *m2 = NULL;
    fm_error e;
    if (m1) CHECK_OK(prompt_logits(m1, ids, T, &gt, &img, &ds, &l1, &e), &e);
    if (at) { /* "mrope_section": [24, 20, 20], removed */
        char *end = strchr(at, ']');
        memmove(at, end + 3, strlen(end + 3) + 1);
        CHECK(fm_test_write_file(p, text, strlen(text)) == 0);
        m2 = load(a, NULL);
        if (m2) CHECK_OK(prompt_logits(m2, ids, T, &gt, &img, &ds, &l2, &e), &e);
        CHECK_MSG(l1.data && l2.data && rel_l2_f(&l1, &l2) == 0,
                  "no mrope_section: logits differ from [24, 20, 20] (rel-L2 %.3g)",
                  rel_l2_f(&l1, &l2));
    }
    fm_model_free(m1), fm_model_free(m2);
    fm_tensor_free(&l1), fm_tensor_free(&l2);
    free(text), free(p);
    fm_test_rmtree(a), free(a);
    /* tie only inside text_config: lm_head ties (no lm_head.weight in the file) */
    q = model_fixture(FM_DTYPE_F32, true);
    a = write_fixture(&q, "tie-inner");
    p = fm_test_join(a, "config.json");
    text = fm_test_read_file(p, NULL);
    const char *outer = "\"tie_word_embeddings\": true,\n  ";
    at = text ? strstr(text, "\"tie_word_embeddings\": true,\n  \"torch") : NULL;
    CHECK(at != NULL);
    if (at) memmove(at, at + strlen(outer), strlen(at + strlen(outer)) + 1);
    if (text) CHECK(fm_test_write_file(p, text, strlen(text)) == 0);
    fm_load_options o;
    fm_load_options_init(&o);
    o.strict = true;
    fm_model *m = NULL;
    CHECK_OK(fm_from_pretrained(a, &o, &m, NULL, &e), &e);
    fm_model_free(m);
    free(text), free(p);
    fm_test_rmtree(a), free(a);
    fm_tensor_free(&img), fm_tensor_free(&ds), fm_tensor_free(&gt);
}

/* Qwen3-VL's processor values (patch 16, factor 32, 65536..16777216 pixels, mean/std 0.5), and
 * preprocessor_config.json applied over them. */
static void test_preprocessing(void) {
    static const struct {
        uint32_t h, w;
        int64_t gh, gw;
    } vec[] = {{480, 640, 30, 40}, {1080, 1920, 68, 120}, {224, 224, 16, 16},
               {20, 20, 16, 16},   {512, 512, 32, 32},    {3000, 4000, 188, 250}};
    fm_qwen2vl_preproc_params p;
    fm_qwen3vl_preproc_params_init(&p);
    fm_error e;
    for (size_t i = 0; i < sizeof vec / sizeof *vec; i++) {
        int64_t g[3] = {0};
        CHECK_OK(fm_qwen2vl_image_geometry(vec[i].w, vec[i].h, &p, NULL, NULL, g, &e), &e);
        CHECK_MSG(g[1] == vec[i].gh && g[2] == vec[i].gw, "%ux%u: grid %lldx%lld, want %lldx%lld",
                  vec[i].h, vec[i].w, (long long)g[1], (long long)g[2], (long long)vec[i].gh,
                  (long long)vec[i].gw);
    }
    fm_qfix q = model_fixture(FM_DTYPE_F32, false);
    q.patch_size = 16;
    char *d = write_fixture(&q, "pre");
    fm_model *m = load(d, NULL);
    uint8_t rgb[64 * 96 * 3];
    for (size_t i = 0; i < sizeof rgb; i++)
        rgb[i] = (uint8_t)(i * 37 % 251);
    fm_image img = {96, 64, rgb, 0};
    fm_tensor pv = {0}, gt = {0};
    if (m) CHECK_OK(fm_model_preprocess_images(m, &img, 1, &pv, &gt, &e), &e);
    const int64_t *g = gt.data;
    /* 64 x 96 has 6144 < 65536 pixels: scaled up to 224 x 320 */
    CHECK_MSG(pv.data && pv.shape.dims[1] == 1536 && g && g[1] == 14 && g[2] == 20,
              "Qwen3-VL rows of 1536 values, grid 14 x 20; got %lld values, grid %lld x %lld",
              pv.data ? (long long)pv.shape.dims[1] : -1, g ? (long long)g[1] : -1,
              g ? (long long)g[2] : -1);
    fm_tensor_free(&pv), fm_tensor_free(&gt);
    /* 256 x 256 is kept as it is (65536 pixels, multiples of 32): the first value is channel 0 of
     * pixel (0, 0), normalised with mean = std = 0.5 */
    uint8_t *big = malloc(256 * 256 * 3);
    for (size_t i = 0; big && i < 256 * 256 * 3; i++)
        big[i] = (uint8_t)((i * 29 + 77) % 253);
    fm_image sq = {256, 256, big, 0};
    if (m && big) CHECK_OK(fm_model_preprocess_images(m, &sq, 1, &pv, &gt, &e), &e);
    g = gt.data;
    CHECK(g && g[1] == 16 && g[2] == 16);
    if (pv.data && big) {
        float want = ((float)(big[0] / 255.0) - 0.5f) / 0.5f, v0 = ((float *)pv.data)[0];
        CHECK_MSG(fabsf(v0 - want) < 1e-6f, "mean/std 0.5: %g, want %g", v0, want);
    }
    fm_tensor_free(&pv), fm_tensor_free(&gt);
    free(big);
    char *pc = fm_test_join(d, "preprocessor_config.json");
    const char *json = "{\"size\": {\"shortest_edge\": 1024, \"longest_edge\": 8192}, "
                       "\"image_mean\": [0, 0, 0], \"image_std\": [1, 1, 1]}";
    CHECK(fm_test_write_file(pc, json, strlen(json)) == 0);
    if (m) CHECK_OK(fm_model_preprocess_images(m, &img, 1, &pv, &gt, &e), &e);
    g = gt.data; /* 6144 pixels within [1024, 8192]: 64 x 96 kept (multiples of 32) */
    CHECK_MSG(g && g[1] == 4 && g[2] == 6, "grid with the file's limits: %lld x %lld",
              g ? (long long)g[1] : -1, g ? (long long)g[2] : -1);
    if (pv.data) /* mean 0, std 1: value = byte / 255 */
        CHECK_MSG(fabsf(((float *)pv.data)[0] - (float)rgb[0] / 255.0f) < 1e-6f,
                  "normalised with the file's mean/std: %g vs %g", ((float *)pv.data)[0],
                  rgb[0] / 255.0);
    fm_tensor_free(&pv), fm_tensor_free(&gt);
    free(pc);
    fm_model_free(m);
    fm_test_rmtree(d), free(d);
}

static void test_bad_input(void) {
    fm_qfix q = model_fixture(FM_DTYPE_F32, false);
    char *d = write_fixture(&q, "bad");
    fm_model *m = load(d, NULL);
    const int64_t grid[] = {1, 4, 4};
    int64_t ids[64], T = make_prompt(ids, 4, grid, 1);
    fm_tensor img = {0}, ds = {0}, gt = {0}, lg = {0};
    fm_shape is = {2, {4, H}}, dss = {3, {2, 4, H}}, bad = {3, {3, 4, H}}, gs = {2, {1, 3}};
    fm_tensor_alloc(&img, FM_DTYPE_F32, &is, NULL), fm_tensor_alloc(&ds, FM_DTYPE_F32, &dss, NULL);
    fm_tensor_alloc(&gt, FM_DTYPE_I64, &gs, NULL), memcpy(gt.data, grid, sizeof grid);
    fm_qfix_fill(img.data, 4 * H, 1.0f, &seed), fm_qfix_fill(ds.data, 2 * 4 * H, 1.0f, &seed);
    fm_error e;
    if (m) {
        CHECK_STATUS(FM_ERR_INPUT, prompt_logits(m, ids, T, &gt, &img, NULL, &lg, &e), &e);
        CHECK_CONTAINS(e.msg, "without their DeepStack features");
        ds.shape = bad; /* 3 layers' worth declared, the model has 2 */
        CHECK_STATUS(FM_ERR_INPUT, prompt_logits(m, ids, T, &gt, &img, &ds, &lg, &e), &e);
        CHECK_CONTAINS(e.msg, "expected F32 [2][4][64]");
        ds.shape = dss;
        CHECK_OK(prompt_logits(m, ids, T, &gt, &img, &ds, &lg, &e), &e);
        fm_tensor_free(&lg);
        ids[2] = VID; /* videos are refused by get_rope_index */
        int64_t pos3[192], next;
        CHECK_STATUS(FM_ERR_UNSUPPORTED, fm_model_rope_index(m, ids, T, &gt, pos3, &next, &e), &e);
    }
    /* a Qwen2-VL model refuses DeepStack features */
    fm_qfix q2;
    fm_qfix_init(&q2);
    q2.text_layers = 1, q2.text_hidden = H, q2.hidden_size = H, q2.vocab = VOCAB;
    q2.extra_config = ids_json;
    char *d2 = write_fixture(&q2, "qwen2");
    fm_model *m2 = load(d2, NULL);
    int64_t ids2[64], T2 = make_prompt(ids2, 4, grid, 1);
    if (m2) {
        CHECK_STATUS(FM_ERR_INPUT, prompt_logits(m2, ids2, T2, &gt, &img, &ds, &lg, &e), &e);
        CHECK_CONTAINS(e.msg, "no DeepStack");
        fm_vision_features f = {{0}, {0}};
        fm_tensor pv = {0}, gt2 = {0};
        make_pixels(grid, 1, row_values(&q2), &pv, &gt2);
        CHECK_OK(features(m2, &pv, &gt2, 1, &f, &e), &e);
        CHECK(f.image_embeds.data && !f.deepstack.data); /* no DeepStack output */
        fm_vision_features_free(&f), fm_tensor_free(&pv), fm_tensor_free(&gt2);
    }
    CHECK(lg.data == NULL);
    fm_tensor_free(&img), fm_tensor_free(&ds), fm_tensor_free(&gt);
    fm_model_free(m), fm_model_free(m2);
    fm_test_rmtree(d), fm_test_rmtree(d2);
    free(d), free(d2);
}

int main(void) {
    tmp = fm_test_tmpdir("qwen3_vl");
    RUN(test_vision_vs_ref64);
    RUN(test_decoder_vs_ref64);
    RUN(test_whole_model_vs_ref64);
    RUN(test_greedy_image_prompt);
    RUN(test_fusion_combinations);
    RUN(test_refusals);
    RUN(test_config_spellings);
    RUN(test_preprocessing);
    RUN(test_bad_input);
    fprintf(stderr, "worst rel-L2 vs float64: vision %.3g, logits %.3g\n", worst_vision,
            worst_logits);
    fm_test_rmtree(tmp);
    free(tmp);
    TEST_END();
}
