"""YOLOv3-tiny end to end with the original Darknet weights on real photos: every engine, Triton, the client,
the server-side pipeline and COCO mAP."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from conftest import client_process, yolo_client
from trtrepo.accuracy.evaluate import evaluate_detection
from trtrepo.models import get_model
from trtrepo.models.detection import to_image_coords

pytestmark = pytest.mark.integration
VARIANTS = ["yolov3_tiny_pytorch_fp32", "yolov3_tiny_onnxruntime_fp32", "yolov3_tiny_onnxruntime_int8"]
# What Darknet's own yolov3-tiny reports on its sample photos (sheep in person.jpg it calls a horse).
EXPECTED = {"dog.jpg": {"dog", "bicycle", "car"}, "horses.jpg": {"horse"}, "person.jpg": {"person", "dog"}}


def labels(detections) -> set[str]:
    return {d.label for d in detections}


@pytest.fixture(scope="module")
def spec():
    spec = get_model("yolov3_tiny")
    if not spec.pretrained_file().is_file():
        pytest.skip("yolov3-tiny.weights not unpacked: run make install")
    return spec


# INT8 included: ONNX Runtime's precise U8S8 mode and the accuracy gate's mixed precision keep dog.jpg's cars.
@pytest.mark.parametrize("variant", VARIANTS)
def test_every_engine_finds_the_expected_objects_through_triton(server, darknet_photos, spec, variant):
    from trtrepo.clients.yolo_client import detect

    photos = [darknet_photos / name for name in EXPECTED]
    for photo, found in zip(photos, detect(photos, variant, server.grpc_url, "grpc", 2, 0.25, 0.45)):
        assert EXPECTED[photo.name] <= labels(found), (variant, photo.name, labels(found))
        width, height = Image.open(photo).size
        assert all(0 <= d.box[0] < d.box[2] <= width and 0 <= d.box[1] < d.box[3] <= height for d in found)


def test_in_process_pytorch_matches_served_variant(server, darknet_photos, spec, small_repo):
    from trtrepo.clients.yolo_client import detect
    from trtrepo.engines import get_engine

    photo = darknet_photos / "dog.jpg"
    array, box = spec.letterbox(photo)
    run = get_engine("pytorch").load(spec, small_repo / VARIANTS[0] / "1" / "model.pt", "fp32", "cpu", 2)
    local = to_image_coords(spec.postprocess(run({"input": array[None]}))[0], box)
    (served,) = detect([photo], VARIANTS[1], server.http_url, "http", 1, 0.25, 0.45)
    assert [d.label for d in local] == [d.label for d in served]
    assert np.allclose([d.box for d in local], [d.box for d in served], atol=1.0)


def test_client_prints_writes_annotated_images_and_json(server, darknet_photos, tmp_path, spec):
    result = client_process("yolo_client", "--url", server.http_url, "--out", str(tmp_path), str(darknet_photos / "dog.jpg"))
    assert result.returncode == 0, result.stderr
    assert "dog" in result.stdout and "bicycle" in result.stdout
    original = np.asarray(Image.open(darknet_photos / "dog.jpg").convert("RGB"), dtype=np.int16)
    annotated = np.asarray(Image.open(tmp_path / "dog.jpg").convert("RGB"), dtype=np.int16)
    assert annotated.shape == original.shape
    assert (np.abs(annotated - original).max(axis=2) > 100).mean() > 0.005  # box outlines drawn
    result = yolo_client("--url", server.grpc_url, "--protocol", "grpc", "--json", str(darknet_photos / "person.jpg"))
    parsed = json.loads(result.stdout)
    assert {"person", "dog"} <= {d["label"] for d in parsed[0]["detections"]}


def test_server_side_pipeline_agrees_with_client_side(server, darknet_photos, spec):
    from trtrepo.clients.yolo_client import detect, detect_server_side

    from trtrepo.format.config import repository_pipelines

    assert repository_pipelines(server.repository) == {  # what the demo answers through
        "efficientnet_lite0": "efficientnet_lite0_onnxruntime_fp32", "yolov3_tiny": "yolov3_tiny_onnxruntime_fp32"}
    photos = sorted(darknet_photos.glob("*.jpg"))
    client_side = detect(photos, VARIANTS[1], server.grpc_url, "grpc", 4, 0.3, 0.45)
    server_side = detect_server_side(photos, "yolov3_tiny", server.grpc_url, "grpc", 0.3, 0.45)
    for mine, theirs in zip(client_side, server_side):
        assert [d.label for d in mine] == [d.label for d in theirs]
        assert np.allclose([d.box for d in mine], [d.box for d in theirs], atol=1.0)


@pytest.mark.parametrize("args, message", [
    (["--server-side", "{bad}"], "not a readable image"),
    (["--model", "resnet50_onnxruntime_fp32", "{photo}"], "is not a detector (classification)"),
    (["--model", "yolov3_tiny_onnxruntime_fp32", "{bad}"], "not a readable image"),
    (["--server-side", "--model", "yolov3_tiny_onnxruntime_fp32", "--conf", "2", "{photo}"], "--conf"),
])
def test_client_errors_are_one_line(server, darknet_photos, tmp_path, args, message):
    (tmp_path / "bad.jpg").write_bytes(b"GIF89a truncated")
    args = [a.format(bad=tmp_path / "bad.jpg", photo=darknet_photos / "dog.jpg") for a in args]
    result = yolo_client("--url", server.http_url, *args)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr


def test_coco_map_through_triton_on_a_generated_set(server, darknet_photos, spec, tmp_path):
    """Ground truth: the eager-PyTorch baseline's own boxes, so the baseline must score mAP 1 and the
    other engines measure how far they move from it."""
    from trtrepo.clients.yolo_client import detect

    photos = [darknet_photos / name for name in EXPECTED]
    truth = detect(photos, VARIANTS[0], server.grpc_url, "grpc", 4, 0.3, 0.45)
    names = sorted({d.label for found in truth for d in found})
    coco = {
        "images": [{"id": i + 1, "file_name": p.name, "width": Image.open(p).size[0], "height": Image.open(p).size[1]}
                   for i, p in enumerate(photos)],
        "categories": [{"id": 100 + i, "name": name} for i, name in enumerate(names)],
        "annotations": [
            {"id": len(photos) * 100 + i * 50 + j, "image_id": i + 1, "category_id": 100 + names.index(d.label),
             "bbox": [d.box[0], d.box[1], d.box[2] - d.box[0], d.box[3] - d.box[1]],
             "area": (d.box[2] - d.box[0]) * (d.box[3] - d.box[1]), "iscrowd": 0}
            for i, found in enumerate(truth) for j, d in enumerate(found)
        ],
    }
    (tmp_path / "instances.json").write_text(json.dumps(coco))
    rows, reference = evaluate_detection(spec, server.grpc_url, "grpc", VARIANTS, darknet_photos,
                                         tmp_path / "instances.json", batch_size=2)
    by_name = {r.variant: r for r in rows}
    assert reference == VARIANTS[0]
    assert by_name[VARIANTS[0]].map_50 == pytest.approx(1.0) and by_name[VARIANTS[0]].map_50_95 > 0.95
    assert by_name[VARIANTS[1]].map_50 > 0.95
    assert 0.3 < by_name[VARIANTS[2]].map_50 <= 1.0
