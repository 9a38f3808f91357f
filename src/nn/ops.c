/* Public functional ops (rotary embedding, segment attention, activations) over row-major f32
 * matrix views, for forwards written outside the library: they run on the run context's pool
 * with the library's kernels. */
#include <limits.h>

#include "nn/kernels.h"
#include "nn/run.h"

fm_mat fm_mat_of(const fm_tensor *t) {
    fm_mat m = {0};
    if (!t || t->dtype != FM_DTYPE_F32 || !t->data || t->shape.ndim < 1) return m;
    int64_t cols = t->shape.dims[t->shape.ndim - 1];
    m.data = t->data;
    m.cols = cols;
    m.ld = cols;
    m.rows = cols ? (int64_t)(fm_tensor_numel(t) / (uint64_t)cols) : 0;
    return m;
}

fm_mat fm_mat_cols(fm_mat m, int64_t c0, int64_t c1) {
    fm_mat r = m;
    if (c0 < 0 || c1 < c0 || c1 > m.cols) {
        r.data = NULL;
        return r;
    }
    r.data = m.data ? m.data + c0 : NULL;
    r.cols = c1 - c0;
    return r;
}

static fm_status check_mat(const char *op, const char *name, fm_mat m, int64_t rows, int64_t cols,
                           fm_error *err) {
    if (m.data && m.rows == rows && m.cols >= cols && m.ld >= m.cols && m.ld <= INT_MAX)
        return FM_OK;
    return fm_error_set(err, FM_ERR_INVALID_ARG,
                        "%s: %s is [%lld x %lld] (ld %lld), expected [%lld x %lld]%s", op, name,
                        (long long)m.rows, (long long)m.cols, (long long)m.ld, (long long)rows,
                        (long long)cols, m.data ? "" : " (no data)");
}

fm_status fm_op_rope(fm_run_ctx *rc, fm_mat x, int heads, int head_dim, const float *cos_t,
                     const float *sin_t, fm_error *err) {
    if (heads < 1 || head_dim < 2 || head_dim % 2 || !cos_t || !sin_t)
        return fm_error_set(err, FM_ERR_INVALID_ARG,
                            "rope: heads %d, head_dim %d (even), tables required", heads, head_dim);
    fm_status st = check_mat("rope", "x", x, x.rows, (int64_t)heads * head_dim, err);
    if (st == FM_OK)
        fm_k_rope_apply(x.data, x.ld, x.rows, heads, head_dim, cos_t, sin_t, fm_run_pool(rc));
    return st;
}

static fm_status check_cu(const int32_t *cu, int n_seg, int64_t rows, int64_t *max_seg,
                          fm_error *err) {
    if (!cu || n_seg < 1 || cu[0] != 0 || cu[n_seg] != rows)
        return fm_error_set(err, FM_ERR_INVALID_ARG,
                            "attention: cu_seqlens must start at 0 and end at %lld rows",
                            (long long)rows);
    *max_seg = 0;
    for (int s = 0; s < n_seg; s++) {
        if (cu[s + 1] < cu[s])
            return fm_error_set(err, FM_ERR_INVALID_ARG, "attention: cu_seqlens decreases at %d",
                                s);
        if (cu[s + 1] - cu[s] > *max_seg) *max_seg = cu[s + 1] - cu[s];
    }
    return FM_OK;
}

fm_status fm_op_attention(fm_run_ctx *rc, fm_mat o, fm_mat q, fm_mat k, fm_mat v, const int32_t *cu,
                          int n_seg, int heads, int head_dim, float scale, fm_error *err) {
    int64_t w = (int64_t)heads * head_dim, max_seg = 0;
    if (heads < 1 || head_dim < 1)
        return fm_error_set(err, FM_ERR_INVALID_ARG, "attention: heads and head_dim >= 1");
    fm_status st = check_mat("attention", "q", q, q.rows, w, err);
    if (st == FM_OK) st = check_mat("attention", "k", k, q.rows, w, err);
    if (st == FM_OK) st = check_mat("attention", "v", v, q.rows, w, err);
    if (st == FM_OK) st = check_mat("attention", "o", o, q.rows, w, err);
    if (st == FM_OK) st = check_cu(cu, n_seg, q.rows, &max_seg, err);
    if (st != FM_OK) return st;
    size_t mark = fm_run_mark(rc);
    float *scratch = NULL;
    size_t floats = fm_k_attention_scratch_floats(max_seg, fm_run_ctx_threads(rc));
    st = fm_run_scratch(rc, floats * sizeof(float), (void **)&scratch, err);
    if (st == FM_OK)
        fm_k_attention(o.data, o.ld, q.data, q.ld, k.data, k.ld, v.data, v.ld, cu, n_seg, heads,
                       head_dim, scale, scratch, fm_run_pool(rc));
    fm_run_release(rc, mark);
    return st;
}

void fm_op_activation(fm_run_ctx *rc, float *y, const float *x, int64_t n, fm_activation act) {
    fm_k_act(y, x, n, act, fm_run_pool(rc));
}
