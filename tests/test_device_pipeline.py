"""The pipelines' device path (``prepare`` "device": JPEGs decoded as one batch with torchvision's decode_jpeg,
prepared with torch where they lie, handed over through DLPack) run on this CPU, where it is the same code a GPU
instance runs with nvJPEG: its answers are the host client's, and bad images in a batch fail alone."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from trtrepo.backend import PIPELINE_ENTRY
from trtrepo.clients.resnet_client import classify, classify_server_side
from trtrepo.clients.yolo_client import detect, detect_server_side
from trtrepo.format.config import pipeline_config, write_config
from trtrepo.models import get_model
from trtrepo.serving.server import Ports, TritonServer

pytestmark = pytest.mark.integration
CLASSIFIER, DETECTOR = "efficientnet_lite0_pytorch_fp32", "yolov3_tiny_onnxruntime_fp32"


@pytest.fixture(scope="module")
def device_server(small_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> TritonServer:
    repo = tmp_path_factory.mktemp("device") / "model_repository"
    for variant in (CLASSIFIER, DETECTOR):
        shutil.copytree(small_repo / variant, repo / variant)
        name = variant.rsplit("_", 2)[0]
        (repo / name / "1").mkdir(parents=True)
        shutil.copyfile(PIPELINE_ENTRY, repo / name / "1" / "model.py")
        write_config(pipeline_config(name, get_model(name), variant, 4, prepare="device"), repo / name)
    with TritonServer(repo, Ports.free()) as running:
        yield running


@pytest.fixture(scope="module")
def photos(darknet_photos: Path) -> list[Path]:
    """Darknet's JPEGs and a PNG (decoded on the host, then moved to the device)."""
    from trtrepo.imagesets import shipped_photos

    return sorted(darknet_photos.glob("*.jpg")) + [p for p in shipped_photos() if p.name == "chelsea.png"]


def decoded(server: TritonServer, model: str) -> dict[str, float]:
    """The pipeline's decoded-image counters, by where, from Triton's metrics."""
    from trtrepo.backend.pipeline_tasks import DECODED_METRIC
    from trtrepo.serving.metrics import scrape_metrics
    from trtrepo.serving.metrics import labelled_samples

    return {labels["where"]: value for name, labels, value in labelled_samples(scrape_metrics(server.metrics_url))
            if name == DECODED_METRIC and labels.get("model") == model}


def test_device_path_gives_the_host_clients_labels(device_server, photos):
    url = device_server.grpc_url
    before = decoded(device_server, "efficientnet_lite0")
    host = classify(photos, CLASSIFIER, url, "grpc", batch_size=4, top_k=3)
    device = classify_server_side(photos, "efficientnet_lite0", url, "grpc", top_k=3)
    assert [[label for label, _ in r] for r in device] == [[label for label, _ in r] for r in host]
    assert np.allclose([[s for _, s in r] for r in device], [[s for _, s in r] for r in host], atol=0.02)
    after = decoded(device_server, "efficientnet_lite0")
    # The JPEGs by the batch decoder, the PNG on the host.
    assert (after["device"] - before.get("device", 0), after["host"] - before.get("host", 0)) == (len(photos) - 1, 1)


def test_the_pipelines_counters_time_each_stage_of_the_device_path(device_server, photos):
    """What trtrepo perf reads to say where a pipeline's time goes: seconds by stage over the images sent."""
    from trtrepo.perf.pipeline_stages import read_counters

    before = read_counters([device_server.metrics_url], "yolov3_tiny", DETECTOR)
    detect_server_side(photos, "yolov3_tiny", device_server.grpc_url, "grpc", 0.3, 0.45)
    after = read_counters([device_server.metrics_url], "yolov3_tiny", DETECTOR)
    assert after["images"] - before["images"] == len(photos)
    grew = {stage for stage in ("prepare", "read", "decode", "resize", "engine", "answer") if after[stage] > before[stage]}
    assert grew == {"read", "decode", "resize", "engine", "answer"}  # not the host path's "prepare"
    assert after["variant"] > before["variant"]  # the detector's own queue and compute, as Triton counts them


def test_device_path_gives_the_host_clients_boxes(device_server, photos):
    url = device_server.grpc_url
    host = detect(photos, DETECTOR, url, "grpc", 4, 0.3, 0.45)
    device = detect_server_side(photos, "yolov3_tiny", url, "grpc", 0.3, 0.45)
    assert sum(map(len, host)) >= 10
    for mine, theirs in zip(host, device):
        assert [d.label for d in mine] == [d.label for d in theirs]
        assert np.allclose([d.box for d in mine], [d.box for d in theirs], atol=1e-3)  # one letterbox function


def test_bad_images_in_a_batch_on_the_device_path_fail_alone(device_server, darknet_photos, tmp_path):
    """A truncated JPEG (its header whole: the batch decoder refuses it, the host names it), bytes that are no
    image and a bomb header, among photos sent at once: each bad one gets its own error."""
    from test_bad_input import _sent_at_once, png_declaring

    photo = (darknet_photos / "dog.jpg").read_bytes()
    bad = {1: photo[: len(photo) // 3], 4: b"not an image", 7: png_declaring(tmp_path / "bomb.png", 13000, 13000).read_bytes()}
    images = [bad.get(index, photo) for index in range(9)]
    outcomes = _sent_at_once(device_server.grpc_url, "grpc", "yolov3_tiny", "boxes", images)
    for index, (answered, detail) in enumerate(outcomes):
        if index in bad:
            assert not answered and ("not a readable image" in detail or "declares 13000x13000" in detail), (index, detail)
        else:
            assert answered and detail >= 3, (index, detail)
