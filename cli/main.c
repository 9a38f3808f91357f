/* fusemap CLI entry point: the tool's own options (--help, --version), `help [COMMAND]`, and
 * dispatch through the command table. */
#include <stdio.h>
#include <string.h>

#include "commands.h"

/* `fusemap help [COMMAND]`; `fusemap help --commands` lists the names (for completion). */
static int help(int argc, char **argv) {
    if (argc < 3) {
        fm_cli_print_main_help(stdout);
    } else if (!strcmp(argv[2], "--commands")) {
        for (size_t i = 0; i < fm_cli_n_commands; i++)
            printf("%s\n", fm_cli_commands[i].name);
    } else {
        const fm_cli_command *cmd = fm_cli_command_find(argv[2]);
        if (!cmd) return fm_cli_usage(NULL, "help: unknown command '%s'", argv[2]);
        fm_cli_print_command_help(stdout, cmd);
    }
    return fflush(stdout) == 0 && !ferror(stdout) ? 0 : fm_cli_errorf("cannot write the help");
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fm_cli_print_main_help(stderr);
        return 2;
    }
    const char *a = argv[1];
    if (!strcmp(a, "help") || !strcmp(a, "--help") || !strcmp(a, "-h")) return help(argc, argv);
    if (!strcmp(a, "--version") || !strcmp(a, "-V")) return fm_cli_print_version(stdout);
    const fm_cli_command *cmd = fm_cli_command_find(a);
    if (cmd) return cmd->run(cmd, argc - 1, argv + 1);
    if (a[0] == '-') return fm_cli_usage(NULL, "unknown option '%s'", a);
    return fm_cli_usage(NULL, "unknown command '%s'", a);
}
