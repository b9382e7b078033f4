"""PyTorch -> ONNX with a dynamic batch axis, checked by onnx.checker and by parity with PyTorch."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from trtrepo.errors import UserError
from trtrepo.specs import ModelSpec


OPSET = 17
PARITY_TOLERANCE = 1e-3
PARITY_BATCH = 2


@dataclass(frozen=True)
class ExportReport:
    path: Path
    max_abs_diff: float


def export_onnx(spec: ModelSpec, network: torch.nn.Module, out_file: Path) -> ExportReport:
    """Export, check the graph, and compare ONNX Runtime against PyTorch on a random batch."""
    out_file = Path(out_file)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    partial = out_file.with_name(f".{out_file.name}.partial")  # renamed into place once checked: never half a file
    try:
        diff = _export_checked(spec, network, partial)
        os.replace(partial, out_file)
    finally:
        partial.unlink(missing_ok=True)
    return ExportReport(out_file, diff)


def _export_checked(spec: ModelSpec, network: torch.nn.Module, out_file: Path) -> float:
    """Export to ``out_file`` and check it; the parity difference."""
    import onnx

    # Images of their own sizes (an input with variable dimensions) are served one at a time: parity at batch 1.
    example = spec.example_batch(1 if any(-1 in t.shape for t in spec.inputs) else PARITY_BATCH)
    args = tuple(torch.from_numpy(example[t.name]) for t in spec.inputs)
    # The batch axis, and every axis a spec marks -1 (image height and width for CTPN), stay dynamic.
    dynamic = {t.name: {0: "batch", **{i + 1: f"{t.name}_{i + 1}" for i, d in enumerate(t.shape) if d == -1}}
               for t in (*spec.inputs, *spec.outputs)}
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            network,
            args,
            str(out_file),
            input_names=[t.name for t in spec.inputs],
            output_names=[t.name for t in spec.outputs],
            dynamic_axes=dynamic,
            opset_version=OPSET,
            dynamo=False,
        )
    onnx.checker.check_model(str(out_file))
    diff, scale = parity(spec, network, out_file, example)
    if diff > PARITY_TOLERANCE * scale:
        raise UserError(f"{out_file}: ONNX Runtime differs from PyTorch by {diff:.3g} "
                        f"(tolerance {PARITY_TOLERANCE} x output scale {scale:.3g})")
    return diff


def parity(spec: ModelSpec, network: torch.nn.Module, onnx_file: Path, batch: dict[str, np.ndarray]) -> tuple[float, float]:
    """Largest absolute difference between PyTorch's and ONNX Runtime's outputs on ``batch``, and the output
    scale it is judged against (at least 1; box coordinates in pixels reach hundreds)."""
    from trtrepo.engines import get_engine
    from trtrepo.engines.pytorch import network_runner

    ort_out = get_engine("onnxruntime").load(spec, onnx_file, "fp32", "cpu", threads=0)(batch)
    torch_out = network_runner(spec, network)(batch)
    pairs = [(ort_out[t.name], torch_out[t.name]) for t in spec.outputs]
    diff = max(float(np.abs(a - b).max()) for a, b in pairs)
    return diff, max(1.0, *(float(np.abs(b).max()) for _, b in pairs))
