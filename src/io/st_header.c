/* The safetensors header parser: UTF-8 check, then one forward pass over the fixed JSON
 * shape with in-place unescaping, strict integers and an explicit stack for skipped values
 * (never recursive). Offsets and sizes are checked later by the reader. */
#include "io/st_header.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Parser state. `ctx`/`ctx_len` name the tensor being parsed (NULL at top level) so that
 * every message says which entry failed. */
typedef struct parser {
    char *s; /* the header, decoded in place as strings are read */
    size_t len, pos;
    const char *label;
    fm_error *err;
    const char *ctx;
    size_t ctx_len;
    fm_st_header *h;
    size_t cap_entries, cap_meta;
} parser;

const char *fm_st_quote_name(char *buf, size_t size, const char *name, size_t len) {
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    if (size < 8) {
        if (size) buf[0] = '\0';
        return buf;
    }
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)name[i];
        int cont = (c & 0xC0) == 0x80;
        if (o + 8 > size && !cont) { /* room for "..." + NUL, cut on a code point start */
            memcpy(buf + o, "...", 3);
            o += 3;
            break;
        }
        if (c < 0x20 || c == 0x7F) {
            buf[o++] = '\\';
            buf[o++] = 'x';
            buf[o++] = hex[c >> 4];
            buf[o++] = hex[c & 15];
        } else if (o + 1 < size) {
            buf[o++] = (char)c;
        }
    }
    buf[o] = '\0';
    return buf;
}

/* Sets the error: "<label>: [tensor 'X': ]<reason>". Returns st. */
static fm_status perr(parser *p, fm_status st, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
static fm_status perr(parser *p, fm_status st, const char *fmt, ...) {
    char reason[512], q[FM_ST_QUOTE_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof reason, fmt, ap);
    va_end(ap);
    if (p->ctx)
        return fm_error_set(p->err, st, "%s: tensor '%s': %s", p->label,
                            fm_st_quote_name(q, sizeof q, p->ctx, p->ctx_len), reason);
    return fm_error_set(p->err, st, "%s: %s", p->label, reason);
}

/* JSON syntax/shape error at the current position (file offset = 8 + header offset). */
#define JERR(p, what)                                                                              \
    perr((p), FM_ERR_HEADER_JSON, "invalid JSON in header at file offset %zu: %s", (p)->pos + 8,   \
         (what))

/* ---- UTF-8 ------------------------------------------------------------------------------ */

/* Length of the valid UTF-8 sequence at s[i] (1..4), or 0 if invalid (overlong forms,
 * surrogates, code points above U+10FFFF, truncated sequences). */
static size_t utf8_seq(const unsigned char *s, size_t i, size_t len) {
    unsigned char c = s[i];
    size_t n;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF)
        n = 2;
    else if (c >= 0xE0 && c <= 0xEF)
        n = 3;
    else if (c >= 0xF0 && c <= 0xF4)
        n = 4;
    else
        return 0;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;
    if (len - i < n) return 0;
    if (s[i + 1] < lo || s[i + 1] > hi) return 0;
    for (size_t k = 2; k < n; k++)
        if ((s[i + k] & 0xC0) != 0x80) return 0;
    return n;
}

static fm_status check_utf8(parser *p) {
    const unsigned char *s = (const unsigned char *)p->s;
    size_t i = 0;
    while (i < p->len) {
        if (s[i] < 0x80) { /* ASCII run */
            i++;
            continue;
        }
        size_t n = utf8_seq(s, i, p->len);
        if (n == 0)
            return perr(p, FM_ERR_HEADER_UTF8,
                        "invalid UTF-8 in header at file offset %zu (byte 0x%02x)", i + 8, s[i]);
        i += n;
    }
    return FM_OK;
}

/* ---- lexical pieces ----------------------------------------------------------------------- */

static void skip_ws(parser *p) {
    while (p->pos < p->len) {
        char c = p->s[p->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
        p->pos++;
    }
}

/* Next non-whitespace byte, or -1 at the end. */
static int peek(parser *p) {
    skip_ws(p);
    return p->pos < p->len ? (unsigned char)p->s[p->pos] : -1;
}

static fm_status expect(parser *p, char c, const char *what) {
    if (peek(p) != (unsigned char)c) return JERR(p, what);
    p->pos++;
    return FM_OK;
}

static int hexval(int c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Reads 4 hex digits after "\u" at p->pos. */
static fm_status read_hex4(parser *p, unsigned *out) {
    unsigned v = 0;
    if (p->len - p->pos < 4) return JERR(p, "truncated \\u escape");
    for (int k = 0; k < 4; k++) {
        int h = hexval((unsigned char)p->s[p->pos + (size_t)k]);
        if (h < 0) return JERR(p, "invalid \\u escape");
        v = v * 16 + (unsigned)h;
    }
    p->pos += 4;
    *out = v;
    return FM_OK;
}

static size_t put_utf8(char *w, unsigned cp) {
    if (cp < 0x80) {
        w[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        w[0] = (char)(0xC0 | (cp >> 6));
        w[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        w[0] = (char)(0xE0 | (cp >> 12));
        w[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        w[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    w[0] = (char)(0xF0 | (cp >> 18));
    w[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    w[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    w[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* The escape after a backslash (p->pos is past the backslash): code point into *cp.
 * Surrogate pairs combine; a lone surrogate is an error. */
static fm_status read_escape(parser *p, unsigned *cp) {
    if (p->pos >= p->len) return JERR(p, "unterminated string");
    static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
    char e = p->s[p->pos++];
    const char *k = e ? strchr(from, e) : NULL;
    if (k) {
        *cp = (unsigned char)to[k - from];
        return FM_OK;
    }
    if (e != 'u') {
        p->pos--;
        return JERR(p, "invalid escape");
    }
    unsigned hi, lo;
    fm_status st = read_hex4(p, &hi);
    if (st != FM_OK) return st;
    if (hi >= 0xDC00 && hi <= 0xDFFF) return JERR(p, "lone trailing surrogate in \\u escape");
    if (hi < 0xD800 || hi > 0xDBFF) {
        *cp = hi;
        return FM_OK;
    }
    if (p->len - p->pos < 2 || p->s[p->pos] != '\\' || p->s[p->pos + 1] != 'u')
        return JERR(p, "lone leading surrogate in \\u escape");
    p->pos += 2;
    if ((st = read_hex4(p, &lo)) != FM_OK) return st;
    if (lo < 0xDC00 || lo > 0xDFFF) return JERR(p, "lone leading surrogate in \\u escape");
    *cp = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
    return FM_OK;
}

/* A string at p->pos (the opening quote). With `decode`, the unescaped bytes are written in
 * place from the first content byte and NUL-terminated (decoded text is never longer than
 * its source, so the NUL lands at or before the closing quote); out and out_len give it.
 * Without, the string is only validated. */
static fm_status parse_string(parser *p, bool decode, char **out, size_t *out_len) {
    if (peek(p) != '"') return JERR(p, "expected a string");
    size_t start = ++p->pos, w = start;
    for (;;) {
        if (p->pos >= p->len) return JERR(p, "unterminated string");
        unsigned char c = (unsigned char)p->s[p->pos];
        if (c == '"') break;
        if (c < 0x20) return JERR(p, "raw control character in string");
        if (c != '\\') {
            if (decode) p->s[w] = (char)c;
            w++;
            p->pos++;
            continue;
        }
        p->pos++;
        unsigned cp = 0;
        fm_status st = read_escape(p, &cp);
        if (st != FM_OK) return st;
        if (decode) w += put_utf8(p->s + w, cp);
    }
    p->pos++; /* closing quote */
    if (decode) {
        p->s[w] = '\0';
        *out = p->s + start;
        *out_len = w - start;
    }
    return FM_OK;
}

/* A strict non-negative integer (shape dims, offsets): digits only, no leading zero,
 * no sign, fraction or exponent, at most 2^64-1. */
static fm_status parse_uint(parser *p, uint64_t *out) {
    int c = peek(p);
    if (c == '-') return JERR(p, "negative number where a non-negative integer is required");
    if (c == '"') return JERR(p, "quoted number where an integer is required");
    if (c < '0' || c > '9') return JERR(p, "expected a non-negative integer");
    if (c == '0' && p->pos + 1 < p->len && p->s[p->pos + 1] >= '0' && p->s[p->pos + 1] <= '9')
        return JERR(p, "number with a leading zero");
    uint64_t v = 0;
    while (p->pos < p->len && p->s[p->pos] >= '0' && p->s[p->pos] <= '9') {
        if (fm_mul_u64(v, 10, &v) || fm_add_u64(v, (uint64_t)(p->s[p->pos] - '0'), &v))
            return JERR(p, "integer larger than 2^64-1");
        p->pos++;
    }
    if (p->pos < p->len) {
        char n = p->s[p->pos];
        if (n == '.' || n == 'e' || n == 'E')
            return JERR(p, "number with a fraction or exponent where an integer is required");
    }
    *out = v;
    return FM_OK;
}

/* Any JSON number (inside skipped members). */
static fm_status skip_number(parser *p) {
    size_t i = p->pos;
    const char *s = p->s;
#define DIGIT(k) ((k) < p->len && s[k] >= '0' && s[k] <= '9')
    if (i < p->len && s[i] == '-') i++;
    if (!DIGIT(i)) return JERR(p, "invalid number");
    if (s[i] == '0')
        i++;
    else
        while (DIGIT(i))
            i++;
    if (i < p->len && s[i] == '.') {
        i++;
        if (!DIGIT(i)) return JERR(p, "invalid number");
        while (DIGIT(i))
            i++;
    }
    if (i < p->len && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < p->len && (s[i] == '+' || s[i] == '-')) i++;
        if (!DIGIT(i)) return JERR(p, "invalid number");
        while (DIGIT(i))
            i++;
    }
#undef DIGIT
    p->pos = i;
    return FM_OK;
}

static fm_status skip_literal(parser *p) {
    static const char *const lits[] = {"true", "false", "null"};
    for (int k = 0; k < 3; k++) {
        size_t n = strlen(lits[k]);
        if (p->len - p->pos >= n && memcmp(p->s + p->pos, lits[k], n) == 0) {
            p->pos += n;
            return FM_OK;
        }
    }
    return JERR(p, "expected a JSON value");
}

/* Reads `"key" :` inside a skipped object. */
static fm_status skip_key(parser *p) {
    fm_status st = parse_string(p, false, NULL, NULL);
    if (st == FM_OK) st = expect(p, ':', "expected ':' after an object key");
    return st;
}

/* One scalar or the opening of a container; containers are pushed on the stack. */
static fm_status skip_open(parser *p, char *stack, int *sp, int base_depth) {
    int c = peek(p);
    if (c == '{' || c == '[') {
        if (base_depth + *sp + 1 > FM_ST_MAX_DEPTH)
            return JERR(p, "JSON nested too deeply (limit 128)");
        stack[(*sp)++] = (char)c;
        p->pos++;
        int close = c == '{' ? '}' : ']';
        if (peek(p) == close) { /* empty container: pop immediately */
            p->pos++;
            (*sp)--;
        } else if (c == '{') {
            return skip_key(p);
        }
        return FM_OK;
    }
    if (c == '"') return parse_string(p, false, NULL, NULL);
    if (c == '-' || (c >= '0' && c <= '9')) return skip_number(p);
    return skip_literal(p);
}

/* Skips one arbitrary JSON value with an explicit stack; `base_depth` is the nesting of
 * the enclosing containers. Keys inside skipped objects are validated, not compared. */
static fm_status skip_value(parser *p, int base_depth) {
    char stack[FM_ST_MAX_DEPTH];
    int sp = 0;
    bool need_value = true;
    for (;;) {
        fm_status st;
        if (need_value) {
            int before = sp;
            if ((st = skip_open(p, stack, &sp, base_depth)) != FM_OK) return st;
            if (sp > before) continue; /* opened a non-empty container: read its first value */
        }
        if (sp == 0) return FM_OK;
        int c = peek(p);
        char top = stack[sp - 1];
        if (c == ',') {
            p->pos++;
            if (top == '{' && (st = skip_key(p)) != FM_OK) return st;
            need_value = true;
        } else if ((top == '{' && c == '}') || (top == '[' && c == ']')) {
            p->pos++;
            sp--;
            need_value = false;
        } else {
            return JERR(p, top == '{' ? "expected ',' or '}'" : "expected ',' or ']'");
        }
    }
}

/* ---- the fixed shape ------------------------------------------------------------------------ */

static bool key_is(const char *k, size_t kl, const char *lit) {
    return kl == strlen(lit) && memcmp(k, lit, kl) == 0;
}

/* `[d0, d1, ...]` into e->shape (bit-for-bit, see st_header.h). */
static fm_status parse_shape(parser *p, fm_st_entry *e) {
    fm_status st = expect(p, '[', "shape must be an array");
    if (st != FM_OK) return st;
    e->shape.ndim = 0;
    if (peek(p) == ']') {
        p->pos++;
        return FM_OK;
    }
    for (;;) {
        uint64_t d;
        if ((st = parse_uint(p, &d)) != FM_OK) return st;
        if (e->shape.ndim == FM_MAX_DIMS)
            return perr(p, FM_ERR_LIMIT, "shape has more than %d dimensions (fusemap limit)",
                        FM_MAX_DIMS);
        e->shape.dims[e->shape.ndim++] =
            d <= INT64_MAX ? (int64_t)d : -(int64_t)(UINT64_MAX - d) - 1;
        int c = peek(p);
        if (c == ']') break;
        if (c != ',') return JERR(p, "expected ',' or ']' in shape");
        p->pos++;
    }
    p->pos++;
    return FM_OK;
}

static fm_status parse_offsets(parser *p, fm_st_entry *e) {
    fm_status st = expect(p, '[', "data_offsets must be an array of two integers");
    if (st == FM_OK && peek(p) == ']')
        return JERR(p, "data_offsets must have exactly two integers");
    if (st == FM_OK) st = parse_uint(p, &e->begin);
    if (st == FM_OK && peek(p) != ',')
        return JERR(p, "data_offsets must have exactly two integers");
    if (st == FM_OK) p->pos++;
    if (st == FM_OK) st = parse_uint(p, &e->end);
    if (st == FM_OK && peek(p) != ']')
        return JERR(p, "data_offsets must have exactly two integers");
    if (st == FM_OK) p->pos++;
    return st;
}

static fm_status parse_dtype(parser *p, fm_st_entry *e) {
    char *v, q[64];
    size_t vl;
    fm_status st = parse_string(p, true, &v, &vl);
    if (st != FM_OK) return st;
    e->dtype = fm_dtype_from_name(v, vl);
    if (e->dtype == FM_DTYPE_INVALID)
        return perr(p, FM_ERR_UNKNOWN_DTYPE, "unknown dtype '%s'",
                    fm_st_quote_name(q, sizeof q, v, vl));
    return FM_OK;
}

/* One member of a tensor entry; `seen` bits: 1 dtype, 2 shape, 4 data_offsets. */
static fm_status parse_entry_member(parser *p, fm_st_entry *e, unsigned *seen) {
    char *k;
    size_t kl;
    fm_status st = parse_string(p, true, &k, &kl);
    if (st == FM_OK) st = expect(p, ':', "expected ':' after an object key");
    if (st != FM_OK) return st;
    unsigned bit = key_is(k, kl, "dtype")          ? 1u
                   : key_is(k, kl, "shape")        ? 2u
                   : key_is(k, kl, "data_offsets") ? 4u
                                                   : 0u;
    if (bit == 0) return skip_value(p, 2);
    if (*seen & bit) return JERR(p, "repeated member in tensor entry");
    *seen |= bit;
    if (bit == 1) return parse_dtype(p, e);
    if (bit == 2) return parse_shape(p, e);
    return parse_offsets(p, e);
}

static fm_status parse_entry(parser *p, fm_st_entry *e) {
    int c = peek(p);
    if (c == '[')
        return JERR(p, "tensor entry written as an array (only the object form is accepted)");
    if (c != '{') return JERR(p, "tensor entry must be an object");
    p->pos++;
    unsigned seen = 0;
    fm_status st;
    if (peek(p) != '}') {
        for (;;) {
            if ((st = parse_entry_member(p, e, &seen)) != FM_OK) return st;
            c = peek(p);
            if (c == '}') break;
            if (c != ',') return JERR(p, "expected ',' or '}' in tensor entry");
            p->pos++;
        }
    }
    p->pos++;
    if (!(seen & 1)) return JERR(p, "tensor entry without 'dtype'");
    if (!(seen & 2)) return JERR(p, "tensor entry without 'shape'");
    if (!(seen & 4)) return JERR(p, "tensor entry without 'data_offsets'");
    return FM_OK;
}

static fm_status add_entry(parser *p, char *name, size_t name_len) {
    fm_st_header *h = p->h;
    char q[FM_ST_QUOTE_MAX];
    if (name_len > FM_ST_MAX_NAME_BYTES)
        return perr(p, FM_ERR_LIMIT, "tensor name '%s' is %zu bytes (limit %u)",
                    fm_st_quote_name(q, sizeof q, name, name_len), name_len, FM_ST_MAX_NAME_BYTES);
    if (h->n_entries >= FM_ST_MAX_TENSORS)
        return perr(p, FM_ERR_LIMIT, "more than %u tensors", FM_ST_MAX_TENSORS);
    if (h->n_entries == p->cap_entries) {
        size_t cap = p->cap_entries ? p->cap_entries * 2 : 64;
        fm_st_entry *n = fm_realloc(h->entries, cap * sizeof *n);
        if (!n) return perr(p, FM_ERR_NOMEM, "out of memory reading the header");
        h->entries = n;
        p->cap_entries = cap;
    }
    fm_st_entry *e = &h->entries[h->n_entries];
    memset(e, 0, sizeof *e);
    e->name = name;
    e->name_len = name_len;
    p->ctx = name;
    p->ctx_len = name_len;
    fm_status st = parse_entry(p, e);
    p->ctx = NULL;
    if (st == FM_OK) h->n_entries++;
    return st;
}

static int cmp_kv_key(const void *a, const void *b) {
    const fm_st_kv *x = *(const fm_st_kv *const *)a, *y = *(const fm_st_kv *const *)b;
    return strcmp(x->key, y->key);
}

/* Duplicate metadata keys are rejected (the reference keeps the last silently). Keys with
 * an escaped NUL compare up to the NUL, which can only report more duplicates, not fewer
 * accepted files with real ambiguity. */
static fm_status check_meta_dups(parser *p) {
    fm_st_header *h = p->h;
    if (h->n_meta < 2) return FM_OK;
    const fm_st_kv **v = fm_malloc(h->n_meta * sizeof *v);
    if (!v) return perr(p, FM_ERR_NOMEM, "out of memory reading the header");
    for (size_t i = 0; i < h->n_meta; i++)
        v[i] = &h->meta[i];
    qsort(v, h->n_meta, sizeof *v, cmp_kv_key);
    fm_status st = FM_OK;
    for (size_t i = 1; i < h->n_meta && st == FM_OK; i++) {
        char q[FM_ST_QUOTE_MAX];
        if (strcmp(v[i - 1]->key, v[i]->key) == 0)
            st = perr(p, FM_ERR_HEADER_JSON,
                      "invalid JSON in header: duplicate __metadata__ key '%s'",
                      fm_st_quote_name(q, sizeof q, v[i]->key, strlen(v[i]->key)));
    }
    fm_free(v);
    return st;
}

static fm_status add_meta(parser *p, char *k, char *v) {
    fm_st_header *h = p->h;
    if (h->n_meta == p->cap_meta) {
        size_t cap = p->cap_meta ? p->cap_meta * 2 : 8;
        fm_st_kv *n = fm_realloc(h->meta, cap * sizeof *n);
        if (!n) return perr(p, FM_ERR_NOMEM, "out of memory reading the header");
        h->meta = n;
        p->cap_meta = cap;
    }
    h->meta[h->n_meta].key = k;
    h->meta[h->n_meta].value = v;
    h->n_meta++;
    return FM_OK;
}

/* `__metadata__`: null (same as absent) or an object of string values. */
static fm_status parse_metadata(parser *p) {
    if (peek(p) == 'n' && p->len - p->pos >= 4 && memcmp(p->s + p->pos, "null", 4) == 0) {
        p->pos += 4;
        return FM_OK;
    }
    fm_status st = expect(p, '{', "__metadata__ must be an object of strings or null");
    if (st != FM_OK) return st;
    p->h->has_metadata = true;
    if (peek(p) == '}') {
        p->pos++;
        return FM_OK;
    }
    for (;;) {
        char *k, *v;
        size_t kl, vl;
        if ((st = parse_string(p, true, &k, &kl)) != FM_OK) return st;
        if ((st = expect(p, ':', "expected ':' after an object key")) != FM_OK) return st;
        if (peek(p) != '"') return JERR(p, "__metadata__ values must be strings");
        if ((st = parse_string(p, true, &v, &vl)) != FM_OK) return st;
        if ((st = add_meta(p, k, v)) != FM_OK) return st;
        int c = peek(p);
        if (c == '}') break;
        if (c != ',') return JERR(p, "expected ',' or '}' in __metadata__");
        p->pos++;
    }
    p->pos++;
    return check_meta_dups(p);
}

/* One top-level member: `"name": {...}` or `"__metadata__": ...`. */
static fm_status parse_member(parser *p, bool *meta_seen) {
    char *k;
    size_t kl;
    fm_status st = parse_string(p, true, &k, &kl);
    if (st == FM_OK) st = expect(p, ':', "expected ':' after an object key");
    if (st != FM_OK) return st;
    if (key_is(k, kl, "__metadata__")) {
        if (*meta_seen) return JERR(p, "second __metadata__ member");
        *meta_seen = true;
        return parse_metadata(p);
    }
    return add_entry(p, k, kl);
}

static fm_status parse_top(parser *p) {
    bool meta_seen = false;
    fm_status st;
    if (peek(p) < 0) return JERR(p, "EOF while parsing (empty header)");
    if ((st = expect(p, '{', "header must be a JSON object")) != FM_OK) return st;
    if (peek(p) != '}') {
        for (;;) {
            if ((st = parse_member(p, &meta_seen)) != FM_OK) return st;
            int c = peek(p);
            if (c == '}') break;
            if (c != ',') return JERR(p, c < 0 ? "EOF while parsing" : "expected ',' or '}'");
            p->pos++;
        }
    }
    p->pos++;
    if (peek(p) >= 0) return JERR(p, "trailing characters after the header object");
    return FM_OK;
}

fm_status fm_st_header_parse(char *buf, size_t len, const char *label, fm_st_header *out,
                             fm_error *err) {
    parser p = {.s = buf, .len = len, .label = label, .err = err, .h = out};
    memset(out, 0, sizeof *out);
    fm_status st = check_utf8(&p);
    if (st == FM_OK) st = parse_top(&p);
    if (st != FM_OK) fm_st_header_free(out);
    return st;
}

void fm_st_header_free(fm_st_header *h) {
    if (!h) return;
    fm_free(h->entries);
    fm_free(h->meta);
    memset(h, 0, sizeof *h);
}
