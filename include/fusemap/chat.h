/* fusemap text: the model's own chat template. Finds it in a model directory the way transformers
 * does, renders it for a message list with a bounded Jinja-subset interpreter (byte-identical to
 * Jinja2 for the supported subset; docs/chat-template.md), and marks which bytes of the prompt came
 * from the user so the tokenizer recognises special tokens only in the template's own text. */
#ifndef FUSEMAP_CHAT_H
#define FUSEMAP_CHAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fusemap/core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Limits on input (FM_ERR_LIMIT above them). */
#define FM_CHAT_MAX_TEMPLATE_BYTES ((size_t)1 << 20) /* template text */
#define FM_CHAT_MAX_CONFIG_BYTES                                                                   \
    ((size_t)64 << 20) /* chat_template.json / tokenizer_config.json                               \
                        */
#define FM_CHAT_MAX_MESSAGES_BYTES ((size_t)64 << 20) /* the messages JSON */
#define FM_CHAT_MAX_IMAGE_TOKENS ((uint64_t)1 << 24)  /* copies of <|image_pad|> for one image */

typedef struct fm_chat_template fm_chat_template;

/* Reads the template of a model directory, in transformers' order: chat_template.json (key
 * "chat_template"), else chat_template.jinja, else tokenizer_config.json "chat_template" (a string,
 * or a list of {"name", "template"} from which "default" is taken); none of them -> the default
 * ChatML template (fm_chat_default_template_text). String special tokens of tokenizer_config.json
 * (bos_token, eos_token, unk_token, pad_token, ..., additional_special_tokens) become template
 * variables, as transformers passes them. Caller frees *out with fm_chat_template_free. */
FM_API fm_status fm_chat_template_load(const char *model_dir, fm_chat_template **out,
                                       fm_error *err);
/* Parses template text (borrowed for the call). `origin` names it in errors (NULL: "template"). */
FM_API fm_status fm_chat_template_parse(const char *text, size_t len, const char *origin,
                                        fm_chat_template **out, fm_error *err);
FM_API void fm_chat_template_free(fm_chat_template *t); /* accepts NULL */
/* Where the template came from: "DIR/chat_template.json", ..., or "default ChatML template".
 * Borrowed until fm_chat_template_free. */
FM_API const char *fm_chat_template_origin(const fm_chat_template *t);
FM_API bool fm_chat_template_is_default(const fm_chat_template *t);
/* The default ChatML template: per message "<|im_start|>ROLE\nCONTENT<|im_end|>\n" (content parts:
 * text verbatim, images "<|vision_start|><|image_pad|><|vision_end|>", videos the same with
 * <|video_pad|>), then "<|im_start|>assistant\n" with the generation prompt. Static storage. */
FM_API const char *fm_chat_default_template_text(void);

typedef struct fm_chat_render_options {
    bool add_generation_prompt; /* default true */
    size_t max_output_bytes;    /* rendered text, and any one string value (default 16 MiB) */
    uint64_t max_iterations;    /* loop iterations and macro calls, all together (default 1e6) */
    uint32_t max_call_depth;    /* nested macro calls (default 64) */
    size_t max_memory_bytes;    /* values created while rendering (default 256 MiB) */
    uint64_t max_work;          /* bytes processed by string operations (default 2^32) */
} fm_chat_render_options;
FM_API void fm_chat_render_options_init(fm_chat_render_options *o);

/* A rendered prompt: len bytes of text (NUL-terminated for convenience; it may contain NUL bytes
 * that came from the messages) and a parallel mask: user_mask[i] = 1 when text[i] came from the
 * messages or extra variables, 0 when from the template or its defaults. Caller frees with
 * fm_chat_prompt_free. */
typedef struct fm_chat_prompt {
    char *text;
    uint8_t *user_mask;
    size_t len;
} fm_chat_prompt;
FM_API void fm_chat_prompt_free(fm_chat_prompt *p); /* accepts NULL; zeroes the record */

/* Renders the template. `messages_json` (json_len bytes, valid UTF-8) is a message list
 * [{"role": "...", "content": "..." | [{"type": "image"}, {"type": "text", "text": "..."}] | null},
 * ...] or an object {"messages": [...], NAME: VALUE, ...} whose other keys become template
 * variables (as apply_chat_template's kwargs; "add_generation_prompt" is set by the options and
 * refused there). Variables always defined: messages, add_generation_prompt, tools (None unless
 * given), documents (None unless given). o may be NULL (defaults). */
FM_API fm_status fm_chat_render(const fm_chat_template *t, const char *messages_json,
                                size_t json_len, const fm_chat_render_options *o,
                                fm_chat_prompt *out, fm_error *err);

/* Number of "<|image_pad|>" the template itself emitted (user-typed ones are not counted). */
FM_API size_t fm_chat_count_image_pads(const fm_chat_prompt *p);
/* The processor's placeholder expansion: the k-th template-origin "<|image_pad|>" becomes
 * tokens_per_image[k] copies (t*h*w / merge^2, computed by the caller; each 1..
 * FM_CHAT_MAX_IMAGE_TOKENS). User-typed "<|image_pad|>" stays as it is (user text). Errors when
 * the counts differ, and on a template-origin "<|video_pad|>" (videos are not supported yet).
 * `in` is borrowed; caller frees *out with fm_chat_prompt_free. */
FM_API fm_status fm_chat_expand_image_pads(const fm_chat_prompt *in,
                                           const uint64_t *tokens_per_image, size_t n_images,
                                           fm_chat_prompt *out, fm_error *err);

#ifdef __cplusplus
}
#endif
#endif
