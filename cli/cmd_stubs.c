/* Commands not built yet; each is replaced by its own cmd_<name>.c (delete its line here). */
#include "commands.h"
