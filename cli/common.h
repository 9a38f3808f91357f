/* Shared CLI helpers: fusion options, dtype names, the load report printer, timing. */
#ifndef FUSEMAP_CLI_COMMON_H
#define FUSEMAP_CLI_COMMON_H

#include <stdbool.h>
#include <stdio.h>

#include "fusemap/loading.h"
#include "fusemap/models.h"

/* --fuse NAME (repeatable) and --fusion-config JSON, turned into one fusion_config text. */
typedef struct fm_cli_fusion {
    const char *json; /* --fusion-config (borrowed from argv) */
    const char *fuse[32];
    int n_fuse;
    char *built; /* owned: the text passed to the loader */
} fm_cli_fusion;

/* If argv[*i] is a fusion option, consumes it (and its value) and returns 1; 0 if not one;
 * -1 on a usage error (already printed). */
int fm_cli_fusion_arg(fm_cli_fusion *f, int argc, char **argv, int *i);
/* The fusion_config for fm_load_options (NULL when neither option was given). */
const char *fm_cli_fusion_config(fm_cli_fusion *f);
void fm_cli_fusion_free(fm_cli_fusion *f);

/* "auto" -> FM_DTYPE_INVALID, "f32"/"float32", "bf16"/"bfloat16", "f16"/"float16"; -2 if bad. */
int fm_cli_parse_dtype(const char *s, fm_dtype *out);

/* Prints the load report (to `out`), one section per non-empty list. */
void fm_cli_print_report(FILE *out, const char *dir, const fm_load_report *r);

double fm_cli_now(void);

#endif
