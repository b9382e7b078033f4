"""ONNX Runtime: the exported ONNX graph, served natively by Triton's onnxruntime backend where present."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from trtrepo.engines.base import Engine, Runner

if TYPE_CHECKING:
    import torch

    from trtrepo.specs import ModelSpec


class OnnxRuntimeEngine(Engine):
    name = "onnxruntime"
    precisions = ("fp32",)
    artifact = "model.onnx"
    native_backend = "onnxruntime"
    native_platform = "onnxruntime_onnx"

    def build(self, network: "torch.nn.Module", onnx_path: Path, precision: str, out_file: Path) -> None:
        shutil.copyfile(onnx_path, out_file)

    def load(self, spec: "ModelSpec", artifact: Path, precision: str, device: str, threads: int) -> Runner:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        providers = ["CPUExecutionProvider"]
        if device == "gpu" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        session = ort.InferenceSession(str(artifact), options, providers=providers)
        names = [o.name for o in spec.outputs]

        def run(batch: dict) -> dict:
            return dict(zip(names, session.run(names, batch)))

        return run
