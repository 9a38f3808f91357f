/* Small random Qwen2-VL and Qwen2.5-VL checkpoints for tests, demos and benchmarks (hub names
 * and order). */
#include "qwen_fixture.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

void fm_qfix_init(fm_qfix *q) {
    memset(q, 0, sizeof *q);
    q->depth = 2, q->embed_dim = 32, q->num_heads = 4, q->hidden_size = 48, q->mlp_ratio = 4;
    q->patch_size = 14, q->temporal_patch_size = 2, q->merge_size = 2, q->in_channels = 3;
    q->hidden_act = "quick_gelu";
    q->text_layers = 1, q->text_hidden = 48, q->text_heads = 4, q->text_kv_heads = 2,
    q->text_inter = 64;
    q->vocab = 100;
    q->dtype = FM_DTYPE_F32;
    q->seed = 1234;
    q->scale = 0.05f;
}

void fm_qfix_init_qwen3(fm_qfix *q) {
    fm_qfix_init(q);
    q->arch = FM_QFIX_QWEN3_VL;
    q->patch_size = 16;
    q->hidden_act = "gelu_pytorch_tanh";
    q->deepstack[0] = 0, q->deepstack[1] = 1, q->n_deepstack = 2;
}

void fm_qfix_init_qwen25(fm_qfix *q) {
    fm_qfix_init(q);
    q->arch = FM_QFIX_QWEN2_5_VL;
    q->hidden_act = "silu";
    q->vision_inter = 40;
    q->window_size = 56;
    q->fullatt = "[1]";
}

void fm_qfix_fill(float *dst, uint64_t n, float scale, uint64_t *s) {
    for (uint64_t i = 0; i < n; i++) {
        *s ^= *s << 13, *s ^= *s >> 7, *s ^= *s << 17;
        dst[i] = scale * (float)((double)(*s >> 11) / (double)(1ull << 53) * 2.0 - 1.0);
    }
}

static char *qwen3_config_text(const fm_qfix *q);

/* "in_chans": C (or the spelling q->channels_key asks for), with a trailing ",\n    ". */
static void channels_text(const fm_qfix *q, char *buf, size_t n) {
    const char *k = q->channels_key ? q->channels_key : "in_chans";
    if (!strcmp(k, "none"))
        buf[0] = '\0';
    else if (!strcmp(k, "both"))
        snprintf(buf, n, "\"in_channels\": %d,\n    \"in_chans\": %d,\n    ", q->in_channels,
                 q->in_channels);
    else
        snprintf(buf, n, "\"%s\": %d,\n    ", k, q->in_channels);
}

/* The vision_config object's members. */
static void vision_text(const fm_qfix *q, char *buf, size_t n) {
    char ch[128], full[512] = "";
    channels_text(q, ch, sizeof ch);
    const char *act = q->hidden_act ? q->hidden_act : "quick_gelu";
    if (q->arch != FM_QFIX_QWEN2_5_VL) {
        snprintf(buf, n,
                 "\"depth\": %d,\n    \"embed_dim\": %d,\n    \"hidden_act\": \"%s\",\n"
                 "    \"hidden_size\": %d,\n    %s\"mlp_ratio\": %d,\n    \"num_heads\": %d,\n"
                 "    \"patch_size\": %d,\n    \"spatial_merge_size\": %d,\n"
                 "    \"spatial_patch_size\": %d,\n    \"temporal_patch_size\": %d",
                 q->depth, q->embed_dim, act, q->hidden_size, ch, q->mlp_ratio, q->num_heads,
                 q->patch_size, q->merge_size, q->patch_size, q->temporal_patch_size);
    } else {
        if (q->fullatt)
            snprintf(full, sizeof full, "\"fullatt_block_indexes\": %s,\n    ", q->fullatt);
        snprintf(buf, n,
                 "\"depth\": %d,\n    %s\"hidden_act\": \"%s\",\n    \"hidden_size\": %d,\n"
                 "    %s\"intermediate_size\": %d,\n    \"model_type\": \"qwen2_5_vl\",\n"
                 "    \"num_heads\": %d,\n    \"out_hidden_size\": %d,\n    \"patch_size\": %d,\n"
                 "    \"spatial_merge_size\": %d,\n    \"spatial_patch_size\": %d,\n"
                 "    \"temporal_patch_size\": %d,\n    \"tokens_per_second\": 2,\n"
                 "    \"window_size\": %d",
                 q->depth, full, act, q->embed_dim, ch, q->vision_inter, q->num_heads,
                 q->hidden_size, q->patch_size, q->merge_size, q->patch_size,
                 q->temporal_patch_size, q->window_size);
    }
    if (q->vision_extra) {
        size_t w = strlen(buf);
        snprintf(buf + w, n - w, ",\n    %s", q->vision_extra);
    }
}

char *fm_qfix_config_text(const fm_qfix *q) {
    if (q->arch == FM_QFIX_QWEN3_VL) return qwen3_config_text(q);
    char text_keys[1024], vision[4096], *out = malloc(8192);
    if (!out) return NULL;
    const char *ind = q->v5_layout ? "    " : "  ";
    snprintf(text_keys, sizeof text_keys,
             "\"hidden_size\": %d,\n%s\"intermediate_size\": %d,\n%s\"num_attention_heads\": %d,\n"
             "%s\"num_hidden_layers\": %d,\n%s\"num_key_value_heads\": %d,\n%s\"rms_norm_eps\": "
             "1e-06,\n%s\"rope_theta\": 1000000.0,\n%s\"vocab_size\": %d",
             q->text_hidden, ind, q->text_inter, ind, q->text_heads, ind, q->text_layers, ind,
             q->text_kv_heads, ind, ind, ind, q->vocab);
    vision_text(q, vision, sizeof vision);
    const char *dt = q->dtype == FM_DTYPE_BF16  ? "bfloat16"
                     : q->dtype == FM_DTYPE_F16 ? "float16"
                                                : "float32";
    bool q25 = q->arch == FM_QFIX_QWEN2_5_VL;
    snprintf(out, 8192,
             "{\n  \"architectures\": [\n    \"%s\"\n  ],\n"
             "  \"model_type\": \"%s\",\n"
             "  %s%s%s,\n"
             "  \"tie_word_embeddings\": %s,\n  \"torch_dtype\": \"%s\",\n"
             "  \"vision_config\": {\n    %s\n  }%s%s\n}\n",
             q25 ? "Qwen2_5_VLForConditionalGeneration" : "Qwen2VLForConditionalGeneration",
             q25 ? "qwen2_5_vl" : "qwen2_vl", q->v5_layout ? "\"text_config\": {\n    " : "",
             text_keys, q->v5_layout ? "\n  }" : "", q->tie ? "true" : "false", dt, vision,
             q->extra_config ? ",\n  " : "", q->extra_config ? q->extra_config : "");
    return out;
}

static int text_head_dim(const fm_qfix *q) {
    return q->text_head_dim ? q->text_head_dim : q->text_hidden / q->text_heads;
}

static void mrope_sections(const fm_qfix *q, int out[3]) {
    int h2 = text_head_dim(q) / 2;
    if (q->mrope[0] || q->mrope[1] || q->mrope[2]) {
        memcpy(out, q->mrope, 3 * sizeof *out);
        return;
    }
    out[1] = out[2] = h2 / 3, out[0] = h2 - 2 * (h2 / 3);
}

static char *qwen3_config_text(const fm_qfix *q) {
    char *out = malloc(8192), ds[128] = "", rope[256];
    int sec[3], n = 0;
    if (!out) return NULL;
    mrope_sections(q, sec);
    for (int i = 0; i < q->n_deepstack; i++)
        n += snprintf(ds + n, sizeof ds - (size_t)n, "%s%d", i ? ", " : "", q->deepstack[i]);
    if (q->v5_layout)
        snprintf(rope, sizeof rope,
                 "\"rope_parameters\": {\"mrope_interleaved\": true, \"mrope_section\": [%d, %d, "
                 "%d], \"rope_theta\": 5000000, \"rope_type\": \"default\"}",
                 sec[0], sec[1], sec[2]);
    else
        snprintf(rope, sizeof rope,
                 "\"rope_scaling\": {\"mrope_interleaved\": true, \"mrope_section\": [%d, %d, "
                 "%d], \"rope_type\": \"default\"},\n    \"rope_theta\": 5000000",
                 sec[0], sec[1], sec[2]);
    const char *dt = q->dtype == FM_DTYPE_BF16  ? "bfloat16"
                     : q->dtype == FM_DTYPE_F16 ? "float16"
                                                : "float32";
    snprintf(out, 8192,
             "{\n  \"architectures\": [\"Qwen3VLForConditionalGeneration\"],\n"
             "  \"model_type\": \"qwen3_vl\",\n"
             "  \"text_config\": {\n    \"attention_bias\": false,\n    \"head_dim\": %d,\n"
             "    \"hidden_act\": \"silu\",\n    \"hidden_size\": %d,\n"
             "    \"intermediate_size\": %d,\n    \"max_position_embeddings\": 262144,\n"
             "    \"model_type\": \"qwen3_vl_text\",\n    \"num_attention_heads\": %d,\n"
             "    \"num_hidden_layers\": %d,\n    \"num_key_value_heads\": %d,\n"
             "    \"rms_norm_eps\": 1e-06,\n    %s,\n    \"tie_word_embeddings\": %s,\n"
             "    \"vocab_size\": %d\n  },\n"
             "  \"tie_word_embeddings\": %s,\n  \"torch_dtype\": \"%s\",\n"
             "  \"vision_config\": {\n    \"deepstack_visual_indexes\": [%s],\n    \"depth\": %d,\n"
             "    \"hidden_act\": \"%s\",\n    \"hidden_size\": %d,\n    \"%s\": %d,\n"
             "    \"intermediate_size\": %d,\n    \"model_type\": \"qwen3_vl\",\n"
             "    \"num_heads\": %d,\n    \"num_position_embeddings\": %d,\n"
             "    \"out_hidden_size\": %d,\n    \"patch_size\": %d,\n"
             "    \"spatial_merge_size\": %d,\n    \"temporal_patch_size\": %d\n  }%s%s\n}\n",
             text_head_dim(q), q->text_hidden, q->text_inter, q->text_heads, q->text_layers,
             q->text_kv_heads, rope, q->tie ? "true" : "false", q->vocab, q->tie ? "true" : "false",
             dt, ds, q->depth, q->hidden_act ? q->hidden_act : "gelu_pytorch_tanh", q->embed_dim,
             q->channels_key ? q->channels_key : "in_channels", q->in_channels,
             q->embed_dim * q->mlp_ratio, q->num_heads,
             q->num_position_embeddings ? q->num_position_embeddings : 64, q->hidden_size,
             q->patch_size, q->merge_size, q->temporal_patch_size, q->extra_config ? ",\n  " : "",
             q->extra_config ? q->extra_config : "");
    return out;
}

typedef struct plist {
    char names[4096][128];
    fm_shape shapes[4096];
    int n;
} plist;

static void add(plist *p, const char *name, int nd, int64_t a, int64_t b, int64_t c, int64_t d,
                int64_t e) {
    int64_t dims[5] = {a, b, c, d, e};
    if (p->n >= 4096) return;
    snprintf(p->names[p->n], sizeof p->names[0], "%s", name);
    fm_shape_make(&p->shapes[p->n], nd, dims);
    p->n++;
}

static void vision_params(plist *p, const fm_qfix *q) {
    int64_t D = q->embed_dim, M = (int64_t)q->embed_dim * q->mlp_ratio,
            H4 = D * q->merge_size * q->merge_size;
    char n[96];
    add(p, "visual.patch_embed.proj.weight", 5, D, q->in_channels, q->temporal_patch_size,
        q->patch_size, q->patch_size);
    for (int i = 0; i < q->depth; i++) {
#define B(suffix, nd, a, b)                                                                        \
    snprintf(n, sizeof n, "visual.blocks.%d.%s", i, suffix), add(p, n, nd, a, b, 0, 0, 0)
        B("norm1.weight", 1, D, 0);
        B("norm1.bias", 1, D, 0);
        B("norm2.weight", 1, D, 0);
        B("norm2.bias", 1, D, 0);
        B("attn.qkv.weight", 2, 3 * D, D);
        B("attn.qkv.bias", 1, 3 * D, 0);
        B("attn.proj.weight", 2, D, D);
        B("attn.proj.bias", 1, D, 0);
        B("mlp.fc1.weight", 2, M, D);
        B("mlp.fc1.bias", 1, M, 0);
        B("mlp.fc2.weight", 2, D, M);
        B("mlp.fc2.bias", 1, D, 0);
#undef B
    }
    add(p, "visual.merger.ln_q.weight", 1, D, 0, 0, 0, 0);
    add(p, "visual.merger.ln_q.bias", 1, D, 0, 0, 0, 0);
    add(p, "visual.merger.mlp.0.weight", 2, H4, H4, 0, 0, 0);
    add(p, "visual.merger.mlp.0.bias", 1, H4, 0, 0, 0, 0);
    add(p, "visual.merger.mlp.2.weight", 2, q->hidden_size, H4, 0, 0, 0);
    add(p, "visual.merger.mlp.2.bias", 1, q->hidden_size, 0, 0, 0, 0);
}

static void vision_params_qwen25(plist *p, const fm_qfix *q) {
    int64_t D = q->embed_dim, I = q->vision_inter, H4 = D * q->merge_size * q->merge_size;
    char n[96];
    add(p, "visual.patch_embed.proj.weight", 5, D, q->in_channels, q->temporal_patch_size,
        q->patch_size, q->patch_size);
    for (int i = 0; i < q->depth; i++) {
#define B(suffix, nd, a, b)                                                                        \
    snprintf(n, sizeof n, "visual.blocks.%d.%s", i, suffix), add(p, n, nd, a, b, 0, 0, 0)
        B("norm1.weight", 1, D, 0);
        B("norm2.weight", 1, D, 0);
        B("attn.qkv.weight", 2, 3 * D, D);
        B("attn.qkv.bias", 1, 3 * D, 0);
        B("attn.proj.weight", 2, D, D);
        B("attn.proj.bias", 1, D, 0);
        B("mlp.gate_proj.weight", 2, I, D);
        B("mlp.gate_proj.bias", 1, I, 0);
        B("mlp.up_proj.weight", 2, I, D);
        B("mlp.up_proj.bias", 1, I, 0);
        B("mlp.down_proj.weight", 2, D, I);
        B("mlp.down_proj.bias", 1, D, 0);
#undef B
    }
    add(p, "visual.merger.ln_q.weight", 1, D, 0, 0, 0, 0);
    add(p, "visual.merger.mlp.0.weight", 2, H4, H4, 0, 0, 0);
    add(p, "visual.merger.mlp.0.bias", 1, H4, 0, 0, 0, 0);
    add(p, "visual.merger.mlp.2.weight", 2, q->hidden_size, H4, 0, 0, 0);
    add(p, "visual.merger.mlp.2.bias", 1, q->hidden_size, 0, 0, 0, 0);
}

static void text_params(plist *p, const fm_qfix *q) {
    int64_t H = q->text_hidden, hd = H / q->text_heads, kv = q->text_kv_heads * hd,
            I = q->text_inter;
    char n[96];
    add(p, "model.embed_tokens.weight", 2, q->vocab, H, 0, 0, 0);
    for (int i = 0; i < q->text_layers; i++) {
#define L(suffix, nd, a, b)                                                                        \
    snprintf(n, sizeof n, "model.layers.%d.%s", i, suffix), add(p, n, nd, a, b, 0, 0, 0)
        L("self_attn.q_proj.weight", 2, H, H);
        L("self_attn.q_proj.bias", 1, H, 0);
        L("self_attn.k_proj.weight", 2, kv, H);
        L("self_attn.k_proj.bias", 1, kv, 0);
        L("self_attn.v_proj.weight", 2, kv, H);
        L("self_attn.v_proj.bias", 1, kv, 0);
        L("self_attn.o_proj.weight", 2, H, H);
        L("mlp.gate_proj.weight", 2, I, H);
        L("mlp.up_proj.weight", 2, I, H);
        L("mlp.down_proj.weight", 2, H, I);
        L("input_layernorm.weight", 1, H, 0);
        L("post_attention_layernorm.weight", 1, H, 0);
#undef L
    }
    add(p, "model.norm.weight", 1, H, 0, 0, 0, 0);
    if (!q->tie) add(p, "lm_head.weight", 2, q->vocab, H, 0, 0, 0);
}

static void qwen3_merger(plist *p, const char *prefix, int64_t norm, int64_t wide, int64_t out) {
    char n[96];
    snprintf(n, sizeof n, "%s.norm.weight", prefix), add(p, n, 1, norm, 0, 0, 0, 0);
    snprintf(n, sizeof n, "%s.norm.bias", prefix), add(p, n, 1, norm, 0, 0, 0, 0);
    snprintf(n, sizeof n, "%s.linear_fc1.weight", prefix), add(p, n, 2, wide, wide, 0, 0, 0);
    snprintf(n, sizeof n, "%s.linear_fc1.bias", prefix), add(p, n, 1, wide, 0, 0, 0, 0);
    snprintf(n, sizeof n, "%s.linear_fc2.weight", prefix), add(p, n, 2, out, wide, 0, 0, 0);
    snprintf(n, sizeof n, "%s.linear_fc2.bias", prefix), add(p, n, 1, out, 0, 0, 0, 0);
}

static void qwen3_vision_params(plist *p, const fm_qfix *q) {
    int64_t D = q->embed_dim, I = (int64_t)q->embed_dim * q->mlp_ratio,
            W = D * q->merge_size * q->merge_size;
    char n[96];
    add(p, "model.visual.patch_embed.proj.weight", 5, D, q->in_channels, q->temporal_patch_size,
        q->patch_size, q->patch_size);
    add(p, "model.visual.patch_embed.proj.bias", 1, D, 0, 0, 0, 0);
    add(p, "model.visual.pos_embed.weight", 2,
        q->num_position_embeddings ? q->num_position_embeddings : 64, D, 0, 0, 0);
    for (int i = 0; i < q->depth; i++) {
#define B(suffix, nd, a, b)                                                                        \
    snprintf(n, sizeof n, "model.visual.blocks.%d.%s", i, suffix), add(p, n, nd, a, b, 0, 0, 0)
        B("norm1.weight", 1, D, 0);
        B("norm1.bias", 1, D, 0);
        B("norm2.weight", 1, D, 0);
        B("norm2.bias", 1, D, 0);
        B("attn.qkv.weight", 2, 3 * D, D);
        B("attn.qkv.bias", 1, 3 * D, 0);
        B("attn.proj.weight", 2, D, D);
        B("attn.proj.bias", 1, D, 0);
        B("mlp.linear_fc1.weight", 2, I, D);
        B("mlp.linear_fc1.bias", 1, I, 0);
        B("mlp.linear_fc2.weight", 2, D, I);
        B("mlp.linear_fc2.bias", 1, D, 0);
#undef B
    }
    qwen3_merger(p, "model.visual.merger", D, W, q->hidden_size);
    for (int k = 0; k < q->n_deepstack; k++) {
        snprintf(n, sizeof n, "model.visual.deepstack_merger_list.%d", k);
        qwen3_merger(p, n, W, W, q->hidden_size);
    }
}

static void qwen3_text_params(plist *p, const fm_qfix *q) {
    int64_t H = q->text_hidden, hd = text_head_dim(q), qd = q->text_heads * hd,
            kv = q->text_kv_heads * hd, I = q->text_inter;
    char n[128];
    add(p, "model.language_model.embed_tokens.weight", 2, q->vocab, H, 0, 0, 0);
    for (int i = 0; i < q->text_layers; i++) {
#define L(suffix, nd, a, b)                                                                        \
    snprintf(n, sizeof n, "model.language_model.layers.%d.%s", i, suffix),                         \
        add(p, n, nd, a, b, 0, 0, 0)
        L("input_layernorm.weight", 1, H, 0);
        L("mlp.down_proj.weight", 2, H, I);
        L("mlp.gate_proj.weight", 2, I, H);
        L("mlp.up_proj.weight", 2, I, H);
        L("post_attention_layernorm.weight", 1, H, 0);
        L("self_attn.k_norm.weight", 1, hd, 0);
        L("self_attn.k_proj.weight", 2, kv, H);
        L("self_attn.o_proj.weight", 2, H, qd);
        L("self_attn.q_norm.weight", 1, hd, 0);
        L("self_attn.q_proj.weight", 2, qd, H);
        L("self_attn.v_proj.weight", 2, kv, H);
#undef L
    }
    add(p, "model.language_model.norm.weight", 1, H, 0, 0, 0, 0);
    if (!q->tie) add(p, "lm_head.weight", 2, q->vocab, H, 0, 0, 0);
}

fm_status fm_qfix_write(const char *dir, const fm_qfix *q, fm_error *err) {
    plist *p = calloc(1, sizeof *p);
    fm_tensor *ts = p ? calloc(4096, sizeof *ts) : NULL;
    fm_st_item *items = ts ? calloc(4096, sizeof *items) : NULL;
    char *cfg = fm_qfix_config_text(q);
    fm_status st = (p && ts && items && cfg)
                       ? FM_OK
                       : fm_error_set(err, FM_ERR_NOMEM, "fixture: out of memory");
    uint64_t seed = q->seed ? q->seed : 1;
    if (st == FM_OK && q->arch == FM_QFIX_QWEN3_VL) {
        qwen3_vision_params(p, q), qwen3_text_params(p, q);
    } else if (st == FM_OK) {
        if (q->arch == FM_QFIX_QWEN2_5_VL)
            vision_params_qwen25(p, q);
        else
            vision_params(p, q);
        text_params(p, q);
    }
    for (int i = 0; st == FM_OK && i < p->n; i++) {
        fm_tensor f32;
        st = fm_tensor_alloc(&f32, FM_DTYPE_F32, &p->shapes[i], err);
        if (st != FM_OK) break;
        int is_norm_w = strstr(p->names[i], "norm") && strstr(p->names[i], ".weight");
        float sc =
            q->patch_scale > 0 && strstr(p->names[i], "patch_embed") ? q->patch_scale : q->scale;
        if (q->pos_scale > 0 && strstr(p->names[i], "pos_embed")) sc = q->pos_scale;
        fm_qfix_fill(f32.data, fm_tensor_numel(&f32), sc, &seed);
        if (is_norm_w) /* norm weights around 1, like trained models */
            for (uint64_t k = 0; k < fm_tensor_numel(&f32); k++)
                ((float *)f32.data)[k] += 1.0f;
        if (q->dtype == FM_DTYPE_F32)
            ts[i] = f32;
        else
            st = fm_tensor_cast(&ts[i], &f32, q->dtype, err), fm_tensor_free(&f32);
        items[i] = (fm_st_item){p->names[i], &ts[i]};
    }
    if (st == FM_OK) {
        fm_save_options so;
        fm_save_options_init(&so);
        if (q->max_shard) so.max_shard_size = q->max_shard;
        fm_extra_file ex = {"config.json", cfg, strlen(cfg)};
        st = fm_checkpoint_save(dir, items, (size_t)p->n, &ex, 1, &so, err);
    }
    for (int i = 0; p && ts && i < p->n; i++)
        fm_tensor_free(&ts[i]);
    free(items), free(ts), free(p), free(cfg);
    return st;
}

const char *const fm_qfix_chat_template =
    "{% set image_count = namespace(value=0) %}{% for message in messages %}{% if loop.first and "
    "message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% "
    "endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] "
    "}}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}{% if content['type'] == 'image' %}"
    "<|vision_start|><|image_pad|><|vision_end|>{% elif 'text' in content %}{{ content['text'] "
    "}}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt "
    "%}<|im_start|>assistant\n{% endif %}";

static int write_text(const char *dir, const char *name, const char *text) {
    char *p = fm_test_join(dir, name);
    int rc = p ? fm_test_write_file(p, text, strlen(text)) : -1;
    free(p);
    return rc;
}

int fm_qfix_write_chat(const char *dir) {
    json_error_t je;
    json_t *t = json_load_file("tests/data/tokenizer/pairs/tokenizer.json", 0, &je);
    json_t *added = json_object_get(t, "added_tokens");
    if (!json_is_array(added)) return json_decref(t), -1;
    static const char *const names[3] = {"<|vision_start|>", "<|image_pad|>", "<|vision_end|>"};
    for (int i = 0; i < 3; i++)
        json_array_append_new(added,
                              json_pack("{s:i,s:s,s:b,s:b,s:b,s:b,s:b}", "id", FM_QFIX_VSTART + i,
                                        "content", names[i], "single_word", 0, "lstrip", 0,
                                        "rstrip", 0, "normalized", 0, "special", 1));
    char *path = fm_test_join(dir, "tokenizer.json");
    int rc = path ? json_dump_file(t, path, JSON_COMPACT) : -1;
    json_decref(t);
    free(path);
    if (rc == 0) rc = write_text(dir, "chat_template.jinja", fm_qfix_chat_template);
    if (rc == 0)
        rc = write_text(dir, "generation_config.json",
                        "{\"eos_token_id\": [1258, 1256], \"max_new_tokens\": 16}\n");
    return rc;
}
