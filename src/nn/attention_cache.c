/* KV cache write and causal attention against the cache (decoder): a per-row path for decode
 * (the query heads of a GQA group against fixed chunks of the context by sgemm, chunks merged
 * by log-sum-exp) and a blocked path for prefill runs (query block x key block by sgemm,
 * online softmax, causal mask by position). bf16 caches are widened to f32 block by block. */
#include <cblas.h>
#include <math.h>
#include <string.h>

#include "nn/kernels.h"

/* A run of at least RUN_MIN rows of one slot at consecutive positions takes the blocked path. */
#define RUN_MIN 16
/* Blocked path: query rows per task and keys per block. */
#define QB 64
#define KB 256
/* Decode path: keys per chunk. Fixed (not derived from the thread count or the batch), so a
 * row's result depends only on its own query and cache. */
#define DCHUNK 256

static inline size_t cache_index(int64_t cap, int n_kv, int hd, int64_t s, int g, int64_t p) {
    return (((size_t)s * (size_t)n_kv + (size_t)g) * (size_t)cap + (size_t)p) * (size_t)hd;
}

/* ---- KV write ----------------------------------------------------------------------------- */

typedef struct kvw_job {
    unsigned char *kc, *vc; /* [slots][n_kv][cap][hd] of cdt */
    fm_dtype cdt;
    int64_t cap;
    int n_kv, hd;
    const int32_t *slot, *pos; /* [rows] */
    const float *k, *v;        /* [rows][ldk], [rows][ldv] */
    int64_t ldk, ldv;
} kvw_job;

static void kvw_body(void *ctx, int64_t r0, int64_t r1, int worker) {
    (void)worker;
    const kvw_job *j = ctx;
    size_t es = j->cdt == FM_DTYPE_F32 ? 4 : 2;
    for (int64_t r = r0; r < r1; r++)
        for (int g = 0; g < j->n_kv; g++) {
            size_t at = cache_index(j->cap, j->n_kv, j->hd, j->slot[r], g, j->pos[r]) * es;
            const float *ks = j->k + r * j->ldk + (int64_t)g * j->hd;
            const float *vs = j->v + r * j->ldv + (int64_t)g * j->hd;
            if (j->cdt == FM_DTYPE_F32) {
                memcpy(j->kc + at, ks, (size_t)j->hd * sizeof *ks);
                memcpy(j->vc + at, vs, (size_t)j->hd * sizeof *vs);
            } else {
                fm_f32_to_bf16((uint16_t *)(void *)(j->kc + at), ks, (uint64_t)j->hd);
                fm_f32_to_bf16((uint16_t *)(void *)(j->vc + at), vs, (uint64_t)j->hd);
            }
        }
}

void fm_k_kv_write(void *kc, void *vc, fm_dtype cdt, int64_t cap, int n_kv, int head_dim,
                   const int32_t *slot, const int32_t *pos, int64_t rows, const float *k,
                   int64_t ldk, const float *v, int64_t ldv, fm_threadpool *pool) {
    kvw_job j = {kc, vc, cdt, cap, n_kv, head_dim, slot, pos, k, v, ldk, ldv};
    int64_t per_row = 2 * (int64_t)n_kv * head_dim, grain = per_row > 0 ? 16384 / per_row + 1 : 1;
    fm_threadpool_for(pool, rows, grain, kvw_body, &j);
}

/* ---- plan: which rows take which path ----------------------------------------------------- */

/* The plan lives at the start of the scratch, as int64 values (memcpy in and out):
 *   [0] n_runs, [1] n_dec, [2] blocked tasks' query blocks, [3] decode chunks,
 *   then run_row[n_runs], run_len[n_runs], run_qb[n_runs + 1] (prefix of query blocks),
 *   dec_row[n_dec], dec_ch[n_dec + 1] (prefix of chunks).
 * It is sized for the worst case of its row count: 5 * rows + 6 values, each in two floats of
 * the (only float-aligned) scratch. */
static inline int64_t pget(const float *base, int64_t i) {
    int64_t x;
    memcpy(&x, base + 2 * i, sizeof x);
    return x;
}
static inline void pset(float *base, int64_t i, int64_t x) {
    memcpy(base + 2 * i, &x, sizeof x);
}

typedef struct plan_idx {
    int64_t n_runs, n_dec, n_qb, n_ch;
    int64_t run_row, run_len, run_qb, dec_row, dec_ch; /* offsets (in values) of the arrays */
} plan_idx;

static plan_idx plan_layout(int64_t n_runs, int64_t n_dec) {
    plan_idx p = {.n_runs = n_runs, .n_dec = n_dec};
    p.run_row = 4;
    p.run_len = p.run_row + n_runs;
    p.run_qb = p.run_len + n_runs;
    p.dec_row = p.run_qb + n_runs + 1;
    p.dec_ch = p.dec_row + n_dec;
    return p;
}
static int64_t plan_values(int64_t rows) {
    return 5 * rows + 6;
}

static int64_t run_length(const int32_t *slot, const int32_t *pos, int64_t rows, int64_t r) {
    int64_t e = r + 1;
    while (e < rows && slot[e] == slot[r] && pos[e] == pos[e - 1] + 1)
        e++;
    return e - r;
}

/* Counts runs and decode rows (pass 1), then fills the plan (pass 2, when base != NULL).
 * Returns the number of decode chunks. */
static int64_t make_plan(float *base, const int32_t *slot, const int32_t *pos, int64_t rows,
                         plan_idx *out) {
    int64_t n_runs = 0, n_dec = 0;
    for (int64_t r = 0; r < rows;) {
        int64_t len = run_length(slot, pos, rows, r);
        if (len >= RUN_MIN)
            n_runs++;
        else
            n_dec += len;
        r += len;
    }
    plan_idx p = plan_layout(n_runs, n_dec);
    int64_t ir = 0, id = 0, qb = 0, ch = 0;
    for (int64_t r = 0; r < rows;) {
        int64_t len = run_length(slot, pos, rows, r);
        if (len >= RUN_MIN) {
            if (base)
                pset(base, p.run_row + ir, r), pset(base, p.run_len + ir, len),
                    pset(base, p.run_qb + ir, qb);
            qb += (len + QB - 1) / QB, ir++;
        } else {
            for (int64_t i = r; i < r + len; i++, id++) {
                if (base) pset(base, p.dec_row + id, i), pset(base, p.dec_ch + id, ch);
                ch += ((int64_t)pos[i] + DCHUNK) / DCHUNK; /* ceil((pos + 1) / DCHUNK) */
            }
        }
        r += len;
    }
    if (base) pset(base, p.run_qb + n_runs, qb), pset(base, p.dec_ch + n_dec, ch);
    p.n_qb = qb, p.n_ch = ch;
    *out = p;
    return ch;
}

/* Largest i with arr[i] <= x in a non-decreasing prefix array of n + 1 values (arr[0] <= x). */
static int64_t find_prefix(const float *base, int64_t off, int64_t n, int64_t x) {
    int64_t lo = 0, hi = n; /* arr[lo] <= x < arr[hi] (arr[n] is the total, > x) */
    while (hi - lo > 1) {
        int64_t mid = (lo + hi) / 2;
        if (pget(base, off + mid) <= x)
            lo = mid;
        else
            hi = mid;
    }
    return lo;
}

/* ---- shared job --------------------------------------------------------------------------- */

typedef struct ac_job {
    float *o;
    int64_t ldo;
    const float *q;
    int64_t ldq;
    const unsigned char *kc, *vc;
    fm_dtype cdt;
    int64_t cap;
    int n_kv, n_heads, rep, hd;
    const int32_t *slot, *pos;
    float scale;
    float *planv; /* the plan (scratch start) */
    plan_idx p;
    float *partials; /* [n_ch][n_heads][hd + 2]: m, l, o (decode chunks) */
    float *slabs;    /* [threads][slab] */
    int64_t slab;
} ac_job;

static int64_t slab_floats(int rep, int hd) {
    int64_t dec = 2 * (int64_t)DCHUNK * hd + (int64_t)rep * DCHUNK;
    int64_t blk =
        2 * (int64_t)KB * hd + (int64_t)QB * KB + (int64_t)rep * QB * hd + 2 * (int64_t)rep * QB;
    return (dec > blk ? dec : blk) + 16;
}

/* ---- decode path -------------------------------------------------------------------------- */

/* The f32 rows [k0, k0 + n) of one (slot, group) of a cache: the cache itself for F32, else
 * converted into buf. */
static const float *f32_rows(const ac_job *j, const unsigned char *cache, int64_t s, int g,
                             int64_t k0, int64_t n, float *buf) {
    size_t at = cache_index(j->cap, j->n_kv, j->hd, s, g, k0);
    if (j->cdt == FM_DTYPE_F32) return (const float *)(const void *)(cache + 4 * at);
    fm_bf16_to_f32(buf, (const uint16_t *)(const void *)(cache + 2 * at), (uint64_t)(n * j->hd));
    return buf;
}

/* Decode chunk c of row r, KV group g: keys [k0, k1). The group's query heads are contiguous
 * in the row, so they form the rows of one small sgemm against the chunk's keys (each K and V
 * row read once for all of them); writes (m, l, unnormalised o) per head to the chunk's
 * partials. Worker scratch: K and V rows [DCHUNK][hd] (bf16 caches), scores [rep][DCHUNK]. */
static void decode_chunk(const ac_job *j, int64_t r, int64_t chunk_id, int64_t c, int g,
                         float *ws) {
    int hd = j->hd, rep = j->rep;
    int64_t k0 = c * DCHUNK, k1 = (int64_t)j->pos[r] + 1;
    k1 = k1 < k0 + DCHUNK ? k1 : k0 + DCHUNK;
    int64_t n = k1 - k0;
    float *kbuf = ws, *vbuf = kbuf + (int64_t)DCHUNK * hd, *s = vbuf + (int64_t)DCHUNK * hd;
    const float *kb = f32_rows(j, j->kc, j->slot[r], g, k0, n, kbuf);
    const float *vb = f32_rows(j, j->vc, j->slot[r], g, k0, n, vbuf);
    float *part = j->partials + (chunk_id * j->n_heads + (int64_t)g * rep) * (hd + 2);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rep, (int)n, hd, j->scale,
                j->q + r * j->ldq + (int64_t)g * rep * hd, hd, kb, hd, 0.0f, s, DCHUNK);
    for (int h = 0; h < rep; h++) {
        float *sh = s + (int64_t)h * DCHUNK, *ph = part + (int64_t)h * (hd + 2);
        ph[0] = fm_k_vmax(sh, n);
        ph[1] = fm_k_exp_row(sh, n, ph[0]);
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rep, hd, (int)n, 1.0f, s, DCHUNK, vb, hd,
                0.0f, part + 2, hd + 2);
}

/* Merges the chunks of decode row d for head h into the output, in chunk order:
 * M = max m_c, o = Σ e^(m_c - M) o_c / Σ e^(m_c - M) l_c. */
static void decode_combine(const ac_job *j, int64_t d, int h) {
    int hd = j->hd;
    int64_t r = pget(j->planv, j->p.dec_row + d), c0 = pget(j->planv, j->p.dec_ch + d);
    int64_t nc = pget(j->planv, j->p.dec_ch + d + 1) - c0, stride = (int64_t)j->n_heads * (hd + 2);
    const float *part = j->partials + (c0 * j->n_heads + h) * (int64_t)(hd + 2);
    float *o = j->o + r * j->ldo + (int64_t)h * hd;
    float m = part[0], l = 0.0f;
    for (int64_t c = 1; c < nc; c++)
        m = part[c * stride] > m ? part[c * stride] : m;
    for (int i = 0; i < hd; i++)
        o[i] = 0.0f;
    for (int64_t c = 0; c < nc; c++) {
        const float *pc = part + c * stride;
        float w = fm_expf_poly(pc[0] - m);
        l += w * pc[1];
        for (int i = 0; i < hd; i++)
            o[i] += w * pc[2 + i];
    }
    float inv = 1.0f / l;
    for (int i = 0; i < hd; i++)
        o[i] *= inv;
}

/* ---- blocked path (prefill runs) ---------------------------------------------------------- */

/* Online-softmax update of query row i (position pi) of one head for the key block at kb0 of
 * kn keys: scores srow become probabilities (0 past the row's own position), the running max m
 * and sum l advance, the accumulated output oi is rescaled. */
static void online_row(float *srow, int64_t kn, int64_t kb0, int64_t pi, float *m, float *l,
                       float *oi, int hd) {
    int64_t valid = pi - kb0 + 1 < kn ? pi - kb0 + 1 : kn;
    if (valid <= 0) {
        memset(srow, 0, (size_t)kn * sizeof *srow);
        return;
    }
    float mx = fm_k_vmax(srow, valid), m_new = mx > *m ? mx : *m;
    float alpha = *m == -INFINITY ? 0.0f : fm_expf_poly(*m - m_new);
    float sum = fm_k_exp_row(srow, valid, m_new);
    memset(srow + valid, 0, (size_t)(kn - valid) * sizeof *srow);
    *l = *l * alpha + sum;
    *m = m_new;
    if (alpha != 1.0f)
        for (int d = 0; d < hd; d++)
            oi[d] *= alpha;
}

/* Query block qbg of the runs, KV group g. Worker scratch: K and V blocks [KB][hd] (bf16
 * caches), scores [QB][KB], per head of the group the output accumulator [QB][hd], max and
 * sum [QB]. */
static void blocked_task(const ac_job *j, int64_t qbg, int g, float *ws) {
    int hd = j->hd, rep = j->rep;
    int64_t ri = find_prefix(j->planv, j->p.run_qb, j->p.n_runs, qbg);
    int64_t start = pget(j->planv, j->p.run_row + ri), len = pget(j->planv, j->p.run_len + ri);
    int64_t i0 = start + (qbg - pget(j->planv, j->p.run_qb + ri)) * QB;
    int64_t nq = start + len - i0 < QB ? start + len - i0 : QB;
    int64_t p0 = j->pos[i0], p_last = j->pos[i0 + nq - 1], s = j->slot[i0];
    float *kbuf = ws, *vbuf = kbuf + (int64_t)KB * hd, *sc = vbuf + (int64_t)KB * hd;
    float *acc = sc + (int64_t)QB * KB, *m = acc + (int64_t)rep * QB * hd,
          *l = m + (int64_t)rep * QB;
    memset(acc, 0, (size_t)rep * QB * hd * sizeof *acc);
    for (int64_t i = 0; i < (int64_t)rep * QB; i++)
        m[i] = -INFINITY, l[i] = 0.0f;
    for (int64_t kb0 = 0; kb0 <= p_last; kb0 += KB) {
        int64_t kn = p_last + 1 - kb0 < KB ? p_last + 1 - kb0 : KB;
        const float *kb = f32_rows(j, j->kc, s, g, kb0, kn, kbuf),
                    *vb = f32_rows(j, j->vc, s, g, kb0, kn, vbuf);
        for (int h = 0; h < rep; h++) {
            int hq = g * rep + h;
            float *ah = acc + (int64_t)h * QB * hd;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)nq, (int)kn, hd, j->scale,
                        j->q + i0 * j->ldq + (int64_t)hq * hd, (int)j->ldq, kb, hd, 0.0f, sc, KB);
            for (int64_t i = 0; i < nq; i++)
                online_row(sc + i * KB, kn, kb0, p0 + i, m + h * QB + i, l + h * QB + i,
                           ah + i * hd, hd);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)nq, hd, (int)kn, 1.0f, sc,
                        KB, vb, hd, 1.0f, ah, hd);
        }
    }
    for (int h = 0; h < rep; h++)
        for (int64_t i = 0; i < nq; i++) {
            const float *ai = acc + ((int64_t)h * QB + i) * hd;
            float *oi = j->o + (i0 + i) * j->ldo + (int64_t)(g * rep + h) * hd,
                  inv = 1.0f / l[h * QB + i];
            for (int d = 0; d < hd; d++)
                oi[d] = ai[d] * inv;
        }
}

/* ---- entry points ------------------------------------------------------------------------- */

static int64_t round16(int64_t n) {
    return (n + 15) / 16 * 16;
}

/* Scratch layout: [plan][partials][threads slabs], each part 64-byte aligned. */
static int64_t partials_at(int64_t rows) {
    return round16(2 * plan_values(rows));
}
static int64_t slabs_at(int64_t rows, int64_t n_ch, int n_heads, int hd) {
    return partials_at(rows) + round16(n_ch * n_heads * (int64_t)(hd + 2));
}

size_t fm_k_attention_cache_scratch_floats(const int32_t *slot, const int32_t *pos, int64_t rows,
                                           int n_heads, int n_kv, int head_dim, int threads) {
    if (rows <= 0) return 0;
    if (threads < 1) threads = 1;
    plan_idx p;
    int64_t n_ch = make_plan(NULL, slot, pos, rows, &p);
    return (size_t)(slabs_at(rows, n_ch, n_heads, head_dim) +
                    (int64_t)threads * round16(slab_floats(n_heads / n_kv, head_dim)));
}

static void phase1_body(void *ctx, int64_t t0, int64_t t1, int worker) {
    const ac_job *j = ctx;
    float *ws = j->slabs + (int64_t)worker * j->slab;
    for (int64_t t = t0; t < t1; t++) {
        int64_t u = t / j->n_kv;
        int g = (int)(t % j->n_kv);
        if (u < j->p.n_qb) {
            blocked_task(j, u, g, ws);
        } else {
            int64_t cg = u - j->p.n_qb, d = find_prefix(j->planv, j->p.dec_ch, j->p.n_dec, cg);
            int64_t r = pget(j->planv, j->p.dec_row + d);
            decode_chunk(j, r, cg, cg - pget(j->planv, j->p.dec_ch + d), g, ws);
        }
    }
}

static void phase2_body(void *ctx, int64_t t0, int64_t t1, int worker) {
    (void)worker;
    const ac_job *j = ctx;
    for (int64_t t = t0; t < t1; t++)
        decode_combine(j, t / j->n_heads, (int)(t % j->n_heads));
}

void fm_k_attention_cache(float *o, int64_t ldo, const float *q, int64_t ldq, const void *kc,
                          const void *vc, fm_dtype cdt, int64_t cap, int n_kv, const int32_t *slot,
                          const int32_t *pos, int64_t rows, int n_heads, int head_dim, float scale,
                          float *scratch, fm_threadpool *pool) {
    if (rows <= 0) return;
    ac_job j = {.o = o,
                .ldo = ldo,
                .q = q,
                .ldq = ldq,
                .kc = kc,
                .vc = vc,
                .cdt = cdt,
                .cap = cap,
                .n_kv = n_kv,
                .n_heads = n_heads,
                .rep = n_heads / n_kv,
                .hd = head_dim,
                .slot = slot,
                .pos = pos,
                .scale = scale,
                .planv = scratch};
    int64_t n_ch = make_plan(scratch, slot, pos, rows, &j.p);
    j.partials = scratch + partials_at(rows);
    j.slabs = scratch + slabs_at(rows, n_ch, n_heads, head_dim);
    j.slab = round16(slab_floats(j.rep, head_dim));
    fm_threadpool_for(pool, (j.p.n_qb + n_ch) * n_kv, 1, phase1_body, &j);
    fm_threadpool_for(pool, j.p.n_dec * n_heads, 8, phase2_body, &j);
}
