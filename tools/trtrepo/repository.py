"""Build a model repository: export each model once, build its variants, write configs and manifests.

Each variant folder gets manifest.json (what it was built from); a variant whose manifest already matches
what would be built is left as it is, so `make repo` rebuilds only what changed.
"""

from __future__ import annotations

import datetime
import hashlib
import importlib.metadata
import json
import shutil
import tempfile
import tomllib
from dataclasses import asdict, dataclass, fields
from itertools import groupby
from pathlib import Path
from typing import Callable

import torch

from trtrepo import __version__
from trtrepo.calibration import DEFAULT_CALIBRATION_IMAGES, CalibrationSet, calibration_set
from trtrepo.config import (
    CONFIG_FILE,
    ServingOptions,
    Variant,
    ensemble_config,
    model_config,
    pipeline_config,
    read_config,
    write_config,
)
from trtrepo.engines import ENGINES, BuildInputs, get_engine
from trtrepo.errors import UserError
from trtrepo.export import export_onnx
from trtrepo.models import MODELS, get_model
from trtrepo.server import find_tritonserver
from trtrepo.specs import ModelSpec

DEFAULT_PLAN = Path("repo.toml")
VERSION = "1"
MANIFEST = "manifest.json"
RANDOM_SEED = 0
LIBRARIES = ("torch", "torchvision", "onnx", "onnxruntime", "tensorrt", "polygraphy")


@dataclass(frozen=True)
class RepoPlan:
    """What to build: the declarative repo.toml, with command-line overrides applied."""

    output: Path
    weights: str  # one choice for every model, or per model: "resnet50=random,efficientnet_lite0=imagenet"
    backends: frozenset[str]
    variants: tuple[Variant, ...]
    calib_dir: Path | None = None
    calib_images: int = DEFAULT_CALIBRATION_IMAGES
    pipelines: tuple[tuple[str, str], ...] = ()  # (pipeline model name, detector variant it calls)
    ensembles: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (ensemble name, the variants it chains)


    def weights_for(self, model: str) -> str:
        """The weights choice for ``model``: its own entry in a per-model list, else the single choice."""
        if "=" not in self.weights:
            return self.weights
        choices = dict(part.split("=", 1) for part in self.weights.split(",") if "=" in part)
        if model not in choices:
            raise UserError(f"--weights {self.weights!r} names no weights for {model}")
        return choices[model]


@dataclass(frozen=True)
class BuildResult:
    variant: str
    status: str  # built | up to date | skipped
    detail: str = ""


def load_plan(
    path: Path | None = None,
    models: list[str] | None = None,
    weights: str | None = None,
    output: Path | None = None,
    backends: str | None = None,
    options: ServingOptions | None = None,
    calib_dir: Path | None = None,
    calib_images: int | None = None,
) -> RepoPlan:
    """Read repo.toml (or the built-in plan: every model through every engine at fp32) and apply overrides."""
    data: dict = {}
    if path is not None or DEFAULT_PLAN.is_file():
        plan_file = Path(path or DEFAULT_PLAN)
        try:
            data = tomllib.loads(plan_file.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise UserError(f"{plan_file}: cannot read plan: {exc}") from exc
    repository = data.get("repository", {})
    defaults = options or _serving_options(data.get("defaults", {}), ServingOptions(), "defaults")
    entries = data.get("variant") or [{"model": m, "engine": e, "precision": "fp32"} for m in MODELS for e in ENGINES]
    variants = []
    for entry in entries:
        try:
            model, engine, precision = entry["model"], entry["engine"], entry["precision"]
        except KeyError as exc:
            raise UserError(f"variant {entry} lacks the key {exc}") from None
        if models and model not in models:
            continue
        own = {k: v for k, v in entry.items() if k not in ("model", "engine", "precision")}
        variants.append(Variant(model, engine, precision, _serving_options(own, defaults, f"{model}_{engine}_{precision}")))
    for name in models or []:
        get_model(name)  # unknown names fail here rather than building nothing
    if not variants:
        raise UserError(f"the plan has no variant for models {', '.join(models or [])}")
    plan_calib = repository.get("calib_dir")
    pipelines = []
    for entry in data.get("pipeline", []):
        if "name" not in entry or "detector" not in entry:
            raise UserError(f"pipeline {entry} needs name and detector")
        if not models or Variant.parse(entry["detector"]).model in models:
            pipelines.append((entry["name"], entry["detector"]))
    ensembles = []
    for entry in data.get("ensemble", []):
        if "name" not in entry or not entry.get("steps"):
            raise UserError(f"ensemble {entry} needs name and steps")
        if not models or any(Variant.parse(step).model in models or entry["name"] in models for step in entry["steps"]):
            ensembles.append((entry["name"], tuple(entry["steps"])))
    return RepoPlan(
        output=Path(output or repository.get("output", "model_repository")),
        weights=weights or repository.get("weights", "imagenet"),
        backends=resolve_backends(backends or repository.get("backends", "auto")),
        variants=tuple(variants),
        calib_dir=calib_dir or (Path(plan_calib) if plan_calib else None),
        calib_images=calib_images or repository.get("calib_images", DEFAULT_CALIBRATION_IMAGES),
        pipelines=tuple(pipelines),
        ensembles=tuple(ensembles),
    )


def _serving_options(table: dict, base: ServingOptions, where: str) -> ServingOptions:
    known = {f.name for f in fields(ServingOptions)}
    unknown = set(table) - known
    if unknown:
        raise UserError(f"[{where}]: unknown keys {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}")
    converted = {k: tuple(v) if isinstance(v, list) else v for k, v in table.items()}
    return base.updated(**converted)


def resolve_backends(backends: str) -> frozenset[str]:
    """``auto``: the backends of the server `trtrepo serve` would start; else a comma-separated list."""
    if backends == "auto":
        return find_tritonserver().backends
    return frozenset(b.strip() for b in backends.split(",") if b.strip())


def load_network(spec: ModelSpec, weights: str) -> torch.nn.Module:
    """The network with its weights; ``random`` is seeded, so rebuilds see the same weights."""
    with torch.random.fork_rng():
        torch.manual_seed(RANDOM_SEED)
        return spec.build_network(weights)


def weights_digest(network: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in network.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def library_versions() -> dict[str, str]:
    versions = {"trtrepo": __version__}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def build_key(variant: Variant, weights: str, digest: str, native: bool, calibration: CalibrationSet | None) -> dict:
    """Everything a variant's files depend on; equal keys mean an identical rebuild (JSON-normalized)."""
    return json.loads(json.dumps({
        "variant": variant.name,
        "engine": variant.engine,
        "precision": variant.precision,
        "weights": {"source": weights, "sha256": digest},
        "serving": asdict(variant.options),
        "native_backend": native,
        "calibration": calibration.describe() if calibration and variant.precision == "int8" else None,
        "calibration_images": [str(p) for p in calibration.images] if calibration and variant.precision == "int8" else None,
        "versions": library_versions(),
    }))


def read_manifest(model_dir: Path) -> dict:
    try:
        return json.loads((model_dir / MANIFEST).read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def build_variant(variant: Variant, inputs: BuildInputs, repo_dir: Path, native: bool, key: dict) -> Path:
    """Write one variant's folder: 1/<artifact> (+ model.py for the Python backend), config.pbtxt, manifest.json.

    The version folder is kept, so engine caches in it (TensorRT timing and calibration) survive rebuilds.
    """
    engine = get_engine(variant.engine)
    model_dir = Path(repo_dir) / variant.name
    version_dir = model_dir / VERSION
    version_dir.mkdir(parents=True, exist_ok=True)
    artifact = version_dir / engine.artifact
    artifact.unlink(missing_ok=True)
    engine.build(inputs, variant.precision, artifact)
    python_model = version_dir / "model.py"
    if native:
        python_model.unlink(missing_ok=True)
    else:
        shutil.copyfile(Path(__file__).with_name("triton_model.py"), python_model)
    write_config(model_config(variant.name, inputs.spec, engine, variant.precision, native, variant.options), model_dir)
    manifest = {**key, "onnx_sha256": file_digest(inputs.onnx_path), "artifact_sha256": file_digest(artifact),
                "built_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    (model_dir / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return model_dir


def build_repository(plan: RepoPlan, log: Callable[[str], None] = lambda _: None, force: bool = False) -> list[BuildResult]:
    """Build every variant of the plan that can be built here and is not up to date; say why for the rest."""
    plan.output.mkdir(parents=True, exist_ok=True)
    results: list[BuildResult] = []
    calibration: CalibrationSet | None = None
    if any(v.precision == "int8" for v in plan.variants):
        calibration = calibration_set(plan.calib_dir, plan.calib_images)
        if not calibration.representative:
            log(f"warning: INT8 calibration on {len(calibration.images)} {calibration.source}: not representative "
                "of your data; pass --calib-dir for a meaningful INT8 accuracy")
    with tempfile.TemporaryDirectory(prefix="trtrepo-export-") as scratch:
        for model, group in groupby(sorted(plan.variants, key=lambda v: v.model), key=lambda v: v.model):
            spec = get_model(model)
            todo = []
            for variant in group:
                engine = get_engine(variant.engine)
                engine.check_precision(variant.precision)
                reason = engine.unavailable(variant.precision)
                if reason:
                    log(f"warning: skipping {variant.name}: {reason}")
                    results.append(BuildResult(variant.name, "skipped", reason))
                    continue
                native = engine.native_backend in plan.backends
                if not native and "python" not in plan.backends:
                    raise UserError(f"{variant.name}: the server has neither the {engine.native_backend or engine.name} nor the python backend")
                todo.append((variant, native))
            if not todo:
                continue
            weights = plan.weights_for(model)
            log(f"{model}: loading weights ({weights})")
            network = load_network(spec, weights)
            digest = weights_digest(network)
            onnx_path = None
            for variant, native in todo:
                key = build_key(variant, weights, digest, native, calibration)
                manifest = read_manifest(plan.output / variant.name)
                if not force and {k: manifest.get(k) for k in key} == key and (plan.output / variant.name / VERSION).is_dir():
                    log(f"{variant.name}: up to date")
                    results.append(BuildResult(variant.name, "up to date"))
                    continue
                if onnx_path is None:
                    report = export_onnx(spec, network, Path(scratch) / f"{model}.onnx")
                    onnx_path = report.path
                    log(f"{model}: exported ONNX, parity with PyTorch max abs diff {report.max_abs_diff:.2e}")
                log(f"{variant.name}: building")
                inputs = BuildInputs(spec, network, onnx_path, variant.options.max_batch_size,
                                     variant.options.preferred_batch_sizes, calibration, log)
                build_variant(variant, inputs, plan.output, native, key)
                results.append(BuildResult(variant.name, "built"))
    for name, detector in plan.pipelines:
        results.append(build_pipeline(name, detector, plan.output, plan.backends, log))
    for name, steps in plan.ensembles:
        results.append(build_ensemble(name, steps, plan.output, log))
    return results


def build_ensemble(name: str, steps: tuple[str, ...], repo_dir: Path, log: Callable[[str], None]) -> BuildResult:
    """A Triton ensemble over variants already in the repository (its batch limit: the smallest of theirs)."""
    missing = [step for step in steps if not (Path(repo_dir) / step / CONFIG_FILE).is_file()]
    if missing:
        log(f"warning: skipping ensemble {name}: {', '.join(missing)} not in the repository")
        return BuildResult(name, "skipped", f"{', '.join(missing)} not in the repository")
    limit = min(read_config(Path(repo_dir) / step / CONFIG_FILE).max_batch_size for step in steps)
    model_dir = Path(repo_dir) / name
    (model_dir / VERSION).mkdir(parents=True, exist_ok=True)  # Triton wants a version folder, empty for ensembles
    write_config(ensemble_config(name, [(step, get_model(Variant.parse(step).model)) for step in steps], limit), model_dir)
    log(f"{name}: ensemble {' -> '.join(steps)}")
    return BuildResult(name, "built", " -> ".join(steps))


def build_pipeline(name: str, detector: str, repo_dir: Path, backends: frozenset[str], log: Callable[[str], None]) -> BuildResult:
    """The BLS model that serves encoded images through the detector variant; needs the Python backend."""
    if not (Path(repo_dir) / detector / VERSION).is_dir():
        reason = f"its detector {detector} is not in the repository"
    elif "python" not in backends:
        reason = "the server has no python backend"
    else:
        model_dir = Path(repo_dir) / name
        (model_dir / VERSION).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(__file__).with_name("triton_pipeline_model.py"), model_dir / VERSION / "model.py")
        write_config(pipeline_config(name, Variant.parse(detector).model, detector), model_dir)
        log(f"{name}: pipeline over {detector}")
        return BuildResult(name, "built", f"pipeline over {detector}")
    log(f"warning: skipping pipeline {name}: {reason}")
    return BuildResult(name, "skipped", reason)
