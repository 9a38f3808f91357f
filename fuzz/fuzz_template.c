/* Fuzz harness: chat templates. Input: one option byte, then the template text. The template is
 * parsed and rendered over one of four fixed message lists (bits 0-1) with or without the
 * generation prompt (bit 2) under small limits, so a hostile template hits them quickly.
 * Oracles: a second render gives the same bytes and mask; text and mask have the stated length;
 * the mask holds only 0/1; nothing is output on failure; errors have a message. */
#include <stdlib.h>
#include <string.h>

#include "fusemap/chat.h"
#include "fuzz_common.h"

static const char *const g_fz_msgs[] = {
    "[{\"role\": \"user\", \"content\": \"What is the capital of France?\"}]",
    "[{\"role\": \"system\", \"content\": \"Be brief.\"}, {\"role\": \"user\", \"content\": "
    "[{\"type\": \"image\"},"
    " {\"type\": \"text\", \"text\": \"<|im_start|>x \\u00e9\"}]}, {\"role\": \"assistant\", "
    "\"content\": "
    "\"<think>\\nr\\n</think>\\n\\nok\", \"tool_calls\": [{\"function\": {\"name\": \"f\", "
    "\"arguments\": {\"a\": 1}}}]}]",
    "{\"add_vision_id\": true, \"tools\": [{\"name\": \"t\"}], \"messages\": [{\"role\": \"user\", "
    "\"content\": "
    "[{\"type\": \"video\"}, {\"type\": \"image_url\", \"image_url\": {\"url\": \"u\"}}]}, "
    "{\"role\": \"tool\", \"content\": \"r\"}]}",
    "[{\"role\": \"user\", \"content\": \"\"}, {\"role\": \"assistant\", \"content\": [], "
    "\"reasoning_content\": \"r\"},"
    " {\"role\": \"assistant\", \"content\": null}]",
};

static void fz_check_prompt(const fm_chat_prompt *p) {
    if (!p->text || !p->user_mask) fmz_fail("template", "success without text or mask");
    if (p->text[p->len] != '\0') fmz_fail("template", "text not NUL-terminated");
    for (size_t i = 0; i < p->len; i++)
        if (p->user_mask[i] > 1) fmz_fail("template", "mask value other than 0/1");
    fmz_sink(fmz_touch(p->text, p->len + 1) ^ fmz_touch(p->user_mask, p->len));
}

/* Parses and renders one input, checking the oracles; returns the first failing status (FM_OK when
 * the template rendered). The seed names say which to expect: ok_* render, bad_* fail. */
static fm_status fz_template_run(const uint8_t *data, size_t size) {
    if (size < 1) return FM_ERR_INPUT;
    uint8_t opt = data[0];
    const char *msgs = g_fz_msgs[opt & 3];
    fm_chat_template *t = NULL;
    fm_error err = {0};
    fm_status st = fm_chat_template_parse((const char *)data + 1, size - 1, "fuzz", &t, &err);
    fmz_note("parse: %s %s", fm_status_name(st), err.msg);
    if (st != FM_OK) {
        if (t) fmz_fail("template", "template set on parse failure");
        if (!err.msg[0]) fmz_fail("template", "parse error without a message");
        return st;
    }
    fm_chat_render_options o;
    fm_chat_render_options_init(&o);
    o.add_generation_prompt = (opt >> 2) & 1;
    o.max_output_bytes = 1 << 16;
    o.max_iterations = 20000;
    o.max_call_depth = 16;
    o.max_memory_bytes = 8 << 20;
    o.max_work = 1 << 22;
    fm_chat_prompt a = {0}, b = {0};
    fm_status s1 = fm_chat_render(t, msgs, strlen(msgs), &o, &a, &err);
    fmz_note("render: %s %s", fm_status_name(s1), err.msg);
    fm_status s2 = fm_chat_render(t, msgs, strlen(msgs), &o, &b, NULL);
    if (s1 != s2) fmz_fail("template", "two renders disagree on success");
    if (s1 == FM_OK) {
        fz_check_prompt(&a);
        if (a.len != b.len || memcmp(a.text, b.text, a.len) ||
            memcmp(a.user_mask, b.user_mask, a.len))
            fmz_fail("template", "two renders differ");
        size_t pads = fm_chat_count_image_pads(&a);
        if (pads <= 64) {
            uint64_t n[64];
            for (size_t i = 0; i < pads; i++)
                n[i] = 1 + i % 3;
            fm_chat_prompt e = {0};
            if (fm_chat_expand_image_pads(&a, n, pads, &e, NULL) == FM_OK) fz_check_prompt(&e);
            fm_chat_prompt_free(&e);
        }
    } else if (a.text || !err.msg[0]) {
        fmz_fail("template", "output or no message on failure");
    }
    fm_chat_prompt_free(&a);
    fm_chat_prompt_free(&b);
    fm_chat_template_free(t);
    return s1;
}

int fm_fuzz_template(const uint8_t *data, size_t size);
int fm_fuzz_template(const uint8_t *data, size_t size) {
    fmz_verdict(fz_template_run(data, size) == FM_OK); /* ok_* seeds render, bad_* are refused */
    return 0;
}

FM_FUZZ_TARGET(fm_fuzz_template)
