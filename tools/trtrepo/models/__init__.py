"""The model registry: one module per model, registered here by name and imported when a model is asked for.

Importing a model's module can bring torch and torchvision (seconds): a Python-backend stub serving an ONNX
Runtime variant of one model should pay for that model's imports only, and for none it does not use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from trtrepo.errors import UserError

if TYPE_CHECKING:
    from trtrepo.specs import ModelSpec


#: Model name -> "module:class" of its spec.
MODELS: dict[str, str] = {
    "resnet50": "trtrepo.models.resnet50:ResNet50",
    "efficientnet_lite0": "trtrepo.models.efficientnet_lite0:EfficientNetLite0",
    "yolov3": "trtrepo.models.yolov3:YOLOv3",
    "yolov3_tiny": "trtrepo.models.yolov3:YOLOv3Tiny",
    "ctpn": "trtrepo.models.ctpn:CTPN",
    "ctpn_backbone": "trtrepo.models.ctpn:CTPNBackbone",
    "ctpn_head": "trtrepo.models.ctpn:CTPNHead",
}


def get_model(name: str) -> "ModelSpec":
    """The model spec registered under ``name``, or a one-line error listing the known ones."""
    if name not in MODELS:
        raise UserError(f"unknown model {name!r}; known: {', '.join(sorted(MODELS))}")
    module, spec_class = MODELS[name].split(":")
    return getattr(importlib.import_module(module), spec_class)()
