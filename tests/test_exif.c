/* EXIF orientation: where it is read from (PNG eXIf before or after IDAT, JPEG APP1), which
 * values count (crafted files with Pillow's answers, tests/data/gen_goldens.py), that every
 * layout gives the pixels Pillow's exif_transpose gives, and that bad, cut or huge EXIF never
 * fails an image Pillow decodes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/testing.h"
#include "fusemap/image.h"
#include "support/check.h"
#include "support/img_fixtures.h"

/* Golden file bytes (tests/data/image/NAME); NULL (and a failed check) when missing. */
static uint8_t *golden(const char *name, size_t *len) {
    char path[1024];
    snprintf(path, sizeof path, "%s/image/%s", imgfx_data_dir(), name);
    uint8_t *b = imgfx_read_file(path, len);
    CHECK_MSG(b != NULL,
              "golden file %s missing (run from the repository root or set FM_TEST_DATA)", path);
    return b;
}

/* Decodes and applies the orientation; checks the orientation found first. */
static int decode_oriented(const uint8_t *b, size_t len, const char *what, int want_orientation,
                           fm_image *img) {
    fm_error errbuf = {0}, *err = &errbuf;
    fm_status st = fm_image_decode(b, len, what, img, err);
    CHECK_MSG(st == FM_OK, "%s: %s (%s)", what, fm_status_name(st), err->msg);
    if (st != FM_OK) return -1;
    CHECK_MSG(img->orientation == want_orientation, "%s: orientation %d, expected %d", what,
              img->orientation, want_orientation);
    CHECK_OK(fm_image_apply_orientation(img, err), err);
    return 0;
}

/* Same size and bytes as the FMIM record `rec` (magic, u32 w, u32 h, RGB). */
static void check_record(const fm_image *img, const uint8_t *rec, size_t len, const char *what) {
    uint32_t w = imgfx_le32(rec + 4), h = imgfx_le32(rec + 8);
    CHECK_MSG(img->width == w && img->height == h, "%s: %ux%u, Pillow %ux%u", what, img->width,
              img->height, w, h);
    if (img->width != w || img->height != h || len != 12 + (size_t)w * h * 3) return;
    size_t diff = 0, first = 0;
    for (size_t i = 0; i < (size_t)w * h * 3; i++)
        if (img->data[i] != rec[12 + i] && diff++ == 0) first = i;
    CHECK_MSG(diff == 0, "%s: %zu bytes differ from Pillow's exif_transpose, first at %zu", what,
              diff, first);
}

/* ---- the crafted files: orientation as Pillow >= 10.1 applies it -------------------------- */

static void test_pillow_cases(void) {
    size_t len = 0;
    uint8_t *list = golden("exif_cases.txt", &len);
    if (!list) return;
    char *text = malloc(len + 1);
    memcpy(text, list, len), text[len] = 0;
    int n = 0, applied = 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        char name[256], modern[8], old[8];
        if (sscanf(line, "%255s %7s %7s", name, modern, old) != 3) continue;
        size_t blen = 0;
        uint8_t *b = golden(name, &blen);
        if (!b) continue;
        fm_image img = {0};
        fm_error errbuf = {0}, *err = &errbuf;
        /* never an error for the image: where Pillow raises (E) the orientation is ignored */
        CHECK_OK(fm_image_decode(b, blen, name, &img, err), err);
        int want = modern[0] >= '2' && modern[0] <= '8' ? modern[0] - '0' : -1;
        if (want > 0) {
            CHECK_MSG(img.orientation == want, "%s: orientation %d, Pillow applies %d", name,
                      img.orientation, want);
            applied++;
        } else {
            CHECK_MSG(img.orientation <= 1, "%s: orientation %d, Pillow applies none (%s)", name,
                      img.orientation, modern);
        }
        uint32_t w = img.width, h = img.height;
        if (img.data) CHECK_OK(fm_image_apply_orientation(&img, err), err);
        if (img.data && want >= 5) CHECK(img.width == h && img.height == w);
        fm_image_free(&img);
        free(b);
        n++;
    }
    CHECK_MSG(n >= 70 && applied >= 40, "only %d cases (%d with a transposition)", n, applied);
    free(text);
    free(list);
}

/* ---- every layout of one fixture image against Pillow's pixels ---------------------------- */

static void test_every_layout_matches_pillow(void) {
    size_t jlen = 0;
    uint8_t *jpg = golden("exif_fixture.jpg", &jlen);
    if (!jpg) return;
    fm_image px = {0};
    fm_error errbuf = {0}, *err = &errbuf;
    CHECK_OK(fm_image_decode(jpg, jlen, "exif_fixture.jpg", &px, err), err);
    CHECK(px.width == 11 && px.height == 6 && px.orientation == 0);
    for (unsigned o = 1; px.data && o <= 8; o++) {
        char name[64];
        size_t glen = 0;
        snprintf(name, sizeof name, "exif_fixture.o%u.rgb", o);
        uint8_t *g = golden(name, &glen);
        for (int le = 0; g && le < 2; le++) {
            uint8_t tiff[32] = "Exif\0\0", one[26], first[64];
            imgfx_tiff_orientation(tiff + 6, o, le);
            /* JPEG APP1 (the path already tested against Pillow): the reference here */
            size_t n = 0;
            uint8_t *b = imgfx_jpeg_add_app1(jpg, jlen, tiff, 32, &n);
            fm_image ref = {0};
            snprintf(name, sizeof name, "jpeg o=%u le=%d", o, le);
            decode_oriented(b, n, name, (int)o, &ref);
            check_record(&ref, g, glen, name);
            free(b);
            struct {
                const char *what;
                int after, interlace, spliced;
            } lay[] = {{"eXIf before IDAT", 0, 0, 0},
                       {"eXIf after IDAT", 1, 0, 0},
                       {"eXIf after IDAT, interlaced", 1, 1, 0},
                       {"eXIf 1 before IDAT, o after", 1, 0, 1}};
            for (size_t k = 0; ref.data && k < sizeof lay / sizeof *lay; k++) {
                b = imgfx_png_encode_exif(px.data, px.width, px.height, lay[k].interlace, tiff + 6,
                                          26, lay[k].after, &n);
                if (lay[k].spliced) { /* a second, earlier chunk: the later one wins */
                    imgfx_tiff_orientation(one, 1, !le);
                    size_t cl = imgfx_png_chunk(first, "eXIf", one, 26);
                    uint8_t *s = imgfx_png_splice(b, n, first, cl, NULL, 0, &n);
                    free(b), b = s;
                }
                CHECK(b != NULL);
                if (!b) continue;
                fm_image img = {0};
                snprintf(name, sizeof name, "PNG %s o=%u le=%d", lay[k].what, o, le);
                if (decode_oriented(b, n, name, (int)o, &img) == 0) {
                    check_record(&img, g, glen, name);
                    CHECK_MSG(img.width == ref.width && img.height == ref.height &&
                                  memcmp(img.data, ref.data, (size_t)img.width * img.height * 3) ==
                                      0,
                              "%s: differs from the JPEG APP1 path", name);
                }
                fm_image_free(&img);
                free(b);
            }
            fm_image_free(&ref);
        }
        free(g);
    }
    fm_image_free(&px);
    free(jpg);
}

/* ---- robustness: huge, cut, corrupt, mutated ---------------------------------------------- */

static uint8_t *small_rgb(uint32_t w, uint32_t h) {
    uint8_t *p = malloc((size_t)w * h * 3);
    imgfx_fill_random(p, (size_t)w * h * 3, 1515);
    return p;
}

static int orientation_of(const uint8_t *b, size_t len, fm_status *st) {
    fm_image img = {0};
    fm_error e = {0};
    *st = fm_image_decode(b, len, "x.png", &img, &e);
    if (*st != FM_OK && getenv("FM_EXIF_DEBUG")) fprintf(stderr, "  %s\n", e.msg);
    int o = img.orientation;
    fm_image_free(&img);
    return *st == FM_OK ? o : -1;
}

/* Chunks above libpng's 8 MB default limit: Pillow reads them (gen_goldens.py asserts it). */
static void test_huge_chunks(void) {
    uint32_t w = 5, h = 3;
    uint8_t *rgb = small_rgb(w, h);
    size_t big = 9u << 20, n = 0;
    uint8_t *exif = calloc(1, big);
    imgfx_tiff_orientation(exif, 3, 1);
    fm_status st;
    for (int after = 0; after < 2; after++) {
        uint8_t *b = imgfx_png_encode_exif(rgb, w, h, 0, exif, (uint32_t)big, after, &n);
        CHECK(b != NULL);
        if (b)
            CHECK_MSG(orientation_of(b, n, &st) == 3, "9 MiB eXIf %s IDAT: %s",
                      after ? "after" : "before", fm_status_name(st));
        free(b);
    }
    /* a 9 MiB tEXt before IDAT, then an eXIf after it */
    uint8_t *text = malloc(big + 12), tiff[26], post[40];
    memset(exif, 'a', big);
    memcpy(exif, "big", 4);
    size_t tl = imgfx_png_chunk(text, "tEXt", exif, (uint32_t)big);
    imgfx_tiff_orientation(tiff, 6, 0);
    size_t pl = imgfx_png_chunk(post, "eXIf", tiff, 26);
    uint8_t *plain = imgfx_png_encode(w, h, 2, 8, 0, rgb, NULL, 0, NULL, 0, &n);
    uint8_t *b = imgfx_png_splice(plain, n, text, tl, post, pl, &n);
    CHECK_MSG(b && orientation_of(b, n, &st) == 6, "9 MiB tEXt, eXIf after IDAT: %s",
              fm_status_name(st));
    free(b), free(plain), free(text), free(exif), free(rgb);
}

/* The file cut anywhere after the image data: still decoded. The orientation counts once its
 * chunk is whole (Pillow fails on a chunk cut in its data, and keeps one cut in its CRC). */
static void test_cut_after_pixels(void) {
    uint32_t w = 9, h = 4;
    uint8_t *rgb = small_rgb(w, h), tiff[26];
    imgfx_tiff_orientation(tiff, 6, 1);
    size_t n = 0;
    uint8_t *b = imgfx_png_encode_exif(rgb, w, h, 0, tiff, 26, 1, &n);
    CHECK(b && n > 12 + 38);
    size_t exif_end = n - 12, exif_data_end = exif_end - 4, idat_end = exif_end - 38;
    for (size_t cut = idat_end; b && cut <= n; cut++) {
        fm_status st;
        int o = orientation_of(b, cut, &st);
        CHECK_MSG(st == FM_OK, "cut at %zu of %zu: %s", cut, n, fm_status_name(st));
        if (cut >= exif_end) CHECK_MSG(o == 6, "cut at %zu (chunk whole): orientation %d", cut, o);
        if (cut < exif_data_end)
            CHECK_MSG(o == 0, "cut at %zu (chunk cut): orientation %d", cut, o);
    }
    /* a length field running past the end: after IDAT nothing is lost, before IDAT the file is
     * truncated (Pillow cannot open it either) */
    uint8_t *m = malloc(n);
    memcpy(m, b, n);
    m[exif_end - 38] = 0x7f;
    fm_status st;
    CHECK_MSG(orientation_of(m, n, &st) == 0, "overlong eXIf after IDAT: %s", fm_status_name(st));
    free(m), free(b);
    b = imgfx_png_encode_exif(rgb, w, h, 0, tiff, 26, 0, &n);
    m = b ? malloc(n) : NULL;
    if (m) {
        memcpy(m, b, n);
        m[33] = 0x7f; /* the eXIf follows IHDR: its length's high byte */
        CHECK(!memcmp(m + 37, "eXIf", 4));
        fm_image img = {0};
        fm_error errbuf = {0}, *err = &errbuf;
        CHECK_STATUS(FM_ERR_IMAGE, fm_image_decode(m, n, "overlong.png", &img, err), err);
        CHECK_CONTAINS(err->msg, "overlong.png");
    }
    free(m), free(b), free(rgb);
}

/* Random bytes in the EXIF payload (CRC kept valid) and in the chunk framing after IDAT: the
 * image always decodes; the orientation is 0..8. */
static void test_mutated_exif(void) {
    uint32_t w = 7, h = 5;
    uint8_t *rgb = small_rgb(w, h);
    uint8_t tiff[26 + 40];
    memset(tiff, 0, sizeof tiff);
    imgfx_tiff_orientation(tiff, 8, 1);
    size_t n = 0;
    uint64_t s = 77;
    int counts[9] = {0};
    for (int it = 0; it < 600; it++) {
        int after = it & 1;
        uint8_t t[sizeof tiff];
        memcpy(t, tiff, sizeof t);
        int flips = 1 + (int)(imgfx_rand(&s) % 4);
        for (int f = 0; f < flips; f++)
            t[imgfx_rand(&s) % sizeof t] = (uint8_t)imgfx_rand(&s);
        uint32_t tl = it % 3 == 2 ? (uint32_t)(imgfx_rand(&s) % sizeof t) : (uint32_t)sizeof t;
        uint8_t *b = imgfx_png_encode_exif(rgb, w, h, 0, t, tl, after, &n);
        if (!b) continue;
        size_t at = n - 12 - 12 - tl; /* the eXIf chunk before IEND, when libpng wrote one */
        if (after && it % 5 == 0 && n > 12 + 12 + tl && !memcmp(b + at + 4, "eXIf", 4))
            b[at + imgfx_rand(&s) % 8] ^= (uint8_t)(1 + imgfx_rand(&s) % 255);
        fm_status st;
        int o = orientation_of(b, n, &st);
        CHECK_MSG(st == FM_OK && o >= 0 && o <= 8, "mutant %d: %s, orientation %d", it,
                  fm_status_name(st), o);
        if (o >= 0 && o <= 8) counts[o]++;
        free(b);
    }
    fprintf(stderr, "  mutated EXIF: orientation 0: %d, 8: %d, other: %d\n", counts[0], counts[8],
            600 - counts[0] - counts[8]);
    CHECK(counts[8] > 50 && counts[0] > 50);
    free(rgb);
}

/* Every allocation failing in turn on a PNG with eXIf after IDAT: FM_ERR_NOMEM, or success
 * with the orientation (never an orientation silently dropped). */
static void test_alloc_faults(void) {
    uint32_t w = 6, h = 4;
    uint8_t *rgb = small_rgb(w, h), tiff[26];
    imgfx_tiff_orientation(tiff, 7, 0);
    size_t n = 0;
    uint8_t *b = imgfx_png_encode_exif(rgb, w, h, 1, tiff, 26, 1, &n);
    int ok = 0;
    for (uint64_t k = 1; b && k < 400 && !ok; k++) {
        fm_image img = {0};
        fm_error errbuf = {0}, *err = &errbuf;
        fm_fault_set(FM_FAULT_ALLOC, k);
        fm_status st = fm_image_decode(b, n, "fault.png", &img, err);
        fm_fault_set(FM_FAULT_ALLOC, 0);
        if (st == FM_OK) {
            ok = 1;
            CHECK_EQ_INT(7, img.orientation);
        } else {
            CHECK_STATUS(FM_ERR_NOMEM, st, err);
            CHECK(img.data == NULL);
        }
        fm_image_free(&img);
    }
    CHECK_MSG(ok, "never decoded under fault injection");
    free(b), free(rgb);
}

int main(void) {
    RUN(test_pillow_cases);
    RUN(test_every_layout_matches_pillow);
    RUN(test_huge_chunks);
    RUN(test_cut_after_pixels);
    RUN(test_mutated_exif);
    RUN(test_alloc_faults);
    TEST_END();
}
