"""Eager PyTorch: the conventional deployment, the study's baseline columns (FP32, and FP16 on a GPU)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from trtrepo.engines.base import BuildInputs, Engine, Runner, cuda_available

if TYPE_CHECKING:
    from trtrepo.specs import ModelSpec


class PyTorchEngine(Engine):
    name = "pytorch"
    precisions = ("fp32", "fp16")
    artifact = "model.pt"

    def unavailable(self, precision: str) -> str | None:
        if precision == "fp16" and not cuda_available():
            return "pytorch fp16 runs on a CUDA GPU and none is visible"
        return None

    def build(self, inputs: BuildInputs, precision: str, out_file: Path) -> None:
        """The state dict; FP16 conversion happens at load, on the GPU."""
        import torch

        torch.save(inputs.network.state_dict(), out_file)

    def load(self, spec: "ModelSpec", artifact: Path, precision: str, device: str, threads: int) -> Runner:
        import torch

        torch.set_num_threads(threads)
        target = torch.device("cuda" if device == "gpu" and torch.cuda.is_available() else "cpu")
        dtype = torch.float16 if precision == "fp16" else torch.float32
        network = spec.build_network(str(artifact)).to(target, dtype)
        input_names = [t.name for t in spec.inputs]
        output_names = [t.name for t in spec.outputs]

        def run(batch: dict) -> dict:
            with torch.inference_mode():
                args = [torch.from_numpy(np.ascontiguousarray(batch[n])).to(target, dtype) for n in input_names]
                result = network(*args)
            result = result if isinstance(result, (tuple, list)) else (result,)
            return {n: r.float().cpu().numpy() for n, r in zip(output_names, result)}

        return run
