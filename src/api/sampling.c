/* Next-token choice: transformers' logits processors in HF order (repetition penalty, inf/NaN
 * removal, then when sampling temperature, top-k, top-p, min-p), greedy argmax, and one draw
 * per sampled token from a documented xoshiro256** stream. See docs/generation.md. */
#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "api/sampling_internal.h"
#include "fusemap/generate.h"

/* ---- random stream ---------------------------------------------------------------------- */

uint64_t fm_splitmix64(uint64_t *state) {
    uint64_t z = (*state += UINT64_C(0x9e3779b97f4a7c15));
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

/* Four distinct splitmix64 states give four distinct outputs: never the all-zero state. */
void fm_rng_seed(fm_rng *r, uint64_t seed) {
    uint64_t x = seed;
    for (int i = 0; i < 4; i++)
        r->s[i] = fm_splitmix64(&x);
}

static inline uint64_t rotl64(uint64_t x, int k) {
    return (x << k) | (x >> (64 - k));
}

uint64_t fm_rng_next(fm_rng *r) {
    uint64_t *s = r->s;
    uint64_t out = rotl64(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl64(s[3], 45);
    return out;
}

double fm_rng_uniform(fm_rng *r) {
    return (double)(fm_rng_next(r) >> 11) * 0x1.0p-53;
}

/* ---- options ---------------------------------------------------------------------------- */

void fm_sampling_options_init(fm_sampling_options *o) {
    memset(o, 0, sizeof *o);
    o->do_sample = false;
    o->temperature = 1.0;
    o->top_k = 50;
    o->top_p = 1.0;
    o->min_p = 0.0;
    o->repetition_penalty = 1.0;
    o->min_keep = 1;
    o->remove_invalid_values = false;
    o->seed = FM_SAMPLING_DEFAULT_SEED;
}

fm_status fm_sampling_options_validate(const fm_sampling_options *o, fm_error *err) {
    if (!o) return fm_error_set(err, FM_ERR_INVALID_ARG, "sampling options: NULL");
    if (!isfinite(o->temperature) || o->temperature < 0)
        return fm_error_set(err, FM_ERR_INVALID_ARG,
                            "sampling: temperature %g must be finite and >= 0 (0 = greedy)",
                            o->temperature);
    if (o->top_k < 0)
        return fm_error_set(err, FM_ERR_INVALID_ARG,
                            "sampling: top_k %" PRId64 " must be >= 0 (0 = off)", o->top_k);
    if (!(o->top_p >= 0 && o->top_p <= 1))
        return fm_error_set(err, FM_ERR_INVALID_ARG, "sampling: top_p %g must be in [0, 1]",
                            o->top_p);
    if (!(o->min_p >= 0 && o->min_p <= 1))
        return fm_error_set(err, FM_ERR_INVALID_ARG, "sampling: min_p %g must be in [0, 1]",
                            o->min_p);
    if (!isfinite(o->repetition_penalty) || o->repetition_penalty <= 0)
        return fm_error_set(err, FM_ERR_INVALID_ARG,
                            "sampling: repetition_penalty %g must be finite and > 0 (1 = off)",
                            o->repetition_penalty);
    if (o->min_keep < 1)
        return fm_error_set(err, FM_ERR_INVALID_ARG, "sampling: min_keep %" PRId64 " must be >= 1",
                            o->min_keep);
    return FM_OK;
}

bool fm_sampling_options_greedy(const fm_sampling_options *o) {
    return !o->do_sample || o->temperature == 0;
}

/* ---- the sampler -------------------------------------------------------------------------- */

/* A token still in the running: its processed score, id and (when computed) its weight
 * exp(score - max score). */
typedef struct item {
    float s;
    int32_t id;
    double w;
} item;

struct fm_sampler {
    fm_sampling_options o;
    int64_t vocab;
    bool greedy;
    float *scores; /* owned [vocab]: the working copy of the logits */
    item *cand;    /* owned [vocab]: survivors, ascending id */
    size_t n_cand;
    item *sel;      /* owned [vocab]: selection scratch (reordered freely) */
    uint32_t *seen; /* owned [vocab]: repetition-penalty stamps (NULL when the penalty is off) */
    uint32_t epoch; /* stamp of the current call */
    fm_rng rng;
};

fm_status fm_sampler_new(const fm_sampling_options *o, int64_t vocab, fm_sampler **out,
                         fm_error *err) {
    if (!out) return fm_error_set(err, FM_ERR_INVALID_ARG, "fm_sampler_new: NULL output");
    *out = NULL;
    fm_status st = fm_sampling_options_validate(o, err);
    if (st != FM_OK) return st;
    if (vocab < 1 || vocab > INT32_MAX)
        return fm_error_set(err, FM_ERR_INVALID_ARG,
                            "sampler: vocabulary size %" PRId64 " must be in [1, %d]", vocab,
                            INT32_MAX);
    size_t n = (size_t)vocab;
    fm_sampler *s = fm_calloc(1, sizeof *s);
    if (s) {
        s->o = *o;
        s->vocab = vocab;
        s->greedy = fm_sampling_options_greedy(o);
        s->scores = fm_malloc(n * sizeof *s->scores);
        s->cand = s->greedy ? NULL : fm_malloc(n * sizeof *s->cand);
        s->sel = s->greedy ? NULL : fm_malloc(n * sizeof *s->sel);
        s->seen = o->repetition_penalty != 1.0 ? fm_calloc(n, sizeof *s->seen) : NULL;
        fm_rng_seed(&s->rng, o->seed);
    }
    if (!s || !s->scores || (!s->greedy && (!s->cand || !s->sel)) ||
        (o->repetition_penalty != 1.0 && !s->seen)) {
        fm_sampler_free(s);
        return fm_error_set(err, FM_ERR_NOMEM,
                            "sampler: out of memory for a vocabulary of %" PRId64, vocab);
    }
    *out = s;
    return FM_OK;
}

void fm_sampler_free(fm_sampler *s) {
    if (!s) return;
    fm_free(s->scores);
    fm_free(s->cand);
    fm_free(s->sel);
    fm_free(s->seen);
    fm_free(s);
}

void fm_sampler_reseed(fm_sampler *s, uint64_t seed) {
    if (!s) return;
    s->o.seed = seed;
    fm_rng_seed(&s->rng, seed);
}

/* ---- always-applied processors ------------------------------------------------------------- */

/* Copies the logits; NaN is an error unless remove_invalid_values will replace it. */
static fm_status load_logits(fm_sampler *s, const float *logits, fm_error *err) {
    size_t n = (size_t)s->vocab, nan_count = 0, first = 0;
    for (size_t i = 0; i < n; i++) {
        float x = logits[i];
        if (x != x && nan_count++ == 0) first = i;
        s->scores[i] = x;
    }
    if (nan_count && !s->o.remove_invalid_values)
        return fm_error_set(
            err, FM_ERR_INPUT,
            "sampler: %zu of %zu logits are NaN (first at id %zu): the model output "
            "is invalid (remove_invalid_values maps NaN to 0)",
            nan_count, n, first);
    return FM_OK;
}

static fm_status check_history(const fm_sampler *s, const int32_t *h, size_t n, fm_error *err) {
    if (n && !h)
        return fm_error_set(err, FM_ERR_INVALID_ARG, "sampler: NULL history of %zu ids", n);
    for (size_t i = 0; i < n; i++)
        if (h[i] < 0 || h[i] >= s->vocab)
            return fm_error_set(err, FM_ERR_INPUT,
                                "sampler: history[%zu] = %" PRId32
                                " is outside the vocabulary [0, %" PRId64 ")",
                                i, h[i], s->vocab);
    return FM_OK;
}

/* transformers' RepetitionPenaltyLogitsProcessor: each distinct id once, in f32 with r as f32. */
static void repetition_penalty(fm_sampler *s, const int32_t *h, size_t n) {
    if (!s->seen) return;
    if (++s->epoch == 0) { /* stamps wrapped: start over */
        memset(s->seen, 0, (size_t)s->vocab * sizeof *s->seen);
        s->epoch = 1;
    }
    float r = (float)s->o.repetition_penalty;
    for (size_t i = 0; i < n; i++) {
        int32_t id = h[i];
        if (s->seen[id] == s->epoch) continue;
        s->seen[id] = s->epoch;
        float x = s->scores[id];
        s->scores[id] = x < 0 ? x * r : x / r;
    }
}

/* transformers' InfNanRemoveLogitsProcessor. */
static void remove_invalid(fm_sampler *s) {
    for (int64_t i = 0; i < s->vocab; i++) {
        float x = s->scores[i];
        if (x != x)
            s->scores[i] = 0.0f;
        else if (x == INFINITY)
            s->scores[i] = FLT_MAX;
        else if (x == -INFINITY)
            s->scores[i] = -FLT_MAX;
    }
}

/* ---- ranking and selection ------------------------------------------------------------------
 * Rank order: higher score first, ties by higher id first. This is the reverse of a stable
 * ascending sort (ties by ascending id), the order top-p's ascending cumulative sum walks;
 * transformers leaves tie order to torch's sort. Ids are distinct, so the order is total. */

static inline bool ranks_above(const item *a, const item *b) {
    return a->s > b->s || (a->s == b->s && a->id > b->id);
}

static int rank_cmp(const void *x, const void *y) {
    const item *a = x, *b = y;
    return ranks_above(a, b) ? -1 : ranks_above(b, a) ? 1 : 0;
}

static inline void swap_items(item *a, item *b) {
    item t = *a;
    *a = *b;
    *b = t;
}

/* Moves the median of a[i], a[j], a[k] (by rank) to a[k], as the partition pivot. */
static void median_to(item *a, size_t i, size_t j, size_t k) {
    if (ranks_above(&a[j], &a[i])) swap_items(&a[i], &a[j]); /* a[i] ranks above a[j] */
    if (ranks_above(&a[k], &a[i])) swap_items(&a[i], &a[k]); /* a[i] is the top of the three */
    if (ranks_above(&a[j], &a[k])) swap_items(&a[j], &a[k]); /* a[k] is the middle */
}

/* Partitions a[lo..hi) around the median-of-three pivot: the items ranking above it first, then
 * the pivot at the returned index (its exact rank within a[lo..hi)); *upper sums their weights. */
static size_t partition(item *a, size_t lo, size_t hi, double *upper) {
    median_to(a, lo, lo + (hi - lo) / 2, hi - 1);
    item pivot = a[hi - 1];
    size_t store = lo;
    double sum = 0;
    for (size_t i = lo; i < hi - 1; i++)
        if (ranks_above(&a[i], &pivot)) {
            sum += a[i].w;
            swap_items(&a[i], &a[store++]);
        }
    swap_items(&a[store], &a[hi - 1]);
    *upper = sum;
    return store;
}

/* Rearranges a[0..n) so that a[r] holds the item of rank r, the r items before it rank above
 * it and the rest below (nth_element). Expected O(n); a partition budget bounds the worst case
 * by falling back to a sort. */
static void select_rank(item *a, size_t n, size_t r) {
    size_t lo = 0, hi = n;
    double unused;
    for (int budget = 64; hi - lo > 16 && budget > 0; budget--) {
        size_t p = partition(a, lo, hi, &unused);
        if (r == p) return;
        if (r < p)
            hi = p;
        else
            lo = p + 1;
    }
    qsort(a + lo, hi - lo, sizeof *a, rank_cmp);
}

/* Keeps (in id order) the candidates ranking at or above `last`. */
static void keep_down_to(fm_sampler *s, item last) {
    size_t k = 0;
    for (size_t i = 0; i < s->n_cand; i++)
        if (!ranks_above(&last, &s->cand[i])) s->cand[k++] = s->cand[i];
    s->n_cand = k;
}

/* ---- warpers --------------------------------------------------------------------------------- */

/* The survivors in id order: every token scoring at least `thr` and above -inf. */
static void gather_candidates(fm_sampler *s, float thr) {
    size_t k = 0;
    for (int64_t i = 0; i < s->vocab; i++) {
        float x = s->scores[i];
        if (x > -INFINITY && x >= thr) s->cand[k++] = (item){x, (int32_t)i, 0};
    }
    s->n_cand = k;
}

/* transformers' TemperatureLogitsWarper: s / T in f32 with T as f32. */
static void temperature(fm_sampler *s) {
    float t = (float)s->o.temperature;
    for (int64_t i = 0; i < s->vocab; i++)
        s->scores[i] = s->scores[i] / t;
}

/* Min-heap by rank (the root ranks lowest) of the k best items seen. */
static void sift_down(item *h, size_t n, size_t i) {
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && ranks_above(&h[m], &h[l])) m = l;
        if (r < n && ranks_above(&h[m], &h[r])) m = r;
        if (m == i) return;
        swap_items(&h[i], &h[m]);
        i = m;
    }
}

static void sift_up(item *h, size_t i) {
    while (i > 0 && ranks_above(&h[(i - 1) / 2], &h[i])) {
        swap_items(&h[(i - 1) / 2], &h[i]);
        i = (i - 1) / 2;
    }
}

/* Largest k for the one-pass heap; above it a copy and a selection are cheaper. */
#define TOP_K_HEAP_MAX 1024

/* transformers' TopKLogitsWarper, as a threshold: k = max(top_k, min_keep) capped at the
 * vocabulary; returns the k-th largest score (tokens strictly below it are removed, so ties with
 * the k-th survive), or -inf when at most k tokens are above -inf (nothing to remove). */
static float top_k_threshold(fm_sampler *s) {
    uint64_t k = (uint64_t)(s->o.top_k > s->o.min_keep ? s->o.top_k : s->o.min_keep);
    size_t n = 0, live = 0;
    item *h = s->sel;
    if (k >= (uint64_t)s->vocab) return -INFINITY;
    for (int64_t i = 0; i < s->vocab; i++) {
        item it = {s->scores[i], (int32_t)i, 0};
        if (!(it.s > -INFINITY)) continue;
        live++;
        if (k > TOP_K_HEAP_MAX) {
            h[n++] = it; /* collected for a selection below */
        } else if (n < k) {
            h[n] = it;
            sift_up(h, n++);
        } else if (it.s >= h[0].s && ranks_above(&it, &h[0])) {
            h[0] = it;
            sift_down(h, n, 0);
        }
    }
    if (live <= k) return -INFINITY;
    if (k <= TOP_K_HEAP_MAX) return h[0].s;
    select_rank(h, n, (size_t)k - 1);
    return h[k - 1].s;
}

/* exp(s - m) relative to the largest score m; when m is +inf the limit: 1 for +inf, else 0. */
static inline double weight(float x, float m) {
    if (m == INFINITY) return x == INFINITY ? 1.0 : 0.0;
    return exp((double)x - (double)m);
}

/* Fills each candidate's weight (relative to the largest score); returns their sum (>= 1). */
static double weigh_candidates(fm_sampler *s) {
    float m = -INFINITY;
    double total = 0;
    for (size_t i = 0; i < s->n_cand; i++)
        if (s->cand[i].s > m) m = s->cand[i].s;
    for (size_t i = 0; i < s->n_cand; i++)
        total += s->cand[i].w = weight(s->cand[i].s, m);
    return total;
}

/* transformers' TopPLogitsWarper: over the ascending sort, cumulative softmax; removes tokens
 * whose cumulative is <= 1 - top_p, always keeping the min_keep largest. The ascending cumulative
 * of a token is 1 - (mass ranked above it), so the cut (the first removed rank) is found from the
 * top by a weighted selection: partitions narrow the range that holds it, in double, without
 * sorting more than the last small range. */
static void top_p(fm_sampler *s) {
    size_t n = s->n_cand, lo = 0, hi = n, cut, keep = (size_t)s->o.min_keep;
    double total = weigh_candidates(s), limit = 1.0 - s->o.top_p, above = 0, upper;
    memcpy(s->sel, s->cand, n * sizeof *s->cand);
    /* invariant: sel[0..lo) are the lo top-ranked tokens, all kept (mass `above`); every token
     * from sel[hi] down is removed; so the cut lies in [lo, hi] */
    for (int budget = 64; hi - lo > 32 && budget > 0; budget--) {
        size_t p = partition(s->sel, lo, hi, &upper);
        if (p >= keep && 1.0 - (above + upper) / total <= limit) {
            hi = p;
        } else {
            above += upper + s->sel[p].w;
            lo = p + 1;
        }
    }
    qsort(s->sel + lo, hi - lo, sizeof *s->sel, rank_cmp);
    for (cut = lo; cut < hi; cut++) {
        if (cut >= keep && 1.0 - above / total <= limit) break;
        above += s->sel[cut].w;
    }
    if (cut < n) keep_down_to(s, s->sel[cut - 1]); /* cut >= min_keep >= 1 */
}

/* transformers' MinPLogitsWarper: removes probabilities below min_p times the largest, i.e.
 * exp(s - max) < min_p (a score threshold, so the survivors are a top-ranked prefix); when fewer
 * than min_keep survive, exactly the min_keep top-ranked tokens stay. */
static void min_p(fm_sampler *s) {
    size_t keep = (size_t)s->o.min_keep < s->n_cand ? (size_t)s->o.min_keep : s->n_cand, n = 0;
    weigh_candidates(s);
    for (size_t i = 0; i < s->n_cand; i++)
        n += s->cand[i].w >= s->o.min_p;
    if (n < keep) {
        memcpy(s->sel, s->cand, s->n_cand * sizeof *s->cand);
        select_rank(s->sel, s->n_cand, keep - 1);
        keep_down_to(s, s->sel[keep - 1]);
        return;
    }
    n = 0;
    for (size_t i = 0; i < s->n_cand; i++)
        if (s->cand[i].w >= s->o.min_p) s->cand[n++] = s->cand[i];
    s->n_cand = n;
}

/* ---- the pipeline and the choice ----------------------------------------------------------- */

static fm_status nothing_left(const fm_sampler *s, fm_error *err) {
    return fm_error_set(err, FM_ERR_INPUT,
                        "sampler: no token can be chosen: every score is -inf after processing "
                        "(all %" PRId64 " logits -inf, or overflowed under temperature %g)",
                        s->vocab, s->o.temperature);
}

/* Fills s->scores (greedy: penalised logits) or s->cand (sampling: the survivors). */
static fm_status run_processors(fm_sampler *s, const float *logits, const int32_t *h, size_t nh,
                                fm_error *err) {
    if (!logits) return fm_error_set(err, FM_ERR_INVALID_ARG, "sampler: NULL logits");
    fm_status st = check_history(s, h, nh, err);
    if (st == FM_OK) st = load_logits(s, logits, err);
    if (st != FM_OK) return st;
    repetition_penalty(s, h, nh);
    if (s->o.remove_invalid_values) remove_invalid(s);
    if (s->greedy) return FM_OK;
    if (s->o.temperature != 1.0) temperature(s);
    gather_candidates(s, s->o.top_k != 0 ? top_k_threshold(s) : -INFINITY);
    if (s->n_cand == 0) return nothing_left(s, err);
    if (s->o.top_p < 1.0) top_p(s);
    if (s->o.min_p > 0) min_p(s);
    return FM_OK;
}

/* First id among equal maxima, as torch.argmax. */
static fm_status argmax(const fm_sampler *s, int32_t *out, fm_error *err) {
    float best = s->scores[0];
    int64_t at = 0;
    for (int64_t i = 1; i < s->vocab; i++)
        if (s->scores[i] > best) {
            best = s->scores[i];
            at = i;
        }
    if (best == -INFINITY) return nothing_left(s, err);
    *out = (int32_t)at;
    return FM_OK;
}

/* One draw: u * (total weight) located on the cumulative weights in ascending id order. */
static int32_t draw(fm_sampler *s) {
    double total = weigh_candidates(s), acc = 0;
    double t = fm_rng_uniform(&s->rng) * total;
    int32_t last = s->cand[0].id;
    for (size_t i = 0; i < s->n_cand; i++) {
        if (s->cand[i].w <= 0) continue;
        last = s->cand[i].id;
        acc += s->cand[i].w;
        if (acc > t) return last;
    }
    return last; /* u * total rounded up to the total: the last token with weight */
}

fm_status fm_sampler_next(fm_sampler *s, const float *logits, const int32_t *history,
                          size_t n_history, int32_t *out_id, fm_error *err) {
    if (!s || !out_id)
        return fm_error_set(err, FM_ERR_INVALID_ARG, "fm_sampler_next: NULL %s",
                            s ? "output" : "sampler");
    fm_status st = run_processors(s, logits, history, n_history, err);
    if (st != FM_OK) return st;
    if (s->greedy) return argmax(s, out_id, err);
    *out_id = draw(s);
    return FM_OK;
}

fm_status fm_sampler_process(fm_sampler *s, const float *logits, const int32_t *history,
                             size_t n_history, float *scores, fm_error *err) {
    int32_t unused;
    if (!s || !scores)
        return fm_error_set(err, FM_ERR_INVALID_ARG, "fm_sampler_process: NULL %s",
                            s ? "output" : "sampler");
    fm_status st = run_processors(s, logits, history, n_history, err);
    if (st == FM_OK && s->greedy) st = argmax(s, &unused, err);
    if (st != FM_OK) return st;
    if (s->greedy) {
        memcpy(scores, s->scores, (size_t)s->vocab * sizeof *scores);
        return FM_OK;
    }
    for (int64_t i = 0; i < s->vocab; i++)
        scores[i] = -INFINITY;
    for (size_t i = 0; i < s->n_cand; i++)
        scores[s->cand[i].id] = s->cand[i].s;
    return FM_OK;
}
