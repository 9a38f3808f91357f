/* fusemap CLI entry point: dispatches to the commands and owns the terminal. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "commands.h"

static const char usage[] =
    "usage: fusemap <command> [options]\n"
    "\n"
    "commands:\n"
    "  inspect DIR [--json] [--modules] [--fuse NAME]... [--fusion-config JSON]\n"
    "  convert SRC DST [--dtype auto|f32|bf16|f16] [--max-shard-size SIZE]\n"
    "          [--save-runtime-format] [--strict] [--fuse NAME]... [--fusion-config JSON]\n"
    "  run MODEL_DIR (--pixel-values IN.safetensors | --image FILE...) -o OUT.safetensors\n"
    "          [--threads N] [--fuse NAME]... [--fusion-config JSON]\n"
    "  verify MODEL_DIR --fuse NAME... [--threshold X]\n";

int fm_cli_fail(const fm_error *err) {
    fprintf(stderr, "fusemap: error: %s\n",
            err && err->msg[0] ? err->msg : fm_status_text(err ? err->status : FM_ERR_INTERNAL));
    return 1;
}

static void print_error(const char *fmt, va_list ap) {
    fputs("fusemap: error: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputs("\n", stderr);
}

int fm_cli_usage_error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    print_error(fmt, ap);
    va_end(ap);
    fputs("(run 'fusemap --help' for usage)\n", stderr);
    return 2;
}

int fm_cli_errorf(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    print_error(fmt, ap);
    va_end(ap);
    return 1;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fputs(usage, stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
        fputs(usage, stdout);
        return 0;
    }
    if (!strcmp(cmd, "inspect")) return fm_cli_inspect(argc - 1, argv + 1);
    if (!strcmp(cmd, "convert")) return fm_cli_convert(argc - 1, argv + 1);
    if (!strcmp(cmd, "run")) return fm_cli_run(argc - 1, argv + 1);
    if (!strcmp(cmd, "verify")) return fm_cli_verify(argc - 1, argv + 1);
    return fm_cli_usage_error("unknown command '%s'", cmd);
}
