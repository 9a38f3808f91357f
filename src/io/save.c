/* Checkpoint saves: transformers' size strings, huggingface_hub's greedy shard split, the shard
 * index, and the atomic directory replacement (staging directory + one rename exchange). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fusemap/io.h"
#include "io/fsutil.h"

#define SAVE_WEIGHTS "model.safetensors"
#define SAVE_INDEX "model.safetensors.index.json"
#define SAVE_MAX_OLD_INDEX ((uint64_t)64 << 20)
#define SAVE_MAX_DEPTH 64
/* Thread-safe error text (GNU strerror_r) in a buffer living to the end of the full expression's
 * block. */
#define ERRSTR(e) strerror_r((e), (char[128]){0}, 128)

/* ---- size strings ----------------------------------------------------------------------- */

static bool suffix_ci(const char *s, size_t len, const char *suf) {
    size_t sl = strlen(suf);
    if (len < sl) return false;
    for (size_t i = 0; i < sl; i++) {
        char c = s[len - sl + i];
        if (c >= 'a' && c <= 'z') c = (char)(c - 'a' + 'A');
        if (c != suf[i]) return false;
    }
    return true;
}

/* Decimal digits with optional surrounding blanks (Python's int() accepts those too). */
static fm_status parse_count(const char *s, size_t len, const char *whole, uint64_t *out,
                             fm_error *err) {
    size_t i = 0, digits = 0;
    uint64_t v = 0;
    while (i < len && (s[i] == ' ' || s[i] == '\t'))
        i++;
    for (; i < len && s[i] >= '0' && s[i] <= '9'; i++, digits++) {
        if (fm_mul_u64(v, 10, &v) || fm_add_u64(v, (uint64_t)(s[i] - '0'), &v))
            return fm_error_set(err, FM_ERR_OVERFLOW, "size '%.100s' does not fit 64 bits", whole);
    }
    while (i < len && (s[i] == ' ' || s[i] == '\t'))
        i++;
    if (digits == 0 || i != len)
        return fm_error_set(
            err, FM_ERR_INVALID_ARG,
            "size '%.100s' is not an integer followed by a unit (e.g. 5GB, 500MiB, 5Gb)", whole);
    *out = v;
    return FM_OK;
}

fm_status fm_parse_size(const char *s, uint64_t *out, fm_error *err) {
    static const struct {
        const char *suffix;
        uint64_t mult;
    } units[] = {
        {"TIB", 1ull << 40},      {"GIB", 1ull << 30},   {"MIB", 1ull << 20}, {"KIB", 1ull << 10},
        {"TB", 1000000000000ull}, {"GB", 1000000000ull}, {"MB", 1000000ull},  {"KB", 1000ull},
    };
    if (!s || !out) return fm_error_set(err, FM_ERR_INVALID_ARG, "size: no string or no output");
    size_t len = strlen(s);
    uint64_t mult = 1, v = 0;
    bool bits = false;
    size_t num_len = len;
    for (size_t u = 0; u < sizeof units / sizeof units[0]; u++) {
        if (!suffix_ci(s, len, units[u].suffix)) continue;
        mult = units[u].mult;
        num_len = len - strlen(units[u].suffix);
        bits = units[u].suffix[1] == 'B' && s[len - 1] == 'b'; /* "5Gb": bits, decimal units only */
        break;
    }
    fm_status st = parse_count(s, num_len, s, &v, err);
    if (st != FM_OK) return st;
    if (fm_mul_u64(v, mult, &v))
        return fm_error_set(err, FM_ERR_OVERFLOW, "size '%.100s' does not fit 64 bits", s);
    *out = bits ? v / 8 : v;
    return FM_OK;
}

void fm_save_options_init(fm_save_options *o) {
    if (!o) return;
    memset(o, 0, sizeof *o);
    o->max_shard_size = FM_DEFAULT_MAX_SHARD_SIZE;
    o->write_total_parameters = true;
}

/* ---- names ----------------------------------------------------------------------------- */

/* "model-" 5+ digits "-of-" 5+ digits ".safetensors" */
static bool is_shard_pattern(const char *name) {
    const char *p = name;
    if (strncmp(p, "model-", 6) != 0) return false;
    p += 6;
    size_t d = strspn(p, "0123456789");
    if (d < 5 || strncmp(p + d, "-of-", 4) != 0) return false;
    p += d + 4;
    d = strspn(p, "0123456789");
    return d >= 5 && strcmp(p + d, ".safetensors") == 0;
}

static bool is_weights_name(const char *name) {
    return !strcmp(name, SAVE_WEIGHTS) || !strcmp(name, SAVE_INDEX) || is_shard_pattern(name);
}

static bool is_bare_name(const char *name) {
    return name[0] && strcmp(name, ".") && strcmp(name, "..") && !strchr(name, '/') &&
           strlen(name) <= NAME_MAX;
}

static fm_status check_extras(const fm_extra_file *extra, size_t n_extra, fm_error *err) {
    if (n_extra > 0 && !extra)
        return fm_error_set(err, FM_ERR_INVALID_ARG, "%zu extra files but no array", n_extra);
    for (size_t i = 0; i < n_extra; i++) {
        const char *name = extra[i].name;
        if (!name || !is_bare_name(name))
            return fm_error_set(err, FM_ERR_INVALID_ARG,
                                "extra file #%zu: '%.200s' is not a bare file name", i,
                                name ? name : "(null)");
        if (is_weights_name(name))
            return fm_error_set(err, FM_ERR_INVALID_ARG,
                                "extra file '%.200s': name reserved for weights", name);
        if (extra[i].len > 0 && !extra[i].data)
            return fm_error_set(err, FM_ERR_INVALID_ARG, "extra file '%.200s': no data", name);
        for (size_t j = 0; j < i; j++)
            if (!strcmp(extra[j].name, name))
                return fm_error_set(err, FM_ERR_INVALID_ARG, "extra file '%.200s' given twice",
                                    name);
    }
    return FM_OK;
}

/* ---- the plan: shard assignment, per-shard items, index text ---------------------------- */
typedef struct save_plan {
    uint32_t n_shards;
    char (*shard_names)[64]; /* fm_malloc'd, n_shards names */
    fm_st_item *grouped;     /* fm_malloc'd: items grouped by shard, state-dict order inside */
    size_t *shard_start;     /* fm_malloc'd, n_shards + 1 offsets into grouped */
    char *index;             /* fm_malloc'd index text; NULL with a single shard */
    size_t index_len;
} save_plan;

static void plan_free(save_plan *p) {
    fm_free(p->shard_names);
    fm_free(p->grouped);
    fm_free(p->shard_start);
    fm_free(p->index);
    memset(p, 0, sizeof *p);
}

/* huggingface_hub's greedy split: a tensor above the limit becomes its own shard at once (the
 * open shard stays open); otherwise the open shard is closed when adding would exceed the limit
 * (strictly greater). Shard ids follow the order shards are closed. */
static uint32_t split_greedy(const fm_st_item *items, size_t n, uint64_t max, uint32_t *shard_of) {
    uint32_t next = 0;
    uint64_t cur = 0;
    size_t open_from = 0, open_count = 0; /* the open shard: items with shard_of == UINT32_MAX */
    for (size_t i = 0; i < n; i++) {
        uint64_t sz = items[i].tensor->nbytes;
        if (sz > max) {
            shard_of[i] = next++;
            continue;
        }
        if (open_count > 0 && (sz > max - cur)) {
            for (size_t j = open_from; j < i; j++)
                if (shard_of[j] == UINT32_MAX) shard_of[j] = next;
            next++;
            cur = 0;
            open_count = 0;
        }
        if (open_count == 0) open_from = i;
        shard_of[i] = UINT32_MAX;
        cur += sz;
        open_count++;
    }
    if (open_count > 0 || next == 0) {
        for (size_t j = open_from; j < n; j++)
            if (shard_of[j] == UINT32_MAX) shard_of[j] = next;
        next++;
    }
    return next;
}

/* Groups items by shard (counting sort keeps state-dict order) and names the shards. */
static fm_status plan_group(const fm_st_item *items, size_t n, const uint32_t *shard_of,
                            save_plan *p, fm_error *err) {
    p->shard_names = fm_calloc(p->n_shards, sizeof *p->shard_names);
    p->shard_start = fm_calloc((size_t)p->n_shards + 1, sizeof *p->shard_start);
    p->grouped = fm_calloc(n ? n : 1, sizeof *p->grouped);
    if (!p->shard_names || !p->shard_start || !p->grouped)
        return fm_error_set(err, FM_ERR_NOMEM, "out of memory planning %u shards", p->n_shards);
    for (size_t i = 0; i < n; i++)
        p->shard_start[shard_of[i] + 1]++;
    for (uint32_t s = 0; s < p->n_shards; s++)
        p->shard_start[s + 1] += p->shard_start[s];
    for (size_t i = 0; i < n; i++)
        p->grouped[p->shard_start[shard_of[i]]++] = items[i];
    for (uint32_t s = p->n_shards; s > 0; s--)
        p->shard_start[s] = p->shard_start[s - 1];
    p->shard_start[0] = 0;
    for (uint32_t s = 0; s < p->n_shards; s++) {
        if (p->n_shards == 1)
            snprintf(p->shard_names[s], 64, SAVE_WEIGHTS);
        else
            snprintf(p->shard_names[s], 64, "model-%05u-of-%05u.safetensors", s + 1, p->n_shards);
    }
    return FM_OK;
}

/* A growing text buffer; `failed` is sticky after an allocation failure. */
typedef struct sbuf {
    char *buf;
    size_t len, cap;
    bool failed;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n) {
    if (b->failed) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *nb = fm_realloc(b->buf, cap);
        if (!nb) {
            b->failed = true;
            return;
        }
        b->buf = nb;
        b->cap = cap;
    }
    memcpy(b->buf + b->len, s, n);
    b->len += n;
    b->buf[b->len] = '\0';
}

static void sb_lit(sbuf *b, const char *s) {
    sb_put(b, s, strlen(s));
}

/* Decodes one UTF-8 sequence (input validated by the writer); returns its length. */
static size_t utf8_next(const unsigned char *s, size_t n, uint32_t *cp) {
    unsigned c = s[0];
    size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : 4;
    if (len > n) len = n;
    uint32_t v = len == 1 ? c : len == 2 ? (c & 0x1f) : len == 3 ? (c & 0x0f) : (c & 0x07);
    for (size_t k = 1; k < len; k++)
        v = (v << 6) | (s[k] & 0x3f);
    *cp = v;
    return len;
}

/* Python json.dumps(ensure_ascii=True) string: \" \\ \n \r \t \b \f, everything else outside
 * ' '..'~' as \uxxxx (lowercase), astral code points as surrogate pairs. */
static void sb_json_string(sbuf *b, const char *s) {
    const unsigned char *u = (const unsigned char *)s;
    size_t n = strlen(s), i = 0;
    sb_put(b, "\"", 1);
    while (i < n) {
        uint32_t cp;
        size_t len = utf8_next(u + i, n - i, &cp);
        char esc[16];
        const char *e = cp == '"'    ? "\\\""
                        : cp == '\\' ? "\\\\"
                        : cp == '\n' ? "\\n"
                        : cp == '\r' ? "\\r"
                        : cp == '\t' ? "\\t"
                        : cp == 0x08 ? "\\b"
                        : cp == 0x0c ? "\\f"
                                     : NULL;
        if (e)
            sb_lit(b, e);
        else if (cp >= 0x20 && cp <= 0x7e)
            sb_put(b, (const char *)u + i, 1);
        else if (cp < 0x10000) {
            snprintf(esc, sizeof esc, "\\u%04x", (unsigned)cp);
            sb_lit(b, esc);
        } else {
            uint32_t v = cp - 0x10000;
            snprintf(esc, sizeof esc, "\\u%04x\\u%04x", (unsigned)(0xd800 + (v >> 10)),
                     (unsigned)(0xdc00 + (v & 0x3ff)));
            sb_lit(b, esc);
        }
        i += len;
    }
    sb_put(b, "\"", 1);
}

typedef struct name_ref {
    const char *name;
    uint32_t shard;
} name_ref;

static int cmp_name_ref(const void *pa, const void *pb) {
    return strcmp(((const name_ref *)pa)->name, ((const name_ref *)pb)->name);
}

/* Sorted (name, shard) pairs; FM_ERR_DUPLICATE_TENSOR for a name given twice. *out: fm_free. */
static fm_status sorted_names(const fm_st_item *items, size_t n, const uint32_t *shard_of,
                              name_ref **out, fm_error *err) {
    name_ref *r = fm_malloc((n ? n : 1) * sizeof *r);
    if (!r) return fm_error_set(err, FM_ERR_NOMEM, "out of memory sorting %zu tensor names", n);
    for (size_t i = 0; i < n; i++)
        r[i] = (name_ref){items[i].name, shard_of[i]};
    qsort(r, n, sizeof *r, cmp_name_ref);
    for (size_t i = 1; i < n; i++) {
        if (strcmp(r[i - 1].name, r[i].name) == 0) {
            const char *dup = r[i].name; /* borrowed from the caller's items */
            fm_free(r);
            return fm_error_set(err, FM_ERR_DUPLICATE_TENSOR, "tensor '%.200s' given twice", dup);
        }
    }
    *out = r;
    return FM_OK;
}

/* The index as transformers writes it: json.dumps(indent=2, sort_keys=True) + "\n". */
static fm_status build_index(const name_ref *names, size_t n, const save_plan *p,
                             uint64_t total_params, bool with_params, uint64_t total_size,
                             char **out, size_t *out_len, fm_error *err) {
    sbuf b = {0};
    char num[32];
    sb_lit(&b, "{\n  \"metadata\": {\n");
    if (with_params) {
        snprintf(num, sizeof num, "%llu", (unsigned long long)total_params);
        sb_lit(&b, "    \"total_parameters\": ");
        sb_lit(&b, num);
        sb_lit(&b, ",\n");
    }
    snprintf(num, sizeof num, "%llu", (unsigned long long)total_size);
    sb_lit(&b, "    \"total_size\": ");
    sb_lit(&b, num);
    sb_lit(&b, "\n  },\n  \"weight_map\": {");
    for (size_t i = 0; i < n; i++) {
        sb_lit(&b, i ? ",\n    " : "\n    ");
        sb_json_string(&b, names[i].name);
        sb_lit(&b, ": ");
        sb_json_string(&b, p->shard_names[names[i].shard]);
    }
    sb_lit(&b, n ? "\n  }\n}\n" : "}\n}\n");
    if (b.failed) {
        fm_free(b.buf);
        return fm_error_set(err, FM_ERR_NOMEM, "out of memory writing the shard index");
    }
    *out = b.buf;
    *out_len = b.len;
    return FM_OK;
}

static const fm_st_kv pt_meta[] = {{"format", "pt"}};

static void shard_write_options(fm_st_write_options *wo) {
    fm_st_write_options_init(wo);
    wo->metadata = pt_meta;
    wo->n_metadata = 1;
}

/* Validates every shard by serialising its header (nothing touches the file system). */
static fm_status plan_validate_shards(const save_plan *p, fm_error *err) {
    fm_st_write_options wo;
    shard_write_options(&wo);
    for (uint32_t s = 0; s < p->n_shards; s++) {
        uint8_t *hdr = NULL;
        uint64_t hl = 0;
        size_t a = p->shard_start[s], z = p->shard_start[s + 1];
        fm_status st = fm_st_serialize_header(p->grouped + a, z - a, &wo, &hdr, &hl, err);
        fm_free(hdr);
        if (st != FM_OK) {
            fm_error_prefix(err, "shard '%s'", p->shard_names[s]);
            return st;
        }
    }
    return FM_OK;
}

static fm_status check_items(const fm_st_item *items, size_t n, uint64_t *params, uint64_t *bytes,
                             fm_error *err) {
    if (n > 0 && !items)
        return fm_error_set(err, FM_ERR_INVALID_ARG, "%zu tensors but no item array", n);
    *params = 0;
    *bytes = 0;
    for (size_t i = 0; i < n; i++) {
        if (!items[i].name || !items[i].tensor)
            return fm_error_set(err, FM_ERR_INVALID_ARG, "tensor #%zu: no name or no tensor", i);
        if (fm_add_u64(*params, fm_tensor_numel(items[i].tensor), params) ||
            fm_add_u64(*bytes, items[i].tensor->nbytes, bytes))
            return fm_error_set(err, FM_ERR_OVERFLOW, "total size overflows at tensor '%.200s'",
                                items[i].name);
    }
    return FM_OK;
}

/* A caller-given assignment: every index in range, every shard used. */
static fm_status fixed_split(const fm_save_options *o, size_t n, uint32_t *shard_of,
                             fm_error *err) {
    if (o->n_shards == 0 || o->n_shards > n)
        return fm_error_set(err, FM_ERR_INVALID_ARG,
                            "fixed shard layout: %u shards for %zu tensors", o->n_shards, n);
    uint8_t *used = fm_calloc(o->n_shards, 1);
    if (!used) return fm_error_set(err, FM_ERR_NOMEM, "out of memory planning shards");
    fm_status st = FM_OK;
    for (size_t i = 0; st == FM_OK && i < n; i++) {
        if (o->shard_of[i] >= o->n_shards)
            st = fm_error_set(err, FM_ERR_INVALID_ARG,
                              "fixed shard layout: tensor %zu in shard %u of %u", i, o->shard_of[i],
                              o->n_shards);
        else
            used[o->shard_of[i]] = 1, shard_of[i] = o->shard_of[i];
    }
    for (uint32_t s = 0; st == FM_OK && s < o->n_shards; s++)
        if (!used[s])
            st = fm_error_set(err, FM_ERR_INVALID_ARG, "fixed shard layout: shard %u is empty",
                              s + 1);
    fm_free(used);
    return st;
}

/* Everything decided before touching the file system. */
static fm_status plan_build(const fm_st_item *items, size_t n, const fm_save_options *o,
                            save_plan *p, fm_error *err) {
    uint64_t params = 0, bytes = 0;
    name_ref *names = NULL;
    memset(p, 0, sizeof *p);
    fm_status st = check_items(items, n, &params, &bytes, err);
    if (st != FM_OK) return st;
    uint32_t *shard_of = fm_malloc((n ? n : 1) * sizeof *shard_of);
    if (!shard_of) return fm_error_set(err, FM_ERR_NOMEM, "out of memory planning shards");
    if (o->shard_of) {
        st = fixed_split(o, n, shard_of, err);
        p->n_shards = o->n_shards;
    } else {
        p->n_shards = split_greedy(items, n, o->max_shard_size, shard_of);
    }
    if (st == FM_OK) st = plan_group(items, n, shard_of, p, err);
    if (st == FM_OK) st = sorted_names(items, n, shard_of, &names, err);
    if (st == FM_OK) st = plan_validate_shards(p, err);
    if (st == FM_OK && p->n_shards > 1)
        st = build_index(names, n, p, o->total_parameters ? o->total_parameters : params,
                         o->write_total_parameters, bytes, &p->index, &p->index_len, err);
    fm_free(names);
    fm_free(shard_of);
    if (st != FM_OK) plan_free(p);
    return st;
}

/* ---- the target directory --------------------------------------------------------------- */
typedef struct save_fs {
    char target[PATH_MAX]; /* absolute, symlinks resolved */
    char *parent;          /* fm_malloc'd */
    const char *base;      /* into target */
    bool exists;
    mode_t mode;   /* permission bits of the existing directory */
    char *staging; /* fm_malloc'd path of the staging directory */
    char *backup;  /* fm_malloc'd; fallback commit only */
} save_fs;

/* DIR does not exist yet: its parent must; target = realpath(parent) + "/" + last component. */
static fm_status resolve_new(const char *dir, save_fs *fs, fm_error *err) {
    char tmp[PATH_MAX], real_parent[PATH_MAX];
    if (snprintf(tmp, sizeof tmp, "%s", dir) >= (int)sizeof tmp)
        return fm_error_set(err, FM_ERR_INVALID_ARG, "save to '%.200s': path too long", dir);
    size_t l = strlen(tmp);
    while (l > 1 && tmp[l - 1] == '/')
        tmp[--l] = '\0';
    char *slash = strrchr(tmp, '/');
    const char *leaf = slash ? slash + 1 : tmp;
    if (!is_bare_name(leaf))
        return fm_error_set(err, FM_ERR_INVALID_ARG, "save to '%s': does not name a directory",
                            dir);
    if (slash) *slash = '\0';
    const char *par = slash ? (slash == tmp ? "/" : tmp) : ".";
    if (!realpath(par, real_parent))
        return fm_error_set(err, FM_ERR_NOT_FOUND, "save to '%s': parent directory '%s': %s", dir,
                            par, ERRSTR(errno));
    if (snprintf(fs->target, sizeof fs->target, "%s/%s",
                 strcmp(real_parent, "/") ? real_parent : "", leaf) >= (int)sizeof fs->target)
        return fm_error_set(err, FM_ERR_INVALID_ARG, "save to '%.200s': path too long", dir);
    return FM_OK;
}

/* Resolves DIR to an absolute path (realpath of DIR when it exists, else of its parent) and
 * splits it into parent and base name. A symlink to a directory resolves to its target, which
 * is what gets replaced. */
static fm_status resolve_target(const char *dir, save_fs *fs, fm_error *err) {
    struct stat sb;
    if (stat(dir, &sb) == 0) {
        if (!S_ISDIR(sb.st_mode))
            return fm_error_set(err, FM_ERR_EXISTS, "save to '%s': exists and is not a directory",
                                dir);
        if (!realpath(dir, fs->target))
            return fm_error_set(err, FM_ERR_IO, "save to '%s': %s", dir, ERRSTR(errno));
        fs->exists = true;
        fs->mode = sb.st_mode & 07777;
    } else if (errno == ENOENT) {
        fm_status st = resolve_new(dir, fs, err);
        if (st != FM_OK) return st;
    } else {
        return fm_error_set(err, FM_ERR_IO, "save to '%s': %s", dir, ERRSTR(errno));
    }
    char *slash = strrchr(fs->target, '/');
    fs->base = slash + 1;
    if (!*fs->base)
        return fm_error_set(err, FM_ERR_INVALID_ARG,
                            "save to '%s': cannot replace the root directory", dir);
    /* A read-only checkpoint directory is not replaced behind its owner's back. */
    if (fs->exists && access(fs->target, W_OK) != 0)
        return fm_error_set(err, FM_ERR_IO, "save to '%s': directory is not writable: %s", dir,
                            ERRSTR(errno));
    fs->parent =
        slash == fs->target ? fm_strdup("/") : fm_strndup(fs->target, (size_t)(slash - fs->target));
    if (!fs->parent) return fm_error_set(err, FM_ERR_NOMEM, "save to '%s': out of memory", dir);
    return FM_OK;
}

/* ---- carrying old files over ----------------------------------------------------------- */
typedef struct name_list {
    char **v; /* fm_malloc'd strings */
    size_t n;
} name_list;

static void names_free(name_list *l) {
    for (size_t i = 0; i < l->n; i++)
        fm_free(l->v[i]);
    fm_free(l->v);
    l->v = NULL;
    l->n = 0;
}

static bool names_has(const name_list *l, const char *s) {
    for (size_t i = 0; i < l->n; i++)
        if (!strcmp(l->v[i], s)) return true;
    return false;
}

static fm_status names_add(name_list *l, const char *s, fm_error *err) {
    char **v = fm_realloc(l->v, (l->n + 1) * sizeof *v);
    if (!v) return fm_error_set(err, FM_ERR_NOMEM, "out of memory listing files");
    l->v = v;
    if (!(l->v[l->n] = fm_strdup(s)))
        return fm_error_set(err, FM_ERR_NOMEM, "out of memory listing files");
    l->n++;
    return FM_OK;
}

/* Entries of a directory except . and .. (readdir order). */
static fm_status list_dir(const char *path, name_list *out, fm_error *err) {
    int fd;
    fm_status st = fm_fs_open_dir(path, &fd, err);
    if (st != FM_OK) return st;
    DIR *d = fdopendir(fd);
    if (!d) {
        close(fd);
        return fm_error_set(err, FM_ERR_IO, "list '%s': %s", path, ERRSTR(errno));
    }
    struct dirent *e;
    errno = 0;
    while (st == FM_OK && (e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) st = names_add(out, e->d_name, err);
        errno = 0;
    }
    if (st == FM_OK && errno != 0)
        st = fm_error_set(err, FM_ERR_IO, "list '%s': %s", path, ERRSTR(errno));
    closedir(d);
    if (st != FM_OK) names_free(out);
    return st;
}

/* Shard names of the old index (bare names ending in .safetensors). An index that is not JSON
 * is ignored: its standard-named shards still match the pattern; a read failure is an error. */
static fm_status old_index_shards(const char *target, name_list *out, fm_error *err) {
    char *path = fm_fs_join(target, SAVE_INDEX), *text = NULL;
    size_t len = 0;
    struct stat sb;
    if (!path) return fm_error_set(err, FM_ERR_NOMEM, "out of memory");
    if (stat(path, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        fm_free(path);
        return FM_OK;
    }
    fm_status st = fm_fs_read_file(path, SAVE_MAX_OLD_INDEX, &text, &len, err);
    fm_free(path);
    if (st != FM_OK) return st;
    json_t *root = json_loadb(text, len, 0, NULL);
    json_t *map = root ? json_object_get(root, "weight_map") : NULL;
    const char *key;
    json_t *val;
    if (json_is_object(map)) {
        json_object_foreach(map, key, val) {
            const char *s = json_string_value(val);
            size_t sl = s ? strlen(s) : 0;
            if (!s || !is_bare_name(s) || sl < 12 || strcmp(s + sl - 12, ".safetensors") ||
                names_has(out, s))
                continue;
            if ((st = names_add(out, s, err)) != FM_OK) break;
        }
    }
    json_decref(root);
    fm_free(text);
    return st;
}

static fm_status carry_entry(const char *src, const char *dst, int depth, fm_error *err);

/* mkdir (owner-writable while filling), carry every entry, then the original mode and fsync. */
static fm_status carry_dir(const char *src, const char *dst, mode_t mode, int depth,
                           fm_error *err) {
    if (depth >= SAVE_MAX_DEPTH)
        return fm_error_set(err, FM_ERR_LIMIT, "carry over '%s': more than %d nested directories",
                            src, SAVE_MAX_DEPTH);
    name_list kids = {0};
    fm_status st = fm_fs_mkdir(dst, 0700, err);
    if (st == FM_OK) st = list_dir(src, &kids, err);
    for (size_t i = 0; st == FM_OK && i < kids.n; i++) {
        char *s = fm_fs_join(src, kids.v[i]), *d = fm_fs_join(dst, kids.v[i]);
        st = s && d ? carry_entry(s, d, depth + 1, err)
                    : fm_error_set(err, FM_ERR_NOMEM, "out of memory");
        fm_free(s);
        fm_free(d);
    }
    names_free(&kids);
    if (st == FM_OK && chmod(dst, mode) != 0)
        st = fm_error_set(err, FM_ERR_IO, "chmod '%s': %s", dst, ERRSTR(errno));
    if (st == FM_OK) st = fm_fs_fsync_dir(dst, err);
    return st;
}

/* Regular files: hard link (copy where refused); symlinks: recreated; directories: recursively. */
static fm_status carry_entry(const char *src, const char *dst, int depth, fm_error *err) {
    struct stat sb;
    if (lstat(src, &sb) != 0)
        return fm_error_set(err, FM_ERR_IO, "carry over '%s': %s", src, ERRSTR(errno));
    if (S_ISREG(sb.st_mode)) return fm_fs_link_or_copy(src, dst, err);
    if (S_ISDIR(sb.st_mode)) return carry_dir(src, dst, sb.st_mode & 07777, depth, err);
    if (S_ISLNK(sb.st_mode)) {
        char target[PATH_MAX];
        ssize_t n = readlink(src, target, sizeof target - 1);
        if (n < 0) return fm_error_set(err, FM_ERR_IO, "readlink '%s': %s", src, ERRSTR(errno));
        target[n] = '\0';
        return fm_fs_symlink(target, dst, err);
    }
    return fm_error_set(err, FM_ERR_UNSUPPORTED,
                        "carry over '%s': not a regular file, directory or symbolic link", src);
}

static bool is_extra_name(const fm_extra_file *extra, size_t n_extra, const char *name) {
    for (size_t i = 0; i < n_extra; i++)
        if (!strcmp(extra[i].name, name)) return true;
    return false;
}

/* Links into staging every entry of the old directory except old weights and replaced extras. */
static fm_status carry_old(const save_fs *fs, const fm_extra_file *extra, size_t n_extra,
                           fm_error *err) {
    name_list old_shards = {0}, entries = {0};
    fm_status st = old_index_shards(fs->target, &old_shards, err);
    if (st == FM_OK) st = list_dir(fs->target, &entries, err);
    for (size_t i = 0; st == FM_OK && i < entries.n; i++) {
        const char *name = entries.v[i];
        if (is_weights_name(name) || names_has(&old_shards, name) ||
            is_extra_name(extra, n_extra, name))
            continue;
        char *s = fm_fs_join(fs->target, name), *d = fm_fs_join(fs->staging, name);
        st = s && d ? carry_entry(s, d, 0, err) : fm_error_set(err, FM_ERR_NOMEM, "out of memory");
        fm_free(s);
        fm_free(d);
    }
    names_free(&entries);
    names_free(&old_shards);
    return st;
}

/* ---- writing the new files ---------------------------------------------------------------- */

/* Creates staging/NAME (O_EXCL), writes shard `shard` of the plan or, when `blob` is given, its
 * bytes; then fsyncs and closes it. */
static fm_status write_new_file(const char *staging, const char *name, const save_plan *p,
                                uint32_t shard, const fm_extra_file *blob, fm_error *err) {
    char *path = fm_fs_join(staging, name);
    if (!path) return fm_error_set(err, FM_ERR_NOMEM, "out of memory");
    int fd;
    fm_status st = fm_fs_open(path, O_WRONLY | O_CREAT | O_EXCL, 0666, &fd, err);
    if (st != FM_OK) {
        fm_free(path);
        return st;
    }
    if (blob) {
        st = fm_fs_write_all(fd, blob->data, (size_t)blob->len, path, err);
    } else {
        fm_st_write_options wo;
        shard_write_options(&wo);
        size_t a = p->shard_start[shard], z = p->shard_start[shard + 1];
        st = fm_st_write_fd(fd, path, p->grouped + a, z - a, &wo, err);
    }
    if (st == FM_OK) st = fm_fs_fsync(fd, path, err);
    fm_status cst = fm_fs_close(fd, path, st == FM_OK ? err : NULL);
    fm_free(path);
    return st == FM_OK ? cst : st;
}

static fm_status write_new(const save_fs *fs, const save_plan *p, const fm_extra_file *extra,
                           size_t n_extra, fm_error *err) {
    fm_status st = FM_OK;
    for (uint32_t s = 0; st == FM_OK && s < p->n_shards; s++)
        st = write_new_file(fs->staging, p->shard_names[s], p, s, NULL, err);
    if (st == FM_OK && p->index) {
        fm_extra_file idx = {SAVE_INDEX, p->index, p->index_len};
        st = write_new_file(fs->staging, SAVE_INDEX, p, 0, &idx, err);
    }
    for (size_t i = 0; st == FM_OK && i < n_extra; i++)
        st = write_new_file(fs->staging, extra[i].name, p, 0, &extra[i], err);
    return st;
}

/* Fills the staging directory and makes it durable; the target is untouched. */
static fm_status stage(const save_fs *fs, const save_plan *p, const fm_extra_file *extra,
                       size_t n_extra, fm_error *err) {
    fm_status st = FM_OK;
    if (fs->exists) st = carry_old(fs, extra, n_extra, err);
    if (st == FM_OK) st = write_new(fs, p, extra, n_extra, err);
    if (st == FM_OK && fs->exists && chmod(fs->staging, fs->mode) != 0)
        st = fm_error_set(err, FM_ERR_IO, "chmod '%s': %s", fs->staging, ERRSTR(errno));
    if (st == FM_OK) st = fm_fs_fsync_dir(fs->staging, err);
    return st;
}

/* ---- commit ------------------------------------------------------------------------------ */
typedef enum commit_kind { COMMIT_FRESH, COMMIT_EXCHANGE, COMMIT_FALLBACK } commit_kind;

/* Without RENAME_EXCHANGE: target -> backup, staging -> target. Between the two renames the
 * target name is briefly absent (documented in docs/saving.md). */
static fm_status commit_fallback(save_fs *fs, fm_error *err) {
    fs->backup = fm_fs_temp_name(fs->parent, fs->base, "old-");
    if (!fs->backup) return fm_error_set(err, FM_ERR_NOMEM, "out of memory");
    fm_status st = fm_fs_rename_noreplace(fs->target, fs->backup, err);
    if (st != FM_OK) return st;
    st = fm_fs_rename_noreplace(fs->staging, fs->target, err);
    if (st != FM_OK && rename(fs->backup, fs->target) != 0)
        fm_error_prefix(err, "the previous contents of '%s' are in '%s'", fs->target, fs->backup);
    return st;
}

static fm_status commit(save_fs *fs, commit_kind *kind, fm_error *err) {
    if (!fs->exists) {
        *kind = COMMIT_FRESH;
        return fm_fs_rename_noreplace(fs->staging, fs->target, err);
    }
    *kind = COMMIT_EXCHANGE;
    fm_status st = fm_fs_exchange(fs->staging, fs->target, err);
    if (st != FM_ERR_UNSUPPORTED) return st;
    *kind = COMMIT_FALLBACK;
    return commit_fallback(fs, err);
}

/* Puts the previous state back after a committed save whose parent fsync failed; afterwards the
 * staging path holds the new tree. Returns -1 when that was impossible: the new tree then stays
 * in place. Raw calls: undo work is never fault-injected. */
static int roll_back(const save_fs *fs, commit_kind kind) {
    if (kind == COMMIT_EXCHANGE) return fm_fs_exchange_nofault(fs->staging, fs->target);
    if (rename(fs->target, fs->staging) != 0) return -1;
    if (kind == COMMIT_FALLBACK && rename(fs->backup, fs->target) != 0) {
        (void)rename(fs->staging, fs->target);
        return -1;
    }
    return 0;
}

/* Removes the previous tree once the new one is in place (best effort: a leftover is only a
 * hidden sibling). */
static void drop_old(const save_fs *fs, commit_kind kind) {
    if (kind == COMMIT_EXCHANGE) fm_fs_remove_tree(fs->staging);
    if (kind == COMMIT_FALLBACK) fm_fs_remove_tree(fs->backup);
}

/* The whole file-system part; on failure removes what it created and leaves the target as it was.
 */
static fm_status save_fs_run(save_fs *fs, const save_plan *p, const fm_extra_file *extra,
                             size_t n_extra, fm_error *err) {
    fm_status st = fm_fs_create_temp_dir(fs->parent, fs->base, &fs->staging, err);
    if (st != FM_OK) return st;
    commit_kind kind = COMMIT_FRESH;
    st = stage(fs, p, extra, n_extra, err);
    if (st == FM_OK) st = commit(fs, &kind, err);
    if (st != FM_OK) {
        fm_fs_remove_tree(fs->staging);
        return st;
    }
    st = fm_fs_fsync_dir(fs->parent, err);
    if (st != FM_OK) {
        if (roll_back(fs, kind) == 0) {
            fm_fs_remove_tree(fs->staging);
            fm_error_prefix(err, "save to '%s' rolled back", fs->target);
        } else {
            drop_old(fs, kind);
            fm_error_prefix(err, "save to '%s' is in place but may not be durable", fs->target);
        }
        return st;
    }
    drop_old(fs, kind);
    return FM_OK;
}

fm_status fm_checkpoint_save(const char *dir, const fm_st_item *items, size_t n,
                             const fm_extra_file *extra, size_t n_extra, const fm_save_options *o,
                             fm_error *err) {
    fm_save_options defaults;
    fm_save_options_init(&defaults);
    if (!o) o = &defaults;
    if (!dir || !*dir) return fm_error_set(err, FM_ERR_INVALID_ARG, "save: no directory");
    fm_status st = check_extras(extra, n_extra, err);
    if (st != FM_OK) return st;
    save_plan plan;
    st = plan_build(items, n, o, &plan, err);
    if (st != FM_OK) {
        fm_error_prefix(err, "save to '%s'", dir);
        return st;
    }
    save_fs *fs = fm_calloc(1, sizeof *fs);
    if (!fs) {
        plan_free(&plan);
        return fm_error_set(err, FM_ERR_NOMEM, "save to '%s': out of memory", dir);
    }
    st = resolve_target(dir, fs, err);
    if (st == FM_OK) st = save_fs_run(fs, &plan, extra, n_extra, err);
    fm_free(fs->parent);
    fm_free(fs->staging);
    fm_free(fs->backup);
    fm_free(fs);
    plan_free(&plan);
    return st;
}
