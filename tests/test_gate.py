"""The accuracy gate: task measures against FP32, thresholds from the plan, the mixed-precision search, and what a
variant below its gate becomes (set aside with its report, or published marked)."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import trtrepo
from trtrepo.accuracy.evidence import Interval, images_needed
from trtrepo.accuracy.measures import GateThresholds, task_measures
from trtrepo.accuracy.metrics import coco_map, coco_map50
from trtrepo.build.calibration import calibration_set
from trtrepo.build.gate import GatePlan, GateReport, build_within_gate, evaluation_set, skip_reason
from trtrepo.build.plan import load_plan
from trtrepo.engines.base import BuildInputs, Engine
from trtrepo.errors import UserError
from trtrepo.format.config import BELOW_GATE_PARAMETER
from trtrepo.format.validate import repository_warnings
from trtrepo.models import get_model


def test_classifier_agreement_counts_changed_top1_and_top5():
    reference = np.eye(4, 10, dtype=np.float32) * 5  # samples 0..3 are classes 0..3
    candidate = reference.copy()
    candidate[3, 9] = 6.0  # sample 3: class 9 now wins, class 3 is second
    measures = task_measures(get_model("resnet50"), [{"logits": reference}], [{"logits": candidate}])
    assert measures == {"top1_agreement": 0.75, "top5_holds_top1": 1.0}


def yolo_rows(boxes: list[tuple[float, float, float, float, int, float]]) -> np.ndarray:
    """Raw YOLO output rows (cx, cy, w, h, objectness, classes) for boxes (x1, y1, x2, y2, class, score)."""
    spec = get_model("yolov3_tiny")
    rows = np.zeros((1, spec.outputs[0].shape[0], spec.outputs[0].shape[1]), dtype=np.float32)
    for i, (x1, y1, x2, y2, label, score) in enumerate(boxes):
        rows[0, i, :4] = ((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1)
        rows[0, i, 4], rows[0, i, 5 + label] = score, 1.0
    return rows


def test_detector_measures_find_fp32s_boxes_by_class_and_iou():
    spec = get_model("yolov3_tiny")
    reference = yolo_rows([(10, 10, 110, 110, 16, 0.9), (200, 200, 300, 260, 2, 0.8)])
    same = task_measures(spec, [{"detections": reference}], [{"detections": reference}])
    assert same["box_recall"] == 1.0 and same["map50"] == pytest.approx(1.0) and same["reference_boxes"] == 2
    moved = yolo_rows([(12, 12, 112, 112, 16, 0.9), (200, 200, 300, 260, 7, 0.8)])  # dog kept, car called truck
    changed = task_measures(spec, [{"detections": reference}], [{"detections": moved}])
    assert changed["box_recall"] == 0.5 and changed["map50"] < 0.6


def test_coco_map_of_identical_and_empty_sets():
    boxes = [[(0, (0.0, 0.0, 10.0, 10.0))], [(1, (5.0, 5.0, 50.0, 40.0))]]
    assert coco_map(boxes, [[(c, b, 0.9) for c, b in image] for image in boxes]) == pytest.approx((1.0, 1.0))
    assert coco_map([[], []], [[], []]) == (1.0, 1.0)
    assert coco_map(boxes, [[], []]) == (0.0, 0.0)


def test_map_at_50_alone_is_coco_maps_second_figure():
    """The bootstrap's cheap evaluation (IoU .5 only) gives what the full one gives at .5, misses and false
    positives included."""
    truth = [[(0, (0.0, 0.0, 10.0, 10.0)), (1, (20.0, 20.0, 60.0, 50.0))], [(1, (5.0, 5.0, 50.0, 40.0))], []]
    found = [[(0, (1.0, 1.0, 10.0, 11.0), 0.9), (1, (40.0, 40.0, 90.0, 80.0), 0.8)], [(1, (6.0, 4.0, 52.0, 40.0), 0.7),
             (0, (0.0, 0.0, 30.0, 30.0), 0.6)], [(2, (3.0, 3.0, 9.0, 9.0), 0.5)]]
    full = coco_map(truth, found)[1]
    assert 0.2 < full < 0.95 and coco_map50(truth, found) == pytest.approx(full)
    assert coco_map50([[], []], [[], []]) == 1.0 and coco_map50(truth, [[], [], []]) == 0.0


def test_report_passes_only_when_every_gated_measure_does():
    report = GateReport({"box_recall": 0.97, "map50": 0.93, "map50_95": 0.7}, {"box_recall": 0.95, "map50": 0.95}, {})
    assert not report.passed and report.shortfall() == pytest.approx(0.02)
    assert report.line() == "box_recall 0.970 >= 0.95, map50 0.930 < 0.95"
    thin = replace(report, intervals={"box_recall": asdict(Interval(0.91, 0.99, 40, "wilson"))})
    assert thin.line().startswith("box_recall 0.970 >= 0.95 (point estimate; 95% 0.910-0.990 over 40 images, wilson), map50")
    assert GateReport({"top1_agreement": 1.0}, {"top1_agreement": 0.99}, {}).passed


def test_an_interval_over_enough_images_decides_by_its_lower_end():
    def report(measure: float, low: float, images: int) -> GateReport:
        return GateReport({"top1_agreement": measure}, {"top1_agreement": 0.97}, {},
                          intervals={"top1_agreement": asdict(Interval(low, 0.999, images, "wilson"))})

    below = report(0.975, 0.955, 400)  # the point clears 0.97, the lower end does not: refused
    assert not below.passed and below.shortfall() == pytest.approx(0.015)
    assert below.line() == "top1_agreement 0.975 (95% 0.955-0.999 over 400 images, wilson): lower end < 0.97"
    assert report(0.99, 0.975, 400).passed and report(0.99, 0.975, 400).thin_evidence() is None
    few = report(0.975, 0.676, images_needed(0.97) - 1)  # no score could clear it: the point decides, said so
    assert few.passed and few.thin_evidence().startswith("top1_agreement was decided on its point estimate")


class SearchEngine(Engine):
    """An engine whose build records which nodes stay in float; the judge passes with ``needed`` of them."""

    name, precisions, artifact = "search", ("int8",), "model.bin"

    def __init__(self, candidates: int) -> None:
        self.candidates = [f"node{i}" for i in range(candidates)]

    def build(self, inputs: BuildInputs, precision: str, out_file: Path) -> None:
        out_file.write_text(",".join(inputs.keep_float))

    def float_candidates(self, inputs: BuildInputs, precision: str, artifact: Path) -> list[str]:
        return self.candidates

    def load(self, *args: object) -> None:
        raise AssertionError("not called")


@pytest.mark.parametrize("needed, expected_trials", [(0, 1), (1, 2), (3, 5), (5, 6)])
def test_mixed_precision_keeps_the_fewest_costliest_nodes_in_float(tmp_path, needed, expected_trials):
    engine = SearchEngine(6)
    inputs = BuildInputs(get_model("resnet50"), None, tmp_path / "m.onnx", 8, (8,), None, lambda _: None)
    artifact = tmp_path / "model.bin"

    def judge(built: Path) -> GateReport:
        kept = [n for n in built.read_text().split(",") if n]
        return GateReport({"top1_agreement": 0.9 + 0.1 * (len(kept) >= needed)}, {"top1_agreement": 0.99}, {})

    report = build_within_gate(engine, inputs, "int8", artifact, judge, lambda _: None, "v")
    assert report.passed and report.trials == expected_trials
    assert report.kept_in_float == engine.candidates[:needed]
    assert artifact.read_text() == ",".join(engine.candidates[:needed])  # the passing build is what stays


def test_when_nothing_passes_the_closest_build_stays_with_its_report(tmp_path):
    engine = SearchEngine(4)
    inputs = BuildInputs(get_model("resnet50"), None, tmp_path / "m.onnx", 8, (8,), None, lambda _: None)
    scores = {0: 0.90, 1: 0.97, 2: 0.93, 4: 0.95}  # keeping 1 node comes closest

    def judge(built: Path) -> GateReport:
        kept = [n for n in built.read_text().split(",") if n]
        return GateReport({"top1_agreement": scores[len(kept)]}, {"top1_agreement": 0.99}, {})

    report = build_within_gate(engine, inputs, "int8", tmp_path / "model.bin", judge, lambda _: None, "v")
    assert not report.passed and report.measures["top1_agreement"] == 0.97 and report.kept_in_float == ["node0"]
    assert (tmp_path / "model.bin").read_text() == "node0" and report.trials == 4


def test_plan_thresholds_defaults_and_per_model(tmp_path):
    plan_file = tmp_path / "repo.toml"
    plan_file.write_text('[gate]\ntop1_agreement = 0.98\nmap50 = 1\neval_images = 20\n\n[gate.yolov3_tiny]\nbox_recall = 0.9\n\n'
                         '[[variant]]\nmodel = "yolov3_tiny"\nengine = "onnxruntime"\nprecision = "int8"\n')
    gate = load_plan(plan_file, backends="python").gate
    assert gate.defaults == GateThresholds(top1_agreement=0.98, map50=1.0) and gate.eval_images == 20
    assert gate.thresholds_for("yolov3_tiny") == GateThresholds(top1_agreement=0.98, box_recall=0.9, map50=1.0)
    assert gate.thresholds_for("resnet50") == gate.defaults and not gate.allow_below


@pytest.mark.parametrize("table, message", [
    ("[gate]\ntop1_agreement = 1.5\n", "top1_agreement must be a share between 0 and 1, got 1.5"),
    ("[gate]\ntop1 = 0.9\n", "unknown keys top1"),
    ("[gate]\nmap50 = \"high\"\n", "map50 must be a number"),
    ("[gate.nomodel]\nmap50 = 0.9\n", "unknown model"),
    ("[gate.resnet50]\nrecall = 0.9\n", "[gate.resnet50]: unknown keys recall"),
    ("[gate]\neval_images = 0\n", "eval_images must be at least 1"),
])
def test_bad_gate_tables_are_one_line_errors(tmp_path, table, message):
    plan_file = tmp_path / "repo.toml"
    plan_file.write_text(table)
    with pytest.raises(UserError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_plan(plan_file, backends="python")


def test_evaluation_never_uses_a_calibration_image(images, tmp_path):
    calibration = calibration_set(images, 3)
    with pytest.raises(UserError, match="no image that calibration did not use"):
        evaluation_set(images, calibration, 10)
    extra = tmp_path / "eval"
    shutil.copytree(images, extra)  # copies under other paths are the same images by content
    with pytest.raises(UserError, match="no image that calibration did not use"):
        evaluation_set(extra, calibration, 10)
    Image.fromarray(np.full((64, 48, 3), 90, dtype=np.uint8)).save(extra / "new.png")
    chosen = evaluation_set(extra, calibration, 10)
    assert len(chosen.samples) == 10 and {s.path.name for s in chosen.samples} == {"new.png"}
    assert chosen.source.endswith("(3 left out: calibration used them)")
    assert chosen.describe()["images"] == 1  # ten crops and mirror images of one photo are one image of evidence


def test_what_the_gate_does_not_judge():
    assert skip_reason(get_model("resnet50"), "pytorch", "fp32", "pretrained") == "the FP32 reference itself"
    assert "random weights" in skip_reason(get_model("resnet50"), "onnxruntime", "int8", "random")
    assert "judged whole, as ctpn" in skip_reason(get_model("ctpn_backbone"), "onnxruntime", "fp32", "model.pt")
    assert skip_reason(get_model("yolov3_tiny"), "onnxruntime", "int8", "pretrained") is None


def test_built_variants_carry_their_gate_result(small_repo):
    for variant in ("efficientnet_lite0_onnxruntime_fp32", "efficientnet_lite0_onnxruntime_int8", "yolov3_tiny_onnxruntime_int8"):
        manifest = json.loads((small_repo / variant / "manifest.json").read_text())
        result = manifest["gate_result"]
        assert set(result["thresholds"]) <= {"top1_agreement", "box_recall", "map50"} and result["measures"]
        assert result["evaluation"]["samples"] >= 50 and "kept out of calibration" in result["evaluation"]["source"]
        # Every gated measure with its interval over the distinct photos, which are listed by content hash.
        assert set(result["intervals"]) == set(result["thresholds"])
        images = result["evaluation"]["images"]
        assert images == len({entry["sha256"] for entry in result["evaluation"]["listed"]}) < result["evaluation"]["samples"]
        for name, interval in result["intervals"].items():
            assert interval["images"] == images and interval["low"] <= result["measures"][name] <= interval["high"]
    detector = json.loads((small_repo / "yolov3_tiny_onnxruntime_int8" / "manifest.json").read_text())["gate_result"]
    judged = detector["evaluation"]  # only the samples on which FP32 finds a box: elsewhere recall counts nothing
    assert judged["source"].endswith(f"judged on the {judged['samples']} of 112 on which FP32 finds a box")
    reference = json.loads((small_repo / "efficientnet_lite0_pytorch_fp32" / "manifest.json").read_text())
    assert reference["gate_result"] is None and reference["gate"] is None
    fp32 = json.loads((small_repo / "efficientnet_lite0_onnxruntime_fp32" / "manifest.json").read_text())
    assert fp32["gate_result"]["measures"]["top1_agreement"] == 1.0 and fp32["gate_result"]["passed"]


def test_a_bad_int8_build_is_rejected_and_the_previous_variant_kept(small_repo, tmp_path):
    """Calibrated on one black image, INT8 falls below its gate: one line, exit 2, the old variant serves on."""
    repo = tmp_path / "model_repository"
    repo.mkdir()
    name = "efficientnet_lite0_onnxruntime_int8"
    shutil.copytree(small_repo / name, repo / name)
    before = (repo / name / "manifest.json").read_text()
    black = tmp_path / "black"
    black.mkdir()
    Image.new("RGB", (256, 256)).save(black / "black.png")
    result = trtrepo("build", "efficientnet_lite0", "--engine", "onnxruntime", "--precision", "int8", "--weights", "pretrained",
                     "--output", str(repo), "--backends", "python", "--calib-dir", str(black), "--calib-images", "1")
    assert result.returncode == 2, result.stderr  # a user error: the one-line kind
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {name}: below its accuracy gate (top1_agreement") and "Traceback" not in result.stderr
    assert (repo / name / "manifest.json").read_text() == before
    aside = tmp_path / "model_repository.rejected" / name
    report = json.loads((aside / "gate.json").read_text())
    assert not report["passed"] and report["measures"]["top1_agreement"] < 0.99 and (aside / "1" / "model.onnx").is_file()


def test_a_variant_published_below_its_gate_is_marked_and_validate_warns(small_repo, tmp_path):
    repo = tmp_path / "model_repository"
    shutil.copytree(small_repo / "efficientnet_lite0_onnxruntime_fp32", repo / "efficientnet_lite0_onnxruntime_fp32")
    config = repo / "efficientnet_lite0_onnxruntime_fp32" / "config.pbtxt"
    config.write_text(config.read_text() + f'parameters {{ key: "{BELOW_GATE_PARAMETER}" value {{ string_value: "top1_agreement 0.900 < 0.99" }} }}\n')
    assert repository_warnings(repo) == ["efficientnet_lite0_onnxruntime_fp32: published below its accuracy gate (top1_agreement 0.900 < 0.99)"]
    result = trtrepo("validate", str(repo))
    assert result.returncode == 0 and "warning: efficientnet_lite0_onnxruntime_fp32: published below its accuracy gate" in result.stderr


def test_gate_plan_allows_below_only_when_asked():
    assert not GatePlan().allow_below
    assert load_plan(None, backends="python", allow_below_gate=True).gate.allow_below


def test_text_measure_is_f_against_fp32s_lines():
    """CTPN's gate: lines the variant finds against the lines FP32 finds (IoU >= 0.5 of their bounding boxes)."""
    from trtrepo.models.ctpn import CTPN, TextLine

    class Lines(CTPN):  # the post-processing replaced by lines given as they are
        def postprocess(self, outputs, top_k=100, **_):
            return [[TextLine(((x1, y1), (x2, y1), (x2, y2), (x1, y2)), 0.95) for x1, y1, x2, y2 in image]
                    for image in outputs["lines"]]

    spec = Lines()
    fp32 = [{"lines": [[(0, 0, 100, 20), (0, 40, 100, 60)]]}]
    one_moved = [{"lines": [[(0, 0, 100, 20), (0, 70, 100, 90)]]}]
    assert task_measures(spec, fp32, fp32)["text_f"] == 1.0
    assert task_measures(spec, fp32, one_moved) == {"text_f": 0.5, "reference_lines": 2.0}
    assert task_measures(spec, [{"lines": [[]]}], [{"lines": [[]]}])["text_f"] == 1.0
