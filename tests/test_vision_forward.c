/* Qwen2-VL vision forward tests: f32 forward vs the separate f64 reference on random models
 * and grids, conv vs fused patch path, threads, plan reuse, validation, allocation failures. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "models/qwen2_vl/vision.h"
#include "support/check.h"
#include "support/vision_ref64.h"

static int quick;
static double worst_rel_l2; /* largest error seen against the f64 reference (printed at the end) */

/* ---- random model ----------------------------------------------------------------------- */

static uint64_t rng_state = 0x2545F4914F6CDD1Dull;
static float urand(float lo, float hi) {
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    uint64_t v = rng_state * 2685821657736338717ull;
    return lo + (hi - lo) * (float)((v >> 40) * (1.0 / 16777216.0));
}
/* n values in centre +- half */
static float *rnd(int64_t n, float centre, float half) {
    float *p = malloc((size_t)(n > 0 ? n : 1) * sizeof *p);
    for (int64_t i = 0; i < n; i++) p[i] = centre + urand(-half, half);
    return p;
}

typedef struct model {
    fm_qwen2vl_vision_cfg cfg;
    fm_qwen2vl_vision_w w;
    fm_qwen2vl_block_w *blocks;
} model;

/* Linear weights ~ U(-a, a), a = sqrt(3 / in) (unit-variance outputs); norms ~ 1 +- 0.2. */
static void make_model(model *m, const fm_qwen2vl_vision_cfg *cfg) {
    memset(m, 0, sizeof *m);
    m->cfg = *cfg;
    int64_t d = cfg->embed_dim, h = cfg->mlp_hidden, m2 = (int64_t)cfg->spatial_merge_size * cfg->spatial_merge_size;
    int64_t k = (int64_t)cfg->in_channels * cfg->temporal_patch_size * cfg->patch_size * cfg->patch_size;
    float ad = sqrtf(3.0f / (float)d), ah = sqrtf(3.0f / (float)h), aw = sqrtf(3.0f / (float)(m2 * d));
    m->blocks = calloc((size_t)(cfg->depth > 0 ? cfg->depth : 1), sizeof *m->blocks);
    for (int i = 0; i < cfg->depth; i++) {
        fm_qwen2vl_block_w *b = &m->blocks[i];
        b->norm1_w = rnd(d, 1, 0.2f), b->norm1_b = rnd(d, 0, 0.2f);
        b->qkv_w = rnd(3 * d * d, 0, ad), b->qkv_b = rnd(3 * d, 0, 0.2f);
        b->proj_w = rnd(d * d, 0, ad), b->proj_b = rnd(d, 0, 0.2f);
        b->norm2_w = rnd(d, 1, 0.2f), b->norm2_b = rnd(d, 0, 0.2f);
        b->fc1_w = rnd(h * d, 0, ad), b->fc1_b = rnd(h, 0, 0.2f);
        b->fc2_w = rnd(d * h, 0, ah), b->fc2_b = rnd(d, 0, 0.2f);
    }
    m->w.patch_fused = 1;
    m->w.conv = (fm_conv3d_params){(int)d, cfg->in_channels,
                                   {cfg->temporal_patch_size, cfg->patch_size, cfg->patch_size},
                                   {cfg->temporal_patch_size, cfg->patch_size, cfg->patch_size},
                                   {0, 0, 0}, {1, 1, 1}, 1};
    m->w.patch_w = rnd(d * k, 0, sqrtf(3.0f / (float)k));
    m->w.patch_b = NULL;
    m->w.blocks = m->blocks;
    m->w.ln_q_w = rnd(d, 1, 0.2f), m->w.ln_q_b = rnd(d, 0, 0.2f);
    m->w.mlp0_w = rnd(m2 * d * m2 * d, 0, aw), m->w.mlp0_b = rnd(m2 * d, 0, 0.2f);
    m->w.mlp2_w = rnd(cfg->hidden_size * m2 * d, 0, aw), m->w.mlp2_b = rnd(cfg->hidden_size, 0, 0.2f);
}

static void free_model(model *m) {
    for (int i = 0; i < m->cfg.depth; i++) {
        const float **f = (const float **)&m->blocks[i];
        for (int k = 0; k < 12; k++) free((void *)f[k]);
    }
    free(m->blocks);
    free((void *)m->w.patch_w), free((void *)m->w.ln_q_w), free((void *)m->w.ln_q_b);
    free((void *)m->w.mlp0_w), free((void *)m->w.mlp0_b), free((void *)m->w.mlp2_w), free((void *)m->w.mlp2_b);
}

static fm_qwen2vl_vision_cfg cfg_make(int depth, int embed, int heads, int mlp, int hidden, int act, int c,
                                      int t, int p) {
    fm_qwen2vl_vision_cfg cfg = {depth, embed, hidden, heads, mlp, c, p, t, 2, act, 1e-6f};
    return cfg;
}

static int64_t grid_patches(const int64_t *g, int n) {
    int64_t s = 0;
    for (int i = 0; i < n; i++) s += g[3 * i] * g[3 * i + 1] * g[3 * i + 2];
    return s;
}

/* Runs the f32 forward with `threads` and returns the output (caller frees); NULL on error. */
static float *run_forward(const model *m, const int64_t *grid, int n_img, const float *px, int threads) {
    fm_error errbuf, *err = &errbuf;
    fm_vision_plan *plan = NULL;
    CHECK_OK(fm_vision_plan_new(&m->cfg, grid, n_img, threads, &plan, err), err);
    if (!plan) return NULL;
    int64_t n = grid_patches(grid, n_img), tokens = fm_vision_plan_tokens(plan);
    CHECK_EQ_INT(n, fm_vision_plan_patches(plan));
    float *out = malloc((size_t)(tokens * m->cfg.hidden_size) * sizeof *out);
    CHECK_OK(fm_qwen2vl_vision_forward(plan, &m->cfg, &m->w, px, n, out, NULL, NULL, err), err);
    fm_vision_plan_free(plan);
    return out;
}

/* ---- accuracy --------------------------------------------------------------------------- */

static void check_against_ref(const fm_qwen2vl_vision_cfg *cfg, const int64_t *grid, int n_img, const char *what) {
    model m;
    make_model(&m, cfg);
    int64_t n = grid_patches(grid, n_img);
    int64_t k = (int64_t)cfg->in_channels * cfg->temporal_patch_size * cfg->patch_size * cfg->patch_size;
    int64_t tokens = n / 4, no = tokens * cfg->hidden_size;
    float *px = rnd(n * k, 0, 2.0f);
    double *ref = malloc((size_t)no * sizeof *ref);
    CHECK(fm_vref64_forward(cfg, &m.w, grid, n_img, px, ref, NULL) == 0);
    float *out = run_forward(&m, grid, n_img, px, 2);
    if (out) {
        double e = fm_vref64_rel_l2(out, ref, no);
        if (e > worst_rel_l2) worst_rel_l2 = e;
        CHECK_MSG(e <= 1e-5, "%s: rel-L2 %.3g vs float64 reference", what, e);
        double norm = 0;
        for (int64_t i = 0; i < no; i++) norm += ref[i] * ref[i];
        CHECK_MSG(sqrt(norm / (double)no) > 0.05, "%s: output too small to be a meaningful check", what);
    }
    free(out), free(px), free(ref);
    free_model(&m);
}

static void test_small_configs_vs_ref64(void) {
    const int64_t g_square[] = {1, 4, 4};
    const int64_t g_odd[] = {1, 6, 10};           /* merge-aligned, gh/2 and gw/2 odd */
    const int64_t g_video[] = {2, 4, 6};          /* t = 2: two attention segments */
    const int64_t g_multi[] = {1, 4, 4, 1, 2, 8, 2, 6, 2}; /* three images, one a video */
    fm_qwen2vl_vision_cfg a = cfg_make(2, 64, 4, 256, 48, FM_ACT_QUICK_GELU, 3, 2, 4);
    fm_qwen2vl_vision_cfg b = cfg_make(3, 96, 6, 240, 80, FM_ACT_GELU, 3, 2, 3);
    fm_qwen2vl_vision_cfg c = cfg_make(2, 96, 4, 384, 64, FM_ACT_SILU, 2, 1, 5);
    fm_qwen2vl_vision_cfg d = cfg_make(1, 64, 4, 128, 32, FM_ACT_GELU_TANH, 3, 2, 14); /* K = 1176 */
    check_against_ref(&a, g_square, 1, "cfg A 1x4x4");
    check_against_ref(&a, g_odd, 1, "cfg A 1x6x10");
    check_against_ref(&a, g_multi, 3, "cfg A three images");
    check_against_ref(&b, g_video, 1, "cfg B 2x4x6");
    check_against_ref(&b, g_multi, 3, "cfg B three images");
    check_against_ref(&c, g_odd, 1, "cfg C 1x6x10");
    check_against_ref(&d, g_square, 1, "cfg D 1x4x4 (P=14)");
    if (!quick) {
        const int64_t g_big[] = {1, 16, 22, 1, 12, 8}; /* segments > 128 rows: several query blocks */
        check_against_ref(&a, g_big, 2, "cfg A 1x16x22 + 1x12x8");
        check_against_ref(&b, g_odd, 1, "cfg B 1x6x10");
    }
}

/* Depth 0 is patch embedding + merger alone: isolates the merger's 2x2 row grouping and its
 * exact-erf GELU (two images of different shapes). */
static void test_depth0_and_merge_order(void) {
    fm_qwen2vl_vision_cfg a = cfg_make(0, 64, 4, 256, 40, FM_ACT_QUICK_GELU, 3, 2, 4);
    const int64_t g[] = {1, 6, 10, 2, 2, 4};
    check_against_ref(&a, g, 2, "depth 0");
}

/* ---- conv path, threads, plan reuse ------------------------------------------------------- */

static void test_conv_path_matches_fused(void) {
    fm_qwen2vl_vision_cfg cfg = cfg_make(2, 64, 4, 256, 48, FM_ACT_QUICK_GELU, 3, 2, 14);
    const int64_t g[] = {1, 4, 6, 2, 2, 2};
    model m;
    make_model(&m, &cfg);
    int64_t n = grid_patches(g, 2), no = n / 4 * cfg.hidden_size;
    float *px = rnd(n * 1176, 0, 2.0f);
    float *fused = run_forward(&m, g, 2, px, 2);
    m.w.patch_fused = 0; /* same weight memory read as a Conv3d [64][3][2][14][14] */
    float *conv = run_forward(&m, g, 2, px, 2);
    if (fused && conv) {
        double e = 0, den = 0;
        for (int64_t i = 0; i < no; i++) e += (fused[i] - conv[i]) * (double)(fused[i] - conv[i]), den += (double)fused[i] * fused[i];
        CHECK_MSG(sqrt(e / den) <= 2e-6, "conv path vs fused path: rel-L2 %.3g", sqrt(e / den));
    }
    free(fused), free(conv), free(px);
    free_model(&m);
}

static void test_threads_and_plan_reuse(void) {
    fm_qwen2vl_vision_cfg cfg = cfg_make(2, 96, 6, 240, 80, FM_ACT_GELU, 3, 2, 4);
    const int64_t g[] = {1, 8, 10, 2, 4, 4};
    model m;
    make_model(&m, &cfg);
    int64_t n = grid_patches(g, 2), no = n / 4 * cfg.hidden_size;
    float *px = rnd(n * 96, 0, 2.0f), *px2 = rnd(n * 96, 0, 2.0f);
    float *o[4] = {0};
    for (int t = 1; t <= 3; t++) o[t] = run_forward(&m, g, 2, px, t);
    for (int t = 2; t <= 3; t++) {
        if (!o[1] || !o[t]) continue;
        double e = 0, den = 0;
        for (int64_t i = 0; i < no; i++) e += (o[1][i] - o[t][i]) * (double)(o[1][i] - o[t][i]), den += (double)o[1][i] * o[1][i];
        CHECK_MSG(sqrt(e / den) <= 1e-6, "threads %d vs 1: rel-L2 %.3g", t, sqrt(e / den));
    }
    /* one plan, two different inputs, then the first again: identical to fresh plans */
    fm_error errbuf, *err = &errbuf;
    fm_vision_plan *plan = NULL;
    CHECK_OK(fm_vision_plan_new(&cfg, g, 2, 2, &plan, err), err);
    float *a = malloc((size_t)no * 4), *b = malloc((size_t)no * 4);
    float *fresh2 = run_forward(&m, g, 2, px2, 2);
    CHECK_OK(fm_qwen2vl_vision_forward(plan, &cfg, &m.w, px2, n, a, NULL, NULL, err), err);
    CHECK_OK(fm_qwen2vl_vision_forward(plan, &cfg, &m.w, px, n, b, NULL, NULL, err), err);
    CHECK(fresh2 && memcmp(a, fresh2, (size_t)no * 4) == 0);
    CHECK(o[2] && memcmp(b, o[2], (size_t)no * 4) == 0);
    fm_vision_plan_free(plan);
    for (int t = 1; t <= 3; t++) free(o[t]);
    free(a), free(b), free(fresh2), free(px), free(px2);
    free_model(&m);
}

/* ---- validation and failures -------------------------------------------------------------- */

typedef struct prog {
    int calls, last_done, total;
} prog;
static void on_progress(void *ctx, int done, int total) {
    prog *p = ctx;
    if (done == p->last_done + 1) p->last_done = done;
    p->calls++;
    p->total = total;
}

static void test_validation(void) {
    fm_error errbuf, *err = &errbuf;
    fm_qwen2vl_vision_cfg cfg = cfg_make(3, 64, 4, 256, 48, FM_ACT_QUICK_GELU, 3, 2, 4);
    const int64_t g[] = {1, 4, 6};
    model m;
    make_model(&m, &cfg);
    fm_vision_plan *plan = NULL;
    CHECK_OK(fm_vision_plan_new(&cfg, g, 1, 1, &plan, err), err);
    float *px = rnd(24 * 96, 0, 1), *out = malloc(6 * 48 * 4);
    prog pr = {0, 0, 0};
    CHECK_OK(fm_qwen2vl_vision_forward(plan, &cfg, &m.w, px, 24, out, on_progress, &pr, err), err);
    CHECK(pr.calls == 3 && pr.last_done == 3 && pr.total == 3);
    /* wrong row count: both shapes named */
    CHECK_STATUS(FM_ERR_INPUT, fm_qwen2vl_vision_forward(plan, &cfg, &m.w, px, 23, out, NULL, NULL, err), err);
    CHECK_CONTAINS(err->msg, "[23, 96]");
    CHECK_CONTAINS(err->msg, "[24, 96]");
    /* config differing from the plan's */
    fm_qwen2vl_vision_cfg other = cfg;
    other.ln_eps = 1e-5f;
    CHECK_STATUS(FM_ERR_INVALID_ARG, fm_qwen2vl_vision_forward(plan, &other, &m.w, px, 24, out, NULL, NULL, err), err);
    /* a missing weight is named */
    const float *keep = m.blocks[1].fc1_w;
    m.blocks[1].fc1_w = NULL;
    CHECK_STATUS(FM_ERR_INVALID_ARG, fm_qwen2vl_vision_forward(plan, &cfg, &m.w, px, 24, out, NULL, NULL, err), err);
    CHECK_CONTAINS(err->msg, "blocks[1].mlp.fc1.weight");
    m.blocks[1].fc1_w = (const float *)((const char *)keep + 2); /* misaligned */
    CHECK_STATUS(FM_ERR_INVALID_ARG, fm_qwen2vl_vision_forward(plan, &cfg, &m.w, px, 24, out, NULL, NULL, err), err);
    CHECK_CONTAINS(err->msg, "aligned");
    m.blocks[1].fc1_w = keep;
    /* conv geometry that does not give one output per patch */
    m.w.patch_fused = 0;
    m.w.conv.stride[2] = 2;
    m.w.conv.k[2] = 2;
    CHECK_STATUS(FM_ERR_INPUT, fm_qwen2vl_vision_forward(plan, &cfg, &m.w, px, 24, out, NULL, NULL, err), err);
    CHECK_CONTAINS(err->msg, "patch_embed");
    m.w.conv.groups = 2; /* does not divide in_ch 3 */
    CHECK_STATUS(FM_ERR_INVALID_ARG, fm_qwen2vl_vision_forward(plan, &cfg, &m.w, px, 24, out, NULL, NULL, err), err);
    fm_vision_plan_free(plan);
    fm_vision_plan_free(NULL);
    /* bad grids and configs */
    const int64_t g_odd[] = {1, 5, 4}, g_zero[] = {0, 4, 4};
    CHECK_STATUS(FM_ERR_INPUT, fm_vision_plan_new(&cfg, g_odd, 1, 1, &plan, err), err);
    CHECK_CONTAINS(err->msg, "image_grid_thw[0]");
    CHECK(plan == NULL);
    CHECK_STATUS(FM_ERR_INPUT, fm_vision_plan_new(&cfg, g_zero, 1, 1, &plan, err), err);
    CHECK_STATUS(FM_ERR_INPUT, fm_vision_plan_new(&cfg, g, 0, 1, &plan, err), err);
    fm_qwen2vl_vision_cfg bad = cfg;
    bad.num_heads = 5;
    CHECK_STATUS(FM_ERR_CONFIG, fm_vision_plan_new(&bad, g, 1, 1, &plan, err), err);
    bad = cfg;
    bad.num_heads = 8; /* head_dim 8 ok */
    CHECK_OK(fm_vision_plan_new(&bad, g, 1, 1, &plan, err), err);
    fm_vision_plan_free(plan);
    bad.num_heads = 32; /* head_dim 2: no 2-D rotary */
    CHECK_STATUS(FM_ERR_CONFIG, fm_vision_plan_new(&bad, g, 1, 1, &plan, err), err);
    bad = cfg;
    bad.act = 9;
    CHECK_STATUS(FM_ERR_CONFIG, fm_vision_plan_new(&bad, g, 1, 1, &plan, err), err);
    CHECK_STATUS(FM_ERR_INVALID_ARG, fm_vision_plan_new(&cfg, g, 1, -1, &plan, err), err);
    const int64_t g_huge[] = {1, 65536, 65536};
    CHECK_STATUS(FM_ERR_INPUT, fm_vision_plan_new(&cfg, g_huge, 1, 1, &plan, err), err);
    free(px), free(out);
    free_model(&m);
}

static void test_alloc_failures(void) {
    fm_error errbuf, *err = &errbuf;
    fm_qwen2vl_vision_cfg cfg = cfg_make(1, 64, 4, 128, 48, FM_ACT_QUICK_GELU, 3, 2, 4);
    const int64_t g[] = {1, 4, 4, 2, 2, 2};
    int failures = 0, ok_at = 0;
    for (int nth = 1; nth < 40 && !ok_at; nth++) {
        fm_vision_plan *plan = NULL;
        fm_fault_set(FM_FAULT_ALLOC, (uint64_t)nth);
        fm_status st = fm_vision_plan_new(&cfg, g, 2, 2, &plan, err);
        fm_fault_set(FM_FAULT_ALLOC, 0);
        if (st == FM_OK) {
            ok_at = nth;
        } else {
            failures++;
            CHECK_STATUS(FM_ERR_NOMEM, st, err);
            CHECK(plan == NULL);
        }
        fm_vision_plan_free(plan);
    }
    CHECK_MSG(ok_at > 5, "plan_new succeeded at allocation %d (expected several allocations)", ok_at);
    CHECK_EQ_INT(ok_at - 1, failures);
}

int main(void) {
    quick = getenv("FM_TEST_QUICK") && strcmp(getenv("FM_TEST_QUICK"), "1") == 0;
    RUN(test_small_configs_vs_ref64);
    RUN(test_depth0_and_merge_order);
    RUN(test_conv_path_matches_fused);
    RUN(test_threads_and_plan_reuse);
    RUN(test_validation);
    RUN(test_alloc_failures);
    fprintf(stderr, "max rel-L2 vs float64 reference: %.3g\n", worst_rel_l2);
    TEST_END();
}
