"""A model declared as data ([[model]] in a plan): what the declaration says, each value checked against the files
it names before anything is built, each mistake one line.

A declaration names its network's source (a torchvision architecture with a state dict, a TorchScript file, a
``torch.export`` program, a factory function, or an ONNX file), its task, class names, input size and layout and
preprocessing. It travels with every variant built from it (the ``declaration`` parameter of the variant's config,
class names included), so that a server's stubs and the clients, which read the config, know the model from the
repository alone.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trtrepo.errors import UserError
from trtrepo.specs import CLASSIFICATION, DETECTION, RAW

#: What a declaration may say: its keys and their types (``name`` and ``labels`` must be given).
DECLARATION_KEYS: dict[str, type | tuple[type, ...]] = {
    "name": str, "torchvision": str, "timm": str, "onnx": str, "torchscript": str, "exported": str, "factory": str, "weights": str,
    "task": str, "head": str, "labels": str, "input_size": list, "layout": str, "channels": str, "resize": int,
    "letterbox": (bool, str), "pad": float, "interpolation": str, "mean": list, "std": list, "scale": float,
    "softmax": bool, "tolerance": float,
}
REQUIRED_KEYS = ("name",)
#: The keys naming a network's source, exactly one of which a declaration gives; the PyTorch ones hold a network
#: that the PyTorch engines run, and the first three of those take a state dict (``weights``).
SOURCE_KEYS = ("torchvision", "timm", "factory", "torchscript", "exported", "onnx")
WEIGHTED_SOURCES = ("torchvision", "timm", "factory")
LAYOUTS, CHANNEL_ORDERS = ("NCHW", "NHWC"), ("RGB", "BGR")
TASKS = (CLASSIFICATION, DETECTION, RAW)
#: A detector's output, per image: darknet (boxes, 5 + classes): centre-size box in input pixels, objectness,
#: class probabilities; anchor_free (4 + classes, boxes): centre-size box and class scores (current YOLO exports).
HEADS = ("darknet", "anchor_free")
#: letterbox: true (sizes rounded, half-pixel sampling, as current YOLO exporters do) or "darknet" (Darknet's own
#: letterbox_image, what Darknet-trained networks saw); false: a classifier's resize and centre crop.
LETTERBOXES = (True, False, "darknet")
INTERPOLATIONS = ("bilinear", "bicubic", "nearest")
#: ImageNet's: what torchvision's classifiers are trained with, the default of a classifier that says none.
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Declaration:
    """A declared model: its network from ``source`` (the key that named it) with one input ``input_name`` of
    ``input_size`` (H, W) images in ``layout`` and ``channels`` order, and one output ``output_name`` of
    ``output_shape`` per image (a score per class; a detector's boxes as its ``head`` lays them out). Images are
    letterboxed (``letterbox``, padded with ``pad`` grey) or their shorter side resized to ``resize`` and
    centre-cropped, then normalised by ``mean`` and ``std`` (on 0-1 pixels, in RGB order); ``softmax``: a
    classifier's output is logits. The files (``onnx``, ``torchscript``, ``exported``, ``weights``) are the
    build's, not carried with the variants: their artifacts hold the network."""

    name: str
    class_names: tuple[str, ...]
    source: str = "torchvision"
    architecture: str | None = None
    factory: str | None = None
    onnx: Path | None = None
    torchscript: Path | None = None
    exported: Path | None = None
    weights: Path | None = None
    input_name: str = "input"
    output_name: str = "logits"
    output_shape: tuple[int, ...] = ()
    task: str = CLASSIFICATION
    head: str = ""
    layout: str = "NCHW"
    channels: str = "RGB"
    softmax: bool = True
    input_size: tuple[int, int] = (224, 224)
    resize: int = 256
    letterbox: bool | str = False
    pad: float = 0.5
    interpolation: str = "bilinear"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    #: A raw model's tensors, read from its graph: (name, dtype, shape per sample) of each input and output.
    raw_inputs: tuple[tuple[str, str, tuple[int, ...]], ...] = ()
    raw_outputs: tuple[tuple[str, str, tuple[int, ...]], ...] = ()
    tolerance: float = 0.0

    def to_json(self) -> str:
        """What travels with the variants: everything but the build's files."""
        fields = dataclasses.asdict(self) | {"weights": None, "onnx": None, "torchscript": None, "exported": None}
        return json.dumps(fields, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "Declaration":
        fields = json.loads(text)
        for key in ("raw_inputs", "raw_outputs"):
            fields[key] = tuple((name, dtype, tuple(shape)) for name, dtype, shape in fields.get(key, ()))
        return cls(**{key: tuple(value) if isinstance(value, list) else value for key, value in fields.items()})

    @property
    def source_file(self) -> Path | None:
        """The file that holds the network itself (ONNX, TorchScript, exported program), if the source is one."""
        return self.onnx or self.torchscript or self.exported


def parse_declaration(table: dict[str, Any], where: str, base: Path) -> Declaration:
    """A [[model]] table whose keys and their types the plan has checked (DECLARATION_KEYS, REQUIRED_KEYS), its
    values checked here, the network's files read: each mistake one line naming ``where``; relative paths are from
    ``base`` (the plan's folder)."""
    name = table["name"]
    where = f"{where} ({name})"
    sources = [key for key in SOURCE_KEYS if key in table]
    if len(sources) != 1:
        raise UserError(f"{where}: give the network's source as one of {', '.join(SOURCE_KEYS)}, not "
                        f"{' and '.join(sources) or 'none'}")
    (source,) = sources
    if "weights" in table and source not in WEIGHTED_SOURCES:
        raise UserError(f"{where}: a {source} file holds its weights; weights is for {' and '.join(WEIGHTED_SOURCES)}")
    task = _one_of(table, "task", TASKS, where, CLASSIFICATION)
    if task == RAW:
        return _raw_declaration(table, source, where, base)
    if "labels" not in table:
        raise UserError(f"{where}: lacks the key labels (a {task} model's class names, one a line)")
    if "tolerance" in table:
        raise UserError(f"{where}: tolerance is a raw model's; a {task} model is judged by its task's measures")
    detector = task == DETECTION
    head = _one_of(table, "head", HEADS, where, "darknet") if detector else ""
    if "head" in table and not detector:
        raise UserError(f"{where}: head is a detector's; this model's task is {task}")
    for key, allowed in (("layout", LAYOUTS), ("channels", CHANNEL_ORDERS)):
        _one_of(table, key, allowed, where)
    if source != "onnx" and (table.get("layout", "NCHW"), table.get("channels", "RGB")) != ("NCHW", "RGB"):
        raise UserError(f"{where}: a PyTorch network takes NCHW RGB; layout and channels are for an ONNX file")
    letterbox = _one_of(table, "letterbox", LETTERBOXES, where, detector)
    if detector and letterbox is False:
        raise UserError(f"{where}: a detector's images are letterboxed (true or \"darknet\"), so that its boxes map "
                        "back to the image")
    interpolation = _one_of(table, "interpolation", INTERPOLATIONS, where)
    size = _numbers(table.get("input_size", [224, 224]), 2, int, "input_size", where)
    resize = table.get("resize", round(min(size) * 256 / 224))
    if resize < min(size):
        raise UserError(f"{where}: resize {resize} is smaller than input_size {list(size)}: the centre crop would not fit")
    pad = table.get("pad", 0.5)
    if not 0 <= pad <= 1:
        raise UserError(f"{where}: pad is the grey of a letterbox's border on 0-1 pixels, not {pad}")
    mean, std = _normalisation(table, detector, where)
    class_names = _class_names(_path(table["labels"], base, "labels", where), where)
    if task == CLASSIFICATION and len(class_names) < 2:
        raise UserError(f"{where}: labels file names {len(class_names)} class; a classifier needs two or more, one a line")
    files = {key: _path(table[key], base, key, where) for key in ("onnx", "torchscript", "exported", "weights") if key in table}
    declaration = Declaration(
        name=name, class_names=class_names, source=source,
        architecture=_architecture(table[source], source, where) if source in ("torchvision", "timm") else None,
        factory=table.get("factory"), **files, task=task, head=head, layout=table.get("layout", "NCHW"),
        channels=table.get("channels", "RGB"), softmax=table.get("softmax", True), input_size=size, resize=resize,
        letterbox=letterbox, pad=float(pad), interpolation=interpolation, mean=mean, std=std,
        output_name="detections" if detector else "logits",
    )
    from trtrepo.models.declared_network import network_tensors

    try:
        input_name, output_name, shape = network_tensors(declaration)
    except UserError as exc:
        raise UserError(f"{where}: {exc}") from exc
    if problem := output_problem(shape, task, head, len(class_names)):
        raise UserError(f"{where}: output {output_name} {problem}")
    return dataclasses.replace(declaration, input_name=input_name, output_name=output_name, output_shape=shape)


def _raw_declaration(table: dict[str, Any], source: str, where: str, base: Path) -> Declaration:
    """A raw model: an ONNX file whose tensors (any number, names, dtypes, fixed shapes per sample) are its own,
    served as they are; only its tolerance is declared."""
    from trtrepo.models.declared_network import raw_tensors

    if source != "onnx":
        raise UserError(f"{where}: a raw model's tensors are read from its ONNX graph: declare onnx, not {source}")
    image_keys = sorted(set(table) & {"labels", "head", "input_size", "layout", "channels", "resize", "letterbox", "pad",
                                      "interpolation", "mean", "std", "scale", "softmax"})
    if image_keys:
        raise UserError(f"{where}: {', '.join(image_keys)} describe images; a raw model takes tensors as they are")
    tolerance = table.get("tolerance", 1e-2)
    if tolerance <= 0:
        raise UserError(f"{where}: tolerance must be above 0, not {tolerance}")
    declaration = Declaration(name=table["name"], class_names=(), source=source, onnx=_path(table["onnx"], base, "onnx", where),
                              task=RAW, tolerance=float(tolerance))
    try:
        inputs, outputs = raw_tensors(declaration.onnx)
    except UserError as exc:
        raise UserError(f"{where}: {exc}") from exc
    return dataclasses.replace(declaration, raw_inputs=inputs, raw_outputs=outputs)


def output_problem(shape: tuple[int | None, ...], task: str, head: str, classes: int) -> str | None:
    """What is wrong with an output of ``shape`` per image (None: a dimension left free) for the task, or None."""
    want = {CLASSIFICATION: "[classes] (one score per class name of the labels file)",
            "darknet": "[boxes, 5 + classes] (box, objectness, one probability per class name)",
            "anchor_free": "[4 + classes, boxes] (box, then one score per class name)"}[head or task]
    index, extra = {CLASSIFICATION: (0, 0), "darknet": (1, 5), "anchor_free": (0, 4)}[head or task]
    rank = 1 if task == CLASSIFICATION else 2
    if len(shape) != rank or shape[index] not in (None, classes + extra):
        return f"is {list(shape)} per image, not {want} with {classes} classes"
    return None


def _one_of(table: dict, key: str, allowed: tuple, where: str, default: Any = None) -> Any:
    value = table.get(key, allowed[0] if default is None else default)
    if value not in allowed:
        raise UserError(f"{where}: {key} {table[key]!r}; one of {', '.join(json.dumps(a) for a in allowed)}")
    return value


def _normalisation(table: dict, detector: bool, where: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """mean and std on 0-1 pixels: as declared, or from ``scale`` (pixels 0-255 times scale), else the task's
    default: ImageNet's for a classifier, none (0-1 pixels) for a detector."""
    if "scale" in table:
        if "mean" in table or "std" in table:
            raise UserError(f"{where}: give scale or mean and std, not both")
        if table["scale"] <= 0:
            raise UserError(f"{where}: scale must be above 0, not {table['scale']}")
        return (0.0, 0.0, 0.0), (1 / (255 * table["scale"]),) * 3
    mean, std = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)) if detector else (IMAGENET_MEAN, IMAGENET_STD)
    return (_numbers(table.get("mean", list(mean)), 3, float, "mean", where),
            _numbers(table.get("std", list(std)), 3, float, "std", where))


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
    if not names:
        raise UserError(f"{where}: labels file {path} names no class; one class name a line")
    return names


def _architecture(name: str, source: str, where: str) -> str:
    """An architecture's name that torchvision (or timm, where it is installed) lists."""
    if source == "timm":
        try:
            import timm
        except ImportError as exc:
            raise UserError(f"{where}: timm is not installed here (pip install timm), and the build needs it for "
                            f"{name!r}") from exc
        listed, how = timm.list_models(), "timm.list_models()"
    else:
        from torchvision.models import list_models

        listed, how = list_models(), "torchvision.models.list_models()"
    if name not in listed:
        raise UserError(f"{where}: {source} has no architecture {name!r} ({how} lists them)")
    return name
