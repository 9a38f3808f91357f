/* Counters of the test harness (see check.h). */
#include "check.h"

int fm_t_case_failed;
int fm_t_passed, fm_t_failed;
const char *fm_t_case = "";
