/* fm_version: the library's version string, compiled in from fusemap/version.h. */
#include "fusemap/version.h"

const char *fm_version(void) {
    return FM_VERSION_STRING;
}
