"""Which stage holds a pipeline back, two ways: the seconds per image its executes spent in each stage while it was
measured, read from the server's metrics (the counters pipeline.py keeps); and its decode and resize stages timed
alone on the photos it was sent, on the path it takes (the host's thread pool, or the device), beside the engine's
served tensors-in throughput from the same sweep."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from trtrepo.backend.pipeline_tasks import PREPARE_THREADS, STAGE_METRIC, STAGES, PipelineTask, decode_on_device, pipeline_task
from trtrepo.format.config import Variant
from trtrepo.models import get_model
from trtrepo.perf.analyzer import PerfPoint
from trtrepo.serving.metrics import labelled_samples, scrape_metrics
from trtrepo.specs import decode_image, image_format

#: Passes over the photos per stage timing (the first, untimed, warms imports and caches).
PASSES = 3
#: Triton's cumulative counters: a model's inferences (images, for a pipeline), and the microseconds its requests
#: waited in its queue and were computed (the tensor model's own share of a pipeline's "engine" stage).
IMAGES_METRIC = "nv_inference_count"
OWN_TIME_METRICS = ("nv_inference_queue_duration_us", "nv_inference_compute_input_duration_us",
                    "nv_inference_compute_infer_duration_us", "nv_inference_compute_output_duration_us")
#: The key of the tensor model's own time (queue and compute, as Triton counts them) in per-image stage times.
VARIANT_OWN = "variant"
#: The key of the time that passed between the readings, per image: what the pipeline's instance had for each.
ELAPSED = "elapsed"


def server_counters(metrics_text: str, pipeline: str, variant: str) -> dict[str, float]:
    """A pipeline's cumulative counters in one Prometheus scrape: seconds by stage, its images ("images"), and its
    variant's own queue and compute seconds (VARIANT_OWN)."""
    found = {stage: 0.0 for stage in STAGES} | {"images": 0.0, VARIANT_OWN: 0.0}
    for name, labelled, value in labelled_samples(metrics_text):
        model = labelled.get("model")
        if name == STAGE_METRIC and model == pipeline and labelled.get("stage") in found:
            found[labelled["stage"]] += value
        elif name == IMAGES_METRIC and model == pipeline:
            found["images"] += value
        elif name in OWN_TIME_METRICS and model == variant:
            found[VARIANT_OWN] += value / 1e6
    return found


def read_counters(metrics_urls: list[str | None], pipeline: str, variant: str) -> dict[str, float] | None:
    """server_counters summed over the servers, with the time they were read ("clock", seconds), or None where a
    server's metrics cannot be read."""
    clock = time.monotonic()
    texts = [scrape_metrics(url) if url else None for url in metrics_urls]
    if not texts or any(text is None for text in texts):
        return None
    summed: dict[str, float] = {"clock": clock}
    for text in texts:
        for key, value in server_counters(text, pipeline, variant).items():
            summed[key] = summed.get(key, 0.0) + value
    return summed


def stage_milliseconds(before: dict[str, float] | None, after: dict[str, float] | None) -> str | None:
    """Milliseconds per image of each stage the pipeline ran between two readings, and of the time that passed
    (ELAPSED), as PerfPoint.stage_ms writes them ("decode=0.210 engine=1.300 ..."); None without both readings or
    without images in between."""
    if before is None or after is None or after["images"] <= before["images"]:
        return None
    images = after["images"] - before["images"]
    spent = {ELAPSED if key == "clock" else key: 1000 * (after[key] - before[key]) / images
             for key in after if key != "images"}
    return " ".join(f"{key}={ms:.4f}" for key, ms in spent.items() if ms > 0 or key == VARIANT_OWN)


def parse_stage_ms(text: str | None) -> dict[str, float]:
    """PerfPoint.stage_ms back as {stage: ms per image}."""
    return {key: float(value) for key, value in (item.split("=") for item in (text or "").split())}


#: What an instance's time per image holds besides its executes: Triton and the stub passing requests and
#: responses, or waiting for requests.
OUTSIDE = "outside execute"


@dataclass(frozen=True)
class StageReport:
    """A pipeline's measured throughput, the milliseconds per image its ``instances`` spent in each stage while it
    was measured (``in_server``, from the server's counters; empty where they could not be read), and each stage's
    ceiling timed alone (images per second)."""

    pipeline: str
    variant: str
    measured: float
    ceilings: dict[str, float]
    in_server: dict[str, float] = field(default_factory=dict)
    instances: int = 1
    #: Decode and prepare together outside Triton, images per second by how many copies of one instance's work ran
    #: at once (1, and the pipeline's instance count).
    outside: dict[int, float] = field(default_factory=dict)

    def bound(self) -> str:
        """The stage that takes the largest share of an image's time: in the server where it was read, else of the
        stages timed alone."""
        spent = self.spent()
        if spent:
            return max(spent, key=spent.get)
        return min(self.ceilings, key=self.ceilings.get)

    def spent(self) -> dict[str, float]:
        """Milliseconds per image of the instances' time, by stage, with the time they spent outside their executes."""
        stages = {stage: ms for stage, ms in self.in_server.items() if stage not in (VARIANT_OWN, ELAPSED)}
        if not stages:
            return {}
        had = self.instances * self.in_server.get(ELAPSED, 1000 / self.measured)
        return stages | {OUTSIDE: max(had - sum(stages.values()), 0.0)}

    def shared_ceiling(self) -> float:
        """What the stages timed alone allow when they share the same cores, one after another: 1 / (sum of 1 / ceiling)."""
        return 1.0 / sum(1.0 / rate for rate in self.ceilings.values())

    def outside_line(self) -> str:
        """The pipeline's throughput against decode and prepare outside Triton and against its tensor variant."""
        if not self.outside:
            return ""
        rates = ", ".join(f"{rate:.0f} img/s on {copies} thread{'s' if copies > 1 else ''}"
                          for copies, rate in sorted(self.outside.items()))
        versus = ", ".join(f"{self.measured / rate:.0%} of the {copies}-thread figure"
                           for copies, rate in sorted(self.outside.items()))
        return (f" Decoded and prepared outside Triton, as its instances do it: {rates}; the pipeline reached {versus} "
                f"and {self.measured / self.ceilings['engine']:.0%} of its variant's tensors-in throughput.")

    def line(self) -> str:
        alone = ", ".join(f"{stage} {1000 / rate:.2f} ms ({rate:.0f}/s)" for stage, rate in self.ceilings.items())
        estimate = (f"Each stage alone, per image: {alone}; one after another on the same cores they would allow "
                    f"{self.shared_ceiling():.1f} img/s (an estimate: the engine's figure is for its tensors-in "
                    "requests, and inside the pipeline it runs the batches the pipeline gathers).")
        spent = self.spent()
        if not spent:
            share = (1 / self.ceilings[self.bound()]) / sum(1 / rate for rate in self.ceilings.values())
            return (f"{self.pipeline} ({self.measured:.1f} img/s bytes in): bound by {self.bound()} ({share:.0%} of an "
                    f"image's time, its stages timed alone). {estimate}{self.outside_line()}")
        own = self.in_server.get(VARIANT_OWN)
        parts = ", ".join(f"{stage} {ms:.3f}" + (f" (the variant's own queue and compute {own:.3f})"
                                                  if stage == "engine" and own else "") for stage, ms in spent.items())
        bound = self.bound()
        whose = "its instance's" if self.instances == 1 else f"its {self.instances} instances'"
        return (f"{self.pipeline} ({self.measured:.1f} img/s bytes in): {whose} {sum(spent.values()):.3f} ms per "
                f"image went to {parts} ms; the largest, {bound} ({spent[bound] / sum(spent.values()):.0%}), holds it "
                f"back. {estimate}{self.outside_line()}")


def stage_ceilings(model: str, photos: list[Path], prepared_on: str | None) -> dict[str, float]:
    """Images per second of decoding and of preparing (resize, normalize or letterbox) alone, each on the path the
    pipeline takes (PerfPoint.prepared_on): the host's thread pool, or the device (decode_jpeg in batches, the spec's
    preprocess_tensor)."""
    task = pipeline_task(get_model(model))
    data = [p.read_bytes() for p in photos]
    if prepared_on in ("cuda", "cpu", "device"):  # "device": a GPU's, as sweeps before the CPU case wrote it
        return _device_ceilings(task, data, "cpu" if prepared_on == "cpu" else "cuda")
    options = task.defaults()
    with ThreadPoolExecutor(PREPARE_THREADS) as pool:
        images = list(pool.map(lambda raw: decode_image(raw, "photo"), data))
        decode = _rate(lambda: list(pool.map(lambda raw: decode_image(raw, "photo"), data)), len(data))
        resize = _rate(lambda: list(pool.map(lambda image: task.prepare(image, options), images)), len(data))
    return {"decode": decode, "resize": resize}


def _device_ceilings(task: PipelineTask, data: list[bytes], device: str) -> dict[str, float]:
    """The device path's stages alone on ``device`` ("cuda": nvJPEG; "cpu", where the path runs without a GPU), with
    the pipeline's own decode (decode_on_device: the JPEGs as one batch, the other photos on the host's threads),
    then each image prepared where it lies."""
    decode, prepare = _device_steps(task, data, device)
    with ThreadPoolExecutor(PREPARE_THREADS) as pool:
        images = decode(pool)
        decoded = _rate(lambda: decode(pool), len(data))
    where = "GPU" if device == "cuda" else "CPU, torch"
    return {f"decode ({'nvJPEG' if device == 'cuda' else 'CPU, torch'})": decoded,
            f"resize ({where})": _rate(lambda: prepare(images), len(data))}


def _device_steps(task: PipelineTask, data: list[bytes], device: str) -> tuple[Callable, Callable]:
    """The device path's decode (of all of ``data``, with a pool for what the batch decoder leaves) and prepare (of
    the decoded images), each returning once the device is done."""
    import torch

    formats = [image_format(raw, "photo") for raw in data]
    options = task.defaults()
    finish = (lambda: torch.cuda.current_stream().synchronize()) if device == "cuda" else (lambda: None)

    def decode(pool: ThreadPoolExecutor) -> list:
        images, _ = decode_on_device(data, formats, device, pool)
        finish()
        return images

    def prepare(images: list) -> list:
        prepared = [task.prepare_tensor(image, options) for image in images]
        finish()
        return prepared

    return decode, prepare


def decoded_and_prepared(model: str, photos: list[Path], prepared_on: str | None, copies: int) -> float:
    """Images per second of ``copies`` copies of one pipeline instance's decode and prepare of the photos, run at
    once on threads (on a GPU each on its own CUDA stream, as each instance, a process, has its own): the ceiling
    those stages set outside Triton for that many instances."""
    task = pipeline_task(get_model(model))
    data = [p.read_bytes() for p in photos]
    on_device = prepared_on in ("cuda", "cpu", "device")
    device = "cpu" if prepared_on == "cpu" else "cuda"
    with ThreadPoolExecutor(PREPARE_THREADS * copies) as pool:
        if on_device:
            decode, prepare = _device_steps(task, data, device)
            one = _on_own_stream(lambda: prepare(decode(pool)), device)
        else:
            options = task.defaults()
            one = lambda: list(pool.map(lambda raw: task.prepare(decode_image(raw, "photo"), options), data))  # noqa: E731
        with ThreadPoolExecutor(copies) as instances:
            return _rate(lambda: list(instances.map(lambda _: one(), range(copies))), copies * len(data))


def _on_own_stream(work: Callable[[], object], device: str) -> Callable[[], object]:
    """``work`` run on a CUDA stream of the calling thread's own (on a GPU), as a pipeline instance's process has."""
    if device != "cuda":
        return work
    import torch

    streams = threading.local()

    def run() -> object:
        if not hasattr(streams, "stream"):
            streams.stream = torch.cuda.Stream()
        with torch.cuda.stream(streams.stream):
            return work()

    return run


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
        model, instances = Variant.parse(point.serves).model, point.pipeline_instances or 1
        ceilings = stage_ceilings(model, photos, point.prepared_on)
        outside = {copies: decoded_and_prepared(model, photos, point.prepared_on, copies)
                   for copies in dict.fromkeys((1, instances))}
        reports.append(StageReport(pipeline, point.serves, point.throughput, {**ceilings, "engine": engine},
                                   parse_stage_ms(point.stage_ms), instances, outside))
    return reports
