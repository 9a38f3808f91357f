/* Internal: Python-re patterns on PCRE2 (syntax translation, reference-counted compiled
 * regexes, SEARCH) and the string rules of transform patterns (spec loading-engine.md §2). */
#ifndef FM_LOADING_PATTERN_H
#define FM_LOADING_PATTERN_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdbool.h>
#include <stddef.h>

#include "fusemap/core.h"

/* A compiled pattern. Immutable after compile, so one object is shared (by reference count)
 * between clones of a transform and between snapshots of the patch registry. */
typedef struct fm_regex fm_regex;

/* Translates the Python-re pattern to PCRE2 syntax and compiles it (UTF, Unicode classes as
 * Python's str patterns). A bad pattern is FM_ERR_PATTERN naming it, with PCRE2's message and
 * offset. *out: one reference, caller drops it with fm_regex_release. */
fm_status fm_regex_compile(const char *pattern, fm_regex **out, fm_error *err);
fm_regex *fm_regex_retain(fm_regex *re); /* returns re */
void fm_regex_release(fm_regex *re);     /* accepts NULL */
uint32_t fm_regex_capture_count(const fm_regex *re);
const char *fm_regex_pattern(const fm_regex *re); /* the original (Python) text; borrowed */

/* Match data for `pairs` offset pairs (0: as many as re has groups, plus one), allocated
 * through fm_malloc; usable with any regex. Caller frees with pcre2_match_data_free. NULL when
 * out of memory. */
pcre2_match_data *fm_regex_match_data(const fm_regex *re, uint32_t pairs);
/* Match data for `pairs` offset pairs, not tied to a regex, allocated through fm_malloc. */
pcre2_match_data *fm_match_data_new(uint32_t pairs);
/* SEARCH (leftmost match anywhere in s[0..len)): *matched tells whether it matched (offsets
 * in md). Errors: FM_ERR_NOMEM, or FM_ERR_PATTERN (e.g. the backtracking limit). */
fm_status fm_regex_search(const fm_regex *re, const char *s, size_t len, pcre2_match_data *md,
                          bool *matched, fm_error *err);

/* Capture texts of one match: s[0] the whole match, s[i] group i ("" when the group did not
 * participate). Owned; free with fm_groups_clear. */
typedef struct fm_groups {
    char **s;
    size_t n;
} fm_groups;
void fm_groups_clear(fm_groups *g); /* frees and zeroes; accepts NULL */
fm_status fm_groups_copy(const fm_groups *src, fm_groups *dst, fm_error *err);
/* Fills g from the match in md over subject s (group count = capture count + 1). */
fm_status fm_groups_from_match(const fm_regex *re, pcre2_match_data *md, const char *s,
                               fm_groups *g, fm_error *err);

/* ---- transform pattern rules (§2.1) ------------------------------------------------------ */
/* Target normalisation: strips one leading '^' and one trailing '$', deletes every "(?...)"
 * group, turns "\." into ".", and replaces the first "(...)" group by "\1". *out: the result,
 * *group: the removed group text or NULL. Both caller-freed with fm_free. */
fm_status fm_pattern_normalize_target(const char *t, char **out, char **group, fm_error *err);
/* The alternation body of a source: every ".*." becomes "\..*\.". Caller frees *out. */
fm_status fm_pattern_branch_body(const char *source, char **out, fm_error *err);
/* Replacement text: each backslash-digits "\N" in repl becomes g->s[N] (python re.sub of
 * "\\(\d+)"). N beyond the groups is FM_ERR_PATTERN. g may be NULL when repl has no "\N". */
fm_status fm_pattern_expand_refs(const char *repl, const fm_groups *g, char **out, fm_error *err);
/* Highest N of any "\N" in repl, or -1 when there is none. */
long fm_pattern_max_ref(const char *repl);

/* ---- strings -------------------------------------------------------------------------------- */
/* s with the first occurrence of `what` replaced by `with` (Python str.replace(what, with, 1);
 * an empty `what` inserts at the start). NULL when out of memory. Caller frees with fm_free. */
char *fm_str_replace_first(const char *s, const char *what, const char *with);
/* s with every non-overlapping occurrence replaced (Python str.replace; `what` non-empty). */
char *fm_str_replace_all(const char *s, const char *what, const char *with);

#endif
