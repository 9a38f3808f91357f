/* The Qwen2-family text config (qwen2-vl.md §1, qwen2_5-vl-and-qwen3-vl.md §1.1): text fields from
 * text_config when present, else the top level; RoPE from rope_parameters, rope_scaling (nested
 * or top level); token ids from the top level. */
#include <stdio.h>
#include <string.h>

#include "models/cfgutil.h"
#include "models/qwen2/decoder.h"

static fm_status get_dim(const fm_cfg_keys *k, const char *key, int64_t dflt, int64_t min,
                         int64_t *out, fm_error *err) {
    int64_t max = !strcmp(key, "num_hidden_layers") ? FM_CFG_MAX_DEPTH : FM_CFG_MAX_DIM;
    return fm_cfg_int(k, key, dflt, min, max, out, err);
}

#define OR(a, b) ((a) ? (a) : (b))

static fm_status sizes(const fm_cfg_keys *k, const fm_qwen2_text_defaults *d,
                       fm_qwen2_text_config *t, fm_error *err) {
    fm_status st = get_dim(k, "hidden_size", OR(d->hidden_size, 8192), 1, &t->hidden_size, err);
    if (st == FM_OK)
        st = get_dim(k, "intermediate_size", OR(d->intermediate_size, 29568), 1,
                     &t->intermediate_size, err);
    if (st == FM_OK)
        st = get_dim(k, "num_hidden_layers", OR(d->num_hidden_layers, 80), 0, &t->num_hidden_layers,
                     err);
    if (st == FM_OK)
        st = get_dim(k, "num_attention_heads", OR(d->num_attention_heads, 64), 1,
                     &t->num_attention_heads, err);
    if (st == FM_OK)
        st = get_dim(k, "num_key_value_heads", t->num_attention_heads, 1, &t->num_key_value_heads,
                     err);
    if (st == FM_OK)
        st = get_dim(k, "vocab_size", OR(d->vocab_size, 152064), 1, &t->vocab_size, err);
    if (st == FM_OK)
        st = fm_cfg_int(k, "max_position_embeddings", OR(d->max_position_embeddings, 32768), 1,
                        (int64_t)1 << 30, &t->max_position_embeddings, err);
    if (st == FM_OK)
        st = fm_cfg_positive(k, "rms_norm_eps", OR(d->rms_norm_eps, 1e-5), &t->rms_norm_eps, err);
    if (st != FM_OK) return st;
    char key[96];
    snprintf(key, sizeof key, "%shidden_size", k->prefix);
    t->head_dim = t->hidden_size / t->num_attention_heads;
    if (d->head_dim_from_config)
        st = get_dim(k, "head_dim", OR(d->head_dim, t->head_dim), 2, &t->head_dim, err);
    else
        st = fm_cfg_need_divisible(k->origin, key, t->hidden_size, t->num_attention_heads,
                                   "num_attention_heads", err);
    snprintf(key, sizeof key, "%snum_attention_heads", k->prefix);
    if (st == FM_OK)
        st = fm_cfg_need_divisible(k->origin, key, t->num_attention_heads, t->num_key_value_heads,
                                   "num_key_value_heads", err);
    if (st == FM_OK && (t->head_dim % 2 || t->head_dim > 1024))
        st = fm_error_set(err, FM_ERR_CONFIG, "%s: head_dim %lld must be even and at most 1024",
                          k->origin, (long long)t->head_dim);
    return st;
}

static fm_status activation(const fm_cfg_keys *k, fm_qwen2_text_config *t, fm_error *err) {
    char key[96];
    const char *s = "silu";
    snprintf(key, sizeof key, "%shidden_act", k->prefix);
    if (fm_config_type(k->cfg, key) != FM_JSON_ABSENT) {
        fm_status st = fm_config_get_string(k->cfg, key, &s, err);
        if (st != FM_OK) return st;
    }
    if (fm_activation_from_name(s, &t->act)) return FM_OK;
    return fm_error_set(err, FM_ERR_CONFIG, "%s: key '%s': unsupported activation '%s'", k->origin,
                        key, s);
}

/* The RoPE dict: <prefix>rope_parameters, <prefix>rope_scaling, then top-level rope_scaling. */
static const char *rope_dict(const fm_config *cfg, const char *prefix, char *buf, size_t n) {
    static const char *const names[] = {"rope_parameters", "rope_scaling"};
    for (int i = 0; i < 2; i++) {
        snprintf(buf, n, "%s%s", prefix, names[i]);
        if (fm_config_type(cfg, buf) == FM_JSON_OBJECT) return buf;
    }
    snprintf(buf, n, "rope_scaling");
    return fm_config_type(cfg, buf) == FM_JSON_OBJECT ? buf : NULL;
}

static fm_status rope(const fm_cfg_keys *k, const fm_qwen2_text_defaults *d,
                      fm_qwen2_text_config *t, fm_error *err) {
    char dict[96], key[160];
    const char *rd = rope_dict(k->cfg, k->prefix, dict, sizeof dict);
    t->rope_theta = d->rope_theta;
    fm_cfg_keys top = {k->cfg, k->origin, ""}, in_dict = {k->cfg, k->origin, key};
    fm_status st = fm_cfg_positive(&top, "rope_theta", t->rope_theta, &t->rope_theta, err);
    if (st == FM_OK) st = fm_cfg_positive(k, "rope_theta", t->rope_theta, &t->rope_theta, err);
    if (st == FM_OK && rd) {
        snprintf(key, sizeof key, "%s.", rd);
        st = fm_cfg_positive(&in_dict, "rope_theta", t->rope_theta, &t->rope_theta, err);
    }
    if (st != FM_OK) return st;
    int64_t half = t->head_dim / 2;
    t->mrope_section[0] = (int)half,
    t->mrope_section[1] = t->mrope_section[2] = 0; /* plain 1-D RoPE */
    t->mrope_interleaved = d->mrope_interleaved;
    if (!rd) return FM_OK;
    snprintf(key, sizeof key, "%s.mrope_section", rd);
    fm_json_type ty = fm_config_type(k->cfg, key);
    if (ty == FM_JSON_ABSENT) return FM_OK;
    int64_t v[3] = {0, 0, 0}, sum = 0;
    if (ty != FM_JSON_ARRAY || fm_config_array_size(k->cfg, key) != 3)
        return fm_error_set(err, FM_ERR_CONFIG, "%s: key '%s': expected a list of 3 integers",
                            k->origin, key);
    for (size_t i = 0; i < 3 && st == FM_OK; i++) {
        st = fm_config_array_int(k->cfg, key, i, &v[i], err);
        if (st == FM_OK && (v[i] < 0 || v[i] > half))
            st = fm_error_set(err, FM_ERR_CONFIG, "%s: key '%s': %lld out of range", k->origin, key,
                              (long long)v[i]);
        sum += v[i];
    }
    if (st == FM_OK && sum != half)
        st = fm_error_set(err, FM_ERR_CONFIG,
                          "%s: key '%s': sections sum to %lld, head_dim / 2 is %lld", k->origin,
                          key, (long long)sum, (long long)half);
    for (int i = 0; st == FM_OK && i < 3; i++)
        t->mrope_section[i] = (int)v[i];
    return st;
}

/* Top-level token ids; eos_token_id may be an int or a list. */
static fm_status token_ids(const fm_config *cfg, const char *origin, const char *prefix,
                           fm_qwen2_text_config *t, fm_error *err) {
    fm_cfg_keys top = {cfg, origin, ""};
    int64_t big = (int64_t)1 << 31;
    fm_status st = fm_cfg_int(&top, "image_token_id", 151655, 0, big, &t->image_token_id, err);
    if (st == FM_OK)
        st = fm_cfg_int(&top, "video_token_id", 151656, 0, big, &t->video_token_id, err);
    if (st == FM_OK)
        st = fm_cfg_int(&top, "vision_start_token_id", 151652, 0, big, &t->vision_start_token_id,
                        err);
    if (st == FM_OK)
        st = fm_cfg_int(&top, "vision_end_token_id", 151653, 0, big, &t->vision_end_token_id, err);
    if (st != FM_OK) return st;
    char key[96];
    snprintf(key, sizeof key, "eos_token_id");
    if (fm_config_type(cfg, key) == FM_JSON_ABSENT)
        snprintf(key, sizeof key, "%seos_token_id", prefix);
    t->n_eos = 0;
    fm_json_type ty = fm_config_type(cfg, key);
    if (ty == FM_JSON_INT) {
        st = fm_config_get_int(cfg, key, &t->eos[0], err);
        t->n_eos = st == FM_OK ? 1 : 0;
    } else if (ty == FM_JSON_ARRAY) {
        size_t n = fm_config_array_size(cfg, key);
        for (size_t i = 0; st == FM_OK && i < n && i < FM_QWEN2_MAX_EOS; i++)
            st = fm_config_array_int(cfg, key, i, &t->eos[t->n_eos++], err);
    } else if (ty != FM_JSON_ABSENT && ty != FM_JSON_NULL) {
        st = fm_error_set(err, FM_ERR_CONFIG, "%s: key '%s': expected an integer or a list", origin,
                          key);
    }
    return st;
}

fm_status fm_qwen2_text_config_parse(const fm_config *cfg, const char *origin,
                                     const fm_qwen2_text_defaults *d, fm_qwen2_text_config *t,
                                     fm_error *err) {
    memset(t, 0, sizeof *t);
    fm_cfg_keys k = {cfg, origin,
                     fm_config_type(cfg, "text_config") == FM_JSON_OBJECT ? "text_config." : ""};
    t->qkv_bias = d->qkv_bias;
    t->qk_norm = d->qk_norm;
    fm_status st = sizes(&k, d, t, err);
    if (st == FM_OK) st = activation(&k, t, err);
    if (st == FM_OK) st = rope(&k, d, t, err);
    if (st == FM_OK) st = token_ids(cfg, origin, k.prefix, t, err);
    return st;
}

void fm_qwen2_kv_geometry(const fm_qwen2_text_config *t, int64_t *layers, int64_t *kv_heads,
                          int64_t *head_dim) {
    *layers = t->num_hidden_layers;
    *kv_heads = t->num_key_value_heads;
    *head_dim = t->head_dim;
}
