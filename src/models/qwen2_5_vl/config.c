/* Qwen2.5-VL config.json parsing and validation (qwen2_5-vl-and-qwen3-vl.md §1): a vision_config
 * with transformers' Qwen2_5_VLVisionConfig defaults (which differ from the hub's: read the
 * JSON), the flat or nested Qwen2 text fields (shared parser), the tie flag (outer wins). */
#include <stdio.h>
#include <string.h>

#include "models/cfgutil.h"
#include "models/qwen2_5_vl/qwen2_5_vl.h"

static fm_status get_dim(const fm_cfg_keys *k, const char *key, int64_t dflt, int64_t *out,
                         fm_error *err) {
    int64_t max = !strcmp(key, "depth") ? FM_CFG_MAX_DEPTH : FM_CFG_MAX_DIM;
    return fm_cfg_int(k, key, dflt, 1, max, out, err);
}

static bool present(const fm_cfg_keys *k, const char *key) {
    char fk[160];
    snprintf(fk, sizeof fk, "%s%s", k->prefix, key);
    fm_json_type t = fm_config_type(k->cfg, fk);
    return t != FM_JSON_ABSENT && t != FM_JSON_NULL;
}

/* Input channels: `in_channels` (the config class's field) or the hub's `in_chans`, which
 * transformers ignores (keeping 3); both name the same thing, so both are read and must agree.
 * The loader then checks the Conv3d weight's shape against the module built from this, and the
 * fusion reads its geometry from the module. */
static fm_status channels(const fm_cfg_keys *k, int64_t *out, fm_error *err) {
    int64_t a = 3, b = 3;
    bool has_a = present(k, "in_channels"), has_b = present(k, "in_chans");
    fm_status st = get_dim(k, "in_channels", 3, &a, err);
    if (st == FM_OK) st = get_dim(k, "in_chans", 3, &b, err);
    if (st == FM_OK && has_a && has_b && a != b)
        st = fm_error_set(err, FM_ERR_CONFIG,
                          "%s: keys '%sin_channels' (%lld) and '%sin_chans' (%lld) disagree",
                          k->origin, k->prefix, (long long)a, k->prefix, (long long)b);
    *out = has_a ? a : b;
    return st;
}

static fm_status activation(const fm_cfg_keys *k, fm_activation *act, fm_error *err) {
    char fk[160];
    const char *s = "silu";
    snprintf(fk, sizeof fk, "%shidden_act", k->prefix);
    if (present(k, "hidden_act")) {
        fm_status st = fm_config_get_string(k->cfg, fk, &s, err);
        if (st != FM_OK) return st;
    }
    if (fm_activation_from_name(s, act)) return FM_OK;
    return fm_error_set(err, FM_ERR_CONFIG, "%s: key '%s': unsupported activation '%s'", k->origin,
                        fk, s);
}

/* fullatt_block_indexes: a list of integers (default [7, 15, 23, 31]). */
static fm_status full_blocks(const fm_cfg_keys *k, fm_qwen25vl_config *c, fm_error *err) {
    static const int64_t dflt[] = {7, 15, 23, 31};
    char fk[160];
    snprintf(fk, sizeof fk, "%sfullatt_block_indexes", k->prefix);
    memset(c->fullatt, 0, sizeof c->fullatt);
    if (!present(k, "fullatt_block_indexes")) {
        for (size_t i = 0; i < sizeof dflt / sizeof *dflt; i++)
            c->fullatt[dflt[i] / 64] |= 1ull << (dflt[i] % 64);
        return FM_OK;
    }
    if (fm_config_type(k->cfg, fk) != FM_JSON_ARRAY)
        return fm_error_set(err, FM_ERR_CONFIG, "%s: key '%s': expected a list of block indexes",
                            k->origin, fk);
    size_t n = fm_config_array_size(k->cfg, fk);
    for (size_t i = 0; i < n; i++) {
        int64_t b = 0;
        fm_status st = fm_config_array_int(k->cfg, fk, i, &b, err);
        if (st != FM_OK) return st;
        if (b >= 0 && b < FM_CFG_MAX_DEPTH) c->fullatt[b / 64] |= 1ull << (b % 64);
    }
    return FM_OK;
}

static fm_status sizes(const fm_cfg_keys *k, fm_qwen2vl_vision_config *v, fm_error *err) {
    fm_status st = get_dim(k, "depth", 32, &v->depth, err);
    if (st == FM_OK) st = get_dim(k, "hidden_size", 3584, &v->embed_dim, err);
    if (st == FM_OK) st = get_dim(k, "intermediate_size", 3420, &v->mlp_hidden, err);
    if (st == FM_OK) st = get_dim(k, "out_hidden_size", 3584, &v->hidden_size, err);
    if (st == FM_OK) st = get_dim(k, "num_heads", 16, &v->num_heads, err);
    if (st == FM_OK) st = channels(k, &v->in_channels, err);
    if (st == FM_OK) st = get_dim(k, "patch_size", 14, &v->patch_size, err);
    if (st == FM_OK) st = get_dim(k, "temporal_patch_size", 2, &v->temporal_patch_size, err);
    if (st == FM_OK) st = get_dim(k, "spatial_merge_size", 2, &v->spatial_merge_size, err);
    if (st == FM_OK) st = activation(k, &v->act, err);
    if (st != FM_OK) return st;
    st = fm_cfg_need_divisible(k->origin, "vision_config.hidden_size", v->embed_dim, v->num_heads,
                               "num_heads", err);
    if (st == FM_OK && (v->embed_dim / v->num_heads) % 4 != 0)
        st = fm_error_set(
            err, FM_ERR_CONFIG,
            "%s: key 'vision_config.num_heads': head dim %lld must be a multiple of 4 (2-D rotary)",
            k->origin, (long long)(v->embed_dim / v->num_heads));
    v->mlp_ratio = 0; /* Qwen2-VL's field; the width is intermediate_size */
    return st;
}

static fm_status parse_vision(const fm_config *cfg, const char *origin, fm_qwen25vl_config *c,
                              fm_error *err) {
    fm_cfg_keys k = {cfg, origin, "vision_config."};
    fm_qwen2vl_vision_config *v = &c->base.v;
    if (fm_config_type(cfg, "vision_config") != FM_JSON_OBJECT)
        return fm_error_set(err, FM_ERR_CONFIG, "%s: key 'vision_config': missing or not an object",
                            origin);
    fm_status st = sizes(&k, v, err);
    if (st == FM_OK) st = get_dim(&k, "window_size", 112, &c->window_size, err);
    if (st == FM_OK)
        st = fm_cfg_int(&k, "tokens_per_second", 4, 0, FM_CFG_MAX_DIM, &c->tokens_per_second, err);
    if (st == FM_OK) st = full_blocks(&k, c, err);
    if (st != FM_OK) return st;
    /* transformers: window_size // spatial_merge_size // patch_size merged cells per side */
    c->window_cells = c->window_size / v->spatial_merge_size / v->patch_size;
    if (c->window_cells < 1)
        return fm_error_set(err, FM_ERR_CONFIG,
                            "%s: key 'vision_config.window_size': %lld pixels is less than one "
                            "merged cell (patch_size %lld x spatial_merge_size %lld)",
                            origin, (long long)c->window_size, (long long)v->patch_size,
                            (long long)v->spatial_merge_size);
    return FM_OK;
}

/* tie_word_embeddings: the top level wins; else text_config's (v5 re-saves); else false. */
static fm_status tie_flag(const fm_config *cfg, bool *tie, fm_error *err) {
    fm_json_type tt = fm_config_type(cfg, "tie_word_embeddings");
    *tie = false;
    if (tt != FM_JSON_ABSENT && tt != FM_JSON_NULL)
        return fm_config_get_bool(cfg, "tie_word_embeddings", tie, err);
    if (fm_config_type(cfg, "text_config.tie_word_embeddings") == FM_JSON_BOOL)
        return fm_config_get_bool(cfg, "text_config.tie_word_embeddings", tie, err);
    return FM_OK;
}

fm_status fm_qwen25vl_parse_config(const fm_config *cfg, const char *origin, void **out,
                                   fm_error *err) {
    *out = NULL;
    fm_qwen25vl_config *c = fm_calloc(1, sizeof *c);
    if (!c) return fm_error_set(err, FM_ERR_NOMEM, "out of memory parsing %s", origin);
    fm_status st = parse_vision(cfg, origin, c, err);
    const fm_qwen2_text_defaults td = {.rope_theta = 1e6, .qkv_bias = true};
    if (st == FM_OK) st = fm_qwen2_text_config_parse(cfg, origin, &td, &c->base.t, err);
    if (st == FM_OK) st = tie_flag(cfg, &c->base.tie_word_embeddings, err);
    if (st != FM_OK) {
        fm_free(c);
        return st;
    }
    *out = c;
    return FM_OK;
}
