"""Long work shown as it goes: a progress bar on a terminal (only the lines printed through it elsewhere), and the
perf_analyzer sweep with a line per measured point."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from trtrepo.backend.pipeline_tasks import PREPARE_THREADS
from trtrepo.imagesets import shipped_photos
from trtrepo.perf.pipeline_stages import stage_reports
from trtrepo.perf.sweep import (
    checkpoint,
    markdown_table,
    planned_keys,
    point_label,
    sweep,
    sweep_tfserving,
    tfserving_key,
    write_report,
)
from trtrepo.serving.access import Endpoint


#: soft_wrap: a line is never broken at the console's width (80 columns where stderr is a file or a pipe, as in a
#: log or CI), which would split a figure or a path in two; a terminal folds long lines itself.
console = Console(stderr=True, soft_wrap=True)


def progress() -> Progress:
    """A progress bar on a terminal; elsewhere (logs, pipes) only the lines printed through it."""
    return Progress(
        SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console, transient=False, disable=not console.is_terminal,
    )


def sweep_with_progress(
    endpoints: list[Endpoint], variants: list[str], counts: list[int], concurrencies: list[int], batch_size: int,
    measurement_ms: int, on_failure: Callable[[str], None] | None = None,
    done: frozenset[tuple[str, int, int, int]] = frozenset(), checkpoint_dir: Path | None = None,
    server_counts: list[int] = (1,), tfserving_url: str | None = None, photos: list[Path] | None = None,
    pipeline_instances: int | None = None,
) -> list:
    """perf.sweep with a progress bar and a line per measured point; with ``on_failure``, a line per point that
    could not be measured, and the sweep goes on. ``done``: points not to measure again; ``checkpoint_dir``:
    where sweep.csv is brought up to date after every point. ``tfserving_url``: sweep these models on that
    TF-Serving instead (perf.sweep.sweep_tfserving; no endpoints, counts or servers). ``photos``: what pipelines are
    sent (default: the shipped photos); ``pipeline_instances``: their own instance count (default: their configs')."""
    measured: list = []
    planned = len(({tfserving_key(v, c) for v in variants for c in concurrencies} if tfserving_url else
                   planned_keys(variants, counts, server_counts, concurrencies)) - done)
    with progress() as bar:
        task = bar.add_task("perf_analyzer", total=planned)

        def on_point(point) -> None:
            gpu = "" if point.gpu_util_pct is None else f", GPU {point.gpu_util_pct:.0f}%"
            bar.console.print(f"  {point_label(point.variant, point.servers, point.instances, point.concurrency)}: "
                              f"{point.throughput:.1f} samples/s, p99 {point.p99_ms:.0f} ms{gpu}")
            bar.advance(task)
            measured.append(point)
            if checkpoint_dir is not None:
                checkpoint(measured, checkpoint_dir)

        def on_failed_point(line: str) -> None:
            bar.console.print(f"  failed: {line}")
            bar.advance(task)
            on_failure(line)

        if tfserving_url:
            return sweep_tfserving(tfserving_url, variants, concurrencies, batch_size, measurement_ms, on_point,
                                   on_failed_point if on_failure else None, done)
        return sweep(endpoints, variants, counts, concurrencies, batch_size, measurement_ms, on_point,
                     on_failed_point if on_failure else None, done, server_counts, photos, pipeline_instances)


def report_sweep(points: list, output: Path, photos: list[Path] | None = None, failures: list[str] = ()) -> None:
    """The sweep's table on stdout, its files written to ``output``; ``photos``: what pipelines were sent;
    ``failures``: a line per point that could not be measured (a crashed one among them), listed in sweep.md."""
    photos = photos or shipped_photos()
    files = write_report(points, output, photos, failures)
    if points:
        print("\n" + markdown_table(points, photos))
    reports = stage_reports(points, photos)
    if reports:
        text = ("## What holds each pipeline back\n\nIn the server: the milliseconds per image the pipeline's instances "
                "spent in each stage while it was measured (its counters in Triton's metrics, warm-up included), and "
                "outside its executes (Triton and the stub passing requests and responses, or waiting for them). "
                "Alone: each stage timed on this machine, on the pipelines' photos, where the pipeline runs it (the "
                f"host's {PREPARE_THREADS} threads, or the device); the engine is its variant's tensors-in throughput at "
                "the same point of the sweep. Outside Triton: decode and prepare together, as one instance does them, on "
                "one thread and on as many at once as the pipeline had instances (each on its own CUDA stream on a "
                "GPU).\n\n" + "\n".join(f"- {r.line()}" for r in reports) + "\n")
        (Path(output) / "pipelines.md").write_text(text)
        files["pipelines"] = Path(output) / "pipelines.md"
        print("\n" + text)
    print(f"wrote {', '.join(str(p) for p in files.values())}")

