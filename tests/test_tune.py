"""trtrepo tune's search, verdicts and capacity arithmetic on measurements given as numbers (perf.tune); the real
server and perf_analyzer are in test_integration's tune test."""

from __future__ import annotations

from dataclasses import replace

import pytest

from trtrepo.errors import UserError
from trtrepo.format.config import ServingOptions
from trtrepo.perf.tune import search
from trtrepo.perf.tune_report import checkpoint, read_csv, resumed
from trtrepo.perf.tune_space import Candidate, Goal, SearchSpace, TunePoint, failure_reason
from trtrepo.perf.tune_verdict import capacity, judge, pareto_front, run_to_run

START = ServingOptions(max_batch_size=8, instances=1, preferred_batch_sizes=(8,), max_queue_delay_us=2000)


def point(candidate: Candidate, concurrency: int, throughput: float, p99_ms: float, ci: float | None = 1.0) -> TunePoint:
    return TunePoint("m_onnxruntime_fp32", instances=candidate.instances, max_batch_size=candidate.max_batch_size,
                     preferred=candidate.preferred, max_queue_delay_us=candidate.max_queue_delay_us,
                     cuda_graphs=candidate.cuda_graphs, pipelined=candidate.pipelined, concurrency=concurrency,
                     status="measured", throughput=throughput, throughput_ci=ci, p50_ms=p99_ms / 2, p99_ms=p99_ms)


def surface(candidate: Candidate) -> list[TunePoint]:
    """A smooth landscape with its peak at 2 instances, max batch 4: what hill climbing should find."""
    throughput = 100 - 10 * abs(candidate.instances - 2) - 8 * abs(candidate.max_batch_size.bit_length() - 3)
    return [point(candidate, c, throughput * c / 4, 10.0 * c) for c in (1, 2, 4)]


def test_the_space_holds_the_current_config_and_moves_preferred_sizes_with_the_batch_limit():
    space = SearchSpace.around(START, instances=(1, 2, 3))
    assert space.max_batch_sizes == (1, 2, 4, 8) and space.start == Candidate(1, 8, "max", 2000)
    grid = space.grid()
    assert grid[0] == space.start and len(grid) == 3 * 4  # every max_batch_size kept: its preferred size follows
    assert Candidate(1, 2, "max", 2000).changes()["preferred_batch_sizes"] == (2,)
    assert Candidate(1, 8, "halves", 2000).changes()["preferred_batch_sizes"] == (4, 8)
    odd = SearchSpace.around(ServingOptions(max_batch_size=8, preferred_batch_sizes=(2, 8)))
    assert odd.start.preferred == "kept" and "preferred_batch_sizes" not in odd.start.changes()
    assert "preferred as configured" in odd.start.label()
    with pytest.raises(UserError, match="rule odd unknown"):
        SearchSpace.around(START, preferred=("odd",))


def test_brute_measures_the_grid_and_quick_finds_its_peak_with_fewer():
    space = SearchSpace.around(START, instances=(1, 2, 3, 4))
    goal = Goal("throughput")
    brute = search(space, goal, "brute", surface)
    quick = search(space, goal, "quick", surface)
    assert len(brute) == len(space.grid()) == 16
    best = lambda found: goal.best(p for points in found.values() for p in points)  # noqa: E731
    assert best(quick).candidate == best(brute).candidate == Candidate(2, 4, "max", 2000)
    assert len(quick) <= 0.6 * len(brute)
    assert len(search(space, goal, "brute", surface, budget=5)) == 5


def test_a_resumed_search_measures_only_what_is_missing(tmp_path):
    space = SearchSpace.around(START)
    first = search(space, Goal(), "brute", surface, budget=3)
    checkpoint([p for points in first.values() for p in points], tmp_path)
    again = resumed(tmp_path, "m_onnxruntime_fp32", [1, 2, 4])
    assert set(again) == set(first)
    calls = []
    search(space, Goal(), "brute", lambda c: calls.append(c) or surface(c), measured=again)
    assert len(calls) == len(space.grid()) - 3 and not set(calls) & set(first)


def again(p: TunePoint, throughput: float) -> TunePoint:
    """``p`` measured a second time after the search."""
    return replace(p, throughput=throughput, repeat=1)


def test_a_gain_rests_on_repeated_runs_of_both_configurations():
    start, other = Candidate(1, 8, "max", 2000), Candidate(2, 8, "max", 2000)
    first, rival = point(start, 4, 100.0, 50.0), point(other, 4, 130.0, 45.0)
    once = judge(Goal("throughput"), [first, rival, again(first, 101.0)], start)
    assert once.winner.candidate == other and not once.significant
    assert "the winner was measured within the limits only once" in once.reason
    clear = judge(Goal("throughput"), [first, rival, again(first, 102.0), again(rival, 128.0)], start)
    assert clear.significant and "28 samples/s more than the start (28%)" in clear.reason
    # The winner's repeat fell back among the start's runs: its first run was luck.
    lucky = judge(Goal("throughput"), [first, rival, again(first, 102.0), again(rival, 101.0)], start)
    assert not lucky.significant and lucky.reason.startswith("no significant gain: 14.5 samples/s more")
    # Apart on average, but the start's own two runs spread wider than the gain.
    drifting = judge(Goal("throughput"), [first, rival, again(first, 125.0), again(rival, 131.0)], start)
    assert not drifting.significant and "spread of +-25" in drifting.reason
    # Window intervals that under load spread wider than the gain do not hide a gain every run shows.
    noisy = [point(start, 4, 4.0, 50.0, ci=3.0), point(other, 4, 113.0, 45.0, ci=158.0)]
    assert judge(Goal("throughput"), noisy + [again(noisy[0], 4.1), again(noisy[1], 110.0)], start).significant
    # A run slowed threefold by a busy core is a factor of noise, not an amount: 47 and 133 against 4 and 4.1 is a
    # gain (compared as amounts, the 86 between the winner's runs would have hidden the 86 it gains).
    busy = noisy + [again(noisy[0], 4.1), again(noisy[1], 47.0)]
    assert judge(Goal("throughput"), [replace(busy[1], throughput=133.0)] + busy[:1] + busy[2:], start).significant
    # The latency objective's runs are the p99s.
    slower = replace(point(start, 1, 20.0, 100.0), repeat=1)
    assert run_to_run(Goal("latency"), [point(start, 1, 20.0, 60.0), slower], start) == pytest.approx(0.5)


def test_a_configuration_identical_to_the_start_is_the_start_and_never_wins():
    """"kept" sizes a rule also gives, or two rules that agree at one max_batch_size, are one configuration: the
    search measures it once, as the start, however lucky another measurement of it would have been."""
    space = SearchSpace.around(START, max_batch_sizes=(1, 8), preferred=("kept", "halves"))
    assert space.canonical(Candidate(1, 8, "kept", 2000)) == space.start == Candidate(1, 8, "max", 2000)
    assert space.canonical(Candidate(1, 1, "halves", 2000)) == Candidate(1, 1, "max", 2000)
    grid = space.grid()
    # 2 instances x 2 batch limits x 3 rules, but at max batch 8 kept = max, and at 1 halves = max, kept (8 dropped) = none
    assert len(grid) == len(set(grid)) == 2 * 2 * 3 - 2 * 2
    assert space.canonical(Candidate(1, 1, "kept", 2000)).preferred == "none"
    lucky = {Candidate(1, 8, "kept", 2000): 150.0}
    calls = []

    def measure(candidate: Candidate) -> list[TunePoint]:
        calls.append(candidate)
        return [point(candidate, 4, lucky.get(candidate, 100.0), 50.0)]

    found = search(space, Goal(), "brute", measure)
    assert calls.count(space.start) == 1 and Candidate(1, 8, "kept", 2000) not in calls
    points = [p for ps in found.values() for p in ps] + [again(found[space.start][0], 100.0)]
    verdict = judge(Goal("throughput"), points, space.start)
    assert verdict.winner.candidate == space.start and not verdict.significant


def test_limits_and_objectives_pick_different_winners():
    a, b = Candidate(1, 8, "max", 2000), Candidate(2, 8, "max", 2000)
    points = [point(a, 1, 50.0, 20.0), point(a, 4, 120.0, 90.0), point(b, 4, 150.0, 200.0)]
    assert judge(Goal("throughput"), points, a).winner.throughput == 150.0
    assert judge(Goal("throughput", max_p99_ms=100), points, a).winner.throughput == 120.0
    assert judge(Goal("latency"), points, a).winner.p99_ms == 20.0
    assert judge(Goal("cost"), points, a).winner.candidate == a  # 120 per instance against 75
    none = judge(Goal("throughput", max_p99_ms=1), points, a)
    assert none.winner is None and "no configuration met the limits" in none.reason
    assert [p.throughput for p in pareto_front(points)] == [50.0, 120.0, 150.0]


def test_capacity_plans_on_the_lower_end_of_the_interval_and_shows_the_arithmetic():
    one, two = Candidate(1, 8, "max", 2000), Candidate(2, 8, "max", 2000)
    points = [point(one, 4, 100.0, 40.0, ci=10.0), point(two, 4, 160.0, 60.0, ci=10.0), point(two, 8, 250.0, 300.0)]
    plan = capacity(points, 1000, max_p99_ms=100)
    assert (plan.servers, plan.point.instances, plan.per_server) == (7, 2, 150.0)  # 1000 / 150 = 6.67 -> 7
    assert "1000 / 150.0 = 6.67 -> 7 server(s) x 2 instance(s)" in plan.arithmetic(1000)
    assert capacity(points, 1000, max_p99_ms=10) is None


def test_failures_say_what_to_change_and_survive_the_csv(tmp_path):
    assert failure_reason("CUDA error: out of memory").startswith("out of memory: fewer instances")
    assert failure_reason("Failed to obtain stable measurement").startswith("unstable measurement: raise --measurement-ms")
    failed = TunePoint.failed("m_onnxruntime_fp32", Candidate(3, 8, "none", 0), 4, "out of memory: ...")
    checkpoint([failed], tmp_path)
    assert read_csv(tmp_path / "tune.csv") == [failed]


def test_optuna_is_optional():
    try:
        import optuna  # noqa: F401
    except ImportError:
        with pytest.raises(UserError, match="pip install .trtrepo\\[tune\\]."):
            search(SearchSpace.around(START), Goal(), "optuna", surface, budget=4)
    else:
        assert len(search(SearchSpace.around(START), Goal(), "optuna", surface, budget=4)) == 4
