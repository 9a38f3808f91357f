/* `fusemap serve` internals, shared by cli/cmd_serve*.c: the server's state, one chat completion
 * request (a job) as the HTTP side and the scheduler share it, the scheduler, and the request
 * parser. The HTTP server is libmicrohttpd's (thread per connection); one scheduler thread owns
 * the model and its batch of KV-cache slots. docs/serve.md describes the design. */
#ifndef FUSEMAP_CLI_SERVE_H
#define FUSEMAP_CLI_SERVE_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fusemap/chat.h"
#include "fusemap/generate.h"
#include "fusemap/models.h"
#include "fusemap/tokenizer.h"

/* What a request may ask for (the command's options set them). */
typedef struct srv_limits {
    size_t max_body;           /* request body bytes */
    int max_images;            /* images per request */
    uint64_t max_image_pixels; /* decoded pixels per image */
    int max_messages;          /* messages per request */
    int64_t max_tokens;        /* new tokens per request */
    int64_t ctx;               /* positions per sequence: prompt + new tokens */
    int max_queue;             /* requests waiting for a slot */
} srv_limits;

#define SRV_MAX_STOPS 16       /* stop sequences per request */
#define SRV_MAX_STOP_BYTES 256 /* bytes per stop sequence */
#define SRV_MODEL_ID_MAX 128   /* model name in responses */
#define SRV_MAX_STOP_IDS (FM_GENERATION_MAX_EOS + 1)

typedef struct srv_sched srv_sched;

/* The server: everything loaded once, read-only while serving (except the scheduler's own
 * state). */
typedef struct srv {
    fm_model *model;          /* owned; forwards only from the scheduler thread */
    fm_tokenizer *tok;        /* owned; immutable */
    fm_chat_template *tmpl;   /* owned; immutable */
    fm_generation_config gen; /* generation_config.json (request fields override it) */
    int32_t stop_ids[SRV_MAX_STOP_IDS];
    size_t n_stop_ids;
    srv_limits lim;
    int parallel; /* slots: sequences decoded together */
    char model_id[SRV_MODEL_ID_MAX];
    int64_t created;     /* start time (Unix seconds), the model's "created" */
    const char *api_key; /* NULL: no authentication; borrowed until the server ends */
    /* NULL: no CORS headers; "*" or one origin ("https://host[:port]"); borrowed likewise */
    const char *cors_origin;
    bool quiet; /* no access log */
    srv_sched *sched;
    volatile int stopping; /* set once by the main thread on SIGINT/SIGTERM */
    int active;            /* requests in progress (atomic): shutdown lets them finish */
} srv;

/* ---- a job: one chat completion request ------------------------------------------------------ */
enum { JOB_QUEUED, JOB_RUNNING, JOB_DONE };

typedef struct srv_job {
    /* Input, set by the parser; read-only once submitted (the scheduler frees pv/grid after the
     * prefill). */
    int64_t *ids;
    size_t n_ids;
    fm_tensor pv, grid; /* images (pv.data NULL: none) */
    fm_generate_options go;
    char *stops[SRV_MAX_STOPS];
    size_t n_stops, max_stop;
    bool stream, include_usage;
    char id[48];
    int64_t created;

    /* Shared state, under mu; cv is signalled on every change. */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int refs;
    int state;
    bool cancel;        /* the client is gone: stop at the next step */
    char *text;         /* generated text (truncated at a stop sequence) */
    size_t len, cap;    /* bytes of text, allocated */
    size_t visible;     /* bytes that can be sent: a possible stop-sequence start is held back */
    bool stop_hit;      /* a stop sequence ended the text */
    int64_t n_tokens;   /* generated tokens */
    const char *finish; /* "stop" / "length" once done without error */
    int err_status;     /* HTTP status of a failure (0: none) */
    const char *err_type, *err_code;
    char err_msg[320];
    struct srv_job *next; /* queue link (scheduler) */
} srv_job;

srv_job *srv_job_new(void); /* refs 1; NULL when out of memory */
void srv_job_ref(srv_job *j);
void srv_job_unref(srv_job *j); /* frees at zero; accepts NULL */
/* Marks the job failed (under j->mu, done by the caller): status, type, code, message. */
void srv_job_fail_locked(srv_job *j, int status, const char *type, const char *code,
                         const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 5, 6)))
#endif
    ;

/* ---- the scheduler (cmd_serve_sched.c) --------------------------------------------------------
 */
typedef struct srv_sched_options {
    int slots;
    int64_t capacity;
    fm_dtype kv_dtype;
    int threads;
    int max_queue;
} srv_sched_options;

/* Allocates the batch (the KV cache of every slot) and starts the scheduler thread. `m` is
 * borrowed until srv_sched_free. */
fm_status srv_sched_start(fm_model *m, const srv_sched_options *o, srv_sched **out, fm_error *err);
/* Queues j (taking a reference). 0; 1 when the queue is full; 2 when shutting down. */
int srv_sched_submit(srv_sched *s, srv_job *j);
/* Wakes the scheduler after a job's cancel flag was set. */
void srv_sched_wake(srv_sched *s);
typedef struct srv_sched_stats {
    int slots, running, queued;
    uint64_t served;
    uint64_t decode_tokens; /* tokens made by batched decode steps so far */
    double decode_s;        /* seconds those steps took */
} srv_sched_stats;
void srv_sched_stats_get(srv_sched *s, srv_sched_stats *out);
/* Stops admitting (queued jobs fail with 503), lets running ones go on for grace_s seconds, then
 * cancels them (503); returns once no job is left. */
void srv_sched_drain(srv_sched *s, double grace_s);
void srv_sched_free(srv_sched *s); /* joins the thread; accepts NULL */

/* ---- requests (cmd_serve_request.c) ------------------------------------------------------------
 */
/* An OpenAI-style error for the client. */
typedef struct srv_error {
    int status;              /* 4xx / 5xx */
    const char *type, *code; /* "invalid_request_error", "context_length_exceeded", ... */
    char param[48];          /* the request field at fault, or "" */
    char msg[384];
} srv_error;

/* Parses a /v1/chat/completions body into a new job (prompt ids, images, options): 0, or -1
 * with *e set. */
int srv_parse_chat(const srv *s, const char *body, size_t len, srv_job **out, srv_error *e);

/* Response bodies (malloc'd NUL-terminated JSON, NULL when out of memory). */
char *srv_error_json(const srv_error *e);
char *srv_completion_json(const srv *s, srv_job *j); /* reads j's text under j->mu */
/* One SSE chunk "data: {...}\n\n": a content delta (text may be NULL with role set), or the
 * last chunk with finish_reason, or the usage chunk. */
char *srv_chunk_sse(const srv *s, const srv_job *j, const char *role, const char *text, size_t len,
                    const char *finish, bool usage);
char *srv_models_json(const srv *s);

/* CORS (cmd_serve_http.c). Whether v is "*" or an origin: http:// or https://, a host of
 * letters, digits, '-', '.', or a [bracketed] IPv6 address, an optional :port, nothing else. */
bool srv_cors_origin_valid(const char *v);
/* The Access-Control-Allow-Origin value for a request whose Origin header is `origin` (NULL when
 * it sent none): "*" when any origin is allowed, the configured origin when `origin` equals it
 * (scheme and host compared ignoring ASCII case), otherwise NULL (no header: the browser refuses
 * the page access). */
const char *srv_cors_allow(const srv *s, const char *origin);

/* ---- HTTP (cmd_serve_http.c) --------------------------------------------------------------------
 */
typedef struct srv_http srv_http;
/* Binds host:port (0: an ephemeral port) and serves; *port receives the bound port. */
fm_status srv_http_start(srv *s, const char *host, int port, srv_http **out, int *bound,
                         fm_error *err);
void srv_http_quiesce(srv_http *h); /* stops accepting connections */
/* Waits up to bound_s seconds for the requests in progress to finish, then closes every
 * connection; accepts NULL. */
void srv_http_stop(srv_http *h, double bound_s);

#endif
