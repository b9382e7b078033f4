"""The small interface every engine implements: build an artifact, load it into a runner."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Callable, ClassVar

import numpy as np

from trtrepo.errors import UserError

if TYPE_CHECKING:
    import torch

    from trtrepo.specs import ModelSpec

Runner = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


class Engine(ABC):
    """One inference engine. Heavy imports happen inside methods, so the tool runs without every engine."""

    name: ClassVar[str]
    precisions: ClassVar[tuple[str, ...]]
    artifact: ClassVar[str]
    #: Triton backend that serves the artifact natively, and the config's platform string for it.
    native_backend: ClassVar[str | None] = None
    native_platform: ClassVar[str | None] = None

    def check_precision(self, precision: str) -> None:
        if precision not in self.precisions:
            raise UserError(f"engine {self.name} builds {', '.join(self.precisions)}, not {precision!r}")

    @abstractmethod
    def build(self, network: "torch.nn.Module", onnx_path: Path, precision: str, out_file: Path) -> None:
        """Write the deployable artifact for ``precision`` to ``out_file``."""

    @abstractmethod
    def load(self, spec: "ModelSpec", artifact: Path, precision: str, device: str, threads: int) -> Runner:
        """A callable that maps a batch of named inputs to named outputs, in process."""
