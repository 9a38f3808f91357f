/* The Qwen2.5-VL vision tower (qwen2_5-vl-and-qwen3-vl.md §3): transformers' class names and
 * attribute order, the window plan (get_window_index), and the tower's forward. The patch
 * embedding, rotary table and attention are Qwen2-VL's classes under Qwen2.5-VL's names; the
 * block and merger forwards are Qwen2-VL's over other children (RMSNorm, gated SiLU MLP with
 * biases); the MLP's forward is the shared Qwen2 one. What is new is the windowing: patch groups
 * are reordered window by window, most blocks attend within windows, the blocks of
 * fullatt_block_indexes over whole frames, and the merged rows are put back in input order. */
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "models/build_util.h"
#include "models/qwen2_5_vl/qwen2_5_vl.h"

#define CFG(ctx) ((const fm_qwen25vl_config *)fm_build_ctx_model_cfg(ctx))

/* ---- window plan ------------------------------------------------------------------------------
 */
void fm_qwen25vl_plan_free(fm_qwen25vl_plan *p) {
    if (!p) return;
    fm_free(p->cu), fm_free(p->cu_win), fm_free(p->order), fm_free(p->pos);
    memset(p, 0, sizeof *p);
}

/* One frame of one image: its windows in raster order, each window's cells in raster order.
 * `base` is the frame's first merged-cell id; cells and windows are appended at *j, *w. */
static void plan_frame(fm_qwen25vl_plan *p, int64_t base, int64_t lh, int64_t lw, int64_t v,
                       int64_t m, int64_t *j, int *w) {
    int64_t m2 = m * m;
    for (int64_t y0 = 0; y0 < lh; y0 += v)
        for (int64_t x0 = 0; x0 < lw; x0 += v) {
            int64_t cells = 0;
            for (int64_t y = y0; y < y0 + v && y < lh; y++)
                for (int64_t x = x0; x < x0 + v && x < lw; x++, cells++, (*j)++) {
                    p->order[*j] = (int32_t)(base + y * lw + x);
                    for (int64_t k = 0; k < m2; k++) { /* rotary ids of the group's patches */
                        int64_t r = *j * m2 + k;
                        p->pos[2 * r] = (int32_t)(y * m + k / m);
                        p->pos[2 * r + 1] = (int32_t)(x * m + k % m);
                    }
                }
            p->cu_win[*w + 1] = p->cu_win[*w] + (int32_t)(cells * m2);
            (*w)++;
        }
}

static void plan_fill(fm_qwen25vl_plan *p, const int64_t *grid, int n_images, int64_t m,
                      int64_t v) {
    int64_t base = 0, j = 0;
    int s = 0, w = 0;
    p->cu[0] = p->cu_win[0] = 0;
    for (int i = 0; i < n_images; i++) {
        int64_t t = grid[3 * i], lh = grid[3 * i + 1] / m, lw = grid[3 * i + 2] / m;
        for (int64_t f = 0; f < t; f++, s++, base += lh * lw) {
            p->cu[s + 1] = p->cu[s] + (int32_t)(lh * lw * m * m);
            plan_frame(p, base, lh, lw, v, m, &j, &w);
        }
    }
    p->n_win = w;
}

fm_status fm_qwen25vl_window_plan(const int64_t *grid, int n_images, int64_t merge, int64_t cells,
                                  fm_qwen25vl_plan *p, fm_error *err) {
    int64_t n = 0;
    int segs = 0;
    if (merge < 1 || cells < 1)
        return fm_error_set(err, FM_ERR_INVALID_ARG, "window plan: merge %lld, window %lld cells",
                            (long long)merge, (long long)cells);
    fm_status st = fm_qwen2vl_check_grid(grid, n_images, merge, &n, &segs, err);
    if (st != FM_OK) return st;
    int64_t groups = n / (merge * merge);
    fm_qwen25vl_plan q = {.n = n, .n_seg = segs};
    q.cu = fm_malloc(((size_t)segs + 1) * sizeof *q.cu);
    q.cu_win = fm_malloc(((size_t)groups + 1) * sizeof *q.cu_win); /* at most one per cell */
    q.order = fm_malloc((size_t)(groups ? groups : 1) * sizeof *q.order);
    q.pos = fm_malloc((size_t)(n ? n : 1) * 2 * sizeof *q.pos);
    if (!q.cu || !q.cu_win || !q.order || !q.pos) {
        fm_qwen25vl_plan_free(&q);
        return fm_error_set(err, FM_ERR_NOMEM, "out of memory planning windows of %lld patches",
                            (long long)n);
    }
    plan_fill(&q, grid, n_images, merge, cells);
    *p = q;
    return FM_OK;
}

/* ---- Qwen2_5_VisionTransformerPretrainedModel ---------------------------------------------------
 * in[0] pixel_values F32 [N][C·T·P·P], in[1] image_grid_thw I64 [n][3] -> out[0] [N/m²][out
 * hidden], merged rows in input order. The plan is cached while the grid repeats. */
typedef struct tower_impl {
    fm_qwen25vl_config c;
    int64_t *grid; /* the grid the plan was made for, [n_images][3] */
    int n_images;
    fm_qwen25vl_plan plan;
} tower_impl;

static void tower_impl_free(void *impl) {
    tower_impl *t = impl;
    if (!t) return;
    fm_qwen25vl_plan_free(&t->plan);
    fm_free(t->grid);
    fm_free(t);
}

static fm_status ensure_plan(tower_impl *t, const int64_t *grid, int n_images, fm_error *err) {
    size_t bytes = (size_t)n_images * 3 * sizeof *grid;
    if (t->grid && t->n_images == n_images && !memcmp(t->grid, grid, bytes)) return FM_OK;
    fm_qwen25vl_plan p;
    int64_t *copy = fm_malloc(bytes);
    if (!copy) return fm_error_set(err, FM_ERR_NOMEM, "out of memory planning windows");
    fm_status st = fm_qwen25vl_window_plan(grid, n_images, t->c.base.v.spatial_merge_size,
                                           t->c.window_cells, &p, err);
    if (st != FM_OK) {
        fm_free(copy);
        return st;
    }
    fm_qwen25vl_plan_free(&t->plan);
    fm_free(t->grid);
    memcpy(copy, grid, bytes);
    t->grid = copy, t->n_images = n_images, t->plan = p;
    return FM_OK;
}

static fm_status tower_inputs(fm_module *self, tower_impl *t, const fm_tensor *in, size_t n_in,
                              fm_error *err) {
    const fm_qwen2vl_vision_config *v = &t->c.base.v;
    int64_t k = v->in_channels * v->temporal_patch_size * v->patch_size * v->patch_size;
    fm_status st = fm_module_check_input(self, in, n_in, 0, FM_DTYPE_F32, 2, k, err);
    if (st == FM_OK) st = fm_module_check_input(self, in, n_in, 1, FM_DTYPE_I64, 2, 3, err);
    if (st == FM_OK && (in[1].shape.dims[0] < 1 || in[1].shape.dims[0] > INT_MAX))
        st = fm_error_set(err, FM_ERR_INPUT, "%s: image_grid_thw needs 1 to %d images, got %lld",
                          fm_module_path(self), INT_MAX, (long long)in[1].shape.dims[0]);
    if (st == FM_OK) st = ensure_plan(t, in[1].data, (int)in[1].shape.dims[0], err);
    if (st == FM_OK && in[0].shape.dims[0] != t->plan.n)
        st = fm_error_set(err, FM_ERR_INPUT,
                          "%s: pixel_values has %lld rows but image_grid_thw describes %lld "
                          "patches",
                          fm_module_path(self), (long long)in[0].shape.dims[0],
                          (long long)t->plan.n);
    return st;
}

/* dst group j = src group order[j] (reorder) or dst group order[j] = src group j (restore);
 * groups of `width` floats. */
static void permute_groups(float *dst, const float *src, const int32_t *order, int64_t groups,
                           int64_t width, bool restore) {
    for (int64_t j = 0; j < groups; j++) {
        int64_t d = restore ? order[j] : j, s = restore ? j : order[j];
        memcpy(dst + d * width, src + s * width, (size_t)width * sizeof(float));
    }
}

/* The blocks over h [N][D] in window order; block i attends over frames when it is one of
 * fullatt_block_indexes, else over windows. */
static fm_status run_blocks(fm_module *self, fm_run_ctx *rc, const tower_impl *t, fm_tensor *h,
                            const fm_tensor *rope, fm_error *err) {
    const fm_qwen25vl_plan *p = &t->plan;
    int64_t depth = t->c.base.v.depth;
    fm_tensor cu = {FM_DTYPE_I32, {1, {p->n_seg + 1}}, p->cu, (uint64_t)(p->n_seg + 1) * 4, NULL};
    fm_tensor cw = {
        FM_DTYPE_I32, {1, {p->n_win + 1}}, p->cu_win, (uint64_t)(p->n_win + 1) * 4, NULL};
    fm_module *blocks = fm_module_child_named(self, "blocks");
    fm_status st = FM_OK;
    for (int64_t i = 0; st == FM_OK && i < depth; i++) {
        fm_tensor bin[4] = {*h, fm_qwen25vl_full_block(&t->c, i) ? cu : cw, rope[0], rope[1]};
        st = fm_module_forward(fm_module_child(blocks, (size_t)i), rc, bin, 4, h, 1, err);
        if (st == FM_OK) fm_run_ctx_progress(rc, (int)i + 1, (int)depth);
    }
    return st;
}

static fm_status tower_forward(fm_module *self, fm_run_ctx *rc, const fm_tensor *in, size_t n_in,
                               fm_tensor *out, size_t n_out, fm_error *err) {
    tower_impl *t = fm_module_impl(self);
    const fm_qwen2vl_vision_config *v = &t->c.base.v;
    int64_t m2 = v->spatial_merge_size * v->spatial_merge_size, d = v->embed_dim;
    fm_status st = tower_inputs(self, t, in, n_in, err);
    if (st != FM_OK || n_out < 1)
        return st != FM_OK ? st : fm_error_set(err, FM_ERR_INVALID_ARG, "tower: one output");
    const fm_qwen25vl_plan *p = &t->plan;
    int64_t groups = p->n / m2;
    fm_shape os = {2, {groups, v->hidden_size}}, hs = {2, {p->n, d}};
    st = fm_module_output(self, rc, &out[0], FM_DTYPE_F32, &os, err);
    size_t mark = fm_run_mark(rc);
    fm_tensor h0 = {0}, h = {0}, y = {0}, rope[2] = {{0}, {0}};
    fm_tensor pos = {FM_DTYPE_I32, {2, {p->n, 2}}, p->pos, (uint64_t)p->n * 8, NULL};
    if (st == FM_OK)
        st = fm_module_forward(fm_module_child_named(self, "patch_embed"), rc, &in[0], 1, &h0, 1,
                               err);
    if (st == FM_OK) st = fm_run_tensor(rc, FM_DTYPE_F32, &hs, &h, err);
    if (st == FM_OK) permute_groups(h.data, h0.data, p->order, groups, m2 * d, false);
    if (st == FM_OK) /* rotary ids already in window order: the angles move with their rows */
        st = fm_module_forward(fm_module_child_named(self, "rotary_pos_emb"), rc, &pos, 1, rope, 2,
                               err);
    if (st == FM_OK && rope[0].shape.dims[1] != d / v->num_heads / 2)
        st = fm_error_set(err, FM_ERR_CONFIG, "%s: rotary tables are %lld wide, heads need %lld",
                          fm_module_path(self), (long long)rope[0].shape.dims[1],
                          (long long)(d / v->num_heads / 2));
    if (st == FM_OK) st = run_blocks(self, rc, t, &h, rope, err);
    if (st == FM_OK)
        st = fm_module_forward(fm_module_child_named(self, "merger"), rc, &h, 1, &y, 1, err);
    if (st == FM_OK) permute_groups(out[0].data, y.data, p->order, groups, v->hidden_size, true);
    fm_run_release(rc, mark);
    return st;
}

/* ---- constructors (transformers' class names and attribute order) -------------------------- */
/* Qwen2_5_VLMLP(config, bias=True): gate_proj, up_proj, down_proj, act_fn (hidden_act). */
static fm_status mlp_init(fm_module *m, fm_build_ctx *ctx, const fm_args *a, fm_error *err) {
    const fm_qwen2vl_vision_config *v = &CFG(ctx)->base.v;
    int64_t d = v->embed_dim, i = v->mlp_hidden;
    (void)a;
    MK(m, "gate_proj", "Linear", &FM_ARGS(FM_I("in", d), FM_I("out", i), FM_I("bias", 1)));
    MK(m, "up_proj", "Linear", &FM_ARGS(FM_I("in", d), FM_I("out", i), FM_I("bias", 1)));
    MK(m, "down_proj", "Linear", &FM_ARGS(FM_I("in", i), FM_I("out", d), FM_I("bias", 1)));
    MK(m, "act_fn", fm_activation_class_name(v->act), NULL);
    return FM_OK;
}

/* Qwen2_5_VLVisionBlock: norm1, norm2 (Qwen2RMSNorm, eps 1e-6), attn, mlp. */
static fm_status block_init(fm_module *m, fm_build_ctx *ctx, const fm_args *a, fm_error *err) {
    int64_t d = CFG(ctx)->base.v.embed_dim;
    (void)a;
    MK(m, "norm1", "Qwen2RMSNorm", &FM_ARGS(FM_I("dim", d), FM_D("eps", 1e-6)));
    MK(m, "norm2", "Qwen2RMSNorm", &FM_ARGS(FM_I("dim", d), FM_D("eps", 1e-6)));
    MK(m, "attn", "Qwen2_5_VLVisionAttention", NULL);
    MK(m, "mlp", "Qwen2_5_VLMLP", NULL);
    return FM_OK;
}

/* Qwen2_5_VLPatchMerger(dim, context_dim, spatial_merge_size): ln_q Qwen2RMSNorm, mlp. */
static fm_status merger_init(fm_module *m, fm_build_ctx *ctx, const fm_args *a, fm_error *err) {
    return fm_qwen2vl_merger_init(m, ctx, a, "Qwen2RMSNorm", err);
}

static fm_status tower_init(fm_module *m, fm_build_ctx *ctx, const fm_args *a, fm_error *err) {
    const fm_qwen2vl_vision_config *v = &CFG(ctx)->base.v;
    fm_module *blocks = NULL;
    tower_impl ti = {.c = *CFG(ctx)};
    (void)a;
    fm_status st = fm_module_set_impl_copy(m, &ti, sizeof ti, err);
    if (st != FM_OK) return st;
    MK(m, "patch_embed", "Qwen2_5_VisionPatchEmbed",
       &FM_ARGS(FM_I("patch_size", v->patch_size),
                FM_I("temporal_patch_size", v->temporal_patch_size),
                FM_I("in_channels", v->in_channels), FM_I("embed_dim", v->embed_dim)));
    MK(m, "rotary_pos_emb", "Qwen2_5_VisionRotaryEmbedding",
       &FM_ARGS(FM_I("dim", v->embed_dim / v->num_heads / 2)));
    st = fm_module_create(ctx, m, "blocks", "ModuleList", NULL, &blocks, err);
    for (int64_t i = 0; st == FM_OK && i < v->depth; i++) {
        char name[24];
        snprintf(name, sizeof name, "%lld", (long long)i);
        st = fm_module_create(ctx, blocks, name, "Qwen2_5_VLVisionBlock", NULL, NULL, err);
    }
    if (st != FM_OK) return st;
    MK(m, "merger", "Qwen2_5_VLPatchMerger",
       &FM_ARGS(FM_I("dim", v->hidden_size), FM_I("context_dim", v->embed_dim),
                FM_I("spatial_merge_size", v->spatial_merge_size)));
    return FM_OK;
}

static const fm_module_class vision_classes[] = {
    {.name = "Qwen2_5_VLMLP", .init = mlp_init, .forward = fm_qwen2_mlp_forward},
    {.name = "Qwen2_5_VLVisionBlock", .init = block_init, .forward = fm_qwen2vl_block_forward},
    {.name = "Qwen2_5_VLPatchMerger",
     .init = merger_init,
     .forward = fm_qwen2vl_merger_forward,
     .free_impl = fm_free},
    {.name = "Qwen2_5_VisionTransformerPretrainedModel",
     .init = tower_init,
     .forward = tower_forward,
     .free_impl = tower_impl_free},
};

/* Qwen2.5-VL's names for the Qwen2-VL classes it shares (same constructors and forwards). */
static const char *const shared[][2] = {
    {"Qwen2_5_VisionPatchEmbed", "PatchEmbed"},
    {"Qwen2_5_VisionRotaryEmbedding", "VisionRotaryEmbedding"},
    {"Qwen2_5_VLVisionAttention", "VisionAttention"},
};

fm_status fm_qwen25vl_register_vision_classes(fm_error *err) {
    fm_status st = FM_OK;
    for (size_t i = 0; st == FM_OK && i < sizeof shared / sizeof *shared; i++)
        st = fm_class_register_alias(shared[i][0], shared[i][1], false, err);
    for (size_t i = 0; st == FM_OK && i < sizeof vision_classes / sizeof *vision_classes; i++)
        st = fm_class_register(&vision_classes[i], false, err);
    return st;
}
