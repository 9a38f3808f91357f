/* `fusemap serve` end to end: servers started by the test on ephemeral loopback ports, driven by
 * plain HTTP over sockets (a small client here). Answers equal `fusemap generate`'s for the same
 * prompt (text and image), streams carry the same text as chat.completion.chunk events ending in
 * [DONE], stop sequences cut the text, concurrent requests answer what they answer alone with the
 * same seeds, a client that disconnects mid-stream frees its slot at once, every bad input gets a
 * 4xx OpenAI-style error while the server keeps serving, the API key guards every endpoint but
 * /health, each request leaves one access-log line, and SIGTERM during a stream ends it and the
 * server exits 0 within its bound. */
#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fusemap/fusemap.h"
#include "support/check.h"
#include "support/img_fixtures.h"
#include "support/qwen_fixture.h"

enum { VOCAB = 1280, VSTART = 1267, IMG = 1268, VEND = 1269 };
static char *tmp, *dir, *png, *png_b64;
static const char *cli;

/* ---- fixture (as tests/test_generate.c) -------------------------------------------------------
 */

static int write_tokenizer(const char *to) {
    json_error_t je;
    json_t *t = json_load_file("tests/data/tokenizer/pairs/tokenizer.json", 0, &je);
    if (!t) return -1;
    static const char *const names[3] = {"<|vision_start|>", "<|image_pad|>", "<|vision_end|>"};
    json_t *added = json_object_get(t, "added_tokens");
    for (int i = 0; i < 3; i++)
        json_array_append_new(added, json_pack("{s:i,s:s,s:b,s:b,s:b,s:b,s:b}", "id", VSTART + i,
                                               "content", names[i], "single_word", 0, "lstrip", 0,
                                               "rstrip", 0, "normalized", 0, "special", 1));
    char *path = fm_test_join(to, "tokenizer.json");
    int rc = json_dump_file(t, path, JSON_COMPACT);
    json_decref(t);
    free(path);
    return rc;
}

static const char *template_text =
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] "
    "}}<|im_end|>\n{% else %}{% for content in message['content'] %}{% if content['type'] == "
    "'image' %}<|vision_start|><|image_pad|><|vision_end|>{% elif 'text' in content %}{{ "
    "content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}{% if "
    "add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

static void write_text(const char *d, const char *name, const char *text) {
    char *p = fm_test_join(d, name);
    CHECK(fm_test_write_file(p, text, strlen(text)) == 0);
    free(p);
}

static char *base64(const uint8_t *b, size_t n) {
    static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char *o = malloc(n / 3 * 4 + 8), *w = o;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)b[i] << 16 | (i + 1 < n ? (uint32_t)b[i + 1] << 8 : 0) |
                     (i + 2 < n ? b[i + 2] : 0);
        *w++ = a[v >> 18], *w++ = a[(v >> 12) & 63];
        *w++ = i + 1 < n ? a[(v >> 6) & 63] : '=';
        *w++ = i + 2 < n ? a[v & 63] : '=';
    }
    *w = '\0';
    return o;
}

static void setup(void) {
    tmp = fm_test_tmpdir("serve");
    dir = fm_test_join(tmp, "model");
    fm_qfix q;
    fm_qfix_init(&q);
    q.text_layers = 2, q.text_hidden = 64, q.text_heads = 4, q.text_kv_heads = 2, q.text_inter = 96,
    q.vocab = VOCAB, q.hidden_size = 64, q.tie = true, q.scale = 0.15f;
    q.extra_config =
        "\"image_token_id\": 1268, \"vision_start_token_id\": 1267, \"vision_end_token_id\": 1269, "
        "\"video_token_id\": 1270, \"eos_token_id\": 1258, "
        "\"rope_scaling\": {\"type\": \"mrope\", \"mrope_section\": [2, 3, 3]}";
    fm_error e;
    CHECK_OK(fm_qfix_write(dir, &q, &e), &e);
    CHECK(write_tokenizer(dir) == 0);
    write_text(dir, "chat_template.jinja", template_text);
    write_text(dir, "generation_config.json", "{\"eos_token_id\": [1258, 1256]}\n");
    uint8_t rgb[56 * 84 * 3];
    imgfx_fill_smooth(rgb, 84, 56, 3, 7);
    size_t len = 0;
    uint8_t *bytes = imgfx_png_encode(84, 56, 2, 8, 0, rgb, NULL, 0, NULL, 0, &len);
    png = fm_test_join(tmp, "img.png");
    CHECK(bytes && fm_test_write_file(png, bytes, len) == 0);
    png_b64 = bytes ? base64(bytes, len) : NULL;
    free(bytes);
}

/* ---- servers ----------------------------------------------------------------------------------
 */

typedef struct server {
    pid_t pid;
    int port;
    char log[4200];
    const char *key; /* sent as Authorization: Bearer when set */
} server;

static const char *str_or_empty(const char *s) {
    return s ? s : "";
}

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* Starts `fusemap serve DIR --port 0 ARGS` (stderr into a log file); waits for its port. */
static bool server_start(server *s, const char *tag, const char *args) {
    memset(s, 0, sizeof *s);
    snprintf(s->log, sizeof s->log, "%s/%s.log", tmp, tag);
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "exec %s serve %s --port 0 --threads 2 %s 2>%s", cli, dir, args,
             s->log);
    s->pid = fork();
    if (s->pid == 0) {
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    for (double t0 = now_s(); s->pid > 0 && now_s() - t0 < 30;) {
        char *text = fm_test_read_file(s->log, NULL);
        const char *p = text ? strstr(text, "listening on http://127.0.0.1:") : NULL;
        if (p) s->port = atoi(p + strlen("listening on http://127.0.0.1:"));
        free(text);
        if (s->port) return true;
        int status;
        if (waitpid(s->pid, &status, WNOHANG) == s->pid) break;
        usleep(20000);
    }
    char *text = fm_test_read_file(s->log, NULL);
    fprintf(stderr, "server '%s' did not start: %s\n", tag, text ? text : "(no log)");
    free(text);
    return false;
}

/* SIGTERM, then the exit status (-1 when it does not exit within `bound` seconds). */
static int server_stop(server *s, double bound) {
    if (s->pid <= 0) return -1;
    kill(s->pid, SIGTERM);
    int status = 0;
    for (double t0 = now_s(); now_s() - t0 < bound; usleep(10000))
        if (waitpid(s->pid, &status, WNOHANG) == s->pid) {
            s->pid = 0;
            return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        }
    kill(s->pid, SIGKILL);
    waitpid(s->pid, &status, 0);
    s->pid = 0;
    return -1;
}

/* ---- a small HTTP/1.1 client ------------------------------------------------------------------
 */

typedef struct resp {
    int status;
    char *head, *body; /* NUL-terminated; body de-chunked */
    size_t body_len;
} resp;

static void resp_free(resp *r) {
    free(r->head), free(r->body);
    memset(r, 0, sizeof *r);
}

static int connect_to(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET, a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a)) close(fd), fd = -1;
    return fd;
}

static bool send_all(int fd, const char *p, size_t n) {
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w <= 0) return false;
        p += w, n -= (size_t)w;
    }
    return true;
}

/* Sends one request (Connection: close; extra: more header lines, each ending in \r\n). */
static int send_request(const server *s, const char *method, const char *path, const char *extra,
                        const char *body, size_t len) {
    int fd = connect_to(s->port);
    if (fd < 0) return -1;
    char head[1024], auth[300] = "";
    if (s->key) snprintf(auth, sizeof auth, "Authorization: Bearer %s\r\n", s->key);
    int n = snprintf(head, sizeof head,
                     "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n%s%s"
                     "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
                     method, path, auth, extra ? extra : "", body ? len : 0);
    if (!send_all(fd, head, (size_t)n) || (body && !send_all(fd, body, len))) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Reads until the server closes (at most `limit` seconds). */
static char *read_all(int fd, size_t *n, double limit) {
    size_t cap = 1 << 16, len = 0;
    char *b = malloc(cap);
    for (double t0 = now_s(); now_s() - t0 < limit;) {
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, 100) <= 0) continue;
        if (len + 4096 > cap) b = realloc(b, cap *= 2);
        ssize_t r = recv(fd, b + len, cap - len - 1, 0);
        if (r <= 0) break;
        len += (size_t)r;
    }
    b[len] = '\0';
    *n = len;
    return b;
}

/* Splits status line, head and (de-chunked) body. */
static void parse_response(char *raw, size_t n, resp *r) {
    char *end = strstr(raw, "\r\n\r\n");
    if (!end || sscanf(raw, "HTTP/1.%*d %d", &r->status) != 1) {
        r->status = -1, r->body = strdup(""), r->head = strdup(raw);
        return;
    }
    r->head = strndup(raw, (size_t)(end - raw));
    char *b = end + 4;
    size_t blen = n - (size_t)(b - raw);
    if (!strstr(r->head, "chunked")) {
        r->body = malloc(blen + 1), memcpy(r->body, b, blen), r->body[blen] = '\0';
        r->body_len = blen;
        return;
    }
    r->body = malloc(blen + 1);
    size_t w = 0;
    for (char *p = b; p < raw + n;) {
        size_t sz = strtoul(p, &p, 16);
        p = strstr(p, "\r\n");
        if (!sz || !p) break;
        p += 2;
        if (p + sz > raw + n) sz = (size_t)(raw + n - p);
        memcpy(r->body + w, p, sz), w += sz, p += sz + 2;
    }
    r->body[w] = '\0', r->body_len = w;
}

static resp http(const server *s, const char *method, const char *path, const char *body) {
    resp r = {0};
    int fd = send_request(s, method, path, NULL, body, body ? strlen(body) : 0);
    if (fd < 0) {
        r.status = -1, r.body = strdup(""), r.head = strdup("");
        return r;
    }
    size_t n = 0;
    char *raw = read_all(fd, &n, 60);
    close(fd);
    parse_response(raw, n, &r);
    free(raw);
    return r;
}

static json_t *body_json(const resp *r) {
    json_error_t je;
    return json_loadb(r->body, r->body_len, 0, &je);
}

/* The text of a completion response (NULL when it has none). */
static char *completion_text(const resp *r, char *finish, size_t fsize, long long *prompt,
                             long long *completion) {
    json_t *j = body_json(r), *c0 = json_array_get(json_object_get(j, "choices"), 0);
    const char *t = json_string_value(json_object_get(json_object_get(c0, "message"), "content"));
    char *out = t ? strdup(t) : NULL;
    if (finish)
        snprintf(finish, fsize, "%s",
                 json_string_value(json_object_get(c0, "finish_reason"))
                     ? json_string_value(json_object_get(c0, "finish_reason"))
                     : "");
    json_t *u = json_object_get(j, "usage");
    if (prompt) *prompt = json_integer_value(json_object_get(u, "prompt_tokens"));
    if (completion) *completion = json_integer_value(json_object_get(u, "completion_tokens"));
    json_decref(j);
    return out;
}

/* The text a stream carried, its finish_reason and usage; checks the event shapes and [DONE]. */
static char *stream_text(const resp *r, char *finish, size_t fsize, long long *completion) {
    size_t cap = r->body_len + 1, len = 0;
    char *text = calloc(1, cap);
    bool done = false, role = false;
    int events = 0;
    *finish = '\0';
    for (char *p = r->body; (p = strstr(p, "data: "));) {
        p += 6;
        char *e = strstr(p, "\n\n");
        if (!e) break;
        events++;
        CHECK_MSG(!done, "an event after [DONE]: %.*s", (int)(e - p), p);
        if (!strncmp(p, "[DONE]", 6)) {
            done = true;
            p = e;
            continue;
        }
        json_error_t je;
        json_t *j = json_loadb(p, (size_t)(e - p), 0, &je);
        CHECK_MSG(j && !strcmp(str_or_empty(json_string_value(json_object_get(j, "object"))),
                               "chat.completion.chunk"),
                  "chunk: %.*s", (int)(e - p), p);
        CHECK_CONTAINS(json_string_value(json_object_get(j, "id")), "chatcmpl-");
        json_t *c0 = json_array_get(json_object_get(j, "choices"), 0),
               *d = json_object_get(c0, "delta");
        if (json_string_value(json_object_get(d, "role"))) role = true;
        const char *t = json_string_value(json_object_get(d, "content"));
        if (t) memcpy(text + len, t, strlen(t)), len += strlen(t);
        const char *f = json_string_value(json_object_get(c0, "finish_reason"));
        if (f) snprintf(finish, fsize, "%s", f);
        json_t *u = json_object_get(j, "usage");
        if (u && completion)
            *completion = json_integer_value(json_object_get(u, "completion_tokens"));
        json_decref(j);
        p = e;
    }
    CHECK_MSG(done && role && events >= 3, "stream: [DONE] %d, role chunk %d, %d events: %s", done,
              role, events, r->body);
    return text;
}

/* `fusemap generate ARGS --json -q` -> its JSON (NULL on failure). */
static json_t *generate(const char *fmt, ...) {
    char args[8192], cmd[16384];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    snprintf(cmd, sizeof cmd, "%s generate %s %s --json -q", cli, dir, args);
    FILE *p = popen(cmd, "r");
    char buf[1 << 16];
    size_t n = p ? fread(buf, 1, sizeof buf - 1, p) : 0;
    buf[n] = '\0';
    if (p) pclose(p);
    json_error_t je;
    return json_loads(buf, 0, &je);
}

static server main_srv; /* --parallel 4, default limits */

static const char *user_msg =
    "{\"messages\": [{\"role\": \"user\", \"content\": \"Hello there, what is new?\"}]%s}";

static char *req_body(const char *fmt, const char *extra) {
    char *b = malloc(strlen(fmt) + strlen(extra) + 1);
    sprintf(b, fmt, extra);
    return b;
}

/* ---- cases ------------------------------------------------------------------------------------
 */

static void test_health_models_routes(void) {
    resp r = http(&main_srv, "GET", "/health", NULL);
    CHECK_EQ_INT(200, r.status);
    CHECK_CONTAINS(r.body, "\"status\":\"ok\"");
    CHECK_CONTAINS(r.body, "\"slots_idle\":4");
    resp_free(&r);
    r = http(&main_srv, "GET", "/v1/models", NULL);
    json_t *j = body_json(&r), *m0 = json_array_get(json_object_get(j, "data"), 0);
    CHECK_EQ_INT(200, r.status);
    CHECK_EQ_STR("list", json_string_value(json_object_get(j, "object")));
    CHECK_EQ_STR("model", json_string_value(json_object_get(m0, "id")));
    CHECK_EQ_STR("model", json_string_value(json_object_get(m0, "object")));
    json_decref(j), resp_free(&r);
    r = http(&main_srv, "GET", "/v1/models/model", NULL);
    j = body_json(&r);
    CHECK_EQ_INT(200, r.status);
    CHECK_EQ_STR("model", json_string_value(json_object_get(j, "id")));
    json_decref(j), resp_free(&r);
    static const struct {
        const char *method, *path;
        int status;
        const char *code;
    } cases[] = {{"GET", "/v1/models/other", 404, "model_not_found"},
                 {"GET", "/v1/nothing", 404, "not_found"},
                 {"GET", "/v1/chat/completions", 405, "method_not_allowed"},
                 {"DELETE", "/v1/models", 405, "method_not_allowed"},
                 {"POST", "/health", 405, "method_not_allowed"}};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        r = http(&main_srv, cases[i].method, cases[i].path, NULL);
        j = body_json(&r);
        CHECK_MSG(r.status == cases[i].status, "%s %s: status %d, expected %d", cases[i].method,
                  cases[i].path, r.status, cases[i].status);
        CHECK_EQ_STR(cases[i].code,
                     json_string_value(json_object_get(json_object_get(j, "error"), "code")));
        CHECK(json_string_value(json_object_get(json_object_get(j, "error"), "message")));
        json_decref(j), resp_free(&r);
    }
}

/* The same prompt through `fusemap generate` and the server: same text, same token counts. */
static void test_completion_equals_generate(void) {
    json_t *g = generate("--prompt 'Hello there, what is new?' --max-new-tokens 12");
    REQUIRE(g);
    char *body = req_body(user_msg, ", \"max_tokens\": 12, \"model\": \"anything\"");
    resp r = http(&main_srv, "POST", "/v1/chat/completions", body);
    CHECK_EQ_INT(200, r.status);
    CHECK_CONTAINS(r.head, "application/json");
    char finish[32];
    long long pt = 0, ct = 0;
    char *text = completion_text(&r, finish, sizeof finish, &pt, &ct);
    CHECK_EQ_STR(json_string_value(json_object_get(g, "text")), text);
    CHECK_EQ_INT(json_integer_value(json_object_get(g, "prompt_tokens")), pt);
    CHECK_EQ_INT(json_array_size(json_object_get(g, "tokens")), ct);
    CHECK_EQ_STR(!strcmp(json_string_value(json_object_get(g, "stop")), "eos") ? "stop" : "length",
                 finish);
    json_t *j = body_json(&r);
    CHECK_EQ_STR("chat.completion", json_string_value(json_object_get(j, "object")));
    CHECK_EQ_STR("model", json_string_value(json_object_get(j, "model")));
    CHECK_CONTAINS(json_string_value(json_object_get(j, "id")), "chatcmpl-");
    CHECK(json_integer_value(json_object_get(j, "created")) > 1600000000);
    json_t *msg = json_object_get(json_array_get(json_object_get(j, "choices"), 0), "message");
    CHECK_EQ_STR("assistant", json_string_value(json_object_get(msg, "role")));
    CHECK_EQ_INT(pt + ct,
                 json_integer_value(json_object_get(json_object_get(j, "usage"), "total_tokens")));
    json_decref(j);
    /* the stream carries the same text, then finish_reason, usage and [DONE] */
    resp_free(&r);
    free(body);
    body = req_body(user_msg, ", \"max_completion_tokens\": 12, \"stream\": true, "
                              "\"stream_options\": {\"include_usage\": true}");
    r = http(&main_srv, "POST", "/v1/chat/completions", body);
    CHECK_EQ_INT(200, r.status);
    CHECK_CONTAINS(r.head, "text/event-stream");
    char sfinish[32];
    long long sct = -1;
    char *st = stream_text(&r, sfinish, sizeof sfinish, &sct);
    CHECK_EQ_STR(text, st);
    CHECK_EQ_STR(finish, sfinish);
    CHECK_EQ_INT(ct, sct);
    free(st), free(text), free(body);
    resp_free(&r);
    json_decref(g);
}

/* An image part as a data: URI answers what `generate --image` answers. */
static void test_image_request(void) {
    REQUIRE(png_b64);
    json_t *g = generate("--image %s --prompt 'What is it?' --max-new-tokens 6", png);
    REQUIRE(g);
    size_t n = strlen(png_b64) + 512;
    char *body = malloc(n);
    snprintf(body, n,
             "{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"image_url\", "
             "\"image_url\": {\"url\": \"data:image/png;base64,%s\"}}, {\"type\": \"text\", "
             "\"text\": \"What is it?\"}]}], \"max_tokens\": 6}",
             png_b64);
    resp r = http(&main_srv, "POST", "/v1/chat/completions", body);
    CHECK_EQ_INT(200, r.status);
    long long pt = 0;
    char *text = completion_text(&r, NULL, 0, &pt, NULL);
    CHECK_EQ_STR(json_string_value(json_object_get(g, "text")), text);
    CHECK_EQ_INT(json_integer_value(json_object_get(g, "prompt_tokens")), pt);
    CHECK_MSG(pt > 20, "an image prompt of %lld tokens", pt);
    free(text), free(body);
    resp_free(&r);
    json_decref(g);
}

/* A stop sequence taken from the middle of the greedy answer ends the text before it, streamed or
 * not; the answer without it is the same up to there. */
static void test_stop_sequences(void) {
    char *body = req_body(user_msg, ", \"max_tokens\": 16");
    resp r = http(&main_srv, "POST", "/v1/chat/completions", body);
    char *full = completion_text(&r, NULL, 0, NULL, NULL);
    resp_free(&r), free(body);
    REQUIRE_MSG(full && strlen(full) >= 8, "the greedy answer is long enough: '%s'",
                full ? full : "");
    char stop[8];
    size_t at = strlen(full) / 2;
    snprintf(stop, sizeof stop, "%.3s", full + at);
    json_t *sj = json_string(stop);
    char *sq = json_dumps(sj, JSON_ENCODE_ANY), extra[256];
    json_decref(sj);
    snprintf(extra, sizeof extra, ", \"max_tokens\": 16, \"stop\": [\"\\u0001never\", %s]", sq);
    size_t first = (size_t)(strstr(full, stop) - full);
    for (int streamed = 0; streamed < 2; streamed++) {
        char ex2[300];
        snprintf(ex2, sizeof ex2, "%s%s", extra, streamed ? ", \"stream\": true" : "");
        body = req_body(user_msg, ex2);
        r = http(&main_srv, "POST", "/v1/chat/completions", body);
        char finish[32];
        char *text = streamed ? stream_text(&r, finish, sizeof finish, NULL)
                              : completion_text(&r, finish, sizeof finish, NULL, NULL);
        CHECK_MSG(text && strlen(text) == first && !strncmp(text, full, first),
                  "stop '%s' (%s): '%s' from '%s'", stop, streamed ? "stream" : "plain",
                  text ? text : "", full);
        CHECK_EQ_STR("stop", finish);
        free(text), free(body);
        resp_free(&r);
    }
    free(sq), free(full);
}

/* ---- concurrency ------------------------------------------------------------------------------
 */

typedef struct job {
    char body[512];
    bool stream;
    char *text;
    long long completion;
} job;

static void *run_job(void *arg) {
    job *jb = arg;
    resp r = http(&main_srv, "POST", "/v1/chat/completions", jb->body);
    char finish[32];
    jb->text = r.status != 200 ? NULL
               : jb->stream    ? stream_text(&r, finish, sizeof finish, &jb->completion)
                               : completion_text(&r, finish, sizeof finish, NULL, &jb->completion);
    resp_free(&r);
    return NULL;
}

/* Six requests (sampling with seeds, greedy, streamed and not) at once on four slots answer
 * what each answers alone; a seeded one also equals `fusemap generate` with that seed. */
static void test_concurrent_equals_alone(void) {
    enum { N = 6 };
    static const char *const prompts[N] = {"Tell me a story", "Why is the sky blue?",
                                           "Count",           "What is new today?",
                                           "Hello",           "Once upon a time"};
    job alone[N], together[N];
    for (int i = 0; i < N; i++) {
        char samp[96] = "";
        if (i % 3) snprintf(samp, sizeof samp, ", \"temperature\": 1.3, \"seed\": %d", 11 * i + 3);
        snprintf(alone[i].body, sizeof alone[i].body,
                 "{\"messages\": [{\"role\": \"system\", \"content\": \"Be brief.\"}, {\"role\": "
                 "\"user\", \"content\": \"%s\"}], \"max_tokens\": %d%s%s}",
                 prompts[i], 10 + 4 * i, samp, i % 2 ? ", \"stream\": true" : "");
        alone[i].stream = i % 2, alone[i].text = NULL;
        together[i] = alone[i];
        run_job(&alone[i]);
        REQUIRE_MSG(alone[i].text, "request %d alone failed", i);
    }
    pthread_t th[N];
    for (int i = 0; i < N; i++)
        pthread_create(&th[i], NULL, run_job, &together[i]);
    for (int i = 0; i < N; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < N; i++) {
        CHECK_MSG(together[i].text && !strcmp(alone[i].text, together[i].text),
                  "request %d: together '%s', alone '%s'", i,
                  together[i].text ? together[i].text : "(failed)", alone[i].text);
        CHECK_EQ_INT(alone[i].completion, together[i].completion);
        free(together[i].text);
    }
    /* request 1 (temperature 1.3, seed 14) as `fusemap generate` samples it */
    char *path = fm_test_join(tmp, "msgs1.json");
    const char *m1 = "[{\"role\": \"system\", \"content\": \"Be brief.\"}, {\"role\": \"user\", "
                     "\"content\": \"Why is the sky blue?\"}]";
    CHECK(fm_test_write_file(path, m1, strlen(m1)) == 0);
    free(path);
    json_t *g =
        generate("--messages %s/msgs1.json --max-new-tokens 14 --temperature 1.3 --seed 14", tmp);
    CHECK_EQ_STR(json_string_value(json_object_get(g, "text")), alone[1].text);
    json_decref(g);
    for (int i = 0; i < N; i++)
        free(alone[i].text);
}

/* ---- bad input --------------------------------------------------------------------------------
 */

static server lim_srv; /* small limits and an API key */

static void check_error(const server *s, const char *what, const char *body, int status,
                        const char *code) {
    resp r = http(s, "POST", "/v1/chat/completions", body);
    json_t *j = body_json(&r), *e = json_object_get(j, "error");
    CHECK_MSG(r.status == status, "%s: status %d, expected %d (%s)", what, r.status, status,
              r.body);
    CHECK_MSG(json_string_value(json_object_get(e, "message")) &&
                  json_string_value(json_object_get(e, "type")),
              "%s: an OpenAI-style error: %s", what, r.body);
    if (code)
        CHECK_MSG(!strcmp(str_or_empty(json_string_value(json_object_get(e, "code"))), code),
                  "%s: code '%s' expected in %s", what, code, r.body);
    json_decref(j), resp_free(&r);
}

/* A message list with one user turn whose content parts are images (each url given). */
static char *images_body(const char *const *urls, int n) {
    size_t cap = 512;
    for (int i = 0; i < n; i++)
        cap += strlen(urls[i]) + 96;
    char *b = malloc(cap), *w = b;
    w += sprintf(w, "{\"messages\": [{\"role\": \"user\", \"content\": [");
    for (int i = 0; i < n; i++)
        w += sprintf(w, "{\"type\": \"image_url\", \"image_url\": {\"url\": \"%s\"}}, ", urls[i]);
    sprintf(w, "{\"type\": \"text\", \"text\": \"hi\"}]}], \"max_tokens\": 2}");
    return b;
}

static void test_bad_input(void) {
    const server *s = &lim_srv;
    static const struct {
        const char *what, *body;
        int status;
        const char *code;
    } cases[] = {
        {"malformed JSON", "{\"messages\": [", 400, "invalid_json"},
        {"invalid UTF-8", "{\"messages\": \"\xff\xfe\"}", 400, "invalid_json"},
        {"duplicate keys", "{\"messages\": [], \"messages\": []}", 400, "invalid_json"},
        {"not an object", "[1, 2]", 400, "invalid_type"},
        {"no messages", "{}", 400, "invalid_type"},
        {"empty messages", "{\"messages\": []}", 400, "invalid_type"},
        {"messages not a list", "{\"messages\": {\"role\": \"user\"}}", 400, "invalid_type"},
        {"message not an object", "{\"messages\": [\"hi\"]}", 400, "invalid_type"},
        {"no role", "{\"messages\": [{\"content\": \"hi\"}]}", 400, "invalid_type"},
        {"unknown role", "{\"messages\": [{\"role\": \"wizard\", \"content\": \"hi\"}]}", 400,
         "invalid_role"},
        {"role not a string", "{\"messages\": [{\"role\": 3, \"content\": \"hi\"}]}", 400,
         "invalid_type"},
        {"content a number", "{\"messages\": [{\"role\": \"user\", \"content\": 5}]}", 400,
         "invalid_type"},
        {"user content null", "{\"messages\": [{\"role\": \"user\", \"content\": null}]}", 400,
         "invalid_type"},
        {"part without type", "{\"messages\": [{\"role\": \"user\", \"content\": [{}]}]}", 400,
         "invalid_type"},
        {"audio part",
         "{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"input_audio\"}]}]}", 400,
         "unsupported_content"},
        {"text part not a string",
         "{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"text\", \"text\": 1}]}]}",
         400, "invalid_type"},
        {"image_url without url",
         "{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"image_url\", "
         "\"image_url\": {}}]}]}",
         400, "invalid_type"},
        {"tool calls",
         "{\"messages\": [{\"role\": \"assistant\", \"content\": null, \"tool_calls\": []}]}", 400,
         "unsupported_parameter"},
        {"max_tokens a string",
         "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], "
         "\"max_tokens\": \"5\"}",
         400, "invalid_type"},
        {"max_tokens 0",
         "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"max_tokens\": 0}", 400,
         "invalid_value"},
        {"max_tokens over --max-tokens",
         "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"max_tokens\": 65}", 400,
         "invalid_value"},
        {"prompt + max_tokens over the context",
         "{\"messages\": [{\"role\": \"user\", \"content\": \"Tell me a long story about the sea "
         "and the sky and all the fish that swim below the waves\"}], \"max_tokens\": 60}",
         400, "context_length_exceeded"},
        {"temperature a string",
         "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"temperature\": \"hot\"}",
         400, "invalid_type"},
        {"temperature 3",
         "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"temperature\": 3}", 400,
         "invalid_value"},
        {"top_p 1.5", "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"top_p\": 1.5}",
         400, "invalid_value"},
        {"seed 1.5", "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"seed\": 1.5}",
         400, "invalid_type"},
        {"stream a string",
         "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"stream\": \"yes\"}", 400,
         "invalid_type"},
        {"stream_options a list",
         "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"stream_options\": []}", 400,
         "invalid_type"},
        {"stop a number",
         "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"stop\": 5}", 400,
         "invalid_type"},
        {"empty stop",
         "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"stop\": [\"\"]}", 400,
         "invalid_value"},
        {"n 2", "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"n\": 2}", 400,
         "invalid_value"},
        {"tools", "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"tools\": [{}]}",
         400, "unsupported_parameter"},
        {"logprobs",
         "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"logprobs\": true}", 400,
         "unsupported_parameter"},
        {"model a number",
         "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"model\": 1}", 400,
         "invalid_type"},
        {"too many messages",
         "{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}, {\"role\": \"assistant\", "
         "\"content\": \"b\"}, {\"role\": \"user\", \"content\": \"c\"}, {\"role\": \"assistant\", "
         "\"content\": \"d\"}, {\"role\": \"user\", \"content\": \"e\"}]}",
         400, "too_many_messages"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        check_error(s, cases[i].what, cases[i].body, cases[i].status, cases[i].code);
    /* 17 stop sequences */
    char stops[512] = "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"stop\": [";
    for (int i = 0; i < 17; i++)
        sprintf(stops + strlen(stops), "%s\"s%d\"", i ? ", " : "", i);
    strcat(stops, "]}");
    check_error(s, "17 stop sequences", stops, 400, "invalid_type");
    /* deep nesting */
    size_t depth = 30000;
    char *deep = malloc(2 * depth + 64), *w = deep;
    w += sprintf(w, "{\"messages\": ");
    for (size_t i = 0; i < depth; i++)
        *w++ = '[';
    for (size_t i = 0; i < depth; i++)
        *w++ = ']';
    strcpy(w, "}");
    check_error(s, "deep nesting", deep, 400, "invalid_json");
    free(deep);
    /* images: a URL, bad base64, not an image, over the pixel limit, too many */
    char *data = malloc(strlen(png_b64) + 64);
    sprintf(data, "data:image/png;base64,%s", png_b64);
    const char *url[] = {"https://example.com/cat.png"};
    const char *b64[] = {"data:image/png;base64,iVBO!!!"};
    const char *junk[] = {"data:image/png;base64,aGVsbG8gd29ybGQ="};
    const char *plain[] = {"data:image/png,rawbytes"};
    const char *three[] = {data, data, data};
    struct {
        const char *what;
        const char *const *urls;
        int n;
        const char *code;
    } img_cases[] = {{"image URL", url, 1, "invalid_image_url"},
                     {"bad base64", b64, 1, "invalid_image"},
                     {"not an image", junk, 1, "invalid_image"},
                     {"data URI without base64", plain, 1, "invalid_image_url"},
                     {"too many images", three, 3, "too_many_images"},
                     {"image over the pixel limit", three, 1, "invalid_image"}};
    for (size_t i = 0; i < sizeof img_cases / sizeof *img_cases; i++) {
        char *body = images_body(img_cases[i].urls, img_cases[i].n);
        check_error(s, img_cases[i].what, body, 400, img_cases[i].code);
        free(body);
    }
    free(data);
    /* a body over --max-body: 413 */
    char *big = malloc(70000);
    memset(big, ' ', 69999), big[69999] = '\0';
    memcpy(big, "{\"messages\": \"", 14), big[69997] = '"', big[69998] = '}';
    check_error(s, "body over --max-body", big, 413, "request_too_large");
    free(big);
    /* still serving, and the API key still works */
    resp r =
        http(s, "POST", "/v1/chat/completions",
             "{\"messages\": [{\"role\": \"developer\", \"content\": \"Short.\"}, {\"role\": "
             "\"user\", \"content\": \"hi\"}, {\"role\": \"assistant\", \"content\": null}, "
             "{\"role\": \"user\", \"content\": [{\"type\": \"text\", \"text\": \"again\"}]}], "
             "\"max_tokens\": 3}");
    CHECK_MSG(r.status == 200, "a good request after the bad ones: %d %s", r.status, r.body);
    resp_free(&r);
}

static void test_auth(void) {
    server s = lim_srv;
    resp r = http(&(server){.port = s.port}, "GET", "/health", NULL);
    CHECK_EQ_INT(200, r.status);
    resp_free(&r);
    const char *bad_keys[] = {NULL, "wrong-key", "sekret-key-12", "sekret-key-123x", ""};
    const char *paths[][2] = {{"GET", "/v1/models"}, {"POST", "/v1/chat/completions"}};
    for (size_t k = 0; k < sizeof bad_keys / sizeof *bad_keys; k++)
        for (int p = 0; p < 2; p++) {
            server t = {.port = s.port, .key = bad_keys[k]};
            r = http(&t, paths[p][0], paths[p][1],
                     p ? "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}" : NULL);
            json_t *j = body_json(&r);
            CHECK_MSG(r.status == 401, "key '%s' on %s: %d", bad_keys[k] ? bad_keys[k] : "(none)",
                      paths[p][1], r.status);
            CHECK_EQ_STR("invalid_api_key",
                         json_string_value(json_object_get(json_object_get(j, "error"), "code")));
            CHECK_CONTAINS(r.head, "WWW-Authenticate: Bearer");
            json_decref(j), resp_free(&r);
        }
    r = http(&s, "GET", "/v1/models", NULL);
    CHECK_EQ_INT(200, r.status);
    resp_free(&r);
    /* without a key every endpoint is open (the main server) */
    r = http(&main_srv, "GET", "/v1/models", NULL);
    CHECK_EQ_INT(200, r.status);
    resp_free(&r);
}

/* ---- CORS
 * ----------------------------------------------------------------------------------------
 */

/* One request with extra header lines (each ending in \r\n). */
static resp http_x(const server *s, const char *method, const char *path, const char *extra,
                   const char *body) {
    resp r = {0};
    int fd = send_request(s, method, path, extra, body, body ? strlen(body) : 0);
    size_t n = 0;
    char *raw = fd >= 0 ? read_all(fd, &n, 60) : strdup("");
    if (fd >= 0) close(fd);
    parse_response(raw, n, &r);
    free(raw);
    return r;
}

#define CORS_ORIGIN "https://app.example:8443"

static server long_srv; /* one slot, a long context */

/* lim_srv allows CORS_ORIGIN (and needs a key), long_srv any origin; main_srv has no
 * --cors-origin. */
static void test_cors(void) {
    const char *from = "Origin: " CORS_ORIGIN "\r\n";
    /* a preflight needs no key and names what the endpoint takes */
    server nokey = {.port = lim_srv.port};
    resp r = http_x(&nokey, "OPTIONS", "/v1/chat/completions",
                    "Origin: " CORS_ORIGIN "\r\nAccess-Control-Request-Method: POST\r\n"
                    "Access-Control-Request-Headers: authorization, content-type\r\n",
                    NULL);
    CHECK_EQ_INT(204, r.status);
    CHECK_CONTAINS(r.head, "Access-Control-Allow-Origin: " CORS_ORIGIN);
    CHECK_CONTAINS(r.head, "Access-Control-Allow-Methods: POST, OPTIONS");
    CHECK_CONTAINS(r.head, "Access-Control-Allow-Headers: Authorization, Content-Type");
    CHECK_CONTAINS(r.head, "Vary: Origin");
    resp_free(&r);
    r = http_x(&nokey, "OPTIONS", "/v1/models", from, NULL);
    CHECK_EQ_INT(204, r.status);
    CHECK_CONTAINS(r.head, "Access-Control-Allow-Methods: GET, HEAD, OPTIONS");
    resp_free(&r);
    /* answers, errors included, carry the header for the allowed origin only */
    r = http_x(&lim_srv, "GET", "/v1/models", from, NULL);
    CHECK_EQ_INT(200, r.status);
    CHECK_CONTAINS(r.head, "Access-Control-Allow-Origin: " CORS_ORIGIN);
    resp_free(&r);
    r = http_x(&nokey, "GET", "/v1/models", from, NULL);
    CHECK_EQ_INT(401, r.status);
    CHECK_CONTAINS(r.head, "Access-Control-Allow-Origin: " CORS_ORIGIN);
    resp_free(&r);
    r = http_x(&lim_srv, "GET", "/v1/models", "Origin: https://elsewhere.example\r\n", NULL);
    CHECK_EQ_INT(200, r.status);
    CHECK_MSG(!strstr(r.head, "Access-Control-Allow-Origin"),
              "another origin got an Access-Control-Allow-Origin header:\n%s", r.head);
    resp_free(&r);
    r = http_x(&lim_srv, "POST", "/v1/chat/completions", from,
               "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], "
               "\"max_tokens\": 2, \"stream\": true}");
    CHECK_EQ_INT(200, r.status);
    CHECK_CONTAINS(r.head, "text/event-stream");
    CHECK_CONTAINS(r.head, "Access-Control-Allow-Origin: " CORS_ORIGIN);
    resp_free(&r);
    /* '*': any origin, the same answer for all (no Vary) */
    r = http_x(&long_srv, "GET", "/health", "Origin: http://[::1]:3000\r\n", NULL);
    CHECK_EQ_INT(200, r.status);
    CHECK_CONTAINS(r.head, "Access-Control-Allow-Origin: *");
    CHECK_MSG(!strstr(r.head, "Vary: Origin"), "Vary: Origin with '*':\n%s", r.head);
    resp_free(&r);
    /* without --cors-origin: no header, and OPTIONS is not a method of the API */
    r = http_x(&main_srv, "GET", "/health", from, NULL);
    CHECK_EQ_INT(200, r.status);
    CHECK_MSG(!strstr(r.head, "Access-Control"), "CORS headers without --cors-origin:\n%s", r.head);
    resp_free(&r);
    r = http_x(&main_srv, "OPTIONS", "/v1/models", from, NULL);
    CHECK_EQ_INT(405, r.status);
    resp_free(&r);
}

/* --cors-origin takes '*' or scheme://host[:port]. */
static void test_cors_origin_option(void) {
    const char *bad[] = {"app.example",
                         "https://app.example/",
                         "https://app.example/path",
                         "ftp://app.example",
                         "https://",
                         "https://app.example:99999",
                         "https://a b",
                         "https://[zz]"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char cmd[9000];
        snprintf(cmd, sizeof cmd, "%s serve %s --cors-origin '%s' --port 0 >/dev/null 2>&1", cli,
                 dir, bad[i]);
        int st = system(cmd);
        CHECK_MSG(WIFEXITED(st) && WEXITSTATUS(st) == 2, "--cors-origin '%s': exit %d, want 2",
                  bad[i], WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    }
}

/* ---- disconnects and shutdown ------------------------------------------------------------------
 */

static const char *long_req = "{\"messages\": [{\"role\": \"user\", \"content\": \"Go on and "
                              "on\"}], \"max_tokens\": 20000, \"stream\": true}";

/* Opens a stream and reads until its first content delta; the socket, or -1. */
static int open_stream(const server *s, const char *body) {
    int fd = send_request(s, "POST", "/v1/chat/completions", NULL, body, strlen(body));
    char buf[8192];
    size_t len = 0;
    for (double t0 = now_s(); fd >= 0 && now_s() - t0 < 30;) {
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, 100) <= 0) continue;
        ssize_t r = recv(fd, buf + len, sizeof buf - len - 1, 0);
        if (r <= 0) break;
        len += (size_t)r, buf[len] = '\0';
        if (strstr(buf, "\"content\":\"") &&
            strstr(strstr(buf, "\"content\":\"") + 11, "\"content\""))
            return fd;
        if (len > sizeof buf - 64) len = 0;
    }
    if (fd >= 0) close(fd);
    return -1;
}

/* /health's decode_tokens (-1 when missing). */
static long long health_decoded(const server *s) {
    resp h = http(s, "GET", "/health", NULL);
    const char *dt = strstr(h.body, "\"decode_tokens\":");
    long long v = dt ? atoll(dt + 16) : -1;
    resp_free(&h);
    return v;
}

typedef struct timed {
    const server *s;
    double done;
    int status;
} timed;

/* 300 tokens (this prompt runs thousands before an end-of-sequence id) */
static void *short_request(void *arg) {
    timed *t = arg;
    resp r = http(t->s, "POST", "/v1/chat/completions",
                  "{\"messages\": [{\"role\": \"user\", \"content\": \"Go on and on\"}], "
                  "\"max_tokens\": 300}");
    t->done = now_s(), t->status = r.status;
    resp_free(&r);
    return NULL;
}

/* One slot: a stream holds it; two short requests queue behind it (B, then C); the stream's
 * client disconnects: its slot frees at once and B and C are answered in arrival order. */
static void test_disconnect_frees_slot(void) {
    const server *s = &long_srv;
    int fd = open_stream(s, long_req);
    REQUIRE_MSG(fd >= 0, "a stream started");
    timed b = {s, 0, 0}, c = {s, 0, 0};
    pthread_t tb, tc;
    pthread_create(&tb, NULL, short_request, &b);
    usleep(150000);
    pthread_create(&tc, NULL, short_request, &c);
    usleep(150000);
    long long before = health_decoded(s);
    double t0 = now_s();
    close(fd);
    pthread_join(tb, NULL), pthread_join(tc, NULL);
    double waited = now_s() - t0;
    CHECK_EQ_INT(200, b.status);
    CHECK_EQ_INT(200, c.status);
    CHECK_MSG(b.done < c.done, "first come, first served: B done at %.3f, C at %.3f", b.done - t0,
              c.done - t0);
    /* the log: the first request's client is gone */
    char *log = fm_test_read_file(s->log, NULL);
    char *first = log ? strstr(log, "\"POST /v1/chat/completions\"") : NULL;
    CHECK_MSG(first && strstr(first, "(client gone)"), "log: %s", log ? log : "");
    free(log);
    /* the scheduler's own count (the log line is written when the connection ends, whatever the
     * scheduler does): after the close, B's and C's 299 decode steps each and a few more of the
     * abandoned stream, not the thousands it had left */
    long long after = health_decoded(s), extra = after - before - 2 * 299;
    CHECK_MSG(before >= 0 && extra >= 0 && extra < 500,
              "tokens decoded for the abandoned stream after its client left: %lld (B and C "
              "took %.2f s)",
              extra, waited);
    resp h = http(s, "GET", "/health", NULL);
    CHECK_CONTAINS(h.body, "\"slots_processing\":0");
    resp_free(&h);
}

/* SIGTERM during a stream: the stream ends (finished, or an error event once the grace period
 * is over) and the server exits 0 within its bound; a queued request is refused with 503. */
static void test_sigterm_during_stream(void) {
    server *s = &long_srv;
    int fd = open_stream(s, long_req);
    REQUIRE_MSG(fd >= 0, "a stream started");
    const char *queued = "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}";
    int fd2 = send_request(s, "POST", "/v1/chat/completions", NULL, queued, strlen(queued));
    usleep(100000);
    double t0 = now_s();
    kill(s->pid, SIGTERM);
    size_t n = 0;
    char *rest = read_all(fd, &n, 20);
    close(fd);
    int status = 0;
    bool exited = false;
    while (now_s() - t0 < 20 && !exited)
        if (waitpid(s->pid, &status, WNOHANG) == s->pid)
            exited = true;
        else
            usleep(10000);
    double took = now_s() - t0;
    if (!exited) kill(s->pid, SIGKILL), waitpid(s->pid, &status, 0);
    CHECK_MSG(exited && WIFEXITED(status) && WEXITSTATUS(status) == 0,
              "the server exits 0 after SIGTERM (status %d after %.2f s)", status, took);
    CHECK_MSG(took < 8, "stopped within the 0.5 s grace period plus a bound: %.2f s", took);
    CHECK_MSG(strstr(rest, "shutting_down") || strstr(rest, "[DONE]"),
              "the stream ends with an error event or [DONE]: ...%s",
              n > 300 ? rest + n - 300 : rest);
    free(rest);
    resp r = {0};
    char *raw = fd2 >= 0 ? read_all(fd2, &n, 5) : strdup("");
    parse_response(raw, n, &r);
    CHECK_MSG(r.status == 503 && strstr(r.body, "shutting_down"), "the queued request: %d %s",
              r.status, r.body);
    resp_free(&r), free(raw);
    if (fd2 >= 0) close(fd2);
    char *log = fm_test_read_file(s->log, NULL);
    CHECK_MSG(log && strstr(log, "shutting down") && strstr(log, "stopped"), "log: %s",
              log ? log : "");
    free(log);
    s->pid = 0;
}

/* One access-log line per request: method, path, status, tokens, seconds. */
static void test_access_log(void) {
    resp r =
        http(&main_srv, "POST", "/v1/chat/completions",
             "{\"messages\": [{\"role\": \"user\", \"content\": \"log me\"}], \"max_tokens\": 3}");
    long long ct = 0, pt = 0;
    free(completion_text(&r, NULL, 0, &pt, &ct));
    resp_free(&r);
    r = http(&main_srv, "GET", "/v1/nothing", NULL);
    resp_free(&r);
    usleep(50000);
    char *log = fm_test_read_file(main_srv.log, NULL), want[160];
    snprintf(
        want, sizeof want,
        "127.0.0.1 \"POST /v1/chat/completions\" 200 prompt_tokens=%lld completion_tokens=%lld ",
        pt, ct);
    CHECK_CONTAINS(log, want);
    CHECK_CONTAINS(log, "127.0.0.1 \"GET /v1/nothing\" 404 prompt_tokens=0 completion_tokens=0 ");
    free(log);
}

int main(void) {
    cli = getenv("FM_CLI") ? getenv("FM_CLI") : "build/fusemap";
    signal(SIGPIPE, SIG_IGN);
    setup();
    char keyfile[4200], args[8400];
    snprintf(keyfile, sizeof keyfile, "%s/key.txt", tmp);
    fm_test_write_file(keyfile, "sekret-key-123\n", 15);
    bool ok = server_start(&main_srv, "main", "--parallel 4");
    snprintf(args, sizeof args,
             "--api-key-file %s --max-body 65536 --max-tokens 64 --ctx-size 80 --max-images 2 "
             "--max-image-pixels 4000 --max-messages 4 --model-name limited "
             "--cors-origin " CORS_ORIGIN,
             keyfile);
    ok = server_start(&lim_srv, "limits", args) && ok;
    lim_srv.key = "sekret-key-123";
    ok = server_start(&long_srv, "long",
                      "--ctx-size 24000 --max-tokens 20000 --shutdown-timeout 0.5 "
                      "--cors-origin '*'") &&
         ok;
    if (ok) {
        RUN(test_health_models_routes);
        RUN(test_completion_equals_generate);
        RUN(test_image_request);
        RUN(test_stop_sequences);
        RUN(test_concurrent_equals_alone);
        RUN(test_bad_input);
        RUN(test_auth);
        RUN(test_cors);
        RUN(test_cors_origin_option);
        RUN(test_disconnect_frees_slot);
        RUN(test_sigterm_during_stream);
        RUN(test_access_log);
    } else {
        fm_t_failed++;
    }
    CHECK_EQ_INT(0, server_stop(&main_srv, 15));
    CHECK_EQ_INT(0, server_stop(&lim_srv, 15));
    if (long_srv.pid) server_stop(&long_srv, 15);
    if (!getenv("FM_TEST_KEEP")) fm_test_rmtree(tmp);
    free(tmp), free(dir), free(png), free(png_b64);
    TEST_END();
}
