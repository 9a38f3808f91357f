/* Chat prompts as token ids: template rendering with user-byte provenance, image placeholders
 * expanded per image grid, encoding with special tokens only in the template's own bytes. */
#include <string.h>

#include "api/model_internal.h"
#include "fusemap/chat.h"
#include "fusemap/tokenizer.h"

/* Tokens per image: t·h·w / merge² from each grid row. */
static fm_status image_tokens(const fm_model *m, const fm_tensor *grid, uint64_t **out, size_t *n,
                              fm_error *err) {
    fm_lm_info li;
    *out = NULL, *n = 0;
    fm_status st = fm_model_lm_info(m, &li, err);
    if (st != FM_OK || !grid || !grid->data || !grid->shape.dims[0]) return st;
    if (grid->dtype != FM_DTYPE_I64 || grid->shape.ndim != 2 || grid->shape.dims[1] != 3)
        return fm_error_set(err, FM_ERR_INPUT, "image_grid_thw must be I64 [k, 3]");
    size_t k = (size_t)grid->shape.dims[0];
    uint64_t *v = fm_malloc(k * sizeof *v);
    if (!v) return fm_error_set(err, FM_ERR_NOMEM, "out of memory");
    const int64_t *g = grid->data, m2 = li.spatial_merge_size * li.spatial_merge_size;
    for (size_t i = 0; i < k; i++)
        v[i] = (uint64_t)(g[3 * i] * g[3 * i + 1] * g[3 * i + 2] / (m2 ? m2 : 1));
    *out = v, *n = k;
    return FM_OK;
}

fm_status fm_model_encode_chat(const fm_model *m, const struct fm_tokenizer *tok,
                               const struct fm_chat_template *tmpl, const char *json, size_t len,
                               bool add_generation_prompt, const fm_tensor *grid, int64_t **ids,
                               size_t *n, fm_error *err) {
    fm_chat_render_options ro;
    fm_chat_render_options_init(&ro);
    ro.add_generation_prompt = add_generation_prompt;
    fm_chat_prompt rendered = {0}, expanded = {0};
    uint64_t *per_image = NULL;
    size_t n_images = 0, n32 = 0;
    int32_t *ids32 = NULL;
    *ids = NULL, *n = 0;
    fm_status st = fm_chat_render(tmpl, json, len, &ro, &rendered, err);
    if (st == FM_OK) st = image_tokens(m, grid, &per_image, &n_images, err);
    if (st == FM_OK) st = fm_chat_expand_image_pads(&rendered, per_image, n_images, &expanded, err);
    if (st == FM_OK)
        st = fm_tokenizer_encode(tok, expanded.text, expanded.len, expanded.user_mask,
                                 FM_TOKENIZE_SPECIAL, &ids32, &n32, err);
    int64_t *v = st == FM_OK ? fm_malloc((n32 ? n32 : 1) * sizeof *v) : NULL;
    if (st == FM_OK && !v)
        st = fm_error_set(err, FM_ERR_NOMEM, "out of memory for %zu prompt tokens", n32);
    for (size_t i = 0; st == FM_OK && i < n32; i++)
        v[i] = ids32[i];
    if (st == FM_OK) *ids = v, *n = n32;
    fm_free(ids32), fm_free(per_image);
    fm_chat_prompt_free(&rendered), fm_chat_prompt_free(&expanded);
    return st;
}
