/* `fusemap --version`: fusemap's version and those of the libraries it is linked with, asked
 * at run time where the library can tell. Adding a library: one function and one table line. */
#include <cblas.h>
#include <jansson.h>
#include <png.h>
#include <stdio.h>
#include <string.h>

#include <jpeglib.h> /* after stdio.h, which it needs */

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "commands.h"
#include "fusemap/version.h"

typedef void (*version_fn)(char *buf, size_t n);

static void v_openblas(char *buf, size_t n) {
    snprintf(buf, n, "%s", openblas_get_config());
}

static void v_pcre2(char *buf, size_t n) {
    char v[64] = "";
    if (pcre2_config(PCRE2_CONFIG_VERSION, v) < 0) snprintf(v, sizeof v, "unknown");
    snprintf(buf, n, "%s", v);
}

static void v_jansson(char *buf, size_t n) {
    snprintf(buf, n, "%s", jansson_version_str());
}

static void v_libpng(char *buf, size_t n) {
    snprintf(buf, n, "%s", png_get_libpng_ver(NULL));
}

/* libjpeg has no run-time version call: the headers' (libjpeg-turbo's soname pins the API). */
static void v_libjpeg(char *buf, size_t n) {
#define FM_STR_(x) #x
#define FM_STR(x) FM_STR_(x)
#ifdef LIBJPEG_TURBO_VERSION
    snprintf(buf, n, "libjpeg-turbo %s (libjpeg API %d, compiled against)",
             FM_STR(LIBJPEG_TURBO_VERSION), JPEG_LIB_VERSION);
#else
    snprintf(buf, n, "libjpeg API %d (compiled against)", JPEG_LIB_VERSION);
#endif
}

static const struct {
    const char *name;
    version_fn get;
} libs[] = {
    {"OpenBLAS", v_openblas}, {"PCRE2", v_pcre2},     {"jansson", v_jansson},
    {"libpng", v_libpng},     {"libjpeg", v_libjpeg},
};

int fm_cli_print_version(FILE *out) {
    fprintf(out, "fusemap %s\n", fm_version());
    for (size_t i = 0; i < sizeof libs / sizeof *libs; i++) {
        char v[512];
        libs[i].get(v, sizeof v);
        fprintf(out, "  %-9s %s\n", libs[i].name, v);
    }
    return fflush(out) == 0 && !ferror(out) ? 0 : fm_cli_errorf("cannot write the version");
}
