/* Template lexer, following Jinja2's (lexer.py) rules with trim_blocks and lstrip_blocks on:
 * newlines normalised to "\n" and one trailing newline dropped first; data between tags;
 * whitespace control with "-" / "+"; comments; {% raw %}; inside tags names, numbers, strings
 * (Python escapes) and operators, with bracket balancing deciding where a tag ends. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "text/jinja.h"
#include "text/utf8.h"

typedef struct lexer {
    const char *s; /* normalised source, NUL-terminated */
    size_t n, pos;
    uint32_t line;
    bool line_starting;
    jj_arena *a;
    jj_toks *out;
    const char *origin;
    fm_error *err;
    char stack[JJ_MAX_NESTING]; /* open brackets inside a tag */
    size_t depth;
} lexer;

static fm_status lex_fail(lexer *L, uint32_t line, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
static fm_status lex_fail(lexer *L, uint32_t line, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return fm_error_set(L->err, FM_ERR_INPUT, "%s: line %u: %s", L->origin, line, msg);
}

static fm_status emit(lexer *L, jj_tok t) {
    jj_toks *o = L->out;
    if (o->n == o->cap) {
        size_t cap = o->cap ? o->cap * 2 : 256;
        jj_tok *v = fm_realloc(o->v, cap * sizeof *v);
        if (!v) return fm_error_set(L->err, FM_ERR_NOMEM, "%s: out of memory", L->origin);
        o->v = v, o->cap = cap;
    }
    o->v[o->n++] = t;
    return FM_OK;
}

static uint32_t count_lines(const char *s, size_t n) {
    uint32_t c = 0;
    for (size_t i = 0; i < n; i++)
        c += s[i] == '\n';
    return c;
}

/* Length of the Python-whitespace run at s[i..n). */
static size_t space_run(const char *s, size_t n, size_t i) {
    size_t j = i;
    while (j < n) {
        size_t k = j;
        if (!jj_py_isspace(jj_utf8_next(s, n, &k))) break;
        j = k;
    }
    return j - i;
}

/* Python str.rstrip(): length of text without trailing whitespace. */
static size_t rstrip_len(const char *s, size_t n) {
    size_t keep = 0;
    for (size_t i = 0; i < n;) {
        uint32_t cp = jj_utf8_next(s, n, &i);
        if (!jj_py_isspace(cp)) keep = i;
    }
    return keep;
}

/* ---- data and tag starts ----------------------------------------------------------------------
 */
static const char *find_tag(const char *s, size_t n, size_t from) {
    for (size_t i = from; i + 1 < n; i++)
        if (s[i] == '{' && (s[i + 1] == '{' || s[i + 1] == '%' || s[i + 1] == '#')) return s + i;
    return NULL;
}

/* Emits the text before a tag after whitespace control: sign '-' strips trailing whitespace;
 * otherwise lstrip_blocks removes spaces/tabs between the line start and a block or comment. */
static fm_status emit_text(lexer *L, size_t start, size_t end, char sign, bool is_var) {
    const char *t = L->s + start;
    size_t n = end - start;
    if (sign == '-') {
        n = rstrip_len(t, n);
    } else if (sign != '+' && !is_var) {
        size_t l_pos = n;
        while (l_pos > 0 && t[l_pos - 1] != '\n')
            l_pos--;
        bool only_blank = true;
        for (size_t i = l_pos; i < n; i++)
            only_blank &= t[i] == ' ' || t[i] == '\t';
        if ((l_pos > 0 || L->line_starting) && only_blank) n = l_pos;
    }
    uint32_t line = L->line;
    L->line += count_lines(L->s + start, end - start);
    if (n == 0) return FM_OK;
    return emit(L, (jj_tok){.type = TK_DATA, .line = line, .s = t, .n = n});
}

/* ---- strings ----------------------------------------------------------------------------------
 */
static int hexval(char c) {
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

/* Decodes a \x / \u / \U escape of `digits` hex digits at p; -1 if malformed. */
static long hex_escape(const char *p, size_t avail, int digits) {
    if ((size_t)digits > avail) return -1;
    long v = 0;
    for (int i = 0; i < digits; i++) {
        int h = hexval(p[i]);
        if (h < 0) return -1;
        v = v * 16 + h;
    }
    return v;
}

/* One escape after a backslash at body[i] (i indexes the char after '\'); appends its code point
 * or text to out, advances *i. Python's unicode-escape after ascii/backslashreplace. */
static fm_status string_escape(lexer *L, uint32_t line, const char *b, size_t n, size_t *i,
                               char *out, size_t *o) {
    unsigned char c = (unsigned char)b[*i];
    static const char simple_in[] = "\\'\"abfnrtv", simple_out[] = "\\'\"\a\b\f\n\r\t\v";
    const char *sp = c ? strchr(simple_in, c) : NULL;
    long cp = -1;
    if (c == '\n') return (*i)++, FM_OK; /* line continuation */
    if (sp) return out[(*o)++] = simple_out[sp - simple_in], (*i)++, FM_OK;
    if (c >= '0' && c <= '7') {
        cp = 0;
        for (int k = 0; k < 3 && *i < n && b[*i] >= '0' && b[*i] <= '7'; k++)
            cp = cp * 8 + (b[(*i)++] - '0');
    } else if (c == 'x' || c == 'u' || c == 'U') {
        int digits = c == 'x' ? 2 : c == 'u' ? 4 : 8;
        cp = hex_escape(b + *i + 1, n - *i - 1, digits);
        if (cp < 0) return lex_fail(L, line, "string literal: truncated \\%c escape", c);
        *i += 1 + (size_t)digits;
    } else if (c == 'N') {
        return lex_fail(L, line, "string literal: \\N{...} escapes are not supported");
    } else if (c >= 0x80) { /* backslashreplace turned the character into \xhh / \uXXXX text */
        size_t k = *i;
        uint32_t u = jj_utf8_next(b, n, &k);
        *i = k;
        *o += (size_t)sprintf(out + *o,
                              u <= 0xFF     ? "\\x%02x"
                              : u <= 0xFFFF ? "\\u%04x"
                                            : "\\U%08x",
                              u);
        return FM_OK;
    } else {
        out[(*o)++] = '\\'; /* unknown escape: kept as written */
        return FM_OK;
    }
    if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return lex_fail(L, line, "string literal: escape \\%c gives an invalid code point", c);
    *o += tk_utf8_put((uint32_t)cp, out + *o);
    return FM_OK;
}

static fm_status lex_string(lexer *L) {
    char q = L->s[L->pos];
    uint32_t line = L->line;
    size_t i = L->pos + 1;
    while (i < L->n && L->s[i] != q)
        i += L->s[i] == '\\' && i + 1 < L->n ? 2 : 1;
    if (i >= L->n) return lex_fail(L, line, "unterminated string literal");
    const char *body = L->s + L->pos + 1;
    size_t n = i - L->pos - 1, o = 0;
    char *out = jj_alloc(L->a, n * 3 + 1); /* an escape never grows more than 3x */
    if (!out) return fm_error_set(L->err, FM_ERR_NOMEM, "%s: out of memory", L->origin);
    for (size_t k = 0; k < n;) {
        if (body[k] != '\\') {
            out[o++] = body[k++];
            continue;
        }
        k++;
        fm_status st = string_escape(L, line, body, n, &k, out, &o);
        if (st != FM_OK) return st;
    }
    L->line += count_lines(body, n);
    L->pos = i + 1;
    return emit(L, (jj_tok){.type = TK_STRING, .line = line, .s = out, .n = o});
}

/* ---- numbers ----------------------------------------------------------------------------------
 */
static bool isdig(char c) {
    return c >= '0' && c <= '9';
}

/* Digits with single underscores between them ("1_000"); returns the end. */
static size_t digit_run(const char *s, size_t n, size_t i) {
    if (i >= n || !isdig(s[i])) return i;
    while (i < n && (isdig(s[i]) || (s[i] == '_' && i + 1 < n && isdig(s[i + 1]))))
        i++;
    return i;
}

/* Float per Jinja's float_re: digits, then ".digits" and/or an exponent. 0 if not a float. */
static size_t float_end(const char *s, size_t n, size_t i) {
    size_t j = digit_run(s, n, i), k;
    if (j == i) return 0;
    bool frac = j + 1 < n && s[j] == '.' && isdig(s[j + 1]);
    if (frac) j = digit_run(s, n, j + 1);
    if (j < n && (s[j] == 'e' || s[j] == 'E')) {
        k = j + 1;
        if (k < n && (s[k] == '+' || s[k] == '-')) k++;
        size_t e = digit_run(s, n, k);
        if (e > k) return e;
    }
    return frac ? j : 0;
}

static fm_status lex_number(lexer *L) {
    const char *s = L->s;
    size_t i = L->pos, fe = float_end(s, L->n, i), j;
    char tmp[128];
    size_t t = 0;
    if (fe) {
        for (j = i; j < fe && t < sizeof tmp - 1; j++)
            if (s[j] != '_') tmp[t++] = s[j];
        tmp[t] = '\0';
        L->pos = fe;
        return emit(L, (jj_tok){.type = TK_FLOAT, .line = L->line, .f = strtod(tmp, NULL)});
    }
    int base = 10;
    if (s[i] == '0' && i + 1 < L->n && strchr("xXoObB", s[i + 1])) {
        base = (s[i + 1] | 0x20) == 'x' ? 16 : (s[i + 1] | 0x20) == 'o' ? 8 : 2;
        i += 2;
    }
    for (j = i; j < L->n && (hexval(s[j]) >= 0 || s[j] == '_') &&
                (base == 16 || isdig(s[j]) || s[j] == '_');
         j++)
        if (s[j] != '_' && t < sizeof tmp - 1) tmp[t++] = s[j];
    tmp[t] = '\0';
    char *end;
    errno = 0;
    unsigned long long v = strtoull(tmp, &end, base);
    if (t == 0 || *end || errno || v > INT64_MAX)
        return lex_fail(L, L->line, "invalid or too large integer literal");
    L->pos = j;
    return emit(L, (jj_tok){.type = TK_INT, .line = L->line, .i = (int64_t)v});
}

/* ---- operators and brackets -------------------------------------------------------------------
 */
static fm_status lex_operator(lexer *L) {
    static const char *const two[] = {"//", "**", "==", "!=", ">=", "<="};
    const char *p = L->s + L->pos;
    size_t len = 0;
    for (size_t k = 0; k < sizeof two / sizeof *two && !len; k++)
        if (L->pos + 1 < L->n && p[0] == two[k][0] && p[1] == two[k][1]) len = 2;
    if (!len && strchr("+-/*%~[](){}><=.:|,;", p[0]) && p[0]) len = 1;
    if (!len) {
        size_t k = L->pos;
        uint32_t cp = jj_utf8_next(L->s, L->n, &k);
        return lex_fail(L, L->line,
                        cp >= 0x20 && cp < 0x7F ? "unexpected character '%c'"
                                                : "unexpected character U+%04X",
                        cp >= 0x20 && cp < 0x7F ? (int)cp : (int)cp);
    }
    if (len == 1 && strchr("([{", p[0])) {
        if (L->depth == JJ_MAX_NESTING) return lex_fail(L, L->line, "brackets nested too deeply");
        L->stack[L->depth++] = p[0];
    } else if (len == 1 && strchr(")]}", p[0])) {
        char want = p[0] == ')' ? '(' : p[0] == ']' ? '[' : '{';
        if (!L->depth) return lex_fail(L, L->line, "unexpected '%c'", p[0]);
        if (L->stack[L->depth - 1] != want) {
            char open = L->stack[L->depth - 1];
            return lex_fail(L, L->line, "unexpected '%c', expected '%c'", p[0],
                            open == '('   ? ')'
                            : open == '[' ? ']'
                                          : '}');
        }
        L->depth--;
    }
    L->pos += len;
    return emit(L, (jj_tok){.type = TK_OP, .line = L->line, .s = p, .n = len});
}

/* ---- inside {{ }} / {% %} ------------------------------------------------------------------- */
/* The end of the tag at pos (only with no bracket open): returns its length, 0 if none. */
static size_t tag_end(lexer *L, bool block, char *sign) {
    const char *p = L->s + L->pos;
    size_t left = L->n - L->pos;
    char close = block ? '%' : '}';
    *sign = 0;
    if (left >= 3 && (p[0] == '-' || (block && p[0] == '+')) && p[1] == close && p[2] == '}') {
        *sign = p[0];
        return 3;
    }
    return left >= 2 && p[0] == close && p[1] == '}' ? 2 : 0;
}

static fm_status lex_tag(lexer *L, bool block) {
    L->depth = 0;
    for (;;) {
        size_t ws = space_run(L->s, L->n, L->pos);
        L->line += count_lines(L->s + L->pos, ws);
        L->pos += ws;
        if (L->pos >= L->n)
            return lex_fail(L, L->line, "unexpected end of template: missing '%s'",
                            block ? "%}" : "}}");
        char sign;
        size_t end = L->depth ? 0 : tag_end(L, block, &sign);
        if (end) {
            fm_status st =
                emit(L, (jj_tok){.type = block ? TK_BLOCK_END : TK_VAR_END, .line = L->line});
            L->pos += end;
            size_t skip = sign == '-'                              ? space_run(L->s, L->n, L->pos)
                          : block && !sign && L->s[L->pos] == '\n' ? 1
                                                                   : 0; /* trim_blocks */
            L->line += count_lines(L->s + L->pos, skip);
            L->pos += skip;
            L->line_starting = L->s[L->pos - 1] == '\n';
            return st;
        }
        char c = L->s[L->pos];
        fm_status st;
        if (c == '_' || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z')) {
            size_t j = L->pos;
            while (j < L->n && (L->s[j] == '_' || isdig(L->s[j]) ||
                                ((L->s[j] | 0x20) >= 'a' && (L->s[j] | 0x20) <= 'z')))
                j++;
            if (j - L->pos > JJ_MAX_NAME)
                return lex_fail(L, L->line, "name longer than %d bytes", JJ_MAX_NAME);
            st = emit(
                L, (jj_tok){.type = TK_NAME, .line = L->line, .s = L->s + L->pos, .n = j - L->pos});
            L->pos = j;
        } else if (isdig(c)) {
            st = lex_number(L);
        } else if (c == '\'' || c == '"') {
            st = lex_string(L);
        } else {
            st = lex_operator(L);
        }
        if (st != FM_OK) return st;
    }
}

/* Skips what follows a closing "%}" / "#}": all whitespace after '-', the newline (trim_blocks)
 * after a plain one, nothing after '+'. `trim` = false for tags trim_blocks does not apply to. */
static void after_close(lexer *L, size_t end, char sign, bool trim) {
    size_t skip = sign == '-'                          ? space_run(L->s, L->n, end)
                  : trim && !sign && L->s[end] == '\n' ? 1
                                                       : 0;
    L->line += count_lines(L->s + L->pos, end + skip - L->pos);
    L->pos = end + skip;
    L->line_starting = L->s[L->pos - 1] == '\n';
}

/* ---- comments and raw blocks ------------------------------------------------------------------
 */
static fm_status lex_comment(lexer *L) {
    uint32_t line = L->line;
    const char *e = L->pos < L->n ? strstr(L->s + L->pos, "#}") : NULL;
    if (!e) return lex_fail(L, line, "missing end of comment tag");
    size_t q = (size_t)(e - L->s);
    char sign = q > L->pos && (L->s[q - 1] == '-' || L->s[q - 1] == '+') ? L->s[q - 1] : 0;
    after_close(L, q + 2, sign, true);
    return FM_OK;
}

/* At the text after "{%" + sign: if it is "KW" then "%}" (or "-%}", or "+%}" when allow_plus),
 * returns the length through "%}" and the closing sign; else 0. */
static size_t tag_kw(const lexer *L, size_t at, const char *kw, bool allow_plus, char *esign) {
    size_t i = at, kl = strlen(kw);
    i += space_run(L->s, L->n, i);
    if (L->n - i < kl || memcmp(L->s + i, kw, kl)) return 0;
    i += kl;
    i += space_run(L->s, L->n, i);
    *esign = 0;
    if (L->n - i >= 3 && (L->s[i] == '-' || (allow_plus && L->s[i] == '+')) && L->s[i + 1] == '%' &&
        L->s[i + 2] == '}') {
        *esign = L->s[i];
        return i + 3 - at;
    }
    return L->n - i >= 2 && L->s[i] == '%' && L->s[i + 1] == '}' ? i + 2 - at : 0;
}

/* The raw body up to {% endraw %}: data, with the same whitespace control as before a tag. */
static fm_status lex_raw(lexer *L, size_t open_len, char open_sign) {
    uint32_t line = L->line;
    after_close(L, L->pos + open_len, open_sign, false); /* "{% raw %}" has no trim_blocks */
    for (const char *t = find_tag(L->s, L->n, L->pos); t;
         t = find_tag(L->s, L->n, (size_t)(t - L->s) + 1)) {
        size_t at = (size_t)(t - L->s);
        if (t[1] != '%') continue;
        char sign = t[2] == '-' || t[2] == '+' ? t[2] : 0, esign;
        size_t kw_at = at + 2 + (sign != 0), len = tag_kw(L, kw_at, "endraw", true, &esign);
        if (!len) continue;
        fm_status st = emit_text(L, L->pos, at, sign, false);
        if (st != FM_OK) return st;
        L->pos = at;
        after_close(L, kw_at + len, esign, true);
        return FM_OK;
    }
    return lex_fail(L, line, "missing {%% endraw %%}");
}

/* ---- driver ------------------------------------------------------------------------------------
 */
/* Newlines to "\n", one trailing newline dropped (keep_trailing_newline=False). */
static char *normalise(jj_arena *a, const char *src, size_t len, size_t *out_len) {
    char *d = jj_alloc(a, len + 1);
    if (!d) return NULL;
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        if (src[i] == '\r') {
            d[o++] = '\n';
            if (i + 1 < len && src[i + 1] == '\n') i++;
        } else {
            d[o++] = src[i];
        }
    }
    if (o && d[o - 1] == '\n') o--;
    d[o] = '\0';
    *out_len = o;
    return d;
}

static fm_status lex_root(lexer *L) {
    while (L->pos < L->n) {
        const char *t = find_tag(L->s, L->n, L->pos);
        if (!t) return emit_text(L, L->pos, L->n, 0, true);
        size_t at = (size_t)(t - L->s);
        char kind = t[1];
        char sign = t[2] == '-' || t[2] == '+' ? t[2] : 0;
        char rsign = 0;
        size_t raw_len = kind == '%' ? tag_kw(L, at + 2 + (sign != 0), "raw", false, &rsign) : 0;
        fm_status st = emit_text(L, L->pos, at, sign, kind == '{');
        if (st != FM_OK) return st;
        L->pos = at + 2 + (sign != 0);
        L->line_starting = false;
        if (raw_len) {
            st = lex_raw(L, raw_len, rsign);
        } else if (kind == '#') {
            st = lex_comment(L);
        } else {
            st = emit(
                L, (jj_tok){.type = kind == '%' ? TK_BLOCK_BEGIN : TK_VAR_BEGIN, .line = L->line});
            if (st == FM_OK) st = lex_tag(L, kind == '%');
        }
        if (st != FM_OK) return st;
    }
    return FM_OK;
}

fm_status jj_lex(const char *src, size_t len, jj_arena *a, const char *origin, jj_toks *out,
                 fm_error *err) {
    lexer L = {.a = a, .out = out, .origin = origin, .err = err, .line = 1, .line_starting = true};
    memset(out, 0, sizeof *out);
    L.s = normalise(a, src, len, &L.n);
    if (!L.s) return fm_error_set(err, FM_ERR_NOMEM, "%s: out of memory", origin);
    fm_status st = lex_root(&L);
    if (st == FM_OK) st = emit(&L, (jj_tok){.type = TK_EOF, .line = L.line});
    if (st != FM_OK) {
        fm_free(out->v);
        memset(out, 0, sizeof *out);
    }
    return st;
}
