/* Qwen2-VL vision tower forward in f32, in the PyTorch module's order (patch_embed, rotary
 * ids, cu_seqlens, blocks, merger), with scratch planned once per input shape. */
#include "models/qwen2_vl/vision.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

struct fm_vision_plan {
    fm_qwen2vl_vision_cfg cfg; /* copy; forwards must pass an equal one */
    int64_t *grid;             /* [n_images][3], owned copy */
    int n_images;
    int64_t n;                 /* patches N */
    int n_seg;
    int32_t *cu;               /* [n_seg + 1] cu_seqlens, owned */
    int64_t max_seg;
    int threads;
    fm_threadpool *pool;       /* owned */
    /* Scratch (fm_malloc_aligned, owned): */
    float *cos_t, *sin_t;      /* [N][hd/2] rotary tables */
    float *h;                  /* [N][D] residual stream */
    float *a;                  /* [N][D] norm output, attention output, fc2 output, ln_q output */
    float *big;                /* [N][max(3D, mlp_hidden)] qkv, proj out, fc1 out, mlp.0 out */
    float *att;                /* attention score blocks, per worker */
};

/* ---- validation ------------------------------------------------------------------------- */

static fm_status check_cfg(const fm_qwen2vl_vision_cfg *c, fm_error *err) {
    if (!c) return fm_error_set(err, FM_ERR_INVALID_ARG, "qwen2-vl vision: cfg is NULL");
    if (c->depth < 0 || c->embed_dim <= 0 || c->hidden_size <= 0 || c->num_heads <= 0 ||
        c->mlp_hidden <= 0 || c->in_channels <= 0 || c->patch_size <= 0 ||
        c->temporal_patch_size <= 0 || c->spatial_merge_size <= 0)
        return fm_error_set(err, FM_ERR_CONFIG,
                            "qwen2-vl vision config: depth %d, embed_dim %d, hidden_size %d, num_heads %d, "
                            "mlp_hidden %d, in_channels %d, patch_size %d, temporal_patch_size %d, "
                            "spatial_merge_size %d: sizes must be positive (depth >= 0)",
                            c->depth, c->embed_dim, c->hidden_size, c->num_heads, c->mlp_hidden,
                            c->in_channels, c->patch_size, c->temporal_patch_size, c->spatial_merge_size);
    if (c->embed_dim % c->num_heads != 0)
        return fm_error_set(err, FM_ERR_CONFIG, "qwen2-vl vision config: embed_dim %d not divisible by num_heads %d",
                            c->embed_dim, c->num_heads);
    int hd = c->embed_dim / c->num_heads;
    if (hd % 4 != 0 || hd > 1024)
        return fm_error_set(err, FM_ERR_CONFIG,
                            "qwen2-vl vision config: head_dim %d must be a multiple of 4 (2-D rotary) and <= 1024", hd);
    if (c->act < 0 || c->act >= FM_ACT_COUNT)
        return fm_error_set(err, FM_ERR_CONFIG, "qwen2-vl vision config: unknown activation %d", c->act);
    if (!(c->ln_eps > 0.0f) || !isfinite(c->ln_eps))
        return fm_error_set(err, FM_ERR_CONFIG, "qwen2-vl vision config: ln_eps %g must be positive", (double)c->ln_eps);
    int64_t m2 = (int64_t)c->spatial_merge_size * c->spatial_merge_size;
    int64_t k = (int64_t)c->in_channels * c->temporal_patch_size * c->patch_size * c->patch_size;
    if (k > INT_MAX || m2 * c->embed_dim > INT_MAX || 3LL * c->embed_dim > INT_MAX)
        return fm_error_set(err, FM_ERR_CONFIG, "qwen2-vl vision config: patch size %lld or merged width %lld exceeds int",
                            (long long)k, (long long)(m2 * c->embed_dim));
    return FM_OK;
}

static int cfg_equal(const fm_qwen2vl_vision_cfg *a, const fm_qwen2vl_vision_cfg *b) {
    return a->depth == b->depth && a->embed_dim == b->embed_dim && a->hidden_size == b->hidden_size &&
           a->num_heads == b->num_heads && a->mlp_hidden == b->mlp_hidden &&
           a->in_channels == b->in_channels && a->patch_size == b->patch_size &&
           a->temporal_patch_size == b->temporal_patch_size &&
           a->spatial_merge_size == b->spatial_merge_size && a->act == b->act && a->ln_eps == b->ln_eps;
}

/* Grid: every t, h, w >= 1, h and w multiples of the merge size; N and every segment fit the
 * int32 cu_seqlens. Writes N, the segment count and the longest segment. */
static fm_status check_grid(const fm_qwen2vl_vision_cfg *c, const int64_t *g, int n_images,
                            int64_t *n_out, int *nseg_out, int64_t *max_seg, fm_error *err) {
    if (!g || n_images <= 0)
        return fm_error_set(err, FM_ERR_INPUT, "image_grid_thw: need at least one image (got %d)", n_images);
    int64_t n = 0, nseg = 0, mx = 0, m = c->spatial_merge_size;
    for (int i = 0; i < n_images; i++) {
        int64_t t = g[3 * i], gh = g[3 * i + 1], gw = g[3 * i + 2];
        if (t < 1 || gh < 1 || gw < 1 || gh % m || gw % m || gh > INT_MAX || gw > INT_MAX || t > INT_MAX)
            return fm_error_set(err, FM_ERR_INPUT,
                                "image_grid_thw[%d] = (%lld, %lld, %lld): t, h, w must be >= 1 and h, w multiples "
                                "of spatial_merge_size %lld", i, (long long)t, (long long)gh, (long long)gw, (long long)m);
        uint64_t hw, thw;
        if (fm_mul_u64((uint64_t)gh, (uint64_t)gw, &hw) || fm_mul_u64(hw, (uint64_t)t, &thw) ||
            thw > (uint64_t)INT32_MAX - (uint64_t)n)
            return fm_error_set(err, FM_ERR_INPUT, "image_grid_thw: %d images exceed %d patches in total",
                                n_images, INT32_MAX);
        n += (int64_t)thw;
        nseg += t;
        if ((int64_t)hw > mx) mx = (int64_t)hw;
    }
    if (nseg > INT_MAX - 1)
        return fm_error_set(err, FM_ERR_INPUT, "image_grid_thw: too many temporal slices (%lld)", (long long)nseg);
    *n_out = n;
    *nseg_out = (int)nseg;
    *max_seg = mx;
    return FM_OK;
}

/* ---- plan ------------------------------------------------------------------------------- */

/* Rotary position ids (spec §4 step 2): rows in block-major order, (row, col) absolute patch
 * coordinates, identical for every temporal slice; then the cos/sin tables. */
static fm_status fill_rope(fm_vision_plan *p, fm_error *err) {
    int32_t *pos = fm_malloc((size_t)p->n * 2 * sizeof *pos); /* [N][2] */
    if (!pos) return fm_error_set(err, FM_ERR_NOMEM, "qwen2-vl vision plan: rotary ids for %lld patches", (long long)p->n);
    int64_t r = 0, m = p->cfg.spatial_merge_size;
    for (int i = 0; i < p->n_images; i++) {
        int64_t t = p->grid[3 * i], gh = p->grid[3 * i + 1], gw = p->grid[3 * i + 2];
        for (int64_t tt = 0; tt < t; tt++)
            for (int64_t bh = 0; bh < gh / m; bh++)
                for (int64_t bw = 0; bw < gw / m; bw++)
                    for (int64_t ih = 0; ih < m; ih++)
                        for (int64_t iw = 0; iw < m; iw++, r++) {
                            pos[2 * r] = (int32_t)(bh * m + ih);
                            pos[2 * r + 1] = (int32_t)(bw * m + iw);
                        }
    }
    fm_k_vision_rope_table(p->cos_t, p->sin_t, pos, p->n, p->cfg.embed_dim / p->cfg.num_heads);
    fm_free(pos);
    return FM_OK;
}

static void fill_cu(fm_vision_plan *p) {
    int s = 0;
    p->cu[0] = 0;
    for (int i = 0; i < p->n_images; i++)
        for (int64_t tt = 0; tt < p->grid[3 * i]; tt++, s++)
            p->cu[s + 1] = p->cu[s] + (int32_t)(p->grid[3 * i + 1] * p->grid[3 * i + 2]);
}

/* floats * 4 bytes, overflow-checked; 0 on overflow. */
static size_t fbytes(uint64_t a, uint64_t b) {
    uint64_t r;
    if (fm_mul_u64(a, b, &r) || fm_mul_u64(r, sizeof(float), &r) || r > SIZE_MAX) return 0;
    return (size_t)r;
}

static fm_status alloc_scratch(fm_vision_plan *p, fm_error *err) {
    const fm_qwen2vl_vision_cfg *c = &p->cfg;
    int64_t hd = c->embed_dim / c->num_heads, wide = 3LL * c->embed_dim;
    if (c->mlp_hidden > wide) wide = c->mlp_hidden;
    size_t b_tab = fbytes((uint64_t)p->n, (uint64_t)hd / 2), b_d = fbytes((uint64_t)p->n, (uint64_t)c->embed_dim);
    size_t b_big = fbytes((uint64_t)p->n, (uint64_t)wide);
    size_t b_att = fbytes(fm_k_attention_scratch_floats(p->max_seg, p->threads), 1);
    if (!b_tab || !b_d || !b_big || !b_att)
        return fm_error_set(err, FM_ERR_OVERFLOW, "qwen2-vl vision plan: scratch size overflows for %lld patches",
                            (long long)p->n);
    p->cos_t = fm_malloc_aligned(b_tab);
    p->sin_t = fm_malloc_aligned(b_tab);
    p->h = fm_malloc_aligned(b_d);
    p->a = fm_malloc_aligned(b_d);
    p->big = fm_malloc_aligned(b_big);
    p->att = fm_malloc_aligned(b_att);
    if (!p->cos_t || !p->sin_t || !p->h || !p->a || !p->big || !p->att)
        return fm_error_set(err, FM_ERR_NOMEM, "qwen2-vl vision plan: out of memory for %lld patches (%zu bytes per buffer)",
                            (long long)p->n, b_big);
    return FM_OK;
}

fm_status fm_vision_plan_new(const fm_qwen2vl_vision_cfg *cfg, const int64_t *grid_thw,
                             int n_images, int threads, fm_vision_plan **out, fm_error *err) {
    if (!out) return fm_error_set(err, FM_ERR_INVALID_ARG, "qwen2-vl vision plan: out is NULL");
    *out = NULL;
    fm_status st = check_cfg(cfg, err);
    if (st != FM_OK) return st;
    if (threads < 0) return fm_error_set(err, FM_ERR_INVALID_ARG, "qwen2-vl vision plan: threads %d < 0", threads);
    int64_t n = 0, max_seg = 0;
    int nseg = 0;
    if ((st = check_grid(cfg, grid_thw, n_images, &n, &nseg, &max_seg, err)) != FM_OK) return st;
    fm_vision_plan *p = fm_calloc(1, sizeof *p);
    if (!p) return fm_error_set(err, FM_ERR_NOMEM, "qwen2-vl vision plan: out of memory");
    p->cfg = *cfg;
    p->n_images = n_images;
    p->n = n;
    p->n_seg = nseg;
    p->max_seg = max_seg;
    p->threads = threads ? threads : fm_default_threads();
    p->grid = fm_malloc((size_t)n_images * 3 * sizeof *p->grid);
    p->cu = fm_malloc(((size_t)nseg + 1) * sizeof *p->cu);
    if (!p->grid || !p->cu) {
        st = fm_error_set(err, FM_ERR_NOMEM, "qwen2-vl vision plan: out of memory for %d images", n_images);
    } else {
        memcpy(p->grid, grid_thw, (size_t)n_images * 3 * sizeof *p->grid);
        fill_cu(p);
        st = alloc_scratch(p, err);
    }
    if (st == FM_OK) st = fm_threadpool_new(p->threads, &p->pool, err);
    if (st == FM_OK) st = fill_rope(p, err);
    if (st != FM_OK) {
        fm_vision_plan_free(p);
        return st;
    }
    *out = p;
    return FM_OK;
}

void fm_vision_plan_free(fm_vision_plan *p) {
    if (!p) return;
    fm_threadpool_free(p->pool);
    fm_free_aligned(p->cos_t);
    fm_free_aligned(p->sin_t);
    fm_free_aligned(p->h);
    fm_free_aligned(p->a);
    fm_free_aligned(p->big);
    fm_free_aligned(p->att);
    fm_free(p->grid);
    fm_free(p->cu);
    fm_free(p);
}

int64_t fm_vision_plan_patches(const fm_vision_plan *p) { return p ? p->n : 0; }

int64_t fm_vision_plan_tokens(const fm_vision_plan *p) {
    return p ? p->n / ((int64_t)p->cfg.spatial_merge_size * p->cfg.spatial_merge_size) : 0;
}

/* ---- weight checks ---------------------------------------------------------------------- */

static fm_status check_ptr(const float *ptr, const char *name, int block, int optional, fm_error *err) {
    char where[32] = "";
    if (block >= 0) snprintf(where, sizeof where, "blocks[%d].", block);
    if (!ptr && !optional)
        return fm_error_set(err, FM_ERR_INVALID_ARG, "qwen2-vl vision weights: %s%s is NULL", where, name);
    if (ptr && ((uintptr_t)ptr % sizeof(float)) != 0)
        return fm_error_set(err, FM_ERR_INVALID_ARG, "qwen2-vl vision weights: %s%s is not 4-byte aligned", where, name);
    return FM_OK;
}

static fm_status check_block(const fm_qwen2vl_block_w *b, int i, fm_error *err) {
    const float *ptrs[12] = {b->norm1_w, b->norm1_b, b->qkv_w, b->qkv_b, b->proj_w, b->proj_b,
                             b->norm2_w, b->norm2_b, b->fc1_w, b->fc1_b, b->fc2_w, b->fc2_b};
    static const char *const names[12] = {"norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias",
                                          "attn.proj.weight", "attn.proj.bias", "norm2.weight", "norm2.bias",
                                          "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias"};
    for (int k = 0; k < 12; k++) {
        fm_status st = check_ptr(ptrs[k], names[k], i, 0, err);
        if (st != FM_OK) return st;
    }
    return FM_OK;
}

/* The direct conv must see each row as [C][T][P][P] and produce one 1x1x1 output per row. */
static fm_status check_conv(const fm_qwen2vl_vision_cfg *c, const fm_conv3d_params *cp, fm_error *err) {
    int64_t in[3] = {c->temporal_patch_size, c->patch_size, c->patch_size}, od[3];
    fm_status st = fm_conv3d_out_dims(cp, in, od, err);
    if (st != FM_OK) {
        fm_error_prefix(err, "qwen2-vl vision patch_embed.proj");
        return st;
    }
    if (cp->in_ch != c->in_channels || cp->out_ch != c->embed_dim || od[0] != 1 || od[1] != 1 || od[2] != 1)
        return fm_error_set(err, FM_ERR_INPUT,
                            "qwen2-vl vision patch_embed.proj: Conv3d %d->%d on a [%d, %d, %d, %d] patch gives "
                            "[%lld, %lld, %lld] per patch; need %d->%d and 1x1x1",
                            cp->in_ch, cp->out_ch, c->in_channels, c->temporal_patch_size, c->patch_size,
                            c->patch_size, (long long)od[0], (long long)od[1], (long long)od[2],
                            c->in_channels, c->embed_dim);
    return FM_OK;
}

static fm_status check_weights(const fm_qwen2vl_vision_cfg *c, const fm_qwen2vl_vision_w *w, fm_error *err) {
    fm_status st = FM_OK;
    if (!w) return fm_error_set(err, FM_ERR_INVALID_ARG, "qwen2-vl vision weights: NULL");
    if (!w->patch_fused && (st = check_conv(c, &w->conv, err)) != FM_OK) return st;
    const float *top[7] = {w->patch_w, w->ln_q_w, w->ln_q_b, w->mlp0_w, w->mlp0_b, w->mlp2_w, w->mlp2_b};
    static const char *const names[7] = {"patch_embed.proj.weight", "merger.ln_q.weight", "merger.ln_q.bias",
                                         "merger.mlp.0.weight", "merger.mlp.0.bias", "merger.mlp.2.weight",
                                         "merger.mlp.2.bias"};
    for (int k = 0; k < 7 && st == FM_OK; k++) st = check_ptr(top[k], names[k], -1, 0, err);
    if (st == FM_OK) st = check_ptr(w->patch_b, "patch_embed.proj.bias", -1, 1, err);
    if (st == FM_OK && c->depth > 0 && !w->blocks)
        st = fm_error_set(err, FM_ERR_INVALID_ARG, "qwen2-vl vision weights: blocks is NULL for depth %d", c->depth);
    for (int i = 0; i < c->depth && st == FM_OK; i++) st = check_block(&w->blocks[i], i, err);
    return st;
}

/* ---- forward ---------------------------------------------------------------------------- */

/* One pre-norm block on p->h [N][D]. */
static void run_block(fm_vision_plan *p, const fm_qwen2vl_block_w *b) {
    const fm_qwen2vl_vision_cfg *c = &p->cfg;
    int64_t n = p->n, d = c->embed_dim, hd = d / c->num_heads;
    float scale = (float)pow((double)hd, -0.5); /* Python float hd**-0.5, applied in f32 */
    fm_k_layernorm(p->a, p->h, b->norm1_w, b->norm1_b, n, d, c->ln_eps, p->pool);       /* a [N][D] */
    fm_k_linear(p->big, p->a, b->qkv_w, b->qkv_b, n, 3 * d, d);                          /* big [N][3D] */
    fm_k_rope_apply(p->big, 3 * d, n, c->num_heads, (int)hd, p->cos_t, p->sin_t, p->pool); /* q */
    fm_k_rope_apply(p->big + d, 3 * d, n, c->num_heads, (int)hd, p->cos_t, p->sin_t, p->pool); /* k */
    fm_k_attention(p->a, d, p->big, p->big + d, p->big + 2 * d, 3 * d, p->cu, p->n_seg, c->num_heads,
                   (int)hd, scale, p->att, p->pool);                                   /* a [N][D] */
    fm_k_linear(p->big, p->a, b->proj_w, b->proj_b, n, d, d);                            /* big [N][D] */
    fm_k_add(p->h, p->big, n * d, p->pool);
    fm_k_layernorm(p->a, p->h, b->norm2_w, b->norm2_b, n, d, c->ln_eps, p->pool);       /* a [N][D] */
    fm_k_linear(p->big, p->a, b->fc1_w, b->fc1_b, n, c->mlp_hidden, d);                  /* big [N][mlp] */
    fm_k_act(p->big, p->big, n * c->mlp_hidden, (fm_act)c->act, p->pool);
    fm_k_linear(p->a, p->big, b->fc2_w, b->fc2_b, n, d, c->mlp_hidden);                  /* a [N][D] */
    fm_k_add(p->h, p->a, n * d, p->pool);
}

/* Merger: ln_q per token, then rows 4j..4j+3 are already contiguous, so [N][D] is the
 * concatenated [N/m²][m²D] view without a copy. */
static void run_merger(fm_vision_plan *p, const fm_qwen2vl_vision_w *w, float *out) {
    const fm_qwen2vl_vision_cfg *c = &p->cfg;
    int64_t m2 = (int64_t)c->spatial_merge_size * c->spatial_merge_size;
    int64_t rows = p->n / m2, wide = m2 * c->embed_dim;
    fm_k_layernorm(p->a, p->h, w->ln_q_w, w->ln_q_b, p->n, c->embed_dim, c->ln_eps, p->pool); /* a [N][D] */
    fm_k_linear(p->big, p->a, w->mlp0_w, w->mlp0_b, rows, wide, wide);                       /* big [N/m²][m²D] */
    fm_k_act(p->big, p->big, rows * wide, FM_ACT_GELU, p->pool);
    fm_k_linear(out, p->big, w->mlp2_w, w->mlp2_b, rows, c->hidden_size, wide);               /* out [N/m²][H] */
}

fm_status fm_qwen2vl_vision_forward(fm_vision_plan *p, const fm_qwen2vl_vision_cfg *cfg,
                                    const fm_qwen2vl_vision_w *w, const float *pixel_values,
                                    int64_t n_rows, float *out,
                                    void (*progress)(void *ctx, int done, int total),
                                    void *progress_ctx, fm_error *err) {
    if (!p || !cfg || !pixel_values || !out)
        return fm_error_set(err, FM_ERR_INVALID_ARG, "qwen2-vl vision forward: NULL plan, cfg, pixel_values or out");
    if (!cfg_equal(cfg, &p->cfg))
        return fm_error_set(err, FM_ERR_INVALID_ARG, "qwen2-vl vision forward: config differs from the plan's");
    const fm_qwen2vl_vision_cfg *c = &p->cfg;
    int64_t k = (int64_t)c->in_channels * c->temporal_patch_size * c->patch_size * c->patch_size;
    if (n_rows != p->n)
        return fm_error_set(err, FM_ERR_INPUT,
                            "qwen2-vl vision forward: pixel_values [%lld, %lld] does not match image_grid_thw "
                            "(%d images), which needs [%lld, %lld]",
                            (long long)n_rows, (long long)k, p->n_images, (long long)p->n, (long long)k);
    if ((uintptr_t)pixel_values % sizeof(float) || (uintptr_t)out % sizeof(float))
        return fm_error_set(err, FM_ERR_INVALID_ARG, "qwen2-vl vision forward: pixel_values or out not 4-byte aligned");
    fm_status st = check_weights(c, w, err);
    if (st != FM_OK) return st;
    int saved = fm_blas_get_threads();
    fm_blas_set_threads(p->threads);
    if (w->patch_fused) {
        fm_k_linear(p->h, pixel_values, w->patch_w, w->patch_b, p->n, c->embed_dim, k); /* h [N][D] */
    } else {
        int64_t in[3] = {c->temporal_patch_size, c->patch_size, c->patch_size};
        fm_k_conv3d(p->h, pixel_values, w->patch_w, w->patch_b, p->n, &w->conv, in, p->pool); /* h [N][D][1][1][1] */
    }
    for (int i = 0; i < c->depth; i++) {
        run_block(p, &w->blocks[i]);
        if (progress) progress(progress_ctx, i + 1, c->depth);
    }
    run_merger(p, w, out);
    fm_blas_set_threads(saved);
    return FM_OK;
}
