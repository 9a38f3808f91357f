/* Values of the template interpreter: the arena they live in, the masked string builder, UTF-8
 * helpers, Python truthiness / equality, str() / repr() and json.dumps() as transformers' tojson
 * calls it (ensure_ascii=False). */
#include "text/jinja.h"
#include "text/utf8.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "io/config_internal.h"

/* ---- arena ------------------------------------------------------------------------------------
 */
struct jj_chunk {
    jj_chunk *next;
    size_t size, used;
    _Alignas(16) unsigned char data[];
};

#define JJ_CHUNK_MIN ((size_t)64 << 10)

void *jj_alloc(jj_arena *a, size_t n) {
    n = (n + 15) & ~(size_t)15;
    if (n == 0) n = 16;
    if (a->limit && (n > a->limit || a->used > a->limit - n)) {
        a->over = true;
        return NULL;
    }
    jj_chunk *c = a->head;
    if (!c || c->size - c->used < n) {
        size_t sz = n > JJ_CHUNK_MIN ? n : JJ_CHUNK_MIN;
        c = fm_malloc(sizeof *c + sz);
        if (!c) {
            a->over = false;
            return NULL;
        }
        c->size = sz, c->used = 0;
        /* A big block gets its own chunk behind the current one, so the current keeps filling. */
        if (a->head && n > JJ_CHUNK_MIN) {
            c->next = a->head->next;
            a->head->next = c;
        } else {
            c->next = a->head;
            a->head = c;
        }
    }
    void *p = c->data + c->used;
    c->used += n;
    a->used += n;
    memset(p, 0, n);
    return p;
}

void jj_arena_free(jj_arena *a) {
    if (!a) return;
    for (jj_chunk *c = a->head, *nx; c; c = nx) {
        nx = c->next;
        fm_free(c);
    }
    a->head = NULL;
    a->used = 0;
}

/* ---- masked string builder ------------------------------------------------------------------ */
static int buf_reserve(jj_buf *b, size_t extra, bool *over) {
    if (b->max && (extra > b->max || b->n > b->max - extra)) {
        if (over) *over = true;
        return -1;
    }
    if (b->cap - b->n > extra) return 0; /* keeps room for a NUL */
    size_t cap = b->cap ? b->cap : 256;
    while (cap - b->n <= extra)
        cap *= 2;
    char *p = fm_realloc(b->p, cap);
    if (!p) return -1;
    b->p = p, b->cap = cap;
    return 0;
}

static int mask_reserve(jj_buf *b, size_t need) {
    if (b->mcap >= need && b->m) return 0;
    size_t cap = b->cap > need ? b->cap : need;
    uint8_t *m = fm_realloc(b->m, cap ? cap : 1);
    if (!m) return -1;
    if (!b->m) memset(m, 0, b->n); /* the bytes so far were template bytes */
    b->m = m, b->mcap = cap;
    return 0;
}

static bool any_set(const uint8_t *m, size_t n) {
    if (!m) return false;
    for (size_t i = 0; i < n; i++)
        if (m[i]) return true;
    return false;
}

int jj_buf_put(jj_buf *b, const char *p, size_t n, const uint8_t *m, bool *over) {
    if (buf_reserve(b, n, over)) return -1;
    if (b->m || any_set(m, n)) {
        if (mask_reserve(b, b->n + n)) return -1;
        if (m)
            memcpy(b->m + b->n, m, n);
        else
            memset(b->m + b->n, 0, n);
    }
    if (n) memcpy(b->p + b->n, p, n);
    b->n += n;
    b->p[b->n] = '\0';
    return 0;
}

int jj_buf_put_flag(jj_buf *b, const char *p, size_t n, bool user, bool *over) {
    if (buf_reserve(b, n, over)) return -1;
    if (b->m || user) {
        if (mask_reserve(b, b->n + n)) return -1;
        memset(b->m + b->n, user ? 1 : 0, n);
    }
    if (n) memcpy(b->p + b->n, p, n);
    b->n += n;
    b->p[b->n] = '\0';
    return 0;
}

void jj_buf_free(jj_buf *b) {
    if (!b) return;
    fm_free(b->p);
    fm_free(b->m);
    b->p = NULL, b->m = NULL;
    b->n = b->cap = b->mcap = 0;
}

int jj_buf_to_value(jj_arena *a, const jj_buf *b, jj_value *out) {
    char *p = jj_alloc(a, b->n + 1);
    uint8_t *m = NULL;
    bool user = b->m && any_set(b->m, b->n);
    if (p && user) m = jj_alloc(a, b->n);
    if (!p || (user && !m)) return -1;
    if (b->n) memcpy(p, b->p, b->n);
    if (m) memcpy(m, b->m, b->n);
    *out = jj_str(p, b->n, m);
    return 0;
}

/* ---- UTF-8 ------------------------------------------------------------------------------------
 */
uint32_t jj_utf8_next(const char *s, size_t n, size_t *i) {
    size_t adv;
    uint32_t cp = tk_utf8_next((const uint8_t *)s + *i, n - *i, &adv);
    *i += adv;
    return cp;
}

size_t jj_utf8_count(const char *s, size_t n) {
    size_t c = 0;
    for (size_t i = 0; i < n; i++)
        c += ((unsigned char)s[i] & 0xC0) != 0x80;
    return c;
}

size_t jj_utf8_offset(const char *s, size_t n, size_t cp) {
    size_t i = 0;
    while (i < n && cp > 0) {
        i++;
        while (i < n && ((unsigned char)s[i] & 0xC0) == 0x80)
            i++;
        cp--;
    }
    return i;
}

bool jj_py_isspace(uint32_t c) {
    return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 ||
           c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 ||
           c == 0x202F || c == 0x205F || c == 0x3000;
}

/* Python str.isprintable() for one non-ASCII code point: not in categories C* or Z*. The
 * Unicode tables are PCRE2's (compiled once; a failed compile counts everything printable). */
static pcre2_code *g_unprintable;
static pthread_once_t g_unprintable_once = PTHREAD_ONCE_INIT;
static void unprintable_compile(void) {
    int ec;
    PCRE2_SIZE eo;
    g_unprintable = pcre2_compile((PCRE2_SPTR) "^[\\p{C}\\p{Z}]", PCRE2_ZERO_TERMINATED,
                                  PCRE2_UTF | PCRE2_UCP, &ec, &eo, NULL);
}
static bool cp_printable(uint32_t cp) {
    if (cp < 0x80) return cp >= 0x20 && cp < 0x7F;
    pthread_once(&g_unprintable_once, unprintable_compile);
    if (!g_unprintable) return true;
    char u[4];
    size_t n = tk_utf8_put(cp, u);
    pcre2_match_data *md = pcre2_match_data_create(1, NULL);
    if (!md) return true;
    int rc = pcre2_match(g_unprintable, (PCRE2_SPTR)u, n, 0, PCRE2_NO_UTF_CHECK, md, NULL);
    pcre2_match_data_free(md);
    return rc < 0;
}

/* ---- truthiness, names, equality ------------------------------------------------------------- */
bool jj_truthy(const jj_value *v) {
    switch (v->t) {
    case JT_UNDEF:
    case JT_NONE:
        return false;
    case JT_BOOL:
        return v->u.b;
    case JT_INT:
        return v->u.i != 0;
    case JT_FLOAT:
        return v->u.f != 0.0;
    case JT_STR:
        return v->u.s.n != 0;
    case JT_LIST:
        return v->u.l->n != 0;
    case JT_DICT:
        return v->u.d->n != 0;
    default:
        return true;
    }
}

const char *jj_type_name(const jj_value *v) {
    static const char *const names[] = {"Undefined", "NoneType", "bool",       "int",
                                        "float",     "str",      "list",       "dict",
                                        "Namespace", "function", "LoopContext"};
    if (v->t == JT_LIST && v->tuple) return "tuple";
    return v->t < sizeof names / sizeof *names ? names[v->t] : "object";
}

static bool is_num(const jj_value *v) {
    return v->t == JT_INT || v->t == JT_FLOAT || v->t == JT_BOOL;
}
static double num_f(const jj_value *v) {
    return v->t == JT_FLOAT ? v->u.f : v->t == JT_INT ? (double)v->u.i : (double)v->u.b;
}

#define JJ_MAX_VALUE_DEPTH 200

static bool equal_at(const jj_value *a, const jj_value *b, int level);

bool jj_equal(const jj_value *a, const jj_value *b) {
    return equal_at(a, b, 0);
}

/* Containers nested deeper than JJ_MAX_VALUE_DEPTH compare unequal (they cannot be built by
 * JSON input or literals; only by a template nesting lists in a loop). */
static bool equal_at(const jj_value *a, const jj_value *b, int level) {
    if (level > JJ_MAX_VALUE_DEPTH) return false;
    if (is_num(a) && is_num(b)) {
        if (a->t != JT_FLOAT && b->t != JT_FLOAT) {
            int64_t x = a->t == JT_INT ? a->u.i : a->u.b, y = b->t == JT_INT ? b->u.i : b->u.b;
            return x == y;
        }
        return num_f(a) == num_f(b);
    }
    if (a->t != b->t) return false;
    switch (a->t) {
    case JT_UNDEF:
    case JT_NONE:
        return true;
    case JT_STR:
        return a->u.s.n == b->u.s.n && !memcmp(a->u.s.p, b->u.s.p, a->u.s.n);
    case JT_LIST:
        if (a->u.l->n != b->u.l->n || a->tuple != b->tuple) return false;
        for (size_t i = 0; i < a->u.l->n; i++)
            if (!equal_at(&a->u.l->v[i], &b->u.l->v[i], level + 1)) return false;
        return true;
    case JT_DICT:
        if (a->u.d->n != b->u.d->n) return false;
        for (size_t i = 0; i < a->u.d->n; i++) {
            jj_value *o = jj_dict_find(b->u.d, &a->u.d->k[i]);
            if (!o || !equal_at(&a->u.d->v[i], o, level + 1)) return false;
        }
        return true;
    default:
        return a->u.fn == b->u.fn;
    }
}

/* ---- dicts ------------------------------------------------------------------------------------
 */
jj_value *jj_dict_get(const jj_dict *d, const char *k, size_t n) {
    for (size_t i = 0; i < d->n; i++)
        if (d->k[i].t == JT_STR && d->k[i].u.s.n == n && !memcmp(d->k[i].u.s.p, k, n))
            return &d->v[i];
    return NULL;
}

jj_value *jj_dict_find(const jj_dict *d, const jj_value *key) {
    if (key->t == JT_STR) return jj_dict_get(d, key->u.s.p, key->u.s.n);
    for (size_t i = 0; i < d->n; i++)
        if (jj_equal(&d->k[i], key)) return &d->v[i];
    return NULL;
}

int jj_dict_set(jj_arena *a, jj_dict *d, jj_value key, jj_value val) {
    jj_value *o = jj_dict_find(d, &key);
    if (o) return *o = val, 0;
    if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 4;
        jj_value *k = jj_alloc(a, cap * sizeof *k), *v = jj_alloc(a, cap * sizeof *v);
        if (!k || !v) return -1;
        if (d->n) memcpy(k, d->k, d->n * sizeof *k), memcpy(v, d->v, d->n * sizeof *v);
        d->k = k, d->v = v, d->cap = cap;
    }
    d->k[d->n] = key, d->v[d->n] = val, d->n++;
    return 0;
}

/* ---- str() / repr() ---------------------------------------------------------------------------
 */
#define PUT(b, s, n, ov)                                                                           \
    do {                                                                                           \
        if (jj_buf_put_flag((b), (s), (n), false, (ov))) return -2;                                \
    } while (0)

static int put_cstr(jj_buf *b, const char *s, bool *over) {
    PUT(b, s, strlen(s), over);
    return 0;
}

/* Python repr() of a string: quotes chosen as Python does, escapes for the unprintable. Escape
 * bytes inherit the user flag of the character they stand for. */
static int repr_str(jj_buf *b, const jj_value *v, bool *over) {
    const char *s = v->u.s.p;
    size_t n = v->u.s.n;
    char q = memchr(s, '\'', n) && !memchr(s, '"', n) ? '"' : '\'';
    PUT(b, &q, 1, over);
    for (size_t i = 0; i < n;) {
        size_t at = i;
        uint32_t cp = jj_utf8_next(s, n, &i);
        bool user = v->u.s.m && v->u.s.m[at];
        char e[16];
        size_t en = 0;
        if (cp == '\\' || cp == (uint32_t)q)
            e[0] = '\\', e[1] = (char)cp, en = 2;
        else if (cp == '\n')
            memcpy(e, "\\n", 2), en = 2;
        else if (cp == '\r')
            memcpy(e, "\\r", 2), en = 2;
        else if (cp == '\t')
            memcpy(e, "\\t", 2), en = 2;
        else if (!cp_printable(cp))
            en = (size_t)snprintf(e, sizeof e,
                                  cp < 0x100     ? "\\x%02x"
                                  : cp < 0x10000 ? "\\u%04x"
                                                 : "\\U%08x",
                                  cp);
        if (en) {
            if (jj_buf_put_flag(b, e, en, user, over)) return -2;
        } else if (jj_buf_put(b, s + at, i - at, v->u.s.m ? v->u.s.m + at : NULL, over)) {
            return -2;
        }
    }
    PUT(b, &q, 1, over);
    return 0;
}

static int to_string_at(jj_buf *b, const jj_value *v, bool repr, const char **msg, bool *over,
                        int level);

static int seq_to_string(jj_buf *b, const jj_value *v, const char **msg, bool *over, int level) {
    const jj_list *l = v->u.l;
    PUT(b, v->tuple ? "(" : "[", 1, over);
    for (size_t i = 0; i < l->n; i++) {
        if (i) PUT(b, ", ", 2, over);
        int r = to_string_at(b, &l->v[i], true, msg, over, level + 1);
        if (r) return r;
    }
    if (v->tuple && l->n == 1) PUT(b, ",", 1, over);
    PUT(b, v->tuple ? ")" : "]", 1, over);
    return 0;
}

static int dict_to_string(jj_buf *b, const jj_dict *d, const char **msg, bool *over, int level) {
    PUT(b, "{", 1, over);
    for (size_t i = 0; i < d->n; i++) {
        if (i) PUT(b, ", ", 2, over);
        int r = to_string_at(b, &d->k[i], true, msg, over, level + 1);
        if (!r) PUT(b, ": ", 2, over);
        if (!r) r = to_string_at(b, &d->v[i], true, msg, over, level + 1);
        if (r) return r;
    }
    PUT(b, "}", 1, over);
    return 0;
}

static int num_to_string(jj_buf *b, const jj_value *v, bool *over) {
    char tmp[FM_PY_FLOAT_REPR_MAX + 8];
    size_t n;
    if (v->t == JT_INT)
        n = (size_t)snprintf(tmp, sizeof tmp, "%lld", (long long)v->u.i);
    else if (isnan(v->u.f))
        n = (size_t)snprintf(tmp, sizeof tmp, "nan");
    else if (isinf(v->u.f))
        n = (size_t)snprintf(tmp, sizeof tmp, v->u.f < 0 ? "-inf" : "inf");
    else
        n = fm_py_float_repr(v->u.f, tmp);
    PUT(b, tmp, n, over);
    return 0;
}

int jj_to_string(jj_buf *b, const jj_value *v, bool repr, const char **msg, bool *over) {
    return to_string_at(b, v, repr, msg, over, 0);
}

static int to_string_at(jj_buf *b, const jj_value *v, bool repr, const char **msg, bool *over,
                        int level) {
    if (level > JJ_MAX_VALUE_DEPTH) {
        *msg = "values nested too deeply to print";
        return -1;
    }
    switch (v->t) {
    case JT_UNDEF:
        return repr ? put_cstr(b, "Undefined", over) : 0;
    case JT_NONE:
        return put_cstr(b, "None", over);
    case JT_BOOL:
        return put_cstr(b, v->u.b ? "True" : "False", over);
    case JT_INT:
    case JT_FLOAT:
        return num_to_string(b, v, over);
    case JT_STR:
        if (repr) return repr_str(b, v, over);
        return jj_buf_put(b, v->u.s.p, v->u.s.n, v->u.s.m, over) ? -2 : 0;
    case JT_LIST:
        return seq_to_string(b, v, msg, over, level);
    case JT_DICT:
        return dict_to_string(b, v->u.d, msg, over, level);
    case JT_NS: {
        int r = put_cstr(b, "<Namespace ", over);
        if (!r) r = dict_to_string(b, v->u.d, msg, over, level);
        return r ? r : put_cstr(b, ">", over);
    }
    default:
        *msg = v->t == JT_LOOP ? "a loop object cannot be printed" : "a function cannot be printed";
        return -1;
    }
}

/* ---- json.dumps -------------------------------------------------------------------------------
 */
static int json_str(jj_buf *b, const char *s, size_t n, const uint8_t *m, bool *over) {
    PUT(b, "\"", 1, over);
    size_t run = 0; /* bytes copied verbatim are flushed in runs */
    for (size_t i = 0; i <= n; i++) {
        unsigned char c = i < n ? (unsigned char)s[i] : 0;
        bool esc = i < n && (c < 0x20 || c == '"' || c == '\\');
        if (i < n && !esc) continue;
        if (jj_buf_put(b, s + run, i - run, m ? m + run : NULL, over)) return -2;
        if (i == n) break;
        char e[8];
        size_t en = 2;
        e[0] = '\\';
        switch (c) {
        case '"':
            e[1] = '"';
            break;
        case '\\':
            e[1] = '\\';
            break;
        case '\n':
            e[1] = 'n';
            break;
        case '\r':
            e[1] = 'r';
            break;
        case '\t':
            e[1] = 't';
            break;
        case '\b':
            e[1] = 'b';
            break;
        case '\f':
            e[1] = 'f';
            break;
        default:
            en = (size_t)snprintf(e, sizeof e, "\\u%04x", c);
        }
        if (jj_buf_put_flag(b, e, en, m && m[i], over)) return -2;
        run = i + 1;
    }
    PUT(b, "\"", 1, over);
    return 0;
}

static int json_newline(jj_buf *b, int indent, int level, bool *over) {
    if (indent < 0) return 0;
    PUT(b, "\n", 1, over);
    for (int i = 0; i < indent * level; i++)
        PUT(b, " ", 1, over);
    return 0;
}

static int json_value(jj_buf *b, const jj_value *v, int indent, bool sort, int level,
                      const char **msg, bool *over);

static int json_key(jj_buf *b, const jj_value *k, const char **msg, bool *over) {
    switch (k->t) {
    case JT_STR:
        return json_str(b, k->u.s.p, k->u.s.n, k->u.s.m, over);
    case JT_NONE:
        return put_cstr(b, "\"null\"", over);
    case JT_BOOL:
        return put_cstr(b, k->u.b ? "\"true\"" : "\"false\"", over);
    case JT_INT:
    case JT_FLOAT: {
        int r = put_cstr(b, "\"", over);
        if (!r) r = json_value(b, k, -1, false, 0, msg, over);
        return r ? r : put_cstr(b, "\"", over);
    }
    default:
        *msg = "tojson: keys must be str, int, float, bool or None";
        return -1;
    }
}

static int str_cmp(const jj_value *a, const jj_value *b) {
    size_t n = a->u.s.n < b->u.s.n ? a->u.s.n : b->u.s.n;
    int c = memcmp(a->u.s.p, b->u.s.p, n);
    return c ? c : (a->u.s.n > b->u.s.n) - (a->u.s.n < b->u.s.n);
}

static int json_dict(jj_buf *b, const jj_dict *d, int indent, bool sort, int level,
                     const char **msg, bool *over) {
    if (d->n == 0) return put_cstr(b, "{}", over);
    size_t *ord = NULL;
    if (sort) {
        for (size_t i = 0; i < d->n; i++)
            if (d->k[i].t != JT_STR) {
                *msg = "tojson(sort_keys=true): keys must all be strings";
                return -1;
            }
        ord = fm_malloc(d->n * sizeof *ord);
        if (!ord) return -2;
        for (size_t i = 0; i < d->n; i++) { /* insertion sort: dicts here are small */
            size_t j = i;
            while (j > 0 && str_cmp(&d->k[ord[j - 1]], &d->k[i]) > 0)
                ord[j] = ord[j - 1], j--;
            ord[j] = i;
        }
    }
    int r = put_cstr(b, "{", over);
    for (size_t x = 0; !r && x < d->n; x++) {
        size_t i = ord ? ord[x] : x;
        if (x) r = put_cstr(b, indent >= 0 ? "," : ", ", over);
        if (!r) r = json_newline(b, indent, level + 1, over);
        if (!r) r = json_key(b, &d->k[i], msg, over);
        if (!r) r = put_cstr(b, ": ", over);
        if (!r) r = json_value(b, &d->v[i], indent, sort, level + 1, msg, over);
    }
    fm_free(ord);
    if (!r) r = json_newline(b, indent, level, over);
    return r ? r : put_cstr(b, "}", over);
}

static int json_list(jj_buf *b, const jj_list *l, int indent, bool sort, int level,
                     const char **msg, bool *over) {
    if (l->n == 0) return put_cstr(b, "[]", over);
    int r = put_cstr(b, "[", over);
    for (size_t i = 0; !r && i < l->n; i++) {
        if (i) r = put_cstr(b, indent >= 0 ? "," : ", ", over);
        if (!r) r = json_newline(b, indent, level + 1, over);
        if (!r) r = json_value(b, &l->v[i], indent, sort, level + 1, msg, over);
    }
    if (!r) r = json_newline(b, indent, level, over);
    return r ? r : put_cstr(b, "]", over);
}

static int json_value(jj_buf *b, const jj_value *v, int indent, bool sort, int level,
                      const char **msg, bool *over) {
    if (level > JJ_MAX_VALUE_DEPTH) {
        *msg = "tojson: values nested too deeply";
        return -1;
    }
    switch (v->t) {
    case JT_NONE:
        return put_cstr(b, "null", over);
    case JT_BOOL:
        return put_cstr(b, v->u.b ? "true" : "false", over);
    case JT_INT:
        return num_to_string(b, v, over);
    case JT_FLOAT:
        if (isnan(v->u.f)) return put_cstr(b, "NaN", over);
        if (isinf(v->u.f)) return put_cstr(b, v->u.f < 0 ? "-Infinity" : "Infinity", over);
        return num_to_string(b, v, over);
    case JT_STR:
        return json_str(b, v->u.s.p, v->u.s.n, v->u.s.m, over);
    case JT_LIST:
        return json_list(b, v->u.l, indent, sort, level, msg, over);
    case JT_DICT:
        return json_dict(b, v->u.d, indent, sort, level, msg, over);
    default:
        *msg = v->t == JT_UNDEF ? "tojson: an undefined value is not JSON serializable"
               : v->t == JT_NS  ? "tojson: a namespace is not JSON serializable"
                                : "tojson: a function is not JSON serializable";
        return -1;
    }
}

int jj_to_json(jj_buf *b, const jj_value *v, int indent, bool sort_keys, const char **msg,
               bool *over) {
    return json_value(b, v, indent, sort_keys, 0, msg, over);
}
