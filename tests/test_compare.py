"""trtrepo compare: two variants of one model on the same inputs, per output and, for two ONNX models, per layer."""

from __future__ import annotations

import csv

from conftest import trtrepo
from trtrepo.accuracy.compare import compare_variants, first_growth
from trtrepo.imagesets import ImageSample


def test_compare_int8_against_fp32_writes_the_per_layer_report(small_repo, darknet_photos, tmp_path):
    out = tmp_path / "compare"
    result = trtrepo("compare", "efficientnet_lite0_onnxruntime_fp32", "efficientnet_lite0_onnxruntime_int8",
                     "--repo", str(small_repo), "--images", str(darknet_photos), "--count", "16", "--output", str(out))
    assert result.returncode == 0, result.stderr
    assert "| logits |" in result.stdout and "top1_agreement" in result.stdout and "The error first passes 1%" in result.stdout
    with (out / "compare_layers.csv").open() as handle:
        layers = list(csv.DictReader(handle))
    assert len(layers) > 30 and all(0 <= float(row["relative"]) < 1 for row in layers)
    depths = [int(row["depth"]) for row in layers]
    assert depths == sorted(depths)  # in the reference's order, where the error first grows reads top-down
    assert any(row["op"] in ("Conv", "FusedConv") and float(row["growth"]) > 0 for row in layers)
    assert (out / "compare.png").stat().st_size > 10_000 and (out / "compare_outputs.csv").is_file()


def test_compare_a_variant_with_itself_finds_no_error(small_repo, darknet_photos):
    images = [ImageSample(path) for path in sorted(darknet_photos.glob("*.jpg"))[:2]]
    same = compare_variants(small_repo, "yolov3_tiny_onnxruntime_fp32", "yolov3_tiny_onnxruntime_fp32", images)
    assert same.outputs[0].max_abs == 0 and same.measures["box_recall"] == 1.0 and first_growth(same.layers) is None


def test_compare_without_two_onnx_models_reports_outputs_only(small_repo, darknet_photos):
    images = [ImageSample(darknet_photos / "dog.jpg")]
    result = compare_variants(small_repo, "yolov3_tiny_pytorch_fp32", "yolov3_tiny_onnxruntime_int8", images)
    assert not result.layers and "needs two ONNX artifacts" in result.layers_note and result.outputs[0].cosine > 0.9


def test_compare_refuses_variants_of_different_models(small_repo):
    result = trtrepo("compare", "yolov3_tiny_onnxruntime_fp32", "efficientnet_lite0_onnxruntime_fp32", "--repo", str(small_repo))
    assert result.returncode == 2 and result.stderr.strip().splitlines()[-1].startswith("error: yolov3_tiny_onnxruntime_fp32 and")
    missing = trtrepo("compare", "resnet50_onnxruntime_fp32", "resnet50_onnxruntime_int8", "--repo", str(small_repo))
    assert missing.returncode == 2 and "no variant resnet50_onnxruntime_int8" in missing.stderr
