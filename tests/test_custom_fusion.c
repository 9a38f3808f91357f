/* Runs examples/custom_fusion (a fusion family registered from outside the library) on a
 * generated checkpoint: loads fused, runs, saves, and checks the results it prints. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "qwen_fixture.h"

static char *tmp;

static void test_custom_family_end_to_end(void) {
    char src[4200], dst[4200], cmd[16384];
    fm_error err;
    fm_qfix q;
    fm_qfix_init(&q);
    q.text_layers = 2;
    snprintf(src, sizeof src, "%s/src", tmp);
    snprintf(dst, sizeof dst, "%s/dst", tmp);
    CHECK_OK(fm_qfix_write(src, &q, &err), &err);
    const char *build = getenv("FM_CLI");
    char bin[4200];
    snprintf(bin, sizeof bin, "%.*sexamples/custom_fusion",
             build ? (int)(strlen(build) - strlen("fusemap")) : 6, build ? build : "build/");
    snprintf(cmd, sizeof cmd, "%s %s %s 2>&1", bin, src, dst);
    FILE *p = popen(cmd, "r");
    char out[8192] = "";
    size_t n = p ? fread(out, 1, sizeof out - 1, p) : 0;
    out[n] = '\0';
    int rc = p ? pclose(p) : -1;
    CHECK_MSG(rc == 0, "custom_fusion exits 0 (rc %d), output:\n%s", rc, out);
    CHECK_CONTAINS(out, "fused modules: 2 (first: model.language_model.layers.0.mlp: Qwen2MLP -> "
                        "FusedQwen2MLP (gate_up))");
    CHECK_CONTAINS(out, "saved weights identical to the source: yes");
    CHECK_CONTAINS(out, "two families: 3 fused modules"); /* the patch embedding + 2 MLPs */
    CHECK_CONTAINS(out, "two families, saved weights identical to the source: yes");
    CHECK_CONTAINS(out, "custom_fusion: OK");
}

int main(void) {
    tmp = fm_test_tmpdir("custom");
    RUN(test_custom_family_end_to_end);
    fm_test_rmtree(tmp);
    free(tmp);
    TEST_END();
}
