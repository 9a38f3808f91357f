/* Runs examples/split_qkv (a family registered from outside the library that replaces the
 * vision tower's attention and brings its own forward) on a generated checkpoint: outputs equal
 * to unfused, composition with patch_embeddings, byte-identical original-format save. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "qwen_fixture.h"

static char *tmp;

static void test_split_qkv_end_to_end(void) {
    char src[4200], dst[4200], cmd[16384], bin[4200];
    fm_error err;
    fm_qfix q;
    fm_qfix_init(&q);
    q.depth = 3;
    snprintf(src, sizeof src, "%s/src", tmp);
    snprintf(dst, sizeof dst, "%s/dst", tmp);
    CHECK_OK(fm_qfix_write(src, &q, &err), &err);
    const char *build = getenv("FM_CLI");
    snprintf(bin, sizeof bin, "%.*sexamples/split_qkv",
             build ? (int)(strlen(build) - strlen("fusemap")) : 6, build ? build : "build/");
    snprintf(cmd, sizeof cmd, "%s %s %s 2>&1", bin, src, dst);
    FILE *p = popen(cmd, "r");
    char out[8192] = "";
    size_t n = p ? fread(out, 1, sizeof out - 1, p) : 0;
    out[n] = '\0';
    int rc = p ? pclose(p) : -1;
    CHECK_MSG(rc == 0, "split_qkv exits 0 (rc %d), output:\n%s", rc, out);
    CHECK_CONTAINS(out, "split_qkv: 3 attention modules replaced");
    CHECK_CONTAINS(out, "split_qkv + patch_embeddings: 4 modules replaced");
    CHECK_CONTAINS(out, "saved weights identical to the source: yes");
    CHECK_CONTAINS(out, "split_qkv: OK");
}

int main(void) {
    tmp = fm_test_tmpdir("splitqkv");
    RUN(test_split_qkv_end_to_end);
    fm_test_rmtree(tmp);
    free(tmp);
    TEST_END();
}
