"""perf_analyzer, the load generator: find it, run one measurement, parse its CSV."""

from __future__ import annotations

import csv
import functools
import importlib.util
import math
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from trtrepo.access import find_key, key_headers
from trtrepo.errors import UserError
from trtrepo.perf.gpu_monitor import GpuUtilization

if TYPE_CHECKING:
    from trtrepo.specs import ModelSpec


@dataclass(frozen=True)
class PerfPoint:
    """One perf_analyzer measurement. Throughput counts samples (requests x batch) per second; times in ms."""

    variant: str
    instances: int
    concurrency: int
    batch_size: int
    throughput: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    queue_ms: float
    compute_ms: float
    gpu_util_pct: float | None = None  # mean over the run (warm-up windows included); None without a GPU


def find_perf_analyzer() -> tuple[Path, dict[str, str]]:
    """perf_analyzer from this environment's tritonclient wheel (or PATH), with libcudart.so.12 on its path."""
    beside_python = Path(sys.executable).parent / "perf_analyzer"
    found = beside_python if beside_python.is_file() else shutil.which("perf_analyzer")
    if not found:
        raise UserError("perf_analyzer not found; `make install` brings it with tritonclient[all]==2.50")
    env = dict(os.environ)
    cuda = importlib.util.find_spec("nvidia.cuda_runtime")
    if cuda is not None and cuda.submodule_search_locations:
        lib = Path(list(cuda.submodule_search_locations)[0]) / "lib"
        env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (str(lib), env.get("LD_LIBRARY_PATH", "")) if p)
    return Path(found), env


RETRYABLE = ("No valid requests", "stable measurement")  # windows too short for a slow or busy server


def measure(
    variant: str, grpc_url: str, batch_size: int, concurrency: int, measurement_ms: int, instances: int,
    shapes_of: str | None = None, on_gpu: bool = False, metrics_url: str | None = None, streaming: bool = False,
    api_key: str | None = None, attempts: int = 3,
) -> PerfPoint:
    """Run perf_analyzer once against a loaded model (gRPC, random input data) and return its figures.

    Variable input dimensions get the typical shape of ``shapes_of``'s spec (default: the variant's own).
    ``on_gpu``: the model's instances run on a GPU, so requests carry their tensors in CUDA shared memory (as
    a client on the server's machine would), which the Python backend receives without a host round trip.
    GPU utilisation is sampled meanwhile (``metrics_url``: Triton's, else NVML). ``streaming``: the model is
    decoupled (pipelined), so requests go over a gRPC stream. ``api_key`` (else the one trtrepo.access finds
    for the URL) opens a restricted server's model-config and shared-memory APIs, which perf_analyzer uses.
    A measurement window that saw too few requests is retried with a window twice as long, up to ``attempts`` runs.
    """
    arguments = request_shapes(shapes_of or variant) + (cuda_shared_memory(variant, batch_size) if on_gpu else [])
    # A thread per stream, so that a too small thread pool cannot cap the concurrency (on the H100 the pipelined
    # ResNet50 sweep measured the same with and without it).
    arguments += ["--streaming", "--max-threads", str(max(concurrency, 4))] if streaming else []
    # perf_analyzer's -H reaches gRPC metadata too, despite its --help (tried with tritonclient 2.50's binary).
    arguments += [a for name, value in key_headers(find_key(grpc_url, api_key), "grpc").items() for a in ("-H", f"{name}:{value}")]
    for attempt in range(attempts):
        with GpuUtilization(metrics_url) as gpu:
            row, error = _run_perf_analyzer(variant, grpc_url, batch_size, concurrency, measurement_ms << attempt, arguments)
        if row is not None:
            break
        if not any(marker in error for marker in RETRYABLE):
            break
    if row is None:
        hint = "; install Debian's libb64-0d" if "libb64" in error else ""
        raise UserError(f"perf_analyzer on {variant} failed: {error}{hint}")
    return PerfPoint(
        variant=variant,
        instances=instances,
        concurrency=concurrency,
        batch_size=batch_size,
        throughput=float(row["Inferences/Second"]),
        p50_ms=float(row["p50 latency"]) / 1000,
        p95_ms=float(row["p95 latency"]) / 1000,
        p99_ms=float(row["p99 latency"]) / 1000,
        queue_ms=float(row["Server Queue"]) / 1000,
        compute_ms=sum(float(row[k]) for k in ("Server Compute Input", "Server Compute Infer", "Server Compute Output")) / 1000,
        gpu_util_pct=gpu.percent,
    )


def _spec_of(variant: str) -> "ModelSpec | None":
    from trtrepo.config import Variant
    from trtrepo.models import MODELS, get_model

    if not Variant.is_variant(variant) or Variant.parse(variant).model not in MODELS:
        return None
    return get_model(Variant.parse(variant).model)


def request_shapes(variant: str) -> list[str]:
    """perf_analyzer --shape arguments for inputs with variable dimensions, at the spec's typical size."""
    spec = _spec_of(variant)
    if spec is None:
        return []
    shapes = [(t.name, spec.shape_range(t)[1]) for t in spec.inputs if -1 in t.shape]
    return [argument for name, shape in shapes for argument in ("--shape", f"{name}:{','.join(map(str, shape))}")]


def cuda_shared_memory(variant: str, batch_size: int) -> list[str]:
    """perf_analyzer arguments for CUDA shared memory, its output regions sized for the largest output.

    perf_analyzer sizes regions from the model's output dims, except where they vary with the input (CTPN): those
    take the size given here, from the output shapes at the requests' input shape (perf_analyzer sends inputs at
    the spec's typical shape, see request_shapes).
    """
    spec = _spec_of(variant)
    if spec is None:
        return []
    return ["--shared-memory", "cuda", "--output-shared-memory-size", str(batch_size * _largest_output_bytes(spec.name))]


@functools.cache
def _largest_output_bytes(model: str) -> int:
    """Bytes of the model's largest output per sample at the typical input shape (cached: it may run the network)."""
    from trtrepo.models import get_model

    spec = get_model(model)
    dtypes = {t.name: np.dtype(t.dtype) for t in spec.outputs}
    return max(math.prod(shape) * dtypes[name].itemsize for name, shape in spec.typical_output_shapes().items())


def _run_perf_analyzer(
    variant: str, grpc_url: str, batch_size: int, concurrency: int, measurement_ms: int, arguments: list[str]
) -> tuple[dict | None, str]:
    """perf_analyzer's CSV row, or None and its most telling output line."""
    binary, env = find_perf_analyzer()
    with tempfile.TemporaryDirectory(prefix="trtrepo-pa-") as scratch:
        report = Path(scratch) / "pa.csv"
        command = [
            str(binary), "-m", variant, "-u", grpc_url, "-i", "grpc", "-b", str(batch_size),
            "--concurrency-range", f"{concurrency}:{concurrency}",
            "--measurement-interval", str(measurement_ms),
            # Three windows are measured; a noisy CPU rarely meets the default 10% stability, so accept them.
            "--max-trials", "3", "--stability-percentage", "999",
            "-f", str(report),
            *arguments,
        ]
        result = subprocess.run(command, capture_output=True, text=True, env=env)
        if result.returncode == 0 and report.is_file():
            return next(csv.DictReader(report.open())), ""
    lines = [line.strip() for line in (result.stderr + result.stdout).splitlines() if line.strip()] or ["no output"]
    telling = [line for line in lines if any(word in line.lower() for word in ("error", "fail", "no valid", "unable"))]
    return None, (telling or lines)[-1]
