/* Shard paths may not escape the model directory through symlinks, except in the layout of
 * the Hugging Face hub cache (<repo>/snapshots/<rev>/ files linking into <repo>/blobs/). */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "fusemap/fusemap.h"
#include "qwen_fixture.h"

static char *tmp;

/* Moves every file of src into blobs/<name>.blob and links snapshot/<name> to it (relative). */
static void make_cache(const char *src, const char *repo) {
    char blobs[4300], snap[4300];
    snprintf(blobs, sizeof blobs, "%s/blobs", repo);
    snprintf(snap, sizeof snap, "%s/snapshots", repo);
    mkdir(repo, 0755), mkdir(blobs, 0755), mkdir(snap, 0755);
    snprintf(snap, sizeof snap, "%s/snapshots/abc123", repo);
    mkdir(snap, 0755);
    DIR *d = opendir(src);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char from[4600], to[4600], link[4600], target[4600];
        snprintf(from, sizeof from, "%s/%s", src, e->d_name);
        snprintf(to, sizeof to, "%s/%s.blob", blobs, e->d_name);
        snprintf(link, sizeof link, "%s/%s", snap, e->d_name);
        snprintf(target, sizeof target, "../../blobs/%s.blob", e->d_name);
        CHECK(rename(from, to) == 0);
        CHECK(symlink(target, link) == 0);
    }
    if (d) closedir(d);
}

static void test_hub_cache_snapshot_loads(void) {
    char src[4200], repo[4200], snap[4300];
    fm_error err;
    fm_qfix q;
    fm_qfix_init(&q);
    q.max_shard = 30000;
    snprintf(src, sizeof src, "%s/src", tmp);
    snprintf(repo, sizeof repo, "%s/models--org--tiny", tmp);
    CHECK_OK(fm_qfix_write(src, &q, &err), &err);
    make_cache(src, repo);
    snprintf(snap, sizeof snap, "%s/snapshots/abc123", repo);
    fm_model *m = NULL;
    CHECK_OK(fm_from_pretrained(snap, NULL, &m, NULL, &err), &err);
    fm_model_free(m);
    /* a shard linking anywhere else is still refused */
    char link[4700], outside[4300];
    snprintf(link, sizeof link, "%s/model-00001-of-%05d.safetensors", snap, 0);
    DIR *d = opendir(snap);
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (!strncmp(e->d_name, "model-00001", 11))
            snprintf(link, sizeof link, "%s/%s", snap, e->d_name);
    if (d) closedir(d);
    snprintf(outside, sizeof outside, "%s/elsewhere.safetensors", tmp);
    char blob[4400];
    CHECK(realpath(link, blob) != NULL);
    CHECK(rename(blob, outside) == 0);
    unlink(link);
    CHECK(symlink(outside, link) == 0);
    CHECK_STATUS(FM_ERR_INDEX, fm_from_pretrained(snap, NULL, &m, NULL, &err), &err);
    CHECK_CONTAINS(err.msg, "outside the checkpoint directory");
}

int main(void) {
    tmp = fm_test_tmpdir("hubcache");
    RUN(test_hub_cache_snapshot_loads);
    fm_test_rmtree(tmp);
    free(tmp);
    TEST_END();
}
