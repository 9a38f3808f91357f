/* The progress callbacks of fm_from_pretrained and fm_save_pretrained (core.h's contract):
 * total constant and equal to the bytes involved (recomputed here from the checkpoint and the
 * saved state dict), done never decreasing and below total until one last call with
 * done == total, and no final call when the operation fails. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "core/testing.h"
#include "file_util.h"
#include "fusemap/models.h"
#include "qwen_fixture.h"

static char *tmp;

typedef struct rec {
    uint64_t done[4096], total[4096];
    size_t n;
} rec;

static void on_progress(void *ctx, uint64_t done, uint64_t total) {
    rec *r = ctx;
    if (r->n < 4096) r->done[r->n] = done, r->total[r->n] = total;
    r->n++;
}

/* Checks the contract on a successful operation of `total` bytes; returns the call count. */
static size_t check_contract(const char *what, const rec *r, uint64_t total) {
    CHECK_MSG(r->n >= 1 && r->n <= 4096, "%s: 1..4096 calls, seen %zu", what, r->n);
    if (r->n < 1 || r->n > 4096) return 0;
    for (size_t i = 0; i < r->n; i++) {
        CHECK_MSG(r->total[i] == total, "%s: call %zu: total %llu, expected %llu", what, i,
                  (unsigned long long)r->total[i], (unsigned long long)total);
        if (i)
            CHECK_MSG(r->done[i] >= r->done[i - 1], "%s: call %zu: done %llu after %llu", what, i,
                      (unsigned long long)r->done[i], (unsigned long long)r->done[i - 1]);
        if (i + 1 < r->n)
            CHECK_MSG(r->done[i] < total, "%s: call %zu of %zu: done %llu is not below %llu", what,
                      i, r->n, (unsigned long long)r->done[i], (unsigned long long)total);
    }
    CHECK_MSG(r->done[r->n - 1] == total, "%s: last call done %llu, expected %llu", what,
              (unsigned long long)r->done[r->n - 1], (unsigned long long)total);
    return r->n;
}

static uint64_t checkpoint_bytes(const char *dir) {
    fm_checkpoint *ck = NULL;
    fm_error err;
    uint64_t n = 0;
    CHECK_OK(fm_checkpoint_open(dir, &ck, &err), &err);
    for (size_t i = 0; ck && i < fm_checkpoint_count(ck); i++)
        n += fm_checkpoint_entry_at(ck, i)->nbytes;
    fm_checkpoint_close(ck);
    return n;
}

static char *fixture(const char *tag, fm_dtype dt, uint64_t max_shard) {
    char *dir = fm_test_join(tmp, tag);
    fm_qfix q;
    fm_qfix_init(&q);
    q.dtype = dt, q.max_shard = max_shard, q.depth = 3;
    fm_error err;
    CHECK_OK(fm_qfix_write(dir, &q, &err), &err);
    return dir;
}

static fm_model *load(const char *dir, fm_dtype dt, const char *fusion, rec *r) {
    fm_load_options o;
    fm_load_options_init(&o);
    o.dtype = dt, o.fusion_config = fusion, o.progress = on_progress, o.progress_ctx = r;
    fm_model *m = NULL;
    fm_error err;
    CHECK_OK(fm_from_pretrained(dir, &o, &m, NULL, &err), &err);
    return m;
}

static void test_load_progress(void) {
    char *one = fixture("one", FM_DTYPE_BF16, 0), *sh = fixture("sharded", FM_DTYPE_F32, 30000);
    const struct {
        const char *dir;
        fm_dtype dt;
        const char *fusion;
    } cases[] = {{one, FM_DTYPE_INVALID, NULL},
                 {one, FM_DTYPE_F32, NULL},
                 {one, FM_DTYPE_INVALID, "{\"patch_embeddings\": true}"},
                 {sh, FM_DTYPE_BF16, NULL}};
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        rec *r = calloc(1, sizeof *r);
        fm_model *m = load(cases[c].dir, cases[c].dt, cases[c].fusion, r);
        char what[64];
        snprintf(what, sizeof what, "load case %zu", c);
        size_t calls = check_contract(what, r, checkpoint_bytes(cases[c].dir));
        /* one report before each fetched tensor (minus repeats) and the final one */
        CHECK_MSG(calls > 10, "%s: progress while loading, seen %zu calls", what, calls);
        fm_model_free(m);
        free(r);
    }
    /* meta_only loads no weight: a single (0, 0) */
    rec *r = calloc(1, sizeof *r);
    fm_load_options o;
    fm_load_options_init(&o);
    o.meta_only = true, o.progress = on_progress, o.progress_ctx = r;
    fm_model *m = NULL;
    fm_error err;
    CHECK_OK(fm_from_pretrained(one, &o, &m, NULL, &err), &err);
    CHECK_EQ_INT(1, r->n);
    CHECK_EQ_INT(0, r->total[0]);
    fm_model_free(m);
    free(r), free(one), free(sh);
}

static void test_load_failure_no_final_call(void) {
    char *dir = fixture("bad-shape", FM_DTYPE_F32, 0);
    /* config.json now describes a wider tower than the weights: shape mismatches mid-load */
    fm_qfix q;
    fm_qfix_init(&q);
    q.depth = 3, q.embed_dim = 48;
    char *cfg = fm_qfix_config_text(&q), *path = fm_test_join(dir, "config.json");
    fm_test_write_file(path, cfg, strlen(cfg));
    rec *r = calloc(1, sizeof *r);
    fm_load_options o;
    fm_load_options_init(&o);
    o.progress = on_progress, o.progress_ctx = r;
    fm_model *m = NULL;
    fm_error err;
    CHECK_STATUS(FM_ERR_SHAPE, fm_from_pretrained(dir, &o, &m, NULL, &err), &err);
    CHECK_MSG(r->n >= 1, "progress reported before the mismatch (%zu calls)", r->n);
    for (size_t i = 0; i < r->n && i < 4096; i++)
        CHECK_MSG(r->done[i] < r->total[i], "failed load: call %zu reports done %llu of %llu", i,
                  (unsigned long long)r->done[i], (unsigned long long)r->total[i]);
    fm_free(cfg);
    free(path), free(r), free(dir);
}

static uint64_t saved_bytes(const fm_model *m) {
    fm_named_tensor *sd = NULL;
    size_t n = 0;
    uint64_t b = 0;
    fm_error err;
    CHECK_OK(fm_model_save_state_dict(m, false, &sd, &n, &err), &err);
    for (size_t i = 0; i < n; i++)
        b += sd[i].tensor.nbytes;
    fm_named_tensors_free(sd, n);
    return b;
}

static void test_save_progress(void) {
    char *src = fixture("save-src", FM_DTYPE_F32, 0);
    rec *lr = calloc(1, sizeof *lr), *r = calloc(1, sizeof *r);
    fm_model *m = load(src, FM_DTYPE_INVALID, "{\"patch_embeddings\": true}", lr);
    fm_save_pretrained_options so;
    fm_save_pretrained_options_init(&so);
    so.max_shard_size = 20000; /* several shards: progress across files */
    so.progress = on_progress, so.progress_ctx = r;
    char *dst = fm_test_join(tmp, "save-dst");
    fm_error err;
    if (m) CHECK_OK(fm_save_pretrained(m, dst, &so, &err), &err);
    size_t calls = m ? check_contract("save", r, saved_bytes(m)) : 0;
    CHECK_MSG(calls > 5, "progress across the shards, seen %zu calls", calls);

    /* a failing fsync: the save fails and makes no final call */
    memset(r, 0, sizeof *r);
    fm_fault_set(FM_FAULT_FSYNC, 2);
    if (m) CHECK(fm_save_pretrained(m, dst, &so, &err) != FM_OK);
    fm_fault_set(FM_FAULT_FSYNC, 0);
    CHECK_MSG(r->n >= 1, "the failed save reported progress first (%zu calls)", r->n);
    for (size_t i = 0; i < r->n && i < 4096; i++)
        CHECK_MSG(r->done[i] < r->total[i], "failed save: call %zu reports done %llu of %llu", i,
                  (unsigned long long)r->done[i], (unsigned long long)r->total[i]);
    fm_model_free(m);
    free(lr), free(r), free(src), free(dst);
}

int main(void) {
    tmp = fm_test_tmpdir("progress");
    RUN(test_load_progress);
    RUN(test_load_failure_no_final_call);
    RUN(test_save_progress);
    fm_test_rmtree(tmp);
    free(tmp);
    TEST_END();
}
