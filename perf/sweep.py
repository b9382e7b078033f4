"""Instance-count x concurrency sweeps through perf_analyzer, and the study's Table-4-shaped report."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from trtrepo.client import InferenceClient
from trtrepo.config import Variant, config_to_json, runs_on_gpu, with_instances
from trtrepo.errors import UserError
from trtrepo.perf.analyzer import PerfPoint, measure
from trtrepo.plots import pyplot, save
from trtrepo.records import gather, read_records, write_records


def sweep(
    grpc_url: str,
    variants: list[str],
    instance_counts: list[int],
    concurrencies: list[int],
    batch_size: int,
    measurement_ms: int,
    on_point: Callable[[PerfPoint], None] = lambda _: None,
    metrics_url: str | None = None,
    on_failure: Callable[[str], None] | None = None,
    done: frozenset[tuple[str, int, int]] = frozenset(),
) -> list[PerfPoint]:
    """For each variant and instance count: reload the model with that many instances, measure each concurrency.

    An ensemble (ctpn_split) is scaled through the models it chains. Needs a server in explicit
    model-control mode; every reloaded model's original config is restored afterwards. Models on GPU
    instances get their requests through CUDA shared memory; ``metrics_url`` serves GPU utilisation.
    A point that cannot be measured (say, instances that run out of GPU memory) stops the sweep, or, given
    ``on_failure``, is reported to it as one line and the sweep goes on. Points in ``done`` (variant,
    instances, concurrency) are not measured again: a resumed sweep.
    """
    points = []
    for variant in variants:
        client = InferenceClient(variant, url=grpc_url, protocol="grpc")
        if batch_size > max(client.config.max_batch_size, 1):
            raise UserError(f"batch size {batch_size} exceeds {variant}'s max_batch_size {client.config.max_batch_size}")
        steps = [step.model_name for step in client.config.ensemble_scheduling.step]
        originals = {name: client.model_config(name) for name in steps or [variant]}
        on_gpu = any(runs_on_gpu(config) for config in originals.values())
        try:
            for count in instance_counts:
                todo = [c for c in concurrencies if (variant, count, c) not in done]
                if not todo:
                    continue
                try:
                    for name, config in originals.items():
                        client.load_model(name, config_to_json(with_instances(config, count)))
                except UserError as exc:
                    _report_failure(exc, variant, count, todo, on_failure)
                    continue
                for concurrency in todo:
                    try:
                        point = measure(variant, grpc_url, batch_size, concurrency, measurement_ms, count,
                                        shapes_of=steps[0] if steps else variant, on_gpu=on_gpu,
                                        metrics_url=metrics_url, streaming=client.streaming, api_key=client.api_key)
                    except UserError as exc:
                        _report_failure(exc, variant, count, [concurrency], on_failure)
                        continue
                    points.append(point)
                    on_point(point)
        finally:
            for name, config in originals.items():
                client.load_model(name, config_to_json(config))
    return points


def _report_failure(error: UserError, variant: str, count: int, concurrencies: list[int],
                    on_failure: Callable[[str], None] | None) -> None:
    """The points at these concurrencies could not be measured: one line each to ``on_failure``, or, without
    one, the error itself."""
    if on_failure is None:
        raise error
    for concurrency in concurrencies:
        on_failure(f"{variant} x{count} c{concurrency}: {error}")


def read_csv(path: Path) -> list[PerfPoint]:
    """Points written to sweep.csv (a column missing from an older file takes its default)."""
    return read_records(PerfPoint, path, "sweep")


def point_key(point: PerfPoint) -> tuple:
    return point.variant, point.instances, point.concurrency


def markdown_table(points: list[PerfPoint]) -> str:
    """One table per model. Rows: (instances, concurrency) by concurrency; columns: each variant's throughput and p99,
    and its throughput ratio to the model's eager-PyTorch fp32 baseline, as in the study's Table 4."""
    by_key = {(p.variant, p.instances, p.concurrency): p for p in points}
    variants = list(dict.fromkeys(p.variant for p in points))
    model_of = {v: model_name(v, variants) for v in variants}
    sections = []
    for model in dict.fromkeys(model_of.values()):
        mine = [v for v in variants if model_of[v] == model]
        baseline = f"{model}_pytorch_fp32"
        others = [v for v in mine if v != baseline] if baseline in mine else []
        unit = "samples/s (p99 ms, GPU %)" if any(p.gpu_util_pct is not None for p in points) else "samples/s (p99 ms)"
        header = ["instances", "concurrency"] + [f"{v} {unit}" for v in mine] + [f"{v} / baseline" for v in others]
        lines = [f"## {model}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        # By concurrency, then instances: each concurrency reads as throughput against instances, whatever order
        # the gathered runs measured the points in.
        rows = sorted({(p.concurrency, p.instances) for p in points if p.variant in mine})
        for concurrency, instances in rows:
            cells = [str(instances), str(concurrency)]
            for v in mine:
                point = by_key.get((v, instances, concurrency))
                cells.append(cell(point))
            base = by_key.get((baseline, instances, concurrency))
            for v in others:
                point = by_key.get((v, instances, concurrency))
                cells.append(f"{point.throughput / base.throughput:.2f}x" if point and base and base.throughput else "-")
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        lines.append(f"Baseline: {baseline}." if others else f"No baseline ({baseline}) measured: no ratios.")
        sections.append("\n".join(lines))
    return "\n\n".join(sections) + "\n\nThroughput counts samples per second; p99 is the request latency.\n"


def cell(point: PerfPoint | None) -> str:
    """Throughput, then p99 latency and GPU utilisation where measured, in one table cell."""
    if point is None:
        return "-"
    gpu = "" if point.gpu_util_pct is None else f", {point.gpu_util_pct:.0f}%"
    return f"{point.throughput:.3g} ({point.p99_ms:.0f}{gpu})"


def model_name(name: str, names: list[str]) -> str:
    """The model a measured name belongs to: a variant's model, or for an ensemble such as ctpn_split the
    model of a variant measured beside it whose name it extends (else the ensemble's own name)."""
    if Variant.is_variant(name):
        return Variant.parse(name).model
    owners = [Variant.parse(n).model for n in names if Variant.is_variant(n) and name.startswith(Variant.parse(n).model + "_")]
    return max(owners, key=len) if owners else name


def plot(points: list[PerfPoint], path: Path) -> Path:
    """One row per model (their scales differ a hundredfold): throughput against instance count, a line per
    variant and concurrency, and p99 latency against throughput. A variant keeps its colour in both panels and a
    concurrency its line style; the latency panel is log-log, since a CPU column and a GPU one differ a
    thousandfold in both."""
    plt = pyplot()
    variants = list(dict.fromkeys(p.variant for p in points))
    models = list(dict.fromkeys(model_name(v, variants) for v in variants))
    colours = {v: f"C{i % 10}" for i, v in enumerate(variants)}
    styles = {c: ("-", "--", ":", "-.")[i % 4] for i, c in enumerate(sorted({p.concurrency for p in points}))}
    figure, rows = plt.subplots(len(models), 2, figsize=(11, 4.2 * len(models)), squeeze=False)
    for model, (left, right) in zip(models, rows):
        for variant in (v for v in variants if model_name(v, variants) == model):
            mine = [p for p in points if p.variant == variant]
            for concurrency in sorted({p.concurrency for p in mine}):
                line = sorted((p for p in mine if p.concurrency == concurrency), key=lambda p: p.instances)
                left.plot([p.instances for p in line], [p.throughput for p in line], marker="o", color=colours[variant],
                          linestyle=styles[concurrency], label=f"{variant} c{concurrency}")
            ordered = sorted(mine, key=lambda p: p.throughput)
            right.plot([p.throughput for p in ordered], [p.p99_ms for p in ordered], marker="o", linestyle="none",
                       color=colours[variant], label=variant)
        left.set(xlabel="model instances", ylabel="throughput (samples/s)", title=f"{model}: throughput vs instances")
        left.xaxis.get_major_locator().set_params(integer=True)
        right.set(xlabel="throughput (samples/s)", ylabel="p99 latency (ms)", title=f"{model}: latency vs throughput",
                  xscale="log", yscale="log")
        for axes in (left, right):
            axes.grid(alpha=0.3)
            axes.legend(fontsize=7)
    return save(figure, path)


def checkpoint(points: list[PerfPoint], out_dir: Path) -> Path:
    """sweep.csv with these points and the earlier ones there, written after every point, so that a sweep cut
    short (a server that died, a signal) keeps what it measured and `trtrepo perf --resume` goes on from it."""
    return write_records(gather(PerfPoint, Path(out_dir) / "sweep.csv", points, point_key, "sweep"), Path(out_dir) / "sweep.csv")


def measured_points(out_dir: Path, batch_size: int) -> frozenset[tuple[str, int, int]]:
    """(variant, instances, concurrency) of the points in out_dir's sweep.csv measured at ``batch_size``."""
    path = Path(out_dir) / "sweep.csv"
    if not path.is_file():
        return frozenset()
    return frozenset(point_key(p) for p in read_csv(path) if p.batch_size == batch_size)


def write_report(points: list[PerfPoint], out_dir: Path) -> dict[str, Path]:
    """sweep.csv, sweep.md and sweep.png in out_dir, over these points and the earlier ones there that they do not
    measure again (same variant, instance count and concurrency)."""
    out_dir = Path(out_dir)
    table = out_dir / "sweep.md"
    points = gather(PerfPoint, out_dir / "sweep.csv", points, point_key, "sweep")
    out_dir.mkdir(parents=True, exist_ok=True)
    table.write_text("# Throughput against model instances\n\n" + markdown_table(points))
    return {"csv": write_records(points, out_dir / "sweep.csv"), "markdown": table, "plot": plot(points, out_dir / "sweep.png")}
