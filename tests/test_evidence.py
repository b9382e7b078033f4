"""How much evidence a gate measure rests on (accuracy.evidence): Wilson's and the bootstrap's intervals against
known values, distinct images by content, and a verdict that says when its interval reaches below the threshold."""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
import pytest
from PIL import Image

from trtrepo.accuracy.evidence import Interval, bootstrap, groups_of, images_needed, wilson
from trtrepo.accuracy.measures import measure_intervals
from trtrepo.build.gate import EvaluationSet, GateReport
from trtrepo.imagesets import calibration_photos, content_hash, evaluation_photos, with_crops
from trtrepo.models import get_model


def test_wilson_matches_published_values():
    # Newcombe (1998), Statistics in Medicine 17:857, table I: 81/263 -> 0.2553-0.3662; 0/10 -> 0-0.2775; 1/29 ->
    # 0.0061-0.1718 (method 3, the score interval without continuity correction).
    assert wilson(81, 263) == pytest.approx((0.2553, 0.3662), abs=5e-5)
    assert wilson(0, 10) == pytest.approx((0.0, 0.2775), abs=5e-5)
    assert wilson(1, 29) == pytest.approx((0.0061, 0.1718), abs=5e-5)
    assert wilson(10, 10)[1] == pytest.approx(1.0) and wilson(10, 10)[0] == pytest.approx(1 - 0.2775, abs=5e-5)


def test_images_a_perfect_score_needs_for_its_lower_end_to_clear_a_threshold():
    for threshold in (0.99, 0.97, 0.95):
        n = images_needed(threshold)
        assert wilson(n, n)[0] >= threshold > wilson(n - 1, n - 1)[0]
    assert images_needed(0.99) == 381 and images_needed(0.95) == 73


def test_the_bootstrap_draws_whole_images():
    # Ten images, each of three samples that agree (1) or not (0) together: the interval is that of ten draws.
    groups = [[3 * i, 3 * i + 1, 3 * i + 2] for i in range(10)]
    values = [1.0] * 24 + [0.0] * 6  # 8 images agree, 2 do not
    low, high = bootstrap(groups, lambda drawn: float(np.mean([values[i] for i in drawn])))
    assert low == pytest.approx(0.5, abs=0.05) and high == 1.0
    one_photo = bootstrap([[0, 1, 2]], lambda drawn: float(np.mean([values[i] for i in drawn])))
    assert one_photo == (1.0, 1.0)  # crops of one photo carry no spread: one image is no interval at all
    assert groups_of(["a", "b", "a", "c"]) == [[0, 2], [1], [3]]


def test_crops_of_photos_count_as_those_photos():
    spec = get_model("efficientnet_lite0")
    logits = np.eye(112, 1000, dtype=np.float32)
    changed = logits.copy()
    changed[:3, 999] = 2.0  # three of 112 samples change their top-1: 109/112, the gate's old figure
    keys = [f"photo{i % 8}" for i in range(112)]  # 8 photos and their crops
    (interval,) = measure_intervals(spec, [{"logits": logits}], [{"logits": changed}], keys).values()
    assert interval.images == 8 and interval.method == "wilson"
    assert interval.low == pytest.approx(wilson(109 / 112 * 8, 8)[0]) and interval.low < 0.7
    distinct = measure_intervals(spec, [{"logits": logits}], [{"logits": changed}], [str(i) for i in range(112)])
    assert distinct["top1_agreement"].low == pytest.approx(wilson(109, 112)[0]) and distinct["top1_agreement"].low > 0.92


def test_a_verdict_on_too_few_images_is_said_to_be_the_point_estimates():
    thin = GateReport({"top1_agreement": 0.973}, {"top1_agreement": 0.97}, {},
                      intervals={"top1_agreement": asdict(Interval(0.65, 0.99, 8, "wilson"))})
    assert thin.passed  # 8 images cannot put any lower end above 0.97: the point estimate decides
    assert thin.thin_evidence() == ("top1_agreement was decided on its point estimate: 8 distinct images cannot put a "
                                    "95% lower end above 0.97 (a perfect score needs 125); `trtrepo photos` fetches "
                                    "the photo pool, or give more with --eval-dir")
    enough = GateReport({"top1_agreement": 0.995}, {"top1_agreement": 0.99}, {},
                        intervals={"top1_agreement": asdict(Interval(0.991, 0.999, 900, "wilson"))})
    assert enough.thin_evidence() is None and enough.passed


def test_an_evaluation_set_lists_its_distinct_images_by_hash(tmp_path):
    photo = tmp_path / "a.png"
    Image.fromarray(np.full((40, 60, 3), 120, dtype=np.uint8)).save(photo)
    copy = tmp_path / "b.png"
    copy.write_bytes(photo.read_bytes())
    described = EvaluationSet(with_crops([photo, copy], 12), "test").describe()
    assert described["samples"] == 12 and described["files"] == 2 and described["images"] == 1
    assert {entry["sha256"] for entry in described["listed"]} == {content_hash(photo)}


def test_the_shipped_calibration_and_evaluation_photos_share_no_content():
    calibrated = {content_hash(p) for p in calibration_photos()}
    judged = {content_hash(p) for p in evaluation_photos()}
    assert judged and calibrated and not calibrated & judged


def test_the_speed_table_says_which_verdicts_rest_on_a_point_estimate(tmp_path):
    import json
    from types import SimpleNamespace

    from trtrepo.accuracy.evaluate import gate_table

    def variant(name: str, images: int) -> None:
        report = GateReport({"top1_agreement": 1.0}, {"top1_agreement": 0.99}, {},
                            intervals={"top1_agreement": asdict(Interval(*wilson(images, images), images, "wilson"))})
        (tmp_path / name).mkdir()
        (tmp_path / name / "manifest.json").write_text(json.dumps({"gate_result": report.as_dict()}))

    variant("efficientnet_lite0_onnxruntime_fp32", 400)
    variant("efficientnet_lite0_tensorflow_fp32", 8)
    points = [SimpleNamespace(variant=name, throughput=speed, serves=None) for name, speed in
              [("efficientnet_lite0_pytorch_fp32", 50.0), ("efficientnet_lite0_onnxruntime_fp32", 150.0),
               ("efficientnet_lite0_tensorflow_fp32", 60.0)]]
    rows = {line.split(" | ")[0].strip("| "): line for line in gate_table(points, tmp_path).splitlines() if line.startswith("| eff")}
    assert rows["efficientnet_lite0_onnxruntime_fp32"].endswith("| PASS |")  # 400 images: its lower end decided
    assert rows["efficientnet_lite0_tensorflow_fp32"].endswith("| PASS (point estimate: too few images for the interval to decide) |")
