/* Benchmark: generation at the text dimensions of Qwen2-VL-2B (hidden 1536, 28 layers, 12 heads,
 * 2 KV heads, intermediate 8960), Qwen2.5-VL-3B (hidden 2048, 36 layers, 16 heads, 2 KV heads,
 * intermediate 11008; bf16 only) and Qwen3-VL-2B (hidden 2048, 28 layers, 16 heads, 8 KV heads
 * of 128, intermediate 6144, q/k norms, interleaved M-RoPE), vocab 151936, tied lm_head, random
 * weights in bf16 and in f32, unfused and with qkv + gate_up fused: a 512-token prefill and 64
 * greedy decode steps through fm_generate. One JSON line per run ("bench":"generate"):
 *   prefill_tok_s, decode_tok_s;
 *   prefill_efficiency = prefill GFLOP/s / the same run's OpenBLAS sgemm GFLOP/s on the
 *     prefill's GEMM shapes (threaded as OpenBLAS does it, the reference limit);
 *   decode_bw_efficiency = weight bytes read per token x tokens/s / the same run's streaming
 *     read bandwidth over a buffer of the weights' size;
 *   peak_rss_bytes (VmHWM, reset when the run starts) of the process that loaded and ran the
 *     model (each configuration runs in its own child), next to checkpoint + KV cache bytes.
 * Then a "pair" line per dtype: unfused and fused loaded in one process and run interleaved,
 * 2 x reps generations each, with the summed rates and fused_prefill_speedup /
 * fused_decode_speedup (separate processes swing by 10-20% on this shared machine; the pair
 * sees the same moments).
 * Usage: generate [--model qwen2_vl|qwen2_5_vl|qwen3_vl] [--threads N] [--prompt N] [--new N]
 *   [--reps N] [--layers N] [--only bf16|f32] [--no-pair|--pair-only]; without --model, every
 *   model. Each measured run follows a short warm-up generation (weights faulted in); each
 *   configuration runs --reps times (default 2), unfused and fused alternating which goes first.
 * Checkpoints are written once under $FM_BENCH_DATA (default build/bench-data). */
#include <cblas.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fusemap/fusemap.h"
#include "qwen_fixture.h"

/* One model's text dimensions; `f32`: an f32 line too (the 3B's f32 checkpoint, 12 GB, plus
 * the read reference's buffer of its size would not fit this machine's memory). */
typedef struct tdims {
    const char *name, *tag;
    int arch, layers, h, nh, nkv, hd, inter, vocab, f32;
} tdims;

static const tdims models[] = {
    {"qwen2_vl", "text-2b", FM_QFIX_QWEN2_VL, 28, 1536, 12, 2, 128, 8960, 151936, 1},
    {"qwen2_5_vl", "text-qwen25-3b", FM_QFIX_QWEN2_5_VL, 36, 2048, 16, 2, 128, 11008, 151936, 0},
    {"qwen3_vl", "text-qwen3-2b", FM_QFIX_QWEN3_VL, 28, 2048, 16, 8, 128, 6144, 151936, 1},
};

typedef struct args {
    int threads, prompt, new_tokens, layers, reps, pair;
    const char *only, *model;
    const tdims *d;
} args;

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static int ensure_checkpoint(const args *a, fm_dtype dt, char *dir, size_t n) {
    const tdims *d = a->d;
    const char *base = getenv("FM_BENCH_DATA") ? getenv("FM_BENCH_DATA") : "build/bench-data";
    snprintf(dir, n, "%s/%s-%dlayers-%s", base, d->tag, a->layers,
             dt == FM_DTYPE_BF16 ? "bf16" : "f32");
    char cfg[4200];
    snprintf(cfg, sizeof cfg, "%s/config.json", dir);
    struct stat st;
    if (stat(cfg, &st) == 0) return 0;
    fm_qfix q;
    if (d->arch == FM_QFIX_QWEN3_VL) {
        fm_qfix_init_qwen3(&q);
        q.n_deepstack = 1, q.deepstack[0] = 0;
        q.text_head_dim = d->hd, q.mrope[0] = 24, q.mrope[1] = 20, q.mrope[2] = 20;
    } else {
        if (d->arch == FM_QFIX_QWEN2_5_VL)
            fm_qfix_init_qwen25(&q);
        else
            fm_qfix_init(&q);
        q.extra_config = "\"rope_scaling\": {\"type\": \"mrope\", \"mrope_section\": [16, 24, 24]}";
    }
    q.depth = 1, q.embed_dim = 64, q.num_heads = 4, q.hidden_size = d->h,
    q.mlp_ratio = 2; /* a token vision tower */
    q.text_layers = a->layers, q.text_hidden = d->h, q.text_heads = d->nh, q.text_kv_heads = d->nkv,
    q.text_inter = d->inter;
    q.vocab = d->vocab, q.tie = true, q.dtype = dt, q.scale = 0.02f, q.max_shard = 2000000000ull;
    mkdir(base, 0755);
    fprintf(stderr, "generate bench: writing %s (once)\n", dir);
    fm_error err;
    if (fm_qfix_write(dir, &q, &err) != FM_OK)
        return fprintf(stderr, "generate bench: %s\n", err.msg), -1;
    return 0;
}

/* ---- the reference limits: sgemm on the prefill's shapes, streaming read bandwidth ----------- */
static float *buf(int64_t n) {
    float *p = fm_malloc_aligned((size_t)n * sizeof *p);
    for (int64_t i = 0; p && i < n; i++)
        p[i] = (float)((i * 7919) % 2001 - 1000) * 1e-4f;
    return p;
}

/* Seconds of OpenBLAS sgemm (its own threads) for C[m][n] = A[m][k]·B[n][k]ᵀ, best of 3. */
static double sgemm_s(int m, int n, int k, int threads) {
    float *a = buf((int64_t)m * k), *b = buf((int64_t)n * k), *c = buf((int64_t)m * n);
    double best = INFINITY;
    openblas_set_num_threads(threads);
    for (int r = 0; a && b && c && r < 3; r++) {
        double t0 = now_s();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, k, 1.0f, a, k, b, k, 0.0f, c, n);
        best = fmin(best, now_s() - t0);
    }
    openblas_set_num_threads(1);
    fm_free_aligned(a), fm_free_aligned(b), fm_free_aligned(c);
    return best;
}

/* Prefill GEMM FLOPs and the sgemm seconds for them (per layer q, k, v, o, gate, up, down;
 * causal attention as two [T x T x hd] products per head at half density; lm_head on 1 row). */
static void prefill_reference(const args *a, double *flops, double *ref_s) {
    int t = a->prompt, L = a->layers, H = a->d->h, NH = a->d->nh, NKV = a->d->nkv, HD = a->d->hd,
        INTER = a->d->inter;
    struct {
        int n, k;
        double count;
    } lin[] = {
        {NH * HD, H, L},     {NKV * HD, H, 2.0 * L}, {H, NH * HD, L},
        {INTER, H, 2.0 * L}, {H, INTER, L},
    };
    *flops = 0, *ref_s = 0;
    for (size_t i = 0; i < sizeof lin / sizeof *lin; i++) {
        *flops += 2.0 * t * lin[i].n * lin[i].k * lin[i].count;
        *ref_s += sgemm_s(t, lin[i].n, lin[i].k, a->threads) * lin[i].count;
    }
    double att = 2.0 * 2.0 * t * t * HD * NH * L / 2;
    *flops += att;
    *ref_s +=
        sgemm_s(t, t, HD, a->threads) * NH * L; /* QKᵀ per head at full density ~ the causal pair */
}

typedef struct reader {
    const uint64_t *p;
    size_t n;
    uint64_t sum;
} reader;

static void *read_part(void *arg) {
    reader *r = arg;
    uint64_t s0 = 0, s1 = 0, s2 = 0,
             s3 = 0; /* four chains: the loop is bound by memory, not adds */
    size_t i = 0;
    for (; i + 4 <= r->n; i += 4)
        s0 += r->p[i], s1 += r->p[i + 1], s2 += r->p[i + 2], s3 += r->p[i + 3];
    for (; i < r->n; i++)
        s0 += r->p[i];
    r->sum = s0 + s1 + s2 + s3;
    return NULL;
}

/* Streaming read bandwidth (bytes/s) over a buffer of `bytes`, `threads` readers, best of 3. */
static double read_bandwidth(uint64_t bytes, int threads) {
    size_t words = (size_t)(bytes / 8);
    uint64_t *p = fm_malloc_aligned(words * 8);
    if (!p) return 0;
    memset(p, 1, words * 8);
    double best = INFINITY;
    for (int r = 0; r < 3; r++) {
        pthread_t th[64];
        reader rd[64];
        double t0 = now_s();
        for (int i = 0; i < threads; i++) {
            rd[i] = (reader){p + words / (size_t)threads * (size_t)i, words / (size_t)threads, 0};
            pthread_create(&th[i], NULL, read_part, &rd[i]);
        }
        for (int i = 0; i < threads; i++)
            pthread_join(th[i], NULL);
        best = fmin(best, now_s() - t0);
    }
    fm_free_aligned(p);
    return (double)words * 8 / best;
}

/* The prompt of every run: seeded ids below the vision markers 151652.. . Caller frees. */
static int64_t *prompt_ids(int n) {
    int64_t *ids = malloc((size_t)n * sizeof *ids);
    uint64_t s = 12345;
    for (int i = 0; ids && i < n; i++)
        s = s * 6364136223846793005ull + 1442695040888963407ull,
        ids[i] = (int64_t)((s >> 33) % 150000);
    return ids;
}

/* Resets this process's peak RSS (a forked child starts with its parent's high-water mark). */
static void reset_peak_rss(void) {
    FILE *f = fopen("/proc/self/clear_refs", "w");
    if (f) fputs("5", f), fclose(f);
}

/* Peak RSS in bytes since reset_peak_rss: VmHWM, or getrusage's where /proc is missing. */
static long long peak_rss(void) {
    long long kb = -1;
    char line[256];
    FILE *f = fopen("/proc/self/status", "r");
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "VmHWM:", 6)) kb = atoll(line + 6);
    if (f) fclose(f);
    if (kb < 0) {
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru);
        kb = ru.ru_maxrss;
    }
    return kb * 1024;
}

/* ---- one configuration, in its own process --------------------------------------------------- */
static int run_one(const args *a, const char *dir, fm_dtype dt, bool fused) {
    reset_peak_rss();
    fm_load_options lo;
    fm_load_options_init(&lo);
    lo.fusion_config = fused ? "{\"qkv\": true, \"gate_up\": true}" : "{}";
    fm_model *m = NULL;
    fm_error err;
    if (fm_from_pretrained(dir, &lo, &m, NULL, &err) != FM_OK)
        return fprintf(stderr, "%s\n", err.msg), 1;
    int64_t *ids = prompt_ids(a->prompt);
    fm_generate_options go;
    fm_generate_options_init(&go);
    go.max_new_tokens = a->new_tokens, go.threads = a->threads, go.sampling.top_k = 0;
    fm_generate_result r = {0};
    /* warm-up: a short generation faults the mapped weights in, so the measured run times the
     * forward passes, not first page faults (bench/load measures loading) */
    go.max_new_tokens = 2;
    fm_status st = fm_generate(m, ids, 8, NULL, NULL, &go, &r, &err);
    fm_generate_result_free(&r);
    go.max_new_tokens = a->new_tokens;
    if (st == FM_OK) st = fm_generate(m, ids, (size_t)a->prompt, NULL, NULL, &go, &r, &err);
    if (st != FM_OK) return fprintf(stderr, "%s\n", err.msg), 1;
    const tdims *d = a->d;
    int H = d->h, NH = d->nh, NKV = d->nkv, HD = d->hd, INTER = d->inter, VOCAB = d->vocab;
    double elem = dt == FM_DTYPE_BF16 ? 2 : 4;
    double per_token =
        ((double)a->layers * (H * (NH + 2 * NKV) * HD + NH * HD * H + 3.0 * H * INTER) +
         (double)VOCAB * H) *
        elem; /* weights streamed per decoded token (lm_head = embedding) */
    double steps = (double)r.n_tokens - 1, dec = steps / r.decode_s, pre = a->prompt / r.prefill_s;
    long long rss = peak_rss(); /* before the reference buffers below */
    fm_model_free(m);
    m = NULL;
    /* the limits, measured in this process right after the run: the machine is shared */
    double pf_flops = 0, pf_ref_s = 0, bw = read_bandwidth((uint64_t)per_token, a->threads);
    prefill_reference(a, &pf_flops, &pf_ref_s);
    struct stat sb;
    uint64_t ckpt = 0;
    /* the checkpoint's bytes: every shard file */
    fm_checkpoint *ck = NULL;
    if (fm_checkpoint_open(dir, &ck, NULL) == FM_OK)
        for (size_t i = 0; i < fm_checkpoint_shard_count(ck); i++)
            if (stat(fm_st_path(fm_checkpoint_shard(ck, i)), &sb) == 0)
                ckpt += (uint64_t)sb.st_size;
    fm_checkpoint_close(ck);
    uint64_t kv = (uint64_t)(a->prompt + a->new_tokens) * 2 * a->layers * NKV * HD * 4;
    printf("{\"bench\":\"generate\",\"model\":\"%s\",\"dtype\":\"%s\",\"fused\":%s,"
           "\"threads\":%d,"
           "\"layers\":%d,\"prompt_tokens\":%d,\"new_tokens\":%zu,\"prefill_tok_s\":%.1f,\"decode_"
           "tok_s\":%.2f,"
           "\"prefill_gflops\":%.1f,\"sgemm_gflops\":%.1f,\"prefill_efficiency\":%.3f,\"weight_"
           "bytes_per_token\":%.0f,"
           "\"read_bw_gbs\":%.1f,\"decode_bw_efficiency\":%.3f,\"peak_rss_bytes\":%lld,"
           "\"checkpoint_bytes\":%llu,"
           "\"kv_cache_bytes\":%llu,\"rss_over_ckpt_kv\":%.3f}\n",
           d->name, dt == FM_DTYPE_BF16 ? "bf16" : "f32", fused ? "true" : "false", a->threads,
           a->layers, a->prompt, r.n_tokens, pre, dec, pf_flops / r.prefill_s * 1e-9,
           pf_flops / pf_ref_s * 1e-9, pf_ref_s / r.prefill_s, per_token, bw * 1e-9,
           per_token * dec / bw, rss, (unsigned long long)ckpt, (unsigned long long)kv,
           (double)rss / (double)(ckpt + kv));
    fflush(stdout);
    fm_generate_result_free(&r);
    free(ids);
    return 0;
}

/* Fused vs unfused in one process: both models loaded (their mappings share the page cache),
 * then 2 x reps generations each, interleaved (U F F U U F ...), so both see the same machine
 * moments; one JSON line with the summed prefill and decode rates and their ratios. */
static int run_pair(const args *a, const char *dir, fm_dtype dt) {
    fm_model *m[2] = {NULL, NULL};
    fm_error err;
    for (int f = 0; f < 2; f++) {
        fm_load_options lo;
        fm_load_options_init(&lo);
        lo.fusion_config = f ? "{\"qkv\": true, \"gate_up\": true}" : "{}";
        if (fm_from_pretrained(dir, &lo, &m[f], NULL, &err) != FM_OK)
            return fprintf(stderr, "%s\n", err.msg), 1;
    }
    int64_t *ids = prompt_ids(a->prompt);
    fm_generate_options go;
    fm_generate_options_init(&go);
    go.threads = a->threads, go.sampling.top_k = 0;
    double pre_s[2] = {0, 0}, dec_s[2] = {0, 0}, steps[2] = {0, 0};
    fm_status st = FM_OK;
    for (int i = -2; i < 4 * a->reps && st == FM_OK; i++) { /* i < 0: a warm-up of each */
        int f = i < 0 ? i + 2 : (i % 2 == 1) != ((i / 2) % 2 == 1);
        fm_generate_result r = {0};
        go.max_new_tokens = i < 0 ? 2 : a->new_tokens;
        st = fm_generate(m[f], ids, i < 0 ? 8 : (size_t)a->prompt, NULL, NULL, &go, &r, &err);
        if (st == FM_OK && i >= 0)
            pre_s[f] += r.prefill_s, dec_s[f] += r.decode_s, steps[f] += (double)r.n_tokens - 1;
        fm_generate_result_free(&r);
    }
    free(ids);
    fm_model_free(m[0]);
    fm_model_free(m[1]);
    if (st != FM_OK) return fprintf(stderr, "%s\n", err.msg), 1;
    double runs = 2.0 * a->reps, pre[2], dec[2];
    for (int f = 0; f < 2; f++)
        pre[f] = runs * a->prompt / pre_s[f], dec[f] = steps[f] / dec_s[f];
    printf("{\"bench\":\"generate\",\"model\":\"%s\",\"dtype\":\"%s\",\"pair\":true,"
           "\"threads\":%d,\"layers\":%d,\"prompt_tokens\":%d,\"new_tokens\":%d,"
           "\"runs_each\":%d,\"unfused_prefill_tok_s\":%.1f,\"fused_prefill_tok_s\":%.1f,"
           "\"fused_prefill_speedup\":%.3f,\"unfused_decode_tok_s\":%.2f,"
           "\"fused_decode_tok_s\":%.2f,\"fused_decode_speedup\":%.3f}\n",
           a->d->name, dt == FM_DTYPE_BF16 ? "bf16" : "f32", a->threads, a->layers, a->prompt,
           a->new_tokens, 2 * a->reps, pre[0], pre[1], pre[1] / pre[0], dec[0], dec[1],
           dec[1] / dec[0]);
    fflush(stdout);
    return 0;
}

/* Runs fn in a child process; its exit status (1 when it did not exit). */
static int in_child(int (*fn)(const args *, const char *, fm_dtype, bool), const args *a,
                    const char *dir, fm_dtype dt, bool fused) {
    pid_t pid = fork();
    if (pid == 0) _exit(fn(a, dir, dt, fused));
    int status = 0;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}

static int run_pair_child(const args *a, const char *dir, fm_dtype dt, bool unused) {
    (void)unused;
    return run_pair(a, dir, dt);
}

int main(int argc, char **argv) {
    args a = {0, 512, 64, 0, 2, 1, NULL, NULL, NULL}; /* layers 0: each model's own */
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            a.threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--prompt") && i + 1 < argc)
            a.prompt = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--new") && i + 1 < argc)
            a.new_tokens = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--layers") && i + 1 < argc)
            a.layers = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--only") && i + 1 < argc)
            a.only = argv[++i];
        else if (!strcmp(argv[i], "--model") && i + 1 < argc)
            a.model = argv[++i];
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc)
            a.reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--no-pair"))
            a.pair = 0;
        else if (!strcmp(argv[i], "--pair-only"))
            a.pair = 2;
        else
            return fprintf(stderr,
                           "usage: %s [--model qwen2_vl|qwen2_5_vl|qwen3_vl] [--threads N] "
                           "[--prompt N] "
                           "[--new N] [--layers N] [--only bf16|f32] [--reps N] "
                           "[--no-pair|--pair-only]\n",
                           argv[0]),
                   2;
    }
    if (a.threads <= 0) a.threads = fm_default_threads();
    if (a.prompt < 1 || a.new_tokens < 2 || a.layers < 0 || a.reps < 1)
        return fprintf(stderr, "generate bench: bad sizes\n"), 2;
    int rc = 0, ran = 0;
    for (size_t mi = 0; mi < sizeof models / sizeof *models && rc == 0; mi++) {
        if (a.model && strcmp(a.model, models[mi].name)) continue;
        args m = a; /* --layers overrides the model's own depth */
        m.d = &models[mi], m.layers = a.layers ? a.layers : models[mi].layers, ran++;
        for (int d = 0; d < 2 && rc == 0; d++) {
            fm_dtype dt = d ? FM_DTYPE_F32 : FM_DTYPE_BF16;
            if (a.only ? strcmp(a.only, d ? "f32" : "bf16") != 0 : d && !models[mi].f32) continue;
            char dir[4096];
            if (ensure_checkpoint(&m, dt, dir, sizeof dir)) return 1;
            /* unfused then fused, then the other way round (a later child runs measurably
             * slower on this machine: alternating keeps the comparison fair) */
            for (int f = 0; f < 2 * a.reps && rc == 0 && a.pair < 2; f++)
                rc = in_child(run_one, &m, dir, dt, (f % 2 == 1) != ((f / 2) % 2 == 1));
            if (rc == 0 && a.pair) rc = in_child(run_pair_child, &m, dir, dt, false);
        }
    }
    if (!ran) return fprintf(stderr, "generate bench: unknown model '%s'\n", a.model), 2;
    return rc;
}
