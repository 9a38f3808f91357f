/* Benchmark: Qwen2-VL-2B patch embedding alone (K=1176 -> D=1280): fused Linear vs the direct
 * Conv3d kernel vs plain cblas_sgemm, for 256/1024/4096 patches; one JSON line per size. */
/* Usage: fusion [--threads N] [--reps N] [--sizes a,b,c]. The fused path is one sgemm on the
 * pixel rows as they are (no copy); the conv reads the same weight as [1280][3][2][14][14]. */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/threadpool.h"
#include "nn/kernels.h"

enum { C_IN = 3, T_P = 2, P_P = 14, K_IN = C_IN * T_P * P_P * P_P, D_OUT = 1280 };

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

typedef struct run_args {
    int which; /* 0 fused, 1 unfused conv, 2 plain sgemm */
    float *y;
    const float *x, *w;
    int64_t n;
    const fm_conv3d_params *cp;
    fm_threadpool *pool;
} run_args;

static void run_once(const run_args *a) {
    static const int64_t in_dims[3] = {T_P, P_P, P_P};
    if (a->which == 0) {
        openblas_set_num_threads(1); /* fusemap's own pool parallelises */
        fm_k_linear(a->y, D_OUT, a->x, a->w, NULL, a->n, D_OUT, K_IN, -1, a->pool);
    } else if (a->which == 1) {
        fm_k_conv3d(a->y, a->x, a->w, NULL, a->n, a->cp, in_dims, a->pool);
    } else {
        openblas_set_num_threads(
            fm_threadpool_threads(a->pool)); /* the reference: OpenBLAS's threading */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)a->n, D_OUT, K_IN, 1.0f, a->x,
                    K_IN, a->w, K_IN, 0.0f, a->y, D_OUT);
    }
}

/* Seconds per call of one measurement: repeats the call until 50 ms passed. */
static double measure(const run_args *a) {
    int iters = 0;
    double t0 = now_s(), t;
    do {
        run_once(a);
        iters++;
        t = now_s() - t0;
    } while (t < 0.05);
    return t / iters;
}

/* Best of `reps` rounds; the variants alternate inside each round so that the shared
 * machine's noise hits them alike. */
static void best_times(const run_args *const *v, int nv, int reps, double *best) {
    for (int i = 0; i < nv; i++) {
        run_once(v[i]); /* warm-up: page faults, BLAS buffers, pool wake-up */
        best[i] = INFINITY;
    }
    for (int r = 0; r < reps; r++)
        for (int i = 0; i < nv; i++) {
            double t = measure(v[i]);
            if (t < best[i]) best[i] = t;
        }
}

static double rel_l2(const float *a, const float *b, int64_t n) {
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        num += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        den += (double)b[i] * b[i];
    }
    return den > 0 ? sqrt(num / den) : 0;
}

static int bench_size(int64_t n, int threads, int reps, fm_threadpool *pool, const float *w) {
    float *x = fm_malloc_aligned((size_t)(n * K_IN) * sizeof(float));   /* [N][1176] pixel rows */
    float *yf = fm_malloc_aligned((size_t)(n * D_OUT) * sizeof(float)); /* [N][1280] */
    float *yc = fm_malloc_aligned((size_t)(n * D_OUT) * sizeof(float)); /* [N][1280][1][1][1] */
    if (!x || !yf || !yc) {
        fprintf(stderr, "fusion bench: out of memory for %lld patches\n", (long long)n);
        fm_free_aligned(x), fm_free_aligned(yf), fm_free_aligned(yc);
        return 1;
    }
    unsigned s = 12345u + (unsigned)n;
    for (int64_t i = 0; i < n * K_IN; i++)
        x[i] = (float)((s = s * 1103515245u + 12345u) >> 8) / 16777216.0f - 0.5f;
    fm_conv3d_params cp = {D_OUT, C_IN, {T_P, P_P, P_P}, {T_P, P_P, P_P}, {0, 0, 0}, {1, 1, 1}, 1};
    run_args fused = {0, yf, x, w, n, &cp, pool}, conv = {1, yc, x, w, n, &cp, pool},
             plain = {2, yc, x, w, n, &cp, pool};
    const run_args *variants[3] = {&fused, &conv, &plain};
    double best[3];
    best_times(variants, 3, reps, best);
    double tf = best[0], tc = best[1], ts = best[2];
    run_once(&fused);
    run_once(&conv);
    double flops = 2.0 * (double)n * K_IN * D_OUT;
    printf(
        "{\"bench\":\"fusion\",\"patches\":%lld,\"threads\":%d,\"fused_s\":%.6f,\"unfused_s\":%.6f,"
        "\"sgemm_s\":%.6f,\"speedup\":%.2f,\"efficiency\":%.3f,\"fused_gflops\":%.1f,"
        "\"unfused_gflops\":%.1f,\"rel_l2_fused_vs_unfused\":%.2e}\n",
        (long long)n, threads, tf, tc, ts, tc / tf, (flops / tf) / (flops / ts), flops / tf * 1e-9,
        flops / tc * 1e-9, rel_l2(yf, yc, n * D_OUT));
    fflush(stdout);
    fm_free_aligned(x), fm_free_aligned(yf), fm_free_aligned(yc);
    return 0;
}

int main(int argc, char **argv) {
    int threads = 0, reps = 5;
    int64_t sizes[8] = {256, 1024, 4096};
    int n_sizes = 3;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc)
            reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--sizes") && i + 1 < argc) {
            n_sizes = 0;
            for (char *tok = strtok(argv[++i], ","); tok && n_sizes < 8; tok = strtok(NULL, ","))
                sizes[n_sizes++] = atoll(tok);
        } else {
            fprintf(stderr, "usage: %s [--threads N] [--reps N] [--sizes a,b,c]\n", argv[0]);
            return 2;
        }
    }
    if (threads <= 0) threads = fm_default_threads();
    if (reps < 1) reps = 1;
    fm_threadpool *pool = NULL;
    fm_error err;
    if (fm_threadpool_new(threads, &pool, &err) != FM_OK) {
        fprintf(stderr, "fusion bench: %s\n", err.msg);
        return 1;
    }
    float *w = fm_malloc_aligned((size_t)D_OUT * K_IN *
                                 sizeof(float)); /* [1280][1176] = Conv3d [1280][3][2][14][14] */
    int rc = w ? 0 : 1;
    for (int64_t i = 0; w && i < (int64_t)D_OUT * K_IN; i++)
        w[i] = (float)((i * 7919) % 2001 - 1000) * 3e-5f;
    for (int i = 0; i < n_sizes && rc == 0; i++)
        rc = sizes[i] > 0 ? bench_size(sizes[i], threads, reps, pool, w) : 2;
    fm_free_aligned(w);
    fm_threadpool_free(pool);
    return rc;
}
