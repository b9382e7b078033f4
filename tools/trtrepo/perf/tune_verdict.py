"""The statistics of tune's verdicts: the best point under the goal against the starting configuration, a gain
only beyond the run-to-run noise, the Pareto front of throughput and latency, and the capacity plan at a rate."""

from __future__ import annotations

import math
from dataclasses import dataclass

from trtrepo.errors import UserError
from trtrepo.perf.tune_space import Candidate, Goal, TunePoint


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


def runs(goal: Goal, points: list[TunePoint], candidate: Candidate, concurrency: int) -> list[float]:
    """The objective's value in every run of ``candidate`` at ``concurrency`` within the limits (search and repeat)."""
    return [goal.value(p) for p in points if p.candidate == candidate and p.concurrency == concurrency and goal.within(p)]


def judge(goal: Goal, points: list[TunePoint], start: Candidate) -> Verdict:
    """The winner, and whether it beats the starting configuration on repeated runs of both: a gain only when every
    run of the winner beats every run of the start and the mean gain clears the two runs' spreads combined (as
    ratios: the gain of the geometric means against the combined spreads of the runs' logarithms). A
    winner picked by its first run is favoured by its own noise; its repeat after the search is measured afresh.
    The starting configuration itself never wins (search gives a configuration identical to it the start's points)."""
    winner = goal.best(points)
    baseline = goal.best(p for p in points if p.candidate == start)
    if winner is None:
        return Verdict(None, baseline, False, "no configuration met the limits: " + goal.describe())
    if baseline is None:
        return Verdict(winner, None, True, "the starting configuration met no limit; this one does")
    if winner.candidate == start:
        return Verdict(winner, baseline, False, "the starting configuration is the best measured")
    better = {"throughput": "samples/s more", "latency": "ms lower p99", "cost": "samples/s per instance more"}[goal.objective]
    won, started = runs(goal, points, winner.candidate, winner.concurrency), runs(goal, points, start, baseline.concurrency)
    if len(won) < 2 or len(started) < 2:
        once = "the winner" if len(won) < 2 else "the start"
        return Verdict(winner, baseline, False, f"no significant gain: {once} was measured within the limits only once; "
                                                f"a gain needs repeated runs of both")
    gain = sum(won) / len(won) - sum(started) / len(started)
    # A busy machine scales a rate or a latency (a core shared with another process halves both): run-to-run noise
    # is a factor, so the gain and the spreads are compared as ratios, on logarithms of the runs.
    logs_won, logs_started = _logs(won), _logs(started)
    sign = -1.0 if goal.objective == "latency" else 1.0  # its values are minus the p99s
    log_gain = sign * (sum(logs_won) / len(logs_won) - sum(logs_started) / len(logs_started))
    spread = math.expm1(math.hypot(max(logs_won) - min(logs_won), max(logs_started) - min(logs_started)))
    if min(won) <= max(started) or math.expm1(log_gain) <= spread:
        return Verdict(winner, baseline, False, f"no significant gain: {gain:.3g} {better} than the start on average "
                                                f"over {len(won)} and {len(started)} runs, within their run-to-run "
                                                f"spread of +-{spread:.0%}")
    return Verdict(winner, baseline, True, f"{gain:.3g} {better} than the start ({abs(gain / (sum(started) / len(started))):.0%}) "
                                           f"on average over {len(won)} and {len(started)} runs; every run of it beats "
                                           f"every run of the start, beyond their spread of +-{spread:.0%}")


def _logs(values: list[float]) -> list[float]:
    return [math.log(max(abs(value), 1e-12)) for value in values]


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
