"""The build plan (repo.toml): which variants, ensembles and pipelines to build, with what weights, gates and
serving options; every table and key checked before anything is built, each mistake one line naming its place."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from trtrepo.accuracy.measures import GATE_KEYS
from trtrepo.build.calibration import DEFAULT_CALIBRATION_IMAGES
from trtrepo.build.gate import GatePlan
from trtrepo.engines import ENGINES, Engine, get_engine
from trtrepo.errors import UserError
from trtrepo.format.config import SERVING_OPTION_TYPES, ServingOptions, Variant, engine_options
from trtrepo.models import MODELS, declared_models, get_model
from trtrepo.models.declaration import DECLARATION_KEYS, REQUIRED_KEYS, Declaration, parse_declaration
from trtrepo.serving.installation import find_tritonserver
from trtrepo.specs import RAW


#: A model folder name a plan may give a pipeline or ensemble: one path component, no hidden folder.
MODEL_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


DEFAULT_PLAN = Path("repo.toml")
#: The plan the package ships, the project's own repo.toml: what `trtrepo repo` builds where the working folder has
#: no repo.toml, so that it builds outside a checkout what it builds inside one.
PACKAGED_PLAN = Path(__file__).resolve().parent.parent / "repo.toml"
#: Where a [[pipeline]] may prepare its images (trtrepo/backend/pipeline.py); unset: by where its variant runs.
PIPELINE_PREPARE = ("host", "device")


@dataclass(frozen=True)
class PipelinePlan:
    """A [[pipeline]] entry: the BLS model ``name`` over the tensor ``variant``, with its own instance count (each an
    independent process preparing batches, so one prepares while another waits for the variant) and where it
    prepares images (None: on the device where its variant runs on a GPU, else on the host)."""

    name: str
    variant: str
    instances: int = 1
    prepare: str | None = None


@dataclass(frozen=True)
class RepoPlan:
    """What to build: the declarative repo.toml, with command-line overrides applied."""

    output: Path
    weights: str  # one choice for every model, or per model: "resnet50=random,efficientnet_lite0=imagenet"
    backends: frozenset[str]
    variants: tuple[Variant, ...]
    calib_dir: Path | None = None
    calib_images: int = DEFAULT_CALIBRATION_IMAGES
    pipelines: tuple[PipelinePlan, ...] = ()
    ensembles: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (ensemble name, the variants it chains)
    gate: GatePlan = GatePlan()
    #: [defaults]: the serving options of a variant the plan does not list.
    defaults: ServingOptions = ServingOptions()
    #: The file the plan was read from (None: made in code).
    plan_file: Path | None = None
    #: The models the plan declares ([[model]]), which its variants and pipelines may name.
    declared: tuple[Declaration, ...] = ()

    def weights_for(self, model: str) -> str:
        """The weights choice for ``model``: its own entry in a per-model list, else the single choice (a declared
        model's own weights where that is a pretrained set's name, or where a per-model list leaves it out)."""
        declared = model in {d.name for d in self.declared}
        if "=" not in self.weights:
            return "declared" if declared and self.weights in ("imagenet", "pretrained") else self.weights
        choices = dict(part.split("=", 1) for part in self.weights.split(",") if "=" in part)
        if declared and model not in choices:
            return "declared"
        if model not in choices:
            raise UserError(f"--weights {self.weights!r} names no weights for {model}")
        return choices[model]


#: Keys a [[variant]] may set for its engine's build (Engine.build_options), across the engines.
BUILD_OPTION_KEYS = frozenset(key for engine in ENGINES.values() for key in engine.build_options)


#: The plan file's tables and the keys each takes (with their types); [[variant]] also takes the serving options.
PLAN_TABLES = {
    "repository": {"output": str, "weights": str, "backends": str, "calib_dir": str, "calib_images": int},
    "defaults": {},
    "variant": {"model": str, "engine": str, "precision": str},
    "pipeline": {"name": str, "variant": str, "instances": int, "prepare": str},
    "ensemble": {"name": str, "steps": list},
    "gate": {"eval_dir": str, "eval_images": int, **{key: float for key in GATE_KEYS}},
    "model": DECLARATION_KEYS,
}
ARRAY_TABLES = ("variant", "pipeline", "ensemble", "model")

#: Keys of an array table's entries that may be left out (the others must be given).
OPTIONAL_KEYS = {"pipeline": ("instances", "prepare"), "model": tuple(set(DECLARATION_KEYS) - set(REQUIRED_KEYS))}


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
    declare: Path | None = None,
) -> RepoPlan:
    """Read the plan (``path``, else ./repo.toml, else the one the package ships) and apply overrides; ``declare``:
    a file of [[model]] tables declaring models beside the plan's own.

    Every table, key and value type is checked first: a wrong one is one line naming it, before anything is built.
    ``models`` naming a model that has split parts (ctpn) brings the parts and the ensembles over them too.
    """
    plan_file = Path(path) if path is not None else DEFAULT_PLAN if DEFAULT_PLAN.is_file() else PACKAGED_PLAN
    try:
        data = tomllib.loads(plan_file.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UserError(f"{plan_file}: cannot read plan: {exc}") from exc
    _check_plan(data, plan_file)
    entries = [(entry, f"{plan_file} [[model]] #{index + 1}", plan_file.parent) for index, entry in enumerate(data.get("model", []))]
    declared = _declarations(entries + (_declaration_file(declare) if declare else []), plan_file)
    with declared_models(declared):
        return _resolved_plan(data, plan_file, declared, models, weights, output, backends, options, calib_dir,
                              calib_images, eval_dir, allow_below_gate)


def _declaration_file(path: Path) -> list[tuple[dict, str, Path]]:
    """The [[model]] tables of a declaration file (--declare): a plan that holds nothing else, checked as one."""
    try:
        data = tomllib.loads(Path(path).read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UserError(f"{path}: cannot read the declaration: {exc}") from exc
    if set(data) != {"model"}:
        raise UserError(f"{path}: a declaration file holds [[model]] tables only, not "
                        f"{', '.join(sorted(set(data) - {'model'})) or 'nothing'}")
    _check_plan(data, Path(path))
    return [(entry, f"{path} [[model]] #{index + 1}", Path(path).parent) for index, entry in enumerate(data["model"])]


def _declarations(entries: list[tuple[dict, str, Path]], plan_file: Path) -> tuple[Declaration, ...]:
    """The [[model]] tables (each with where it is and the folder its files are relative to), each checked whole;
    a name may be declared once and not be a built-in model's."""
    declared = tuple(parse_declaration(entry, where, base) for entry, where, base in entries)
    seen: set[str] = set()
    for declaration in declared:
        if declaration.name in MODELS or declaration.name in seen:
            raise UserError(f"{plan_file}: [[model]] name {declaration.name!r} is taken (a built-in model, or declared "
                            "twice): pick another")
        if not MODEL_NAME.fullmatch(declaration.name):
            raise UserError(f"{plan_file}: [[model]] name {declaration.name!r} is not a model folder name (letters, "
                            "digits, _ . -, not starting with a dot or dash)")
        seen.add(declaration.name)
    return declared


def _resolved_plan(
    data: dict, plan_file: Path, declared: tuple[Declaration, ...], models: list[str] | None, weights: str | None,
    output: Path | None, backends: str | None, options: ServingOptions | None, calib_dir: Path | None,
    calib_images: int | None, eval_dir: Path | None, allow_below_gate: bool,
) -> RepoPlan:
    """load_plan past the checks, with the plan's declared models known."""
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
    pipelines = [_pipeline_plan(entry, plan_file) for entry in data.get("pipeline", [])
                 if not wanted or Variant.parse(entry["variant"]).model in wanted]
    raw = {d.name for d in declared if d.task == RAW}
    for pipeline in pipelines:
        if Variant.is_variant(pipeline.variant) and Variant.parse(pipeline.variant).model in raw:
            raise UserError(f"{plan_file} pipeline {pipeline.name}: {pipeline.variant} is a raw model's, which takes "
                            "tensors, not photos: it has no pipeline")
    ensembles = [(name, steps) for name, steps in ensembles_all
                 if not wanted or name in wanted or any(Variant.parse(step).model in wanted for step in steps)]
    _check_model_names(plan_file, [v.name for v in variants], [p.name for p in pipelines], [name for name, _ in ensembles])
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
        plan_file=plan_file,
        declared=declared,
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


def _pipeline_plan(entry: dict, plan_file: Path) -> PipelinePlan:
    """A [[pipeline]] entry, its instance count and prepare place checked (one line naming the pipeline)."""
    plan = PipelinePlan(entry["name"], entry["variant"], entry.get("instances", 1), entry.get("prepare"))
    if plan.instances < 1:
        raise UserError(f"{plan_file} pipeline {plan.name}: instances must be 1 or more, not {plan.instances}")
    if plan.prepare is not None and plan.prepare not in PIPELINE_PREPARE:
        raise UserError(f"{plan_file} pipeline {plan.name}: prepare must be one of {', '.join(PIPELINE_PREPARE)}, "
                        f"not {plan.prepare!r}")
    return plan


def _check_model_names(plan_file: Path, variants: list[str], pipelines: list[str], ensembles: list[str]) -> None:
    """Pipeline and ensemble names become folders of the repository: one plain folder name each, none taken twice
    (a pipeline named like its variant would overwrite it)."""
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


def _type_name(kind: type | tuple[type, ...]) -> str:
    if isinstance(kind, tuple):
        return " or ".join(_type_name(each) for each in kind)
    return {str: "a string", int: "a whole number", float: "a number", bool: "true or false", list: "a list"}.get(kind, kind.__name__)


def _is_a(value: object, kind: type | tuple[type, ...]) -> bool:
    """TOML's value is of the key's type (a whole number counts as a number; true and false only as true or false)."""
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool):
        return bool in kinds
    return isinstance(value, tuple(int if each is float else each for each in kinds) + kinds)


def _check_plan(data: dict, plan_file: Path) -> None:
    """Tables, keys and value types of a plan file, each problem one line naming where it is."""
    unknown = set(data) - set(PLAN_TABLES)
    if unknown:
        raise UserError(f"{plan_file}: unknown tables {', '.join(sorted(unknown))}; known: {', '.join(PLAN_TABLES)}")
    for table, keys in PLAN_TABLES.items():
        if table not in data:
            continue
        entries = data[table]
        is_array = table in ARRAY_TABLES
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
            missing = [key for key in keys if table not in ("repository", "gate") and key not in entry
                       and key not in OPTIONAL_KEYS.get(table, ())]
            if missing:
                raise UserError(f"{where}: lacks the key {missing[0]}")
            for key, kind in keys.items():
                if key in entry and not _is_a(entry[key], kind):
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
