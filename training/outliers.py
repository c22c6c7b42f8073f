"""Non-digit 28x28 images in the MNIST convention, for outlier exposure (Hendrycks et al. 2019).

Why: a model trained on digits alone has only digits to answer with, so a photo of "K", "#" or a face
gets the nearest digit, often at 90%+. Showing it letters, symbols and doodles during training, with
a loss that asks for a flat (uniform) softmax on them, teaches it to say "none of these" by being
unsure, without an 11th class (model/shape.py keeps 10 outputs).

Four kinds, each drawn the way the preprocessing hands a digit to the model (ink 255 on 0, fitted
into a 20x20 box, centred by mass in 28x28):
- `font-letter`: upper and lower case letters from the system's TrueType fonts (Pillow/FreeType),
- `hand-letter`: letters from Hershey single-stroke fonts (`hershey-fonts`), drawn as jittered pen
  strokes of random width: a stand-in for handwriting,
- `symbol`: punctuation, currency, maths and dingbats from both,
- `doodle`: scribbles, faces (a circle WITH eyes and a mouth), zigzags, stars, crosses, hearts,
  hashes, arrows, suns, houses, stick figures, and short words of 2-3 allowed letters.

Left out on purpose, because they really are digit look-alikes (refusing them would refuse real
digits written that way): O o Q D (0), I l i j | / ( ) ! (1), Z z (2), S s $ § (5), B & (8), b G (6),
g q (9), T (a 7 or a 1 with a flag and a crossbar), and tiny marks . , ' ` ° that normalize into a
blob or bar. The full list is `EXCLUDED`.

Training and held-out outliers never share a source: fonts are split by file (every third of the
sorted list is held out), Hershey hands by name (`TRAIN_HANDS` / `HELDOUT_HANDS`), and doodles and
words by seed stream (a different SeedSequence entropy per split). `generate(n, "heldout")` is what
the benchmark and the tests measure on; `generate(n, "train")` what `digits-train --outliers` learns.
"""

from __future__ import annotations

import functools
import glob
import string
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage as ndi

from model.shape import IMAGE_SIZE
from preprocessing.normalize import fit_and_center

KINDS = ("font-letter", "hand-letter", "symbol", "doodle")
SPLITS = ("train", "heldout")
EXCLUDED = frozenset("OoQDIlij|/()!ZzSs$§B&bGgqT.,'`°")
LETTERS = "".join(c for c in string.ascii_letters if c not in EXCLUDED)
# Symbols a font renders; the Hershey hands only have ASCII
FONT_SYMBOLS = "".join(c for c in "#@%?*+=<>^~€£¥©®±÷√∞♥☺★✓→Ωλπ∑Δ✗♪¶" if c not in EXCLUDED)
HAND_SYMBOLS = "".join(c for c in "#@%?*+=<>^~" if c not in EXCLUDED)
TRAIN_HANDS = ("futural", "scripts", "rowmans", "timesi", "gothiceng")
HELDOUT_HANDS = ("futuram", "scriptc", "cursive", "rowmand", "timesr")
DOODLES = (
    "scribble", "face", "zigzag", "star", "cross", "heart", "hash", "arrow", "sun", "house", "stick", "word",
)  # fmt: skip
FONT_DIRS = ("/usr/share/fonts", "/usr/local/share/fonts", "~/.fonts", "/Library/Fonts", "C:/Windows/Fonts")
CANVAS = 112  # drawing size: 4x the 28-pixel output, like the preprocessing's working canvas
_SEEDS = {"train": 0x0E_7A1, "heldout": 0x4E1D_0}


@dataclass(frozen=True)
class Outlier:
    image: np.ndarray  # (28, 28) uint8, 0 background, 255 ink
    kind: str  # one of KINDS
    text: str  # the character(s) drawn, or the doodle's name
    source: str  # font file name, Hershey hand, or "doodle"


@functools.cache
def system_fonts() -> tuple[str, ...]:
    """TrueType/OpenType files Pillow can open, sorted by file name (the split depends on the order)."""
    found = set()
    for d in FONT_DIRS:
        for ext in ("ttf", "otf"):
            found.update(glob.glob(str(Path(d).expanduser() / "**" / f"*.{ext}"), recursive=True))
    usable = []
    for path in sorted(found, key=lambda p: (Path(p).name, p)):
        try:
            ImageFont.truetype(path, 20)
        except OSError:
            continue
        usable.append(path)
    return tuple(usable)


def fonts(split: str) -> tuple[str, ...]:
    """Every third font (by sorted file name) is held out; the rest are for training."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    all_fonts = system_fonts()
    return tuple(f for i, f in enumerate(all_fonts) if (i % 3 == 1) == (split == "heldout"))


def hands(split: str) -> tuple[str, ...]:
    return TRAIN_HANDS if split == "train" else HELDOUT_HANDS


def to_mnist(ink: np.ndarray) -> np.ndarray:
    """(h, w) ink in [0, 1] -> (28, 28) uint8: long side fitted into 20 px, centre of mass at (14, 14)."""
    ys, xs = np.nonzero(ink > 0.05)
    if len(ys) == 0:
        return np.zeros((IMAGE_SIZE, IMAGE_SIZE), np.uint8)
    return fit_and_center(ink[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1].astype(np.float32))


def _pen(rng: np.random.Generator) -> int:
    """A pen width on the 112 canvas once the drawing spans ~80 px: MNIST strokes are 2-3 px of 20."""
    return int(rng.integers(5, 13))


def render_font(char: str, font_path: str, rng: np.random.Generator) -> np.ndarray | None:
    """One character in one font (None when the font has no such glyph: it draws nothing or a box)."""
    size = int(rng.integers(70, 100))
    font = ImageFont.truetype(font_path, size)
    img = Image.new("L", (CANVAS * 2, CANVAS * 2), 0)
    draw = ImageDraw.Draw(img)
    draw.text(
        (CANVAS // 3, CANVAS // 3), char, fill=255, font=font, stroke_width=int(rng.integers(0, 4)), stroke_fill=255
    )
    a = np.asarray(img, np.float32) / 255
    if a.max() < 0.5 or _is_tofu(font, char):
        return None
    return a


def _is_tofu(font: ImageFont.FreeTypeFont, char: str) -> bool:
    """A missing glyph renders as the font's .notdef box; compare with a private-use character's mask."""
    try:
        return bytes(font.getmask(char)) == bytes(font.getmask("\ue000"))
    except OSError:
        return True


@functools.cache
def _hershey(name: str):
    from HersheyFonts import HersheyFonts

    f = HersheyFonts()
    f.load_default_font(name)
    return f


def _strokes(segments: list) -> list[np.ndarray]:
    """Hershey segments -> polylines (consecutive segments that share an end point are one pen stroke)."""
    strokes: list[list] = []
    for a, b in segments:
        if strokes and tuple(strokes[-1][-1]) == tuple(a):
            strokes[-1].append(b)
        else:
            strokes.append([a, b])
    return [np.asarray(s, np.float32) for s in strokes]


def _wobble(points: np.ndarray, rng: np.random.Generator, amount: float) -> np.ndarray:
    """A hand's tremor: each point moved by smooth noise (neighbours move together), plus a slant."""
    noise = rng.normal(0, amount, points.shape)
    if len(points) > 2:
        noise = ndi.gaussian_filter1d(noise, 1.0, axis=0, mode="nearest")
    return points + noise


def _draw_strokes(strokes: list[np.ndarray], rng: np.random.Generator, flip_y: bool = False) -> np.ndarray:
    """Polylines in any units -> an ink canvas: scaled to ~80 px, slanted, wobbled, drawn with one pen."""
    pts = np.concatenate(strokes)
    lo, hi = pts.min(0), pts.max(0)
    scale = 80.0 / max(float((hi - lo).max()), 1e-6)
    shear = rng.uniform(-0.25, 0.25)
    width = _pen(rng)
    img = Image.new("L", (CANVAS * 2, CANVAS * 2), 0)
    draw = ImageDraw.Draw(img)
    for s in strokes:
        p = (s - lo) * scale
        if flip_y:
            p[:, 1] = (hi[1] - lo[1]) * scale - p[:, 1]
        p[:, 0] += shear * (p[:, 1] - 40)
        p = _wobble(p, rng, rng.uniform(0.5, 2.0)) + CANVAS / 2
        xy = [tuple(map(float, q)) for q in p]
        if len(xy) == 1 or np.ptp(p, axis=0).max() < 1:
            x, y = xy[0]
            draw.ellipse((x - width / 2, y - width / 2, x + width / 2, y + width / 2), fill=255)
        else:
            draw.line(xy, fill=255, width=width, joint="curve")
            for x, y in (xy[0], xy[-1]):  # round pen ends
                draw.ellipse((x - width / 2, y - width / 2, x + width / 2, y + width / 2), fill=255)
    return np.asarray(img, np.float32) / 255


def render_hand(text: str, hand: str, rng: np.random.Generator) -> np.ndarray | None:
    segments = list(_hershey(hand).lines_for_text(text))
    if not segments:
        return None
    return _draw_strokes(_strokes(segments), rng, flip_y=True)


# -- doodles: each returns polylines in a 0..1 box -------------------------------------------------
def _circle(cx: float, cy: float, r: float, n: int = 24, rx: float | None = None) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n + 1)
    return np.stack([cx + (rx or r) * np.cos(t), cy + r * np.sin(t)], 1)


def _doodle(name: str, rng: np.random.Generator, split: str) -> list[np.ndarray]:
    u = rng.uniform
    if name == "scribble":
        steps = rng.normal(0, 1, (int(rng.integers(15, 40)), 2))
        walk = np.cumsum(ndi.gaussian_filter1d(steps, 2.0, axis=0), 0)
        return [walk]
    if name == "face":
        r = 0.5
        head = _circle(0.5, 0.5, r, rx=r * u(0.8, 1.1))
        eyes = [_circle(0.5 + dx, 0.35, u(0.02, 0.07), 8) for dx in (-u(0.12, 0.22), u(0.12, 0.22))]
        t = np.linspace(-1, 1, 9)
        smile = u(-0.12, 0.15)
        mouth = np.stack([0.5 + t * u(0.15, 0.3), 0.68 + smile * (1 - t**2)], 1)
        return [head, *eyes, mouth]
    if name == "zigzag":
        k = int(rng.integers(3, 8))
        z = np.stack([np.linspace(0, 1, k + 1), (np.arange(k + 1) % 2) * u(0.2, 0.6)], 1)
        return [z[:, ::-1]] if rng.random() < 0.3 else [z]
    if name == "star":
        k = int(rng.choice([5, 5, 6, 7]))
        t = np.linspace(-np.pi / 2, 1.5 * np.pi, 2 * k + 1)
        r = np.where(np.arange(2 * k + 1) % 2 == 0, 1.0, u(0.35, 0.5))
        return [np.stack([r * np.cos(t), r * np.sin(t)], 1)]
    if name == "cross":
        a, b = np.array([[0, 0], [1, 1]], np.float32), np.array([[1, 0], [0, 1]], np.float32)
        if rng.random() < 0.4:
            a, b = np.array([[0.5, 0], [0.5, 1]]), np.array([[0, 0.5], [1, 0.5]])
        return [a, b]
    if name == "heart":
        t = np.linspace(0, 2 * np.pi, 40)
        return [np.stack([16 * np.sin(t) ** 3, -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t))], 1)]
    if name == "hash":
        k = int(rng.integers(2, 4))
        return [np.array([[i / k + 0.2, 0], [i / k + 0.1, 1]]) for i in range(k)] + [
            np.array([[0, j / k + 0.2], [1, j / k + 0.2]]) for j in range(k)
        ]
    if name == "arrow":
        return [np.array([[0, 0.5], [1, 0.5]]), np.array([[0.7, 0.25], [1, 0.5], [0.7, 0.75]])]
    if name == "sun":
        rays = []
        for a in np.linspace(0, 2 * np.pi, int(rng.integers(6, 12)), endpoint=False):
            rays.append(
                np.array(
                    [[0.5 + 0.3 * np.cos(a), 0.5 + 0.3 * np.sin(a)], [0.5 + 0.5 * np.cos(a), 0.5 + 0.5 * np.sin(a)]]
                )
            )
        return [_circle(0.5, 0.5, 0.22), *rays]
    if name == "house":
        return [np.array([[0, 0.4], [0.5, 0], [1, 0.4], [1, 1], [0, 1], [0, 0.4], [1, 0.4]]),
                np.array([[0.4, 1], [0.4, 0.7], [0.6, 0.7], [0.6, 1]])]  # fmt: skip
    if name == "stick":
        head, body = _circle(0.5, 0.12, 0.12, 12), np.array([[0.5, 0.24], [0.5, 0.65]])
        arms, legs = np.array([[0.2, 0.4], [0.5, 0.35], [0.8, 0.4]]), np.array([[0.3, 1], [0.5, 0.65], [0.7, 1]])
        return [head, body, arms, legs]
    raise ValueError(name)


def render_doodle(name: str, rng: np.random.Generator, split: str) -> tuple[np.ndarray | None, str]:
    if name == "word":
        word = "".join(rng.choice(list(LETTERS), int(rng.integers(2, 4))))
        if rng.random() < 0.5:
            return render_hand(word, str(rng.choice(hands(split))), rng), word
        pool = fonts(split)
        return (render_font(word, str(rng.choice(pool)), rng) if pool else None), word
    return _draw_strokes(_doodle(name, rng, split), rng), name


def generate(n: int, split: str = "train", seed: int = 0, kinds: tuple[str, ...] = KINDS) -> list[Outlier]:
    """`n` outliers of `split`, the kinds taken in turn; the same (n, split, seed, kinds) gives the same images."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    rng = np.random.default_rng(np.random.SeedSequence([_SEEDS[split], seed]))
    font_pool, hand_pool = fonts(split), hands(split)
    out: list[Outlier] = []
    attempts = 0
    while len(out) < n:
        attempts += 1
        if attempts > 20 * n + 100:
            raise RuntimeError(f"could not render {n} outliers (fonts found: {len(system_fonts())})")
        kind = kinds[len(out) % len(kinds)]
        ink, text, source = None, "", ""
        if kind in ("font-letter", "symbol") and font_pool and (kind == "font-letter" or rng.random() < 0.6):
            text = str(rng.choice(list(LETTERS if kind == "font-letter" else FONT_SYMBOLS)))
            source = str(rng.choice(font_pool))
            ink = render_font(text, source, rng)
            source = Path(source).name
        elif kind in ("hand-letter", "symbol", "font-letter"):
            text = str(rng.choice(list(HAND_SYMBOLS if kind == "symbol" else LETTERS)))
            source = str(rng.choice(hand_pool))
            ink = render_hand(text, source, rng)
        else:
            ink, text = render_doodle(str(rng.choice(DOODLES)), rng, split)
            source = "doodle"
        if ink is None:
            continue
        image = to_mnist(ink)
        if (image > 128).sum() < 12:  # too little ink to be anything
            continue
        out.append(Outlier(image, kind, text, source))
    return out


def bank(n: int, split: str = "train", seed: int = 0) -> np.ndarray:
    """(n, 28, 28) uint8 outliers, the array training samples from."""
    return np.stack([o.image for o in generate(n, split, seed)])


__all__ = [
    "DOODLES", "EXCLUDED", "FONT_SYMBOLS", "HAND_SYMBOLS", "HELDOUT_HANDS", "KINDS", "LETTERS", "Outlier",
    "TRAIN_HANDS", "bank", "fonts", "generate", "hands", "system_fonts", "to_mnist",
]  # fmt: skip
