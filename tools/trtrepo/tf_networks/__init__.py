"""Keras twins of trtrepo's PyTorch networks, for the TensorFlow engine: the same layers, in TensorFlow's own
NHWC layout, carrying the PyTorch network's weights.

Built natively rather than converted from ONNX (onnx2tf): the graph is the one a TensorFlow user would write
(Keras layers, no converter transposes), so the TensorFlow baseline is TensorFlow at its best, and onnx2tf's
exact pins (onnx, onnxruntime, protobuf) would have replaced the versions every other engine uses. Each twin takes
NCHW input and returns the PyTorch network's outputs, so clients and configs are shared with the other engines.
A model opts in through ``ModelSpec.keras_twin`` ("module:function"); trtrepo.engines.tensorflow checks each twin
against its network at build time.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import keras
    import torch

    from trtrepo.specs import ModelSpec


def import_tensorflow():
    """TensorFlow, imported so that it can share the process with PyTorch: OpenAI Triton's compiler library
    (which torch._dynamo, and with it torchvision.ops, imports) segfaults when it loads after TensorFlow's (both
    carry LLVM), and not the other way round, so Triton goes first where it is installed. TensorFlow's C++
    start-up notices (CPU features, oneDNN) are off: they would fill every build log and stub's stderr."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if importlib.util.find_spec("triton") is not None:
        importlib.import_module("triton")

    import tensorflow

    return tensorflow


def keras_twin(spec: "ModelSpec", network: "torch.nn.Module") -> "keras.Model":
    """The Keras twin of ``spec``'s ``network``, with its weights (spec.keras_twin names the builder)."""
    import_tensorflow()
    module, function = spec.keras_twin.split(":")
    return getattr(importlib.import_module(f"trtrepo.tf_networks.{module}"), function)(spec, network)
