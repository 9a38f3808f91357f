/* Status names and texts, generated from the one X-macro list, and the error record. */
#include "fusemap/core.h"

#include <stdio.h>
#include <string.h>

static const char *const status_names[] = {
#define FM_X_NAME(name, text) "FM_" #name,
    FM_STATUS_LIST(FM_X_NAME)
#undef FM_X_NAME
};

static const char *const status_texts[] = {
#define FM_X_TEXT(name, text) text,
    FM_STATUS_LIST(FM_X_TEXT)
#undef FM_X_TEXT
};

const char *fm_status_name(fm_status s) {
    if ((unsigned)s >= FM_STATUS_COUNT) return "FM_UNKNOWN";
    return status_names[s];
}

const char *fm_status_text(fm_status s) {
    if ((unsigned)s >= FM_STATUS_COUNT) return "unknown status";
    return status_texts[s];
}

void fm_error_clear(fm_error *err) {
    if (!err) return;
    err->status = FM_OK;
    err->msg[0] = '\0';
}

fm_status fm_error_setv(fm_error *err, fm_status s, const char *fmt, va_list ap) {
    if (!err) return s;
    err->status = s;
    if (fmt) {
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    } else {
        snprintf(err->msg, sizeof err->msg, "%s", fm_status_text(s));
    }
    return s;
}

fm_status fm_error_set(fm_error *err, fm_status s, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fm_error_setv(err, s, fmt, ap);
    va_end(ap);
    return s;
}

void fm_error_prefix(fm_error *err, const char *fmt, ...) {
    if (!err) return;
    char prefix[FM_ERROR_MSG_MAX];
    char old[FM_ERROR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof old);
    old[sizeof old - 1] = '\0';
    size_t pl = strlen(prefix), ol = strlen(old), cap = sizeof err->msg - 1;
    if (pl > cap) pl = cap;
    memcpy(err->msg, prefix, pl);
    size_t off = pl;
    if (off + 2 <= cap) {
        memcpy(err->msg + off, ": ", 2);
        off += 2;
    }
    if (ol > cap - off) ol = cap - off;
    memcpy(err->msg + off, old, ol);
    err->msg[off + ol] = '\0';
}
