"""Check a model repository the way Triton will load it, reporting every problem as one line with its path."""

from __future__ import annotations

from pathlib import Path

from tritonclient.grpc import model_config_pb2 as pb

from trtrepo.config import CONFIG_FILE, PYTHON_MODEL_FILE, read_config
from trtrepo.errors import UserError

# Default model file name per platform or backend (Triton's conventions).
MODEL_FILES = {
    "onnxruntime_onnx": "model.onnx",
    "onnxruntime": "model.onnx",
    "tensorrt_plan": "model.plan",
    "tensorrt": "model.plan",
    "pytorch_libtorch": "model.pt",
    "pytorch": "model.pt",
    "python": PYTHON_MODEL_FILE,
}


def validate_repository(repo: Path) -> list[str]:
    """All problems found in ``repo``, each ``path: message``; an empty list means Triton should load it."""
    repo = Path(repo)
    if not repo.is_dir():
        return [f"{repo}: not a directory"]
    model_dirs = sorted(p for p in repo.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not model_dirs:
        return [f"{repo}: no model folders"]
    return [problem for model_dir in model_dirs for problem in validate_model(model_dir)]


def validate_model(model_dir: Path) -> list[str]:
    config_path = model_dir / CONFIG_FILE
    if not config_path.is_file():
        return [f"{config_path}: missing"]
    try:
        config = read_config(config_path)
    except UserError as exc:
        return [str(exc)]
    problems = [f"{config_path}: {message}" for message in _config_problems(config, model_dir.name)]
    versions = sorted(p for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())
    if not versions:
        problems.append(f"{model_dir}: no numeric version folder (such as 1/)")
    if config.platform != "ensemble":
        kind = config.platform or config.backend
        expected = [config.default_model_filename or MODEL_FILES.get(kind, "")]
        if config.backend == "python" and "artifact" in config.parameters:
            expected.append(config.parameters["artifact"].string_value)
        for version in versions:
            problems += [f"{version / name}: missing" for name in expected if name and not (version / name).exists()]
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
    return problems
