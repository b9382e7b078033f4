"""trtrepo tune: search a variant's serving options for the best configuration under an objective, on running servers.

Each candidate is loaded through the repository API (perf.trial: the model is reloaded, never the server) and
measured with perf_analyzer at each client concurrency. Preferred batch sizes move with max_batch_size (a candidate is
never dropped for them); variable input dimensions take the model spec's typical shape. A candidate that cannot be
measured is recorded with a one-line reason and the search goes on. Every point carries the noise of its measurement
windows (a 95% interval) and the starting configuration is measured again after the search (run-to-run noise), so
that a winner no better than the start beyond the larger of the two is called what it is: no significant gain.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from itertools import product
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable

from trtrepo.config import ServingOptions
from trtrepo.errors import UserError
from trtrepo.perf.analyzer import RETRYABLE, PerfPoint
from trtrepo.plots import pyplot, save
from trtrepo.records import gather, read_records, write_records

if TYPE_CHECKING:
    from trtrepo.access import Endpoint
    from trtrepo.perf.trial import Trial

STRATEGIES = ("quick", "brute", "optuna")
OBJECTIVES = ("throughput", "latency", "cost")
#: How each preferred-batch-size rule turns a max_batch_size into the dynamic batcher's preferred sizes; "kept":
#: the starting config's own sizes, less those above the max_batch_size (for sizes that follow no rule).
PREFERRED_RULES: dict[str, Callable[[int], tuple[int, ...]] | None] = {
    "max": lambda m: (m,),
    "halves": lambda m: tuple(sorted({max(m // 2, 1), m})),
    "none": lambda m: (),
    "kept": None,
}


@dataclass(frozen=True, order=True)
class Candidate:
    """One configuration of a variant: the serving options a trial sets."""

    instances: int
    max_batch_size: int
    preferred: str  # a PREFERRED_RULES key
    max_queue_delay_us: int
    cuda_graphs: bool = False
    pipelined: bool = False

    def changes(self) -> dict[str, object]:
        """ServingOptions fields for perf.trial.Trial.load (without preferred sizes for "kept": the trial keeps the
        config's own that fit)."""
        rule = PREFERRED_RULES[self.preferred]
        preferred = {} if rule is None else {"preferred_batch_sizes": rule(self.max_batch_size)}
        return {"instances": self.instances, "max_batch_size": self.max_batch_size, **preferred,
                "max_queue_delay_us": self.max_queue_delay_us, "cuda_graphs": self.cuda_graphs,
                "pipelined": self.pipelined}

    def label(self) -> str:
        gpu = "".join((" graphs" if self.cuda_graphs else "", " pipelined" if self.pipelined else ""))
        rule = PREFERRED_RULES[self.preferred]
        preferred = "as configured" if rule is None else "/".join(map(str, rule(self.max_batch_size))) or "none"
        return f"x{self.instances} max_batch {self.max_batch_size} preferred {preferred} delay {self.max_queue_delay_us} us{gpu}"


@dataclass(frozen=True)
class SearchSpace:
    """The values each serving option may take; ``start`` is the configuration the model is served with now."""

    instances: tuple[int, ...]
    max_batch_sizes: tuple[int, ...]
    preferred: tuple[str, ...]
    max_queue_delays_us: tuple[int, ...]
    cuda_graphs: tuple[bool, ...]
    pipelined: tuple[bool, ...]
    start: Candidate

    @classmethod
    def around(cls, current: ServingOptions, instances: Iterable[int] | None = None,
               max_batch_sizes: Iterable[int] | None = None, preferred: Iterable[str] = (),
               max_queue_delays_us: Iterable[int] | None = None, gpu_options: bool = False) -> "SearchSpace":
        """The space given, each dimension also holding the current configuration's value. Defaults: instances
        1-2, max_batch_size the powers of two up to the current one, the current preferred-size rule ("kept" for
        sizes that follow none) and queue delay; ``gpu_options`` searches CUDA graphs and
        pipelining too (GPU variants)."""
        unknown = sorted(set(preferred) - set(PREFERRED_RULES))
        if unknown:
            raise UserError(f"preferred-batch-size rule {', '.join(unknown)} unknown: use {', '.join(PREFERRED_RULES)}")
        start_preferred = next((rule for rule, of in PREFERRED_RULES.items()
                                if of is not None and of(current.max_batch_size) == current.preferred_batch_sizes), "kept")
        start = Candidate(current.instances, current.max_batch_size, start_preferred,
                          current.max_queue_delay_us, current.cuda_graphs, current.pipelined)
        powers = [2 ** k for k in range(current.max_batch_size.bit_length())]  # 1, 2, 4, ... up to max_batch_size
        both = (False, True)
        return cls(
            instances=_with(instances or (1, 2), start.instances),
            max_batch_sizes=_with(max_batch_sizes or powers, start.max_batch_size),
            preferred=tuple(dict.fromkeys((*preferred, start.preferred))),
            max_queue_delays_us=_with(max_queue_delays_us or (), start.max_queue_delay_us),
            cuda_graphs=both if gpu_options else (start.cuda_graphs,),
            pipelined=both if gpu_options else (start.pipelined,),
            start=start,
        )

    def dimensions(self) -> list[tuple[str, tuple]]:
        """(Candidate field, its values), in Candidate's field order."""
        return [
            ("instances", self.instances), ("max_batch_size", self.max_batch_sizes), ("preferred", self.preferred),
            ("max_queue_delay_us", self.max_queue_delays_us), ("cuda_graphs", self.cuda_graphs),
            ("pipelined", self.pipelined)]

    def grid(self) -> list[Candidate]:
        """Every candidate, the starting one first."""
        every = [Candidate(*values) for values in product(*(values for _, values in self.dimensions()))]
        return [self.start] + [c for c in every if c != self.start]

    def neighbours(self, candidate: Candidate) -> list[Candidate]:
        """The candidates one step away along one dimension (the next smaller or larger value)."""
        found = []
        for name, values in self.dimensions():
            index = values.index(getattr(candidate, name))
            for step in (-1, 1):
                if 0 <= index + step < len(values):
                    found.append(replace(candidate, **{name: values[index + step]}))
        return found


def _with(values: Iterable, current: object) -> tuple:
    return tuple(sorted({*values, current}))


@dataclass(frozen=True)
class TunePoint:
    """One measurement of a candidate at one concurrency, or why it could not be measured (status failed)."""

    variant: str
    instances: int
    max_batch_size: int
    preferred: str
    max_queue_delay_us: int
    cuda_graphs: bool
    pipelined: bool
    concurrency: int
    status: str  # measured | failed
    throughput: float = 0.0
    throughput_ci: float | None = None
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    memory_mb: float | None = None  # tritonserver and its Python stubs (a server of our own only)
    reason: str = ""
    repeat: int = 0  # 1: the starting configuration measured again after the search, for the run-to-run noise
    gpu_memory_mb: float | None = None  # in use on the server's GPUs after the point (None: no GPU, or not known)

    @property
    def candidate(self) -> Candidate:
        return Candidate(self.instances, self.max_batch_size, self.preferred, self.max_queue_delay_us,
                         self.cuda_graphs, self.pipelined)

    @classmethod
    def of(cls, variant: str, candidate: Candidate, point: PerfPoint, memory_mb: float | None, repeat: int = 0,
           gpu_memory_mb: float | None = None) -> "TunePoint":
        return cls(variant, **asdict(candidate), concurrency=point.concurrency, status="measured",
                   throughput=point.throughput, throughput_ci=point.throughput_ci, p50_ms=point.p50_ms,
                   p99_ms=point.p99_ms, memory_mb=memory_mb, repeat=repeat, gpu_memory_mb=gpu_memory_mb)

    @classmethod
    def failed(cls, variant: str, candidate: Candidate, concurrency: int, reason: str, repeat: int = 0) -> "TunePoint":
        return cls(variant, **asdict(candidate), concurrency=concurrency, status="failed", reason=reason, repeat=repeat)


def failure_reason(message: str) -> str:
    """A measurement's error as one line that says what to change."""
    lower = message.lower()
    if "out of memory" in lower or "std::bad_alloc" in lower:
        return f"out of memory: fewer instances or a smaller max_batch_size ({message})"
    if any(marker.lower() in lower for marker in RETRYABLE):  # windows still too short after measure's retries
        return f"unstable measurement: raise --measurement-ms ({message})"
    return message


@dataclass(frozen=True)
class Goal:
    """What the search optimises, within which limits."""

    objective: str = "throughput"
    max_p99_ms: float | None = None
    min_throughput: float | None = None

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise UserError(f"objective must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}")

    def feasible(self, point: TunePoint) -> bool:
        """Measured in the search (not a repeat) and within the limits."""
        return (point.status == "measured" and point.throughput > 0 and not point.repeat
                and (self.max_p99_ms is None or point.p99_ms <= self.max_p99_ms)
                and (self.min_throughput is None or point.throughput >= self.min_throughput))

    def value(self, point: TunePoint) -> float:
        """Larger is better: samples/s, minus p99 ms, or samples/s per instance."""
        if self.objective == "latency":
            return -point.p99_ms
        if self.objective == "cost":
            return point.throughput / point.instances
        return point.throughput

    def noise(self, point: TunePoint) -> float:
        """The 95% half-width of ``value``. Latency: the throughput windows' relative spread, which under a fixed
        number of requests in flight is the mean latency's too (Little's law); perf_analyzer gives no p99 per window."""
        if point.throughput_ci is None or not point.throughput:
            return 0.0
        return abs(self.value(point)) * point.throughput_ci / point.throughput

    def best(self, points: Iterable[TunePoint]) -> TunePoint | None:
        """The feasible point with the largest value."""
        return max((p for p in points if self.feasible(p)), key=self.value, default=None)

    def describe(self) -> str:
        limits = [f"p99 <= {self.max_p99_ms:g} ms" if self.max_p99_ms is not None else "",
                  f"throughput >= {self.min_throughput:g}/s" if self.min_throughput is not None else ""]
        what = {"throughput": "highest throughput", "latency": "lowest p99", "cost": "highest throughput per instance"}
        return what[self.objective] + "".join(f", {limit}" for limit in limits if limit)


@dataclass(frozen=True)
class Verdict:
    """The search's answer for one variant: its best point against the starting configuration's."""

    winner: TunePoint | None
    start: TunePoint | None
    significant: bool
    reason: str


def run_to_run(goal: Goal, points: list[TunePoint], start: Candidate) -> float | None:
    """The largest relative difference in the objective between the starting configuration's first measurement and
    its repeat after the search, over the concurrencies both measured (None without a repeat). Windows of one run
    agree more closely than runs apart in time with reloads between them, and a p99 from a few dozen requests is
    close to their maximum: this spread is the noise the search must beat."""
    runs = {(p.concurrency, p.repeat): goal.value(p) for p in points
            if p.candidate == start and p.status == "measured" and p.throughput > 0}
    spreads = [abs(runs[(c, 0)] - runs[(c, 1)]) / (abs(runs[(c, 0)] + runs[(c, 1)]) / 2)
               for c, repeat in runs if repeat == 1 and (c, 0) in runs and runs[(c, 0)] + runs[(c, 1)]]
    return max(spreads) if spreads else None


def judge(goal: Goal, points: list[TunePoint], start: Candidate) -> Verdict:
    """The winner, and whether it beats the starting configuration by more than the noise: the larger of the two
    points' window intervals combined and the run-to-run spread of the starting configuration (run_to_run)."""
    winner = goal.best(points)
    baseline = goal.best(p for p in points if p.candidate == start)
    if winner is None:
        return Verdict(None, baseline, False, "no configuration met the limits: " + goal.describe())
    if baseline is None:
        return Verdict(winner, None, True, "the starting configuration met no limit; this one does")
    if winner.candidate == start:
        return Verdict(winner, baseline, False, "the starting configuration is the best measured")
    gain = goal.value(winner) - goal.value(baseline)
    noise = max(math.hypot(goal.noise(winner), goal.noise(baseline)),
                (run_to_run(goal, points, start) or 0.0) * abs(goal.value(baseline)))
    better = {"throughput": "samples/s more", "latency": "ms lower p99", "cost": "samples/s per instance more"}[goal.objective]
    if gain <= noise:
        return Verdict(winner, baseline, False, f"no significant gain: {gain:.3g} {better} than the start, "
                                                f"within the noise of +-{noise:.3g}")
    return Verdict(winner, baseline, True, f"{gain:.3g} {better} than the start ({abs(gain / goal.value(baseline)):.0%}), "
                                           f"beyond the noise of +-{noise:.3g}")


Measure = Callable[..., list[TunePoint]]  # (candidate, repeat=0) -> its points


def search(space: SearchSpace, goal: Goal, strategy: str, measure: Measure, budget: int | None = None,
           measured: dict[Candidate, list[TunePoint]] | None = None) -> dict[Candidate, list[TunePoint]]:
    """Candidates measured by ``strategy`` (at most ``budget``, the starting one always first), with their points.

    ``measured``: candidates already measured (a resumed search), not measured again."""
    results = dict(measured or {})
    budget = budget or len(space.grid())

    def visit(candidate: Candidate) -> list[TunePoint]:
        if candidate not in results:
            results[candidate] = measure(candidate)
        return results[candidate]

    def spent() -> int:
        return len(results)

    if strategy not in STRATEGIES:
        raise UserError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    visit(space.start)
    if strategy == "brute":
        for candidate in space.grid():
            if spent() >= budget:
                break
            visit(candidate)
    elif strategy == "quick":
        _climb(space, goal, visit, lambda: spent() >= budget)
    else:
        _optuna(space, goal, visit, budget, spent)
    return results


def _climb(space: SearchSpace, goal: Goal, visit: Callable[[Candidate], list[TunePoint]], exhausted: Callable[[], bool]) -> None:
    """Coordinate hill climbing from the start: measure the current candidate's neighbours, move to the best of
    them while it beats the current one beyond the noise, stop when none does or the budget is spent."""
    current = space.start
    seen = {current}
    while not exhausted():
        here = goal.best(visit(current))
        neighbours = [n for n in space.neighbours(current) if n not in seen]
        best, best_point = None, None
        for neighbour in neighbours:
            if exhausted():
                break
            seen.add(neighbour)
            point = goal.best(visit(neighbour))
            if point is not None and (best_point is None or goal.value(point) > goal.value(best_point)):
                best, best_point = neighbour, point
        if best is None:
            return
        if here is not None and goal.value(best_point) - goal.value(here) <= math.hypot(goal.noise(best_point), goal.noise(here)):
            return
        current = best


def _optuna(space: SearchSpace, goal: Goal, visit: Callable[[Candidate], list[TunePoint]], budget: int,
            spent: Callable[[], int]) -> None:
    """Optuna's TPE sampler over the grid's values (optional dependency: pip install 'trtrepo[tune]')."""
    try:
        import optuna
    except ImportError:
        raise UserError("--strategy optuna needs Optuna: pip install 'trtrepo[tune]' (or use quick or brute)") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=0))
    asked = 0
    while spent() < budget and asked < 4 * budget:  # repeats of a measured candidate cost nothing but a draw
        asked += 1
        trial = study.ask()
        candidate = Candidate(**{name: trial.suggest_categorical(name, list(values)) for name, values in space.dimensions()})
        best = goal.best(visit(candidate))
        study.tell(trial, goal.value(best) if best is not None else float("-inf"))


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


@dataclass(frozen=True)
class Plan:
    """How many servers of a configuration serve a target rate at a p99 limit."""

    point: TunePoint
    servers: int
    per_server: float  # samples/s a server is planned for: the lower end of its 95% interval

    def arithmetic(self, target_rate: float) -> str:
        p = self.point
        return (f"{p.variant} {p.candidate.label()}: one server gives {p.throughput:.1f} samples/s "
                f"(95% interval down to {self.per_server:.1f}) at p99 {p.p99_ms:.0f} ms with {p.concurrency} requests "
                f"in flight; {target_rate:g} / {self.per_server:.1f} = {target_rate / self.per_server:.2f} -> "
                f"{self.servers} server(s) x {p.instances} instance(s), {self.servers * p.concurrency} requests in flight "
                f"in all (the estimate assumes servers on separate machines or GPUs add up; "
                f"`trtrepo perf --servers` measures how far they do)")


def capacity(points: list[TunePoint], target_rate: float, max_p99_ms: float) -> Plan | None:
    """The plan with the fewest servers, then the fewest instances, from points measured within ``max_p99_ms``."""
    if target_rate <= 0:
        raise UserError(f"--target-rate must be above 0, got {target_rate:g}")
    within = Goal(max_p99_ms=max_p99_ms)
    plans = []
    for point in filter(within.feasible, points):
        per_server = point.throughput - (point.throughput_ci or 0.0)
        if per_server > 0:
            plans.append(Plan(point, math.ceil(target_rate / per_server), per_server))
    return min(plans, key=lambda plan: (plan.servers, plan.point.instances, -plan.per_server), default=None)


def pareto_front(points: list[TunePoint]) -> list[TunePoint]:
    """The measured points no other beats on both throughput and p99, by throughput."""
    measured = [p for p in points if p.status == "measured"]
    front = [p for p in measured if not any(q.throughput >= p.throughput and q.p99_ms <= p.p99_ms
                                            and (q.throughput, q.p99_ms) != (p.throughput, p.p99_ms) for q in measured)]
    return sorted(front, key=lambda p: p.throughput)


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


def tune_variant(trial: "Trial", space: SearchSpace, goal: Goal, strategy: str, concurrencies: list[int], batch_size: int,
                 measurement_ms: int, budget: int | None, earlier: dict[Candidate, list[TunePoint]],
                 on_point: Callable[[TunePoint], None]) -> None:
    """One variant's search on the trial's server, then its starting configuration measured again (run_to_run);
    every new point goes to ``on_point`` as it is measured."""
    measure = measure_candidates(trial, concurrencies, batch_size, measurement_ms, on_point)
    search(space, goal, strategy, measure, budget, earlier)
    measure(space.start, repeat=1)


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


def measure_candidates(trial: "Trial", concurrencies: list[int], batch_size: int, measurement_ms: int,
                       on_point: Callable[[TunePoint], None]) -> Measure:
    """The measuring step of a search: load the candidate on the trial's server, measure every concurrency, read the
    memory of the server and its stubs (a server of our own) and of its GPUs (where its metrics say); a candidate the
    server refuses, or a point that fails, becomes a failed point with its reason."""
    from trtrepo.perf.gpu_monitor import gpu_memory_mb
    from trtrepo.perf.soak import server_memory_mb

    endpoint = trial.endpoints[0]

    def measure(candidate: Candidate, repeat: int = 0) -> list[TunePoint]:
        points = []
        try:
            trial.load(**candidate.changes())
        except UserError as exc:
            points = [TunePoint.failed(trial.variant, candidate, c, failure_reason(str(exc)), repeat) for c in concurrencies]
        else:
            for concurrency in concurrencies:
                try:
                    perf = trial.measure(concurrency, min(batch_size, candidate.max_batch_size), measurement_ms,
                                         instances=candidate.instances)
                except UserError as exc:
                    points.append(TunePoint.failed(trial.variant, candidate, concurrency, failure_reason(str(exc)), repeat))
                else:
                    points.append(TunePoint.of(trial.variant, candidate, perf, server_memory_mb(endpoint.server_pid),
                                               repeat, gpu_memory_mb(endpoint.metrics_url)))
        for point in points:
            on_point(point)
        return points

    return measure


def apply_candidate(repository: Path, variant: str, candidate: Candidate) -> Path:
    """Write ``candidate`` into the variant's config.pbtxt through the schema; the config it replaces is kept as
    config.pbtxt.orig (the first one only: applying again keeps the generated config to go back to)."""
    import os
    import shutil

    from trtrepo.config import CONFIG_FILE, read_config, write_config
    from trtrepo.perf.trial import changed_config

    model_dir = Path(repository) / variant
    path = model_dir / CONFIG_FILE
    if not path.is_file():
        raise UserError(f"{path}: no such config to apply the winner to; give the repository with --model-repository")
    original = path.with_name(CONFIG_FILE + ".orig")
    if not original.exists():  # copied beside it, then renamed: an interrupted copy never passes for the original
        partial = path.with_name(f".{original.name}.partial")
        shutil.copy2(path, partial)
        os.replace(partial, original)
    return write_config(changed_config(read_config(path), candidate.changes()), model_dir)


def gated_variants(repository: Path, names: list[str]) -> tuple[list[str], list[str]]:
    """Each name as a variant, a model's name as its variants in the repository that passed their accuracy gate (or
    had none); also one line per variant left out, with why."""
    from trtrepo.config import CONFIG_FILE, Variant, read_manifest

    variants, left_out = [], []
    for name in names:
        if Variant.is_variant(name):
            variants.append(name)
            continue
        mine = sorted(p for p in Path(repository).glob(f"{name}_*") if (p / CONFIG_FILE).is_file()
                      and Variant.is_variant(p.name) and Variant.parse(p.name).model == name)
        if not mine:
            raise UserError(f"{repository}: no variants of {name!r}; name variants, or build them with `trtrepo repo`")
        for folder in mine:
            gate = read_manifest(folder).get("gate_result")
            if gate and not gate.get("passed"):
                left_out.append(f"{folder.name}: below its accuracy gate (published with --allow-below-gate); not tuned")
            else:
                variants.append(folder.name)
    return variants, left_out


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


def apply_and_check(repository: Path, variant: str, verdict: Verdict, endpoint: "Endpoint", batch_size: int,
                    measurement_ms: int) -> str:
    """--apply: a significant winner written (apply_candidate), reloaded from the repository, and measured again at
    its concurrency against what the search predicted; the report's lines about it."""
    from trtrepo.client import InferenceClient
    from trtrepo.perf.trial import Trial

    if verdict.winner is None or not verdict.significant:
        return f"\n{variant}: not applied ({verdict.reason}); config.pbtxt left as it was.\n"
    winner = verdict.winner
    path = apply_candidate(repository, variant, winner.candidate)
    InferenceClient(variant, url=endpoint.grpc_url, protocol="grpc").load_model(variant)
    again = Trial(variant, [endpoint]).measure(winner.concurrency, min(batch_size, winner.max_batch_size), measurement_ms)
    noise = math.hypot(winner.throughput_ci or 0, again.throughput_ci or 0)
    within = "within" if abs(again.throughput - winner.throughput) <= noise else "outside"
    return (f"\n{variant}: applied to {path} (the old config in {path.name}.orig) and reloaded; measured again at "
            f"concurrency {winner.concurrency}: {again.throughput:.1f} samples/s, p99 {again.p99_ms:.0f} ms, against "
            f"{winner.throughput:.1f} predicted ({within} the noise of +-{noise:.2g}).\n")


def capacity_markdown(points: list[TunePoint], target_rate: float, max_p99_ms: float) -> str:
    """The capacity plan's section of the report, with its arithmetic."""
    plan = capacity(points, target_rate, max_p99_ms)
    if plan is None:
        return f"\n## Capacity\n\nNo measured point met p99 <= {max_p99_ms:g} ms: no plan for {target_rate:g} samples/s.\n"
    return f"\n## Capacity for {target_rate:g} samples/s at p99 <= {max_p99_ms:g} ms\n\n{plan.arithmetic(target_rate)}.\n"
