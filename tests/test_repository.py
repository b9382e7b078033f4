"""Repository builds: per-model weights, manifests, rebuilding only what changed, skipping what cannot run here."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest

from trtrepo.build.plan import RepoPlan

from trtrepo.build.repository import build_repository
from trtrepo.engines import get_engine
from trtrepo.errors import UserError
from trtrepo.format.config import ServingOptions, Variant
from trtrepo.format.validate import validate_repository

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
    assert model_dir.stat().st_mode & 0o777 == 0o755  # readable by a server running as another user
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


def test_up_to_date_means_the_files_are_there_too(tmp_path):
    """A deleted or damaged artifact is rebuilt, though the manifest still matches."""
    variant = Variant("efficientnet_lite0", "onnxruntime", "fp32", OPTIONS)
    plan = plan_for(tmp_path, variant)
    build_repository(plan)
    artifact = tmp_path / variant.name / "1" / "model.onnx"
    manifest = json.loads((tmp_path / variant.name / "manifest.json").read_text())
    assert set(manifest["files"]) == {"1/model.onnx", "labels.txt"}
    artifact.unlink()
    assert [r.status for r in build_repository(plan)] == ["built"] and artifact.stat().st_size > 0
    with artifact.open("r+b") as file:
        file.write(b"\0\0\0\0")  # same size, other bytes
    assert [r.status for r in build_repository(plan)] == ["built"]
    assert [r.status for r in build_repository(plan)] == ["up to date"]


def test_a_failed_rebuild_keeps_the_previous_variant_and_the_others_are_built(tmp_path):
    """INT8 calibrated on files that are not images fails; the INT8 variant built before stays, FP32 still builds."""
    good = Variant("efficientnet_lite0", "onnxruntime", "int8", OPTIONS)
    plan = RepoPlan(tmp_path / "repo", "random", frozenset({"python", "onnxruntime"}), (good,), calib_images=2)
    build_repository(plan)
    before = {p.name: p.read_bytes() for p in (tmp_path / "repo" / good.name).rglob("*") if p.is_file()}
    bad_images = tmp_path / "calib"
    bad_images.mkdir()
    for index in range(2):
        (bad_images / f"{index}.jpg").write_text("not a jpeg")
    fp32 = Variant("efficientnet_lite0", "onnxruntime", "fp32", OPTIONS)
    failing = RepoPlan(tmp_path / "repo", "random", plan.backends, (good, fp32), calib_dir=bad_images, calib_images=2)
    results = {r.variant: r for r in build_repository(failing, force=True)}
    assert results[good.name].status == "failed" and "not a readable image" in results[good.name].detail
    assert results[fp32.name].status == "built"
    after = {p.name: p.read_bytes() for p in (tmp_path / "repo" / good.name).rglob("*") if p.is_file()}
    assert after == before
    assert not (tmp_path / ".repo.trtrepo-staging").exists()
    assert [r.status for r in build_repository(plan)] == ["up to date"]


def test_a_second_build_into_the_same_repository_is_refused(tmp_path):
    import fcntl

    from trtrepo.build.publish import LOCK_FILE

    (tmp_path / "repo").mkdir()
    with (tmp_path / "repo" / LOCK_FILE).open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(UserError, match="another trtrepo build is writing to this repository"):
            build_repository(plan_for(tmp_path / "repo", Variant("efficientnet_lite0", "onnxruntime", "fp32", OPTIONS)))


def test_a_build_stopped_between_its_two_renames_is_undone(tmp_path, monkeypatch):
    """A build killed (SIGKILL: no finally runs) after publish parked the old variant, before the new one went in:
    the next build puts the old variant back under its own name and finds it up to date."""
    from trtrepo.build import repository
    variant = Variant("efficientnet_lite0", "onnxruntime", "fp32", OPTIONS)
    plan = plan_for(tmp_path / "repo", variant)
    build_repository(plan)
    staging = repository.staging_dir(plan.output)
    staging.mkdir()
    staged = Path(tempfile.mkdtemp(prefix=f"{variant.name}.", dir=staging))  # as build_variant stages a build
    rename = os.rename

    def killed_at_the_second(source, destination):
        if Path(source) == staged:
            raise SystemExit("killed")  # stands for the SIGKILL: nothing after the first rename runs
        rename(source, destination)

    monkeypatch.setattr(os, "rename", killed_at_the_second)
    with pytest.raises(SystemExit):
        repository.publish(staged, plan.output / variant.name)
    monkeypatch.undo()
    assert not (plan.output / variant.name).exists()
    messages = []
    assert [r.status for r in build_repository(plan, log=messages.append)] == ["up to date"]
    assert f"{variant.name}: restored the previous build" in messages[0]
    assert sorted(p.name for p in plan.output.iterdir() if not p.name.startswith(".")) == [variant.name]
    assert validate_repository(plan.output) == [] and not staging.exists()


def test_trash_of_a_finished_publish_is_never_restored(tmp_path):
    """Killed while deleting the old folder (after both renames): the new variant stays, the trash goes."""
    from trtrepo.build.publish import recover_staging, staging_dir

    repo = tmp_path / "repo"
    (repo / "resnet50_onnxruntime_fp32").mkdir(parents=True)
    (repo / "resnet50_onnxruntime_fp32" / "config.pbtxt").write_text("new")
    half_deleted = staging_dir(repo) / "resnet50_onnxruntime_fp32.old"
    (half_deleted / "1").mkdir(parents=True)
    half_built = staging_dir(repo) / "resnet50_pytorch_fp32.x1y2"  # mkdtemp's name for a build in progress
    half_built.mkdir()
    recover_staging(repo, print)
    assert (repo / "resnet50_onnxruntime_fp32" / "config.pbtxt").read_text() == "new"
    assert not half_deleted.exists() and not half_built.exists()


def test_asking_for_ctpn_brings_the_split_ensemble_and_its_parts():
    from conftest import ROOT
    from trtrepo.build.plan import load_plan

    plan = load_plan(ROOT / "repo.toml", ["ctpn"], backends="python")
    models = {v.model for v in plan.variants}
    assert models == {"ctpn", "ctpn_backbone", "ctpn_head"}
    assert [name for name, _ in plan.ensembles] == ["ctpn_split"]
    assert {v.model for v in load_plan(ROOT / "repo.toml", ["resnet50"], backends="python").variants} == {"resnet50"}


def test_outside_a_checkout_the_plan_is_the_one_the_package_ships(tmp_path, monkeypatch):
    """Run where no repo.toml is, `trtrepo repo` builds what the project's repo.toml says (pipelines and INT8 included)
    and says which plan it read."""
    from trtrepo.build.plan import PACKAGED_PLAN, load_plan

    monkeypatch.chdir(tmp_path)
    plan = load_plan(None, ["efficientnet_lite0"], None, None, "python")
    assert plan.plan_file == PACKAGED_PLAN and PACKAGED_PLAN.read_text() == (Path(__file__).parents[1] / "repo.toml").read_text()
    assert "efficientnet_lite0_onnxruntime_int8" in [v.name for v in plan.variants]
    assert [p.name for p in plan.pipelines] == ["efficientnet_lite0"]
