/* Checkpoint directories: `model.safetensors`, or `model.safetensors.index.json` plus the
 * shards it names. The index and the shards must agree exactly (every mapped tensor in its
 * shard, nothing unmapped, nothing in two shards); shard names never leave the directory. */
#include "fusemap/io.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "io/fsutil.h"
#include "io/st_header.h"

#define INDEX_NAME "model.safetensors.index.json"
#define SINGLE_NAME "model.safetensors"
#define INDEX_MAX_BYTES (1ull << 30) /* an index beyond 1 GiB is refused (FM_ERR_LIMIT) */

struct fm_checkpoint {
    char *dir; /* owned */
    bool sharded;
    size_t n_shards;
    char **shard_names;     /* owned: sorted unique file names (bare, relative to dir) */
    fm_st_file **shards;    /* owned: one reader per shard name, same order */
    size_t *shard_base;     /* owned: index of each shard's first entry */
    fm_ckpt_entry *entries; /* owned: shard order, then data offset; names borrowed from shards */
    size_t n;
};

void fm_checkpoint_close(fm_checkpoint *c) {
    if (!c) return;
    for (size_t i = 0; i < c->n_shards; i++) {
        if (c->shards) fm_st_close(c->shards[i]);
        if (c->shard_names) fm_free(c->shard_names[i]);
    }
    fm_free(c->shards);
    fm_free(c->shard_names);
    fm_free(c->shard_base);
    fm_free(c->entries);
    fm_free(c->dir);
    fm_free(c);
}

/* Allocates the per-shard arrays for n shards (names filled by the caller). */
static fm_status alloc_shards(fm_checkpoint *c, size_t n, fm_error *err) {
    c->shard_names = fm_calloc(n ? n : 1, sizeof *c->shard_names);
    c->shards = fm_calloc(n ? n : 1, sizeof *c->shards);
    c->shard_base = fm_calloc(n ? n : 1, sizeof *c->shard_base);
    if (!c->shard_names || !c->shards || !c->shard_base)
        return fm_error_set(err, FM_ERR_NOMEM, "%s: out of memory for %zu shards", c->dir, n);
    c->n_shards = n;
    return FM_OK;
}

/* Flattens every shard's entries (already validated) into c->entries. */
static fm_status build_entries(fm_checkpoint *c, fm_error *err) {
    size_t total = 0;
    for (size_t s = 0; s < c->n_shards; s++) {
        c->shard_base[s] = total;
        total += fm_st_count(c->shards[s]);
    }
    c->entries = fm_calloc(total ? total : 1, sizeof *c->entries);
    if (!c->entries)
        return fm_error_set(err, FM_ERR_NOMEM, "%s: out of memory for %zu tensors", c->dir, total);
    for (size_t s = 0; s < c->n_shards; s++) {
        for (size_t k = 0; k < fm_st_count(c->shards[s]); k++) {
            const fm_st_entry *e = fm_st_entry_at(c->shards[s], k);
            fm_ckpt_entry *o = &c->entries[c->shard_base[s] + k];
            /* A model key is a C string: a name with an embedded NUL (legal in a lone
             * safetensors file) would alias the key before it, so a checkpoint refuses it. */
            if (strlen(e->name) != e->name_len)
                return fm_error_set(
                    err, FM_ERR_HEADER_JSON,
                    "%s: tensor '%s\\u0000...' has a NUL byte in its name (not a usable model key)",
                    fm_st_path(c->shards[s]), e->name);
            o->name = e->name;
            o->shard = c->shard_names[s];
            o->dtype = e->dtype;
            o->shape = e->shape;
            o->nbytes = e->end - e->begin;
            o->shard_index = (uint32_t)s;
            o->index_in_shard = (uint32_t)k;
        }
    }
    c->n = total;
    return FM_OK;
}

static fm_status open_single(fm_checkpoint *c, const char *path, fm_error *err) {
    fm_status st = alloc_shards(c, 1, err);
    if (st != FM_OK) return st;
    if (!(c->shard_names[0] = fm_strdup(SINGLE_NAME)))
        return fm_error_set(err, FM_ERR_NOMEM, "%s: out of memory", c->dir);
    if ((st = fm_st_open(path, &c->shards[0], err)) != FM_OK) return st;
    return build_entries(c, err);
}

/* ---- the index --------------------------------------------------------------------------------
 */

/* Context of one sharded open: the index path (for messages) and its parsed JSON. */
typedef struct index_ctx {
    const char *path; /* borrowed */
    json_t *root;     /* owned */
    json_t *wm;       /* borrowed from root: the weight_map object */
} index_ctx;

static fm_status load_index(index_ctx *x, fm_error *err) {
    char *text;
    size_t len;
    json_error_t je;
    fm_status st = fm_fs_read_file(x->path, INDEX_MAX_BYTES, &text, &len, err);
    if (st != FM_OK) return st;
    x->root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    fm_free(text);
    if (!x->root)
        return fm_error_set(err, FM_ERR_INDEX, "%s:%d:%d: %s", x->path, je.line, je.column,
                            je.text);
    if (!json_is_object(x->root))
        return fm_error_set(err, FM_ERR_INDEX, "%s: top level must be an object", x->path);
    json_t *meta = json_object_get(x->root, "metadata");
    if (meta && !json_is_object(meta))
        return fm_error_set(err, FM_ERR_INDEX, "%s: 'metadata' must be an object", x->path);
    x->wm = json_object_get(x->root, "weight_map");
    if (!x->wm) return fm_error_set(err, FM_ERR_INDEX, "%s: no 'weight_map'", x->path);
    if (!json_is_object(x->wm))
        return fm_error_set(err, FM_ERR_INDEX, "%s: 'weight_map' must be an object", x->path);
    return FM_OK;
}

/* Why a shard name is refused, or NULL: it must be a bare file name inside the directory. */
static const char *bad_shard_name(const char *s) {
    if (!*s) return "empty shard name";
    if (s[0] == '/') return "absolute path";
    if (strchr(s, '/') || strchr(s, '\\')) return "path separator in shard name";
    if (!strcmp(s, ".") || !strcmp(s, "..")) return "'.' or '..' as shard name";
    return NULL;
}

static int cmp_str_ptr(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Checks every weight_map value and fills c->shard_names with the sorted unique names. */
static fm_status collect_shards(fm_checkpoint *c, const index_ctx *x, fm_error *err) {
    size_t n = json_object_size(x->wm), u = 0;
    const char **v = fm_malloc((n ? n : 1) * sizeof *v);
    if (!v) return fm_error_set(err, FM_ERR_NOMEM, "%s: out of memory", x->path);
    const char *key;
    json_t *val;
    size_t i = 0;
    fm_status st = FM_OK;
    json_object_foreach(x->wm, key, val) {
        const char *why = json_is_string(val) ? bad_shard_name(json_string_value(val))
                                              : "shard name is not a string";
        if (why) {
            char q[FM_ST_QUOTE_MAX], sq[FM_ST_QUOTE_MAX];
            const char *sv = json_is_string(val) ? json_string_value(val) : NULL;
            st = fm_error_set(
                err, FM_ERR_INDEX, "%s: weight_map entry for tensor '%s': %s%s%s%s", x->path,
                fm_st_quote_name(q, sizeof q, key, strlen(key)), why, sv ? " '" : "",
                sv ? fm_st_quote_name(sq, sizeof sq, sv, strlen(sv)) : "", sv ? "'" : "");
            break;
        }
        v[i++] = json_string_value(val);
    }
    if (st == FM_OK) {
        qsort(v, n, sizeof *v, cmp_str_ptr);
        for (i = 0; i < n; i++)
            if (i == 0 || strcmp(v[i - 1], v[i])) v[u++] = v[i];
        st = alloc_shards(c, u, err);
    }
    for (i = 0; st == FM_OK && i < u; i++)
        if (!(c->shard_names[i] = fm_strdup(v[i])))
            st = fm_error_set(err, FM_ERR_NOMEM, "%s: out of memory", x->path);
    fm_free(v);
    return st;
}

/* Some tensor the index maps to `shard` (for messages). */
static const char *tensor_of_shard(const index_ctx *x, const char *shard) {
    const char *key;
    json_t *val;
    json_object_foreach(x->wm, key, val) if (!strcmp(json_string_value(val), shard)) return key;
    return "?";
}

static bool under(const char *real, const char *dir) {
    size_t dl = strlen(dir);
    return dl == 1 ? real[0] == '/' : strncmp(real, dir, dl) == 0 && real[dl] == '/';
}

/* The Hugging Face hub cache stores a revision as <repo>/snapshots/<rev>/ whose files are
 * symlinks into <repo>/blobs/. For such a directory, *blobs gets that blobs path. */
static bool hf_cache_blobs(const char *dir_real, char *blobs, size_t n) {
    const char *rev = strrchr(dir_real, '/');
    if (!rev || rev == dir_real) return false;
    size_t plen = (size_t)(rev - dir_real);
    if (plen < 10 || strncmp(dir_real + plen - 10, "/snapshots", 10) != 0) return false;
    int w = snprintf(blobs, n, "%.*s/blobs", (int)(plen - 10), dir_real);
    return w > 0 && (size_t)w < n;
}

/* The shard must resolve (symlinks followed) to a path inside the directory, or inside the
 * hub cache's blobs/ when the directory is a hub cache snapshot. */
static fm_status check_inside(const fm_checkpoint *c, const index_ctx *x, const char *dir_real,
                              size_t s, const char *path, fm_error *err) {
    char real[PATH_MAX];
    const char *shard = c->shard_names[s];
    if (!realpath(path, real))
        return fm_error_set(err, FM_ERR_INDEX, "%s: shard '%s' (listed for tensor '%s') %s",
                            x->path, shard, tensor_of_shard(x, shard),
                            errno == ENOENT ? "does not exist" : "cannot be resolved");
    char blobs[PATH_MAX];
    bool inside = under(real, dir_real) ||
                  (hf_cache_blobs(dir_real, blobs, sizeof blobs) && under(real, blobs));
    if (!inside)
        return fm_error_set(err, FM_ERR_INDEX,
                            "%s: shard '%s' resolves to '%s', outside the checkpoint directory",
                            x->path, shard, real);
    return FM_OK;
}

static fm_status open_shards(fm_checkpoint *c, const index_ctx *x, fm_error *err) {
    char dir_real[PATH_MAX];
    if (!realpath(c->dir, dir_real))
        return fm_error_set(err, FM_ERR_NOT_FOUND, "%s: cannot resolve the checkpoint directory",
                            c->dir);
    for (size_t s = 0; s < c->n_shards; s++) {
        char *path = fm_fs_join(c->dir, c->shard_names[s]);
        if (!path) return fm_error_set(err, FM_ERR_NOMEM, "%s: out of memory", c->dir);
        fm_status st = check_inside(c, x, dir_real, s, path, err);
        if (st == FM_OK)
            st = fm_st_open(path, &c->shards[s], err); /* its message starts with the path */
        fm_free(path);
        if (st != FM_OK) return st;
    }
    return FM_OK;
}

static size_t shard_index(const fm_checkpoint *c, const char *name) {
    size_t lo = 0, hi = c->n_shards;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int r = strcmp(c->shard_names[mid], name);
        if (r == 0) return mid;
        if (r < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return c->n_shards; /* not reached: every weight_map value is a shard name */
}

/* Every weight_map entry must exist in the shard it names. */
static fm_status check_forward(const fm_checkpoint *c, const index_ctx *x, fm_error *err) {
    const char *key;
    json_t *val;
    json_object_foreach(x->wm, key, val) {
        size_t s = shard_index(c, json_string_value(val));
        if (s < c->n_shards && fm_st_find(c->shards[s], key) >= 0) continue;
        char q[FM_ST_QUOTE_MAX];
        return fm_error_set(
            err, FM_ERR_INDEX,
            "%s: tensor '%s' is mapped to shard '%s' but that file does not contain it", x->path,
            fm_st_quote_name(q, sizeof q, key, strlen(key)), json_string_value(val));
    }
    return FM_OK;
}

/* Every shard tensor must be in weight_map, mapped to that very shard (so never in two). */
static fm_status check_reverse(const fm_checkpoint *c, const index_ctx *x, fm_error *err) {
    for (size_t s = 0; s < c->n_shards; s++) {
        for (size_t k = 0; k < fm_st_count(c->shards[s]); k++) {
            const fm_st_entry *e = fm_st_entry_at(c->shards[s], k);
            json_t *v = json_object_getn(x->wm, e->name, e->name_len);
            if (v && !strcmp(json_string_value(v), c->shard_names[s])) continue;
            char q[FM_ST_QUOTE_MAX];
            fm_st_quote_name(q, sizeof q, e->name, e->name_len);
            if (!v)
                return fm_error_set(err, FM_ERR_INDEX,
                                    "%s: tensor '%s' is in shard '%s' but not in weight_map",
                                    x->path, q, c->shard_names[s]);
            return fm_error_set(err, FM_ERR_INDEX,
                                "%s: tensor '%s' is in two shards, '%s' and '%s'", x->path, q,
                                json_string_value(v), c->shard_names[s]);
        }
    }
    return FM_OK;
}

static fm_status open_sharded(fm_checkpoint *c, const char *index_path, fm_error *err) {
    index_ctx x = {.path = index_path};
    c->sharded = true;
    fm_status st = load_index(&x, err);
    if (st == FM_OK) st = collect_shards(c, &x, err);
    if (st == FM_OK) st = open_shards(c, &x, err);
    if (st == FM_OK) st = check_forward(c, &x, err);
    if (st == FM_OK) st = check_reverse(c, &x, err);
    if (st == FM_OK) st = build_entries(c, err);
    json_decref(x.root);
    return st;
}

/* ---- public -----------------------------------------------------------------------------------
 */

/* Which file to open: the index when it exists, else the single file. */
static fm_status choose(fm_checkpoint *c, fm_error *err) {
    struct stat sb;
    char *idx = fm_fs_join(c->dir, INDEX_NAME), *single = fm_fs_join(c->dir, SINGLE_NAME);
    fm_status st;
    if (!idx || !single)
        st = fm_error_set(err, FM_ERR_NOMEM, "%s: out of memory", c->dir);
    else if (stat(idx, &sb) == 0 || errno != ENOENT)
        st = open_sharded(c, idx, err);
    else if (stat(single, &sb) == 0 || errno != ENOENT)
        st = open_single(c, single, err);
    else
        st = fm_error_set(err, FM_ERR_NOT_FOUND, "%s: no %s or %s in this directory", c->dir,
                          SINGLE_NAME, INDEX_NAME);
    fm_free(idx);
    fm_free(single);
    return st;
}

fm_status fm_checkpoint_open(const char *dir, fm_checkpoint **out, fm_error *err) {
    struct stat sb;
    if (!out) return fm_error_set(err, FM_ERR_INVALID_ARG, "fm_checkpoint_open: out is NULL");
    *out = NULL;
    if (!dir) return fm_error_set(err, FM_ERR_INVALID_ARG, "fm_checkpoint_open: dir is NULL");
    if (stat(dir, &sb) != 0)
        return fm_error_set(err, FM_ERR_NOT_FOUND, "%s: no such directory", dir);
    if (!S_ISDIR(sb.st_mode))
        return fm_error_set(err, FM_ERR_NOT_FOUND, "%s: not a directory", dir);
    fm_checkpoint *c = fm_calloc(1, sizeof *c);
    if (c) c->dir = fm_strdup(dir);
    if (!c || !c->dir) {
        fm_free(c);
        return fm_error_set(err, FM_ERR_NOMEM, "%s: out of memory", dir);
    }
    fm_status st = choose(c, err);
    if (st != FM_OK) {
        fm_checkpoint_close(c);
        return st;
    }
    *out = c;
    return FM_OK;
}

const char *fm_checkpoint_dir(const fm_checkpoint *c) {
    return c ? c->dir : NULL;
}
bool fm_checkpoint_is_sharded(const fm_checkpoint *c) {
    return c && c->sharded;
}
size_t fm_checkpoint_count(const fm_checkpoint *c) {
    return c ? c->n : 0;
}
size_t fm_checkpoint_shard_count(const fm_checkpoint *c) {
    return c ? c->n_shards : 0;
}

const fm_ckpt_entry *fm_checkpoint_entry_at(const fm_checkpoint *c, size_t i) {
    return c && i < c->n ? &c->entries[i] : NULL;
}

const fm_st_file *fm_checkpoint_shard(const fm_checkpoint *c, size_t i) {
    return c && i < c->n_shards ? c->shards[i] : NULL;
}

/* Names are unique across shards (checked at open), so the first hit is the only one. */
long fm_checkpoint_find(const fm_checkpoint *c, const char *name) {
    if (!c || !name) return -1;
    for (size_t s = 0; s < c->n_shards; s++) {
        long k = fm_st_find(c->shards[s], name);
        if (k >= 0) return (long)(c->shard_base[s] + (size_t)k);
    }
    return -1;
}

fm_status fm_checkpoint_tensor(const fm_checkpoint *c, size_t i, fm_tensor *out, fm_error *err) {
    if (!out) return fm_error_set(err, FM_ERR_INVALID_ARG, "fm_checkpoint_tensor: out is NULL");
    if (!c || i >= c->n) {
        memset(out, 0, sizeof *out);
        return fm_error_set(err, FM_ERR_INVALID_ARG,
                            "%s: tensor index %zu out of range (%zu tensors)",
                            c ? c->dir : "(null)", i, c ? c->n : (size_t)0);
    }
    return fm_st_tensor(c->shards[c->entries[i].shard_index], c->entries[i].index_in_shard, out,
                        err);
}
