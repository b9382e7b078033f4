"""Server-side pipeline (a Triton BLS model): encoded image bytes in, the model's answer out (top-k labels,
boxes, text lines: see pipeline_tasks.py).

Triton's dynamic batcher hands ``execute`` the requests waiting (one image each, up to the tensor model's batch
limit); their images are decoded and prepared, and those of one shape are sent to the tensor model as one BLS
request, so its own batcher sees them all at once. A client in any language needs no preprocessing. A request whose
bytes are no image, or whose options are out of range, gets its own INVALID_ARG error; the others of the batch are
answered.

Where images are prepared is the config's ``prepare`` parameter: ``host`` decodes with PIL and prepares with numpy
on a thread pool; ``device`` decodes JPEGs as one batch with torchvision's decode_jpeg (nvJPEG on a GPU instance;
other formats on the host, counted), prepares them with torch where they lie and hands the batch to the tensor
model in that memory through DLPack.

Each execute adds the seconds it spent in each stage (pipeline_tasks.STAGES) to a Triton counter, so that what
holds a pipeline back is read from the server it runs in (trtrepo perf's pipelines.md).
"""

from __future__ import annotations

import ctypes
import json
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Iterator

import numpy as np
import triton_python_backend_utils as pb_utils

from trtrepo.backend.batches import host_array
from trtrepo.backend.pipeline_tasks import (
    DECODED_METRIC,
    MAX_IMAGE_BYTES,
    MAX_IMAGE_BYTES_PARAMETER,
    MAX_IMAGE_PIXELS_PARAMETER,
    MMAP_THRESHOLD_BYTES,
    MMAP_THRESHOLD_PARAMETER,
    PREPARE_THREADS,
    STAGE_METRIC,
    STAGES,
    Prepared,
    decode_on_device,
    pipeline_task,
)
from trtrepo.backend.stub_python import MemoryFailures, outlive_the_stub, record_fatal_stacks, refuse_garbling_stub
from trtrepo.errors import UserError
from trtrepo.models import spec_of
from trtrepo.specs import MAX_IMAGE_PIXELS, decode_image, image_format


#: glibc's mallopt parameter number of the size from which allocations are mmapped (malloc.h).
M_MMAP_THRESHOLD = -3


def _failed(message: str, code: object | None = None) -> object:
    error = pb_utils.TritonError(message) if code is None else pb_utils.TritonError(message, code)
    return pb_utils.InferenceResponse(error=error)


def _refused(exc: Exception) -> object:
    """The response for a request that failed before inference: the request's own fault (HTTP 400 / gRPC
    INVALID_ARGUMENT) for bad bytes or options, else the error's name and message."""
    if isinstance(exc, (ValueError, UserError)):
        return _failed(str(exc), pb_utils.TritonError.INVALID_ARG)
    return _failed(f"{exc.__class__.__name__}: {exc}")


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        record_fatal_stacks(args["model_instance_name"])
        refuse_garbling_stub(pb_utils)
        params = {k: v["string_value"] for k, v in json.loads(args["model_config"]).get("parameters", {}).items()}
        self.task = pipeline_task(spec_of(params))
        self.variant = params["variant"]
        self.max_bytes = int(params.get(MAX_IMAGE_BYTES_PARAMETER, MAX_IMAGE_BYTES))
        self.max_pixels = int(params.get(MAX_IMAGE_PIXELS_PARAMETER, MAX_IMAGE_PIXELS))
        # The stub is this model's own process: its allocator's setting is the model's for the process's life.
        mmap_threshold = int(params.get(MMAP_THRESHOLD_PARAMETER, MMAP_THRESHOLD_BYTES))
        if mmap_threshold:
            ctypes.CDLL(None).mallopt(M_MMAP_THRESHOLD, mmap_threshold)
        self.memory = MemoryFailures(pb_utils, args["model_name"])
        self.pool = ThreadPoolExecutor(PREPARE_THREADS, thread_name_prefix="pipeline-prepare")
        self.device = None
        if params.get("prepare") == "device" and self.task.on_device:
            import torch

            on_gpu = args.get("model_instance_kind") == "GPU"
            self.device = torch.device(f"cuda:{args['model_instance_device_id']}" if on_gpu else "cpu")
        # The device path counts where it decoded images, in Triton's metrics (a format nvJPEG does not take, or
        # a JPEG it refused, goes to the host).
        self.metric_family = pb_utils.MetricFamily(
            name=DECODED_METRIC, description="Images a trtrepo pipeline decoded, by where", kind=pb_utils.MetricFamily.COUNTER)
        self.decoded = {where: self.metric_family.Metric(labels={"model": args["model_name"], "where": where})
                        for where in ("device", "host")}
        self.stage_family = pb_utils.MetricFamily(
            name=STAGE_METRIC, description="Seconds a trtrepo pipeline's executes spent in each stage", kind=pb_utils.MetricFamily.COUNTER)
        self.stage_seconds = {stage: self.stage_family.Metric(labels={"model": args["model_name"], "stage": stage})
                              for stage in STAGES}
        outlive_the_stub(self.metric_family, self.stage_family, *self.decoded.values(), *self.stage_seconds.values())

    @contextmanager
    def _timed(self, stage: str) -> Iterator[None]:
        """Adds the block's seconds to the stage's counter; on a GPU once the work it queued there is done."""
        began = time.perf_counter()
        try:
            yield
        finally:
            if self.device is not None and self.device.type == "cuda":
                import torch

                torch.cuda.synchronize(self.device)
            self.stage_seconds[stage].increment(time.perf_counter() - began)

    def execute(self, requests: list) -> list:
        if self.device is not None:
            responses = self._prepare_on_device(requests)
        else:
            with self._timed("prepare"):
                responses = list(self.pool.map(self._prepare, requests))
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for index, prepared in enumerate(responses):
            if isinstance(prepared, Prepared):
                by_shape.setdefault(tuple(prepared.array.shape), []).append(index)
        for indices in by_shape.values():
            try:
                answers = self._infer([responses[i] for i in indices])
            except Exception as exc:  # the tensor model failed: every request it held gets the reason
                self.memory.count(exc, len(indices))
                answers = [_failed(f"{exc.__class__.__name__}: {exc}") for _ in indices]
            for index, answer in zip(indices, answers):
                responses[index] = answer
        return responses

    def _refused(self, exc: Exception) -> object:
        self.memory.count(exc)
        return _refused(exc)

    def finalize(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)

    def _read(self, request: object) -> tuple[bytes, dict[str, float]]:
        """The request's encoded image and options (ValueError: the request's own fault)."""
        images = pb_utils.get_input_tensor_by_name(request, "image").as_numpy().reshape(-1)
        if images.size != 1:
            raise ValueError(f"send one image per request, not {images.size}: the pipeline batches requests itself")
        if len(images[0]) > self.max_bytes:
            raise ValueError(f"the image is {len(images[0]):,} bytes, more than the {self.max_bytes:,} this pipeline "
                             f"takes ({MAX_IMAGE_BYTES_PARAMETER} in its config)")
        given = {tensor.name: found.as_numpy() for tensor, _, _ in self.task.options
                 if (found := pb_utils.get_input_tensor_by_name(request, tensor.name)) is not None}
        return bytes(images[0]), self.task.read_options(given)

    def _prepare(self, request: object) -> Prepared | object:
        """Host path: the request's image ready for the tensor model, or the response that tells the client why not."""
        try:
            data, options = self._read(request)
            return self.task.prepare(decode_image(data, "image", self.max_pixels), options)
        except Exception as exc:
            return self._refused(exc)

    def _prepare_on_device(self, requests: list) -> list[Prepared | object]:
        """Device path: the JPEGs of the batch decoded at once where the tensor model runs, the rest on the host."""
        responses: list[Prepared | object] = [None] * len(requests)
        received: dict[int, tuple[bytes, dict[str, float], str]] = {}
        with self._timed("read"):
            for index, request in enumerate(requests):
                try:
                    data, options = self._read(request)
                    received[index] = (data, options, image_format(data, "image", self.max_pixels))  # header first
                except Exception as exc:
                    responses[index] = self._refused(exc)
        with self._timed("decode"):
            indices = list(received)
            decoded, on_device = decode_on_device([received[i][0] for i in indices], [received[i][2] for i in indices],
                                                  self.device, self.pool)
            images = dict(zip(indices, decoded))
            self.decoded["device"].increment(on_device)
            self.decoded["host"].increment(len(indices) - on_device)
        with self._timed("resize"):
            for index, (_, options, _) in received.items():
                image = images[index]
                responses[index] = self._refused(image) if isinstance(image, Exception) else self.task.prepare_tensor(image, options)
        return responses

    def _infer(self, ready: list[Prepared]) -> list[object]:
        """One BLS request of images of one shape (in host memory, or on the device through DLPack); a response
        per image."""
        with self._timed("engine"):
            raw = self._engine(ready)
        with self._timed("answer"):
            return [pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor(name, array) for name, array in
                self.task.answer({name: value[index : index + 1] for name, value in raw.items()}, prepared).items()])
                for index, prepared in enumerate(ready)]

    def _engine(self, ready: list[Prepared]) -> dict[str, np.ndarray]:
        """The tensor model's outputs for the batch, in host memory."""
        spec = self.task.spec
        name = spec.inputs[0].name
        if self.device is None:
            batch = pb_utils.Tensor(name, np.stack([p.array for p in ready]))
        else:
            import torch
            from torch.utils.dlpack import to_dlpack

            batch = pb_utils.Tensor.from_dlpack(name, to_dlpack(torch.stack([p.array for p in ready]).contiguous()))
        request = pb_utils.InferenceRequest(model_name=self.variant, requested_output_names=[t.name for t in spec.outputs],
                                            inputs=[batch])
        inference = request.exec()
        if inference.has_error():
            raise RuntimeError(f"{self.variant}: {inference.error().message()}")
        return {t.name: host_array(pb_utils.get_output_tensor_by_name(inference, t.name)) for t in spec.outputs}

