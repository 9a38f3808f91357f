/* The command table: one line per command, X(name, one-line summary). Each command lives in
 * cli/cmd_NAME.c, which defines fm_cli_NAME_help and fm_cli_NAME_run (see commands.h). */
#include "commands.h"

#include <string.h>

#define FM_CLI_COMMANDS(X)                                                                         \
    X(inspect, "show a checkpoint's tensors and totals, or the module tree a load builds")         \
    X(convert, "load a checkpoint (fused or cast on request) and save it atomically")              \
    X(run, "run the vision tower on images or pixel_values and write the embeddings")              \
    X(verify, "check a fusion: fused vs unfused outputs, saved weights vs the checkpoint")         \
    X(prompt, "render the model's chat template for a message list")                               \
    X(tokenize, "text to token ids and back, as Hugging Face's tokenizer (JSON Lines)")            \
    X(forward, "the language model's logits for every position of a prompt given as token ids")    \
    X(generate, "answer a prompt (text and images) with the model, streaming the text")            \
    X(serve, "an OpenAI-compatible chat server (HTTP) for the loaded model, batched decoding")

#define FM_CLI_DECLARE(name, summary)                                                              \
    extern const fm_cli_help fm_cli_##name##_help;                                                 \
    int fm_cli_##name##_run(const fm_cli_command *self, int argc, char **argv);
FM_CLI_COMMANDS(FM_CLI_DECLARE)

#define FM_CLI_ENTRY(name, summary) {#name, fm_cli_##name##_run, summary, &fm_cli_##name##_help},
const fm_cli_command fm_cli_commands[] = {FM_CLI_COMMANDS(FM_CLI_ENTRY)};
const size_t fm_cli_n_commands = sizeof fm_cli_commands / sizeof *fm_cli_commands;

const fm_cli_command *fm_cli_command_find(const char *name) {
    for (size_t i = 0; i < fm_cli_n_commands; i++)
        if (!strcmp(fm_cli_commands[i].name, name)) return &fm_cli_commands[i];
    return NULL;
}
