/* Internal: the generic layer classes (torch.nn / transformers activations counterparts) and
 * the prepared state their forwards run from. */
#ifndef FUSEMAP_NN_LAYERS_H
#define FUSEMAP_NN_LAYERS_H

#include "fusemap/nn.h"

typedef struct fm_linear_impl {
    fm_linear_geometry g;
    const float *w, *b; /* prepared: [out][in], [out] or NULL; views of the parameters or of own */
    fm_tensor w_own, b_own; /* converted copies when a parameter is not aligned F32 */
} fm_linear_impl;

typedef struct fm_conv3d_impl {
    fm_conv3d_geometry g;
    const float *w, *b;
    fm_tensor w_own, b_own;
} fm_conv3d_impl;

typedef struct fm_norm_impl {
    int64_t dim;
    double eps;
    const float *w, *b; /* b NULL for RMSNorm */
    fm_tensor w_own, b_own;
} fm_norm_impl;

extern const fm_module_class fm_class_linear, fm_class_conv3d, fm_class_layernorm, fm_class_rmsnorm,
    fm_class_embedding, fm_class_module_list, fm_class_sequential;

/* Registers a built-in class before any user class can take its name (no overwrite). */
fm_status fm_class_register_builtin(const fm_module_class *cls, fm_error *err);

/* A parameter as contiguous f32: a borrowed view when already F32 and 4-byte aligned, else a
 * converted copy in *own (caller frees with fm_tensor_free; zeroed when borrowed). */
fm_status fm_param_f32(const fm_module *m, const fm_param *p, const float **out, fm_tensor *own,
                       fm_error *err);

/* Prepare/forward of the generic layers (layers_forward.c). */
fm_status fm_linear_prepare(fm_module *self, fm_run_ctx *rc, fm_error *err);
fm_status fm_linear_forward(fm_module *self, fm_run_ctx *rc, const fm_tensor *in, size_t n_in,
                            fm_tensor *out, size_t n_out, fm_error *err);
fm_status fm_conv3d_prepare(fm_module *self, fm_run_ctx *rc, fm_error *err);
fm_status fm_conv3d_forward(fm_module *self, fm_run_ctx *rc, const fm_tensor *in, size_t n_in,
                            fm_tensor *out, size_t n_out, fm_error *err);
fm_status fm_norm_prepare(fm_module *self, fm_run_ctx *rc, fm_error *err);
fm_status fm_layernorm_forward(fm_module *self, fm_run_ctx *rc, const fm_tensor *in, size_t n_in,
                               fm_tensor *out, size_t n_out, fm_error *err);
fm_status fm_rmsnorm_forward(fm_module *self, fm_run_ctx *rc, const fm_tensor *in, size_t n_in,
                             fm_tensor *out, size_t n_out, fm_error *err);
fm_status fm_embedding_forward(fm_module *self, fm_run_ctx *rc, const fm_tensor *in, size_t n_in,
                               fm_tensor *out, size_t n_out, fm_error *err);
fm_status fm_activation_forward(fm_module *self, fm_run_ctx *rc, const fm_tensor *in, size_t n_in,
                                fm_tensor *out, size_t n_out, fm_error *err);
fm_status fm_sequential_forward(fm_module *self, fm_run_ctx *rc, const fm_tensor *in, size_t n_in,
                                fm_tensor *out, size_t n_out, fm_error *err);
void fm_linear_impl_free(void *impl);
void fm_conv3d_impl_free(void *impl);
void fm_norm_impl_free(void *impl);

#endif
