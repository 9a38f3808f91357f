/* The progress line of long operations: one self-updating line on stderr (done/total, rate,
 * ETA), drawn only when enabled (stderr is a terminal and not --quiet) and once the operation
 * looks like it takes more than about a second (FUSEMAP_PROGRESS_DELAY seconds, default 1);
 * erased when done. */
#ifndef FUSEMAP_CLI_PROGRESS_H
#define FUSEMAP_CLI_PROGRESS_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

typedef struct fm_cli_meter {
    FILE *out;
    bool enabled;
    const char *label; /* "loading" (borrowed) */
    const char *unit;  /* NULL: bytes; else the unit's name ("blocks") */
    double (*now)(void);
    double t0, last_draw;
    double delay; /* FUSEMAP_PROGRESS_DELAY, default 1 second */
    bool drawn;   /* a line is on screen */
    int columns;  /* the terminal's width */
} fm_cli_meter;

/* True when progress lines may be drawn: stderr is a terminal and not quiet. */
bool fm_cli_progress_wanted(bool quiet);
/* Starts a meter on stderr (the clock starts now). */
void fm_cli_meter_start(fm_cli_meter *m, const char *label, const char *unit, bool enabled);
/* A new (done, total): draws when due, erases the line at done == total. */
void fm_cli_meter_update(fm_cli_meter *m, uint64_t done, uint64_t total);
/* Erases the line if one is shown (after a failure). */
void fm_cli_meter_clear(fm_cli_meter *m);
/* Adapters for the library's callbacks: ctx is the meter. */
void fm_cli_meter_progress(void *ctx, uint64_t done, uint64_t total); /* fm_progress_fn */
void fm_cli_meter_count(void *ctx, int done, int total);              /* fm_run_options.progress */

/* Whether to draw at `elapsed` seconds: once `delay` has passed, or from delay / 4 on when the
 * projected duration reaches `delay`; never once done == total. */
bool fm_cli_meter_due(uint64_t done, uint64_t total, double elapsed, double delay);
/* The line, e.g. "loading  1.2 GiB / 4.4 GiB  27%  310.5 MiB/s  ETA 0:11", cut to `n` - 1. */
void fm_cli_meter_format(char *buf, size_t n, const char *label, const char *unit, uint64_t done,
                         uint64_t total, double elapsed);

#endif
