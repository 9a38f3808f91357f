/* Minimal test harness: each test binary calls RUN(fn) for its cases and ends with
 * TEST_END(), which prints "RESULT <passed> <failed>" for scripts/run_tests.sh. Failures
 * print what was expected and what was seen. */
#ifndef FM_TEST_CHECK_H
#define FM_TEST_CHECK_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fusemap/core.h"

extern int fm_t_case_failed;
extern int fm_t_passed, fm_t_failed;
extern const char *fm_t_case;

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

/* Substring check on an error message. */
#define CHECK_CONTAINS(haystack, needle)                                                           \
    do {                                                                                           \
        const char *h_ = (haystack), *n_ = (needle);                                               \
        if (!h_ || !strstr(h_, n_)) {                                                              \
            fm_t_case_failed = 1;                                                                  \
            fprintf(stderr, "FAIL %s:%d [%s]: expected \"%s\" to contain \"%s\"\n", __FILE__,      \
                    __LINE__, fm_t_case, h_ ? h_ : "(null)", n_);                                  \
        }                                                                                          \
    } while (0)

#define RUN(fn)                                                                                    \
    do {                                                                                           \
        fm_t_case = #fn;                                                                           \
        fm_t_case_failed = 0;                                                                      \
        fn();                                                                                      \
        if (fm_t_case_failed) {                                                                    \
            fm_t_failed++;                                                                         \
            fprintf(stderr, "not ok - %s\n", #fn);                                                 \
        } else {                                                                                   \
            fm_t_passed++;                                                                         \
            fprintf(stderr, "ok - %s\n", #fn);                                                     \
        }                                                                                          \
    } while (0)

#define TEST_END()                                                                                 \
    do {                                                                                           \
        printf("RESULT %d %d\n", fm_t_passed, fm_t_failed);                                        \
        return fm_t_failed ? 1 : 0;                                                                \
    } while (0)

#endif
