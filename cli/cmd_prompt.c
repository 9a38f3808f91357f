/* `fusemap prompt MODEL_DIR --messages FILE.json [--no-generation-prompt]`: renders the model's
 * own chat template for a message list and prints the prompt text exactly (no newline added). */
#include <stdio.h>
#include <string.h>

#include "commands.h"
#include "fusemap/chat.h"
#include "io/fsutil.h"

static const char prompt_usage[] =
    "usage: fusemap prompt MODEL_DIR --messages FILE.json [--no-generation-prompt]\n"
    "\n"
    "Renders the chat template of MODEL_DIR (chat_template.json, else chat_template.jinja, else\n"
    "tokenizer_config.json \"chat_template\"; none: ChatML with Qwen's markers) for a message list\n"
    "and prints the prompt exactly, without adding a newline.\n"
    "\n"
    "options:\n"
    "  --messages FILE.json     required. A message list in Hugging Face format, e.g.\n"
    "                           [{\"role\": \"user\", \"content\": [{\"type\": \"image\"},\n"
    "                            {\"type\": \"text\", \"text\": \"Describe this image.\"}]}]\n"
    "                           or an object {\"messages\": [...], NAME: VALUE, ...} whose other\n"
    "                           keys are template variables (e.g. \"add_vision_id\": true).\n"
    "                           '-' reads standard input.\n"
    "  --no-generation-prompt   do not end with the assistant turn header\n"
    "                           (default: add_generation_prompt = true)\n"
    "  -h, --help               this text\n"
    "\n"
    "example:\n"
    "  fusemap prompt ./Qwen2-VL-2B-Instruct --messages chat.json > prompt.txt\n"
    "\n"
    "exit status: 0 success, 1 bad input (template, messages, limits), 2 bad usage\n";

typedef struct prompt_args {
    const char *dir, *messages;
    bool no_gen;
} prompt_args;

static int parse(prompt_args *a, int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        if (!strcmp(s, "-h") || !strcmp(s, "--help")) {
            fputs(prompt_usage, stdout);
            return -1;
        }
        if (!strcmp(s, "--messages")) {
            if (i + 1 >= argc) return fm_cli_usage_error("--messages needs a file name");
            a->messages = argv[++i];
        } else if (!strcmp(s, "--no-generation-prompt")) {
            a->no_gen = true;
        } else if (s[0] == '-' && s[1]) {
            return fm_cli_usage_error("prompt: unknown option '%s'", s);
        } else if (!a->dir) {
            a->dir = s;
        } else {
            return fm_cli_usage_error("prompt: unexpected argument '%s'", s);
        }
    }
    if (!a->dir || !a->messages)
        return fm_cli_usage_error("usage: fusemap prompt MODEL_DIR --messages FILE.json [--no-generation-prompt]");
    return 0;
}

/* The whole of standard input (fm_malloc'd). */
static int read_stdin(char **out, size_t *len) {
    size_t cap = 65536, n = 0;
    char *b = fm_malloc(cap);
    while (b) {
        if (n == cap && (cap > FM_CHAT_MAX_MESSAGES_BYTES || !(b = fm_realloc(b, cap *= 2)))) break;
        size_t r = fread(b + n, 1, cap - n, stdin);
        n += r;
        if (r == 0) {
            if (ferror(stdin)) break;
            *out = b, *len = n;
            return 0;
        }
    }
    fm_free(b);
    return -1;
}

int fm_cli_prompt(int argc, char **argv) {
    prompt_args a = {0};
    int rc = parse(&a, argc, argv);
    if (rc) return rc < 0 ? 0 : rc;
    fm_error err = {0};
    char *json = NULL;
    size_t len = 0;
    fm_chat_template *t = NULL;
    fm_chat_prompt p = {0};
    fm_status st = FM_OK;
    if (!strcmp(a.messages, "-")) {
        if (read_stdin(&json, &len)) st = fm_error_set(&err, FM_ERR_IO, "standard input: read failed or larger than %zu bytes", (size_t)FM_CHAT_MAX_MESSAGES_BYTES);
    } else {
        st = fm_fs_read_file(a.messages, FM_CHAT_MAX_MESSAGES_BYTES, &json, &len, &err);
    }
    if (st == FM_OK) st = fm_chat_template_load(a.dir, &t, &err);
    fm_chat_render_options o;
    fm_chat_render_options_init(&o);
    o.add_generation_prompt = !a.no_gen;
    if (st == FM_OK) st = fm_chat_render(t, json, len, &o, &p, &err);
    if (st == FM_OK && (fwrite(p.text, 1, p.len, stdout) != p.len || fflush(stdout)))
        st = fm_error_set(&err, FM_ERR_IO, "standard output: write failed");
    rc = st == FM_OK ? 0 : fm_cli_fail(&err);
    fm_chat_prompt_free(&p);
    fm_chat_template_free(t);
    fm_free(json);
    return rc;
}
