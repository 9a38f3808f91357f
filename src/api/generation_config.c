/* generation_config.json: the transformers GenerationConfig keys fusemap uses (defaults for
 * absent ones), the eos fallback to config.json, user overrides on top, and the mapping onto
 * sampler options and a new-token count. Mapping rules: docs/generation.md. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/testing.h"
#include "fusemap/generate.h"
#include "fusemap/io.h"
#include "io/config_internal.h"

/* transformers' GenerationConfig().max_length; generate treats it as "20 new tokens". */
#define HF_DEFAULT_MAX_LENGTH 20

void fm_generation_config_init(fm_generation_config *c) {
    memset(c, 0, sizeof *c);
    c->do_sample = false;
    c->temperature = 1.0;
    c->top_k = 50;
    c->top_p = 1.0;
    c->min_p = 0.0;
    c->repetition_penalty = 1.0;
    c->max_length = HF_DEFAULT_MAX_LENGTH;
    c->max_new_tokens = 0;
    c->eos_source = FM_EOS_NONE;
    c->bos_token_id = -1;
    c->pad_token_id = -1;
    c->seed = FM_SAMPLING_DEFAULT_SEED;
}

void fm_generation_overrides_init(fm_generation_overrides *o) {
    memset(o, 0, sizeof *o);
    o->temperature = 1.0;
    o->top_k = 50;
    o->top_p = 1.0;
    o->repetition_penalty = 1.0;
    o->seed = FM_SAMPLING_DEFAULT_SEED;
}

/* ---- reading a small JSON file ------------------------------------------------------------ */

/* Reads a regular file of at most `limit` bytes into a parsed config (*out: caller frees).
 * A missing file sets *absent and returns FM_OK. Opened non-blocking so a FIFO cannot hang. */
static fm_status load_json(const char *path, size_t limit, fm_config **out, bool *absent,
                           fm_error *err) {
    struct stat sb;
    *out = NULL;
    *absent = false;
    int fd = fm_fault_hit(FM_FAULT_OPEN) ? (errno = EIO, -1)
                                         : open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0 && errno == ENOENT) {
        *absent = true;
        return FM_OK;
    }
    if (fd < 0) return fm_error_set(err, FM_ERR_IO, "open '%s': %s", path, strerror(errno));
    fm_status st = FM_OK;
    char *buf = NULL;
    size_t len = 0;
    if (fstat(fd, &sb) != 0)
        st = fm_error_set(err, FM_ERR_IO, "stat '%s': %s", path, strerror(errno));
    else if (!S_ISREG(sb.st_mode))
        st = fm_error_set(err, FM_ERR_IO, "%s: not a regular file", path);
    else if ((uint64_t)sb.st_size > limit)
        st = fm_error_set(err, FM_ERR_LIMIT, "%s: %lld bytes exceed the limit of %zu bytes", path,
                          (long long)sb.st_size, limit);
    size_t cap = st == FM_OK ? (size_t)sb.st_size + 1 : 0;
    if (st == FM_OK && !(buf = fm_malloc(cap)))
        st = fm_error_set(err, FM_ERR_NOMEM, "%s: out of memory reading", path);
    while (st == FM_OK && len < cap) {
        ssize_t r = read(fd, buf + len, cap - len);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) st = fm_error_set(err, FM_ERR_IO, "read '%s': %s", path, strerror(errno));
        if (r <= 0) break;
        len += (size_t)r;
    }
    close(fd);
    if (st == FM_OK && len == cap) /* more bytes than fstat reported: it is being written */
        st = fm_error_set(err, FM_ERR_IO, "%s: file grew while being read", path);
    if (st == FM_OK) st = fm_config_parse(buf, len, path, out, err);
    fm_free(buf);
    if (st == FM_OK && fm_config_root_type(*out) != FM_JSON_OBJECT) {
        fm_config_free(*out);
        *out = NULL;
        st = fm_error_set(err, FM_ERR_CONFIG, "%s: the top level is not a JSON object", path);
    }
    return st;
}

/* ---- typed keys ------------------------------------------------------------------------------
 * Each reader leaves *out alone when the key is absent, stores `null_value` for null, and
 * otherwise requires the JSON type (fm_config's errors name the file and key) and the range. */

static fm_status key_bool(const fm_config *j, const char *key, bool null_value, bool *out,
                          fm_error *err) {
    fm_json_type t = fm_config_type(j, key);
    if (t == FM_JSON_ABSENT) return FM_OK;
    if (t == FM_JSON_NULL) {
        *out = null_value;
        return FM_OK;
    }
    return fm_config_get_bool(j, key, out, err);
}

/* A number in [lo, hi]; lo excluded when lo_open. */
static fm_status key_real(const fm_config *j, const char *path, const char *key, double null_value,
                          double lo, bool lo_open, double hi, double *out, fm_error *err) {
    double v;
    fm_json_type t = fm_config_type(j, key);
    if (t == FM_JSON_ABSENT) return FM_OK;
    if (t == FM_JSON_NULL) {
        *out = null_value;
        return FM_OK;
    }
    fm_status st = fm_config_get_double(j, key, &v, err);
    if (st != FM_OK) return st;
    if (!isfinite(v) || v < lo || (lo_open && v == lo) || v > hi)
        return isinf(hi) ? fm_error_set(err, FM_ERR_CONFIG,
                                        "%s: key '%s': %g is out of range (must be %s %g)", path,
                                        key, v, lo_open ? ">" : ">=", lo)
                         : fm_error_set(err, FM_ERR_CONFIG,
                                        "%s: key '%s': %g is out of range (must be in [%g, %g])",
                                        path, key, v, lo, hi);
    *out = v;
    return FM_OK;
}

/* An integer in [lo, hi]. */
static fm_status key_int(const fm_config *j, const char *path, const char *key, int64_t null_value,
                         int64_t lo, int64_t hi, int64_t *out, fm_error *err) {
    int64_t v;
    fm_json_type t = fm_config_type(j, key);
    if (t == FM_JSON_ABSENT) return FM_OK;
    if (t == FM_JSON_NULL) {
        *out = null_value;
        return FM_OK;
    }
    fm_status st = fm_config_get_int(j, key, &v, err);
    if (st != FM_OK) return st;
    if (v < lo || v > hi)
        return hi == INT64_MAX
                   ? fm_error_set(err, FM_ERR_CONFIG,
                                  "%s: key '%s': %" PRId64 " is out of range (must be >= %" PRId64
                                  ")",
                                  path, key, v, lo)
                   : fm_error_set(err, FM_ERR_CONFIG,
                                  "%s: key '%s': %" PRId64 " is out of range (must be in [%" PRId64
                                  ", %" PRId64 "])",
                                  path, key, v, lo, hi);
    *out = v;
    return FM_OK;
}

/* A token id (bos/pad): negative values read as "not set", as several hub files use -1. */
static fm_status key_token_id(const fm_config *j, const char *path, const char *key, int64_t *out,
                              fm_error *err) {
    int64_t v = *out;
    fm_status st = key_int(j, path, key, -1, INT64_MIN, INT32_MAX, &v, err);
    if (st == FM_OK) *out = v < 0 ? -1 : v;
    return st;
}

static const char *type_phrase(fm_json_type t) {
    switch (t) {
    case FM_JSON_BOOL:
        return "a bool";
    case FM_JSON_REAL:
        return "a real";
    case FM_JSON_STRING:
        return "a string";
    case FM_JSON_OBJECT:
        return "an object";
    default:
        return "another type";
    }
}

static void add_eos(fm_generation_config *c, int64_t id) {
    for (size_t i = 0; i < c->n_eos_token_ids; i++)
        if (c->eos_token_ids[i] == id) return;
    c->eos_token_ids[c->n_eos_token_ids++] = id;
}

/* eos_token_id as an int or a list of ints (duplicates dropped). *present: set and not null. */
static fm_status key_eos(const fm_config *j, const char *path, const char *key,
                         fm_generation_config *c, bool *present, fm_error *err) {
    fm_json_type t = fm_config_type(j, key);
    *present = t != FM_JSON_ABSENT && t != FM_JSON_NULL;
    if (!*present) return FM_OK;
    c->n_eos_token_ids = 0;
    if (t != FM_JSON_ARRAY) {
        int64_t v = 0;
        if (t != FM_JSON_INT)
            return fm_error_set(err, FM_ERR_CONFIG,
                                "%s: key '%s': expected an integer or a list of integers, found %s",
                                path, key, type_phrase(t));
        fm_status st = key_int(j, path, key, 0, 0, INT32_MAX, &v, err);
        if (st == FM_OK) add_eos(c, v);
        return st;
    }
    size_t n = fm_config_array_size(j, key);
    if (n > FM_GENERATION_MAX_EOS)
        return fm_error_set(err, FM_ERR_LIMIT, "%s: key '%s': %zu ids exceed the limit of %d", path,
                            key, n, FM_GENERATION_MAX_EOS);
    for (size_t i = 0; i < n; i++) {
        int64_t v;
        fm_status st = fm_config_array_int(j, key, i, &v, err);
        if (st != FM_OK) return st;
        if (v < 0 || v > INT32_MAX)
            return fm_error_set(err, FM_ERR_CONFIG,
                                "%s: key '%s[%zu]': %" PRId64 " is not a token id", path, key, i,
                                v);
        add_eos(c, v);
    }
    return FM_OK;
}

/* The generation_config.json keys fusemap uses. */
static fm_status read_keys(const fm_config *j, const char *path, fm_generation_config *c,
                           fm_error *err) {
    bool eos = false;
    fm_status st = key_bool(j, "do_sample", false, &c->do_sample, err);
    if (st == FM_OK)
        st = key_real(j, path, "temperature", 1.0, 0, false, INFINITY, &c->temperature, err);
    if (st == FM_OK) st = key_int(j, path, "top_k", 0, 0, INT64_MAX, &c->top_k, err);
    if (st == FM_OK) st = key_real(j, path, "top_p", 1.0, 0, false, 1, &c->top_p, err);
    if (st == FM_OK) st = key_real(j, path, "min_p", 0.0, 0, false, 1, &c->min_p, err);
    if (st == FM_OK)
        st = key_real(j, path, "repetition_penalty", 1.0, 0, true, INFINITY, &c->repetition_penalty,
                      err);
    if (st == FM_OK)
        st = key_bool(j, "remove_invalid_values", false, &c->remove_invalid_values, err);
    if (st == FM_OK)
        st = key_int(j, path, "max_length", HF_DEFAULT_MAX_LENGTH, 1, INT64_MAX, &c->max_length,
                     err);
    if (st == FM_OK)
        st = key_int(j, path, "max_new_tokens", 0, 1, INT64_MAX, &c->max_new_tokens, err);
    if (st == FM_OK) st = key_token_id(j, path, "bos_token_id", &c->bos_token_id, err);
    if (st == FM_OK) st = key_token_id(j, path, "pad_token_id", &c->pad_token_id, err);
    if (st == FM_OK) st = key_eos(j, path, "eos_token_id", c, &eos, err);
    if (st == FM_OK && eos) c->eos_source = FM_EOS_GENERATION_CONFIG;
    return st;
}

/* eos_token_id from MODEL_DIR/config.json: top level, else text_config (transformers v5 layout).
 * A missing config.json leaves no eos. */
static fm_status eos_from_model_config(const char *path, fm_generation_config *c, fm_error *err) {
    fm_config *j = NULL;
    bool absent, eos = false;
    fm_status st = load_json(path, FM_CONFIG_MAX_BYTES, &j, &absent, err);
    if (st == FM_OK && !absent) st = key_eos(j, path, "eos_token_id", c, &eos, err);
    if (st == FM_OK && !absent && !eos && fm_config_type(j, "text_config") == FM_JSON_OBJECT)
        st = key_eos(j, path, "text_config.eos_token_id", c, &eos, err);
    if (st == FM_OK && eos) c->eos_source = FM_EOS_MODEL_CONFIG;
    fm_config_free(j);
    return st;
}

static char *join_path(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = fm_malloc(n);
    if (p) snprintf(p, n, "%s/%s", dir, name);
    return p;
}

fm_status fm_generation_config_load(const char *model_dir, fm_generation_config *out,
                                    fm_error *err) {
    struct stat sb;
    fm_generation_config c;
    fm_config *j = NULL;
    bool absent = true;
    if (!model_dir || !out)
        return fm_error_set(err, FM_ERR_INVALID_ARG, "fm_generation_config_load: NULL %s",
                            out ? "model directory" : "output");
    if (stat(model_dir, &sb) != 0)
        return fm_error_set(err, errno == ENOENT ? FM_ERR_NOT_FOUND : FM_ERR_IO,
                            "model directory '%s': %s", model_dir, strerror(errno));
    if (!S_ISDIR(sb.st_mode))
        return fm_error_set(err, FM_ERR_INVALID_ARG, "'%s' is not a directory", model_dir);
    fm_generation_config_init(&c);
    char *gpath = join_path(model_dir, "generation_config.json");
    char *mpath = join_path(model_dir, "config.json");
    fm_status st =
        gpath && mpath ? FM_OK : fm_error_set(err, FM_ERR_NOMEM, "%s: out of memory", model_dir);
    if (st == FM_OK) st = load_json(gpath, FM_GENERATION_CONFIG_MAX_BYTES, &j, &absent, err);
    if (st == FM_OK && !absent) {
        c.found = true;
        st = read_keys(j, gpath, &c, err);
    }
    if (st == FM_OK && c.eos_source == FM_EOS_NONE) st = eos_from_model_config(mpath, &c, err);
    fm_config_free(j);
    fm_free(gpath);
    fm_free(mpath);
    if (st == FM_OK) *out = c;
    return st;
}

/* ---- overrides and mappings ------------------------------------------------------------------ */

static fm_status check_override(const fm_generation_overrides *o, fm_error *err) {
    unsigned set = o->set;
    if ((set & FM_GEN_SET_TEMPERATURE) && !(isfinite(o->temperature) && o->temperature >= 0))
        return fm_error_set(err, FM_ERR_INVALID_ARG,
                            "temperature %g: must be finite and >= 0 (0 = greedy)", o->temperature);
    if ((set & FM_GEN_SET_TOP_K) && o->top_k < 0)
        return fm_error_set(err, FM_ERR_INVALID_ARG, "top_k %" PRId64 ": must be >= 0 (0 = off)",
                            o->top_k);
    if ((set & FM_GEN_SET_TOP_P) && !(o->top_p >= 0 && o->top_p <= 1))
        return fm_error_set(err, FM_ERR_INVALID_ARG, "top_p %g: must be in [0, 1] (1 = off)",
                            o->top_p);
    if ((set & FM_GEN_SET_MIN_P) && !(o->min_p >= 0 && o->min_p <= 1))
        return fm_error_set(err, FM_ERR_INVALID_ARG, "min_p %g: must be in [0, 1] (0 = off)",
                            o->min_p);
    if ((set & FM_GEN_SET_REPETITION_PENALTY) &&
        !(isfinite(o->repetition_penalty) && o->repetition_penalty > 0))
        return fm_error_set(err, FM_ERR_INVALID_ARG,
                            "repetition_penalty %g: must be finite and > 0 (1 = off)",
                            o->repetition_penalty);
    if ((set & FM_GEN_SET_MAX_NEW_TOKENS) && o->max_new_tokens < 1)
        return fm_error_set(err, FM_ERR_INVALID_ARG, "max_new_tokens %" PRId64 ": must be >= 1",
                            o->max_new_tokens);
    return FM_OK;
}

fm_status fm_generation_config_override(fm_generation_config *c, const fm_generation_overrides *o,
                                        fm_error *err) {
    if (!c)
        return fm_error_set(err, FM_ERR_INVALID_ARG, "fm_generation_config_override: NULL config");
    if (!o) return FM_OK;
    fm_status st = check_override(o, err);
    if (st != FM_OK) return st;
    unsigned set = o->set;
    if (set & FM_GEN_SET_TEMPERATURE) c->temperature = o->temperature;
    if (set & FM_GEN_SET_TOP_K) c->top_k = o->top_k;
    if (set & FM_GEN_SET_TOP_P) c->top_p = o->top_p;
    if (set & FM_GEN_SET_MIN_P) c->min_p = o->min_p;
    if (set & FM_GEN_SET_REPETITION_PENALTY) c->repetition_penalty = o->repetition_penalty;
    if (set & FM_GEN_SET_SEED) c->seed = o->seed;
    if (set & FM_GEN_SET_MAX_NEW_TOKENS) c->max_new_tokens = o->max_new_tokens;
    if (set & FM_GEN_SET_DO_SAMPLE)
        c->do_sample = o->do_sample;
    else if (((set & FM_GEN_SET_TEMPERATURE) && o->temperature > 0) ||
             (set & (FM_GEN_SET_TOP_K | FM_GEN_SET_TOP_P | FM_GEN_SET_MIN_P)))
        c->do_sample = true;
    return FM_OK;
}

fm_status fm_generation_config_sampling(const fm_generation_config *c, fm_sampling_options *out,
                                        fm_error *err) {
    fm_sampling_options o;
    if (!c || !out)
        return fm_error_set(err, FM_ERR_INVALID_ARG, "fm_generation_config_sampling: NULL %s",
                            c ? "output" : "config");
    fm_sampling_options_init(&o);
    o.do_sample = c->do_sample;
    o.temperature = c->temperature;
    o.top_k = c->top_k;
    o.top_p = c->top_p;
    o.min_p = c->min_p;
    o.repetition_penalty = c->repetition_penalty;
    o.remove_invalid_values = c->remove_invalid_values;
    o.seed = c->seed;
    fm_status st = fm_sampling_options_validate(&o, err);
    if (st == FM_OK) *out = o;
    return st;
}

fm_status fm_generation_config_new_tokens(const fm_generation_config *c, int64_t prompt_len,
                                          int64_t *out, fm_error *err) {
    if (!c || !out || prompt_len < 0)
        return fm_error_set(err, FM_ERR_INVALID_ARG,
                            "fm_generation_config_new_tokens: NULL argument or negative prompt "
                            "length");
    if (c->max_new_tokens > 0) {
        *out = c->max_new_tokens;
        return FM_OK;
    }
    if (c->max_length == HF_DEFAULT_MAX_LENGTH) {
        *out = HF_DEFAULT_MAX_LENGTH;
        return FM_OK;
    }
    if (c->max_length <= prompt_len)
        return fm_error_set(err, FM_ERR_INPUT,
                            "a prompt of %" PRId64 " tokens reaches max_length %" PRId64
                            " (generation_config.json): nothing left to generate; set "
                            "max_new_tokens",
                            prompt_len, c->max_length);
    *out = c->max_length - prompt_len;
    return FM_OK;
}
