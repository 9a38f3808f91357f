/* Internal: the Qwen2-family text decoder shared by the vision-language architectures
 * (Qwen2-VL and Qwen2.5-VL use it as is; Qwen3-VL with q/k norms, no q/k/v bias and interleaved
 * M-RoPE). Each architecture registers the shared constructors and forwards under its own
 * transformers class names (fm_qwen2_register_decoder). generation.md §3-4. */
#ifndef FUSEMAP_MODELS_QWEN2_DECODER_H
#define FUSEMAP_MODELS_QWEN2_DECODER_H

#include <stdbool.h>
#include <stdint.h>

#include "fusemap/io.h"
#include "fusemap/nn.h"

#define FM_QWEN2_MAX_EOS 8

typedef struct fm_qwen2_text_config {
    int64_t hidden_size, intermediate_size, num_hidden_layers, num_attention_heads,
        num_key_value_heads;
    int64_t head_dim, vocab_size, max_position_embeddings;
    double rms_norm_eps, rope_theta;
    int mrope_section[3];   /* frequencies per axis (t, h, w), summing to head_dim / 2 */
    bool mrope_interleaved; /* Qwen3-VL's layout (decided by the architecture, not the file) */
    bool qkv_bias;          /* q/k/v projections with bias (Qwen2) */
    bool qk_norm;           /* per-head RMSNorm of q and k before RoPE (Qwen3) */
    fm_activation act;      /* hidden_act (silu) */
    int64_t image_token_id, video_token_id, vision_start_token_id, vision_end_token_id;
    int64_t eos[FM_QWEN2_MAX_EOS]; /* config.json eos_token_id (int or list) */
    int n_eos;
} fm_qwen2_text_config;

/* Defaults an architecture starts from before parsing (transformers' class defaults). */
typedef struct fm_qwen2_text_defaults {
    double rope_theta; /* 1e6 (Qwen2-VL, Qwen2.5-VL), 5e6 (Qwen3-VL) */
    bool qkv_bias, qk_norm, mrope_interleaved;
    bool head_dim_from_config; /* Qwen3 reads head_dim; the Qwen2-VL attention ignores it */
    /* Class defaults of absent size keys; 0 takes Qwen2-VL's (hidden 8192, intermediate 29568,
     * 80 layers, 64 heads, vocabulary 152064, 32768 positions, rms_norm_eps 1e-5; head_dim
     * hidden / heads). */
    int64_t head_dim, hidden_size, intermediate_size, num_hidden_layers, num_attention_heads,
        vocab_size, max_position_embeddings;
    double rms_norm_eps;
} fm_qwen2_text_defaults;

/* Reads the text fields from config.json: from `text_config` when present, else the top level
 * (hub layout); RoPE from rope_parameters / rope_scaling (spec §1.1 loader rule); token ids from
 * the top level. Refuses values that make no sense, naming origin and key. */
fm_status fm_qwen2_text_config_parse(const fm_config *cfg, const char *origin,
                                     const fm_qwen2_text_defaults *d, fm_qwen2_text_config *t,
                                     fm_error *err);

/* The architecture's class names for the shared decoder classes. */
typedef struct fm_qwen2_class_names {
    const char *attention, *mlp, *decoder_layer, *rotary, *text_model, *rmsnorm;
} fm_qwen2_class_names;

/* Constructors, called by the architecture's thin wrappers with its text config. */
fm_status fm_qwen2_attention_init(fm_module *m, fm_build_ctx *ctx, const fm_qwen2_text_config *t,
                                  const fm_qwen2_class_names *n, fm_error *err);
fm_status fm_qwen2_mlp_init(fm_module *m, fm_build_ctx *ctx, const fm_qwen2_text_config *t,
                            fm_error *err);
fm_status fm_qwen2_decoder_layer_init(fm_module *m, fm_build_ctx *ctx,
                                      const fm_qwen2_text_config *t, const fm_qwen2_class_names *n,
                                      fm_error *err);
fm_status fm_qwen2_rotary_init(fm_module *m, const fm_qwen2_text_config *t, fm_error *err);
fm_status fm_qwen2_text_model_init(fm_module *m, fm_build_ctx *ctx, const fm_qwen2_text_config *t,
                                   const fm_qwen2_class_names *n, fm_error *err);

/* Forwards (contracts at each definition in decoder.c):
 * - attention: {x [T][H], cos, sin [T][hd/2], k cache, v cache [S][nkv][cap][hd],
 *   rows I32 [T][2]} -> [T][H]
 * - mlp: {x [T][H]} -> [T][H]
 * - decoder layer: {h [T][H], cos, sin, k cache, v cache, rows} -> [T][H] (may alias h)
 * - rotary: {pos3 I64 [3][T]} -> {cos, sin [T][hd/2]}
 * - text model: {inputs_embeds [T][H], pos3 I64 [3][T], cache [L][2][S][nkv][cap][hd],
 *   rows I32 [T][2], [visual rows I64 [k], DeepStack features F32 [K][k][H]]} -> hidden [T][H]
 *   after the final norm; the optional last two add features[i] at the visual rows after
 *   layer i < K (Qwen3-VL). */
fm_status fm_qwen2_attention_forward(fm_module *self, fm_run_ctx *rc, const fm_tensor *in,
                                     size_t n_in, fm_tensor *out, size_t n_out, fm_error *err);
fm_status fm_qwen2_mlp_forward(fm_module *self, fm_run_ctx *rc, const fm_tensor *in, size_t n_in,
                               fm_tensor *out, size_t n_out, fm_error *err);
fm_status fm_qwen2_decoder_layer_forward(fm_module *self, fm_run_ctx *rc, const fm_tensor *in,
                                         size_t n_in, fm_tensor *out, size_t n_out, fm_error *err);
fm_status fm_qwen2_rotary_forward(fm_module *self, fm_run_ctx *rc, const fm_tensor *in, size_t n_in,
                                  fm_tensor *out, size_t n_out, fm_error *err);
fm_status fm_qwen2_text_model_forward(fm_module *self, fm_run_ctx *rc, const fm_tensor *in,
                                      size_t n_in, fm_tensor *out, size_t n_out, fm_error *err);

/* Embeds ids through `embed_tokens` and writes image_embeds' rows (in order) at the positions
 * of image_token_id: {ids I64 [T], image_embeds F32 [k][H] (k may be 0)} -> [T][H]. The count of
 * image tokens must equal k (FM_ERR_INPUT naming both). */
fm_status fm_qwen2_embed_with_images(fm_module *embed_tokens, fm_run_ctx *rc, const fm_tensor *ids,
                                     const fm_tensor *image_embeds, int64_t image_token_id,
                                     fm_tensor *out, fm_error *err);

/* The KV-cache geometry of a text config: layers, kv heads, head dim. */
void fm_qwen2_kv_geometry(const fm_qwen2_text_config *t, int64_t *layers, int64_t *kv_heads,
                          int64_t *head_dim);

#endif
