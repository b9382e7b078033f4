"""A declared model's network from its source, and the tensors it has: what the declaration is checked against.

torchvision and factory sources are a network with a state dict (saved so in a variant's artifact); TorchScript
and exported sources are files that hold network and weights together (the artifact is such a file); an ONNX
source has no PyTorch network at all.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from trtrepo.errors import UserError

if TYPE_CHECKING:
    import onnx
    import torch

    from trtrepo.models.declaration import Declaration

#: The weights choices that mean "the declaration's own" (a state dict declared as weights, or the source file).
DECLARED_WEIGHTS = ("declared", "pretrained", "imagenet")


def build_declared_network(declaration: "Declaration", weights: str) -> "torch.nn.Module":
    """The declared network in eval mode. ``weights``: the declared ones (DECLARED_WEIGHTS), ``random`` (torchvision
    and factory sources) or a file: a state dict, or for TorchScript and exported sources a file of their kind (a
    variant's artifact)."""
    from trtrepo.models.weights import apply_state_dict, read_state_dict

    source = declaration.source
    if source == "onnx":
        raise UserError(f"{declaration.name} comes from an ONNX file: it has no PyTorch network")
    if source in ("torchscript", "exported"):
        own = weights in DECLARED_WEIGHTS or weights == "random"  # the file holds its weights: none random
        return _load_file(declaration, declaration.source_file if own else Path(weights))
    network = _architecture(declaration) if source in ("torchvision", "timm") else _from_factory(declaration)
    if source == "factory" and declaration.weights is None and weights in (*DECLARED_WEIGHTS, "random"):
        return network.eval()  # the factory's network as it returns it: its own weights, or its random ones
    if weights in DECLARED_WEIGHTS:
        if declaration.weights is None:
            raise UserError(f"{declaration.name}: its declaration names no weights; declare weights = \"PATH\" or use "
                            "--weights random")
        weights = str(declaration.weights)
    if weights != "random":
        apply_state_dict(network, read_state_dict(Path(weights), declaration.name), declaration.name, weights)
    return network.eval()


def save_declared_network(declaration: "Declaration", network: "torch.nn.Module", out_file: Path) -> None:
    """The network as a variant's artifact, in the form build_declared_network reads back."""
    import torch

    if declaration.source == "torchscript":
        with _jit_not_deprecated():
            torch.jit.save(network, str(out_file))
    elif declaration.source == "exported":
        shutil.copyfile(declaration.exported, out_file)  # its weights are the file's: never other ones
    else:
        torch.save(network.state_dict(), out_file)


def network_tensors(declaration: "Declaration") -> tuple[str, str, tuple[int, ...]]:
    """The network's input and output names and its output's shape per image, read from the ONNX graph or from one
    run of the PyTorch network (which also proves that its file loads and its weights fit)."""
    if declaration.source == "onnx":
        return _onnx_tensors(declaration)
    import torch

    weights = "declared" if declaration.weights or declaration.source_file else "random"
    network = build_declared_network(declaration, weights)
    height, width = declaration.input_size
    try:
        with torch.inference_mode():
            result = network(torch.zeros(1, 3, height, width))
    except Exception as exc:  # the user's network refusing the declared input: its own message, one line
        raise UserError(f"the network does not take a batch of {[1, 3, height, width]} images "
                        f"({exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from exc
    if isinstance(result, (tuple, list)):
        if len(result) != 1:
            raise UserError(f"the network answers {len(result)} tensors; a declared {declaration.task} model answers one")
        (result,) = result
    return declaration.input_name, declaration.output_name, tuple(result.shape[1:])


def _architecture(declaration: "Declaration") -> "torch.nn.Module":
    """The named architecture, untrained, with as many outputs as class names: torchvision's, or timm's (which the
    server's stubs then import too, for the PyTorch engines)."""
    if declaration.source == "timm":
        import timm

        return timm.create_model(declaration.architecture, pretrained=False, num_classes=len(declaration.class_names))
    from torchvision.models import get_model

    return get_model(declaration.architecture, weights=None, num_classes=len(declaration.class_names))


def _from_factory(declaration: "Declaration") -> "torch.nn.Module":
    """``package.module:function`` called with no arguments: it must be importable where the network runs (the
    build, and the server's stubs for the PyTorch engines)."""
    import torch

    module_name, _, function_name = (declaration.factory or "").partition(":")
    if not module_name or not function_name:
        raise UserError(f"factory {declaration.factory!r} must be \"package.module:function\"")
    try:
        function = getattr(importlib.import_module(module_name), function_name)
    except (ImportError, AttributeError) as exc:
        raise UserError(f"factory {declaration.factory} cannot be imported ({exc.__class__.__name__}: {exc}); its "
                        "package must be installed where the network is built and served") from exc
    network = function()
    if not isinstance(network, torch.nn.Module):
        raise UserError(f"factory {declaration.factory} returned a {type(network).__name__}, not a torch.nn.Module")
    return network


def _load_file(declaration: "Declaration", path: Path) -> "torch.nn.Module":
    """The network a TorchScript file or an exported program holds, ready to run (an exported program's module
    is traced in eval mode and takes no .eval())."""
    import torch

    try:
        if declaration.source == "torchscript":
            with _jit_not_deprecated():
                return torch.jit.load(str(path), map_location="cpu").eval()
        with path.open("rb") as file, _quiet_logger("torch.export"):  # a buffer: the artifact's name does not end in .pt2
            return _exported_network(torch.export.load(file).module())
    except Exception as exc:  # torch raises RuntimeError, zipfile and pickle errors for a file of another kind
        what = "TorchScript file (torch.jit.save)" if declaration.source == "torchscript" else "torch.export program (torch.export.save, .pt2)"
        raise UserError(f"{path} is not a {what} ({exc.__class__.__name__})") from exc


@contextlib.contextmanager
def _jit_not_deprecated() -> Iterator[None]:
    """torch.jit's deprecation notice left out for the block: the user's network is TorchScript, which is theirs
    to change, not this build's."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        yield


@contextlib.contextmanager
def _quiet_logger(name: str) -> Iterator[None]:
    """The logger says nothing below ERROR for the block: torch.export.load logs a traceback at WARNING for a
    file it cannot read, before the one-line error that says so."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _exported_network(program: "torch.nn.Module") -> "torch.nn.Module":
    """An exported program's module as a network that the ONNX exporter and the engines handle as any other: the
    module is traced in eval mode and refuses .train() and .eval(), which leave it as it is here."""
    import torch

    class ExportedNetwork(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.program = program

        def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
            return self.program(*inputs)

        def train(self, mode: bool = True) -> "ExportedNetwork":
            return self

    return ExportedNetwork()


def _onnx_tensors(declaration: "Declaration") -> tuple[str, str, tuple[int, ...]]:
    """An ONNX image model's input and output names and output shape per image, checked against the declaration:
    one float input of rank 4 in its layout with 3 channels and its size where fixed, a batch axis left free, one
    output (whose free dimensions one run of ONNX Runtime fixes)."""
    import onnx

    path = declaration.onnx
    inputs, outputs = _graph_tensors(path)
    if len(inputs) != 1 or len(outputs) != 1:
        raise UserError(f"a declared {declaration.task} model has one input and one output; {path} has {len(inputs)} "
                        f"and {len(outputs)}")
    (given,), (answer,) = inputs, outputs
    shape, out = _dims(given), _dims(answer)
    if given.type.tensor_type.elem_type != onnx.TensorProto.FLOAT or len(shape) != 4:
        raise UserError(f"input {given.name} of {path} must be a float32 image batch of rank 4, not "
                        f"{onnx.TensorProto.DataType.Name(given.type.tensor_type.elem_type)} of rank {len(shape)}")
    size = list(declaration.input_size)
    expected = [3, *size] if declaration.layout == "NCHW" else [*size, 3]
    if shape[0] is not None and shape[0] != 0:
        raise UserError(f"input {given.name} of {path} has its batch fixed at {shape[0]}: export it with a free batch "
                        "axis (dynamic_axes, dynamic_shapes) so that Triton can batch requests")
    if any(dim is not None and dim != want for dim, want in zip(shape[1:], expected)):
        raise UserError(f"input {given.name} of {path} is {shape[1:]} per image, not {expected} "
                        f"({declaration.layout}, input_size {size})")
    if None in out[1:]:
        out = [None, *_run_onnx(path, given.name, expected)]
    return given.name, answer.name, tuple(out[1:])


def _graph_tensors(path: Path) -> tuple[list["onnx.ValueInfoProto"], list["onnx.ValueInfoProto"]]:
    """An ONNX file's inputs (its initializers left out: they are weights) and outputs."""
    import onnx

    try:
        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception as exc:  # onnx raises DecodeError and others for a file that is not a model
        raise UserError(f"{path} is not an ONNX model ({exc.__class__.__name__})") from exc
    weights = {initializer.name for initializer in graph.initializer}
    return [tensor for tensor in graph.input if tensor.name not in weights], list(graph.output)


def _dims(tensor: "onnx.ValueInfoProto") -> list[int | None]:
    """A tensor's dimensions, None where not fixed."""
    return [d.dim_value if d.HasField("dim_value") else None for d in tensor.type.tensor_type.shape.dim]


def _run_onnx(path: Path, input_name: str, sample: list[int]) -> tuple[int, ...]:
    """The output's shape per image on one zero image."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (output,) = session.run(None, {input_name: np.zeros((1, *sample), dtype=np.float32)})
    return tuple(output.shape[1:])


#: ONNX element types a raw model's tensors may have, as numpy names (the ones Triton's configs here carry).
ONNX_DTYPES = {"FLOAT": "float32", "FLOAT16": "float16", "INT8": "int8", "UINT8": "uint8", "INT32": "int32", "INT64": "int64"}


def raw_tensors(path: Path) -> tuple[tuple[tuple[str, str, tuple[int, ...]], ...], ...]:
    """A raw model's inputs and outputs as (name, dtype, shape per sample), read from its ONNX graph: each with a
    free batch axis first and every other dimension fixed."""
    import onnx

    def described(tensor: "onnx.ValueInfoProto") -> tuple[str, str, tuple[int, ...]]:
        kind = onnx.TensorProto.DataType.Name(tensor.type.tensor_type.elem_type)
        if kind not in ONNX_DTYPES:
            raise UserError(f"tensor {tensor.name} of {path} is {kind}; a raw model's tensors are one of "
                            f"{', '.join(ONNX_DTYPES)}")
        shape = _dims(tensor)
        if not shape or shape[0] not in (None, 0) or None in shape[1:]:
            raise UserError(f"tensor {tensor.name} of {path} is {shape}: a raw model's tensors have a free batch axis "
                            "first and every other dimension fixed")
        return tensor.name, ONNX_DTYPES[kind], tuple(shape[1:])

    inputs, outputs = _graph_tensors(path)
    return tuple(map(described, inputs)), tuple(map(described, outputs))
