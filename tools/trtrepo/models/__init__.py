"""The model registry: one module per model, registered here by name and imported when a model is asked for.

Importing a model's module can bring torch and torchvision (seconds): a Python-backend stub serving an ONNX
Runtime variant of one model should pay for that model's imports only, and for none it does not use.
"""

from __future__ import annotations

import importlib
from contextlib import contextmanager
from typing import TYPE_CHECKING, Iterable, Iterator

from trtrepo.errors import UserError

if TYPE_CHECKING:
    from trtrepo.models.declaration import Declaration
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


#: Models declared as data (trtrepo.models.declared), by name, while the block that declared them runs.
_declared: dict[str, "ModelSpec"] = {}


@contextmanager
def declared_models(declarations: Iterable["Declaration"]) -> Iterator[None]:
    """get_model knows the declared models for the block (a plan's reading and build), and forgets them after."""
    from trtrepo.models.declared import declared_spec

    added = {d.name: declared_spec(d) for d in declarations}
    previous = dict(_declared)
    _declared.update(added)
    try:
        yield
    finally:
        _declared.clear()
        _declared.update(previous)


def spec_of(parameters: dict[str, str]) -> "ModelSpec":
    """The model a variant's config parameters name: the one its declaration describes where it carries one (a
    declared model served from the repository alone), else the registered one."""
    from trtrepo.models.declaration import Declaration
    from trtrepo.models.declared import DECLARATION_PARAMETER, declared_spec

    if parameters.get(DECLARATION_PARAMETER):
        return declared_spec(Declaration.from_json(parameters[DECLARATION_PARAMETER]))
    return get_model(parameters["model"])


def get_model(name: str) -> "ModelSpec":
    """The model spec registered (or declared) under ``name``, or a one-line error listing the known ones."""
    if name in _declared:
        return _declared[name]
    if name not in MODELS:
        raise UserError(f"unknown model {name!r}; known: {', '.join(sorted([*MODELS, *_declared]))}; or declare it in "
                        "the plan ([[model]])")
    module, spec_class = MODELS[name].split(":")
    return getattr(importlib.import_module(module), spec_class)()
