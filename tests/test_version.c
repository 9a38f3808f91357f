/* One version: fm_version() and FM_VERSION_STRING equal the header's three numbers; `fusemap
 * --version` / `-V` print it and the linked libraries' versions (compared with what those
 * libraries report here); the shared library carries SONAME libfusemap.so.MAJOR (read from its
 * ELF dynamic section); `make install` puts the real file, the two usual links and a
 * fusemap.pc with that version in place. */
#include <elf.h>
#include <jansson.h>
#include <png.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "file_util.h"
#include "fusemap/fusemap.h"

static const char *cli;
static char *build_dir, *tmp, version[64];

static int sh(const char *fmt, ...) {
    char cmd[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    int rc = system(cmd);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

static void test_library_version(void) {
    CHECK_EQ_STR(version, fm_version());
    CHECK_EQ_STR(version, FM_VERSION_STRING);
    CHECK_EQ_INT(FM_VERSION_MAJOR * 10000 + FM_VERSION_MINOR * 100 + FM_VERSION_PATCH,
                 FM_VERSION_NUMBER);
}

static void test_cli_version(void) {
    char *out = fm_test_join(tmp, "v1"), *out2 = fm_test_join(tmp, "v2");
    CHECK_EQ_INT(0, sh("%s --version >%s", cli, out));
    CHECK_EQ_INT(0, sh("%s -V >%s", cli, out2));
    char *a = fm_test_read_file(out, NULL), *b = fm_test_read_file(out2, NULL), first[128];
    CHECK(a && b && !strcmp(a, b));
    snprintf(first, sizeof first, "fusemap %s\n", version);
    CHECK_MSG(a && !strncmp(a, first, strlen(first)), "first line '%s', got '%.60s'", first,
              a ? a : "");
    /* each library on its own line, with the version it reports to this process */
    char want[256];
    snprintf(want, sizeof want, "\n  jansson   %s\n", jansson_version_str());
    CHECK_CONTAINS(a, want);
    snprintf(want, sizeof want, "\n  libpng    %s\n", png_get_libpng_ver(NULL));
    CHECK_CONTAINS(a, want);
    CHECK_CONTAINS(a, "\n  OpenBLAS  OpenBLAS ");
    CHECK_CONTAINS(a, "\n  PCRE2     10.");
    CHECK_CONTAINS(a, "\n  libjpeg   ");
    free(a), free(b), free(out), free(out2);
}

/* DT_SONAME of a 64-bit little-endian ELF shared object, or "" (malloc'd). */
static char *elf_soname(const char *path) {
    size_t len = 0;
    unsigned char *f = (unsigned char *)fm_test_read_file(path, &len);
    char *res = strdup("");
    if (!f || len < sizeof(Elf64_Ehdr) || memcmp(f, ELFMAG, SELFMAG) || f[EI_CLASS] != ELFCLASS64) {
        free(f);
        return res;
    }
    const Elf64_Ehdr *eh = (const Elf64_Ehdr *)f;
    if (eh->e_shoff + (uint64_t)eh->e_shnum * sizeof(Elf64_Shdr) > len) {
        free(f);
        return res;
    }
    const Elf64_Shdr *sh = (const Elf64_Shdr *)(f + eh->e_shoff);
    for (int i = 0; i < eh->e_shnum; i++) {
        if (sh[i].sh_type != SHT_DYNAMIC || sh[i].sh_link >= eh->e_shnum) continue;
        const Elf64_Shdr *str = &sh[sh[i].sh_link];
        if (sh[i].sh_offset + sh[i].sh_size > len || str->sh_offset + str->sh_size > len) break;
        const Elf64_Dyn *d = (const Elf64_Dyn *)(f + sh[i].sh_offset);
        for (size_t k = 0; k < sh[i].sh_size / sizeof *d && d[k].d_tag != DT_NULL; k++)
            if (d[k].d_tag == DT_SONAME && d[k].d_un.d_val < str->sh_size) {
                free(res);
                res = strndup((const char *)f + str->sh_offset + d[k].d_un.d_val,
                              str->sh_size - d[k].d_un.d_val);
            }
    }
    free(f);
    return res;
}

static char *link_target(const char *path) {
    char buf[4096];
    ssize_t n = readlink(path, buf, sizeof buf - 1);
    return strndup(n > 0 ? buf : "", n > 0 ? (size_t)n : 0);
}

static void test_soname(void) {
    char so[4300], soname[64];
    snprintf(soname, sizeof soname, "libfusemap.so.%d", FM_VERSION_MAJOR);
    snprintf(so, sizeof so, "%s/libfusemap.so", build_dir);
    char *got = elf_soname(so);
    CHECK_EQ_STR(soname, got);
    free(got);
}

/* make install into a temporary DESTDIR (the build must be current: install builds nothing). */
static void test_install(void) {
    const char *env = "env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL";
    int stale =
        sh("%s make -q BUILD=%s %s/libfusemap.a %s/libfusemap.so %s/fusemap >/dev/null 2>&1", env,
           build_dir, build_dir, build_dir, build_dir);
    CHECK_MSG(stale == 0, "the build in %s is current (run make first); make -q says %d", build_dir,
              stale);
    if (stale) return;
    char *dest = fm_test_join(tmp, "dest"), *log = fm_test_join(tmp, "install.log");
    CHECK_EQ_INT(0, sh("%s make install BUILD=%s DESTDIR=%s PREFIX=/usr >%s 2>&1", env, build_dir,
                       dest, log));
    char lib[4300], real[128], major[64], pc[4300];
    snprintf(real, sizeof real, "libfusemap.so.%s", version);
    snprintf(major, sizeof major, "libfusemap.so.%d", FM_VERSION_MAJOR);
    snprintf(lib, sizeof lib, "%s/usr/lib/libfusemap.so", dest);
    char *t1 = link_target(lib);
    CHECK_EQ_STR(major, t1); /* libfusemap.so -> libfusemap.so.MAJOR */
    snprintf(lib, sizeof lib, "%s/usr/lib/%s", dest, major);
    char *t2 = link_target(lib);
    CHECK_EQ_STR(real, t2); /* libfusemap.so.MAJOR -> libfusemap.so.X.Y.Z */
    snprintf(lib, sizeof lib, "%s/usr/lib/%s", dest, real);
    struct stat st;
    CHECK_MSG(lstat(lib, &st) == 0 && S_ISREG(st.st_mode), "%s is the real file", lib);
    char *so = elf_soname(lib);
    CHECK_EQ_STR(major, so);
    snprintf(pc, sizeof pc, "%s/usr/lib/pkgconfig/fusemap.pc", dest);
    char *text = fm_test_read_file(pc, NULL), want[128];
    snprintf(want, sizeof want, "\nVersion: %s\n", version);
    CHECK_CONTAINS(text, want);
    CHECK_CONTAINS(text, "prefix=/usr\n");
    snprintf(lib, sizeof lib, "%s/usr/include/fusemap/version.h", dest);
    CHECK_MSG(lstat(lib, &st) == 0, "version.h is installed");
    free(t1), free(t2), free(so), free(text), free(dest), free(log);
}

int main(void) {
    cli = getenv("FM_CLI");
    if (!cli) cli = "build/fusemap";
    const char *slash = strrchr(cli, '/');
    build_dir = strndup(slash ? cli : ".", slash ? (size_t)(slash - cli) : 1);
    snprintf(version, sizeof version, "%d.%d.%d", FM_VERSION_MAJOR, FM_VERSION_MINOR,
             FM_VERSION_PATCH);
    tmp = fm_test_tmpdir("version");
    RUN(test_library_version);
    RUN(test_cli_version);
    RUN(test_soname);
    RUN(test_install);
    fm_test_rmtree(tmp);
    free(tmp), free(build_dir);
    TEST_END();
}
