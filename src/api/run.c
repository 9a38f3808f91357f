/* Running a loaded model: its run context (kept between forwards) and the vision tower
 * forward, reached through the tower's class like every other module. */
#include <string.h>

#include "api/model_internal.h"

fm_status fm_model_run_ctx(fm_model *m, const fm_run_options *o, fm_run_ctx **out, fm_error *err) {
    fm_run_options d;
    if (!o) fm_run_options_init(&d), o = &d;
    *out = NULL;
    int want = o->threads ? o->threads : fm_default_threads();
    if (m->rc && fm_run_ctx_threads(m->rc) != want) {
        fm_run_ctx_free(m->rc);
        m->rc = NULL;
    }
    if (!m->rc) {
        fm_status st = fm_run_ctx_new(o, &m->rc, err);
        if (st != FM_OK) return st;
    }
    fm_run_ctx_set_progress(m->rc, o->progress, o->progress_ctx);
    *out = m->rc;
    return FM_OK;
}

fm_status fm_model_preprocess_images(const fm_model *m, const fm_image *imgs, size_t n,
                                     fm_tensor *pixel_values, fm_tensor *image_grid_thw,
                                     fm_error *err) {
    if (!m->builder->preprocess_images)
        return fm_error_set(err, FM_ERR_UNSUPPORTED, "model %s takes no images", m->architecture);
    return m->builder->preprocess_images(m->dir, imgs, n, pixel_values, image_grid_thw, err);
}

/* The tower's forward with n_out outputs, copied out of the run context's scratch. */
static fm_status tower_forward(fm_model *m, const fm_tensor *pixel_values,
                               const fm_tensor *image_grid_thw, const fm_run_options *o,
                               fm_tensor *out, size_t n_out, fm_error *err) {
    const char *path = m->builder->vision_tower;
    fm_module *tower = path ? fm_module_find(m->root, path) : NULL;
    if (!tower)
        return fm_error_set(err, FM_ERR_UNSUPPORTED, "model %s has no vision tower",
                            m->architecture);
    fm_run_ctx *rc = NULL;
    fm_status st = fm_model_run_ctx(m, o, &rc, err);
    if (st != FM_OK) return st;
    fm_tensor in[2] = {*pixel_values, *image_grid_thw}, y[2] = {{0}, {0}};
    size_t mark = fm_run_mark(rc);
    st = fm_module_forward(tower, rc, in, 2, y, n_out, err);
    for (size_t i = 0; st == FM_OK && i < n_out; i++) {
        if (!y[i].data || !fm_tensor_numel(&y[i])) continue; /* no such output */
        st = fm_tensor_alloc(&out[i], FM_DTYPE_F32, &y[i].shape, err);
        if (st == FM_OK) memcpy(out[i].data, y[i].data, y[i].nbytes);
    }
    fm_run_release(rc, mark);
    if (st != FM_OK)
        for (size_t i = 0; i < n_out; i++)
            fm_tensor_free(&out[i]);
    return st;
}

fm_status fm_model_vision_forward(fm_model *m, const fm_tensor *pixel_values,
                                  const fm_tensor *image_grid_thw, const fm_run_options *o,
                                  fm_tensor *out, fm_error *err) {
    memset(out, 0, sizeof *out);
    return tower_forward(m, pixel_values, image_grid_thw, o, out, 1, err);
}

fm_status fm_model_vision_features(fm_model *m, const fm_tensor *pixel_values,
                                   const fm_tensor *image_grid_thw, const fm_run_options *o,
                                   fm_vision_features *out, fm_error *err) {
    memset(out, 0, sizeof *out);
    fm_tensor y[2] = {{0}, {0}};
    fm_status st = tower_forward(m, pixel_values, image_grid_thw, o, y, 2, err);
    if (st == FM_OK) out->image_embeds = y[0], out->deepstack = y[1];
    return st;
}

void fm_vision_features_free(fm_vision_features *f) {
    if (!f) return;
    fm_tensor_free(&f->image_embeds);
    fm_tensor_free(&f->deepstack);
}
