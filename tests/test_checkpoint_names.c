/* A tensor name with an embedded NUL is legal in a lone safetensors file (the reference
 * accepts "\u0000"), but a model directory refuses it: model keys are C strings, and such a
 * name would alias the key before the NUL (found by the checkpoint fuzzer). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "check.h"
#include "file_util.h"
#include "fusemap/fusemap.h"
#include "qwen_fixture.h"

static void write_raw(const char *path, const char *header) {
    size_t hl = strlen(header), pad = (8 - hl % 8) % 8;
    uint64_t n = hl + pad;
    char buf[512];
    memcpy(buf, &n, 8);
    memcpy(buf + 8, header, hl);
    memset(buf + 8 + hl, ' ', pad);
    memset(buf + 8 + n, 0x3f, 4); /* one F32 */
    fm_test_write_file(path, buf, 8 + n + 4);
}

static void test_nul_in_name(void) {
    char *tmp = fm_test_tmpdir("names"), path[4300];
    fm_error err;
    snprintf(path, sizeof path, "%s/model.safetensors", tmp);
    write_raw(path, "{\"a.b\\u0000c\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}");
    fm_st_file *f = NULL;
    CHECK_OK(fm_st_open(path, &f, &err), &err); /* the file itself is valid */
    CHECK(f && fm_st_entry_at(f, 0)->name_len == 5);
    fm_st_close(f);
    fm_checkpoint *c = NULL;
    CHECK_STATUS(FM_ERR_HEADER_JSON, fm_checkpoint_open(tmp, &c, &err), &err);
    CHECK_CONTAINS(err.msg, "NUL byte");
    CHECK(c == NULL);
    write_raw(path, "{\"a.bc\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}");
    CHECK_OK(fm_checkpoint_open(tmp, &c, &err), &err);
    CHECK(c && fm_checkpoint_find(c, "a.bc") == 0);
    fm_checkpoint_close(c);
    fm_test_rmtree(tmp);
    free(tmp);
}

int main(void) {
    RUN(test_nul_in_name);
    TEST_END();
}
