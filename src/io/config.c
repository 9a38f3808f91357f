/* The config.json tree: jansson underneath (key order kept, duplicate keys refused, nesting and
 * size limits), dotted-key typed access, in-place setters, and a writer byte-identical to Python.
 */
#include "core/testing.h"
#include "fusemap/io.h"
#include "io/config_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Memory: the fm_config record and every buffer this file hands out go through fm_malloc.
 * jansson's own nodes use jansson's allocator: json_set_alloc_funcs is process-wide, so routing
 * it through fm_malloc is left to a library-wide decision.
 * Invariant: every tree held by an fm_config nests at most FM_JSON_MAX_DEPTH containers (checked
 * on parse and on every setter), so the recursive walkers below are bounded. jansson's API takes
 * non-const json_t * for reads; the casts that drop const only read. */
struct fm_config {
    json_t *root; /* owned reference; any JSON value */
    char *origin; /* owned; names the text in errors (file path or a label) */
};

#define CONFIG_DEFAULT_ORIGIN "config"

/* ---- small helpers ------------------------------------------------------------------------ */

/* Wraps `root` (reference consumed, also on failure) into a new config; NULL on OOM. */
static fm_config *config_wrap(json_t *root, const char *origin) {
    fm_config *c = root ? fm_calloc(1, sizeof *c) : NULL;
    char *o = c ? fm_strdup(origin ? origin : CONFIG_DEFAULT_ORIGIN) : NULL;
    if (!o) {
        fm_free(c);
        json_decref(root);
        return NULL;
    }
    c->root = root;
    c->origin = o;
    return c;
}

/* True when v nests more than `limit` containers (a scalar nests 0). Stops after limit+1 levels. */
static bool deeper_than(const json_t *v, int limit) {
    if (!json_is_object(v) && !json_is_array(v)) return false;
    if (limit <= 0) return true;
    if (json_is_array(v)) {
        for (size_t i = 0; i < json_array_size(v); i++)
            if (deeper_than(json_array_get(v, i), limit - 1)) return true;
        return false;
    }
    const char *k;
    json_t *x;
    json_object_foreach((json_t *)v, k, x) {
        if (deeper_than(x, limit - 1)) return true;
    }
    return false;
}

/* "an integer", "a real", …: how error messages name a JSON type. */
static const char *type_phrase(const json_t *v) {
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
        return "an integer";
    case JSON_REAL:
        return "a real";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a bool";
    default:
        return "null";
    }
}

static fm_json_type type_of(const json_t *v) {
    if (!v) return FM_JSON_ABSENT;
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return FM_JSON_OBJECT;
    case JSON_ARRAY:
        return FM_JSON_ARRAY;
    case JSON_STRING:
        return FM_JSON_STRING;
    case JSON_INTEGER:
        return FM_JSON_INT;
    case JSON_REAL:
        return FM_JSON_REAL;
    case JSON_TRUE:
    case JSON_FALSE:
        return FM_JSON_BOOL;
    default:
        return FM_JSON_NULL;
    }
}

/* Length of the valid UTF-8 sequence at s[0..n) (1..4), or 0 when invalid (overlongs,
 * surrogates and values above U+10FFFF included). *cp receives the code point. */
static size_t utf8_seq(const unsigned char *s, size_t n, uint32_t *cp) {
    static const uint32_t min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
    size_t len = s[0] < 0x80         ? 1
                 : (s[0] >> 5) == 6  ? 2
                 : (s[0] >> 4) == 14 ? 3
                 : (s[0] >> 3) == 30 ? 4
                                     : 0;
    if (len == 0 || len > n) return 0;
    uint32_t c = len == 1 ? s[0] : (uint32_t)(s[0] & (0x7f >> len));
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80) return 0;
        c = (c << 6) | (s[i] & 0x3f);
    }
    if (c < min_cp[len] || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff)) return 0;
    *cp = c;
    return len;
}

static bool utf8_valid(const char *s, size_t n) {
    uint32_t cp;
    for (size_t i = 0; i < n;) {
        size_t l = utf8_seq((const unsigned char *)s + i, n - i, &cp);
        if (!l) return false;
        i += l;
    }
    return true;
}

/* ---- Python float repr -------------------------------------------------------------------- */

/* Digits and exponent of a "%.*e" rendering ("1.2345e-06" -> "12345", -6). */
static int split_sci(const char *s, char *dig) {
    int n = 0;
    for (; *s && *s != 'e'; s++)
        if (*s >= '0' && *s <= '9') dig[n++] = *s;
    dig[n] = '\0';
    return *s == 'e' ? atoi(s + 1) : 0;
}

/* Does the decimal dig (d.ddd) x 10^e read back as v? */
static bool reads_back(const char *dig, int e, double v) {
    char s[48];
    snprintf(s, sizeof s, "%c.%se%d", dig[0], dig[1] ? dig + 1 : "0", e);
    return strtod(s, NULL) == v;
}

/* Adds +1 or -1 to the last digit of the n-digit string dig (exponent *e), keeping n digits:
 * 999 + 1 -> 100 (e+1), 100 - 1 -> 999 (e-1). */
static void step_digits(char *dig, int n, int *e, int dir) {
    int i = n - 1;
    if (dir > 0) {
        while (i >= 0 && dig[i] == '9')
            dig[i--] = '0';
        if (i >= 0) {
            dig[i]++;
        } else {
            dig[0] = '1';
            (*e)++;
        }
    } else {
        while (i >= 0 && dig[i] == '0')
            dig[i--] = '9';
        if (i > 0 || dig[0] > '1') {
            dig[i]--;
        } else { /* 1000 -> 0999: the grid below 10^e is finer */
            memset(dig, '9', (size_t)n);
            (*e)--;
        }
    }
}

/* Shortest digits that read back as v > 0 (Gay's mode 0, as Python's repr): for each length the
 * correctly rounded candidate first, then its two neighbours (they matter only next to a power of
 * two, where the rounding interval is lopsided; at most one of them can read back). */
static int shortest_digits(double v, char *dig) {
    char s[48], cand[24];
    for (int p = 1; p <= 17; p++) {
        snprintf(s, sizeof s, "%.*e", p - 1, v);
        int e = split_sci(s, dig);
        if (reads_back(dig, e, v)) return e;
        for (int dir = -1; dir <= 1; dir += 2) {
            int ce = e;
            memcpy(cand, dig, (size_t)p + 1);
            step_digits(cand, p, &ce, dir);
            if (reads_back(cand, ce, v)) {
                memcpy(dig, cand, (size_t)p + 1);
                return ce;
            }
        }
    }
    return split_sci(s, dig); /* not reached: 17 digits always read back */
}

size_t fm_py_float_repr(double v, char *buf) {
    char dig[24];
    size_t o = 0;
    if (isnan(v)) return (size_t)snprintf(buf, FM_PY_FLOAT_REPR_MAX, "NaN");
    if (isinf(v))
        return (size_t)snprintf(buf, FM_PY_FLOAT_REPR_MAX, v < 0 ? "-Infinity" : "Infinity");
    if (signbit(v)) buf[o++] = '-';
    if (v == 0) return o + (size_t)snprintf(buf + o, FM_PY_FLOAT_REPR_MAX - o, "0.0");
    int e = shortest_digits(fabs(v), dig), n = (int)strlen(dig);
    while (n > 1 && dig[n - 1] == '0')
        dig[--n] = '\0';
    if (e < -4 || e >= 16) { /* d[.ddd]e[+-]XX */
        buf[o++] = dig[0];
        if (n > 1) o += (size_t)snprintf(buf + o, FM_PY_FLOAT_REPR_MAX - o, ".%s", dig + 1);
        return o + (size_t)snprintf(buf + o, FM_PY_FLOAT_REPR_MAX - o, "e%c%02d", e < 0 ? '-' : '+',
                                    abs(e));
    }
    int point = e + 1; /* digits before the decimal point */
    if (point <= 0)
        return o +
               (size_t)snprintf(buf + o, FM_PY_FLOAT_REPR_MAX - o, "0.%.*s%s", -point, "0000", dig);
    if (point < n)
        return o + (size_t)snprintf(buf + o, FM_PY_FLOAT_REPR_MAX - o, "%.*s.%s", point, dig,
                                    dig + point);
    return o + (size_t)snprintf(buf + o, FM_PY_FLOAT_REPR_MAX - o, "%s%.*s.0", dig, point - n,
                                "0000000000000000");
}

/* ---- writer (Python json.dumps, ensure_ascii) --------------------------------------------- */

typedef struct emitter {
    char *buf; /* owned until handed to the caller */
    size_t len, cap;
    bool oom;
} emitter;

static void put_bytes(emitter *e, const char *s, size_t n) {
    if (e->oom) return;
    if (e->cap - e->len <= n) {
        size_t cap = e->cap ? e->cap : 256;
        while (cap - e->len <= n)
            cap *= 2;
        char *nb = fm_realloc(e->buf, cap);
        if (!nb) {
            e->oom = true;
            return;
        }
        e->buf = nb;
        e->cap = cap;
    }
    memcpy(e->buf + e->len, s, n);
    e->len += n;
    e->buf[e->len] = '\0';
}

static void put_str(emitter *e, const char *s) {
    put_bytes(e, s, strlen(s));
}

static void put_indent(emitter *e, int level) {
    put_bytes(e, "\n", 1);
    for (int i = 0; i < level; i++)
        put_bytes(e, "  ", 2);
}

/* A JSON string the way json.dumps(ensure_ascii=True) writes it: the short escapes, \u00XX for
 * other control characters, \uXXXX (lower-case hex) for everything outside 0x20..0x7e, astral
 * characters as surrogate pairs. Invalid UTF-8 (never stored by this file) becomes U+FFFD. */
static void put_string(emitter *e, const char *s, size_t n) {
    char u[16];
    put_bytes(e, "\"", 1);
    for (size_t i = 0; i < n;) {
        unsigned char ch = (unsigned char)s[i];
        const char *esc = ch == '"'    ? "\\\""
                          : ch == '\\' ? "\\\\"
                          : ch == '\n' ? "\\n"
                          : ch == '\r' ? "\\r"
                          : ch == '\t' ? "\\t"
                          : ch == '\b' ? "\\b"
                          : ch == '\f' ? "\\f"
                                       : NULL;
        size_t run = i;
        while (run < n && s[run] >= 0x20 && s[run] < 0x7f && s[run] != '"' && s[run] != '\\')
            run++;
        if (run > i) {
            put_bytes(e, s + i, run - i);
            i = run;
        } else if (esc) {
            put_str(e, esc);
            i++;
        } else {
            uint32_t cp = 0xfffd;
            size_t l = utf8_seq((const unsigned char *)s + i, n - i, &cp);
            i += l ? l : 1;
            if (!l) cp = 0xfffd;
            if (cp >= 0x10000) {
                cp -= 0x10000;
                snprintf(u, sizeof u, "\\u%04x\\u%04x", 0xd800 + (cp >> 10), 0xdc00 + (cp & 0x3ff));
            } else {
                snprintf(u, sizeof u, "\\u%04x", cp);
            }
            put_str(e, u);
        }
    }
    put_bytes(e, "\"", 1);
}

static void put_value(emitter *e, const json_t *v, int level, bool pretty);

/* "[...]" / "{...}": indent=2 puts each member on its own line ("," at line ends); compact
 * separates with ", ". Empty containers are "[]" and "{}" in both. */
static void put_container(emitter *e, const json_t *v, int level, bool pretty) {
    bool obj = json_is_object(v);
    size_t n = obj ? json_object_size(v) : json_array_size(v), i = 0;
    put_str(e, obj ? "{" : "[");
    if (obj) {
        const char *k;
        json_t *x;
        json_object_foreach((json_t *)v, k, x) {
            if (i++) put_str(e, pretty ? "," : ", ");
            if (pretty) put_indent(e, level + 1);
            put_string(e, k, json_object_iter_key_len(json_object_key_to_iter(k)));
            put_str(e, ": ");
            put_value(e, x, level + 1, pretty);
        }
    } else {
        for (; i < n; i++) {
            if (i) put_str(e, pretty ? "," : ", ");
            if (pretty) put_indent(e, level + 1);
            put_value(e, json_array_get(v, i), level + 1, pretty);
        }
    }
    if (pretty && n) put_indent(e, level);
    put_str(e, obj ? "}" : "]");
}

static void put_value(emitter *e, const json_t *v, int level, bool pretty) {
    char num[FM_PY_FLOAT_REPR_MAX];
    switch (json_typeof(v)) {
    case JSON_OBJECT:
    case JSON_ARRAY:
        put_container(e, v, level, pretty);
        break;
    case JSON_STRING:
        put_string(e, json_string_value(v), json_string_length(v));
        break;
    case JSON_INTEGER:
        snprintf(num, sizeof num, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        put_str(e, num);
        break;
    case JSON_REAL:
        fm_py_float_repr(json_real_value(v), num);
        put_str(e, num);
        break;
    case JSON_TRUE:
        put_str(e, "true");
        break;
    case JSON_FALSE:
        put_str(e, "false");
        break;
    default:
        put_str(e, "null");
        break;
    }
}

/* "a real (1.5)", "a string (\"abc\")", "an object": the found-value part of type errors. */
static void describe(const json_t *v, char *out, size_t size) {
    emitter e = {0};
    if (json_is_object(v) || json_is_array(v) || json_is_null(v)) {
        snprintf(out, size, "%s", type_phrase(v));
        return;
    }
    put_value(&e, v, 0, false);
    if (e.oom || !e.buf)
        snprintf(out, size, "%s", type_phrase(v));
    else if (e.len > 60)
        snprintf(out, size, "%s (%.57s...)", type_phrase(v), e.buf);
    else
        snprintf(out, size, "%s (%s)", type_phrase(v), e.buf);
    fm_free(e.buf);
}

/* ---- parse and load ------------------------------------------------------------------------ */

fm_status fm_config_parse(const char *text, size_t len, const char *origin, fm_config **out,
                          fm_error *err) {
    json_error_t je;
    if (!origin) origin = CONFIG_DEFAULT_ORIGIN;
    if (!out) return fm_error_set(err, FM_ERR_INVALID_ARG, "%s: no output pointer", origin);
    *out = NULL;
    if (!text) return fm_error_set(err, FM_ERR_INVALID_ARG, "%s: no text", origin);
    if (len > FM_CONFIG_MAX_BYTES)
        return fm_error_set(err, FM_ERR_LIMIT,
                            "%s: JSON text of %zu bytes exceeds the limit of %zu bytes", origin,
                            len, FM_CONFIG_MAX_BYTES);
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &je);
    if (!root) {
        enum json_error_code code = json_error_code(&je);
        if (code == json_error_out_of_memory)
            return fm_error_set(err, FM_ERR_NOMEM, "%s: out of memory parsing JSON", origin);
        if (code == json_error_stack_overflow)
            return fm_error_set(err, FM_ERR_LIMIT, "%s:%d:%d: JSON nesting deeper than %d levels",
                                origin, je.line, je.column, FM_JSON_MAX_DEPTH);
        return fm_error_set(err, FM_ERR_JSON, "%s:%d:%d: %s", origin, je.line, je.column, je.text);
    }
    if (deeper_than(root, FM_JSON_MAX_DEPTH)) {
        json_decref(root);
        return fm_error_set(err, FM_ERR_LIMIT, "%s: JSON nesting deeper than %d levels", origin,
                            FM_JSON_MAX_DEPTH);
    }
    *out = config_wrap(root, origin);
    return *out ? FM_OK : fm_error_set(err, FM_ERR_NOMEM, "%s: out of memory", origin);
}

/* Reads the whole file (at most FM_CONFIG_MAX_BYTES) into *out (caller frees with fm_free). */
static fm_status read_text(const char *path, char **out, size_t *out_len, fm_error *err) {
    struct stat sb;
    int fd = fm_fault_hit(FM_FAULT_OPEN) ? (errno = EIO, -1) : open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        return fm_error_set(err, e == ENOENT || e == ENOTDIR ? FM_ERR_NOT_FOUND : FM_ERR_IO,
                            "open '%s': %s", path, strerror(e));
    }
    fm_status st = FM_OK;
    size_t cap = 0, len = 0;
    char *buf = NULL;
    if (fstat(fd, &sb) == 0 && S_ISREG(sb.st_mode) && (uint64_t)sb.st_size > FM_CONFIG_MAX_BYTES)
        st =
            fm_error_set(err, FM_ERR_LIMIT, "%s: file of %lld bytes exceeds the limit of %zu bytes",
                         path, (long long)sb.st_size, FM_CONFIG_MAX_BYTES);
    while (st == FM_OK) {
        if (cap - len < 4096) {
            cap = cap ? cap * 2 : 8192;
            char *nb = fm_realloc(buf, cap);
            if (!nb) {
                st = fm_error_set(err, FM_ERR_NOMEM, "%s: out of memory reading", path);
                break;
            }
            buf = nb;
        }
        ssize_t r = read(fd, buf + len, cap - len - 1);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0)
            st = fm_error_set(err, FM_ERR_IO, "read '%s': %s", path, strerror(errno));
        else if (r == 0)
            break;
        else if ((len += (size_t)r) > FM_CONFIG_MAX_BYTES)
            st = fm_error_set(err, FM_ERR_LIMIT, "%s: more than %zu bytes", path,
                              FM_CONFIG_MAX_BYTES);
    }
    close(fd);
    if (st != FM_OK) {
        fm_free(buf);
        return st;
    }
    *out = buf;
    *out_len = len;
    return FM_OK;
}

fm_status fm_config_load(const char *path, fm_config **out, fm_error *err) {
    char *text = NULL;
    size_t len = 0;
    if (!out || !path)
        return fm_error_set(err, FM_ERR_INVALID_ARG, "fm_config_load: NULL %s",
                            path ? "output" : "path");
    *out = NULL;
    fm_status st = read_text(path, &text, &len, err);
    if (st != FM_OK) return st;
    st = fm_config_parse(text, len, path, out, err);
    fm_free(text);
    return st;
}

fm_config *fm_config_new_object(void) {
    return config_wrap(json_object(), CONFIG_DEFAULT_ORIGIN);
}

fm_status fm_config_clone(const fm_config *c, fm_config **out, fm_error *err) {
    if (!out || !c) return fm_error_set(err, FM_ERR_INVALID_ARG, "fm_config_clone: NULL argument");
    *out = config_wrap(json_deep_copy(c->root), c->origin);
    return *out
               ? FM_OK
               : fm_error_set(err, FM_ERR_NOMEM, "%s: out of memory copying the config", c->origin);
}

void fm_config_free(fm_config *c) {
    if (!c) return;
    json_decref(c->root);
    fm_free(c->origin);
    fm_free(c);
}

/* ---- dotted keys ---------------------------------------------------------------------------- */

/* A dotted key cut into at most FM_JSON_MAX_DEPTH segments (a deeper key cannot exist). */
typedef struct key_path {
    int n;
    const char *seg[FM_JSON_MAX_DEPTH];
    size_t len[FM_JSON_MAX_DEPTH];
} key_path;

/* Splits a non-empty key. FM_ERR_INVALID_ARG for an empty segment or invalid UTF-8,
 * FM_ERR_LIMIT for more than FM_JSON_MAX_DEPTH segments. */
static fm_status split_key(const fm_config *c, const char *key, key_path *kp, fm_error *err) {
    const char *s = key;
    kp->n = 0;
    for (;;) {
        const char *dot = strchr(s, '.');
        size_t n = dot ? (size_t)(dot - s) : strlen(s);
        if (n == 0)
            return fm_error_set(err, FM_ERR_INVALID_ARG, "%s: key '%s': empty segment", c->origin,
                                key);
        if (!utf8_valid(s, n))
            return fm_error_set(err, FM_ERR_INVALID_ARG, "%s: key is not valid UTF-8", c->origin);
        if (kp->n == FM_JSON_MAX_DEPTH)
            return fm_error_set(err, FM_ERR_LIMIT, "%s: key '%s' nests deeper than %d levels",
                                c->origin, key, FM_JSON_MAX_DEPTH);
        kp->seg[kp->n] = s;
        kp->len[kp->n++] = n;
        if (!dot) return FM_OK;
        s = dot + 1;
    }
}

/* Error for segment i of kp, reached inside v, which is not an object. */
static fm_status not_object(const fm_config *c, const char *key, const key_path *kp, int i,
                            const json_t *v, fm_error *err) {
    if (i == 0)
        return fm_error_set(err, FM_ERR_CONFIG, "%s: key '%s': the top level is %s, not an object",
                            c->origin, key, type_phrase(v));
    int plen = (int)(kp->seg[i - 1] + kp->len[i - 1] - key);
    return fm_error_set(err, FM_ERR_CONFIG, "%s: key '%s': '%.*s' is %s, not an object", c->origin,
                        key, plen, key, type_phrase(v));
}

/* Finds the value at dotted `key` ("" = the root); *out is borrowed from the tree. Errors:
 * FM_ERR_INVALID_ARG (NULL arguments, malformed key), FM_ERR_CONFIG (a segment crosses a
 * non-object), FM_ERR_NOT_FOUND (missing key; a key nesting deeper than the limit is missing). */
static fm_status lookup(const fm_config *c, const char *key, json_t **out, fm_error *err) {
    key_path kp;
    *out = NULL;
    if (!c || !key)
        return fm_error_set(err, FM_ERR_INVALID_ARG, "config lookup: NULL %s",
                            c ? "key" : "config");
    json_t *v = c->root;
    if (*key) {
        fm_status st = split_key(c, key, &kp, err);
        if (st == FM_ERR_LIMIT)
            return fm_error_set(err, FM_ERR_NOT_FOUND, "%s: key '%s' not found", c->origin, key);
        if (st != FM_OK) return st;
        for (int i = 0; i < kp.n; i++) {
            if (!json_is_object(v)) return not_object(c, key, &kp, i, v, err);
            v = json_object_getn(v, kp.seg[i], kp.len[i]);
            if (!v)
                return fm_error_set(err, FM_ERR_NOT_FOUND, "%s: key '%s' not found", c->origin,
                                    key);
        }
    }
    *out = v;
    return FM_OK;
}

static fm_status type_error(const fm_config *c, const char *key, const char *want, const json_t *v,
                            fm_error *err) {
    char found[96];
    describe(v, found, sizeof found);
    return fm_error_set(err, FM_ERR_CONFIG, "%s: key '%s': expected %s, found %s", c->origin, key,
                        want, found);
}

/* ---- getters ------------------------------------------------------------------------------- */

fm_json_type fm_config_type(const fm_config *c, const char *key) {
    json_t *v;
    return lookup(c, key, &v, NULL) == FM_OK ? type_of(v) : FM_JSON_ABSENT;
}

fm_json_type fm_config_root_type(const fm_config *c) {
    return c ? type_of(c->root) : FM_JSON_ABSENT;
}

fm_status fm_config_get_int(const fm_config *c, const char *key, int64_t *out, fm_error *err) {
    json_t *v;
    fm_status st = lookup(c, key, &v, err);
    if (st != FM_OK) return st;
    if (!json_is_integer(v)) return type_error(c, key, "an integer", v, err);
    *out = (int64_t)json_integer_value(v);
    return FM_OK;
}

fm_status fm_config_get_double(const fm_config *c, const char *key, double *out, fm_error *err) {
    json_t *v;
    fm_status st = lookup(c, key, &v, err);
    if (st != FM_OK) return st;
    if (!json_is_number(v)) return type_error(c, key, "a number", v, err);
    *out = json_number_value(v); /* integers convert (nearest double) */
    return FM_OK;
}

fm_status fm_config_get_bool(const fm_config *c, const char *key, bool *out, fm_error *err) {
    json_t *v;
    fm_status st = lookup(c, key, &v, err);
    if (st != FM_OK) return st;
    if (!json_is_boolean(v)) return type_error(c, key, "a bool", v, err);
    *out = json_is_true(v);
    return FM_OK;
}

fm_status fm_config_get_string(const fm_config *c, const char *key, const char **out,
                               fm_error *err) {
    json_t *v;
    fm_status st = lookup(c, key, &v, err);
    if (st != FM_OK) return st;
    if (!json_is_string(v)) return type_error(c, key, "a string", v, err);
    *out = json_string_value(v);
    return FM_OK;
}

fm_status fm_config_get_subtree(const fm_config *c, const char *key, fm_config **out,
                                fm_error *err) {
    json_t *v;
    char origin[512];
    if (!out) return fm_error_set(err, FM_ERR_INVALID_ARG, "fm_config_get_subtree: NULL output");
    *out = NULL;
    fm_status st = lookup(c, key, &v, err);
    if (st != FM_OK) return st;
    if (*key)
        snprintf(origin, sizeof origin, "%s[%s]", c->origin, key);
    else
        snprintf(origin, sizeof origin, "%s", c->origin);
    *out = config_wrap(json_deep_copy(v), origin);
    return *out ? FM_OK
                : fm_error_set(err, FM_ERR_NOMEM, "%s: out of memory copying key '%s'", c->origin,
                               key);
}

size_t fm_config_object_size(const fm_config *c, const char *key) {
    json_t *v;
    return lookup(c, key, &v, NULL) == FM_OK ? json_object_size(v) : 0;
}

const char *fm_config_object_key(const fm_config *c, const char *key, size_t i) {
    json_t *v;
    if (lookup(c, key, &v, NULL) != FM_OK || !json_is_object(v)) return NULL;
    void *it = json_object_iter(v);
    for (; it && i > 0; i--)
        it = json_object_iter_next(v, it);
    return it ? json_object_iter_key(it) : NULL;
}

size_t fm_config_array_size(const fm_config *c, const char *key) {
    json_t *v;
    return lookup(c, key, &v, NULL) == FM_OK ? json_array_size(v) : 0;
}

fm_status fm_config_array_int(const fm_config *c, const char *key, size_t i, int64_t *out,
                              fm_error *err) {
    json_t *v;
    char k[512];
    fm_status st = lookup(c, key, &v, err);
    if (st != FM_OK) return st;
    if (!json_is_array(v)) return type_error(c, key, "an array", v, err);
    if (i >= json_array_size(v))
        return fm_error_set(err, FM_ERR_NOT_FOUND,
                            "%s: key '%s': index %zu out of range (size %zu)", c->origin, key, i,
                            json_array_size(v));
    json_t *x = json_array_get(v, i);
    snprintf(k, sizeof k, "%s[%zu]", key, i);
    if (!json_is_integer(x)) return type_error(c, k, "an integer", x, err);
    *out = (int64_t)json_integer_value(x);
    return FM_OK;
}

/* ---- setters -----------------------------------------------------------------------------------
 */

/* Puts `val` (one reference, always consumed; NULL means jansson ran out of memory) at dotted
 * `key` of an object root: replaces in place when present (jansson keeps the key's position),
 * else appends, creating missing intermediate objects. The result may nest at most
 * FM_JSON_MAX_DEPTH containers. On failure the tree is unchanged: missing intermediates are
 * built detached and attached by the final, single insertion. */
static fm_status put(fm_config *c, const char *key, json_t *val, fm_error *err) {
    key_path kp;
    fm_status st = FM_OK;
    json_t *obj = c->root;
    int i = 0;
    if (!val)
        return fm_error_set(err, FM_ERR_NOMEM, "%s: out of memory setting key '%s'", c->origin,
                            key);
    if (!*key)
        st = fm_error_set(err, FM_ERR_INVALID_ARG, "%s: cannot replace the root through a key",
                          c->origin);
    if (st == FM_OK) st = split_key(c, key, &kp, err);
    if (st == FM_OK && deeper_than(val, FM_JSON_MAX_DEPTH - kp.n))
        st = fm_error_set(err, FM_ERR_LIMIT, "%s: key '%s': value would nest deeper than %d levels",
                          c->origin, key, FM_JSON_MAX_DEPTH);
    for (; st == FM_OK && i < kp.n; i++) { /* walk the existing prefix */
        if (!json_is_object(obj))
            st = not_object(c, key, &kp, i, obj, err);
        else if (i == kp.n - 1)
            break;
        else {
            json_t *next = json_object_getn(obj, kp.seg[i], kp.len[i]);
            if (!next) break;
            obj = next;
        }
    }
    for (int j = kp.n - 1; st == FM_OK && j > i; j--) { /* wrap val in the missing objects */
        json_t *w = json_object();
        if (!w || json_object_setn_new(w, kp.seg[j], kp.len[j], val) != 0) {
            json_decref(w);
            val = NULL; /* consumed by setn_new, also on failure */
            st = fm_error_set(err, FM_ERR_NOMEM, "%s: out of memory setting key '%s'", c->origin,
                              key);
        } else {
            val = w;
        }
    }
    if (st == FM_OK) {
        int rc = json_object_setn_new(obj, kp.seg[i], kp.len[i], val);
        val = NULL;
        if (rc != 0)
            st = fm_error_set(err, FM_ERR_NOMEM, "%s: out of memory setting key '%s'", c->origin,
                              key);
    }
    json_decref(val);
    return st;
}

static fm_status check_set_args(const fm_config *c, const char *key, fm_error *err) {
    if (!c || !key)
        return fm_error_set(err, FM_ERR_INVALID_ARG, "config setter: NULL %s",
                            c ? "key" : "config");
    return FM_OK;
}

fm_status fm_config_set_int(fm_config *c, const char *key, int64_t v, fm_error *err) {
    fm_status st = check_set_args(c, key, err);
    return st != FM_OK ? st : put(c, key, json_integer((json_int_t)v), err);
}

fm_status fm_config_set_string(fm_config *c, const char *key, const char *v, fm_error *err) {
    fm_status st = check_set_args(c, key, err);
    if (st != FM_OK) return st;
    if (!v)
        return fm_error_set(err, FM_ERR_INVALID_ARG, "%s: key '%s': NULL string", c->origin, key);
    if (!utf8_valid(v, strlen(v)))
        return fm_error_set(err, FM_ERR_INVALID_ARG, "%s: key '%s': value is not valid UTF-8",
                            c->origin, key);
    return put(c, key, json_string_nocheck(v), err);
}

fm_status fm_config_set_subtree(fm_config *c, const char *key, const fm_config *v, fm_error *err) {
    fm_status st = check_set_args(c, key, err);
    if (st != FM_OK) return st;
    if (!v)
        return fm_error_set(err, FM_ERR_INVALID_ARG, "%s: key '%s': NULL subtree", c->origin, key);
    return put(c, key, json_deep_copy(v->root), err); /* a copy: v may be c itself */
}

fm_status fm_config_remove(fm_config *c, const char *key, fm_error *err) {
    key_path kp;
    fm_status st = check_set_args(c, key, err);
    if (st == FM_OK && !*key)
        st = fm_error_set(err, FM_ERR_INVALID_ARG, "%s: cannot remove the root", c->origin);
    if (st == FM_OK) st = split_key(c, key, &kp, err);
    if (st == FM_ERR_LIMIT)
        return fm_error_set(err, FM_ERR_NOT_FOUND, "%s: key '%s' not found", c->origin, key);
    if (st != FM_OK) return st;
    json_t *obj = c->root;
    for (int i = 0; i < kp.n; i++) {
        if (!json_is_object(obj)) return not_object(c, key, &kp, i, obj, err);
        if (i == kp.n - 1) break;
        obj = json_object_getn(obj, kp.seg[i], kp.len[i]);
        if (!obj) break;
    }
    if (!obj || json_object_deln(obj, kp.seg[kp.n - 1], kp.len[kp.n - 1]) != 0)
        return fm_error_set(err, FM_ERR_NOT_FOUND, "%s: key '%s' not found", c->origin, key);
    return FM_OK;
}

/* ---- dump
 * ---------------------------------------------------------------------------------------- */

fm_status fm_config_dump(const fm_config *c, char **out, size_t *out_len, fm_error *err) {
    emitter e = {0};
    if (!c || !out) return fm_error_set(err, FM_ERR_INVALID_ARG, "fm_config_dump: NULL argument");
    *out = NULL;
    put_value(&e, c->root, 0, true);
    put_bytes(&e, "\n", 1);
    if (e.oom) {
        fm_free(e.buf);
        return fm_error_set(err, FM_ERR_NOMEM, "%s: out of memory writing JSON", c->origin);
    }
    *out = e.buf;
    if (out_len) *out_len = e.len;
    return FM_OK;
}

fm_status fm_config_dump_compact(const fm_config *c, char **out, fm_error *err) {
    emitter e = {0};
    if (!c || !out)
        return fm_error_set(err, FM_ERR_INVALID_ARG, "fm_config_dump_compact: NULL argument");
    *out = NULL;
    put_value(&e, c->root, 0, false);
    if (e.oom) {
        fm_free(e.buf);
        return fm_error_set(err, FM_ERR_NOMEM, "%s: out of memory writing JSON", c->origin);
    }
    *out = e.buf;
    return FM_OK;
}
