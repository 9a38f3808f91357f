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
/* RGB8 PNG written by libpng with an eXIf chunk holding `exif` (n bytes), which libpng puts
 * before IDAT (after_idat 0: png_set_eXIf_1 on the info struct) or after it (after_idat 1: on
 * the end info, as png_write_end writes it). Returns malloc'd bytes or NULL. */
uint8_t *imgfx_png_encode_exif(const uint8_t *rgb, uint32_t w, uint32_t h, int interlace,
                               const uint8_t *exif, uint32_t n, int after_idat, size_t *len);
/* A minimal TIFF block (8-byte header, IFD0 with one Orientation SHORT entry = o, no next
 * IFD) in the given byte order; 26 bytes written to out. */
size_t imgfx_tiff_orientation(uint8_t out[26], unsigned o, int little_endian);
/* Frames a PNG chunk (length, type, data, CRC) into out (n + 12 bytes); returns n + 12. */
size_t imgfx_png_chunk(uint8_t *out, const char type[4], const uint8_t *data, uint32_t n);
/* Copy of the PNG `png` with the framed chunks `pre` inserted before its first IDAT and
 * `post` after its last IDAT (either may be NULL/0). malloc'd; NULL if there is no IDAT. */
uint8_t *imgfx_png_splice(const uint8_t *png, size_t len, const uint8_t *pre, size_t pre_len,
                          const uint8_t *post, size_t post_len, size_t *out_len);
/* Copy of a JPEG with an APP1 segment holding `payload` (n <= 65533 bytes) right after SOI. */
uint8_t *imgfx_jpeg_add_app1(const uint8_t *jpg, size_t len, const uint8_t *payload, size_t n,
                             size_t *out_len);

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
