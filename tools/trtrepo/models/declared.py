"""A model declared as data ([[model]] in a plan) instead of a module: the spec its declaration describes.

A declaration names its network's source (a torchvision architecture with a state dict, or an ONNX file), its task,
class names, input size and layout and preprocessing. It travels with every variant built from it (the ``declaration`` parameter of the
variant's config, class names included), so that a server's stubs and the clients, which read the config, know
the model from the repository alone.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from trtrepo.errors import UserError
from trtrepo.models.imagenet import ImageNetClassifier
from trtrepo.specs import CLASSIFICATION, TensorSpec

if TYPE_CHECKING:
    import torch
    from PIL import Image


#: The config parameter that carries a declared model's declaration (JSON).
DECLARATION_PARAMETER = "declaration"
#: What a declaration may say: its keys and their types (``name``, ``torchvision``, ``labels`` must be given).
DECLARATION_KEYS = {
    "name": str, "torchvision": str, "onnx": str, "weights": str, "task": str, "labels": str, "input_size": list,
    "layout": str, "channels": str, "resize": int, "interpolation": str, "mean": list, "std": list, "softmax": bool,
}
REQUIRED_KEYS = ("name", "labels")
#: The keys naming a network's source, exactly one of which a declaration gives.
SOURCE_KEYS = ("torchvision", "onnx")
LAYOUTS, CHANNEL_ORDERS = ("NCHW", "NHWC"), ("RGB", "BGR")
TASKS = (CLASSIFICATION,)
INTERPOLATIONS = ("bilinear", "bicubic", "nearest")
#: ImageNet's: what torchvision's classifiers are trained with, the default of a declaration that says none.
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Declaration:
    """A declared classifier: torchvision ``architecture`` (or the network in ``onnx``, its tensors
    ``input_name`` and ``output_name``) with ``class_names`` outputs, fed ``input_size`` (H, W) images in ``layout``
    and ``channels`` order whose shorter side is resized to ``resize`` and centre-cropped, then normalised by
    ``mean`` and ``std`` (on 0-1 pixels, in RGB order); ``softmax``: its output is logits, not probabilities.
    ``weights`` (the state dict the build starts from; None: random) and ``onnx`` are the build's files, not
    carried with the variants."""

    name: str
    class_names: tuple[str, ...]
    architecture: str | None = None
    onnx: Path | None = None
    input_name: str = "input"
    output_name: str = "logits"
    weights: Path | None = None
    task: str = CLASSIFICATION
    layout: str = "NCHW"
    channels: str = "RGB"
    softmax: bool = True
    input_size: tuple[int, int] = (224, 224)
    resize: int = 256
    interpolation: str = "bilinear"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def to_json(self) -> str:
        """What travels with the variants: everything but the build's weights file."""
        fields = dataclasses.asdict(self) | {"weights": None, "onnx": None}
        return json.dumps(fields, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "Declaration":
        fields = json.loads(text)
        return cls(**{key: tuple(value) if isinstance(value, list) else value for key, value in fields.items()})


def parse_declaration(table: dict[str, Any], where: str, base: Path) -> Declaration:
    """A [[model]] table whose keys and their types the plan has checked (DECLARATION_KEYS, REQUIRED_KEYS), its
    values checked here: each mistake one line naming ``where``; relative paths are from ``base`` (the plan's
    folder)."""
    name = table["name"]
    where = f"{where} ({name})"
    sources = [key for key in SOURCE_KEYS if key in table]
    if len(sources) != 1:
        raise UserError(f"{where}: give the network's source as one of {', '.join(SOURCE_KEYS)}, not "
                        f"{' and '.join(sources) or 'none'}")
    if "onnx" in table and "weights" in table:
        raise UserError(f"{where}: an ONNX file holds its weights; weights is for a torchvision architecture")
    for key, allowed in (("layout", LAYOUTS), ("channels", CHANNEL_ORDERS)):
        if table.get(key, allowed[0]) not in allowed:
            raise UserError(f"{where}: {key} {table[key]!r}; one of {', '.join(allowed)}")
    if "torchvision" in table and (table.get("layout", "NCHW"), table.get("channels", "RGB")) != ("NCHW", "RGB"):
        raise UserError(f"{where}: a torchvision network takes NCHW RGB; layout and channels are for an ONNX file")
    task = table.get("task", CLASSIFICATION)
    if task not in TASKS:
        raise UserError(f"{where}: task {task!r} is not one a declared model can have yet; one of {', '.join(TASKS)}")
    interpolation = table.get("interpolation", "bilinear")
    if interpolation not in INTERPOLATIONS:
        raise UserError(f"{where}: interpolation {interpolation!r}; one of {', '.join(INTERPOLATIONS)}")
    size = _numbers(table.get("input_size", [224, 224]), 2, int, "input_size", where)
    resize = table.get("resize", round(min(size) * 256 / 224))
    if resize < min(size):
        raise UserError(f"{where}: resize {resize} is smaller than input_size {list(size)}: the centre crop would not fit")
    class_names = _class_names(_path(table["labels"], base, "labels", where), where)
    onnx_file = _path(table["onnx"], base, "onnx", where) if "onnx" in table else None
    layout = table.get("layout", "NCHW")
    names = _onnx_tensors(onnx_file, layout, size, len(class_names), where) if onnx_file else ("input", "logits")
    declaration = Declaration(
        name=name,
        class_names=class_names,
        architecture=_architecture(table["torchvision"], where) if "torchvision" in table else None,
        onnx=onnx_file,
        input_name=names[0],
        output_name=names[1],
        weights=_path(table["weights"], base, "weights", where) if "weights" in table else None,
        task=task,
        layout=layout,
        channels=table.get("channels", "RGB"),
        softmax=table.get("softmax", True),
        input_size=size,
        resize=resize,
        interpolation=interpolation,
        mean=_numbers(table.get("mean", list(IMAGENET_MEAN)), 3, float, "mean", where),
        std=_numbers(table.get("std", list(IMAGENET_STD)), 3, float, "std", where),
    )
    if declaration.weights is not None and declaration.architecture:  # found before a build, as the declaration's fault
        try:
            DeclaredClassifier(declaration).build_network("declared")
        except UserError as exc:
            raise UserError(f"{where}: {exc}") from exc
    return declaration


def _numbers(values: list, count: int, kind: type, key: str, where: str) -> tuple:
    if len(values) != count or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        raise UserError(f"{where}: {key} must be {count} numbers, not {values!r}")
    if kind is int and not all(isinstance(v, int) and v > 0 for v in values):
        raise UserError(f"{where}: {key} must be {count} positive whole numbers, not {values!r}")
    if key == "std" and not all(v > 0 for v in values):
        raise UserError(f"{where}: std must be above 0, not {values!r}")
    return tuple(kind(v) for v in values)


def _path(value: str, base: Path, key: str, where: str) -> Path:
    path = (base / value).resolve()
    if not path.is_file():
        raise UserError(f"{where}: {key} file {path} does not exist")
    return path


def _class_names(path: Path, where: str) -> tuple[str, ...]:
    try:
        names = tuple(line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{where}: cannot read labels file {path} ({exc.__class__.__name__}: {exc})") from exc
    if len(names) < 2:
        raise UserError(f"{where}: labels file {path} names {len(names)} class; a classifier needs two or more, one a line")
    return names


def _onnx_tensors(path: Path, layout: str, size: tuple[int, int], classes: int, where: str) -> tuple[str, str]:
    """The names of an ONNX classifier's input and output, checked against the declaration: one float input of
    rank 4 in ``layout`` with 3 channels and ``size`` where its dimensions are fixed, a batch axis left free, one
    output of (batch, ``classes``)."""
    import onnx

    try:
        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception as exc:  # onnx raises DecodeError and others for a file that is not a model
        raise UserError(f"{where}: {path} is not an ONNX model ({exc.__class__.__name__})") from exc
    weights = {initializer.name for initializer in graph.initializer}
    inputs = [tensor for tensor in graph.input if tensor.name not in weights]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise UserError(f"{where}: a declared classifier has one input and one output; {path} has {len(inputs)} and "
                        f"{len(graph.output)}")
    (given,), (answer,) = inputs, graph.output

    def dims(tensor: onnx.ValueInfoProto) -> list[int | None]:  # None: not fixed
        return [d.dim_value if d.HasField("dim_value") else None for d in tensor.type.tensor_type.shape.dim]

    shape, out = dims(given), dims(answer)
    if given.type.tensor_type.elem_type != onnx.TensorProto.FLOAT or len(shape) != 4:
        raise UserError(f"{where}: input {given.name} of {path} must be a float32 image batch of rank 4, not "
                        f"{onnx.TensorProto.DataType.Name(given.type.tensor_type.elem_type)} of rank {len(shape)}")
    expected = [3, *size] if layout == "NCHW" else [*size, 3]
    if shape[0] is not None and shape[0] != 0:
        raise UserError(f"{where}: input {given.name} of {path} has its batch fixed at {shape[0]}: export it with a "
                        "free batch axis (dynamic_axes, dynamic_shapes) so that Triton can batch requests")
    if any(dim is not None and dim != want for dim, want in zip(shape[1:], expected)):
        raise UserError(f"{where}: input {given.name} of {path} is {shape[1:]} per image, not {expected} "
                        f"({layout}, input_size {list(size)})")
    if len(out) != 2 or out[1] not in (None, classes):
        raise UserError(f"{where}: output {answer.name} of {path} is {out[1:]} per image, not [{classes}] (one score "
                        "per class name of the labels file)")
    return given.name, answer.name


def _architecture(name: str, where: str) -> str:
    from torchvision.models import list_models

    if name not in list_models():
        raise UserError(f"{where}: torchvision has no architecture {name!r} (torchvision.models.list_models() lists them)")
    return name


class DeclaredClassifier(ImageNetClassifier):
    """The spec of a declared classifier: one image input (3, H, W) or (H, W, 3), one output of a score per class."""

    weight_choices = "declared (the declaration's weights)|random|PATH"

    def __init__(self, declaration: Declaration) -> None:
        self.declaration = declaration
        self.name = declaration.name
        self.task = declaration.task
        height, width = declaration.input_size
        shape = (3, height, width) if declaration.layout == "NCHW" else (height, width, 3)
        self.inputs = (TensorSpec(declaration.input_name, "float32", shape, image_format=declaration.layout),)
        self.outputs = (TensorSpec(declaration.output_name, "float32", (len(declaration.class_names),)),)
        self.labelled_output = declaration.output_name
        self.outputs_logits = declaration.softmax
        self.declaration_json = declaration.to_json()
        self.onnx_source = declaration.onnx

    @property
    def class_names(self) -> list[str]:
        return list(self.declaration.class_names)

    def build_network(self, weights: str) -> torch.nn.Module:
        """The architecture with as many outputs as class names; weights: the declared ones (``declared``, also
        ``pretrained``), ``random`` or a state dict file (a variant's artifact)."""
        from torchvision.models import get_model

        from trtrepo.models.weights import apply_state_dict, read_state_dict

        if self.declaration.architecture is None:
            raise UserError(f"{self.name} comes from an ONNX file: it has no PyTorch network")
        network = get_model(self.declaration.architecture, weights=None, num_classes=len(self.declaration.class_names))
        if weights in ("declared", "pretrained", "imagenet"):
            if self.declaration.weights is None:
                raise UserError(f"{self.name}: its declaration names no weights; declare weights = \"PATH\" or use "
                                "--weights random")
            weights = str(self.declaration.weights)
        if weights != "random":
            apply_state_dict(network, read_state_dict(Path(weights), self.name), self.name, weights)
        return network.eval()

    def preprocess_image(self, image: Image.Image) -> np.ndarray:
        from torchvision.transforms import functional as F

        image = F.center_crop(F.resize(image, self.declaration.resize, interpolation=self._interpolation(F), antialias=True),
                              list(self.declaration.input_size))
        tensor = F.normalize(F.to_tensor(image), list(self.declaration.mean), list(self.declaration.std))
        return self._arranged(tensor).numpy().astype(np.float32)

    def preprocess_tensor(self, image: torch.Tensor) -> torch.Tensor:
        """preprocess_image on a uint8 CHW tensor where it lies."""
        from torchvision.transforms.v2 import functional as F

        image = F.center_crop(F.resize(image, [self.declaration.resize], interpolation=self._interpolation(F),
                                       antialias=True), list(self.declaration.input_size))
        return self._arranged(F.normalize(image.float() / 255.0, list(self.declaration.mean), list(self.declaration.std)))

    def _arranged(self, image: torch.Tensor) -> torch.Tensor:
        """A normalised RGB CHW image in the declared channel order and layout."""
        if self.declaration.channels == "BGR":
            image = image.flip(0)
        return image.permute(1, 2, 0).contiguous() if self.declaration.layout == "NHWC" else image

    def _interpolation(self, functional: Any) -> Any:
        return getattr(functional.InterpolationMode, self.declaration.interpolation.upper())
