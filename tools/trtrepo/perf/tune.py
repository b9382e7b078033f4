"""trtrepo tune: search a variant's serving options for the best configuration under an objective, on running servers.

Each candidate is loaded through the repository API (perf.trial: the model is reloaded, never the server) and
measured with perf_analyzer at each client concurrency. Preferred batch sizes move with max_batch_size (a candidate is
never dropped for them); variable input dimensions take the model spec's typical shape. A candidate that cannot be
measured is recorded with a one-line reason and the search goes on. Every point carries the noise of its measurement
windows (a 95% interval); after the search the starting configuration and the winner are each measured again, and a
winner whose runs do not all beat the start's beyond their spread is called what it is: no significant gain.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from trtrepo.errors import UserError
from trtrepo.perf.tune_space import STRATEGIES, Candidate, Goal, Measure, SearchSpace, TunePoint, failure_reason
from trtrepo.perf.tune_verdict import Verdict

if TYPE_CHECKING:
    from trtrepo.perf.trial import Trial
    from trtrepo.serving.access import Endpoint


def search(space: SearchSpace, goal: Goal, strategy: str, measure: Measure, budget: int | None = None,
           measured: dict[Candidate, list[TunePoint]] | None = None) -> dict[Candidate, list[TunePoint]]:
    """Candidates measured by ``strategy`` (at most ``budget``, the starting one always first), with their points.

    ``measured``: candidates already measured (a resumed search), not measured again."""
    results = dict(measured or {})
    budget = budget or len(space.grid())

    def visit(candidate: Candidate) -> list[TunePoint]:
        candidate = space.canonical(candidate)
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


def tune_variant(trial: "Trial", space: SearchSpace, goal: Goal, strategy: str, concurrencies: list[int], batch_size: int,
                 measurement_ms: int, budget: int | None, earlier: dict[Candidate, list[TunePoint]],
                 on_point: Callable[[TunePoint], None]) -> None:
    """One variant's search on the trial's server, then its starting configuration and the goal's winner measured
    again (the repeated runs tune_verdict.judge rests a gain on); every new point goes to ``on_point`` as measured."""
    measure = measure_candidates(trial, concurrencies, batch_size, measurement_ms, on_point)
    found = search(space, goal, strategy, measure, budget, earlier)
    measure(space.start, repeat=1)
    winner = goal.best(p for points in found.values() for p in points)
    if winner is not None and winner.candidate != space.start:
        measure(winner.candidate, repeat=1)


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
    config.pbtxt.orig (the first one only: applying again keeps the generated config to go back to). A winner that
    a pipeline over the variant could not call (pipelined, a smaller batch) is refused."""
    import os
    import shutil

    from trtrepo.format.config import CONFIG_FILE, read_config, write_config
    from trtrepo.format.validate import pipeline_problems
    from trtrepo.perf.trial import changed_config

    model_dir = Path(repository) / variant
    path = model_dir / CONFIG_FILE
    if not path.is_file():
        raise UserError(f"{path}: no such config to apply the winner to; give the repository with --model-repository")
    changed = changed_config(read_config(path), candidate.changes())
    if problems := pipeline_problems(repository, {variant: changed}):
        raise UserError(f"the winner was not applied, {path} left as it was: {problems[0]}")
    original = path.with_name(CONFIG_FILE + ".orig")
    if not original.exists():  # copied beside it, then renamed: an interrupted copy never passes for the original
        partial = path.with_name(f".{original.name}.partial")
        shutil.copy2(path, partial)
        os.replace(partial, original)
    return write_config(changed, model_dir)


def gated_variants(repository: Path, names: list[str]) -> tuple[list[str], list[str]]:
    """Each name as a variant, a model's name as its variants in the repository that passed their accuracy gate (or
    had none); also one line per variant left out, with why."""
    from trtrepo.format.config import CONFIG_FILE, Variant, read_manifest

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


def apply_and_check(repository: Path, variant: str, verdict: Verdict, endpoint: "Endpoint", batch_size: int,
                    measurement_ms: int) -> str:
    """--apply: a significant winner written (apply_candidate), reloaded from the repository, and measured again at
    its concurrency against what the search predicted; the report's lines about it."""
    from trtrepo.perf.trial import Trial
    from trtrepo.serving.client import InferenceClient

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


