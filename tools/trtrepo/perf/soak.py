"""A bounded soak: hold a concurrency against chosen variants for a set time and watch for drift.

Load comes from perf_analyzer, one run per variant per window, all variants at once. The server's own
statistics count the requests it answered and failed over the whole run (requests a client could not even send
fail its perf_analyzer window, which is counted too); the resident memory of tritonserver and its Python stubs is
sampled each window, so a leak shows as growth from the first window to the last.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from trtrepo.errors import UserError
from trtrepo.perf.analyzer import measure
from trtrepo.plots import pyplot, save
from trtrepo.records import write_records
from trtrepo.serving.client import InferenceClient
from trtrepo.serving.stubs import resident_bytes, stubs_of


MINUTE_S = 60.0


@dataclass(frozen=True)
class SoakWindow:
    """One window of one variant. Times in seconds from the soak's start; rss_mb: server and stubs, None unknown."""

    variant: str
    start_s: float
    seconds: float
    throughput: float  # samples/s, 0 when the window failed
    p99_ms: float | None
    error: str
    rss_mb: float | None


@dataclass(frozen=True)
class SoakSummary:
    variant: str
    requests: int  # answered by the server (its statistics)
    failed: int  # failed on the server, plus windows whose perf_analyzer run failed
    p99_first_minute_ms: float | None
    p99_last_minute_ms: float | None


def server_memory_mb(server_pid: int | None) -> float | None:
    """Resident memory of a tritonserver and its Python stubs, in MB (None without the process id)."""
    if server_pid is None:
        return None
    return resident_bytes([server_pid, *(stub.pid for stub in stubs_of(server_pid))]) / 2**20


def soak(
    grpc_url: str, variants: list[str], concurrency: int, seconds: float, window_s: float, batch_size: int = 1,
    server_pid: int | None = None, on_window: Callable[[SoakWindow], None] = lambda _: None,
) -> tuple[list[SoakWindow], list[SoakSummary]]:
    """Windows of ``window_s`` (perf_analyzer's three measurement intervals) until ``seconds`` have passed."""
    if window_s < 3 or seconds < window_s:
        raise UserError(f"the soak needs windows of at least 3 s and at least one window, got {window_s:g} s of {seconds:g} s")
    clients = {v: InferenceClient(v, url=grpc_url, protocol="grpc") for v in variants}
    before = {v: c.request_counts() for v, c in clients.items()}
    windows: list[SoakWindow] = []
    started = time.monotonic()
    interval_ms = int(window_s * 1000 / 3)

    def one(variant: str) -> tuple[float, float | None, str]:
        client = clients[variant]
        try:
            point = measure(variant, grpc_url, batch_size, concurrency, interval_ms, 1, streaming=client.streaming,
                            api_key=client.api_key, attempts=1)
        except UserError as exc:
            return 0.0, None, str(exc)
        return point.throughput, point.p99_ms, ""

    with ThreadPoolExecutor(max_workers=len(variants)) as pool:
        while time.monotonic() - started + window_s <= seconds:
            start = time.monotonic()
            results = list(pool.map(one, variants))
            rss = server_memory_mb(server_pid)
            for variant, (throughput, p99, error) in zip(variants, results):
                window = SoakWindow(variant, round(start - started, 1), round(time.monotonic() - start, 1), throughput,
                                    p99, error, rss)
                windows.append(window)
                on_window(window)
    summaries = []
    for variant, client in clients.items():
        success, failed = client.request_counts()
        mine = [w for w in windows if w.variant == variant]
        end = max(w.start_s + w.seconds for w in mine)
        first = [w.p99_ms for w in mine if w.start_s < MINUTE_S and w.p99_ms is not None]
        last = [w.p99_ms for w in mine if w.start_s + w.seconds > end - MINUTE_S and w.p99_ms is not None]
        summaries.append(SoakSummary(
            variant, success - before[variant][0], failed - before[variant][1] + sum(1 for w in mine if w.error),
            max(first) if first else None, max(last) if last else None,
        ))
    return windows, summaries


def markdown(windows: list[SoakWindow], summaries: list[SoakSummary], concurrency: int) -> str:
    rss = [w.rss_mb for w in windows if w.rss_mb is not None]
    seconds = max(w.start_s + w.seconds for w in windows)
    lines = [
        f"Soak: concurrency {concurrency} per variant for {seconds:.0f} s in {len({w.start_s for w in windows})} windows.",
        "",
        "| variant | requests answered | failed | p99 first minute (ms) | p99 last minute (ms) |",
        "|---|---|---|---|---|",
    ]
    for s in summaries:
        first = "-" if s.p99_first_minute_ms is None else f"{s.p99_first_minute_ms:.1f}"
        last = "-" if s.p99_last_minute_ms is None else f"{s.p99_last_minute_ms:.1f}"
        lines.append(f"| {s.variant} | {s.requests} | {s.failed} | {first} | {last} |")
    if rss:
        lines += ["", f"Resident memory of tritonserver and its stubs: {rss[0]:.0f} MB in the first window, "
                      f"{rss[-1]:.0f} MB in the last ({rss[-1] - rss[0]:+.0f} MB), peak {max(rss):.0f} MB."]
    errors = [w for w in windows if w.error]
    lines += [f"- {w.variant} at {w.start_s:.0f} s: {w.error}" for w in errors[:10]]
    return "\n".join(lines) + "\n"


def plot(windows: list[SoakWindow], path: Path) -> Path:
    """Throughput, p99 and server memory against time: drift is easier seen than read."""
    plt = pyplot()
    figure, (top, middle, bottom) = plt.subplots(3, 1, figsize=(9, 8), sharex=True)
    for variant in dict.fromkeys(w.variant for w in windows):
        mine = [w for w in windows if w.variant == variant]
        top.plot([w.start_s for w in mine], [w.throughput for w in mine], marker=".", label=variant)
        middle.plot([w.start_s for w in mine if w.p99_ms is not None], [w.p99_ms for w in mine if w.p99_ms is not None],
                    marker=".", label=variant)
    memory = sorted({(w.start_s, w.rss_mb) for w in windows if w.rss_mb is not None})
    if memory:
        bottom.plot([t for t, _ in memory], [m for _, m in memory], marker=".", color="k")
    top.set(ylabel="samples/s", title="soak: throughput, p99 latency and server memory over time")
    middle.set(ylabel="p99 latency (ms)")
    bottom.set(ylabel="server + stubs RSS (MB)", xlabel="seconds from start")
    for axes in (top, middle, bottom):
        axes.grid(alpha=0.3)
    top.legend(fontsize=7)
    return save(figure, path)


def write_report(windows: list[SoakWindow], summaries: list[SoakSummary], concurrency: int, out_dir: Path) -> dict[str, Path]:
    out_dir = Path(out_dir)
    table = out_dir / "soak.md"
    files = {"csv": write_records(windows, out_dir / "soak.csv"), "markdown": table, "plot": plot(windows, out_dir / "soak.png")}
    table.write_text("# Soak\n\n" + markdown(windows, summaries, concurrency))
    return files
