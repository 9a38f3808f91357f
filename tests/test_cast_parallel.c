/* fm_tensor_cast on large tensors runs on several threads: its result must equal the serial
 * element conversion exactly, whatever the sizes (chunk boundaries, odd tails). */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "fusemap/tensor.h"
#include "qwen_fixture.h"

static void cast_case(fm_dtype from, fm_dtype to, int64_t n) {
    fm_shape s = {1, {n}};
    fm_tensor f32, src, out;
    fm_error err;
    uint64_t seed = (uint64_t)n * 31 + 7;
    CHECK_OK(fm_tensor_alloc(&f32, FM_DTYPE_F32, &s, &err), &err);
    fm_qfix_fill(f32.data, (uint64_t)n, 3.0f, &seed);
    CHECK_OK(fm_tensor_cast(&src, &f32, from, &err), &err);
    CHECK_OK(fm_tensor_cast(&out, &src, to, &err), &err);
    size_t ob = (size_t)n * fm_dtype_bits(to) / 8;
    void *ref = malloc(ob);
    fm_convert(ref, to, src.data, from, (uint64_t)n);
    CHECK_MSG(out.data && !memcmp(ref, out.data, ob),
              "%s -> %s of %lld elements equals the serial conversion", fm_dtype_name(from),
              fm_dtype_name(to), (long long)n);
    free(ref);
    fm_tensor_free(&f32), fm_tensor_free(&src), fm_tensor_free(&out);
}

static void test_large_casts_equal_serial(void) {
    const int64_t sizes[] = {(1 << 22) + 3, (5 << 20) + 777, 9 << 20};
    for (int i = 0; i < 3; i++) {
        cast_case(FM_DTYPE_BF16, FM_DTYPE_F32, sizes[i]);
        cast_case(FM_DTYPE_F16, FM_DTYPE_F32, sizes[i]);
        cast_case(FM_DTYPE_F32, FM_DTYPE_BF16, sizes[i]);
        cast_case(FM_DTYPE_F32, FM_DTYPE_F16, sizes[i]);
    }
}

int main(void) {
    RUN(test_large_casts_equal_serial);
    TEST_END();
}
