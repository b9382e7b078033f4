"""Check a model repository the way Triton will load it, reporting every problem as one line with its path.

Beyond the schema: the model files parse (ONNX) and their inputs agree with the config, warm-up samples agree
with the inputs, and a variant built by trtrepo still holds every file its manifest lists, at the size built."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from tritonclient.grpc import model_config_pb2 as pb

from trtrepo.format.config import (
    BELOW_GATE_PARAMETER,
    CONFIG_FILE,
    MANIFEST_FILE,
    PYTHON_MODEL_FILE,
    VERSION,
    engine_of,
    instance_kind_problem,
    is_decoupled,
    read_config,
    read_manifest,
    readable_configs,
)
from trtrepo.engines.tensorrt import TARGET_TENSORRT, plan_load_problem
from trtrepo.errors import UserError
from trtrepo.paths import contained, symbolic_links


# Default model file name per platform or backend (Triton's conventions).
MODEL_FILES = {
    "onnxruntime_onnx": "model.onnx",
    "onnxruntime": "model.onnx",
    "tensorrt_plan": "model.plan",
    "tensorrt": "model.plan",
    "pytorch_libtorch": "model.pt",
    "pytorch": "model.pt",
    "tensorflow_savedmodel": "model.savedmodel",
    "tensorflow": "model.savedmodel",
    "python": PYTHON_MODEL_FILE,
}


#: What a path may hold for the Python backend to start a stub on it (stub_path_problem says why).
STUB_SAFE_PATH = re.compile(r"[A-Za-z0-9_./+,:@%=-]+")


def stub_path_problem(path: Path | str) -> str | None:
    """Why Triton 2.51's Python backend cannot start a stub on ``path``, if it cannot: it starts each stub through
    bash with the model's path (and its own) unquoted, so a space splits the command (the stub dies on `stol`),
    shell characters run as shell, and a non-ASCII name fails every model's load."""
    text = str(Path(path).resolve())
    if STUB_SAFE_PATH.fullmatch(text):
        return None
    odd = sorted({c for c in text if not STUB_SAFE_PATH.fullmatch(c)})
    return (f"{text}: holds {' '.join(repr(c) for c in odd)}, which tritonserver 2.51's Python backend cannot start a "
            "model from (it runs each model's process through bash with the path unquoted); move or rename it to "
            "letters, digits and . _ - / only")


def validate_repository(repo: Path, tensorrt: str = TARGET_TENSORRT) -> list[str]:
    """All problems found in ``repo``, each ``path: message``; an empty list means Triton should load it.
    ``tensorrt``: the TensorRT version of the server it is for (plans load only there)."""
    repo = Path(repo)
    if not repo.is_dir():
        return [f"{repo}: not a directory"]
    if problem := stub_path_problem(repo):
        return [problem]
    model_dirs = model_folders(repo)
    if not model_dirs:
        return [f"{repo}: no model folders"]
    return [problem for model_dir in model_dirs for problem in validate_model(model_dir, tensorrt)] + pipeline_problems(repo)


def model_folders(repo: Path) -> list[Path]:
    """The folders of ``repo`` that Triton takes for models (hidden ones, such as staging, are not)."""
    return sorted(p for p in Path(repo).iterdir() if p.is_dir() and not p.name.startswith("."))


def pipelined_variant_problem(variant: str) -> str:
    """Why a pipeline cannot call ``variant``, a pipelined (decoupled) model, and what to do."""
    return (f"its variant {variant} is pipelined (decoupled): in this Triton (2.51) a model that calls a decoupled "
            "model through BLS loses its Python stub under load (a segfault in one of the backend's own threads; the "
            f"variant called plainly does not); `trtrepo config {variant} --no-pipelined`")


def pipeline_problems(repo: Path, changed: dict[str, pb.ModelConfig] | None = None) -> list[str]:
    """A pipeline calls its tensor variant by name: the variant must be in the same repository and take the
    pipeline's whole batch (a batch the variant refuses would fail every request in it). ``changed``: configs to
    judge in place of those on disk (a change not yet written)."""
    return list(_pipeline_problems_by_model(repo, changed).values())


def _pipeline_problems_by_model(repo: Path, changed: dict[str, pb.ModelConfig] | None = None) -> dict[str, str]:
    """pipeline_problems, by the pipeline each is of."""
    configs = {model_dir.name: config for model_dir, config in readable_configs(repo)} | (changed or {})
    problems = {}
    for name, config in configs.items():
        if "variant" not in config.parameters:
            continue
        variant, path = config.parameters["variant"].string_value, Path(repo) / name / CONFIG_FILE
        if variant not in configs:
            problems[name] = f"{path}: its variant {variant} is not in the repository"
        elif config.max_batch_size > configs[variant].max_batch_size:
            problems[name] = (f"{path}: max_batch_size {config.max_batch_size} is above its variant {variant}'s "
                              f"{configs[variant].max_batch_size}")
        elif is_decoupled(configs[variant]):
            problems[name] = f"{path}: {pipelined_variant_problem(variant)}"
    return problems


def invalid_models(repo: Path, tensorrt: str = TARGET_TENSORRT) -> dict[str, str]:
    """The model folders of ``repo`` that Triton would fail to load or that would fail once loaded (a pipeline its
    variant cannot serve, or one calling a model left out), each with its first problem: what a server leaves out so
    that one broken model does not take the others down."""
    found = {}
    for model_dir in model_folders(repo):
        problems = validate_model(model_dir, tensorrt)
        if problems:
            found[model_dir.name] = problems[0]
    for name, problem in _pipeline_problems_by_model(repo).items():
        found.setdefault(name, problem)
    for model_dir, config in readable_configs(repo):
        called = config.parameters["variant"].string_value if "variant" in config.parameters else ""
        if called in found:
            found.setdefault(model_dir.name, f"{model_dir / CONFIG_FILE}: its variant {called} is left out")
    return found


def tensorrt_problems(repo: Path, tensorrt: str) -> list[str]:
    """The plans in ``repo`` that TensorRT ``tensorrt`` would refuse."""
    return [problem for model_dir, config in readable_configs(repo) for problem in _plan_problems(model_dir, config, tensorrt)]


def _plan_problems(model_dir: Path, config: pb.ModelConfig, tensorrt: str) -> list[str]:
    """A TensorRT variant built by trtrepo whose plan the TensorRT ``tensorrt`` would refuse (another release)."""
    engine = engine_of(config)
    manifest = read_manifest(model_dir)
    if engine is None or engine.name != "tensorrt" or not manifest:
        return []
    problem = plan_load_problem((manifest.get("versions") or {}).get("tensorrt"), tensorrt)
    return [f"{Path(model_dir) / VERSION / engine.artifact}: {problem}"] if problem else []


def repository_warnings(repo: Path) -> list[str]:
    """What Triton loads but a user should know: variants published below their accuracy gate."""

    return [f"{model_dir.name}: published below its accuracy gate "
            f"({config.parameters[BELOW_GATE_PARAMETER].string_value})"
            for model_dir, config in readable_configs(repo) if BELOW_GATE_PARAMETER in config.parameters]


def validate_model(model_dir: Path, tensorrt: str = TARGET_TENSORRT) -> list[str]:
    config_path = model_dir / CONFIG_FILE
    if not config_path.is_file():
        return [f"{config_path}: missing"]
    try:
        config = read_config(config_path)
    except UserError as exc:
        return [str(exc)]
    problems = [f"{config_path}: {message}" for message in _config_problems(config, model_dir.name)]
    problems += [f"{link}: symbolic link to {os.readlink(link)}, out of the model folder (Triton would read it)"
                 for link in symbolic_links(model_dir) if not link.resolve().is_relative_to(model_dir.resolve())]
    versions = sorted(p for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())
    if not versions:
        problems.append(f"{model_dir}: no numeric version folder (such as 1/)")
    if config.platform != "ensemble":
        kind = config.platform or config.backend
        expected = [config.default_model_filename or MODEL_FILES.get(kind, "")]
        if config.backend == "python" and "artifact" in config.parameters:
            expected.append(config.parameters["artifact"].string_value)
        for version in versions:
            for name in expected:
                path = version / name
                if not name:
                    continue
                if not path.exists():
                    problems.append(f"{path}: missing")
                elif path.is_file() and path.stat().st_size == 0 or path.is_dir() and not any(path.iterdir()):
                    problems.append(f"{path}: empty")
                elif name.endswith(".savedmodel") and not (path / "saved_model.pb").is_file():
                    problems.append(f"{path}: not a SavedModel (no saved_model.pb)")
                elif name.endswith(".onnx"):
                    problems += [f"{path}: {message}" for message in _onnx_problems(path, config)]
    problems += [f"{config_path}: {message}" for message in _warmup_problems(config)]
    problems += _label_problems(model_dir, config)
    problems += _plan_problems(model_dir, config, tensorrt)
    # A file, a folder (a SavedModel) or the variant itself already found wanting: what lies in it is not told again.
    reported = {problem.split(": ", 1)[0] for problem in problems}
    if str(model_dir) not in reported:
        problems += [p for p in _manifest_problems(model_dir) if p.split(": ", 1)[0] != str(model_dir)
                     and not any(p.split(": ", 1)[0] == seen or p.startswith(seen + "/") for seen in reported)]
    return problems


def _onnx_problems(path: Path, config: pb.ModelConfig) -> list[str]:
    """The ONNX file parses, and each config input is a graph input of that element type and shape."""
    import onnx
    from onnx import helper

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # DecodeError, truncated files: onnx raises several types
        return [f"not a readable ONNX model ({exc.__class__.__name__}; truncated or corrupt?)"]
    initializers = {i.name for i in model.graph.initializer}
    graph_inputs = {i.name: i for i in model.graph.input if i.name not in initializers}
    problems = []
    for tensor in config.input:
        if tensor.name not in graph_inputs:
            problems.append(f"has no input {tensor.name!r} (its inputs: {', '.join(graph_inputs) or 'none'})")
            continue
        kind = graph_inputs[tensor.name].type.tensor_type
        expected = pb.DataType.Name(tensor.data_type).removeprefix("TYPE_")
        actual = helper.tensor_dtype_to_np_dtype(kind.elem_type).name if kind.elem_type else "unknown"
        if _TRITON_OF_NUMPY.get(actual) != expected:
            problems.append(f"input {tensor.name!r} is {actual}, the config says {expected}")
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in kind.shape.dim]
        sample = dims[1:] if config.max_batch_size > 0 else dims
        declared = list(tensor.dims)
        if len(sample) != len(declared) or any(a != -1 and b != -1 and a != b for a, b in zip(sample, declared)):
            problems.append(f"input {tensor.name!r} has dims {sample} per sample, the config says {declared}")
    return problems


_TRITON_OF_NUMPY = {"float32": "FP32", "float16": "FP16", "int8": "INT8", "uint8": "UINT8", "int32": "INT32",
                    "int64": "INT64", "bool": "BOOL", "float64": "FP64"}


def _warmup_problems(config: pb.ModelConfig) -> list[str]:
    """Each warm-up sample names config inputs, with their data type and fixed dims (Triton refuses the model)."""
    inputs = {tensor.name: tensor for tensor in config.input}
    problems = []
    for warmup in config.model_warmup:
        for name, sample in warmup.inputs.items():
            if name not in inputs:
                problems.append(f"warm-up {warmup.name!r} feeds {name!r}, which is not an input")
                continue
            declared = list(inputs[name].dims)
            if sample.data_type != inputs[name].data_type or len(sample.dims) != len(declared) or any(
                    d != -1 and d != s for d, s in zip(declared, sample.dims)):
                problems.append(f"warm-up {warmup.name!r} feeds {name!r} as {pb.DataType.Name(sample.data_type)} "
                                f"{list(sample.dims)}, the input is {pb.DataType.Name(inputs[name].data_type)} {declared}")
        if config.max_batch_size and warmup.batch_size > config.max_batch_size:
            problems.append(f"warm-up {warmup.name!r} has batch {warmup.batch_size} above max_batch_size {config.max_batch_size}")
    return problems


def _label_problems(model_dir: Path, config: pb.ModelConfig) -> list[str]:
    """Each output's label_filename names a file in the model folder with one label a line per class (the output's
    last dimension), as Triton's classification extension reads it."""
    problems = []
    for output in config.output:
        if not output.label_filename:
            continue
        path = model_dir / output.label_filename
        if Path(output.label_filename).is_absolute() or ".." in Path(output.label_filename).parts or not path.is_file():
            problems.append(f"{path}: labels file of output {output.name!r} missing")
            continue
        classes = output.dims[-1] if output.dims else -1
        lines = len(path.read_text(errors="replace").splitlines())
        if classes > 0 and lines != classes:
            problems.append(f"{path}: {lines} labels for the {classes} classes of output {output.name!r}")
    return problems


def _manifest_problems(model_dir: Path) -> list[str]:
    """A trtrepo-built variant (one with a manifest): the manifest parses and every file it lists is there at
    its size (``trtrepo repo`` checks hashes too, and rebuilds what differs)."""
    path = model_dir / MANIFEST_FILE
    if not path.exists():
        return []
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return [f"{path}: unreadable or empty; rebuild the variant with `trtrepo repo`"]
    if not isinstance(manifest, dict):
        return [f"{path}: not a manifest; rebuild the variant with `trtrepo repo`"]
    problems = []
    for name, entry in (manifest.get("files") or {}).items():
        try:
            file = contained(model_dir, str(name), "manifest entry")
        except UserError as exc:
            problems.append(f"{path}: {exc}")
            continue
        if not file.is_file():
            problems.append(f"{file}: listed in the manifest but missing; rebuild with `trtrepo repo`")
        elif isinstance(entry, dict) and file.stat().st_size != entry.get("bytes"):
            problems.append(f"{file}: {file.stat().st_size} bytes, built as {entry.get('bytes')}; rebuild with `trtrepo repo`")
    return problems


def _config_problems(config: pb.ModelConfig, folder: str) -> list[str]:
    problems = []
    if config.name and config.name != folder:
        problems.append(f"name {config.name!r} differs from its folder {folder!r}")
    if not config.platform and not config.backend:
        problems.append("neither platform nor backend is set")
    if config.platform and config.platform not in MODEL_FILES and config.platform != "ensemble":
        problems.append(f"unknown platform {config.platform!r}")
    if config.max_batch_size < 0:
        problems.append(f"max_batch_size {config.max_batch_size} is negative")
    for tensor in [*config.input, *config.output]:
        if not tensor.name:
            problems.append("a tensor has no name")
        if tensor.data_type == pb.TYPE_INVALID:
            problems.append(f"tensor {tensor.name!r} has no data_type")
        if not tensor.dims and not tensor.reshape.shape:
            problems.append(f"tensor {tensor.name!r} has no dims")
    if config.platform != "ensemble" and not config.input:
        problems.append("no input tensors")
    if config.platform != "ensemble" and not config.output:
        problems.append("no output tensors")
    for size in config.dynamic_batching.preferred_batch_size:
        if size < 1 or size > config.max_batch_size:
            problems.append(f"preferred batch size {size} lies outside 1..max_batch_size ({config.max_batch_size})")
    for group in config.instance_group:
        if group.count < 0:
            problems.append(f"instance_group count {group.count} is negative")
        if group.gpus and group.kind == pb.ModelInstanceGroup.KIND_CPU:
            problems.append("instance_group lists gpus for KIND_CPU")
    kind_problem = instance_kind_problem(config)
    if kind_problem:
        problems.append(kind_problem)
    return problems
