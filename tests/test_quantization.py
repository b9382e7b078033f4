"""Explicit INT8: one calibration per network serves ONNX Runtime's and TensorRT's Q/DQ encodings."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from trtrepo.build.calibration import CalibrationSet, calibration_set
from trtrepo.build.export import export_onnx
from trtrepo.engines import quantization
from trtrepo.engines import BuildInputs
from trtrepo.models import get_model


@pytest.fixture(scope="module")
def lite0(tmp_path_factory):
    spec = get_model("efficientnet_lite0")
    network = spec.build_network("imagenet")
    return spec, network, export_onnx(spec, network, tmp_path_factory.mktemp("lite0") / "lite0.onnx").path


@pytest.fixture
def counted(monkeypatch):
    """How many calibration batches were read (a calibration that runs reads all of them)."""
    reads = []
    original = CalibrationSet.batches

    def batches(self, spec, batch_size=8):
        for batch in original(self, spec, batch_size):
            reads.append(len(next(iter(batch.values()))))
            yield batch

    monkeypatch.setattr(CalibrationSet, "batches", batches)
    return reads


def zero_points(path) -> dict[str, np.ndarray]:
    """Each QuantizeLinear/DequantizeLinear's zero point, by node name."""
    model = onnx.load(str(path))
    constants = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    return {node.name: constants[node.input[2]] for node in model.graph.node
            if node.op_type in ("QuantizeLinear", "DequantizeLinear") and len(node.input) > 2}


def test_one_calibration_serves_both_encodings(lite0, counted, tmp_path):
    spec, network, onnx_path = lite0
    calibration = calibration_set(None, 8).kept_in(tmp_path / "ranges")
    (tmp_path / "ranges").mkdir()
    inputs = BuildInputs(spec, network, onnx_path, 8, (8,), calibration, lambda _: None)
    quantization.quantize(inputs, quantization.ONNXRUNTIME_CPU, tmp_path / "ort.onnx")
    assert sum(counted) == 8 and calibration.ranges_file(onnx_path).is_file()
    quantization.quantize(inputs, quantization.TENSORRT, tmp_path / "trt.onnx")
    assert sum(counted) == 8  # the second encoding read no image: the same ranges

    onnxruntime, tensorrt = zero_points(tmp_path / "ort.onnx"), zero_points(tmp_path / "trt.onnx")
    assert len(onnxruntime) > 100 and len(tensorrt) > 100
    # TensorRT: every zero point int8 and 0, float biases (its parser refuses anything else). ONNX Runtime: uint8
    # activations with zero points, int32 biases.
    assert all(zp.dtype == np.int8 and not zp.any() for zp in tensorrt.values())
    assert {zp.dtype for zp in onnxruntime.values()} == {np.dtype(np.uint8), np.dtype(np.int8), np.dtype(np.int32)}
    assert any(zp.dtype == np.uint8 and zp.any() for zp in onnxruntime.values())


def test_ranges_are_never_shared_across_networks_or_images(lite0, tmp_path):
    _, _, onnx_path = lite0
    eight, nine = calibration_set(None, 8).kept_in(tmp_path), calibration_set(None, 9).kept_in(tmp_path)
    assert eight.ranges_file(onnx_path) == calibration_set(None, 8).kept_in(tmp_path).ranges_file(onnx_path)
    assert eight.ranges_file(onnx_path) != nine.ranges_file(onnx_path)
    other = tmp_path / "other.onnx"
    other.write_bytes(onnx_path.read_bytes() + b"\0")
    assert eight.ranges_file(onnx_path) != eight.ranges_file(other)
    assert calibration_set(None, 8).ranges_file(onnx_path) is None  # outside a build: not kept


def _dq_conv_model(path) -> None:
    """x -> Q -> DQ (per tensor) -> Conv with float weights whose two output channels differ in scale by 10^4 ->
    Q -> DQ: the form quantization leaves a node kept in float in (the output's scale fits the small channel)."""
    from onnx import TensorProto, helper

    weights = np.random.default_rng(0).standard_normal((2, 4, 3, 3)).astype(np.float32) * np.array([1e-3, 10.0], np.float32)[:, None, None, None]
    graph = helper.make_graph(
        [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"], name="q"),
         helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"], name="dq"),
         helper.make_node("Conv", ["xd", "w"], ["c"], name="kept_in_float", pads=[1, 1, 1, 1]),
         helper.make_node("QuantizeLinear", ["c", "s_out", "z"], ["cq"], name="q_out"),
         helper.make_node("DequantizeLinear", ["cq", "s_out", "z"], ["y"], name="dq_out")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 8, 8])],
        [numpy_helper.from_array(np.array(0.02, np.float32), "s"), numpy_helper.from_array(np.array(128, np.uint8), "z"),
         numpy_helper.from_array(np.array(1e-4, np.float32), "s_out"), numpy_helper.from_array(weights, "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def test_a_node_kept_in_float_stays_in_float_under_onnx_runtime(tmp_path):
    import onnxruntime as ort

    from trtrepo.engines.ort_session import session_options

    def run(path, optimized: bool) -> np.ndarray:
        options = session_options(1)
        if not optimized:
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]

    x = np.random.default_rng(1).uniform(-2, 2, (1, 4, 8, 8)).astype(np.float32)
    model = tmp_path / "qdq.onnx"
    _dq_conv_model(model)
    as_written = run(model, optimized=False)  # DQ(Q(x)) convolved with the float weights
    small = np.abs(as_written[0, 0]).max()
    # The cause: ONNX Runtime's WeightBiasQuantization gives the float weights one int8 scale, which the large
    # channel sets, and the small channel's weights round to nothing.
    assert np.abs(run(model, optimized=True)[0, 0] - as_written[0, 0]).max() > 0.5 * small
    assert quantization.feed_float_nodes_per_channel(model) == 1
    np.testing.assert_allclose(run(model, optimized=True), as_written, rtol=1e-4, atol=1e-6)
    assert quantization.feed_float_nodes_per_channel(model) == 0  # its input is per channel now: nothing left to do
