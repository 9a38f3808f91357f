#!/usr/bin/python3
# Generates the committed golden files of tests/test_image.c and tests/test_preprocess.c with
# Pillow (Debian python3-pil 9.4, libjpeg-turbo 2.1.5) and numpy. Run with Debian's python:
#   /usr/bin/python3 tests/data/gen_goldens.py
# Tests read only the outputs (tests/data/image/); they never need Python.
import io
import math
import os
import struct
import zlib

import numpy as np
from PIL import Image, ImageOps

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "image")
rng = np.random.RandomState(20240611)


def put(name, data):
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(data)


def rgb_record(im):
    """FMIM record: magic, u32 width, u32 height, RGB bytes (Pillow convert("RGB"))."""
    im = im.convert("RGB")
    return b"FMIM" + struct.pack("<II", im.width, im.height) + im.tobytes()


def noise(h, w, c):
    return rng.randint(0, 256, size=(h, w, c)).astype(np.uint8)


def smooth(h, w, c):
    """Natural-looking content: gradients, a sinusoid and mild noise."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    chans = []
    for k in range(c):
        v = 128 + 90 * np.sin(x / (3.0 + 2 * k) + y / 7.0) + 30 * (x / max(w - 1, 1) - y / max(h - 1, 1))
        v += rng.normal(0, 6, size=(h, w))
        chans.append(np.clip(np.rint(v), 0, 255))
    return np.stack(chans, axis=-1).astype(np.uint8)


# ---- bicubic resize goldens: FMRZ, u32 channels, sw, sh, dw, dh, input bytes, output bytes ----
RESIZE = [
    # name, channels, (sw, sh), (dw, dh), content
    ("up_both", 3, (37, 23), (64, 50), noise),
    ("down_both", 3, (64, 48), (17, 13), noise),
    ("upx_downy", 3, (50, 40), (80, 20), noise),
    ("downx_upy", 3, (61, 19), (24, 45), noise),
    ("vert_only_down", 3, (41, 60), (41, 30), noise),
    ("horiz_only_up", 3, (41, 60), (90, 60), noise),
    ("strong_down", 3, (150, 100), (21, 14), noise),
    ("strong_up", 3, (13, 7), (112, 84), noise),
    ("thin", 3, (1, 5), (3, 9), noise),
    ("gray_mixed", 1, (33, 29), (28, 56), noise),
    ("smooth_up", 3, (60, 45), (140, 112), smooth),
    ("smooth_down", 3, (181, 127), (84, 56), smooth),
]


def gen_resize():
    lines = []
    for name, ch, (sw, sh), (dw, dh), fn in RESIZE:
        a = fn(sh, sw, ch)
        im = Image.fromarray(a[:, :, 0] if ch == 1 else a, "L" if ch == 1 else "RGB")
        r = im.resize((dw, dh), Image.BICUBIC)
        out = np.asarray(r).tobytes()
        put("resize_%s.bin" % name, b"FMRZ" + struct.pack("<5I", ch, sw, sh, dw, dh) + a.tobytes() + out)
        lines.append("resize_%s.bin" % name)
    put("resize.txt", ("\n".join(lines) + "\n").encode())


# ---- decode goldens: hand-written PNGs of every colour type / bit depth, Pillow JPEGs ----
def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bytes(w, h, bit_depth, color_type, rows, plte=None, trns=None, exif=None):
    raw = b"".join(b"\x00" + r for r in rows)
    out = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, bit_depth, color_type, 0, 0, 0))
    if plte is not None:
        out += png_chunk(b"PLTE", plte)
    if trns is not None:
        out += png_chunk(b"tRNS", trns)
    if exif is not None:
        out += png_chunk(b"eXIf", exif)
    return out + png_chunk(b"IDAT", zlib.compress(raw)) + png_chunk(b"IEND", b"")


def pack_bits(values, bits):
    """One row of sub-byte samples, most significant bits first."""
    per = 8 // bits
    out = bytearray()
    for i in range(0, len(values), per):
        b = 0
        for j in range(per):
            v = values[i + j] if i + j < len(values) else 0
            b |= v << (8 - bits * (j + 1))
        out.append(b)
    return bytes(out)


def png_case(w, h, bit_depth, color_type, plte=None, trns=None, max_index=None):
    chans = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[color_type]
    rows = []
    for _ in range(h):
        if bit_depth == 16:
            v = rng.randint(0, 65536, size=w * chans)
            # many small values so Pillow's 16-bit gray clamp is exercised on both sides
            v[::3] = rng.randint(0, 300, size=len(v[::3]))
            rows.append(v.astype(">u2").tobytes())
        elif bit_depth == 8:
            hi = 256 if max_index is None else max_index + 1
            rows.append(rng.randint(0, hi, size=w * chans).astype(np.uint8).tobytes())
        else:
            hi = (1 << bit_depth) if max_index is None else max_index + 1
            rows.append(pack_bits(list(rng.randint(0, hi, size=w)), bit_depth))
    return png_bytes(w, h, bit_depth, color_type, rows, plte, trns)


def tiff_orientation(o, le=True):
    e = "<" if le else ">"
    head = (b"II" if le else b"MM") + struct.pack(e + "HI", 42, 8)
    ifd = struct.pack(e + "H", 1) + struct.pack(e + "HHI", 0x0112, 3, 1) + struct.pack(e + "HH", o, 0)
    return head + ifd + struct.pack(e + "I", 0)


def gen_decode():
    cases = []  # (file, orientation)

    def add(name, data):
        im = Image.open(io.BytesIO(data))
        im.load()
        put(name, data)
        put(name + ".rgb", rgb_record(im))
        exif = im.getexif()
        cases.append((name, int(exif.get(0x0112, 0))))

    pal16 = bytes(rng.randint(0, 256, size=48).astype(np.uint8))
    add("gray1.png", png_case(13, 5, 1, 0))
    add("gray2.png", png_case(11, 4, 2, 0))
    add("gray4.png", png_case(9, 6, 4, 0))
    add("gray8.png", png_case(10, 7, 8, 0))
    add("gray8_trns.png", png_case(10, 3, 8, 0, trns=b"\x00\x40"))
    add("gray16.png", png_case(12, 5, 16, 0))
    add("graya8.png", png_case(8, 6, 8, 4))
    add("graya16.png", png_case(7, 5, 16, 4))
    add("rgb8.png", png_case(9, 8, 8, 2))
    add("rgb16.png", png_case(6, 7, 16, 2))
    add("rgba8.png", png_case(8, 9, 8, 6))
    add("rgba16.png", png_case(5, 6, 16, 6))
    add("pal1.png", png_case(17, 3, 1, 3, plte=pal16[:6]))
    add("pal2.png", png_case(10, 4, 2, 3, plte=pal16[:12]))
    add("pal4.png", png_case(9, 5, 4, 3, plte=pal16, trns=b"\x00\x80\xff"))
    add("pal8.png", png_case(12, 6, 8, 3, plte=bytes(rng.randint(0, 256, size=768).astype(np.uint8))))
    # indices beyond a short palette (Pillow pads its palette with a gray ramp)
    add("pal8_short.png", png_case(12, 4, 8, 3, plte=pal16[:12], max_index=40))

    def pil_save(im, fmt, **kw):
        b = io.BytesIO()
        im.save(b, fmt, **kw)
        return b.getvalue()

    sm = Image.fromarray(smooth(31, 45, 3), "RGB")
    add("rgb_q90_420.jpg", pil_save(sm, "JPEG", quality=90))
    add("rgb_q75_prog.jpg", pil_save(sm, "JPEG", quality=75, progressive=True))
    add("rgb_q95_444.jpg", pil_save(Image.fromarray(noise(17, 23, 3), "RGB"), "JPEG", quality=95, subsampling=0))
    add("gray.jpg", pil_save(Image.fromarray(smooth(21, 19, 1)[:, :, 0], "L"), "JPEG", quality=85))
    add("cmyk.jpg", pil_save(Image.fromarray(noise(9, 14, 4), "CMYK"), "JPEG", quality=90))
    # EXIF orientation: PNG eXIf (both byte orders) and one JPEG
    base = noise(5, 7, 3)
    for o in range(1, 9):
        rows = [base[y].tobytes() for y in range(5)]
        add("orient%d.png" % o, png_bytes(7, 5, 8, 2, rows, exif=tiff_orientation(o, le=(o % 2 == 0))))
    ex = Image.Exif()
    ex[0x0112] = 6
    add("orient6.jpg", pil_save(Image.fromarray(smooth(12, 20, 3), "RGB"), "JPEG", quality=90, exif=ex.tobytes()))
    # transposed goldens for the orientation files
    lines = []
    for name, o in cases:
        tname = ""
        if o >= 2:
            im = ImageOps.exif_transpose(Image.open(os.path.join(OUT, name)))
            tname = name + ".transposed.rgb"
            put(tname, rgb_record(im))
        lines.append("%s %d %s" % (name, o, tname or "-"))
    put("decode.txt", ("\n".join(lines) + "\n").encode())


# ---- end-to-end preprocessing goldens (PIL backend numerics, section 3 of the spec) ----
def smart_resize(h, w, factor, min_px, max_px):
    if max(h, w) / min(h, w) > 200:
        raise ValueError("ratio")
    hb = round(h / factor) * factor
    wb = round(w / factor) * factor
    if hb * wb > max_px:
        beta = math.sqrt((h * w) / max_px)
        hb = max(factor, math.floor(h / beta / factor) * factor)
        wb = max(factor, math.floor(w / beta / factor) * factor)
    elif hb * wb < min_px:
        beta = math.sqrt(min_px / (h * w))
        hb = math.ceil(h * beta / factor) * factor
        wb = math.ceil(w * beta / factor) * factor
    return hb, wb


CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def preprocess(path, cfg):
    P, T, m = cfg.get("patch_size", 14), cfg.get("temporal_patch_size", 2), cfg.get("merge_size", 2)
    im = Image.open(path).convert("RGB")
    size = cfg.get("size", {})
    min_px = cfg.get("min_pixels", size.get("shortest_edge", 3136))
    max_px = cfg.get("max_pixels", size.get("longest_edge", 1003520))
    h, w = smart_resize(im.height, im.width, P * m, min_px, max_px)
    if (h, w) != (im.height, im.width):
        im = im.resize((w, h), Image.BICUBIC)
    a = np.asarray(im).transpose(2, 0, 1)  # CHW uint8
    x = (a.astype(np.float64) * (1 / 255)).astype(np.float32)
    mean = np.array(cfg.get("image_mean", CLIP_MEAN), dtype=np.float32) * np.ones(3, np.float32)
    std = np.array(cfg.get("image_std", CLIP_STD), dtype=np.float32) * np.ones(3, np.float32)
    x = ((x.T - mean) / std).T
    frames = np.array([x])
    if frames.shape[0] % T:
        frames = np.concatenate([frames] + [frames[-1:]] * (T - frames.shape[0] % T))
    gt, gh, gw = frames.shape[0] // T, h // P, w // P
    p = frames.reshape(gt, T, 3, gh // m, m, P, gw // m, m, P).transpose(0, 3, 6, 4, 7, 2, 1, 5, 8)
    return np.ascontiguousarray(p.reshape(gt * gh * gw, 3 * T * P * P), dtype=np.float32), (gt, gh, gw)


def fnv1a64(b):
    h = 0xCBF29CE484222325
    for byte in b:
        h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def gen_pipeline():
    import json

    cfgs = {
        "small": {"min_pixels": 784, "max_pixels": 12845056, "patch_size": 14, "temporal_patch_size": 2,
                  "merge_size": 2, "image_mean": CLIP_MEAN, "image_std": CLIP_STD,
                  "rescale_factor": 0.00392156862745098, "image_processor_type": "Qwen2VLImageProcessor"},
        "hub": {"min_pixels": 3136, "max_pixels": 12845056, "patch_size": 14, "temporal_patch_size": 2,
                "merge_size": 2, "image_mean": CLIP_MEAN, "image_std": CLIP_STD,
                "image_processor_type": "Qwen2VLImageProcessor", "processor_class": "Qwen2VLProcessor"},
        "defaults": {},
        "tight": {"size": {"shortest_edge": 784, "longest_edge": 6000}, "image_mean": 0.5, "image_std": 0.5},
    }
    for k, c in cfgs.items():
        put("preproc_%s.json" % k, (json.dumps(c, indent=2) + "\n").encode())
    imgs = {
        "pp_small.png": smooth(33, 45, 3),   # -> 28x56 under "small": full floats stored
        "pp_mid.png": smooth(100, 141, 3),   # real resize under hub limits
        "pp_tall.png": smooth(201, 30, 3),   # odd aspect under class defaults
    }
    for name, a in imgs.items():
        Image.fromarray(a, "RGB").save(os.path.join(OUT, name))
    lines = []
    for img, cfg, store in (("pp_small.png", "small", True), ("pp_mid.png", "hub", False),
                            ("pp_tall.png", "defaults", False), ("pp_mid.png", "tight", False)):
        pv, (gt, gh, gw) = preprocess(os.path.join(OUT, img), cfgs[cfg])
        blob = pv.tobytes()
        fl = "-"
        if store:
            fl = "pv_%s_%s.f32" % (img[:-4], cfg)
            put(fl, blob)
        lines.append("%s preproc_%s.json %d %d %d %d %016x %s" % (img, cfg, gt, gh, gw, pv.shape[0], fnv1a64(blob), fl))
    put("pipeline.txt", ("\n".join(lines) + "\n").encode())


# ---- EXIF orientation: where Pillow reads it from and which values it honours ----
# exif_fixture.jpg: an 11x6 non-symmetric image (every orientation distinguishable). Its
# decoded pixels P, transposed by Pillow's exif_transpose for orientation o (read from a PNG
# eXIf before IDAT, after IDAT, big- and little-endian, and from a JPEG APP1 segment, all
# checked equal here), are exif_fixture.o<o>.rgb. exif_cases.txt lists crafted files (exif_*.png,
# exif_*.jpg) with the orientation Pillow's exif_transpose applies to each:
#   <file> <modern> <pillow94>
# <modern>: Pillow >= 10.1 (exif_transpose calls load() first, so an eXIf after IDAT replaces
# one before it), reproduced here by calling load() before exif_transpose; <pillow94>: this
# Pillow 9.4 on a freshly opened image (getexif loads nothing when an eXIf precedes IDAT).
# Values: 1..8 the transposition applied (1: none), E: exif_transpose raised.
def tiff_entries(entries, le=True, extra=b"", next_ifd=0, ifd_off=8, head=None):
    """TIFF block: header, IFD0 at ifd_off with the (tag, type, count, 4-byte value) entries,
    then `extra` bytes (out-of-line values, placed right after the IFD)."""
    e = "<" if le else ">"
    h = head if head is not None else (b"II" if le else b"MM") + struct.pack(e + "HI", 42, ifd_off)
    body = struct.pack(e + "H", len(entries))
    for tag, typ, count, val in entries:
        body += struct.pack(e + "HHI", tag, typ, count) + val
    body += struct.pack(e + "I", next_ifd)
    pad = b"\0" * (ifd_off - len(h))
    return h + pad + body + extra


def v16(x, le=True):
    return struct.pack(("<" if le else ">") + "HH", x, 0)


def v32(x, le=True, fmt="I"):
    return struct.pack(("<" if le else ">") + fmt, x)


def png_layout(rows, w, h, pre=(), post=(), iend=True, extra_pre=(), raw_post=b""):
    """RGB8 PNG with the given chunks (already framed) before and after IDAT."""
    raw = b"".join(b"\x00" + r for r in rows)
    out = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
    out += b"".join(extra_pre) + b"".join(pre)
    out += png_chunk(b"IDAT", zlib.compress(raw)) + b"".join(post) + raw_post
    return out + (png_chunk(b"IEND", b"") if iend else b"")


def jpeg_with_app1(jpg, *payloads):
    segs = b"".join(b"\xff\xe1" + struct.pack(">H", len(p) + 2) + p for p in payloads)
    return jpg[:2] + segs + jpg[2:]


TRANSPOSE = {2: Image.FLIP_LEFT_RIGHT, 3: Image.ROTATE_180, 4: Image.FLIP_TOP_BOTTOM,
             5: Image.TRANSPOSE, 6: Image.ROTATE_270, 7: Image.TRANSVERSE, 8: Image.ROTATE_90}


def applied(data, load_first):
    """The orientation exif_transpose applies to the file (1: none), "E" if it raises."""
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            im = Image.open(io.BytesIO(data))
            if load_first:
                im.load()
            out = ImageOps.exif_transpose(im).convert("RGB")
            base = Image.open(io.BytesIO(data)).convert("RGB")
        except Exception:
            return "E"
    for o in range(1, 9):
        t = base if o == 1 else base.transpose(TRANSPOSE[o])
        if t.size == out.size and t.tobytes() == out.tobytes():
            return str(o)
    raise AssertionError("no transposition matches")


def gen_exif():
    r = np.random.RandomState(15)
    jpg_src = Image.fromarray(r.randint(0, 256, size=(6, 11, 3)).astype(np.uint8), "RGB")
    b = io.BytesIO()
    jpg_src.save(b, "JPEG", quality=95, subsampling=0)
    fixture = b.getvalue()
    put("exif_fixture.jpg", fixture)
    px = Image.open(io.BytesIO(fixture)).convert("RGB")
    w, hh = px.size
    a = np.asarray(px)
    rows = [a[y].tobytes() for y in range(hh)]
    for o in range(1, 9):
        results = set()
        for le in (True, False):
            t = tiff_orientation(o, le)
            X = png_chunk(b"eXIf", t)
            for data in (png_layout(rows, w, hh, pre=[X]), png_layout(rows, w, hh, post=[X]),
                         jpeg_with_app1(fixture, b"Exif\0\0" + t)):
                for load_first in (False, True):
                    im = Image.open(io.BytesIO(data))
                    if load_first:
                        im.load()
                    results.add(rgb_record(ImageOps.exif_transpose(im)))
        assert len(results) == 1, "orientation %d: the layouts disagree" % o
        put("exif_fixture.o%d.rgb" % o, results.pop())

    # crafted cases on a 3x2 image (all eight transpositions differ)
    small = [bytes(range(y * 9, y * 9 + 9)) for y in range(2)]
    X = lambda t: png_chunk(b"eXIf", t)
    O = lambda o, le=True: tiff_orientation(o, le)
    S = 0x0112
    cases = {
        # where the chunk is
        "pre6": dict(pre=[X(O(6))]),
        "post6": dict(post=[X(O(6))]),
        "pre6_post3": dict(pre=[X(O(6))], post=[X(O(3, False))]),
        "pre3_post6": dict(pre=[X(O(3))], post=[X(O(6))]),
        "pre6_pre3": dict(pre=[X(O(6)), X(O(3))]),
        "post6_post3": dict(post=[X(O(6)), X(O(3))]),
        "pre_empty_post6": dict(pre=[X(b"")], post=[X(O(6))]),
        "pre6_post_empty": dict(pre=[X(O(6))], post=[X(b"")]),
        "pre6_post_garbage": dict(pre=[X(O(6))], post=[X(b"garbage!")]),
        "post8_badcrc": dict(post=[X(O(8))[:-1] + b"\x00"]),
        "post5_no_iend": dict(post=[X(O(5))], iend=False),
        "post7_then_junk": dict(post=[X(O(7))], iend=False, raw_post=b"\x00\x00"),
        "post4_cut": dict(post=[X(O(4))[:-9]], iend=False),
        "post2_after_text": dict(post=[png_chunk(b"tEXt", b"k\x00v"), png_chunk(b"prVt", b"xyz"), X(O(2))]),
        # TIFF header and value forms
        "be6": dict(pre=[X(O(6, False))]),
        "magic_swapped_mm": dict(pre=[X(b"MM\x2a\x00" + O(6, False)[4:])]),
        "magic_swapped_ii": dict(pre=[X(b"II\x00\x2a" + O(6)[4:])]),
        "bigtiff": dict(pre=[X(b"II\x2b\x00" + O(6)[4:])]),
        "not_tiff": dict(pre=[X(b"IIxx" + O(6)[4:])]),
        "short7": dict(pre=[X(O(6)[:7])]),
        "one_byte": dict(pre=[X(b"I")]),
        "exif_prefixed": dict(pre=[X(b"Exif\0\0" + O(6))]),
        "val0": dict(pre=[X(O(0))]),
        "val9": dict(pre=[X(O(9))]),
        "val65535": dict(pre=[X(O(65535))]),
        "long6": dict(pre=[X(tiff_entries([(S, 4, 1, v32(6))]))]),
        "long6_be": dict(pre=[X(tiff_entries([(S, 4, 1, v32(6, False))], le=False))]),
        "sshort6": dict(pre=[X(tiff_entries([(S, 8, 1, v16(6))]))]),
        "sshort_neg": dict(pre=[X(tiff_entries([(S, 8, 1, v16(0xfffa))]))]),
        "slong3": dict(pre=[X(tiff_entries([(S, 9, 1, v32(3))]))]),
        "sbyte8": dict(pre=[X(tiff_entries([(S, 6, 1, b"\x08\0\0\0")]))]),
        "byte6": dict(pre=[X(tiff_entries([(S, 1, 1, b"\x06\0\0\0")]))]),
        "undefined6": dict(pre=[X(tiff_entries([(S, 7, 1, b"\x06\0\0\0")]))]),
        "ascii6": dict(pre=[X(tiff_entries([(S, 2, 2, b"6\0\0\0")]))]),
        "ifd_type6": dict(pre=[X(tiff_entries([(S, 13, 1, v32(6))]))]),
        "type99": dict(pre=[X(tiff_entries([(S, 99, 1, v16(6))]))]),
        "count2": dict(pre=[X(tiff_entries([(S, 3, 2, struct.pack("<HH", 6, 3))]))]),
        "count0": dict(pre=[X(tiff_entries([(S, 3, 0, v16(6))]))]),
        "count3_outofline": dict(pre=[X(tiff_entries([(S, 3, 3, v32(26))], extra=struct.pack("<HHH", 8, 1, 1)))]),
        "count3_bad_offset": dict(pre=[X(tiff_entries([(S, 3, 3, v32(4000))]))]),
        "rational6": dict(pre=[X(tiff_entries([(S, 5, 1, v32(26))], extra=struct.pack("<II", 6, 1)))]),
        "rational12_2": dict(pre=[X(tiff_entries([(S, 5, 1, v32(26))], extra=struct.pack("<II", 12, 2)))]),
        "rational13_2": dict(pre=[X(tiff_entries([(S, 5, 1, v32(26))], extra=struct.pack("<II", 13, 2)))]),
        "rational6_0": dict(pre=[X(tiff_entries([(S, 5, 1, v32(26))], extra=struct.pack("<II", 6, 0)))]),
        "srational_neg": dict(pre=[X(tiff_entries([(S, 10, 1, v32(26))], extra=struct.pack("<ii", -6, -1)))]),
        "float6": dict(pre=[X(tiff_entries([(S, 11, 1, struct.pack("<f", 6.0))]))]),
        "float6_5": dict(pre=[X(tiff_entries([(S, 11, 1, struct.pack("<f", 6.5))]))]),
        "double3": dict(pre=[X(tiff_entries([(S, 12, 1, v32(26))], extra=struct.pack("<d", 3.0)))]),
        "long8_6": dict(pre=[X(tiff_entries([(S, 16, 1, v32(26))], extra=struct.pack("<Q", 6)))]),
        "dup_6_then_3": dict(pre=[X(tiff_entries([(S, 3, 1, v16(6)), (S, 3, 1, v16(3))]))]),
        "dup_6_then_bad_type": dict(pre=[X(tiff_entries([(S, 3, 1, v16(6)), (S, 99, 1, v16(3))]))]),
        "dup_6_then_byte": dict(pre=[X(tiff_entries([(S, 3, 1, v16(6)), (S, 1, 1, b"\x03\0\0\0")]))]),
        "bad_value_before": dict(pre=[X(tiff_entries([(0x010F, 2, 20, v32(4000)), (S, 3, 1, v16(6))]))]),
        "bad_value_after": dict(pre=[X(tiff_entries([(S, 3, 1, v16(6)), (0x010F, 2, 20, v32(4000))]))]),
        "ifd_offset_out": dict(pre=[X(O(6)[:4] + struct.pack("<I", 500) + O(6)[8:])]),
        "ifd_cut_after": dict(pre=[X(tiff_entries([(S, 3, 1, v16(6)), (0x0100, 3, 1, v16(1))])[:8 + 2 + 12 + 5])]),
        "ifd_count_high": dict(pre=[X(O(6)[:8] + struct.pack("<H", 40) + O(6)[10:])]),
        "ifd_at_odd_offset": dict(pre=[X(tiff_entries([(S, 3, 1, v16(7))], ifd_off=13))]),
        "other_tags_only": dict(pre=[X(tiff_entries([(0x0100, 3, 1, v16(6)), (0x0101, 3, 1, v16(6))]))]),
        "ifd1_only": dict(pre=[X(tiff_entries([(0x0100, 3, 1, v16(3))], next_ifd=26,
                                              extra=struct.pack("<H", 1) + struct.pack("<HHI", S, 3, 1) + v16(6) + v32(0)))]),
        "exif_subifd_only": dict(pre=[X(tiff_entries([(0x8769, 4, 1, v32(26))],
                                                     extra=struct.pack("<H", 1) + struct.pack("<HHI", S, 3, 1) + v16(6) + v32(0)))]),
    }
    # Pillow >= 10 strips every leading "Exif\0\0" (Exif.load: `while data.startswith(...)`);
    # 9.4 strips one and raises on the rest. Derived by hand from that line, not run:
    modern_by_hand = {"exif_prefixed": "6"}
    lines = []
    for name, kw in cases.items():
        data = png_layout(small, 3, 2, **kw)
        put("exif_%s.png" % name, data)
        lines.append(("exif_%s.png" % name, modern_by_hand.get(name, applied(data, True)), applied(data, False)))
    # Chunks above libpng's 8 MB default limit (not committed; test_exif.c builds such files):
    # Pillow reads a 9 MB eXIf, and an eXIf after IDAT behind a 9 MB tEXt.
    big = png_layout(small, 3, 2, pre=[X(O(3) + b"\0" * (9 << 20))])
    assert applied(big, True) == "3" and applied(big, False) == "3"
    big = png_layout(small, 3, 2, extra_pre=[png_chunk(b"tEXt", b"big\x00" + b"a" * (9 << 20))], post=[X(O(6))])
    assert applied(big, True) == "6" and applied(big, False) == "6"
    # APNG: after IDAT, Pillow stops at the first fcTL of an animated image
    def actl(n):
        return png_chunk(b"acTL", struct.pack(">II", n, 0))

    def fctl(seq):
        return png_chunk(b"fcTL", struct.pack(">IIIIIHHBB", seq, 3, 2, 0, 0, 1, 10, 0, 0))

    frame = png_chunk(b"fdAT", struct.pack(">I", 2) + zlib.compress(b"".join(b"\x00" + r for r in small)))
    apng = {
        "apng_exif_after_frames": dict(extra_pre=[actl(2), fctl(0)], post=[fctl(1), frame, X(O(6))]),
        "apng_exif_before_frames": dict(extra_pre=[actl(2), fctl(0)], post=[X(O(6)), fctl(1), frame]),
        "apng_default_image": dict(extra_pre=[actl(1)], post=[fctl(0), frame, X(O(6))]),
        "apng_one_frame": dict(extra_pre=[actl(1), fctl(0)], post=[X(O(6))]),
        "apng_zero_frames": dict(extra_pre=[actl(0), fctl(0)], post=[fctl(1), frame, X(O(6))]),
    }
    for name, kw in apng.items():
        data = png_layout(small, 3, 2, **kw)
        put("exif_%s.png" % name, data)
        lines.append(("exif_%s.png" % name, applied(data, True), applied(data, False)))
    # JPEG APP1: Pillow keeps the first segment that starts with "Exif\0"
    tiny = io.BytesIO()
    Image.frombytes("RGB", (3, 2), b"".join(small)).save(tiny, "JPEG", quality=100, subsampling=0)
    tiny = tiny.getvalue()
    jcases = {
        "jpg_le6": [b"Exif\0\0" + O(6)],
        "jpg_be3": [b"Exif\0\0" + O(3, False)],
        "jpg_first_wins": [b"Exif\0\0" + O(6), b"Exif\0\0" + O(3)],
        "jpg_bad_first": [b"Exif\0X" + O(6), b"Exif\0\0" + O(3)],
        "jpg_xmp_then_exif": [b"http://ns.adobe.com/xap/1.0/\0<x/>", b"Exif\0\0" + O(8)],
        "jpg_val9": [b"Exif\0\0" + O(9)],
    }
    for name, segs in jcases.items():
        data = jpeg_with_app1(tiny, *segs)
        put("exif_%s.jpg" % name, data)
        lines.append(("exif_%s.jpg" % name, applied(data, True), applied(data, False)))
    put("exif_cases.txt", ("".join("%s %s %s\n" % l for l in lines)).encode())


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    gen_resize()
    gen_decode()
    gen_pipeline()
    gen_exif()
    print("goldens written to", OUT)
