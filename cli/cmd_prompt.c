/* `fusemap prompt MODEL_DIR --messages FILE.json [--no-generation-prompt]`: renders the model's
 * own chat template for a message list and prints the prompt text exactly (no newline added). */
#include <stdio.h>
#include <string.h>

#include "commands.h"
#include "common.h"
#include "fusemap/chat.h"

enum { OPT_MESSAGES = FM_CLI_OPT_OWN, OPT_NO_GEN };

static const fm_cli_opt opts[] = {
    {OPT_MESSAGES, "--messages", NULL, "FILE.json", "required",
     "a message list in Hugging Face format ([{\"role\": \"user\", \"content\": \"Hi\"}], contents "
     "as "
     "strings or lists of {\"type\": \"image\"} / {\"type\": \"text\", \"text\": ...} parts), or "
     "an "
     "object {\"messages\": [...], ...} whose other keys are template variables "
     "(e.g. \"add_vision_id\": true); '-' reads standard input"},
    {OPT_NO_GEN, "--no-generation-prompt", NULL, NULL, NULL,
     "do not end with the assistant turn header (add_generation_prompt is true by default)"},
};

const fm_cli_help fm_cli_prompt_help = {
    "prompt MODEL_DIR --messages FILE.json [options]",
    "Renders the chat template of MODEL_DIR (chat_template.json, else chat_template.jinja, else\n"
    "tokenizer_config.json \"chat_template\"; none: ChatML with Qwen's markers) for a message "
    "list\n"
    "and prints the prompt exactly, without adding a newline. Exit 1 on a bad template, messages\n"
    "or a limit, 2 on bad usage.\n",
    opts,
    sizeof opts / sizeof *opts,
    "fusemap prompt Qwen2-VL-2B-Instruct --messages chat.json > prompt.txt\n"
    "echo '[{\"role\": \"user\", \"content\": \"Hi\"}]' | fusemap prompt Qwen2-VL-2B-Instruct "
    "--messages -\n",
};

typedef struct prompt_args {
    const char *dir, *messages;
    bool no_gen;
    fm_cli_common c;
} prompt_args;

static int on_opt(const fm_cli_command *cmd, void *ctx, int id, const char *v) {
    prompt_args *a = ctx;
    if (id == OPT_MESSAGES)
        a->messages = v;
    else if (id == OPT_NO_GEN)
        a->no_gen = true;
    else if (a->dir)
        return fm_cli_usage(cmd, "prompt: unexpected argument '%s'", v);
    else
        a->dir = v;
    return 0;
}

static int run(const prompt_args *a) {
    fm_error err = {0};
    char *json = NULL;
    size_t len = 0;
    fm_chat_template *t = NULL;
    fm_chat_prompt p = {0};
    fm_status st = fm_cli_read_input(a->messages, FM_CHAT_MAX_MESSAGES_BYTES, &json, &len, &err);
    if (st == FM_OK) st = fm_chat_template_load(a->dir, &t, &err);
    fm_chat_render_options o;
    fm_chat_render_options_init(&o);
    o.add_generation_prompt = !a->no_gen;
    if (st == FM_OK) st = fm_chat_render(t, json, len, &o, &p, &err);
    if (st == FM_OK && (fwrite(p.text, 1, p.len, stdout) != p.len || fflush(stdout)))
        st = fm_error_set(&err, FM_ERR_IO, "standard output: write failed");
    int rc = st == FM_OK ? 0 : fm_cli_fail(&err);
    fm_chat_prompt_free(&p);
    fm_chat_template_free(t);
    fm_free(json);
    return rc;
}

int fm_cli_prompt_run(const fm_cli_command *self, int argc, char **argv) {
    prompt_args a;
    memset(&a, 0, sizeof a);
    int rc = fm_cli_parse(self, argc, argv, &a.c, on_opt, &a);
    if (rc == FM_CLI_GO && (!a.dir || !a.messages))
        rc = fm_cli_usage(self, "prompt needs MODEL_DIR and --messages");
    if (rc == FM_CLI_GO) rc = run(&a);
    fm_cli_common_free(&a.c);
    return rc;
}
