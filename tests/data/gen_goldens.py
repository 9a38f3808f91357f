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


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    gen_resize()
    gen_decode()
    gen_pipeline()
    print("goldens written to", OUT)
