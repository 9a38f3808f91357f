/* The Qwen2.5-VL vision tower: the window plan against the spec's worked examples, then
 * fm_model_vision_forward on random checkpoints (unfused and with every fusion combination)
 * against the separate float64 reference that reads the checkpoint by hub names and computes
 * windows as an attention mask (grids that are and are not multiples of the window, several
 * images, t = 2, bf16, other activations and window sizes); in_chans / in_channels spellings
 * with a one-channel weight; config refusals; threads, plan reuse, bad input and allocation
 * failures. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/testing.h"
#include "fusemap/fusemap.h"
#include "models/qwen2_5_vl/qwen2_5_vl.h"
#include "support/check.h"
#include "support/qwen_fixture.h"
#include "support/vision25_ref64.h"
#include "support/vision_ref64.h"

static int quick;
static double worst; /* largest rel-L2 seen against the f64 reference */
static uint64_t px_seed = 0x9E3779B97F4A7C15ull;

/* ---- the window plan ------------------------------------------------------------------------- */
static void expect_plan(const int64_t *grid, int n_images, int64_t cells, const int32_t *order,
                        int n_order, const int32_t *cu_win, int n_cu, const char *what) {
    fm_qwen25vl_plan p;
    fm_error e;
    CHECK_OK(fm_qwen25vl_window_plan(grid, n_images, 2, cells, &p, &e), &e);
    if (fm_t_case_failed) return;
    CHECK_MSG(p.n / 4 == n_order, "%s: %lld groups, expected %d", what, (long long)(p.n / 4),
              n_order);
    CHECK_MSG(p.n_win + 1 == n_cu, "%s: %d windows, expected %d", what, p.n_win, n_cu - 1);
    for (int i = 0; order && i < n_order && i < p.n / 4; i++)
        CHECK_MSG(p.order[i] == order[i], "%s: window_index[%d] = %d, expected %d", what, i,
                  p.order[i], order[i]);
    for (int i = 0; i < n_cu && i <= p.n_win; i++)
        CHECK_MSG(p.cu_win[i] == cu_win[i], "%s: cu_window_seqlens[%d] = %d, expected %d", what, i,
                  p.cu_win[i], cu_win[i]);
    fm_qwen25vl_plan_free(&p);
}

static void test_window_plan_examples(void) {
    const int64_t g1[] = {1, 4, 6}, g2[] = {1, 10, 10}, g3[] = {1, 16, 16}, g4[] = {2, 10, 10},
                  g5[] = {1, 4, 6, 1, 10, 10};
    const int32_t o1[] = {0, 1, 2, 3, 4, 5}, c1[] = {0, 24};
    const int32_t o2[] = {0,  1,  2,  3, 5, 6,  7,  8,  10, 11, 12, 13, 15,
                          16, 17, 18, 4, 9, 14, 19, 20, 21, 22, 23, 24},
                  c2[] = {0, 64, 80, 96, 100};
    expect_plan(g1, 1, 4, o1, 6, c1, 2, "1x4x6: one window holds everything");
    expect_plan(g2, 1, 4, o2, 25, c2, 5, "1x10x10: windows of 16, 4, 4, 1 cells");
    const int32_t c3[] = {0, 64, 128, 192, 256};
    int32_t o3[64];
    for (int w = 0, j = 0; w < 4; w++) /* 2x2 windows of 4x4 cells over the 8x8 merged grid */
        for (int y = 0; y < 4; y++)
            for (int x = 0; x < 4; x++)
                o3[j++] = (w / 2 * 4 + y) * 8 + w % 2 * 4 + x;
    expect_plan(g3, 1, 4, o3, 64, c3, 5, "1x16x16: empty padded windows vanish");
    int32_t o4[50];
    for (int i = 0; i < 25; i++)
        o4[i] = o2[i], o4[25 + i] = o2[i] + 25;
    const int32_t c4[] = {0, 64, 80, 96, 100, 164, 180, 196, 200};
    expect_plan(g4, 1, 4, o4, 50, c4, 9, "2x10x10: frame 1 repeats frame 0's windows");
    int32_t o5[31];
    for (int i = 0; i < 6; i++)
        o5[i] = i;
    for (int i = 0; i < 25; i++)
        o5[6 + i] = o2[i] + 6;
    const int32_t c5[] = {0, 24, 88, 104, 120, 124};
    expect_plan(g5, 2, 4, o5, 31, c5, 6, "two images: the second offset by 6 cells");
    /* full segments one per frame; rotary ids follow their groups (window order) */
    fm_qwen25vl_plan p;
    fm_error e;
    CHECK_OK(fm_qwen25vl_window_plan(g4, 1, 2, 4, &p, &e), &e);
    if (!fm_t_case_failed) {
        CHECK(p.n_seg == 2 && p.cu[0] == 0 && p.cu[1] == 100 && p.cu[2] == 200);
        /* group 16 of the window order is cell 4 = merged (0, 4): patches (0,8) (0,9) (1,8) (1,9)
         */
        const int32_t want[8] = {0, 8, 0, 9, 1, 8, 1, 9};
        CHECK_MSG(!memcmp(p.pos + 16 * 8, want, sizeof want),
                  "rotary ids of window-order group 16: (%d,%d) (%d,%d) (%d,%d) (%d,%d)",
                  p.pos[128], p.pos[129], p.pos[130], p.pos[131], p.pos[132], p.pos[133],
                  p.pos[134], p.pos[135]);
        fm_qwen25vl_plan_free(&p);
    }
    const int64_t bad[] = {1, 5, 4};
    CHECK_STATUS(FM_ERR_INPUT, fm_qwen25vl_window_plan(bad, 1, 2, 4, &p, &e), &e);
    CHECK_CONTAINS(e.msg, "image_grid_thw[0]");
}

/* ---- fixtures ----------------------------------------------------------------------------- */
static int64_t patches_of(const int64_t *g, int n) {
    int64_t s = 0;
    for (int i = 0; i < n; i++)
        s += g[3 * i] * g[3 * i + 1] * g[3 * i + 2];
    return s;
}

static int64_t row_len(const fm_qfix *q) {
    return (int64_t)q->in_channels * q->temporal_patch_size * q->patch_size * q->patch_size;
}

static void make_inputs(const int64_t *grid, int n, int64_t k, fm_tensor *pv, fm_tensor *gt) {
    fm_shape ps = {2, {patches_of(grid, n), k}}, gs = {2, {n, 3}};
    CHECK(fm_tensor_alloc(pv, FM_DTYPE_F32, &ps, NULL) == FM_OK);
    CHECK(fm_tensor_alloc(gt, FM_DTYPE_I64, &gs, NULL) == FM_OK);
    if (pv->data) fm_qfix_fill(pv->data, fm_tensor_numel(pv), 2.0f, &px_seed);
    if (gt->data) memcpy(gt->data, grid, (size_t)n * 3 * sizeof *grid);
}

static char *write_model(const fm_qfix *q, const char *tag) {
    char *dir = fm_test_tmpdir(tag);
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

static fm_status forward(fm_model *m, const fm_tensor *pv, const fm_tensor *gt, int threads,
                         fm_tensor *out, fm_error *e) {
    fm_run_options ro;
    fm_run_options_init(&ro);
    ro.threads = threads;
    return fm_model_vision_forward(m, pv, gt, &ro, out, e);
}

static double rel_l2(const fm_tensor *a, const fm_tensor *b) {
    double num = 0, den = 0;
    const float *x = a->data, *y = b->data;
    for (uint64_t i = 0; i < fm_tensor_numel(a); i++)
        num += (x[i] - y[i]) * (double)(x[i] - y[i]), den += (double)y[i] * y[i];
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

static fm_qfix qcfg(int depth, int dim, int heads, int inter, int out, int patch, int cells,
                    const char *full) {
    fm_qfix q;
    fm_qfix_init_qwen25(&q);
    q.depth = depth, q.embed_dim = dim, q.num_heads = heads, q.vision_inter = inter;
    q.hidden_size = out, q.patch_size = patch, q.window_size = cells * 2 * patch, q.fullatt = full;
    q.scale = 0.08f;
    return q;
}

/* The fusion combinations of the vision tower (qkv only touches the decoder). */
static const char *const combos[] = {
    "{\"patch_embeddings\": true}",
    "{\"gate_up\": true}",
    "{\"patch_embeddings\": true, \"gate_up\": true, \"qkv\": true}",
};

/* Loads q's checkpoint unfused and with every fusion combination, runs each grid set, compares
 * all with the f64 reference (and the fused with the unfused). */
static void check_against_ref(const fm_qfix *q, const int64_t *const *grids, const int *n_imgs,
                              int n_sets, const char *what) {
    char *dir = write_model(q, "v25ref");
    fm_v25ref_model ref;
    char why[256] = "";
    CHECK_MSG(fm_v25ref_load(dir, &ref, why, sizeof why) == 0, "%s: reference: %s", what, why);
    enum { NC = sizeof combos / sizeof *combos };
    fm_model *plain = load(dir, "{}"), *fused[NC];
    for (int c = 0; c < NC; c++)
        fused[c] = load(dir, combos[c]);
    for (int s = 0; s < n_sets && plain && ref.blocks; s++) {
        fm_tensor pv = {0}, gt = {0}, op = {0};
        make_inputs(grids[s], n_imgs[s], row_len(q), &pv, &gt);
        int64_t no = patches_of(grids[s], n_imgs[s]) / 4 * q->hidden_size;
        double *want = malloc((size_t)no * sizeof *want), rms = 0;
        CHECK(want && fm_v25ref_forward(&ref, grids[s], n_imgs[s], pv.data, want) == 0);
        fm_error e;
        CHECK_OK(forward(plain, &pv, &gt, 2, &op, &e), &e);
        if (op.data && want) {
            CHECK_EQ_INT(no, (int64_t)fm_tensor_numel(&op));
            double ep = fm_vref64_rel_l2(op.data, want, no);
            worst = fmax(worst, ep);
            CHECK_MSG(ep <= 1e-5, "%s, grid set %d: unfused rel-L2 %.3g vs float64 (want <= 1e-5)",
                      what, s, ep);
            for (int64_t i = 0; i < no; i++)
                rms += want[i] * want[i];
            CHECK_MSG(sqrt(rms / (double)no) > 1e-3, "%s: output rms %.3g too small to check", what,
                      sqrt(rms / (double)no));
        }
        for (int c = 0; c < NC && op.data && want; c++) {
            fm_tensor of = {0};
            if (fused[c]) CHECK_OK(forward(fused[c], &pv, &gt, 2, &of, &e), &e);
            if (!of.data) continue;
            double ef = fm_vref64_rel_l2(of.data, want, no), eu = rel_l2(&of, &op);
            worst = fmax(worst, ef);
            CHECK_MSG(ef <= 1e-5 && eu <= 1e-5,
                      "%s, grid set %d, %s: rel-L2 %.3g vs float64, %.3g vs unfused (want <= 1e-5)",
                      what, s, combos[c], ef, eu);
            fm_tensor_free(&of);
        }
        free(want);
        fm_tensor_free(&pv), fm_tensor_free(&gt), fm_tensor_free(&op);
    }
    fm_model_free(plain);
    for (int c = 0; c < NC; c++)
        fm_model_free(fused[c]);
    fm_v25ref_free(&ref);
    fm_test_rmtree(dir);
    free(dir);
}

static void test_tower_vs_ref64(void) {
    /* windows of 2x2 merged cells (4x4 patches): 8x12 patches are a multiple (an empty padded
     * band), 6x10 are not, 2x4x6 is a two-frame video, the last set three images */
    const int64_t g_mult[] = {1, 8, 12}, g_odd[] = {1, 6, 10}, g_video[] = {2, 4, 6};
    const int64_t g_multi[] = {1, 4, 4, 1, 6, 10, 2, 4, 6};
    const int64_t *sets[] = {g_mult, g_odd, g_video, g_multi};
    const int n_img[] = {1, 1, 1, 3};
    fm_qfix a = qcfg(3, 64, 4, 72, 48, 4, 2, "[1]");
    check_against_ref(&a, sets, n_img, 4, "A: windows 2, full block 1");
    fm_qfix b = qcfg(3, 48, 4, 40, 32, 3, 3, "[0, 2, 9]"); /* 9 is past the depth: ignored */
    check_against_ref(&b, sets, n_img, quick ? 2 : 4, "B: windows 3, full blocks 0 and 2");
    fm_qfix c = qcfg(2, 64, 4, 50, 40, 4, 1, "[]"); /* every block windowed, single-cell windows */
    c.hidden_act = "gelu";
    check_against_ref(&c, sets + 1, n_img + 1, 3, "C: windows 1, gelu, no full block");
    fm_qfix d = qcfg(2, 64, 4, 72, 32, 14, 4, NULL); /* hub window 112, default fullatt */
    d.dtype = FM_DTYPE_BF16;
    const int64_t g_hub[] = {1, 10, 10, 1, 4, 6};
    const int64_t *hub[] = {g_hub};
    const int nh[] = {2};
    check_against_ref(&d, hub, nh, 1, "D: bf16, patch 14, window 112");
    /* tiny patch embeddings: RMSNorm inputs of mean square ~1e-5, where eps 1e-6 vs 1e-5 shows */
    fm_qfix f = qcfg(2, 64, 4, 72, 48, 4, 2, "[1]");
    f.patch_scale = 0.0005f;
    check_against_ref(&f, sets + 1, n_img + 1, 1, "F: small activations");
    if (!quick) {
        fm_qfix e = qcfg(2, 64, 4, 72, 48, 4, 2, "[0]");
        const int64_t g_big[] = {1, 16, 22, 2, 12, 8};
        const int64_t *big[] = {g_big};
        const int nb[] = {2};
        check_against_ref(&e, big, nb, 1, "E: 1x16x22 + 2x12x8");
    }
}

/* The window side is checked by the reference: a checkpoint read with windows of 2 cells does
 * not match the library run with windows of 3 (the test can fail). */
static void test_windows_matter(void) {
    fm_qfix q = qcfg(2, 64, 4, 72, 48, 4, 2, "[]");
    char *dir = write_model(&q, "v25win");
    fm_v25ref_model ref;
    char why[256] = "";
    CHECK_MSG(fm_v25ref_load(dir, &ref, why, sizeof why) == 0, "reference: %s", why);
    q.window_size = 3 * 2 * 4;
    char *dir3 = write_model(&q, "v25win3");
    fm_model *m = load(dir3, NULL);
    const int64_t g[] = {1, 12, 12};
    fm_tensor pv = {0}, gt = {0}, o = {0};
    make_inputs(g, 1, row_len(&q), &pv, &gt);
    double *want = malloc(36 * 48 * sizeof *want);
    fm_error e;
    if (m && ref.blocks && want && fm_v25ref_forward(&ref, g, 1, pv.data, want) == 0) {
        CHECK_OK(forward(m, &pv, &gt, 1, &o, &e), &e);
        double err = o.data ? fm_vref64_rel_l2(o.data, want, 36 * 48) : 0;
        CHECK_MSG(err > 1e-3, "windows of 3 cells vs a reference with 2: rel-L2 %.3g", err);
    }
    free(want);
    fm_tensor_free(&pv), fm_tensor_free(&gt), fm_tensor_free(&o);
    fm_model_free(m);
    fm_v25ref_free(&ref);
    fm_test_rmtree(dir), fm_test_rmtree(dir3);
    free(dir), free(dir3);
}

/* ---- channel spellings: the weight's shape is what the reference reads --------------------- */
static void test_channel_spellings(void) {
    const int64_t g[] = {1, 6, 10};
    const int64_t *sets[] = {g};
    const int n[] = {1};
    static const char *const keys[] = {"in_chans", "in_channels", "both"};
    for (int i = 0; i < 3; i++) {
        fm_qfix q = qcfg(2, 32, 4, 40, 32, 4, 2, "[1]");
        q.in_channels = 1, q.channels_key = keys[i];
        char what[64];
        snprintf(what, sizeof what, "one channel spelled %s", keys[i]);
        check_against_ref(&q, sets, n, 1, what);
    }
    /* no channel key: transformers' default 3; a one-channel weight is then a clear mismatch */
    fm_qfix q = qcfg(2, 32, 4, 40, 32, 4, 2, "[1]");
    q.in_channels = 1, q.channels_key = "none";
    char *dir = write_model(&q, "v25none");
    fm_load_options o;
    fm_load_options_init(&o);
    fm_model *m = NULL;
    fm_error e;
    CHECK_STATUS(FM_ERR_SHAPE, fm_from_pretrained(dir, &o, &m, NULL, &e), &e);
    CHECK_CONTAINS(e.msg, "patch_embed.proj.weight");
    CHECK(m == NULL);
    fm_test_rmtree(dir);
    free(dir);
}

/* ---- config refusals ------------------------------------------------------------------------- */
static void expect_refused(fm_qfix *q, const char *needle) {
    char *dir = write_model(q, "v25bad");
    fm_load_options o;
    fm_load_options_init(&o);
    fm_model *m = NULL;
    fm_error e;
    CHECK_STATUS(FM_ERR_CONFIG, fm_from_pretrained(dir, &o, &m, NULL, &e), &e);
    CHECK_MSG(strstr(e.msg, needle) != NULL, "expected \"%s\" in: %s", needle, e.msg);
    CHECK(m == NULL);
    fm_test_rmtree(dir);
    free(dir);
}

static void test_config_refusals(void) {
    fm_qfix q = qcfg(2, 32, 4, 40, 32, 4, 2, "[1]");
    q.channels_key = "in_chans", q.vision_extra = "\"in_channels\": 1";
    expect_refused(&q, "disagree");
    q = qcfg(2, 32, 4, 40, 32, 4, 2, "[1]");
    q.window_size = 7; /* less than one merged cell of 8 pixels */
    expect_refused(&q, "vision_config.window_size");
    q = qcfg(2, 32, 4, 40, 32, 4, 2, "7");
    expect_refused(&q, "fullatt_block_indexes");
    q = qcfg(2, 32, 4, 40, 32, 4, 2, "[1, \"x\"]");
    expect_refused(&q, "fullatt_block_indexes");
    q = qcfg(2, 40, 4, 40, 32, 4, 2, "[1]"); /* head dim 10: not a multiple of 4 */
    expect_refused(&q, "head dim 10");
    q = qcfg(2, 32, 4, 40, 32, 4, 2, "[1]");
    q.hidden_act = "swish7";
    expect_refused(&q, "vision_config.hidden_act");
    q = qcfg(2, 32, 4, 40, 32, 4, 2, "[1]");
    q.vision_inter = 0;
    expect_refused(&q, "vision_config.intermediate_size");
}

/* transformers' class defaults (which differ from the hub's) and the tie flag's precedence. */
static fm_qwen25vl_config *parse(const char *json) {
    fm_config *c = NULL;
    void *out = NULL;
    fm_error e;
    CHECK_OK(fm_config_parse(json, strlen(json), "test", &c, &e), &e);
    if (c) CHECK_OK(fm_qwen25vl_parse_config(c, "test", &out, &e), &e);
    fm_config_free(c);
    return out;
}

static void test_config_defaults(void) {
    fm_qwen25vl_config *c = parse("{\"model_type\": \"qwen2_5_vl\", \"vision_config\": {}}");
    if (c) {
        const fm_qwen2vl_vision_config *v = &c->base.v;
        CHECK(v->depth == 32 && v->embed_dim == 3584 && v->mlp_hidden == 3420 &&
              v->hidden_size == 3584 && v->num_heads == 16 && v->in_channels == 3);
        CHECK(v->patch_size == 14 && v->temporal_patch_size == 2 && v->spatial_merge_size == 2);
        CHECK(v->act == FM_ACTIVATION_SILU && c->window_size == 112 && c->window_cells == 4);
        CHECK(c->tokens_per_second == 4 && !c->base.tie_word_embeddings);
        for (int64_t i = 0; i < 40; i++)
            CHECK_MSG(fm_qwen25vl_full_block(c, i) == (i == 7 || i == 15 || i == 23 || i == 31),
                      "block %lld full: %d", (long long)i, fm_qwen25vl_full_block(c, i));
        CHECK(c->base.t.rope_theta == 1e6 && c->base.t.qkv_bias && !c->base.t.qk_norm);
    }
    fm_free(c);
    /* the top level's tie flag wins; text_config's applies when the top level has none */
    c = parse("{\"tie_word_embeddings\": false, \"text_config\": {\"tie_word_embeddings\": true},"
              " \"vision_config\": {}}");
    CHECK(c && !c->base.tie_word_embeddings);
    fm_free(c);
    c = parse("{\"text_config\": {\"tie_word_embeddings\": true}, \"vision_config\": {}}");
    CHECK(c && c->base.tie_word_embeddings);
    fm_free(c);
}

/* ---- threads, plan reuse, bad input ------------------------------------------------------- */
static void test_threads_plan_and_input(void) {
    fm_qfix q = qcfg(2, 64, 4, 72, 48, 4, 2, "[1]");
    char *dir = write_model(&q, "v25thr");
    fm_model *m = load(dir, NULL);
    const int64_t g1[] = {1, 6, 10, 1, 8, 4}, g2[] = {1, 4, 4};
    fm_tensor pv1 = {0}, gt1 = {0}, pv2 = {0}, gt2 = {0}, o1 = {0}, o3 = {0}, other = {0},
              again = {0};
    make_inputs(g1, 2, 96, &pv1, &gt1);
    make_inputs(g2, 1, 96, &pv2, &gt2);
    fm_error e;
    if (m) {
        CHECK_OK(forward(m, &pv1, &gt1, 1, &o1, &e), &e);
        CHECK_OK(forward(m, &pv1, &gt1, 3, &o3, &e), &e);
        CHECK_OK(forward(m, &pv2, &gt2, 3, &other, &e), &e);
        CHECK_OK(forward(m, &pv1, &gt1, 3, &again, &e), &e);
    }
    if (o1.data && o3.data)
        CHECK_MSG(rel_l2(&o3, &o1) <= 1e-6, "3 threads vs 1: %.3g", rel_l2(&o3, &o1));
    CHECK(again.data && o3.data && !memcmp(again.data, o3.data, o3.nbytes));
    /* rows that do not match the grid, a grid not a multiple of the merge size */
    fm_tensor short_pv = pv1;
    short_pv.shape.dims[0] = 80;
    fm_tensor none = {0};
    CHECK_STATUS(FM_ERR_INPUT, forward(m, &short_pv, &gt1, 1, &none, &e), &e);
    CHECK_CONTAINS(e.msg, "92 patches");
    int64_t *gd = gt2.data;
    gd[1] = 3;
    short_pv.shape.dims[0] = 12;
    CHECK_STATUS(FM_ERR_INPUT, forward(m, &short_pv, &gt2, 1, &none, &e), &e);
    CHECK_CONTAINS(e.msg, "image_grid_thw[0]");
    CHECK(none.data == NULL);
    fm_tensor_free(&pv1), fm_tensor_free(&gt1), fm_tensor_free(&pv2), fm_tensor_free(&gt2);
    fm_tensor_free(&o1), fm_tensor_free(&o3), fm_tensor_free(&other), fm_tensor_free(&again);
    fm_model_free(m);
    fm_test_rmtree(dir);
    free(dir);
}

/* Every allocation of a first forward fails in turn: a clean FM_ERR_NOMEM, then a good one. */
static void test_alloc_failures(void) {
    fm_qfix q = qcfg(2, 32, 4, 40, 32, 4, 2, "[1]");
    char *dir = write_model(&q, "v25alloc");
    const int64_t g[] = {1, 6, 10, 1, 4, 4};
    fm_tensor pv = {0}, gt = {0}, want = {0};
    make_inputs(g, 2, 96, &pv, &gt);
    fm_model *ref = load(dir, "{\"gate_up\": true}");
    fm_error e;
    if (ref) CHECK_OK(forward(ref, &pv, &gt, 2, &want, &e), &e);
    int failures = 0, ok_at = 0;
    for (int nth = 1; nth < 400 && !ok_at && want.data; nth++) {
        fm_model *m = load(dir, "{\"gate_up\": true}");
        fm_tensor out = {0};
        fm_fault_set(FM_FAULT_ALLOC, (uint64_t)nth);
        fm_status st = forward(m, &pv, &gt, 2, &out, &e);
        fm_fault_set(FM_FAULT_ALLOC, 0);
        if (st == FM_OK) {
            ok_at = nth;
            CHECK(!memcmp(out.data, want.data, want.nbytes));
        } else {
            failures++;
            CHECK_STATUS(FM_ERR_NOMEM, st, &e);
            fm_tensor again = {0};
            CHECK_OK(forward(m, &pv, &gt, 2, &again, &e), &e);
            CHECK(again.data && !memcmp(again.data, want.data, want.nbytes));
            fm_tensor_free(&again);
        }
        fm_tensor_free(&out);
        fm_model_free(m);
    }
    CHECK_MSG(ok_at > 5, "forward succeeded at allocation %d", ok_at);
    CHECK_EQ_INT(ok_at - 1, failures);
    fm_tensor_free(&pv), fm_tensor_free(&gt), fm_tensor_free(&want);
    fm_model_free(ref);
    fm_test_rmtree(dir);
    free(dir);
}

int main(void) {
    quick = getenv("FM_TEST_QUICK") && strcmp(getenv("FM_TEST_QUICK"), "1") == 0;
    RUN(test_window_plan_examples);
    RUN(test_tower_vs_ref64);
    RUN(test_windows_matter);
    RUN(test_channel_spellings);
    RUN(test_config_refusals);
    RUN(test_config_defaults);
    RUN(test_threads_plan_and_input);
    RUN(test_alloc_failures);
    fprintf(stderr, "max rel-L2 vs float64 reference: %.3g\n", worst);
    TEST_END();
}
