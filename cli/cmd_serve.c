/* `fusemap serve MODEL_DIR [options]`: an OpenAI-compatible chat server for the loaded (and
 * fused) model: POST /v1/chat/completions (streaming or not), GET /v1/models, GET /health. The
 * model is loaded once; --parallel requests decode together in one batched forward per step.
 * SIGINT/SIGTERM stop accepting, let running requests finish for --shutdown-timeout seconds,
 * cancel the rest and exit 0. Design: docs/serve.md. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "commands.h"
#include "common.h"
#include "serve.h"

enum {
    OPT_HOST = FM_CLI_OPT_OWN,
    OPT_PORT,
    OPT_API_KEY,
    OPT_API_KEY_FILE,
    OPT_THREADS,
    OPT_MAX_BODY,
    OPT_MAX_TOKENS,
    OPT_PARALLEL,
    OPT_CTX,
    OPT_KV_DTYPE,
    OPT_MAX_IMAGES,
    OPT_MAX_PIXELS,
    OPT_MAX_MESSAGES,
    OPT_QUEUE,
    OPT_SHUTDOWN,
    OPT_NAME,
    OPT_CORS
};

static const fm_cli_opt opts[] = {
    {OPT_HOST, "--host", NULL, "ADDR", "127.0.0.1",
     "address to listen on (loopback by default; another address exposes the model to the "
     "network: use --api-key)"},
    {OPT_PORT, "--port", NULL, "N", "8080", "TCP port (0: any free port, printed at start)"},
    {OPT_API_KEY, "--api-key", NULL, "KEY", "none",
     "require 'Authorization: Bearer KEY' on every endpoint but /health"},
    {OPT_API_KEY_FILE, "--api-key-file", NULL, "FILE", "none",
     "read the API key from FILE (first line; keeps it out of the process list)"},
    {OPT_THREADS, "--threads", NULL, "N", "all cores", "threads of the forward passes (1..1024)"},
    {OPT_MAX_BODY, "--max-body", NULL, "BYTES", "33554432", "largest request body (413 above)"},
    {OPT_MAX_TOKENS, "--max-tokens", NULL, "N", "2048",
     "most new tokens a request may ask for (max_tokens), and the default when it asks none "
     "(unless generation_config.json sets max_new_tokens)"},
    {OPT_PARALLEL, "--parallel", NULL, "N", "1",
     "requests decoded together (KV-cache slots, 1..256); more wait in the queue"},
    {OPT_CTX, "--ctx-size", NULL, "N", "4096 (at most the model's context)",
     "positions per request: prompt + new tokens (the KV cache holds --parallel of them)"},
    {OPT_KV_DTYPE, "--kv-dtype", NULL, "f32|bf16", "f32", "the KV cache's element type"},
    {OPT_MAX_IMAGES, "--max-images", NULL, "N", "8", "images per request (at most 64)"},
    {OPT_MAX_PIXELS, "--max-image-pixels", NULL, "N", "16777216",
     "pixels of one decoded image (checked before decoding)"},
    {OPT_MAX_MESSAGES, "--max-messages", NULL, "N", "256", "messages per request"},
    {OPT_QUEUE, "--queue", NULL, "N", "64",
     "requests that may wait for a slot (503 beyond; served first come, first served)"},
    {OPT_SHUTDOWN, "--shutdown-timeout", NULL, "SECONDS", "10",
     "on SIGINT/SIGTERM, how long running requests may go on before they are cancelled"},
    {OPT_NAME, "--model-name", NULL, "NAME", "MODEL_DIR's last component",
     "the model id in responses and /v1/models"},
    {OPT_CORS, "--cors-origin", NULL, "ORIGIN", "none",
     "let browser pages from ORIGIN ('https://host[:port]', or '*' for any) call the API: "
     "CORS headers and OPTIONS preflights (without it browsers refuse cross-origin calls)"},
    FM_CLI_OPTS_FUSION,
    FM_CLI_OPT_STRICT_ENTRY,
    FM_CLI_OPT_QUIET_ENTRY,
};

const fm_cli_help fm_cli_serve_help = {
    "serve MODEL_DIR [options]",
    "Loads the model once (fused as asked) and answers OpenAI-style chat completions over HTTP:\n"
    "POST /v1/chat/completions (messages with text and data: URI images; max_tokens, "
    "temperature,\n"
    "top_p, seed, stop, stream), GET /v1/models, GET /health. Prompts are built with the model's\n"
    "chat template as `fusemap generate` builds them. --parallel requests decode together in "
    "one\n"
    "batched forward per step. One access-log line per request on stderr. SIGINT/SIGTERM stop\n"
    "accepting, finish or cancel running requests, and exit 0.\n",
    opts,
    sizeof opts / sizeof *opts,
    "fusemap serve Qwen2-VL-2B-Instruct --port 8080 --parallel 4\n"
    "fusemap serve Qwen2-VL-2B-Instruct --host 0.0.0.0 --api-key-file key.txt --fuse "
    "patch_embeddings\n",
};

typedef struct serve_args {
    const char *dir, *host, *api_key, *api_key_file, *name, *cors;
    long port;
    int threads, parallel;
    long long ctx;
    double grace;
    fm_dtype kv;
    srv_limits lim;
    fm_cli_common c;
} serve_args;

/* An integer option within [lo, hi]. */
static int ranged(const fm_cli_command *cmd, const char *name, const char *v, long long lo,
                  long long hi, long long *out) {
    char *end;
    long long x = strtoll(v, &end, 10);
    if (*end || end == v || x < lo || x > hi)
        return fm_cli_usage(cmd, "%s: expected an integer in %lld..%lld, got '%s'", name, lo, hi,
                            v);
    *out = x;
    return 0;
}

static int limit_opt(const fm_cli_command *cmd, serve_args *a, int id, const char *v) {
    long long x = 0;
    int rc;
    switch (id) {
    case OPT_MAX_BODY:
        rc = ranged(cmd, "--max-body", v, 1024, (long long)1 << 32, &x),
        a->lim.max_body = (size_t)x;
        return rc;
    case OPT_MAX_TOKENS:
        rc = ranged(cmd, "--max-tokens", v, 1, (long long)1 << 30, &x), a->lim.max_tokens = x;
        return rc;
    case OPT_MAX_IMAGES:
        rc = ranged(cmd, "--max-images", v, 0, 64, &x), a->lim.max_images = (int)x;
        return rc;
    case OPT_MAX_PIXELS:
        rc = ranged(cmd, "--max-image-pixels", v, 1, (long long)FM_IMAGE_MAX_PIXELS, &x);
        a->lim.max_image_pixels = (uint64_t)x;
        return rc;
    case OPT_MAX_MESSAGES:
        rc = ranged(cmd, "--max-messages", v, 1, 1 << 20, &x), a->lim.max_messages = (int)x;
        return rc;
    case OPT_QUEUE:
        rc = ranged(cmd, "--queue", v, 0, 4096, &x), a->lim.max_queue = (int)x;
        return rc;
    default:
        return -1;
    }
}

static int on_opt(const fm_cli_command *cmd, void *ctx, int id, const char *v) {
    serve_args *a = ctx;
    long long x = 0;
    int rc = limit_opt(cmd, a, id, v);
    if (rc >= 0) return rc;
    switch (id) {
    case OPT_HOST:
        a->host = v;
        return 0;
    case OPT_PORT:
        rc = ranged(cmd, "--port", v, 0, 65535, &x), a->port = (long)x;
        return rc;
    case OPT_API_KEY:
        a->api_key = v;
        return 0;
    case OPT_API_KEY_FILE:
        a->api_key_file = v;
        return 0;
    case OPT_THREADS:
        return fm_cli_parse_threads(cmd, v, &a->threads);
    case OPT_PARALLEL:
        rc = ranged(cmd, "--parallel", v, 1, 256, &x), a->parallel = (int)x;
        return rc;
    case OPT_CTX:
        return ranged(cmd, "--ctx-size", v, 2, (long long)1 << 30, &a->ctx);
    case OPT_KV_DTYPE:
        return fm_cli_parse_kv_dtype(cmd, v, &a->kv);
    case OPT_SHUTDOWN: {
        char *end;
        a->grace = strtod(v, &end);
        if (*end || end == v || !(a->grace >= 0 && a->grace <= 86400))
            return fm_cli_usage(cmd, "--shutdown-timeout: expected 0..86400 seconds, got '%s'", v);
        return 0;
    }
    case OPT_NAME:
        if (!*v || strlen(v) >= SRV_MODEL_ID_MAX || strpbrk(v, "/\"\\"))
            return fm_cli_usage(cmd, "--model-name: 1..%d characters, no '/', '\"' or '\\'",
                                SRV_MODEL_ID_MAX - 1);
        a->name = v;
        return 0;
    case OPT_CORS:
        if (!srv_cors_origin_valid(v))
            return fm_cli_usage(cmd,
                                "--cors-origin: expected '*' or scheme://host[:port] (no path), "
                                "got '%s'",
                                v);
        a->cors = v;
        return 0;
    default:
        if (a->dir) return fm_cli_usage(cmd, "serve: unexpected argument '%s'", v);
        a->dir = v;
        return 0;
    }
}

/* The API key from --api-key or the first line of --api-key-file (caller frees *key). */
static fm_status api_key(const serve_args *a, char **key, fm_error *err) {
    *key = NULL;
    if (!a->api_key_file) {
        *key = a->api_key ? fm_strdup(a->api_key) : NULL;
        return !a->api_key || *key ? FM_OK : fm_error_set(err, FM_ERR_NOMEM, "out of memory");
    }
    size_t len = 0;
    fm_status st = fm_cli_read_input(a->api_key_file, 4096, key, &len, err);
    if (st != FM_OK) return st;
    (*key)[strcspn(*key, "\r\n")] = '\0';
    if (!**key) {
        fm_free(*key), *key = NULL;
        return fm_error_set(err, FM_ERR_INPUT, "%s: no API key on its first line", a->api_key_file);
    }
    return FM_OK;
}

/* The model id: --model-name, else the directory's last component. */
static void model_id(const serve_args *a, char *out, size_t size) {
    if (a->name) {
        snprintf(out, size, "%s", a->name);
        return;
    }
    size_t n = strlen(a->dir);
    while (n > 1 && a->dir[n - 1] == '/')
        n--;
    size_t b = n;
    while (b && a->dir[b - 1] != '/')
        b--;
    snprintf(out, size, "%.*s", (int)(n - b), a->dir + b);
    for (char *p = out; *p; p++)
        if (*p == '"' || *p == '\\' || (unsigned char)*p < 0x20) *p = '_';
}

/* Everything loaded once: model, tokenizer, template, generation config, stop ids, limits. */
static fm_status load(const serve_args *a, srv *s, fm_error *err) {
    fm_load_options lo;
    if (fm_cli_load_options((fm_cli_common *)&a->c, &lo))
        return fm_error_set(err, FM_ERR_NOMEM, "out of memory");
    fm_status st = fm_cli_load(a->dir, &lo, a->c.quiet, &s->model, NULL, err);
    if (st == FM_OK) st = fm_tokenizer_open(a->dir, &s->tok, err);
    if (st == FM_OK) st = fm_chat_template_load(a->dir, &s->tmpl, err);
    if (st == FM_OK) st = fm_generation_config_load(a->dir, &s->gen, err);
    fm_lm_info li;
    if (st == FM_OK) st = fm_model_lm_info(s->model, &li, err);
    if (st != FM_OK) return st;
    s->lim = a->lim;
    s->lim.ctx = a->ctx < li.max_positions ? a->ctx : li.max_positions;
    if (s->lim.max_tokens > s->lim.ctx - 1) s->lim.max_tokens = s->lim.ctx - 1;
    s->parallel = a->parallel;
    s->n_stop_ids = fm_cli_stop_ids(&s->gen, s->tok, s->stop_ids, SRV_MAX_STOP_IDS);
    model_id(a, s->model_id, sizeof s->model_id);
    s->created = (int64_t)time(NULL);
    s->quiet = a->c.quiet;
    return FM_OK;
}

static void srv_free(srv *s) {
    srv_sched_free(s->sched);
    fm_chat_template_free(s->tmpl);
    fm_tokenizer_free(s->tok);
    fm_model_free(s->model);
}

static bool loopback(const char *host) {
    return !strncmp(host, "127.", 4) || !strcmp(host, "::1") || !strcmp(host, "localhost");
}

/* Serves until SIGINT or SIGTERM, then drains. */
static int serve(const serve_args *a, srv *s) {
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGINT), sigaddset(&stop, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop, NULL); /* every thread started below inherits the mask */
    signal(SIGPIPE, SIG_IGN);
    srv_sched_options so = {a->parallel, s->lim.ctx, a->kv, a->threads, a->lim.max_queue};
    fm_error err;
    srv_http *h = NULL;
    int port = 0;
    fm_status st = srv_sched_start(s->model, &so, &s->sched, &err);
    if (st == FM_OK) st = srv_http_start(s, a->host, (int)a->port, &h, &port, &err);
    if (st != FM_OK) return fm_cli_fail(&err);
    if (!loopback(a->host) && !s->api_key)
        fm_cli_warnf(a->c.quiet,
                     "listening on %s without --api-key: anyone who can reach it can use the model",
                     a->host);
    if (!a->c.quiet)
        fprintf(stderr,
                "fusemap serve: listening on http://%s%s%s:%d (model %s, %d slot%s of %lld "
                "positions)\n",
                strchr(a->host, ':') ? "[" : "", a->host, strchr(a->host, ':') ? "]" : "", port,
                s->model_id, a->parallel, a->parallel == 1 ? "" : "s", (long long)s->lim.ctx);
    int sig = 0;
    while (sigwait(&stop, &sig) != 0) {
    }
    s->stopping = 1;
    srv_sched_stats ss;
    srv_sched_stats_get(s->sched, &ss);
    if (!a->c.quiet)
        fprintf(stderr,
                "fusemap serve: %s: shutting down (%d running, %d queued; running requests get "
                "%.1f s)\n",
                sig == SIGINT ? "SIGINT" : "SIGTERM", ss.running, ss.queued, a->grace);
    srv_http_quiesce(h);
    srv_sched_drain(s->sched, a->grace);
    srv_http_stop(h, 2.0);
    if (!a->c.quiet) fprintf(stderr, "fusemap serve: stopped\n");
    return 0;
}

int fm_cli_serve_run(const fm_cli_command *self, int argc, char **argv) {
    serve_args a;
    memset(&a, 0, sizeof a);
    a.host = "127.0.0.1", a.port = 8080, a.parallel = 1, a.ctx = 4096, a.grace = 10;
    a.kv = FM_DTYPE_F32;
    a.lim = (srv_limits){(size_t)32 << 20, 8, (uint64_t)1 << 24, 256, 2048, 0, 64};
    int rc = fm_cli_parse(self, argc, argv, &a.c, on_opt, &a);
    if (rc == FM_CLI_GO && !a.dir) rc = fm_cli_usage(self, "serve needs MODEL_DIR");
    if (rc == FM_CLI_GO && a.api_key && a.api_key_file)
        rc = fm_cli_usage(self, "use either --api-key or --api-key-file, not both");
    if (rc != FM_CLI_GO) {
        fm_cli_common_free(&a.c);
        return rc;
    }
    srv s;
    memset(&s, 0, sizeof s);
    char *key = NULL;
    fm_error err;
    fm_status st = api_key(&a, &key, &err);
    if (st == FM_OK) st = load(&a, &s, &err);
    s.api_key = key;
    s.cors_origin = a.cors;
    rc = st == FM_OK ? serve(&a, &s) : fm_cli_fail(&err);
    srv_free(&s);
    fm_free(key);
    fm_cli_common_free(&a.c);
    return rc;
}
