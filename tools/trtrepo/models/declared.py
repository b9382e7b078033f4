"""A model declared as data ([[model]] in a plan) instead of a module: the spec its declaration describes.

A declaration names its network's source (a torchvision architecture with a state dict), its task, class names,
input size and preprocessing. It travels with every variant built from it (the ``declaration`` parameter of the
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
    "name": str, "torchvision": str, "weights": str, "task": str, "labels": str, "input_size": list, "resize": int,
    "interpolation": str, "mean": list, "std": list,
}
REQUIRED_KEYS = ("name", "torchvision", "labels")
TASKS = (CLASSIFICATION,)
INTERPOLATIONS = ("bilinear", "bicubic", "nearest")
#: ImageNet's: what torchvision's classifiers are trained with, the default of a declaration that says none.
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Declaration:
    """A declared classifier: torchvision ``architecture`` with ``class_names`` outputs, fed ``input_size`` (H, W)
    images whose shorter side is resized to ``resize`` and centre-cropped, then normalised by ``mean`` and ``std``
    (on 0-1 pixels). ``weights``: the state dict the build starts from (None: random); not carried with variants."""

    name: str
    architecture: str
    class_names: tuple[str, ...]
    weights: Path | None = None
    task: str = CLASSIFICATION
    input_size: tuple[int, int] = (224, 224)
    resize: int = 256
    interpolation: str = "bilinear"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def to_json(self) -> str:
        """What travels with the variants: everything but the build's weights file."""
        fields = dataclasses.asdict(self) | {"weights": None}
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
    declaration = Declaration(
        name=name,
        architecture=_architecture(table["torchvision"], where),
        class_names=_class_names(_path(table["labels"], base, "labels", where), where),
        weights=_path(table["weights"], base, "weights", where) if "weights" in table else None,
        task=task,
        input_size=size,
        resize=resize,
        interpolation=interpolation,
        mean=_numbers(table.get("mean", list(IMAGENET_MEAN)), 3, float, "mean", where),
        std=_numbers(table.get("std", list(IMAGENET_STD)), 3, float, "std", where),
    )
    if declaration.weights is not None:  # weights that do not fit are the declaration's fault, found before a build
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


def _architecture(name: str, where: str) -> str:
    from torchvision.models import list_models

    if name not in list_models():
        raise UserError(f"{where}: torchvision has no architecture {name!r} (torchvision.models.list_models() lists them)")
    return name


class DeclaredClassifier(ImageNetClassifier):
    """The spec of a declared classifier: one input ``input`` (3, H, W), one output ``logits`` per class name."""

    weight_choices = "declared (the declaration's weights)|random|PATH"

    def __init__(self, declaration: Declaration) -> None:
        self.declaration = declaration
        self.name = declaration.name
        self.task = declaration.task
        self.inputs = (TensorSpec("input", "float32", (3, *declaration.input_size), image_format="NCHW"),)
        self.outputs = (TensorSpec("logits", "float32", (len(declaration.class_names),)),)
        self.declaration_json = declaration.to_json()

    @property
    def class_names(self) -> list[str]:
        return list(self.declaration.class_names)

    def build_network(self, weights: str) -> torch.nn.Module:
        """The architecture with as many outputs as class names; weights: the declared ones (``declared``, also
        ``pretrained``), ``random`` or a state dict file (a variant's artifact)."""
        from torchvision.models import get_model

        from trtrepo.models.weights import apply_state_dict, read_state_dict

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
        return tensor.numpy().astype(np.float32)

    def preprocess_tensor(self, image: torch.Tensor) -> torch.Tensor:
        """preprocess_image on a uint8 CHW tensor where it lies."""
        from torchvision.transforms.v2 import functional as F

        image = F.center_crop(F.resize(image, [self.declaration.resize], interpolation=self._interpolation(F),
                                       antialias=True), list(self.declaration.input_size))
        return F.normalize(image.float() / 255.0, list(self.declaration.mean), list(self.declaration.std))

    def _interpolation(self, functional: Any) -> Any:
        return getattr(functional.InterpolationMode, self.declaration.interpolation.upper())
