"""Every intermediate tensor of two ONNX models on the same inputs, and where they part: the per-layer view that
Polygraphy's `run --onnx-outputs mark all` gives, reduced to one row per tensor the two models share.

A tensor X of model A is compared with what B's consumers of X see: ``X_DequantizeLinear_Output`` where B is a
QDQ model that quantizes X (ONNX Runtime's QDQ format), else B's X. A quantizer may fold an activation into the
convolution before it (Conv -> Clip becomes one Conv whose output range does the clipping), so a tensor B lacks is
skipped and its error laid to the convolution or matrix product that writes it.

The accuracy gate's mixed-precision search ranks nodes by how much error each adds (its output's error less its
inputs'); `trtrepo compare` reports the rows.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from trtrepo.engines.ort_session import session_options


#: The suffix ONNX Runtime's QDQ quantizer gives the dequantized copy of a tensor.
DEQUANTIZED = "_DequantizeLinear_Output"
#: Nodes whose weights a quantizer rounds: the ones mixed precision keeps in float.
PRODUCTS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})


@dataclass(frozen=True)
class TensorError:
    """One tensor of model A against the same-named tensor of model B, over every input given."""

    name: str
    node: str  # the node of model A that writes it
    op: str
    depth: int  # the node's position in model A's topological order
    max_abs: float
    mean_abs: float
    relative: float  # ||B - A|| / ||A||
    cosine: float
    growth: float  # relative error less the largest relative error among the node's inputs
    origin: str  # the node the growth is laid to: the writer, or the convolution or matrix product before it


def _marked_session(path: Path, threads: int):
    """An ONNX Runtime session whose outputs are every tensor of the model (Polygraphy's mark-all)."""
    import onnx
    import onnxruntime as ort
    from polygraphy import constants
    from polygraphy.backend.onnx import modify_outputs

    model = modify_outputs(onnx.load(str(path)), outputs=constants.MARK_ALL)
    options = session_options(threads)
    options.log_severity_level = 3
    # The graph's own arithmetic (QDQ as written): fusions cannot produce the tensors they fuse away anyway, and
    # ONNX Runtime 1.32 fails to fuse a QDQ graph whose every tensor is an output.
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session, [output.name for output in session.get_outputs()]


class ErrorSums:
    """Running sums that give max/mean absolute error, relative error and cosine over many batches."""

    def __init__(self) -> None:
        self.max_abs = self.abs_sum = self.diff_sq = self.a_sq = self.b_sq = self.dot = 0.0
        self.count = 0

    def add(self, a: np.ndarray, b: np.ndarray) -> None:
        a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
        diff = np.abs(b - a)
        self.max_abs = max(self.max_abs, float(diff.max(initial=0.0)))
        self.abs_sum += float(diff.sum())
        self.diff_sq += float(diff @ diff)
        self.a_sq += float(a @ a)
        self.b_sq += float(b @ b)
        self.dot += float(a @ b)
        self.count += a.size

    def relative(self) -> float:
        return float(np.sqrt(self.diff_sq / self.a_sq)) if self.a_sq else float(self.diff_sq > 0)

    def cosine(self) -> float:
        norms = np.sqrt(self.a_sq * self.b_sq)
        return float(self.dot / norms) if norms else 1.0


def tensor_errors(model_a: Path, model_b: Path, feeds: Iterable[dict[str, np.ndarray]], threads: int = 0) -> list[TensorError]:
    """Every floating-point tensor the two models share by name (graph inputs aside), in model A's order."""
    import onnx

    session_a, names_a = _marked_session(model_a, threads)
    session_b, names_b = _marked_session(model_b, threads)
    in_b = set(names_b)
    counterpart = {name: f"{name}{DEQUANTIZED}" if f"{name}{DEQUANTIZED}" in in_b else name
                   for name in names_a if name in in_b or f"{name}{DEQUANTIZED}" in in_b}
    sums = {name: ErrorSums() for name in counterpart}
    for feed in feeds:
        out_a = dict(zip(names_a, session_a.run(names_a, feed)))
        out_b = dict(zip(names_b, session_b.run(names_b, feed)))
        for name, other in counterpart.items():
            a, b = out_a[name], out_b[other]
            if a.dtype.kind == "f" and b.dtype.kind == "f" and a.shape == b.shape:
                sums[name].add(a, b)
    nodes = onnx.load(str(model_a), load_external_data=False).graph.node
    writer = {output: (depth, node) for depth, node in enumerate(nodes) for output in node.output}
    relative = {name: s.relative() for name, s in sums.items() if s.count}

    @functools.cache
    def error_at(tensor: str) -> float:
        """The tensor's error, or where it was not compared, the largest among what it was computed from."""
        if tensor in relative:
            return relative[tensor]
        if tensor not in writer:
            return 0.0  # a graph input or a weight
        return max((error_at(source) for source in writer[tensor][1].input), default=0.0)

    def origin(node):
        """The node itself, or up a chain of uncompared single-input activations, the product that feeds it."""
        while node.op_type not in PRODUCTS:
            sources = [source for source in node.input if source in writer]
            if len(sources) != 1 or sources[0] in relative:
                break
            node = writer[sources[0]][1]
        return node

    rows = []
    for name, s in sums.items():
        if not s.count or name not in writer:
            continue
        depth, node = writer[name]
        start = origin(node)
        before = max((error_at(source) for source in start.input), default=0.0)
        rows.append(TensorError(name, node.name, node.op_type, depth, s.max_abs, s.abs_sum / s.count,
                                relative[name], s.cosine(), relative[name] - before, start.name))
    return sorted(rows, key=lambda row: row.depth)
