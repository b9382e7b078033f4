"""Static INT8 as an explicit Q/DQ ONNX model: one calibration per network, encoded for each engine's kernels.

ONNX Runtime's CPU kernels take uint8 activations with a zero point; TensorRT takes signed int8 with zero point 0
only ("TensorRT employs a symmetric quantization scheme", Working with Quantized Types; its ONNX parser refuses a
non-zero zero point). Both encodings are made from the same calibrated ranges: ONNX Runtime's MinMax calibrator
runs once per exported network and calibration set, and its ranges are kept for the rest of the build in a file
named by a digest of both (never reused for another network or other images). The accuracy gate's ranking of
the nodes that cost most accuracy is then the same question for both engines.
"""

from __future__ import annotations

import itertools
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from trtrepo.engines.onnx_layers import tensor_errors
from trtrepo.errors import UserError

if TYPE_CHECKING:
    import onnx

    from trtrepo.engines.base import BuildInputs


#: Calibration batches the mixed-precision ranking compares per-layer outputs on.
SENSITIVITY_BATCHES = 2


@dataclass(frozen=True)
class QdqEncoding:
    """How calibrated ranges become int8 tensors for one engine's kernels (weights: int8, per output channel,
    symmetric, for both)."""

    name: str
    #: "uint8" or "int8" activations.
    activations: str
    symmetric_activations: bool
    #: Biases as int32 (DequantizeLinear of the product of scales) or left in float.
    int32_biases: bool


#: ONNX Runtime on x86-64: uint8 activations with a zero point use all 256 levels on one-sided tensors (after
#: ReLU6 or leaky ReLU); measured on EfficientNet-Lite0 and yolov3-tiny, symmetric activations lost far more.
ONNXRUNTIME_CPU = QdqEncoding("onnxruntime-cpu", "uint8", False, True)
#: TensorRT: signed int8, zero point 0, for activations and weights alike; float biases, which it folds into its
#: int8 kernels itself (its Q/DQ layers take int8 and fp8, not int32).
TENSORRT = QdqEncoding("tensorrt", "int8", True, False)


def quantize(inputs: "BuildInputs", encoding: QdqEncoding, out_file: Path) -> None:
    """Write the Q/DQ model of ``inputs``' network in ``encoding``: MinMax-calibrated activations, per-channel
    int8 weights; the float tail (see float_tail) and ``inputs.keep_float`` stay in float.

    MinMax, measured on EfficientNet-Lite0 and yolov3-tiny (16 photos): Entropy matched it (82% of FP32's boxes),
    Percentile 99.999 did worse (77%); the accuracy gate then keeps the costliest nodes in float."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    if inputs.calibration is None:
        raise UserError(f"{encoding.name} int8 needs calibration data (--calib-dir)")

    class Reader(CalibrationDataReader):
        def __init__(self, batches: Iterator[dict]) -> None:
            self.batches = batches

        def get_next(self) -> dict | None:
            return next(self.batches, None)

    with tempfile.TemporaryDirectory(prefix="trtrepo-quant-") as scratch:
        model = prepared(inputs.onnx_path, Path(scratch))
        ranges = inputs.calibration.ranges_file(inputs.onnx_path)
        quantize_static(
            str(model),
            str(out_file),
            Reader(inputs.calibration.batches(inputs.spec)),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8 if encoding.activations == "uint8" else QuantType.QInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=float_tail(model) + list(inputs.keep_float),
            extra_options={"ActivationSymmetric": encoding.symmetric_activations, "WeightSymmetric": True,
                           "QuantizeBias": encoding.int32_biases},
            calibration_cache_path=str(ranges) if ranges else None,
        )


#: Nodes whose weights ONNX Runtime's WeightBiasQuantization quantizes when they are left in float (see below).
WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm")


def feed_float_nodes_per_channel(qdq_model: Path) -> int:
    """Keep the Conv/ConvTranspose/Gemm nodes that quantization left in float really in float under ONNX Runtime;
    returns how many were changed.

    ONNX Runtime's level-1 WeightBiasQuantization transformer quantizes the float weights of any such node whose
    first input comes from a per-tensor DequantizeLinear (and, in 1.32, whose output is quantized), to symmetric
    **per-tensor** int8 (coarser than the per-channel weights quantization gave the node), so a node "kept in
    float" ran worse than quantized
    (EfficientNet-Lite0's 16 depthwise convolutions in float: 0.62 top-1 agreement, 0.92 with graph optimizations
    off). The transformer leaves a node alone whose input's DequantizeLinear is per-axis; so each such node gets
    its own DequantizeLinear of the same tensor, per channel with every channel's scale and zero point equal:
    the same values, in float. For ONNX Runtime only (TensorRT takes per-tensor activations)."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(qdq_model))
    graph = model.graph
    producers = {output: node for node in graph.node for output in node.output}
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    nodes, changed = [], 0
    for node in graph.node:
        parent = producers.get(node.input[0]) if node.op_type in WEIGHTED_OPS else None
        channels = _input_channels(node, initializers) if parent is not None else None
        if (channels and parent.op_type == "DequantizeLinear" and parent.input[1] in initializers
                and numpy_helper.to_array(initializers[parent.input[1]]).size == 1):
            scale = numpy_helper.to_array(initializers[parent.input[1]]).reshape(())
            zero = (numpy_helper.to_array(initializers[parent.input[2]]).reshape(())
                    if len(parent.input) > 2 and parent.input[2] in initializers else np.zeros((), np.uint8))
            name = f"{node.name}_input_per_channel"
            graph.initializer.extend([numpy_helper.from_array(np.full(channels, scale, scale.dtype), f"{name}_scale"),
                                      numpy_helper.from_array(np.full(channels, zero, zero.dtype), f"{name}_zero_point")])
            nodes.append(helper.make_node("DequantizeLinear", [parent.input[0], f"{name}_scale", f"{name}_zero_point"],
                                          [name], name=name, axis=1))
            node.input[0] = name
            changed += 1
        nodes.append(node)
    if changed:
        del graph.node[:]
        graph.node.extend(nodes)
        onnx.save(model, str(qdq_model))
    return changed


def _input_channels(node: "onnx.NodeProto", initializers: dict) -> int | None:
    """The channels of a weighted node's first input (axis 1), read off its float weight; None where its weight
    is not a float initializer (it was quantized) or the layout is one the per-axis form does not fit."""
    from onnx import TensorProto, helper

    weight = initializers.get(node.input[1]) if len(node.input) > 1 else None
    if weight is None or weight.data_type != TensorProto.FLOAT:
        return None
    attributes = {attribute.name: helper.get_attribute_value(attribute) for attribute in node.attribute}
    if node.op_type == "Conv":
        return weight.dims[1] * attributes.get("group", 1)
    if node.op_type == "ConvTranspose":
        return weight.dims[0]
    if attributes.get("transA", 0):
        return None
    return weight.dims[1] if attributes.get("transB", 0) else weight.dims[0]


def float_candidates(inputs: "BuildInputs", qdq_model: Path) -> list[str]:
    """The quantized nodes of ``qdq_model``, ranked by the relative error each adds to its output over the float
    model's (per-layer outputs of both on the first calibration batches): most first."""

    if inputs.calibration is None:
        return []
    with tempfile.TemporaryDirectory(prefix="trtrepo-quant-") as scratch:
        model = prepared(inputs.onnx_path, Path(scratch))
        left_float = set(float_tail(model)) | set(inputs.keep_float)
        batches = itertools.islice(inputs.calibration.batches(inputs.spec), SENSITIVITY_BATCHES)
        rows = tensor_errors(model, qdq_model, batches)
    ranked = sorted((row for row in rows if row.origin and row.origin not in left_float and row.growth > 0),
                    key=lambda row: -row.growth)
    return list(dict.fromkeys(row.origin for row in ranked))


def prepared(onnx_path: Path, scratch: Path) -> Path:
    """The graph quantization starts from: ONNX shape inference and graph optimization only (ORT's symbolic shape
    inference gives up on graphs such as YOLO's in-graph decoding, and static quantization does not need it)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    model = scratch / "prepared.onnx"
    quant_pre_process(str(onnx_path), str(model), skip_symbolic_shape=True)
    return model


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
