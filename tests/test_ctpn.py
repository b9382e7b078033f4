"""CTPN: the text-proposal connector on known proposals, anchor decoding, ICDAR ground truth and P/R/F,
and (integration) the whole model and the split ensemble on the real server with images of different sizes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from trtrepo.accuracy.icdar import read_icdar
from trtrepo.accuracy.metrics import match_boxes, precision_recall_f
from trtrepo.errors import UserError
from trtrepo.models import get_model
from trtrepo.models.ctpn import ANCHOR_HEIGHTS, K, connect, proposals
from trtrepo.specs import TEXT, load_image


#: A rendered page (text_pages.render_page) of several lines, 480x720 once resized: cheap to infer on this CPU.
PAGE_SEED, PAGE_SIZE = 2, (400, 600)


def column_boxes(columns, top, bottom, slope=0.0):
    return [[16 * c, top + slope * c, 16 * c + 15, bottom + slope * c] for c in columns]


def test_connector_joins_neighbouring_proposals_into_lines():
    boxes = column_boxes(range(0, 5), 10, 30) + column_boxes(range(10, 14), 100, 130, slope=1.0)
    boxes += column_boxes([20], 300, 320)  # alone: no line
    boxes += column_boxes([30, 31], 10, 30) + column_boxes([33], 10, 60)  # too different in height to join
    scores = np.full(len(boxes), 0.9, dtype=np.float32)
    lines = connect(np.array(boxes, dtype=np.float32), scores)
    assert [tuple(round(v) for v in line.bounds()) for line in lines] == [(0, 10, 79, 30), (480, 10, 511, 30), (160, 110, 223, 143)]
    sloped = lines[2]
    assert sloped.corners[0][1] == pytest.approx(109.53, abs=0.01) and sloped.corners[1][1] == pytest.approx(113.47, abs=0.01)


def test_connector_gap_limit_splits_lines():
    boxes = np.array(column_boxes([0, 1], 10, 30) + column_boxes([6, 7], 10, 30), dtype=np.float32)  # 64 px gap
    assert len(connect(boxes, np.full(4, 0.9, dtype=np.float32))) == 2


def test_anchor_decoding_follows_the_checkpoints_predictor():
    """An anchor of height h spans h + 1 rows; boxes are clipped to the input; proposals under 16 px are dropped."""
    text = np.zeros((8, 3, K), dtype=np.float32)
    vertical = np.zeros((8, 3, K, 2), dtype=np.float32)
    text[1, 2, 4] = 0.95
    vertical[1, 2, 4] = [1.0, np.log(2.0)]  # centre one anchor lower, twice as tall
    text[6, 0, 6] = 0.8  # 98 rows centred on row 103.5: clipped at the input's last row, 127
    text[3, 1, 0] = 0.9  # 12 rows: too low a proposal
    text[2, 2, 3] = 0.5  # not above the threshold
    boxes, scores = proposals(text, vertical, 0.5)
    height = ANCHOR_HEIGHTS[4] + 1
    centre = 16 + 7.5 + height
    assert scores.tolist() == [pytest.approx(0.95), pytest.approx(0.8)]
    assert boxes.tolist() == [pytest.approx([32, centre - height, 47, centre + height]), pytest.approx([0, 54.5, 15, 127])]


def test_network_shapes_and_split_equals_whole():
    whole = get_model("ctpn").build_network("random")
    image = torch.rand(1, 3, 96, 160)
    with torch.no_grad():
        scores, vertical = whole(image)
        split = whole.head(whole.backbone(image))
    assert scores.shape == (1, 6, 10, K) and vertical.shape == (1, 6, 10, K, 2)
    assert all(torch.equal(a, b) for a, b in zip((scores, vertical), split))


def test_the_trained_checkpoint_loads_under_this_networks_names_and_finds_no_text_in_a_cat():
    """vietcardocr's module names map onto ours, tensor for tensor; on a photo without text it finds no line."""
    from trtrepo.models.ctpn_weights import pretrained_checkpoint
    from trtrepo.imagesets import shipped_photos
    from trtrepo.models.weights import read_state_dict

    spec = get_model("ctpn")
    network = spec.build_network("pretrained")
    theirs = read_state_dict(pretrained_checkpoint("ctpn"), "ctpn")
    ours = network.state_dict()
    assert len(theirs) == len(ours) == 42
    assert torch.equal(ours["head.gru.weight_hh_l0_reverse"], theirs["brnn.weight_hh_l0_reverse"])
    assert torch.equal(ours["backbone.window.0.weight"], theirs["rpn.conv.weight"])
    cat = next(p for p in shipped_photos() if p.name == "chelsea.png")
    array, scale = spec.resize(load_image(cat))
    with torch.no_grad():
        scores, vertical = network(torch.from_numpy(array[None]))
    assert spec.postprocess({"scores": scores.numpy(), "vertical": vertical.numpy()}, scale=scale) == [[]]


def test_preprocessing_is_the_checkpoints_720_high_bgr_minus_its_means(tmp_path):
    spec = get_model("ctpn")
    for size, expected_scale, shape in [((400, 300), 2.4, (3, 720, 960)), ((2000, 500), 0.64, (3, 320, 1280))]:
        Image.new("RGB", size, (200, 110, 30)).save(tmp_path / "page.png")
        array, scale = spec.resize(load_image(tmp_path / "page.png"))
        assert scale == pytest.approx(expected_scale) and array.shape == shape
        assert array[:, 0, 0].tolist() == pytest.approx([30 - 123.68, 110 - 116.779, 200 - 103.939])


def test_icdar_ground_truth_and_prf(tmp_path):
    gt = tmp_path / "gt_img_1.txt"
    gt.write_text("\ufeff10,10,110,10,110,40,10,40,Hello\n200,10,300,12,300,42,200,40,###\n50 60 150 90 \"World\"\n")
    truth = read_icdar(gt)
    assert truth == [(10, 10, 110, 40), (50, 60, 150, 90)]
    found = [(12, 11, 108, 41), (52, 58, 140, 92), (400, 400, 450, 420)]
    assert match_boxes(found, truth) == 2
    assert precision_recall_f(2, len(found), len(truth)) == pytest.approx((2 / 3, 1.0, 0.8))
    assert match_boxes([(10, 10, 40, 40)], truth) == 0  # IoU 0.3
    gt.write_text("1,2,3\n")
    with pytest.raises(UserError, match="expected 4 or 8 coordinates"):
        read_icdar(gt)


@pytest.mark.integration
def test_whole_model_and_split_ensemble_agree_on_different_image_sizes(ctpn_server, tmp_path):
    from trtrepo.serving.client import InferenceClient

    spec = get_model("ctpn")
    rng = np.random.default_rng(3)
    for size in ((240, 360), (600, 150)):  # 720 high; 1280 wide at most
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(tmp_path / f"{size[0]}.png")
        array, _ = spec.resize(load_image(tmp_path / f"{size[0]}.png"))
        outputs = {name: InferenceClient(name, url=ctpn_server.grpc_url, protocol="grpc").infer({"input": array[None]})
                   for name in ("ctpn_pytorch_fp32", "ctpn_onnxruntime_fp32", "ctpn_split")}
        reference = outputs["ctpn_pytorch_fp32"]
        assert reference["scores"].shape == (1, array.shape[1] // 16, array.shape[2] // 16, K)
        for name in ("ctpn_onnxruntime_fp32", "ctpn_split"):
            for tensor in ("scores", "vertical"):
                assert np.allclose(outputs[name][tensor], reference[tensor], atol=1e-3), (name, tensor)


@pytest.mark.integration
def test_ctpn_client_and_text_evaluation_through_both_deployments(ctpn_server, tmp_path):
    """The trained network finds a rendered page's lines through tensors, the split ensemble and the pipeline."""
    from conftest import ROOT, in_process, run_cli
    from trtrepo.accuracy.evaluate import evaluate_text
    from trtrepo.text_pages import write_pages

    (page,) = write_pages(tmp_path, 1, first_seed=PAGE_SEED, size=PAGE_SIZE)
    truth = read_icdar(tmp_path / "gt" / f"gt_{page.stem}.txt")
    assert len(truth) >= 3
    answers = {}
    for model, extra in (("ctpn_onnxruntime_fp32", []), ("ctpn_split", []), ("ctpn", ["--server-side"])):
        args = ["--url", ctpn_server.http_url, "--model", model, "--json", *extra, str(page)]
        # As a user runs it once; in process for the other two (an interpreter and torch's import each otherwise).
        result = run_cli(str(ROOT / "clients" / "ctpn_client.py"), *args) if not answers else \
            in_process("trtrepo.clients.ctpn_client", args)
        assert result.returncode == 0, result.stderr
        answers[model] = json.loads(result.stdout)[0]["lines"]
    for model, lines in answers.items():
        found = [(min(x for x, _ in line["corners"]), min(y for _, y in line["corners"]),
                  max(x for x, _ in line["corners"]), max(y for _, y in line["corners"])) for line in lines]
        assert len(found) == len(truth) and match_boxes(found, truth) == len(truth), (model, found, truth)
    # The pipeline resizes and connects in the server as the client does on its side.
    assert answers["ctpn"] == answers["ctpn_onnxruntime_fp32"], answers
    # Bytes that are no image, empty bytes and a bomb header among pages sent at once: each fails alone (gRPC),
    # and over HTTP a threshold out of range is the request's own 400.
    from test_bad_input import _sent_at_once, pipeline_call, png_declaring

    page = page.read_bytes()
    (tmp_path / "bad").mkdir()  # beside the evaluation's photos, not among them
    bad = {1: b"not an image", 2: b"", 4: png_declaring(tmp_path / "bad" / "bomb.png", 13000, 13000).read_bytes()}
    outcomes = _sent_at_once(ctpn_server.grpc_url, "grpc", "ctpn", "lines", [bad.get(i, page) for i in range(6)])
    assert [answered for answered, _ in outcomes] == [i not in bad for i in range(6)], outcomes
    assert all("not a readable image" in detail or "declares 13000x13000" in detail for i, (_, detail) in enumerate(outcomes) if i in bad)
    assert pipeline_call(ctpn_server.http_url, "ctpn", page, line_score=2.0)[0] == 400
    rows, reference = evaluate_text(ctpn_server.grpc_url, "grpc", ["ctpn_pytorch_fp32", "ctpn_split"], tmp_path, tmp_path / "gt")
    assert reference == "ctpn_pytorch_fp32" and [r.variant for r in rows] == ["ctpn_pytorch_fp32", "ctpn_split"]
    assert all(r.precision == r.recall == 1.0 and r.seconds_per_batch > 0 for r in rows), rows
    # The split ensemble is the whole network cut in two: its lines are the reference's, line for line.
    assert [r.f_vs_reference for r in rows] == [1.0, 1.0]


def test_a_text_model_is_calibrated_and_judged_on_whole_images_never_crops(tmp_path):
    """A crop would cut a page's lines: given folders, a text model takes each image once, whole."""
    from trtrepo.build.calibration import calibration_set
    from trtrepo.build.gate import evaluation_set
    from trtrepo.text_pages import write_pages

    judged = write_pages(tmp_path / "eval", 2, size=(320, 240))
    calibrated = write_pages(tmp_path / "calib", 3, first_seed=50, size=(320, 240))
    calibration = calibration_set(tmp_path / "calib", 64, text=True)
    evaluation = evaluation_set(tmp_path / "eval", calibration, 400, TEXT)
    assert sorted(s.path for s in calibration.images) == calibrated and sorted(s.path for s in evaluation.samples) == judged
    assert all(s.crop == (0.0, 0.0, 1.0, 1.0) and not s.mirror for s in calibration.images + evaluation.samples)
    assert len(evaluation_set(tmp_path / "eval", None, 400).samples) == 28  # photos: stretched with crops
