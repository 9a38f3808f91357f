/* Forwards of the Qwen2-VL vision tower's module classes (qwen2-vl.md §4), in the order of
 * the PyTorch modules they mirror. The tower calls patch_embed, rotary_pos_emb, each block and
 * the merger through their classes; a block calls norm1, attn, norm2 and mlp the same way, so
 * a fused or patched child brings its own forward. Composite forwards place their output
 * first, take a scratch mark, and release their temporaries before returning. */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "models/build_util.h"
#include "models/qwen2_vl/qwen2_vl.h"
#include "nn/kernels.h"
#include "nn/run.h"

/* ---- PatchEmbed: in[0] F32 [N][C*T*P*P] -> out[0] F32 [N][embed_dim] ------------------------
 * forward: view (-1, C, T, P, P), Conv3d, view (-1, embed_dim). */
typedef struct patch_impl {
    int64_t patch, temporal, channels, embed; /* constructor arguments */
} patch_impl;

fm_status fm_qwen2vl_patch_embed_prepare(fm_module *self, fm_run_ctx *rc, fm_error *err) {
    const patch_impl *p = fm_module_impl(self);
    fm_conv3d_geometry g;
    (void)rc;
    fm_status st = fm_conv3d_geometry_of(fm_module_child_named(self, "proj"), &g, err);
    if (st != FM_OK) return st;
    int64_t in[3] = {p->temporal, p->patch, p->patch};
    for (int a = 0; a < 3; a++) {
        int64_t span = g.dilation[a] * (g.kernel[a] - 1) + 1, room = in[a] + 2 * g.padding[a];
        if (span > room || (room - span) / g.stride[a] != 0)
            return fm_error_set(err, FM_ERR_CONFIG,
                                "module '%s': Conv3d kernel does not map a [%lld, %lld, %lld] "
                                "patch to one output on axis %d",
                                fm_module_path(self), (long long)p->temporal, (long long)p->patch,
                                (long long)p->patch, a);
    }
    if (g.in_channels != p->channels || g.out_channels != p->embed)
        return fm_error_set(err, FM_ERR_CONFIG,
                            "module '%s': Conv3d %lld -> %lld, expected %lld -> %lld",
                            fm_module_path(self), (long long)g.in_channels,
                            (long long)g.out_channels, (long long)p->channels, (long long)p->embed);
    return FM_OK;
}

fm_status fm_qwen2vl_patch_embed_forward(fm_module *self, fm_run_ctx *rc, const fm_tensor *in,
                                         size_t n_in, fm_tensor *out, size_t n_out, fm_error *err) {
    const patch_impl *p = fm_module_impl(self);
    int64_t k = p->channels * p->temporal * p->patch * p->patch;
    fm_status st = fm_module_check_input(self, in, n_in, 0, FM_DTYPE_F32, 2, k, err);
    if (st != FM_OK || n_out < 1)
        return st != FM_OK ? st : fm_error_set(err, FM_ERR_INVALID_ARG, "PatchEmbed: one output");
    int64_t n = in[0].shape.dims[0];
    fm_shape s5 = {5, {n, p->channels, p->temporal, p->patch, p->patch}}, o2 = {2, {n, p->embed}};
    fm_shape o5 = {5, {n, p->embed, 1, 1, 1}};
    fm_tensor x5 = {0}, y5 = {0}; /* views: each holds a reference on its storage, released below */
    st = fm_module_output(self, rc, &out[0], FM_DTYPE_F32, &o2, err);
    if (st == FM_OK) st = fm_tensor_reshape(&x5, &in[0], &s5, err);
    if (st == FM_OK) st = fm_tensor_reshape(&y5, &out[0], &o5, err);
    if (st == FM_OK)
        st = fm_module_forward(fm_module_child_named(self, "proj"), rc, &x5, 1, &y5, 1, err);
    fm_tensor_free(&x5);
    fm_tensor_free(&y5);
    return st;
}

/* ---- VisionRotaryEmbedding(dim = head_dim / 2, theta = 10000) ---------------------------------
 * in[0] I32 [N][2] (row, col) -> out[0] cos, out[1] sin: F32 [N][head_dim / 2] (spec §4 step 3). */
typedef struct rotary_impl {
    int64_t dim;
} rotary_impl;

fm_status fm_qwen2vl_vision_rotary_forward(fm_module *self, fm_run_ctx *rc, const fm_tensor *in,
                                           size_t n_in, fm_tensor *out, size_t n_out,
                                           fm_error *err) {
    const rotary_impl *r = fm_module_impl(self);
    fm_status st = fm_module_check_input(self, in, n_in, 0, FM_DTYPE_I32, 2, 2, err);
    if (st != FM_OK || n_out < 2)
        return st != FM_OK ? st : fm_error_set(err, FM_ERR_INVALID_ARG, "rotary: two outputs");
    fm_shape os = {2, {in[0].shape.dims[0], r->dim}};
    st = fm_module_output(self, rc, &out[0], FM_DTYPE_F32, &os, err);
    if (st == FM_OK) st = fm_module_output(self, rc, &out[1], FM_DTYPE_F32, &os, err);
    if (st == FM_OK)
        fm_k_vision_rope_table(out[0].data, out[1].data, in[0].data, os.dims[0], (int)(2 * r->dim));
    return st;
}

/* ---- VisionAttention: in = {x [N][D], cu I32 [S+1], cos, sin} -> out[0] [N][D] -------------- */
typedef struct attn_impl {
    int64_t dim, heads;
} attn_impl;

/* The side inputs every block and attention receive: cu_seqlens and the rotary tables. */
static fm_status check_side(const fm_module *m, const fm_tensor *in, size_t n_in, int64_t rows,
                            int64_t half, fm_error *err) {
    fm_status st = fm_module_check_input(m, in, n_in, 1, FM_DTYPE_I32, 1, -1, err);
    if (st == FM_OK) st = fm_module_check_input(m, in, n_in, 2, FM_DTYPE_F32, 2, half, err);
    if (st == FM_OK) st = fm_module_check_input(m, in, n_in, 3, FM_DTYPE_F32, 2, half, err);
    if (st == FM_OK &&
        (in[2].shape.dims[0] != rows || in[3].shape.dims[0] != rows || in[1].shape.dims[0] < 2))
        st = fm_error_set(err, FM_ERR_INPUT,
                          "module '%s': rotary tables or cu_seqlens do not match %lld rows",
                          fm_module_path(m), (long long)rows);
    return st;
}

fm_status fm_qwen2vl_vision_attention_forward(fm_module *self, fm_run_ctx *rc, const fm_tensor *in,
                                              size_t n_in, fm_tensor *out, size_t n_out,
                                              fm_error *err) {
    const attn_impl *a = fm_module_impl(self);
    int64_t d = a->dim, hd = a->dim / a->heads;
    fm_status st = fm_module_check_input(self, in, n_in, 0, FM_DTYPE_F32, 2, d, err);
    int64_t n = st == FM_OK ? in[0].shape.dims[0] : 0;
    if (st == FM_OK) st = check_side(self, in, n_in, n, hd / 2, err);
    if (st != FM_OK || n_out < 1)
        return st != FM_OK ? st : fm_error_set(err, FM_ERR_INVALID_ARG, "attention: one output");
    fm_shape os = {2, {n, d}};
    st = fm_module_output(self, rc, &out[0], FM_DTYPE_F32, &os, err);
    size_t mark = fm_run_mark(rc);
    fm_tensor qkv = {0}, o = {0};
    if (st == FM_OK)
        st = fm_module_forward(fm_module_child_named(self, "qkv"), rc, &in[0], 1, &qkv, 1,
                               err);                                     /* [N][3D] */
    if (st == FM_OK) st = fm_run_tensor(rc, FM_DTYPE_F32, &os, &o, err); /* [N][D] */
    fm_mat m = fm_mat_of(&qkv), q = fm_mat_cols(m, 0, d), k = fm_mat_cols(m, d, 2 * d),
           v = fm_mat_cols(m, 2 * d, 3 * d);
    const float *cos_t = in[2].data, *sin_t = in[3].data;
    if (st == FM_OK) st = fm_op_rope(rc, q, (int)a->heads, (int)hd, cos_t, sin_t, err);
    if (st == FM_OK) st = fm_op_rope(rc, k, (int)a->heads, (int)hd, cos_t, sin_t, err);
    float scale = (float)pow((double)hd, -0.5); /* Python float hd**-0.5, applied in f32 */
    if (st == FM_OK)
        st = fm_op_attention(rc, fm_mat_of(&o), q, k, v, in[1].data, (int)in[1].shape.dims[0] - 1,
                             (int)a->heads, (int)hd, scale, err);
    if (st == FM_OK)
        st = fm_module_forward(fm_module_child_named(self, "proj"), rc, &o, 1, &out[0], 1, err);
    fm_run_release(rc, mark);
    return st;
}

/* ---- VisionMlp: fc2(act(fc1(x))), in[0] [N][D] -> out[0] [N][D] -----------------------------
 * names[] = the children {fc1, act, fc2} (Qwen3-VL: linear_fc1, act_fn, linear_fc2). */
fm_status fm_qwen2vl_vision_mlp_run(fm_module *self, fm_run_ctx *rc, const fm_tensor *in,
                                    size_t n_in, fm_tensor *out, size_t n_out,
                                    const char *const names[3], fm_error *err) {
    fm_module *fc1 = fm_module_child_named(self, names[0]),
              *act = fm_module_child_named(self, names[1]);
    fm_linear_geometry g2;
    fm_status st = fm_linear_geometry_of(fm_module_child_named(self, names[2]), &g2, err);
    if (st == FM_OK) st = fm_module_check_input(self, in, n_in, 0, FM_DTYPE_F32, 2, -1, err);
    if (st != FM_OK || n_out < 1)
        return st != FM_OK ? st : fm_error_set(err, FM_ERR_INVALID_ARG, "mlp: one output");
    fm_shape os = {2, {in[0].shape.dims[0], g2.out_features}};
    st = fm_module_output(self, rc, &out[0], FM_DTYPE_F32, &os, err);
    size_t mark = fm_run_mark(rc);
    fm_tensor h = {0};
    fm_activation kind;
    if (st == FM_OK && fm_activation_of(act, &kind)) {
        st = fm_linear_forward_act(fc1, rc, &in[0], &h, kind,
                                   err); /* the activation rides the GEMM tiles */
    } else if (st == FM_OK) {
        st = fm_module_forward(fc1, rc, &in[0], 1, &h, 1, err);
        if (st == FM_OK) st = fm_module_forward(act, rc, &h, 1, &h, 1, err);
    }
    if (st == FM_OK)
        st = fm_module_forward(fm_module_child_named(self, names[2]), rc, &h, 1, &out[0], 1, err);
    fm_run_release(rc, mark);
    return st;
}

static fm_status mlp_forward(fm_module *self, fm_run_ctx *rc, const fm_tensor *in, size_t n_in,
                             fm_tensor *out, size_t n_out, fm_error *err) {
    static const char *const names[3] = {"fc1", "act", "fc2"};
    return fm_qwen2vl_vision_mlp_run(self, rc, in, n_in, out, n_out, names, err);
}

/* ---- Qwen2VLVisionBlock: in = {h [N][D], cu, cos, sin} -> out[0] [N][D] (may alias in[0]) ------
 *   h = h + attn(norm1(h), cu, cos, sin);  h = h + mlp(norm2(h)) */
fm_status fm_qwen2vl_block_forward(fm_module *self, fm_run_ctx *rc, const fm_tensor *in,
                                   size_t n_in, fm_tensor *out, size_t n_out, fm_error *err) {
    fm_status st = fm_module_check_input(self, in, n_in, 0, FM_DTYPE_F32, 2, -1, err);
    if (st == FM_OK && n_in < 4)
        st = fm_error_set(err, FM_ERR_INPUT, "block '%s': needs h, cu_seqlens, cos, sin",
                          fm_module_path(self));
    if (st != FM_OK || n_out < 1)
        return st != FM_OK ? st : fm_error_set(err, FM_ERR_INVALID_ARG, "block: one output");
    st = fm_module_output(self, rc, &out[0], FM_DTYPE_F32, &in[0].shape, err);
    if (st != FM_OK) return st;
    if (out[0].data != in[0].data) memcpy(out[0].data, in[0].data, in[0].nbytes);
    int64_t n = (int64_t)fm_tensor_numel(&out[0]);
    fm_threadpool *pool = fm_run_pool(rc);
    size_t mark = fm_run_mark(rc);
    fm_tensor a = {0}, b = {0}, side[4] = {{0}, in[1], in[2], in[3]};
    if (st == FM_OK)
        st = fm_module_forward(fm_module_child_named(self, "norm1"), rc, &out[0], 1, &a, 1, err);
    side[0] = a;
    if (st == FM_OK)
        st = fm_module_forward(fm_module_child_named(self, "attn"), rc, side, 4, &b, 1, err);
    if (st == FM_OK) fm_k_add(out[0].data, b.data, n, pool);
    if (st == FM_OK)
        st = fm_module_forward(fm_module_child_named(self, "norm2"), rc, &out[0], 1, &a, 1, err);
    if (st == FM_OK)
        st = fm_module_forward(fm_module_child_named(self, "mlp"), rc, &a, 1, &b, 1, err);
    if (st == FM_OK) fm_k_add(out[0].data, b.data, n, pool);
    fm_run_release(rc, mark);
    return st;
}

/* ---- PatchMerger: in[0] [N][context_dim] -> out[0] [N/m²][dim] -------------------------------
 * ln_q per patch, then the m² consecutive rows of a merge group are one row of the [N/m²][m²·C]
 * view (no copy), then mlp (Linear, GELU, Linear). */
typedef struct merger_impl {
    int64_t dim, context, merge;
} merger_impl;

fm_status fm_qwen2vl_merger_forward(fm_module *self, fm_run_ctx *rc, const fm_tensor *in,
                                    size_t n_in, fm_tensor *out, size_t n_out, fm_error *err) {
    const merger_impl *mi = fm_module_impl(self);
    int64_t m2 = mi->merge * mi->merge;
    fm_status st = fm_module_check_input(self, in, n_in, 0, FM_DTYPE_F32, 2, mi->context, err);
    if (st == FM_OK && in[0].shape.dims[0] % m2)
        st = fm_error_set(err, FM_ERR_INPUT, "module '%s': %lld rows are not whole groups of %lld",
                          fm_module_path(self), (long long)in[0].shape.dims[0], (long long)m2);
    if (st != FM_OK || n_out < 1)
        return st != FM_OK ? st : fm_error_set(err, FM_ERR_INVALID_ARG, "merger: one output");
    fm_shape os = {2, {in[0].shape.dims[0] / m2, mi->dim}},
             wide = {2, {in[0].shape.dims[0] / m2, m2 * mi->context}};
    st = fm_module_output(self, rc, &out[0], FM_DTYPE_F32, &os, err);
    size_t mark = fm_run_mark(rc);
    fm_tensor a = {0}, view = {0};
    if (st == FM_OK)
        st = fm_module_forward(fm_module_child_named(self, "ln_q"), rc, &in[0], 1, &a, 1, err);
    if (st == FM_OK) st = fm_tensor_reshape(&view, &a, &wide, err);
    if (st == FM_OK)
        st = fm_module_forward(fm_module_child_named(self, "mlp"), rc, &view, 1, &out[0], 1, err);
    fm_tensor_free(&view);
    fm_run_release(rc, mark);
    return st;
}

/* ---- the per-grid plan of a tower forward (shared with Qwen3-VL) ---------------------------
 * Per input grid (cached while it repeats): cu_seqlens (one segment per temporal slice) and the
 * rotary position ids (rot_pos_emb: block-major (row, col)). */
void fm_qwen2vl_plan_clear(fm_qwen2vl_plan *t) {
    fm_free(t->grid);
    fm_free(t->cu);
    fm_free(t->pos);
    t->grid = NULL, t->cu = NULL, t->pos = NULL;
    t->n_images = 0, t->n = 0, t->n_seg = 0;
}

/* Validates grid [n][3]: t, h, w >= 1, h and w multiples of the merge size, totals within int32. */
fm_status fm_qwen2vl_check_grid(const int64_t *g, int n_images, int64_t m, int64_t *patches,
                                int *segs, fm_error *err) {
    int64_t n = 0, nseg = 0;
    for (int i = 0; i < n_images; i++) {
        int64_t tt = g[3 * i], gh = g[3 * i + 1], gw = g[3 * i + 2];
        if (tt < 1 || gh < 1 || gw < 1 || gh % m || gw % m || gh > INT_MAX || gw > INT_MAX ||
            tt > INT_MAX)
            return fm_error_set(
                err, FM_ERR_INPUT,
                "image_grid_thw[%d] = (%lld, %lld, %lld): t, h, w must be >= 1 and h, w multiples "
                "of spatial_merge_size %lld",
                i, (long long)tt, (long long)gh, (long long)gw, (long long)m);
        uint64_t hw, thw;
        if (fm_mul_u64((uint64_t)gh, (uint64_t)gw, &hw) || fm_mul_u64(hw, (uint64_t)tt, &thw) ||
            thw > (uint64_t)INT32_MAX - (uint64_t)n)
            return fm_error_set(err, FM_ERR_INPUT,
                                "image_grid_thw: %d images exceed %d patches in total", n_images,
                                INT32_MAX);
        n += (int64_t)thw;
        nseg += tt;
    }
    if (nseg > INT_MAX - 1)
        return fm_error_set(err, FM_ERR_INPUT, "image_grid_thw: too many temporal slices (%lld)",
                            (long long)nseg);
    *patches = n;
    *segs = (int)nseg;
    return FM_OK;
}

static void fill_plan(fm_qwen2vl_plan *t) {
    int64_t r = 0, m = t->merge;
    int s = 0;
    t->cu[0] = 0;
    for (int i = 0; i < t->n_images; i++) {
        int64_t tt = t->grid[3 * i], gh = t->grid[3 * i + 1], gw = t->grid[3 * i + 2];
        for (int64_t f = 0; f < tt; f++, s++) {
            t->cu[s + 1] = t->cu[s] + (int32_t)(gh * gw);
            for (int64_t bh = 0; bh < gh / m; bh++)
                for (int64_t bw = 0; bw < gw / m; bw++)
                    for (int64_t ih = 0; ih < m; ih++)
                        for (int64_t iw = 0; iw < m; iw++, r++) {
                            t->pos[2 * r] = (int32_t)(bh * m + ih);
                            t->pos[2 * r + 1] = (int32_t)(bw * m + iw);
                        }
        }
    }
}

static fm_status ensure_plan(fm_module *self, fm_qwen2vl_plan *t, const int64_t *grid, int n_images,
                             fm_error *err) {
    if (t->grid && t->n_images == n_images &&
        !memcmp(t->grid, grid, (size_t)n_images * 3 * sizeof *grid))
        return FM_OK;
    int64_t n = 0;
    int segs = 0;
    fm_status st = fm_qwen2vl_check_grid(grid, n_images, t->merge, &n, &segs, err);
    if (st != FM_OK) return st;
    fm_qwen2vl_plan_clear(t);
    t->grid = fm_malloc((size_t)n_images * 3 * sizeof *grid);
    t->cu = fm_malloc(((size_t)segs + 1) * sizeof *t->cu);
    t->pos = fm_malloc((size_t)(n ? n : 1) * 2 * sizeof *t->pos);
    if (!t->grid || !t->cu || !t->pos) {
        fm_qwen2vl_plan_clear(t);
        return fm_error_set(err, FM_ERR_NOMEM, "module '%s': out of memory planning %lld patches",
                            fm_module_path(self), (long long)n);
    }
    memcpy(t->grid, grid, (size_t)n_images * 3 * sizeof *grid);
    t->n_images = n_images, t->n = n, t->n_seg = segs;
    fill_plan(t);
    return FM_OK;
}

fm_status fm_qwen2vl_plan_inputs(fm_module *self, fm_qwen2vl_plan *t, int64_t k,
                                 const fm_tensor *in, size_t n_in, fm_error *err) {
    fm_status st = fm_module_check_input(self, in, n_in, 0, FM_DTYPE_F32, 2, k, err);
    if (st == FM_OK) st = fm_module_check_input(self, in, n_in, 1, FM_DTYPE_I64, 2, 3, err);
    if (st == FM_OK && (in[1].shape.dims[0] < 1 || in[1].shape.dims[0] > INT_MAX))
        st = fm_error_set(err, FM_ERR_INPUT, "%s: image_grid_thw needs 1 to %d images, got %lld",
                          fm_module_path(self), INT_MAX, (long long)in[1].shape.dims[0]);
    if (st == FM_OK) st = ensure_plan(self, t, in[1].data, (int)in[1].shape.dims[0], err);
    if (st == FM_OK && in[0].shape.dims[0] != t->n) {
        char a[128];
        st = fm_error_set(
            err, FM_ERR_INPUT,
            "%s: pixel_values %s has %lld rows but image_grid_thw describes %lld patches",
            fm_module_path(self), fm_shape_format(&in[0].shape, a, sizeof a),
            (long long)in[0].shape.dims[0], (long long)t->n);
    }
    return st;
}

fm_status fm_qwen2vl_plan_rope(fm_module *self, fm_run_ctx *rc, const fm_qwen2vl_plan *t,
                               int64_t hd, fm_tensor rope[2], fm_tensor *cu, fm_error *err) {
    fm_shape pos_s = {2, {t->n, 2}}, cu_s = {1, {t->n_seg + 1}};
    fm_tensor pos = {FM_DTYPE_I32, pos_s, t->pos, (uint64_t)t->n * 8, NULL};
    *cu = (fm_tensor){FM_DTYPE_I32, cu_s, t->cu, (uint64_t)(t->n_seg + 1) * 4, NULL};
    fm_status st =
        fm_module_forward(fm_module_child_named(self, "rotary_pos_emb"), rc, &pos, 1, rope, 2, err);
    if (st == FM_OK && (rope[0].shape.dims[1] != hd / 2))
        st = fm_error_set(err, FM_ERR_CONFIG, "%s: rotary tables are %lld wide, heads need %lld",
                          fm_module_path(self), (long long)rope[0].shape.dims[1],
                          (long long)(hd / 2));
    return st;
}

/* ---- Qwen2VisionTransformerPretrainedModel ----------------------------------------------------
 * in[0] pixel_values F32 [N][C*T*P*P], in[1] image_grid_thw I64 [n][3] -> out[0] [N/m²][hidden]. */
typedef struct tower_impl {
    fm_qwen2vl_vision_config v;
    fm_qwen2vl_plan plan;
} tower_impl;

static void tower_impl_free(void *p) {
    tower_impl *t = p;
    if (!t) return;
    fm_qwen2vl_plan_clear(&t->plan);
    fm_free(t);
}

static fm_status tower_forward(fm_module *self, fm_run_ctx *rc, const fm_tensor *in, size_t n_in,
                               fm_tensor *out, size_t n_out, fm_error *err) {
    tower_impl *t = fm_module_impl(self);
    int64_t m2 = t->v.spatial_merge_size * t->v.spatial_merge_size,
            hd = t->v.embed_dim / t->v.num_heads,
            k = t->v.in_channels * t->v.temporal_patch_size * t->v.patch_size * t->v.patch_size;
    fm_status st = fm_qwen2vl_plan_inputs(self, &t->plan, k, in, n_in, err);
    if (st != FM_OK || n_out < 1)
        return st != FM_OK ? st : fm_error_set(err, FM_ERR_INVALID_ARG, "tower: one output");
    fm_shape os = {2, {t->plan.n / m2, t->v.hidden_size}};
    st = fm_module_output(self, rc, &out[0], FM_DTYPE_F32, &os, err);
    size_t mark = fm_run_mark(rc);
    fm_tensor h = {0}, rope[2] = {{0}, {0}}, cu = {0};
    if (st == FM_OK)
        st = fm_module_forward(fm_module_child_named(self, "patch_embed"), rc, &in[0], 1, &h, 1,
                               err);
    if (st == FM_OK) st = fm_qwen2vl_plan_rope(self, rc, &t->plan, hd, rope, &cu, err);
    fm_module *blocks = fm_module_child_named(self, "blocks");
    for (int64_t i = 0; st == FM_OK && i < t->v.depth; i++) {
        fm_tensor bin[4] = {h, cu, rope[0], rope[1]};
        st = fm_module_forward(fm_module_child(blocks, (size_t)i), rc, bin, 4, &h, 1, err);
        if (st == FM_OK) fm_run_ctx_progress(rc, (int)i + 1, (int)t->v.depth);
    }
    if (st == FM_OK)
        st = fm_module_forward(fm_module_child_named(self, "merger"), rc, &h, 1, &out[0], 1, err);
    fm_run_release(rc, mark);
    return st;
}

/* ---- constructors (transformers' class names and attribute order, qwen2-vl.md §2)
 * ---------------- */
#define CFG(ctx) ((const fm_qwen2vl_config *)fm_build_ctx_model_cfg(ctx))

/* PatchEmbed(patch_size, temporal_patch_size, in_channels, embed_dim, bias = 0):
 * proj = Conv3d(in, embed, kernel = stride = (T, P, P)). */
fm_status fm_qwen2vl_patch_embed_init(fm_module *m, fm_build_ctx *ctx, const fm_args *a,
                                      fm_error *err) {
    patch_impl p = {fm_args_int(a, "patch_size", 14), fm_args_int(a, "temporal_patch_size", 2),
                    fm_args_int(a, "in_channels", 3), fm_args_int(a, "embed_dim", 1152)};
    MK(m, "proj", "Conv3d",
       &FM_ARGS(FM_I("in", p.channels), FM_I("out", p.embed), FM_I("k0", p.temporal),
                FM_I("k1", p.patch), FM_I("k2", p.patch), FM_I("s0", p.temporal),
                FM_I("s1", p.patch), FM_I("s2", p.patch), FM_I("bias", fm_args_int(a, "bias", 0))));
    return fm_module_set_impl_copy(m, &p, sizeof p, err);
}

/* VisionRotaryEmbedding(dim = head_dim / 2): no parameters (inv_freq is recomputed). */
fm_status fm_qwen2vl_vision_rotary_init(fm_module *m, fm_build_ctx *ctx, const fm_args *a,
                                        fm_error *err) {
    rotary_impl r = {fm_args_int(a, "dim", 0)};
    (void)ctx;
    if (r.dim < 2 || r.dim % 2 || r.dim > 512)
        return fm_error_set(err, FM_ERR_CONFIG,
                            "module '%s': rotary dim %lld must be even and in [2, 512]",
                            fm_module_path(m), (long long)r.dim);
    return fm_module_set_impl_copy(m, &r, sizeof r, err);
}

/* VisionAttention(dim, heads): qkv = Linear(dim, 3·dim), proj = Linear(dim, dim), both biased. */
fm_status fm_qwen2vl_vision_attention_build(fm_module *m, fm_build_ctx *ctx, int64_t dim,
                                            int64_t heads, fm_error *err) {
    attn_impl at = {dim, heads};
    MK(m, "qkv", "Linear", &FM_ARGS(FM_I("in", at.dim), FM_I("out", 3 * at.dim), FM_I("bias", 1)));
    MK(m, "proj", "Linear", &FM_ARGS(FM_I("in", at.dim), FM_I("out", at.dim), FM_I("bias", 1)));
    return fm_module_set_impl_copy(m, &at, sizeof at, err);
}

static fm_status attention_init(fm_module *m, fm_build_ctx *ctx, const fm_args *a, fm_error *err) {
    (void)a;
    return fm_qwen2vl_vision_attention_build(m, ctx, CFG(ctx)->v.embed_dim, CFG(ctx)->v.num_heads,
                                             err);
}

static fm_status mlp_init(fm_module *m, fm_build_ctx *ctx, const fm_args *a, fm_error *err) {
    const fm_qwen2vl_vision_config *v = &CFG(ctx)->v;
    (void)a;
    MK(m, "fc1", "Linear", &FM_ARGS(FM_I("in", v->embed_dim), FM_I("out", v->mlp_hidden)));
    MK(m, "act", fm_activation_class_name(v->act), NULL);
    MK(m, "fc2", "Linear", &FM_ARGS(FM_I("in", v->mlp_hidden), FM_I("out", v->embed_dim)));
    return FM_OK;
}

static fm_status block_init(fm_module *m, fm_build_ctx *ctx, const fm_args *a, fm_error *err) {
    int64_t d = CFG(ctx)->v.embed_dim;
    (void)a;
    MK(m, "norm1", "LayerNorm", &FM_ARGS(FM_I("dim", d), FM_D("eps", 1e-6)));
    MK(m, "norm2", "LayerNorm", &FM_ARGS(FM_I("dim", d), FM_D("eps", 1e-6)));
    MK(m, "attn", "VisionAttention", NULL);
    MK(m, "mlp", "VisionMlp", NULL);
    return FM_OK;
}

/* PatchMerger(dim = out width, context_dim = embed, spatial_merge_size) with ln_q of class
 * norm_class. */
fm_status fm_qwen2vl_merger_init(fm_module *m, fm_build_ctx *ctx, const fm_args *a,
                                 const char *norm_class, fm_error *err) {
    merger_impl mi = {fm_args_int(a, "dim", 0), fm_args_int(a, "context_dim", 0),
                      fm_args_int(a, "spatial_merge_size", 2)};
    int64_t hid = mi.context * mi.merge * mi.merge;
    fm_module *mlp = NULL;
    MK(m, "ln_q", norm_class, &FM_ARGS(FM_I("dim", mi.context), FM_D("eps", 1e-6)));
    fm_status st = fm_module_create(ctx, m, "mlp", "Sequential", NULL, &mlp, err);
    if (st != FM_OK) return st;
    MK(mlp, "0", "Linear", &FM_ARGS(FM_I("in", hid), FM_I("out", hid)));
    MK(mlp, "1", "GELU", NULL);
    MK(mlp, "2", "Linear", &FM_ARGS(FM_I("in", hid), FM_I("out", mi.dim)));
    return fm_module_set_impl_copy(m, &mi, sizeof mi, err);
}

static fm_status merger_init(fm_module *m, fm_build_ctx *ctx, const fm_args *a, fm_error *err) {
    return fm_qwen2vl_merger_init(m, ctx, a, "LayerNorm", err);
}

static fm_status tower_init(fm_module *m, fm_build_ctx *ctx, const fm_args *a, fm_error *err) {
    const fm_qwen2vl_vision_config *v = &CFG(ctx)->v;
    fm_module *blocks = NULL;
    (void)a;
    tower_impl *t = fm_calloc(1, sizeof *t);
    if (!t)
        return fm_error_set(err, FM_ERR_NOMEM, "out of memory building '%s'", fm_module_path(m));
    t->v = *v;
    t->plan.merge = v->spatial_merge_size;
    fm_module_set_impl(m, t);
    MK(m, "patch_embed", "PatchEmbed",
       &FM_ARGS(FM_I("patch_size", v->patch_size),
                FM_I("temporal_patch_size", v->temporal_patch_size),
                FM_I("in_channels", v->in_channels), FM_I("embed_dim", v->embed_dim)));
    MK(m, "rotary_pos_emb", "VisionRotaryEmbedding",
       &FM_ARGS(FM_I("dim", v->embed_dim / v->num_heads / 2)));
    fm_status st = fm_module_create(ctx, m, "blocks", "ModuleList", NULL, &blocks, err);
    for (int64_t i = 0; st == FM_OK && i < v->depth; i++) {
        char name[24];
        snprintf(name, sizeof name, "%lld", (long long)i);
        st = fm_module_create(ctx, blocks, name, "Qwen2VLVisionBlock", NULL, NULL, err);
    }
    if (st != FM_OK) return st;
    MK(m, "merger", "PatchMerger",
       &FM_ARGS(FM_I("dim", v->hidden_size), FM_I("context_dim", v->embed_dim),
                FM_I("spatial_merge_size", v->spatial_merge_size)));
    return FM_OK;
}

static const fm_module_class vision_classes[] = {
    {"PatchEmbed", fm_qwen2vl_patch_embed_init, fm_qwen2vl_patch_embed_prepare,
     fm_qwen2vl_patch_embed_forward, fm_free, NULL},
    {"VisionRotaryEmbedding", fm_qwen2vl_vision_rotary_init, NULL, fm_qwen2vl_vision_rotary_forward,
     fm_free, NULL},
    {"VisionAttention", attention_init, NULL, fm_qwen2vl_vision_attention_forward, fm_free, NULL},
    {"VisionMlp", mlp_init, NULL, mlp_forward, NULL, NULL},
    {"Qwen2VLVisionBlock", block_init, NULL, fm_qwen2vl_block_forward, NULL, NULL},
    {"PatchMerger", merger_init, NULL, fm_qwen2vl_merger_forward, fm_free, NULL},
    {"Qwen2VisionTransformerPretrainedModel", tower_init, NULL, tower_forward, tower_impl_free,
     NULL},
};

fm_status fm_qwen2vl_register_vision_classes(fm_error *err) {
    fm_status st = FM_OK;
    for (size_t i = 0; st == FM_OK && i < sizeof vision_classes / sizeof *vision_classes; i++)
        st = fm_class_register(&vision_classes[i], false, err);
    return st;
}
