/* Fuzz harness: size strings as --max-shard-size and max_shard_size take them (fm_parse_size:
 * an integer, optional blanks, a decimal or binary unit, "b" for bits). Input: the string (up to
 * the first NUL, at most 255 bytes). Oracles: an accepted string parses to the same value with a
 * blank in front; a refusal comes with a message. */
#include <stdio.h>
#include <string.h>

#include "fusemap/io.h"
#include "fuzz_common.h"

int fm_fuzz_size(const uint8_t *data, size_t size);
int fm_fuzz_size(const uint8_t *data, size_t size) {
    char s[256], again[258];
    if (size >= sizeof s) size = sizeof s - 1;
    memcpy(s, data, size);
    s[size] = '\0';
    uint64_t v = 0, w = 0;
    fm_error err;
    err.msg[0] = '\0';
    fm_status st = fm_parse_size(s, &v, &err);
    fmz_note("parse_size '%s': %s %s", s, fm_status_name(st), st ? err.msg : "");
    fmz_verdict(st == FM_OK);
    if (st != FM_OK) {
        if (!err.msg[0]) fmz_fail("size", "refused without a message");
        return 0;
    }
    snprintf(again, sizeof again, " %s", s);
    if (fm_parse_size(again, &w, NULL) != FM_OK || w != v)
        fmz_fail("size: a leading blank changes the value", s);
    return 0;
}

FM_FUZZ_TARGET(fm_fuzz_size)
