/* tokenizer.json: reading the file (size and nesting limits), the top-level keys and the
 * pipeline components fusemap supports — normalizer NFC (or a Sequence of it), pre-tokenizer
 * Split(Regex|String, Isolated) stages followed by ByteLevel, ByteLevel decoder, post-processor
 * that adds nothing, BPE model options. Anything else is FM_ERR_UNSUPPORTED naming the key.
 * The vocab, merges and added tokens are read in tokenizer_vocab.c. */
#include <jansson.h>
#include <stdio.h>
#include <sys/stat.h>

#include "fusemap/io.h"
#include "io/fsutil.h"
#include "text/tok_internal.h"

#define DEFAULT_LABEL "tokenizer.json"

/* GPT-2's split pattern, used by the ByteLevel pre-tokenizer when use_regex is true
 * (tokenizers pre_tokenizers/byte_level.rs). */
static const char GPT2_PATTERN[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

/* True when v nests more than `limit` containers. Stops after limit + 1 levels. */
static bool deeper_than(json_t *v, int limit) {
    if (!json_is_object(v) && !json_is_array(v)) return false;
    if (limit <= 0) return true;
    if (json_is_array(v)) {
        for (size_t i = 0; i < json_array_size(v); i++)
            if (deeper_than(json_array_get(v, i), limit - 1)) return true;
        return false;
    }
    const char *k;
    json_t *x;
    json_object_foreach(v, k, x) {
        if (deeper_than(x, limit - 1)) return true;
    }
    return false;
}

fm_status tk_arena_add(fm_tokenizer *t, const char *s, size_t len, uint32_t *off, fm_error *err) {
    if (len > UINT32_MAX - 1 || t->arena_len > UINT32_MAX - 1 - len)
        return fm_error_set(err, FM_ERR_LIMIT, "%s: token strings exceed 4 GiB", t->label);
    if (t->arena_len + len + 1 > t->arena_cap) {
        size_t cap = t->arena_cap ? t->arena_cap : 4096;
        while (cap < t->arena_len + len + 1)
            cap *= 2;
        char *p = fm_realloc(t->arena, cap);
        if (!p) return fm_error_set(err, FM_ERR_NOMEM, "%s: out of memory", t->label);
        t->arena = p, t->arena_cap = cap;
    }
    memcpy(t->arena + t->arena_len, s, len);
    t->arena[t->arena_len + len] = '\0';
    *off = (uint32_t)t->arena_len;
    t->arena_len += len + 1;
    return FM_OK;
}

/* ---- small typed readers ------------------------------------------------------------------ */

/* The "type" string of a component object (borrowed from v). */
static fm_status component_type(fm_tokenizer *t, json_t *v, const char *key, const char **type,
                                fm_error *err) {
    json_t *ty = json_is_object(v) ? json_object_get(v, "type") : NULL;
    *type = json_is_string(ty) ? json_string_value(ty) : NULL;
    if (!*type)
        return fm_error_set(err, FM_ERR_CONFIG,
                            "%s: %s: expected an object with a \"type\" "
                            "string",
                            t->label, key);
    return FM_OK;
}

/* Reads an optional boolean (absent or null -> dflt). */
static fm_status get_bool(fm_tokenizer *t, json_t *obj, const char *key, const char *path,
                          bool dflt, bool *out, fm_error *err) {
    json_t *v = json_object_get(obj, key);
    *out = dflt;
    if (!v || json_is_null(v)) return FM_OK;
    if (!json_is_boolean(v))
        return fm_error_set(err, FM_ERR_CONFIG, "%s: %s.%s: expected true or false", t->label, path,
                            key);
    *out = json_is_true(v);
    return FM_OK;
}

/* Optional string: absent or null -> NULL. */
static fm_status get_opt_string(fm_tokenizer *t, json_t *obj, const char *key, const char *path,
                                const char **out, fm_error *err) {
    json_t *v = json_object_get(obj, key);
    *out = NULL;
    if (!v || json_is_null(v)) return FM_OK;
    if (!json_is_string(v))
        return fm_error_set(err, FM_ERR_CONFIG, "%s: %s.%s: expected a string or null", t->label,
                            path, key);
    *out = json_string_value(v);
    return FM_OK;
}

static fm_status unsupported_type(fm_tokenizer *t, const char *key, const char *type,
                                  const char *supported, fm_error *err) {
    return fm_error_set(err, FM_ERR_UNSUPPORTED, "%s: %s.type \"%.64s\" is not supported (%s)",
                        t->label, key, type, supported);
}

/* ---- normalizer ----------------------------------------------------------------------------- */

static fm_status parse_normalizer(fm_tokenizer *t, json_t *v, const char *key, size_t *stages,
                                  fm_error *err) {
    if (!v || json_is_null(v)) return FM_OK;
    const char *type;
    fm_status tst = component_type(t, v, key, &type, err);
    if (tst != FM_OK) return tst;
    if (++*stages > FM_TOK_MAX_STAGES)
        return fm_error_set(err, FM_ERR_LIMIT,
                            "%s: %s: more than %u normalizer steps "
                            "(the steps limit)",
                            t->label, key, FM_TOK_MAX_STAGES);
    if (!strcmp(type, "NFC")) {
        t->nfc = true;
        return FM_OK;
    }
    if (strcmp(type, "Sequence"))
        return unsupported_type(t, key, type, "supported: NFC, Sequence", err);
    json_t *items = json_object_get(v, "normalizers");
    if (!json_is_array(items))
        return fm_error_set(err, FM_ERR_CONFIG, "%s: %s.normalizers: expected an array", t->label,
                            key);
    for (size_t i = 0; i < json_array_size(items); i++) {
        char sub[128];
        snprintf(sub, sizeof sub, "%.60s.normalizers[%zu]", key, i);
        fm_status st = parse_normalizer(t, json_array_get(items, i), sub, stages, err);
        if (st != FM_OK) return st;
    }
    return FM_OK;
}

/* ---- pre-tokenizer -------------------------------------------------------------------------- */

static fm_status add_split(fm_tokenizer *t, const char *pat, size_t len, bool literal,
                           const char *key, fm_error *err) {
    if (t->n_split >= FM_TOK_MAX_STAGES)
        return fm_error_set(err, FM_ERR_LIMIT,
                            "%s: %s: more than %u pre-tokenizer splits "
                            "(the steps limit)",
                            t->label, key, FM_TOK_MAX_STAGES);
    if (len > FM_TOK_MAX_REGEX_BYTES)
        return fm_error_set(err, FM_ERR_LIMIT,
                            "%s: %s: pattern of %zu bytes exceeds %u "
                            "(the pattern length limit)",
                            t->label, key, len, FM_TOK_MAX_REGEX_BYTES);
    fm_status st = tk_regex_compile(t, pat, len, literal, key, &t->split[t->n_split], err);
    if (st == FM_OK) t->n_split++;
    return st;
}

static fm_status parse_split(fm_tokenizer *t, json_t *v, const char *key, fm_error *err) {
    json_t *pat = json_object_get(v, "pattern");
    json_t *re = json_is_object(pat) ? json_object_get(pat, "Regex") : NULL;
    json_t *lit = json_is_object(pat) ? json_object_get(pat, "String") : NULL;
    json_t *s = re ? re : lit;
    if (!json_is_string(s) || json_object_size(pat) != 1)
        return fm_error_set(err, FM_ERR_CONFIG,
                            "%s: %s.pattern: expected {\"Regex\": string} "
                            "or {\"String\": string}",
                            t->label, key);
    json_t *beh = json_object_get(v, "behavior");
    if (!json_is_string(beh) || strcmp(json_string_value(beh), "Isolated"))
        return fm_error_set(err, FM_ERR_UNSUPPORTED,
                            "%s: %s.behavior: only \"Isolated\" is "
                            "supported",
                            t->label, key);
    bool invert;
    fm_status st = get_bool(t, v, "invert", key, false, &invert, err);
    if (st == FM_OK && invert)
        st = fm_error_set(err, FM_ERR_UNSUPPORTED, "%s: %s.invert: true is not supported", t->label,
                          key);
    if (st != FM_OK) return st;
    char sub[128];
    snprintf(sub, sizeof sub, "%.70s.pattern", key);
    return add_split(t, json_string_value(s), json_string_length(s), lit != NULL, sub, err);
}

static fm_status parse_byte_level_pre(fm_tokenizer *t, json_t *v, const char *key, fm_error *err) {
    bool prefix, use_regex;
    fm_status st = get_bool(t, v, "add_prefix_space", key, true, &prefix, err);
    if (st == FM_OK) st = get_bool(t, v, "use_regex", key, true, &use_regex, err);
    if (st != FM_OK) return st;
    if (prefix)
        return fm_error_set(err, FM_ERR_UNSUPPORTED,
                            "%s: %s.add_prefix_space: true is not "
                            "supported",
                            t->label, key);
    return use_regex ? add_split(t, GPT2_PATTERN, sizeof GPT2_PATTERN - 1, false, key, err) : FM_OK;
}

static fm_status parse_pretok(fm_tokenizer *t, json_t *v, const char *key, bool *byte_level,
                              size_t *stages, fm_error *err) {
    const char *type;
    fm_status tst = component_type(t, v, key, &type, err);
    if (tst != FM_OK) return tst;
    if (++*stages > FM_TOK_MAX_STAGES)
        return fm_error_set(err, FM_ERR_LIMIT,
                            "%s: %s: more than %u pre-tokenizer steps "
                            "(the steps limit)",
                            t->label, key, FM_TOK_MAX_STAGES);
    if (*byte_level)
        return fm_error_set(err, FM_ERR_UNSUPPORTED,
                            "%s: %s: a step after ByteLevel is not "
                            "supported",
                            t->label, key);
    if (!strcmp(type, "Split")) return parse_split(t, v, key, err);
    if (!strcmp(type, "ByteLevel")) {
        *byte_level = true;
        return parse_byte_level_pre(t, v, key, err);
    }
    if (strcmp(type, "Sequence"))
        return unsupported_type(t, key, type, "supported: Split, ByteLevel, Sequence", err);
    json_t *items = json_object_get(v, "pretokenizers");
    if (!json_is_array(items))
        return fm_error_set(err, FM_ERR_CONFIG, "%s: %s.pretokenizers: expected an array", t->label,
                            key);
    for (size_t i = 0; i < json_array_size(items); i++) {
        char sub[128];
        snprintf(sub, sizeof sub, "%.60s.pretokenizers[%zu]", key, i);
        fm_status st = parse_pretok(t, json_array_get(items, i), sub, byte_level, stages, err);
        if (st != FM_OK) return st;
    }
    return FM_OK;
}

/* ---- post-processor and decoder ----------------------------------------------------------- */

/* TemplateProcessing is accepted when its single-sequence template adds no token. */
static bool template_adds_nothing(json_t *v) {
    json_t *single = json_object_get(v, "single");
    if (!json_is_array(single)) return false;
    for (size_t i = 0; i < json_array_size(single); i++) {
        json_t *item = json_array_get(single, i);
        if (!json_is_object(item) || !json_object_get(item, "Sequence")) return false;
    }
    return true;
}

static fm_status parse_post(fm_tokenizer *t, json_t *v, const char *key, int depth, fm_error *err) {
    if (!v || json_is_null(v)) return FM_OK;
    const char *type;
    fm_status tst = component_type(t, v, key, &type, err);
    if (tst != FM_OK) return tst;
    if (!strcmp(type, "ByteLevel")) return FM_OK; /* offsets only */
    if (!strcmp(type, "TemplateProcessing") && template_adds_nothing(v)) return FM_OK;
    json_t *items = json_object_get(v, "processors");
    if (strcmp(type, "Sequence") || !json_is_array(items) || depth > 0)
        return unsupported_type(t, key, type,
                                "supported: ByteLevel, a TemplateProcessing that "
                                "adds no token, a Sequence of those; fusemap never adds BOS/EOS",
                                err);
    for (size_t i = 0; i < json_array_size(items) && i < FM_TOK_MAX_STAGES; i++) {
        char sub[128];
        snprintf(sub, sizeof sub, "%.60s.processors[%zu]", key, i);
        fm_status st = parse_post(t, json_array_get(items, i), sub, depth + 1, err);
        if (st != FM_OK) return st;
    }
    if (json_array_size(items) > FM_TOK_MAX_STAGES)
        return fm_error_set(err, FM_ERR_LIMIT,
                            "%s: %s.processors: more than %u steps "
                            "(the steps limit)",
                            t->label, key, FM_TOK_MAX_STAGES);
    return FM_OK;
}

static fm_status parse_decoder(fm_tokenizer *t, json_t *v, fm_error *err) {
    if (!v || json_is_null(v))
        return fm_error_set(err, FM_ERR_UNSUPPORTED,
                            "%s: decoder: null is not supported "
                            "(only ByteLevel)",
                            t->label);
    const char *type;
    fm_status tst = component_type(t, v, "decoder", &type, err);
    if (tst != FM_OK) return tst;
    if (!strcmp(type, "ByteLevel")) return FM_OK;
    json_t *items = json_object_get(v, "decoders");
    bool ok = !strcmp(type, "Sequence") && json_is_array(items) && json_array_size(items) > 0 &&
              json_array_size(items) <= FM_TOK_MAX_STAGES;
    for (size_t i = 0; ok && i < json_array_size(items); i++) {
        json_t *ty = json_object_get(json_array_get(items, i), "type");
        ok = json_is_string(ty) && !strcmp(json_string_value(ty), "ByteLevel");
    }
    return ok ? FM_OK
              : unsupported_type(t, "decoder", type, "supported: ByteLevel, a Sequence of it", err);
}

/* ---- model options -------------------------------------------------------------------------- */

static fm_status check_affix(fm_tokenizer *t, json_t *model, const char *key, fm_error *err) {
    const char *s;
    fm_status st = get_opt_string(t, model, key, "model", &s, err);
    if (st == FM_OK && s && *s)
        st = fm_error_set(err, FM_ERR_UNSUPPORTED,
                          "%s: model.%s: \"%.32s\" is not supported "
                          "(only empty)",
                          t->label, key, s);
    return st;
}

static fm_status parse_model_options(fm_tokenizer *t, json_t *model, fm_error *err) {
    const char *type, *unk;
    json_t *drop = json_object_get(model, "dropout");
    fm_status st = get_opt_string(t, model, "type", "model", &type, err);
    if (st == FM_OK && type && strcmp(type, "BPE"))
        st = unsupported_type(t, "model", type, "supported: BPE", err);
    if (st == FM_OK && drop && !json_is_null(drop) &&
        !(json_is_number(drop) && json_number_value(drop) == 0.0))
        st = fm_error_set(err, FM_ERR_UNSUPPORTED,
                          "%s: model.dropout: BPE dropout is not "
                          "supported (only null)",
                          t->label);
    bool byte_fallback;
    if (st == FM_OK) st = get_bool(t, model, "byte_fallback", "model", false, &byte_fallback, err);
    if (st == FM_OK && byte_fallback)
        st = fm_error_set(err, FM_ERR_UNSUPPORTED,
                          "%s: model.byte_fallback: true is not "
                          "supported",
                          t->label);
    if (st == FM_OK) st = get_bool(t, model, "fuse_unk", "model", false, &t->fuse_unk, err);
    if (st == FM_OK)
        st = get_bool(t, model, "ignore_merges", "model", false, &t->ignore_merges, err);
    if (st == FM_OK) st = check_affix(t, model, "continuing_subword_prefix", err);
    if (st == FM_OK) st = check_affix(t, model, "end_of_word_suffix", err);
    if (st == FM_OK) st = get_opt_string(t, model, "unk_token", "model", &unk, err);
    if (st == FM_OK && unk && !(t->unk_token = fm_strdup(unk)))
        st = fm_error_set(err, FM_ERR_NOMEM, "%s: out of memory", t->label);
    return st;
}

/* ---- root ----------------------------------------------------------------------------------- */

static fm_status check_top(fm_tokenizer *t, json_t *root, fm_error *err) {
    json_t *ver = json_object_get(root, "version");
    if (ver && (!json_is_string(ver) || strcmp(json_string_value(ver), "1.0")))
        return fm_error_set(err, FM_ERR_UNSUPPORTED, "%s: version: only \"1.0\" is supported",
                            t->label);
    static const char *const null_keys[] = {"truncation", "padding"};
    for (size_t i = 0; i < 2; i++) {
        json_t *v = json_object_get(root, null_keys[i]);
        if (v && !json_is_null(v))
            return fm_error_set(err, FM_ERR_UNSUPPORTED, "%s: %s: only null is supported", t->label,
                                null_keys[i]);
    }
    return FM_OK;
}

static void set_byte_ids(fm_tokenizer *t) {
    for (unsigned b = 0; b < 256; b++) {
        char u[4];
        size_t n = tk_utf8_put(tk_b2u((uint8_t)b), u);
        t->byte_id[b] = tk_strmap_get(&t->vocab, t->arena, u, n);
    }
    t->unk_id = -1;
    if (t->unk_token) {
        int32_t id = tk_strmap_get(&t->vocab, t->arena, t->unk_token, strlen(t->unk_token));
        t->unk_id = id >= 0 ? id : -2;
    }
}

fm_status tk_parse_root(fm_tokenizer *t, void *rootp, fm_error *err) {
    json_t *root = rootp, *model = json_object_get(root, "model");
    if (!json_is_object(root))
        return fm_error_set(err, FM_ERR_CONFIG, "%s: expected a JSON object", t->label);
    if (!json_is_object(model))
        return fm_error_set(err, FM_ERR_CONFIG, "%s: model: expected an object", t->label);
    fm_status st = check_top(t, root, err);
    size_t nstages = 0, pstages = 0;
    bool byte_level = false;
    if (st == FM_OK) st = parse_model_options(t, model, err);
    if (st == FM_OK)
        st = parse_normalizer(t, json_object_get(root, "normalizer"), "normalizer", &nstages, err);
    json_t *pre = json_object_get(root, "pre_tokenizer");
    if (st == FM_OK && (!pre || json_is_null(pre)))
        st = fm_error_set(err, FM_ERR_UNSUPPORTED,
                          "%s: pre_tokenizer: null is not supported "
                          "(only byte-level BPE)",
                          t->label);
    if (st == FM_OK) st = parse_pretok(t, pre, "pre_tokenizer", &byte_level, &pstages, err);
    if (st == FM_OK && !byte_level)
        st = fm_error_set(err, FM_ERR_UNSUPPORTED,
                          "%s: pre_tokenizer: no ByteLevel step (only "
                          "byte-level BPE is supported)",
                          t->label);
    if (st == FM_OK)
        st = parse_post(t, json_object_get(root, "post_processor"), "post_processor", 0, err);
    if (st == FM_OK) st = parse_decoder(t, json_object_get(root, "decoder"), err);
    if (st == FM_OK) st = tk_load_vocab(t, model, err);
    if (st == FM_OK) st = tk_load_merges(t, model, err);
    if (st == FM_OK) st = tk_load_added(t, json_object_get(root, "added_tokens"), err);
    if (st == FM_OK) st = tk_build_decoded(t, err);
    if (st == FM_OK) st = tk_addsets_build(t, err);
    if (st == FM_OK) set_byte_ids(t);
    return st;
}

/* ---- entry points --------------------------------------------------------------------------- */

static void *pcre2_fm_malloc(PCRE2_SIZE n, void *data) {
    (void)data;
    return fm_malloc(n);
}

static void pcre2_fm_free(void *p, void *data) {
    (void)data;
    fm_free(p);
}

static fm_status load_json(const char *json, size_t len, const char *label, uint64_t max,
                           json_t **out, fm_error *err) {
    json_error_t je;
    *out = NULL;
    if (len > max)
        return fm_error_set(err, FM_ERR_LIMIT,
                            "%s: %zu bytes exceed the file size limit of %llu "
                            "bytes",
                            label, len, (unsigned long long)max);
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &je);
    if (!root) {
        enum json_error_code code = json_error_code(&je);
        if (code == json_error_out_of_memory)
            return fm_error_set(err, FM_ERR_NOMEM, "%s: out of memory parsing JSON", label);
        if (code == json_error_stack_overflow)
            return fm_error_set(err, FM_ERR_LIMIT,
                                "%s:%d:%d: JSON nesting deeper than %d levels "
                                "(the nesting limit)",
                                label, je.line, je.column, FM_JSON_MAX_DEPTH);
        return fm_error_set(err, FM_ERR_JSON, "%s:%d:%d: %s", label, je.line, je.column, je.text);
    }
    if (deeper_than(root, FM_JSON_MAX_DEPTH)) {
        json_decref(root);
        return fm_error_set(err, FM_ERR_LIMIT,
                            "%s: JSON nesting deeper than %d levels "
                            "(the nesting limit)",
                            label, FM_JSON_MAX_DEPTH);
    }
    *out = root;
    return FM_OK;
}

void fm_tokenizer_limits_init(fm_tokenizer_limits *l) {
    *l = (fm_tokenizer_limits){FM_TOK_MAX_FILE_BYTES, FM_TOK_MAX_VOCAB, FM_TOK_MAX_MERGES,
                               FM_TOK_MAX_TOKEN_BYTES, FM_TOK_MAX_ADDED};
}

fm_status fm_tokenizer_parse(const char *json, size_t len, const char *label,
                             const fm_tokenizer_limits *limits, fm_tokenizer **out, fm_error *err) {
    fm_tokenizer_limits lim;
    if (limits)
        lim = *limits;
    else
        fm_tokenizer_limits_init(&lim);
    if (!label) label = DEFAULT_LABEL;
    if (!out) return fm_error_set(err, FM_ERR_INVALID_ARG, "%s: no output pointer", label);
    *out = NULL;
    if (!json) return fm_error_set(err, FM_ERR_INVALID_ARG, "%s: no text", label);
    json_t *root;
    fm_status st = load_json(json, len, label, lim.max_file_bytes, &root, err);
    if (st != FM_OK) return st;
    fm_tokenizer *t = fm_calloc(1, sizeof *t);
    if (t) t->lim = lim;
    if (t && (t->label = fm_strdup(label)))
        t->gctx = pcre2_general_context_create(pcre2_fm_malloc, pcre2_fm_free, NULL);
    if (!t || !t->gctx) {
        st = fm_error_set(err, FM_ERR_NOMEM, "%s: out of memory", label);
    } else {
        st = tk_parse_root(t, root, err);
    }
    json_decref(root);
    if (st != FM_OK) {
        fm_tokenizer_free(t);
        return st;
    }
    *out = t;
    return FM_OK;
}

fm_status fm_tokenizer_open(const char *path, fm_tokenizer **out, fm_error *err) {
    return fm_tokenizer_open_limits(path, NULL, out, err);
}

fm_status fm_tokenizer_open_limits(const char *path, const fm_tokenizer_limits *limits,
                                   fm_tokenizer **out, fm_error *err) {
    fm_tokenizer_limits lim;
    if (limits)
        lim = *limits;
    else
        fm_tokenizer_limits_init(&lim);
    if (!out) return fm_error_set(err, FM_ERR_INVALID_ARG, "tokenizer: no output pointer");
    *out = NULL;
    if (!path) return fm_error_set(err, FM_ERR_INVALID_ARG, "tokenizer: no path");
    struct stat sb;
    if (stat(path, &sb) != 0)
        return fm_error_set(err, FM_ERR_NOT_FOUND,
                            "'%s': no such tokenizer.json or model "
                            "directory",
                            path);
    bool dir = S_ISDIR(sb.st_mode);
    char *file = dir ? fm_fs_join(path, DEFAULT_LABEL) : fm_strdup(path);
    if (!file) return fm_error_set(err, FM_ERR_NOMEM, "%s: out of memory", path);
    char *text = NULL;
    size_t len = 0;
    fm_status st = fm_fs_read_file(file, lim.max_file_bytes, &text, &len, err);
    if (st == FM_ERR_LIMIT) fm_error_prefix(err, "tokenizer file size limit");
    if (st == FM_OK) st = fm_tokenizer_parse(text, len, file, &lim, out, err);
    fm_free(text);
    fm_free(file);
    return st;
}

void fm_tokenizer_free(fm_tokenizer *t) {
    if (!t) return;
    for (size_t i = 0; i < t->n_split; i++)
        pcre2_code_free(t->split[i].code);
    pcre2_code_free(t->word_re);
    pcre2_code_free(t->space_re);
    pcre2_general_context_free(t->gctx);
    tk_strmap_free(&t->vocab);
    tk_strmap_free(&t->added_map);
    tk_pairmap_free(&t->merges);
    fm_free(t->raw_set.order);
    fm_free(t->norm_set.order);
    fm_free(t->added);
    fm_free(t->ent);
    fm_free(t->arena);
    fm_free(t->darena);
    fm_free(t->unk_token);
    fm_free(t->label);
    fm_free(t);
}
