"""Instance-count x concurrency sweeps through perf_analyzer, and the study's Table-4-shaped report."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from trtrepo.engines.tensorflow import tensorflow_note
from trtrepo.errors import UserError
from trtrepo.format.config import Variant
from trtrepo.imagesets import describe_photos, shipped_photos
from trtrepo.perf.analyzer import TFSERVING, PerfPoint, measure_tfserving, served_variant
from trtrepo.perf.trial import Trial
from trtrepo.plots import pyplot, readable_log_axes, save
from trtrepo.records import gather, read_records, write_records
from trtrepo.serving.access import Endpoint


def sweep(
    endpoints: list[Endpoint],
    variants: list[str],
    instance_counts: list[int],
    concurrencies: list[int],
    batch_size: int,
    measurement_ms: int,
    on_point: Callable[[PerfPoint], None] = lambda _: None,
    on_failure: Callable[[str], None] | None = None,
    done: frozenset[tuple[str, int, int, int]] = frozenset(),
    server_counts: list[int] = (1,),
    photos: list[Path] | None = None,
    pipeline_instances: int | None = None,
) -> list[PerfPoint]:
    """For each variant and instance count: reload the model with that many instances on every server, then measure
    each concurrency against each count of servers (the first that many endpoints, loaded at once).

    An ensemble (ctpn_split) is scaled through the models it chains. Needs servers in explicit model-control mode;
    every reloaded model's original config is restored afterwards (perf.trial). Models on GPU instances get their
    requests through CUDA shared memory; an endpoint's metrics URL serves GPU utilisation. A point that cannot be
    measured (say, instances that run out of GPU memory) stops the sweep, or, given ``on_failure``, is reported to
    it as one line and the sweep goes on. Points in ``done`` (point_key) are not measured again: a resumed sweep.
    Concurrencies below a server count do not apply to it (planned_points) and are not measured. A pipeline is
    sent ``photos`` (default: the shipped ones), one per request, and runs ``pipeline_instances`` of its own (default:
    its config's) whatever its variant's count.
    """
    points = []
    for variant in variants:
        with Trial(variant, endpoints, photos, pipeline_instances) as trial:
            if batch_size > max(trial.config.max_batch_size, 1):
                raise UserError(f"batch size {batch_size} exceeds {variant}'s max_batch_size {trial.config.max_batch_size}")
            for count in instance_counts:
                todo = [(servers, c) for servers, c in planned_points(server_counts, concurrencies)
                        if (variant, servers, count, c) not in done]
                if not todo:
                    continue
                try:
                    trial.load(instances=count)
                except UserError as exc:
                    _report_failure(exc, variant, count, todo, on_failure)
                    continue
                for servers, concurrency in todo:
                    try:
                        point = trial.measure(concurrency, batch_size, measurement_ms, servers, instances=count)
                    except UserError as exc:
                        _report_failure(exc, variant, count, [(servers, concurrency)], on_failure)
                        continue
                    points.append(point)
                    on_point(point)
    return points


def sweep_tfserving(grpc_url: str, models: list[str], concurrencies: list[int], batch_size: int, measurement_ms: int,
                    on_point: Callable[[PerfPoint], None] = lambda _: None,
                    on_failure: Callable[[str], None] | None = None,
                    done: frozenset[tuple[str, int, int, int]] = frozenset()) -> list[PerfPoint]:
    """Each concurrency against each model of a running TF-Serving: the baseline server, whose points
    (<model>@tfserving) sit beside the Triton variants' in the same report. TF-Serving cannot reload a model with
    other settings, so there is no instance axis: its batch threads are what trtrepo tfserving exported."""
    points = []
    for model in models:
        for concurrency in concurrencies:
            if tfserving_key(model, concurrency) in done:
                continue
            try:
                point = measure_tfserving(model, grpc_url, batch_size, concurrency, measurement_ms)
            except UserError as exc:
                _report_failure(exc, f"{model}@{TFSERVING}", 1, [(1, concurrency)], on_failure)
                continue
            points.append(point)
            on_point(point)
    return points


def tfserving_key(model: str, concurrency: int) -> tuple[str, int, int, int]:
    """point_key of a TF-Serving point: one server, one instance."""
    return f"{model}@{TFSERVING}", 1, 1, concurrency


def planned_points(server_counts: list[int], concurrencies: list[int]) -> list[tuple[int, int]]:
    """(servers, concurrency) pairs to measure: a concurrency below the server count leaves a server without load."""
    return [(servers, c) for servers in server_counts for c in concurrencies if c >= servers]


def planned_keys(variants: list[str], instance_counts: list[int], server_counts: list[int],
                 concurrencies: list[int]) -> set[tuple[str, int, int, int]]:
    """point_key of every point a sweep over these measures."""
    return {(v, servers, n, c) for v in variants for n in instance_counts
            for servers, c in planned_points(server_counts, concurrencies)}


def _report_failure(error: UserError, variant: str, count: int, points: list[tuple[int, int]],
                    on_failure: Callable[[str], None] | None) -> None:
    """The points at these (servers, concurrency) could not be measured: one line each to ``on_failure``, or,
    without one, the error itself."""
    if on_failure is None:
        raise error
    for servers, concurrency in points:
        on_failure(f"{point_label(variant, servers, count, concurrency)}: {error}")


def point_label(variant: str, servers: int, instances: int, concurrency: int) -> str:
    """variant x2 c4, or with several servers variant 2 servers x2 c4."""
    return f"{variant}{f' {servers} servers' if servers > 1 else ''} x{instances} c{concurrency}"


def read_csv(path: Path) -> list[PerfPoint]:
    """Points written to sweep.csv (a column missing from an older file takes its default)."""
    return read_records(PerfPoint, path, "sweep")


def point_key(point: PerfPoint) -> tuple[str, int, int, int]:
    return point.variant, point.servers, point.instances, point.concurrency


def markdown_table(points: list[PerfPoint], photos: list[Path] | None = None) -> str:
    """One table per model. Rows: (instances, concurrency) by concurrency; columns: each variant's throughput and p99,
    and its throughput ratio to the model's eager-PyTorch fp32 baseline, as in the study's Table 4. Points measured on
    several servers at once add a servers column: Table 4's instances axis, extended past one server. A pipeline
    beside its variant adds a bytes-in / tensors-in column; ``photos``: what pipelines were sent (default: shipped)."""
    by_key = {point_key(p): p for p in points}
    several = any(p.servers > 1 for p in points)
    variants = list(dict.fromkeys(p.variant for p in points))
    serves = {p.variant: p.serves for p in points if p.serves}  # pipeline -> the tensor variant it calls
    model_of = {v: model_name(serves.get(v, v), variants) for v in variants}
    sent = describe_photos(photos or shipped_photos()) if serves else ""
    sections = []
    for model in dict.fromkeys(model_of.values()):
        mine = [v for v in variants if model_of[v] == model]
        baseline = f"{model}_pytorch_fp32"
        others = [v for v in mine if v != baseline] if baseline in mine else []
        unit = "samples/s (p99 ms, GPU %)" if any(p.gpu_util_pct is not None for p in points) else "samples/s (p99 ms)"
        pipelines = [v for v in mine if serves.get(v) in mine]
        header = (["servers"] * several + ["instances", "concurrency"] + [f"{v} {unit}" for v in mine]
                  + [f"{v} / baseline" for v in others] + [f"{v} bytes in / {serves[v]} tensors in" for v in pipelines])
        lines = [f"## {model}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        # By concurrency, then instances: each concurrency reads as throughput against instances, whatever order
        # the gathered runs measured the points in.
        rows = sorted({(p.concurrency, p.servers, p.instances) for p in points if p.variant in mine})
        for concurrency, servers, instances in rows:
            cells = [str(servers)] * several + [str(instances), str(concurrency)]
            for v in mine:
                point = by_key.get((v, servers, instances, concurrency))
                cells.append(cell(point))
            base = by_key.get((baseline, servers, instances, concurrency))
            cells += [ratio(by_key.get((v, servers, instances, concurrency)), base) for v in others]
            cells += [ratio(by_key.get((v, servers, instances, concurrency)), by_key.get((serves[v], servers, instances, concurrency)))
                      for v in pipelines]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        lines.append(f"Baseline: {baseline}." if others else f"No baseline ({baseline}) measured: no ratios.")
        if pipelines:
            own = sorted({p.pipeline_instances for p in points if p.variant in pipelines and p.pipeline_instances})
            lines.append(f"Pipelines ({', '.join(pipelines)}): one encoded photo per request, in turn from {sent}; "
                         "the instances column is the variant's they call"
                         + (f", each pipeline running {' or '.join(map(str, own))} instances of its own." if own else "."))
        sections.append("\n".join(lines))
    servers = (" With several servers, throughput is their sum at the concurrency split among them, and p99 the worst "
               "server's.") if several else ""
    return ("\n\n".join(sections) + f"\n\nThroughput counts samples per second; p99 is the request latency.{servers}\n"
            + tensorflow_note(variants))


def ratio(point: PerfPoint | None, base: PerfPoint | None) -> str:
    """One point's throughput over another's, as a table cell."""
    return f"{point.throughput / base.throughput:.2f}x" if point and base and base.throughput else "-"


def cell(point: PerfPoint | None) -> str:
    """Throughput, then p99 latency and GPU utilisation where measured, in one table cell."""
    if point is None:
        return "-"
    gpu = "" if point.gpu_util_pct is None else f", {point.gpu_util_pct:.0f}%"
    return f"{point.throughput:.3g} ({point.p99_ms:.0f}{gpu})"


def model_name(name: str, names: list[str]) -> str:
    """The model a measured name belongs to: a variant's model, or for an ensemble such as ctpn_split the
    model of a variant measured beside it whose name it extends (else the ensemble's own name). A variant served
    by another server (<variant>@tfserving) belongs to its variant's model."""
    name = served_variant(name)
    if Variant.is_variant(name):
        return Variant.parse(name).model
    owners = [Variant.parse(n).model for n in names if Variant.is_variant(n) and name.startswith(Variant.parse(n).model + "_")]
    return max(owners, key=len) if owners else name


def plot(points: list[PerfPoint], path: Path) -> Path:
    """One row per model (their scales differ a hundredfold): throughput against instance count, a line per
    variant and concurrency, and p99 latency against throughput. A variant keeps its colour in both panels and a
    concurrency its line style; the latency panel is log-log, since a CPU column and a GPU one differ a
    thousandfold in both. Points measured on several servers are drawn against the server count instead, a line per
    variant, instance count and concurrency. A sweep of one instance count on one server is drawn against
    concurrency, a line per variant (a lone dot per line would say nothing)."""
    plt = pyplot()
    several = any(p.servers > 1 for p in points)
    axis, axis_name = (("servers", "servers") if several else ("instances", "model instances"))
    counts = {p.instances for p in points}
    if not several and len(counts) == 1:
        (count,) = counts
        axis, axis_name = "concurrency", f"concurrency ({count} model instance{'s' if count > 1 else ''})"
    variants = list(dict.fromkeys(p.variant for p in points))
    models = list(dict.fromkeys(model_name(v, variants) for v in variants))
    colours = {v: f"C{i % 10}" for i, v in enumerate(variants)}
    styles = {c: ("-", "--", ":", "-.")[i % 4] for i, c in enumerate(sorted({p.concurrency for p in points}))}
    figure, rows = plt.subplots(len(models), 2, figsize=(11, 4.2 * len(models)), squeeze=False)
    for model, (left, right) in zip(models, rows):
        for variant in (v for v in variants if model_name(v, variants) == model):
            mine = [p for p in points if p.variant == variant]
            if axis == "concurrency":  # one line: the variant over concurrency
                lines = [(variant, "-", mine)]
            else:  # a line per concurrency (and instance count) over the axis
                lines = [(f"{variant} x{instances} c{concurrency}" if several else f"{variant} c{concurrency}",
                          styles[concurrency],
                          [p for p in mine if p.concurrency == concurrency and (not several or p.instances == instances)])
                         for instances, concurrency in sorted({(p.instances if several else 0, p.concurrency) for p in mine})]
            for label, style, line in lines:
                line = sorted(line, key=lambda p: getattr(p, axis))
                left.plot([getattr(p, axis) for p in line], [p.throughput for p in line], marker="o",
                          color=colours[variant], linestyle=style, label=label)
            ordered = sorted(mine, key=lambda p: p.throughput)
            right.plot([p.throughput for p in ordered], [p.p99_ms for p in ordered], marker="o", linestyle="none",
                       color=colours[variant], label=variant)
        left.set(xlabel=axis_name, ylabel="throughput (samples/s)", title=f"{model}: throughput vs {axis}")
        left.xaxis.get_major_locator().set_params(integer=True)
        right.set(xlabel="throughput (samples/s)", ylabel="p99 latency (ms)", title=f"{model}: latency vs throughput",
                  xscale="log", yscale="log")
        readable_log_axes(right)
        for axes in (left, right):
            axes.grid(alpha=0.3)
            axes.legend(fontsize=7)
    return save(figure, path)


def checkpoint(points: list[PerfPoint], out_dir: Path) -> Path:
    """sweep.csv with these points and the earlier ones there, written after every point, so that a sweep cut
    short (a server that died, a signal) keeps what it measured and `trtrepo perf --resume` goes on from it."""
    return write_records(gather(PerfPoint, Path(out_dir) / "sweep.csv", points, point_key, "sweep"), Path(out_dir) / "sweep.csv")


def measured_points(out_dir: Path, batch_size: int) -> frozenset[tuple[str, int, int, int]]:
    """point_key of the points in out_dir's sweep.csv measured at ``batch_size``."""
    path = Path(out_dir) / "sweep.csv"
    if not path.is_file():
        return frozenset()
    # A pipeline is measured one photo per request, whatever the sweep's batch size.
    return frozenset(point_key(p) for p in read_csv(path) if p.batch_size == batch_size or p.serves)


def write_report(points: list[PerfPoint], out_dir: Path, photos: list[Path] | None = None,
                 failures: list[str] = ()) -> dict[str, Path]:
    """sweep.csv, sweep.md and sweep.png in out_dir, over these points and the earlier ones there that they do not
    measure again (same variant, server and instance counts, and concurrency); ``failures``, this run's points that
    could not be measured, are listed under the table."""
    out_dir = Path(out_dir)
    table = out_dir / "sweep.md"
    points = gather(PerfPoint, out_dir / "sweep.csv", points, point_key, "sweep")
    out_dir.mkdir(parents=True, exist_ok=True)
    axes = "servers and model instances" if any(p.servers > 1 for p in points) else "model instances"
    missing = "".join(f"- {line}\n" for line in failures)
    table.write_text(f"# Throughput against {axes}\n\n" + (markdown_table(points, photos) if points else "No point measured.\n")
                     + (f"\n## Not measured in the last run\n\n{missing}" if missing else ""))
    if not points:
        return {"markdown": table}
    return {"csv": write_records(points, out_dir / "sweep.csv"), "markdown": table, "plot": plot(points, out_dir / "sweep.png")}
