/* Benchmark: the decoder kernels at Qwen2-VL-2B text shapes (hidden 1536, 12 heads, 2 KV heads,
 * head_dim 128, intermediate 8960, vocab 151936), random data, one JSON line per case:
 *  - GEMV (fm_k_linear_w, m = 1, 2, 4 and 8, bf16 and f32 weights): tokens/s-equivalent (m / time)
 *    and bandwidth efficiency = weight bytes / time ÷ a streaming read of the same bytes on the
 *    same threads, measured in the same run (cold: from memory, as in decode; hot: in cache);
 *  - prefill linear (m = 512, bf16 and f32): GFLOP/s next to one plain cblas_sgemm of the same
 *    shape on f32 weights with OpenBLAS's own threading on the same number of threads;
 *  - attention against the cache (f32 and bf16 cache): decode at ctx 512 and 2048 (one row;
 *    K/V bytes read per second) and a 512-token prefill (GFLOP/s counting QKᵀ and PV causal).
 * Usage: decode_kernels [--threads N] [--reps N] [--quick] [--gemv] [--shape NAME]: --gemv runs
 * the GEMV cases only, --shape only the GEMV shape of that name. Every figure is the best of
 * reps. */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/threadpool.h"
#include "nn/kernels.h"
#include "nn/vec.h"

enum { H = 1536, NH = 12, NKV = 2, HD = 128, INTER = 8960, VOCAB = 151936 };

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static unsigned rng = 2463534242u;
static float frand(void) {
    rng ^= rng << 13, rng ^= rng >> 17, rng ^= rng << 5;
    return (float)(rng >> 8) / 8388608.0f - 1.0f;
}
static void *alloc_or_die(size_t bytes) {
    void *p = fm_malloc_aligned(bytes ? bytes : 64);
    if (!p) {
        fprintf(stderr, "decode_kernels: out of memory for %zu bytes\n", bytes);
        exit(1);
    }
    return p;
}
static float *rand_f32(int64_t n, float scale) {
    float *p = alloc_or_die((size_t)n * sizeof *p);
    for (int64_t i = 0; i < n; i++)
        p[i] = scale * frand();
    return p;
}
/* Weights of dtype dt, n x k, random in [-scale, scale). */
static void *rand_w(fm_dtype dt, int64_t n, int64_t k, float scale) {
    int64_t cnt = n * k;
    if (dt == FM_DTYPE_F32) return rand_f32(cnt, scale);
    uint16_t *p = alloc_or_die((size_t)cnt * 2);
    float buf[4096];
    for (int64_t i = 0; i < cnt; i += 4096) {
        int64_t c = cnt - i < 4096 ? cnt - i : 4096;
        for (int64_t j = 0; j < c; j++)
            buf[j] = scale * frand();
        fm_f32_to_bf16(p + i, buf, (uint64_t)c);
    }
    return p;
}

/* ---- streaming read reference ------------------------------------------------------------ */

typedef struct read_job {
    const unsigned char *p;
    int64_t bytes;
    float sums[1024];
} read_job;

#define READ_CHUNK (1 << 20)
static void read_body(void *ctx, int64_t c0, int64_t c1, int worker) {
    read_job *j = ctx;
    const int64_t vb = FM_VW * 4; /* bytes per vector */
    fm_vf a0 = fm_v_zero(), a1 = fm_v_zero(), a2 = fm_v_zero(), a3 = fm_v_zero();
    for (int64_t c = c0; c < c1; c++) {
        int64_t b0 = c * READ_CHUNK, b1 = b0 + READ_CHUNK < j->bytes ? b0 + READ_CHUNK : j->bytes;
        for (int64_t i = b0; i + 4 * vb <= b1; i += 4 * vb) {
            a0 += fm_v_load(j->p + i), a1 += fm_v_load(j->p + i + vb);
            a2 += fm_v_load(j->p + i + 2 * vb), a3 += fm_v_load(j->p + i + 3 * vb);
        }
    }
    j->sums[worker] += fm_v_sum(a0 + a1 + a2 + a3);
}
/* Seconds for one parallel pass reading `bytes` at p (best of reps). */
static double time_read(fm_threadpool *pool, const void *p, int64_t bytes, int reps) {
    static read_job j;
    j.p = p, j.bytes = bytes;
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        double t0 = now_s();
        fm_threadpool_for(pool, (bytes + READ_CHUNK - 1) / READ_CHUNK, 1, read_body, &j);
        double t = now_s() - t0;
        best = t < best ? t : best;
    }
    return best;
}

/* ---- linear ------------------------------------------------------------------------------- */

typedef struct bench_cfg {
    int threads, reps;
    fm_threadpool *pool;
} bench_cfg;

static const char *dt_name(fm_dtype dt) {
    return dt == FM_DTYPE_F32 ? "f32" : "bf16";
}

static double time_linear(const bench_cfg *b, float *y, const float *x, const void *w, fm_dtype dt,
                          int64_t m, int64_t n, int64_t k, float *scratch, int reps) {
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        double t0 = now_s();
        fm_k_linear_w(y, n, x, k, w, dt, NULL, m, n, k, -1, scratch, b->pool);
        double t = now_s() - t0;
        best = t < best ? t : best;
    }
    return best;
}

/* Decode streams every weight from memory once per token, so the primary figure is "cold":
 * the kernel cycles through copies of the matrix whose total (COLD_SET) is far beyond the last
 * level cache, and the read reference cycles through the same copies. "hot" repeats one copy
 * (cache-resident for the small shapes: the kernel's compute limit). */
#define COLD_SET ((int64_t)512 << 20)

typedef struct gemv_fig {
    double t, tr; /* seconds per call: kernel, streaming read of the same bytes */
} gemv_fig;

static gemv_fig time_gemv(const bench_cfg *b, float *y, const float *x, void **w, int copies,
                          fm_dtype dt, int64_t m, int64_t n, int64_t k, int64_t bytes,
                          float *scratch, int reps) {
    gemv_fig f = {1e30, 1e30};
    for (int r = 0; r < reps; r++) {
        double t0 = now_s();
        for (int c = 0; c < copies; c++)
            time_read(b->pool, w[c], bytes, 1);
        double tr = (now_s() - t0) / copies;
        t0 = now_s();
        for (int c = 0; c < copies; c++)
            fm_k_linear_w(y, n, x, k, w[c], dt, NULL, m, n, k, -1, scratch, b->pool);
        double t = (now_s() - t0) / copies;
        f.t = t < f.t ? t : f.t;
        f.tr = tr < f.tr ? tr : f.tr;
    }
    return f;
}

static void bench_gemv(const bench_cfg *b, const char *name, int64_t n, int64_t k, fm_dtype dt) {
    int64_t bytes = n * k * (dt == FM_DTYPE_F32 ? 4 : 2);
    int copies = bytes >= COLD_SET ? 1 : (int)((COLD_SET + bytes - 1) / bytes);
    void **w = alloc_or_die((size_t)copies * sizeof *w);
    w[0] = rand_w(dt, n, k, 0.05f);
    for (int c = 1; c < copies; c++)
        w[c] = memcpy(alloc_or_die((size_t)bytes), w[0], (size_t)bytes);
    float *x = rand_f32(8 * k, 1.0f), *y = alloc_or_die((size_t)(8 * n) * sizeof *y);
    float *scratch =
        alloc_or_die(fm_k_linear_w_scratch_floats(8, n, k, b->threads) * sizeof *scratch);
    static const int64_t ms[] = {1, 2, 4, 8};
    for (int i = 0; i < 4; i++) {
        gemv_fig cold = time_gemv(b, y, x, w, copies, dt, ms[i], n, k, bytes, scratch, b->reps);
        int hot_reps = (int)(COLD_SET / bytes) + b->reps;
        gemv_fig hot = time_gemv(b, y, x, w, 1, dt, ms[i], n, k, bytes, scratch, hot_reps);
        printf(
            "{\"bench\":\"decode_kernels\",\"kernel\":\"gemv\",\"shape\":\"%s\",\"dtype\":\"%s\","
            "\"m\":%lld,"
            "\"n\":%lld,\"k\":%lld,\"threads\":%d,\"us\":%.1f,\"tok_s_equiv\":%.1f,\"gb_s\":%.2f,"
            "\"read_gb_s\":%.2f,\"bw_efficiency\":%.3f,\"hot_us\":%.1f,\"hot_gb_s\":%.2f,"
            "\"hot_read_gb_s\":%.2f,\"hot_bw_efficiency\":%.3f}\n",
            name, dt_name(dt), (long long)ms[i], (long long)n, (long long)k, b->threads,
            cold.t * 1e6, (double)ms[i] / cold.t, bytes / cold.t * 1e-9, bytes / cold.tr * 1e-9,
            cold.tr / cold.t, hot.t * 1e6, bytes / hot.t * 1e-9, bytes / hot.tr * 1e-9,
            hot.tr / hot.t);
        fflush(stdout);
    }
    for (int c = 0; c < copies; c++)
        fm_free_aligned(w[c]);
    fm_free_aligned(w), fm_free_aligned(x), fm_free_aligned(y), fm_free_aligned(scratch);
}

static void bench_prefill_linear(const bench_cfg *b, const char *name, int64_t n, int64_t k,
                                 fm_dtype dt) {
    const int64_t m = 512;
    void *w = rand_w(dt, n, k, 0.05f);
    float *wf = dt == FM_DTYPE_F32 ? w : rand_f32(n * k, 0.05f);
    float *x = rand_f32(m * k, 1.0f), *y = alloc_or_die((size_t)(m * n) * sizeof *y);
    float *scratch =
        alloc_or_die(fm_k_linear_w_scratch_floats(m, n, k, b->threads) * sizeof *scratch);
    double t = time_linear(b, y, x, w, dt, m, n, k, scratch, b->reps), ts = 1e30;
    openblas_set_num_threads(b->threads); /* the reference: OpenBLAS's own threading */
    for (int r = 0; r < b->reps; r++) {
        double t0 = now_s();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m, (int)n, (int)k, 1.0f, x,
                    (int)k, wf, (int)k, 0.0f, y, (int)n);
        double d = now_s() - t0;
        ts = d < ts ? d : ts;
    }
    openblas_set_num_threads(1);
    double flops = 2.0 * m * n * k;
    printf("{\"bench\":\"decode_kernels\",\"kernel\":\"prefill_linear\",\"shape\":\"%s\",\"dtype\":"
           "\"%s\","
           "\"m\":%lld,\"n\":%lld,\"k\":%lld,\"threads\":%d,\"ms\":%.2f,\"gflop_s\":%.1f,"
           "\"sgemm_gflop_s\":%.1f,\"efficiency\":%.3f}\n",
           name, dt_name(dt), (long long)m, (long long)n, (long long)k, b->threads, t * 1e3,
           flops / t * 1e-9, flops / ts * 1e-9, ts / t);
    fflush(stdout);
    if (wf != w) fm_free_aligned(wf);
    fm_free_aligned(w), fm_free_aligned(x), fm_free_aligned(y), fm_free_aligned(scratch);
}

/* ---- attention against the cache ---------------------------------------------------------- */

/* One slot of capacity cap filled with random K/V (through fm_k_kv_write). */
static void fill_cache(void *kc, void *vc, fm_dtype cdt, int64_t cap, fm_threadpool *pool) {
    float *kv = rand_f32(cap * NKV * HD, 1.0f), *vv = rand_f32(cap * NKV * HD, 1.0f);
    int32_t *slot = alloc_or_die((size_t)cap * sizeof *slot),
            *pos = alloc_or_die((size_t)cap * sizeof *pos);
    for (int64_t i = 0; i < cap; i++)
        slot[i] = 0, pos[i] = (int32_t)i;
    fm_k_kv_write(kc, vc, cdt, cap, NKV, HD, slot, pos, cap, kv, NKV * HD, vv, NKV * HD, pool);
    fm_free_aligned(kv), fm_free_aligned(vv), fm_free_aligned(slot), fm_free_aligned(pos);
}

static void bench_attention(const bench_cfg *b, fm_dtype cdt, int64_t ctx, int prefill) {
    int64_t cap = ctx, rows = prefill ? ctx : 1, es = cdt == FM_DTYPE_F32 ? 4 : 2;
    void *kc = alloc_or_die((size_t)(cap * NKV * HD * es)),
         *vc = alloc_or_die((size_t)(cap * NKV * HD * es));
    fill_cache(kc, vc, cdt, cap, b->pool);
    float *q = rand_f32(rows * NH * HD, 1.0f),
          *o = alloc_or_die((size_t)(rows * NH * HD) * sizeof *o);
    int32_t *slot = alloc_or_die((size_t)rows * sizeof *slot),
            *pos = alloc_or_die((size_t)rows * sizeof *pos);
    for (int64_t i = 0; i < rows; i++)
        slot[i] = 0, pos[i] = (int32_t)(prefill ? i : ctx - 1);
    float *scratch = alloc_or_die(
        fm_k_attention_cache_scratch_floats(slot, pos, rows, NH, NKV, HD, b->threads) * 4);
    int reps = prefill ? b->reps : 20 * b->reps;
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        double t0 = now_s();
        fm_k_attention_cache(o, NH * HD, q, NH * HD, kc, vc, cdt, cap, NKV, slot, pos, rows, NH, HD,
                             0.088f, scratch, b->pool);
        double t = now_s() - t0;
        best = t < best ? t : best;
    }
    printf("{\"bench\":\"decode_kernels\",\"kernel\":\"attention_cache\",\"mode\":\"%s\",\"cache\":"
           "\"%s\","
           "\"ctx\":%lld,\"rows\":%lld,\"heads\":%d,\"kv_heads\":%d,\"head_dim\":%d,\"threads\":%d,"
           "\"us\":%.1f,",
           prefill ? "prefill" : "decode", dt_name(cdt), (long long)ctx, (long long)rows, NH, NKV,
           HD, b->threads, best * 1e6);
    if (prefill) /* causal: QKᵀ and PV over (T+1)T/2 pairs per head */
        printf("\"gflop_s\":%.1f}\n", 4.0 * NH * HD * (double)(ctx + 1) * ctx / 2 / best * 1e-9);
    else
        printf("\"kv_gb_s\":%.2f}\n", 2.0 * ctx * NKV * HD * es / best * 1e-9);
    fflush(stdout);
    fm_free_aligned(kc), fm_free_aligned(vc), fm_free_aligned(q), fm_free_aligned(o);
    fm_free_aligned(slot), fm_free_aligned(pos), fm_free_aligned(scratch);
}

int main(int argc, char **argv) {
    bench_cfg b = {.threads = 2, .reps = 5};
    int quick = 0, gemv_only = 0;
    const char *only = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            b.threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc)
            b.reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--quick"))
            quick = 1;
        else if (!strcmp(argv[i], "--gemv"))
            gemv_only = 1;
        else if (!strcmp(argv[i], "--shape") && i + 1 < argc)
            only = argv[++i], gemv_only = 1;
        else
            return fprintf(stderr, "usage: decode_kernels [--threads N] [--reps N] [--quick] "
                                   "[--gemv] [--shape NAME]\n"),
                   2;
    }
    openblas_set_num_threads(1); /* as fusemap runs: its own pool parallelises */
    fm_error err;
    if (fm_threadpool_new(b.threads, &b.pool, &err) != FM_OK)
        return fprintf(stderr, "%s\n", err.msg), 1;
    static const struct {
        const char *name;
        int64_t n, k;
    } shapes[] = {{"qkv", H + 2 * NKV * HD, H},
                  {"o_proj", H, H},
                  {"gate_up", 2 * INTER, H},
                  {"down", H, INTER},
                  {"lm_head", VOCAB, H}};
    int ns = quick ? 2 : 5;
    for (int dt = 0; dt < 2; dt++)
        for (int s = 0; s < ns; s++)
            if (!only || !strcmp(only, shapes[s].name))
                bench_gemv(&b, shapes[s].name, shapes[s].n, shapes[s].k,
                           dt ? FM_DTYPE_F32 : FM_DTYPE_BF16);
    for (int dt = 0; dt < 2 && !gemv_only; dt++)
        for (int s = 0; s < (quick ? 1 : 4); s++)
            bench_prefill_linear(&b, shapes[s].name, shapes[s].n, shapes[s].k,
                                 dt ? FM_DTYPE_F32 : FM_DTYPE_BF16);
    for (int dt = 0; dt < 2 && !gemv_only; dt++) {
        fm_dtype cdt = dt ? FM_DTYPE_F32 : FM_DTYPE_BF16;
        bench_attention(&b, cdt, 512, 0);
        bench_attention(&b, cdt, 2048, 0);
        bench_attention(&b, cdt, 512, 1);
    }
    fm_threadpool_free(b.pool);
    return 0;
}
