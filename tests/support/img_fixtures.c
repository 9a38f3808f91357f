/* Image test fixtures (area "image"): libpng/libjpeg encoders, PRNG, temp dirs, goldens.
 * Test-only: plain malloc, failures reported as NULL / -1. */
#include "img_fixtures.h"

#include "file_util.h"

#include <ftw.h>
#include <math.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jpeglib.h>
#include <png.h>

uint64_t imgfx_rand(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

void imgfx_fill_random(uint8_t *buf, size_t n, uint64_t seed) {
    uint64_t s = seed;
    for (size_t i = 0; i < n; i++)
        buf[i] = (uint8_t)(imgfx_rand(&s) >> 56);
}

void imgfx_fill_smooth(uint8_t *px, uint32_t w, uint32_t h, uint32_t ch, uint64_t seed) {
    uint64_t s = seed;
    double ph = (double)(imgfx_rand(&s) % 1000) / 100.0;
    for (uint32_t y = 0; y < h; y++)
        for (uint32_t x = 0; x < w; x++)
            for (uint32_t c = 0; c < ch; c++) {
                double v =
                    128 + 90 * sin(x / (3.0 + 2 * c) + y / 7.0 + ph) +
                    30 * ((double)x / (w > 1 ? w - 1 : 1) - (double)y / (h > 1 ? h - 1 : 1)) +
                    (double)(imgfx_rand(&s) % 13) - 6;
                px[((size_t)y * w + x) * ch + c] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : lrint(v));
            }
}

/* ---- PNG --------------------------------------------------------------------------------- */

typedef struct membuf {
    uint8_t *p;
    size_t len, cap;
    int failed;
} membuf;

static void mb_write(png_structp png, png_bytep data, size_t n) {
    membuf *m = png_get_io_ptr(png);
    if (m->failed) return;
    if (m->len + n > m->cap) {
        size_t cap = (m->cap ? m->cap * 2 : 1024) + n;
        uint8_t *np = realloc(m->p, cap);
        if (!np) {
            m->failed = 1;
            return;
        }
        m->p = np, m->cap = cap;
    }
    memcpy(m->p + m->len, data, n);
    m->len += n;
}

static void mb_flush(png_structp png) {
    (void)png;
}

static void png_quiet_error(png_structp png, png_const_charp msg) {
    (void)msg;
    png_longjmp(png, 1);
}
static void png_quiet_warning(png_structp png, png_const_charp msg) {
    (void)png, (void)msg;
}

static int png_channels(int color_type) {
    switch (color_type) {
    case PNG_COLOR_TYPE_GRAY:
        return 1;
    case PNG_COLOR_TYPE_GRAY_ALPHA:
        return 2;
    case PNG_COLOR_TYPE_PALETTE:
        return 1;
    case PNG_COLOR_TYPE_RGB:
        return 3;
    default:
        return 4;
    }
}

/* Packs one row of samples into libpng's row format. */
static void pack_row(const uint8_t *s, size_t nsamp, int depth, uint8_t *out) {
    if (depth >= 8) {
        memcpy(out, s, nsamp * (size_t)(depth / 8));
        return;
    }
    size_t per = 8 / (size_t)depth, nbytes = (nsamp + per - 1) / per;
    memset(out, 0, nbytes);
    for (size_t i = 0; i < nsamp; i++)
        out[i / per] |= (uint8_t)((s[i] & ((1u << depth) - 1)) << (8 - depth * (int)(i % per + 1)));
}

uint8_t *imgfx_png_encode(uint32_t w, uint32_t h, int color_type, int bit_depth, int interlace,
                          const uint8_t *samples, const uint8_t *plte, int n_plte,
                          const uint8_t *trns, int n_trns, size_t *len) {
    membuf m = {0};
    size_t nsamp = (size_t)w * (size_t)png_channels(color_type);
    size_t in_row = nsamp * (bit_depth == 16 ? 2 : 1);
    uint8_t *rowbuf = malloc(in_row + 8), **rows = malloc(h * sizeof *rows);
    uint8_t *packed = malloc(in_row * h + 8);
    png_structp png =
        png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, png_quiet_error, png_quiet_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!rowbuf || !rows || !packed || !png || !info || setjmp(png_jmpbuf(png))) {
        if (png) png_destroy_write_struct(&png, info ? &info : NULL);
        free(rowbuf), free(rows), free(packed), free(m.p);
        return NULL;
    }
    png_set_write_fn(png, &m, mb_write, mb_flush);
    png_set_benign_errors(png, 1); /* allow palette indices past the palette (a test case) */
    png_set_IHDR(png, info, w, h, bit_depth, color_type,
                 interlace ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
                 PNG_FILTER_TYPE_DEFAULT);
    if (plte && n_plte > 0) {
        png_color pal[256];
        for (int i = 0; i < n_plte && i < 256; i++)
            pal[i].red = plte[3 * i], pal[i].green = plte[3 * i + 1], pal[i].blue = plte[3 * i + 2];
        png_set_PLTE(png, info, pal, n_plte);
    }
    if (trns && n_trns > 0) {
        png_color_16 tc = {0};
        if (color_type == PNG_COLOR_TYPE_PALETTE)
            png_set_tRNS(png, info, trns, n_trns, NULL);
        else {
            tc.gray = tc.red = (png_uint_16)(trns[0] << 8 | (n_trns > 1 ? trns[1] : 0));
            png_set_tRNS(png, info, NULL, 0, &tc);
        }
    }
    png_write_info(png, info);
    size_t packed_row = png_get_rowbytes(png, info);
    for (uint32_t y = 0; y < h; y++) {
        rows[y] = packed + (size_t)y * packed_row;
        pack_row(samples + (size_t)y * in_row, nsamp, bit_depth, rows[y]);
    }
    png_write_image(png, rows);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    free(rowbuf), free(rows), free(packed);
    if (m.failed) {
        free(m.p);
        return NULL;
    }
    *len = m.len;
    return m.p;
}

/* ---- JPEG -------------------------------------------------------------------------------- */

typedef struct jerr_jmp {
    struct jpeg_error_mgr pub;
    jmp_buf jb;
} jerr_jmp;

static void jerr_exit(j_common_ptr ci) {
    longjmp(((jerr_jmp *)ci->err)->jb, 1);
}
static void jerr_out(j_common_ptr ci) {
    (void)ci;
}

uint8_t *imgfx_jpeg_encode(const uint8_t *pix, uint32_t w, uint32_t h, int comps, int quality,
                           int full_chroma, int progressive, size_t *len) {
    struct jpeg_compress_struct ci;
    jerr_jmp je;
    unsigned char *out = NULL;
    unsigned long outlen = 0;
    ci.err = jpeg_std_error(&je.pub);
    je.pub.error_exit = jerr_exit;
    je.pub.output_message = jerr_out;
    if (setjmp(je.jb)) {
        jpeg_destroy_compress(&ci);
        free(out);
        return NULL;
    }
    jpeg_create_compress(&ci);
    jpeg_mem_dest(&ci, &out, &outlen);
    ci.image_width = w, ci.image_height = h, ci.input_components = comps;
    ci.in_color_space = comps == 1 ? JCS_GRAYSCALE : comps == 3 ? JCS_RGB : JCS_CMYK;
    jpeg_set_defaults(&ci);
    jpeg_set_quality(&ci, quality, TRUE);
    if (full_chroma)
        for (int i = 0; i < ci.num_components; i++)
            ci.comp_info[i].h_samp_factor = ci.comp_info[i].v_samp_factor = 1;
    if (progressive) jpeg_simple_progression(&ci);
    jpeg_start_compress(&ci, TRUE);
    while (ci.next_scanline < h) {
        JSAMPROW r = (JSAMPROW)(pix + (size_t)ci.next_scanline * w * (size_t)comps);
        jpeg_write_scanlines(&ci, &r, 1);
    }
    jpeg_finish_compress(&ci);
    jpeg_destroy_compress(&ci);
    /* jpeg_mem_dest's buffer comes from malloc: hand it over as is */
    *len = outlen;
    return out;
}

/* ---- files --------------------------------------------------------------------------------- */

char *imgfx_tmpdir(void) {
    return fm_test_tmpdir("img");
}

void imgfx_rmtree(char *dir) {
    fm_test_rmtree(dir);
    free(dir);
}

char *imgfx_join(const char *dir, const char *name) {
    return fm_test_join(dir, name);
}

int imgfx_write_file(const char *path, const void *data, size_t len) {
    return fm_test_write_file(path, data, len);
}

uint8_t *imgfx_read_file(const char *path, size_t *len) {
    return (uint8_t *)fm_test_read_file(path, len);
}

const char *imgfx_data_dir(void) {
    const char *d = getenv("FM_TEST_DATA");
    return d && *d ? d : "tests/data";
}

static uint32_t crc32_bytes(const uint8_t *p, size_t n) {
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1u)));
    }
    return c ^ 0xffffffffu;
}

void imgfx_png_fix_crc(uint8_t *buf, size_t type_off, uint32_t n) {
    uint32_t c = crc32_bytes(buf + type_off, 4 + (size_t)n);
    uint8_t *q = buf + type_off + 4 + n;
    q[0] = (uint8_t)(c >> 24), q[1] = (uint8_t)(c >> 16), q[2] = (uint8_t)(c >> 8),
    q[3] = (uint8_t)c;
}

uint32_t imgfx_le32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
