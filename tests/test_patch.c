/* The patch registry (src/loading/patch.c): exact keys and Python-re patterns (SEARCH), their
 * precedence, overwrite and unregister errors with the spec's wording, copies, snapshot scoping,
 * and concurrent register/resolve/unregister from four threads. Classes are opaque here: the
 * tests use addresses of static objects as `const struct fm_module_class *`. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fusemap/loading.h"
#include "support/check.h"

static const char kObjs[16];
#define CLS(i) ((const struct fm_module_class *)(const void *)&kObjs[i])

static void test_exact_register_resolve_list(void) {
    fm_error e;
    fm_patch_clear();
    CHECK(fm_patch_resolve("Qwen2VLVisionBlock") == NULL);
    CHECK_OK(fm_patch_register("Qwen2VLVisionBlock", CLS(1), false, &e), &e);
    CHECK_OK(fm_patch_register("PatchEmbed", CLS(2), false, &e), &e);
    CHECK(fm_patch_resolve("Qwen2VLVisionBlock") == CLS(1));
    CHECK(fm_patch_resolve("PatchEmbed") == CLS(2));
    CHECK(fm_patch_resolve("Other") == NULL);
    char **keys = NULL;
    size_t n = 0;
    CHECK_OK(fm_patch_list(&keys, &n, &e), &e);
    CHECK_EQ_INT(2, n);
    if (n == 2) {
        CHECK_EQ_STR("Qwen2VLVisionBlock", keys[0]);
        CHECK_EQ_STR("PatchEmbed", keys[1]);
        keys[0][0] = 'X'; /* a copy: changing it leaves the registry alone */
    }
    fm_patch_keys_free(keys, n);
    CHECK(fm_patch_resolve("Qwen2VLVisionBlock") == CLS(1));
    fm_patch_clear();
    CHECK_OK(fm_patch_list(&keys, &n, &e), &e);
    CHECK_EQ_INT(0, n);
    fm_patch_keys_free(keys, n);
    CHECK(fm_patch_resolve("PatchEmbed") == NULL);
}

static void test_overwrite_and_unregister(void) {
    fm_error e;
    fm_patch_clear();
    CHECK_OK(fm_patch_register("A", CLS(1), false, &e), &e);
    CHECK_OK(fm_patch_register("B", CLS(2), false, &e), &e);
    CHECK_STATUS(FM_ERR_EXISTS, fm_patch_register("A", CLS(3), false, &e), &e);
    CHECK_CONTAINS(e.msg, "Class 'A' already has a patch mapping registered. Use overwrite=true");
    CHECK(fm_patch_resolve("A") == CLS(1));
    CHECK_OK(fm_patch_register("A", CLS(3), true, &e), &e);
    CHECK(fm_patch_resolve("A") == CLS(3));
    char **keys = NULL;
    size_t n = 0;
    CHECK_OK(fm_patch_list(&keys, &n, &e), &e);
    CHECK(n == 2 && strcmp(keys[0], "A") == 0); /* replaced in place */
    fm_patch_keys_free(keys, n);
    CHECK_OK(fm_patch_unregister("A", &e), &e);
    CHECK(fm_patch_resolve("A") == NULL);
    CHECK_STATUS(FM_ERR_NOT_FOUND, fm_patch_unregister("A", &e), &e);
    CHECK_CONTAINS(e.msg, "not found in patch mapping. Cannot unregister");
    CHECK_CONTAINS(e.msg, "'A'");
    CHECK_STATUS(FM_ERR_INVALID_ARG, fm_patch_register("C", NULL, false, &e), &e);
    CHECK_STATUS(FM_ERR_INVALID_ARG, fm_patch_register("", CLS(1), false, &e), &e);
    CHECK_STATUS(FM_ERR_PATTERN, fm_patch_register("Bad[", CLS(1), false, &e), &e);
    CHECK_CONTAINS(e.msg, "Bad[");
    CHECK(fm_patch_resolve("B") == CLS(2));
    fm_patch_clear();
}

static void test_patterns_and_precedence(void) {
    fm_error e;
    fm_patch_clear();
    CHECK_OK(fm_patch_register(".*Attention", CLS(1), false, &e), &e);
    CHECK(fm_patch_resolve("BertAttention") == CLS(1));
    CHECK(fm_patch_resolve("GPT2Attention") == CLS(1));
    CHECK(fm_patch_resolve("T5Attention") == CLS(1));
    CHECK(fm_patch_resolve("SomethingElse") == NULL);
    CHECK(fm_patch_resolve("AttentionPool") == CLS(1)); /* SEARCH: anywhere in the name */
    CHECK_OK(fm_patch_register("BertAttention", CLS(2), false, &e), &e);
    CHECK(fm_patch_resolve("BertAttention") == CLS(2)); /* exact beats pattern */
    CHECK(fm_patch_resolve("GPT2Attention") == CLS(1));
    CHECK_OK(fm_patch_register("GPT2.*", CLS(3), false, &e), &e);
    CHECK(fm_patch_resolve("GPT2Attention") == CLS(1)); /* first registered pattern wins */
    CHECK(fm_patch_resolve("GPT2MLP") == CLS(3));
    CHECK_OK(fm_patch_register("^Qwen2VL(Vision)?Block$", CLS(4), false, &e), &e);
    CHECK(fm_patch_resolve("Qwen2VLVisionBlock") == CLS(4));
    CHECK(fm_patch_resolve("Qwen2VLBlock") == CLS(4));
    CHECK(fm_patch_resolve("MyQwen2VLBlock") == NULL);
    fm_patch_clear();
}

static void test_snapshot_scoping(void) {
    fm_error e;
    fm_patch_map *snap = NULL, *empty = NULL;
    fm_patch_clear();
    CHECK_OK(fm_patch_snapshot(&empty, &e), &e);
    CHECK_EQ_INT(0, fm_patch_map_count(empty));
    CHECK_OK(fm_patch_register("PatchEmbed", CLS(1), false, &e), &e);
    CHECK_OK(fm_patch_register("Vision.*", CLS(2), false, &e), &e);
    CHECK_OK(fm_patch_snapshot(&snap, &e), &e);
    CHECK_EQ_INT(2, fm_patch_map_count(snap));
    /* later changes to the registry do not reach the snapshot ... */
    CHECK_OK(fm_patch_register("PatchEmbed", CLS(3), true, &e), &e);
    CHECK_OK(fm_patch_unregister("Vision.*", &e), &e);
    CHECK_OK(fm_patch_register("Merger", CLS(4), false, &e), &e);
    CHECK(fm_patch_map_resolve(snap, "PatchEmbed") == CLS(1));
    CHECK(fm_patch_map_resolve(snap, "VisionBlock") == CLS(2));
    CHECK(fm_patch_map_resolve(snap, "Merger") == NULL);
    CHECK(fm_patch_map_resolve(empty, "PatchEmbed") == NULL);
    /* ... and a scoped addition to the snapshot does not reach the registry */
    CHECK_OK(fm_patch_map_add(snap, "Scoped", CLS(5), false, &e), &e);
    CHECK_STATUS(FM_ERR_EXISTS, fm_patch_map_add(snap, "Scoped", CLS(6), false, &e), &e);
    CHECK(fm_patch_map_resolve(snap, "Scoped") == CLS(5));
    CHECK(fm_patch_resolve("Scoped") == NULL);
    CHECK(fm_patch_resolve("PatchEmbed") == CLS(3));
    fm_patch_clear(); /* the snapshot owns its entries */
    CHECK(fm_patch_map_resolve(snap, "VisionBlock") == CLS(2));
    fm_patch_map_free(snap);
    fm_patch_map_free(empty);
    fm_patch_map_free(NULL);
    fm_patch_map *m = fm_patch_map_new();
    CHECK_OK(fm_patch_map_add(m, "X", CLS(7), false, &e), &e);
    CHECK(fm_patch_map_resolve(m, "X") == CLS(7));
    CHECK(fm_patch_map_resolve(NULL, "X") == NULL);
    fm_patch_map_free(m);
}

/* ---- concurrency -------------------------------------------------------------------------------
 */
typedef struct worker {
    int id, iters, errors;
} worker;

static void *worker_main(void *arg) {
    worker *w = arg;
    char key[32], pat[32];
    snprintf(key, sizeof key, "Thread%dBlock", w->id);
    snprintf(pat, sizeof pat, "^T%d.*Pattern$", w->id);
    for (int i = 0; i < w->iters; i++) {
        fm_error e;
        if (fm_patch_register(key, CLS(w->id), false, &e) != FM_OK) w->errors++;
        if (fm_patch_register(pat, CLS(8 + w->id), true, &e) != FM_OK) w->errors++;
        if (fm_patch_resolve(key) != CLS(w->id)) w->errors++;
        if (fm_patch_resolve("SharedBlock") != CLS(15)) w->errors++; /* never lost */
        char name[48];
        snprintf(name, sizeof name, "T%dSomePattern", w->id);
        if (fm_patch_resolve(name) != CLS(8 + w->id)) w->errors++;
        fm_patch_map *s = NULL;
        if (fm_patch_snapshot(&s, &e) != FM_OK || fm_patch_map_resolve(s, "SharedBlock") != CLS(15))
            w->errors++;
        fm_patch_map_free(s);
        if (fm_patch_unregister(key, &e) != FM_OK) w->errors++;
        if (i % 2 && fm_patch_unregister(pat, &e) != FM_OK) w->errors++;
    }
    return NULL;
}

static void test_concurrent_threads(void) {
    fm_error e;
    fm_patch_clear();
    CHECK_OK(fm_patch_register("SharedBlock", CLS(15), false, &e), &e);
    pthread_t th[4];
    worker w[4];
    int iters = getenv("FM_TEST_QUICK") ? 200 : 2000;
    for (int i = 0; i < 4; i++) {
        w[i] = (worker){i + 1, iters, 0};
        CHECK(pthread_create(&th[i], NULL, worker_main, &w[i]) == 0);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < 4; i++)
        CHECK_EQ_INT(0, w[i].errors);
    char **keys = NULL;
    size_t n = 0;
    CHECK_OK(fm_patch_list(&keys, &n, &e), &e);
    CHECK_EQ_INT(1, n); /* everything a thread added it also removed */
    if (n) CHECK_EQ_STR("SharedBlock", keys[0]);
    fm_patch_keys_free(keys, n);
    fm_patch_clear();
}

static void test_alloc_failures(void) {
    int failures = 0, done = 0;
    for (uint64_t k = 1; k < 500 && !done; k++) {
        fm_error e;
        fm_patch_map *s = NULL;
        fm_patch_clear();
        fm_fault_set(FM_FAULT_ALLOC, k);
        fm_status st = fm_patch_register("Some.*Class", CLS(1), false, &e);
        if (st == FM_OK) st = fm_patch_register("Exact", CLS(2), false, &e);
        if (st == FM_OK) st = fm_patch_snapshot(&s, &e);
        done = fm_fault_count(FM_FAULT_ALLOC) < k;
        fm_fault_set(FM_FAULT_ALLOC, 0);
        if (!done) {
            CHECK_MSG(st == FM_ERR_NOMEM, "allocation %llu: %s", (unsigned long long)k,
                      fm_status_name(st));
            failures++;
        } else {
            CHECK_OK(st, &e);
            CHECK(fm_patch_map_resolve(s, "SomeBigClass") == CLS(1));
        }
        fm_patch_map_free(s);
    }
    CHECK(done && failures > 5);
    fm_patch_clear();
}

int main(void) {
    RUN(test_exact_register_resolve_list);
    RUN(test_overwrite_and_unregister);
    RUN(test_patterns_and_precedence);
    RUN(test_snapshot_scoping);
    RUN(test_concurrent_threads);
    RUN(test_alloc_failures);
    TEST_END();
}
