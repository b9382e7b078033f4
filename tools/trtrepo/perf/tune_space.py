"""What trtrepo tune searches and records: the configurations (instances, batch sizes, queue delay, CUDA graphs,
pipelining) around the current one, the goal they are judged by, and the measured points."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from itertools import product
from typing import Callable, Iterable

from trtrepo.errors import UserError
from trtrepo.format.config import ServingOptions
from trtrepo.perf.analyzer import RETRYABLE, PerfPoint


#: How each preferred-batch-size rule turns a max_batch_size into the dynamic batcher's preferred sizes; "kept":
#: the starting config's own sizes, less those above the max_batch_size (for sizes that follow no rule).
PREFERRED_RULES: dict[str, Callable[[int], tuple[int, ...]] | None] = {
    "max": lambda m: (m,),
    "halves": lambda m: tuple(sorted({max(m // 2, 1), m})),
    "none": lambda m: (),
    "kept": None,
}
STRATEGIES = ("quick", "brute", "optuna")


OBJECTIVES = ("throughput", "latency", "cost")


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
    kept_sizes: tuple[int, ...] = ()  # the starting config's own preferred batch sizes ("kept")

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
            kept_sizes=tuple(current.preferred_batch_sizes),
        )

    def canonical(self, candidate: Candidate) -> Candidate:
        """The candidate with its preferred sizes named by the first rule that gives them: "kept" sizes that one
        rule also gives, or two rules that agree at its max_batch_size, are one configuration, measured once."""
        rule = PREFERRED_RULES[candidate.preferred]
        sizes = rule(candidate.max_batch_size) if rule else tuple(s for s in self.kept_sizes if s <= candidate.max_batch_size)
        named = next((name for name, of in PREFERRED_RULES.items() if of is not None and of(candidate.max_batch_size) == sizes),
                     "kept")
        return replace(candidate, preferred=named)

    def dimensions(self) -> list[tuple[str, tuple]]:
        """(Candidate field, its values), in Candidate's field order."""
        return [
            ("instances", self.instances), ("max_batch_size", self.max_batch_sizes), ("preferred", self.preferred),
            ("max_queue_delay_us", self.max_queue_delays_us), ("cuda_graphs", self.cuda_graphs),
            ("pipelined", self.pipelined)]

    def grid(self) -> list[Candidate]:
        """Every candidate, the starting one first."""
        values = product(*(values for _, values in self.dimensions()))
        every = dict.fromkeys(self.canonical(Candidate(*one)) for one in values)
        return [self.start] + [c for c in every if c != self.start]

    def neighbours(self, candidate: Candidate) -> list[Candidate]:
        """The candidates one step away along one dimension (the next smaller or larger value)."""
        found = []
        for name, values in self.dimensions():
            index = values.index(getattr(candidate, name))
            for step in (-1, 1):
                if 0 <= index + step < len(values):
                    found.append(self.canonical(replace(candidate, **{name: values[index + step]})))
        return [c for c in dict.fromkeys(found) if c != candidate]


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
    repeat: int = 0  # 1: the starting configuration or the winner measured again after the search
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

    def within(self, point: TunePoint) -> bool:
        """Measured (in the search or a repeat) and within the limits."""
        return (point.status == "measured" and point.throughput > 0
                and (self.max_p99_ms is None or point.p99_ms <= self.max_p99_ms)
                and (self.min_throughput is None or point.throughput >= self.min_throughput))

    def feasible(self, point: TunePoint) -> bool:
        """Measured in the search (not a repeat) and within the limits."""
        return not point.repeat and self.within(point)

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


Measure = Callable[..., list[TunePoint]]  # (candidate, repeat=0) -> its points
