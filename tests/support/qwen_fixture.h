/* Test/bench support: writes small random Qwen2-VL, Qwen2.5-VL and Qwen3-VL checkpoints
 * (config.json +
 * safetensors with hub names) through the library's own writer. */
#ifndef FM_TEST_QWEN_FIXTURE_H
#define FM_TEST_QWEN_FIXTURE_H

#include <stdbool.h>
#include <stdint.h>

#include "file_util.h"
#include "fusemap/io.h"
#include "fusemap/tensor.h"

typedef struct fm_qfix {
    int depth, embed_dim, num_heads, hidden_size, mlp_ratio;
    int patch_size, temporal_patch_size, merge_size, in_channels;
    const char *hidden_act; /* "quick_gelu" default */
    int text_layers, text_hidden, text_heads, text_kv_heads, text_inter, vocab;
    bool tie;           /* tie_word_embeddings (no lm_head.weight written) */
    bool v5_layout;     /* text_config nested instead of flat keys */
    fm_dtype dtype;     /* F32 default */
    uint64_t max_shard; /* 0 = single file */
    uint64_t seed;
    float scale;              /* weight scale (default 0.05) */
    float patch_scale;        /* scale of the patch-embedding weight (0: scale) */
    const char *extra_config; /* extra top-level JSON members, e.g. "\"fusion_config\": {...}" (no
                                 trailing comma) */
    const char *channels_key; /* vision_config spelling of in_channels: "in_chans" (NULL, the
                                 hub's), "in_channels", "both" (the two keys) or "none";
                                 Qwen3-VL: NULL is its hub's "in_channels" */
    /* Qwen2.5-VL (arch FM_QFIX_QWEN2_5_VL, fm_qfix_init_qwen25): embed_dim is the vision
     * hidden_size, hidden_size its out_hidden_size; mlp_ratio is unused. */
    int arch;
    int vision_inter;         /* vision_config.intermediate_size */
    int window_size;          /* vision_config.window_size (pixels) */
    const char *fullatt;      /* fullatt_block_indexes as JSON text, e.g. "[1]" (NULL: omitted) */
    const char *vision_extra; /* extra vision_config members (no trailing comma), or NULL */
    /* Qwen3-VL (arch FM_QFIX_QWEN3_VL, fm_qfix_init_qwen3): nested text_config and
     * vision_config, hub names model.visual.* and model.language_model.*. embed_dim is the vision
     * hidden_size, hidden_size its out_hidden_size, embed_dim · mlp_ratio its intermediate_size;
     * v5_layout writes rope_parameters (with rope_theta) instead of rope_scaling + rope_theta. */
    int num_position_embeddings;   /* 0: 64 (an 8 x 8 table) */
    int deepstack[8], n_deepstack; /* deepstack_visual_indexes */
    int text_head_dim;             /* 0: text_hidden / text_heads */
    int mrope[3];                  /* mrope_section; zeros: about [h2 - 2·h2/3, h2/3, h2/3] */
    float pos_scale;               /* scale of the position table (0: scale) */
} fm_qfix;

enum { FM_QFIX_QWEN2_VL = 0, FM_QFIX_QWEN2_5_VL = 1, FM_QFIX_QWEN3_VL = 2 };

void fm_qfix_init(fm_qfix *q); /* tiny defaults: embed 32, 4 heads, depth 2, text 1 layer */
/* Tiny Qwen2.5-VL defaults: as fm_qfix_init, silu, vision MLP 40, windows of 2x2 merged cells
 * (window_size 56 with patch 14), full attention in block 1. */
void fm_qfix_init_qwen25(fm_qfix *q);
/* Qwen3-VL defaults: fm_qfix_init, then arch FM_QFIX_QWEN3_VL, patch 16, gelu_pytorch_tanh,
 * deepstack [0, 1]. */
void fm_qfix_init_qwen3(fm_qfix *q);
/* Writes config.json + weights into dir (created). */
fm_status fm_qfix_write(const char *dir, const fm_qfix *q, fm_error *err);
/* The config.json text (caller frees with fm_free). */
char *fm_qfix_config_text(const fm_qfix *q);

/* Chat files for a fixture with vocab FM_QFIX_CHAT_VOCAB: tokenizer.json (the committed test
 * tokenizer, tests/data/tokenizer/pairs, plus Qwen's vision markers as special tokens),
 * chat_template.jinja (a Qwen2-VL-like template written for the tests) and
 * generation_config.json. Paths are relative to the repository root. Returns 0 or -1. The
 * checkpoint's config needs FM_QFIX_CHAT_CONFIG among its extra members. */
enum {
    FM_QFIX_CHAT_VOCAB = 1280,
    FM_QFIX_IM_START = 1257,
    FM_QFIX_IM_END = 1258,
    FM_QFIX_VSTART = 1267,
    FM_QFIX_IMG = 1268,
    FM_QFIX_VEND = 1269
};
#define FM_QFIX_CHAT_CONFIG                                                                        \
    "\"image_token_id\": 1268, \"vision_start_token_id\": 1267, \"vision_end_token_id\": 1269, "   \
    "\"video_token_id\": 1270, \"eos_token_id\": 1258"
int fm_qfix_write_chat(const char *dir);
extern const char *const fm_qfix_chat_template;

/* Random f32 in [-scale, scale], xorshift. */
void fm_qfix_fill(float *dst, uint64_t n, float scale, uint64_t *state);

#endif
