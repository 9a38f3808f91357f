/* The Qwen3-VL vision tower (qwen2_5-vl-and-qwen3-vl.md §4): Conv3d patch embedding with bias,
 * learned position table interpolated per grid (transformers v4.57 fast_pos_embed_interpolate),
 * LayerNorm blocks with an un-gated tanh-GELU MLP, the merger and the DeepStack mergers fed by
 * the outputs of deepstack_visual_indexes' blocks. Patch embedding, rotary table, attention,
 * block and the per-grid plan are the Qwen2-VL tower's, under Qwen3-VL's class names. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "core/threadpool.h"
#include "models/build_util.h"
#include "models/qwen2_vl/qwen2_vl.h"
#include "models/qwen3_vl/qwen3_vl.h"
#include "nn/kernels.h"
#include "nn/run.h"

#define CFG(ctx) ((const fm_qwen3vl_config *)fm_build_ctx_model_cfg(ctx))

/* ---- Qwen3VLVisionAttention, Qwen3VLVisionMLP, Qwen3VLVisionBlock ----------------------------
 * Attention and block are Qwen2-VL's; the MLP is linear_fc2(act_fn(linear_fc1(x))). */
static fm_status attention_init(fm_module *m, fm_build_ctx *ctx, const fm_args *a, fm_error *err) {
    (void)a;
    return fm_qwen2vl_vision_attention_build(m, ctx, CFG(ctx)->v.hidden_size, CFG(ctx)->v.num_heads,
                                             err);
}

static fm_status mlp_init(fm_module *m, fm_build_ctx *ctx, const fm_args *a, fm_error *err) {
    const fm_qwen3vl_vision_config *v = &CFG(ctx)->v;
    (void)a;
    MK(m, "linear_fc1", "Linear",
       &FM_ARGS(FM_I("in", v->hidden_size), FM_I("out", v->intermediate_size), FM_I("bias", 1)));
    MK(m, "linear_fc2", "Linear",
       &FM_ARGS(FM_I("in", v->intermediate_size), FM_I("out", v->hidden_size), FM_I("bias", 1)));
    MK(m, "act_fn", fm_activation_class_name(v->act), NULL);
    return FM_OK;
}

static const char *const mlp_names[3] = {"linear_fc1", "act_fn", "linear_fc2"};

static fm_status mlp_forward(fm_module *self, fm_run_ctx *rc, const fm_tensor *in, size_t n_in,
                             fm_tensor *out, size_t n_out, fm_error *err) {
    return fm_qwen2vl_vision_mlp_run(self, rc, in, n_in, out, n_out, mlp_names, err);
}

static fm_status block_init(fm_module *m, fm_build_ctx *ctx, const fm_args *a, fm_error *err) {
    int64_t d = CFG(ctx)->v.hidden_size;
    (void)a;
    MK(m, "norm1", "LayerNorm", &FM_ARGS(FM_I("dim", d), FM_D("eps", 1e-6)));
    MK(m, "norm2", "LayerNorm", &FM_ARGS(FM_I("dim", d), FM_D("eps", 1e-6)));
    MK(m, "attn", "Qwen3VLVisionAttention", NULL);
    MK(m, "mlp", "Qwen3VLVisionMLP", NULL);
    return FM_OK;
}

/* ---- Qwen3VLVisionPatchMerger(use_postshuffle_norm): in[0] [N][D] -> out[0] [N/m²][E] --------
 * The m² consecutive rows of a merge group are one row of the [N/m²][m²·D] view. Main merger:
 * LayerNorm over D per patch, then the view; DeepStack mergers (postshuffle): the view, then
 * LayerNorm over m²·D. Then linear_fc2(GELU_erf(linear_fc1(.))). */
typedef struct merger_impl {
    int64_t dim, merge, postshuffle;
} merger_impl;

static fm_status merger_init(fm_module *m, fm_build_ctx *ctx, const fm_args *a, fm_error *err) {
    const fm_qwen3vl_vision_config *v = &CFG(ctx)->v;
    merger_impl mi = {v->hidden_size, v->spatial_merge_size, fm_args_int(a, "postshuffle", 0)};
    int64_t wide = mi.dim * mi.merge * mi.merge;
    MK(m, "norm", "LayerNorm",
       &FM_ARGS(FM_I("dim", mi.postshuffle ? wide : mi.dim), FM_D("eps", 1e-6)));
    MK(m, "linear_fc1", "Linear", &FM_ARGS(FM_I("in", wide), FM_I("out", wide), FM_I("bias", 1)));
    MK(m, "act_fn", "GELU", NULL);
    MK(m, "linear_fc2", "Linear",
       &FM_ARGS(FM_I("in", wide), FM_I("out", v->out_hidden_size), FM_I("bias", 1)));
    return fm_module_set_impl_copy(m, &mi, sizeof mi, err);
}

static fm_status merger_forward(fm_module *self, fm_run_ctx *rc, const fm_tensor *in, size_t n_in,
                                fm_tensor *out, size_t n_out, fm_error *err) {
    const merger_impl *mi = fm_module_impl(self);
    int64_t m2 = mi->merge * mi->merge;
    fm_linear_geometry g2;
    fm_status st = fm_linear_geometry_of(fm_module_child_named(self, "linear_fc2"), &g2, err);
    if (st == FM_OK) st = fm_module_check_input(self, in, n_in, 0, FM_DTYPE_F32, 2, mi->dim, err);
    if (st == FM_OK && in[0].shape.dims[0] % m2)
        st = fm_error_set(err, FM_ERR_INPUT, "module '%s': %lld rows are not whole groups of %lld",
                          fm_module_path(self), (long long)in[0].shape.dims[0], (long long)m2);
    if (st != FM_OK || n_out < 1)
        return st != FM_OK ? st : fm_error_set(err, FM_ERR_INVALID_ARG, "merger: one output");
    fm_shape wide = {2, {in[0].shape.dims[0] / m2, m2 * mi->dim}},
             os = {2, {in[0].shape.dims[0] / m2, g2.out_features}};
    st = fm_module_output(self, rc, &out[0], FM_DTYPE_F32, &os, err);
    size_t mark = fm_run_mark(rc);
    fm_module *norm = fm_module_child_named(self, "norm");
    fm_tensor a = {0}, view = {0}; /* the view holds a reference on its storage, dropped below */
    if (st == FM_OK && mi->postshuffle) {
        st = fm_tensor_reshape(&view, &in[0], &wide, err);
        if (st == FM_OK) st = fm_module_forward(norm, rc, &view, 1, &a, 1, err);
        if (st == FM_OK) st = fm_qwen2vl_vision_mlp_run(self, rc, &a, 1, out, 1, mlp_names, err);
    } else if (st == FM_OK) {
        st = fm_module_forward(norm, rc, &in[0], 1, &a, 1, err);
        if (st == FM_OK) st = fm_tensor_reshape(&view, &a, &wide, err);
        if (st == FM_OK) st = fm_qwen2vl_vision_mlp_run(self, rc, &view, 1, out, 1, mlp_names, err);
    }
    fm_tensor_free(&view);
    fm_run_release(rc, mark);
    return st;
}

/* ---- Qwen3VLVisionModel ----------------------------------------------------------------------
 * in[0] pixel_values F32 [N][C·T·P·P], in[1] image_grid_thw I64 [n][3] -> out[0] image embeddings
 * F32 [N/m²][E]; when a second output is asked for, out[1] the DeepStack features F32
 * [K][N/m²][E] (K = the tapped blocks, in block order; the DeepStack mergers run only then). */
typedef struct tower_impl {
    fm_qwen3vl_vision_config v;
    fm_qwen2vl_plan plan;
} tower_impl;

static void tower_impl_free(void *p) {
    tower_impl *t = p;
    if (!t) return;
    fm_qwen2vl_plan_clear(&t->plan);
    fm_free(t);
}

/* PyTorch's CPU linspace(0, S - 1, n)[i] in f32: the first half counts up from 0, the second
 * down from S - 1, so both ends are exact. */
static float linspace_at(int64_t side, int64_t n, int64_t i) {
    if (n == 1) return 0.0f;
    float end = (float)(side - 1), step = end / (float)(n - 1);
    return i < n / 2 ? 0.0f + step * (float)i : end - step * (float)(n - 1 - i);
}

/* One axis of the bilinear (align-corners) sampling: floor tap, next tap (clamped), fraction. */
typedef struct axis_taps {
    int32_t *lo, *hi;
    float *frac;
} axis_taps;

static void axis_fill(axis_taps *a, int64_t side, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        float s = linspace_at(side, n, i);
        int32_t f = (int32_t)s; /* torch .int(): truncation */
        a->lo[i] = f;
        a->hi[i] = f + 1 < side ? f + 1 : (int32_t)side - 1;
        a->frac[i] = s - (float)f;
    }
}

/* h[r] += the interpolated table row of patch r, for the rows of one image (all its frames). */
typedef struct pos_job {
    float *h;       /* the image's first row */
    const float *e; /* the table [side²][D] */
    int64_t d, side, merge, gh, gw;
    axis_taps y, x;
} pos_job;

static void pos_rows(void *ctx, int64_t r0, int64_t r1, int worker) {
    const pos_job *j = ctx;
    int64_t m = j->merge, m2 = m * m, per = j->gh * j->gw;
    (void)worker;
    for (int64_t r = r0; r < r1; r++) {
        int64_t idx = r % per, blk = idx / m2, in = idx % m2;
        int64_t row = (blk / (j->gw / m)) * m + in / m, col = (blk % (j->gw / m)) * m + in % m;
        float dy = j->y.frac[row], dx = j->x.frac[col];
        float w[4] = {(1.0f - dy) * (1.0f - dx), (1.0f - dy) * dx, dy * (1.0f - dx), dy * dx};
        const float *e0 = j->e + ((int64_t)j->y.lo[row] * j->side + j->x.lo[col]) * j->d,
                    *e1 = j->e + ((int64_t)j->y.lo[row] * j->side + j->x.hi[col]) * j->d,
                    *e2 = j->e + ((int64_t)j->y.hi[row] * j->side + j->x.lo[col]) * j->d,
                    *e3 = j->e + ((int64_t)j->y.hi[row] * j->side + j->x.hi[col]) * j->d;
        float *h = j->h + r * j->d;
        for (int64_t c = 0; c < j->d; c++)
            h[c] += ((e0[c] * w[0] + e1[c] * w[1]) + e2[c] * w[2]) + e3[c] * w[3];
    }
}

/* fast_pos_embed_interpolate: the pos_embed table (through its module) sampled per image at
 * linspace(0, side - 1, gh) x linspace(0, side - 1, gw), in the pixel rows' block order,
 * repeated for every frame, added to h [N][D]. */
static fm_status add_pos_embed(fm_module *self, fm_run_ctx *rc, const tower_impl *t, fm_tensor *h,
                               fm_error *err) {
    int64_t side = t->v.grid_side, d = t->v.hidden_size, cells = side * side, maxg = 1;
    for (int i = 0; i < t->plan.n_images; i++)
        for (int a = 1; a < 3; a++)
            maxg = t->plan.grid[3 * i + a] > maxg ? t->plan.grid[3 * i + a] : maxg;
    size_t mark = fm_run_mark(rc);
    fm_shape ids_s = {1, {cells}};
    fm_tensor ids = {0}, table = {0};
    int32_t *taps = NULL;
    float *fr = NULL;
    fm_status st = fm_run_tensor(rc, FM_DTYPE_I64, &ids_s, &ids, err);
    if (st == FM_OK) st = fm_run_scratch(rc, (size_t)maxg * 4 * sizeof *taps, (void **)&taps, err);
    if (st == FM_OK) st = fm_run_scratch(rc, (size_t)maxg * 2 * sizeof *fr, (void **)&fr, err);
    for (int64_t i = 0; st == FM_OK && i < cells; i++)
        ((int64_t *)ids.data)[i] = i;
    if (st == FM_OK)
        st = fm_module_forward(fm_module_child_named(self, "pos_embed"), rc, &ids, 1, &table, 1,
                               err);
    int64_t row0 = 0;
    for (int i = 0; st == FM_OK && i < t->plan.n_images; i++) {
        const int64_t *g = &t->plan.grid[3 * i];
        pos_job j = {(float *)h->data + row0 * d,
                     table.data,
                     d,
                     side,
                     t->v.spatial_merge_size,
                     g[1],
                     g[2],
                     {taps, taps + maxg, fr},
                     {taps + 2 * maxg, taps + 3 * maxg, fr + maxg}};
        axis_fill(&j.y, side, g[1]);
        axis_fill(&j.x, side, g[2]);
        fm_threadpool_for(fm_run_pool(rc), g[0] * g[1] * g[2], 64, pos_rows, &j);
        row0 += g[0] * g[1] * g[2];
    }
    fm_run_release(rc, mark);
    return st;
}

/* Runs the blocks; after each tapped block, its DeepStack merger into ds's next slice (ds NULL:
 * not asked for). */
static fm_status run_blocks(fm_module *self, fm_run_ctx *rc, const tower_impl *t, fm_tensor *h,
                            const fm_tensor rope[2], const fm_tensor *cu, fm_tensor *ds,
                            fm_error *err) {
    fm_module *blocks = fm_module_child_named(self, "blocks"),
              *mergers = fm_module_child_named(self, "deepstack_merger_list");
    fm_status st = FM_OK;
    int64_t slice = ds ? ds->shape.dims[1] * ds->shape.dims[2] : 0;
    for (int64_t i = 0, k = 0; st == FM_OK && i < t->v.depth; i++) {
        fm_tensor bin[4] = {*h, *cu, rope[0], rope[1]};
        st = fm_module_forward(fm_module_child(blocks, (size_t)i), rc, bin, 4, h, 1, err);
        int merger = fm_qwen3vl_deepstack_merger_of(&t->v, i);
        if (st == FM_OK && ds && merger >= 0) {
            fm_shape s = {2, {ds->shape.dims[1], ds->shape.dims[2]}};
            fm_tensor dst = {FM_DTYPE_F32, s, (float *)ds->data + k * slice,
                             (uint64_t)slice * sizeof(float), NULL};
            st =
                fm_module_forward(fm_module_child(mergers, (size_t)merger), rc, h, 1, &dst, 1, err);
            k++;
        }
        if (st == FM_OK) fm_run_ctx_progress(rc, (int)i + 1, (int)t->v.depth);
    }
    return st;
}

static fm_status tower_forward(fm_module *self, fm_run_ctx *rc, const fm_tensor *in, size_t n_in,
                               fm_tensor *out, size_t n_out, fm_error *err) {
    tower_impl *t = fm_module_impl(self);
    const fm_qwen3vl_vision_config *v = &t->v;
    int64_t m2 = v->spatial_merge_size * v->spatial_merge_size, hd = v->hidden_size / v->num_heads,
            k = v->in_channels * v->temporal_patch_size * v->patch_size * v->patch_size;
    fm_status st = fm_qwen2vl_plan_inputs(self, &t->plan, k, in, n_in, err);
    if (st != FM_OK || n_out < 1)
        return st != FM_OK ? st : fm_error_set(err, FM_ERR_INVALID_ARG, "tower: one output");
    int64_t tokens = t->plan.n / m2;
    fm_shape os = {2, {tokens, v->out_hidden_size}},
             ds = {3, {v->n_deepstack, tokens, v->out_hidden_size}};
    st = fm_module_output(self, rc, &out[0], FM_DTYPE_F32, &os, err);
    if (st == FM_OK && n_out >= 2) st = fm_module_output(self, rc, &out[1], FM_DTYPE_F32, &ds, err);
    size_t mark = fm_run_mark(rc);
    fm_tensor h = {0}, rope[2] = {{0}, {0}}, cu = {0};
    if (st == FM_OK)
        st = fm_module_forward(fm_module_child_named(self, "patch_embed"), rc, &in[0], 1, &h, 1,
                               err);
    if (st == FM_OK) st = add_pos_embed(self, rc, t, &h, err);
    if (st == FM_OK) st = fm_qwen2vl_plan_rope(self, rc, &t->plan, hd, rope, &cu, err);
    if (st == FM_OK) st = run_blocks(self, rc, t, &h, rope, &cu, n_out >= 2 ? &out[1] : NULL, err);
    if (st == FM_OK)
        st = fm_module_forward(fm_module_child_named(self, "merger"), rc, &h, 1, &out[0], 1, err);
    fm_run_release(rc, mark);
    return st;
}

/* Qwen3VLVisionModel's children in transformers' order: patch_embed, pos_embed, rotary_pos_emb,
 * blocks, merger, deepstack_merger_list. */
static fm_status tower_children(fm_module *m, fm_build_ctx *ctx, const fm_qwen3vl_vision_config *v,
                                fm_error *err) {
    fm_module *blocks = NULL, *list = NULL;
    MK(m, "patch_embed", "Qwen3VLVisionPatchEmbed",
       &FM_ARGS(FM_I("patch_size", v->patch_size),
                FM_I("temporal_patch_size", v->temporal_patch_size),
                FM_I("in_channels", v->in_channels), FM_I("embed_dim", v->hidden_size),
                FM_I("bias", 1)));
    MK(m, "pos_embed", "Embedding",
       &FM_ARGS(FM_I("num", v->num_position_embeddings), FM_I("dim", v->hidden_size)));
    MK(m, "rotary_pos_emb", "Qwen3VLVisionRotaryEmbedding",
       &FM_ARGS(FM_I("dim", v->hidden_size / v->num_heads / 2)));
    fm_status st = fm_module_create(ctx, m, "blocks", "ModuleList", NULL, &blocks, err);
    for (int64_t i = 0; st == FM_OK && i < v->depth; i++) {
        char name[24];
        snprintf(name, sizeof name, "%lld", (long long)i);
        st = fm_module_create(ctx, blocks, name, "Qwen3VLVisionBlock", NULL, NULL, err);
    }
    if (st != FM_OK) return st;
    MK(m, "merger", "Qwen3VLVisionPatchMerger", &FM_ARGS(FM_I("postshuffle", 0)));
    st = fm_module_create(ctx, m, "deepstack_merger_list", "ModuleList", NULL, &list, err);
    for (int i = 0; st == FM_OK && i < v->n_deepstack_mergers; i++) {
        char name[24];
        snprintf(name, sizeof name, "%d", i);
        st = fm_module_create(ctx, list, name, "Qwen3VLVisionPatchMerger",
                              &FM_ARGS(FM_I("postshuffle", 1)), NULL, err);
    }
    return st;
}

static fm_status tower_init(fm_module *m, fm_build_ctx *ctx, const fm_args *a, fm_error *err) {
    const fm_qwen3vl_vision_config *v = &CFG(ctx)->v;
    (void)a;
    tower_impl *t = fm_calloc(1, sizeof *t);
    if (!t)
        return fm_error_set(err, FM_ERR_NOMEM, "out of memory building '%s'", fm_module_path(m));
    t->v = *v;
    t->plan.merge = v->spatial_merge_size;
    fm_module_set_impl(m, t);
    return tower_children(m, ctx, v, err);
}

static const fm_module_class vision_classes[] = {
    {"Qwen3VLVisionPatchEmbed", fm_qwen2vl_patch_embed_init, fm_qwen2vl_patch_embed_prepare,
     fm_qwen2vl_patch_embed_forward, fm_free, NULL},
    {"Qwen3VLVisionRotaryEmbedding", fm_qwen2vl_vision_rotary_init, NULL,
     fm_qwen2vl_vision_rotary_forward, fm_free, NULL},
    {"Qwen3VLVisionAttention", attention_init, NULL, fm_qwen2vl_vision_attention_forward, fm_free,
     NULL},
    {"Qwen3VLVisionMLP", mlp_init, NULL, mlp_forward, NULL, NULL},
    {"Qwen3VLVisionBlock", block_init, NULL, fm_qwen2vl_block_forward, NULL, NULL},
    {"Qwen3VLVisionPatchMerger", merger_init, NULL, merger_forward, fm_free, NULL},
    {"Qwen3VLVisionModel", tower_init, NULL, tower_forward, tower_impl_free, NULL},
};

fm_status fm_qwen3vl_register_vision_classes(fm_error *err) {
    fm_status st = FM_OK;
    for (size_t i = 0; st == FM_OK && i < sizeof vision_classes / sizeof *vision_classes; i++)
        st = fm_class_register(&vision_classes[i], false, err);
    return st;
}
