"""Eager PyTorch: the conventional deployment, the study's baseline columns (FP32, and FP16 on a GPU).

On a GPU it is also the best engine this workplace can run where TensorRT cannot: FP16, channels-last
memory layout, cuDNN autotuning and, when the config asks for CUDA graphs, one captured graph per batch shape.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from trtrepo.engines.base import BuildInputs, Engine, GpuRunner, Runner, cuda_available
from trtrepo.engines.cuda_graphs import CudaGraphs
from trtrepo.engines.torch_settings import with_settings

if TYPE_CHECKING:
    import torch

    from trtrepo.specs import ModelSpec


class PyTorchEngine(Engine):
    name = "pytorch"
    precisions = ("fp32", "fp16")
    artifact = "model.pt"
    runs_the_network = True

    def unavailable(self, precision: str) -> str | None:
        if precision == "fp16" and not cuda_available():
            return "pytorch fp16 runs on a CUDA GPU and none is visible"
        return None

    def build(self, inputs: BuildInputs, precision: str, out_file: Path) -> None:
        """The network as its spec saves it (a state dict); FP16 conversion happens at load, on the GPU."""
        inputs.spec.save_network(inputs.network, out_file)

    def load(self, spec: "ModelSpec", artifact: Path, precision: str, device: str, threads: int) -> Runner:
        import torch

        target = torch.device("cuda" if device == "gpu" and torch.cuda.is_available() else "cpu")
        dtype = torch.float16 if precision == "fp16" else torch.float32
        return with_settings(network_runner(spec, spec.build_network(str(artifact)).to(target, dtype)), threads=threads)

    def load_on_gpu(
        self, spec: "ModelSpec", artifact: Path, precision: str, device_id: int, graph_batch_sizes: tuple[int, ...]
    ) -> GpuRunner:
        import torch

        device = torch.device("cuda", device_id)
        torch.cuda.set_device(device)  # one instance per process: its streams and graphs live on this GPU
        # With graphs, batch shapes are few (padded to graph_batch_sizes): cuDNN may time its algorithms once each.
        # Without, every new batch size would stall on that timing, so the eager path keeps PyTorch's default.
        autotune = bool(graph_batch_sizes)
        dtype = torch.float16 if precision == "fp16" else torch.float32
        # FP16 convolution nets run fastest on tensor cores in NHWC; FP32 stays the conventional layout (the baseline).
        images = all(len(t.shape) == 3 for t in spec.inputs)
        layout = torch.channels_last if images and precision == "fp16" else torch.contiguous_format
        network = spec.build_network(str(artifact)).to(device, dtype)
        for module in network.modules():  # only convolution weights: other parameters (anchors) are not 4-D
            if isinstance(module, torch.nn.Conv2d):
                module.to(memory_format=layout)
        input_names = [t.name for t in spec.inputs]
        output_names = [t.name for t in spec.outputs]

        def forward(inputs: list["torch.Tensor"]) -> list["torch.Tensor"]:
            with torch.inference_mode():
                result = network(*[x.to(dtype).contiguous(memory_format=layout) for x in inputs])
                result = result if isinstance(result, (tuple, list)) else (result,)
                return [r.float() for r in result]

        forward = with_settings(forward, cudnn_benchmark=autotune)
        step = CudaGraphs(forward, graph_batch_sizes) if graph_batch_sizes else forward

        def run(batch: dict) -> dict:
            return dict(zip(output_names, step([batch[n].to(device, non_blocking=True) for n in input_names])))

        return run


def network_runner(spec: "ModelSpec", network: "torch.nn.Module") -> Runner:
    """A PyTorch network as a runner: numpy in, float32 numpy out, on the network's device and in its dtype."""
    import torch

    parameter = next(network.parameters())
    input_names = [t.name for t in spec.inputs]
    output_names = [t.name for t in spec.outputs]

    def run(batch: dict) -> dict:
        with torch.inference_mode():
            args = [torch.from_numpy(np.ascontiguousarray(batch[n])).to(parameter.device, parameter.dtype) for n in input_names]
            result = network(*args)
        result = result if isinstance(result, (tuple, list)) else (result,)
        return {n: r.float().cpu().numpy() for n, r in zip(output_names, result)}

    return run
