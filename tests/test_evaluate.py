"""Accuracy evaluation: labelled data loading (unit) and the Table-3-shaped study through Triton (integration)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from conftest import PHOTO_LABELS, trtrepo
from trtrepo.accuracy.evaluate import evaluate, labelled_images
from trtrepo.errors import UserError
from trtrepo.models.imagenet import imagenet_class_names

LITE0 = ["efficientnet_lite0_pytorch_fp32", "efficientnet_lite0_onnxruntime_fp32", "efficientnet_lite0_onnxruntime_int8"]


def test_class_folders_with_underscores(images, tmp_path):
    for label in ("bald_eagle", "espresso"):
        (tmp_path / label).mkdir()
        (tmp_path / label / "a.jpg").symlink_to(images / "noise.jpg")
    paths, labels = labelled_images(tmp_path, None, imagenet_class_names())
    assert [p.parent.name for p in paths] == ["bald_eagle", "espresso"]
    assert labels.tolist() == [imagenet_class_names().index("bald eagle"), 967]


def test_labels_file_takes_names_and_indices(images, tmp_path):
    labels_file = tmp_path / "labels.txt"
    labels_file.write_text("# path label\nnoise.jpg Egyptian cat\ngradient.png 967\n")
    paths, labels = labelled_images(images, labels_file, imagenet_class_names())
    assert [p.name for p in paths] == ["noise.jpg", "gradient.png"]
    assert labels.tolist() == [imagenet_class_names().index("Egyptian cat"), 967]


@pytest.mark.parametrize("content, message", [
    ("noise.jpg unicorn\n", "labels.txt:1: 'unicorn' is neither a class name nor an index"),
    ("noise.jpg\n", "labels.txt:1: expected 'path label'"),
    ("noise.jpg 1000\n", "is neither a class name nor an index below 1000"),
])
def test_bad_labels_are_one_line_errors(images, tmp_path, content, message):
    (tmp_path / "labels.txt").write_text(content)
    with pytest.raises(UserError, match=message):
        labelled_images(images, tmp_path / "labels.txt", imagenet_class_names())


def test_missing_data_folder(tmp_path):
    with pytest.raises(UserError, match="no such data folder"):
        labelled_images(tmp_path / "absent", None, imagenet_class_names())


@pytest.mark.integration
def test_accuracy_study_through_triton_on_real_photos(server, labelled_photos):
    from trtrepo.models import get_model

    spec = get_model("efficientnet_lite0")
    paths, labels = labelled_images(labelled_photos, None, spec.class_names)
    rows, reference = evaluate(spec, server.grpc_url, "grpc", LITE0, paths, labels, batch_size=2)
    by_name = {r.variant: r for r in rows}
    assert reference == "efficientnet_lite0_pytorch_fp32"
    assert by_name[reference].speedup == pytest.approx(1.0) and by_name[reference].agreement == 1.0
    # Real weights on real photos: every labelled class is in the top 5, espresso is top-1.
    assert by_name[reference].top5 == 1.0 and by_name[reference].top1 >= 1 / len(PHOTO_LABELS)
    assert by_name["efficientnet_lite0_onnxruntime_fp32"].agreement == 1.0
    int8 = by_name["efficientnet_lite0_onnxruntime_int8"]
    # INT8 passed its build-time gate; on these four photos it may part with FP32 on one at most.
    assert int8.agreement >= 0.75 and int8.top5 >= 0.75


def labelled_pool(photos: Path, folder: Path) -> Path:
    """A fetched photo pool in miniature: the labelled photos as foolbox's ImageNet ones (imagenet_<n>_<class>.jpg)."""
    from trtrepo.photopool import MANIFEST, MANIFEST_COLUMNS

    rows = [MANIFEST_COLUMNS]
    (folder / "eval").mkdir(parents=True)
    for index, photo in enumerate(sorted(photos.glob("*/*"))):
        label = imagenet_class_names().index(PHOTO_LABELS[photo.name])
        (folder / "eval" / photo.name).symlink_to(photo.resolve())
        rows.append((photo.name, "eval", f"{index:064d}", "foolbox", "3.3.4", "in-context",
                     f"foolbox/data/imagenet_{index:02d}_{label}.jpg", "MIT"))
    rows.append(("kitten.jpg", "eval", "f" * 64, "kphotoalbum", "5.9.1-1", "in-context", "usr/share/kitten.jpg", "GPL"))
    (folder / "eval" / "kitten.jpg").symlink_to(next(photos.glob("*/*")).resolve())
    (folder / MANIFEST).write_text("".join("\t".join(row) + "\n" for row in rows))
    return folder


@pytest.mark.integration
def test_eval_command_writes_table_csv_and_chart(server, labelled_photos, tmp_path, monkeypatch):
    """Without --data, an ImageNet classifier is judged on the photo pool's labelled photos, top-1 with its interval."""
    monkeypatch.setenv("TRTREPO_PHOTO_POOL", str(labelled_pool(labelled_photos, tmp_path / "pool")))
    result = trtrepo("eval", "efficientnet_lite0", "--url", server.grpc_url,
                     "--model-repository", str(server.repository), "--output", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "photo pool's 4 ImageNet photos labelled by their package" in result.stdout + result.stderr
    assert "| efficientnet_lite0_onnxruntime_int8 |" in result.stdout and "top-1 95% " in result.stdout
    rows = list(csv.DictReader((tmp_path / "eval.csv").open()))
    assert {r["variant"] for r in rows} == set(LITE0)
    assert all(0 <= float(r["top1"]) <= 1 and float(r["seconds_per_batch"]) > 0 for r in rows)
    assert (tmp_path / "eval.png").read_bytes()[:4] == b"\x89PNG"
    assert np.isclose(sum(float(r["speedup"]) == 1.0 for r in rows), 1)
