"""perf_analyzer, the load generator: find it, run one measurement, parse its CSV."""

from __future__ import annotations

import base64
import csv
import functools
import importlib.util
import json
import math
import os
import re
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from trtrepo.errors import UserError
from trtrepo.perf.gpu_monitor import GpuUtilization
from trtrepo.serving.access import find_key, key_headers

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
    servers: int = 1  # servers measured at once, the concurrency split among them
    #: Half-width of a 95% confidence interval of the throughput over perf_analyzer's measurement windows (None:
    #: fewer than two windows): the noise a difference between two points must exceed to mean something.
    throughput_ci: float | None = None
    #: For a pipeline's point: the tensor variant it calls (its requests were encoded photos, one per request);
    #: None for a tensor model's.
    serves: str | None = None
    #: For a pipeline's point: where it decoded and prepared the photos ("host": PIL and numpy on its threads;
    #: "cuda" or "cpu": its device path, torch on that device; see pipeline.py).
    prepared_on: str | None = None
    #: For a pipeline's point: milliseconds per image its executes spent in each stage while measured, read from
    #: the server's counters ("decode=0.21 engine=1.3 ...": pipeline_stages.parse_stage_ms); None: not read.
    stage_ms: str | None = None
    #: For a pipeline's point: its own instances (``instances`` is its variant's), each preparing batches on its own.
    pipeline_instances: int | None = None


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
    api_key: str | None = None, attempts: int = 3, input_data: dict | None = None,
) -> PerfPoint:
    """Run perf_analyzer once against a loaded model (gRPC, random input data) and return its figures.

    Variable input dimensions get the typical shape of ``shapes_of``'s spec (default: the variant's own).
    ``on_gpu``: the model's instances run on a GPU, so requests carry their tensors in CUDA shared memory (as
    a client on the server's machine would), which the Python backend receives without a host round trip.
    GPU utilisation is sampled meanwhile (``metrics_url``: Triton's, else NVML). ``streaming``: the model is
    decoupled (pipelined), so requests go over a gRPC stream. ``api_key`` (else the one trtrepo.serving.access finds
    for the URL) opens a restricted server's model-config and shared-memory APIs, which perf_analyzer uses.
    A measurement window that saw too few requests is retried with a window twice as long, up to ``attempts`` runs.
    ``input_data``: perf_analyzer's real input data (photo_input_data) instead of random tensors.
    """
    arguments = request_shapes(shapes_of or variant) + (cuda_shared_memory(variant, batch_size) if on_gpu else [])
    # A thread per stream, so that a too small thread pool cannot cap the concurrency (on the H100 the pipelined
    # ResNet50 sweep measured the same with and without it).
    arguments += ["--streaming", "--max-threads", str(max(concurrency, 4))] if streaming else []
    # perf_analyzer's -H reaches gRPC metadata too, despite its --help (tried with tritonclient 2.50's binary).
    arguments += [a for name, value in key_headers(find_key(grpc_url, api_key), "grpc").items() for a in ("-H", f"{name}:{value}")]
    for attempt in range(attempts):
        with GpuUtilization(metrics_url) as gpu:
            row, windows, error = _run_perf_analyzer(variant, grpc_url, batch_size, concurrency, measurement_ms << attempt,
                                                     arguments, input_data)
        if row is not None:
            break
        if not any(marker in error for marker in RETRYABLE):
            break
    if row is None:
        raise _failed(variant, error)
    return _point(variant, row, windows, instances, concurrency, batch_size, gpu.percent)


#: How a TF-Serving model's points are named in sweeps: <model>@tfserving, beside the Triton variants.
TFSERVING = "tfserving"


def served_variant(name: str) -> str:
    """The variant a measured name stands for: a point of another server (<variant>@tfserving) is that variant's."""
    return name.split("@")[0]


def tfserving_arguments(model: str) -> list[str]:
    """perf_analyzer's arguments for a TF-Serving model: its PredictionService over gRPC, the serving_default
    signature (which trtrepo tfserving exports), input shapes where the model's vary."""
    return ["--service-kind", TFSERVING, *request_shapes(model)]


def measure_tfserving(model: str, grpc_url: str, batch_size: int, concurrency: int, measurement_ms: int,
                      attempts: int = 3) -> PerfPoint:
    """One perf_analyzer measurement of ``model`` on a running TF-Serving (default gRPC port 8500). Its point is
    named <model>@tfserving; TF-Serving reports no server-side times, so queue and compute are 0; its batch threads
    are set by its batching parameters (trtrepo tfserving), so the point counts one instance."""
    for attempt in range(attempts):
        row, windows, error = _run_perf_analyzer(model, grpc_url, batch_size, concurrency, measurement_ms << attempt,
                                                 tfserving_arguments(model))
        if row is not None or not any(marker in error for marker in RETRYABLE):
            break
    if row is None:
        raise _failed(f"{model} (TF-Serving at {grpc_url})", error)
    return _point(f"{model}@{TFSERVING}", row, windows, 1, concurrency, batch_size, None)


def _failed(what: str, error: str) -> UserError:
    hint = "; install Debian's libb64-0d" if "libb64" in error else ""
    return UserError(f"perf_analyzer on {what} failed: {error}{hint}")


def _point(variant: str, row: dict, windows: list[float], instances: int, concurrency: int, batch_size: int,
           gpu_util_pct: float | None) -> PerfPoint:
    """A point from perf_analyzer's CSV row; server-side columns a service does not report count 0."""
    def server_ms(*columns: str) -> float:
        return sum(float(row.get(column) or 0) for column in columns) / 1000

    return PerfPoint(
        variant=variant,
        instances=instances,
        concurrency=concurrency,
        batch_size=batch_size,
        throughput=float(row["Inferences/Second"]),
        p50_ms=float(row["p50 latency"]) / 1000,
        p95_ms=float(row["p95 latency"]) / 1000,
        p99_ms=float(row["p99 latency"]) / 1000,
        queue_ms=server_ms("Server Queue"),
        compute_ms=server_ms("Server Compute Input", "Server Compute Infer", "Server Compute Output"),
        gpu_util_pct=gpu_util_pct,
        throughput_ci=confidence_half_width(windows, float(row["Inferences/Second"])),
    )


#: Two-sided 95% quantiles of Student's t by degrees of freedom (perf_analyzer measures a handful of windows).
T_95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}
#: perf_analyzer's line per measurement window.
WINDOW_LINE = re.compile(r"Pass \[\d+\] throughput: ([0-9.eE+-]+) infer/sec")


def confidence_half_width(windows: list[float], throughput: float) -> float | None:
    """Half-width of the 95% confidence interval of ``throughput`` from the windows' throughputs (their spread,
    relative to their mean, applied to the reported figure), or None with fewer than two windows."""
    if len(windows) < 2 or not statistics.fmean(windows):
        return None
    relative = T_95.get(len(windows) - 1, 1.96) * statistics.stdev(windows) / math.sqrt(len(windows)) / statistics.fmean(windows)
    return relative * throughput


def measure_servers(
    variant: str, servers: list[tuple[str, str | None]], batch_size: int, concurrency: int, measurement_ms: int,
    instances: int, **options: object,
) -> PerfPoint:
    """One point for several servers measured at once ((gRPC URL, metrics URL) each; ``options`` as ``measure``).

    The ``concurrency`` is split as evenly as it goes, a perf_analyzer per server, all started together. Throughput
    is the sum; each latency percentile the worst server's, an upper bound of the pooled one (no more than 1% of
    any server's requests, so of all, lie above the largest p99); queue and compute times are weighted by
    throughput; GPU utilisation is the servers' mean. A server whose window is retried longer is measured partly
    alone: the sum then errs high, which a rerun at a longer --measurement-ms shows."""
    if len(servers) == 1:
        url, metrics_url = servers[0]
        return measure(variant, url, batch_size, concurrency, measurement_ms, instances, metrics_url=metrics_url, **options)
    if concurrency < len(servers):
        raise UserError(f"concurrency {concurrency} cannot load {len(servers)} servers: give at least {len(servers)}")
    shares = [concurrency // len(servers) + (i < concurrency % len(servers)) for i in range(len(servers))]

    def measure_one(url: str, metrics_url: str | None, share: int) -> PerfPoint:
        try:
            return measure(variant, url, batch_size, share, measurement_ms, instances, metrics_url=metrics_url, **options)
        except UserError as exc:
            raise UserError(f"{url}: {exc}") from exc

    with ThreadPoolExecutor(len(servers)) as pool:
        running = [pool.submit(measure_one, url, metrics, share) for (url, metrics), share in zip(servers, shares)]
        parts = [future.result() for future in running]
    return pooled(parts, concurrency)


def pooled(parts: list[PerfPoint], concurrency: int) -> PerfPoint:
    """One point for servers measured at once (see measure_servers)."""
    throughput = sum(p.throughput for p in parts)

    def weighted(field: str) -> float:
        return sum(getattr(p, field) * p.throughput for p in parts) / throughput if throughput else 0.0

    gpu = [p.gpu_util_pct for p in parts if p.gpu_util_pct is not None]
    noise = [p.throughput_ci for p in parts]
    return replace(parts[0], concurrency=concurrency, servers=len(parts), throughput=throughput,
                   throughput_ci=math.sqrt(sum(ci * ci for ci in noise)) if None not in noise else None,
                   p50_ms=max(p.p50_ms for p in parts), p95_ms=max(p.p95_ms for p in parts),
                   p99_ms=max(p.p99_ms for p in parts), queue_ms=weighted("queue_ms"),
                   compute_ms=weighted("compute_ms"), gpu_util_pct=sum(gpu) / len(gpu) if gpu else None)


def _spec_of(variant: str) -> "ModelSpec | None":
    from trtrepo.format.config import Variant
    from trtrepo.models import MODELS, get_model

    variant = served_variant(variant)
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


#: Measurement windows perf_analyzer may take to find three in a row that agree; its figures are those three's.
MAX_WINDOWS = 6
STABLE_WINDOWS = 3
#: Seconds a perf_analyzer run may take beyond ten of its measurement windows.
PERF_ANALYZER_SLACK_S = 120


def photo_input_data(photos: list[Path]) -> dict:
    """perf_analyzer's real input data for a pipeline: each request one encoded photo, in turn. A BYTES element
    travels base64-encoded in perf_analyzer's serialized form: its length (4 bytes, little-endian), then the bytes."""
    encoded = (base64.b64encode(struct.pack("<I", len(data)) + data).decode() for data in (p.read_bytes() for p in photos))
    return {"data": [{"image": {"content": {"b64": text}, "shape": [1]}} for text in encoded]}


def _run_perf_analyzer(
    variant: str, grpc_url: str, batch_size: int, concurrency: int, measurement_ms: int, arguments: list[str],
    input_data: dict | None = None,
) -> tuple[dict | None, list[float], str]:
    """perf_analyzer's CSV row and each measurement window's throughput, or None and its most telling output line."""
    binary, env = find_perf_analyzer()
    with tempfile.TemporaryDirectory(prefix="trtrepo-pa-") as scratch:
        report = Path(scratch) / "pa.csv"
        if input_data is not None:
            (Path(scratch) / "input.json").write_text(json.dumps(input_data))
            arguments = [*arguments, "--input-data", str(Path(scratch) / "input.json")]
        command = [
            str(binary), "-m", variant, "-u", grpc_url, "-i", "grpc", "-b", str(batch_size),
            "--concurrency-range", f"{concurrency}:{concurrency}",
            "--measurement-interval", str(measurement_ms),
            # A noisy CPU rarely meets the default 10% stability, so any three windows in a row within 11x of each
            # other are accepted; perf_analyzer also refuses a window that completed no request, so a stall (a
            # busy machine) gets up to MAX_WINDOWS for three in a row to be clear of it.
            "--max-trials", str(MAX_WINDOWS), "--stability-percentage", "999",
            "-v",  # a line per window (Pass [n] throughput), the spread of which is the point's noise
            "-f", str(report),
            *arguments,
        ]
        # MAX_WINDOWS windows and perf_analyzer's warm-up, with room to spare: past it the server is stuck, not slow.
        limit_s = PERF_ANALYZER_SLACK_S + 10 * measurement_ms / 1000
        try:
            result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=limit_s)
        except subprocess.TimeoutExpired:
            return None, [], f"perf_analyzer did not finish within {limit_s:.0f} s (the server stopped answering?)"
        if result.returncode == 0 and report.is_file():
            windows = [float(x) for x in WINDOW_LINE.findall(result.stdout)]
            return next(csv.DictReader(report.open())), windows[-STABLE_WINDOWS:], ""
    lines = [line.strip() for line in (result.stderr + result.stdout).splitlines() if line.strip()] or ["no output"]
    telling = [line for line in lines if any(word in line.lower() for word in ("error", "fail", "no valid", "unable"))]
    windows = WINDOW_LINE.findall(result.stdout)
    measured = f" (its {measurement_ms} ms windows: {', '.join(windows)} infer/s)" if windows else ""
    return None, [], (telling or lines)[-1] + measured
