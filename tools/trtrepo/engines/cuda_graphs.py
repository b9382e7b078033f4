"""CUDA graphs over any GPU forward pass (PyTorch networks, TensorRT plans, Inductor kernels): one graph per batch
size; and the padding of odd batches up to such sizes, which compiled engines use with or without graphs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    import torch


Forward = Callable[[list["torch.Tensor"]], list["torch.Tensor"]]
MAX_GRAPHS = 8  # captured shapes per instance; further shapes run eagerly


def bucket(count: int, sizes: list[int]) -> int | None:
    """The smallest of the (sorted) ``sizes`` that holds ``count`` samples, or None when none does."""
    return next((size for size in sizes if size >= count), None)


class Padded:
    """Runs every batch at the smallest of ``batch_sizes`` that holds it, padded with zeros and cut back after:
    a network compiled for those sizes never meets another (larger batches run as they are)."""

    def __init__(self, forward: Forward, batch_sizes: tuple[int, ...]) -> None:
        self.forward = forward
        self.batch_sizes = sorted(set(batch_sizes))

    def __call__(self, inputs: list["torch.Tensor"]) -> list["torch.Tensor"]:
        count = inputs[0].shape[0]
        size = bucket(count, self.batch_sizes)
        if size is None or size == count:
            return self.forward(inputs)
        padded = [x.new_zeros((size, *x.shape[1:])) for x in inputs]
        for buffer, x in zip(padded, inputs):
            buffer[:count].copy_(x)
        return [out[:count] for out in self.forward(padded)]


class CudaGraphs:
    """Replays captured CUDA graphs instead of launching each kernel from Python.

    One graph per batch size in ``batch_sizes`` (captured on first use); a batch is padded up to the next such
    size, so a dynamic batcher's odd sizes cost no new capture. Larger batches, or inputs whose other
    dimensions change, run eagerly. Graphs share one memory pool: replays are sequential on one stream and
    outputs are cloned at once, so a replay may reuse another graph's scratch memory safely.
    """

    def __init__(self, forward: Forward, batch_sizes: tuple[int, ...]) -> None:
        self.forward = forward
        self.batch_sizes = sorted(set(batch_sizes))
        self.graphs: dict[tuple, tuple] = {}
        self.pool = None

    def __call__(self, inputs: list["torch.Tensor"]) -> list["torch.Tensor"]:
        count = inputs[0].shape[0]
        size = bucket(count, self.batch_sizes)
        if size is None:
            return self.forward(inputs)
        key = tuple((size, *x.shape[1:], x.dtype) for x in inputs)
        if key not in self.graphs:
            if len(self.graphs) >= MAX_GRAPHS:
                return self.forward(inputs)
            self.graphs[key] = self._capture([x.new_zeros((size, *x.shape[1:])) for x in inputs])
        graph, static_inputs, static_outputs = self.graphs[key]
        for buffer, x in zip(static_inputs, inputs):
            buffer[:count].copy_(x, non_blocking=True)
        graph.replay()
        return [out[:count].clone() for out in static_outputs]

    def _capture(self, static_inputs: list["torch.Tensor"]) -> tuple:
        import torch

        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up: cuDNN autotuning and allocations stay out of the graph
            for _ in range(3):
                self.forward(static_inputs)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            static_outputs = self.forward(static_inputs)
        self.pool = self.pool or graph.pool()
        return graph, static_inputs, static_outputs
