"""Build a model repository: export each model once, build its variants, write their configs."""

from __future__ import annotations

import shutil
import tempfile
import tomllib
from dataclasses import dataclass, fields
from itertools import groupby
from pathlib import Path
from typing import Callable

from trtrepo.config import ServingOptions, Variant, model_config, write_config
from trtrepo.engines import ENGINES, get_engine
from trtrepo.errors import UserError
from trtrepo.export import export_onnx
from trtrepo.models import MODELS, get_model
from trtrepo.server import find_tritonserver

DEFAULT_PLAN = Path("repo.toml")
VERSION = "1"


@dataclass(frozen=True)
class RepoPlan:
    """What to build: the declarative repo.toml, with command-line overrides applied."""

    output: Path
    weights: str
    backends: frozenset[str]
    variants: tuple[Variant, ...]


def load_plan(
    path: Path | None = None,
    models: list[str] | None = None,
    weights: str | None = None,
    output: Path | None = None,
    backends: str | None = None,
    options: ServingOptions | None = None,
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
    defaults = _serving_options(data.get("defaults", {}), ServingOptions(), "defaults")
    if options is not None:
        defaults = options
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
    return RepoPlan(
        output=Path(output or repository.get("output", "model_repository")),
        weights=weights or repository.get("weights", "imagenet"),
        backends=resolve_backends(backends or repository.get("backends", "auto")),
        variants=tuple(variants),
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


def build_variant(variant: Variant, network: object, onnx_path: Path, repo_dir: Path, backends: frozenset[str]) -> Path:
    """Write one variant's folder: 1/<artifact> (+ model.py for the Python backend) and config.pbtxt."""
    spec = get_model(variant.model)
    engine = get_engine(variant.engine)
    engine.check_precision(variant.precision)
    native = engine.native_backend in backends
    if not native and "python" not in backends:
        raise UserError(f"{variant.name}: the server has neither the {engine.native_backend or engine.name} nor the python backend")
    model_dir = Path(repo_dir) / variant.name
    version_dir = model_dir / VERSION
    shutil.rmtree(model_dir, ignore_errors=True)
    version_dir.mkdir(parents=True)
    engine.build(network, onnx_path, variant.precision, version_dir / engine.artifact)
    if not native:
        shutil.copyfile(Path(__file__).with_name("triton_model.py"), version_dir / "model.py")
    write_config(model_config(variant.name, spec, engine, variant.precision, native, variant.options), model_dir)
    return model_dir


def build_repository(plan: RepoPlan, on_step: Callable[[str], None] = lambda _: None) -> list[Path]:
    """Export each model once, then build each of its variants into plan.output; returns the model folders."""
    plan.output.mkdir(parents=True, exist_ok=True)
    built = []
    with tempfile.TemporaryDirectory(prefix="trtrepo-export-") as scratch:
        for model, variants in groupby(sorted(plan.variants, key=lambda v: v.model), key=lambda v: v.model):
            spec = get_model(model)
            on_step(f"{model}: loading weights ({plan.weights}) and exporting ONNX")
            network = spec.build_network(plan.weights)
            report = export_onnx(spec, network, Path(scratch) / f"{model}.onnx")
            on_step(f"{model}: ONNX parity with PyTorch, max abs diff {report.max_abs_diff:.2e}")
            for variant in variants:
                on_step(f"{variant.name}: building")
                built.append(build_variant(variant, network, report.path, plan.output, plan.backends))
    return built
