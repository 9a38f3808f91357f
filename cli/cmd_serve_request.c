/* fusemap serve: a /v1/chat/completions request body -> a job (the OpenAI message list turned into
 * the Hugging Face one the chat template takes, data: URI images decoded and preprocessed, the
 * prompt encoded exactly as `fusemap generate` encodes it, sampling and limits checked), and the
 * response bodies (completion, SSE chunks, errors, models). Nothing here reads a file or the
 * network: images come only inline. */
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>

#include "common.h"
#include "fusemap/image.h"
#include "fusemap/version.h"
#include "serve.h"

/* ---- errors -----------------------------------------------------------------------------------
 */

static int bad(srv_error *e, int status, const char *code, const char *param, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 5, 6)))
#endif
    ;
static int bad(srv_error *e, int status, const char *code, const char *param, const char *fmt,
               ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    e->status = status;
    e->type = status >= 500 ? "server_error" : "invalid_request_error";
    e->code = code;
    snprintf(e->param, sizeof e->param, "%s", param ? param : "");
    return -1;
}

/* A library failure while building the prompt: the request's fault unless out of memory. */
static int lib_bad(srv_error *e, const fm_error *fe, const char *param) {
    if (fe->status == FM_ERR_NOMEM)
        return bad(e, 503, "out_of_memory", param, "out of memory: %s", fe->msg);
    return bad(e, 400, "invalid_value", param, "%s", fe->msg);
}

char *srv_error_json(const srv_error *e) {
    json_t *o = json_pack("{s:{s:s,s:s,s:s?,s:s?}}", "error", "message", e->msg, "type",
                          e->type ? e->type : "invalid_request_error", "param",
                          e->param[0] ? e->param : NULL, "code", e->code);
    char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    return s;
}

/* ---- base64 and data: URIs --------------------------------------------------------------------
 */

static int b64_value(unsigned char c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    return c == '+' ? 62 : c == '/' ? 63 : -1;
}

/* Standard base64 (padding optional, nothing else allowed) -> *out (caller frees with fm_free).
 * 0, -1 on a bad character or length, -2 out of memory. */
static int b64_decode(const char *s, size_t n, uint8_t **out, size_t *len) {
    while (n && s[n - 1] == '=' && n % 4 != 1)
        n--;
    if (n % 4 == 1) return -1;
    uint8_t *o = fm_malloc(n / 4 * 3 + 3);
    if (!o) return -2;
    size_t w = 0;
    uint32_t acc = 0;
    for (size_t i = 0; i < n; i++) {
        int v = b64_value((unsigned char)s[i]);
        if (v < 0) {
            fm_free(o);
            return -1;
        }
        acc = acc << 6 | (uint32_t)v;
        if (i % 4 == 3)
            o[w++] = (uint8_t)(acc >> 16), o[w++] = (uint8_t)(acc >> 8), o[w++] = (uint8_t)acc;
    }
    if (n % 4 == 2) o[w++] = (uint8_t)(acc >> 4);
    if (n % 4 == 3) o[w++] = (uint8_t)(acc >> 10), o[w++] = (uint8_t)(acc >> 2);
    *out = o, *len = w;
    return 0;
}

/* Decodes image k from a data: URI (base64 PNG or JPEG), EXIF orientation applied. */
static int decode_image(const srv *s, const char *url, int k, fm_image *img, srv_error *e) {
    char param[48];
    snprintf(param, sizeof param, "messages.image_url[%d]", k);
    if (strncasecmp(url, "data:", 5))
        return bad(e, 400, "invalid_image_url", param,
                   "image %d: only data: URIs are accepted (base64 PNG or JPEG); the server never "
                   "fetches URLs",
                   k);
    const char *comma = strchr(url, ','),
               *semi = comma ? memchr(url, ';', (size_t)(comma - url)) : NULL;
    if (!comma || !semi || strncasecmp(semi, ";base64,", 8) || strncasecmp(url + 5, "image/", 6))
        return bad(e, 400, "invalid_image_url", param,
                   "image %d: expected data:image/png;base64,... or data:image/jpeg;base64,...", k);
    uint8_t *bytes = NULL;
    size_t n = 0;
    int rc = b64_decode(comma + 1, strlen(comma + 1), &bytes, &n);
    if (rc == -2) return bad(e, 503, "out_of_memory", param, "out of memory decoding image %d", k);
    if (rc) return bad(e, 400, "invalid_image", param, "image %d: invalid base64 data", k);
    char label[32];
    snprintf(label, sizeof label, "image %d", k);
    fm_error fe;
    fm_status st = fm_image_decode_limited(bytes, n, label, s->lim.max_image_pixels, img, &fe);
    fm_free(bytes);
    if (st == FM_OK) st = fm_image_apply_orientation(img, &fe);
    if (st != FM_OK)
        return fe.status == FM_ERR_NOMEM ? lib_bad(e, &fe, param)
                                         : bad(e, 400, "invalid_image", param, "%s", fe.msg);
    return 0;
}

/* ---- messages ---------------------------------------------------------------------------------
 */

typedef struct parse_ctx {
    const srv *s;
    json_t *hf; /* the Hugging Face message list for the template */
    const char *urls[64];
    int n_images;
    srv_error *e;
} parse_ctx;

/* One content part -> a template part ({"type": "text", "text"} or {"type": "image"}). */
static int content_part(parse_ctx *c, json_t *part, int mi, int pi, json_t *parts) {
    char param[64];
    snprintf(param, sizeof param, "messages[%d].content[%d]", mi, pi);
    const char *type = json_string_value(json_object_get(part, "type"));
    if (!json_is_object(part) || !type)
        return bad(c->e, 400, "invalid_type", param, "%s: expected an object with a \"type\"",
                   param);
    if (!strcmp(type, "text")) {
        json_t *t = json_object_get(part, "text");
        if (!json_is_string(t))
            return bad(c->e, 400, "invalid_type", param, "%s: \"text\" must be a string", param);
        return json_array_append_new(parts, json_pack("{s:s,s:O}", "type", "text", "text", t));
    }
    if (strcmp(type, "image_url"))
        return bad(c->e, 400, "unsupported_content", param,
                   "%s: content parts of type \"%s\" are not supported (text, image_url)", param,
                   type);
    json_t *iu = json_object_get(part, "image_url");
    const char *url =
        json_is_string(iu) ? json_string_value(iu) : json_string_value(json_object_get(iu, "url"));
    if (!url)
        return bad(c->e, 400, "invalid_type", param, "%s: image_url needs a \"url\" string", param);
    if (c->n_images >= c->s->lim.max_images || c->n_images >= 64)
        return bad(c->e, 400, "too_many_images", param, "more than %d images in one request",
                   c->s->lim.max_images < 64 ? c->s->lim.max_images : 64);
    c->urls[c->n_images++] = url;
    return json_array_append_new(parts, json_pack("{s:s}", "type", "image"));
}

static const char *template_role(const char *role) {
    static const char *const roles[] = {"system", "user", "assistant"};
    for (size_t i = 0; i < sizeof roles / sizeof *roles; i++)
        if (!strcmp(role, roles[i])) return roles[i];
    return !strcmp(role, "developer") ? "system" : NULL; /* OpenAI's newer name for system */
}

static int one_message(parse_ctx *c, json_t *m, int mi) {
    char param[48];
    snprintf(param, sizeof param, "messages[%d]", mi);
    const char *role = json_string_value(json_object_get(m, "role"));
    if (!json_is_object(m) || !role)
        return bad(c->e, 400, "invalid_type", param,
                   "%s: expected an object with a \"role\" string", param);
    const char *tr = template_role(role);
    if (!tr)
        return bad(c->e, 400, "invalid_role", param,
                   "%s: unknown role \"%.40s\" (system, developer, user, assistant)", param, role);
    json_t *content = json_object_get(m, "content"), *out;
    if (json_object_get(m, "tool_calls") || json_object_get(m, "function_call"))
        return bad(c->e, 400, "unsupported_parameter", param, "%s: tool calls are not supported",
                   param);
    if (json_is_string(content)) {
        out = json_incref(content);
    } else if (json_is_array(content)) {
        out = json_array();
        size_t pi;
        json_t *part;
        json_array_foreach(content, pi, part) {
            if (content_part(c, part, mi, (int)pi, out)) {
                json_decref(out);
                return -1;
            }
        }
    } else if ((!content || json_is_null(content)) && !strcmp(tr, "assistant")) {
        out = json_string("");
    } else {
        return bad(c->e, 400, "invalid_type", param,
                   "%s: \"content\" must be a string or an array of parts", param);
    }
    return json_array_append_new(c->hf, json_pack("{s:s,s:o}", "role", tr, "content", out))
               ? bad(c->e, 503, "out_of_memory", param, "out of memory")
               : 0;
}

static int messages(parse_ctx *c, json_t *root) {
    json_t *msgs = json_object_get(root, "messages");
    if (!json_is_array(msgs) || !json_array_size(msgs))
        return bad(c->e, 400, "invalid_type", "messages",
                   "\"messages\" must be a non-empty array of messages");
    if (json_array_size(msgs) > (size_t)c->s->lim.max_messages)
        return bad(c->e, 400, "too_many_messages", "messages",
                   "%zu messages: at most %d per request (--max-messages)", json_array_size(msgs),
                   c->s->lim.max_messages);
    size_t i;
    json_t *m;
    json_array_foreach(msgs, i, m) {
        if (one_message(c, m, (int)i)) return -1;
    }
    return 0;
}

/* ---- scalar fields ----------------------------------------------------------------------------
 */

/* Reads an optional number field within [lo, hi]: 0 absent, 1 set, -1 bad. */
static int number_field(json_t *root, const char *key, double lo, double hi, double *out,
                        srv_error *e) {
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) return 0;
    if (!json_is_number(v)) return bad(e, 400, "invalid_type", key, "\"%s\" must be a number", key);
    *out = json_number_value(v);
    if (!(*out >= lo && *out <= hi))
        return bad(e, 400, "invalid_value", key, "\"%s\" must be within [%g, %g], got %g", key, lo,
                   hi, *out);
    return 1;
}

static int int_field(json_t *root, const char *key, json_int_t lo, json_int_t hi, json_int_t *out,
                     srv_error *e) {
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) return 0;
    if (!json_is_integer(v))
        return bad(e, 400, "invalid_type", key, "\"%s\" must be an integer", key);
    *out = json_integer_value(v);
    if (*out < lo || *out > hi)
        return bad(e, 400, "invalid_value", key, "\"%s\" must be within [%lld, %lld], got %lld",
                   key, (long long)lo, (long long)hi, (long long)*out);
    return 1;
}

static int bool_field(json_t *root, const char *key, bool *out, srv_error *e) {
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) return 0;
    if (!json_is_boolean(v))
        return bad(e, 400, "invalid_type", key, "\"%s\" must be true or false", key);
    *out = json_is_true(v);
    return 1;
}

/* Fields fusemap does not implement: refused when they ask for something, not ignored. */
static int unsupported(json_t *root, srv_error *e) {
    static const char *const absent[] = {"tools",         "functions", "tool_choice",
                                         "function_call", "audio",     "prediction"};
    for (size_t i = 0; i < sizeof absent / sizeof *absent; i++) {
        json_t *v = json_object_get(root, absent[i]);
        if (v && !json_is_null(v) && !(json_is_array(v) && !json_array_size(v)))
            return bad(e, 400, "unsupported_parameter", absent[i], "\"%s\" is not supported",
                       absent[i]);
    }
    json_int_t n = 1;
    if (int_field(root, "n", 1, 1, &n, e) < 0) return -1;
    bool lp = false;
    if (bool_field(root, "logprobs", &lp, e) < 0) return -1;
    if (lp) return bad(e, 400, "unsupported_parameter", "logprobs", "logprobs are not supported");
    static const char *const zero[] = {"presence_penalty", "frequency_penalty"};
    for (size_t i = 0; i < 2; i++) {
        double v = 0;
        if (number_field(root, zero[i], -2, 2, &v, e) < 0) return -1;
        if (v != 0)
            return bad(e, 400, "unsupported_parameter", zero[i],
                       "\"%s\" other than 0 is not supported", zero[i]);
    }
    json_t *rf = json_object_get(root, "response_format");
    const char *rft = json_string_value(json_object_get(rf, "type"));
    if (rf && !json_is_null(rf) && !(rft && !strcmp(rft, "text")))
        return bad(e, 400, "unsupported_parameter", "response_format",
                   "only response_format {\"type\": \"text\"} is supported");
    json_t *model = json_object_get(root, "model");
    if (model && !json_is_string(model))
        return bad(e, 400, "invalid_type", "model", "\"model\" must be a string");
    return 0;
}

static int stops(json_t *root, srv_job *j, srv_error *e) {
    json_t *v = json_object_get(root, "stop"), *one;
    if (!v || json_is_null(v)) return 0;
    json_t *list = json_is_string(v) ? json_pack("[O]", v) : json_incref(v);
    int rc = 0;
    if (!json_is_array(list) || json_array_size(list) > SRV_MAX_STOPS)
        rc = bad(e, 400, "invalid_type", "stop",
                 "\"stop\" must be a string or an array of at most %d strings", SRV_MAX_STOPS);
    size_t i;
    json_array_foreach(list, i, one) {
        if (rc) break;
        size_t n = json_string_length(one);
        if (!json_is_string(one) || !n || n > SRV_MAX_STOP_BYTES)
            rc = bad(e, 400, "invalid_value", "stop",
                     "stop sequence %zu must be a string of 1..%d bytes", i, SRV_MAX_STOP_BYTES);
        else if (!(j->stops[j->n_stops] = fm_strdup(json_string_value(one))))
            rc = bad(e, 503, "out_of_memory", "stop", "out of memory");
        else if (memchr(json_string_value(one), 0, n))
            rc = bad(e, 400, "invalid_value", "stop", "stop sequence %zu contains a NUL", i);
        else
            j->n_stops++, j->max_stop = n > j->max_stop ? n : j->max_stop;
    }
    json_decref(list);
    return rc;
}

/* temperature, top_p, seed over generation_config.json; the sampler options. */
static int sampling(const srv *s, json_t *root, srv_job *j, srv_error *e) {
    fm_generation_overrides ov;
    fm_generation_overrides_init(&ov);
    json_int_t seed = 0;
    int rt = number_field(root, "temperature", 0, 2, &ov.temperature, e);
    int rp = number_field(root, "top_p", 0, 1, &ov.top_p, e);
    int rs = int_field(root, "seed", INT64_MIN, INT64_MAX, &seed, e);
    if (rt < 0 || rp < 0 || rs < 0) return -1;
    ov.set |= (rt ? FM_GEN_SET_TEMPERATURE : 0u) | (rp ? FM_GEN_SET_TOP_P : 0u) | FM_GEN_SET_SEED;
    ov.seed = (uint64_t)seed;
    if (!rs && getrandom(&ov.seed, sizeof ov.seed, 0) != (ssize_t)sizeof ov.seed)
        ov.seed = (uint64_t)time(NULL) ^ (uint64_t)(uintptr_t)j; /* no seed: a fresh one */
    fm_generation_config gc = s->gen;
    fm_error fe;
    if (fm_generation_config_override(&gc, &ov, &fe) != FM_OK ||
        fm_generation_config_sampling(&gc, &j->go.sampling, &fe) != FM_OK)
        return bad(e, 400, "invalid_value", NULL, "%s", fe.msg);
    return 0;
}

/* max_completion_tokens (else max_tokens) against --max-tokens and the context. */
static int length(const srv *s, json_t *root, srv_job *j, srv_error *e) {
    json_int_t a = 0, b = 0;
    int ra = int_field(root, "max_completion_tokens", 1, INT32_MAX, &a, e);
    int rb = ra ? 0 : int_field(root, "max_tokens", 1, INT32_MAX, &b, e);
    if (ra < 0 || rb < 0) return -1;
    const char *key = ra ? "max_completion_tokens" : "max_tokens";
    int64_t want = ra ? a : b, room = s->lim.ctx - (int64_t)j->n_ids;
    if ((ra || rb) && want > s->lim.max_tokens)
        return bad(e, 400, "invalid_value", key, "\"%s\" is %lld: at most %lld (--max-tokens)", key,
                   (long long)want, (long long)s->lim.max_tokens);
    if (room < 1 || ((ra || rb) && want > room))
        return bad(e, 400, "context_length_exceeded", ra || rb ? key : "messages",
                   "the prompt is %zu tokens%s%lld new tokens: the context is %lld tokens "
                   "(--ctx-size)",
                   j->n_ids, ra || rb ? " + " : ", leaving room for no more than ",
                   (long long)(ra || rb ? want : 0), (long long)s->lim.ctx);
    if (!ra && !rb) /* generation_config.json's max_new_tokens, else the server's cap */
        want = s->gen.max_new_tokens > 0 ? s->gen.max_new_tokens : s->lim.max_tokens;
    j->go.max_new_tokens = want < room ? want : room;
    return 0;
}

/* The images decoded in order, then the prompt exactly as `fusemap generate` builds it. */
static int prompt(const srv *s, parse_ctx *c, srv_job *j, srv_error *e) {
    fm_image imgs[64];
    memset(imgs, 0, sizeof imgs);
    int rc = 0;
    for (int i = 0; !rc && i < c->n_images; i++)
        rc = decode_image(s, c->urls[i], i, &imgs[i], e);
    char *json = rc ? NULL : json_dumps(c->hf, JSON_COMPACT);
    if (!rc && !json) rc = bad(e, 503, "out_of_memory", "messages", "out of memory");
    fm_error fe;
    if (!rc &&
        fm_cli_chat_prompt(s->model, s->tok, s->tmpl, json, strlen(json), imgs, (size_t)c->n_images,
                           &j->pv, &j->grid, &j->ids, &j->n_ids, &fe) != FM_OK)
        rc = lib_bad(e, &fe, "messages");
    free(json);
    for (int i = 0; i < c->n_images; i++)
        fm_image_free(&imgs[i]);
    return rc;
}

static void job_id(srv_job *j) {
    uint64_t r[2] = {0, 0};
    if (getrandom(r, sizeof r, 0) != (ssize_t)sizeof r)
        r[0] = (uint64_t)(uintptr_t)j, r[1] = (uint64_t)time(NULL);
    snprintf(j->id, sizeof j->id, "chatcmpl-%016llx%08llx", (unsigned long long)r[0],
             (unsigned long long)(r[1] & 0xffffffffu));
    j->created = (int64_t)time(NULL);
}

int srv_parse_chat(const srv *s, const char *body, size_t len, srv_job **out, srv_error *e) {
    *out = NULL;
    json_error_t je;
    json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &je);
    if (!root)
        return bad(e, 400, "invalid_json", NULL,
                   "the body is not valid JSON: %s (line %d, column %d)", je.text, je.line,
                   je.column);
    srv_job *j = srv_job_new();
    parse_ctx c = {s, json_array(), {0}, 0, e};
    int rc = !j || !c.hf ? bad(e, 503, "out_of_memory", NULL, "out of memory") : 0;
    if (!rc && !json_is_object(root))
        rc = bad(e, 400, "invalid_type", NULL, "the body must be a JSON object");
    if (!rc) rc = unsupported(root, e);
    if (!rc) rc = messages(&c, root);
    if (!rc && bool_field(root, "stream", &j->stream, e) < 0) rc = -1;
    json_t *so = json_object_get(root, "stream_options");
    if (!rc && so && !json_is_null(so) &&
        (!json_is_object(so) || bool_field(so, "include_usage", &j->include_usage, e) < 0))
        rc = e->status ? -1
                       : bad(e, 400, "invalid_type", "stream_options",
                             "\"stream_options\" must be an object");
    if (!rc) rc = stops(root, j, e);
    if (!rc) rc = sampling(s, root, j, e);
    if (!rc) rc = prompt(s, &c, j, e);
    if (!rc) rc = length(s, root, j, e);
    json_decref(c.hf);
    json_decref(root);
    if (rc) {
        srv_job_unref(j);
        return -1;
    }
    j->go.stop_ids = s->stop_ids, j->go.n_stop = s->n_stop_ids, j->go.tokenizer = s->tok;
    job_id(j);
    *out = j;
    return 0;
}

/* ---- responses --------------------------------------------------------------------------------
 */

static json_t *usage(const srv_job *j) {
    return json_pack("{s:I,s:I,s:I}", "prompt_tokens", (json_int_t)j->n_ids, "completion_tokens",
                     (json_int_t)j->n_tokens, "total_tokens",
                     (json_int_t)((int64_t)j->n_ids + j->n_tokens));
}

char *srv_completion_json(const srv *s, srv_job *j) {
    pthread_mutex_lock(&j->mu);
    json_t *o =
        json_pack("{s:s,s:s,s:I,s:s,s:s,s:[{s:i,s:{s:s,s:s%},s:n,s:s}],s:o}", "id", j->id, "object",
                  "chat.completion", "created", (json_int_t)j->created, "model", s->model_id,
                  "system_fingerprint", "fusemap-" FM_VERSION_STRING, "choices", "index", 0,
                  "message", "role", "assistant", "content", j->text ? j->text : "", j->len,
                  "logprobs", "finish_reason", j->finish ? j->finish : "stop", "usage", usage(j));
    pthread_mutex_unlock(&j->mu);
    char *out = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    return out;
}

char *srv_chunk_sse(const srv *s, const srv_job *j, const char *role, const char *text, size_t len,
                    const char *finish, bool with_usage) {
    json_t *delta = json_object();
    if (role) json_object_set_new(delta, "role", json_string(role));
    if (text || role) json_object_set_new(delta, "content", json_stringn(text ? text : "", len));
    json_t *choices = json_array();
    if (!with_usage)
        json_array_append_new(choices, json_pack("{s:i,s:o,s:n,s:s?}", "index", 0, "delta", delta,
                                                 "logprobs", "finish_reason", finish));
    else
        json_decref(delta);
    json_t *o =
        json_pack("{s:s,s:s,s:I,s:s,s:s,s:o}", "id", j->id, "object", "chat.completion.chunk",
                  "created", (json_int_t)j->created, "model", s->model_id, "system_fingerprint",
                  "fusemap-" FM_VERSION_STRING, "choices", choices);
    if (o && with_usage) json_object_set_new(o, "usage", usage(j));
    char *body = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (!body) return NULL;
    size_t n = strlen(body);
    char *sse = malloc(n + 9);
    if (sse) memcpy(sse, "data: ", 6), memcpy(sse + 6, body, n), memcpy(sse + 6 + n, "\n\n", 3);
    free(body);
    return sse;
}

char *srv_models_json(const srv *s) {
    json_t *o =
        json_pack("{s:s,s:[{s:s,s:s,s:I,s:s}]}", "object", "list", "data", "id", s->model_id,
                  "object", "model", "created", (json_int_t)s->created, "owned_by", "fusemap");
    char *out = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    return out;
}
