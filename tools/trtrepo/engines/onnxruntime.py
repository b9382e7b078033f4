"""ONNX Runtime: FP32 with ORT's offline graph optimizations, INT8 by static QDQ quantization (trtrepo.engines.quantization).

Served natively by Triton's onnxruntime backend where the server has it, else through the Python backend. An INT8
build records the mode its quantized products ran in when it was gated (trtrepo.engines.ort_session says why the
mode depends on the CPU), and a machine that would serve it in the other mode says so at load.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from trtrepo.engines import quantization
from trtrepo.engines.base import BuildInputs, Engine, LoadNote, Runner
from trtrepo.engines.ort_session import session_options, u8s8_mode

if TYPE_CHECKING:
    from trtrepo.specs import ModelSpec

#: Beside an INT8 artifact: the U8S8 mode it was built and gated in (U8S8Mode.as_dict).
RECORD_FILE = "onnxruntime.json"


class OnnxRuntimeEngine(Engine):
    name = "onnxruntime"
    precisions = ("fp32", "int8")
    artifact = "model.onnx"
    native_backend = "onnxruntime"
    native_platform = "onnxruntime_onnx"

    def build(self, inputs: BuildInputs, precision: str, out_file: Path) -> None:
        if precision == "fp32":
            self._optimize(inputs.onnx_path, out_file)
            return
        quantization.quantize(inputs, quantization.ONNXRUNTIME_CPU, out_file)
        quantization.feed_float_nodes_per_channel(out_file)
        mode = u8s8_mode()
        out_file.with_name(RECORD_FILE).write_text(json.dumps(mode.as_dict(), indent=2) + "\n")
        inputs.log(f"{inputs.spec.name}: ONNX Runtime INT8 gated and served on this machine with {mode.line()}")

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

    def build_record(self, artifact: Path) -> dict:
        path = Path(artifact).with_name(RECORD_FILE)
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return {}

    def load_note(self, artifact: Path, precision: str) -> LoadNote | None:
        if precision != "int8":
            return None
        here = u8s8_mode()
        built = self.build_record(artifact).get("u8s8_mode")
        if built == here.name:
            return LoadNote(f"{here.line()}, as it was gated")
        gated = f"gated with U8S8 products in {built} mode" if built else "its build did not record the mode it was gated in"
        return LoadNote(f"{here.line()}, but {gated}: rebuild it on this machine (trtrepo repo --force) for an "
                        "accuracy gate of the mode it is served in", warning=True)
