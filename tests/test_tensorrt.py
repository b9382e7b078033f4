"""The TensorRT path held to the real APIs without TensorRT: Polygraphy's own CreateConfig and Profile, Triton's
model_config schema, the tensorrt_backend's rules (GPU instances only, graph specs), the version rules.

Where a call into TensorRT must be checked, a minimal stand-in records its arguments and then stops the build:
nothing here claims a plan was built. Where TensorRT exists, test_engines builds and runs real plans."""

from __future__ import annotations

import importlib.machinery
import json
import sys
import types
from pathlib import Path

import numpy as np
import onnx
import pytest
from google.protobuf import text_format
from onnx import numpy_helper
from polygraphy.backend.trt import CreateConfig, Profile
from tritonclient.grpc import model_config_pb2 as pb

from conftest import ROOT, trtrepo
from trtrepo.build.calibration import calibration_set
from trtrepo.build.export import export_onnx
from trtrepo.build.plan import load_plan
from trtrepo.engines import BuildInputs, get_engine
from trtrepo.engines import tensorrt as trt_engine
from trtrepo.errors import UserError
from trtrepo.format.config import ServingOptions, model_config, write_config, write_labels
from trtrepo.format.validate import validate_repository
from trtrepo.models import get_model

GRAPHS = ServingOptions(kind="gpu", max_batch_size=32, preferred_batch_sizes=(16, 32), cuda_graphs=True)


class PlanNotBuilt(Exception):
    """Raised by the stand-in for Polygraphy's engine builder once it has recorded what it was given."""


@pytest.fixture
def fake_tensorrt(monkeypatch):
    """A `tensorrt` module with only what trtrepo reads before building: its version and ProfilingVerbosity."""
    module = types.ModuleType("tensorrt")
    module.__version__ = trt_engine.TARGET_TENSORRT + ".18"
    module.ProfilingVerbosity = types.SimpleNamespace(DETAILED="detailed")
    module.__spec__ = importlib.machinery.ModuleSpec("tensorrt", None)  # torch._dynamo's find_spec() reads it
    monkeypatch.setitem(sys.modules, "tensorrt", module)
    return module


@pytest.fixture
def recorded_build(monkeypatch, fake_tensorrt):
    """Polygraphy's network parser and engine builder replaced by recorders; the builder then stops the build."""
    import polygraphy.backend.trt as polygraphy_trt

    calls: dict = {}

    def network_from_onnx_path(path, **kwargs):
        calls["onnx"] = Path(path)
        return "network"

    def engine_from_network(network, config=None, save_timing_cache=None):
        calls.update(network=network, config=config, timing_cache=save_timing_cache)
        raise PlanNotBuilt

    monkeypatch.setattr(polygraphy_trt, "network_from_onnx_path", network_from_onnx_path)
    monkeypatch.setattr(polygraphy_trt, "engine_from_network", engine_from_network)
    return calls


@pytest.fixture(scope="module")
def lite0(tmp_path_factory):
    spec = get_model("efficientnet_lite0")
    network = spec.build_network("imagenet")
    return spec, network, export_onnx(spec, network, tmp_path_factory.mktemp("lite0") / "lite0.onnx").path


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_builder_flags_are_polygraphys_and_keep_tf32_with_no_calibrator(precision):
    config = CreateConfig(**trt_engine.builder_flags(precision), profiles=[Profile()])
    assert config.tf32 is True  # as PyTorch's cuDNN baseline and trtexec; Polygraphy would clear it
    assert config.fp16 is (precision != "fp32") and config.int8 is (precision == "int8")
    assert config.calibrator is None


def test_int8_plan_is_built_from_the_shared_calibrations_symmetric_qdq_model(lite0, recorded_build, tmp_path):
    spec, network, onnx_path = lite0
    calibration = calibration_set(None, 8).kept_in(tmp_path)
    inputs = BuildInputs(spec, network, onnx_path, 32, (16, 32), calibration, lambda _: None)
    with pytest.raises(PlanNotBuilt):
        get_engine("tensorrt").build(inputs, "int8", tmp_path / "model.plan")
    source = recorded_build["onnx"]
    assert source == tmp_path / trt_engine.INT8_SOURCE and calibration.ranges_file(onnx_path).is_file()
    model = onnx.load(str(source))
    constants = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    zero_points = [constants[node.input[2]] for node in model.graph.node
                   if node.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert len(zero_points) > 100 and all(zp.dtype == np.int8 and not zp.any() for zp in zero_points)
    config = recorded_build["config"]
    assert isinstance(config, CreateConfig) and config.int8 and config.fp16 and config.tf32 and config.calibrator is None
    (profile,) = config.profiles
    assert tuple(profile["input"].opt) == (32, 3, 224, 224)  # no calibration runs against it
    assert recorded_build["timing_cache"] == str(tmp_path / trt_engine.TIMING_CACHE)


def test_fp16_plan_is_built_from_the_exported_network(lite0, recorded_build, tmp_path):
    spec, network, onnx_path = lite0
    with pytest.raises(PlanNotBuilt):
        get_engine("tensorrt").build(BuildInputs(spec, network, onnx_path, 8, (4, 8), None, lambda _: None), "fp16",
                                     tmp_path / "model.plan")
    assert recorded_build["onnx"] == onnx_path and not (tmp_path / trt_engine.INT8_SOURCE).exists()


def test_profile_spans_the_served_batches_with_polygraphys_profile():
    profile = Profile()
    for name, (low, opt, high) in trt_engine.profile_shapes(get_model("ctpn_backbone"), 1, ()).items():
        profile.add(name, min=low, opt=opt, max=high)
    shapes = profile["input"]
    assert shapes.min[0] == shapes.opt[0] == shapes.max[0] == 1
    assert all(a <= b <= c for a, b, c in zip(shapes.min, shapes.opt, shapes.max))


@pytest.mark.parametrize("installed, expected", [
    ("11.0.0.1", "trtrepo builds with TensorRT 10.x"),
    ("10.5.0.18", "no usable NVIDIA GPU"),
])
def test_unavailable_names_the_version_rule_or_the_missing_gpu(fake_tensorrt, monkeypatch, installed, expected):
    monkeypatch.setattr(trt_engine, "cuda_available", lambda: False)
    fake_tensorrt.__version__ = installed
    assert expected in get_engine("tensorrt").unavailable("fp16")


def test_plans_load_only_on_the_tensorrt_release_that_built_them():
    assert trt_engine.release("10.5.0.18") == (10, 5, 0) == trt_engine.release("10.5.0.post1")
    assert trt_engine.plan_load_problem("10.5.0.18", "10.5.0") is None
    assert "built with TensorRT 10.6.0" in trt_engine.plan_load_problem("10.6.0", "10.5.0")
    assert "no TensorRT version recorded" in trt_engine.plan_load_problem(None, "10.5.0")


def test_the_extra_pins_the_tensorrt_of_the_target_triton():
    import tomllib

    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["tensorrt"]
    major, minor, _ = trt_engine.release(trt_engine.TARGET_TENSORRT)
    assert f"tensorrt>={major}.{minor},<{major}.{minor + 1}" in extra


def test_plan_config_is_gpu_with_graph_specs_that_cover_every_batch():
    spec = get_model("resnet50")
    config = model_config("resnet50_tensorrt_fp16", spec, get_engine("tensorrt"), "fp16", True, GRAPHS)
    parsed = text_format.Parse(text_format.MessageToString(config), pb.ModelConfig())  # through the schema
    assert [group.kind for group in parsed.instance_group] == [pb.ModelInstanceGroup.KIND_GPU]
    specs = parsed.optimization.cuda.graph_spec
    assert [(s.batch_size, s.graph_lower_bound.batch_size) for s in specs] == [(16, 1), (32, 17)]
    for graph in specs:  # every input named with its shape, in the spec and in its lower bound
        assert list(graph.input["input"].dim) == list(graph.graph_lower_bound.input["input"].dim) == [3, 224, 224]
    python = model_config("resnet50_tensorrt_fp16", spec, get_engine("tensorrt"), "fp16", False, GRAPHS)
    assert not python.optimization.cuda.graph_spec and python.optimization.cuda.graphs  # the runner reads sizes


def test_a_dynamic_shape_plans_graph_is_for_the_profiles_typical_image():
    spec = get_model("ctpn_backbone")
    options = ServingOptions(kind="gpu", max_batch_size=1, preferred_batch_sizes=(), cuda_graphs=True, warmup=False)
    config = model_config("ctpn_backbone_tensorrt_fp16", spec, get_engine("tensorrt"), "fp16", True, options)
    (graph,) = config.optimization.cuda.graph_spec
    opt = trt_engine.profile_shapes(spec, 1, ())["input"][1]
    assert (graph.batch_size, *graph.input["input"].dim) == opt


def test_the_config_writer_never_gives_a_plan_cpu_instances():
    with pytest.raises(UserError, match="resnet50_tensorrt_fp16: tensorrt runs on gpu instances only, not cpu"):
        model_config("resnet50_tensorrt_fp16", get_model("resnet50"), get_engine("tensorrt"), "fp16", True,
                     ServingOptions(kind="cpu"))


def test_plan_variants_get_gpu_instances_unless_a_plan_says_otherwise(tmp_path):
    plan = tmp_path / "plan.toml"
    plan.write_text('[defaults]\nkind = "cpu"\n[[variant]]\nmodel = "resnet50"\nengine = "tensorrt"\nprecision = "fp16"\n'
                    '[[variant]]\nmodel = "resnet50"\nengine = "onnxruntime"\nprecision = "fp32"\n')
    kinds = {v.name: v.options.kind for v in load_plan(plan, backends="python").variants}
    assert kinds == {"resnet50_tensorrt_fp16": "gpu", "resnet50_onnxruntime_fp32": "cpu"}
    plan.write_text('[[variant]]\nmodel = "resnet50"\nengine = "tensorrt"\nprecision = "fp16"\nkind = "cpu"\n')
    with pytest.raises(UserError, match=r"resnet50_tensorrt_fp16: tensorrt runs on gpu instances only, not cpu; set kind = \"gpu\""):
        load_plan(plan, backends="python")


def plan_folder(repo: Path, kind: int, built_with: str | None = trt_engine.TARGET_TENSORRT) -> Path:
    """A TensorRT variant as trtrepo writes it, its plan file a placeholder (validate reads only its size)."""
    options = ServingOptions(kind="gpu", max_batch_size=8, preferred_batch_sizes=(4, 8))
    config = model_config("resnet50_tensorrt_fp16", get_model("resnet50"), get_engine("tensorrt"), "fp16", True, options)
    config.instance_group[0].kind = kind
    folder = repo / "resnet50_tensorrt_fp16"
    (folder / "1").mkdir(parents=True)
    (folder / "1" / "model.plan").write_bytes(b"not a plan")
    write_config(config, folder)
    write_labels(get_model("resnet50"), folder)
    (folder / "manifest.json").write_text(json.dumps({"versions": {"tensorrt": built_with}}))
    return folder


def test_validate_rejects_a_plan_on_cpu_instances_naming_the_model(tmp_path):
    plan_folder(tmp_path, pb.ModelInstanceGroup.KIND_GPU)
    assert validate_repository(tmp_path) == []
    config = tmp_path / "resnet50_tensorrt_fp16" / "config.pbtxt"
    config.write_text(config.read_text().replace("KIND_GPU", "KIND_CPU"))
    (problem,) = validate_repository(tmp_path)
    assert problem == f"{config}: tensorrt runs on gpu instances only, not cpu"
    result = trtrepo("validate", str(tmp_path))
    assert result.returncode == 1 and "resnet50_tensorrt_fp16/config.pbtxt: tensorrt runs on gpu" in result.stderr


def test_validate_says_when_a_plan_cannot_load_on_the_target_tensorrt(tmp_path):
    folder = plan_folder(tmp_path, pb.ModelInstanceGroup.KIND_GPU, built_with="10.8.0")
    (problem,) = validate_repository(tmp_path)
    assert problem.startswith(f"{folder / '1' / 'model.plan'}: built with TensorRT 10.8.0")
    assert validate_repository(tmp_path, tensorrt="10.8.0.43") == []
    result = trtrepo("validate", str(tmp_path), "--tensorrt-version", "10.8.0")
    assert result.returncode == 0, result.stderr


def test_config_command_refuses_cpu_instances_for_a_plan(tmp_path):
    folder = plan_folder(tmp_path, pb.ModelInstanceGroup.KIND_GPU)
    before = (folder / "config.pbtxt").read_text()
    result = trtrepo("config", str(folder), "--kind", "cpu")
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "tensorrt runs on gpu instances only" in result.stderr
    assert (folder / "config.pbtxt").read_text() == before


def test_a_rebuild_keeps_the_timing_cache_and_never_an_old_calibration_cache(tmp_path):
    from trtrepo.build.repository import build_variant
    from trtrepo.format.config import Variant

    spec = get_model("efficientnet_lite0")
    variant = Variant("efficientnet_lite0", "pytorch", "fp32")
    old = tmp_path / variant.name / "1"
    old.mkdir(parents=True)
    (old / trt_engine.TIMING_CACHE).write_bytes(b"tactic timings")
    (old / "calibration.cache").write_bytes(b"int8 scales of other weights")
    (tmp_path / "exported.onnx").write_bytes(b"onnx")
    inputs = BuildInputs(spec, spec.build_network("random"), tmp_path / "exported.onnx", 8, (4, 8), None, lambda _: None)
    build_variant(variant, inputs, tmp_path, native=False, key={})
    assert (old / trt_engine.TIMING_CACHE).read_bytes() == b"tactic timings"
    assert not (old / "calibration.cache").exists() and (old / "model.pt").is_file()
