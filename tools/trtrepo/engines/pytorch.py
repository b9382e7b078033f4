"""Eager PyTorch: the conventional deployment, the study's baseline column."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from trtrepo.engines.base import Engine, Runner

if TYPE_CHECKING:
    import torch

    from trtrepo.specs import ModelSpec


class PyTorchEngine(Engine):
    name = "pytorch"
    precisions = ("fp32",)
    artifact = "model.pt"

    def build(self, network: "torch.nn.Module", onnx_path: Path, precision: str, out_file: Path) -> None:
        import torch

        torch.save(network.state_dict(), out_file)

    def load(self, spec: "ModelSpec", artifact: Path, precision: str, device: str, threads: int) -> Runner:
        import torch

        torch.set_num_threads(threads)
        target = torch.device("cuda" if device == "gpu" and torch.cuda.is_available() else "cpu")
        network = spec.build_network(str(artifact)).to(target)
        input_names = [t.name for t in spec.inputs]
        output_names = [t.name for t in spec.outputs]

        def run(batch: dict) -> dict:
            with torch.inference_mode():
                args = [torch.from_numpy(np.ascontiguousarray(batch[n])).to(target) for n in input_names]
                result = network(*args)
            result = result if isinstance(result, (tuple, list)) else (result,)
            return {n: r.float().cpu().numpy() for n, r in zip(output_names, result)}

        return run
