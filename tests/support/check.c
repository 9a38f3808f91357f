/* Counters of the test harness (see check.h). */
#include "check.h"

int fm_t_case_failed, fm_t_case_skipped;
int fm_t_passed, fm_t_failed, fm_t_skipped;
const char *fm_t_case = "";
jmp_buf fm_t_case_jmp;
