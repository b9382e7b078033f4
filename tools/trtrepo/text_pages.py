"""Pages of text whose lines are known: rendered in several fonts, sizes, line counts and slight rotations, on
plain paper or on a photo, each with its ground truth in ICDAR's form (four corners and the text per line).

A text detector is judged on them twice: against its FP32 twin (the gate) and against where the lines truly lie
(trtrepo eval). The fonts are the ones matplotlib ships (DejaVu, STIX), so every machine renders the same pages.
"""

from __future__ import annotations

import importlib.util
import io
import math
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from trtrepo.errors import UserError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from PIL import Image

FONTS = ("DejaVuSans.ttf", "DejaVuSerif.ttf", "DejaVuSans-Bold.ttf", "DejaVuSansMono.ttf", "STIXGeneral.ttf")
LETTERS = "abcdefghijklmnopqrstuvwxyz"
PAGE_SIZES = ((960, 720), (1024, 768), (720, 960), (1280, 720))
FONT_SIZES = (22, 48)  # px: from small print to a heading, at the page's own size
LINES = (1, 6)
MAX_DEGREES = 3.0
PAPER = ((255, 255, 255), (250, 246, 235), (235, 240, 250), (40, 40, 48))


@dataclass(frozen=True)
class PageLine:
    """One rendered line: its corners (top-left, top-right, bottom-right, bottom-left) and its text."""

    corners: tuple[tuple[float, float], ...]
    text: str

    def bounds(self) -> tuple[float, float, float, float]:
        xs, ys = [p[0] for p in self.corners], [p[1] for p in self.corners]
        return min(xs), min(ys), max(xs), max(ys)

    def icdar(self) -> str:
        return ",".join(str(round(v)) for point in self.corners for v in point) + f",{self.text}"


def font_folder() -> Path:
    found = importlib.util.find_spec("matplotlib")
    if found is None or not found.submodule_search_locations:
        raise UserError("rendered text pages need matplotlib's fonts: pip install matplotlib")
    return Path(list(found.submodule_search_locations)[0]) / "mpl-data" / "fonts" / "ttf"


def _words(rng: random.Random, width: int, size: int) -> str:
    """Pseudo-words with capitals and digits, about as wide as ``width`` at ``size``."""
    count = max(1, round(width / (size * 0.6 * 7)))
    words = []
    for _ in range(count):
        word = "".join(rng.choice(LETTERS) for _ in range(rng.randint(2, 9)))
        words.append(word.capitalize() if rng.random() < 0.3 else str(rng.randint(1, 2099)) if rng.random() < 0.1 else word)
    return " ".join(words)


def render_page(seed: int, background: "Image.Image | None" = None,
                size: tuple[int, int] | None = None) -> tuple["Image.Image", list[PageLine]]:
    """Page ``seed`` (the same on every machine): its image and its lines, on ``background`` when given (cropped
    and scaled to the page) or on plain paper; ``size`` (width, height) instead of the seed's own."""
    from PIL import Image, ImageDraw, ImageFont, ImageOps, ImageStat

    rng = random.Random(seed)
    width, height = rng.choice(PAGE_SIZES)
    width, height = size or (width, height)
    if background is None:
        page = Image.new("RGB", (width, height), rng.choice(PAPER))
    else:
        page = ImageOps.fit(background.convert("RGB"), (width, height))
    fonts = font_folder()
    text_layer = Image.new("L", (width, height), 0)
    lines: list[tuple[tuple[float, float, float, float], str]] = []
    font_size = rng.randint(*FONT_SIZES)
    font = ImageFont.truetype(str(fonts / rng.choice(FONTS)), font_size)
    draw = ImageDraw.Draw(text_layer)
    margin = max(24, width // 12)
    y = rng.randint(margin // 2, margin * 2)
    for _ in range(rng.randint(*LINES)):
        x = margin + rng.randint(0, width // 6)
        text = _words(rng, rng.randint(width // 4, width - x - margin), font_size)
        box = draw.textbbox((x, y), text, font=font)
        while box[2] > width - margin and " " in text:
            text = text.rsplit(" ", 1)[0]
            box = draw.textbbox((x, y), text, font=font)
        if box[3] > height - margin // 2:
            break
        draw.text((x, y), text, fill=255, font=font)
        lines.append((box, text))
        y = box[3] + round(font_size * rng.uniform(0.8, 2.5))
    degrees = rng.uniform(-MAX_DEGREES, MAX_DEGREES)
    text_layer = text_layer.rotate(degrees, resample=Image.Resampling.BICUBIC, center=(width / 2, height / 2))
    shade = ImageStat.Stat(page.convert("L"), mask=text_layer.point(lambda v: 255 if v > 64 else 0)).mean[0]
    ink = (20, 20, 28) if shade > 110 else (245, 245, 240)
    page.paste(Image.new("RGB", page.size, ink), mask=text_layer)
    return page, [PageLine(_rotated(box, degrees, width / 2, height / 2), text) for box, text in lines]


def _rotated(box: tuple[float, float, float, float], degrees: float, cx: float, cy: float) -> tuple[tuple[float, float], ...]:
    """The box's corners turned as PIL's rotate turns the image (counter-clockwise, y down)."""
    angle = math.radians(degrees)
    x0, y0, x1, y1 = box
    return tuple((cx + (x - cx) * math.cos(angle) + (y - cy) * math.sin(angle),
                  cy - (x - cx) * math.sin(angle) + (y - cy) * math.cos(angle))
                 for x, y in ((x0, y0), (x1, y0), (x1, y1), (x0, y1)))


def pages_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "trtrepo" / "text-pages"


def write_pages(folder: Path, count: int, backgrounds: "Sequence[Path]" = (), first_seed: int = 0,
                size: tuple[int, int] | None = None) -> list[Path]:
    """``count`` pages as PNG in ``folder`` with ICDAR ground truth in ``folder``/gt (gt_NAME.txt); every other
    page on a photo of ``backgrounds`` when there are any."""
    from trtrepo.photopool import write_whole
    from trtrepo.specs import load_image

    written = []
    for index in range(count):
        seed = first_seed + index
        photo = load_image(backgrounds[(index // 2) % len(backgrounds)]) if backgrounds and index % 2 else None
        image, lines = render_page(seed, photo, size)
        name = f"page_{seed:05d}"
        encoded = io.BytesIO()
        image.save(encoded, format="PNG")
        write_whole(Path(folder) / f"{name}.png", encoded.getvalue())
        write_whole(Path(folder) / "gt" / f"gt_{name}.txt", "".join(line.icdar() + "\n" for line in lines).encode())
        written.append(Path(folder) / f"{name}.png")
    return written
