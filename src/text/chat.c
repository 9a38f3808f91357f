/* Chat templates: look-up in a model directory (transformers' order), parsing, rendering a message
 * list (JSON, validated) with the Jinja-subset interpreter, and the processor's image placeholder
 * expansion on the rendered prompt. User bytes (from the messages and extra variables) are marked
 * in the prompt's mask; see docs/chat-template.md. */
#include "fusemap/chat.h"

#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "fusemap/io.h"
#include "io/fsutil.h"
#include "text/jinja.h"
#include "text/utf8.h"

struct fm_chat_template {
    jj_arena arena; /* normalised source, string literals, AST, default variables */
    jj_nodes body;
    char *origin; /* fm_malloc'd */
    bool is_default;
    jj_var *vars; /* special tokens from tokenizer_config.json (in the arena) */
    size_t n_vars;
};

#define DEFAULT_ORIGIN "default ChatML template"

static const char g_default_template[] =
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% elif message['content'] is not none %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' or 'image' in part or 'image_url' in part %}"
    "{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{% elif part['type'] == 'video' or 'video' in part %}"
    "{{ '<|vision_start|><|video_pad|><|vision_end|>' }}"
    "{% elif 'text' in part %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

const char *fm_chat_default_template_text(void) {
    return g_default_template;
}

void fm_chat_render_options_init(fm_chat_render_options *o) {
    memset(o, 0, sizeof *o);
    o->add_generation_prompt = true;
    o->max_output_bytes = (size_t)16 << 20;
    o->max_iterations = 1000000;
    o->max_call_depth = 64;
    o->max_memory_bytes = (size_t)256 << 20;
    o->max_work = (uint64_t)1 << 32;
}

void fm_chat_prompt_free(fm_chat_prompt *p) {
    if (!p) return;
    fm_free(p->text);
    fm_free(p->user_mask);
    memset(p, 0, sizeof *p);
}

void fm_chat_template_free(fm_chat_template *t) {
    if (!t) return;
    jj_arena_free(&t->arena);
    fm_free(t->origin);
    fm_free(t);
}

const char *fm_chat_template_origin(const fm_chat_template *t) {
    return t->origin;
}
bool fm_chat_template_is_default(const fm_chat_template *t) {
    return t->is_default;
}

/* ---- parsing ------------------------------------------------------------------------------------
 */
fm_status fm_chat_template_parse(const char *text, size_t len, const char *origin,
                                 fm_chat_template **out, fm_error *err) {
    *out = NULL;
    if (!origin) origin = "template";
    if (len > FM_CHAT_MAX_TEMPLATE_BYTES)
        return fm_error_set(err, FM_ERR_LIMIT,
                            "%s: %zu bytes exceed the template size limit of %zu", origin, len,
                            FM_CHAT_MAX_TEMPLATE_BYTES);
    size_t valid = tk_utf8_invalid_at((const uint8_t *)text, len);
    if (valid != len)
        return fm_error_set(err, FM_ERR_INPUT, "%s: invalid UTF-8 at byte %zu", origin, valid);
    fm_chat_template *t = fm_calloc(1, sizeof *t);
    if (!t || !(t->origin = fm_strdup(origin))) {
        fm_free(t);
        return fm_error_set(err, FM_ERR_NOMEM, "%s: out of memory", origin);
    }
    jj_toks toks;
    fm_status st = jj_lex(text, len, &t->arena, t->origin, &toks, err);
    if (st == FM_OK) {
        st = jj_parse(&toks, &t->arena, t->origin, &t->body, err);
        fm_free(toks.v); /* the tree points into the arena, not the tokens */
    }
    if (st != FM_OK) {
        fm_chat_template_free(t);
        return st;
    }
    *out = t;
    return FM_OK;
}

/* ---- look-up in a model directory ---------------------------------------------------------------
 */
/* Reads DIR/name: FM_ERR_NOT_FOUND (err untouched) when absent. *path is fm_malloc'd. */
static fm_status read_optional(const char *dir, const char *name, size_t max, char **path,
                               char **text, size_t *len, fm_error *err) {
    fm_error tmp;
    *text = NULL;
    if (!(*path = fm_fs_join(dir, name)))
        return fm_error_set(err, FM_ERR_NOMEM, "%s: out of memory", dir);
    fm_status st = fm_fs_read_file(*path, max, text, len, &tmp);
    if (st != FM_OK && st != FM_ERR_NOT_FOUND && err) *err = tmp;
    return st;
}

static fm_status json_from_text(const char *path, const char *text, size_t len, json_t **out,
                                fm_error *err) {
    json_error_t je;
    *out = json_loadb(text, len, JSON_ALLOW_NUL, &je);
    if (!*out)
        return fm_error_set(err, FM_ERR_JSON, "%s: invalid JSON at line %d: %s", path, je.line,
                            je.text);
    if (!json_is_object(*out)) {
        json_decref(*out);
        *out = NULL;
        return fm_error_set(err, FM_ERR_JSON, "%s: expected a JSON object", path);
    }
    return FM_OK;
}

/* tokenizer_config.json "chat_template": string, or [{name, template}] taking "default". *tmpl
 * borrowed from cfg; NULL when absent or null. */
static fm_status config_template(const char *path, json_t *cfg, const char **tmpl, size_t *len,
                                 fm_error *err) {
    json_t *v = json_object_get(cfg, "chat_template");
    *tmpl = NULL;
    if (!v || json_is_null(v)) return FM_OK;
    if (json_is_array(v)) {
        size_t i;
        json_t *e;
        json_array_foreach(v, i, e) {
            json_t *n = json_object_get(e, "name"), *tx = json_object_get(e, "template");
            if (json_is_string(n) && !strcmp(json_string_value(n), "default") && json_is_string(tx))
                v = tx;
        }
        if (json_is_array(v))
            return fm_error_set(err, FM_ERR_CONFIG,
                                "%s: chat_template: several templates and none named \"default\"",
                                path);
    }
    if (!json_is_string(v))
        return fm_error_set(err, FM_ERR_CONFIG, "%s: chat_template: expected a string or a list",
                            path);
    *tmpl = json_string_value(v), *len = json_string_length(v);
    return FM_OK;
}

/* String special tokens of tokenizer_config.json (a string or {"content": ...}) as variables. */
static const char *const g_special[] = {"bos_token", "eos_token", "unk_token", "sep_token",
                                        "pad_token", "cls_token", "mask_token"};

static const char *token_text(json_t *v, size_t *n) {
    if (json_is_object(v)) v = json_object_get(v, "content");
    if (!json_is_string(v)) return NULL;
    *n = json_string_length(v);
    return json_string_value(v);
}

static char *arena_copy(jj_arena *a, const char *s, size_t n) {
    char *d = jj_alloc(a, n + 1);
    if (d) memcpy(d, s, n);
    return d;
}

static fm_status special_tokens(fm_chat_template *t, json_t *cfg, fm_error *err) {
    size_t cap = sizeof g_special / sizeof *g_special + 1, n;
    json_t *extra = json_object_get(cfg, "additional_special_tokens");
    t->vars = jj_alloc(&t->arena, cap * sizeof *t->vars);
    if (!t->vars) return fm_error_set(err, FM_ERR_NOMEM, "%s: out of memory", t->origin);
    for (size_t i = 0; i < cap - 1; i++) {
        const char *s = token_text(json_object_get(cfg, g_special[i]), &n);
        char *copy = s ? arena_copy(&t->arena, s, n) : NULL;
        if (s && !copy) return fm_error_set(err, FM_ERR_NOMEM, "%s: out of memory", t->origin);
        if (copy)
            t->vars[t->n_vars++] =
                (jj_var){g_special[i], strlen(g_special[i]), jj_str(copy, n, NULL)};
    }
    if (!json_is_array(extra)) return FM_OK;
    jj_list *l = jj_alloc(&t->arena, sizeof *l);
    jj_value *v = l ? jj_alloc(&t->arena, (json_array_size(extra) + 1) * sizeof *v) : NULL;
    if (!v) return fm_error_set(err, FM_ERR_NOMEM, "%s: out of memory", t->origin);
    l->v = v;
    for (size_t i = 0; i < json_array_size(extra); i++) {
        const char *s = token_text(json_array_get(extra, i), &n);
        char *copy = s ? arena_copy(&t->arena, s, n) : NULL;
        if (s && !copy) return fm_error_set(err, FM_ERR_NOMEM, "%s: out of memory", t->origin);
        if (copy) l->v[l->n++] = jj_str(copy, n, NULL);
    }
    t->vars[t->n_vars++] =
        (jj_var){"additional_special_tokens", 25, (jj_value){.t = JT_LIST, .u.l = l}};
    return FM_OK;
}

/* The template text and its origin, in look-up order. *text is fm_malloc'd (NULL: default). */
static fm_status find_template(const char *dir, json_t *cfg, const char *cfg_path, char **text,
                               size_t *len, char **origin, fm_error *err) {
    char *raw = NULL;
    size_t rlen = 0;
    fm_status st = read_optional(dir, "chat_template.json", FM_CHAT_MAX_CONFIG_BYTES, origin, &raw,
                                 &rlen, err);
    if (st == FM_OK) {
        json_t *j = NULL, *v;
        st = json_from_text(*origin, raw, rlen, &j, err);
        fm_free(raw);
        v = j ? json_object_get(j, "chat_template") : NULL;
        if (st == FM_OK && !json_is_string(v))
            st =
                fm_error_set(err, FM_ERR_CONFIG, "%s: \"chat_template\" must be a string", *origin);
        if (st == FM_OK &&
            !(*text = fm_strndup(json_string_value(v), (*len = json_string_length(v)))))
            st = FM_ERR_NOMEM;
        json_decref(j);
        return st == FM_ERR_NOMEM ? fm_error_set(err, st, "%s: out of memory", *origin) : st;
    }
    if (st != FM_ERR_NOT_FOUND) return st;
    fm_free(*origin);
    st = read_optional(dir, "chat_template.jinja", FM_CHAT_MAX_TEMPLATE_BYTES, origin, text, len,
                       err);
    if (st != FM_ERR_NOT_FOUND) return st;
    fm_free(*origin);
    *origin = NULL;
    const char *ct = NULL;
    if (cfg && (st = config_template(cfg_path, cfg, &ct, len, err)) != FM_OK) return st;
    if (!ct) return FM_OK;
    *origin = fm_strdup(cfg_path);
    *text = fm_strndup(ct, *len);
    return *origin && *text ? FM_OK
                            : fm_error_set(err, FM_ERR_NOMEM, "%s: out of memory", cfg_path);
}

fm_status fm_chat_template_load(const char *model_dir, fm_chat_template **out, fm_error *err) {
    char *cfg_path = NULL, *cfg_text = NULL, *text = NULL, *origin = NULL;
    size_t cfg_len = 0, len = 0;
    json_t *cfg = NULL;
    *out = NULL;
    fm_status st = read_optional(model_dir, "tokenizer_config.json", FM_CHAT_MAX_CONFIG_BYTES,
                                 &cfg_path, &cfg_text, &cfg_len, err);
    if (st == FM_OK)
        st = json_from_text(cfg_path, cfg_text, cfg_len, &cfg, err);
    else if (st == FM_ERR_NOT_FOUND)
        st = FM_OK;
    fm_free(cfg_text);
    if (st == FM_OK) st = find_template(model_dir, cfg, cfg_path, &text, &len, &origin, err);
    if (st == FM_OK)
        st = text ? fm_chat_template_parse(text, len, origin, out, err)
                  : fm_chat_template_parse(g_default_template, sizeof g_default_template - 1,
                                           DEFAULT_ORIGIN, out, err);
    if (st == FM_OK) (*out)->is_default = !text;
    if (st == FM_OK && cfg) st = special_tokens(*out, cfg, err);
    if (st != FM_OK) {
        fm_chat_template_free(*out);
        *out = NULL;
    }
    json_decref(cfg);
    fm_free(cfg_path), fm_free(text), fm_free(origin);
    return st;
}

/* ---- messages -----------------------------------------------------------------------------------
 */
typedef struct conv {
    jj_arena *a;
    const uint8_t *ones; /* shared all-user mask, grown as needed */
    size_t ones_len;
} conv;

static int user_string(conv *cv, const char *s, size_t n, jj_value *out) {
    if (n > cv->ones_len) {
        uint8_t *o = jj_alloc(cv->a, n);
        if (!o) return -1;
        memset(o, 1, n);
        cv->ones = o, cv->ones_len = n;
    }
    *out = jj_str(s, n, n ? cv->ones : NULL);
    return 0;
}

/* JSON -> values (strings borrowed from the JSON tree, masked as user bytes). Depth is checked
 * before (at most FM_JSON_MAX_DEPTH). */
static int convert(conv *cv, json_t *j, jj_value *out) {
    switch (json_typeof(j)) {
    case JSON_NULL:
        return *out = jj_none(), 0;
    case JSON_TRUE:
        return *out = jj_bool(true), 0;
    case JSON_FALSE:
        return *out = jj_bool(false), 0;
    case JSON_INTEGER:
        return *out = jj_int((int64_t)json_integer_value(j)), 0;
    case JSON_REAL:
        return *out = jj_float(json_real_value(j)), 0;
    case JSON_STRING:
        return user_string(cv, json_string_value(j), json_string_length(j), out);
    case JSON_ARRAY: {
        jj_list *l = jj_alloc(cv->a, sizeof *l);
        if (!l || !(l->v = jj_alloc(cv->a, (json_array_size(j) + 1) * sizeof *l->v))) return -1;
        for (; l->n < json_array_size(j); l->n++)
            if (convert(cv, json_array_get(j, l->n), &l->v[l->n])) return -1;
        *out = (jj_value){.t = JT_LIST, .u.l = l};
        return 0;
    }
    default: {
        jj_dict *d = jj_alloc(cv->a, sizeof *d);
        const char *k;
        json_t *x;
        if (!d) return -1;
        json_object_foreach(j, k, x) {
            jj_value kv, vv;
            if (user_string(cv, k, strlen(k), &kv) || convert(cv, x, &vv) ||
                jj_dict_set(cv->a, d, kv, vv))
                return -1;
        }
        *out = (jj_value){.t = JT_DICT, .u.d = d};
        return 0;
    }
    }
}

static int json_depth(json_t *j, int limit) {
    if (!json_is_object(j) && !json_is_array(j)) return 0;
    if (limit <= 0) return 1;
    size_t i;
    const char *k;
    json_t *x;
    if (json_is_array(j)) {
        json_array_foreach(j, i, x) if (json_depth(x, limit - 1)) return 1;
    } else {
        json_object_foreach(j, k, x) if (json_depth(x, limit - 1)) return 1;
    }
    return 0;
}

static fm_status check_part(json_t *part, size_t m, size_t p, fm_error *err) {
    if (!json_is_object(part))
        return fm_error_set(err, FM_ERR_INPUT, "messages[%zu].content[%zu]: expected an object", m,
                            p);
    json_t *type = json_object_get(part, "type"), *text = json_object_get(part, "text");
    if (type && !json_is_string(type))
        return fm_error_set(err, FM_ERR_INPUT,
                            "messages[%zu].content[%zu]: \"type\" must be a string", m, p);
    if (text && !json_is_string(text))
        return fm_error_set(err, FM_ERR_INPUT,
                            "messages[%zu].content[%zu]: \"text\" must be a string", m, p);
    return FM_OK;
}

/* HF message format: objects with a string "role" and "content" a string, null, or a list of
 * part objects ("type" and "text" strings when present). Other keys pass through. */
static fm_status check_messages(json_t *msgs, fm_error *err) {
    if (!json_is_array(msgs))
        return fm_error_set(err, FM_ERR_INPUT, "messages: expected a list of messages");
    if (json_array_size(msgs) == 0)
        return fm_error_set(err, FM_ERR_INPUT, "messages: the list is empty");
    for (size_t m = 0; m < json_array_size(msgs); m++) {
        json_t *msg = json_array_get(msgs, m), *content;
        if (!json_is_object(msg))
            return fm_error_set(err, FM_ERR_INPUT, "messages[%zu]: expected an object", m);
        if (!json_is_string(json_object_get(msg, "role")))
            return fm_error_set(err, FM_ERR_INPUT, "messages[%zu]: \"role\" must be a string", m);
        content = json_object_get(msg, "content");
        if (content && !json_is_string(content) && !json_is_null(content) &&
            !json_is_array(content))
            return fm_error_set(
                err, FM_ERR_INPUT,
                "messages[%zu]: \"content\" must be a string, a list of parts or null", m);
        for (size_t p = 0; json_is_array(content) && p < json_array_size(content); p++) {
            fm_status st = check_part(json_array_get(content, p), m, p, err);
            if (st != FM_OK) return st;
        }
    }
    return FM_OK;
}

static fm_status parse_messages(const char *json, size_t len, json_t **root, json_t **msgs,
                                fm_error *err) {
    json_error_t je;
    if (len > FM_CHAT_MAX_MESSAGES_BYTES)
        return fm_error_set(err, FM_ERR_LIMIT, "messages: %zu bytes exceed the limit of %zu", len,
                            FM_CHAT_MAX_MESSAGES_BYTES);
    size_t valid = tk_utf8_invalid_at((const uint8_t *)json, len);
    if (valid != len)
        return fm_error_set(err, FM_ERR_INPUT, "messages: invalid UTF-8 at byte %zu", valid);
    if (!(*root = json_loadb(json, len, JSON_ALLOW_NUL, &je)))
        return fm_error_set(err, FM_ERR_JSON, "messages: invalid JSON at line %d, column %d: %s",
                            je.line, je.column, je.text);
    if (json_depth(*root, FM_JSON_MAX_DEPTH))
        return fm_error_set(err, FM_ERR_LIMIT, "messages: nested deeper than %d levels",
                            FM_JSON_MAX_DEPTH);
    *msgs = *root;
    if (json_is_object(*root)) {
        if (json_object_get(*root, "add_generation_prompt"))
            return fm_error_set(
                err, FM_ERR_INPUT,
                "messages: \"add_generation_prompt\" is set by the render options, not the file");
        *msgs = json_object_get(*root, "messages");
        if (!*msgs)
            return fm_error_set(err, FM_ERR_INPUT, "messages: the object has no \"messages\" key");
    }
    return check_messages(*msgs, err);
}

/* ---- rendering ----------------------------------------------------------------------------------
 */
static fm_status build_vars(const fm_chat_template *t, json_t *root, json_t *msgs, bool gen,
                            conv *cv, jj_var **vars, size_t *n, fm_error *err) {
    size_t extra = json_is_object(root) ? json_object_size(root) : 0, k = 0;
    jj_var *v = jj_alloc(cv->a, (4 + t->n_vars + extra) * sizeof *v);
    jj_value mv;
    if (!v || convert(cv, msgs, &mv))
        return fm_error_set(err, cv->a->over ? FM_ERR_LIMIT : FM_ERR_NOMEM, "messages: %s",
                            cv->a->over ? "too large for the memory limit" : "out of memory");
    v[k++] = (jj_var){"messages", 8, mv};
    v[k++] = (jj_var){"add_generation_prompt", 21, jj_bool(gen)};
    v[k++] = (jj_var){"tools", 5, jj_none()};
    v[k++] = (jj_var){"documents", 9, jj_none()};
    for (size_t i = 0; i < t->n_vars; i++)
        v[k++] = t->vars[i];
    const char *key;
    json_t *x;
    if (json_is_object(root)) json_object_foreach(root, key, x) {
            if (!strcmp(key, "messages")) continue;
            jj_value val;
            if (convert(cv, x, &val))
                return fm_error_set(err, FM_ERR_NOMEM, "messages: out of memory");
            v[k++] = (jj_var){key, strlen(key), val};
        }
    *vars = v, *n = k;
    return FM_OK;
}

fm_status fm_chat_render(const fm_chat_template *t, const char *messages_json, size_t json_len,
                         const fm_chat_render_options *o, fm_chat_prompt *out, fm_error *err) {
    fm_chat_render_options def;
    if (!o) fm_chat_render_options_init(&def), o = &def;
    memset(out, 0, sizeof *out);
    json_t *root = NULL, *msgs = NULL;
    jj_arena a = {.limit = o->max_memory_bytes};
    conv cv = {.a = &a};
    jj_var *vars = NULL;
    size_t n_vars = 0;
    jj_limits lim = {o->max_output_bytes, o->max_iterations, o->max_call_depth, o->max_memory_bytes,
                     o->max_work};
    fm_status st = parse_messages(messages_json, json_len, &root, &msgs, err);
    if (st == FM_OK)
        st = build_vars(t, root, msgs, o->add_generation_prompt, &cv, &vars, &n_vars, err);
    if (st == FM_OK)
        st = jj_render(&t->body, t->origin, vars, n_vars, &a, &lim, &out->text, &out->user_mask,
                       &out->len, err);
    jj_arena_free(&a);
    json_decref(root);
    return st;
}

/* ---- image placeholders -------------------------------------------------------------------------
 */
static const char IMAGE_PAD[] = "<|image_pad|>", VIDEO_PAD[] = "<|video_pad|>";

/* Position of the next template-origin occurrence of tok (all its bytes non-user) at or after
 * from, or len. */
static size_t next_template_token(const fm_chat_prompt *p, size_t from, const char *tok) {
    size_t n = strlen(tok);
    for (const char *h; from + n <= p->len && (h = memmem(p->text + from, p->len - from, tok, n));
         from++) {
        size_t at = (size_t)(h - p->text);
        bool user = false;
        for (size_t i = 0; i < n && !user; i++)
            user = p->user_mask[at + i];
        if (!user) return at;
        from = at;
    }
    return p->len;
}

size_t fm_chat_count_image_pads(const fm_chat_prompt *p) {
    size_t n = 0;
    for (size_t at = next_template_token(p, 0, IMAGE_PAD); at < p->len;
         at = next_template_token(p, at + 1, IMAGE_PAD))
        n++;
    return n;
}

fm_status fm_chat_expand_image_pads(const fm_chat_prompt *in, const uint64_t *tokens_per_image,
                                    size_t n_images, fm_chat_prompt *out, fm_error *err) {
    const size_t pad = sizeof IMAGE_PAD - 1;
    memset(out, 0, sizeof *out);
    if (next_template_token(in, 0, VIDEO_PAD) < in->len)
        return fm_error_set(err, FM_ERR_UNSUPPORTED,
                            "prompt: video inputs (<|video_pad|>) are not supported");
    size_t found = fm_chat_count_image_pads(in);
    if (found != n_images)
        return fm_error_set(
            err, FM_ERR_INPUT,
            "prompt: the template emitted %zu image placeholder(s) for %zu image(s)", found,
            n_images);
    uint64_t total = in->len, add;
    for (size_t k = 0; k < n_images; k++) {
        if (tokens_per_image[k] < 1 || tokens_per_image[k] > FM_CHAT_MAX_IMAGE_TOKENS)
            return fm_error_set(err, FM_ERR_INPUT, "image %zu: %llu tokens is outside 1..%llu", k,
                                (unsigned long long)tokens_per_image[k],
                                (unsigned long long)FM_CHAT_MAX_IMAGE_TOKENS);
        if (fm_mul_u64(tokens_per_image[k] - 1, pad, &add) || fm_add_u64(total, add, &total) ||
            total >= SIZE_MAX / 2)
            return fm_error_set(err, FM_ERR_OVERFLOW, "prompt: expanded length overflows");
    }
    out->text = fm_malloc((size_t)total + 1);
    out->user_mask = fm_malloc(total ? (size_t)total : 1);
    if (!out->text || !out->user_mask) {
        fm_chat_prompt_free(out);
        return fm_error_set(err, FM_ERR_NOMEM, "prompt: out of memory");
    }
    size_t o = 0, from = 0, k = 0;
    for (size_t at = next_template_token(in, 0, IMAGE_PAD); at < in->len;
         at = next_template_token(in, from, IMAGE_PAD), k++) {
        memcpy(out->text + o, in->text + from, at - from),
            memcpy(out->user_mask + o, in->user_mask + from, at - from);
        o += at - from;
        for (uint64_t r = 0; r < tokens_per_image[k]; r++, o += pad)
            memcpy(out->text + o, IMAGE_PAD, pad);
        memset(out->user_mask + o - (size_t)tokens_per_image[k] * pad, 0,
               (size_t)tokens_per_image[k] * pad);
        from = at + pad;
    }
    memcpy(out->text + o, in->text + from, in->len - from),
        memcpy(out->user_mask + o, in->user_mask + from, in->len - from);
    o += in->len - from;
    out->text[o] = '\0';
    out->len = o;
    return FM_OK;
}
