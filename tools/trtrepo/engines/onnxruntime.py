"""ONNX Runtime: FP32 with ORT's offline graph optimizations, INT8 by static QDQ quantization.

Served natively by Triton's onnxruntime backend where the server has it, else through the Python backend.
"""

from __future__ import annotations

import itertools
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from trtrepo.engines.base import BuildInputs, Engine, Runner
from trtrepo.errors import UserError

if TYPE_CHECKING:
    import onnxruntime as ort

    from trtrepo.specs import ModelSpec

#: Calibration batches the mixed-precision ranking compares per-layer outputs on.
SENSITIVITY_BATCHES = 2


class OnnxRuntimeEngine(Engine):
    name = "onnxruntime"
    precisions = ("fp32", "int8")
    artifact = "model.onnx"
    native_backend = "onnxruntime"
    native_platform = "onnxruntime_onnx"

    def build(self, inputs: BuildInputs, precision: str, out_file: Path) -> None:
        if precision == "fp32":
            self._optimize(inputs.onnx_path, out_file)
        else:
            self._quantize(inputs, out_file)

    @staticmethod
    def _optimize(onnx_path: Path, out_file: Path) -> None:
        """Save the graph after ORT's extended (hardware-independent) fusions, so loading skips that work."""
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        options.optimized_model_filepath = str(out_file)
        ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])

    @staticmethod
    def _quantize(inputs: BuildInputs, out_file: Path) -> None:
        """Static INT8: QDQ format, per-channel int8 weights, asymmetric uint8 activations calibrated with MinMax.

        Measured on EfficientNet-Lite0 and yolov3-tiny (16 photos): Entropy matched MinMax (82% of FP32's boxes),
        Percentile 99.999 did worse (77%), symmetric activations far worse (5%: after ReLU6/leaky ReLU, half
        of a symmetric range is wasted), so MinMax; the accuracy gate then keeps the costliest nodes in float."""
        from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

        if inputs.calibration is None:
            raise UserError("onnxruntime int8 needs calibration data (--calib-dir)")

        class Reader(CalibrationDataReader):
            def __init__(self, batches: Iterator[dict]) -> None:
                self.batches = batches

            def get_next(self) -> dict | None:
                return next(self.batches, None)

        with tempfile.TemporaryDirectory(prefix="trtrepo-quant-") as scratch:
            prepared = _prepared(inputs.onnx_path, Path(scratch))
            quantize_static(
                str(prepared),
                str(out_file),
                Reader(inputs.calibration.batches(inputs.spec)),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                nodes_to_exclude=float_tail(prepared) + list(inputs.keep_float),
            )

    def float_candidates(self, inputs: BuildInputs, precision: str, artifact: Path) -> list[str]:
        """The quantized nodes, ranked by the relative error each adds to its output over the float model's
        (per-layer outputs of both on the first calibration batches): most first."""
        from trtrepo.onnx_layers import tensor_errors

        if precision != "int8" or inputs.calibration is None:
            return []
        with tempfile.TemporaryDirectory(prefix="trtrepo-quant-") as scratch:
            prepared = _prepared(inputs.onnx_path, Path(scratch))
            left_float = set(float_tail(prepared)) | set(inputs.keep_float)
            batches = itertools.islice(inputs.calibration.batches(inputs.spec), SENSITIVITY_BATCHES)
            rows = tensor_errors(prepared, artifact, batches)
        ranked = sorted((row for row in rows if row.origin and row.origin not in left_float and row.growth > 0),
                        key=lambda row: -row.growth)
        return list(dict.fromkeys(row.origin for row in ranked))

    def load(self, spec: "ModelSpec", artifact: Path, precision: str, device: str, threads: int) -> Runner:
        import onnxruntime as ort

        options = session_options(threads)
        providers = ["CPUExecutionProvider"]
        if device == "gpu" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        session = ort.InferenceSession(str(artifact), options, providers=providers)
        names = [o.name for o in spec.outputs]

        def run(batch: dict) -> dict:
            return dict(zip(names, session.run(names, batch)))

        return run


def _prepared(onnx_path: Path, scratch: Path) -> Path:
    """The graph quantization starts from: ONNX shape inference and graph optimization only (ORT's symbolic shape
    inference gives up on graphs such as YOLO's in-graph decoding, and static quantization does not need it)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = scratch / "prepared.onnx"
    quant_pre_process(str(onnx_path), str(prepared), skip_symbolic_shape=True)
    return prepared


def float_tail(onnx_path: Path) -> list[str]:
    """Nodes whose results feed no convolution: the classifier's pooling and fc, YOLO's box decoding.

    They stay in float: the convolutions carry the INT8 speed-up, while the tail mixes value ranges (pixel
    coordinates beside probabilities in one tensor) that a single int8 scale cannot hold.
    """
    import onnx

    nodes = list(onnx.load(str(onnx_path)).graph.node)
    feeds_conv: set[str] = set()  # tensor names from which a Conv is reachable
    keep: set[int] = set()
    for index in range(len(nodes) - 1, -1, -1):  # ONNX graphs are topologically sorted
        node = nodes[index]
        if node.op_type == "Conv" or any(output in feeds_conv for output in node.output):
            keep.add(index)
            feeds_conv.update(node.input)
    return [node.name for index, node in enumerate(nodes) if index not in keep and node.name]


#: ONNX Runtime's precise mode for U8S8 products on x86-64 AVX2 without VNNI. Its fast kernels sum pairs of
#: products in 16 bits (VPMADDUBSW), which saturate: measured on EfficientNet-Lite0 (AVX2, no VNNI), INT8 agreed
#: with FP32's top-1 on 73% of the evaluation samples with them and on 97% in precise mode, as in the QDQ graph's
#: own arithmetic; 7-bit weights (reduce_range), Entropy or per-tensor calibration did not help. Elsewhere a no-op.
X64_QUANT_PRECISION = ("session.x64quantprecision", "1")


def session_options(threads: int) -> "ort.SessionOptions":
    """Session options every trtrepo ONNX Runtime session uses: threads, and quantized products that do not
    saturate."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.add_session_config_entry(*X64_QUANT_PRECISION)
    return options
