/* The CLI's progress line: the meter's decisions and format (cli/progress.c compiled in here,
 * with a fake clock), and the real tool on a pseudo-terminal: a progress line while loading and
 * saving, erased at the end; nothing with --quiet, nothing when stderr is not a terminal, and
 * stdout (--json) never mixed with it. FUSEMAP_PROGRESS_DELAY=0 stands in for a long operation. */
#define _XOPEN_SOURCE 700
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../cli/progress.c"
#include "check.h"
#include "file_util.h"
#include "qwen_fixture.h"

static char *tmp, *model;
static const char *cli;

/* ---- the meter alone ------------------------------------------------------------------------ */

static double fake_t;
static double fake_now(void) {
    return fake_t;
}

static void test_due(void) {
    CHECK(!fm_cli_meter_due(0, 100, 0.1, 1.0));   /* too early to tell */
    CHECK(fm_cli_meter_due(10, 100, 0.3, 1.0));   /* 10% in 0.3 s: about 3 s in all */
    CHECK(!fm_cli_meter_due(90, 100, 0.3, 1.0));  /* 90% in 0.3 s: done within the second */
    CHECK(fm_cli_meter_due(99, 100, 1.2, 1.0));   /* a second has passed */
    CHECK(!fm_cli_meter_due(100, 100, 5.0, 1.0)); /* finished */
    CHECK(fm_cli_meter_due(0, 100, 0.0, 0.0));    /* delay 0: at once */
    CHECK(!fm_cli_meter_due(0, 0, 0.0, 0.0));     /* nothing to do */
}

static void test_format(void) {
    char b[256];
    uint64_t gib = 1ull << 30;
    fm_cli_meter_format(b, sizeof b, "loading", NULL, gib + gib / 2, 4 * gib, 3.0);
    CHECK_EQ_STR("loading  1.5 GiB / 4.0 GiB  37%  512.0 MiB/s  ETA 0:05", b);
    fm_cli_meter_format(b, sizeof b, "forward", "blocks", 3, 32, 2.0);
    CHECK_EQ_STR("forward  3 / 32 blocks  9%  1.5 blocks/s  ETA 0:19", b);
    fm_cli_meter_format(b, sizeof b, "saving", NULL, 0, 700, 0.5);
    CHECK_EQ_STR("saving  0 B / 700 B  0%  --  ETA --", b);
    fm_cli_meter_format(b, sizeof b, "saving", NULL, 1, 7200, 1.0); /* 7199 s left */
    CHECK_EQ_STR("saving  1 B / 7.0 KiB  0%  1 B/s  ETA 1:59:59", b);
    fm_cli_meter_format(b, 12, "loading", NULL, 1, 2, 1.0); /* cut to the terminal's width */
    CHECK_EQ_STR("loading  1 ", b);
}

static char *slurp_stream(FILE *f) {
    long n = ftell(f);
    char *b = calloc(1, (size_t)n + 1);
    rewind(f);
    if (fread(b, 1, (size_t)n, f) != (size_t)n) b[0] = '\0';
    return b;
}

/* A load of 1000 units: one update at 0.3 s (10%: long), redraws throttled, the end erases. */
static void test_meter_draws_and_erases(void) {
    fm_cli_meter m;
    fm_cli_meter_start(&m, "loading", NULL, true);
    m.out = tmpfile();
    m.now = fake_now;
    m.t0 = fake_t = 0;
    m.delay = 1.0;
    fm_cli_meter_update(&m, 0, 1000);
    fake_t = 0.3;
    fm_cli_meter_update(&m, 100, 1000);
    fake_t = 0.35;
    fm_cli_meter_update(&m, 150, 1000); /* within 0.1 s of the last draw: skipped */
    fake_t = 0.5;
    fm_cli_meter_update(&m, 200, 1000);
    fm_cli_meter_update(&m, 1000, 1000);
    char *text = slurp_stream(m.out);
    CHECK_EQ_STR("\rloading  100 B / 1000 B  10%  333 B/s  ETA 0:03\033[K"
                 "\rloading  200 B / 1000 B  20%  400 B/s  ETA 0:02\033[K"
                 "\r\033[K",
                 text);
    fclose(m.out);
    free(text);

    /* short work (90% in 0.3 s) and a disabled meter draw nothing, not even the erase */
    for (int enabled = 0; enabled < 2; enabled++) {
        fm_cli_meter_start(&m, "saving", NULL, enabled);
        m.out = tmpfile();
        m.now = fake_now;
        m.t0 = fake_t = 0;
        m.delay = 1.0;
        fake_t = enabled ? 0.3 : 5.0;
        fm_cli_meter_update(&m, enabled ? 900 : 100, 1000);
        fm_cli_meter_update(&m, 1000, 1000);
        text = slurp_stream(m.out);
        CHECK_MSG(!text[0], "enabled=%d: nothing written, got '%s'", enabled, text);
        fclose(m.out);
        free(text);
    }
}

/* ---- the tool on a terminal --------------------------------------------------------------------
 */

/* Runs argv with stderr on a new pseudo-terminal (stdout to out_path); returns the exit code and
 * everything the terminal received (malloc'd). */
static int run_on_pty(char *const argv[], const char *out_path, char **pty_text) {
    *pty_text = calloc(1, 1);
    int m = posix_openpt(O_RDWR | O_NOCTTY);
    if (m < 0 || grantpt(m) || unlockpt(m) || !ptsname(m)) return -1;
    char slave[256];
    snprintf(slave, sizeof slave, "%s", ptsname(m));
    pid_t pid = fork();
    if (pid == 0) {
        setsid();
        int s = open(slave, O_RDWR), o = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0644),
            in = open("/dev/null", O_RDONLY);
        if (s < 0 || o < 0 || in < 0) _exit(126);
        dup2(in, 0), dup2(o, 1), dup2(s, 2);
        close(m);
        execv(argv[0], argv);
        _exit(127);
    }
    size_t len = 0;
    for (;;) {
        char chunk[4096];
        ssize_t n = read(m, chunk, sizeof chunk);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break; /* EIO once the child has closed the terminal */
        char *grown = realloc(*pty_text, len + (size_t)n + 1);
        if (!grown) break;
        *pty_text = grown;
        memcpy(*pty_text + len, chunk, (size_t)n);
        len += (size_t)n;
        (*pty_text)[len] = '\0';
    }
    int status = 0;
    waitpid(pid, &status, 0);
    close(m);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static bool has_control(const char *s) {
    return strchr(s, '\r') && strstr(s, "\033[K");
}

/* After the last progress line comes the erase sequence, and no progress text after it. */
static void check_erased(const char *what, const char *text, const char *label) {
    const char *last = NULL;
    for (const char *p = text; (p = strstr(p, label)); p++)
        last = p;
    CHECK_MSG(last != NULL, "%s: a '%s' progress line on the terminal, got '%s'", what, label,
              text);
    if (last)
        CHECK_MSG(strstr(last, "\r\033[K") != NULL, "%s: the line is erased at the end", what);
}

static void test_progress_on_a_terminal(void) {
    char *out = fm_test_join(tmp, "stdout"), *dst = fm_test_join(tmp, "converted"), *text = NULL;
    setenv("FUSEMAP_PROGRESS_DELAY", "0", 1);
    char *conv[] = {(char *)cli, "convert", model, dst, NULL};
    CHECK_EQ_INT(0, run_on_pty(conv, out, &text));
    check_erased("convert", text, "loading  ");
    check_erased("convert", text, "saving  ");
    CHECK_CONTAINS(text, "saved "); /* the informational line is still there */
    free(text);

    char *quiet[] = {(char *)cli, "convert", model, dst, "--quiet", NULL};
    CHECK_EQ_INT(0, run_on_pty(quiet, out, &text));
    CHECK_EQ_STR("", text);
    free(text);

    /* --json on stdout stays pure while stderr shows progress */
    char *insp[] = {(char *)cli, "inspect", model, "--modules", "--json", NULL};
    CHECK_EQ_INT(0, run_on_pty(insp, out, &text));
    check_erased("inspect --modules", text, "loading  ");
    free(text);
    char *json = fm_test_read_file(out, NULL);
    json_error_t je;
    json_t *doc = json ? json_loads(json, 0, &je) : NULL;
    CHECK_MSG(doc != NULL, "stdout is one JSON document: %s", json ? je.text : "(no output)");
    CHECK(json && !strchr(json, '\033') && !strchr(json, '\r'));
    json_decref(doc);
    free(json);

    /* the default delay: a small model loads and saves well within a second, no line at all */
    unsetenv("FUSEMAP_PROGRESS_DELAY");
    CHECK_EQ_INT(0, run_on_pty(conv, out, &text));
    CHECK_MSG(!strstr(text, "\033[K") && !strstr(text, "loading  "),
              "short work shows no progress: '%s'", text);
    CHECK_CONTAINS(text, "saved ");
    free(text);
    free(out), free(dst);
}

static void test_no_progress_when_not_a_terminal(void) {
    char cmd[16384], *err = fm_test_join(tmp, "stderr.txt"),
                     *dst = fm_test_join(tmp, "converted-file");
    snprintf(cmd, sizeof cmd, "FUSEMAP_PROGRESS_DELAY=0 %s convert %s %s 2>%s", cli, model, dst,
             err);
    CHECK_EQ_INT(0, system(cmd));
    char *text = fm_test_read_file(err, NULL);
    CHECK_MSG(text && !has_control(text) && !strstr(text, "loading  "),
              "stderr to a file: no progress, got '%s'", text ? text : "(none)");
    CHECK_CONTAINS(text, "saved ");
    free(text), free(err), free(dst);
}

int main(void) {
    cli = getenv("FM_CLI");
    if (!cli) cli = "build/fusemap";
    tmp = fm_test_tmpdir("cliprog");
    model = fm_test_join(tmp, "model");
    fm_qfix q;
    fm_qfix_init(&q);
    q.depth = 4;
    fm_error err;
    if (fm_qfix_write(model, &q, &err) != FM_OK) return fprintf(stderr, "%s\n", err.msg), 1;
    RUN(test_due);
    RUN(test_format);
    RUN(test_meter_draws_and_erases);
    RUN(test_progress_on_a_terminal);
    RUN(test_no_progress_when_not_a_terminal);
    fm_test_rmtree(tmp);
    free(model), free(tmp);
    TEST_END();
}
