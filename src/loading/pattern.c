/* Python-re patterns on PCRE2: syntax translation, shared compiled regexes, SEARCH, capture
 * groups, and the string rules transforms apply to their patterns (spec §2.1–§2.2). */
#include "loading/pattern.h"

#include <ctype.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "fusemap/core.h"

struct fm_regex {
    _Atomic long refs;
    char *pattern;               /* the original Python text (owned) */
    pcre2_general_context *gctx; /* routes PCRE2's allocations through fm_malloc */
    pcre2_code *code;
    uint32_t captures;
};

static void *pcre_alloc(PCRE2_SIZE n, void *ctx) {
    (void)ctx;
    return fm_malloc(n);
}
static void pcre_free(void *p, void *ctx) {
    (void)ctx;
    fm_free(p);
}

/* ---- Python -> PCRE2 translation ----------------------------------------------------------
 * Differences handled (Python 3.11 `re` on str patterns vs PCRE2 10.42):
 *   \Z (absolute end)          -> \z
 *   \uXXXX, \UXXXXXXXX         -> \x{...}
 *   {,n} / {,} (min omitted)   -> {0,n} / {0,}   (PCRE2 10.42 reads "{," as literal text)
 *   inline flag 'u'            -> dropped (Unicode is the default, as in Python 3)
 *   inline flags 'a', 'L', \N{name} -> FM_ERR_PATTERN (no PCRE2 equivalent here)
 * (?P<name>...), (?P=name), lookbehind, \d (Unicode digits with PCRE2_UCP), atomic groups and
 * possessive quantifiers have the same meaning in both and are passed through. */
typedef struct tr_buf {
    char *s;
    size_t n;
} tr_buf;

static void tr_put(tr_buf *b, const char *s, size_t n) {
    memcpy(b->s + b->n, s, n);
    b->n += n;
}

static int hex_run(const char *p, int n) {
    for (int i = 0; i < n; i++)
        if (!isxdigit((unsigned char)p[i])) return 0;
    return 1;
}

/* One backslash escape at p (p[0] == '\\'); returns chars consumed, 0 on error. */
static size_t tr_escape(const char *pat, const char *p, bool in_class, tr_buf *b, fm_error *err) {
    char c = p[1];
    if (c == 'Z' && !in_class) {
        tr_put(b, "\\z", 2);
        return 2;
    }
    if (c == 'u' || c == 'U') {
        int w = c == 'u' ? 4 : 8;
        if (!hex_run(p + 2, w)) {
            fm_error_set(err, FM_ERR_PATTERN,
                         "invalid pattern '%s': incomplete escape \\%c at offset %zu", pat, c,
                         (size_t)(p - pat));
            return 0;
        }
        tr_put(b, "\\x{", 3);
        tr_put(b, p + 2, (size_t)w);
        tr_put(b, "}", 1);
        return (size_t)w + 2;
    }
    if (c == 'N') {
        fm_error_set(err, FM_ERR_PATTERN,
                     "invalid pattern '%s': \\N{...} named characters are not supported", pat);
        return 0;
    }
    if (c == '\0') {
        tr_put(b, p, 1); /* trailing backslash: PCRE2 reports it */
        return 1;
    }
    tr_put(b, p, 2);
    return 2;
}

/* "(?flags)" or "(?flags:" at p: drops 'u', rejects 'a'/'L'. Returns chars consumed (0: not a
 * flag group, copy normally; SIZE_MAX: error set). */
static size_t tr_flags(const char *pat, const char *p, tr_buf *b, fm_error *err) {
    size_t i = 2;
    while (p[i] && strchr("aiLmsux-", p[i]))
        i++;
    if (i == 2 || (p[i] != ')' && p[i] != ':')) return 0;
    tr_put(b, "(?", 2);
    for (size_t k = 2; k < i; k++) {
        if (p[k] == 'a' || p[k] == 'L') {
            fm_error_set(err, FM_ERR_PATTERN,
                         "invalid pattern '%s': inline flag '%c' is not supported", pat, p[k]);
            return SIZE_MAX;
        }
        if (p[k] != 'u') tr_put(b, p + k, 1);
    }
    if (b->s[b->n - 1] == '?' && p[i] == ')') { /* "(?u)" alone: nothing left */
        b->n -= 2;
        return i + 1;
    }
    return i;
}

/* "{," followed by digits and "}" at p: emits "{0,". Returns chars consumed or 0. */
static size_t tr_brace(const char *p, tr_buf *b) {
    size_t i = 2;
    while (isdigit((unsigned char)p[i]))
        i++;
    if (p[i] != '}') return 0;
    tr_put(b, "{0,", 3);
    return 2;
}

static fm_status py_to_pcre2(const char *pat, char **out, fm_error *err) {
    size_t len = strlen(pat);
    tr_buf b = {fm_malloc(2 * len + 16), 0};
    if (!b.s) return fm_error_set(err, FM_ERR_NOMEM, "out of memory translating pattern '%s'", pat);
    bool in_class = false;
    size_t class_at = 0; /* output index just after "[" or "[^": a ']' there is literal */
    const char *p = pat;
    while (*p) {
        size_t used = 0;
        if (*p == '\\') {
            used = tr_escape(pat, p, in_class, &b, err);
            if (!used) break;
        } else if (in_class) {
            if (*p == ']' && b.n != class_at) in_class = false;
            tr_put(&b, p, 1);
            used = 1;
        } else if (*p == '[') {
            in_class = true;
            used = p[1] == '^' ? 2 : 1;
            tr_put(&b, p, used);
            class_at = b.n;
        } else if (*p == '{' && p[1] == ',' && (used = tr_brace(p, &b)) != 0) {
        } else if (*p == '(' && p[1] == '?' && (used = tr_flags(pat, p, &b, err)) != 0) {
            if (used == SIZE_MAX) break;
        } else {
            tr_put(&b, p, 1);
            used = 1;
        }
        p += used;
    }
    if (*p) {
        fm_free(b.s);
        return err ? err->status : FM_ERR_PATTERN;
    }
    b.s[b.n] = '\0';
    *out = b.s;
    return FM_OK;
}

/* ---- compiled regexes ------------------------------------------------------------------- */
static fm_status regex_build(fm_regex *re, const char *text, fm_error *err) {
    int code = 0;
    PCRE2_SIZE off = 0;
    pcre2_compile_context *cc = pcre2_compile_context_create(re->gctx);
    if (!cc)
        return fm_error_set(err, FM_ERR_NOMEM, "out of memory compiling pattern '%s'", re->pattern);
    re->code = pcre2_compile((PCRE2_SPTR)text, PCRE2_ZERO_TERMINATED,
                             PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &code, &off, cc);
    pcre2_compile_context_free(cc);
    if (!re->code) {
        PCRE2_UCHAR msg[256];
        if (pcre2_get_error_message(code, msg, sizeof msg) < 0)
            snprintf((char *)msg, sizeof msg, "error %d", code);
        if (code == PCRE2_ERROR_HEAP_FAILED)
            return fm_error_set(err, FM_ERR_NOMEM, "out of memory compiling pattern '%s'",
                                re->pattern);
        if (strcmp(text, re->pattern) != 0)
            return fm_error_set(err, FM_ERR_PATTERN,
                                "invalid pattern '%s': %s at offset %zu of its PCRE2 form '%s'",
                                re->pattern, (const char *)msg, (size_t)off, text);
        return fm_error_set(err, FM_ERR_PATTERN, "invalid pattern '%s': %s at offset %zu",
                            re->pattern, (const char *)msg, (size_t)off);
    }
    pcre2_pattern_info(re->code, PCRE2_INFO_CAPTURECOUNT, &re->captures);
    return FM_OK;
}

fm_status fm_regex_compile(const char *pattern, fm_regex **out, fm_error *err) {
    *out = NULL;
    if (!pattern) return fm_error_set(err, FM_ERR_INVALID_ARG, "pattern is NULL");
    fm_regex *re = fm_calloc(1, sizeof *re);
    if (!re)
        return fm_error_set(err, FM_ERR_NOMEM, "out of memory compiling pattern '%s'", pattern);
    atomic_init(&re->refs, 1);
    re->pattern = fm_strdup(pattern);
    re->gctx = re->pattern ? pcre2_general_context_create(pcre_alloc, pcre_free, NULL) : NULL;
    if (!re->gctx) {
        fm_regex_release(re);
        return fm_error_set(err, FM_ERR_NOMEM, "out of memory compiling pattern '%s'", pattern);
    }
    char *text = NULL;
    fm_status st = py_to_pcre2(pattern, &text, err);
    if (st == FM_OK) st = regex_build(re, text, err);
    fm_free(text);
    if (st != FM_OK) {
        fm_regex_release(re);
        return st;
    }
    *out = re;
    return FM_OK;
}

fm_regex *fm_regex_retain(fm_regex *re) {
    if (re) atomic_fetch_add(&re->refs, 1);
    return re;
}

void fm_regex_release(fm_regex *re) {
    if (!re || atomic_fetch_sub(&re->refs, 1) != 1) return;
    pcre2_code_free(re->code);
    pcre2_general_context_free(re->gctx);
    fm_free(re->pattern);
    fm_free(re);
}

uint32_t fm_regex_capture_count(const fm_regex *re) {
    return re->captures;
}
const char *fm_regex_pattern(const fm_regex *re) {
    return re->pattern;
}

pcre2_match_data *fm_regex_match_data(const fm_regex *re, uint32_t pairs) {
    return pcre2_match_data_create(pairs ? pairs : re->captures + 1, re->gctx);
}

pcre2_match_data *fm_match_data_new(uint32_t pairs) {
    /* PCRE2 copies the allocator into each object, so the context can go right away. */
    pcre2_general_context *g = pcre2_general_context_create(pcre_alloc, pcre_free, NULL);
    if (!g) return NULL;
    pcre2_match_data *md = pcre2_match_data_create(pairs, g);
    pcre2_general_context_free(g);
    return md;
}

fm_status fm_regex_search(const fm_regex *re, const char *s, size_t len, pcre2_match_data *md,
                          bool *matched, fm_error *err) {
    int rc = pcre2_match(re->code, (PCRE2_SPTR)s, len, 0, 0, md, NULL);
    *matched = rc >= 0; /* rc 0: ovector too small, still a match */
    if (rc >= 0 || rc == PCRE2_ERROR_NOMATCH) return FM_OK;
    if (rc == PCRE2_ERROR_NOMEMORY)
        return fm_error_set(err, FM_ERR_NOMEM, "out of memory matching pattern '%s'", re->pattern);
    PCRE2_UCHAR msg[256];
    if (pcre2_get_error_message(rc, msg, sizeof msg) < 0)
        snprintf((char *)msg, sizeof msg, "error %d", rc);
    return fm_error_set(err, FM_ERR_PATTERN, "matching pattern '%s' against '%s': %s", re->pattern,
                        s, (const char *)msg);
}

/* ---- capture groups ---------------------------------------------------------------------- */
void fm_groups_clear(fm_groups *g) {
    if (!g) return;
    for (size_t i = 0; i < g->n; i++)
        fm_free(g->s[i]);
    fm_free(g->s);
    g->s = NULL;
    g->n = 0;
}

fm_status fm_groups_from_match(const fm_regex *re, pcre2_match_data *md, const char *s,
                               fm_groups *g, fm_error *err) {
    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
    size_t n = (size_t)re->captures + 1;
    g->n = 0;
    g->s = fm_calloc(n, sizeof *g->s);
    if (!g->s) return fm_error_set(err, FM_ERR_NOMEM, "out of memory collecting match groups");
    for (size_t i = 0; i < n; i++) {
        bool set = ov[2 * i] != PCRE2_UNSET;
        g->s[i] = set ? fm_strndup(s + ov[2 * i], ov[2 * i + 1] - ov[2 * i]) : fm_strdup("");
        g->n = i + 1;
        if (!g->s[i]) {
            fm_groups_clear(g);
            return fm_error_set(err, FM_ERR_NOMEM, "out of memory collecting match groups");
        }
    }
    return FM_OK;
}

fm_status fm_groups_copy(const fm_groups *src, fm_groups *dst, fm_error *err) {
    dst->s = NULL;
    dst->n = 0;
    if (!src->n) return FM_OK;
    dst->s = fm_calloc(src->n, sizeof *dst->s);
    if (!dst->s) return fm_error_set(err, FM_ERR_NOMEM, "out of memory copying match groups");
    for (size_t i = 0; i < src->n; i++) {
        dst->s[i] = fm_strdup(src->s[i]);
        dst->n = i + 1;
        if (!dst->s[i]) {
            fm_groups_clear(dst);
            return fm_error_set(err, FM_ERR_NOMEM, "out of memory copying match groups");
        }
    }
    return FM_OK;
}

/* ---- strings ------------------------------------------------------------------------------ */
char *fm_str_replace_first(const char *s, const char *what, const char *with) {
    const char *at = *what ? strstr(s, what) : s;
    if (!at) return fm_strdup(s);
    size_t ls = strlen(s), lw = strlen(what), lr = strlen(with), pre = (size_t)(at - s);
    char *o = fm_malloc(ls - lw + lr + 1);
    if (!o) return NULL;
    memcpy(o, s, pre);
    memcpy(o + pre, with, lr);
    memcpy(o + pre + lr, at + lw, ls - pre - lw + 1);
    return o;
}

char *fm_str_replace_all(const char *s, const char *what, const char *with) {
    size_t lw = strlen(what), lr = strlen(with), count = 0;
    if (!lw) return fm_strdup(s);
    for (const char *q = strstr(s, what); q; q = strstr(q + lw, what))
        count++;
    size_t ls = strlen(s), n = ls - count * lw + count * lr;
    char *o = fm_malloc(n + 1), *w = o;
    if (!o) return NULL;
    const char *p = s;
    for (const char *q = strstr(p, what); q; q = strstr(p, what)) {
        memcpy(w, p, (size_t)(q - p));
        w += q - p;
        memcpy(w, with, lr);
        w += lr;
        p = q + lw;
    }
    memcpy(w, p, strlen(p) + 1);
    return o;
}

/* ---- transform pattern rules ------------------------------------------------------------ */
/* Python re.sub(r"\(\?.+?\)?\)", "", t): a "(?" then the shortest run (>= 1 char, no newline)
 * followed by ")" — and a second ")" right after it is swallowed too. */
static size_t lookaround_end(const char *t, size_t i) {
    if (t[i] != '(' || t[i + 1] != '?') return 0;
    for (size_t p = i + 3; t[p - 1] != '\0' && t[p - 1] != '\n'; p++) {
        if (t[p] == '\0' || t[p] == '\n') return 0;
        if (t[p] == ')') return t[p + 1] == ')' ? p + 2 : p + 1;
    }
    return 0;
}

static void strip_lookarounds(char *t) {
    size_t w = 0;
    for (size_t i = 0; t[i];) {
        size_t end = lookaround_end(t, i);
        if (end) {
            i = end;
        } else {
            t[w++] = t[i++];
        }
    }
    t[w] = '\0';
}

/* First "(" + shortest run (>= 1 char, no newline) + ")" (Python re.search(r"\(.+?\)")). */
static bool find_group(const char *t, size_t *start, size_t *end) {
    for (size_t i = 0; t[i]; i++) {
        if (t[i] != '(') continue;
        for (size_t p = i + 2; t[p - 1] != '\0' && t[p - 1] != '\n'; p++) {
            if (t[p] == '\0' || t[p] == '\n') break;
            if (t[p] == ')') {
                *start = i;
                *end = p + 1;
                return true;
            }
        }
    }
    return false;
}

fm_status fm_pattern_normalize_target(const char *t, char **out, char **group, fm_error *err) {
    *out = NULL;
    *group = NULL;
    size_t n = strlen(t);
    if (n && t[0] == '^') t++, n--;
    if (n && t[n - 1] == '$') n--;
    char *a = fm_strndup(t, n);
    if (!a) return fm_error_set(err, FM_ERR_NOMEM, "out of memory normalising target '%s'", t);
    strip_lookarounds(a);
    char *b = fm_str_replace_all(a, "\\.", ".");
    fm_free(a);
    if (!b) return fm_error_set(err, FM_ERR_NOMEM, "out of memory normalising target '%s'", t);
    size_t gs, ge;
    if (find_group(b, &gs, &ge)) {
        char *g = fm_strndup(b + gs, ge - gs);
        char *c = g ? fm_str_replace_first(b, g, "\\1") : NULL;
        fm_free(b);
        if (!c) {
            fm_free(g);
            return fm_error_set(err, FM_ERR_NOMEM, "out of memory normalising target '%s'", t);
        }
        b = c;
        *group = g;
    }
    *out = b;
    return FM_OK;
}

fm_status fm_pattern_branch_body(const char *source, char **out, fm_error *err) {
    *out = fm_str_replace_all(source, ".*.", "\\..*\\.");
    if (!*out)
        return fm_error_set(err, FM_ERR_NOMEM, "out of memory preparing pattern '%s'", source);
    return FM_OK;
}

/* Parses "\digits" at p; returns digits consumed (0 if none) and the number in *num. */
static size_t ref_at(const char *p, long *num) {
    if (p[0] != '\\' || !isdigit((unsigned char)p[1])) return 0;
    size_t k = 1;
    long v = 0;
    while (isdigit((unsigned char)p[k])) {
        if (v < 100000) v = v * 10 + (p[k] - '0');
        k++;
    }
    *num = v;
    return k;
}

long fm_pattern_max_ref(const char *repl) {
    long best = -1, v;
    for (const char *p = repl; *p;) {
        size_t k = ref_at(p, &v);
        if (k) {
            if (v > best) best = v;
            p += k;
        } else {
            p++;
        }
    }
    return best;
}

fm_status fm_pattern_expand_refs(const char *repl, const fm_groups *g, char **out, fm_error *err) {
    size_t cap = strlen(repl) + 1, n = 0;
    long v;
    for (const char *p = repl; *p;) { /* size pass */
        size_t k = ref_at(p, &v);
        if (k && (!g || (size_t)v >= g->n))
            return fm_error_set(err, FM_ERR_PATTERN,
                                "replacement '%s' refers to group %ld, but the match has %zu", repl,
                                v, g && g->n ? g->n - 1 : 0);
        cap += k ? strlen(g->s[v]) : 0;
        p += k ? k : 1;
    }
    char *o = fm_malloc(cap);
    if (!o) return fm_error_set(err, FM_ERR_NOMEM, "out of memory expanding '%s'", repl);
    for (const char *p = repl; *p;) {
        size_t k = ref_at(p, &v);
        if (k) {
            size_t l = strlen(g->s[v]);
            memcpy(o + n, g->s[v], l);
            n += l;
            p += k;
        } else {
            o[n++] = *p++;
        }
    }
    o[n] = '\0';
    *out = o;
    return FM_OK;
}
