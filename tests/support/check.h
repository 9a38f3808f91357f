/* Minimal test harness: each test binary calls RUN(fn) for its cases and ends with
 * TEST_END(), which prints "RESULT <passed> <failed> <skipped>" for scripts/run_tests.sh.
 * Failures print what was expected and what was seen. CHECK* record a failure and go on;
 * REQUIRE* record it and stop the current case (later lines would use what is missing);
 * SKIP(reason) stops the case as skipped, which the runner accepts only for the cases it
 * lists (docs/testing.md). */
#ifndef FM_TEST_CHECK_H
#define FM_TEST_CHECK_H

#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fusemap/core.h"

extern int fm_t_case_failed, fm_t_case_skipped;
extern int fm_t_passed, fm_t_failed, fm_t_skipped;
extern const char *fm_t_case;
extern jmp_buf fm_t_case_jmp; /* where REQUIRE and SKIP leave the current case */

/* The message of an error record, or "" for NULL. */
static inline const char *fm_t_errmsg(const fm_error *e) {
    return e ? e->msg : "";
}

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fm_t_case_failed = 1;                                                                  \
            fprintf(stderr, "FAIL %s:%d [%s]: expected %s\n", __FILE__, __LINE__, fm_t_case,       \
                    #cond);                                                                        \
        }                                                                                          \
    } while (0)

#define CHECK_MSG(cond, ...)                                                                       \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fm_t_case_failed = 1;                                                                  \
            fprintf(stderr, "FAIL %s:%d [%s]: expected %s: ", __FILE__, __LINE__, fm_t_case,       \
                    #cond);                                                                        \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
        }                                                                                          \
    } while (0)

#define CHECK_EQ_INT(expected, seen)                                                               \
    do {                                                                                           \
        long long e_ = (long long)(expected), s_ = (long long)(seen);                              \
        if (e_ != s_) {                                                                            \
            fm_t_case_failed = 1;                                                                  \
            fprintf(stderr, "FAIL %s:%d [%s]: %s: expected %lld, seen %lld\n", __FILE__, __LINE__, \
                    fm_t_case, #seen, e_, s_);                                                     \
        }                                                                                          \
    } while (0)

#define CHECK_EQ_STR(expected, seen)                                                               \
    do {                                                                                           \
        const char *e_ = (expected), *s_ = (seen);                                                 \
        if (!e_ || !s_ || strcmp(e_, s_) != 0) {                                                   \
            fm_t_case_failed = 1;                                                                  \
            fprintf(stderr, "FAIL %s:%d [%s]: %s: expected \"%s\", seen \"%s\"\n", __FILE__,       \
                    __LINE__, fm_t_case, #seen, e_ ? e_ : "(null)", s_ ? s_ : "(null)");           \
        }                                                                                          \
    } while (0)

/* Status check: prints the status name and the error message. */
#define CHECK_STATUS(expected, seen, errp)                                                         \
    do {                                                                                           \
        fm_status e_ = (expected), s_ = (seen);                                                    \
        if (e_ != s_) {                                                                            \
            fm_t_case_failed = 1;                                                                  \
            fprintf(stderr, "FAIL %s:%d [%s]: %s: expected %s, seen %s (%s)\n", __FILE__,          \
                    __LINE__, fm_t_case, #seen, fm_status_name(e_), fm_status_name(s_),            \
                    fm_t_errmsg(errp));                                                            \
        }                                                                                          \
    } while (0)

#define CHECK_OK(expr, errp) CHECK_STATUS(FM_OK, (expr), errp)

/* Substring check on an error message. An empty needle is a failure: it would match anything. */
#define CHECK_CONTAINS(haystack, needle)                                                           \
    do {                                                                                           \
        const char *h_ = (haystack), *n_ = (needle);                                               \
        if (!h_ || !n_[0] || !strstr(h_, n_)) {                                                    \
            fm_t_case_failed = 1;                                                                  \
            fprintf(stderr, "FAIL %s:%d [%s]: expected \"%s\" to contain \"%s\"%s\n", __FILE__,    \
                    __LINE__, fm_t_case, h_ ? h_ : "(null)", n_,                                   \
                    n_[0] ? "" : " (an empty needle checks nothing)");                             \
        }                                                                                          \
    } while (0)

/* Stops the current case as failed when cond is false (what a later line needs is missing). */
#define REQUIRE(cond)                                                                              \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fm_t_case_failed = 1;                                                                  \
            fprintf(stderr, "FAIL %s:%d [%s]: required %s (case stopped)\n", __FILE__, __LINE__,   \
                    fm_t_case, #cond);                                                             \
            longjmp(fm_t_case_jmp, 1);                                                             \
        }                                                                                          \
    } while (0)

#define REQUIRE_MSG(cond, ...)                                                                     \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fm_t_case_failed = 1;                                                                  \
            fprintf(stderr, "FAIL %s:%d [%s]: required %s: ", __FILE__, __LINE__, fm_t_case,       \
                    #cond);                                                                        \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputs(" (case stopped)\n", stderr);                                                    \
            longjmp(fm_t_case_jmp, 1);                                                             \
        }                                                                                          \
    } while (0)

/* Status requirement: prints the status name and the error message, stops the case. */
#define REQUIRE_OK(expr, errp)                                                                     \
    do {                                                                                           \
        fm_status s_ = (expr);                                                                     \
        REQUIRE_MSG(s_ == FM_OK, "%s: %s (%s)", #expr, fm_status_name(s_), fm_t_errmsg(errp));     \
    } while (0)

/* Ends the current case as skipped with a reason. The runner fails a skip unless the case is
 * on its allow list (scripts/run_tests.sh SKIP_ALLOWED): a skip must not hide a broken test. */
#define SKIP(...)                                                                                  \
    do {                                                                                           \
        fm_t_case_skipped = 1;                                                                     \
        fprintf(stderr, "skip - %s: ", fm_t_case);                                                 \
        fprintf(stderr, __VA_ARGS__);                                                              \
        fputc('\n', stderr);                                                                       \
        longjmp(fm_t_case_jmp, 1);                                                                 \
    } while (0)

#define RUN(fn)                                                                                    \
    do {                                                                                           \
        fm_t_case = #fn;                                                                           \
        fm_t_case_failed = 0;                                                                      \
        fm_t_case_skipped = 0;                                                                     \
        if (setjmp(fm_t_case_jmp) == 0) fn();                                                      \
        if (fm_t_case_skipped && !fm_t_case_failed) {                                              \
            fm_t_skipped++;                                                                        \
        } else if (fm_t_case_failed) {                                                             \
            fm_t_failed++;                                                                         \
            fprintf(stderr, "not ok - %s\n", #fn);                                                 \
        } else {                                                                                   \
            fm_t_passed++;                                                                         \
            fprintf(stderr, "ok - %s\n", #fn);                                                     \
        }                                                                                          \
    } while (0)

#define TEST_END()                                                                                 \
    do {                                                                                           \
        printf("RESULT %d %d %d\n", fm_t_passed, fm_t_failed, fm_t_skipped);                       \
        return fm_t_failed ? 1 : 0;                                                                \
    } while (0)

#endif
