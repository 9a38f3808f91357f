/* Internal: state of the built-in generic module classes and their forwards. */
#ifndef FUSEMAP_NN_BUILTINS_H
#define FUSEMAP_NN_BUILTINS_H

#include "fusemap/nn.h"

typedef struct fm_linear_impl {
    int64_t in, out;
    bool bias;
} fm_linear_impl;

typedef struct fm_conv3d_impl {
    int64_t in, out, groups;
    int64_t k[3], s[3], p[3], d[3];
    bool bias;
} fm_conv3d_impl;

typedef struct fm_norm_impl {
    int64_t dim;
    double eps;
} fm_norm_impl;

extern const fm_module_class fm_class_linear, fm_class_conv3d, fm_class_layernorm,
    fm_class_rmsnorm, fm_class_embedding, fm_class_gelu, fm_class_quick_gelu, fm_class_silu,
    fm_class_module_list, fm_class_sequential;

/* Linear: in[0] f32 [..., in] -> out[0] f32 [..., out] (allocated here). */
fm_status fm_linear_forward(fm_module *self, fm_run_ctx *rc, const fm_tensor *in, size_t n_in,
                            fm_tensor *out, size_t n_out, fm_error *err);
/* Conv3d: in[0] f32 [B][C][T][H][W] -> out[0] f32 [B][O][oT][oH][oW]. */
fm_status fm_conv3d_forward(fm_module *self, fm_run_ctx *rc, const fm_tensor *in, size_t n_in,
                            fm_tensor *out, size_t n_out, fm_error *err);

/* A parameter as contiguous f32: a borrowed view when already F32 and 4-byte aligned, else an
 * owned converted copy. Caller frees *tmp with fm_tensor_free (zeroed when borrowed). */
fm_status fm_param_f32(const fm_module *m, const fm_param *p, const float **out, fm_tensor *tmp,
                       fm_error *err);

/* Registered by the models subsystem (src/models). */
void fm_models_register_builtin_classes(void);

#endif
