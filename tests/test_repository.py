"""Repository builds: per-model weights, manifests, rebuilding only what changed, skipping what cannot run here."""

from __future__ import annotations

import json

import pytest

from trtrepo.config import ServingOptions, Variant
from trtrepo.engines import get_engine
from trtrepo.errors import UserError
from trtrepo.repository import RepoPlan, build_repository

OPTIONS = ServingOptions(max_batch_size=2, preferred_batch_sizes=(2,), warmup=False)


def plan_for(output, *variants: Variant, weights: str = "random") -> RepoPlan:
    return RepoPlan(output, weights, frozenset({"python", "onnxruntime"}), variants)


def test_weights_per_model():
    plan = plan_for(None, weights="resnet50=random,efficientnet_lite0=imagenet")
    assert plan.weights_for("resnet50") == "random" and plan.weights_for("efficientnet_lite0") == "imagenet"
    assert plan_for(None, weights="imagenet").weights_for("resnet50") == "imagenet"
    with pytest.raises(UserError, match="names no weights for yolov3"):
        plan.weights_for("yolov3")


def test_manifest_records_inputs_and_only_changes_rebuild(tmp_path):
    variant = Variant("efficientnet_lite0", "onnxruntime", "fp32", OPTIONS)
    plan = plan_for(tmp_path, variant)
    assert [r.status for r in build_repository(plan)] == ["built"]
    model_dir = tmp_path / variant.name
    manifest = json.loads((model_dir / "manifest.json").read_text())
    assert manifest["weights"]["source"] == "random" and len(manifest["weights"]["sha256"]) == 64
    assert manifest["native_backend"] is True and manifest["versions"]["onnxruntime"]
    assert "platform: \"onnxruntime_onnx\"" in (model_dir / "config.pbtxt").read_text()
    assert [r.status for r in build_repository(plan)] == ["up to date"]  # seeded random weights: same digest
    changed = plan_for(tmp_path, Variant(variant.model, variant.engine, variant.precision, OPTIONS.updated(instances=2)))
    assert [r.status for r in build_repository(changed)] == ["built"]
    assert [r.status for r in build_repository(changed, force=True)] == ["built"]


def test_variants_this_machine_cannot_build_are_skipped_with_the_reason(tmp_path):
    reason = get_engine("tensorrt").unavailable("fp16")
    if reason is None:
        pytest.skip("TensorRT and a GPU are present: nothing is skipped")
    results = build_repository(plan_for(tmp_path, Variant("resnet50", "tensorrt", "fp16", OPTIONS)))
    assert [(r.status, r.detail) for r in results] == [("skipped", reason)]
    assert not (tmp_path / "resnet50_tensorrt_fp16").exists()
