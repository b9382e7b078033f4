"""Which stage holds a pipeline back: each host stage (decode, resize) timed alone on the shipped photos with the
pipeline's own thread count, beside the engine's served tensors-in throughput from the same sweep."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from trtrepo.backend.pipeline_tasks import PREPARE_THREADS, pipeline_task
from trtrepo.format.config import Variant
from trtrepo.models import get_model
from trtrepo.specs import decode_image

#: Passes over the photos per stage timing (the first, untimed, warms imports and caches).
PASSES = 3


@dataclass(frozen=True)
class StageReport:
    """A pipeline's measured throughput and each stage's ceiling (images per second, that stage alone)."""

    pipeline: str
    variant: str
    measured: float
    ceilings: dict[str, float]

    def bound(self) -> str:
        """The stage that takes the largest share of an image's time."""
        return min(self.ceilings, key=self.ceilings.get)

    def shared_ceiling(self) -> float:
        """What the stages allow when they share the same cores, one after another: 1 / (sum of 1 / ceiling)."""
        return 1.0 / sum(1.0 / rate for rate in self.ceilings.values())

    def line(self) -> str:
        per_image = ", ".join(f"{stage} {1000 / rate:.1f} ms ({rate:.0f}/s)" for stage, rate in self.ceilings.items())
        share = (1 / self.ceilings[self.bound()]) / sum(1 / rate for rate in self.ceilings.values())
        return (f"{self.pipeline}: per image {per_image}; bound by {self.bound()} ({share:.0%} of an image's time). "
                f"Sharing one machine's cores the stages allow {self.shared_ceiling():.1f} img/s; measured "
                f"{self.measured:.1f} img/s bytes in.")


def host_stage_ceilings(model: str, photos: list[Path], threads: int = PREPARE_THREADS) -> dict[str, float]:
    """Images per second of decoding and of resizing (the task's prepare) alone, on ``threads`` threads."""
    task = pipeline_task(get_model(model))
    data = [p.read_bytes() for p in photos]
    options = task.defaults()
    with ThreadPoolExecutor(threads) as pool:
        images = list(pool.map(lambda raw: decode_image(raw, "photo"), data))
        list(pool.map(lambda image: task.prepare(image, options), images))  # warm-up: imports, caches
        began = time.perf_counter()
        for _ in range(PASSES):
            images = list(pool.map(lambda raw: decode_image(raw, "photo"), data))
        decode = PASSES * len(data) / (time.perf_counter() - began)
        began = time.perf_counter()
        for _ in range(PASSES):
            list(pool.map(lambda image: task.prepare(image, options), images))
        resize = PASSES * len(data) / (time.perf_counter() - began)
    return {"decode": decode, "resize": resize}


def stage_reports(points: list, photos: list[Path]) -> list[StageReport]:
    """For each pipeline point whose variant was measured at the same point of the sweep (best such pair): its
    stages' ceilings, the engine's being the variant's tensors-in throughput."""
    by_key = {(p.variant, p.servers, p.instances, p.concurrency): p for p in points}
    best: dict[str, tuple[float, float, str]] = {}
    for point in points:
        engine = by_key.get((point.serves, point.servers, point.instances, point.concurrency)) if point.serves else None
        if engine and point.throughput > best.get(point.variant, (0.0, 0.0, ""))[0]:
            best[point.variant] = (point.throughput, engine.throughput, point.serves)
    reports = []
    for pipeline, (measured, engine, variant) in best.items():
        ceilings = host_stage_ceilings(Variant.parse(variant).model, photos)
        reports.append(StageReport(pipeline, variant, measured, {**ceilings, "engine": engine}))
    return reports
