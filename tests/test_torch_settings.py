"""PyTorch's process-wide switches stay with the engine that sets them (trtrepo.engines.torch_settings): `trtrepo
bench` runs every variant in one process, so the eager FP32 baseline measured after an Inductor variant must run
with the switches it has when measured alone (no TF32, no freezing, its own thread count)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch._inductor.config  # noqa: F401  (current() reports freezing from here on)

from trtrepo.engines import inductor
from trtrepo.engines.pytorch import PyTorchEngine
from trtrepo.engines.torch_settings import current, torch_settings
from trtrepo.specs import CLASSIFICATION, ModelSpec, TensorSpec

SEEN: list[dict] = []


class Recording(torch.nn.Module):
    """Records the switches in effect each time it runs."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        SEEN.append(current())
        return self.conv(x).mean(dim=(2, 3))


class Tiny(ModelSpec):
    name, task = "tiny", CLASSIFICATION
    inputs = (TensorSpec("input", "float32", (3, 8, 8)),)
    outputs = (TensorSpec("logits", "float32", (3,)),)

    def build_network(self, weights: str) -> torch.nn.Module:
        return Recording().eval()

    def preprocess_image(self, image): ...

    def postprocess(self, outputs, top_k=5): ...


def test_the_eager_baseline_after_an_inductor_variant_runs_with_the_switches_it_has_alone(monkeypatch):
    monkeypatch.setattr(torch, "compile", lambda network, **_: network)  # Inductor's switches, not its compiler
    before = current()
    batch = {"input": np.zeros((2, 3, 8, 8), np.float32)}
    threads = 1 if torch.get_num_threads() > 1 else 2
    baseline = PyTorchEngine().load(Tiny(), Path("weights"), "fp32", "cpu", threads)
    baseline(batch)
    alone = SEEN[-1]
    assert alone["threads"] == threads and not alone["matmul_tf32"] and not alone["inductor_freezing"]
    assert current() == before  # loading and running it changed nothing outside its calls

    fast = inductor.compiled_forward(Tiny(), Tiny().build_network("random"), "fp32", "default", torch.device("cpu"),
                                     freezing=True)
    fast([torch.zeros(2, 3, 8, 8)])
    inside = SEEN[-1]
    assert inside["matmul_tf32"] and inside["cudnn_tf32"] and inside["inductor_freezing"]
    assert current() == before

    baseline(batch)
    assert SEEN[-1] == alone


def test_switches_come_back_when_the_block_fails():
    before = current()
    with pytest.raises(RuntimeError), torch_settings(tf32=not before["matmul_tf32"], cudnn_benchmark=True,
                                                     inductor_freezing=True):
        assert current()["matmul_tf32"] is not before["matmul_tf32"] and current()["inductor_freezing"]
        raise RuntimeError("a build that fails")
    assert current() == before
