/* Benchmark: `fusemap serve` at Qwen2-VL-2B text dimensions (bf16 random weights, a one-block
 * vision tower, a synthetic byte-level tokenizer of the full 151,936-id vocabulary), against the
 * single-stream `fusemap generate` decode rate of the same run. For 1, 2 and 4 concurrent
 * requests (greedy, --parallel 4): requests/s, end-to-end completion tokens/s, and the
 * aggregate decode rate (tokens made by batched decode steps per second of those steps, read
 * from /health's counters, so the prefills between them are not counted). One JSON line each.
 *
 *   serve [--model DIR] [--tokens N] [--threads N] [--quick]
 *
 * Without --model the checkpoint is written once to $FM_BENCH_DIR (default
 * /tmp/fusemap-bench-serve-2b, about 3.2 GB) and reused. --quick: a tiny model (smoke run). */
#include <arpa/inet.h>
#include <jansson.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fusemap/fusemap.h"
#include "qwen_fixture.h"

enum { VOCAB = 151936, EOS = 151645 };

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* A byte-level BPE tokenizer.json with VOCAB ids: the 256 byte symbols, then words of 6 letters
 * after a space (each id decodes to 7 bytes of text), no merges, Qwen's special tokens at their
 * ids. */
static int write_tokenizer(const char *path) {
    FILE *f = fopen(path, "w");
    if (!f) return -1;
    fputs("{\"version\":\"1.0\",\"truncation\":null,\"padding\":null,\"added_tokens\":[", f);
    static const struct {
        int id;
        const char *s;
    } named[] = {{151643, "<|endoftext|>"},  {151644, "<|im_start|>"},
                 {151645, "<|im_end|>"},     {151652, "<|vision_start|>"},
                 {151653, "<|vision_end|>"}, {151654, "<|vision_pad|>"},
                 {151655, "<|image_pad|>"},  {151656, "<|video_pad|>"}};
    for (int id = 151643; id < VOCAB;
         id++) { /* consecutive ids after the vocab, as tokenizers needs */
        char name[32];
        snprintf(name, sizeof name, "<|reserved_%d|>", id);
        for (size_t i = 0; i < sizeof named / sizeof *named; i++)
            if (named[i].id == id) snprintf(name, sizeof name, "%s", named[i].s);
        fprintf(f,
                "%s{\"id\":%d,\"content\":\"%s\",\"single_word\":false,\"lstrip\":false,"
                "\"rstrip\":false,\"normalized\":false,\"special\":true}",
                id > 151643 ? "," : "", id, name);
    }
    fputs("],\"normalizer\":null,\"pre_tokenizer\":{\"type\":\"ByteLevel\",\"add_prefix_space\":"
          "false,\"trim_offsets\":false,\"use_regex\":true},\"post_processor\":null,"
          "\"decoder\":{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"trim_offsets\":false,"
          "\"use_regex\":true},\"model\":{\"type\":\"BPE\",\"dropout\":null,\"unk_token\":null,"
          "\"continuing_subword_prefix\":null,\"end_of_word_suffix\":null,\"fuse_unk\":false,"
          "\"byte_fallback\":false,\"vocab\":{",
          f);
    /* GPT-2's byte-to-symbol map */
    int id = 0, n = 0;
    for (int b = 0; b < 256; b++) {
        bool printable = (b >= '!' && b <= '~') || (b >= 0xa1 && b <= 0xac) || b >= 0xae;
        int cp = printable ? b : 256 + n++;
        char u[8];
        if (cp < 0x80)
            snprintf(u, sizeof u, "%c", cp);
        else
            snprintf(u, sizeof u, "%c%c", 0xc0 | (cp >> 6), 0x80 | (cp & 63));
        if (cp == '"' || cp == '\\')
            fprintf(f, "%s\"\\%s\":%d", id ? "," : "", u, id);
        else
            fprintf(f, "%s\"%s\":%d", id ? "," : "", u, id);
        id++;
    }
    for (; id < 151643; id++) {
        char w[7];
        for (int k = 0, v = id; k < 6; k++, v /= 26)
            w[k] = (char)('a' + v % 26);
        w[6] = '\0';
        fprintf(f, ",\"\xc4\xa0%s\":%d", w, id); /* "Ġ" = a leading space */
    }
    fputs("},\"merges\":[]}}\n", f);
    return fclose(f);
}

static int write_text(const char *dir, const char *name, const char *text) {
    char p[4200];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "w");
    if (!f) return -1;
    fputs(text, f);
    return fclose(f);
}

/* The checkpoint (once; a marker file says it is complete). */
static int make_model(const char *dir, bool quick) {
    char marker[4200];
    snprintf(marker, sizeof marker, "%s/.complete", dir);
    struct stat st;
    if (!stat(marker, &st)) return 0;
    fm_qfix q;
    fm_qfix_init(&q);
    if (!quick) {
        q.depth = 1, q.embed_dim = 1280, q.num_heads = 16, q.hidden_size = 1536, q.mlp_ratio = 4;
        q.text_layers = 28, q.text_hidden = 1536, q.text_heads = 12, q.text_kv_heads = 2;
        q.text_inter = 8960, q.vocab = VOCAB, q.dtype = FM_DTYPE_BF16, q.tie = true;
        q.scale = 0.02f;
    } else {
        q.text_layers = 2, q.text_hidden = 64, q.text_heads = 4, q.text_kv_heads = 2,
        q.text_inter = 96, q.vocab = VOCAB, q.hidden_size = 64, q.tie = true;
    }
    fprintf(stderr, "serve bench: writing the checkpoint to %s\n", dir);
    fm_error e;
    if (fm_qfix_write(dir, &q, &e) != FM_OK) return fprintf(stderr, "%s\n", e.msg), -1;
    char tp[4200];
    snprintf(tp, sizeof tp, "%s/tokenizer.json", dir);
    if (write_tokenizer(tp) ||
        write_text(dir, "generation_config.json", "{\"eos_token_id\": 151645}\n"))
        return -1;
    return write_text(dir, ".complete", "");
}

typedef struct server {
    pid_t pid;
    int port;
} server;

static int start_server(server *s, const char *cli, const char *dir, int threads, int tokens) {
    char log[] = "/tmp/fusemap-bench-serve-XXXXXX";
    int fd = mkstemp(log);
    if (fd < 0) return -1;
    close(fd);
    char cmd[8192];
    snprintf(cmd, sizeof cmd,
             "exec %s serve %s --port 0 --parallel 4 --threads %d --ctx-size %d 2>%s", cli, dir,
             threads, tokens + 128, log);
    s->pid = fork();
    if (s->pid == 0) {
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    for (double t0 = now_s(); now_s() - t0 < 300; usleep(50000)) {
        FILE *f = fopen(log, "r");
        char buf[4096] = "";
        size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
        if (f) fclose(f);
        buf[n] = '\0';
        const char *p = strstr(buf, "listening on http://127.0.0.1:");
        if (p) {
            s->port = atoi(p + 30);
            unlink(log);
            return 0;
        }
        int status;
        if (waitpid(s->pid, &status, WNOHANG) == s->pid) break;
    }
    fprintf(stderr, "serve bench: the server did not start (log %s)\n", log);
    return -1;
}

/* One request over a fresh connection; the response body (malloc'd) or NULL. */
static char *request(int port, const char *method, const char *path, const char *body) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET, a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a)) return NULL;
    char head[512];
    int n =
        snprintf(head, sizeof head,
                 "%s %s HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
                 method, path, body ? strlen(body) : 0);
    if (send(fd, head, (size_t)n, MSG_NOSIGNAL) != n ||
        (body && send(fd, body, strlen(body), MSG_NOSIGNAL) != (ssize_t)strlen(body))) {
        close(fd);
        return NULL;
    }
    size_t cap = 1 << 16, len = 0;
    char *b = malloc(cap);
    ssize_t r;
    while (b && (r = recv(fd, b + len, cap - len - 1, 0)) > 0)
        if ((len += (size_t)r) + 1 == cap) b = realloc(b, cap *= 2);
    close(fd);
    if (!b) return NULL;
    b[len] = '\0';
    char *s = strstr(b, "\r\n\r\n");
    char *out = s ? strdup(s + 4) : NULL;
    free(b);
    return out;
}

static double health_num(int port, const char *key) {
    char *b = request(port, "GET", "/health", NULL);
    json_error_t je;
    json_t *j = b ? json_loads(b, 0, &je) : NULL;
    double v = json_number_value(json_object_get(j, key));
    json_decref(j);
    free(b);
    return v;
}

typedef struct client {
    int port, i, tokens;
    long long completion;
} client;

static void *run_client(void *arg) {
    client *c = arg;
    char body[512];
    snprintf(body, sizeof body,
             "{\"messages\": [{\"role\": \"user\", \"content\": \"Request %d: tell me about the "
             "weather today.\"}], \"max_tokens\": %d}",
             c->i, c->tokens);
    char *r = request(c->port, "POST", "/v1/chat/completions", body);
    json_error_t je;
    json_t *j = r ? json_loads(r, 0, &je) : NULL;
    c->completion =
        json_integer_value(json_object_get(json_object_get(j, "usage"), "completion_tokens"));
    if (!j) fprintf(stderr, "serve bench: request %d failed: %s\n", c->i, r ? r : "(no answer)");
    json_decref(j);
    free(r);
    return NULL;
}

/* `fusemap generate`'s single-stream decode rate for the same kind of prompt. */
static double generate_rate(const char *cli, const char *dir, int threads, int tokens) {
    char cmd[8192];
    snprintf(cmd, sizeof cmd,
             "%s generate %s --prompt 'Request 0: tell me about the weather today.' "
             "--max-new-tokens %d --threads %d --json -q",
             cli, dir, tokens, threads);
    FILE *p = popen(cmd, "r");
    char buf[1 << 20];
    size_t n = p ? fread(buf, 1, sizeof buf - 1, p) : 0;
    if (p) pclose(p);
    buf[n] = '\0';
    json_error_t je;
    json_t *j = json_loads(buf, 0, &je);
    double r = json_number_value(json_object_get(j, "decode_tok_s"));
    json_decref(j);
    return r;
}

int main(int argc, char **argv) {
    const char *model = NULL, *cli = getenv("FM_CLI") ? getenv("FM_CLI") : "build/fusemap";
    int tokens = 48, threads = 2;
    bool quick = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--model") && i + 1 < argc)
            model = argv[++i];
        else if (!strcmp(argv[i], "--tokens") && i + 1 < argc)
            tokens = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--quick"))
            quick = true;
        else
            return fprintf(stderr,
                           "usage: serve [--model DIR] [--tokens N] [--threads N] [--quick]\n"),
                   2;
    }
    char dir[4096];
    const char *base = getenv("FM_BENCH_DIR");
    snprintf(dir, sizeof dir, "%s",
             model   ? model
             : base  ? base
             : quick ? "/tmp/fusemap-bench-serve-tiny"
                     : "/tmp/fusemap-bench-serve-2b");
    if (!model && make_model(dir, quick)) return 1;
    /* best of two: the first run also faults the checkpoint's pages in */
    double single = generate_rate(cli, dir, threads, tokens),
           again = generate_rate(cli, dir, threads, tokens);
    if (again > single) single = again;
    server s;
    if (start_server(&s, cli, dir, threads, tokens)) return 1;
    static const int streams[] = {1, 2, 4};
    for (size_t k = 0; k < 3; k++) {
        int c = streams[k];
        client cl[4];
        pthread_t th[4];
        double tok0 = health_num(s.port, "decode_tokens"),
               sec0 = health_num(s.port, "decode_seconds");
        double t0 = now_s();
        for (int i = 0; i < c; i++) {
            cl[i] = (client){s.port, (int)k * 4 + i, tokens, 0};
            pthread_create(&th[i], NULL, run_client, &cl[i]);
        }
        long long total = 0;
        for (int i = 0; i < c; i++)
            pthread_join(th[i], NULL), total += cl[i].completion;
        double wall = now_s() - t0;
        double dtok = health_num(s.port, "decode_tokens") - tok0,
               dsec = health_num(s.port, "decode_seconds") - sec0;
        double agg = dsec > 0 ? dtok / dsec : 0;
        printf(
            "{\"bench\":\"serve\",\"config\":\"%s\",\"threads\":%d,\"parallel\":4,\"streams\":%d,"
            "\"max_tokens\":%d,\"completion_tokens\":%lld,\"wall_s\":%.2f,\"requests_per_s\":%.4f,"
            "\"e2e_tok_s\":%.2f,\"decode_tok_s\":%.2f,\"single_stream_generate_tok_s\":%.2f,"
            "\"decode_vs_single\":%.2f}\n",
            quick ? "tiny" : "qwen2-vl-2b-text-bf16", threads, c, tokens, total, wall, c / wall,
            total / wall, agg, single, single > 0 ? agg / single : 0);
        fflush(stdout);
    }
    kill(s.pid, SIGTERM);
    int status;
    waitpid(s.pid, &status, 0);
    return 0;
}
