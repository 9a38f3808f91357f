/* The fusemap command-line tool: the command table, each command's options and help, the one
 * option parser every command uses, and the error printers. Each command returns the process
 * exit code: 0 success, 1 bad input or I/O failure, 2 bad usage.
 *
 * Adding a command: one line in FM_CLI_COMMANDS (cli/commands.c) and a file cli/cmd_NAME.c
 * that defines `fm_cli_NAME_help` (usage, options, examples) and `fm_cli_NAME_run`, which
 * parses with fm_cli_parse. The parser only accepts the options of the help's table, so help
 * and parser cannot disagree (tests/test_cli_help.c also checks the sources). */
#ifndef FUSEMAP_CLI_COMMANDS_H
#define FUSEMAP_CLI_COMMANDS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "fusemap/core.h"

/* Option ids shared by the commands (parsed by fm_cli_parse itself into fm_cli_common);
 * a command's own ids start at FM_CLI_OPT_OWN. FM_CLI_ARG marks a positional argument. */
enum {
    FM_CLI_ARG = 0,
    FM_CLI_OPT_QUIET,
    FM_CLI_OPT_STRICT,
    FM_CLI_OPT_FUSE,
    FM_CLI_OPT_FUSION_CONFIG,
    FM_CLI_OPT_OWN = 100
};

typedef struct fm_cli_opt {
    int id;
    const char *name;  /* "--dtype" */
    const char *alias; /* short form ("-o") or NULL */
    const char *arg;   /* the value's placeholder ("SIZE"); NULL: a flag without a value */
    const char *def;   /* options with a value: the default, shown as "(default: ...)" */
    const char *help;  /* what it does; '\n' continues on the next line */
} fm_cli_opt;

/* The shared options, for a command's option table. */
#define FM_CLI_OPTS_FUSION                                                                         \
    {FM_CLI_OPT_FUSE,                                                                              \
     "--fuse",                                                                                     \
     NULL,                                                                                         \
     "NAME",                                                                                       \
     "none: config.json's fusion_config applies",                                                  \
     "enable fusion family NAME (repeatable; e.g. patch_embeddings)"},                             \
    {                                                                                              \
        FM_CLI_OPT_FUSION_CONFIG, "--fusion-config", NULL, "JSON", "config.json's fusion_config",  \
            "fusion_config as JSON text ('{}' disables a stored one); not with --fuse"             \
    }
#define FM_CLI_OPT_STRICT_ENTRY                                                                    \
    {                                                                                              \
        FM_CLI_OPT_STRICT, "--strict", NULL, NULL, NULL,                                           \
            "missing or unexpected weights (and a fusion that matches nothing) are errors"         \
    }
#define FM_CLI_OPT_QUIET_ENTRY                                                                     \
    {                                                                                              \
        FM_CLI_OPT_QUIET, "--quiet", "-q", NULL, NULL,                                             \
            "no warnings, progress or informational lines on stderr (errors still)"                \
    }

typedef struct fm_cli_help {
    const char *usage; /* after "usage: fusemap ": "convert SRC DST [options]" */
    const char *about; /* what the command does (lines end with '\n') */
    const fm_cli_opt *opts;
    size_t n_opts;
    const char *examples; /* command lines, one per line, each starting with "fusemap " */
} fm_cli_help;

typedef struct fm_cli_command {
    const char *name;
    int (*run)(const struct fm_cli_command *self, int argc, char **argv); /* argv[0]: the name */
    const char *summary; /* one line, for `fusemap help` */
    const fm_cli_help *help;
} fm_cli_command;

/* The command table (cli/commands.c), in help order. */
extern const fm_cli_command fm_cli_commands[];
extern const size_t fm_cli_n_commands;
/* The command named `name`, or NULL. */
const fm_cli_command *fm_cli_command_find(const char *name);

/* --fuse NAME (repeatable) and --fusion-config JSON, turned into one fusion_config text. */
typedef struct fm_cli_fusion {
    const char *json; /* --fusion-config (borrowed from argv) */
    const char *fuse[32];
    int n_fuse;
    char *built; /* owned: the text passed to the loader */
} fm_cli_fusion;

/* What the shared options set. */
typedef struct fm_cli_common {
    fm_cli_fusion fusion;
    bool quiet, strict;
} fm_cli_common;
void fm_cli_common_free(fm_cli_common *c); /* frees what fm_cli_fusion_config built */

/* Receives each option of the command's own table (id, value or NULL for a flag) and each
 * positional argument (FM_CLI_ARG, the argument). Returns 0, or 2 after fm_cli_usage. */
typedef int (*fm_cli_opt_fn)(const fm_cli_command *cmd, void *ctx, int id, const char *value);

/* Parses argv[1..argc) against cmd's option table: "--name VALUE", "--name=VALUE", aliases,
 * "--" ends the options, "-" alone is an argument. -h/--help prints the command's help on
 * stdout. Returns FM_CLI_GO to go on, else the exit code (0 after --help, 2 on a usage error,
 * already printed). `common` receives the shared options. */
#define FM_CLI_GO (-1)
int fm_cli_parse(const fm_cli_command *cmd, int argc, char **argv, fm_cli_common *common,
                 fm_cli_opt_fn fn, void *ctx);

/* inspect --modules: the module tree as loaded with the shared options (cli/cmd_inspect_modules.c).
 */
int fm_cli_inspect_modules(const char *dir, fm_cli_common *c, bool json);

/* Help: the whole tool's (commands and global options) and one command's. */
void fm_cli_print_main_help(FILE *out);
void fm_cli_print_command_help(FILE *out, const fm_cli_command *cmd);
/* `fusemap --version`: fusemap's version and the linked libraries' (cli/version.c). */
int fm_cli_print_version(FILE *out);

/* Prints "fusemap: error: <msg>" to stderr and returns 1. */
int fm_cli_fail(const fm_error *err);
/* Prints "fusemap: error: <formatted>", the usage line of cmd (the tool's when NULL) and where
 * to find the help, to stderr; returns 2. */
int fm_cli_usage(const fm_cli_command *cmd, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
/* printf-style "fusemap: error: ..." returning 1. */
int fm_cli_errorf(const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 2)))
#endif
    ;
/* printf-style "fusemap: warning: ..." (one line) unless quiet. */
void fm_cli_warnf(bool quiet, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

#endif
