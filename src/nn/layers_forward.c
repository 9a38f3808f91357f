/* Prepare and forward of the generic layers. Prepare turns parameters into f32 (views when
 * they already are, converted copies otherwise); forward checks its inputs, places its output
 * (the caller's buffer or scratch) and runs the kernel on the run context's pool. */
#include <stdint.h>
#include <string.h>

#include "nn/kernels.h"
#include "nn/layers.h"
#include "nn/run.h"

fm_status fm_param_f32(const fm_module *m, const fm_param *p, const float **out, fm_tensor *own,
                       fm_error *err) {
    memset(own, 0, sizeof *own);
    *out = NULL;
    if (!p->tensor.data)
        return fm_error_set(err, FM_ERR_INPUT, "parameter %s.%s has no data (not loaded)",
                            fm_module_path(m), p->name);
    if (p->tensor.dtype == FM_DTYPE_F32 && ((uintptr_t)p->tensor.data % sizeof(float)) == 0) {
        *out = p->tensor.data;
        return FM_OK;
    }
    fm_status st = fm_tensor_cast(own, &p->tensor, FM_DTYPE_F32, err);
    if (st != FM_OK) {
        fm_error_prefix(err, "parameter %s.%s", fm_module_path(m), p->name);
        return st;
    }
    *out = own->data;
    return FM_OK;
}

/* Prepares weight (param 0) and, when present, bias (param 1) into f32. */
static fm_status prepare_wb(fm_module *m, bool bias, const float **w, fm_tensor *w_own,
                            const float **b, fm_tensor *b_own, fm_error *err) {
    fm_tensor_free(w_own);
    fm_tensor_free(b_own);
    *b = NULL;
    fm_status st = fm_param_f32(m, fm_module_param(m, 0), w, w_own, err);
    if (st == FM_OK && bias) st = fm_param_f32(m, fm_module_param(m, 1), b, b_own, err);
    return st;
}

/* ---- Linear: in[0] F32 [..., in] -> out[0] F32 [..., out] (must not alias) ----------------- */
void fm_linear_impl_free(void *p) {
    fm_linear_impl *li = p;
    if (!li) return;
    fm_tensor_free(&li->w_own);
    fm_tensor_free(&li->b_own);
    fm_free(li);
}

/* 16-bit weights stay as stored (2-byte aligned is enough for the kernels); anything else
 * becomes f32 (a view when it already is, aligned). */
fm_status fm_linear_prepare(fm_module *self, fm_run_ctx *rc, fm_error *err) {
    fm_linear_impl *li = fm_module_impl(self);
    const fm_tensor *w = &fm_module_param(self, 0)->tensor;
    (void)rc;
    if (w->data && (w->dtype == FM_DTYPE_BF16 || w->dtype == FM_DTYPE_F16) &&
        (uintptr_t)w->data % 2 == 0) {
        fm_tensor_free(&li->w_own);
        fm_tensor_free(&li->b_own);
        li->w = w->data;
        li->wdt = w->dtype;
        li->b = NULL;
        return li->g.bias ? fm_param_f32(self, fm_module_param(self, 1), &li->b, &li->b_own, err)
                          : FM_OK;
    }
    const float *wf = NULL;
    fm_status st = prepare_wb(self, li->g.bias, &wf, &li->w_own, &li->b, &li->b_own, err);
    li->w = wf;
    li->wdt = FM_DTYPE_F32;
    return st;
}

/* Output features [first, first + n) of the Linear (all of them: first 0, n out_features). */
static fm_status linear_run(fm_module *self, fm_run_ctx *rc, const fm_tensor *in, size_t n_in,
                            fm_tensor *out, int act, int64_t first, int64_t n, fm_error *err) {
    const fm_linear_impl *li = fm_module_impl(self);
    fm_status st =
        fm_module_check_input(self, in, n_in, 0, FM_DTYPE_F32, -1, li->g.in_features, err);
    fm_shape os = in[0].shape;
    os.dims[os.ndim - 1] = n;
    if (st == FM_OK) st = fm_module_output(self, rc, out, FM_DTYPE_F32, &os, err);
    if (st != FM_OK) return st;
    int64_t rows = (int64_t)(fm_tensor_numel(&in[0]) / (uint64_t)li->g.in_features);
    int64_t k = li->g.in_features;
    const float *b = li->b ? li->b + first : NULL;
    const void *w = (const char *)li->w + (size_t)(first * k) * fm_dtype_bits(li->wdt) / 8;
    if (li->wdt == FM_DTYPE_F32 && rows > 8) { /* GEMM tiles straight on the f32 weight */
        fm_k_linear(out->data, n, in[0].data, w, b, rows, n, k, act, fm_run_pool(rc));
        return FM_OK;
    }
    /* 16-bit weights (converted panel by panel for many rows) and decode-sized f32 GEMV */
    size_t mark = fm_run_mark(rc),
           sf = fm_k_linear_w_scratch_floats(rows, n, k, fm_run_ctx_threads(rc));
    float *scratch = NULL;
    st = sf ? fm_run_scratch(rc, sf * sizeof(float), (void **)&scratch, err) : FM_OK;
    if (st == FM_OK)
        fm_k_linear_w(out->data, n, in[0].data, k, w, li->wdt, b, rows, n, k, act, scratch,
                      fm_run_pool(rc));
    fm_run_release(rc, mark);
    return st;
}

fm_status fm_linear_forward(fm_module *self, fm_run_ctx *rc, const fm_tensor *in, size_t n_in,
                            fm_tensor *out, size_t n_out, fm_error *err) {
    if (n_out < 1)
        return fm_error_set(err, FM_ERR_INVALID_ARG, "Linear '%s': one output",
                            fm_module_path(self));
    const fm_linear_impl *li = fm_module_impl(self);
    return linear_run(self, rc, in, n_in, &out[0], -1, 0, li->g.out_features, err);
}

/* A patched Linear: its whole forward, then columns [first, first + count) of each row. The
 * whole output stays in the caller's scratch frame, below y. */
static fm_status linear_rows_generic(fm_module *m, fm_run_ctx *rc, const fm_tensor *x,
                                     int64_t first, int64_t count, fm_tensor *y, fm_error *err) {
    fm_tensor full = {0};
    fm_status st = fm_module_forward(m, rc, x, 1, &full, 1, err);
    int64_t total = st == FM_OK ? full.shape.dims[full.shape.ndim - 1] : 0;
    if (st == FM_OK && (full.dtype != FM_DTYPE_F32 || first + count > total))
        st = fm_error_set(err, FM_ERR_INVALID_ARG,
                          "module '%s': output features [%lld, +%lld) outside its %lld",
                          fm_module_path(m), (long long)first, (long long)count, (long long)total);
    fm_shape os = full.shape;
    os.dims[os.ndim - 1] = count;
    if (st == FM_OK) st = fm_module_output(m, rc, y, FM_DTYPE_F32, &os, err);
    int64_t rows = total ? (int64_t)(fm_tensor_numel(&full) / (uint64_t)total) : 0;
    for (int64_t r = 0; st == FM_OK && r < rows; r++)
        memcpy((float *)y->data + r * count, (const float *)full.data + r * total + first,
               (size_t)count * sizeof(float));
    return st;
}

fm_status fm_linear_forward_act(fm_module *m, fm_run_ctx *rc, const fm_tensor *x, fm_tensor *y,
                                fm_activation act, fm_error *err) {
    if ((unsigned)act >= FM_ACTIVATION_COUNT)
        return fm_error_set(err, FM_ERR_INVALID_ARG, "activation %d out of range", (int)act);
    if (fm_module_class_of(m)->forward !=
        fm_linear_forward) { /* patched: same result in two passes */
        fm_status st = fm_module_forward(m, rc, x, 1, y, 1, err);
        if (st == FM_OK) fm_op_activation(rc, y->data, y->data, (int64_t)fm_tensor_numel(y), act);
        return st;
    }
    if (!fm_module_is_prepared(m)) {
        fm_status st = fm_module_prepare(m, rc, err);
        if (st != FM_OK) return st;
    }
    const fm_linear_impl *li = fm_module_impl(m);
    return linear_run(m, rc, x, 1, y, (int)act, 0, li->g.out_features, err);
}

fm_status fm_linear_forward_rows(fm_module *m, fm_run_ctx *rc, const fm_tensor *x, int64_t first,
                                 int64_t count, fm_tensor *y, fm_error *err) {
    fm_linear_geometry g;
    fm_status st = fm_linear_geometry_of(m, &g, NULL);
    if (st != FM_OK && fm_module_class_of(m)->forward == fm_linear_forward) return st;
    if (st == FM_OK && (first < 0 || count < 1 || first + count > g.out_features))
        return fm_error_set(
            err, FM_ERR_INVALID_ARG, "Linear '%s': output features [%lld, +%lld) outside %lld",
            fm_module_path(m), (long long)first, (long long)count, (long long)g.out_features);
    if (fm_module_class_of(m)->forward != fm_linear_forward) /* patched: its forward, columns */
        return linear_rows_generic(m, rc, x, first, count, y, err);
    if (!fm_module_is_prepared(m)) {
        st = fm_module_prepare(m, rc, err);
        if (st != FM_OK) return st;
    }
    return linear_run(m, rc, x, 1, y, -1, first, count, err);
}

/* ---- Conv3d: in[0] F32 [B][C][T][H][W] -> out[0] F32 [B][O][oT][oH][oW] --------------------- */
void fm_conv3d_impl_free(void *p) {
    fm_conv3d_impl *c = p;
    if (!c) return;
    fm_tensor_free(&c->w_own);
    fm_tensor_free(&c->b_own);
    fm_free(c);
}

fm_status fm_conv3d_prepare(fm_module *self, fm_run_ctx *rc, fm_error *err) {
    fm_conv3d_impl *c = fm_module_impl(self);
    (void)rc;
    return prepare_wb(self, c->g.bias, &c->w, &c->w_own, &c->b, &c->b_own, err);
}

static fm_conv3d_params conv_params(const fm_conv3d_geometry *g) {
    fm_conv3d_params p = {(int)g->out_channels, (int)g->in_channels, {0}, {0}, {0}, {0},
                          (int)g->groups};
    for (int i = 0; i < 3; i++) {
        p.k[i] = (int)g->kernel[i];
        p.stride[i] = (int)g->stride[i];
        p.pad[i] = (int)g->padding[i];
        p.dil[i] = (int)g->dilation[i];
    }
    return p;
}

fm_status fm_conv3d_forward(fm_module *self, fm_run_ctx *rc, const fm_tensor *in, size_t n_in,
                            fm_tensor *out, size_t n_out, fm_error *err) {
    const fm_conv3d_impl *c = fm_module_impl(self);
    if (n_out < 1)
        return fm_error_set(err, FM_ERR_INVALID_ARG, "Conv3d '%s': one output",
                            fm_module_path(self));
    fm_status st = fm_module_check_input(self, in, n_in, 0, FM_DTYPE_F32, 5, -1, err);
    if (st != FM_OK) return st;
    if (in[0].shape.dims[1] != c->g.in_channels)
        return fm_error_set(
            err, FM_ERR_INPUT, "Conv3d '%s': input has %lld channels, expected %lld",
            fm_module_path(self), (long long)in[0].shape.dims[1], (long long)c->g.in_channels);
    fm_conv3d_params p = conv_params(&c->g);
    int64_t od[3], id[3] = {in[0].shape.dims[2], in[0].shape.dims[3], in[0].shape.dims[4]};
    st = fm_conv3d_out_dims(&p, id, od, err);
    if (st != FM_OK) {
        fm_error_prefix(err, "module '%s'", fm_module_path(self));
        return st;
    }
    fm_shape os = {5, {in[0].shape.dims[0], c->g.out_channels, od[0], od[1], od[2]}};
    st = fm_module_output(self, rc, &out[0], FM_DTYPE_F32, &os, err);
    if (st == FM_OK)
        fm_k_conv3d(out[0].data, in[0].data, c->w, c->b, in[0].shape.dims[0], &p, id,
                    fm_run_pool(rc));
    return st;
}

/* ---- LayerNorm / RMSNorm: in[0] F32 [..., dim] -> out[0] same shape (may alias in[0]) ------- */
void fm_norm_impl_free(void *p) {
    fm_norm_impl *n = p;
    if (!n) return;
    fm_tensor_free(&n->w_own);
    fm_tensor_free(&n->b_own);
    fm_free(n);
}

fm_status fm_norm_prepare(fm_module *self, fm_run_ctx *rc, fm_error *err) {
    fm_norm_impl *n = fm_module_impl(self);
    (void)rc;
    return prepare_wb(self, fm_module_param_count(self) > 1, &n->w, &n->w_own, &n->b, &n->b_own,
                      err);
}

static fm_status norm_io(fm_module *self, fm_run_ctx *rc, const fm_tensor *in, size_t n_in,
                         fm_tensor *out, size_t n_out, int64_t *rows, fm_error *err) {
    const fm_norm_impl *n = fm_module_impl(self);
    if (n_out < 1)
        return fm_error_set(err, FM_ERR_INVALID_ARG, "norm '%s': one output", fm_module_path(self));
    fm_status st = fm_module_check_input(self, in, n_in, 0, FM_DTYPE_F32, -1, n->dim, err);
    if (st == FM_OK) st = fm_module_output(self, rc, &out[0], FM_DTYPE_F32, &in[0].shape, err);
    if (st == FM_OK) *rows = (int64_t)(fm_tensor_numel(&in[0]) / (uint64_t)n->dim);
    return st;
}

fm_status fm_layernorm_forward(fm_module *self, fm_run_ctx *rc, const fm_tensor *in, size_t n_in,
                               fm_tensor *out, size_t n_out, fm_error *err) {
    const fm_norm_impl *n = fm_module_impl(self);
    int64_t rows = 0;
    fm_status st = norm_io(self, rc, in, n_in, out, n_out, &rows, err);
    if (st == FM_OK)
        fm_k_layernorm(out[0].data, in[0].data, n->w, n->b, rows, n->dim, (float)n->eps,
                       fm_run_pool(rc));
    return st;
}

fm_status fm_rmsnorm_forward(fm_module *self, fm_run_ctx *rc, const fm_tensor *in, size_t n_in,
                             fm_tensor *out, size_t n_out, fm_error *err) {
    const fm_norm_impl *n = fm_module_impl(self);
    int64_t rows = 0;
    fm_status st = norm_io(self, rc, in, n_in, out, n_out, &rows, err);
    if (st == FM_OK)
        fm_k_rmsnorm(out[0].data, in[0].data, n->w, rows, n->dim, (float)n->eps, fm_run_pool(rc));
    return st;
}

/* ---- Embedding: in[0] I64 or I32 ids [n] -> out[0] F32 [n][dim] ------------------------------
 * Rows are read in the stored dtype and widened (no f32 copy of the table). */
static fm_status embedding_ids(const fm_module *self, const fm_tensor *ids, int64_t i, int64_t num,
                               int64_t *id, fm_error *err) {
    *id = ids->dtype == FM_DTYPE_I64 ? ((const int64_t *)ids->data)[i]
                                     : ((const int32_t *)ids->data)[i];
    if (*id >= 0 && *id < num) return FM_OK;
    return fm_error_set(err, FM_ERR_INPUT,
                        "embedding '%s': id %lld at position %lld is outside [0, %lld)",
                        fm_module_path(self), (long long)*id, (long long)i, (long long)num);
}

fm_status fm_embedding_forward(fm_module *self, fm_run_ctx *rc, const fm_tensor *in, size_t n_in,
                               fm_tensor *out, size_t n_out, fm_error *err) {
    const fm_tensor *w = &fm_module_param(self, 0)->tensor;
    int64_t num = w->shape.dims[0], dim = w->shape.dims[1];
    if (n_out < 1 || n_in < 1)
        return fm_error_set(err, FM_ERR_INVALID_ARG, "embedding '%s': one input and output",
                            fm_module_path(self));
    fm_status st = fm_module_check_input(
        self, in, n_in, 0, in[0].dtype == FM_DTYPE_I32 ? FM_DTYPE_I32 : FM_DTYPE_I64, 1, -1, err);
    if (st == FM_OK && !w->data)
        st = fm_error_set(err, FM_ERR_INPUT, "embedding '%s' is not loaded", fm_module_path(self));
    int64_t n = st == FM_OK ? in[0].shape.dims[0] : 0;
    fm_shape os = {2, {n, dim}};
    if (st == FM_OK) st = fm_module_output(self, rc, &out[0], FM_DTYPE_F32, &os, err);
    size_t row_bytes = (size_t)dim * fm_dtype_bits(w->dtype) / 8;
    for (int64_t i = 0; st == FM_OK && i < n; i++) {
        int64_t id;
        st = embedding_ids(self, &in[0], i, num, &id, err);
        if (st == FM_OK && fm_convert((float *)out[0].data + i * dim, FM_DTYPE_F32,
                                      (const char *)w->data + (size_t)id * row_bytes, w->dtype,
                                      (uint64_t)dim) != FM_OK)
            st = fm_error_set(err, FM_ERR_DTYPE,
                              "embedding '%s': weight dtype %s is not a float dtype",
                              fm_module_path(self), fm_dtype_name(w->dtype));
    }
    return st;
}

/* ---- activations: in[0] F32 -> out[0] same shape (may alias in[0]) --------------------------- */
fm_status fm_activation_forward(fm_module *self, fm_run_ctx *rc, const fm_tensor *in, size_t n_in,
                                fm_tensor *out, size_t n_out, fm_error *err) {
    fm_activation act;
    bool ok = fm_activation_of(self, &act);
    if (!ok || n_out < 1)
        return fm_error_set(err, FM_ERR_INVALID_ARG, "activation '%s' misused",
                            fm_module_path(self));
    fm_status st = fm_module_check_input(self, in, n_in, 0, FM_DTYPE_F32, -1, -1, err);
    if (st == FM_OK) st = fm_module_output(self, rc, &out[0], FM_DTYPE_F32, &in[0].shape, err);
    if (st == FM_OK)
        fm_k_act(out[0].data, in[0].data, (int64_t)fm_tensor_numel(&in[0]), act, fm_run_pool(rc));
    return st;
}

/* ---- Sequential: children in order, one tensor in and out each --------------------------------
 * Intermediates are scratch; the last child writes out[0]. */
fm_status fm_sequential_forward(fm_module *self, fm_run_ctx *rc, const fm_tensor *in, size_t n_in,
                                fm_tensor *out, size_t n_out, fm_error *err) {
    size_t n = fm_module_child_count(self);
    if (n_in < 1 || n_out < 1 || n == 0)
        return fm_error_set(err, FM_ERR_INVALID_ARG,
                            "Sequential '%s': one input, one output, one child at least",
                            fm_module_path(self));
    fm_tensor cur = in[0];
    for (size_t i = 0; i < n; i++) {
        fm_tensor next;
        memset(&next, 0, sizeof next);
        fm_tensor *dst = i + 1 == n ? &out[0] : &next;
        fm_status st = fm_module_forward(fm_module_child(self, i), rc, &cur, 1, dst, 1, err);
        if (st != FM_OK) return st;
        cur = *dst;
    }
    return FM_OK;
}
