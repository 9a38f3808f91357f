/* Image test fixtures (area "image"): PNG/JPEG encoders on libpng/libjpeg for writing test
 * images, a deterministic PRNG, temporary directories and golden-file access. Test-only code:
 * plain malloc; every returned buffer is freed by the caller with free(). */
#ifndef FM_TEST_IMG_FIXTURES_H
#define FM_TEST_IMG_FIXTURES_H

#include <stddef.h>
#include <stdint.h>

/* splitmix64 step; a fresh stream per seed. */
uint64_t imgfx_rand(uint64_t *state);
/* n random bytes. */
void imgfx_fill_random(uint8_t *buf, size_t n, uint64_t seed);
/* Smooth-ish RGB content (gradients + sinusoid + small noise), h rows of w pixels. */
void imgfx_fill_smooth(uint8_t *rgb, uint32_t w, uint32_t h, uint32_t channels, uint64_t seed);

/* PNG of h rows x w pixels. `samples` holds w*channels samples per row, one per byte for
 * depths <= 8 (sub-byte values packed here), two big-endian bytes for depth 16. Palette:
 * n_plte RGB triples (color type 3); trns/n_trns the raw tRNS chunk (may be NULL).
 * Returns a malloc'd buffer (NULL on failure); *len its size. */
uint8_t *imgfx_png_encode(uint32_t w, uint32_t h, int color_type, int bit_depth, int interlace,
                          const uint8_t *samples, const uint8_t *plte, int n_plte,
                          const uint8_t *trns, int n_trns, size_t *len);
/* JPEG (1 = gray, 3 = RGB, 4 = CMYK written with an Adobe marker, stored values as given).
 * `full_chroma` disables chroma subsampling. Returns malloc'd bytes or NULL. */
uint8_t *imgfx_jpeg_encode(const uint8_t *pix, uint32_t w, uint32_t h, int comps, int quality,
                           int full_chroma, int progressive, size_t *len);

/* Fresh directory under $FM_TEST_TMP (or /tmp); malloc'd path, NULL on failure. */
char *imgfx_tmpdir(void);
/* Removes a directory tree made by imgfx_tmpdir and frees `dir`. Accepts NULL. */
void imgfx_rmtree(char *dir);
/* malloc'd "dir/name". */
char *imgfx_join(const char *dir, const char *name);
int imgfx_write_file(const char *path, const void *data, size_t len);
/* Whole file (malloc'd), NULL when unreadable. */
uint8_t *imgfx_read_file(const char *path, size_t *len);
/* Golden data directory: $FM_TEST_DATA, else "tests/data". Borrowed. */
const char *imgfx_data_dir(void);
/* Fixes the CRC of the PNG chunk whose type starts at buf[type_off] with payload length n. */
void imgfx_png_fix_crc(uint8_t *buf, size_t type_off, uint32_t n);
/* Little-endian u32 at p. */
uint32_t imgfx_le32(const uint8_t *p);

#endif
