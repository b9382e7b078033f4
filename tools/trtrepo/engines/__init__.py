"""The engine registry: one module per engine, registered here by name."""

from __future__ import annotations

from trtrepo.engines.base import BuildInputs, Engine, Runner
from trtrepo.engines.inductor import InductorEngine
from trtrepo.engines.onnxruntime import OnnxRuntimeEngine
from trtrepo.engines.pytorch import PyTorchEngine
from trtrepo.engines.tensorflow import TensorFlowEngine
from trtrepo.engines.tensorrt import TensorRTEngine
from trtrepo.errors import UserError


ENGINES: dict[str, type[Engine]] = {
    "onnxruntime": OnnxRuntimeEngine, "pytorch": PyTorchEngine, "inductor": InductorEngine, "tensorrt": TensorRTEngine,
    "tensorflow": TensorFlowEngine,
}

__all__ = ["ENGINES", "BuildInputs", "Engine", "Runner", "get_engine"]


def get_engine(name: str) -> Engine:
    """The engine registered under ``name``, or a one-line error listing the known ones."""
    try:
        return ENGINES[name]()
    except KeyError:
        raise UserError(f"unknown engine {name!r}; known: {', '.join(sorted(ENGINES))}") from None
