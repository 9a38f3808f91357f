/* A save killed with SIGKILL at any moment leaves either the old checkpoint or the complete
 * new one: a child process saves two different checkpoints (one sharded, one single-file)
 * over the same directory in a loop; the parent kills it at random moments and checks the
 * directory is byte for byte one of the two, every time. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "file_util.h"
#include "fusemap/fusemap.h"
#include "qwen_fixture.h"

static char *tmp;

static void child_loop(const char *a, const char *b, const char *dst) {
    fm_model *ma = NULL, *mb = NULL;
    fm_error err;
    if (fm_from_pretrained(a, NULL, &ma, NULL, &err) ||
        fm_from_pretrained(b, NULL, &mb, NULL, &err))
        _exit(3);
    for (unsigned i = 0;; i++)
        if (fm_save_pretrained(i % 2 ? mb : ma, dst, NULL, &err) != FM_OK) _exit(4);
}

static void test_kill_during_saves(void) {
    char a[4200], b[4200], dst[4200];
    fm_error err;
    fm_qfix q;
    snprintf(a, sizeof a, "%s/a", tmp);
    snprintf(b, sizeof b, "%s/b", tmp);
    snprintf(dst, sizeof dst, "%s/dst", tmp);
    fm_qfix_init(&q);
    q.depth = 3, q.max_shard = 30000, q.seed = 1;
    CHECK_OK(fm_qfix_write(a, &q, &err), &err);
    q.max_shard = 0, q.seed = 2;
    CHECK_OK(fm_qfix_write(b, &q, &err), &err);
    CHECK_OK(fm_qfix_write(dst, &q, &err), &err); /* starts as b */
    srand((unsigned)time(NULL));
    int iterations = getenv("FM_TEST_QUICK") ? 8 : 25, as_a = 0, as_b = 0;
    for (int it = 0; it < iterations; it++) {
        pid_t pid = fork();
        if (pid == 0) child_loop(a, b, dst);
        usleep((useconds_t)(5000 + rand() % 400000));
        kill(pid, SIGKILL);
        int status;
        waitpid(pid, &status, 0);
        CHECK_MSG(WIFSIGNALED(status), "child was killed mid-loop (status %d)", status);
        int is_a = fm_test_same_dir(dst, a, NULL), is_b = !is_a && fm_test_same_dir(dst, b, NULL);
        CHECK_MSG(is_a || is_b,
                  "iteration %d: destination is exactly the old or the new checkpoint", it);
        as_a += is_a, as_b += is_b;
        fm_model *m = NULL;
        CHECK_OK(fm_from_pretrained(dst, NULL, &m, NULL, &err), &err);
        fm_model_free(m);
    }
    fprintf(stderr, "killed %d saves: %d left checkpoint a, %d left checkpoint b\n", iterations,
            as_a, as_b);
}

int main(void) {
    tmp = fm_test_tmpdir("kill");
    RUN(test_kill_during_saves);
    /* leftover staging directories of killed saves are hidden siblings inside tmp: removed with it
     */
    fm_test_rmtree(tmp);
    free(tmp);
    TEST_END();
}
