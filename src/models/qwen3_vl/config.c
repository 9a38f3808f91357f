/* Qwen3-VL config.json parsing and validation (qwen2_5-vl-and-qwen3-vl.md §1): nested
 * text_config and vision_config, transformers' class defaults for absent keys, RoPE from
 * rope_parameters (v5 re-saves) or rope_scaling (hub originals), interleaved M-RoPE whatever
 * mrope_interleaved says. */
#include <stdio.h>
#include <string.h>

#include "models/cfgutil.h"
#include "models/qwen3_vl/qwen3_vl.h"

static fm_status vision_int(const fm_cfg_keys *k, const char *key, int64_t dflt, int64_t min,
                            int64_t *out, fm_error *err) {
    int64_t max = !strcmp(key, "depth") ? FM_CFG_MAX_DEPTH : FM_CFG_MAX_DIM;
    return fm_cfg_int(k, key, dflt, min, max, out, err);
}

static fm_status vision_act(const fm_cfg_keys *k, fm_qwen3vl_vision_config *v, fm_error *err) {
    const char *key = "vision_config.hidden_act", *s = "gelu_pytorch_tanh";
    if (fm_config_type(k->cfg, key) != FM_JSON_ABSENT) {
        fm_status st = fm_config_get_string(k->cfg, key, &s, err);
        if (st != FM_OK) return st;
    }
    if (fm_activation_from_name(s, &v->act)) return FM_OK;
    return fm_error_set(err, FM_ERR_CONFIG, "%s: key '%s': unsupported activation '%s'", k->origin,
                        key, s);
}

/* in_channels (Qwen3-VL's spelling) or in_chans (Qwen2-VL's), default 3. */
static fm_status vision_channels(const fm_cfg_keys *k, fm_qwen3vl_vision_config *v, fm_error *err) {
    bool spelled = fm_config_type(k->cfg, "vision_config.in_channels") != FM_JSON_ABSENT;
    return vision_int(k, spelled ? "in_channels" : "in_chans", 3, 1, &v->in_channels, err);
}

/* deepstack_visual_indexes: a list of block indexes (class default [8, 16, 24]). One DeepStack
 * merger per entry; features come from the distinct entries below depth, in block order. */
static fm_status deepstack(const fm_cfg_keys *k, fm_qwen3vl_vision_config *v, fm_error *err) {
    const char *key = "vision_config.deepstack_visual_indexes";
    fm_json_type ty = fm_config_type(k->cfg, key);
    static const int64_t dflt[3] = {8, 16, 24};
    size_t n = ty == FM_JSON_ARRAY ? fm_config_array_size(k->cfg, key) : 3;
    if (ty != FM_JSON_ABSENT && ty != FM_JSON_NULL && ty != FM_JSON_ARRAY)
        return fm_error_set(err, FM_ERR_CONFIG, "%s: key '%s': expected a list of integers",
                            k->origin, key);
    if (n > FM_QWEN3VL_MAX_DEEPSTACK)
        return fm_error_set(err, FM_ERR_CONFIG, "%s: key '%s': %zu entries, at most %d", k->origin,
                            key, n, FM_QWEN3VL_MAX_DEEPSTACK);
    v->n_deepstack_mergers = (int)n;
    for (size_t i = 0; i < n; i++) {
        fm_status st = ty == FM_JSON_ARRAY
                           ? fm_config_array_int(k->cfg, key, i, &v->deepstack_indexes[i], err)
                           : (v->deepstack_indexes[i] = dflt[i], FM_OK);
        if (st != FM_OK) return st;
    }
    v->n_deepstack = 0;
    for (int64_t b = 0; b < v->depth; b++)
        if (fm_qwen3vl_deepstack_merger_of(v, b) >= 0) v->deepstack_blocks[v->n_deepstack++] = b;
    return FM_OK;
}

int fm_qwen3vl_deepstack_merger_of(const fm_qwen3vl_vision_config *v, int64_t b) {
    for (int i = 0; i < v->n_deepstack_mergers; i++)
        if (v->deepstack_indexes[i] == b) return i;
    return -1;
}

static int64_t isqrt(int64_t n) {
    int64_t r = 0;
    while ((r + 1) * (r + 1) <= n)
        r++;
    return r;
}

static fm_status parse_vision(const fm_config *cfg, const char *origin, fm_qwen3vl_vision_config *v,
                              fm_error *err) {
    fm_cfg_keys k = {cfg, origin, "vision_config."};
    if (fm_config_type(cfg, "vision_config") != FM_JSON_OBJECT)
        return fm_error_set(err, FM_ERR_CONFIG, "%s: key 'vision_config': missing or not an object",
                            origin);
    fm_status st = vision_int(&k, "depth", 27, 1, &v->depth, err);
    if (st == FM_OK) st = vision_int(&k, "hidden_size", 1152, 1, &v->hidden_size, err);
    if (st == FM_OK) st = vision_int(&k, "intermediate_size", 4304, 1, &v->intermediate_size, err);
    if (st == FM_OK) st = vision_int(&k, "num_heads", 16, 1, &v->num_heads, err);
    if (st == FM_OK) st = vision_channels(&k, v, err);
    if (st == FM_OK) st = vision_int(&k, "patch_size", 16, 1, &v->patch_size, err);
    if (st == FM_OK) st = vision_int(&k, "temporal_patch_size", 2, 1, &v->temporal_patch_size, err);
    if (st == FM_OK) st = vision_int(&k, "spatial_merge_size", 2, 1, &v->spatial_merge_size, err);
    if (st == FM_OK) st = vision_int(&k, "out_hidden_size", 3584, 1, &v->out_hidden_size, err);
    if (st == FM_OK)
        st = vision_int(&k, "num_position_embeddings", 2304, 1, &v->num_position_embeddings, err);
    if (st == FM_OK) st = vision_act(&k, v, err);
    if (st == FM_OK) st = deepstack(&k, v, err);
    if (st != FM_OK) return st;
    v->grid_side = isqrt(v->num_position_embeddings);
    st = fm_cfg_need_divisible(origin, "vision_config.hidden_size", v->hidden_size, v->num_heads,
                               "num_heads", err);
    if (st == FM_OK && (v->hidden_size / v->num_heads) % 4 != 0)
        st = fm_error_set(
            err, FM_ERR_CONFIG,
            "%s: key 'vision_config.num_heads': head dim %lld must be a multiple of 4 (2-D rotary)",
            origin, (long long)(v->hidden_size / v->num_heads));
    return st;
}

/* Without an mrope_section in the RoPE dict the text parser read (the first object among
 * <prefix>rope_parameters, <prefix>rope_scaling, rope_scaling), transformers' fallback
 * [24, 20, 20]. */
static void mrope_fallback(const fm_config *cfg, const char *prefix, fm_qwen2_text_config *t) {
    char dicts[3][64], key[256];
    snprintf(dicts[0], sizeof dicts[0], "%srope_parameters", prefix);
    snprintf(dicts[1], sizeof dicts[1], "%srope_scaling", prefix);
    snprintf(dicts[2], sizeof dicts[2], "rope_scaling");
    for (int i = 0; i < 3; i++) {
        if (fm_config_type(cfg, dicts[i]) != FM_JSON_OBJECT) continue;
        snprintf(key, sizeof key, "%s.mrope_section", dicts[i]);
        if (fm_config_type(cfg, key) != FM_JSON_ABSENT) return;
        break;
    }
    t->mrope_section[0] = 24, t->mrope_section[1] = 20, t->mrope_section[2] = 20;
}

static fm_status parse_text(const fm_config *cfg, const char *origin, fm_qwen2_text_config *t,
                            fm_error *err) {
    const fm_qwen2_text_defaults td = {.rope_theta = 5e6,
                                       .qkv_bias = false,
                                       .qk_norm = true,
                                       .mrope_interleaved = true,
                                       .head_dim_from_config = true,
                                       .head_dim = 128,
                                       .hidden_size = 4096,
                                       .intermediate_size = 22016,
                                       .num_hidden_layers = 32,
                                       .num_attention_heads = 32,
                                       .vocab_size = 151936,
                                       .max_position_embeddings = 128000,
                                       .rms_norm_eps = 1e-6};
    const char *prefix = fm_config_type(cfg, "text_config") == FM_JSON_OBJECT ? "text_config." : "";
    fm_status st = fm_qwen2_text_config_parse(cfg, origin, &td, t, err);
    if (st != FM_OK) return st;
    mrope_fallback(cfg, prefix, t);
    char key[96];
    bool bias = false;
    snprintf(key, sizeof key, "%sattention_bias", prefix);
    if (fm_config_type(cfg, key) == FM_JSON_BOOL) st = fm_config_get_bool(cfg, key, &bias, err);
    if (st == FM_OK && bias)
        st = fm_error_set(err, FM_ERR_CONFIG,
                          "%s: key '%s': true is not supported (Qwen3-VL checkpoints have no "
                          "attention biases)",
                          origin, key);
    return st;
}

/* tie_word_embeddings: the top level wins over text_config's (transformers ties from the outer
 * config); absent in both: false. */
static fm_status parse_tie(const fm_config *cfg, bool *tie, fm_error *err) {
    *tie = false;
    const char *key = "tie_word_embeddings";
    fm_json_type ty = fm_config_type(cfg, key);
    if (ty == FM_JSON_ABSENT || ty == FM_JSON_NULL) {
        key = "text_config.tie_word_embeddings";
        ty = fm_config_type(cfg, key);
    }
    if (ty == FM_JSON_ABSENT || ty == FM_JSON_NULL) return FM_OK;
    return fm_config_get_bool(cfg, key, tie, err);
}

fm_status fm_qwen3vl_parse_config(const fm_config *cfg, const char *origin, void **out,
                                  fm_error *err) {
    *out = NULL;
    fm_qwen3vl_config *c = fm_calloc(1, sizeof *c);
    if (!c) return fm_error_set(err, FM_ERR_NOMEM, "out of memory parsing %s", origin);
    fm_status st = parse_vision(cfg, origin, &c->v, err);
    if (st == FM_OK) st = parse_text(cfg, origin, &c->t, err);
    if (st == FM_OK) st = parse_tie(cfg, &c->tie_word_embeddings, err);
    if (st != FM_OK) {
        fm_free(c);
        return st;
    }
    *out = c;
    return FM_OK;
}
