/* Segment (cu_seqlens) attention, eager formula: per segment, head and query block,
 * S = (Q Kᵀ)·scale by sgemm, f32 softmax per row, O = P V by sgemm into the output columns. */
#include <cblas.h>

#include "nn/kernels.h"

/* Query rows per task: a 128 x L score block is 512 KB at L = 1024 (fits L2). */
#define ATT_QB 128

size_t fm_k_attention_scratch_floats(int64_t max_seg, int threads) {
    if (max_seg < 1) max_seg = 1;
    if (threads < 1) threads = 1;
    int64_t qb = max_seg < ATT_QB ? max_seg : ATT_QB;
    return (size_t)qb * (size_t)max_seg * (size_t)threads;
}

typedef struct att_job {
    float *o; /* [N][ldo] */
    int64_t ldo;
    const float *q, *k, *v; /* [N][ldq], [N][ldk], [N][ldv] (often views into one qkv buffer) */
    int64_t ldq, ldk, ldv;
    const int32_t *cu; /* [n_seg + 1] */
    int n_seg, heads, hd;
    float scale;
    float *scratch; /* [threads][qb * max_seg] */
    int64_t slab;   /* floats per worker */
} att_job;

static int64_t seg_blocks(const att_job *j, int s) {
    int64_t len = j->cu[s + 1] - j->cu[s];
    return (len + ATT_QB - 1) / ATT_QB;
}

/* One task: query rows [r0, r1) of segment s (absolute rows), head h. */
static void att_block(const att_job *j, int s, int h, int64_t r0, int64_t r1, float *sc) {
    int64_t base = j->cu[s], len = j->cu[s + 1] - j->cu[s], m = r1 - r0;
    int64_t col = (int64_t)h * j->hd;
    /* sc [m][len] = scale * Q[r0:r1] · K[seg]ᵀ */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m, (int)len, j->hd, j->scale,
                j->q + r0 * j->ldq + col, (int)j->ldq, j->k + base * j->ldk + col, (int)j->ldk,
                0.0f, sc, (int)len);
    fm_k_softmax_rows(sc, m, len, len);
    /* O[r0:r1] (columns col..col+hd) = sc · V[seg] */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, j->hd, (int)len, 1.0f, sc,
                (int)len, j->v + base * j->ldv + col, (int)j->ldv, 0.0f, j->o + r0 * j->ldo + col,
                (int)j->ldo);
}

/* Task t enumerates (segment, head, query block) with the block fastest, so consecutive
 * tasks reuse one head's K and V from cache. */
static void att_body(void *ctx, int64_t t0, int64_t t1, int worker) {
    const att_job *j = ctx;
    float *sc = j->scratch + (int64_t)worker * j->slab;
    for (int64_t t = t0; t < t1; t++) {
        int64_t r = t;
        int s = 0;
        for (; s < j->n_seg; s++) {
            int64_t cnt = seg_blocks(j, s) * j->heads;
            if (r < cnt) break;
            r -= cnt;
        }
        int64_t nb = seg_blocks(j, s);
        int h = (int)(r / nb);
        int64_t r0 = j->cu[s] + (r % nb) * ATT_QB;
        int64_t r1 = r0 + ATT_QB < j->cu[s + 1] ? r0 + ATT_QB : j->cu[s + 1];
        att_block(j, s, h, r0, r1, sc);
    }
}

void fm_k_attention(float *o, int64_t ldo, const float *q, int64_t ldq, const float *k, int64_t ldk,
                    const float *v, int64_t ldv, const int32_t *cu, int n_seg, int heads,
                    int head_dim, float scale, float *scratch, fm_threadpool *pool) {
    att_job j = {o, ldo, q, k, v, ldq, ldk, ldv, cu, n_seg, heads, head_dim, scale, scratch, 0};
    int64_t max_seg = 1, tasks = 0;
    for (int s = 0; s < n_seg; s++) {
        int64_t len = cu[s + 1] - cu[s];
        if (len > max_seg) max_seg = len;
        tasks += seg_blocks(&j, s) * heads;
    }
    j.slab = (int64_t)(fm_k_attention_scratch_floats(max_seg, 1));
    fm_threadpool_for(pool, tasks, 1, att_body, &j);
}
