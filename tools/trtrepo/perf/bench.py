"""In-process engine throughput against Triton-served throughput at the same batch, measured in one run.

On a GPU both sides start from a batch already in GPU memory: in process, the engine's GPU runner is called
back to back (synchronised once at the end: the engine's own peak); served, perf_analyzer hands the batch over
in CUDA shared memory, so the ratio is what the serving path costs.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from google.protobuf import json_format
from tritonclient.grpc import model_config_pb2 as pb

from trtrepo.format.config import (
    CONFIG_FILE, VERSION, Variant, artifact_of, is_decoupled, read_config, read_manifest, runs_on_gpu,
)
from trtrepo.engines import get_engine
from trtrepo.engines.base import load_runner
from trtrepo.engines.tensorflow import tensorflow_note
from trtrepo.errors import UserError
from trtrepo.models import get_model
from trtrepo.perf.analyzer import measure
from trtrepo.records import gather, write_records


REQUESTS_PER_INSTANCE = 2  # one running while the next waits, so no instance idles between requests


@dataclass(frozen=True)
class BenchRow:
    variant: str
    batch_size: int
    in_process: float  # samples/s, engine called directly in this process
    served: float  # samples/s through Triton, measured by perf_analyzer
    #: Seconds from loading the artifact in this process to the end of its first call (compiled engines: the load
    #: from their saved kernels, warm-up included).
    load_seconds: float = 0.0
    #: Whether the server answered the benchmark's batch as the engine does in process: "same", else what differs
    #: (a served figure over a path that loses the outputs measures nothing); "-" in reports from before the check.
    served_outputs: str = "-"
    #: How the engine ran on this machine, in process and served alike (ONNX Runtime INT8: the U8S8 mode and why);
    #: "-" where the engine has nothing to say.
    engine_mode: str = "-"

    @property
    def served_share(self) -> float:
        return self.served / self.in_process if self.in_process else 0.0


def engine_call(
    repo: Path, variant: str, config: pb.ModelConfig, batch_size: int
) -> tuple[Callable[[], dict], Callable[[], None], dict[str, np.ndarray]]:
    """One call of the variant's engine on a random batch, in this process, how to wait for it to finish, and the
    batch: the GPU runner on the batch in GPU memory for GPU variants whose engine has one, else the host runner."""
    parsed = Variant.parse(variant)
    spec = get_model(parsed.model)
    engine = get_engine(parsed.engine)
    batch = spec.example_batch(batch_size)
    artifact = artifact_of(repo, variant, config)
    as_json = json_format.MessageToDict(config, preserving_proto_field_name=True)
    loaded = load_runner(spec, engine, artifact, parsed.precision, as_json, runs_on_gpu(config), 0, os.cpu_count() or 1)
    if loaded.gpu is not None:
        import torch

        on_device = {name: torch.from_numpy(array).cuda() for name, array in batch.items()}
        return (lambda: loaded.gpu(on_device)), torch.cuda.synchronize, batch
    return (lambda: loaded.host(batch)), (lambda: None), batch


@dataclass(frozen=True)
class InProcess:
    samples_per_second: float
    load_seconds: float
    batch: dict[str, np.ndarray]  # the batch measured, and the engine's answer to it (host arrays)
    outputs: dict[str, np.ndarray]


def in_process_throughput(repo: Path, variant: str, config: pb.ModelConfig, batch_size: int,
                          seconds: float) -> InProcess:
    """Samples/s of the variant's engine called back to back in this process, after three warm-up calls, the
    seconds its load and first call took, and its answer to the batch."""
    loading = time.perf_counter()
    call, wait, batch = engine_call(repo, variant, config, batch_size)
    first = call()
    wait()
    load_seconds = time.perf_counter() - loading
    outputs = {name: _host(value) for name, value in first.items()}
    for _ in range(2):
        call()
    wait()
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        call()
        calls += 1
    wait()
    return InProcess(calls * batch_size / (time.perf_counter() - start), load_seconds, batch, outputs)


def _host(value: object) -> np.ndarray:
    """An engine's output as a host array (GPU runners answer with CUDA tensors)."""
    return value.cpu().numpy() if hasattr(value, "cpu") else np.asarray(value)


#: How far a served output may stray from the engine's own answer, relative to the largest value of that output:
#: the same engine on both sides, so only summation order differs; an empty or garbled output is far beyond it.
SERVED_TOLERANCE = 1e-2


def served_outputs(variant: str, grpc_url: str, measured: InProcess) -> str:
    """"same" when the server answers the measured batch as the engine did in process, else what differs, output
    by output (an output that arrives empty, of another shape, or with other values)."""
    from trtrepo.serving.client import InferenceClient

    try:
        served = InferenceClient(variant, url=grpc_url, protocol="grpc").infer(measured.batch)
    except UserError as exc:
        return f"no answer: {exc}"
    return compare_outputs(measured.outputs, served)


def compare_outputs(expected_outputs: dict[str, np.ndarray], served: dict[str, np.ndarray]) -> str:
    """"same", or every output that arrived empty, of another shape or with other values than expected."""
    problems = []
    for name, expected in expected_outputs.items():
        got = served.get(name)
        if got is None or (got.size == 0 and expected.size):
            problems.append(f"{name} empty")
        elif got.shape != expected.shape:
            problems.append(f"{name} shape {got.shape} (in process {expected.shape})")
        elif expected.size:
            scale = float(np.abs(expected).max())
            stray = float(np.abs(got.astype(np.float64) - expected).max()) / (scale or 1.0)
            if stray > SERVED_TOLERANCE:
                problems.append(f"{name} differs by {stray:.1e} of its largest value")
    return "; ".join(problems) or "same"


def bench(
    repo: Path, grpc_url: str, variants: list[str], batch_size: int | None, seconds: float, metrics_url: str | None = None,
    requests_per_instance: int = REQUESTS_PER_INSTANCE,
) -> list[BenchRow]:
    """Each variant at ``batch_size`` (default: its max_batch_size), in process and served with
    ``requests_per_instance`` requests in flight per model instance."""
    rows = []
    for variant in variants:
        config = read_config(Path(repo) / variant / CONFIG_FILE)
        batch = batch_size or max(config.max_batch_size, 1)
        local = in_process_throughput(repo, variant, config, batch, seconds)
        instances = max(sum(g.count for g in config.instance_group), 1)
        served = measure(variant, grpc_url, batch, requests_per_instance * instances, int(seconds * 1000), instances,
                         on_gpu=runs_on_gpu(config), metrics_url=metrics_url, streaming=is_decoupled(config))
        parsed = Variant.parse(variant)
        note = get_engine(parsed.engine).load_note(artifact_of(repo, variant, config), parsed.precision)
        rows.append(BenchRow(variant, batch, local.samples_per_second, served.throughput, round(local.load_seconds, 2),
                             served_outputs(variant, grpc_url, local), note.text if note else "-"))
    return rows


def write_report(rows: list[BenchRow], out_dir: Path, repo: Path | None = None) -> dict[str, Path]:
    """bench.csv and bench.md in out_dir, over these rows and the earlier ones of other variants there; with the
    repository, the build records of its compiled variants too."""
    out_dir = Path(out_dir)
    rows = gather(BenchRow, out_dir / "bench.csv", rows, lambda row: (row.variant,), "bench")
    table = out_dir / "bench.md"
    files = {"csv": write_records(rows, out_dir / "bench.csv"), "markdown": table}
    table.write_text("# In-process against served throughput\n\n" + markdown(rows) + frameworks_markdown(rows)
                     + builds_markdown(repo, rows))
    return files


def markdown(rows: list[BenchRow]) -> str:
    by_name = {r.variant: r for r in rows}
    lines = [
        "| variant | batch | in-process samples/s | served samples/s | served / in-process | served / baseline | load s "
        "| served outputs | engine mode (in process and served) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        base = by_name.get(Variant.parse(row.variant).baseline)
        ratio = f"{row.served / base.served:.2f}x" if base and base.served else "-"
        lines.append(
            f"| {row.variant} | {row.batch_size} | {row.in_process:.1f} | {row.served:.1f} | {row.served_share:.0%} | {ratio} "
            f"| {row.load_seconds:.1f} | {row.served_outputs} | {row.engine_mode} |"
        )
    return "\n".join(lines) + (
        "\n\nServed: perf_analyzer over gRPC (GPU variants: tensors in CUDA shared memory), with --requests-per-instance "
        "requests in flight per instance (default 2), instances as configured in the repository.\nIn process: the engine called back to back on one batch (GPU variants: "
        "a batch already in GPU memory).\nBaseline: the same model in eager PyTorch fp32.\nLoad: from the artifact to the end "
        "of the first call, in process (compiled engines: from their saved kernels, every compiled size warmed).\n"
        "Served outputs: the server's answer to the measured batch against the engine's in process (same: within "
        f"{SERVED_TOLERANCE:g} of each output's largest value).\n"
    ) + tensorflow_note([row.variant for row in rows])


#: The study's Table 2 references: each engine against TensorFlow and against PyTorch, both FP32.
FRAMEWORK_REFERENCES = (("TensorFlow", "tensorflow"), ("PyTorch", "pytorch"))


def frameworks_markdown(rows: list[BenchRow]) -> str:
    """The study's Table 2 shape, per model: time per batch of each variant in process and served, and its
    speed-up over the TensorFlow and the PyTorch FP32 variants measured in the same run (from samples/s, so rows
    at different batches compare). Only models with one of those references measured get a table."""
    by_name = {r.variant: r for r in rows}
    sections = []
    for model in dict.fromkeys(Variant.parse(r.variant).model for r in rows):
        references = [(label, by_name.get(f"{model}_{engine}_fp32")) for label, engine in FRAMEWORK_REFERENCES]
        references = [(label, row) for label, row in references if row is not None]
        if not references:
            continue
        header = ["variant", "batch", "ms per batch in process", "ms per batch served"] + [
            f"over {label} {side}" for label, _ in references for side in ("in process", "served")]
        lines = [f"### {model}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for row in (r for r in rows if Variant.parse(r.variant).model == model):
            cells = [row.variant, str(row.batch_size), _ms_per_batch(row.batch_size, row.in_process),
                     _ms_per_batch(row.batch_size, row.served)]
            for _, reference in references:
                cells += [_speedup(row.in_process, reference.in_process), _speedup(row.served, reference.served)]
            lines.append("| " + " | ".join(cells) + " |")
        sections.append("\n".join(lines))
    if not sections:
        return ""
    return ("\n## Against the frameworks (the study's Table 2)\n\n" + "\n\n".join(sections) +
            "\n\nSpeed-up: samples/s over the framework variant's, in process and served alike, from this run.\n")


def _ms_per_batch(batch_size: int, samples_per_second: float) -> str:
    return f"{1000 * batch_size / samples_per_second:.1f}" if samples_per_second else "-"


def _speedup(ours: float, reference: float) -> str:
    return f"{ours / reference:.2f}x" if ours and reference else "-"


def builds_markdown(repo: Path | None, rows: list[BenchRow]) -> str:
    """What the engines recorded of their builds (compiled variants: cold compile seconds, artifact sizes), beside
    the load time this run measured, for the rows whose variant is in ``repo``."""
    if repo is None:
        return ""
    lines = []
    for row in rows:
        model_dir = Path(repo) / row.variant
        record = read_manifest(model_dir).get("engine_build")
        if not record or "compile_seconds" not in record:  # other engines' records (TensorFlow's parity) are not builds
            continue
        files = sum(path.stat().st_size for path in (model_dir / VERSION).rglob("*") if path.is_file())
        compiled = record.get("compile_seconds", {})
        mode = record.get("compile_mode", "-") + (", freezing" if record.get("freezing") else "")
        lines.append(f"| {row.variant} | {record.get('gpu', '-')} | {mode} | "
                     f"{', '.join(f'{size}: {sec:.1f}' for size, sec in compiled.items())} | {sum(compiled.values()):.1f} | "
                     f"{row.load_seconds:.1f} | {files / 1e6:.1f} |")
    if not lines:
        return ""
    return ("\n## Builds of the compiled variants\n\n| variant | built on | mode | cold compile s per batch size | cold total s | "
            "load from artifact s | version folder MB |\n|---|---|---|---|---|---|---|\n" + "\n".join(lines) + "\n\n"
            "Cold: the build's compile, in an empty cache. Load: this run's, in process (with freezing, Inductor caches no "
            "frozen graph: the load compiles again, using what kernels it can from the artifact).\n")
