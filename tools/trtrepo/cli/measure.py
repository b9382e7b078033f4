"""Commands that measure speed: perf, tune, bench, soak."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from trtrepo.cli.app import (
    ApiKeyOption,
    MpsOption,
    Objective,
    REPOSITORY,
    RepoOption,
    ServiceKind,
    Strategy,
    VariantsOption,
    app,
    int_list,
    name_list,
    say,
    writable_folder,
)
from trtrepo.errors import UserError
from trtrepo.format.config import repository_models, repository_variants
from trtrepo.imagesets import images_in
from trtrepo.perf.progress import console, progress, report_sweep, sweep_with_progress
from trtrepo.serving.client import served_models
from trtrepo.serving.endpoints import grpc_endpoint, grpc_endpoints


@app.command()
def perf(
    models: VariantsOption = None,
    instances: Annotated[str, typer.Option(help="Instance counts to sweep, e.g. 1,2,3,4.")] = "1,2",
    concurrency: Annotated[str, typer.Option(help="Client concurrencies to sweep, e.g. 1,4,8 (in all: with several "
                                                  "servers, split among them).")] = "1,4",
    servers: Annotated[str, typer.Option(help="Server counts to sweep, e.g. 1,2: each point loads the first that many "
                                              "servers at once and sums their throughput (Table 4's instances axis "
                                              "past one server).")] = "1",
    batch_size: Annotated[int, typer.Option(min=1, help="Samples per request.")] = 1,
    measurement_ms: Annotated[int, typer.Option(min=100, help="perf_analyzer measurement window.")] = 2000,
    url: Annotated[Optional[str], typer.Option(help="gRPC address of a running server in explicit mode, or several, "
                                                    "comma-separated (replicas, one per GPU); default: start as many "
                                                    "as --servers needs.")] = None,
    metrics_url: Annotated[Optional[str], typer.Option(
        help="With --url: where each server's metrics are (HOST:PORT, comma-separated in --url's order), for GPU "
             "utilisation and the pipelines' in-server breakdown; default: the port after each gRPC port, Triton's "
             "own layout, where Triton's metrics answer.")] = None,
    api_key: ApiKeyOption = None,
    mps: MpsOption = False,
    model_repository: RepoOption = REPOSITORY,
    output: Annotated[Path, typer.Option(help="Folder for sweep.csv, sweep.md and sweep.png; points already there for "
                                              "other variants, instance counts or concurrencies are kept.")] = Path("perf/results"),
    resume: Annotated[bool, typer.Option("--resume", help="Skip the points already in OUTPUT/sweep.csv at this batch size "
                                                           "(sweep.csv is written after every point).")] = False,
    photos: Annotated[Optional[Path], typer.Option(
        help="Folder (or file list) of encoded images sent to the pipelines named in --models, one per request; "
             "default: the photos installed packages ship.")] = None,
    pipeline_instances: Annotated[Optional[int], typer.Option(
        min=1, help="Instances of each pipeline named in --models while it is measured, each preparing batches on its "
                    "own while another waits for the variant (default: as its config says; --instances counts the "
                    "variant's).")] = None,
    service_kind: Annotated[ServiceKind, typer.Option(
        help="triton: sweep Triton variants. tfserving: sweep --models on the running TF-Serving at --url (gRPC, "
             "default port 8500; export with `trtrepo tfserving`): concurrency only, the points named "
             "<model>@tfserving beside the Triton variants' in OUTPUT.")] = ServiceKind.triton,
) -> None:
    """Sweep instance counts x concurrency (x servers) with perf_analyzer; write CSV, a Table-4-style markdown table
    and a plot.

    A point that cannot be measured (instances out of GPU memory, say) is reported and the sweep goes on; the
    points measured are written, and the command exits 1. Servers behind one balancer (`trtrepo serve --replicas`)
    are measured through its single --url; several --url measure each server directly. With --service-kind
    tfserving, TF-Serving is measured as the baseline server."""
    from trtrepo.perf.sweep import measured_points, planned_keys, planned_points, read_csv

    writable_folder(output)
    if service_kind is ServiceKind.tfserving:
        if mps:
            raise UserError("--mps runs the Triton servers trtrepo starts; TF-Serving is measured where it runs (--url)")
        return perf_tfserving(url, models, concurrency, servers, batch_size, measurement_ms, output, resume)
    counts, concurrencies = int_list(instances, "--instances"), int_list(concurrency, "--concurrency")
    server_counts = int_list(servers, "--servers")
    given = len(name_list(url)) if url else None
    if given is not None and max(server_counts) > given:
        raise UserError(f"--servers {servers} needs {max(server_counts)} servers; --url gives {given}")
    planned = planned_points(server_counts, concurrencies)
    if not planned:
        raise UserError(f"no concurrency in {concurrency} loads {min(server_counts)} servers: give at least that many")
    if len(planned) < len(server_counts) * len(concurrencies):
        console.print("not measured: concurrencies below the server count (a server would get no requests)")
    with repository_models(model_repository), served_models((name_list(url) or [None])[0], name_list(models) or []):
        variants = repository_variants(model_repository, name_list(models))
        sent = images_in(photos, "--photos") if photos else None
        grid = planned_keys(variants, counts, server_counts, concurrencies)
        done = frozenset(measured_points(output, batch_size) & grid) if resume else frozenset()
        if done:
            console.print(f"resuming: {len(done)} points already in {output / 'sweep.csv'} are not measured again")
        failures: list[str] = []
        with grpc_endpoints(name_list(url), model_repository, api_key, max(server_counts), mps, on_event=say,
                            metrics_urls=name_list(metrics_url)) as endpoints:
            points = sweep_with_progress(endpoints, variants, counts, concurrencies, batch_size, measurement_ms,
                                         on_failure=failures.append, done=done, checkpoint_dir=output,
                                         server_counts=server_counts, photos=sent, pipeline_instances=pipeline_instances)
        if points or done or failures:
            report_sweep(points or (read_csv(output / "sweep.csv") if done else []), output, sent, failures)
        if failures:
            total = len(grid) - len(done)
            raise UserError(f"{len(failures)} of {total} points could not be measured (listed above); "
                            f"{'the others are in ' + str(output) if points else 'nothing new was written'}; "
                            "`--resume` measures only what is missing")


def perf_tfserving(url: str | None, models: str | None, concurrency: str, servers: str, batch_size: int,
                   measurement_ms: int, output: Path, resume: bool) -> None:
    """trtrepo perf --service-kind tfserving: the models on one running TF-Serving, against concurrency."""
    from trtrepo.perf.analyzer import TFSERVING
    from trtrepo.perf.sweep import measured_points, read_csv

    if not url or len(name_list(url)) != 1:
        raise UserError("--service-kind tfserving needs --url HOST:PORT of one running TF-Serving (gRPC, default port 8500)")
    if not models:
        raise UserError("--service-kind tfserving needs --models: the model names TF-Serving serves (its models.config)")
    if int_list(servers, "--servers") != [1]:
        raise UserError("--servers applies to Triton only: measure one TF-Serving at a time")
    names, concurrencies = name_list(models), int_list(concurrency, "--concurrency")
    done = frozenset(measured_points(output, batch_size)) if resume else frozenset()
    failures: list[str] = []
    points = sweep_with_progress([], names, [1], concurrencies, batch_size, measurement_ms, failures.append, done,
                                 output, tfserving_url=url)
    if points or done:
        report_sweep(points or read_csv(output / "sweep.csv"), output)
    if failures:
        raise UserError(f"{len(failures)} of {len(names) * len(concurrencies)} TF-Serving points could not be measured "
                        f"(listed above; points are named <model>@{TFSERVING})")


@app.command()
def tune(
    models: Annotated[Optional[str], typer.Option(help="Comma-separated variants, or models (each: its variants that "
                                                       "passed the accuracy gate); default: every variant.")] = None,
    strategy: Annotated[Strategy, typer.Option(help="quick: hill climbing from the current config; brute: the whole "
                                                    "grid; optuna: TPE sampling (pip install 'trtrepo[tune]').")] = Strategy("quick"),
    objective: Annotated[Objective, typer.Option(help="throughput, latency (p99) or cost (throughput per instance); "
                                                      "the report names the winner of each.")] = Objective("throughput"),
    max_p99_ms: Annotated[Optional[float], typer.Option(min=0, help="Points slower at p99 do not count.")] = None,
    min_throughput: Annotated[Optional[float], typer.Option(min=0, help="Points below this many samples/s do not count.")] = None,
    budget_points: Annotated[Optional[int], typer.Option(min=1, help="Configurations to measure at most.")] = None,
    instances: Annotated[str, typer.Option(help="Instance counts to search.")] = "1,2",
    max_batch_sizes: Annotated[Optional[str], typer.Option(help="max_batch_size values to search (default: powers of "
                                                                "two up to the current one).")] = None,
    preferred: Annotated[Optional[str], typer.Option(help="Preferred-batch-size rules to search, each applied to every "
                                                          "max_batch_size: max (the maximum), halves (half and the "
                                                          "maximum), none, kept (the config's own sizes that fit); default: "
                                                          "the current config's.")] = None,
    queue_delays_us: Annotated[Optional[str], typer.Option(help="Max queue delays to search, in microseconds "
                                                                "(default: the current one).")] = None,
    gpu_options: Annotated[bool, typer.Option("--gpu-options", help="Also search CUDA graphs and pipelining (GPU variants).")] = False,
    concurrency: Annotated[str, typer.Option(help="Client concurrencies each configuration is measured at (never more).")] = "1,2,4",
    batch_size: Annotated[int, typer.Option(min=1, help="Samples per request.")] = 1,
    measurement_ms: Annotated[int, typer.Option(min=100, help="perf_analyzer measurement window (three per point give "
                                                              "its confidence interval).")] = 1000,
    target_rate: Annotated[Optional[float], typer.Option(help="Plan capacity: servers and instances to serve this many "
                                                              "samples/s at --max-p99-ms.")] = None,
    apply: Annotated[bool, typer.Option("--apply", help="Write the winner into the repository's config (the old one "
                                                        "kept as config.pbtxt.orig) and reload it, when it beats the "
                                                        "current config beyond the noise.")] = False,
    resume: Annotated[bool, typer.Option("--resume", help="Skip configurations already measured in OUTPUT/tune.csv.")] = False,
    url: Annotated[Optional[str], typer.Option(help="gRPC address of a running server in explicit model-control mode; "
                                                    "default: start one.")] = None,
    api_key: ApiKeyOption = None,
    mps: MpsOption = False,
    model_repository: RepoOption = REPOSITORY,
    output: Annotated[Path, typer.Option(help="Folder for tune.csv, tune.md and tune.png.")] = Path("perf/results/tune"),
) -> None:
    """Search instance count, max batch size with its preferred sizes, queue delay (and on GPU, CUDA graphs and
    pipelining) for the best configuration under an objective and limits, reloading only the model.

    The starting configuration and the winner are each measured again after the search; a winner whose runs do not
    all beat the start's beyond their spread is reported as no significant gain and not applied. A configuration that cannot be measured is recorded with
    its reason and the search goes on."""
    import time
    from dataclasses import replace

    from trtrepo.format.config import serving_options_of
    from trtrepo.perf.tune import apply_and_check, gated_variants, tune_variant
    from trtrepo.perf.tune_report import across_variants, capacity_markdown, checkpoint, markdown, resumed, write_report
    from trtrepo.perf.tune_space import OBJECTIVES, Goal, SearchSpace
    from trtrepo.perf.tune_verdict import judge
    from trtrepo.perf.trial import Trial

    writable_folder(output)
    if target_rate is not None and max_p99_ms is None:
        raise UserError("--target-rate needs --max-p99-ms: capacity is planned at a latency limit")
    concurrencies = int_list(concurrency, "--concurrency")
    # Parsed before a server starts: a typo is one line at once.
    space_options = dict(
        instances=int_list(instances, "--instances"),
        max_batch_sizes=int_list(max_batch_sizes, "--max-batch-sizes") if max_batch_sizes else None,
        preferred=name_list(preferred) or (),
        max_queue_delays_us=int_list(queue_delays_us, "--queue-delays-us", least=0) if queue_delays_us else None,
        gpu_options=gpu_options)
    goal = Goal(objective.value, max_p99_ms, min_throughput)
    with repository_models(model_repository), served_models(url, name_list(models) or []):
        names = name_list(models) or repository_variants(model_repository)
        variants, left_out = gated_variants(model_repository, names) if Path(model_repository).is_dir() else (names, [])
        for line in left_out:
            console.print(line, markup=False)
        everything: list = []
        sections: list[str] = []
        verdicts_by_variant: dict = {}
        with grpc_endpoint(name_list(url), model_repository, api_key, mps, on_event=say) as endpoint:
            for variant in variants:
                started = time.monotonic()
                with Trial(variant, [endpoint]) as trial:
                    if trial.steps:
                        raise UserError(f"{variant} is an ensemble; tune the models it chains")
                    space = SearchSpace.around(serving_options_of(trial.config), **space_options)
                    grid = space.grid()
                    earlier = resumed(output, variant, concurrencies) if resume else {}
                    if earlier:
                        console.print(f"resuming {variant}: {len(earlier)} configurations already in {output / 'tune.csv'}")
                    mine: list = [p for points in earlier.values() for p in points]
                    with progress() as bar:
                        # The configurations the budget allows, then the starting one and the winner measured again.
                        task = bar.add_task(f"tune {variant}", total=(min(budget_points or len(grid), len(grid)) + 2) * len(concurrencies))
                        bar.advance(task, len(mine))

                        def on_point(point, bar=bar, task=task, mine=mine) -> None:
                            result = (f"{point.throughput:.1f} samples/s +-{point.throughput_ci or 0:.2g}, p99 {point.p99_ms:.0f} ms"
                                      if point.status == "measured" else f"failed: {point.reason}")
                            again = " (again)" if point.repeat else ""
                            bar.console.print(f"  {point.candidate.label()} c{point.concurrency}{again}: {result}", markup=False)
                            bar.advance(task)
                            mine.append(point)
                            checkpoint(mine, output)

                        tune_variant(trial, space, goal, strategy.value, concurrencies, batch_size, measurement_ms,
                                            budget_points, earlier, on_point)
                verdicts = {name: judge(replace(goal, objective=name), mine, space.start) for name in OBJECTIVES}
                sections.append(markdown(variant, mine, goal, verdicts, strategy.value, len(grid), concurrencies,
                                                time.monotonic() - started))
                everything += mine
                verdict = verdicts_by_variant[variant] = verdicts[goal.objective]
                console.print(f"{variant}: {verdict.winner.candidate.label() if verdict.winner else 'no winner'}; "
                              f"{verdict.reason}", markup=False)
                if apply:
                    sections.append(apply_and_check(model_repository, variant, verdict, endpoint, batch_size, measurement_ms))
            sections.append(across_variants(goal, verdicts_by_variant))
            if target_rate is not None:
                sections.append(capacity_markdown(everything, target_rate, max_p99_ms))
        files = write_report(everything, sections, output)
        print("\n".join(sections))
        print(f"wrote {', '.join(str(p) for p in files.values())}")
        unmet = [v for v, verdict in verdicts_by_variant.items() if verdict.winner is None]
        if unmet:
            raise UserError(f"no configuration of {', '.join(unmet)} met the limits ({goal.describe()}); see {output / 'tune.md'}")


@app.command()
def bench(
    models: VariantsOption = None,
    batch_size: Annotated[Optional[int], typer.Option(min=1, help="Batch for both the in-process and the served measurement "
                                                                   "(default: each variant's max_batch_size).")] = None,
    seconds: Annotated[float, typer.Option(min=0.5, help="Measurement time per variant and side.")] = 5.0,
    requests_per_instance: Annotated[int, typer.Option(min=1, help="Served side: requests in flight per model instance.")] = 2,
    url: Annotated[Optional[str], typer.Option(help="gRPC address of a running server; default: start one.")] = None,
    api_key: ApiKeyOption = None,
    mps: MpsOption = False,
    model_repository: RepoOption = REPOSITORY,
    output: Annotated[Path, typer.Option(help="Folder for bench.csv and bench.md (rows of other variants there are kept).")] = Path("perf/results"),
) -> None:
    """In-process engine throughput against Triton-served throughput at the same batch, and ratios to the baseline;
    with TensorFlow or PyTorch FP32 variants measured, each variant's speed-up over them (the study's Table 2).
    The server's answer to the measured batch is checked against the engine's: exits 1 where they differ.

    GPU variants are measured on a batch already in GPU memory on both sides (served: CUDA shared memory)."""
    from trtrepo.perf.bench import bench as run_bench
    from trtrepo.perf.bench import frameworks_markdown, markdown, write_report

    writable_folder(output)
    with repository_models(model_repository):
        variants = repository_variants(model_repository, name_list(models))
        with grpc_endpoint(name_list(url), model_repository, api_key, mps, on_event=say) as (grpc_url, metrics_url, _):
            console.print(f"measuring {len(variants)} variants at batch {batch_size or 'max_batch_size'}, {seconds:g} s per side ...")
            rows = run_bench(model_repository, grpc_url, variants, batch_size, seconds, metrics_url, requests_per_instance)
        files = write_report(rows, output, model_repository)
        print(markdown(rows) + frameworks_markdown(rows))
        print(f"wrote {', '.join(str(p) for p in files.values())}")
        wrong = [f"{row.variant} ({row.served_outputs})" for row in rows if row.served_outputs != "same"]
        if wrong:
            raise UserError(f"served outputs differ from the engine's in process, so their served figures measure a broken "
                            f"path: {'; '.join(wrong)}")


@app.command()
def soak(
    models: VariantsOption = None,
    concurrency: Annotated[int, typer.Option(min=1, help="Requests in flight per variant, held the whole time.")] = 4,
    seconds: Annotated[float, typer.Option(min=3, help="How long to hold the load.")] = 600.0,
    window_s: Annotated[float, typer.Option(min=3, help="Seconds per measurement window (three perf_analyzer "
                                                          "intervals).")] = 15.0,
    batch_size: Annotated[int, typer.Option(min=1, help="Samples per request.")] = 1,
    url: Annotated[Optional[str], typer.Option(help="gRPC address of a running server; default: start one "
                                                     "(memory is measured only for a server of its own).")] = None,
    api_key: ApiKeyOption = None,
    model_repository: RepoOption = REPOSITORY,
    output: Annotated[Path, typer.Option(help="Folder for soak.csv, soak.md and soak.png.")] = Path("perf/results"),
) -> None:
    """Hold a concurrency against variants for a set time: requests answered and failed (the server's counts),
    p99 in the first and the last minute, and the memory of tritonserver and its stubs from start to end.

    Exits 1 when any request failed."""
    from trtrepo.perf.soak import soak as run_soak
    from trtrepo.perf.soak import markdown, write_report

    writable_folder(output)
    variants = repository_variants(model_repository, name_list(models))
    with grpc_endpoint(name_list(url), model_repository, api_key, on_event=say) as (grpc_url, _, server_pid):
        console.print(f"soaking {', '.join(variants)} at concurrency {concurrency} for {seconds:g} s ...")
        with progress() as bar:
            task = bar.add_task("soak", total=int(seconds // window_s) * len(variants))

            def on_window(window) -> None:
                state = window.error or (f"{window.throughput:.1f} samples/s, p99 {window.p99_ms:.0f} ms"
                                         + ("" if window.rss_mb is None else f", server {window.rss_mb:.0f} MB"))
                bar.console.print(f"  {window.start_s:6.0f} s {window.variant}: {state}", markup=False)
                bar.advance(task)

            windows, summaries = run_soak(grpc_url, variants, concurrency, seconds, window_s, batch_size, server_pid, on_window)
    files = write_report(windows, summaries, concurrency, output)
    print(markdown(windows, summaries, concurrency))
    print(f"wrote {', '.join(str(p) for p in files.values())}")
    failed = sum(s.failed for s in summaries)
    if failed:
        raise UserError(f"{failed} requests or windows failed during the soak (see {files['markdown']})")
