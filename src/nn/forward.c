/* Forwards of the generic Linear and Conv3d modules (used when a module runs on its own,
 * e.g. a patch embedding or a custom fused class) and the f32 parameter accessor. */
#include <cblas.h>
#include <stdint.h>
#include <string.h>

#include "nn/builtins.h"
#include "nn/kernels.h"

fm_status fm_param_f32(const fm_module *m, const fm_param *p, const float **out, fm_tensor *tmp,
                       fm_error *err) {
    memset(tmp, 0, sizeof *tmp);
    if (!p->tensor.data)
        return fm_error_set(err, FM_ERR_INPUT, "parameter %s.%s has no data (not loaded)",
                            fm_module_path(m), p->name);
    if (p->tensor.dtype == FM_DTYPE_F32 && ((uintptr_t)p->tensor.data % sizeof(float)) == 0) {
        *out = p->tensor.data;
        return FM_OK;
    }
    fm_status st = fm_tensor_cast(tmp, &p->tensor, FM_DTYPE_F32, err);
    if (st != FM_OK) {
        fm_error_prefix(err, "parameter %s.%s", fm_module_path(m), p->name);
        return st;
    }
    *out = tmp->data;
    return FM_OK;
}

static fm_status check_f32_input(const fm_module *m, const fm_tensor *in, int64_t last, fm_error *err) {
    char b[128];
    if (in->dtype != FM_DTYPE_F32 || in->shape.ndim < 1 || in->shape.dims[in->shape.ndim - 1] != last)
        return fm_error_set(err, FM_ERR_INPUT, "module '%s': expected F32 input [..., %lld], got %s %s",
                            fm_module_path(m), (long long)last, fm_dtype_name(in->dtype),
                            fm_shape_format(&in->shape, b, sizeof b));
    return FM_OK;
}

fm_status fm_linear_forward(fm_module *self, fm_run_ctx *rc, const fm_tensor *in, size_t n_in,
                            fm_tensor *out, size_t n_out, fm_error *err) {
    const fm_linear_impl *li = fm_module_impl(self);
    if (n_in < 1 || n_out < 1) return fm_error_set(err, FM_ERR_INVALID_ARG, "Linear takes one input");
    fm_status st = check_f32_input(self, &in[0], li->in, err);
    if (st != FM_OK) return st;
    const float *w = NULL, *b = NULL;
    fm_tensor wt, bt;
    memset(&bt, 0, sizeof bt);
    st = fm_param_f32(self, fm_module_param(self, 0), &w, &wt, err);
    if (st == FM_OK && li->bias) st = fm_param_f32(self, fm_module_param(self, 1), &b, &bt, err);
    fm_shape os = in[0].shape;
    os.dims[os.ndim - 1] = li->out;
    if (st == FM_OK) st = fm_tensor_alloc(&out[0], FM_DTYPE_F32, &os, err);
    if (st == FM_OK) {
        int64_t rows = (int64_t)(fm_tensor_numel(&in[0]) / (uint64_t)li->in);
        fm_blas_set_threads(rc ? rc->threads : 0);
        fm_k_linear(out[0].data, in[0].data, w, b, rows, li->out, li->in);
    }
    fm_tensor_free(&wt);
    fm_tensor_free(&bt);
    return st;
}

fm_status fm_conv3d_forward(fm_module *self, fm_run_ctx *rc, const fm_tensor *in, size_t n_in,
                            fm_tensor *out, size_t n_out, fm_error *err) {
    const fm_conv3d_impl *c = fm_module_impl(self);
    char b[128];
    if (n_in < 1 || n_out < 1) return fm_error_set(err, FM_ERR_INVALID_ARG, "Conv3d takes one input");
    if (in[0].dtype != FM_DTYPE_F32 || in[0].shape.ndim != 5 || in[0].shape.dims[1] != c->in)
        return fm_error_set(err, FM_ERR_INPUT, "module '%s': expected F32 input [B, %lld, T, H, W], got %s",
                            fm_module_path(self), (long long)c->in, fm_shape_format(&in[0].shape, b, sizeof b));
    fm_conv3d_params p;
    memset(&p, 0, sizeof p);
    p.out_ch = (int)c->out;
    p.in_ch = (int)c->in;
    p.groups = (int)c->groups;
    for (int i = 0; i < 3; i++) {
        p.k[i] = (int)c->k[i];
        p.stride[i] = (int)c->s[i];
        p.pad[i] = (int)c->p[i];
        p.dil[i] = (int)c->d[i];
    }
    int64_t od[3], id[3] = {in[0].shape.dims[2], in[0].shape.dims[3], in[0].shape.dims[4]};
    fm_status st = fm_conv3d_out_dims(&p, id, od, err);
    if (st != FM_OK) {
        fm_error_prefix(err, "module '%s'", fm_module_path(self));
        return st;
    }
    const float *w = NULL, *bias = NULL;
    fm_tensor wt, bt;
    memset(&bt, 0, sizeof bt);
    fm_threadpool *pool = NULL;
    st = fm_param_f32(self, fm_module_param(self, 0), &w, &wt, err);
    if (st == FM_OK) st = fm_threadpool_new(rc ? rc->threads : 0, &pool, err);
    if (st == FM_OK && c->bias) st = fm_param_f32(self, fm_module_param(self, 1), &bias, &bt, err);
    fm_shape os = {5, {in[0].shape.dims[0], c->out, od[0], od[1], od[2]}};
    if (st == FM_OK) st = fm_tensor_alloc(&out[0], FM_DTYPE_F32, &os, err);
    if (st == FM_OK) {
        fm_k_conv3d(out[0].data, in[0].data, w, bias, in[0].shape.dims[0], &p, id, pool);
    }
    fm_threadpool_free(pool);
    fm_tensor_free(&wt);
    fm_tensor_free(&bt);
    return st;
}
