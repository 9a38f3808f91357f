/* fusemap version: the one place the version number lives. The Makefile reads these three
 * lines for the shared library's SONAME (libfusemap.so.MAJOR) and for fusemap.pc. */
#ifndef FUSEMAP_VERSION_H
#define FUSEMAP_VERSION_H

#include "fusemap/core.h"

#ifdef __cplusplus
extern "C" {
#endif

#define FM_VERSION_MAJOR 0
#define FM_VERSION_MINOR 1
#define FM_VERSION_PATCH 0

#define FM_VERSION_STR_(x) #x
#define FM_VERSION_STR(x) FM_VERSION_STR_(x)
/* "MAJOR.MINOR.PATCH" of the headers a program is compiled against. */
#define FM_VERSION_STRING                                                                          \
    FM_VERSION_STR(FM_VERSION_MAJOR)                                                               \
    "." FM_VERSION_STR(FM_VERSION_MINOR) "." FM_VERSION_STR(FM_VERSION_PATCH)
/* One integer for #if comparisons: MAJOR * 10000 + MINOR * 100 + PATCH. */
#define FM_VERSION_NUMBER (FM_VERSION_MAJOR * 10000 + FM_VERSION_MINOR * 100 + FM_VERSION_PATCH)

/* The version of the library linked at run time ("MAJOR.MINOR.PATCH", a static string). It
 * differs from FM_VERSION_STRING when a program runs against another build of libfusemap than
 * the headers it was compiled with; within one MAJOR the ABI is meant to stay compatible. */
FM_API const char *fm_version(void);

#ifdef __cplusplus
}
#endif
#endif
