/* Benchmark: vision towers on 1024 patches (448x448 pixels with patch 14, 512x512 with 16),
 * random weights, run through the module tree (fm_from_pretrained + fm_model_vision_features,
 * every module through its class forward): achieved GFLOP/s next to plain cblas_sgemm's on the
 * same GEMM shapes, and the cost of the forward dispatch itself; one JSON line per model.
 * Models: qwen2_vl (Qwen2-VL-2B: embed 1280, 16 heads, MLP 5120, output 1536), qwen2_5_vl
 * (Qwen2.5-VL-3B: hidden 1280, 16 heads, gated MLP 3420 with biases, output 2048, windows of 112
 * pixels = 4x4 merged cells, full attention in every 8th block), qwen3_vl-2b / qwen3_vl-4b
 * (Qwen3-VL-2B/4B: hidden 1024, 16 heads, MLP 4096, output 2048 / 2560, patch 16, 24 blocks,
 * DeepStack after blocks 5, 11, 17, its three mergers included). */
/* Usage: vision [--model NAME] [--depth N] [--threads N] [--reps N] [--grid H W] [--fuse]
 * (default: every model at its own depth). --fuse: patch_embeddings (and gate_up for
 * qwen2_5_vl). The checkpoint (f32) is written once under $FM_BENCH_DATA (default
 * build/bench-data) and reused. The
 * sgemm figure times each distinct GEMM shape alone with OpenBLAS on the same number of threads
 * and weights it by its FLOPs (every matmul and attention: 2·M·N·K). */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "fusemap/fusemap.h"
#include "qwen_fixture.h"

enum { C_IN = 3, TP = 2, M = 2 };

/* The towers benchmarked. */
typedef struct model_spec {
    const char *name;
    int mlp, out;      /* MLP width, output width */
    bool gated;        /* gate/up/down MLP (qwen2_5_vl) instead of fc1/fc2 */
    int window_cells;  /* merged cells per window side (0: no windows) */
    int full_every;    /* block i attends over the whole image when (i + 1) % full_every == 0 */
    const char *fused; /* fusion_config of --fuse */
    int d, heads, patch, depth; /* width, heads, patch side, blocks */
    int deepstack;              /* Qwen3-VL: DeepStack mergers after blocks 5, 11, 17 (0: none) */
    const char *json_model, *variant; /* the JSON line's "model" and "variant" */
} model_spec;

static const model_spec models[] = {
    {"qwen2_vl", 5120, 1536, false, 0, 1, "{\"patch_embeddings\": true}", 1280, 16, 14, 32, 0,
     "qwen2_vl", "2B"},
    {"qwen2_5_vl", 3420, 2048, true, 4, 8, "{\"patch_embeddings\": true, \"gate_up\": true}", 1280,
     16, 14, 32, 0, "qwen2_5_vl", "3B"},
    {"qwen3_vl-2b", 4096, 2048, false, 0, 1, "{\"patch_embeddings\": true}", 1024, 16, 16, 24, 3,
     "qwen3_vl", "2B"},
    {"qwen3_vl-4b", 4096, 2560, false, 0, 1, "{\"patch_embeddings\": true}", 1024, 16, 16, 24, 3,
     "qwen3_vl", "4B"},
};

static int k_in(const model_spec *ms) {
    return C_IN * TP * ms->patch * ms->patch;
}

/* The DeepStack taps (blocks 5, 11, 17) that exist at this depth. */
static int deepstack_at(const model_spec *ms, int depth) {
    int n = 0;
    for (int i = 0; i < ms->deepstack; i++)
        n += 6 * i + 5 < depth;
    return n;
}

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static unsigned rng = 2463534242u;
static float *rnd(int64_t n, float centre, float half) {
    float *p = fm_malloc_aligned((size_t)n * sizeof *p);
    for (int64_t i = 0; p && i < n; i++) {
        rng ^= rng << 13, rng ^= rng >> 17, rng ^= rng << 5;
        p[i] = centre + half * ((float)(rng >> 8) / 8388608.0f - 1.0f);
    }
    return p;
}

/* ---- the GEMM shapes of one forward ---------------------------------------------------- */

typedef struct gemm_shape {
    int m, n, k, trans_b; /* C[m][n] = A[m][k] · (trans_b ? B[n][k]ᵀ : B[k][n]) */
    double count;         /* calls per forward */
} gemm_shape;

/* Rows of the attention segments of a single-image gh x gw grid: one segment (the image) in a
 * full block; in a windowed block one per window of cells x cells merged cells (smaller at the
 * right and bottom edges). seg[] (up to 4 distinct sizes) and their counts per block. */
static int segments(const model_spec *ms, int64_t gh, int64_t gw, bool windowed, int64_t *seg,
                    double *count) {
    if (!windowed || ms->window_cells < 1) {
        seg[0] = gh * gw, count[0] = 1;
        return 1;
    }
    int n = 0;
    int64_t lh = gh / M, lw = gw / M, v = ms->window_cells;
    for (int64_t y = 0; y < lh; y += v)
        for (int64_t x = 0; x < lw; x += v) {
            int64_t rows = (lh - y < v ? lh - y : v) * (lw - x < v ? lw - x : v) * M * M;
            int k = 0;
            while (k < n && seg[k] != rows)
                k++;
            if (k == n) seg[n] = rows, count[n++] = 0;
            count[k] += 1;
        }
    return n;
}

static int shapes_of(const model_spec *ms, int64_t gh, int64_t gw, int depth, bool fused,
                     gemm_shape *s) {
    int64_t n_patches = gh * gw, tok = n_patches / (M * M);
    int i = 0, D = ms->d, HEADS = ms->heads, HD = D / HEADS, mergers = 1 + deepstack_at(ms, depth);
    s[i++] = (gemm_shape){(int)n_patches, D, k_in(ms), 1, 1};  /* patch embed (fused) */
    s[i++] = (gemm_shape){(int)n_patches, 3 * D, D, 1, depth}; /* qkv */
    int full = 0;
    for (int b = 0; b < depth; b++)
        full += (b + 1) % ms->full_every == 0;
    for (int kind = 0; kind < 2; kind++) { /* full blocks, then windowed ones */
        int blocks = kind ? depth - full : full;
        int64_t seg[4];
        double count[4];
        int ns = blocks ? segments(ms, gh, gw, kind == 1, seg, count) : 0;
        for (int k = 0; k < ns; k++) {
            double c = (double)blocks * HEADS * count[k];
            s[i++] = (gemm_shape){(int)seg[k], (int)seg[k], HD, 1, c}; /* Q Kᵀ */
            s[i++] = (gemm_shape){(int)seg[k], HD, (int)seg[k], 0, c}; /* P V */
        }
    }
    s[i++] = (gemm_shape){(int)n_patches, D, D, 1, depth}; /* proj */
    if (ms->gated && fused) {
        s[i++] = (gemm_shape){(int)n_patches, 2 * ms->mlp, D, 1, depth}; /* gate_up */
    } else {
        s[i++] = (gemm_shape){(int)n_patches, ms->mlp, D, 1, depth};                /* fc1 / gate */
        if (ms->gated) s[i++] = (gemm_shape){(int)n_patches, ms->mlp, D, 1, depth}; /* up */
    }
    s[i++] = (gemm_shape){(int)n_patches, D, ms->mlp, 1, depth};       /* fc2 / down */
    s[i++] = (gemm_shape){(int)tok, M * M * D, M * M * D, 1, mergers}; /* merger(s) fc1 */
    s[i++] = (gemm_shape){(int)tok, ms->out, M * M * D, 1, mergers};   /* merger(s) fc2 */
    return i;
}

static double shape_flops(const gemm_shape *s) {
    return 2.0 * s->m * s->n * s->k * s->count;
}

/* Operands of one shape for the plain-sgemm reference (contiguous, beta 0). */
typedef struct gemm_bufs {
    float *a, *b, *c;
} gemm_bufs;

static int gemm_bufs_new(gemm_bufs *g, const gemm_shape *s) {
    g->a = rnd((int64_t)s->m * s->k, 0, 1);
    g->b = rnd((int64_t)s->n * s->k, 0, 1);
    g->c = fm_malloc_aligned((size_t)s->m * s->n * sizeof *g->c);
    return g->a && g->b && g->c ? 0 : -1;
}

static void gemm_bufs_free(gemm_bufs *g) {
    fm_free_aligned(g->a), fm_free_aligned(g->b), fm_free_aligned(g->c);
}

/* Seconds per call of plain sgemm on one shape, making as many calls as one forward makes
 * (at least 1), so the reference is exposed to the shared machine's noise as long as the
 * forward is. */
static double time_sgemm(const gemm_shape *s, const gemm_bufs *g) {
    int calls = s->count > 1 ? (int)s->count : 1;
    double t0 = now_s();
    for (int i = 0; i < calls; i++)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, s->trans_b ? CblasTrans : CblasNoTrans, s->m, s->n,
                    s->k, 1.0f, g->a, s->k, g->b, s->trans_b ? s->k : s->n, 0.0f, g->c, s->n);
    return (now_s() - t0) / calls;
}

/* ---- model ------------------------------------------------------------------------------ */

/* The checkpoint directory for this model and depth, written on first use. */
static int ensure_checkpoint(const model_spec *ms, int depth, char *dir, size_t n) {
    const char *base = getenv("FM_BENCH_DATA") ? getenv("FM_BENCH_DATA") : "build/bench-data";
    if (ms->gated || ms->deepstack)
        snprintf(dir, n, "%s/vision-%s-depth%d-f32", base, ms->name, depth);
    else
        snprintf(dir, n, "%s/vision-2b-depth%d-f32", base, depth);
    char cfg[4200];
    snprintf(cfg, sizeof cfg, "%s/config.json", dir);
    struct stat st;
    if (stat(cfg, &st) == 0) return 0;
    fm_qfix q;
    if (ms->gated) {
        char full[512];
        size_t w = (size_t)snprintf(full, sizeof full, "[");
        for (int b = ms->full_every - 1; b < depth; b += ms->full_every)
            w += (size_t)snprintf(full + w, sizeof full - w, "%s%d", w > 1 ? ", " : "", b);
        snprintf(full + w, sizeof full - w, "]");
        fm_qfix_init_qwen25(&q);
        q.vision_inter = ms->mlp, q.window_size = ms->window_cells * M * ms->patch;
        q.fullatt = full;
    } else if (ms->deepstack) {
        fm_qfix_init_qwen3(&q);
        q.num_position_embeddings = 2304, q.n_deepstack = deepstack_at(ms, depth);
        for (int i = 0; i < q.n_deepstack; i++)
            q.deepstack[i] = 6 * i + 5;
        q.mlp_ratio = ms->mlp / ms->d;
    } else {
        fm_qfix_init(&q);
        q.mlp_ratio = ms->mlp / ms->d;
    }
    q.depth = depth, q.embed_dim = ms->d, q.num_heads = ms->heads, q.hidden_size = ms->out;
    q.patch_size = ms->patch;
    q.text_layers = 1, q.text_hidden = 256, q.text_heads = 4, q.text_kv_heads = 2,
    q.text_inter = 512, q.vocab = 1024;
    q.tie = true, q.scale = 0.03f;
    mkdir(base, 0755);
    fprintf(stderr, "vision bench: writing %s (once)\n", dir);
    fm_error err;
    if (fm_qfix_write(dir, &q, &err) != FM_OK)
        return fprintf(stderr, "vision bench: %s\n", err.msg), -1;
    return 0;
}

/* Module forwards one tower forward makes: tower, patch_embed (+ its conv or linear), rotary
 * (Qwen3-VL: + pos_embed); per block: block, norm1, attn, qkv, proj, norm2, mlp, fc1, fc2 (the
 * activation rides fc1) or gate_proj, up_proj, down_proj (SwiGLU in one pass; fused,
 * gate_up_proj too, whose output the two slices hand out); merger, ln_q, mlp (Sequential), two
 * Linear (the GELU rides the first); Qwen3-VL: merger, norm, two Linear for each merger. */
static int64_t dispatch_calls(const model_spec *ms, int depth, bool fused) {
    int64_t blocks = (ms->gated ? (fused ? 11LL : 10LL) : 9LL) * depth;
    if (ms->deepstack) return 5 + blocks + 4LL * (1 + deepstack_at(ms, depth));
    return 4 + blocks + 5;
}

/* Nanoseconds per fm_module_forward of a cheap module (a one-element activation): what the
 * protocol costs per call beyond the kernel. */
static double dispatch_ns(fm_model *m, fm_run_ctx *rc) {
    fm_module *act = fm_module_find(fm_model_root(m), "model.visual.blocks.0.mlp.act");
    if (!act) act = fm_module_find(fm_model_root(m), "model.visual.blocks.0.mlp.act_fn");
    fm_shape s = {1, {1}};
    fm_tensor x, y = {0};
    if (!act || fm_tensor_alloc(&x, FM_DTYPE_F32, &s, NULL) != FM_OK) return -1;
    ((float *)x.data)[0] = 0.5f;
    int n = 200000;
    double t0 = now_s();
    for (int i = 0; i < n; i++) {
        size_t mark = fm_run_mark(rc);
        y.data = NULL;
        fm_module_forward(act, rc, &x, 1, &y, 1, NULL);
        fm_run_release(rc, mark);
    }
    double t = now_s() - t0;
    fm_tensor_free(&x);
    return t / n * 1e9;
}

/* ---- measurement ------------------------------------------------------------------------ */

typedef struct bench_ctx {
    const model_spec *ms;
    fm_model *m;        /* owned */
    fm_tensor px, grid; /* [N][C·T·P·P], [1][3], owned */
    int64_t n;
    int depth, threads, ns;
    gemm_shape shapes[24];
    gemm_bufs bufs[24]; /* owned */
} bench_ctx;

/* Rounds alternate the forward and the reference GEMMs so the shared machine's noise hits both
 * alike; round 0 warms up; the best of the other rounds counts. Returns -1 on a forward error. */
static int measure(bench_ctx *b, int reps, double *best, double *sg_best, double *nonfinite) {
    fm_error err;
    fm_run_options ro;
    fm_run_options_init(&ro);
    ro.threads = b->threads;
    *best = INFINITY;
    for (int i = 0; i < b->ns; i++)
        sg_best[i] = INFINITY;
    for (int r = 0; r <= reps; r++) {
        fm_vision_features out = {{0}, {0}};
        openblas_set_num_threads(1); /* as fusemap runs (its own pool parallelises) */
        double t0 = now_s();
        if (fm_model_vision_features(b->m, &b->px, &b->grid, &ro, &out, &err) != FM_OK) {
            fprintf(stderr, "vision bench: %s\n", err.msg);
            return -1;
        }
        double t = now_s() - t0;
        if (r > 0 && t < *best) *best = t;
        *nonfinite = 0;
        for (uint64_t i = 0; i < fm_tensor_numel(&out.image_embeds); i++)
            *nonfinite += isfinite(((float *)out.image_embeds.data)[i]) ? 0 : 1;
        for (uint64_t i = 0; out.deepstack.data && i < fm_tensor_numel(&out.deepstack); i++)
            *nonfinite += isfinite(((float *)out.deepstack.data)[i]) ? 0 : 1;
        fm_vision_features_free(&out);
        openblas_set_num_threads(b->threads); /* the reference: OpenBLAS's own threading */
        for (int i = 0; i < b->ns; i++) {
            double ts = b->shapes[i].count > 0 ? time_sgemm(&b->shapes[i], &b->bufs[i]) : 0;
            if (r > 0 && ts < sg_best[i]) sg_best[i] = ts;
        }
    }
    openblas_set_num_threads(1);
    return 0;
}

static void report(const bench_ctx *b, double best, const double *sg_best, double nonfinite,
                   double ns_call, bool fused) {
    double flops = 0, ref_s = 0;
    for (int i = 0; i < b->ns; i++) {
        flops += shape_flops(&b->shapes[i]);
        ref_s += sg_best[i] * b->shapes[i].count;
    }
    int64_t calls = dispatch_calls(b->ms, b->depth, fused);
    printf(
        "{\"bench\":\"vision\",\"model\":\"%s\",\"variant\":\"%s\",\"depth\":%d,\"threads\":%d,"
        "\"patches\":%lld,"
        "\"fused\":%s,\"seconds\":%.4f,\"gflops\":%.1f,\"sgemm_gflops\":%.1f,\"efficiency\":%.3f,"
        "\"dispatch_calls\":%lld,\"dispatch_ns_per_call\":%.0f,\"dispatch_overhead\":%.2e,"
        "\"nonfinite_outputs\":%.0f}\n",
        b->ms->json_model, b->ms->variant, b->depth, b->threads, (long long)b->n,
        fused ? "true" : "false", best, flops / best * 1e-9, flops / ref_s * 1e-9, ref_s / best,
        (long long)calls, ns_call, (double)calls * ns_call * 1e-9 / best, nonfinite);
    fflush(stdout);
}

static int setup(bench_ctx *b, int depth, int64_t gh, int64_t gw, bool fused) {
    fm_error err;
    char dir[4096];
    if (ensure_checkpoint(b->ms, depth, dir, sizeof dir) != 0) return -1;
    fm_load_options o;
    fm_load_options_init(&o);
    o.fusion_config = fused ? b->ms->fused : "{}";
    if (fm_from_pretrained(dir, &o, &b->m, NULL, &err) != FM_OK)
        return fprintf(stderr, "vision bench: %s\n", err.msg), -1;
    b->depth = depth;
    b->n = gh * gw;
    fm_shape ps = {2, {b->n, k_in(b->ms)}}, gs = {2, {1, 3}};
    if (fm_tensor_alloc(&b->px, FM_DTYPE_F32, &ps, &err) != FM_OK ||
        fm_tensor_alloc(&b->grid, FM_DTYPE_I64, &gs, &err) != FM_OK)
        return fprintf(stderr, "vision bench: %s\n", err.msg), -1;
    float *px = rnd(b->n * k_in(b->ms), 0, 1.5f);
    if (!px) return -1;
    memcpy(b->px.data, px, b->px.nbytes);
    fm_free_aligned(px);
    int64_t *g = b->grid.data;
    g[0] = 1, g[1] = gh, g[2] = gw;
    b->ns = shapes_of(b->ms, gh, gw, depth, fused, b->shapes);
    for (int i = 0; i < b->ns; i++)
        if (gemm_bufs_new(&b->bufs[i], &b->shapes[i]) != 0)
            return fprintf(stderr, "vision bench: out of memory\n"), -1;
    return 0;
}

static void teardown(bench_ctx *b) {
    for (int i = 0; i < 24; i++)
        gemm_bufs_free(&b->bufs[i]);
    fm_model_free(b->m);
    fm_tensor_free(&b->px);
    fm_tensor_free(&b->grid);
}

static int run(const model_spec *ms, int depth, int threads, int reps, int64_t gh, int64_t gw,
               bool fused) {
    static bench_ctx b;
    memset(&b, 0, sizeof b); /* zeroed: teardown is safe after any partial setup */
    double best, sg_best[24], nonfinite = 0, ns_call = -1;
    b.ms = ms, b.threads = threads;
    int rc =
        setup(&b, depth, gh, gw, fused) == 0 && measure(&b, reps, &best, sg_best, &nonfinite) == 0
            ? 0
            : 1;
    fm_run_ctx *rc_ctx = NULL;
    fm_run_options ro = {threads, NULL, NULL};
    if (rc == 0 && fm_model_run_ctx(b.m, &ro, &rc_ctx, NULL) == FM_OK)
        ns_call = dispatch_ns(b.m, rc_ctx);
    if (rc == 0) report(&b, best, sg_best, nonfinite, ns_call, fused);
    teardown(&b);
    return rc;
}

int main(int argc, char **argv) {
    int depth = 0, threads = 0, reps = 2;
    bool fused = false;
    int64_t gh = 32, gw = 32;
    const char *only = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--model") && i + 1 < argc)
            only = argv[++i];
        else if (!strcmp(argv[i], "--depth") && i + 1 < argc)
            depth = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc)
            reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--grid") && i + 2 < argc)
            gh = atoll(argv[++i]), gw = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--fuse"))
            fused = true;
        else {
            fprintf(stderr,
                    "usage: %s [--model NAME] [--depth N] [--threads N] [--reps N] [--grid H W] "
                    "[--fuse]\n",
                    argv[0]);
            return 2;
        }
    }
    if (threads <= 0) threads = fm_default_threads();
    if (depth < 0 || reps < 1 || gh < 2 || gw < 2 || gh % 2 || gw % 2) {
        fprintf(stderr, "vision bench: need depth >= 1, reps >= 1, even grid sides\n");
        return 2;
    }
    int rc = 0, ran = 0;
    for (size_t i = 0; i < sizeof models / sizeof *models; i++)
        if (!only || !strcmp(only, models[i].name))
            rc |= run(&models[i], depth ? depth : models[i].depth, threads, reps, gh, gw, fused),
                ran++;
    if (!ran) fprintf(stderr, "vision bench: unknown model '%s'\n", only);
    return ran ? rc : 2;
}
