/* Fusion mapping: fused forward equals unfused, byte-identical original-format round trips,
 * fusion_config persistence, {} disabling, validation and conflict errors, instance-level
 * fusion, strictness, the discovery cache keyed by config, zero-copy fused weights, and the
 * fused (runtime) layout loading with and without fusion. */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "file_util.h"
#include "fusemap/fusemap.h"
#include "qwen_fixture.h"

static char *tmp;

static fm_model *load(const char *dir, const char *fusion, bool strict, fm_load_report *rep,
                      fm_error *err) {
    fm_load_options o;
    fm_load_options_init(&o);
    o.fusion_config = fusion;
    o.strict = strict;
    fm_model *m = NULL;
    fm_status st = fm_from_pretrained(dir, &o, &m, rep, err);
    return st == FM_OK ? m : NULL;
}

static void random_input(const fm_qfix *q, const int64_t *grid, int n, fm_tensor *pv, fm_tensor *g,
                         uint64_t seed) {
    int64_t rows = 0,
            K = (int64_t)q->in_channels * q->temporal_patch_size * q->patch_size * q->patch_size;
    for (int i = 0; i < n; i++)
        rows += grid[3 * i] * grid[3 * i + 1] * grid[3 * i + 2];
    fm_shape ps = {2, {rows, K}}, gs = {2, {n, 3}};
    fm_tensor_alloc(pv, FM_DTYPE_F32, &ps, NULL);
    fm_tensor_alloc(g, FM_DTYPE_I64, &gs, NULL);
    memcpy(g->data, grid, (size_t)n * 3 * sizeof *grid);
    fm_qfix_fill(pv->data, fm_tensor_numel(pv), 2.0f, &seed);
}

static double rel_l2(const fm_tensor *a, const fm_tensor *b) {
    double num = 0, den = 0;
    for (uint64_t i = 0; i < fm_tensor_numel(a); i++) {
        double d = (double)((float *)a->data)[i] - ((float *)b->data)[i];
        num += d * d, den += (double)((float *)b->data)[i] * ((float *)b->data)[i];
    }
    return sqrt(num / den);
}

static double compare_runs(fm_model *a, fm_model *b, const fm_qfix *q, const int64_t *grid, int n) {
    fm_tensor pv, g, oa = {0}, ob = {0};
    fm_error err;
    random_input(q, grid, n, &pv, &g, 77);
    fm_run_options ro = {2, NULL, NULL};
    CHECK_OK(fm_model_vision_forward(a, &pv, &g, &ro, &oa, &err), &err);
    CHECK_OK(fm_model_vision_forward(b, &pv, &g, &ro, &ob, &err), &err);
    double e = (oa.data && ob.data && oa.nbytes == ob.nbytes) ? rel_l2(&oa, &ob) : 1e9;
    fm_tensor_free(&pv), fm_tensor_free(&g), fm_tensor_free(&oa), fm_tensor_free(&ob);
    return e;
}

static void fused_equals_unfused(const char *tag, const fm_qfix *q, const int64_t *grid, int n) {
    char dir[4200];
    fm_error err;
    snprintf(dir, sizeof dir, "%s/%s", tmp, tag);
    CHECK_OK(fm_qfix_write(dir, q, &err), &err);
    fm_load_report rep;
    fm_model *f = load(dir, "{\"patch_embeddings\": true}", true, &rep, &err);
    CHECK_MSG(f != NULL, "%s: fused load: %s", tag, err.msg);
    CHECK_EQ_INT(1, rep.n_fused);
    if (rep.n_fused)
        CHECK_CONTAINS(
            rep.fused[0],
            "model.visual.patch_embed: PatchEmbed -> FusedPatchEmbed (patch_embeddings)");
    fm_load_report_free(&rep);
    fm_model *u = load(dir, NULL, true, NULL, &err);
    if (f && u) {
        fm_module *pe = fm_module_find(fm_model_root(f), "model.visual.patch_embed");
        CHECK(pe && !strcmp(fm_module_class_of(pe)->name, "FusedPatchEmbed"));
        const fm_tensor *lw = fm_model_param(f, "model.visual.patch_embed.linear_proj.weight");
        CHECK(lw && lw->shape.ndim == 2 &&
              lw->shape.dims[1] ==
                  (int64_t)q->in_channels * q->temporal_patch_size * q->patch_size * q->patch_size);
        CHECK(fm_model_param(f, "model.visual.patch_embed.proj.weight") == NULL);
        const fm_tensor *cw = fm_model_param(u, "model.visual.patch_embed.proj.weight");
        /* zero-copy: the fused weight is a view of the mapped checkpoint bytes, reshaped */
        CHECK(lw && cw && fm_tensor_is_mapped(lw) && lw->nbytes == cw->nbytes &&
              !memcmp(lw->data, cw->data, lw->nbytes));
        double e = compare_runs(f, u, q, grid, n);
        CHECK_MSG(e <= 1e-5, "%s: fused vs unfused relative L2 %.3g", tag, e);
    }
    fm_model_free(f);
    fm_model_free(u);
}

static void test_fused_forward_matches(void) {
    fm_qfix q;
    fm_qfix_init(&q);
    const int64_t g1[] = {1, 4, 6, 2, 2, 4};
    fused_equals_unfused("fwd-default", &q, g1, 2);
    q.temporal_patch_size = 1, q.patch_size = 7, q.hidden_act = "gelu", q.depth = 1;
    const int64_t g2[] = {3, 6, 2};
    fused_equals_unfused("fwd-t1", &q, g2, 1);
    fm_qfix_init(&q);
    q.embed_dim = 48, q.num_heads = 3, q.dtype = FM_DTYPE_BF16, q.in_channels = 3;
    const int64_t g3[] = {1, 10, 6};
    fused_equals_unfused("fwd-bf16", &q, g3, 1);
}

static void test_round_trip_and_persistence(void) {
    fm_qfix q;
    fm_qfix_init(&q);
    char src[4200], dst[4200], dst2[4200], path[4300];
    fm_error err;
    snprintf(src, sizeof src, "%s/rt-src", tmp);
    snprintf(dst, sizeof dst, "%s/rt-dst", tmp);
    snprintf(dst2, sizeof dst2, "%s/rt-dst2", tmp);
    CHECK_OK(fm_qfix_write(src, &q, &err), &err);
    fm_model *f = load(src, "{\"patch_embeddings\": true}", false, NULL, &err);
    if (!f) return;
    CHECK_OK(fm_save_pretrained(f, dst, NULL, &err), &err);
    const char *skip[] = {"config.json", NULL};
    CHECK_MSG(fm_test_same_dir(src, dst, skip), "original-format save is byte-identical");
    snprintf(path, sizeof path, "%s/config.json", dst);
    char *cfg = fm_test_read_file(path, NULL);
    CHECK_CONTAINS(cfg, "\"fusion_config\": {\n    \"patch_embeddings\": true\n  }");
    free(cfg);
    fm_model_free(f);
    /* reload without an explicit fusion_config: the stored one is reused */
    fm_fusion_cache_clear();
    fm_load_report rep;
    fm_model *again = load(dst, NULL, false, &rep, &err);
    CHECK_EQ_INT(1, rep.n_fused);
    fm_load_report_free(&rep);
    if (again) {
        fm_module *pe = fm_module_find(fm_model_root(again), "model.visual.patch_embed");
        CHECK(pe && !strcmp(fm_module_class_of(pe)->name, "FusedPatchEmbed"));
        CHECK_OK(fm_save_pretrained(again, dst2, NULL, &err), &err);
        CHECK_MSG(fm_test_same_dir(dst, dst2, NULL),
                  "second save equals the first (config included)");
    }
    fm_model_free(again);
    /* an explicit {} disables the stored one, and is what gets saved */
    fm_model *off = load(dst, "{}", false, &rep, &err);
    CHECK_EQ_INT(0, rep.n_fused);
    fm_load_report_free(&rep);
    if (off) {
        fm_module *pe = fm_module_find(fm_model_root(off), "model.visual.patch_embed");
        CHECK(pe && !strcmp(fm_module_class_of(pe)->name, "PatchEmbed"));
        CHECK_EQ_STR("{}", fm_model_fusion_config(off));
    }
    fm_model_free(off);
}

static void test_runtime_layout_loads_both_ways(void) {
    fm_qfix q;
    fm_qfix_init(&q);
    char src[4200], rt[4200];
    fm_error err;
    snprintf(src, sizeof src, "%s/lay-src", tmp);
    snprintf(rt, sizeof rt, "%s/lay-rt", tmp);
    CHECK_OK(fm_qfix_write(src, &q, &err), &err);
    fm_model *f = load(src, "{\"patch_embeddings\": true}", false, NULL, &err);
    if (!f) return;
    fm_save_pretrained_options so;
    fm_save_pretrained_options_init(&so);
    so.runtime_format = true;
    CHECK_OK(fm_save_pretrained(f, rt, &so, &err), &err);
    fm_checkpoint *ck = NULL;
    CHECK_OK(fm_checkpoint_open(rt, &ck, &err), &err);
    long i = ck ? fm_checkpoint_find(ck, "model.visual.patch_embed.linear_proj.weight") : -1;
    CHECK(i >= 0 && fm_checkpoint_entry_at(ck, (size_t)i)->shape.ndim == 2);
    fm_checkpoint_close(ck);
    fm_model *fused = load(rt, NULL, true, NULL, &err); /* stored fusion_config -> fused */
    CHECK_MSG(fused != NULL, "runtime layout loads fused: %s", err.msg);
    fm_model *unfused = load(rt, "{}", true, NULL, &err); /* defuse transforms -> Conv3d */
    CHECK_MSG(unfused != NULL, "runtime layout loads unfused: %s", err.msg);
    if (fused && unfused) {
        const fm_tensor *cw = fm_model_param(unfused, "model.visual.patch_embed.proj.weight");
        CHECK(cw && cw->shape.ndim == 5);
        const int64_t g[] = {1, 4, 4};
        double e = compare_runs(fused, unfused, &q, g, 1);
        CHECK_MSG(e <= 1e-5, "relative L2 %.3g", e);
    }
    fm_model_free(fused), fm_model_free(unfused), fm_model_free(f);
}

static void test_validation_errors(void) {
    fm_qfix q;
    fm_qfix_init(&q);
    char dir[4200];
    fm_error err;
    snprintf(dir, sizeof dir, "%s/val", tmp);
    CHECK_OK(fm_qfix_write(dir, &q, &err), &err);
    struct {
        const char *cfg, *needle;
    } cases[] = {
        {"{\"patch_embedding\": true}", "unknown fusion type 'patch_embedding'"},
        {"{\"patch_embeddings\": 1}", "'patch_embeddings'"},
        {"{\"patch_embeddings\": \"yes\"}", "expected true, false or an object"},
        {"{\"patch_embeddings\": null}", "'patch_embeddings'"},
        {"[\"patch_embeddings\"]", "must be a JSON object"},
        {"{\"patch_embeddings\": tru}", "--fusion-config:1:"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        fm_model *m = load(dir, cases[i].cfg, false, NULL, &err);
        CHECK_MSG(m == NULL, "%s refused", cases[i].cfg);
        CHECK_CONTAINS(err.msg, cases[i].needle);
        fm_model_free(m);
    }
    fm_model *m = load(dir, "{\"patch_embeddings\": false}", false, NULL, &err); /* false skips */
    CHECK(
        m &&
        !strcmp(
            fm_module_class_of(fm_module_find(fm_model_root(m), "model.visual.patch_embed"))->name,
            "PatchEmbed"));
    fm_model_free(m);
    m = load(dir, "{\"patch_embeddings\": {\"some_option\": 1}}", false, NULL,
             &err); /* options object enables */
    CHECK(m && fm_model_param(m, "model.visual.patch_embed.linear_proj.weight") != NULL);
    fm_model_free(m);
}

static void test_conflict_error(void) {
    fm_qfix q;
    fm_qfix_init(&q);
    char dir[4200];
    fm_error err;
    snprintf(dir, sizeof dir, "%s/conflict", tmp);
    CHECK_OK(fm_qfix_write(dir, &q, &err), &err);
    fm_transform_list l = {0};
    CHECK_OK(fm_conversion_mapping_get("Qwen2VLForConditionalGeneration", &l, &err), &err);
    const char *src = "^model\\.visual\\.patch_embed\\.proj\\.weight$",
               *dst = "^model\\.visual\\.patch_embed\\.w2d$";
    fm_op_desc op = {FM_OP_CONV3D_TO_LINEAR, 0, 0, 3, {2, 14, 14}};
    fm_transform *t = NULL;
    CHECK_OK(fm_transform_converter_new(&src, 1, &dst, 1, &op, 1, &t, &err), &err);
    CHECK_OK(fm_transform_list_append(&l, t, &err), &err);
    CHECK_OK(fm_conversion_mapping_register("Qwen2VLForConditionalGeneration", &l, true, &err),
             &err);
    fm_transform_list_free(&l);
    fm_model *m = load(dir, "{\"patch_embeddings\": true}", false, NULL, &err);
    CHECK(m == NULL);
    CHECK_STATUS(FM_ERR_FUSION, err.status, &err);
    CHECK_CONTAINS(err.msg, "conflicts with an existing conversion mapping");
    CHECK_CONTAINS(err.msg, "patch_embed.w2d"); /* names the existing transform */
    CHECK_CONTAINS(err.msg, "linear_proj");     /* and the fusion's */
    fm_model_free(m);
    fm_conversion_mapping_reset();
    m = load(dir, "{\"patch_embeddings\": true}", false, NULL, &err);
    CHECK_MSG(m != NULL, "loads again after the mapping reset: %s", err.msg);
    fm_model_free(m);
}

static void test_discovery_cache_keyed_by_config(void) {
    fm_qfix a, b;
    fm_qfix_init(&a);
    fm_qfix_init(&b);
    b.patch_size = 7;
    char da[4200], db[4200];
    fm_error err;
    snprintf(da, sizeof da, "%s/cache-a", tmp);
    snprintf(db, sizeof db, "%s/cache-b", tmp);
    CHECK_OK(fm_qfix_write(da, &a, &err), &err);
    CHECK_OK(fm_qfix_write(db, &b, &err), &err);
    fm_fusion_cache_clear();
    uint64_t n0 = fm_fusion_discovery_count();
    fm_model *m1 = load(da, "{\"patch_embeddings\": true}", true, NULL, &err);
    uint64_t n1 = fm_fusion_discovery_count();
    fm_model *m2 = load(db, "{\"patch_embeddings\": true}", true, NULL, &err);
    uint64_t n2 = fm_fusion_discovery_count();
    fm_model *m3 = load(da, "{\"patch_embeddings\": true}", true, NULL, &err);
    uint64_t n3 = fm_fusion_discovery_count();
    CHECK(n1 > n0);
    CHECK_MSG(n2 > n1, "a second config is discovered anew, not served from the first's entry");
    CHECK_EQ_INT(n2, n3); /* same config again: cached */
    const fm_tensor *w =
        m2 ? fm_model_param(m2, "model.visual.patch_embed.linear_proj.weight") : NULL;
    CHECK(w && w->shape.dims[1] == 3 * 2 * 7 * 7);
    fm_model_free(m1), fm_model_free(m2), fm_model_free(m3);
}

/* Concurrent loads share the fusion registry, the discovery cache and the fused-class cache. */
static char conc_dir[4200];
static void *load_loop(void *arg) {
    long ok = 0;
    for (int i = 0; i < 6; i++) {
        fm_error err;
        fm_model *m =
            load(conc_dir, (i + (long)(intptr_t)arg) % 2 ? "{\"patch_embeddings\": true}" : "{}",
                 false, NULL, &err);
        if (m && fm_model_param(m, (i + (long)(intptr_t)arg) % 2
                                       ? "model.visual.patch_embed.linear_proj.weight"
                                       : "model.visual.patch_embed.proj.weight"))
            ok++;
        fm_model_free(m);
        if (i == 2) fm_fusion_cache_clear();
    }
    return (void *)(intptr_t)ok;
}

static void test_concurrent_loads(void) {
    fm_qfix q;
    fm_qfix_init(&q);
    fm_error err;
    snprintf(conc_dir, sizeof conc_dir, "%s/conc", tmp);
    CHECK_OK(fm_qfix_write(conc_dir, &q, &err), &err);
    pthread_t th[4];
    for (long i = 0; i < 4; i++)
        pthread_create(&th[i], NULL, load_loop, (void *)(intptr_t)i);
    long total = 0;
    for (int i = 0; i < 4; i++) {
        void *r;
        pthread_join(th[i], &r);
        total += (long)(intptr_t)r;
    }
    CHECK_EQ_INT(24, total);
}

int main(void) {
    if (fm_init(NULL) != FM_OK) return 1; /* the built-in architectures' key mappings */
    tmp = fm_test_tmpdir("fusion");
    RUN(test_fused_forward_matches);
    RUN(test_round_trip_and_persistence);
    RUN(test_runtime_layout_loads_both_ways);
    RUN(test_validation_errors);
    RUN(test_conflict_error);
    RUN(test_discovery_cache_keyed_by_config);
    RUN(test_concurrent_loads);
    fm_test_rmtree(tmp);
    free(tmp);
    TEST_END();
}
