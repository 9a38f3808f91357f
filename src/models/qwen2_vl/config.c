/* Qwen2-VL config.json parsing and validation (qwen2-vl.md §1): hub layout (flat text keys
 * next to a nested vision_config) and v5 layout (text_config), transformers' class defaults. */
#include <stdio.h>
#include <string.h>

#include "fusemap/io.h"
#include "models/qwen2_vl/qwen2_vl.h"

typedef struct key_ctx {
    const fm_config *cfg;
    const char *origin;
    const char *prefix; /* "vision_config." / "text_config." / "" */
} key_ctx;

static void full_key(const key_ctx *k, const char *key, char *buf, size_t n) {
    snprintf(buf, n, "%s%s", k->prefix, key);
}

/* Every size in a config is bounded (README "Limits"): a hostile config cannot make a build
 * allocate a giant tree or overflow the kernels' int sizes. */
#define CFG_MAX_DIM ((int64_t)1 << 20) /* widths, heads, vocabulary: ≤ 1,048,576 */
#define CFG_MAX_DEPTH ((int64_t)4096)  /* blocks / layers */

/* Integer at key (absent -> dflt). Non-integers and values outside [min, max] are refused
 * naming the key. */
static fm_status get_int_in(const key_ctx *k, const char *key, int64_t dflt, int64_t min,
                            int64_t max, int64_t *out, fm_error *err) {
    char fk[128];
    full_key(k, key, fk, sizeof fk);
    fm_json_type t = fm_config_type(k->cfg, fk);
    if (t == FM_JSON_ABSENT || t == FM_JSON_NULL) {
        *out = dflt;
        return FM_OK;
    }
    fm_status st = fm_config_get_int(k->cfg, fk, out, err);
    if (st != FM_OK) return st;
    if (*out < min || *out > max)
        return fm_error_set(err, FM_ERR_CONFIG, "%s: key '%s': must be in [%lld, %lld], got %lld",
                            k->origin, fk, (long long)min, (long long)max, (long long)*out);
    return FM_OK;
}

static fm_status get_int(const key_ctx *k, const char *key, int64_t dflt, int64_t min, int64_t *out,
                         fm_error *err) {
    int64_t max =
        (!strcmp(key, "depth") || !strcmp(key, "num_hidden_layers")) ? CFG_MAX_DEPTH : CFG_MAX_DIM;
    return get_int_in(k, key, dflt, min, max, out, err);
}

static fm_status get_double(const key_ctx *k, const char *key, double dflt, double *out,
                            fm_error *err) {
    char fk[128];
    full_key(k, key, fk, sizeof fk);
    fm_json_type t = fm_config_type(k->cfg, fk);
    if (t == FM_JSON_ABSENT || t == FM_JSON_NULL) {
        *out = dflt;
        return FM_OK;
    }
    fm_status st = fm_config_get_double(k->cfg, fk, out, err);
    if (st == FM_OK && !(*out > 0))
        return fm_error_set(err, FM_ERR_CONFIG, "%s: key '%s': must be positive, got %g", k->origin,
                            fk, *out);
    return st;
}

static fm_status parse_act(const key_ctx *k, fm_qwen2vl_vision_config *v, fm_error *err) {
    char fk[128];
    full_key(k, "hidden_act", fk, sizeof fk);
    const char *s = "quick_gelu";
    if (fm_config_type(k->cfg, fk) != FM_JSON_ABSENT) {
        fm_status st = fm_config_get_string(k->cfg, fk, &s, err);
        if (st != FM_OK) return st;
    }
    if (fm_activation_from_name(s, &v->act)) return FM_OK;
    return fm_error_set(err, FM_ERR_CONFIG, "%s: key '%s': unsupported activation '%s'", k->origin,
                        fk, s);
}

static fm_status need_divisible(const char *origin, const char *key, int64_t a, int64_t b,
                                const char *what, fm_error *err) {
    if (b > 0 && a % b == 0) return FM_OK;
    return fm_error_set(err, FM_ERR_CONFIG, "%s: key '%s': %lld is not divisible by %s (%lld)",
                        origin, key, (long long)a, what, (long long)b);
}

static fm_status parse_vision(const fm_config *cfg, const char *origin, fm_qwen2vl_vision_config *v,
                              fm_error *err) {
    key_ctx k = {cfg, origin, "vision_config."};
    fm_status st = FM_OK;
    if (fm_config_type(cfg, "vision_config") != FM_JSON_OBJECT)
        return fm_error_set(err, FM_ERR_CONFIG, "%s: key 'vision_config': missing or not an object",
                            origin);
    if (st == FM_OK) st = get_int(&k, "depth", 32, 1, &v->depth, err);
    if (st == FM_OK) st = get_int(&k, "embed_dim", 1280, 1, &v->embed_dim, err);
    if (st == FM_OK) st = get_int(&k, "hidden_size", 3584, 1, &v->hidden_size, err);
    if (st == FM_OK) st = get_int(&k, "num_heads", 16, 1, &v->num_heads, err);
    if (st == FM_OK) st = get_int(&k, "in_channels", 3, 1, &v->in_channels, err);
    if (st == FM_OK) st = get_int(&k, "patch_size", 14, 1, &v->patch_size, err);
    if (st == FM_OK) st = get_int(&k, "temporal_patch_size", 2, 1, &v->temporal_patch_size, err);
    if (st == FM_OK) st = get_int(&k, "spatial_merge_size", 2, 1, &v->spatial_merge_size, err);
    if (st == FM_OK) st = get_double(&k, "mlp_ratio", 4.0, &v->mlp_ratio, err);
    if (st == FM_OK) st = parse_act(&k, v, err);
    if (st != FM_OK) return st;
    st = need_divisible(origin, "vision_config.embed_dim", v->embed_dim, v->num_heads, "num_heads",
                        err);
    if (st == FM_OK && (v->embed_dim / v->num_heads) % 4 != 0)
        st = fm_error_set(
            err, FM_ERR_CONFIG,
            "%s: key 'vision_config.num_heads': head dim %lld must be a multiple of 4 (2-D rotary)",
            origin, (long long)(v->embed_dim / v->num_heads));
    double width =
        (double)v->embed_dim * v->mlp_ratio; /* int(embed_dim * mlp_ratio), checked first */
    if (st == FM_OK && !(width >= 1.0 && width <= (double)CFG_MAX_DIM))
        return fm_error_set(err, FM_ERR_CONFIG,
                            "%s: key 'vision_config.mlp_ratio': MLP width %g outside [1, %lld]",
                            origin, width, (long long)CFG_MAX_DIM);
    v->mlp_hidden = (int64_t)width;
    return st;
}

static fm_status parse_text(const fm_config *cfg, const char *origin, fm_qwen2vl_text_config *t,
                            fm_error *err) {
    key_ctx k = {cfg, origin, ""};
    if (fm_config_type(cfg, "text_config") == FM_JSON_OBJECT) k.prefix = "text_config.";
    fm_status st = get_int(&k, "hidden_size", 8192, 1, &t->hidden_size, err);
    if (st == FM_OK) st = get_int(&k, "intermediate_size", 29568, 1, &t->intermediate_size, err);
    if (st == FM_OK) st = get_int(&k, "num_hidden_layers", 80, 0, &t->num_hidden_layers, err);
    if (st == FM_OK) st = get_int(&k, "num_attention_heads", 64, 1, &t->num_attention_heads, err);
    if (st == FM_OK) st = get_int(&k, "num_key_value_heads", 8, 1, &t->num_key_value_heads, err);
    if (st == FM_OK) st = get_int(&k, "vocab_size", 152064, 1, &t->vocab_size, err);
    if (st == FM_OK) st = get_double(&k, "rms_norm_eps", 1e-5, &t->rms_norm_eps, err);
    if (st != FM_OK) return st;
    char key[64];
    snprintf(key, sizeof key, "%shidden_size", k.prefix);
    st = need_divisible(origin, key, t->hidden_size, t->num_attention_heads, "num_attention_heads",
                        err);
    snprintf(key, sizeof key, "%snum_attention_heads", k.prefix);
    if (st == FM_OK)
        st = need_divisible(origin, key, t->num_attention_heads, t->num_key_value_heads,
                            "num_key_value_heads", err);
    return st;
}

fm_status fm_qwen2vl_parse_config(const fm_config *cfg, const char *origin, void **out,
                                  fm_error *err) {
    *out = NULL;
    fm_qwen2vl_config *c = fm_calloc(1, sizeof *c);
    if (!c) return fm_error_set(err, FM_ERR_NOMEM, "out of memory parsing %s", origin);
    fm_status st = parse_vision(cfg, origin, &c->v, err);
    if (st == FM_OK) st = parse_text(cfg, origin, &c->t, err);
    if (st == FM_OK) {
        c->tie_word_embeddings = false;
        fm_json_type tt = fm_config_type(cfg, "tie_word_embeddings");
        if (tt == FM_JSON_ABSENT &&
            fm_config_type(cfg, "text_config.tie_word_embeddings") == FM_JSON_BOOL)
            st = fm_config_get_bool(cfg, "text_config.tie_word_embeddings", &c->tie_word_embeddings,
                                    err);
        else if (tt != FM_JSON_ABSENT && tt != FM_JSON_NULL)
            st = fm_config_get_bool(cfg, "tie_word_embeddings", &c->tie_word_embeddings, err);
    }
    if (st != FM_OK) {
        fm_free(c);
        return st;
    }
    *out = c;
    return FM_OK;
}
