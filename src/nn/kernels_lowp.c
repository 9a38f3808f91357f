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
/* Weight rows per GEMV task (contiguous). */
#define GEMV_RB 64
/* Largest f32 panel converted per thread, in floats (8 MB), and the panel width bounds. */
#define PANEL_FLOATS (1 << 21)
#define PANEL_MIN 64
#define PANEL_MAX 256
/* Prefill row blocks: at most this many rows per sgemm call. */
#define GEMM_MB 256
/* Floats in front of each worker's panel: the id of the panel it holds (int64 via memcpy). */
#define PANEL_HDR 16
/* GEMV block: one vector of even and one of odd elements. */
#define BK (2 * FM_VW)
/* Separate accumulators for the even and odd lanes (two independent fma chains per row
 * instead of one chain of two) where the register file holds them: 32 vector registers with
 * AVX-512, 16 elsewhere. Fixed per build, so a row's result never depends on the group size. */
#define GEMV_SPLIT (FM_VW >= 16)
/* x rows per packed group (one pass's accumulators: GEMV_NW weight rows x 4 x rows x 2 with
 * AVX-512, plus 2·GEMV_NW weight and 2 x vectors, fit 32 registers; 8 x rows per pass spilled
 * and read x twice per fma). Calls with more rows run their groups over each pass's weights
 * while those are in L1. */
#define GEMV_GROUP 4
/* Weight rows per pass: one with one x row (the sequential stream), else two, so that each
 * packed x vector loaded feeds two fmas (measured against three and four rows at 2..3 x rows:
 * no faster, up to 10% slower from memory). */
#define GEMV_NW(MR) ((MR) > 1 ? 2 : 1)
/* Rows per chunk: the accumulators of GEMV_SUB weight rows stay in scratch across the spans. */
#define GEMV_SUB 16
/* Spans of k: whole rows while the packed x of all rows and the weights of one pass take at most
 * GEMV_L1ROW bytes, else equal spans that take at most GEMV_L1SPAN (a 32 KB L1 with room for the
 * weight stream; measured at 2B shapes, see gemv_span_len). */
#define GEMV_L1ROW (30 << 10)
#define GEMV_L1SPAN (20 << 10)
/* Software prefetch of the weights GEMV_PFD passes ahead, into L2 (locality 2: prefetcht1 on
 * x86; into L1 measured 40-60% slower at 4 rows). */
#define GEMV_PF_LOCALITY 2
#define GEMV_PFD 2

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

/* Why the GEMV is laid out as it is (Zen 4, 2 threads, measured at the 2B decoder shapes with
 * the weights coming from DRAM, as in decode; docs/decisions.md "Decoder kernels" has figures):
 *  - Several x rows are bound by the multiply as much as by memory: at 4 rows a 64-byte block
 *    of bf16 weights takes 8 zmm fmas, so at one fma a cycle a core consumes weights only about
 *    1.5x as fast as its half of a 32 GB/s memory delivers them. Batched decode pays off only if
 *    the weight stream keeps flowing while the core multiplies: left to the hardware
 *    prefetchers it did not (4 rows took about the memory time plus the compute time, 2-2.3x
 *    one row). Each pass therefore prefetches, into L2, the weights of the pass GEMV_PFD passes
 *    ahead in the walk order (gemv_walk), which brought 4 rows to 1.1-1.4x one row.
 *  - One x row over whole rows is the plain sequential stream, without software prefetch: the
 *    hardware prefetchers keep up there, and prefetching measured 5-10% slower. Rows split into
 *    k-spans are no longer one stream: there the prefetch made one row 30% faster (down_proj).
 *  - Two weight rows per pass from 2 x rows: each packed x vector loaded feeds two fmas, and the
 *    packed x of the span stays in L1 (GEMV_L1ROW). More than 4 x rows run as groups of 4 over
 *    each pass's weights while those are in L1 (8 rows: 1.7-2x one row, was 3.5x).
 *  - The pass loops live in one small function per dtype (gemv_seg_*, not inlined into the
 *    walk): inlined into the walk, gcc ran out of general registers in them and the in-cache
 *    speed at 2-4 rows dropped by 15-25%. */

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

/* The packed x of the GEMV: rows in groups of up to GEMV_GROUP (group g starts at
 * g·GEMV_GROUP·k); inside a group of mr rows, block i (every BK elements) holds row r's BK
 * values at i·mr + r·BK, so one pointer walks all rows of a block; the k % BK tail follows, row
 * r's at mr·kb + r·(k - kb). For 16-bit weights each block is in the pair layout (even
 * elements, then odd), for f32 in order. */
static void x_pack(float *xq, const float *x, int64_t ldx, int64_t m, int64_t k, int pairs) {
    int64_t kb = k / BK * BK, kt = k - kb;
    for (int64_t r0 = 0; r0 < m; r0 += GEMV_GROUP) {
        int mr = m - r0 < GEMV_GROUP ? (int)(m - r0) : GEMV_GROUP;
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

/* One pass: nw weight rows (wrow bytes apart) over the BK-blocks [i0, i1) against the rows of
 * one packed group, prefetching pf[c] (weight row c of a later pass, at the same offset from
 * its start) over its first pfn elements. */
typedef struct gemv_seg {
    float *st;   /* accumulators of the first weight row ([mr][2] vectors); the next ... */
    int64_t sts; /* ... weight row's are sts floats further */
    const float *xq;
    const unsigned char *w;
    size_t wrow;
    const unsigned char *pf[2];
    int64_t pfn, i0, i1;
} gemv_seg;

/* Every block is, per weight row and x row, one lane-wise fma into the even-lane accumulator
 * and one into the odd-lane accumulator. The accumulators start at zero (i0 == 0) or come from
 * st and go back there, so splitting k into spans changes no bit of the result, and neither do
 * NW, MR or the x group: each output element is accumulated in the same order whichever rows
 * share the pass. PF: whether to prefetch. */
static inline __attribute__((always_inline)) void
gemv_span(const gemv_seg *s, const int MR, const int NW, const int dt, const int PF) {
    const int es = dt == FM_DTYPE_F32 ? 4 : 2;
    fm_vf acc[2][GEMV_GROUP], acc_o[2][GEMV_GROUP];
    int64_t i0 = s->i0, i1 = s->i1;
#pragma GCC unroll 2
    for (int c = 0; c < NW; c++)
#pragma GCC unroll 4
        for (int r = 0; r < MR; r++) {
            const float *p = s->st + c * s->sts + 2 * r * FM_VW;
            acc[c][r] = i0 ? fm_v_load(p) : fm_v_zero();
            acc_o[c][r] = i0 ? fm_v_load(p + FM_VW) : fm_v_zero();
        }
    const float *xb = s->xq + i0 * MR;
    for (int64_t i = i0; i < i1; i += BK, xb += MR * BK) {
        fm_vf we[2], wo[2];
#pragma GCC unroll 2
        for (int c = 0; c < NW; c++) {
            w_pairs(s->w + c * s->wrow, i, dt, &we[c], &wo[c]);
            if (MR > 1) {
                FM_V_REG(we[c]);
                FM_V_REG(wo[c]);
            }
        }
        if (PF && i - i0 < s->pfn)
#pragma GCC unroll 2
            for (int c = 0; c < NW; c++)
                for (int l = 0; l < BK * es; l += 64)
                    __builtin_prefetch(s->pf[c] + (i - i0) * es + l, 0, GEMV_PF_LOCALITY);
#pragma GCC unroll 4
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
#pragma GCC unroll 4
        for (int r = 0; r < MR; r++) {
            float *p = s->st + c * s->sts + 2 * r * FM_VW;
            fm_v_store(p, acc[c][r]);
            fm_v_store(p + FM_VW, acc_o[c][r]);
        }
}

/* gemv_span for a runtime group size and weight-row count, one function per dtype, never
 * inlined into the walk (see the top of this section). */
#define SEG_CASE(MR, NW, DT)                                                                       \
    case (MR)*2 + (NW)-1:                                                                          \
        gemv_span(s, MR, NW, DT, 1);                                                               \
        break;
#define SEG_FN(NAME, DT)                                                                           \
    static __attribute__((noinline)) void NAME(const gemv_seg *s, int mr, int nw) {                \
        switch (mr * 2 + nw - 1) {                                                                 \
            SEG_CASE(1, 1, DT)                                                                     \
            SEG_CASE(1, 2, DT)                                                                     \
            SEG_CASE(2, 1, DT)                                                                     \
            SEG_CASE(2, 2, DT)                                                                     \
            SEG_CASE(3, 1, DT)                                                                     \
            SEG_CASE(3, 2, DT)                                                                     \
            SEG_CASE(4, 1, DT)                                                                     \
            SEG_CASE(4, 2, DT)                                                                     \
        default:                                                                                   \
            break;                                                                                 \
        }                                                                                          \
    }
SEG_FN(gemv_seg_f32, FM_DTYPE_F32)
SEG_FN(gemv_seg_bf16, FM_DTYPE_BF16)
SEG_FN(gemv_seg_f16, FM_DTYPE_F16)
#undef SEG_FN
#undef SEG_CASE

static void gemv_seg_run(const gemv_seg *s, int mr, int nw, fm_dtype dt) {
    if (dt == FM_DTYPE_BF16)
        gemv_seg_bf16(s, mr, nw);
    else if (dt == FM_DTYPE_F16)
        gemv_seg_f16(s, mr, nw);
    else
        gemv_seg_f32(s, mr, nw);
}

/* y[r] = fixed pairwise lane sum of row r's accumulators (zero when k < BK), then the k % BK
 * tail in order, then + b. */
static inline __attribute__((always_inline)) void
gemv_finish(float *y, int64_t ldy, const float *st, const float *xq, const unsigned char *w,
            const float *b, int64_t k, int mr, int dt) {
    int64_t kb = k / BK * BK, kt = k - kb;
    const float *xt = xq + mr * kb;
    for (int r = 0; r < mr; r++) {
        fm_vf e = kb ? fm_v_load(st + (2 * r) * FM_VW) : fm_v_zero();
        fm_vf o = kb ? fm_v_load(st + (2 * r + 1) * FM_VW) : fm_v_zero();
        float s = fm_v_sum(GEMV_SPLIT ? e + o : e);
        for (int64_t i = 0; i < kt; i++)
            s += xt[r * kt + i] * w_elem(w, kb + i, dt);
        y[r * ldy] = b ? s + *b : s;
    }
}

/* k elements per span (see GEMV_L1ROW): es bytes per weight. Whole rows are one sequential
 * stream per pass, which the split rows are not: at k = 1536, 4 x rows (24 KB of packed x) ran
 * 10% faster unsplit; at k = 8960 spans of 20 KB beat 24 and 30 KB by 5-10%, and f32 rows at
 * 4 x rows (36 KB a pass unsplit) 15% faster split. */
static int64_t gemv_span_len(int64_t m, int nw, int es, int64_t kb) {
    int64_t per = 4 * m + nw * es;
    if (kb * per <= GEMV_L1ROW) return kb;
    int64_t most = GEMV_L1SPAN / per / BK * BK;
    if (most < BK) most = BK;
    int64_t spans = (kb + most - 1) / most;
    return ((kb + spans - 1) / spans + BK - 1) / BK * BK;
}

/* Accumulator floats per weight row and x group, and x groups at most. */
#define ST_ROW (2 * GEMV_GROUP * FM_VW)
#define GEMV_NG ((GEMV_MAX_M + GEMV_GROUP - 1) / GEMV_GROUP)

/* The order in which one task visits its weights: chunks of GEMV_SUB rows [c0, c1); in each,
 * spans [i0, i1) of k; in each span, passes over rows [c, c + q) (q = nw, or 1 at the end). */
typedef struct gemv_walk {
    int64_t j1, kb, span;
    int nw;
} gemv_walk;
typedef struct gemv_pos {
    int64_t c0, c1, i0, i1, c, q;
} gemv_pos;

static void pos_rows(const gemv_walk *wk, gemv_pos *p, int64_t c) {
    p->c = c;
    p->q = c + wk->nw <= p->c1 ? wk->nw : 1;
}
static void pos_chunk(const gemv_walk *wk, gemv_pos *p, int64_t c0) {
    p->c0 = c0;
    p->c1 = c0 + GEMV_SUB < wk->j1 ? c0 + GEMV_SUB : wk->j1;
    p->i0 = 0;
    p->i1 = wk->span;
    pos_rows(wk, p, c0);
}
/* Advances p to the next pass; 0 (p unchanged) past the task's last. */
static int pos_next(const gemv_walk *wk, gemv_pos *p) {
    if (p->c + p->q < p->c1) {
        pos_rows(wk, p, p->c + p->q);
    } else if (p->i1 < wk->kb) {
        p->i0 = p->i1;
        p->i1 = p->i1 + wk->span < wk->kb ? p->i1 + wk->span : wk->kb;
        pos_rows(wk, p, p->c0);
    } else if (p->c1 < wk->j1) {
        pos_chunk(wk, p, p->c1);
    } else {
        return 0;
    }
    return 1;
}

static int group_rows(int64_t m, int g) {
    return m - g * GEMV_GROUP < GEMV_GROUP ? (int)(m - g * GEMV_GROUP) : GEMV_GROUP;
}

/* y of weight rows [c0, c1) for every x row, from the chunk's accumulators (not inlined: it
 * would only add to the walk's registers). */
static __attribute__((noinline)) void gemv_finish_chunk(const lw_job *j, const float *st,
                                                        int64_t c0, int64_t c1) {
    int ng = (int)((j->m + GEMV_GROUP - 1) / GEMV_GROUP);
    for (int64_t c = c0; c < c1; c++)
        for (int g = 0; g < ng; g++)
            gemv_finish(j->y + g * GEMV_GROUP * j->ldy + c, j->ldy,
                        st + ((c - c0) * ng + g) * ST_ROW, j->xq + g * GEMV_GROUP * j->k,
                        j->w + c * j->wrow, j->b ? j->b + c : NULL, j->k, group_rows(j->m, g),
                        j->wdt);
}

/* One x row over whole weight rows: the plain sequential stream, row after row. */
static inline __attribute__((always_inline)) void gemv_rows_plain(const lw_job *j, int64_t j0,
                                                                  int64_t j1, const int dt) {
    float st[GEMV_SUB * ST_ROW];
    gemv_seg s = {.sts = ST_ROW, .wrow = j->wrow, .xq = j->xq, .i1 = j->k / BK * BK};
    for (int64_t c0 = j0; c0 < j1; c0 += GEMV_SUB) {
        int64_t c1 = c0 + GEMV_SUB < j1 ? c0 + GEMV_SUB : j1;
        for (int64_t c = c0; c < c1; c++) {
            s.st = st + (c - c0) * ST_ROW, s.w = j->w + c * j->wrow;
            gemv_span(&s, 1, 1, dt, 0);
        }
        for (int64_t c = c0; c < c1; c++)
            gemv_finish(j->y + c, j->ldy, st + (c - c0) * ST_ROW, j->xq, j->w + c * j->wrow,
                        j->b ? j->b + c : NULL, j->k, 1, dt);
    }
}

/* Weight rows from j0 in the order of wk; every pass runs for each x group while its weights
 * are in L1, and the first group's run prefetches the pass GEMV_PFD passes ahead. */
static void gemv_walk_rows(const lw_job *j, int64_t j0, gemv_walk wk) {
    float st[GEMV_SUB * GEMV_NG * ST_ROW];
    int ng = (int)((j->m + GEMV_GROUP - 1) / GEMV_GROUP), es = j->wdt == FM_DTYPE_F32 ? 4 : 2;
    int pf_live = 1, more = 1;
    gemv_seg s = {.sts = ng * ST_ROW, .wrow = j->wrow};
    gemv_pos cur, pf;
    pos_chunk(&wk, &cur, j0);
    pf = cur;
    for (int d = 0; d < GEMV_PFD && pf_live; d++)
        pf_live = pos_next(&wk, &pf);
    while (more) {
        int64_t len = cur.i1 - cur.i0, pf_len = pf.i1 - pf.i0;
        s.i0 = cur.i0, s.i1 = cur.i1, s.w = j->w + cur.c * j->wrow;
        for (int c = 0; c < 2; c++)
            s.pf[c] = j->w + (pf.c + (c < pf.q ? c : 0)) * j->wrow + es * pf.i0;
        s.pfn = !pf_live ? 0 : pf_len < len ? pf_len : len;
        s.st = st + (cur.c - cur.c0) * ng * ST_ROW, s.xq = j->xq;
        for (int g = 0; g < ng; g++) {
            gemv_seg_run(&s, group_rows(j->m, g), (int)cur.q, j->wdt);
            s.st += ST_ROW, s.xq += GEMV_GROUP * j->k, s.pfn = 0;
        }
        int64_t c0 = cur.c0, c1 = cur.c1;
        more = pos_next(&wk, &cur);
        if (!more || cur.c0 != c0) gemv_finish_chunk(j, st, c0, c1);
        if (pf_live) pf_live = pos_next(&wk, &pf);
    }
}

/* Weight rows [j0, j1): one x row over whole rows as the plain stream (no software prefetch:
 * see the top of this section), anything else through gemv_walk_rows. */
static void gemv_rows(const lw_job *j, int64_t j0, int64_t j1) {
    int es = j->wdt == FM_DTYPE_F32 ? 4 : 2;
    gemv_walk wk = {.j1 = j1, .kb = j->k / BK * BK, .nw = GEMV_NW(group_rows(j->m, 0))};
    if (wk.kb == 0) { /* k < BK: the tails only */
        for (int64_t c = j0; c < j1; c++)
            for (int g = 0; g < (j->m + GEMV_GROUP - 1) / GEMV_GROUP; g++)
                gemv_finish(j->y + g * GEMV_GROUP * j->ldy + c, j->ldy, NULL,
                            j->xq + g * GEMV_GROUP * j->k, j->w + c * j->wrow,
                            j->b ? j->b + c : NULL, j->k, group_rows(j->m, g), j->wdt);
        return;
    }
    wk.span = gemv_span_len(j->m, wk.nw, es, wk.kb);
    if (j->m > 1 || wk.span < wk.kb)
        gemv_walk_rows(j, j0, wk);
    else if (j->wdt == FM_DTYPE_BF16)
        gemv_rows_plain(j, j0, j1, FM_DTYPE_BF16);
    else if (j->wdt == FM_DTYPE_F16)
        gemv_rows_plain(j, j0, j1, FM_DTYPE_F16);
    else
        gemv_rows_plain(j, j0, j1, FM_DTYPE_F32);
}

static void gemv_body(void *ctx, int64_t t0, int64_t t1, int worker) {
    (void)worker;
    const lw_job *j = ctx;
    for (int64_t t = t0; t < t1; t++) {
        int64_t j0 = t * GEMV_RB, j1 = j0 + GEMV_RB < j->n ? j0 + GEMV_RB : j->n;
        gemv_rows(j, j0, j1);
        if (j->act >= 0)
            for (int64_t r = 0; r < j->m; r++) {
                float *yr = j->y + r * j->ldy + j0;
                fm_k_act(yr, yr, j1 - j0, (fm_activation)j->act, NULL);
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
