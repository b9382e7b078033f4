"""In-process engine throughput against Triton-served throughput at the same batch, measured in one run."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from trtrepo.config import CONFIG_FILE, Variant, read_config
from trtrepo.engines import get_engine
from trtrepo.errors import UserError
from trtrepo.models import get_model
from trtrepo.perf.analyzer import measure
from trtrepo.repository import VERSION

SERVED_CONCURRENCY = 2  # one request in flight while the next is sent: what a busy client does


@dataclass(frozen=True)
class BenchRow:
    variant: str
    batch_size: int
    in_process: float  # samples/s, engine called directly in this process
    served: float  # samples/s through Triton, measured by perf_analyzer

    @property
    def served_share(self) -> float:
        return self.served / self.in_process if self.in_process else 0.0


def artifact_of(repo: Path, variant: str) -> Path:
    """The engine file a variant's config points at (Python-backend parameter or native default file name)."""
    config = read_config(Path(repo) / variant / CONFIG_FILE)
    name = config.parameters["artifact"].string_value if "artifact" in config.parameters else config.default_model_filename
    path = Path(repo) / variant / VERSION / name
    if not name or not path.is_file():
        raise UserError(f"{variant}: engine file {path} not found; rebuild with `trtrepo repo`")
    return path


def in_process_throughput(repo: Path, variant: str, batch_size: int, seconds: float) -> float:
    """Samples/s of the variant's engine called in this process on a random batch, after two warm-up calls."""
    parsed = Variant.parse(variant)
    spec = get_model(parsed.model)
    run = get_engine(parsed.engine).load(spec, artifact_of(repo, variant), parsed.precision, "cpu", os.cpu_count() or 1)
    batch = spec.example_batch(batch_size)
    for _ in range(2):
        run(batch)
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        run(batch)
        calls += 1
    return calls * batch_size / (time.perf_counter() - start)


def bench(repo: Path, grpc_url: str, variants: list[str], batch_size: int, seconds: float) -> list[BenchRow]:
    rows = []
    for variant in variants:
        local = in_process_throughput(repo, variant, batch_size, seconds)
        instances = sum(g.count for g in read_config(Path(repo) / variant / CONFIG_FILE).instance_group)
        served = measure(variant, grpc_url, batch_size, SERVED_CONCURRENCY, int(seconds * 1000), instances)
        rows.append(BenchRow(variant, batch_size, local, served.throughput))
    return rows


def markdown(rows: list[BenchRow]) -> str:
    by_name = {r.variant: r for r in rows}
    lines = [
        "| variant | batch | in-process samples/s | served samples/s | served / in-process | served / baseline |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        base = by_name.get(Variant.parse(row.variant).baseline)
        ratio = f"{row.served / base.served:.2f}x" if base and base.served else "-"
        lines.append(
            f"| {row.variant} | {row.batch_size} | {row.in_process:.1f} | {row.served:.1f} | {row.served_share:.0%} | {ratio} |"
        )
    return "\n".join(lines) + (
        f"\n\nServed: perf_analyzer over gRPC, concurrency {SERVED_CONCURRENCY}, instances as configured in the repository."
        "\nBaseline: the same model in eager PyTorch fp32.\n"
    )
