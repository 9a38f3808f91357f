/* Tests of image decoding (Pillow conversion rules, bad input, EXIF orientation) and of the
 * Pillow-exact bicubic resize (committed Pillow goldens, independent float64 reference). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <png.h>

#include "fusemap/image.h"
#include "support/check.h"
#include "support/img_fixtures.h"

static int quick(void) {
    const char *q = getenv("FM_TEST_QUICK");
    return q && *q && *q != '0';
}

/* Golden file bytes (tests/data/image/NAME); NULL (and a failed check) when missing. */
static uint8_t *golden(const char *name, size_t *len) {
    char path[1024];
    snprintf(path, sizeof path, "%s/image/%s", imgfx_data_dir(), name);
    uint8_t *b = imgfx_read_file(path, len);
    CHECK_MSG(b != NULL,
              "golden file %s missing (run from the repository root or set FM_TEST_DATA)", path);
    return b;
}

/* ---- sniffing and small API contracts --------------------------------------------------- */

static void test_sniff(void) {
    static const uint8_t png[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    static const uint8_t jpg[3] = {0xff, 0xd8, 0xff};
    CHECK_EQ_INT(FM_IMAGE_FORMAT_PNG, fm_image_sniff(png, 8));
    CHECK_EQ_INT(FM_IMAGE_FORMAT_UNKNOWN, fm_image_sniff(png, 7));
    CHECK_EQ_INT(FM_IMAGE_FORMAT_JPEG, fm_image_sniff(jpg, 3));
    CHECK_EQ_INT(FM_IMAGE_FORMAT_UNKNOWN, fm_image_sniff(jpg, 2));
    CHECK_EQ_INT(FM_IMAGE_FORMAT_UNKNOWN, fm_image_sniff("GIF89a", 6));
    CHECK_EQ_INT(FM_IMAGE_FORMAT_UNKNOWN, fm_image_sniff(NULL, 10));
    CHECK_EQ_STR("PNG", fm_image_format_name(FM_IMAGE_FORMAT_PNG));
    CHECK_EQ_STR("JPEG", fm_image_format_name(FM_IMAGE_FORMAT_JPEG));
    CHECK_EQ_STR("unknown", fm_image_format_name((fm_image_format)42));
    fm_image_free(NULL);
    fm_image z = {0};
    fm_image_free(&z);
    fm_error errbuf = {0}, *err = &errbuf;
    CHECK_STATUS(FM_ERR_IMAGE, fm_image_alloc(&z, 0, 5, err), err);
    CHECK_STATUS(FM_ERR_IMAGE, fm_image_alloc(&z, 20000, 20000, err), err);
    CHECK(z.data == NULL);
}

/* ---- PNG round trips and conversions ------------------------------------------------------ */

static void test_png_roundtrip_rgb8(void) {
    static const uint32_t sizes[][2] = {{1, 1}, {37, 23}, {64, 1}, {1, 50}, {129, 77}};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        for (int interlace = 0; interlace < 2; interlace++) {
            uint32_t w = sizes[s][0], h = sizes[s][1];
            uint8_t *px = malloc((size_t)w * h * 3);
            imgfx_fill_random(px, (size_t)w * h * 3, 100 + s * 2 + (uint64_t)interlace);
            size_t len = 0;
            uint8_t *png = imgfx_png_encode(w, h, PNG_COLOR_TYPE_RGB, 8, interlace, px, NULL, 0,
                                            NULL, 0, &len);
            CHECK(png != NULL);
            fm_image img = {0};
            fm_error errbuf = {0}, *err = &errbuf;
            CHECK_OK(fm_image_decode(png, len, "rt.png", &img, err), err);
            CHECK_EQ_INT(w, img.width);
            CHECK_EQ_INT(h, img.height);
            CHECK_EQ_INT(0, img.orientation);
            CHECK_MSG(img.data && memcmp(img.data, px, (size_t)w * h * 3) == 0,
                      "%ux%u interlace %d pixels differ", w, h, interlace);
            fm_image_free(&img);
            free(png);
            free(px);
        }
    }
}

/* The RGB Pillow gives for sample i of a decoded PNG (independent statement of its rules). */
static void expected_rgb(int ct, int depth, const uint8_t *s, size_t x, const uint8_t *plte,
                         int n_plte, uint8_t out[3]) {
    int bps = depth == 16 ? 2 : 1, ch = ct == 0 ? 1 : ct == 2 ? 3 : ct == 3 ? 1 : ct == 4 ? 2 : 4;
    const uint8_t *p = s + x * (size_t)(ch * bps);
    if (ct == 3) {
        int i = p[0];
        for (int c = 0; c < 3; c++)
            out[c] = i < n_plte ? plte[3 * i + c] : (uint8_t)i;
    } else if (ct == 0 && depth == 16) {
        unsigned v = (unsigned)p[0] << 8 | p[1];
        out[0] = out[1] = out[2] = (uint8_t)(v > 255 ? 255 : v);
    } else if (ct == 0 && depth < 8) {
        out[0] = out[1] = out[2] = (uint8_t)(p[0] * (255 / ((1 << depth) - 1)));
    } else if (ct == 0 || ct == 4) {
        out[0] = out[1] = out[2] = p[0]; /* high byte when 16-bit */
    } else {
        for (int c = 0; c < 3; c++)
            out[c] = p[c * bps];
    }
}

static void check_png_kind(int ct, int depth, int interlace, uint64_t seed) {
    uint32_t w = 19, h = 11;
    int ch = ct == 0 ? 1 : ct == 2 ? 3 : ct == 3 ? 1 : ct == 4 ? 2 : 4;
    size_t rowb = (size_t)w * ch * (depth == 16 ? 2 : 1);
    uint8_t *s = malloc(rowb * h), plte[3 * 7];
    imgfx_fill_random(s, rowb * h, seed);
    imgfx_fill_random(plte, sizeof plte, seed + 1);
    /* palettes one entry short of the index range, so indices past the palette occur */
    int n_plte = ct == 3 && depth < 8 && (1 << depth) - 1 < 7 ? (1 << depth) - 1 : 7;
    int maxv = depth < 8 ? (1 << depth) - 1 : ct == 3 ? 11 : 255;
    for (size_t i = 0; i < rowb * h; i++) {
        if (depth <= 8)
            s[i] = (uint8_t)(s[i] % (maxv + 1));
        else if (ct == 0 && i % 6 == 0)
            s[i] = 0; /* some 16-bit gray values below 256 */
    }
    size_t len = 0;
    uint8_t *png = imgfx_png_encode(w, h, ct, depth, interlace, s, ct == 3 ? plte : NULL, n_plte,
                                    NULL, 0, &len);
    CHECK_MSG(png != NULL, "encoding type %d depth %d failed", ct, depth);
    fm_image img = {0};
    fm_error errbuf = {0}, *err = &errbuf;
    CHECK_OK(fm_image_decode(png, len, "kind.png", &img, err), err);
    int bad = 0;
    for (uint32_t y = 0; img.data && y < h; y++)
        for (uint32_t x = 0; x < w; x++) {
            uint8_t e[3];
            expected_rgb(ct, depth, s + y * rowb, x, plte, n_plte, e);
            if (memcmp(e, img.data + ((size_t)y * w + x) * 3, 3) != 0 && bad++ == 0)
                CHECK_MSG(
                    0, "type %d depth %d interlace %d at (%u,%u): expected %u,%u,%u seen %u,%u,%u",
                    ct, depth, interlace, x, y, e[0], e[1], e[2], img.data[((size_t)y * w + x) * 3],
                    img.data[((size_t)y * w + x) * 3 + 1], img.data[((size_t)y * w + x) * 3 + 2]);
        }
    fm_image_free(&img);
    free(png);
    free(s);
}

static void test_png_conversions(void) {
    static const int kinds[][2] = {{0, 1},  {0, 2}, {0, 4},  {0, 8}, {0, 16}, {4, 8}, {4, 16},
                                   {2, 16}, {6, 8}, {6, 16}, {3, 1}, {3, 2},  {3, 4}, {3, 8}};
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++)
        for (int il = 0; il < 2; il++)
            check_png_kind(kinds[k][0], kinds[k][1], il, 500 + k * 4 + (uint64_t)il);
}

/* ---- Pillow decode goldens -------------------------------------------------------------- */

/* Compares an image with an FMIM golden record (magic, u32 w, u32 h, RGB). */
static void check_fmim(const fm_image *img, const char *rec_name, const char *what) {
    size_t len = 0;
    uint8_t *g = golden(rec_name, &len);
    if (!g) return;
    CHECK(len >= 12 && memcmp(g, "FMIM", 4) == 0);
    uint32_t w = imgfx_le32(g + 4), h = imgfx_le32(g + 8);
    CHECK_MSG(img->width == w && img->height == h, "%s: size %ux%u, Pillow %ux%u", what, img->width,
              img->height, w, h);
    if (img->width == w && img->height == h && len == 12 + (size_t)w * h * 3 && img->data) {
        size_t diff = 0, first = 0;
        for (size_t i = 0; i < (size_t)w * h * 3; i++)
            if (img->data[i] != g[12 + i] && diff++ == 0) first = i;
        CHECK_MSG(diff == 0, "%s: %zu bytes differ from Pillow, first at %zu (%u vs %u)", what,
                  diff, first, img->data[first], g[12 + first]);
    }
    free(g);
}

static void decode_golden_line(const char *name, int orientation, const char *transposed) {
    size_t len = 0;
    uint8_t *b = golden(name, &len);
    if (!b) return;
    fm_image img = {0};
    fm_error errbuf = {0}, *err = &errbuf;
    CHECK_OK(fm_image_decode(b, len, name, &img, err), err);
    char rec[300];
    snprintf(rec, sizeof rec, "%s.rgb", name);
    check_fmim(&img, rec, name);
    CHECK_MSG(img.orientation == orientation, "%s: orientation %d, Pillow %d", name,
              img.orientation, orientation);
    if (strcmp(transposed, "-") != 0) {
        CHECK_OK(fm_image_apply_orientation(&img, err), err);
        CHECK_EQ_INT(1, img.orientation);
        check_fmim(&img, transposed, transposed);
    }
    fm_image_free(&img);
    free(b);
}

static void test_decode_pillow_goldens(void) {
    size_t len = 0;
    uint8_t *list = golden("decode.txt", &len);
    if (!list) return;
    char *text = malloc(len + 1);
    memcpy(text, list, len);
    text[len] = 0;
    int n = 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        char name[256], tr[256];
        int o = 0;
        if (sscanf(line, "%255s %d %255s", name, &o, tr) != 3) continue;
        decode_golden_line(name, o, tr);
        n++;
    }
    CHECK_MSG(n >= 30, "only %d decode goldens", n);
    free(text);
    free(list);
}

static void test_orientation_noop_and_args(void) {
    fm_image img = {0};
    fm_error errbuf = {0}, *err = &errbuf;
    CHECK_OK(fm_image_alloc(&img, 3, 2, err), err);
    imgfx_fill_random(img.data, 18, 9);
    uint8_t copy[18];
    memcpy(copy, img.data, 18);
    for (int o = 0; o <= 1; o++) {
        img.orientation = (uint8_t)o;
        CHECK_OK(fm_image_apply_orientation(&img, err), err);
        CHECK_EQ_INT(o, img.orientation);
        CHECK(img.width == 3 && memcmp(copy, img.data, 18) == 0);
    }
    img.orientation = 6; /* rotate 90 clockwise: new (x, y) takes old (y, h-1-x) */
    CHECK_OK(fm_image_apply_orientation(&img, err), err);
    CHECK(img.width == 2 && img.height == 3);
    CHECK(memcmp(img.data, copy + 3 * 3, 3) == 0); /* (0,0) <- (0,1) */
    CHECK(memcmp(img.data + 3, copy, 3) == 0);     /* (1,0) <- (0,0) */
    fm_image_free(&img);
    CHECK_STATUS(FM_ERR_INVALID_ARG, fm_image_apply_orientation(&img, err), err);
}

/* ---- JPEG round trips -------------------------------------------------------------------- */

static int max_abs_diff(const uint8_t *a, const uint8_t *b, size_t n) {
    int m = 0;
    for (size_t i = 0; i < n; i++) {
        int d = abs((int)a[i] - (int)b[i]);
        if (d > m) m = d;
    }
    return m;
}

static void test_jpeg_roundtrip(void) {
    static const uint32_t sizes[][2] = {{16, 16}, {45, 31}, {1, 1}, {97, 13}};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        for (int prog = 0; prog < 2; prog++) {
            uint32_t w = sizes[s][0], h = sizes[s][1];
            uint8_t *px = malloc((size_t)w * h * 3);
            imgfx_fill_smooth(px, w, h, 3, 40 + s);
            size_t len = 0;
            uint8_t *jpg = imgfx_jpeg_encode(px, w, h, 3, 100, 1, prog, &len);
            CHECK(jpg != NULL);
            fm_image img = {0};
            fm_error errbuf = {0}, *err = &errbuf;
            CHECK_OK(fm_image_decode(jpg, len, "rt.jpg", &img, err), err);
            CHECK(img.width == w && img.height == h);
            int d = img.data ? max_abs_diff(px, img.data, (size_t)w * h * 3) : 999;
            CHECK_MSG(d <= 5, "%ux%u q100 4:4:4 max |diff| %d > 5", w, h, d);
            fm_image_free(&img);
            free(jpg);
            free(px);
        }
    }
}

static void test_jpeg_gray_and_cmyk(void) {
    uint32_t w = 23, h = 17;
    uint8_t g[23 * 17], c[23 * 17 * 4];
    imgfx_fill_smooth(g, w, h, 1, 77);
    imgfx_fill_smooth(c, w, h, 4, 78);
    size_t len = 0;
    fm_error errbuf = {0}, *err = &errbuf;
    fm_image img = {0};
    uint8_t *jpg = imgfx_jpeg_encode(g, w, h, 1, 100, 1, 0, &len);
    CHECK_OK(fm_image_decode(jpg, len, "gray.jpg", &img, err), err);
    int dmax = 0;
    for (size_t i = 0; img.data && i < (size_t)w * h; i++)
        for (int k = 0; k < 3; k++)
            dmax = fmax(dmax, abs(img.data[3 * i + k] - g[i]));
    CHECK_MSG(img.data && dmax <= 2, "gray q100 max |diff| %d", dmax);
    fm_image_free(&img);
    free(jpg);
    /* CMYK stored values s are Adobe-inverted: ink = 255 - s; rgb = k' - k' * c / 255 rounded */
    jpg = imgfx_jpeg_encode(c, w, h, 4, 100, 1, 0, &len);
    CHECK_OK(fm_image_decode(jpg, len, "cmyk.jpg", &img, err), err);
    dmax = 0;
    for (size_t i = 0; img.data && i < (size_t)w * h; i++) {
        double kk = c[4 * i + 3];
        for (int k = 0; k < 3; k++) {
            double e = kk - (255.0 - c[4 * i + k]) * kk / 255.0;
            dmax = fmax(dmax, fabs(img.data[3 * i + k] - e));
        }
    }
    CHECK_MSG(img.data && dmax <= 4, "cmyk q100 max |diff| %d", dmax);
    fm_image_free(&img);
    free(jpg);
}

/* ---- bad input ------------------------------------------------------------------------------ */

static void expect_image_error(const uint8_t *b, size_t len, const char *label,
                               const char *needle) {
    fm_image img = {7, 7, NULL, 3};
    fm_error errbuf = {0}, *err = &errbuf;
    fm_status st = fm_image_decode(b, len, label, &img, err);
    CHECK_STATUS(FM_ERR_IMAGE, st, err);
    CHECK_CONTAINS(err->msg, label);
    if (needle) CHECK_CONTAINS(err->msg, needle);
    CHECK(img.width == 7 && img.height == 7 && img.data == NULL && img.orientation == 3);
}

static uint8_t *sample_png(size_t *len, uint32_t w, uint32_t h) {
    uint8_t *px = malloc((size_t)w * h * 3);
    imgfx_fill_random(px, (size_t)w * h * 3, 4242);
    uint8_t *png = imgfx_png_encode(w, h, PNG_COLOR_TYPE_RGB, 8, 0, px, NULL, 0, NULL, 0, len);
    free(px);
    return png;
}

static void test_bad_png(void) {
    size_t len = 0;
    uint8_t *png = sample_png(&len, 40, 30);
    static const char sig[] = "\x89PNG\r\n\x1a\n";
    expect_image_error(png, 0, "empty.png", "empty");
    expect_image_error((const uint8_t *)sig, 8, "sigonly.png", "truncated");
    size_t cuts[] = {12, 20, 33, 40, len / 2, len - 20};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++)
        expect_image_error(png, cuts[i], "cut.png", NULL);
    uint8_t *m = malloc(len);
    memcpy(m, png, len);
    m[16] = m[17] = m[18] = m[19] = 0; /* IHDR width 0 (CRC fixed) */
    imgfx_png_fix_crc(m, 12, 13);
    expect_image_error(m, len, "zero.png", "IHDR");
    memcpy(m, png, len);
    m[18] = 0x86, m[19] = 0xa0, m[22] = 0x86, m[23] = 0xa0; /* 100000 x 100000 */
    m[16] = m[20] = 0, m[17] = m[21] = 0x01;
    imgfx_png_fix_crc(m, 12, 13);
    expect_image_error(m, len, "bomb.png", "exceeds the limit");
    memcpy(m, png, len);
    m[40] ^= 0x55; /* corrupt IDAT data: CRC mismatch */
    expect_image_error(m, len, "crc.png", NULL);
    memcpy(m, png, len);
    imgfx_fill_random(m + 8, len - 8, 1); /* garbage after the signature */
    expect_image_error(m, len, "garbage.png", NULL);
    free(m);
    free(png);
}

/* Offset of the JPEG SOFn segment payload (after FF Cx and the 2-byte length), or 0. */
static size_t jpeg_sof(const uint8_t *b, size_t len) {
    for (size_t i = 2; i + 9 < len; i++)
        if (b[i] == 0xff && (b[i + 1] == 0xc0 || b[i + 1] == 0xc2)) return i + 4;
    return 0;
}

static void test_bad_jpeg_and_unknown(void) {
    uint8_t px[40 * 30 * 3];
    imgfx_fill_smooth(px, 40, 30, 3, 5);
    size_t len = 0;
    uint8_t *jpg = imgfx_jpeg_encode(px, 40, 30, 3, 90, 0, 0, &len);
    size_t cuts[] = {3, 10, 100, len / 2, len - 10};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++)
        expect_image_error(jpg, cuts[i], "cut.jpg", NULL);
    expect_image_error(jpg, len / 2, "half.jpg", "truncated");
    uint8_t *m = malloc(len);
    size_t sof = jpeg_sof(jpg, len);
    CHECK(sof != 0);
    memcpy(m, jpg, len);
    m[sof + 1] = m[sof + 3] = 0xfd, m[sof + 2] = m[sof + 4] = 0xe8; /* 65000 x 65000 */
    expect_image_error(m, len, "bomb.jpg", "exceeds the limit");
    memcpy(m, jpg, len);
    m[sof + 1] = m[sof + 2] = 0; /* height 0 */
    expect_image_error(m, len, "zero.jpg", NULL);
    memcpy(m, jpg, len);
    imgfx_fill_random(m + 3, len - 3, 2);
    expect_image_error(m, len, "garbage.jpg", NULL);
    imgfx_fill_random(m, len, 3);
    m[0] = 'G';
    expect_image_error(m, len, "noise.bin", "unsupported image format");
    expect_image_error((const uint8_t *)"GIF89a\1\0\1\0", 10, "x.gif", "unsupported image format");
    fm_error errbuf = {0}, *err = &errbuf;
    fm_image img = {0};
    CHECK_STATUS(FM_ERR_IMAGE, fm_image_decode(NULL, 5, "null", &img, err), err);
    CHECK_STATUS(FM_ERR_INVALID_ARG, fm_image_decode(jpg, len, "x", NULL, err), err);
    free(m);
    free(jpg);
}

/* Random byte flips and cuts: the decoder returns FM_OK or FM_ERR_IMAGE, never crashes or
 * leaks (run under ASan for the full value). */
static void mutate_many(const uint8_t *b, size_t len, const char *label, int iters, uint64_t seed) {
    uint8_t *m = malloc(len);
    uint64_t s = seed;
    int ok = 0, bad = 0;
    for (int it = 0; it < iters; it++) {
        memcpy(m, b, len);
        size_t n = len;
        int flips = 1 + (int)(imgfx_rand(&s) % 8);
        for (int f = 0; f < flips; f++)
            m[8 + imgfx_rand(&s) % (len - 8)] = (uint8_t)imgfx_rand(&s);
        if (it % 4 == 3) n = 8 + imgfx_rand(&s) % (len - 8);
        fm_image img = {0};
        fm_error e = {0};
        fm_status st = fm_image_decode(m, n, label, &img, &e);
        if (st == FM_OK) {
            ok++;
            CHECK(img.data && img.width && img.height);
        } else {
            bad++;
            CHECK_MSG(st == FM_ERR_IMAGE, "%s: %s (%s)", label, fm_status_name(st), e.msg);
        }
        fm_image_free(&img);
    }
    fprintf(stderr, "  %s: %d mutants decoded, %d rejected\n", label, ok, bad);
    free(m);
}

static void test_mutations_never_crash(void) {
    int iters = quick() ? 60 : 400;
    uint8_t px[33 * 21 * 3];
    imgfx_fill_smooth(px, 33, 21, 3, 12);
    size_t len = 0;
    uint8_t *b = imgfx_png_encode(33, 21, PNG_COLOR_TYPE_RGB, 8, 1, px, NULL, 0, NULL, 0, &len);
    mutate_many(b, len, "mut_interlaced.png", iters, 1);
    free(b);
    b = imgfx_jpeg_encode(px, 33, 21, 3, 80, 0, 1, &len);
    mutate_many(b, len, "mut_progressive.jpg", iters, 2);
    free(b);
    b = imgfx_jpeg_encode(px, 33, 21, 3, 80, 0, 0, &len);
    mutate_many(b, len, "mut_baseline.jpg", iters, 3);
    free(b);
    b = golden("pal4.png", &len);
    if (b) mutate_many(b, len, "mut_pal4.png", iters, 4);
    free(b);
}

/* Every allocation of a decode failing in turn: FM_ERR_NOMEM, nothing leaks (ASan). */
static void alloc_fault_loop(const uint8_t *b, size_t len, const char *label) {
    int ok = 0;
    for (uint64_t k = 1; k < 400 && !ok; k++) {
        fm_image img = {0};
        fm_error errbuf = {0}, *err = &errbuf;
        fm_fault_set(FM_FAULT_ALLOC, k);
        fm_status st = fm_image_decode(b, len, label, &img, err);
        fm_fault_set(FM_FAULT_ALLOC, 0);
        if (st == FM_OK) {
            ok = 1;
            CHECK(img.data != NULL);
        } else {
            CHECK_STATUS(FM_ERR_NOMEM, st, err);
            CHECK(img.data == NULL);
        }
        fm_image_free(&img);
    }
    CHECK_MSG(ok, "%s never decoded under fault injection", label);
}

static void test_alloc_faults(void) {
    size_t len = 0;
    uint8_t *png = sample_png(&len, 21, 9);
    alloc_fault_loop(png, len, "fault.png");
    free(png);
    uint8_t px[21 * 9 * 3];
    imgfx_fill_random(px, sizeof px, 8);
    png = imgfx_png_encode(21, 9, PNG_COLOR_TYPE_RGB, 8, 1, px, NULL, 0, NULL, 0, &len);
    alloc_fault_loop(png, len, "fault_interlaced.png");
    for (uint64_t k = 1; k < 30; k++) { /* NULL err: the status is still the real one */
        fm_image img = {0};
        fm_fault_set(FM_FAULT_ALLOC, k);
        fm_status st = fm_image_decode(png, len, "nullerr.png", &img, NULL);
        fm_fault_set(FM_FAULT_ALLOC, 0);
        CHECK_MSG(st == FM_OK || st == FM_ERR_NOMEM, "k=%llu: %s", (unsigned long long)k,
                  fm_status_name(st));
        fm_image_free(&img);
    }
    free(png);
    uint8_t *jpg = imgfx_jpeg_encode(px, 21, 9, 3, 90, 0, 0, &len);
    alloc_fault_loop(jpg, len, "fault.jpg");
    free(jpg);
}

static void test_load_files(void) {
    char *dir = imgfx_tmpdir();
    CHECK(dir != NULL);
    if (!dir) return;
    size_t len = 0;
    uint8_t *png = sample_png(&len, 5, 4);
    char *p = imgfx_join(dir, "a.png"), *missing = imgfx_join(dir, "nope.png");
    CHECK(imgfx_write_file(p, png, len) == 0);
    fm_image img = {0};
    fm_error errbuf = {0}, *err = &errbuf;
    CHECK_OK(fm_image_load(p, &img, err), err);
    CHECK(img.width == 5 && img.height == 4);
    fm_image_free(&img);
    CHECK_STATUS(FM_ERR_NOT_FOUND, fm_image_load(missing, &img, err), err);
    CHECK_CONTAINS(err->msg, "nope.png");
    CHECK_STATUS(FM_ERR_IO, fm_image_load(dir, &img, err), err);
    fm_fault_set(FM_FAULT_OPEN, 1);
    CHECK_STATUS(FM_ERR_IO, fm_image_load(p, &img, err), err);
    fm_fault_set(FM_FAULT_OPEN, 0);
    CHECK(imgfx_write_file(p, png, len / 2) == 0);
    CHECK_STATUS(FM_ERR_IMAGE, fm_image_load(p, &img, err), err);
    CHECK_CONTAINS(err->msg, p);
    CHECK(img.data == NULL);
    free(p), free(missing), free(png);
    imgfx_rmtree(dir);
}

/* ---- resize ----------------------------------------------------------------------------- */

static void resize_golden_one(const char *name) {
    size_t len = 0;
    uint8_t *g = golden(name, &len);
    if (!g) return;
    uint32_t ch = imgfx_le32(g + 4), sw = imgfx_le32(g + 8), sh = imgfx_le32(g + 12);
    uint32_t dw = imgfx_le32(g + 16), dh = imgfx_le32(g + 20);
    size_t in_n = (size_t)sw * sh * ch, out_n = (size_t)dw * dh * ch;
    CHECK_MSG(memcmp(g, "FMRZ", 4) == 0 && len == 24 + in_n + out_n, "%s: bad golden", name);
    if (len != 24 + in_n + out_n) {
        free(g);
        return;
    }
    uint8_t *out = malloc(out_n);
    fm_error errbuf = {0}, *err = &errbuf;
    CHECK_OK(fm_resize_bicubic_u8(g + 24, sw, sh, ch, out, dw, dh, err), err);
    size_t diff = 0, first = 0;
    for (size_t i = 0; i < out_n; i++)
        if (out[i] != g[24 + in_n + i] && diff++ == 0) first = i;
    CHECK_MSG(
        diff == 0,
        "%s (%ux%u -> %ux%u, %u ch): %zu of %zu bytes differ from Pillow, first at %zu (%u vs %u)",
        name, sw, sh, dw, dh, ch, diff, out_n, first, out[first], g[24 + in_n + first]);
    free(out);
    free(g);
}

static void test_resize_pillow_goldens(void) {
    size_t len = 0;
    uint8_t *list = golden("resize.txt", &len);
    if (!list) return;
    char *text = malloc(len + 1);
    memcpy(text, list, len);
    text[len] = 0;
    int n = 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n"), n++)
        resize_golden_one(line);
    CHECK_MSG(n >= 10, "only %d resize goldens", n);
    free(text);
    free(list);
}

/* Independent float64 reference: same Keys kernel (a = -0.5) with the support widened by
 * the downscale factor, every input sample weighted, both passes in double, one rounding. */
static double ref_kernel(double x) {
    x = fabs(x);
    if (x < 1) return 1.5 * x * x * x - 2.5 * x * x + 1;
    if (x < 2) return -0.5 * x * x * x + 2.5 * x * x - 4 * x + 2;
    return 0;
}

static void ref_axis(uint32_t in, uint32_t out, double *wt /* out x in */) {
    double scale = (double)in / out, fs = scale > 1 ? scale : 1;
    for (uint32_t o = 0; o < out; o++) {
        double center = (o + 0.5) * scale, sum = 0;
        for (uint32_t i = 0; i < in; i++)
            sum += wt[(size_t)o * in + i] = ref_kernel((i + 0.5 - center) / fs);
        for (uint32_t i = 0; i < in; i++)
            wt[(size_t)o * in + i] /= sum;
    }
}

static void ref_resize(const uint8_t *src, uint32_t sw, uint32_t sh, uint8_t *dst, uint32_t dw,
                       uint32_t dh) {
    double *wx = malloc(sizeof(double) * dw * sw), *wy = malloc(sizeof(double) * dh * sh);
    double *tmp = malloc(sizeof(double) * sh * dw * 3);
    ref_axis(sw, dw, wx), ref_axis(sh, dh, wy);
    for (uint32_t y = 0; y < sh; y++)
        for (uint32_t o = 0; o < dw; o++)
            for (int c = 0; c < 3; c++) {
                double a = 0;
                for (uint32_t i = 0; i < sw; i++)
                    a += wx[(size_t)o * sw + i] * src[((size_t)y * sw + i) * 3 + c];
                tmp[((size_t)y * dw + o) * 3 + c] = a;
            }
    for (uint32_t o = 0; o < dh; o++)
        for (size_t k = 0; k < (size_t)dw * 3; k++) {
            double a = 0;
            for (uint32_t i = 0; i < sh; i++)
                a += wy[(size_t)o * sh + i] * tmp[(size_t)i * dw * 3 + k];
            long r = lrint(a);
            dst[(size_t)o * dw * 3 + k] = (uint8_t)(r < 0 ? 0 : r > 255 ? 255 : r);
        }
    free(wx), free(wy), free(tmp);
}

/* Compares against the reference; returns max |diff| and accumulates counts. */
static int resize_vs_ref(uint32_t sw, uint32_t sh, uint32_t dw, uint32_t dh, int smooth,
                         size_t *n_gt1, size_t *n_total) {
    uint8_t *src = malloc((size_t)sw * sh * 3), *a = malloc((size_t)dw * dh * 3),
            *b = malloc((size_t)dw * dh * 3);
    if (smooth)
        imgfx_fill_smooth(src, sw, sh, 3, sw * 31 + sh);
    else
        imgfx_fill_random(src, (size_t)sw * sh * 3, sw * 7 + dh);
    fm_error errbuf = {0}, *err = &errbuf;
    CHECK_OK(fm_resize_bicubic_u8(src, sw, sh, 3, a, dw, dh, err), err);
    ref_resize(src, sw, sh, b, dw, dh);
    int m = 0;
    for (size_t i = 0; i < (size_t)dw * dh * 3; i++) {
        int d = abs((int)a[i] - (int)b[i]);
        if (d > m) m = d;
        if (d > 1) (*n_gt1)++;
    }
    *n_total += (size_t)dw * dh * 3;
    free(src), free(a), free(b);
    return m;
}

static void test_resize_vs_float_reference(void) {
    static const uint32_t cases[][4] = {{64, 48, 100, 70},   {100, 70, 64, 48},  {57, 91, 84, 56},
                                        {200, 150, 56, 42},  {31, 17, 140, 112}, {90, 90, 90, 45},
                                        {120, 80, 196, 168}, {333, 250, 112, 84}};
    size_t n = quick() ? 4 : sizeof cases / sizeof cases[0];
    for (int smooth = 1; smooth >= 0; smooth--) {
        size_t gt1 = 0, total = 0;
        int worst = 0;
        for (size_t i = 0; i < n; i++) {
            int m = resize_vs_ref(cases[i][0], cases[i][1], cases[i][2], cases[i][3], smooth, &gt1,
                                  &total);
            if (m > worst) worst = m;
        }
        double frac = (double)gt1 / (double)total;
        fprintf(stderr,
                "  bicubic vs float64 reference (%s): max |diff| %d, fraction > 1 level %.3g%%\n",
                smooth ? "smooth" : "noise", worst, 100 * frac);
        if (smooth)
            CHECK_MSG(worst <= 2 && frac < 0.001, "smooth: max %d, fraction %.4g", worst, frac);
        else
            CHECK_MSG(worst <= 40 && frac < 0.03, "noise: max %d, fraction %.4g", worst, frac);
    }
}

static void test_resize_identity_and_args(void) {
    uint8_t src[5 * 4 * 3], dst[10 * 8 * 3];
    imgfx_fill_random(src, sizeof src, 11);
    fm_error errbuf = {0}, *err = &errbuf;
    CHECK_OK(fm_resize_bicubic_u8(src, 5, 4, 3, dst, 5, 4, err), err);
    CHECK(memcmp(src, dst, sizeof src) == 0);
    CHECK_STATUS(FM_ERR_INVALID_ARG, fm_resize_bicubic_u8(src, 5, 4, 5, dst, 5, 4, err), err);
    CHECK_STATUS(FM_ERR_INVALID_ARG, fm_resize_bicubic_u8(src, 0, 4, 3, dst, 5, 4, err), err);
    CHECK_STATUS(FM_ERR_INVALID_ARG, fm_resize_bicubic_u8(NULL, 5, 4, 3, dst, 5, 4, err), err);
    /* constant images stay constant (weights sum to 1 in fixed point) */
    memset(src, 200, sizeof src);
    CHECK_OK(fm_resize_bicubic_u8(src, 5, 4, 3, dst, 10, 8, err), err);
    int allc = 1;
    for (size_t i = 0; i < sizeof dst; i++)
        allc &= dst[i] == 200;
    CHECK(allc);
    fm_image a = {0}, b = {0};
    CHECK_OK(fm_image_alloc(&a, 5, 4, err), err);
    memcpy(a.data, src, sizeof src);
    CHECK_OK(fm_image_resize_bicubic(&a, 3, 7, &b, err), err);
    CHECK(b.width == 3 && b.height == 7);
    for (uint64_t k = 1; k < 20; k++) { /* allocation failures: error, no leak */
        fm_image c = {0};
        fm_fault_set(FM_FAULT_ALLOC, k);
        fm_status st = fm_image_resize_bicubic(&a, 9, 2, &c, err);
        fm_fault_set(FM_FAULT_ALLOC, 0);
        CHECK(st == FM_OK || st == FM_ERR_NOMEM);
        CHECK(st == FM_OK || c.data == NULL);
        fm_image_free(&c);
    }
    fm_image_free(&a);
    fm_image_free(&b);
}

int main(void) {
    RUN(test_sniff);
    RUN(test_png_roundtrip_rgb8);
    RUN(test_png_conversions);
    RUN(test_decode_pillow_goldens);
    RUN(test_orientation_noop_and_args);
    RUN(test_jpeg_roundtrip);
    RUN(test_jpeg_gray_and_cmyk);
    RUN(test_bad_png);
    RUN(test_bad_jpeg_and_unknown);
    RUN(test_mutations_never_crash);
    RUN(test_alloc_faults);
    RUN(test_load_files);
    RUN(test_resize_pillow_goldens);
    RUN(test_resize_vs_float_reference);
    RUN(test_resize_identity_and_args);
    TEST_END();
}
