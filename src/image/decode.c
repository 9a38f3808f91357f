/* PNG (libpng) and JPEG (libjpeg-turbo) decoding to RGB8 with Pillow's convert("RGB") rules, plus
 * EXIF orientation; codec errors longjmp back here and become FM_ERR_IMAGE, nothing prints. */
#include "core/testing.h"
#include "fusemap/image.h"

#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jerror.h>
#include <jpeglib.h>
#include <png.h>

#include "image/exif.h"

/* ---- the image value type --------------------------------------------------------------- */

fm_image_format fm_image_sniff(const void *bytes, size_t len) {
    static const uint8_t png_sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    const uint8_t *b = bytes;
    if (!b) return FM_IMAGE_FORMAT_UNKNOWN;
    if (len >= 8 && memcmp(b, png_sig, 8) == 0) return FM_IMAGE_FORMAT_PNG;
    if (len >= 3 && b[0] == 0xff && b[1] == 0xd8 && b[2] == 0xff) return FM_IMAGE_FORMAT_JPEG;
    return FM_IMAGE_FORMAT_UNKNOWN;
}

const char *fm_image_format_name(fm_image_format f) {
    switch (f) {
    case FM_IMAGE_FORMAT_PNG:
        return "PNG";
    case FM_IMAGE_FORMAT_JPEG:
        return "JPEG";
    default:
        return "unknown";
    }
}

/* Pixel-count and byte-size check shared by alloc and the decoders (before allocation): at most
 * `max` pixels (itself at most FM_IMAGE_MAX_PIXELS). */
static fm_status check_dims(uint64_t w, uint64_t h, uint64_t max, const char *label,
                            fm_error *err) {
    if (w == 0 || h == 0)
        return fm_error_set(err, FM_ERR_IMAGE, "%s: zero-sized image (%llux%llu)", label,
                            (unsigned long long)w, (unsigned long long)h);
    if (max > FM_IMAGE_MAX_PIXELS) max = FM_IMAGE_MAX_PIXELS;
    if (w > UINT32_MAX || h > UINT32_MAX || w * h > max)
        return fm_error_set(err, FM_ERR_IMAGE,
                            "%s: image of %llux%llu pixels exceeds the limit of %llu pixels", label,
                            (unsigned long long)w, (unsigned long long)h, (unsigned long long)max);
    return FM_OK;
}

fm_status fm_image_alloc(fm_image *img, uint32_t width, uint32_t height, fm_error *err) {
    if (!img) return fm_error_set(err, FM_ERR_INVALID_ARG, "fm_image_alloc: NULL image");
    fm_status st = check_dims(width, height, FM_IMAGE_MAX_PIXELS, "fm_image_alloc", err);
    if (st != FM_OK) return st;
    size_t n = (size_t)width * height * 3; /* <= 3 * FM_IMAGE_MAX_PIXELS: no overflow */
    uint8_t *d = fm_malloc(n);
    if (!d)
        return fm_error_set(err, FM_ERR_NOMEM, "fm_image_alloc: %ux%u RGB image (%zu bytes)", width,
                            height, n);
    img->width = width;
    img->height = height;
    img->data = d;
    img->orientation = 0;
    return FM_OK;
}

void fm_image_free(fm_image *img) {
    if (!img) return;
    fm_free(img->data);
    memset(img, 0, sizeof *img);
}

/* ---- EXIF orientation ------------------------------------------------------------------- */

/* Source pixel of destination (x, y) for orientation o on a w x h source. */
static void orient_src(int o, uint32_t w, uint32_t h, uint32_t x, uint32_t y, uint32_t *sx,
                       uint32_t *sy) {
    switch (o) {
    case 2:
        *sx = w - 1 - x, *sy = y;
        break; /* FLIP_LEFT_RIGHT */
    case 3:
        *sx = w - 1 - x, *sy = h - 1 - y;
        break; /* ROTATE_180 */
    case 4:
        *sx = x, *sy = h - 1 - y;
        break; /* FLIP_TOP_BOTTOM */
    case 5:
        *sx = y, *sy = x;
        break; /* TRANSPOSE */
    case 6:
        *sx = y, *sy = h - 1 - x;
        break; /* ROTATE_270 (clockwise 90) */
    case 7:
        *sx = w - 1 - y, *sy = h - 1 - x;
        break; /* TRANSVERSE */
    case 8:
        *sx = w - 1 - y, *sy = x;
        break; /* ROTATE_90 (counter-clockwise) */
    default:
        *sx = x, *sy = y;
        break;
    }
}

fm_status fm_image_apply_orientation(fm_image *img, fm_error *err) {
    if (!img || !img->data)
        return fm_error_set(err, FM_ERR_INVALID_ARG, "fm_image_apply_orientation: no image");
    int o = img->orientation;
    if (o < 2 || o > 8) return FM_OK;
    uint32_t w = img->width, h = img->height;
    uint32_t nw = o >= 5 ? h : w, nh = o >= 5 ? w : h;
    fm_image out;
    fm_status st = fm_image_alloc(&out, nw, nh, err);
    if (st != FM_OK) return st;
    for (uint32_t y = 0; y < nh; y++) {
        for (uint32_t x = 0; x < nw; x++) {
            uint32_t sx, sy;
            orient_src(o, w, h, x, y, &sx, &sy);
            memcpy(out.data + ((size_t)y * nw + x) * 3, img->data + ((size_t)sy * w + sx) * 3, 3);
        }
    }
    fm_free(img->data);
    *img = out;
    img->orientation = 1;
    return FM_OK;
}

/* ---- PNG ---------------------------------------------------------------------------------- */

/* Decoder state on the heap (not an automatic object) so that what changes between setjmp
 * and longjmp stays well defined. Buffers are owned here until handed to the caller. */
typedef struct png_ctx {
    jmp_buf jb;
    char msg[256];
    const uint8_t *src; /* borrowed input */
    size_t len, pos;
    uint8_t *row;         /* owned scratch: one decoded row, or the whole image if interlaced */
    png_bytep *rows;      /* owned: row pointers into `row` (interlaced only) */
    fm_image img;         /* owned until success */
    uint64_t max_pixels;  /* the caller's pixel limit */
    bool nomem;           /* an allocation failed (even one libpng treats as benign) */
    bool pixels_done;     /* every row decoded: errors after this point lose nothing */
    bool after_idat;      /* chunks seen now follow the image data */
    bool trailer_stop;    /* Pillow stops reading here (first fcTL after IDAT of an APNG) */
    uint32_t apng_frames; /* acTL frame count Pillow accepted (0: none) */
    bool fctl_before_idat;
    bool exif_present;  /* the last eXIf read holds an Orientation entry */
    uint8_t exif_value; /* its value (1..8), 0 when Pillow would ignore it */
} png_ctx;

static void png_on_error(png_structp png, png_const_charp msg) {
    png_ctx *c = png_get_error_ptr(png);
    snprintf(c->msg, sizeof c->msg, "%s", msg);
    longjmp(c->jb, 1);
}

static void png_on_warning(png_structp png, png_const_charp msg) {
    (void)png, (void)msg; /* libpng warnings are ignored, as Pillow does */
}

static void png_on_read(png_structp png, png_bytep out, size_t n) {
    png_ctx *c = png_get_io_ptr(png);
    if (n > c->len - c->pos) png_error(png, "truncated (unexpected end of data)");
    memcpy(out, c->src + c->pos, n);
    c->pos += n;
}

static png_voidp png_on_malloc(png_structp png, png_alloc_size_t n) {
    png_voidp p = fm_malloc(n);
    if (!p) { /* libpng drops some chunks quietly when memory runs out: never lose EXIF so */
        png_ctx *c = png_get_mem_ptr(png);
        if (c) c->nomem = true;
    }
    return p;
}

static void png_on_free(png_structp png, png_voidp p) {
    (void)png;
    fm_free(p);
}

/* The chunks read through png_on_chunk (5 bytes each: name and NUL). */
static const png_byte png_watched[] = "eXIf\0acTL\0fcTL";

/* eXIf, acTL and fcTL chunks wherever they are (before or after IDAT), in file order. The
 * orientation is that of the last eXIf chunk Pillow reads: Pillow >= 10.1's exif_transpose
 * loads the image first, so an eXIf after IDAT replaces one before it. After IDAT, Pillow
 * stops at the first fcTL of an animated PNG (acTL with a valid frame count, more than one
 * frame counting a default image that is not a frame). */
static int png_on_chunk(png_structp png, png_unknown_chunkp ch) {
    png_ctx *c = png_get_user_chunk_ptr(png);
    const uint8_t *d = ch->data;
    if (c->trailer_stop) return 1;
    if (!memcmp(ch->name, "eXIf", 4)) {
        c->exif_present =
            fm_exif_orientation(d, d ? ch->size : 0, &c->exif_value) == FM_EXIF_PRESENT;
    } else if (!memcmp(ch->name, "acTL", 4) && !c->after_idat && ch->size >= 8) {
        uint32_t n = (uint32_t)d[0] << 24 | (uint32_t)d[1] << 16 | (uint32_t)d[2] << 8 | d[3];
        /* a second acTL cancels the first, as in Pillow's chunk_acTL */
        c->apng_frames = c->apng_frames ? 0 : (n == 0 || n > 0x80000000u) ? 0 : n;
    } else if (!memcmp(ch->name, "fcTL", 4)) {
        if (!c->after_idat)
            c->fctl_before_idat = true;
        else if (c->apng_frames && c->apng_frames + !c->fctl_before_idat > 1)
            c->trailer_stop = true;
    }
    return 1; /* handled: libpng neither stores nor complains */
}

/* Chunk handling: every ancillary chunk libpng knows is skipped unread (none is needed for
 * Pillow's convert("RGB"), and skipping bounds memory), except the watched ones, which go to
 * png_on_chunk. Chunk lengths are limited by the input size instead of libpng's 8 MB default,
 * so a large eXIf (or iCCP, text...) is no error. */
static void png_chunk_setup(png_structp png, png_ctx *c) {
    png_set_keep_unknown_chunks(png, PNG_HANDLE_CHUNK_NEVER, NULL, -1);
    png_set_keep_unknown_chunks(png, PNG_HANDLE_CHUNK_ALWAYS, png_watched, 3);
    png_set_read_user_chunk_fn(png, c, png_on_chunk);
    png_set_chunk_malloc_max(png, c->len < 0x7fffffffu ? (png_alloc_size_t)c->len : 0x7fffffffu);
}

/* Palette of 256 entries as Pillow builds it: PLTE entries first, gray ramp (i,i,i) after. */
typedef struct png_pal {
    uint8_t rgb[256][3];
} png_pal;

static void png_palette(png_structp png, png_infop info, png_pal *pp) {
    uint8_t(*pal)[3] = pp->rgb;
    for (int i = 0; i < 256; i++)
        pal[i][0] = pal[i][1] = pal[i][2] = (uint8_t)i;
    png_colorp plte = NULL;
    int n = 0;
    if (png_get_PLTE(png, info, &plte, &n) && plte) {
        for (int i = 0; i < n && i < 256; i++) {
            pal[i][0] = plte[i].red, pal[i][1] = plte[i].green, pal[i][2] = plte[i].blue;
        }
    }
}

/* One decoded row (after the transforms chosen in png_setup) to RGB8. */
static void png_row_to_rgb(const uint8_t *in, uint8_t *out, uint32_t w, int color_type,
                           int bit_depth, const png_pal *pp) {
    const uint8_t(*pal)[3] = pp->rgb;
    for (uint32_t x = 0; x < w; x++, out += 3) {
        uint8_t r, g, b;
        switch (color_type) {
        case PNG_COLOR_TYPE_GRAY:
            if (bit_depth == 16) { /* Pillow "I" -> "RGB" clamps to 255 */
                uint32_t v = (uint32_t)in[2 * x] << 8 | in[2 * x + 1];
                r = g = b = v > 255 ? 255 : (uint8_t)v;
            } else {
                r = g = b = in[x];
            }
            break;
        case PNG_COLOR_TYPE_GRAY_ALPHA:
            r = g = b = in[2 * x];
            break;
        case PNG_COLOR_TYPE_PALETTE:
            r = pal[in[x]][0], g = pal[in[x]][1], b = pal[in[x]][2];
            break;
        case PNG_COLOR_TYPE_RGB:
            r = in[3 * x], g = in[3 * x + 1], b = in[3 * x + 2];
            break;
        default:
            r = in[4 * x], g = in[4 * x + 1], b = in[4 * x + 2];
            break; /* RGBA */
        }
        out[0] = r, out[1] = g, out[2] = b;
    }
}

/* Chooses libpng transforms: expand sub-byte gray to 8 bits (Pillow scales L;2 / L;4 / 1
 * the same way), unpack sub-byte palette indices, chop 16-bit samples to the high byte
 * except plain gray (clamped later). tRNS is never expanded (alpha is dropped anyway). */
static void png_setup(png_structp png, int color_type, int bit_depth) {
    if (color_type == PNG_COLOR_TYPE_GRAY && bit_depth < 8) png_set_expand_gray_1_2_4_to_8(png);
    if (color_type == PNG_COLOR_TYPE_PALETTE && bit_depth < 8) png_set_packing(png);
    if (bit_depth == 16 && color_type != PNG_COLOR_TYPE_GRAY) png_set_strip_16(png);
}

/* Header phase (inside setjmp): chunks up to IDAT, pixel limit, transforms; sets the geometry. */
typedef struct png_geom {
    png_uint_32 w, h;
    int bit_depth, color_type, passes;
    size_t rowbytes;
} png_geom;

static fm_status png_header(png_structp png, png_infop info, const char *label, png_geom *g,
                            fm_error *err) {
    png_set_user_limits(png, 0x7fffffffu, 0x7fffffffu); /* our own pixel limit governs */
    png_read_info(png, info);
    png_get_IHDR(png, info, &g->w, &g->h, &g->bit_depth, &g->color_type, NULL, NULL, NULL);
    fm_status st = check_dims(g->w, g->h, ((png_ctx *)png_get_io_ptr(png))->max_pixels, label, err);
    if (st != FM_OK) return st;
    png_setup(png, g->color_type, g->bit_depth);
    g->passes = png_set_interlace_handling(png);
    png_read_update_info(png, info);
    g->rowbytes = png_get_rowbytes(png, info);
    size_t nrows = g->passes > 1 ? g->h : 1;
    if (g->rowbytes == 0 || nrows > SIZE_MAX / g->rowbytes)
        return fm_error_set(err, FM_ERR_IMAGE, "%s: PNG row size overflow", label);
    return FM_OK;
}

/* Pixel phase (inside setjmp): row by row, or the whole image at once when interlaced. */
static fm_status png_pixels(png_structp png, png_infop info, png_ctx *c, const png_geom *g,
                            const char *label, fm_error *err) {
    png_pal pal;
    png_palette(png, info, &pal);
    size_t nrows = g->passes > 1 ? g->h : 1;
    c->row = fm_malloc(g->rowbytes * nrows);
    if (!c->row)
        return fm_error_set(err, FM_ERR_NOMEM, "%s: PNG decode buffer (%zu bytes)", label,
                            g->rowbytes * nrows);
    fm_status st = fm_image_alloc(&c->img, g->w, g->h, err);
    if (st != FM_OK) {
        fm_error_prefix(err, "%s", label);
        return st;
    }
    if (g->passes > 1) {
        c->rows = fm_malloc(g->h * sizeof *c->rows);
        if (!c->rows) return fm_error_set(err, FM_ERR_NOMEM, "%s: PNG row table", label);
        for (png_uint_32 y = 0; y < g->h; y++)
            c->rows[y] = c->row + (size_t)y * g->rowbytes;
        png_read_image(png, c->rows);
    }
    for (png_uint_32 y = 0; y < g->h; y++) {
        uint8_t *in = c->row + (g->passes > 1 ? (size_t)y * g->rowbytes : 0);
        if (g->passes == 1) png_read_row(png, in, NULL);
        png_row_to_rgb(in, c->img.data + (size_t)y * g->w * 3, g->w, g->color_type, g->bit_depth,
                       &pal);
    }
    return FM_OK;
}

/* Runs inside setjmp: any libpng error longjmps out. Fills c->img on success, then reads the
 * chunks after the image data (into end_info) for a later eXIf; an error there (truncated or
 * corrupt trailer, missing IEND) longjmps too but loses nothing, as c->pixels_done says. */
static fm_status png_run(png_structp png, png_infop info, png_infop end_info, png_ctx *c,
                         const char *label, fm_error *err) {
    png_geom g;
    fm_status st = png_header(png, info, label, &g, err);
    if (st == FM_OK) st = png_pixels(png, info, c, &g, label, err);
    if (st != FM_OK) return st;
    c->pixels_done = true;
    c->after_idat = true;
    png_read_end(png, end_info);
    return FM_OK;
}

static fm_status decode_png(const uint8_t *bytes, size_t len, const char *label, uint64_t max,
                            fm_image *out, fm_error *err) {
    png_ctx *c = fm_calloc(1, sizeof *c);
    if (!c) return fm_error_set(err, FM_ERR_NOMEM, "%s: PNG decoder state", label);
    c->src = bytes, c->len = len, c->max_pixels = max;
    png_structp png = png_create_read_struct_2(PNG_LIBPNG_VER_STRING, c, png_on_error,
                                               png_on_warning, c, png_on_malloc, png_on_free);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    png_infop end_info = info ? png_create_info_struct(png) : NULL;
    fm_status st;
    if (!png || !info || !end_info) {
        st = fm_error_set(err, FM_ERR_NOMEM, "%s: cannot create the PNG decoder", label);
    } else if (setjmp(c->jb) == 0) {
        png_set_read_fn(png, c, png_on_read);
        png_chunk_setup(png, c);
        st = png_run(png, info, end_info, c, label, err);
    } else if (c->pixels_done && !c->nomem) {
        st = FM_OK; /* a bad trailer after complete image data: Pillow's load_end stops there too */
    } else {
        st = fm_error_set(err, c->nomem || strstr(c->msg, "emory") ? FM_ERR_NOMEM : FM_ERR_IMAGE,
                          "%s: PNG: %s", label, c->msg);
    }
    if (st == FM_OK && c->nomem)
        st = fm_error_set(err, FM_ERR_NOMEM, "%s: PNG: out of memory reading its chunks", label);
    if (st == FM_OK) c->img.orientation = c->exif_present ? c->exif_value : 0;
    if (png) png_destroy_read_struct(&png, info ? &info : NULL, end_info ? &end_info : NULL);
    if (st == FM_OK)
        *out = c->img;
    else
        fm_image_free(&c->img);
    fm_free(c->rows);
    fm_free(c->row);
    fm_free(c);
    return st;
}

/* ---- JPEG --------------------------------------------------------------------------------- */

typedef struct jpg_ctx {
    struct jpeg_decompress_struct cinfo;
    struct jpeg_error_mgr jerr;
    struct jpeg_progress_mgr prog;
    jmp_buf jb;
    char msg[JMSG_LENGTH_MAX];
    uint8_t *row;        /* owned scratch row */
    fm_image img;        /* owned until success */
    uint64_t max_pixels; /* the caller's pixel limit */
} jpg_ctx;

static void jpg_on_error(j_common_ptr ci) {
    jpg_ctx *c = (jpg_ctx *)ci->client_data;
    ci->err->format_message(ci, c->msg);
    longjmp(c->jb, 1);
}

/* Warnings are ignored (Pillow loads such files) except premature end of data, which Pillow
 * reports as a truncated image. */
static void jpg_on_message(j_common_ptr ci, int level) {
    if (level == -1 && ci->err->msg_code == JWRN_JPEG_EOF) {
        jpg_ctx *c = (jpg_ctx *)ci->client_data;
        snprintf(c->msg, sizeof c->msg, "truncated (premature end of JPEG data)");
        longjmp(c->jb, 1);
    }
}

static void jpg_on_output(j_common_ptr ci) {
    (void)ci;
}

/* Bounds the work a crafted progressive file can cause (libjpeg-turbo's advice). */
static void jpg_on_progress(j_common_ptr ci) {
    j_decompress_ptr d = (j_decompress_ptr)ci;
    if (d->input_scan_number > FM_IMAGE_JPEG_MAX_SCANS) {
        jpg_ctx *c = (jpg_ctx *)ci->client_data;
        snprintf(c->msg, sizeof c->msg, "more than %d scans", FM_IMAGE_JPEG_MAX_SCANS);
        longjmp(c->jb, 1);
    }
}

/* CMYK (Adobe polarity: stored inverted, as Pillow assumes) to RGB by Pillow's rule
 * rgb = k' - round(c' * k' / 255) with c' = 255 - stored, k' = 255 - stored k. */
static uint8_t cmyk_channel(uint8_t stored_c, uint8_t stored_k) {
    int nk = stored_k; /* 255 - (255 - stored) */
    int cc = 255 - stored_c;
    int t = cc * nk + 128;
    int v = nk - (((t >> 8) + t) >> 8);
    return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
}

static void jpg_row_to_rgb(const uint8_t *in, uint8_t *out, uint32_t w, int comps) {
    for (uint32_t x = 0; x < w; x++, out += 3) {
        if (comps == 1) {
            out[0] = out[1] = out[2] = in[x];
        } else if (comps == 3) {
            memcpy(out, in + 3 * x, 3);
        } else {
            const uint8_t *p = in + 4 * x;
            out[0] = cmyk_channel(p[0], p[3]);
            out[1] = cmyk_channel(p[1], p[3]);
            out[2] = cmyk_channel(p[2], p[3]);
        }
    }
}

/* Pillow keeps the first APP1 segment that starts with "Exif\0" (of the header, before SOS). */
static uint8_t jpg_orientation(j_decompress_ptr ci) {
    for (jpeg_saved_marker_ptr m = ci->marker_list; m; m = m->next) {
        if (m->marker == JPEG_APP0 + 1 && m->data_length >= 5 && memcmp(m->data, "Exif", 5) == 0) {
            uint8_t v = 0;
            return fm_exif_orientation(m->data, m->data_length, &v) == FM_EXIF_PRESENT ? v : 0;
        }
    }
    return 0;
}

/* Runs inside setjmp: libjpeg errors longjmp out. Fills c->img on success. */
static fm_status jpg_run(jpg_ctx *c, const uint8_t *bytes, size_t len, const char *label,
                         fm_error *err) {
    j_decompress_ptr ci = &c->cinfo;
    jpeg_mem_src(ci, bytes, (unsigned long)len);
    jpeg_save_markers(ci, JPEG_APP0 + 1, 0xffff);
    jpeg_read_header(ci, TRUE);
    uint8_t orientation = jpg_orientation(ci); /* before later scans add markers to the list */
    int comps = ci->num_components;
    if (comps == 1)
        ci->out_color_space = JCS_GRAYSCALE;
    else if (comps == 3)
        ci->out_color_space = JCS_RGB;
    else if (comps == 4)
        ci->out_color_space = JCS_CMYK;
    else
        return fm_error_set(err, FM_ERR_IMAGE, "%s: JPEG with %d components is not supported",
                            label, comps);
    fm_status st = check_dims(ci->image_width, ci->image_height, c->max_pixels, label, err);
    if (st != FM_OK) return st;
    jpeg_start_decompress(ci);
    uint32_t w = ci->output_width, h = ci->output_height;
    c->row = fm_malloc((size_t)w * (size_t)ci->output_components);
    if (!c->row) return fm_error_set(err, FM_ERR_NOMEM, "%s: JPEG row buffer", label);
    st = fm_image_alloc(&c->img, w, h, err);
    if (st != FM_OK) {
        fm_error_prefix(err, "%s", label);
        return st;
    }
    c->img.orientation = orientation;
    while (ci->output_scanline < h) {
        uint32_t y = ci->output_scanline;
        JSAMPROW rp = c->row;
        if (jpeg_read_scanlines(ci, &rp, 1) != 1)
            return fm_error_set(err, FM_ERR_IMAGE, "%s: JPEG: no data for row %u", label, y);
        jpg_row_to_rgb(c->row, c->img.data + (size_t)y * w * 3, w, comps);
    }
    return FM_OK; /* the EOI marker is not required (jpeg_destroy aborts the rest) */
}

static fm_status decode_jpeg(const uint8_t *bytes, size_t len, const char *label, uint64_t max,
                             fm_image *out, fm_error *err) {
    jpg_ctx *c = fm_calloc(1, sizeof *c);
    if (!c) return fm_error_set(err, FM_ERR_NOMEM, "%s: JPEG decoder state", label);
    c->max_pixels = max;
    c->cinfo.err = jpeg_std_error(&c->jerr);
    c->jerr.error_exit = jpg_on_error;
    c->jerr.emit_message = jpg_on_message;
    c->jerr.output_message = jpg_on_output;
    c->cinfo.client_data = c;
    c->prog.progress_monitor = jpg_on_progress;
    fm_status st;
    if (setjmp(c->jb) == 0) {
        jpeg_create_decompress(&c->cinfo);
        c->cinfo.progress = &c->prog;
        st = jpg_run(c, bytes, len, label, err);
    } else {
        st = fm_error_set(err, strstr(c->msg, "memory") ? FM_ERR_NOMEM : FM_ERR_IMAGE,
                          "%s: JPEG: %s", label, c->msg);
    }
    jpeg_destroy_decompress(&c->cinfo); /* no-op when creation failed (mem is NULL) */
    if (st == FM_OK)
        *out = c->img;
    else
        fm_image_free(&c->img);
    fm_free(c->row);
    fm_free(c);
    return st;
}

/* ---- entry points -------------------------------------------------------------------------- */

fm_status fm_image_decode(const void *bytes, size_t len, const char *label, fm_image *out,
                          fm_error *err) {
    return fm_image_decode_limited(bytes, len, label, FM_IMAGE_MAX_PIXELS, out, err);
}

fm_status fm_image_decode_limited(const void *bytes, size_t len, const char *label,
                                  uint64_t max_pixels, fm_image *out, fm_error *err) {
    if (!label) label = "<image>";
    if (!out) return fm_error_set(err, FM_ERR_INVALID_ARG, "%s: NULL output image", label);
    if (!bytes || len == 0) return fm_error_set(err, FM_ERR_IMAGE, "%s: empty image data", label);
    switch (fm_image_sniff(bytes, len)) {
    case FM_IMAGE_FORMAT_PNG:
        return decode_png(bytes, len, label, max_pixels, out, err);
    case FM_IMAGE_FORMAT_JPEG:
        return decode_jpeg(bytes, len, label, max_pixels, out, err);
    default:
        break;
    }
    const uint8_t *b = bytes;
    return fm_error_set(err, FM_ERR_IMAGE,
                        "%s: unsupported image format (first bytes %02x %02x %02x %02x; PNG and "
                        "JPEG are supported)",
                        label, b[0], len > 1 ? b[1] : 0, len > 2 ? b[2] : 0, len > 3 ? b[3] : 0);
}

/* Reads a whole regular file into a fresh buffer (caller frees with fm_free). */
static fm_status read_file(const char *path, uint8_t **out, size_t *out_len, fm_error *err) {
    int fd = fm_fault_hit(FM_FAULT_OPEN) ? (errno = EIO, -1) : open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return fm_error_set(err, errno == ENOENT ? FM_ERR_NOT_FOUND : FM_ERR_IO,
                            "%s: cannot open image: %s", path, strerror(errno));
    struct stat sb;
    fm_status st = FM_OK;
    uint8_t *buf = NULL;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        st = fm_error_set(err, FM_ERR_IO, "%s: not a regular file", path);
    } else if ((uint64_t)sb.st_size > FM_IMAGE_MAX_FILE_BYTES) {
        st = fm_error_set(err, FM_ERR_IMAGE, "%s: file of %lld bytes exceeds the %llu-byte limit",
                          path, (long long)sb.st_size, FM_IMAGE_MAX_FILE_BYTES);
    } else if (!(buf = fm_malloc((size_t)sb.st_size))) {
        st = fm_error_set(err, FM_ERR_NOMEM, "%s: %lld bytes for the file", path,
                          (long long)sb.st_size);
    }
    size_t got = 0, want = st == FM_OK ? (size_t)sb.st_size : 0;
    while (st == FM_OK && got < want) {
        ssize_t r = read(fd, buf + got, want - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0)
            st = fm_error_set(err, FM_ERR_IO, "%s: read failed: %s", path,
                              r < 0 ? strerror(errno) : "file shrank");
        else
            got += (size_t)r;
    }
    close(fd);
    if (st != FM_OK) {
        fm_free(buf);
        return st;
    }
    *out = buf;
    *out_len = got;
    return FM_OK;
}

fm_status fm_image_load(const char *path, fm_image *out, fm_error *err) {
    if (!path || !out) return fm_error_set(err, FM_ERR_INVALID_ARG, "fm_image_load: NULL argument");
    uint8_t *buf = NULL;
    size_t len = 0;
    fm_status st = read_file(path, &buf, &len, err);
    if (st != FM_OK) return st;
    st = fm_image_decode(buf, len, path, out, err);
    fm_free(buf);
    return st;
}
