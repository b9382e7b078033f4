"""The TensorFlow engine: Keras twins built from the same weights, checked against PyTorch, served by the real
tritonserver through the Python backend, answered by the real clients."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from conftest import SMALL, yolo_client
from trtrepo.client import InferenceClient
from trtrepo.config import Variant
from trtrepo.engines import get_engine
from trtrepo.engines.tensorflow import check_parity
from trtrepo.errors import UserError
from trtrepo.models import get_model
from trtrepo.repository import RepoPlan, build_repository
from trtrepo.server import Ports, TritonServer

needs_tensorflow = pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None,
                                      reason="TensorFlow is not installed (make install TENSORFLOW=1)")
TF_VARIANTS = ("resnet50_tensorflow_fp32", "yolov3_tiny_tensorflow_fp32")


def test_parity_reports_every_output_that_strays_then_fails_once():
    spec = get_model("yolov3_tiny")
    reference = {"detections": np.zeros((1, 6, 85), np.float32)}
    close = {"detections": reference["detections"] + np.float32(5e-4)}
    assert check_parity(spec, close, reference) == pytest.approx(
        {"boxes (px)": 5e-4, "objectness and class probabilities": 5e-4}, rel=1e-3)
    far = {"detections": reference["detections"].copy()}
    far["detections"][..., 0] += 2.0  # two pixels off
    far["detections"][..., 7] += 0.01
    with pytest.raises(UserError) as failed:
        check_parity(spec, far, reference)
    message = str(failed.value)
    assert message.count("differ by") == 2 and "boxes (px) differ by 2" in message and "\n" not in message


def test_models_without_a_keras_twin_are_not_applicable_rather_than_failed():
    engine = get_engine("tensorflow")
    assert "no Keras twin" in engine.not_applicable(get_model("ctpn_backbone"))
    assert all(engine.not_applicable(get_model(name)) is None
               for name in ("resnet50", "efficientnet_lite0", "yolov3", "yolov3_tiny", "ctpn"))


@pytest.fixture(scope="module")
def tf_repo(tmp_path_factory):
    output = tmp_path_factory.mktemp("tf") / "model_repository"
    variants = tuple(Variant(model, engine, "fp32", SMALL) for model, engine in
                     [("resnet50", "tensorflow"), ("resnet50", "pytorch"), ("yolov3_tiny", "tensorflow")])
    results = build_repository(RepoPlan(output, "resnet50=random,yolov3_tiny=pretrained", frozenset({"python"}),
                                        variants, calib_images=16))
    assert [(r.variant, r.status) for r in results] == [(v.name, "built") for v in sorted(variants, key=lambda v: v.model)]
    return output


@pytest.fixture(scope="module")
def tf_server(tf_repo):
    with TritonServer(tf_repo, Ports.free(), model_control="explicit") as running:
        yield running


@needs_tensorflow
def test_the_build_checks_the_saved_model_against_pytorch_and_judges_it(tf_repo):
    resnet = json.loads((tf_repo / "resnet50_tensorflow_fp32" / "manifest.json").read_text())
    assert resnet["engine_build"]["parity_max_abs"]["logits"] < 1e-3
    yolo = json.loads((tf_repo / "yolov3_tiny_tensorflow_fp32" / "manifest.json").read_text())
    assert yolo["engine_build"]["parity_max_abs"]["boxes (px)"] < 1.0
    assert yolo["gate_result"]["passed"]  # real weights: judged against PyTorch FP32 on real photos


@needs_tensorflow
@pytest.mark.integration
def test_triton_serves_what_tensorflow_itself_computes(tf_server, tf_repo):
    import tensorflow as tf

    spec = get_model("resnet50")
    batch = spec.example_batch(3, seed=5)
    served = InferenceClient("resnet50_tensorflow_fp32", url=tf_server.grpc_url, protocol="grpc").infer(batch)["logits"]
    signature = tf.saved_model.load(str(tf_repo / "resnet50_tensorflow_fp32" / "1" / "model.savedmodel")).signatures["serving_default"]
    direct = signature(input=tf.constant(batch["input"]))["logits"].numpy()
    assert np.allclose(served, direct, atol=1e-4)
    eager = InferenceClient("resnet50_pytorch_fp32", url=tf_server.grpc_url, protocol="grpc").infer(batch)["logits"]
    assert np.abs(served - eager).max() < 1e-3


@needs_tensorflow
@pytest.mark.integration
def test_the_yolo_client_gets_the_same_detections_from_the_tensorflow_variant(tf_server, darknet_photos):
    result = yolo_client("--url", tf_server.grpc_url, "--protocol", "grpc", "--model", "yolov3_tiny_tensorflow_fp32",
                         "--json", str(darknet_photos / "dog.jpg"))
    assert result.returncode == 0, result.stderr
    assert {"dog", "bicycle"} <= {d["label"] for d in json.loads(result.stdout)[0]["detections"]}
