"""Engines: ONNX Runtime FP32 (offline-optimized) and INT8 (static QDQ), PyTorch FP16 and TensorRT where present."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from conftest import trtrepo
from trtrepo.build.calibration import calibration_set
from trtrepo.build.export import export_onnx
from trtrepo.engines import BuildInputs, get_engine
from trtrepo.engines.base import cuda_available, graph_batch_sizes, load_runner
from trtrepo.engines.tensorrt import profile_shapes
from trtrepo.models import get_model

TENSORRT_MISSING = get_engine("tensorrt").unavailable("fp32")


@pytest.fixture(scope="module")
def lite0(tmp_path_factory):
    """EfficientNet-Lite0 with its real weights, exported once for this module."""
    spec = get_model("efficientnet_lite0")
    network = spec.build_network("imagenet")
    report = export_onnx(spec, network, tmp_path_factory.mktemp("lite0") / "lite0.onnx")
    return spec, network, report.path


def inputs_for(lite0, calibration=None, max_batch=8) -> BuildInputs:
    spec, network, onnx_path = lite0
    return BuildInputs(spec, network, onnx_path, max_batch, (4, 8), calibration, lambda _: None)


def test_onnxruntime_fp32_is_saved_optimized_and_unchanged_in_output(lite0, tmp_path):
    spec, _, onnx_path = lite0
    engine = get_engine("onnxruntime")
    engine.build(inputs_for(lite0), "fp32", tmp_path / "model.onnx")
    assert len(onnx.load(str(tmp_path / "model.onnx")).graph.node) < len(onnx.load(str(onnx_path)).graph.node)
    batch = spec.example_batch(2)
    optimized = engine.load(spec, tmp_path / "model.onnx", "fp32", "cpu", 1)(batch)["logits"]
    original = engine.load(spec, onnx_path, "fp32", "cpu", 1)(batch)["logits"]
    assert np.allclose(optimized, original, atol=1e-4)


def test_onnxruntime_int8_is_qdq_and_agrees_with_fp32_on_real_photos(lite0, labelled_photos, tmp_path):
    spec, _, onnx_path = lite0
    engine = get_engine("onnxruntime")
    engine.build(inputs_for(lite0, calibration_set(None, 16)), "int8", tmp_path / "int8.onnx")
    ops = {node.op_type for node in onnx.load(str(tmp_path / "int8.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    photos = sorted(p for p in labelled_photos.rglob("*") if p.is_file() or p.is_symlink())
    batch = {"input": np.stack([spec.preprocess(p) for p in photos])}
    int8 = engine.load(spec, tmp_path / "int8.onnx", "int8", "cpu", 2)(batch)["logits"]
    fp32 = engine.load(spec, onnx_path, "fp32", "cpu", 2)(batch)["logits"]
    # coffee.png is unambiguous: both precisions call it espresso (ImageNet class 967).
    coffee = [i for i, p in enumerate(photos) if p.name == "coffee.png"][0]
    assert int8[coffee].argmax() == fp32[coffee].argmax() == 967
    top5_int8 = np.argsort(-int8, axis=1)[:, :5]
    assert all(fp32[i].argmax() in top5_int8[i] for i in range(len(photos)))


def test_int8_without_calibration_is_a_one_line_error(lite0, tmp_path):
    from trtrepo.errors import UserError

    with pytest.raises(UserError, match="needs calibration data"):
        get_engine("onnxruntime").build(inputs_for(lite0), "int8", tmp_path / "int8.onnx")


def test_tensorrt_profile_covers_the_served_batch_range():
    shapes = profile_shapes(get_model("resnet50"), max_batch_size=32, preferred=(16, 32))
    assert shapes == {"input": ((1, 3, 224, 224), (32, 3, 224, 224), (32, 3, 224, 224))}
    assert profile_shapes(get_model("resnet50"), 8, ())["input"][1] == (8, 3, 224, 224)


@pytest.mark.skipif(TENSORRT_MISSING is None, reason="TensorRT is available here")
def test_tensorrt_build_without_tensorrt_says_why_in_one_line(tmp_path):
    result = trtrepo("build", "resnet50", "--engine", "tensorrt", "--precision", "fp16", "--weights", "random",
                     "--output", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: cannot build resnet50_tensorrt_fp16: {TENSORRT_MISSING}"


@pytest.mark.skipif(TENSORRT_MISSING is not None, reason=f"{TENSORRT_MISSING}")
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_tensorrt_plan_matches_onnxruntime(lite0, tmp_path, precision):
    spec, _, onnx_path = lite0
    engine = get_engine("tensorrt")
    engine.build(inputs_for(lite0, calibration_set(None, 16)), precision, tmp_path / "model.plan")
    assert (tmp_path / "timing.cache").is_file() and (tmp_path / "layers.json").is_file()
    batch = spec.example_batch(4)
    plan = engine.load(spec, tmp_path / "model.plan", precision, "gpu", 1)(batch)["logits"]
    reference = get_engine("onnxruntime").load(spec, onnx_path, "fp32", "cpu", 1)(batch)["logits"]
    tolerance = {"fp32": 1e-2, "fp16": 5e-2, "int8": 0.5}[precision]
    assert np.abs(plan - reference).max() < tolerance * np.abs(reference).max()


@pytest.mark.skipif(TENSORRT_MISSING is not None, reason=f"{TENSORRT_MISSING}")
def test_tensorrt_gpu_runner_with_graphs_matches_the_host_runner(lite0, tmp_path):
    import torch

    spec, _, _ = lite0
    engine = get_engine("tensorrt")
    engine.build(inputs_for(lite0), "fp16", tmp_path / "model.plan")
    graphs = engine.load_on_gpu(spec, tmp_path / "model.plan", "fp16", 0, (4, 8))
    host = engine.load(spec, tmp_path / "model.plan", "fp16", "gpu", 1)
    for size in (3, 8):  # padded to the graph of 4, exact
        batch = spec.example_batch(size, seed=size)
        got = graphs({"input": torch.from_numpy(batch["input"]).cuda()})["logits"]
        want = host(batch)["logits"]
        assert got.is_cuda and got.shape == (size, 1000)
        assert np.abs(got.cpu().numpy() - want).max() < 1e-2 * np.abs(want).max()


@pytest.mark.skipif(cuda_available(), reason="a CUDA GPU is present")
def test_pytorch_fp16_without_gpu_says_why(tmp_path):
    result = trtrepo("build", "resnet50", "--engine", "pytorch", "--precision", "fp16", "--weights", "random",
                     "--output", str(tmp_path))
    assert result.returncode == 2 and "runs on a CUDA GPU and none is visible" in result.stderr


@pytest.mark.skipif(not cuda_available(), reason="pytorch fp16 needs a CUDA GPU")
def test_pytorch_fp16_close_to_fp32_on_gpu(lite0, tmp_path):
    spec, _, _ = lite0
    engine = get_engine("pytorch")
    engine.build(inputs_for(lite0), "fp16", tmp_path / "model.pt")
    batch = spec.example_batch(2)
    half = engine.load(spec, tmp_path / "model.pt", "fp16", "gpu", 1)(batch)["logits"]
    full = engine.load(spec, tmp_path / "model.pt", "fp32", "gpu", 1)(batch)["logits"]
    assert np.abs(half - full).max() < 0.05 * np.abs(full).max()


@pytest.mark.skipif(not cuda_available(), reason="the GPU runner and CUDA graphs need a CUDA GPU")
def test_cuda_graph_runner_pads_odd_batches_and_matches_eager(lite0, tmp_path):
    import torch

    spec, _, _ = lite0
    engine = get_engine("pytorch")
    engine.build(inputs_for(lite0), "fp16", tmp_path / "model.pt")
    graphs = engine.load_on_gpu(spec, tmp_path / "model.pt", "fp16", 0, (4, 8))
    eager = engine.load_on_gpu(spec, tmp_path / "model.pt", "fp16", 0, ())
    for size in (3, 8, 11):  # padded to 4, exact, beyond the largest graph (eager)
        x = torch.from_numpy(spec.example_batch(size, seed=size)["input"]).cuda()
        got, want = graphs({"input": x})["logits"], eager({"input": x})["logits"]
        assert got.shape == want.shape == (size, 1000) and got.is_cuda
        assert float((got - want).norm() / want.norm()) < 1e-2


def test_graph_batch_sizes_come_from_the_config_only_when_graphs_are_asked_for():
    config = {"max_batch_size": 256, "dynamic_batching": {"preferred_batch_size": [128, 64]}}
    assert graph_batch_sizes(config) == ()
    assert graph_batch_sizes({**config, "optimization": {"cuda": {"graphs": True}}}) == (64, 128, 256)


def test_load_runner_gives_the_host_runner_where_there_is_no_gpu_runner(lite0, tmp_path):
    spec, _, _ = lite0
    engine = get_engine("onnxruntime")
    engine.build(inputs_for(lite0), "fp32", tmp_path / "model.onnx")
    graphs = {"max_batch_size": 8, "optimization": {"cuda": {"graphs": True}}}
    # ONNX Runtime has no GPU runner: a GPU instance of it runs through the host runner too.
    for on_gpu in (False, True):
        loaded = load_runner(spec, engine, tmp_path / "model.onnx", "fp32", graphs, on_gpu, 0, 1)
        assert loaded.gpu is None and loaded.host(spec.example_batch(2))["logits"].shape == (2, 1000)
