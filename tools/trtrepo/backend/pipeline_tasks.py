"""What a server-side pipeline does per model task, in numpy alone (testable without Triton): the per-request
options it takes, how one decoded image becomes the tensor model's input, and how that model's outputs for one
image become the answer (top-k labels, boxes, text lines)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import numpy as np

from trtrepo.specs import CLASSIFICATION, DETECTION, TEXT, ModelSpec, TensorSpec, decode_image, image_tensor

#: Images a pipeline instance decodes and prepares at once (PIL's decoders and numpy release the GIL).
PREPARE_THREADS = 4
#: Triton metric (counter) of the images a pipeline's device path decoded, labelled by model and where (device, host).
DECODED_METRIC = "trtrepo_pipeline_decoded_images"
#: Triton metric (counter) of the seconds a pipeline's executes spent in each stage, labelled by model and stage.
STAGE_METRIC = "trtrepo_pipeline_stage_seconds"
#: The stages an execute runs, in order. The host path reads, decodes and resizes each request on its threads
#: ("prepare"); the device path reads the requests and image headers ("read"), decodes the batch ("decode") and
#: resizes, normalizes or letterboxes each image where it lies ("resize"). Both then make the BLS request and wait
#: for it ("engine": the tensor model's own time and the hand-over both ways) and build the answers ("answer").
STAGES = ("prepare", "read", "decode", "resize", "engine", "answer")
#: A pipeline's bounds on one request (config parameters of these names; refused with INVALID_ARG beyond them):
#: the encoded image's bytes, and the pixels its header declares. With at most PREPARE_THREADS images decoded at
#: once, an instance holds at most PREPARE_THREADS x 3 x max_image_pixels bytes of decoded images.
MAX_IMAGE_BYTES_PARAMETER, MAX_IMAGE_PIXELS_PARAMETER = "max_image_bytes", "max_image_pixels"
MAX_IMAGE_BYTES = 64 << 20
#: Allocations from this size up are the kernel's pages, handed back when freed (glibc's M_MMAP_THRESHOLD, fixed):
#: glibc raises its threshold to the size of each large block freed, so that after a few large images their
#: buffers come from its heap and stay there (README: the pipeline's memory). The config parameter of this name
#: overrides it; 0 leaves glibc's own adaptive threshold.
MMAP_THRESHOLD_PARAMETER, MMAP_THRESHOLD_BYTES = "mmap_threshold", 1 << 20


@dataclass(frozen=True)
class Prepared:
    """One request's image as the tensor model takes it (no batch axis), with what its answer needs."""

    array: Any  # numpy array, or a torch tensor on the pipeline's device
    context: Any
    options: dict[str, float]


class PipelineTask(ABC):
    """A task's pipeline over the tensor model ``spec`` describes."""

    #: Optional per-request inputs (one number each), with the range a request's value must lie in.
    options: tuple[tuple[TensorSpec, float, float], ...]
    outputs: tuple[TensorSpec, ...]
    #: Whether images may be decoded and prepared where the tensor model runs (prepare_tensor).
    on_device = True

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec

    @abstractmethod
    def defaults(self) -> dict[str, float]:
        """Each option's value when a request leaves it out."""

    def read_options(self, given: dict[str, np.ndarray]) -> dict[str, float]:
        """The request's options: each one finite number in its range, else ValueError (the request's own fault)."""
        values = self.defaults()
        for tensor, low, high in self.options:
            if tensor.name not in given:
                continue
            sent = np.asarray(given[tensor.name]).reshape(-1)
            if sent.size != 1 or not low <= float(sent[0]) <= high:  # NaN fails the comparison too
                raise ValueError(f"{tensor.name} must be one number from {low:g} to {high:g}, got {sent.tolist()[:4]}")
            values[tensor.name] = float(sent[0])
        return values

    @abstractmethod
    def prepare(self, image: Any, options: dict[str, float]) -> Prepared:
        """One decoded RGB image (PIL) -> the tensor model's input for it, exactly as the host client prepares it."""

    def prepare_tensor(self, image: Any, options: dict[str, float]) -> Prepared:
        """One decoded RGB image as a uint8 CHW torch tensor -> the tensor model's input, left on the image's device
        (the spec's preprocess_tensor: the host path's within the model's tolerance)."""
        return Prepared(self.spec.preprocess_tensor(image), None, options)

    @abstractmethod
    def answer(self, outputs: dict[str, np.ndarray], prepared: Prepared) -> dict[str, np.ndarray]:
        """The tensor model's outputs for this image (a batch of one) -> the pipeline's outputs (a batch of one)."""


class ClassifierTask(PipelineTask):
    """Top-k labels (as the classifier's labels file names them) and softmax probabilities."""

    options = ((TensorSpec("top_k", "int32", (1,)), 1, 1000),)
    outputs = (TensorSpec("labels", "object", (-1,)), TensorSpec("scores", "float32", (-1,)))

    def defaults(self) -> dict[str, float]:
        return {"top_k": 5}

    def prepare(self, image: Any, options: dict[str, float]) -> Prepared:
        return Prepared(self.spec.preprocess_image(image), None, options)

    def answer(self, outputs: dict[str, np.ndarray], prepared: Prepared) -> dict[str, np.ndarray]:
        (top,) = self.spec.postprocess(outputs, int(prepared.options["top_k"]))
        return {"labels": np.array([[label.encode() for label, _ in top]], dtype=np.object_),
                "scores": np.array([[score for _, score in top]], dtype=np.float32)}


class DetectorTask(PipelineTask):
    """YOLO: letterboxed as Darknet does, boxes in the image's own pixels after class-wise NMS."""

    options = ((TensorSpec("conf", "float32", (1,)), 0.0, 1.0), (TensorSpec("iou", "float32", (1,)), 0.0, 1.0))
    outputs = (TensorSpec("boxes", "float32", (-1, 4)), TensorSpec("scores", "float32", (-1,)),
               TensorSpec("class_ids", "int32", (-1,)))

    def defaults(self) -> dict[str, float]:
        from trtrepo.models.detection import DEFAULT_CONF, DEFAULT_IOU

        return {"conf": DEFAULT_CONF, "iou": DEFAULT_IOU}

    def prepare(self, image: Any, options: dict[str, float]) -> Prepared:
        array, letterbox = self.spec.letterbox_image(image)
        return Prepared(array, letterbox, options)

    def prepare_tensor(self, image: Any, options: dict[str, float]) -> Prepared:
        array, letterbox = self.spec.letterbox_tensor(image)
        return Prepared(array, letterbox, options)

    def answer(self, outputs: dict[str, np.ndarray], prepared: Prepared) -> dict[str, np.ndarray]:
        from trtrepo.models.detection import to_image_coords

        found = self.spec.postprocess(outputs, conf=prepared.options["conf"], iou=prepared.options["iou"])[0]
        found = to_image_coords(found, prepared.context)
        return {"boxes": np.array([d.box for d in found], dtype=np.float32).reshape(1, -1, 4),
                "scores": np.array([d.score for d in found], dtype=np.float32).reshape(1, -1),
                "class_ids": np.array([d.class_id for d in found], dtype=np.int32).reshape(1, -1)}


class TextTask(PipelineTask):
    """CTPN: resized to its own shape, proposals connected into text lines here, in the server."""

    options = ((TensorSpec("line_score", "float32", (1,)), 0.0, 1.0),)
    outputs = (TensorSpec("lines", "float32", (-1, 4, 2)), TensorSpec("scores", "float32", (-1,)))

    def defaults(self) -> dict[str, float]:
        return {"line_score": self.spec.line_min_score}

    #: CTPN's images keep their own sizes, one request at a time: prepared on the host.
    on_device = False

    def prepare(self, image: Any, options: dict[str, float]) -> Prepared:
        array, scale = self.spec.resize(image)
        return Prepared(array, scale, options)

    def answer(self, outputs: dict[str, np.ndarray], prepared: Prepared) -> dict[str, np.ndarray]:
        (lines,) = self.spec.postprocess(outputs, scale=prepared.context, line_min_score=prepared.options["line_score"])
        return {"lines": np.array([line.corners for line in lines], dtype=np.float32).reshape(1, -1, 4, 2),
                "scores": np.array([line.score for line in lines], dtype=np.float32).reshape(1, -1)}


TASKS: dict[str, type[PipelineTask]] = {CLASSIFICATION: ClassifierTask, DETECTION: DetectorTask, TEXT: TextTask}


def pipeline_task(spec: ModelSpec) -> PipelineTask:
    """The pipeline task of a model spec."""
    return TASKS[spec.task](spec)


def decode_on_device(datas: list[bytes], formats: list[str], device: Any, pool: Executor) -> tuple[list[Any], int]:
    """The device path's decode: each image as a uint8 CHW tensor on ``device``, or the exception that says why it
    cannot be, with how many the batch decoder took. JPEGs go to torchvision's decode_jpeg as one batch (nvJPEG on
    a GPU); other formats (``formats``: image_format's), and JPEGs it refuses, are decoded with PIL on ``pool``."""
    jpegs = [i for i, found in enumerate(formats) if found == "JPEG"]
    images = {i: image for i, image in zip(jpegs, _decode_jpegs([datas[i] for i in jpegs], device)) if image is not None}
    on_device = len(images)
    on_host = [i for i in range(len(datas)) if i not in images]
    images.update(zip(on_host, pool.map(lambda data: _decode_on_host(data, device), [datas[i] for i in on_host])))
    return [images[i] for i in range(len(datas))], on_device


def _decode_jpegs(datas: list[bytes], device: Any) -> list[Any]:
    """Each JPEG as a uint8 CHW tensor on the device, or None where the decoder refused it (then tried on the
    host, whose error is the request's): one batch, else one at a time to find the image it refused."""
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg

    encoded = [torch.frombuffer(bytearray(data), dtype=torch.uint8) for data in datas]
    if not encoded:
        return []
    try:
        return decode_jpeg(encoded, mode=ImageReadMode.RGB, device=device)
    except RuntimeError:
        found = []
        for data in encoded:
            try:
                found.append(decode_jpeg(data, mode=ImageReadMode.RGB, device=device))
            except RuntimeError:
                found.append(None)
        return found


def _decode_on_host(data: bytes, device: Any) -> Any:
    """An image decoded with PIL and moved to the device, or the exception that says why it cannot be."""
    try:
        image = decode_image(data, "image")
    except Exception as exc:
        return exc
    return image_tensor(image).to(device)
