"""What every model module provides: tensor specs, network, weights, pre- and post-processing."""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

from trtrepo.errors import UserError

if TYPE_CHECKING:
    import torch


# numpy dtype name -> Triton data type without the TYPE_ prefix (model_config.proto's DataType).
_TRITON_DTYPES = {"float32": "FP32", "float16": "FP16", "int8": "INT8", "int32": "INT32", "int64": "INT64", "uint8": "UINT8",
                 "object": "BYTES"}


@dataclass(frozen=True)
class TensorSpec:
    """One input or output tensor, per sample: the batch axis is implicit (Triton's max_batch_size > 0)."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    #: An image input's layout as Triton's configs declare it ("NCHW"), which clients such as NVIDIA's example
    #: image client read to lay out their tensors; "" for tensors that are not images.
    image_format: str = ""

    @property
    def triton_dtype(self) -> str:
        """The data type as Triton's protocol names it (``FP32``)."""
        return _TRITON_DTYPES[self.dtype]


@dataclass(frozen=True)
class Tolerance:
    """How far another framework's twin of a network may stray from PyTorch on one output (or on a range of its
    last axis, such as a detector's box coordinates): the largest absolute difference allowed, and what it is."""

    output: str
    max_abs: float
    what: str
    columns: tuple[int, int | None] | None = None

    def difference(self, ours: np.ndarray, reference: np.ndarray) -> float:
        """Largest absolute difference between the two arrays of this output, in the columns it covers."""
        if self.columns is not None:
            ours, reference = ours[..., slice(*self.columns)], reference[..., slice(*self.columns)]
        return float(np.abs(ours.astype(np.float64) - reference).max())


#: What a model does, which decides its client, its post-processing and how its accuracy is measured.
CLASSIFICATION, DETECTION, TEXT, RAW = "classification", "detection", "text", "raw"
TASK_CLIENTS = {CLASSIFICATION: "clients/resnet_client.py", DETECTION: "clients/yolo_client.py", TEXT: "clients/ctpn_client.py",
                RAW: "any Triton client with tensors (a raw model takes no images)"}


class ModelSpec(ABC):
    """A servable model. Adding a model means one module that subclasses this, registered in models/__init__."""

    name: str
    task: str  # CLASSIFICATION, DETECTION or TEXT
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    weight_choices: str = "random|PATH"
    #: For a part of a model served split (an ensemble step): the whole model, whose accuracy gate stands for it.
    judged_whole_as: str | None = None
    #: The Keras twin of the network ("module:function" in trtrepo.tf_networks), which the TensorFlow engine
    #: builds; None where there is none.
    keras_twin: str | None = None
    #: A classifier's output of one score per class: its config names a labels file (class_names, one a line), so
    #: Triton's classification extension answers "score:index:label"; None for other models.
    labelled_output: str | None = None
    class_names: list[str]
    #: A model declared as data (trtrepo.models.declared): its declaration, which its variants' configs carry.
    declaration_json: str | None = None
    #: A model whose network is an ONNX file (declared so), built from it instead of an export: no PyTorch network.
    onnx_source: Path | None = None
    #: A network that is TorchScript (declared so), which torch.compile does not take.
    scripted: bool = False
    #: A raw model's tolerance: how far a reduced-precision variant's outputs may stray from FP32's (largest
    #: absolute difference), which its gate judges on random inputs.
    tolerance: float = 0.0

    def precision_problem(self, precision: str) -> str | None:
        """Why this model has no variant of ``precision`` on any engine, or None."""
        return None

    def twin_tolerances(self) -> tuple[Tolerance, ...]:
        """What a twin in another framework must match at build: by default every output within 1e-3."""
        return tuple(Tolerance(t.name, 1e-3, t.name) for t in self.outputs)

    @abstractmethod
    def build_network(self, weights: str) -> "torch.nn.Module":
        """The PyTorch network in eval mode, with weights ``random``, a named pretrained set or a file path."""

    def save_network(self, network: "torch.nn.Module", out_file: Path) -> None:
        """The network as the PyTorch engines' artifact, which build_network(its path) reads back: its state dict."""
        import torch

        torch.save(network.state_dict(), out_file)

    def preprocess(self, image_path: Path) -> np.ndarray:
        """One image file -> one input sample (no batch axis), as the network expects it."""
        return self.preprocess_image(load_image(image_path))

    @abstractmethod
    def preprocess_image(self, image: Any) -> np.ndarray:
        """One decoded RGB image (PIL) -> one input sample: files, crops and request bytes take the same path."""

    def preprocess_tensor(self, image: "torch.Tensor") -> "torch.Tensor":
        """One decoded RGB image (uint8 CHW tensor, on any device) -> one input sample on that device: what
        preprocess_image computes on the host, within the model's tolerance (for pipelines that keep images on the
        GPU). Models that prepare on the host only leave it out."""
        raise NotImplementedError(f"{self.name} prepares its images on the host only")

    @abstractmethod
    def postprocess(self, outputs: dict[str, np.ndarray], top_k: int = 5) -> list[Any]:
        """Batched raw outputs -> one readable result per sample."""

    #: Per input with variable (-1) dimensions: the (min, opt, max) sample shapes it is built and tuned for.
    #: ``opt`` also sizes example batches and perf_analyzer's requests.
    dynamic_shapes: dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]] = {}

    def shape_range(self, tensor: TensorSpec) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        """(min, opt, max) sample shape of an input: its fixed shape, or the declared range where it varies."""
        if -1 not in tensor.shape:
            return tensor.shape, tensor.shape, tensor.shape
        if tensor.name not in self.dynamic_shapes:
            raise UserError(f"{self.name}: input {tensor.name} has variable dimensions but no declared range")
        return self.dynamic_shapes[tensor.name]

    def example_batch(self, batch_size: int, seed: int = 0) -> dict[str, np.ndarray]:
        """A random batch matching the input specs (at the typical shape), for export parity and timing."""
        rng = np.random.default_rng(seed)
        return {t.name: rng.standard_normal((batch_size, *self.shape_range(t)[1])).astype(t.dtype) for t in self.inputs}

    def typical_output_shapes(self) -> dict[str, tuple[int, ...]]:
        """Each output's per-sample shape for inputs at the typical shape: as declared where fixed, else from one
        run of the network on the CPU (random weights: only the shapes are wanted)."""
        if all(-1 not in t.shape for t in self.outputs):
            return {t.name: t.shape for t in self.outputs}
        import torch

        network = self.build_network("random")
        with torch.inference_mode():
            result = network(*(torch.from_numpy(x) for x in self.example_batch(1).values()))
        result = result if isinstance(result, (tuple, list)) else (result,)
        return {t.name: tuple(r.shape[1:]) for t, r in zip(self.outputs, result)}


#: File name endings taken as images when a folder is given (clients, calibration, evaluation).
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm"})
#: The most pixels an image may declare. The header is read first, so a small file that declares a huge image
#: (a decompression bomb: 493 KB of PNG for 13000 x 13000 pixels, 2 GB decoded) is refused before decoding.
MAX_IMAGE_PIXELS = 8192 * 8192


def load_image(path: Path) -> "Any":
    """Open an image as RGB, turning a missing, unreadable or oversized file into a one-line error."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such image file")
    with path.open("rb") as file:
        return decode_image(file, str(path))


def decode_image(source: Any, what: str, max_pixels: int = MAX_IMAGE_PIXELS) -> "Any":
    """An image file object (or bytes) as RGB: grayscale, palette, alpha and CMYK converted; refused with one
    line naming ``what`` when it is not an image, is truncated, or declares more than ``max_pixels``."""
    with opened_image(source, what, max_pixels) as image:
        try:
            return image.convert("RGB")
        except (OSError, ValueError, SyntaxError) as exc:
            raise UserError(f"{what}: not a readable image ({exc.__class__.__name__})") from exc


def image_tensor(image: Any) -> "torch.Tensor":
    """A decoded RGB image (PIL) as the uint8 CHW torch tensor (on the CPU) that preprocess_tensor takes."""
    import torch

    return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)


def image_format(data: bytes, what: str, max_pixels: int = MAX_IMAGE_PIXELS) -> str:
    """The format an encoded image declares (JPEG, PNG, ...), read from its header alone, refused as decode_image
    refuses it: what decides whether the bytes can go to a GPU decoder."""
    with opened_image(data, what, max_pixels) as image:
        return image.format or ""


@contextlib.contextmanager
def opened_image(source: Any, what: str, max_pixels: int = MAX_IMAGE_PIXELS) -> Iterator["Any"]:
    """The image PIL opened lazily (its header read, no pixel decoded yet), checked against ``max_pixels``."""
    import io

    from PIL import Image, UnidentifiedImageError

    Image.MAX_IMAGE_PIXELS = None  # PIL's own guard (warn at 89M pixels, refuse at 179M) gives way to the one here
    if isinstance(source, (bytes, bytearray)):
        source = io.BytesIO(source)
    try:
        image = Image.open(source)
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError, ValueError, SyntaxError) as exc:
        raise UserError(f"{what}: not a readable image ({exc.__class__.__name__})") from exc
    with image:
        width, height = image.size
        if width * height > max_pixels:
            raise UserError(f"{what}: declares {width}x{height} pixels, more than the {max_pixels:,} "
                            "this tool decodes (a decompression bomb?)")
        yield image
