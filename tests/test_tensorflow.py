"""The TensorFlow engine: Keras twins built from the same weights, checked against PyTorch, served by the real
tritonserver through the Python backend, answered by the real clients."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from conftest import SMALL, built_once, trtrepo, yolo_client
from trtrepo.build.plan import RepoPlan
from trtrepo.build.repository import build_repository
from trtrepo.engines import get_engine
from trtrepo.engines.tensorflow import check_parity
from trtrepo.errors import UserError
from trtrepo.format.config import Variant
from trtrepo.models import get_model
from trtrepo.serving.client import InferenceClient
from trtrepo.serving.server import Ports, TritonServer

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


def test_on_a_triton_with_the_tensorflow_backend_the_config_is_native():
    from trtrepo.format.config import model_config

    engine = get_engine("tensorflow")
    config = model_config("resnet50_tensorflow_fp32", get_model("resnet50"), engine, "fp32", True, SMALL)
    assert (config.platform, config.backend, config.default_model_filename) == ("tensorflow_savedmodel", "", "model.savedmodel")
    assert [i.name for i in config.input] == ["input"] and [o.name for o in config.output] == ["logits"]
    python = model_config("resnet50_tensorflow_fp32", get_model("resnet50"), engine, "fp32", False, SMALL)
    assert python.backend == "python" and python.parameters["artifact"].string_value == "model.savedmodel"


def test_without_tensorflow_the_variants_are_skipped_with_how_to_install_it(monkeypatch):
    import trtrepo.engines.tensorflow as module

    real = importlib.util.find_spec
    monkeypatch.setattr(module.importlib.util, "find_spec", lambda name, *a: None if name == "tensorflow" else real(name, *a))
    assert "pip install 'trtrepo[tensorflow]'" in get_engine("tensorflow").unavailable("fp32")


@needs_tensorflow
@pytest.mark.parametrize("model, weights, shapes", [
    ("efficientnet_lite0", "pretrained", [(2, 3, 224, 224)]),
    ("yolov3", "random", [(1, 3, 416, 416)]),
    ("ctpn", "pretrained", [(1, 3, 64, 128), (2, 3, 208, 160)]),  # the trained GRU; height and width stay dynamic
])
def test_every_keras_twin_matches_its_pytorch_network(model, weights, shapes):
    """The twins the repository tests do not build (ResNet50's and YOLOv3-tiny's are built and served below)."""
    from trtrepo.engines.pytorch import network_runner
    from trtrepo.tf_networks import keras_twin

    spec = get_model(model)
    network = spec.build_network(weights)
    twin = keras_twin(spec, network)
    for shape in shapes:
        batch = {"input": np.random.default_rng(1).standard_normal(shape).astype(np.float32)}
        result = twin(batch["input"], training=False)
        ours = dict(zip([t.name for t in spec.outputs], [r.numpy() for r in (result if isinstance(result, list) else [result])]))
        measured = check_parity(spec, ours, network_runner(spec, network)(batch))
        assert all(value < 1e-3 for value in measured.values()), measured


REPO_VARIANTS = tuple(Variant(model, engine, "fp32", SMALL) for model, engine in
                      [("resnet50", "tensorflow"), ("resnet50", "pytorch"), ("yolov3_tiny", "tensorflow")])


def _build_tf_repo(folder):
    results = build_repository(RepoPlan(folder / "model_repository", "resnet50=random,yolov3_tiny=pretrained",
                                        frozenset({"python"}), REPO_VARIANTS, calib_images=16))
    assert [(r.variant, r.status) for r in results] == [(v.name, "built") for v in sorted(REPO_VARIANTS, key=lambda v: v.model)]


@pytest.fixture(scope="module")
def tf_repo(shared_folder):
    """The TensorFlow variants beside PyTorch's, built once for all workers."""
    return built_once(shared_folder / "tf", _build_tf_repo) / "model_repository"


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


@needs_tensorflow
def test_tfserving_export_parses_with_tfserving_protos_and_mirrors_triton_batching(tf_repo, tmp_path):
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    from trtrepo.build.tfserving import batching_parameters_class

    result = trtrepo("tfserving", str(tf_repo), "--output", str(tmp_path / "tfs"), "--base-path", "/models")
    assert result.returncode == 0, result.stderr
    config = text_format.Parse((tmp_path / "tfs" / "models.config").read_text(), model_server_config_pb2.ModelServerConfig())
    assert [(c.name, c.base_path, c.model_platform) for c in config.model_config_list.config] == [
        (name, f"/models/{name}", "tensorflow") for name in TF_VARIANTS]
    for name in TF_VARIANTS:
        version = tmp_path / "tfs" / name / "1"
        assert (version / "saved_model.pb").is_file() and (version / "variables" / "variables.index").is_file()
        batching = text_format.Parse((version / "batching_params.pbtxt").read_text(), batching_parameters_class()())
        assert (batching.max_batch_size.value, batching.batch_timeout_micros.value, list(batching.allowed_batch_sizes),
                batching.num_batch_threads.value) == (SMALL.max_batch_size, SMALL.max_queue_delay_us, [2, 4], SMALL.instances)
    shared = text_format.Parse((tmp_path / "tfs" / "batching_parameters.txt").read_text(), batching_parameters_class()())
    assert shared.num_batch_threads.value == 2 * SMALL.instances and shared.max_batch_size.value == SMALL.max_batch_size
    assert "docker run" in result.stdout and "--enable_per_model_batching_parameters" in result.stdout


@needs_tensorflow
@pytest.mark.integration
def test_perf_sweeps_a_tfserving_beside_triton_variants(tf_repo, tf_server, tmp_path):
    """perf_analyzer --service-kind tfserving for real, against a stand-in PredictionService that serves the export
    (no TF-Serving binary exists here): the TF-Serving points land in the same report as the Triton variant's."""
    from tfserving_standin import StandIn

    from trtrepo.build.tfserving import export_tfserving
    from trtrepo.perf.sweep import read_csv

    export_tfserving(tf_repo, tmp_path / "tfs")
    out = tmp_path / "perf"
    triton = trtrepo("perf", "--url", tf_server.grpc_url, "--models", "resnet50_pytorch_fp32", "--instances", "1",
                     "--concurrency", "1", "--measurement-ms", "1000", "--output", str(out))
    assert triton.returncode == 0, triton.stderr
    with StandIn(tmp_path / "tfs") as standin:
        result = trtrepo("perf", "--service-kind", "tfserving", "--url", f"127.0.0.1:{standin.port}",
                         "--models", "resnet50_tensorflow_fp32", "--concurrency", "1", "--measurement-ms", "1000",
                         "--output", str(out))
    assert result.returncode == 0, result.stderr
    points = {p.variant: p for p in read_csv(out / "sweep.csv")}
    assert set(points) == {"resnet50_pytorch_fp32", "resnet50_tensorflow_fp32@tfserving"}
    assert points["resnet50_tensorflow_fp32@tfserving"].throughput > 0
    assert "resnet50_tensorflow_fp32@tfserving / baseline" in (out / "sweep.md").read_text()


@needs_tensorflow
def test_validate_accepts_the_saved_model_folder_and_names_a_broken_one(tf_repo, tmp_path):
    import shutil

    from trtrepo.format.validate import validate_repository

    variant = "resnet50_tensorflow_fp32"
    shutil.copytree(tf_repo / variant, tmp_path / variant)
    assert validate_repository(tmp_path) == []
    (tmp_path / variant / "1" / "model.savedmodel" / "saved_model.pb").unlink()
    (problem,) = validate_repository(tmp_path)
    assert problem.endswith("model.savedmodel: not a SavedModel (no saved_model.pb)")
