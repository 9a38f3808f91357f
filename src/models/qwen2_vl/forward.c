/* Forwards of the Qwen2-VL vision tower module and its patch embedding: the tower gathers
 * its weights as f32 once (views when already f32 and aligned, one converted copy
 * otherwise), plans scratch once per input grid, and runs the functional forward. A fused
 * patch embedding (a `linear_proj` child) runs as one GEMM, the original as a Conv3d. */
#include <stdio.h>
#include <string.h>

#include "fusemap/models.h"
#include "models/qwen2_vl/qwen2_vl.h"
#include "models/qwen2_vl/forward.h"
#include "models/qwen2_vl/vision.h"
#include "nn/builtins.h"

/* Tower state: the config copy (set at init) and, after the first forward, the f32 weights. */
typedef struct tower_impl {
    fm_qwen2vl_vision_config v;
    int ready;
    fm_tensor *owned; /* converted copies (one per non-f32 parameter) */
    size_t n_owned;
    fm_qwen2vl_block_w *blocks;
    fm_qwen2vl_vision_w w;
    fm_vision_plan *plan; /* last plan, reused while the grid and threads stay the same */
    int64_t *plan_grid;
    int plan_n, plan_threads;
} tower_impl;

void fm_qwen2vl_tower_impl_free(void *p) {
    tower_impl *t = p;
    if (!t) return;
    for (size_t i = 0; i < t->n_owned; i++) fm_tensor_free(&t->owned[i]);
    fm_free(t->owned);
    fm_free(t->blocks);
    fm_vision_plan_free(t->plan);
    fm_free(t->plan_grid);
    fm_free(t);
}

fm_status fm_qwen2vl_tower_impl_new(fm_module *m, const fm_qwen2vl_vision_config *v, fm_error *err) {
    tower_impl *t = fm_calloc(1, sizeof *t);
    if (!t) return fm_error_set(err, FM_ERR_NOMEM, "out of memory building '%s'", fm_module_path(m));
    t->v = *v;
    fm_module_set_impl(m, t);
    return FM_OK;
}

/* f32 pointer of parameter `pname` of module `path` under the tower. */
static fm_status weight(fm_module *tower, tower_impl *t, const char *path, const char *pname, const float **out,
                        fm_error *err) {
    fm_module *m = fm_module_find(tower, path);
    fm_param *p = m ? fm_module_param_named(m, pname) : NULL;
    *out = NULL;
    if (!p) return fm_error_set(err, FM_ERR_INTERNAL, "vision tower has no parameter %s.%s", path, pname);
    fm_tensor tmp;
    fm_status st = fm_param_f32(m, p, out, &tmp, err);
    if (st != FM_OK || !tmp.data) return st;
    fm_tensor *no = fm_realloc(t->owned, (t->n_owned + 1) * sizeof *no);
    if (!no) {
        fm_tensor_free(&tmp);
        return fm_error_set(err, FM_ERR_NOMEM, "out of memory preparing weights");
    }
    t->owned = no;
    t->owned[t->n_owned++] = tmp;
    return FM_OK;
}

static fm_status gather_patch(fm_module *tower, tower_impl *t, fm_error *err) {
    fm_module *pe = fm_module_child_named(tower, "patch_embed");
    fm_module *lin = pe ? fm_module_child_named(pe, "linear_proj") : NULL;
    fm_module *conv = pe ? fm_module_child_named(pe, "proj") : NULL;
    fm_qwen2vl_vision_w *w = &t->w;
    const char *sub = lin ? "patch_embed.linear_proj" : "patch_embed.proj";
    fm_module *pm = lin ? lin : conv;
    if (!pm) return fm_error_set(err, FM_ERR_INTERNAL, "patch_embed has neither proj nor linear_proj");
    w->patch_fused = lin != NULL;
    fm_status st = weight(tower, t, sub, "weight", &w->patch_w, err);
    if (st == FM_OK && fm_module_param_named(pm, "bias")) st = weight(tower, t, sub, "bias", &w->patch_b, err);
    if (st != FM_OK || lin) return st;
    const fm_conv3d_impl *c = fm_module_impl(conv);
    w->conv = (fm_conv3d_params){(int)c->out, (int)c->in, {0}, {0}, {0}, {0}, (int)c->groups};
    for (int i = 0; i < 3; i++) {
        w->conv.k[i] = (int)c->k[i];
        w->conv.stride[i] = (int)c->s[i];
        w->conv.pad[i] = (int)c->p[i];
        w->conv.dil[i] = (int)c->d[i];
    }
    return FM_OK;
}

static fm_status gather_block(fm_module *tower, tower_impl *t, int64_t i, fm_error *err) {
    static const char *const subs[6] = {"norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2"};
    fm_qwen2vl_block_w *b = &t->blocks[i];
    const float **slots[6][2] = {{&b->norm1_w, &b->norm1_b}, {&b->qkv_w, &b->qkv_b}, {&b->proj_w, &b->proj_b},
                                 {&b->norm2_w, &b->norm2_b}, {&b->fc1_w, &b->fc1_b}, {&b->fc2_w, &b->fc2_b}};
    fm_status st = FM_OK;
    for (int k = 0; st == FM_OK && k < 6; k++) {
        char path[96];
        snprintf(path, sizeof path, "blocks.%lld.%s", (long long)i, subs[k]);
        st = weight(tower, t, path, "weight", slots[k][0], err);
        if (st == FM_OK) st = weight(tower, t, path, "bias", slots[k][1], err);
    }
    return st;
}

static fm_status gather(fm_module *tower, tower_impl *t, fm_error *err) {
    t->blocks = fm_calloc((size_t)t->v.depth, sizeof *t->blocks);
    if (!t->blocks) return fm_error_set(err, FM_ERR_NOMEM, "out of memory preparing weights");
    fm_status st = gather_patch(tower, t, err);
    for (int64_t i = 0; st == FM_OK && i < t->v.depth; i++) st = gather_block(tower, t, i, err);
    fm_qwen2vl_vision_w *w = &t->w;
    if (st == FM_OK) st = weight(tower, t, "merger.ln_q", "weight", &w->ln_q_w, err);
    if (st == FM_OK) st = weight(tower, t, "merger.ln_q", "bias", &w->ln_q_b, err);
    if (st == FM_OK) st = weight(tower, t, "merger.mlp.0", "weight", &w->mlp0_w, err);
    if (st == FM_OK) st = weight(tower, t, "merger.mlp.0", "bias", &w->mlp0_b, err);
    if (st == FM_OK) st = weight(tower, t, "merger.mlp.2", "weight", &w->mlp2_w, err);
    if (st == FM_OK) st = weight(tower, t, "merger.mlp.2", "bias", &w->mlp2_b, err);
    w->blocks = t->blocks;
    t->ready = st == FM_OK;
    return st;
}

static void vision_cfg(const fm_qwen2vl_vision_config *v, fm_qwen2vl_vision_cfg *c) {
    *c = (fm_qwen2vl_vision_cfg){(int)v->depth, (int)v->embed_dim, (int)v->hidden_size, (int)v->num_heads,
                                 (int)v->mlp_hidden, (int)v->in_channels, (int)v->patch_size,
                                 (int)v->temporal_patch_size, (int)v->spatial_merge_size,
                                 fm_act_from_name(v->act_name), 1e-6f};
}

static fm_status check_inputs(const fm_module *m, const tower_impl *t, const fm_tensor *in, size_t n_in, fm_error *err) {
    char a[128], b[128];
    int64_t K = t->v.in_channels * t->v.temporal_patch_size * t->v.patch_size * t->v.patch_size;
    if (n_in < 2) return fm_error_set(err, FM_ERR_INPUT, "vision tower needs pixel_values and image_grid_thw");
    if (in[0].dtype != FM_DTYPE_F32 || in[0].shape.ndim != 2 || in[0].shape.dims[1] != K)
        return fm_error_set(err, FM_ERR_INPUT, "%s: pixel_values is %s %s, the model expects F32 [N, %lld]",
                            fm_module_path(m), fm_dtype_name(in[0].dtype), fm_shape_format(&in[0].shape, a, sizeof a),
                            (long long)K);
    if (in[1].dtype != FM_DTYPE_I64 || in[1].shape.ndim != 2 || in[1].shape.dims[1] != 3 || in[1].shape.dims[0] < 1)
        return fm_error_set(err, FM_ERR_INPUT, "%s: image_grid_thw is %s %s, expected I64 [n, 3]", fm_module_path(m),
                            fm_dtype_name(in[1].dtype), fm_shape_format(&in[1].shape, b, sizeof b));
    return FM_OK;
}

static fm_status ensure_plan(tower_impl *t, const int64_t *grid, int n, int threads, fm_error *err) {
    if (t->plan && t->plan_n == n && t->plan_threads == threads &&
        !memcmp(t->plan_grid, grid, (size_t)n * 3 * sizeof *grid))
        return FM_OK;
    fm_vision_plan_free(t->plan);
    fm_free(t->plan_grid);
    t->plan = NULL;
    t->plan_grid = fm_malloc((size_t)n * 3 * sizeof *grid);
    if (!t->plan_grid) return fm_error_set(err, FM_ERR_NOMEM, "out of memory planning the forward");
    memcpy(t->plan_grid, grid, (size_t)n * 3 * sizeof *grid);
    t->plan_n = n;
    t->plan_threads = threads;
    fm_qwen2vl_vision_cfg c;
    vision_cfg(&t->v, &c);
    return fm_vision_plan_new(&c, grid, n, threads, &t->plan, err);
}

fm_status fm_qwen2vl_tower_forward(fm_module *self, fm_run_ctx *rc, const fm_tensor *in, size_t n_in, fm_tensor *out,
                                   size_t n_out, fm_error *err) {
    tower_impl *t = fm_module_impl(self);
    if (!t || n_out < 1) return fm_error_set(err, FM_ERR_INVALID_ARG, "vision tower misused");
    fm_status st = check_inputs(self, t, in, n_in, err);
    if (st == FM_OK && !t->ready) st = gather(self, t, err);
    int n = (int)in[1].shape.dims[0];
    if (st == FM_OK) st = ensure_plan(t, in[1].data, n, rc ? rc->threads : 0, err);
    if (st != FM_OK) return st;
    fm_shape os = {2, {fm_vision_plan_tokens(t->plan), t->v.hidden_size}};
    if (in[0].shape.dims[0] != fm_vision_plan_patches(t->plan)) {
        char a[128];
        return fm_error_set(err, FM_ERR_INPUT, "pixel_values %s has %lld rows but image_grid_thw describes %lld patches",
                            fm_shape_format(&in[0].shape, a, sizeof a), (long long)in[0].shape.dims[0],
                            (long long)fm_vision_plan_patches(t->plan));
    }
    st = fm_tensor_alloc(&out[0], FM_DTYPE_F32, &os, err);
    fm_qwen2vl_vision_cfg c;
    vision_cfg(&t->v, &c);
    if (st == FM_OK)
        st = fm_qwen2vl_vision_forward(t->plan, &c, &t->w, in[0].data, in[0].shape.dims[0], out[0].data,
                                       rc ? rc->progress : NULL, rc ? rc->progress_ctx : NULL, err);
    if (st != FM_OK) fm_tensor_free(&out[0]);
    return st;
}

/* PatchEmbed.forward: view (-1, C, T, P, P), Conv3d, view (-1, embed_dim). */
fm_status fm_qwen2vl_patch_embed_forward(fm_module *self, fm_run_ctx *rc, const fm_tensor *in, size_t n_in,
                                         fm_tensor *out, size_t n_out, fm_error *err) {
    fm_module *proj = fm_module_child_named(self, "proj");
    const fm_conv3d_impl *c = proj ? fm_module_impl(proj) : NULL;
    if (!c || n_in < 1 || n_out < 1) return fm_error_set(err, FM_ERR_INVALID_ARG, "PatchEmbed misused");
    int64_t K = c->in * c->k[0] * c->k[1] * c->k[2];
    uint64_t numel = fm_tensor_numel(&in[0]);
    if (in[0].dtype != FM_DTYPE_F32 || numel % (uint64_t)K)
        return fm_error_set(err, FM_ERR_INPUT, "%s: input is not a whole number of %lld-value patches",
                            fm_module_path(self), (long long)K);
    fm_shape s5 = {5, {(int64_t)(numel / (uint64_t)K), c->in, c->k[0], c->k[1], c->k[2]}};
    fm_tensor v5, conv_out;
    fm_status st = fm_tensor_reshape(&v5, &in[0], &s5, err);
    if (st == FM_OK) st = fm_module_class_of(proj)->forward(proj, rc, &v5, 1, &conv_out, 1, err);
    fm_tensor_free(&v5);
    if (st != FM_OK) return st;
    fm_shape s2 = {2, {(int64_t)(fm_tensor_numel(&conv_out) / (uint64_t)c->out), c->out}};
    st = fm_tensor_reshape(&out[0], &conv_out, &s2, err);
    fm_tensor_free(&conv_out);
    return st;
}

fm_status fm_model_vision_forward(fm_model *m, const fm_tensor *pixel_values, const fm_tensor *image_grid_thw,
                                  const fm_run_ctx *rc, fm_tensor *out, fm_error *err) {
    fm_module *tower = fm_module_find(fm_model_root(m), "model.visual");
    memset(out, 0, sizeof *out);
    if (!tower || !fm_module_class_of(tower)->forward)
        return fm_error_set(err, FM_ERR_UNSUPPORTED, "model %s has no runnable vision tower (model.visual)",
                            fm_model_architecture(m));
    fm_tensor in[2] = {*pixel_values, *image_grid_thw};
    fm_run_ctx local = rc ? *rc : (fm_run_ctx){0, NULL, NULL};
    return fm_module_class_of(tower)->forward(tower, &local, in, 2, out, 1, err);
}
