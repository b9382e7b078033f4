"""Build a model repository: export each model once, build its variants, write configs and manifests.

Each variant folder gets manifest.json (what it was built from, and the hash of every file it holds); a variant
whose manifest matches what would be built, and whose files are all there unchanged, is left as it is, so
`make repo` rebuilds only what changed. A variant is built in a staging folder beside the repository and renamed
into place, manifest last, so an interrupted or failed build leaves the old variant (or none) and never half of
one; a failed variant is reported and the others are built. One build at a time writes into a repository.
"""

from __future__ import annotations

import datetime
import fcntl
import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import signal
import tempfile
import tomllib
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from itertools import groupby
from pathlib import Path
from typing import Callable, Iterator

import torch

from trtrepo import __version__
from trtrepo.calibration import DEFAULT_CALIBRATION_IMAGES, CalibrationSet, calibration_set
from trtrepo.config import (
    CONFIG_FILE,
    LABELS_FILE,
    MANIFEST_FILE,
    SERVING_OPTION_TYPES,
    VERSION,
    ServingOptions,
    Variant,
    artifact_digest,
    engine_options,
    ensemble_config,
    file_digest,
    model_config,
    pipeline_config,
    read_config,
    read_manifest,
    write_config,
    write_labels,
)
from trtrepo.engines import ENGINES, BuildInputs, Engine, get_engine
from trtrepo.engines.pytorch import network_runner
from trtrepo.engines.tensorrt import installed_tensorrt
from trtrepo.errors import UserError
from trtrepo.export import export_onnx
from trtrepo.gate import (
    BELOW_GATE_PARAMETER,
    GATE_KEYS,
    EvaluationSet,
    Gate,
    GatePlan,
    GateReport,
    build_within_gate,
    evaluation_set,
    skip_reason,
)
from trtrepo.models import MODELS, get_model
from trtrepo.server import find_tritonserver
from trtrepo.specs import ModelSpec

#: A model folder name a plan may give a pipeline or ensemble: one path component, no hidden folder.
MODEL_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
DEFAULT_PLAN = Path("repo.toml")
RANDOM_SEED = 0
LIBRARIES = ("torch", "torchvision", "onnx", "onnxruntime", "polygraphy")
#: Changes when what a build writes changes, so that older builds are rebuilt once (2: zero-data warm-up; the
#: version folder's files and hashes in the manifest; 3: image input formats, classifiers' labels files).
BUILD_LAYOUT = 3
LOCK_FILE = ".trtrepo.lock"
#: Files an engine keeps in the version folder across rebuilds: TensorRT's tactic timings, which save build time
#: and decide no scale or weight. INT8 scales are calibrated in every build (trtrepo.quantization), so changed
#: weights or images can never meet old ones; a calibration.cache of older builds is left behind.
KEPT_ACROSS_REBUILDS = "timing.cache"
#: Below this much free disk a failed build says so.
LOW_DISK_BYTES = 512 << 20


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
    gate: GatePlan = GatePlan()
    #: [defaults]: the serving options of a variant the plan does not list.
    defaults: ServingOptions = ServingOptions()

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
    status: str  # built | up to date | skipped | rejected (below its accuracy gate) | failed
    detail: str = ""
    gate: str = ""  # the accuracy gate's verdict for a variant built now: PASS/BELOW with the measures, or why skipped


class BelowGate(Exception):
    """A variant that scored below its accuracy gate; it was set aside in the rejected folder."""

    def __init__(self, report: GateReport, where: Path) -> None:
        super().__init__(f"below its accuracy gate ({report.line()}); set aside in {where} with its report")


#: Keys a [[variant]] may set for its engine's build (Engine.build_options), across the engines.
BUILD_OPTION_KEYS = frozenset(key for engine in ENGINES.values() for key in engine.build_options)

#: The plan file's tables and the keys each takes (with their types); [[variant]] also takes the serving options.
PLAN_TABLES = {
    "repository": {"output": str, "weights": str, "backends": str, "calib_dir": str, "calib_images": int},
    "defaults": {},
    "variant": {"model": str, "engine": str, "precision": str},
    "pipeline": {"name": str, "detector": str},
    "ensemble": {"name": str, "steps": list},
    "gate": {"eval_dir": str, "eval_images": int, **{key: float for key in GATE_KEYS}},
}


def load_plan(
    path: Path | None = None,
    models: list[str] | None = None,
    weights: str | None = None,
    output: Path | None = None,
    backends: str | None = None,
    options: ServingOptions | None = None,
    calib_dir: Path | None = None,
    calib_images: int | None = None,
    eval_dir: Path | None = None,
    allow_below_gate: bool = False,
) -> RepoPlan:
    """Read repo.toml (or the built-in plan: every model through every engine at fp32) and apply overrides.

    Every table, key and value type is checked first: a wrong one is one line naming it, before anything is built.
    ``models`` naming a model that has split parts (ctpn) brings the parts and the ensembles over them too.
    """
    data: dict = {}
    plan_file = Path(path or DEFAULT_PLAN)
    if path is not None or DEFAULT_PLAN.is_file():
        try:
            data = tomllib.loads(plan_file.read_bytes().decode("utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise UserError(f"{plan_file}: cannot read plan: {exc}") from exc
        _check_plan(data, plan_file)
    repository = data.get("repository", {})
    defaults = options or _serving_options(data.get("defaults", {}), ServingOptions(), f"{plan_file} [defaults]")
    entries = data.get("variant") or [{"model": m, "engine": e, "precision": "fp32"} for m in MODELS for e in ENGINES]
    for name in models or []:
        get_model(name)  # unknown names fail here rather than building nothing
    ensembles_all = [(entry["name"], tuple(entry["steps"])) for entry in data.get("ensemble", [])]
    wanted = _with_split_parts(set(models), ensembles_all) if models else None
    variants = []
    for entry in entries:
        model, engine, precision = entry["model"], entry["engine"], entry["precision"]
        if wanted and model not in wanted:
            continue
        own = {k: v for k, v in entry.items() if k in SERVING_OPTION_TYPES}
        where = f"{plan_file} {model}_{engine}_{precision}"
        options = engine_options(get_engine(engine), _serving_options(own, defaults, where), where, kind_set="kind" in own)
        build = _build_options(get_engine(engine), {k: v for k, v in entry.items() if k in BUILD_OPTION_KEYS}, where)
        variants.append(Variant(model, engine, precision, options, build))
    if not variants:
        raise UserError(f"the plan has no variant for models {', '.join(models or [])}")
    plan_calib = repository.get("calib_dir")
    pipelines = [(entry["name"], entry["detector"]) for entry in data.get("pipeline", [])
                 if not wanted or Variant.parse(entry["detector"]).model in wanted]
    ensembles = [(name, steps) for name, steps in ensembles_all
                 if not wanted or name in wanted or any(Variant.parse(step).model in wanted for step in steps)]
    _check_model_names(plan_file, [v.name for v in variants], [name for name, _ in pipelines], [name for name, _ in ensembles])
    return RepoPlan(
        output=Path(output or repository.get("output", "model_repository")),
        weights=weights or repository.get("weights", "imagenet"),
        backends=resolve_backends(backends or repository.get("backends", "auto")),
        variants=tuple(variants),
        calib_dir=calib_dir or (Path(plan_calib) if plan_calib else None),
        calib_images=calib_images or repository.get("calib_images", DEFAULT_CALIBRATION_IMAGES),
        pipelines=tuple(pipelines),
        ensembles=tuple(ensembles),
        gate=_gate_plan(data.get("gate", {}), plan_file, eval_dir, allow_below_gate),
        defaults=defaults,
    )


def _build_options(engine: Engine, table: dict, where: str) -> tuple[tuple[str, str], ...]:
    """A variant's engine build options, each one the engine takes and one of its allowed values."""
    for key, value in table.items():
        allowed = engine.build_options.get(key)
        if allowed is None:
            takers = [name for name, known in ENGINES.items() if key in known.build_options]
            raise UserError(f"{where}: {key} is an option of the {' and '.join(takers)} engine, not of {engine.name}")
        if value not in allowed:
            raise UserError(f"{where}: {key} must be one of {', '.join(allowed)}, got {value!r}")
    return tuple(sorted(table.items()))


def _gate_plan(table: dict, plan_file: Path, eval_dir: Path | None, allow_below: bool) -> GatePlan:
    """[gate]: default thresholds and evaluation images; [gate.<model>]: that model's thresholds."""
    base = GatePlan()
    defaults = base.defaults.updated({k: v for k, v in table.items() if k in GATE_KEYS}, f"{plan_file} [gate]")
    per_model = []
    for model, own in table.items():
        if isinstance(own, dict):
            get_model(model)
            unknown = set(own) - set(GATE_KEYS)
            if unknown:
                raise UserError(f"{plan_file} [gate.{model}]: unknown keys {', '.join(sorted(unknown))}; known: {', '.join(GATE_KEYS)}")
            per_model.append((model, defaults.updated(own, f"{plan_file} [gate.{model}]")))
    plan_eval = table.get("eval_dir")
    return GatePlan(defaults, tuple(per_model), eval_dir or (Path(plan_eval) if plan_eval else None),
                    table.get("eval_images", base.eval_images), allow_below)


def _check_model_names(plan_file: Path, variants: list[str], pipelines: list[str], ensembles: list[str]) -> None:
    """Pipeline and ensemble names become folders of the repository: one plain folder name each, none taken twice
    (a pipeline named like its detector would overwrite it)."""
    taken = {name: "a variant" for name in variants}
    for kind, names in (("pipeline", pipelines), ("ensemble", ensembles)):
        for name in names:
            if not MODEL_NAME.fullmatch(name):
                raise UserError(f"{plan_file}: {kind} name {name!r} is not a model folder name (letters, digits, "
                                "_ . -, not starting with a dot or dash)")
            if name in taken:
                raise UserError(f"{plan_file}: {kind} name {name!r} is already {taken[name]}'s: pick another")
            taken[name] = f"a {kind}"


def _with_split_parts(models: set[str], ensembles: list[tuple[str, tuple[str, ...]]]) -> set[str]:
    """The models asked for, plus the parts of a model served split (ctpn -> ctpn_backbone, ctpn_head): the
    parts of each ensemble named after a model asked for (ctpn_split) or over one of its parts."""
    wanted = set(models)
    for name, steps in ensembles:
        parts = {Variant.parse(step).model for step in steps}
        if any(name.startswith(model + "_") for model in models) or parts & models:
            wanted |= parts
    return wanted


def _type_name(kind: type) -> str:
    return {str: "a string", int: "a whole number", float: "a number", bool: "true or false", list: "a list"}.get(kind, kind.__name__)


def _check_plan(data: dict, plan_file: Path) -> None:
    """Tables, keys and value types of a plan file, each problem one line naming where it is."""
    unknown = set(data) - set(PLAN_TABLES)
    if unknown:
        raise UserError(f"{plan_file}: unknown tables {', '.join(sorted(unknown))}; known: {', '.join(PLAN_TABLES)}")
    for table, keys in PLAN_TABLES.items():
        if table not in data:
            continue
        entries = data[table]
        is_array = table in ("variant", "pipeline", "ensemble")
        if is_array and not (isinstance(entries, list) and all(isinstance(e, dict) for e in entries)):
            raise UserError(f"{plan_file}: {table} must be an array of tables ([[{table}]])")
        if not is_array and not isinstance(entries, dict):
            raise UserError(f"{plan_file}: {table} must be a table ([{table}])")
        for index, entry in enumerate(entries if is_array else [entries]):
            where = f"{plan_file} [[{table}]] #{index + 1}" if is_array else f"{plan_file} [{table}]"
            if table == "variant":
                allowed = {**keys, **SERVING_OPTION_TYPES, **{key: str for key in BUILD_OPTION_KEYS}}
            elif table == "defaults":
                allowed = {**keys, **SERVING_OPTION_TYPES}
            else:
                allowed = keys
            extra = set(entry) - set(allowed)
            if table == "gate":  # [gate.<model>] subtables are checked with the thresholds
                extra = {key for key in extra if not isinstance(entry[key], dict)}
            if extra:
                raise UserError(f"{where}: unknown keys {', '.join(sorted(extra))}; known: {', '.join(sorted(allowed))}")
            missing = [key for key in keys if table not in ("repository", "gate") and key not in entry]
            if missing:
                raise UserError(f"{where}: lacks the key {missing[0]}")
            for key, kind in keys.items():
                kinds = (int, float) if kind is float else kind
                if key in entry and (not isinstance(entry[key], kinds) or isinstance(entry[key], bool) and kind is not bool):
                    raise UserError(f"{where}: {key} must be {_type_name(kind)}, got {entry[key]!r}")
            if table == "ensemble" and not (entry["steps"] and all(isinstance(step, str) for step in entry["steps"])):
                raise UserError(f"{where}: steps must be a list of variant names, got {entry['steps']!r}")
            for count in ("calib_images", "eval_images"):
                if table in ("repository", "gate") and count in entry and entry[count] < 1:
                    raise UserError(f"{where}: {count} must be at least 1, got {entry[count]}")


def _serving_options(table: dict, base: ServingOptions, where: str) -> ServingOptions:
    """``base`` with the table's serving keys applied, each checked against its type first."""
    known = set(SERVING_OPTION_TYPES)
    unknown = set(table) - known
    if unknown:
        raise UserError(f"{where}: unknown keys {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}")
    converted = {}
    for key, value in table.items():
        kind = SERVING_OPTION_TYPES[key]
        if kind is tuple:
            if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
                raise UserError(f"{where}: {key} must be a list of whole numbers, got {value!r}")
            value = tuple(value)
        elif not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
            raise UserError(f"{where}: {key} must be {_type_name(kind)}, got {value!r}")
        converted[key] = value
    try:
        return base.updated(**converted)
    except UserError as exc:
        raise UserError(f"{where}: {exc}") from None


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


def library_versions() -> dict[str, str]:
    """The versions of what builds depend on; TensorRT's as installed_tensorrt reads it (trtrepo validate compares
    each plan's with its target's)."""
    versions = {"trtrepo": __version__}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    if tensorrt := installed_tensorrt():
        versions["tensorrt"] = tensorrt
    return versions


def build_key(variant: Variant, weights: str, digest: str, native: bool, calibration: CalibrationSet | None,
              gate: dict | None = None) -> dict:
    """Everything a variant's files depend on; equal keys mean an identical rebuild (JSON-normalized)."""
    # Every build option, defaults filled in: a plan that drops an option it had set is a change back to the default,
    # not an up-to-date build. Engines without options keep the key they had.
    settings = get_engine(variant.engine).build_settings(variant.build_options)
    return json.loads(json.dumps({
        "gate": gate,
        "layout": BUILD_LAYOUT,
        "variant": variant.name,
        "engine": variant.engine,
        "precision": variant.precision,
        "weights": {"source": weights, "sha256": digest},
        "serving": asdict(variant.options),
        **({"build_options": settings} if settings else {}),
        "native_backend": native,
        "calibration": calibration.describe() if calibration and variant.precision == "int8" else None,
        "calibration_images": [str(p) for p in calibration.images] if calibration and variant.precision == "int8" else None,
        "versions": library_versions(),
    }))


def folder_files(model_dir: Path) -> dict[str, dict]:
    """Every file of a variant's version folder, and its labels file (relative path -> size and SHA-256). Not
    config.pbtxt, which `trtrepo config` edits in place by design."""
    paths = [*sorted((Path(model_dir) / VERSION).rglob("*")), Path(model_dir) / LABELS_FILE]
    return {str(path.relative_to(model_dir)): {"bytes": path.stat().st_size, "sha256": file_digest(path)}
            for path in paths if path.is_file()}


def files_intact(model_dir: Path, manifest: dict) -> bool:
    """Whether every file the manifest names is there with its hash (a manifest without the list: not intact)."""
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        return False
    for name, entry in files.items():
        path = Path(model_dir) / name
        if not path.is_file() or path.stat().st_size != entry.get("bytes") or file_digest(path) != entry.get("sha256"):
            return False
    return True


def staging_dir(repo_dir: Path) -> Path:
    """Beside the repository (same file system, so a rename publishes), never inside it: a server that loads
    every folder of the repository must not meet a half-built one."""
    repo_dir = Path(repo_dir).resolve()
    return repo_dir.parent / f".{repo_dir.name}.trtrepo-staging"


@contextmanager
def signals_deferred() -> Iterator[None]:
    """Ctrl-C, SIGTERM and SIGHUP wait until the block is done (they are delivered right after)."""
    blocked = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, blocked)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def publish(staged: Path, target: Path) -> None:
    """Put a fully built variant folder in place of the old one: two renames that no signal splits."""
    trash = staged.parent / f"{target.name}.old"  # the name recover_staging() puts back
    shutil.rmtree(trash, ignore_errors=True)
    with signals_deferred():
        if target.exists():
            os.rename(target, trash)
        os.rename(staged, target)
    shutil.rmtree(trash, ignore_errors=True)


def recover_staging(repo_dir: Path, log: Callable[[str], None]) -> None:
    """After a build that died between publish's two renames, put the old variant back; drop half-built ones."""
    staging = staging_dir(repo_dir)
    if not staging.is_dir():
        return
    for leftover in sorted(staging.iterdir()):
        target = Path(repo_dir) / leftover.name.removesuffix(".old")
        # Parked whole by publish's first rename; once its second rename is done the parked folder is only trash
        # (perhaps half deleted), and the variant in place stays.
        if leftover.name.endswith(".old") and not target.exists() and (leftover / CONFIG_FILE).is_file():
            os.rename(leftover, target)
            log(f"{target.name}: restored the previous build (the last build stopped while replacing it)")
        else:
            shutil.rmtree(leftover, ignore_errors=True)


@contextmanager
def repository_lock(repo_dir: Path) -> Iterator[None]:
    """One build at a time per repository: a second is refused at once, with one line."""
    path = Path(repo_dir) / LOCK_FILE
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"{repo_dir}: another trtrepo build is writing to this repository ({path} is locked); "
                            "wait for it to finish") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def rejected_dir(repo_dir: Path) -> Path:
    """Where variants below their accuracy gate are set aside with their reports: beside the repository, so no
    server loads them."""
    repo_dir = Path(repo_dir).resolve()
    return repo_dir.parent / f"{repo_dir.name}.rejected"


def build_variant(variant: Variant, inputs: BuildInputs, repo_dir: Path, native: bool, key: dict,
                  gate: Gate | None = None, allow_below_gate: bool = False) -> GateReport | None:
    """Write one variant's folder: 1/<artifact> (+ model.py for the Python backend), config.pbtxt, manifest.json.

    Built in the staging folder and published by rename, so the old variant stays whole until the new one is;
    TensorRT's timing cache in the old version folder is carried over. With a gate, the
    artifact is judged before it is published (mixed precision where it falls short and the engine can); below
    the gate it goes to the rejected folder instead (BelowGate), unless ``allow_below_gate`` publishes it marked.
    """
    engine = get_engine(variant.engine)
    model_dir = Path(repo_dir) / variant.name
    staging = staging_dir(repo_dir)
    staging.mkdir(exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix=f"{variant.name}.", dir=staging))
    staged.chmod(0o755)  # mkdtemp's 0700 would hide the published variant from a server running as another user
    try:
        version_dir = staged / VERSION
        version_dir.mkdir()
        for cache in (model_dir / VERSION).glob(KEPT_ACROSS_REBUILDS):
            shutil.copy2(cache, version_dir / cache.name)
        artifact = version_dir / engine.artifact
        report = None
        if gate is None:
            engine.build(inputs, variant.precision, artifact)
        else:
            device = "gpu" if variant.options.kind == "gpu" else "cpu"
            batch = min(variant.options.max_batch_size, 8)

            def judge(built: Path) -> GateReport:
                return gate.judge(engine.load(inputs.spec, built, variant.precision, device, os.cpu_count() or 1), batch)

            report = build_within_gate(engine, inputs, variant.precision, artifact, judge, inputs.log, variant.name)
        if not native:
            shutil.copyfile(Path(__file__).with_name("triton_model.py"), version_dir / "model.py")
        config = model_config(variant.name, inputs.spec, engine, variant.precision, native, variant.options)
        if report is not None and not report.passed:
            config.parameters[BELOW_GATE_PARAMETER].string_value = report.line()
        write_config(config, staged)
        write_labels(inputs.spec, staged)
        manifest = {**key, "onnx_sha256": file_digest(inputs.onnx_path), "artifact_sha256": artifact_digest(artifact),
                    "files": folder_files(staged),
                    "gate_result": report.as_dict() if report else None,
                    **({"engine_build": record} if (record := engine.build_record(artifact)) else {}),
                    "built_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
        (staged / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
        if report is not None and not report.passed and not allow_below_gate:
            aside = rejected_dir(repo_dir) / variant.name
            aside.parent.mkdir(exist_ok=True)
            (staged / "gate.json").write_text(json.dumps(report.as_dict(), indent=2) + "\n")
            publish(staged, aside)
            raise BelowGate(report, aside)
        publish(staged, model_dir)
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    return report


def _failure(variant: str, exc: Exception, where: Path) -> BuildResult:
    """A failed build as one line: the user's error as it is, anything else marked internal; low disk named."""
    message = str(exc) if isinstance(exc, UserError) else f"internal error: {exc.__class__.__name__}: {exc}"
    free = shutil.disk_usage(where).free
    if free < LOW_DISK_BYTES:
        message += f" (only {free >> 20} MB free on the disk of {where})"
    return BuildResult(variant, "failed", " ".join(message.split())[:500])


def build_repository(plan: RepoPlan, log: Callable[[str], None] = lambda _: None, force: bool = False) -> list[BuildResult]:
    """Build every variant of the plan that can be built here and is not up to date; say why for the rest.

    A variant that fails is reported (status failed, with the reason) and the others are built."""
    plan.output.mkdir(parents=True, exist_ok=True)
    with repository_lock(plan.output):
        recover_staging(plan.output, log)
        try:
            return _build_locked(plan, log, force)
        finally:
            shutil.rmtree(staging_dir(plan.output), ignore_errors=True)


def _build_locked(plan: RepoPlan, log: Callable[[str], None], force: bool) -> list[BuildResult]:
    results: list[BuildResult] = []
    calibration: CalibrationSet | None = None
    if any(v.precision == "int8" for v in plan.variants):
        calibration = calibration_set(plan.calib_dir, plan.calib_images)
        if not calibration.representative:
            log(f"warning: INT8 calibration on {len(calibration.images)} samples of {calibration.source}: not "
                "representative of your data; pass --calib-dir for a meaningful INT8 accuracy")
    evaluation: EvaluationSet | None = None
    with tempfile.TemporaryDirectory(prefix="trtrepo-export-") as scratch:
        if calibration is not None:
            calibration = calibration.kept_in(Path(scratch))
        for model, group in groupby(sorted(plan.variants, key=lambda v: v.model), key=lambda v: v.model):
            spec = get_model(model)
            todo = []
            for variant in group:
                engine = get_engine(variant.engine)
                engine.check_precision(variant.precision)
                reason = engine.not_applicable(spec) or engine.unavailable(variant.precision)
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
            thresholds = plan.gate.thresholds_for(model)
            onnx_path, gate = None, None
            for variant, native in todo:
                unjudged = skip_reason(spec, variant.engine, variant.precision, weights)
                if not unjudged and evaluation is None:
                    evaluation = evaluation_set(plan.gate.eval_dir, calibration, plan.gate.eval_images)
                    log(f"accuracy gate: judging variants against FP32 on {len(evaluation.samples)} samples of "
                        f"{evaluation.describe()['files']} images ({evaluation.source})")
                gate_key = None if unjudged else {
                    "thresholds": thresholds.for_task(spec.task), "evaluation": evaluation.describe(),
                    "samples": [str(sample) for sample in evaluation.samples], "allow_below": plan.gate.allow_below}
                key = build_key(variant, weights, digest, native, calibration, gate_key)
                model_dir = plan.output / variant.name
                manifest = read_manifest(model_dir)
                if not force and {k: manifest.get(k) for k in key} == key and files_intact(model_dir, manifest):
                    log(f"{variant.name}: up to date")
                    results.append(BuildResult(variant.name, "up to date"))
                    continue
                log(f"{variant.name}: building")
                try:
                    if onnx_path is None:
                        report = export_onnx(spec, network, Path(scratch) / f"{model}.onnx")
                        onnx_path = report.path
                        log(f"{model}: exported ONNX, parity with PyTorch max abs diff {report.max_abs_diff:.2e}")
                    if gate is None and not unjudged:
                        gate = Gate(spec, network_runner(spec, network), evaluation, thresholds)
                    inputs = BuildInputs(spec, network, onnx_path, variant.options.max_batch_size,
                                         variant.options.preferred_batch_sizes, calibration, log,
                                         build_options=variant.build_options)
                    judged = build_variant(variant, inputs, plan.output, native, key, None if unjudged else gate,
                                           plan.gate.allow_below)
                except BelowGate as exc:
                    log(f"error: {variant.name} rejected: {exc}" + ("; the previous build is kept" if model_dir.exists() else ""))
                    results.append(BuildResult(variant.name, "rejected", str(exc)))
                    continue
                except Exception as exc:  # recorded, and the other variants are built (Ctrl-C still stops the run)
                    failed = _failure(variant.name, exc, plan.output)
                    log(f"error: {variant.name} failed: {failed.detail}" + ("; the previous build is kept" if model_dir.exists() else ""))
                    results.append(failed)
                    continue
                results.append(BuildResult(variant.name, "built", gate=_gate_summary(judged, unjudged)))
                if judged is not None and not judged.passed:
                    log(f"warning: {variant.name} published below its accuracy gate ({judged.line()}), as --allow-below-gate asks")
    for name, detector in plan.pipelines:
        results.append(build_pipeline(name, detector, plan.output, plan.backends, log))
    for name, steps in plan.ensembles:
        results.append(build_ensemble(name, steps, plan.output, log))
    return results


def _gate_summary(report: GateReport | None, unjudged: str | None) -> str:
    """The build table's gate column: the measures against their thresholds, and nodes kept in float."""
    if report is None:
        return f"skipped: {unjudged}"
    floats = f"; {len(report.kept_in_float)} nodes kept in float" if report.kept_in_float else ""
    return f"{'PASS' if report.passed else 'BELOW'}: {report.line()}{floats}"


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
