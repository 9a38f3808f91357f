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

fm_status fm_model_vision_forward(fm_model *m, const fm_tensor *pixel_values,
                                  const fm_tensor *image_grid_thw, const fm_run_options *o,
                                  fm_tensor *out, fm_error *err) {
    memset(out, 0, sizeof *out);
    const char *path = m->builder->vision_tower;
    fm_module *tower = path ? fm_module_find(m->root, path) : NULL;
    if (!tower)
        return fm_error_set(err, FM_ERR_UNSUPPORTED, "model %s has no vision tower",
                            m->architecture);
    fm_run_ctx *rc = NULL;
    fm_status st = fm_model_run_ctx(m, o, &rc, err);
    if (st != FM_OK) return st;
    fm_tensor in[2] = {*pixel_values, *image_grid_thw}, y = {0};
    size_t mark = fm_run_mark(rc);
    st = fm_module_forward(tower, rc, in, 2, &y, 1, err);
    if (st == FM_OK) st = fm_tensor_alloc(out, FM_DTYPE_F32, &y.shape, err);
    if (st == FM_OK) memcpy(out->data, y.data, y.nbytes);
    fm_run_release(rc, mark);
    return st;
}
