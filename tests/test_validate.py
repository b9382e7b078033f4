"""`trtrepo validate`: accepts what `trtrepo repo` generates, rejects broken repositories line by line."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from conftest import trtrepo
from trtrepo.format.validate import validate_repository


def link_weights_copy_the_rest(source: str, target: str) -> None:
    """Weights are hard-linked, not copied: eight whole copies of the test repository filled CI's disk. The
    breakages below only edit text files (copied) or unlink weights (which leaves the shared original)."""
    if source.endswith((".onnx", ".pt")):
        os.link(source, target)
    else:
        shutil.copy2(source, target)


@pytest.fixture
def repo_copy(small_repo: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "repo"
    shutil.copytree(small_repo, copy, copy_function=link_weights_copy_the_rest)
    return copy


def test_generated_repository_is_valid(small_repo):
    assert validate_repository(small_repo) == []
    result = trtrepo("validate", str(small_repo))
    assert result.returncode == 0 and result.stdout.strip().endswith(": ok")


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


@pytest.mark.parametrize("breakage, expected", [
    (lambda r: edit(r / "resnet50_onnxruntime_fp32/config.pbtxt", "max_batch_size: 4", "max_batch_size: four"),
     "resnet50_onnxruntime_fp32/config.pbtxt:"),
    (lambda r: (r / "resnet50_pytorch_fp32/1/model.pt").unlink(), "resnet50_pytorch_fp32/1/model.pt: missing"),
    (lambda r: (r / "resnet50_pytorch_fp32/1/model.py").unlink(), "resnet50_pytorch_fp32/1/model.py: missing"),
    (lambda r: shutil.rmtree(r / "resnet50_onnxruntime_fp32/1"), "no numeric version folder"),
    (lambda r: (r / "resnet50_onnxruntime_fp32/config.pbtxt").unlink(), "resnet50_onnxruntime_fp32/config.pbtxt: missing"),
    (lambda r: edit(r / "resnet50_onnxruntime_fp32/config.pbtxt", "preferred_batch_size: 4", "preferred_batch_size: 64"),
     "preferred batch size 64 lies outside"),
    (lambda r: edit(r / "resnet50_onnxruntime_fp32/config.pbtxt", 'name: "resnet50_onnxruntime_fp32"', 'name: "other"'),
     "differs from its folder"),
    (lambda r: edit(r / "resnet50_onnxruntime_fp32/config.pbtxt", 'backend: "python"', ""), "neither platform nor backend"),
    (lambda r: shutil.rmtree(r / "yolov3_tiny_onnxruntime_fp32"),
     "yolov3_tiny/config.pbtxt: its variant yolov3_tiny_onnxruntime_fp32 is not in the repository"),
    (lambda r: edit(r / "yolov3_tiny/config.pbtxt", "max_batch_size: 4", "max_batch_size: 8"),
     "yolov3_tiny/config.pbtxt: max_batch_size 8 is above its variant yolov3_tiny_onnxruntime_fp32's 4"),
])
def test_broken_repository_is_rejected_with_one_line_per_problem(repo_copy, breakage, expected):
    breakage(repo_copy)
    problems = validate_repository(repo_copy)
    assert len(problems) == 1 and expected in problems[0], problems
    result = trtrepo("validate", str(repo_copy))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [f"error: {problems[0]}"] and not result.stdout


def test_missing_or_empty_repository(tmp_path):
    assert "not a directory" in validate_repository(tmp_path / "absent")[0]
    assert "no model folders" in validate_repository(tmp_path)[0]
