/* The progress line (see progress.h). */
#include "progress.h"

#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

static double now_monotonic(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double delay_from_env(void) {
    const char *s = getenv("FUSEMAP_PROGRESS_DELAY");
    char *end = NULL;
    double d = s && *s ? strtod(s, &end) : 1.0;
    return s && *s && !*end && d >= 0 && d < 1e6 ? d : 1.0;
}

bool fm_cli_progress_wanted(bool quiet) {
    return !quiet && isatty(STDERR_FILENO);
}

void fm_cli_meter_start(fm_cli_meter *m, const char *label, const char *unit, bool enabled) {
    memset(m, 0, sizeof *m);
    m->out = stderr;
    m->enabled = enabled;
    m->label = label;
    m->unit = unit;
    m->now = now_monotonic;
    m->t0 = m->now();
    m->delay = delay_from_env();
    m->columns = 80;
    struct winsize ws;
    if (enabled && ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col >= 20)
        m->columns = ws.ws_col;
}

bool fm_cli_meter_due(uint64_t done, uint64_t total, double elapsed, double delay) {
    if (done >= total) return false;
    if (elapsed >= delay) return true;
    return elapsed >= delay / 4 && done > 0 && elapsed * (double)total / (double)done >= delay;
}

/* "512 B", "1.5 KiB" … "3.2 TiB" (bytes), or the plain count. */
static void amount(char *buf, size_t n, double v, const char *unit) {
    static const char *const names[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    if (unit) {
        snprintf(buf, n, "%.0f", v);
        return;
    }
    int k = 0;
    while (v >= 1024.0 && k < 4)
        v /= 1024.0, k++;
    if (k == 0)
        snprintf(buf, n, "%.0f B", v);
    else
        snprintf(buf, n, "%.1f %s", v, names[k]);
}

static void duration(char *buf, size_t n, double s) {
    unsigned long t = (unsigned long)(s + 0.5);
    if (t >= 3600)
        snprintf(buf, n, "%lu:%02lu:%02lu", t / 3600, t / 60 % 60, t % 60);
    else
        snprintf(buf, n, "%lu:%02lu", t / 60, t % 60);
}

void fm_cli_meter_format(char *buf, size_t n, const char *label, const char *unit, uint64_t done,
                         uint64_t total, double elapsed) {
    char d[32], t[32], r[48] = "--", eta[32] = "--";
    amount(d, sizeof d, (double)done, unit);
    amount(t, sizeof t, (double)total, unit);
    if (done > 0 && elapsed > 0) {
        double rate = (double)done / elapsed;
        if (unit) {
            snprintf(r, sizeof r, "%.1f %s/s", rate, unit);
        } else {
            amount(r, sizeof r - 2, rate, NULL);
            strcat(r, "/s");
        }
        duration(eta, sizeof eta, (double)(total - done) / rate);
    }
    int pct = total ? (int)(100.0 * (double)done / (double)total) : 100;
    snprintf(buf, n, "%s  %s / %s%s%s  %d%%  %s  ETA %s", label, d, t, unit ? " " : "",
             unit ? unit : "", pct, r, eta);
}

void fm_cli_meter_clear(fm_cli_meter *m) {
    if (!m->drawn) return;
    fputs("\r\033[K", m->out); /* carriage return, erase to the end of the line */
    fflush(m->out);
    m->drawn = false;
}

void fm_cli_meter_update(fm_cli_meter *m, uint64_t done, uint64_t total) {
    if (!m->enabled) return;
    if (done >= total) {
        fm_cli_meter_clear(m);
        return;
    }
    double t = m->now(), elapsed = t - m->t0;
    if (!fm_cli_meter_due(done, total, elapsed, m->delay) || (m->drawn && t - m->last_draw < 0.1))
        return;
    char line[512];
    size_t width = (size_t)m->columns < sizeof line ? (size_t)m->columns : sizeof line;
    fm_cli_meter_format(line, width, m->label, m->unit, done, total, elapsed); /* fits: no wrap */
    fprintf(m->out, "\r%s\033[K", line);
    fflush(m->out);
    m->drawn = true;
    m->last_draw = t;
}

void fm_cli_meter_progress(void *ctx, uint64_t done, uint64_t total) {
    fm_cli_meter_update(ctx, done, total);
}

void fm_cli_meter_count(void *ctx, int done, int total) {
    fm_cli_meter_update(ctx, done < 0 ? 0 : (uint64_t)done, total < 0 ? 0 : (uint64_t)total);
}
