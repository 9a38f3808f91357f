/* Normalizer and pre-tokenizer: NFC through utf8proc (an all-ASCII text is already NFC), the
 * Split stages through PCRE2 (UTF + UCP, JIT when available) with tokenizers' Isolated
 * behaviour — every match and every gap between matches is its own piece, empty matches are
 * dropped — and each final piece handed to BPE (the ByteLevel mapping is folded into BPE's
 * byte -> id table). */
#include <stdint.h>
#include <stdio.h>
#include <utf8proc.h>

#include "text/tok_internal.h"

#define JIT_STACK_MAX ((size_t)8 << 20)

/* Oniguruma (tokenizers' engine) defines \s as White_Space; PCRE2 with UCP also counts U+180E
 * (its \h list). Every \s / \S escape outside \Q...\E becomes \p{White_Space} /
 * \P{White_Space}, so both engines split the same. Caller frees *out with fm_free. */
static char *oniguruma_spaces(const char *p, size_t n, size_t *out_len) {
    char *o = fm_malloc(n * 8 + 1);
    size_t k = 0;
    bool quoted = false;
    if (!o) return NULL;
    for (size_t i = 0; i < n; i++) {
        if (p[i] != '\\' || i + 1 == n) {
            o[k++] = p[i];
            continue;
        }
        char c = p[++i];
        if (quoted || (c != 's' && c != 'S')) {
            quoted = (quoted && c != 'E') || (!quoted && c == 'Q');
            o[k++] = '\\', o[k++] = c;
            continue;
        }
        memcpy(o + k, c == 's' ? "\\p{White_Space}" : "\\P{White_Space}", 15);
        k += 15;
    }
    *out_len = k;
    return o;
}

fm_status tk_regex_compile(fm_tokenizer *t, const char *pattern, size_t len, bool literal,
                           const char *key, tk_regex *out, fm_error *err) {
    int code;
    PCRE2_SIZE off;
    out->code = NULL, out->jit = false;
    size_t plen = len;
    char *pat = literal ? NULL : oniguruma_spaces(pattern, len, &plen);
    pcre2_compile_context *cc = literal || pat ? pcre2_compile_context_create(t->gctx) : NULL;
    if (!cc) {
        fm_free(pat);
        return fm_error_set(err, FM_ERR_NOMEM, "%s: out of memory", t->label);
    }
    uint32_t opts = PCRE2_UTF | (literal ? PCRE2_LITERAL : PCRE2_UCP); /* LITERAL refuses UCP */
    out->code = pcre2_compile((PCRE2_SPTR)(pat ? pat : pattern), plen, opts, &code, &off, cc);
    pcre2_compile_context_free(cc);
    fm_free(pat);
    if (!out->code) {
        if (code == PCRE2_ERROR_NOMEMORY || code == PCRE2_ERROR_HEAPLIMIT ||
            code == PCRE2_ERROR_HEAP_FAILED)
            return fm_error_set(err, FM_ERR_NOMEM, "%s: out of memory", t->label);
        PCRE2_UCHAR msg[160];
        pcre2_get_error_message(code, msg, sizeof msg);
        return fm_error_set(err, FM_ERR_UNSUPPORTED,
                            "%s: %s: regex not accepted by PCRE2 (at "
                            "offset %zu of the compiled form): %s",
                            t->label, key, (size_t)off, (const char *)msg);
    }
    out->jit = pcre2_jit_compile(out->code, PCRE2_JIT_COMPLETE) == 0;
    return FM_OK;
}

fm_status tk_nfc(const char *s, size_t n, char **out, size_t *out_len, fm_error *err) {
    const utf8proc_option_t opts = UTF8PROC_STABLE | UTF8PROC_COMPOSE;
    *out = NULL, *out_len = 0;
    if (n > (size_t)PTRDIFF_MAX / 8)
        return fm_error_set(err, FM_ERR_LIMIT, "NFC: text of %zu bytes is too long", n);
    utf8proc_ssize_t cps =
        utf8proc_decompose((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)n, NULL, 0, opts);
    if (cps < 0) return fm_error_set(err, FM_ERR_INPUT, "NFC: %s", utf8proc_errmsg(cps));
    int32_t *buf = fm_malloc(((size_t)cps + 1) * sizeof *buf);
    if (!buf) return fm_error_set(err, FM_ERR_NOMEM, "NFC: out of memory");
    utf8proc_ssize_t got =
        utf8proc_decompose((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)n, buf, cps, opts);
    utf8proc_ssize_t bytes = got == cps ? utf8proc_reencode(buf, got, opts) : -1;
    if (bytes < 0) {
        fm_free(buf);
        return fm_error_set(err, FM_ERR_INPUT, "NFC: %s", utf8proc_errmsg(bytes));
    }
    *out = (char *)buf; /* utf8proc_reencode wrote NUL-terminated UTF-8 over the code points */
    *out_len = (size_t)bytes;
    return FM_OK;
}

/* The next match of `re` in s[0..n) from `pos`: *found, and then [*ms, *me). */
static fm_status re_find(tk_enc *e, const tk_regex *re, const char *s, size_t n, size_t pos,
                         bool *found, size_t *ms, size_t *me) {
    int rc;
    for (;;) {
        if (re->jit)
            rc = pcre2_jit_match(re->code, (PCRE2_SPTR)s, n, pos, 0, e->md, e->mctx);
        else
            rc = pcre2_match(re->code, (PCRE2_SPTR)s, n, pos, PCRE2_NO_UTF_CHECK, e->md, e->mctx);
        if (rc != PCRE2_ERROR_JIT_STACKLIMIT || e->jstack) break;
        e->jstack = pcre2_jit_stack_create(32 * 1024, JIT_STACK_MAX, e->t->gctx);
        if (!e->jstack) break;
        pcre2_jit_stack_assign(e->mctx, NULL, e->jstack);
    }
    *found = rc >= 0;
    if (rc == PCRE2_ERROR_NOMATCH) return FM_OK;
    if (rc < 0) {
        PCRE2_UCHAR msg[160];
        pcre2_get_error_message(rc, msg, sizeof msg);
        return fm_error_set(e->err, rc == PCRE2_ERROR_NOMEMORY ? FM_ERR_NOMEM : FM_ERR_LIMIT,
                            "%s: pre_tokenizer regex failed at byte %zu of a text segment: %s",
                            e->t->label, pos, (const char *)msg);
    }
    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(e->md);
    *ms = ov[0], *me = ov[1];
    return FM_OK;
}

static fm_status piece(tk_enc *e, size_t stage, const char *s, size_t n) {
    if (n == 0) return FM_OK;
    if (stage + 1 < e->t->n_split) return tk_pretokenize(e, stage + 1, s, n);
    return tk_bpe_word(e, (const uint8_t *)s, n);
}

fm_status tk_pretokenize(tk_enc *e, size_t stage, const char *s, size_t n) {
    if (e->t->n_split == 0) return tk_bpe_word(e, (const uint8_t *)s, n);
    const tk_regex *re = &e->t->split[stage];
    size_t pos = 0, gap = 0, ms, me, adv;
    fm_status st = FM_OK;
    bool found = true;
    while (st == FM_OK && pos < n) {
        st = re_find(e, re, s, n, pos, &found, &ms, &me);
        if (st != FM_OK || !found) break;
        if (me == ms) { /* empty match: dropped; the search goes on one character later */
            if (ms >= n) break;
            tk_utf8_next((const uint8_t *)s + ms, n - ms, &adv);
            pos = ms + adv;
            continue;
        }
        if (ms > gap) st = piece(e, stage, s + gap, ms - gap);
        if (st == FM_OK) st = piece(e, stage, s + ms, me - ms);
        gap = pos = me;
    }
    if (st == FM_OK && gap < n) st = piece(e, stage, s + gap, n - gap);
    return st;
}
