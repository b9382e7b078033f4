"""Image sets a build uses without being given any: the photos installed packages ship, split into a calibration
part and an evaluation part that never overlap, and crops of them when a set needs more samples than it has files.

An INT8 build calibrates on one part and is judged (the accuracy gate) on the other: scales fitted to the photos
they are then judged on would flatter them.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from trtrepo.errors import UserError
from trtrepo.specs import IMAGE_SUFFIXES, load_image

if TYPE_CHECKING:
    from PIL import Image


#: Shipped photos kept out of calibration: the accuracy gate's default evaluation set. Darknet's sample photos
#: hold the objects a detector is judged on; skimage's second motorcycle view is the left one's unseen twin.
EVALUATION_PHOTOS = frozenset({"dog.jpg", "eagle.jpg", "giraffe.jpg", "horses.jpg", "kite.jpg", "person.jpg",
                               "scream.jpg", "motorcycle_right.png"})
#: Crops that stretch a few photos into more samples: (left, top, right, bottom) as shares of the image, and
#: whether to mirror. The whole image comes first, so a set with enough files uses only whole images.
CROPS = (
    ((0.0, 0.0, 1.0, 1.0), False),
    ((0.0, 0.0, 1.0, 1.0), True),
    ((0.1, 0.1, 0.9, 0.9), False),
    ((0.0, 0.0, 0.7, 0.7), False),
    ((0.3, 0.3, 1.0, 1.0), True),
    ((0.3, 0.0, 1.0, 0.7), False),
    ((0.0, 0.3, 0.7, 1.0), True),
    ((0.2, 0.2, 0.8, 0.8), True),
    ((0.0, 0.0, 0.5, 0.5), False),
    ((0.5, 0.5, 1.0, 1.0), True),
    ((0.5, 0.0, 1.0, 0.5), False),
    ((0.0, 0.5, 0.5, 1.0), True),
    ((0.15, 0.0, 0.85, 1.0), False),
    ((0.0, 0.15, 1.0, 0.85), True),
)


@dataclass(frozen=True)
class ImageSample:
    """One input image: a file, or a crop (shares of its width and height) of it, mirrored or not."""

    path: Path
    crop: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0)
    mirror: bool = False

    def load(self) -> "Image.Image":
        from PIL import ImageOps

        image = load_image(self.path)
        if self.crop != (0.0, 0.0, 1.0, 1.0):
            width, height = image.size
            left, top, right, bottom = self.crop
            image = image.crop((round(left * width), round(top * height), round(right * width), round(bottom * height)))
        return ImageOps.mirror(image) if self.mirror else image

    def __str__(self) -> str:
        if self.crop == (0.0, 0.0, 1.0, 1.0) and not self.mirror:
            return str(self.path)
        return f"{self.path}[crop {','.join(f'{v:g}' for v in self.crop)}{' mirrored' if self.mirror else ''}]"


def with_crops(paths: Iterable[Path], count: int) -> tuple[ImageSample, ...]:
    """``count`` samples: the images themselves, then crops of each in turn while more are wanted (at most
    len(CROPS) per image)."""
    paths = list(paths)
    samples = [ImageSample(path, crop, mirror) for crop, mirror in CROPS for path in paths]
    return tuple(samples[:count])


def shipped_photos() -> list[Path]:
    """Real photos that ship inside installed packages: matplotlib's and scikit-image's sample data,
    and Debian's darknet package images where trtrepo's install unpacked them. Never downloaded."""
    found: list[Path] = []
    for package, folder, names in (
        ("matplotlib", "mpl-data/sample_data", ("grace_hopper.jpg",)),
        ("skimage", "data", ("astronaut.png", "chelsea.png", "coffee.png", "motorcycle_left.png", "rocket.jpg",
                             "motorcycle_right.png", "hubble_deep_field.jpg", "retina.jpg", "camera.png", "coins.png",
                             "ihc.png")),
    ):
        spec = importlib.util.find_spec(package)
        if spec is not None and spec.origin:
            found += [p for p in (Path(spec.origin).parent / folder / n for n in names) if p.is_file()]
    darknet = Path(sys.prefix) / "share" / "darknet" / "data"
    if darknet.is_dir():
        found += sorted(darknet.glob("*.jpg"))
    return found


def text_photos() -> list[Path]:
    """Photos of text that ship inside installed packages: scikit-image's photographed book page."""
    spec = importlib.util.find_spec("skimage")
    page = Path(spec.origin).parent / "data" / "page.png" if spec is not None and spec.origin else None
    return [page] if page is not None and page.is_file() else []


def calibration_photos() -> list[Path]:
    """The shipped photos an INT8 build calibrates on by default (none of the evaluation ones)."""
    return [p for p in shipped_photos() if p.name not in EVALUATION_PHOTOS]


def evaluation_photos() -> list[Path]:
    """The shipped photos the accuracy gate judges a variant on by default (none of the calibration ones)."""
    return [p for p in shipped_photos() if p.name in EVALUATION_PHOTOS]


def default_photos(part: str) -> tuple[list[Path], str, bool]:
    """The photos a build calibrates on (``calib``) or judges on (``eval``) when it is given none, where they come
    from, and whether that is the photo pool: its part where `trtrepo photos` fetched it, else the shipped photos'."""
    from trtrepo.photopool import CALIBRATION, default_cache, pool_part

    pool = pool_part(default_cache(), part)
    if pool:
        return pool, f"the photo pool's {'calibration' if part == CALIBRATION else 'evaluation'} part ({default_cache()})", True
    if part == CALIBRATION:
        return calibration_photos(), "photos shipped with installed packages", False
    return evaluation_photos(), "photos shipped with installed packages, kept out of calibration", False


#: A text detector's default images per part (calibration, evaluation): rendered pages, how many, first seed. 80
#: pages to judge on: at least the 73 on which a perfect F's lower end can clear 0.95, so the interval decides.
TEXT_PAGES = {"calib": (32, 10_000), "eval": (80, 0)}


def default_text_pages(part: str) -> tuple[list[Path], str]:
    """The pages with known text lines a text detector calibrates on (``calib``) or is judged on (``eval``) when it
    is given none: rendered once into the cache, every other one on a photo of the same part (default_photos)."""
    from trtrepo.text_pages import pages_cache, write_pages

    backgrounds, where, pooled = default_photos(part)
    count, first_seed = TEXT_PAGES[part]
    folder = pages_cache() / f"{part}-{'pool' if pooled else 'shipped'}"
    return write_pages(folder, count, backgrounds, first_seed), f"{count} rendered text pages, half of them on {where} ({folder})"


#: What a build says where its verdicts rest on the few shipped photos.
FEW_PHOTOS = ("its accuracy verdicts rest on {count} shipped photos (and crops of them): `trtrepo photos` fetches "
              "about 670 real ones once, which builds then judge and calibrate on")


def describe_photos(photos: list[Path]) -> str:
    """How many photos, and how large (bytes as sent, pixels as decoded): what a bytes-in figure was measured on."""
    from PIL import Image

    kilobytes = [p.stat().st_size / 1024 for p in photos]
    pixels = []
    for path in photos:
        with Image.open(path) as image:  # the header only: no decode
            pixels.append(image.size[0] * image.size[1] / 1e6)
    return (f"{len(photos)} photos, {min(kilobytes):.0f}-{max(kilobytes):.0f} KB (mean {sum(kilobytes) / len(photos):.0f}), "
            f"{min(pixels):.2f}-{max(pixels):.2f} megapixels (mean {sum(pixels) / len(photos):.2f})")


def content_hash(path: Path) -> str:
    """The SHA-256 of a file's bytes: what tells two images apart, whatever their names."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def images_in(source: Path, what: str) -> list[Path]:
    """The images of a folder (searched recursively, sorted) or of a file listing one path per line."""
    source = Path(source)
    if source.is_file():
        images = [Path(line.strip()) for line in source.read_text().splitlines() if line.strip()]
        missing = [p for p in images if not p.is_file()]
        if missing:
            raise UserError(f"{source}: lists {len(missing)} missing images, first {missing[0]}")
    elif source.is_dir():
        images = sorted(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    else:
        raise UserError(f"{source}: no such {what} folder or file list")
    if not images:
        raise UserError(f"{source}: no images found for {what}")
    return images
