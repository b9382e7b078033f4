"""Calibration data for INT8 engines: one loader for every engine, images -> preprocessed batches via the model spec."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from trtrepo.errors import UserError
from trtrepo.specs import IMAGE_SUFFIXES, ModelSpec

DEFAULT_CALIBRATION_IMAGES = 64
CALIBRATION_BATCH = 8


@dataclass(frozen=True)
class CalibrationSet:
    """The images an INT8 build calibrates on, and whether they stand for real deployment data."""

    images: tuple[Path, ...]
    representative: bool
    source: str

    def batches(self, spec: ModelSpec, batch_size: int = CALIBRATION_BATCH) -> Iterator[dict[str, np.ndarray]]:
        """Feed dicts {input name: batch} in the layout the exported network takes."""
        name = spec.inputs[0].name
        for start in range(0, len(self.images), batch_size):
            chunk = self.images[start : start + batch_size]
            yield {name: np.stack([spec.preprocess(path) for path in chunk])}

    def describe(self) -> dict:
        return {"source": self.source, "images": len(self.images), "representative": self.representative}


def calibration_set(calib_dir: Path | None, count: int = DEFAULT_CALIBRATION_IMAGES) -> CalibrationSet:
    """``count`` images from ``calib_dir`` (searched recursively; a .txt file lists one path per line),
    else the photos that installed packages ship, marked as not representative."""
    if count < 1:
        raise UserError(f"--calib-images must be at least 1, got {count}")
    if calib_dir is None:
        images = shipped_photos()
        if not images:
            raise UserError("no calibration images: pass --calib-dir DIR (a folder of images or a file list)")
        return CalibrationSet(tuple(images[:count]), False, "photos shipped with installed packages")
    calib_dir = Path(calib_dir)
    if calib_dir.is_file():
        images = [Path(line.strip()) for line in calib_dir.read_text().splitlines() if line.strip()]
        missing = [p for p in images if not p.is_file()]
        if missing:
            raise UserError(f"{calib_dir}: lists {len(missing)} missing images, first {missing[0]}")
    elif calib_dir.is_dir():
        images = sorted(p for p in calib_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    else:
        raise UserError(f"{calib_dir}: no such calibration folder or file list")
    if not images:
        raise UserError(f"{calib_dir}: no images found for calibration")
    return CalibrationSet(tuple(images[:count]), True, str(calib_dir))


def shipped_photos() -> list[Path]:
    """Real photos that ship inside installed packages: matplotlib's and scikit-image's sample data,
    and Debian's darknet package images where trtrepo's install unpacked them. Never downloaded."""
    import importlib.util
    import sys

    found: list[Path] = []
    for package, folder, names in (
        ("matplotlib", "mpl-data/sample_data", ("grace_hopper.jpg",)),
        ("skimage", "data", ("astronaut.png", "chelsea.png", "coffee.png", "motorcycle_left.png", "rocket.jpg")),
    ):
        spec = importlib.util.find_spec(package)
        if spec is not None and spec.origin:
            found += [p for p in (Path(spec.origin).parent / folder / n for n in names) if p.is_file()]
    darknet = Path(sys.prefix) / "share" / "darknet" / "data"
    if darknet.is_dir():
        found += sorted(darknet.glob("*.jpg"))
    return found
