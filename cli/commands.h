/* The fusemap command-line tool: one function per command. Each returns the process exit
 * code: 0 success, 1 bad input or I/O failure, 2 bad usage. */
#ifndef FUSEMAP_CLI_COMMANDS_H
#define FUSEMAP_CLI_COMMANDS_H

#include <stdbool.h>

#include "fusemap/core.h"

int fm_cli_inspect(int argc, char **argv);
int fm_cli_convert(int argc, char **argv);
int fm_cli_run(int argc, char **argv);
int fm_cli_verify(int argc, char **argv);
int fm_cli_tokenize(int argc, char **argv);
/* inspect --modules: the module tree as loaded with this fusion_config (may be NULL). */
int fm_cli_inspect_modules(const char *dir, const char *fusion_config, bool json);

/* Prints "fusemap: error: <msg>" to stderr and returns 1. */
int fm_cli_fail(const fm_error *err);
/* Prints "fusemap: error: <formatted>" (usage problems) and returns 2. */
int fm_cli_usage_error(const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 2)))
#endif
    ;
/* printf-style "fusemap: error: ..." returning 1. */
int fm_cli_errorf(const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 2)))
#endif
    ;

#endif
