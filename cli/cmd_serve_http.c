/* fusemap serve: the HTTP side on libmicrohttpd (a thread per connection, so a handler may wait
 * for its job): routing, authentication, the body limit, responses (JSON, or Server-Sent Events
 * for streams), client disconnects, and one access-log line per request. */
#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "common.h"
#include "serve.h"

struct srv_http {
    struct MHD_Daemon *d;
    srv *s;
    MHD_socket quiesced_fd; /* the listening socket once quiesced (closed after the stop) */
};

/* One request on a connection (MHD's con_cls), shared with its stream, freed by the last. */
typedef struct conn {
    int refs;
    srv *s;
    struct MHD_Connection *c;
    double t0;
    char method[16], path[160], ip[64];
    char *body;
    size_t len, cap;
    bool too_large, gone, streaming;
    int status;
    srv_job *job;
    /* stream: the SSE bytes being sent, what was taken from the job's text */
    char *out;
    size_t out_len, out_pos, sent;
    int phase; /* 0 role chunk, 1 text, 2 finish chunk, 3 usage, 4 [DONE], 5 end */
} conn;

static double mono_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static void conn_unref(conn *k) {
    if (__atomic_sub_fetch(&k->refs, 1, __ATOMIC_ACQ_REL)) return;
    __atomic_sub_fetch(&k->s->active, 1, __ATOMIC_ACQ_REL);
    srv_job_unref(k->job);
    free(k->body);
    free(k->out);
    free(k);
}

/* Printable, one line: control bytes and quotes become '?'. */
static void clean_copy(char *dst, size_t size, const char *src) {
    size_t i = 0;
    for (; src && src[i] && i + 1 < size; i++)
        dst[i] = (unsigned char)src[i] < 0x20 || src[i] == 0x7f || src[i] == '"' ? '?' : src[i];
    dst[i] = '\0';
}

/* The access-log line, one write. */
static void access_log(conn *k) {
    if (k->s->quiet) return;
    int64_t prompt = 0, completion = 0;
    if (k->job) {
        pthread_mutex_lock(&k->job->mu);
        prompt = (int64_t)k->job->n_ids, completion = k->job->n_tokens;
        pthread_mutex_unlock(&k->job->mu);
    }
    char line[512];
    int n = snprintf(line, sizeof line,
                     "fusemap serve: %s \"%s %s\" %d prompt_tokens=%lld completion_tokens=%lld "
                     "%.3fs%s\n",
                     k->ip, k->method, k->path, k->status, (long long)prompt, (long long)completion,
                     mono_s() - k->t0, k->gone ? " (client gone)" : "");
    if (n > (int)sizeof line - 1) n = (int)sizeof line - 1, line[n - 1] = '\n';
    if (n > 0 && write(2, line, (size_t)n) < 0) { /* nothing to do about a closed stderr */
    }
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode why) {
    (void)cls, (void)c;
    conn *k = *con_cls;
    if (!k) return;
    if (why != MHD_REQUEST_TERMINATED_COMPLETED_OK && k->job) {
        k->gone = true;
        pthread_mutex_lock(&k->job->mu);
        bool running = k->job->state != JOB_DONE;
        k->job->cancel = true;
        pthread_mutex_unlock(&k->job->mu);
        if (running) srv_sched_wake(k->s->sched);
    }
    access_log(k);
    *con_cls = NULL;
    conn_unref(k);
}

/* ---- responses --------------------------------------------------------------------------------
 */

/* ---- CORS -------------------------------------------------------------------------------------
 */

static bool host_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.';
}

bool srv_cors_origin_valid(const char *v) {
    if (!strcmp(v, "*")) return true;
    const char *p = !strncasecmp(v, "http://", 7)    ? v + 7
                    : !strncasecmp(v, "https://", 8) ? v + 8
                                                     : NULL;
    if (!p || !*p) return false;
    if (*p == '[') { /* an IPv6 literal */
        const char *e = strchr(p, ']');
        if (!e || e == p + 1 || strspn(p + 1, "0123456789abcdefABCDEF:.") != (size_t)(e - p - 1))
            return false;
        p = e + 1;
    } else {
        const char *h = p;
        while (host_char(*p))
            p++;
        if (p == h) return false;
    }
    if (*p == ':') {
        size_t n = strspn(p + 1, "0123456789");
        if (n < 1 || n > 5 || atol(p + 1) > 65535) return false;
        p += 1 + n;
    }
    return *p == '\0';
}

const char *srv_cors_allow(const srv *s, const char *origin) {
    if (!s->cors_origin) return NULL;
    if (!strcmp(s->cors_origin, "*")) return "*";
    return origin && !strcasecmp(origin, s->cors_origin) ? s->cors_origin : NULL;
}

/* The CORS headers of every response (none unless --cors-origin). */
static void add_cors(const conn *k, struct MHD_Response *r) {
    if (!k->s->cors_origin) return;
    const char *allow =
        srv_cors_allow(k->s, MHD_lookup_connection_value(k->c, MHD_HEADER_KIND, "Origin"));
    if (allow) MHD_add_response_header(r, "Access-Control-Allow-Origin", allow);
    if (strcmp(k->s->cors_origin, "*")) /* the answer depends on Origin: caches must know */
        MHD_add_response_header(r, "Vary", "Origin");
}

/* The methods an endpoint answers (its 405 Allow header and its preflight). */
static const char *allowed_methods(const conn *k) {
    return !strcmp(k->path, "/v1/chat/completions") ? "POST" : "GET, HEAD";
}

/* A CORS preflight (OPTIONS on a known endpoint): 204 without authentication, since browsers
 * send no credentials in it; the real request is checked as usual. */
static enum MHD_Result preflight(conn *k) {
    struct MHD_Response *r = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    if (!r) return MHD_NO;
    char methods[64];
    snprintf(methods, sizeof methods, "%s, OPTIONS", allowed_methods(k));
    add_cors(k, r);
    MHD_add_response_header(r, "Access-Control-Allow-Methods", methods);
    MHD_add_response_header(r, "Access-Control-Allow-Headers", "Authorization, Content-Type");
    MHD_add_response_header(r, "Access-Control-Max-Age", "600");
    k->status = 204;
    enum MHD_Result ok = MHD_queue_response(k->c, 204, r);
    MHD_destroy_response(r);
    return ok;
}

static enum MHD_Result send_body(conn *k, int status, char *body, const char *type) {
    if (!body) {
        static char oom[] = "{\"error\":{\"message\":\"out of memory\",\"type\":\"server_error\","
                            "\"code\":\"out_of_memory\"}}";
        status = 503;
        body = oom;
        struct MHD_Response *r =
            MHD_create_response_from_buffer(strlen(oom), oom, MHD_RESPMEM_PERSISTENT);
        if (!r) return MHD_NO;
        MHD_add_response_header(r, "Content-Type", "application/json");
        add_cors(k, r);
        k->status = status;
        enum MHD_Result ok = MHD_queue_response(k->c, (unsigned)status, r);
        MHD_destroy_response(r);
        return ok;
    }
    struct MHD_Response *r =
        MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", type);
    add_cors(k, r);
    if (status == 401) MHD_add_response_header(r, "WWW-Authenticate", "Bearer");
    if (status == 405) MHD_add_response_header(r, "Allow", allowed_methods(k));
    k->status = status;
    enum MHD_Result ok = MHD_queue_response(k->c, (unsigned)status, r);
    MHD_destroy_response(r);
    return ok;
}

static enum MHD_Result send_error(conn *k, int status, const char *code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;
static enum MHD_Result send_error(conn *k, int status, const char *code, const char *fmt, ...) {
    srv_error e;
    memset(&e, 0, sizeof e);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e.msg, sizeof e.msg, fmt, ap);
    va_end(ap);
    e.status = status, e.code = code;
    e.type = status == 401   ? "authentication_error"
             : status >= 500 ? "server_error"
                             : "invalid_request_error";
    return send_body(k, status, srv_error_json(&e), "application/json");
}

static enum MHD_Result send_parse_error(conn *k, const srv_error *e) {
    return send_body(k, e->status, srv_error_json(e), "application/json");
}

static enum MHD_Result send_job_error(conn *k, srv_job *j) {
    srv_error e;
    memset(&e, 0, sizeof e);
    pthread_mutex_lock(&j->mu);
    e.status = j->err_status, e.type = j->err_type, e.code = j->err_code;
    snprintf(e.msg, sizeof e.msg, "%s", j->err_msg);
    pthread_mutex_unlock(&j->mu);
    return send_parse_error(k, &e);
}

/* ---- waiting for a job ------------------------------------------------------------------------
 */

/* True when the peer closed or reset the connection (checked without reading). */
static bool peer_gone(struct MHD_Connection *c) {
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!ci) return true;
    struct pollfd p = {ci->connect_fd, POLLIN | POLLRDHUP, 0};
    return poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL));
}

/* Waits (under j->mu) until `ready` holds or the client goes away (the job is then cancelled);
 * false when the client is gone. */
static bool wait_job(conn *k, bool (*ready)(const srv_job *, const conn *)) {
    srv_job *j = k->job;
    while (!ready(j, k)) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += 50 * 1000000L;
        if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
        pthread_cond_timedwait(&j->cv, &j->mu, &ts);
        if (!ready(j, k) && peer_gone(k->c)) {
            bool running = j->state != JOB_DONE;
            j->cancel = true, k->gone = true;
            pthread_mutex_unlock(&j->mu);
            if (running) srv_sched_wake(k->s->sched);
            pthread_mutex_lock(&j->mu);
            return false;
        }
    }
    return true;
}

static bool is_done(const srv_job *j, const conn *k) {
    (void)k;
    return j->state == JOB_DONE;
}
static bool is_started(const srv_job *j, const conn *k) {
    (void)k;
    return j->state != JOB_QUEUED;
}
static bool has_news(const srv_job *j, const conn *k) {
    return j->state == JOB_DONE || j->visible > k->sent;
}

/* ---- streaming --------------------------------------------------------------------------------
 */

/* The next SSE event(s) into k->out; false when nothing is left. Under the job's lock. */
static bool next_event(conn *k) {
    srv_job *j = k->job;
    const srv *s = k->s;
    free(k->out);
    k->out = NULL, k->out_len = k->out_pos = 0;
    for (;;) {
        switch (k->phase) {
        case 0:
            k->out = srv_chunk_sse(s, j, "assistant", NULL, 0, NULL, false), k->phase = 1;
            break;
        case 1:
            if (j->visible > k->sent) {
                k->out =
                    srv_chunk_sse(s, j, NULL, j->text + k->sent, j->visible - k->sent, NULL, false);
                k->sent = j->visible;
            } else if (j->state != JOB_DONE) {
                if (!wait_job(k, has_news)) return false;
                continue;
            } else if (j->err_status) { /* failed or cancelled by shutdown after the start */
                srv_error e;
                memset(&e, 0, sizeof e);
                e.status = j->err_status, e.type = j->err_type, e.code = j->err_code;
                snprintf(e.msg, sizeof e.msg, "%s", j->err_msg);
                char *body = srv_error_json(&e);
                size_t n = body ? strlen(body) : 0;
                k->out = body ? malloc(n + 9) : NULL;
                if (k->out)
                    memcpy(k->out, "data: ", 6), memcpy(k->out + 6, body, n),
                        memcpy(k->out + 6 + n, "\n\n", 3);
                free(body);
                k->phase = 4;
            } else {
                k->phase = 2;
                continue;
            }
            break;
        case 2:
            k->out = srv_chunk_sse(s, j, NULL, NULL, 0, j->finish ? j->finish : "stop", false);
            k->phase = j->include_usage ? 3 : 4;
            break;
        case 3:
            k->out = srv_chunk_sse(s, j, NULL, NULL, 0, NULL, true), k->phase = 4;
            break;
        case 4:
            k->out = strdup("data: [DONE]\n\n"), k->phase = 5;
            break;
        default:
            return false;
        }
        if (!k->out) return false; /* out of memory: end the stream */
        k->out_len = strlen(k->out);
        return true;
    }
}

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max) {
    (void)pos;
    conn *k = cls;
    if (k->out_pos == k->out_len) {
        pthread_mutex_lock(&k->job->mu);
        bool more = next_event(k);
        pthread_mutex_unlock(&k->job->mu);
        if (!more)
            return k->phase == 5 && !k->gone ? MHD_CONTENT_READER_END_OF_STREAM
                                             : MHD_CONTENT_READER_END_WITH_ERROR;
    }
    size_t n = k->out_len - k->out_pos < max ? k->out_len - k->out_pos : max;
    memcpy(buf, k->out + k->out_pos, n);
    k->out_pos += n;
    return (ssize_t)n;
}

static void stream_free(void *cls) {
    conn *k = cls;
    pthread_mutex_lock(&k->job->mu);
    bool running = k->job->state != JOB_DONE;
    if (running) k->job->cancel = true, k->gone = true;
    pthread_mutex_unlock(&k->job->mu);
    if (running) srv_sched_wake(k->s->sched);
    conn_unref(k);
}

/* ---- /v1/chat/completions ---------------------------------------------------------------------
 */

static enum MHD_Result chat(conn *k) {
    srv *s = k->s;
    if (k->too_large)
        return send_error(k, 413, "request_too_large",
                          "the request body is larger than %zu bytes (--max-body)",
                          s->lim.max_body);
    srv_error e;
    memset(&e, 0, sizeof e);
    srv_job *j = NULL;
    if (srv_parse_chat(s, k->body ? k->body : "", k->len, &j, &e)) return send_parse_error(k, &e);
    k->job = j;
    int rc = srv_sched_submit(s->sched, j);
    if (rc)
        return send_error(k, 503, rc == 1 ? "overloaded" : "shutting_down",
                          rc == 1 ? "too many requests are waiting (--queue); retry later"
                                  : "the server is shutting down");
    pthread_mutex_lock(&j->mu);
    bool alive = wait_job(k, j->stream ? is_started : is_done);
    bool failed = j->err_status != 0 && (j->state == JOB_DONE) && (!j->stream || !j->n_tokens);
    pthread_mutex_unlock(&j->mu);
    if (!alive) return MHD_NO; /* the client is gone: close */
    if (failed) return send_job_error(k, j);
    if (!j->stream) return send_body(k, 200, srv_completion_json(s, j), "application/json");
    struct MHD_Response *r =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, stream_read, k, stream_free);
    if (!r) return MHD_NO;
    __atomic_add_fetch(&k->refs, 1, __ATOMIC_ACQ_REL);
    k->streaming = true;
    MHD_add_response_header(r, "Content-Type", "text/event-stream");
    MHD_add_response_header(r, "Cache-Control", "no-cache");
    add_cors(k, r);
    k->status = 200;
    enum MHD_Result ok = MHD_queue_response(k->c, 200, r);
    MHD_destroy_response(r);
    return ok;
}

/* ---- routing ----------------------------------------------------------------------------------
 */

/* Constant-time in the key's bytes: the time does not tell how much of a guess was right. */
static bool key_matches(const char *given, const char *key) {
    size_t gl = strlen(given), kl = strlen(key);
    unsigned char d = gl != kl;
    for (size_t i = 0; i < kl; i++)
        d |= (unsigned char)key[i] ^ (unsigned char)(i < gl ? given[i] : 0);
    return d == 0;
}

static bool authorized(conn *k) {
    if (!k->s->api_key) return true;
    const char *h = MHD_lookup_connection_value(k->c, MHD_HEADER_KIND, "Authorization");
    if (!h || strncasecmp(h, "Bearer ", 7)) return false;
    h += 7;
    while (*h == ' ')
        h++;
    return key_matches(h, k->s->api_key);
}

static enum MHD_Result health(conn *k) {
    srv_sched_stats st;
    srv_sched_stats_get(k->s->sched, &st);
    char *body = malloc(320);
    if (body)
        snprintf(body, 320,
                 "{\"status\":\"%s\",\"slots_idle\":%d,\"slots_processing\":%d,"
                 "\"requests_queued\":%d,\"requests_served\":%llu,\"decode_tokens\":%llu,"
                 "\"decode_seconds\":%.6f}",
                 k->s->stopping ? "shutting down" : "ok", st.slots - st.running, st.running,
                 st.queued, (unsigned long long)st.served, (unsigned long long)st.decode_tokens,
                 st.decode_s);
    return send_body(k, k->s->stopping ? 503 : 200, body, "application/json");
}

static enum MHD_Result route(conn *k) {
    const char *p = k->path, *m = k->method;
    bool get = !strcmp(m, "GET") || !strcmp(m, "HEAD"), post = !strcmp(m, "POST");
    bool known = !strcmp(p, "/v1/chat/completions") || !strcmp(p, "/v1/models") ||
                 !strncmp(p, "/v1/models/", 11) || !strcmp(p, "/health");
    if (known && k->s->cors_origin && !strcmp(m, "OPTIONS")) return preflight(k);
    if (!strcmp(p, "/health"))
        return get ? health(k) : send_error(k, 405, "method_not_allowed", "use GET /health");
    if (!known) return send_error(k, 404, "not_found", "no such endpoint: %s %s", m, p);
    if (!authorized(k))
        return send_error(k, 401, "invalid_api_key",
                          "a valid API key is needed: Authorization: Bearer KEY");
    if (!strcmp(p, "/v1/chat/completions"))
        return post ? chat(k) : send_error(k, 405, "method_not_allowed", "use POST %s", p);
    if (!get) return send_error(k, 405, "method_not_allowed", "use GET %s", p);
    if (!strcmp(p, "/v1/models"))
        return send_body(k, 200, srv_models_json(k->s), "application/json");
    if (strcmp(p + 11, k->s->model_id))
        return send_error(k, 404, "model_not_found", "no model '%s' here", p + 11);
    char *list = srv_models_json(k->s), *one = list ? strstr(list, "[{") : NULL;
    if (one) { /* the list's one entry */
        memmove(list, one + 1, strlen(one + 1) + 1);
        list[strlen(list) - 2] = '\0';
    }
    return send_body(k, 200, list, "application/json");
}

/* Body bytes: kept up to --max-body, then counted and dropped (the answer is 413). */
static void take_body(conn *k, const char *data, size_t n) {
    if (k->too_large || k->len + n > k->s->lim.max_body) {
        k->too_large = true;
        return;
    }
    if (k->len + n + 1 > k->cap) {
        size_t cap = k->cap ? k->cap : 4096;
        while (cap < k->len + n + 1)
            cap *= 2;
        char *b = realloc(k->body, cap);
        if (!b) {
            k->too_large = true;
            return;
        }
        k->body = b, k->cap = cap;
    }
    memcpy(k->body + k->len, data, n);
    k->len += n;
    k->body[k->len] = '\0';
}

static conn *conn_new(srv *s, struct MHD_Connection *c, const char *url, const char *method) {
    conn *k = calloc(1, sizeof *k);
    if (!k) return NULL;
    k->refs = 1, k->s = s, k->c = c, k->t0 = mono_s(), k->status = 500;
    __atomic_add_fetch(&s->active, 1, __ATOMIC_ACQ_REL);
    clean_copy(k->method, sizeof k->method, method);
    clean_copy(k->path, sizeof k->path, url);
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    const struct sockaddr *sa = ci ? ci->client_addr : NULL;
    if (sa && sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, k->ip,
                  sizeof k->ip);
    else if (sa && sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, k->ip,
                  sizeof k->ip);
    else
        strcpy(k->ip, "-");
    return k;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *data,
                                  size_t *data_size, void **con_cls) {
    (void)version;
    srv *s = cls;
    conn *k = *con_cls;
    if (!k) {
        if (!(k = conn_new(s, c, url, method))) return MHD_NO;
        *con_cls = k;
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
        if (cl && strtoull(cl, NULL, 10) > s->lim.max_body) k->too_large = true;
        if (k->too_large && !strcmp(k->path, "/v1/chat/completions") && authorized(k))
            return chat(k); /* 413 before reading the body */
        return MHD_YES;
    }
    if (*data_size) {
        take_body(k, data, *data_size);
        *data_size = 0;
        return MHD_YES;
    }
    if (s->stopping) return send_error(k, 503, "shutting_down", "the server is shutting down");
    return route(k);
}

static void mhd_log(void *cls, const char *fmt, va_list ap) {
    srv *s = cls;
    if (s->quiet) return;
    char line[512];
    int n = vsnprintf(line, sizeof line, fmt, ap);
    while (n > 0 && n < (int)sizeof line && line[n - 1] == '\n')
        line[--n] = '\0';
    fm_cli_warnf(false, "http: %s", line);
}

/* host:port -> a socket address (numeric host, or a name from the system's resolver). */
static fm_status resolve(const char *host, int port, struct sockaddr_storage *ss, fm_error *err) {
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_socktype = SOCK_STREAM, hints.ai_flags = AI_PASSIVE;
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    int rc = getaddrinfo(host, ps, &hints, &res);
    if (rc || !res)
        return fm_error_set(err, FM_ERR_INVALID_ARG, "--host %s: %s", host, gai_strerror(rc));
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    freeaddrinfo(res);
    return FM_OK;
}

fm_status srv_http_start(srv *s, const char *host, int port, srv_http **out, int *bound,
                         fm_error *err) {
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    fm_status st = resolve(host, port, &ss, err);
    if (st != FM_OK) return st;
    srv_http *h = calloc(1, sizeof *h);
    if (!h) return fm_error_set(err, FM_ERR_NOMEM, "out of memory");
    h->s = s, h->quiesced_fd = MHD_INVALID_SOCKET;
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
                     MHD_USE_POLL | MHD_USE_ITC | MHD_USE_ERROR_LOG |
                     (ss.ss_family == AF_INET6 ? MHD_USE_IPv6 : 0);
    unsigned limit = (unsigned)(s->lim.max_queue + s->parallel + 16);
    h->d = MHD_start_daemon(flags, (uint16_t)port, NULL, NULL, on_request, s,
                            MHD_OPTION_EXTERNAL_LOGGER, mhd_log, s, MHD_OPTION_SOCK_ADDR,
                            (struct sockaddr *)&ss, MHD_OPTION_CONNECTION_LIMIT, limit,
                            MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)60,
                            MHD_OPTION_NOTIFY_COMPLETED, on_completed, s, MHD_OPTION_END);
    if (!h->d) {
        free(h);
        return fm_error_set(err, FM_ERR_IO, "cannot listen on %s port %d: %s", host, port,
                            strerror(errno));
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_BIND_PORT);
    *bound = di ? di->port : port;
    *out = h;
    return FM_OK;
}

void srv_http_quiesce(srv_http *h) {
    if (!h) return;
    h->quiesced_fd = MHD_quiesce_daemon(h->d); /* closed after MHD_stop_daemon */
}

void srv_http_stop(srv_http *h, double bound_s) {
    if (!h) return;
    /* every job is done: let the responses in flight (the last stream events) reach their clients
     * before the connections are closed */
    for (double t0 = mono_s();
         __atomic_load_n(&h->s->active, __ATOMIC_ACQUIRE) > 0 && mono_s() - t0 < bound_s;)
        usleep(5000);
    MHD_stop_daemon(h->d);
    if (h->quiesced_fd != MHD_INVALID_SOCKET) close(h->quiesced_fd);
    free(h);
}
