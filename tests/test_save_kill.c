/* A save killed with SIGKILL at an arbitrary moment leaves either the old checkpoint or the
 * complete new one: a child process saves two different checkpoints (one sharded, one
 * single-file) over the same directory in a loop and reports each completed save through a
 * pipe; the parent waits until saves are completing, measures how long one takes, kills the child
 * at a random moment within a save, and checks the directory is byte for byte one of the two and
 * loads. It keeps going until it has seen both checkpoints and kills that landed in the middle of
 * a save (the save's staging directory was left behind), so the test cannot pass on kills that
 * all fall between saves or before the first one. (test_save_durability crashes at every single
 * write, fsync and rename deterministically; this test is the real signal.) */
#include <dirent.h>
#include <errno.h>
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

static void child_loop(const char *a, const char *b, const char *dst, int report) {
    fm_model *ma = NULL, *mb = NULL;
    fm_error err;
    if (fm_from_pretrained(a, NULL, &ma, NULL, &err) ||
        fm_from_pretrained(b, NULL, &mb, NULL, &err))
        _exit(3);
    for (unsigned i = 0;; i++) {
        if (fm_save_pretrained(i % 2 ? mb : ma, dst, NULL, &err) != FM_OK) _exit(4);
        char c = (char)(i % 2);
        if (write(report, &c, 1) != 1) _exit(5);
    }
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Reads one report byte; -1 when the child died or nothing came within 30 s. */
static int next_report(int fd) {
    fd_set s;
    FD_ZERO(&s);
    FD_SET(fd, &s);
    struct timeval tv = {30, 0};
    char c;
    if (select(fd + 1, &s, NULL, NULL, &tv) != 1 || read(fd, &c, 1) != 1) return -1;
    return c;
}

/* Removes what killed saves left beside dst (hidden ".dst.fusemap-*" siblings); returns how
 * many there were. */
static int remove_debris(void) {
    DIR *d = opendir(tmp);
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d));) {
        if (strncmp(e->d_name, ".dst.fusemap-", 13)) continue;
        char *p = fm_test_join(tmp, e->d_name);
        fm_test_rmtree(p);
        free(p);
        n++;
    }
    if (d) closedir(d);
    return n;
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
    REQUIRE_OK(fm_qfix_write(a, &q, &err), &err);
    q.max_shard = 0, q.seed = 2;
    REQUIRE_OK(fm_qfix_write(b, &q, &err), &err);
    REQUIRE_OK(fm_qfix_write(dst, &q, &err), &err); /* starts as b */
    srand((unsigned)time(NULL) ^ (unsigned)getpid());
    int min_it = getenv("FM_TEST_QUICK") ? 6 : 12, max_it = 80;
    int it, as_a = 0, as_b = 0, mid_save = 0;
    for (it = 0; it < max_it; it++) {
        if (it >= min_it && as_a && as_b && mid_save >= 2) break;
        int pfd[2];
        REQUIRE(pipe(pfd) == 0);
        fflush(NULL);
        pid_t pid = fork();
        REQUIRE(pid >= 0);
        if (pid == 0) {
            close(pfd[0]);
            child_loop(a, b, dst, pfd[1]);
        }
        close(pfd[1]);
        /* two completed saves: the second one's duration is the window to kill in */
        int r1 = next_report(pfd[0]);
        double t1 = now();
        int r2 = r1 < 0 ? -1 : next_report(pfd[0]);
        double period = now() - t1;
        CHECK_MSG(r1 >= 0 && r2 >= 0, "iteration %d: the child completes saves", it);
        if (rand() % 2) next_report(pfd[0]); /* alternate which checkpoint is being written */
        usleep((useconds_t)(period * 1.3e6 * (rand() / (RAND_MAX + 1.0))));
        kill(pid, SIGKILL);
        int status;
        waitpid(pid, &status, 0);
        close(pfd[0]);
        REQUIRE_MSG(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL,
                    "iteration %d: the child was killed mid-loop (status %d)", it, status);
        int is_a = fm_test_same_dir_quiet(dst, a, NULL);
        int is_b = !is_a && fm_test_same_dir_quiet(dst, b, NULL);
        CHECK_MSG(is_a || is_b,
                  "iteration %d: destination is exactly the old or the new checkpoint", it);
        as_a += is_a, as_b += is_b;
        mid_save += remove_debris() > 0;
        fm_model *m = NULL;
        CHECK_OK(fm_from_pretrained(dst, NULL, &m, NULL, &err), &err);
        fm_model_free(m);
    }
    fprintf(stderr, "killed %d saves: %d left checkpoint a, %d left checkpoint b, %d mid-save\n",
            it, as_a, as_b, mid_save);
    CHECK_MSG(as_a > 0 && as_b > 0, "both checkpoints were seen after kills (a %d, b %d)", as_a,
              as_b);
    CHECK_MSG(mid_save >= 2, "kills landed in the middle of a save (%d of %d)", mid_save, it);
}

int main(void) {
    tmp = fm_test_tmpdir("kill");
    RUN(test_kill_during_saves);
    fm_test_rmtree(tmp);
    free(tmp);
    TEST_END();
}
