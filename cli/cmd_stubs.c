/* Commands not built yet; each is replaced by its own cmd_<name>.c (delete its line here). */
#include "commands.h"

int fm_cli_inspect(int argc, char **argv) { (void)argc; (void)argv; return fm_cli_errorf("inspect: not available yet"); }
int fm_cli_convert(int argc, char **argv) { (void)argc; (void)argv; return fm_cli_errorf("convert: not available yet"); }
int fm_cli_run(int argc, char **argv) { (void)argc; (void)argv; return fm_cli_errorf("run: not available yet"); }
int fm_cli_verify(int argc, char **argv) { (void)argc; (void)argv; return fm_cli_errorf("verify: not available yet"); }
