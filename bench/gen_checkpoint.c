/* Writes a random Qwen2-VL checkpoint (and optionally a test image) with the library's own
 * writer: used by `make demo`, the benchmarks and by hand.
 *
 *   gen_checkpoint DIR [--preset tiny|demo|2b] [--dtype f32|bf16|f16] [--max-shard BYTES]
 *                      [--depth N] [--image FILE.png WIDTH HEIGHT] [--chat]
 *
 * Presets: tiny (embed 32, depth 2), demo (Qwen2-VL-2B vision widths, depth 2, a 2-layer
 * decoder of the 2B's width with a 1280-token vocabulary), 2b (the full Qwen2-VL-2B shapes,
 * vision + text, about 4.4 GB in bf16). --chat (vocabulary 1280) adds the test tokenizer,
 * a chat template and generation_config.json, so `fusemap generate --prompt` runs on it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fusemap/fusemap.h"
#include "img_fixtures.h"
#include "qwen_fixture.h"

static void preset(fm_qfix *q, const char *name) {
    fm_qfix_init(q);
    if (!strcmp(name, "demo") || !strcmp(name, "2b")) {
        q->depth = 2, q->embed_dim = 1280, q->num_heads = 16, q->hidden_size = 1536,
        q->mlp_ratio = 4;
        q->text_layers = 2, q->text_hidden = 1536, q->text_heads = 12, q->text_kv_heads = 2,
        q->text_inter = 2048;
        q->vocab = FM_QFIX_CHAT_VOCAB, q->tie = true, q->scale = 0.02f;
    }
    if (!strcmp(name, "2b")) {
        q->depth = 32, q->text_layers = 28, q->text_hidden = 1536, q->text_heads = 12,
        q->text_kv_heads = 2;
        q->text_inter = 8960, q->vocab = 151936, q->dtype = FM_DTYPE_BF16;
    }
}

static int write_image(const char *path, uint32_t w, uint32_t h) {
    uint8_t *rgb = malloc((size_t)w * h * 3);
    size_t len = 0;
    if (!rgb) return -1;
    imgfx_fill_smooth(rgb, w, h, 3, 42);
    uint8_t *png = imgfx_png_encode(w, h, 2, 8, 0, rgb, NULL, 0, NULL, 0, &len);
    int rc = png ? imgfx_write_file(path, png, len) : -1;
    free(png);
    free(rgb);
    return rc;
}

int main(int argc, char **argv) {
    if (argc < 2) return fprintf(stderr, "usage: gen_checkpoint DIR [options]\n"), 2;
    fm_qfix q;
    preset(&q, "tiny");
    const char *image = NULL;
    bool chat = false;
    uint32_t iw = 0, ih = 0;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--preset") && i + 1 < argc)
            preset(&q, argv[++i]);
        else if (!strcmp(argv[i], "--dtype") && i + 1 < argc) {
            const char *d = argv[++i];
            q.dtype = !strcmp(d, "bf16")  ? FM_DTYPE_BF16
                      : !strcmp(d, "f16") ? FM_DTYPE_F16
                                          : FM_DTYPE_F32;
        } else if (!strcmp(argv[i], "--max-shard") && i + 1 < argc)
            q.max_shard = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--depth") && i + 1 < argc)
            q.depth = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--image") && i + 3 < argc) {
            image = argv[++i];
            iw = (uint32_t)atoi(argv[++i]);
            ih = (uint32_t)atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--chat"))
            chat = true;
        else
            return fprintf(stderr, "gen_checkpoint: bad argument '%s'\n", argv[i]), 2;
    }
    if (chat && q.vocab != FM_QFIX_CHAT_VOCAB)
        return fprintf(stderr,
                       "gen_checkpoint: --chat needs a %d-token vocabulary (--preset demo)\n",
                       FM_QFIX_CHAT_VOCAB),
               2;
    if (chat) q.extra_config = FM_QFIX_CHAT_CONFIG;
    fm_error err;
    if (fm_qfix_write(argv[1], &q, &err) != FM_OK)
        return fprintf(stderr, "gen_checkpoint: %s\n", err.msg), 1;
    if (chat && fm_qfix_write_chat(argv[1]))
        return fprintf(stderr, "gen_checkpoint: cannot write the chat files into %s\n", argv[1]), 1;
    if (image && write_image(image, iw, ih))
        return fprintf(stderr, "gen_checkpoint: cannot write %s\n", image), 1;
    return 0;
}
