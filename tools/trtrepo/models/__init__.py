"""The model registry: one module per model, registered here by name."""

from __future__ import annotations

from trtrepo.errors import UserError
from trtrepo.models.ctpn import CTPN, CTPNBackbone, CTPNHead
from trtrepo.models.efficientnet_lite0 import EfficientNetLite0
from trtrepo.models.resnet50 import ResNet50
from trtrepo.models.yolov3 import YOLOv3, YOLOv3Tiny
from trtrepo.specs import ModelSpec

MODELS: dict[str, type[ModelSpec]] = {
    "resnet50": ResNet50,
    "efficientnet_lite0": EfficientNetLite0,
    "yolov3": YOLOv3,
    "yolov3_tiny": YOLOv3Tiny,
    "ctpn": CTPN,
    "ctpn_backbone": CTPNBackbone,
    "ctpn_head": CTPNHead,
}


def get_model(name: str) -> ModelSpec:
    """The model spec registered under ``name``, or a one-line error listing the known ones."""
    try:
        return MODELS[name]()
    except KeyError:
        raise UserError(f"unknown model {name!r}; known: {', '.join(sorted(MODELS))}") from None
