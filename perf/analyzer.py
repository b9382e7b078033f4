"""perf_analyzer, the load generator: find it, run one measurement, parse its CSV."""

from __future__ import annotations

import csv
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, fields
from pathlib import Path

from trtrepo.errors import UserError


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

    @classmethod
    def columns(cls) -> list[str]:
        return [f.name for f in fields(cls)]


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
    shapes_of: str | None = None,
) -> PerfPoint:
    """Run perf_analyzer once against a loaded model (gRPC, random input data) and return its figures.

    Variable input dimensions get the typical shape of ``shapes_of``'s spec (default: the variant's own).
    A measurement window that saw too few requests is retried with a window twice as long, twice.
    """
    shapes = request_shapes(shapes_of or variant)
    for attempt in range(3):
        row, error = _run_perf_analyzer(variant, grpc_url, batch_size, concurrency, measurement_ms << attempt, shapes)
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
    )


def request_shapes(variant: str) -> list[str]:
    """perf_analyzer --shape arguments for inputs with variable dimensions, at the spec's typical size."""
    from trtrepo.config import Variant
    from trtrepo.models import MODELS, get_model

    if not Variant.is_variant(variant) or Variant.parse(variant).model not in MODELS:
        return []
    spec = get_model(Variant.parse(variant).model)
    shapes = [(t.name, spec.shape_range(t)[1]) for t in spec.inputs if -1 in t.shape]
    return [argument for name, shape in shapes for argument in ("--shape", f"{name}:{','.join(map(str, shape))}")]


def _run_perf_analyzer(
    variant: str, grpc_url: str, batch_size: int, concurrency: int, measurement_ms: int, shapes: list[str]
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
            *shapes,
        ]
        result = subprocess.run(command, capture_output=True, text=True, env=env)
        if result.returncode == 0 and report.is_file():
            return next(csv.DictReader(report.open())), ""
    lines = [line.strip() for line in (result.stderr + result.stdout).splitlines() if line.strip()] or ["no output"]
    telling = [line for line in lines if any(word in line.lower() for word in ("error", "fail", "no valid", "unable"))]
    return None, (telling or lines)[-1]
