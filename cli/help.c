/* Help texts, generated from the command table and each command's option table: usage, what it
 * does, every option with its default, examples. */
#include <stdio.h>
#include <string.h>

#include "commands.h"

#define OPT_COLUMN 30
#define HELP_WIDTH 100

/* "-o, --output FILE" or "    --dtype NAME". */
static void opt_label(const fm_cli_opt *o, char *buf, size_t n) {
    snprintf(buf, n, "%s%s%s%s%s", o->alias ? o->alias : "  ", o->alias ? ", " : "  ", o->name,
             o->arg ? " " : "", o->arg ? o->arg : "");
}

/* The help text and its default from column OPT_COLUMN, words wrapped before HELP_WIDTH (an
 * explicit '\n' also breaks the line). */
static void opt_text(FILE *out, const char *help, const char *def) {
    char text[1024];
    snprintf(text, sizeof text, "%s%s%s%s", help, def ? " (default: " : "", def ? def : "",
             def ? ")" : "");
    int col = OPT_COLUMN;
    for (const char *p = text; *p;) {
        if (*p == '\n' || *p == ' ') {
            p++;
            if (p[-1] == '\n') col = HELP_WIDTH; /* forces the break below */
            continue;
        }
        int len = (int)strcspn(p, " \n");
        if (col > OPT_COLUMN && col + 1 + len > HELP_WIDTH) {
            fprintf(out, "\n%*s", OPT_COLUMN, "");
            col = OPT_COLUMN;
        } else if (col > OPT_COLUMN) {
            fputc(' ', out);
            col++;
        }
        fprintf(out, "%.*s", len, p);
        col += len;
        p += len;
    }
    fputc('\n', out);
}

static void print_opt(FILE *out, const fm_cli_opt *o) {
    char label[128];
    opt_label(o, label, sizeof label);
    int w = fprintf(out, "  %s", label);
    if (w >= OPT_COLUMN - 1)
        fprintf(out, "\n%*s", OPT_COLUMN, "");
    else
        fprintf(out, "%*s", OPT_COLUMN - w, "");
    opt_text(out, o->help, o->def);
}

void fm_cli_print_command_help(FILE *out, const fm_cli_command *cmd) {
    const fm_cli_help *h = cmd->help;
    static const fm_cli_opt help_opt = {0, "--help", "-h", NULL, NULL, "show this help and exit"};
    fprintf(out, "usage: fusemap %s\n\n%s: %s.\n", h->usage, cmd->name, cmd->summary);
    if (h->about) fprintf(out, "\n%s", h->about);
    fputs("\noptions:\n", out);
    for (size_t i = 0; i < h->n_opts; i++)
        print_opt(out, &h->opts[i]);
    print_opt(out, &help_opt);
    if (h->examples) {
        fputs("\nexamples:\n", out);
        for (const char *p = h->examples; *p;) {
            size_t len = strcspn(p, "\n");
            fprintf(out, "  %.*s\n", (int)len, p);
            p += len + (p[len] == '\n');
        }
    }
}

void fm_cli_print_main_help(FILE *out) {
    fputs("usage: fusemap COMMAND [options]\n"
          "       fusemap help [COMMAND]\n"
          "       fusemap --version\n"
          "\n"
          "Loads Hugging Face model directories (config.json, safetensors) with optional fusion\n"
          "mapping, runs the Qwen2-VL vision tower on the CPU, and saves back in the original "
          "format.\n"
          "\ncommands:\n",
          out);
    for (size_t i = 0; i < fm_cli_n_commands; i++)
        fprintf(out, "  %-10s %s\n", fm_cli_commands[i].name, fm_cli_commands[i].summary);
    fputs("\noptions:\n"
          "  -h, --help      show this help ('fusemap COMMAND --help' shows a command's)\n"
          "  -V, --version   show the version of fusemap and of the libraries it uses\n"
          "\n"
          "Run 'fusemap help COMMAND' for a command's options and examples ('fusemap help "
          "--commands'\n"
          "lists the command names, one a line).\n"
          "Exit codes: 0 success, 1 bad input or I/O failure, 2 bad usage.\n"
          "Long loads, saves and forwards show a progress line on stderr when it is a terminal\n"
          "(not with --quiet) once they take FUSEMAP_PROGRESS_DELAY seconds (default 1).\n",
          out);
}
