"""Calibration data: one loader for every engine's INT8 build."""

from __future__ import annotations

import numpy as np
import pytest

from trtrepo.build.calibration import calibration_set
from trtrepo.errors import UserError
from trtrepo.imagesets import EVALUATION_PHOTOS, ImageSample, evaluation_photos, shipped_photos
from trtrepo.models import get_model


def test_folder_is_searched_recursively_and_capped(images, tmp_path):
    nested = tmp_path / "calib" / "deeper"
    nested.mkdir(parents=True)
    for path in images.iterdir():
        (nested / path.name).symlink_to(path)
    chosen = calibration_set(tmp_path / "calib", count=2)
    assert len(chosen.images) == 2 and chosen.representative and chosen.source == str(tmp_path / "calib")


def test_file_list_and_its_errors(images, tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join(str(p) for p in sorted(images.iterdir())) + "\n")
    stretched = calibration_set(listing, 10)
    assert len(stretched.images) == 10 and len(stretched.files) == 3  # three files, then crops and mirror images
    assert [str(sample) for sample in stretched.images[:3]] == [str(p) for p in sorted(images.iterdir())]
    assert len(set(stretched.images)) == 10 and "mirrored" in str(stretched.images[3])
    listing.write_text(str(tmp_path / "absent.jpg"))
    with pytest.raises(UserError, match="lists 1 missing images"):
        calibration_set(listing)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no images found"):
        calibration_set(tmp_path / "empty")
    with pytest.raises(UserError, match="no such calibration folder"):
        calibration_set(tmp_path / "nowhere")


def test_fallback_is_marked_not_representative_and_leaves_the_evaluation_photos_out():
    if not shipped_photos():
        pytest.skip("no sample photos installed")
    fallback = calibration_set(None, 3)
    assert not fallback.representative and len(fallback.images) == 3
    assert fallback.describe() == {"source": "photos shipped with installed packages", "images": 3, "files": 3,
                                   "representative": False}
    many = calibration_set(None, 64)
    assert len(many.images) == 64 and not many.files & set(evaluation_photos())
    assert {p.name for p in evaluation_photos()} <= EVALUATION_PHOTOS


def test_a_crop_is_that_part_of_the_image_mirrored(tmp_path):
    from PIL import Image

    path = tmp_path / "halves.png"
    pixels = np.zeros((10, 20, 3), dtype=np.uint8)
    pixels[:, 10:] = 255  # left half black, right half white
    Image.fromarray(pixels).save(path)
    sample = ImageSample(path, (0.5, 0.0, 1.0, 1.0), mirror=False)
    assert np.asarray(sample.load()).min() == 255 and sample.load().size == (10, 10)
    mirrored = np.asarray(ImageSample(path, mirror=True).load())
    assert mirrored[0, 0].tolist() == [255, 255, 255] and mirrored[0, -1].tolist() == [0, 0, 0]


def test_batches_are_preprocessed_feed_dicts(images):
    spec = get_model("resnet50")
    batches = list(calibration_set(images, 3).batches(spec, batch_size=2))
    assert [b["input"].shape for b in batches] == [(2, 3, 224, 224), (1, 3, 224, 224)]
    assert all(b["input"].dtype == np.float32 for b in batches)
