/* Linear over weights kept in their stored dtype (F32, BF16, F16, as mapped from the
 * checkpoint): a multi-row GEMV that widens 16-bit weights in registers and streams W once for
 * all rows (decode), or f32 weight panels converted into per-thread scratch and multiplied by
 * cblas_sgemm (prefill, where the conversion is amortised over many rows). */
#include <cblas.h>
#include <string.h>

#include "nn/kernels.h"
#include "nn/vec.h"

/* Rows at or below which the GEMV path runs. Measured at 2B shapes: per row, the GEMV at 8 rows
 * is still faster than the converted-panel sgemm at 9 to 16 rows (whose panel conversion is a
 * fixed cost per call); with 16 output rows or more the sgemm path wins. */
#define GEMV_MAX_M FM_K_GEMV_MAX_M
/* Weight rows per GEMV task (contiguous: one sequential stream per task). */
#define GEMV_RB 64
/* Largest f32 panel converted per thread, in floats (8 MB), and the panel width bounds. */
#define PANEL_FLOATS (1 << 21)
#define PANEL_MIN 64
#define PANEL_MAX 256
/* Prefill row blocks: at most this many rows per sgemm call. */
#define GEMM_MB 256
/* Floats in front of each worker's panel: the id of the panel it holds (int64 via memcpy). */
#define PANEL_HDR 16
/* GEMV: rows per k-split pass, and the k elements per span (one row's x span: 16 KB). */
#define GEMV_SUB 16
#define GEMV_SPAN 4096
/* GEMV block: one vector of even and one of odd elements. */
#define BK (2 * FM_VW)
/* Separate accumulators for the even and odd lanes (two independent fma chains per row
 * instead of one chain of two) where the register file holds them: 32 vector registers with
 * AVX-512, 16 elsewhere. Fixed per build, so a row's result never depends on the group size. */
#define GEMV_SPLIT (FM_VW >= 16)
/* Two weight rows per pass for 2..4 x rows (2·MR·2 accumulators + 4 weight vectors fit the
 * register file with AVX-512; one x row keeps the single sequential weight stream, more than
 * four would spill). Numerically neutral: see gemv_span. */
#define GEMV_PAIRS(MR) ((MR) >= 2 && (MR) <= 4 && FM_VW >= 16)

typedef struct lw_job {
    float *y; /* [m][ldy] */
    int64_t ldy;
    const float *x; /* [m][ldx] */
    int64_t ldx;
    const float *xq;        /* GEMV: x packed by x_pack, [m * k] */
    const unsigned char *w; /* [n][k] elements of wdt, rows wrow bytes apart */
    size_t wrow;
    fm_dtype wdt;
    const float *b; /* [n] or NULL */
    int64_t m, n, k;
    int act;
    float *scratch;                     /* GEMM: [threads][PANEL_HDR + nb * k] */
    int64_t slab, mb, nb, n_row_blocks; /* GEMM tiling */
} lw_job;

/* ---- GEMV --------------------------------------------------------------------------------- */

/* One weight element, widened (tails and the reference order). */
static inline float w_elem(const unsigned char *w, int64_t i, int dt) {
    if (dt == FM_DTYPE_F32) {
        float f;
        memcpy(&f, w + 4 * i, 4);
        return f;
    }
    uint16_t h;
    memcpy(&h, w + 2 * i, 2);
    if (dt == FM_DTYPE_BF16) {
        uint32_t u = (uint32_t)h << 16;
        float f;
        memcpy(&f, &u, 4);
        return f;
    }
    fm_vf e = fm_v_f16_widen((fm_vu){0} + h);
    return e[0];
}

/* BK = 2·FM_VW weights from element i of row w, as the lanes matching the x pair layout:
 * 16-bit dtypes split into even/odd elements, f32 into the first and second FM_VW. */
static inline __attribute__((always_inline)) void w_pairs(const unsigned char *w, int64_t i, int dt,
                                                          fm_vf *e, fm_vf *o) {
    if (dt == FM_DTYPE_F32) {
        *e = fm_v_load(w + 4 * i);
        *o = fm_v_load(w + 4 * i + 4 * FM_VW);
    } else if (dt == FM_DTYPE_BF16) {
        fm_v_bf16_pairs(w + 2 * i, e, o);
    } else {
        fm_v_f16_pairs(w + 2 * i, e, o);
    }
}

/* The packed x of the GEMV: rows in groups of up to 8 (group g starts at g·8·k); inside a group
 * of mr rows, block i (every BK elements) holds row r's BK values at i·mr + r·BK, so one pointer
 * walks all rows of a block; the k % BK tail follows, row r's at mr·kb + r·(k - kb). For 16-bit
 * weights each block is in the pair layout (even elements, then odd), for f32 in order. */
static void x_pack(float *xq, const float *x, int64_t ldx, int64_t m, int64_t k, int pairs) {
    int64_t kb = k / BK * BK, kt = k - kb;
    for (int64_t r0 = 0; r0 < m; r0 += 8) {
        int mr = m - r0 < 8 ? (int)(m - r0) : 8;
        float *g = xq + r0 * k;
        for (int r = 0; r < mr; r++) {
            const float *xr = x + (r0 + r) * ldx;
            for (int64_t i = 0; i < kb; i += BK) {
                float *d = g + i * mr + r * BK;
                if (pairs)
                    fm_v_to_pairs(d, xr + i);
                else
                    memcpy(d, xr + i, BK * sizeof *d);
            }
            memcpy(g + mr * kb + r * kt, xr + kb, (size_t)kt * sizeof *g);
        }
    }
}

/* Accumulates the BK-blocks [i0, i1) of NW (1 or 2) weight rows into the MR rows of one packed
 * group: every block is, per weight row and x row, one lane-wise fma into the even-lane
 * accumulator and one into the odd-lane accumulator. The accumulators start at zero (i0 == 0)
 * or come from st[c] ([MR][2] vectors per weight row) and go back there, so splitting k into
 * spans changes no bit of the result, and neither does NW: each output element is accumulated
 * in the same order whichever rows share the loop. One weight row at a time keeps the weight
 * stream strictly sequential (rows are contiguous): several rows side by side measured 2-3x
 * slower from DRAM at one x row, their k-long streams too short for the hardware prefetchers
 * (software prefetch in this stream measured no gain). With several x rows the packed x (MR
 * times the weight bytes per block) is the larger stream and comes from L2 once the span
 * outgrows L1; two weight rows per pass halve those reads (docs/decisions.md). */
static inline __attribute__((always_inline)) void
gemv_span(float *st0, float *st1, const float *xq, const unsigned char *w0, const unsigned char *w1,
          int64_t i0, int64_t i1, const int MR, const int NW, const int dt) {
    fm_vf acc[2][8], acc_o[2][8];
    float *st[2] = {st0, st1};
#pragma GCC unroll 2
    for (int c = 0; c < NW; c++)
#pragma GCC unroll 8
        for (int r = 0; r < MR; r++) {
            acc[c][r] = i0 ? fm_v_load(st[c] + (2 * r) * FM_VW) : fm_v_zero();
            acc_o[c][r] = i0 ? fm_v_load(st[c] + (2 * r + 1) * FM_VW) : fm_v_zero();
        }
    const float *xb = xq + i0 * MR;
    for (int64_t i = i0; i < i1; i += BK, xb += MR * BK) {
        fm_vf we[2], wo[2];
        w_pairs(w0, i, dt, &we[0], &wo[0]);
        if (NW > 1) w_pairs(w1, i, dt, &we[1], &wo[1]);
        if (MR > 1) {
            FM_V_REG(we[0]);
            FM_V_REG(wo[0]);
            if (NW > 1) {
                FM_V_REG(we[1]);
                FM_V_REG(wo[1]);
            }
        }
#pragma GCC unroll 8
        for (int r = 0; r < MR; r++) {
            fm_vf xe = fm_v_load(xb + r * BK), xo = fm_v_load(xb + r * BK + FM_VW);
            if (NW > 1) {
                FM_V_REG(xe);
                FM_V_REG(xo);
            }
#pragma GCC unroll 2
            for (int c = 0; c < NW; c++) {
                acc[c][r] = fm_v_fma(acc[c][r], we[c], xe);
                if (GEMV_SPLIT)
                    acc_o[c][r] = fm_v_fma(acc_o[c][r], wo[c], xo);
                else
                    acc[c][r] = fm_v_fma(acc[c][r], wo[c], xo);
            }
        }
    }
#pragma GCC unroll 2
    for (int c = 0; c < NW; c++)
#pragma GCC unroll 8
        for (int r = 0; r < MR; r++) {
            fm_v_store(st[c] + (2 * r) * FM_VW, acc[c][r]);
            fm_v_store(st[c] + (2 * r + 1) * FM_VW, acc_o[c][r]);
        }
}

/* y[r] = fixed pairwise lane sum of row r's accumulators (zero when k < BK), then the k % BK
 * tail in order, then + b. */
static inline __attribute__((always_inline)) void
gemv_finish(float *y, int64_t ldy, const float *st, const float *xq, const unsigned char *w,
            const float *b, int64_t k, const int MR, const int dt) {
    int64_t kb = k / BK * BK, kt = k - kb;
    const float *xt = xq + MR * kb;
    for (int r = 0; r < MR; r++) {
        fm_vf e = kb ? fm_v_load(st + (2 * r) * FM_VW) : fm_v_zero();
        fm_vf o = kb ? fm_v_load(st + (2 * r + 1) * FM_VW) : fm_v_zero();
        float s = fm_v_sum(GEMV_SPLIT ? e + o : e);
        for (int64_t i = 0; i < kt; i++)
            s += xt[r * kt + i] * w_elem(w, kb + i, dt);
        y[r * ldy] = b ? s + *b : s;
    }
}

/* Weight rows [j0, j1) against the MR rows of the group at r0, GEMV_SUB rows at a time; within
 * them k goes in spans of GEMV_SPAN, so that with one x row its span stays in L1 while the
 * rows pass over it (unsplit, cache-resident k = 8960 rows measured 35% slower: x re-read
 * from L2 for every row). Spans are not shortened for more rows: shorter weight runs measured
 * slower from DRAM, which is where decode reads them. */
static inline __attribute__((always_inline)) void
gemv_rows(const lw_job *j, int64_t r0, int64_t j0, int64_t j1, const int MR, const int dt) {
    float st[GEMV_SUB][2 * 8 * FM_VW];
    float *y = j->y + r0 * j->ldy;
    const float *xq = j->xq + r0 * j->k;
    int64_t kb = j->k / BK * BK, span = GEMV_SPAN / BK * BK;
    for (int64_t c0 = j0; c0 < j1; c0 += GEMV_SUB) {
        int64_t c1 = c0 + GEMV_SUB < j1 ? c0 + GEMV_SUB : j1;
        for (int64_t i0 = 0; i0 < kb; i0 += span) {
            int64_t i1 = i0 + span < kb ? i0 + span : kb, c = c0;
            for (; GEMV_PAIRS(MR) && c + 1 < c1; c += 2)
                gemv_span(st[c - c0], st[c + 1 - c0], xq, j->w + c * j->wrow,
                          j->w + (c + 1) * j->wrow, i0, i1, MR, 2, dt);
            for (; c < c1; c++)
                gemv_span(st[c - c0], NULL, xq, j->w + c * j->wrow, NULL, i0, i1, MR, 1, dt);
        }
        for (int64_t c = c0; c < c1; c++)
            gemv_finish(y + c, j->ldy, st[c - c0], xq, j->w + c * j->wrow, j->b ? j->b + c : NULL,
                        j->k, MR, dt);
    }
}

#define GEMV_DT(MR)                                                                                \
    case MR:                                                                                       \
        if (j->wdt == FM_DTYPE_BF16)                                                               \
            gemv_rows(j, r0, j0, j1, MR, FM_DTYPE_BF16);                                           \
        else if (j->wdt == FM_DTYPE_F16)                                                           \
            gemv_rows(j, r0, j0, j1, MR, FM_DTYPE_F16);                                            \
        else                                                                                       \
            gemv_rows(j, r0, j0, j1, MR, FM_DTYPE_F32);                                            \
        break;

static void gemv_group(const lw_job *j, int64_t r0, int mr, int64_t j0, int64_t j1) {
    switch (mr) {
        GEMV_DT(1)
        GEMV_DT(2)
        GEMV_DT(3)
        GEMV_DT(4)
        GEMV_DT(5)
        GEMV_DT(6)
        GEMV_DT(7)
        GEMV_DT(8)
    default:
        break;
    }
}
#undef GEMV_DT

static void gemv_body(void *ctx, int64_t t0, int64_t t1, int worker) {
    (void)worker;
    const lw_job *j = ctx;
    for (int64_t t = t0; t < t1; t++) {
        int64_t j0 = t * GEMV_RB, j1 = j0 + GEMV_RB < j->n ? j0 + GEMV_RB : j->n;
        for (int64_t r0 = 0; r0 < j->m; r0 += 8) {
            int mr = j->m - r0 < 8 ? (int)(j->m - r0) : 8;
            gemv_group(j, r0, mr, j0, j1);
            if (j->act >= 0)
                for (int r = 0; r < mr; r++) {
                    float *yr = j->y + (r0 + r) * j->ldy + j0;
                    fm_k_act(yr, yr, j1 - j0, (fm_activation)j->act, NULL);
                }
        }
    }
}

/* ---- GEMM over converted panels ----------------------------------------------------------- */

/* Panel width: as wide as PANEL_MAX while a panel fits PANEL_FLOATS, never below PANEL_MIN,
 * never wider than n. Depends on the shape only (not the thread count), so every output
 * element comes from the same sgemm call shape whichever thread runs it. */
static int64_t panel_cols(int64_t n, int64_t k) {
    int64_t nb = k > 0 ? PANEL_FLOATS / k / PANEL_MIN * PANEL_MIN : PANEL_MAX;
    if (nb > PANEL_MAX) nb = PANEL_MAX;
    if (nb < PANEL_MIN) nb = PANEL_MIN;
    return nb < n ? nb : n;
}

static int64_t row_block(int64_t m) {
    int64_t nrb = (m + GEMM_MB - 1) / GEMM_MB;
    int64_t mb = (m + nrb - 1) / nrb;
    return (mb + 15) / 16 * 16;
}

/* The f32 panel of weight rows [c0, c0 + cols): the weights themselves for F32, else the
 * worker's slab, converted unless the slab already holds this panel. */
static const float *panel_of(const lw_job *j, int64_t panel, int64_t c0, int64_t cols, int worker) {
    if (j->wdt == FM_DTYPE_F32) return (const float *)(const void *)(j->w + c0 * j->wrow);
    float *slab = j->scratch + (int64_t)worker * j->slab, *wp = slab + PANEL_HDR;
    int64_t held;
    memcpy(&held, slab, sizeof held);
    if (held != panel) {
        for (int64_t c = 0; c < cols; c++) {
            const void *src = j->w + (c0 + c) * j->wrow;
            if (j->wdt == FM_DTYPE_BF16)
                fm_bf16_to_f32(wp + c * j->k, src, (uint64_t)j->k);
            else
                fm_f16_to_f32(wp + c * j->k, src, (uint64_t)j->k);
        }
        memcpy(slab, &panel, sizeof panel);
    }
    return wp;
}

/* Task t = (panel, row block), row block fastest: consecutive tasks of one worker reuse its
 * converted panel. Bias rows first, sgemm accumulating onto them, activation while hot. */
static void gemm_body(void *ctx, int64_t t0, int64_t t1, int worker) {
    const lw_job *j = ctx;
    for (int64_t t = t0; t < t1; t++) {
        int64_t panel = t / j->n_row_blocks, r0 = (t % j->n_row_blocks) * j->mb;
        int64_t c0 = panel * j->nb, cols = j->n - c0 < j->nb ? j->n - c0 : j->nb;
        int64_t rows = j->m - r0 < j->mb ? j->m - r0 : j->mb;
        const float *wp = panel_of(j, panel, c0, cols, worker);
        float *y = j->y + r0 * j->ldy + c0;
        for (int64_t r = 0; r < rows; r++) {
            if (j->b)
                memcpy(y + r * j->ldy, j->b + c0, (size_t)cols * sizeof *y);
            else
                memset(y + r * j->ldy, 0, (size_t)cols * sizeof *y);
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, (int)cols, (int)j->k, 1.0f,
                    j->x + r0 * j->ldx, (int)j->ldx, wp, (int)j->k, 1.0f, y, (int)j->ldy);
        if (j->act >= 0)
            for (int64_t r = 0; r < rows; r++)
                fm_k_act(y + r * j->ldy, y + r * j->ldy, cols, (fm_activation)j->act, NULL);
    }
}

/* ---- entry points ------------------------------------------------------------------------- */

size_t fm_k_linear_w_scratch_floats(int64_t m, int64_t n, int64_t k, int threads) {
    if (m <= 0 || n <= 0 || k <= 0) return 0;
    if (m <= GEMV_MAX_M) return (size_t)(m * k);
    if (threads < 1) threads = 1;
    return (size_t)threads * (size_t)(PANEL_HDR + panel_cols(n, k) * k);
}

static void linear_w_empty_k(float *y, int64_t ldy, const float *b, int64_t m, int64_t n, int act) {
    for (int64_t r = 0; r < m; r++) {
        if (b)
            memcpy(y + r * ldy, b, (size_t)n * sizeof *y);
        else
            memset(y + r * ldy, 0, (size_t)n * sizeof *y);
        if (act >= 0) fm_k_act(y + r * ldy, y + r * ldy, n, (fm_activation)act, NULL);
    }
}

void fm_k_linear_w(float *y, int64_t ldy, const float *x, int64_t ldx, const void *w, fm_dtype wdt,
                   const float *b, int64_t m, int64_t n, int64_t k, int act, float *scratch,
                   fm_threadpool *pool) {
    if (m <= 0 || n <= 0) return;
    if (k <= 0) {
        linear_w_empty_k(y, ldy, b, m, n, act);
        return;
    }
    lw_job j = {.y = y,
                .ldy = ldy,
                .x = x,
                .ldx = ldx,
                .w = w,
                .wdt = wdt,
                .b = b,
                .m = m,
                .n = n,
                .k = k,
                .act = act,
                .scratch = scratch};
    j.wrow = (size_t)k * (wdt == FM_DTYPE_F32 ? 4 : 2);
    if (m <= GEMV_MAX_M) {
        x_pack(scratch, x, ldx, m, k, wdt != FM_DTYPE_F32);
        j.xq = scratch;
        fm_threadpool_for(pool, (n + GEMV_RB - 1) / GEMV_RB, 1, gemv_body, &j);
        return;
    }
    j.nb = panel_cols(n, k);
    j.mb = row_block(m);
    j.n_row_blocks = (m + j.mb - 1) / j.mb;
    j.slab = PANEL_HDR + j.nb * k;
    if (wdt != FM_DTYPE_F32)
        for (int t = 0; t < fm_threadpool_threads(pool); t++) {
            int64_t none = -1;
            memcpy(scratch + (int64_t)t * j.slab, &none, sizeof none);
        }
    int64_t panels = (n + j.nb - 1) / j.nb;
    fm_threadpool_for(pool, panels * j.n_row_blocks, 1, gemm_body, &j);
}
