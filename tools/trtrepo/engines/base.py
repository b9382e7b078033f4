"""The small interface every engine implements: say whether it can run here, build an artifact, load a runner."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, ClassVar, Iterable

import numpy as np

from trtrepo.errors import UserError

if TYPE_CHECKING:
    import torch

    from trtrepo.build.calibration import CalibrationSet
    from trtrepo.specs import ModelSpec


Runner = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]
#: Named CUDA tensors in, named CUDA tensors out: the served path on a GPU, with no trip through host memory.
GpuRunner = Callable[[dict[str, "torch.Tensor"]], dict[str, "torch.Tensor"]]


@dataclass(frozen=True)
class BuildInputs:
    """What a build may use: the network, its ONNX export, the batch range to serve, calibration data."""

    spec: "ModelSpec"
    network: "torch.nn.Module"
    onnx_path: Path
    max_batch_size: int
    preferred_batch_sizes: tuple[int, ...]
    calibration: "CalibrationSet | None"
    log: Callable[[str], None]
    #: Nodes to leave in float in a reduced-precision build (mixed precision, chosen by the accuracy gate).
    keep_float: tuple[str, ...] = ()
    #: The plan's build options for this engine (Engine.build_options), as (key, value) pairs.
    build_options: tuple[tuple[str, str], ...] = ()

    def option(self, engine: "Engine", key: str) -> str:
        """The value of one of ``engine``'s build options: the plan's, else its default."""
        return engine.build_settings(self.build_options)[key]


class Engine(ABC):
    """One inference engine. Heavy imports happen inside methods, so the tool runs without every engine."""

    name: ClassVar[str]
    precisions: ClassVar[tuple[str, ...]]
    artifact: ClassVar[str]
    #: Triton backend that serves the artifact natively, and the config's platform string for it.
    native_backend: ClassVar[str | None] = None
    native_platform: ClassVar[str | None] = None
    #: Instance kinds the engine runs on, the first the one a variant gets when its plan does not say.
    instance_kinds: ClassVar[tuple[str, ...]] = ("cpu", "gpu", "auto")
    #: Options a plan's [[variant]] may set for this engine's build, each with its allowed values, the default first.
    build_options: ClassVar[dict[str, tuple[str, ...]]] = {}
    #: The engine runs the PyTorch network itself, which a model whose source is an ONNX file does not have.
    runs_the_network: ClassVar[bool] = False

    def build_settings(self, chosen: tuple[tuple[str, str], ...]) -> dict[str, str]:
        """Every build option of this engine: the ``chosen`` value where the plan sets one, else the default."""
        return {key: allowed[0] for key, allowed in self.build_options.items()} | dict(chosen)

    def check_precision(self, precision: str) -> None:
        if precision not in self.precisions:
            raise UserError(f"engine {self.name} builds {', '.join(self.precisions)}, not {precision!r}")

    def unavailable(self, precision: str) -> str | None:
        """Why this engine cannot build ``precision`` on this machine, or None when it can."""
        return None

    def not_applicable(self, spec: "ModelSpec") -> str | None:
        """Why this engine has no build of ``spec``'s model at all (on any machine), or None when it has."""
        if self.runs_the_network and spec.onnx_source is not None:
            return f"{spec.name} comes from an ONNX file, and the {self.name} engine runs a PyTorch network"
        return None

    def cannot_build(self, spec: "ModelSpec", precision: str) -> str | None:
        """Why this engine builds no ``precision`` variant of ``spec`` here: not for this model, not at this
        precision for it, or not on this machine; None when it can."""
        return self.not_applicable(spec) or spec.precision_problem(precision) or self.unavailable(precision)

    @abstractmethod
    def build(self, inputs: BuildInputs, precision: str, out_file: Path) -> None:
        """Write the deployable artifact for ``precision`` to ``out_file`` (its folder may hold caches)."""

    def float_candidates(self, inputs: BuildInputs, precision: str, artifact: Path) -> list[str]:
        """Nodes of the built ``artifact`` that a rebuild could keep in float, those that cost most accuracy
        first; empty where the engine cannot mix precisions (the accuracy gate's mixed-precision search)."""
        return []

    def build_record(self, artifact: Path) -> dict:
        """What the engine noted of the build of ``artifact`` (machine, compile times), for the variant's manifest."""
        return {}

    def load_note(self, artifact: Path, precision: str) -> "LoadNote | None":
        """What a user should know of how ``artifact`` runs on this machine (a mode chosen by its hardware, and
        whether the build was judged in the same one), said where it is loaded; None where there is nothing."""
        return None

    @abstractmethod
    def load(self, spec: "ModelSpec", artifact: Path, precision: str, device: str, threads: int) -> Runner:
        """A callable that maps a batch of named inputs to named outputs, in process."""

    def load_on_gpu(
        self, spec: "ModelSpec", artifact: Path, precision: str, device_id: int, graph_batch_sizes: tuple[int, ...]
    ) -> GpuRunner | None:
        """A runner over CUDA tensors on GPU ``device_id`` (inputs already there, outputs left there), or None
        when the engine has no such path and serves GPU instances through ``load``. ``graph_batch_sizes``:
        capture CUDA graphs for these batch sizes (empty: none), as the config's optimization.cuda.graphs asks."""
        return None


def cuda_available() -> bool:
    """Whether an NVIDIA GPU is usable from PyTorch. Without NVIDIA's device nodes there is none, and PyTorch is not
    imported to hear so (a Python-backend instance of ONNX Runtime or TensorFlow asks, and never needs it else)."""
    if not Path("/dev/nvidiactl").exists():
        return False
    import torch

    return torch.cuda.is_available()


def graph_batch_sizes(config: dict) -> tuple[int, ...]:
    """The batch sizes to capture CUDA graphs for, from a model config in Triton's JSON form: the preferred
    batch sizes and the maximum when optimization.cuda.graphs is set, else none."""
    if not config.get("optimization", {}).get("cuda", {}).get("graphs", False):
        return ()
    preferred = config.get("dynamic_batching", {}).get("preferred_batch_size", [])
    return served_batch_sizes(max(int(config.get("max_batch_size", 1)), 1), [int(size) for size in preferred])


def served_batch_sizes(max_batch_size: int, preferred: "Iterable[int]") -> tuple[int, ...]:
    """The batch sizes a dynamic batcher aims at, to which odd batches are padded: the preferred ones and the
    maximum (CUDA graphs are captured, and compiled engines compiled, for these)."""
    return tuple(sorted(set(preferred) | {max_batch_size}))


@dataclass(frozen=True)
class LoadNote:
    """A line said where an artifact is loaded; ``warning`` where serving it here is not what was judged at build."""

    text: str
    warning: bool = False


@dataclass(frozen=True)
class LoadedRunner:
    """A variant's engine, loaded for one instance: exactly one of the two runners is set."""

    #: Numpy in, numpy out (CPU instances, and GPU instances of engines without a GPU runner).
    host: Runner | None = None
    #: CUDA tensors in, CUDA tensors out (GPU instances of engines that have one).
    gpu: GpuRunner | None = None


def load_runner(spec: "ModelSpec", engine: Engine, artifact: Path, precision: str, config: dict, on_gpu: bool,
                device_id: int = 0, threads: int = 1) -> LoadedRunner:
    """The one way an artifact is loaded for serving or benchmarking: on a GPU instance the engine's GPU runner
    (CUDA graphs as ``config``, Triton's JSON form, asks), else its host runner with ``threads`` threads."""
    if on_gpu:
        gpu = engine.load_on_gpu(spec, artifact, precision, device_id, graph_batch_sizes(config))
        if gpu is not None:
            return LoadedRunner(gpu=gpu)
    return LoadedRunner(host=engine.load(spec, artifact, precision, "gpu" if on_gpu else "cpu", threads))
