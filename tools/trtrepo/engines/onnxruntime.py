"""ONNX Runtime: FP32 with ORT's offline graph optimizations, INT8 by static QDQ quantization (trtrepo.engines.quantization).

Served natively by Triton's onnxruntime backend where the server has it, else through the Python backend.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from trtrepo.engines import quantization
from trtrepo.engines.base import BuildInputs, Engine, Runner
from trtrepo.engines.ort_session import session_options

if TYPE_CHECKING:
    from trtrepo.specs import ModelSpec


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
            quantization.quantize(inputs, quantization.ONNXRUNTIME_CPU, out_file)

    @staticmethod
    def _optimize(onnx_path: Path, out_file: Path) -> None:
        """Save the graph after ORT's extended (hardware-independent) fusions, so loading skips that work."""
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        options.optimized_model_filepath = str(out_file)
        ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])

    def float_candidates(self, inputs: BuildInputs, precision: str, artifact: Path) -> list[str]:
        return quantization.float_candidates(inputs, artifact) if precision == "int8" else []

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
