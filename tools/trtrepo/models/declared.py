"""The specs of declared models (trtrepo.models.declaration): a classifier, a detector or a raw model that a
declaration describes, so that every engine, the gate, the pipelines and the clients take it as they take a built-in model."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from trtrepo.errors import UserError
from trtrepo.models.declaration import Declaration
from trtrepo.models.detection import DEFAULT_CONF, DEFAULT_IOU, Detection, Letterbox, letterbox_tensor, select_detections
from trtrepo.models.imagenet import ImageNetClassifier
from trtrepo.specs import DETECTION, RAW, ModelSpec, TensorSpec, image_tensor, load_image

if TYPE_CHECKING:
    import torch
    from PIL import Image


#: The config parameter that carries a declared model's declaration (JSON).
DECLARATION_PARAMETER = "declaration"


def declared_spec(declaration: Declaration) -> ModelSpec:
    """The spec of the declared model, by its task."""
    return {DETECTION: DeclaredDetector, RAW: DeclaredRaw}.get(declaration.task, DeclaredClassifier)(declaration)


class DeclaredModel(ModelSpec):
    """What declared models share: one image input as declared, one output, the network from its source, images
    prepared as declared (resize and centre crop, or letterbox), on the host and on the device alike."""

    weight_choices = "declared (the declaration's weights)|random|PATH"

    def __init__(self, declaration: Declaration) -> None:
        self.declaration = declaration
        self.name = declaration.name
        self.task = declaration.task
        height, width = declaration.input_size
        shape = (3, height, width) if declaration.layout == "NCHW" else (height, width, 3)
        self.inputs = (TensorSpec(declaration.input_name, "float32", shape, image_format=declaration.layout),)
        self.outputs = (TensorSpec(declaration.output_name, "float32", tuple(declaration.output_shape)),)
        self.declaration_json = declaration.to_json()
        self.onnx_source = declaration.onnx
        self.scripted = declaration.source == "torchscript"

    @property
    def class_names(self) -> list[str]:
        return list(self.declaration.class_names)

    def build_network(self, weights: str) -> torch.nn.Module:
        from trtrepo.models.declared_network import build_declared_network

        return build_declared_network(self.declaration, weights)

    def save_network(self, network: torch.nn.Module, out_file: Path) -> None:
        from trtrepo.models.declared_network import save_declared_network

        save_declared_network(self.declaration, network, out_file)

    def preprocess_image(self, image: Image.Image) -> np.ndarray:
        return self.prepared(image)[0]

    def preprocess_tensor(self, image: torch.Tensor) -> torch.Tensor:
        return self.prepared_tensor(image)[0]

    def prepared(self, image: Image.Image) -> tuple[np.ndarray, Letterbox | None]:
        """A decoded image as the network's input sample, and how it was letterboxed (None: resized and cropped)."""
        if self.declaration.letterbox:
            array, letterbox = self.prepared_tensor(image_tensor(image))
            return array.numpy(), letterbox
        from torchvision.transforms import functional as F

        image = F.center_crop(F.resize(image, self.declaration.resize, interpolation=self._interpolation(F), antialias=True),
                              list(self.declaration.input_size))
        tensor = F.normalize(F.to_tensor(image), list(self.declaration.mean), list(self.declaration.std))
        return self._arranged(tensor).numpy().astype(np.float32), None

    def prepared_tensor(self, image: torch.Tensor) -> tuple[torch.Tensor, Letterbox | None]:
        """prepared on a uint8 CHW tensor where it lies."""
        from torchvision.transforms.v2 import functional as F

        declared = self.declaration
        letterbox = None
        if declared.letterbox:
            pixels, letterbox = letterbox_tensor(image, declared.input_size, declared.pad, declared.letterbox == "darknet",
                                                 declared.interpolation)
        else:
            pixels = F.center_crop(F.resize(image, [declared.resize], interpolation=self._interpolation(F), antialias=True),
                                   list(declared.input_size)).float() / 255.0
        return self._arranged(F.normalize(pixels, list(declared.mean), list(declared.std))), letterbox

    def _arranged(self, image: torch.Tensor) -> torch.Tensor:
        """A normalised RGB CHW image in the declared channel order and layout."""
        if self.declaration.channels == "BGR":
            image = image.flip(0)
        return image.permute(1, 2, 0).contiguous() if self.declaration.layout == "NHWC" else image

    def _interpolation(self, functional: Any) -> Any:
        return getattr(functional.InterpolationMode, self.declaration.interpolation.upper())


class DeclaredClassifier(DeclaredModel, ImageNetClassifier):
    """A declared classifier: a score per class name, logits or (``softmax = false``) probabilities."""

    def __init__(self, declaration: Declaration) -> None:
        super().__init__(declaration)
        self.labelled_output = declaration.output_name
        self.outputs_logits = declaration.softmax


class DeclaredDetector(DeclaredModel):
    """A declared detector: letterboxed images, centre-size boxes in input pixels laid out as its head says,
    answered as the built-in YOLO models are (score threshold, class-wise NMS, boxes in image pixels)."""

    def letterbox(self, image_path: Path, method: str | None = None) -> tuple[np.ndarray, Letterbox]:
        """The image file letterboxed as declared (``method`` is the built-in YOLO's choice, not a declared one's)."""
        return self.letterbox_image(load_image(image_path))

    def letterbox_image(self, image: Image.Image, method: str | None = None) -> tuple[np.ndarray, Letterbox]:
        return self.prepared(image)

    def letterbox_tensor(self, image: torch.Tensor) -> tuple[torch.Tensor, Letterbox]:
        return self.prepared_tensor(image)

    def postprocess(self, outputs: dict[str, np.ndarray], top_k: int = 100, conf: float = DEFAULT_CONF,
                    iou: float = DEFAULT_IOU) -> list[list[Detection]]:
        """Per sample: each box's best class (darknet: objectness x class probability), threshold, class-wise NMS."""
        results = []
        for sample in outputs[self.declaration.output_name]:
            if self.declaration.head == "anchor_free":
                sample = sample.T
                boxes, probabilities = sample[:, :4], sample[:, 4:]
            else:
                boxes, probabilities = sample[:, :4], sample[:, 5:] * sample[:, 4:5]
            results.append(select_detections(boxes, probabilities, self.class_names, conf, iou, top_k))
        return results


class DeclaredRaw(ModelSpec):
    """A declared raw model: its ONNX file's tensors as they are (no images, no labels), served tensors in and
    out; a reduced-precision variant is judged by how far its outputs stray from FP32's on random inputs."""

    class_names: list[str] = []

    def __init__(self, declaration: Declaration) -> None:
        self.declaration = declaration
        self.name = declaration.name
        self.task = RAW
        self.inputs = tuple(TensorSpec(name, dtype, tuple(shape)) for name, dtype, shape in declaration.raw_inputs)
        self.outputs = tuple(TensorSpec(name, dtype, tuple(shape)) for name, dtype, shape in declaration.raw_outputs)
        self.declaration_json = declaration.to_json()
        self.onnx_source = declaration.onnx
        self.tolerance = declaration.tolerance

    def precision_problem(self, precision: str) -> str | None:
        if precision == "int8":
            return (f"{self.name} is a raw model: INT8 calibrates on images prepared as the model's, and a raw "
                    "model's inputs have a distribution only you know")
        return None

    def build_network(self, weights: str) -> torch.nn.Module:
        from trtrepo.models.declared_network import build_declared_network

        return build_declared_network(self.declaration, weights)  # an ONNX file's: says it has none

    def preprocess_image(self, image: Image.Image) -> np.ndarray:
        raise UserError(f"{self.name} is a raw model: it takes tensors, not images")

    def postprocess(self, outputs: dict[str, np.ndarray], top_k: int = 0) -> list[dict[str, np.ndarray]]:
        """Each sample's outputs as they are."""
        count = len(next(iter(outputs.values())))
        return [{name: array[i] for name, array in outputs.items()} for i in range(count)]
