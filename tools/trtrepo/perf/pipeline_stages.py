"""Which stage holds a pipeline back: its decode and prepare stages timed alone on the photos it was sent, on the
path it takes (the host's thread pool, or the GPU), beside the engine's served tensors-in throughput from the same
sweep."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from trtrepo.backend.pipeline_tasks import PREPARE_THREADS, PipelineTask, pipeline_task
from trtrepo.format.config import Variant
from trtrepo.models import get_model
from trtrepo.perf.analyzer import PerfPoint
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


def stage_ceilings(model: str, photos: list[Path], on_device: bool) -> dict[str, float]:
    """Images per second of decoding and of preparing (resize, normalize or letterbox) alone, each on the path the
    pipeline takes: the host's thread pool, or on the GPU (decode_jpeg in batches, the spec's preprocess_tensor)."""
    task = pipeline_task(get_model(model))
    data = [p.read_bytes() for p in photos]
    if on_device:
        return _device_ceilings(task, data)
    options = task.defaults()
    with ThreadPoolExecutor(PREPARE_THREADS) as pool:
        images = list(pool.map(lambda raw: decode_image(raw, "photo"), data))
        decode = _rate(lambda: list(pool.map(lambda raw: decode_image(raw, "photo"), data)), len(data))
        resize = _rate(lambda: list(pool.map(lambda image: task.prepare(image, options), images)), len(data))
    return {"decode": decode, "resize": resize}


def _device_ceilings(task: PipelineTask, data: list[bytes]) -> dict[str, float]:
    """The GPU path's stages alone: nvJPEG decoding the photos as one batch, then preparing each on the GPU."""
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg

    encoded = [torch.frombuffer(bytearray(raw), dtype=torch.uint8) for raw in data]
    options = task.defaults()

    def decode() -> list:
        images = decode_jpeg(encoded, mode=ImageReadMode.RGB, device="cuda")
        torch.cuda.synchronize()
        return images

    images = decode()

    def prepare() -> None:
        [task.prepare_tensor(image, options) for image in images]
        torch.cuda.synchronize()

    return {"decode (nvJPEG)": _rate(decode, len(data)), "resize (GPU)": _rate(prepare, len(data))}


def _rate(work: Callable[[], object], images: int) -> float:
    """Images per second of ``work`` (which handles ``images``), after one untimed pass that warms it up."""
    work()
    began = time.perf_counter()
    for _ in range(PASSES):
        work()
    return PASSES * images / (time.perf_counter() - began)


def stage_reports(points: list, photos: list[Path]) -> list[StageReport]:
    """For each pipeline point whose variant was measured at the same point of the sweep (best such pair): its
    stages' ceilings, the engine's being the variant's tensors-in throughput."""
    by_key = {(p.variant, p.servers, p.instances, p.concurrency): p for p in points}
    best: dict[str, tuple[PerfPoint, float]] = {}
    for point in points:
        engine = by_key.get((point.serves, point.servers, point.instances, point.concurrency)) if point.serves else None
        if engine and (point.variant not in best or point.throughput > best[point.variant][0].throughput):
            best[point.variant] = (point, engine.throughput)
    reports = []
    for pipeline, (point, engine) in best.items():
        ceilings = stage_ceilings(Variant.parse(point.serves).model, photos, point.prepared_on == "device")
        reports.append(StageReport(pipeline, point.serves, point.throughput, {**ceilings, "engine": engine}))
    return reports
