/* fm_save_pretrained over an existing checkpoint, with the N-th allocation, write, fsync,
 * rename or open failing, for every N until the save succeeds: each failure leaves the
 * destination exactly as it was (same files, same bytes), no staging directory beside it, and
 * an error that says what failed. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "file_util.h"
#include "fusemap/fusemap.h"
#include "qwen_fixture.h"

static char *tmp;

static int staging_left(const char *parent) {
    DIR *d = opendir(parent);
    struct dirent *e;
    int n = 0;
    while (d && (e = readdir(d)))
        n += strstr(e->d_name, ".fusemap-") != NULL;
    if (d) closedir(d);
    return n;
}

static void sweep(fm_model *m, const char *dst, const char *snapshot, fm_fault_kind kind,
                  const char *what) {
    fm_save_pretrained_options so;
    fm_save_pretrained_options_init(&so);
    so.max_shard_size = 30000; /* several shards: more files, more failure points */
    int failures = 0;
    for (uint64_t n = 1; n < 100000; n++) {
        fm_error err;
        fm_fault_set(kind, n);
        fm_status st = fm_save_pretrained(m, dst, &so, &err);
        fm_fault_set(kind, 0);
        if (st == FM_OK) break;
        failures++;
        CHECK_MSG(err.msg[0] != '\0', "%s #%llu: the error says what failed", what,
                  (unsigned long long)n);
        CHECK_MSG(fm_test_same_dir(dst, snapshot, NULL), "%s #%llu: destination unchanged (%s)",
                  what, (unsigned long long)n, err.msg);
        CHECK_MSG(staging_left(tmp) == 0, "%s #%llu: no staging directory left", what,
                  (unsigned long long)n);
    }
    CHECK_MSG(failures > 0, "%s: at least one failure point was exercised", what);
    fprintf(stderr, "%s: %d failure points, each left the destination unchanged\n", what, failures);
    /* restore the destination for the next sweep */
    fm_error err;
    fm_model *back = NULL;
    CHECK_OK(fm_from_pretrained(snapshot, NULL, &back, NULL, &err), &err);
    if (back) CHECK_OK(fm_save_pretrained(back, dst, NULL, &err), &err);
    fm_model_free(back);
}

static void test_save_failure_points(void) {
    char src[4200], dst[4200], snap[4200];
    fm_error err;
    fm_qfix q, q2;
    fm_qfix_init(&q);
    fm_qfix_init(&q2);
    q2.seed = 99; /* the destination holds another checkpoint */
    snprintf(src, sizeof src, "%s/src", tmp);
    snprintf(dst, sizeof dst, "%s/dst", tmp);
    snprintf(snap, sizeof snap, "%s/snapshot", tmp);
    CHECK_OK(fm_qfix_write(src, &q, &err), &err);
    CHECK_OK(fm_qfix_write(dst, &q2, &err), &err);
    CHECK_OK(fm_qfix_write(snap, &q2, &err), &err);
    fm_model *m = NULL;
    CHECK_OK(fm_from_pretrained(
                 src,
                 &(fm_load_options){FM_DTYPE_INVALID, false, false, "{\"patch_embeddings\": true}"},
                 &m, NULL, &err),
             &err);
    if (!m) return;
    sweep(m, dst, snap, FM_FAULT_ALLOC, "allocation");
    sweep(m, dst, snap, FM_FAULT_WRITE, "write");
    sweep(m, dst, snap, FM_FAULT_FSYNC, "fsync");
    sweep(m, dst, snap, FM_FAULT_RENAME, "rename");
    sweep(m, dst, snap, FM_FAULT_OPEN, "open");
    fm_model_free(m);
}

/* fm_from_pretrained (fused, with a fresh discovery each time) with the N-th allocation failing,
 * for every N until it succeeds: a clean error, no model, nothing leaked (ASan checks). */
static void test_load_allocation_failures(void) {
    char src[4200];
    fm_error err;
    fm_qfix q;
    fm_qfix_init(&q);
    q.max_shard = 30000;
    snprintf(src, sizeof src, "%s/load-src", tmp);
    CHECK_OK(fm_qfix_write(src, &q, &err), &err);
    fm_load_options o;
    fm_load_options_init(&o);
    o.fusion_config = "{\"patch_embeddings\": true}";
    int failures = 0;
    for (uint64_t n = 1; n < 1000000; n++) {
        fm_model *m = NULL;
        fm_load_report rep;
        fm_fusion_cache_clear();
        fm_fault_set(FM_FAULT_ALLOC, n);
        fm_status st = fm_from_pretrained(src, &o, &m, &rep, &err);
        fm_fault_set(FM_FAULT_ALLOC, 0);
        fm_load_report_free(&rep);
        if (st == FM_OK) {
            CHECK(m != NULL);
            fm_model_free(m);
            break;
        }
        failures++;
        CHECK_MSG(m == NULL && err.msg[0], "allocation #%llu: no model and a message",
                  (unsigned long long)n);
    }
    CHECK(failures > 0);
    fprintf(stderr, "load: %d allocation failure points, each a clean error\n", failures);
}

int main(void) {
    tmp = fm_test_tmpdir("savefaults");
    RUN(test_save_failure_points);
    RUN(test_load_allocation_failures);
    fm_test_rmtree(tmp);
    free(tmp);
    TEST_END();
}
