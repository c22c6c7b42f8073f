"""Images an attacker would send (small files that decode to a lot), made on the fly, never stored."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image, ImageDraw


def _digit_canvas(size: tuple[int, int], ink: int = 30, paper: int = 235) -> Image.Image:
    """A "7" drawn across most of an 8-bit canvas of `size`."""
    w, h = size
    img = Image.new("L", size, paper)
    ImageDraw.Draw(img).line(
        [(w // 3, h // 4), (2 * w // 3, h // 4), (w // 2 - w // 12, 3 * h // 4)], fill=ink, width=max(1, w // 20)
    )
    return img


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_raw(width: int, height: int, bit_depth: int, color_type: int, rows) -> bytes:
    """A PNG written directly (Pillow's encoder is slow for huge canvases): `rows` yields each
    row's raw bytes, without the filter byte."""
    z = zlib.compressobj(6)
    body = bytearray()
    for row in rows:
        body += z.compress(b"\x00" + row)
    body += z.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", bytes(body)) + _chunk(b"IEND", b"")


def sixteen_bit_png(size: tuple[int, int] = (6000, 6600)) -> bytes:
    """A 16-bit grayscale PNG (Pillow mode I;16) of a digit: about 100 KB on disk, 80 MB of pixels
    once decoded (the shape of issue 14's 77 KB, 6000x6600 file)."""
    a = (np.asarray(_digit_canvas(size), dtype=np.uint16) * 257).astype(">u2")
    return png_raw(size[0], size[1], 16, 0, (row.tobytes() for row in a))


def in_mode(mode: str, size: tuple[int, int], fmt: str) -> bytes:
    """A digit on paper, saved in `mode` (I;16, I, F, CMYK, P, 1, LA, RGBA, ...) as `fmt`."""
    base = _digit_canvas(size)
    if mode == "I;16":
        a = np.asarray(base, dtype=np.uint16) * 257
        img = Image.frombytes("I;16", size, a.astype("<u2").tobytes())
    elif mode == "F":
        img = Image.fromarray(np.asarray(base, dtype=np.float32) / 255.0, "F")
    elif mode == "I":
        img = base.convert("I")
    elif mode == "CMYK":
        img = base.convert("RGB").convert("CMYK")
    else:
        img = base.convert(mode)
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


def many_frames_gif(frames: int = 10_000, size: tuple[int, int] = (64, 64)) -> bytes:
    """An animated GIF with very many tiny frames (only the first is ever read)."""
    first = _digit_canvas(size).convert("P")
    rest = [Image.new("P", size, i % 256) for i in range(1, frames)]
    buf = io.BytesIO()
    first.save(buf, "GIF", save_all=True, append_images=rest, duration=1, optimize=False)
    return buf.getvalue()


def bomb_png(side: int = 20_000) -> bytes:
    """A 1-bit PNG of side x side pixels (far over the pixel limit), about 50 KB on disk."""
    row = bytes((side + 7) // 8)
    return png_raw(side, side, 1, 0, (row for _ in range(side)))


def every_mode_at(size: tuple[int, int] = (6000, 6600)) -> dict[str, bytes]:
    """The same digit, `size` pixels (the default is just under the server's 40 MP limit), in the
    modes and bit depths that decode to the most memory: 16-bit RGBA, 32-bit float, CMYK, 1-bit, RGB."""
    w, h = size
    a = np.asarray(_digit_canvas(size))
    rgba16 = np.repeat(a[:, :, None], 4, 2).astype(np.uint16) * 257
    rgba16[..., 3] = 65535
    out = {
        "PNG RGB": png_raw(w, h, 8, 2, (row.tobytes() for row in np.repeat(a[:, :, None], 3, 2))),
        "PNG RGBA 16-bit": png_raw(w, h, 16, 6, (row.astype(">u2").tobytes() for row in rgba16)),
        "PNG 1-bit": png_raw(w, h, 1, 0, (row.tobytes() for row in np.packbits(a >= 128, axis=1))),
    }
    for name, img in (
        ("TIFF 32-bit float", Image.fromarray(a.astype(np.float32) / 255, "F")),
        ("TIFF CMYK", Image.fromarray(a).convert("CMYK")),
    ):
        buf = io.BytesIO()
        img.save(buf, "TIFF", compression="tiff_adobe_deflate")
        out[name] = buf.getvalue()
    return out
