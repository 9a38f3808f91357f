/* Qwen2-VL vision tower through the module tree: fm_from_pretrained on random checkpoints,
 * fm_model_vision_forward (unfused and fused) against the separate float64 reference that reads
 * the same checkpoint by hub names; threads, per-grid plan reuse, input validation, progress,
 * allocation failures, and two models forwarding concurrently in two threads. */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fusemap/fusemap.h"
#include "support/check.h"
#include "support/qwen_fixture.h"
#include "support/vision_ref64.h"

static int quick;
static double worst_rel_l2; /* largest error seen against the f64 reference (printed at the end) */

/* ---- fixtures ------------------------------------------------------------------------------ */
static uint64_t px_seed = 0x2545F4914F6CDD1Dull;

static int64_t grid_patches(const int64_t *g, int n) {
    int64_t s = 0;
    for (int i = 0; i < n; i++)
        s += g[3 * i] * g[3 * i + 1] * g[3 * i + 2];
    return s;
}

/* pixel_values F32 [N][k] (fresh random data in [-2, 2]) and image_grid_thw I64 [n][3]. */
static void make_inputs(const int64_t *grid, int n_img, int64_t k, fm_tensor *pv, fm_tensor *gt) {
    fm_shape ps = {2, {grid_patches(grid, n_img), k}}, gs = {2, {n_img, 3}};
    CHECK(fm_tensor_alloc(pv, FM_DTYPE_F32, &ps, NULL) == FM_OK);
    CHECK(fm_tensor_alloc(gt, FM_DTYPE_I64, &gs, NULL) == FM_OK);
    if (pv->data) fm_qfix_fill(pv->data, fm_tensor_numel(pv), 2.0f, &px_seed);
    if (gt->data) memcpy(gt->data, grid, (size_t)n_img * 3 * sizeof *grid);
}

static int64_t patch_values(const fm_qfix *q) {
    return (int64_t)q->in_channels * q->temporal_patch_size * q->patch_size * q->patch_size;
}

/* Writes q into a fresh directory (caller frees the path). */
static char *write_model(const fm_qfix *q, const char *tag) {
    char *dir = fm_test_tmpdir(tag);
    fm_error e;
    CHECK_OK(fm_qfix_write(dir, q, &e), &e);
    return dir;
}

static fm_model *load(const char *dir, const char *fusion, fm_load_report *rep) {
    fm_load_options o;
    fm_load_options_init(&o);
    o.fusion_config = fusion;
    fm_model *m = NULL;
    fm_error e;
    CHECK_OK(fm_from_pretrained(dir, &o, &m, rep, &e), &e);
    return m;
}

static fm_status forward(fm_model *m, const fm_tensor *pv, const fm_tensor *gt, int threads,
                         fm_tensor *out, fm_error *e) {
    fm_run_options ro;
    fm_run_options_init(&ro);
    ro.threads = threads;
    return fm_model_vision_forward(m, pv, gt, &ro, out, e);
}

static double rel_l2_f(const fm_tensor *a, const fm_tensor *b) {
    double num = 0, den = 0;
    const float *x = a->data, *y = b->data;
    for (uint64_t i = 0; i < fm_tensor_numel(a); i++)
        num += (x[i] - y[i]) * (double)(x[i] - y[i]), den += (double)y[i] * y[i];
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

/* ---- accuracy against the float64 reference ------------------------------------------------- */

/* Loads q's checkpoint unfused and fused, runs every grid set, compares both with the f64 path. */
static void check_against_ref(const fm_qfix *q, const int64_t *const *grids, const int *n_imgs,
                              int n_sets, const char *what) {
    char *dir = write_model(q, "vref");
    fm_vref_model ref;
    char why[256] = "";
    CHECK_MSG(fm_vref_load(dir, &ref, why, sizeof why) == 0, "%s: reference load: %s", what, why);
    fm_model *plain = load(dir, "{}", NULL),
             *fused = load(dir, "{\"patch_embeddings\": true}", NULL);
    for (int s = 0; s < n_sets && plain && fused && ref.blocks; s++) {
        fm_tensor pv = {0}, gt = {0}, op = {0}, of = {0};
        make_inputs(grids[s], n_imgs[s], patch_values(q), &pv, &gt);
        int64_t no =
            grid_patches(grids[s], n_imgs[s]) / (q->merge_size * q->merge_size) * q->hidden_size;
        double *want = malloc((size_t)no * sizeof *want);
        CHECK(want && fm_vref64_forward(&ref, grids[s], n_imgs[s], pv.data, want) == 0);
        fm_error e;
        CHECK_OK(forward(plain, &pv, &gt, 2, &op, &e), &e);
        CHECK_OK(forward(fused, &pv, &gt, 2, &of, &e), &e);
        if (op.data && of.data && want) {
            CHECK_EQ_INT(no, (int64_t)fm_tensor_numel(&op));
            double ep = fm_vref64_rel_l2(op.data, want, no),
                   ef = fm_vref64_rel_l2(of.data, want, no), norm = 0;
            worst_rel_l2 = fmax(worst_rel_l2, fmax(ep, ef));
            CHECK_MSG(ep <= 1e-5,
                      "%s, grid set %d: unfused rel-L2 %.3g vs float64 reference (want <= 1e-5)",
                      what, s, ep);
            CHECK_MSG(ef <= 1e-5,
                      "%s, grid set %d: fused rel-L2 %.3g vs float64 reference (want <= 1e-5)",
                      what, s, ef);
            for (int64_t i = 0; i < no; i++)
                norm += want[i] * want[i];
            CHECK_MSG(sqrt(norm / (double)no) > 1e-3,
                      "%s: output rms %.3g too small to be a meaningful check", what,
                      sqrt(norm / (double)no));
        }
        free(want);
        fm_tensor_free(&pv), fm_tensor_free(&gt), fm_tensor_free(&op), fm_tensor_free(&of);
    }
    fm_model_free(plain), fm_model_free(fused);
    fm_vref_free(&ref);
    fm_test_rmtree(dir);
    free(dir);
}

static fm_qfix qcfg(int depth, int embed, int heads, int ratio, int hidden, const char *act, int c,
                    int t, int p) {
    fm_qfix q;
    fm_qfix_init(&q);
    q.depth = depth, q.embed_dim = embed, q.num_heads = heads, q.mlp_ratio = ratio,
    q.hidden_size = hidden;
    q.hidden_act = act, q.in_channels = c, q.temporal_patch_size = t, q.patch_size = p;
    q.scale = 0.08f;
    return q;
}

static void test_models_vs_ref64(void) {
    const int64_t g_square[] = {1, 4, 4}, g_odd[] = {1, 6, 10}, g_video[] = {2, 4, 6};
    const int64_t g_multi[] = {1, 4, 4, 1, 2, 8, 2, 6, 2}; /* three images, one of them t = 2 */
    const int64_t *sets[] = {g_square, g_odd, g_video, g_multi};
    const int n_img[] = {1, 1, 1, 3};
    fm_qfix a = qcfg(2, 64, 4, 4, 48, "quick_gelu", 3, 2, 4);
    fm_qfix b = qcfg(3, 96, 6, 2, 80, "gelu", 3, 2, 3);
    fm_qfix c = qcfg(2, 96, 4, 4, 64, "silu", 3, 1, 5);
    fm_qfix d = qcfg(1, 64, 4, 2, 32, "gelu_pytorch_tanh", 3, 2, 14); /* K = 1176 */
    check_against_ref(&a, sets, n_img, 4, "cfg A");
    check_against_ref(&b, sets, n_img, quick ? 2 : 4, "cfg B");
    check_against_ref(&c, sets + 1, n_img + 1, 1, "cfg C");
    d.dtype = FM_DTYPE_BF16; /* the library converts on prepare; the reference reads the same bf16
                                values */
    check_against_ref(&d, sets, n_img, 1, "cfg D bf16");
    /* Tiny patch embeddings: LayerNorm inputs of variance ~1e-4, where eps 1e-6 vs 1e-5 shows. */
    fm_qfix e = qcfg(2, 64, 4, 4, 48, "quick_gelu", 3, 2, 4);
    e.patch_scale = 0.0005f;
    check_against_ref(&e, sets, n_img, 1, "small activations");
    if (!quick) {
        const int64_t g_big[] = {1, 16, 22,
                                 1, 12, 8}; /* segments > 128 rows: several query blocks */
        const int64_t *big[] = {g_big};
        const int nb[] = {2};
        check_against_ref(&a, big, nb, 1, "cfg A 1x16x22 + 1x12x8");
    }
}

/* One block and two images of different shapes: the merger's row grouping and its GELU. */
static void test_merge_order(void) {
    const int64_t g[] = {1, 6, 10, 2, 2, 4};
    const int64_t *sets[] = {g};
    const int n_img[] = {2};
    fm_qfix q = qcfg(1, 64, 4, 4, 40, "quick_gelu", 3, 2, 4);
    check_against_ref(&q, sets, n_img, 1, "depth 1, two images");
}

/* ---- threads and per-grid plans -----------------------------------------------------------------
 */
static void test_threads_and_plan_reuse(void) {
    fm_qfix q = qcfg(2, 96, 6, 2, 80, "gelu", 3, 2, 4);
    char *dir = write_model(&q, "vthreads");
    fm_model *m = load(dir, NULL, NULL);
    const int64_t g1[] = {1, 8, 10, 2, 4, 4}, g2[] = {1, 4, 4};
    fm_tensor pv1 = {0}, gt1 = {0}, pv2 = {0}, gt2 = {0}, o[4] = {{0}}, again = {0}, other = {0},
              fresh = {0};
    make_inputs(g1, 2, 96, &pv1, &gt1);
    make_inputs(g2, 1, 96, &pv2, &gt2);
    fm_error e;
    for (int t = 1; m && t <= 3; t++)
        CHECK_OK(forward(m, &pv1, &gt1, t, &o[t], &e), &e);
    for (int t = 2; t <= 3; t++)
        if (o[1].data && o[t].data)
            CHECK_MSG(rel_l2_f(&o[t], &o[1]) <= 1e-6, "threads %d vs 1: rel-L2 %.3g", t,
                      rel_l2_f(&o[t], &o[1]));
    /* another grid, then the first again: equal to the first run (the per-grid plan is rebuilt) */
    if (m) CHECK_OK(forward(m, &pv2, &gt2, 3, &other, &e), &e);
    if (m) CHECK_OK(forward(m, &pv1, &gt1, 3, &again, &e), &e);
    CHECK(again.data && o[3].data && memcmp(again.data, o[3].data, again.nbytes) == 0);
    fm_model *m2 = load(dir, NULL, NULL);
    if (m2) CHECK_OK(forward(m2, &pv2, &gt2, 3, &fresh, &e), &e);
    CHECK(fresh.data && other.data && memcmp(fresh.data, other.data, fresh.nbytes) == 0);
    for (int t = 1; t <= 3; t++)
        fm_tensor_free(&o[t]);
    fm_tensor_free(&again), fm_tensor_free(&other), fm_tensor_free(&fresh);
    fm_tensor_free(&pv1), fm_tensor_free(&gt1), fm_tensor_free(&pv2), fm_tensor_free(&gt2);
    fm_model_free(m), fm_model_free(m2);
    fm_test_rmtree(dir);
    free(dir);
}

/* ---- two different models at the same time in two threads
 * ----------------------------------------- */
typedef struct job {
    fm_model *m;
    const fm_tensor *pv, *gt;
    fm_tensor out[3];
    fm_status st[3];
} job;

static void *run_job(void *p) {
    job *j = p;
    for (int r = 0; r < 3; r++)
        j->st[r] = forward(j->m, j->pv, j->gt, 2, &j->out[r], NULL);
    return NULL;
}

static void test_two_models_concurrently(void) {
    fm_qfix qa = qcfg(2, 64, 4, 4, 48, "quick_gelu", 3, 2, 4),
            qb = qcfg(1, 96, 6, 2, 64, "gelu", 3, 2, 4);
    qb.seed = 99;
    char *da = write_model(&qa, "vconc_a"), *db = write_model(&qb, "vconc_b");
    fm_model *ma = load(da, NULL, NULL), *mb = load(db, "{\"patch_embeddings\": true}", NULL);
    const int64_t ga[] = {1, 6, 10}, gb[] = {2, 4, 4, 1, 2, 2};
    fm_tensor pa = {0}, ta = {0}, pb = {0}, tb = {0}, alone_a = {0}, alone_b = {0};
    make_inputs(ga, 1, 96, &pa, &ta);
    make_inputs(gb, 2, 96, &pb, &tb);
    fm_error e;
    if (ma && mb) {
        CHECK_OK(forward(ma, &pa, &ta, 2, &alone_a, &e), &e);
        CHECK_OK(forward(mb, &pb, &tb, 2, &alone_b, &e), &e);
        job ja = {ma, &pa, &ta, {{0}}, {0}}, jb = {mb, &pb, &tb, {{0}}, {0}};
        pthread_t t1, t2;
        pthread_create(&t1, NULL, run_job, &ja);
        pthread_create(&t2, NULL, run_job, &jb);
        pthread_join(t1, NULL);
        pthread_join(t2, NULL);
        for (int r = 0; r < 3; r++) {
            CHECK_EQ_INT(FM_OK, ja.st[r]);
            CHECK_EQ_INT(FM_OK, jb.st[r]);
            CHECK_MSG(ja.out[r].data && alone_a.data &&
                          memcmp(ja.out[r].data, alone_a.data, alone_a.nbytes) == 0,
                      "model A run %d in parallel differs from its run alone", r);
            CHECK_MSG(jb.out[r].data && alone_b.data &&
                          memcmp(jb.out[r].data, alone_b.data, alone_b.nbytes) == 0,
                      "model B run %d in parallel differs from its run alone", r);
            fm_tensor_free(&ja.out[r]), fm_tensor_free(&jb.out[r]);
        }
    }
    fm_tensor_free(&pa), fm_tensor_free(&ta), fm_tensor_free(&pb), fm_tensor_free(&tb);
    fm_tensor_free(&alone_a), fm_tensor_free(&alone_b);
    fm_model_free(ma), fm_model_free(mb);
    fm_test_rmtree(da), fm_test_rmtree(db);
    free(da), free(db);
}

/* ---- validation, progress, failures
 * --------------------------------------------------------------- */
typedef struct prog {
    int calls, last_done, total;
} prog;
static void on_progress(void *ctx, int done, int total) {
    prog *p = ctx;
    if (done == p->last_done + 1) p->last_done = done;
    p->calls++;
    p->total = total;
}

static void test_validation_and_progress(void) {
    fm_qfix q = qcfg(3, 64, 4, 4, 48, "quick_gelu", 3, 2, 4);
    char *dir = write_model(&q, "vvalid");
    fm_model *m = load(dir, NULL, NULL);
    const int64_t g[] = {1, 4, 6};
    fm_tensor pv = {0}, gt = {0}, out = {0};
    make_inputs(g, 1, 96, &pv, &gt);
    fm_error e;
    prog pr = {0, 0, 0};
    fm_run_options ro = {1, on_progress, &pr};
    if (m) CHECK_OK(fm_model_vision_forward(m, &pv, &gt, &ro, &out, &e), &e);
    CHECK(pr.calls == 3 && pr.last_done == 3 && pr.total == 3);
    fm_tensor_free(&out);
    /* wrong row count: both counts named */
    fm_tensor short_pv = pv;
    short_pv.shape.dims[0] = 23;
    CHECK_STATUS(FM_ERR_INPUT, forward(m, &short_pv, &gt, 1, &out, &e), &e);
    CHECK_CONTAINS(e.msg, "23 rows");
    CHECK_CONTAINS(e.msg, "24 patches");
    /* pixel_values of the wrong width, wrong dtype; grid not a multiple of the merge size */
    fm_tensor wide = pv;
    wide.shape = (fm_shape){2, {12, 192}};
    CHECK_STATUS(FM_ERR_INPUT, forward(m, &wide, &gt, 1, &out, &e), &e);
    CHECK_CONTAINS(e.msg, "input 0");
    CHECK_STATUS(FM_ERR_INPUT, forward(m, &gt, &gt, 1, &out, &e), &e);
    int64_t *gd = gt.data;
    gd[1] = 5, gd[2] = 4;
    short_pv.shape.dims[0] = 20;
    CHECK_STATUS(FM_ERR_INPUT, forward(m, &short_pv, &gt, 1, &out, &e), &e);
    CHECK_CONTAINS(e.msg, "image_grid_thw[0]");
    gd[1] = 4, gd[2] = 6;
    /* the tower reached directly with one input: an error, not a read of in[1] */
    fm_module *tower = m ? fm_module_find(fm_model_root(m), "model.visual") : NULL;
    fm_run_ctx *rc = NULL;
    if (m) CHECK_OK(fm_model_run_ctx(m, NULL, &rc, &e), &e);
    if (tower && rc) {
        fm_tensor y = {0};
        CHECK_STATUS(FM_ERR_INPUT, fm_module_forward(tower, rc, &pv, 1, &y, 1, &e), &e);
        CHECK_CONTAINS(e.msg, "input 1 missing");
        CHECK_EQ_INT(0, (int64_t)fm_run_mark(rc));
    }
    CHECK(out.data == NULL);
    fm_tensor_free(&pv), fm_tensor_free(&gt);
    fm_model_free(m);
    fm_test_rmtree(dir);
    free(dir);
}

/* Every allocation of a first forward fails in turn: a clean FM_ERR_NOMEM, then a good forward. */
static void test_alloc_failures(void) {
    fm_qfix q = qcfg(1, 64, 4, 2, 48, "quick_gelu", 3, 2, 4);
    q.dtype = FM_DTYPE_BF16; /* prepare allocates converted copies too */
    char *dir = write_model(&q, "valloc");
    const int64_t g[] = {1, 4, 4, 2, 2, 2};
    fm_tensor pv = {0}, gt = {0}, want = {0};
    make_inputs(g, 2, 96, &pv, &gt);
    fm_model *ref = load(dir, NULL, NULL);
    fm_error e;
    if (ref) CHECK_OK(forward(ref, &pv, &gt, 2, &want, &e), &e);
    int failures = 0, ok_at = 0;
    for (int nth = 1; nth < 400 && !ok_at && want.data; nth++) {
        fm_model *m = load(dir, NULL, NULL);
        fm_tensor out = {0};
        fm_fault_set(FM_FAULT_ALLOC, (uint64_t)nth);
        fm_status st = forward(m, &pv, &gt, 2, &out, &e);
        fm_fault_set(FM_FAULT_ALLOC, 0);
        if (st == FM_OK) {
            ok_at = nth;
            CHECK(memcmp(out.data, want.data, want.nbytes) == 0);
        } else {
            failures++;
            CHECK_STATUS(FM_ERR_NOMEM, st, &e);
            CHECK(out.data == NULL);
            fm_tensor again = {0}; /* the same model recovers */
            CHECK_OK(forward(m, &pv, &gt, 2, &again, &e), &e);
            CHECK(again.data && memcmp(again.data, want.data, want.nbytes) == 0);
            fm_tensor_free(&again);
        }
        fm_tensor_free(&out);
        fm_model_free(m);
    }
    CHECK_MSG(ok_at > 5, "forward succeeded at allocation %d (expected several allocations)",
              ok_at);
    CHECK_EQ_INT(ok_at - 1, failures);
    fm_tensor_free(&pv), fm_tensor_free(&gt), fm_tensor_free(&want);
    fm_model_free(ref);
    fm_test_rmtree(dir);
    free(dir);
}

int main(void) {
    quick = getenv("FM_TEST_QUICK") && strcmp(getenv("FM_TEST_QUICK"), "1") == 0;
    RUN(test_models_vs_ref64);
    RUN(test_merge_order);
    RUN(test_threads_and_plan_reuse);
    RUN(test_two_models_concurrently);
    RUN(test_validation_and_progress);
    RUN(test_alloc_failures);
    fprintf(stderr, "max rel-L2 vs float64 reference: %.3g\n", worst_rel_l2);
    TEST_END();
}
