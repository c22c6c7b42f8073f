"""The user's photo with a box and the read digit over each digit: what `/seen` (Telegram) and the Discord
thumbnail show for a number.

Why one module: both platforms show the same picture. Read's boxes are in the pixels of the upright
image (EXIF orientation applied), so the photo is turned upright with Pillow's `exif_transpose` before
the boxes are scaled to the downscaled picture and drawn.
"""

from __future__ import annotations

import functools
import io
import logging
from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont, ImageOps
from pillow_heif import register_heif_opener

log = logging.getLogger(__name__)

register_heif_opener()  # iPhone photos sent as files: the server reads them, so the picture must open too

MAX_SIDE = 512  # longest side of the picture sent back: enough to see each box, small to send
BOX_COLOUR = (255, 0, 170)  # magenta: stands out on paper, ink and most photos
LABEL_TEXT_COLOUR = (255, 255, 255)
ORIENTATION_TAG = 0x0112
TRANSPOSED = {5, 6, 7, 8}  # EXIF orientations that swap width and height

Box = tuple[int, int, int, int]  # (x, y, width, height) in the upright image's pixels


def upright_thumbnail(data: bytes, max_side: int = MAX_SIDE) -> tuple[Image.Image, tuple[int, int]]:
    """The encoded image upright (EXIF applied), in RGB, its longest side at most `max_side`; and the
    upright image's full size, which Read's boxes are measured in. JPEGs decode at a reduced scale
    (`draft`), so a 12-megapixel photo costs a fraction of a full decode."""
    with Image.open(io.BytesIO(data)) as img:
        width, height = img.size
        if img.getexif().get(ORIENTATION_TAG) in TRANSPOSED:
            width, height = height, width
        img.draft("RGB", (max_side, max_side))  # JPEG only; a no-op for other formats
        upright = on_white(ImageOps.exif_transpose(img))
    upright.thumbnail((max_side, max_side), Image.Resampling.BICUBIC)
    return upright, (width, height)


@functools.lru_cache(maxsize=32)
def label_font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's bundled font (no system font needed) at `size` px; loaded once per size."""
    return ImageFont.load_default(size=size)


def on_white(img: Image.Image) -> Image.Image:
    """RGB; a transparent background (stickers, PNGs) becomes white, as a chat client shows it."""
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    return img.convert("RGB")


def annotate(data: bytes, boxes: Sequence[Box], labels: Sequence[str], *, max_side: int = MAX_SIDE) -> Image.Image:
    """The photo, upright and downscaled, with each box drawn and its label (the digit read) on its top edge."""
    picture, (full_w, full_h) = upright_thumbnail(data, max_side)
    sx, sy = picture.width / full_w, picture.height / full_h
    line = max(2, round(max(picture.size) / 200))
    draw = ImageDraw.Draw(picture)
    for (x, y, w, h), label in zip(boxes, labels, strict=True):
        left, top = round(x * sx), round(y * sy)
        right, bottom = max(left + 1, round((x + w) * sx) - 1), max(top + 1, round((y + h) * sy) - 1)
        draw.rectangle((left, top, right, bottom), outline=BOX_COLOUR, width=line)
        size = max(12, min(32, round((bottom - top) * 0.4)))
        font = label_font(size)
        tl, tt, tr, tb = draw.textbbox((0, 0), label, font=font)
        pad = max(1, size // 6)
        label_w, label_h = tr - tl + 2 * pad, tb - tt + 2 * pad
        lx = min(max(0, left), max(0, picture.width - label_w))
        ly = top - label_h if top - label_h >= 0 else min(bottom + 1, picture.height - label_h)  # above, else below
        draw.rectangle((lx, ly, lx + label_w - 1, ly + label_h - 1), fill=BOX_COLOUR)
        draw.text((lx + pad - tl, ly + pad - tt), label, fill=LABEL_TEXT_COLOUR, font=font)
    return picture


def annotated_png(data: bytes, boxes: Sequence[Box], labels: Sequence[str], *,
                  max_side: int = MAX_SIDE) -> bytes | None:
    """`annotate` as PNG bytes; None when the picture cannot be drawn (the reply goes out without it)."""
    try:
        picture = annotate(data, boxes, labels, max_side=max_side)
    except Exception:  # noqa: BLE001 - a picture we cannot redraw must never cost the user the answer
        log.warning("could not draw the boxes over the picture", exc_info=True)
        return None
    buf = io.BytesIO()
    picture.save(buf, format="PNG", optimize=False)
    return buf.getvalue()
