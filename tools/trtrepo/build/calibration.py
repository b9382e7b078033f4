"""Calibration data for INT8 engines: one loader for every engine, images -> preprocessed batches via the model spec."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator

import numpy as np

from trtrepo.errors import UserError
from trtrepo.imagesets import ImageSample, default_photos, default_text_pages, images_in, with_crops
from trtrepo.photopool import CALIBRATION
from trtrepo.specs import ModelSpec


DEFAULT_CALIBRATION_IMAGES = 64
CALIBRATION_BATCH = 8


@dataclass(frozen=True)
class CalibrationSet:
    """The images an INT8 build calibrates on, and whether they stand for real deployment data."""

    images: tuple[ImageSample, ...]
    representative: bool
    source: str
    #: Where calibrated ranges are kept while a build runs (see ranges_file); None: not kept.
    ranges_dir: Path | None = None

    def batches(self, spec: ModelSpec, batch_size: int = CALIBRATION_BATCH) -> Iterator[dict[str, np.ndarray]]:
        """Feed dicts {input name: batch} in the layout the exported network takes; one image a batch where the
        images keep their own sizes (CTPN's)."""
        name = spec.inputs[0].name
        if -1 in spec.inputs[0].shape:
            batch_size = 1
        for start in range(0, len(self.images), batch_size):
            chunk = self.images[start : start + batch_size]
            yield {name: np.stack([spec.preprocess_image(sample.load()) for sample in chunk])}

    def ranges_file(self, network: Path) -> Path | None:
        """The file that holds ``network``'s calibrated ranges on these images for the rest of the build, named by
        a digest of both: every INT8 variant of one network (either engine, every accuracy-gate trial) shares
        one calibration, and changed weights or images can never meet old ranges."""
        if self.ranges_dir is None:
            return None
        digest = hashlib.sha256(Path(network).read_bytes())
        digest.update("\n".join(map(str, self.images)).encode())
        return self.ranges_dir / f"ranges-{digest.hexdigest()[:32]}.json"

    def kept_in(self, folder: Path) -> "CalibrationSet":
        """The same set, its calibrated ranges kept in ``folder`` (a folder that lives as long as the build)."""
        return replace(self, ranges_dir=Path(folder))

    @property
    def files(self) -> frozenset[Path]:
        return frozenset(sample.path for sample in self.images)

    def describe(self) -> dict:
        return {"source": self.source, "images": len(self.images), "files": len(self.files),
                "representative": self.representative}


def calibration_set(calib_dir: Path | None, count: int = DEFAULT_CALIBRATION_IMAGES, text: bool = False) -> CalibrationSet:
    """``count`` images from ``calib_dir`` (searched recursively; a .txt file lists one path per line),
    else the photos kept for calibration, marked as not representative (a text detector's: rendered pages of
    text). Fewer files than ``count`` are stretched with crops and mirror images of them (INT8 scales fitted to a
    handful of samples are noisy), except for a text detector: whole images only, a crop would cut its lines."""
    if count < 1:
        raise UserError(f"--calib-images must be at least 1, got {count}")
    if calib_dir is None and text:
        images, source = default_text_pages(CALIBRATION)
        representative = False
    elif calib_dir is None:
        images, source, _ = default_photos(CALIBRATION)
        representative = False
        if not images:
            raise UserError("no calibration images: pass --calib-dir DIR (a folder of images or a file list)")
    else:
        images, source, representative = images_in(calib_dir, "calibration"), str(calib_dir), True
    return CalibrationSet(with_crops(images, min(count, len(images)) if text else count), representative, source)
