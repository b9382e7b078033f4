"""tune's files: tune.csv (brought up to date after every point, and read back to resume), tune.md with the
verdict of every objective, and tune.png."""

from __future__ import annotations

from pathlib import Path

from trtrepo.perf.tune_space import Candidate, Goal, TunePoint
from trtrepo.perf.tune_verdict import Verdict, capacity, pareto_front, run_to_run
from trtrepo.plots import pyplot, save
from trtrepo.records import gather, read_records, write_records


def read_csv(path: Path) -> list[TunePoint]:
    return read_records(TunePoint, path, "tune")


def point_key(point: TunePoint) -> tuple:
    return point.variant, point.candidate, point.concurrency, point.repeat


def checkpoint(points: list[TunePoint], out_dir: Path) -> Path:
    """tune.csv with these points and the earlier ones there, written after every candidate (--resume reads it)."""
    path = Path(out_dir) / "tune.csv"
    return write_records(gather(TunePoint, path, points, point_key, "tune"), path)


def resumed(out_dir: Path, variant: str, concurrencies: list[int]) -> dict[Candidate, list[TunePoint]]:
    """Candidates of ``variant`` already measured at every one of these concurrencies in out_dir's tune.csv."""
    path = Path(out_dir) / "tune.csv"
    if not path.is_file():
        return {}
    by_candidate: dict[Candidate, list[TunePoint]] = {}
    for point in read_csv(path):
        if point.variant == variant and point.status == "measured" and not point.repeat and point.concurrency in concurrencies:
            by_candidate.setdefault(point.candidate, []).append(point)
    return {c: points for c, points in by_candidate.items() if {p.concurrency for p in points} >= set(concurrencies)}


def markdown(variant: str, points: list[TunePoint], goal: Goal, verdicts: dict[str, Verdict], strategy: str,
             grid_size: int, concurrencies: list[int], seconds: float) -> str:
    """Every candidate's best point, the winner per objective with its reason, and the cost of the search."""
    mine = [p for p in points if p.variant == variant]
    searched = [p for p in mine if not p.repeat]
    candidates = list(dict.fromkeys(p.candidate for p in searched))
    start = next(iter(candidates), None)
    drift = run_to_run(goal, mine, start) if start else None
    lines = [f"## {variant}", "",
             f"{strategy} search: {len(candidates)} of {grid_size} configurations measured "
             f"({len(candidates) * len(concurrencies)} perf_analyzer runs against {grid_size * len(concurrencies)} "
             f"for the full grid) in {seconds:.0f} s; concurrencies {', '.join(map(str, concurrencies))}."
             + (f" Run-to-run noise of the objective: {drift:.1%} (the starting configuration measured first and again last)."
                if drift is not None else ""), "",
             "| configuration | best concurrency | samples/s (95% CI) | p99 ms | host memory MB | GPU memory MB | note |",
             "|---|---|---|---|---|---|---|"]
    for candidate in candidates:
        his = [p for p in searched if p.candidate == candidate]
        best = goal.best(his)
        failed = [p for p in his if p.status == "failed"]
        note = "; ".join(f"c{p.concurrency}: {p.reason}" for p in failed)[:200]
        if best is None:
            lines.append(f"| {candidate.label()} | - | - | - | - | - | {note or 'no point within the limits'} |")
            continue
        ci = f" +-{best.throughput_ci:.2g}" if best.throughput_ci is not None else ""
        memory = f"{best.memory_mb:.0f}" if best.memory_mb is not None else "-"
        gpu_memory = f"{best.gpu_memory_mb:.0f}" if best.gpu_memory_mb is not None else "-"
        lines.append(f"| {candidate.label()} | {best.concurrency} | {best.throughput:.1f}{ci} | {best.p99_ms:.0f} | "
                     f"{memory} | {gpu_memory} | {note} |")
    lines += ["", "| objective | winner | samples/s | p99 ms | verdict |", "|---|---|---|---|---|"]
    for objective, verdict in verdicts.items():
        if verdict.winner is None:
            lines.append(f"| {objective} | - | - | - | {verdict.reason} |")
        else:
            w = verdict.winner
            lines.append(f"| {objective} | {w.candidate.label()} c{w.concurrency} | {w.throughput:.1f} | {w.p99_ms:.0f} | "
                         f"{verdict.reason} |")
    return "\n".join(lines) + "\n"


def plot(points: list[TunePoint], path: Path) -> Path:
    """p99 against throughput for every point the search measured, a panel per variant, the Pareto front drawn
    through (the starting configuration's repeat is a noise check, not a candidate: not drawn)."""
    plt = pyplot()
    variants = list(dict.fromkeys(p.variant for p in points))
    figure, panels = plt.subplots(1, len(variants), figsize=(6 * len(variants), 4.5), squeeze=False)
    for variant, axes in zip(variants, panels[0]):
        mine = [p for p in points if p.variant == variant and p.status == "measured"]
        axes.scatter([p.throughput for p in mine], [p.p99_ms for p in mine], s=14, color="0.6", label="measured")
        front = pareto_front(mine)
        axes.plot([p.throughput for p in front], [p.p99_ms for p in front], marker="o", color="C3", label="Pareto front")
        for p in front:
            axes.annotate(f"x{p.instances} b{p.max_batch_size} c{p.concurrency}", (p.throughput, p.p99_ms), fontsize=7,
                          xytext=(3, 3), textcoords="offset points")
        axes.set(xlabel="throughput (samples/s)", ylabel="p99 latency (ms)", title=f"{variant}: tune")
        axes.grid(alpha=0.3)
        axes.legend(fontsize=7)
    return save(figure, path)


def across_variants(goal: Goal, verdicts: dict[str, Verdict]) -> str:
    """Per model tuned in more than one variant (engine, precision), the variant whose winner is best."""
    from trtrepo.perf.sweep import model_name

    names = list(verdicts)
    lines = []
    for model in dict.fromkeys(model_name(v, names) for v in names):
        mine = {v: verdicts[v].winner for v in names if model_name(v, names) == model and verdicts[v].winner}
        if len(mine) > 1:
            best = max(mine, key=lambda v: goal.value(mine[v]))
            lines.append(f"- {model}: {best} ({mine[best].candidate.label()}, {mine[best].throughput:.1f} samples/s, "
                         f"p99 {mine[best].p99_ms:.0f} ms) is the best of {len(mine)} variants for {goal.describe()}")
    return "\n## Across variants\n\n" + "\n".join(lines) + "\n" if lines else ""


def write_report(points: list[TunePoint], sections: list[str], out_dir: Path) -> dict[str, Path]:
    """tune.csv (every point tried, earlier runs' points of other candidates kept), tune.md and tune.png."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    table = out_dir / "tune.md"
    table.write_text("# trtrepo tune\n\n" + "\n".join(sections))
    files = {"csv": checkpoint(points, out_dir), "markdown": table}
    measured = [p for p in read_csv(files["csv"]) if p.status == "measured" and not p.repeat]
    if measured:
        files["plot"] = plot(measured, out_dir / "tune.png")
    return files


def capacity_markdown(points: list[TunePoint], target_rate: float, max_p99_ms: float) -> str:
    """The capacity plan's section of the report, with its arithmetic."""
    plan = capacity(points, target_rate, max_p99_ms)
    if plan is None:
        return f"\n## Capacity\n\nNo measured point met p99 <= {max_p99_ms:g} ms: no plan for {target_rate:g} samples/s.\n"
    return f"\n## Capacity for {target_rate:g} samples/s at p99 <= {max_p99_ms:g} ms\n\n{plan.arithmetic(target_rate)}.\n"
