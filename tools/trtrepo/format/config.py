"""config.pbtxt generation and editing through Triton's own protobuf schema, never string templates."""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator

from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2 as pb

from trtrepo.backend.pipeline_tasks import MAX_IMAGE_BYTES, MAX_IMAGE_BYTES_PARAMETER, MAX_IMAGE_PIXELS_PARAMETER, pipeline_task
from trtrepo.engines import Engine
from trtrepo.engines.base import graph_batch_sizes
from trtrepo.errors import UserError
from trtrepo.specs import MAX_IMAGE_PIXELS, ModelSpec, TensorSpec

if TYPE_CHECKING:
    from trtrepo.models.declaration import Declaration


CONFIG_FILE = "config.pbtxt"
#: What a variant was built from and the files it holds (written by trtrepo.build.repository, read by validate).
MANIFEST_FILE = "manifest.json"
#: The one version folder trtrepo writes per model.
VERSION = "1"
PYTHON_MODEL_FILE = "model.py"
#: A classifier's class names, one a line, in its model folder: its output's label_filename.
LABELS_FILE = "labels.txt"
#: The config parameter a variant published below its gate (--allow-below-gate) carries; validate warns on it.
BELOW_GATE_PARAMETER = "trtrepo_below_gate"
# Python-backend parameter: "no" hands inputs to the model where they lie (GPU memory for CUDA shared memory clients).
GPU_INPUTS_PARAMETER = "FORCE_CPU_ONLY_INPUT_TENSORS"
#: Python-backend parameter: the instance count, by which trtrepo's backend divides the cores among its instances.
#: Being a parameter, a new count reloads the model: Triton updates an instance-count-only change in place, which
#: would leave the running instances with the thread counts of the old count (two instances of two threads each on
#: two cores after going from one to two).
INSTANCES_PARAMETER = "instances"
#: The widths of model_config.proto's fields (max_batch_size and count are int32, the queue delay uint64).
INT32_MAX = 2**31 - 1
UINT64_MAX = 2**64 - 1
KINDS = {"cpu": pb.ModelInstanceGroup.KIND_CPU, "gpu": pb.ModelInstanceGroup.KIND_GPU, "auto": pb.ModelInstanceGroup.KIND_AUTO}


@dataclass(frozen=True)
class ServingOptions:
    """Scheduling settings of one model: the knobs a perf sweep turns."""

    max_batch_size: int = 8
    instances: int = 1
    kind: str = "cpu"
    gpus: tuple[int, ...] = ()
    preferred_batch_sizes: tuple[int, ...] = (4, 8)
    max_queue_delay_us: int = 2000
    warmup: bool = True
    cuda_graphs: bool = False
    #: Python backend only: execute() hands each batch to a worker thread and returns, so the instance takes the
    #: next batch while the GPU still runs the last (decoupled transaction policy; clients stream over gRPC).
    #: Native backends overlap batches on their own and ignore it.
    pipelined: bool = False

    def __post_init__(self) -> None:
        if not 1 <= self.max_batch_size <= INT32_MAX:
            raise UserError(f"max_batch_size must be 1 to {INT32_MAX}, got {self.max_batch_size}")
        if not 1 <= self.instances <= INT32_MAX:
            raise UserError(f"instances must be 1 to {INT32_MAX}, got {self.instances}")
        if any(not 0 <= gpu <= INT32_MAX for gpu in self.gpus):
            raise UserError(f"GPU ids must be 0 or more, got {list(self.gpus)}")
        if self.kind not in KINDS:
            raise UserError(f"instance kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        bad = [b for b in self.preferred_batch_sizes if not 1 <= b <= self.max_batch_size]
        if bad:
            raise UserError(f"preferred batch sizes {bad} lie outside 1..max_batch_size ({self.max_batch_size})")
        if not 0 <= self.max_queue_delay_us <= UINT64_MAX:
            raise UserError(f"max_queue_delay_us must be 0 to {UINT64_MAX}, got {self.max_queue_delay_us}")

    def updated(self, **changes: object) -> "ServingOptions":
        """A copy with the given fields changed; None values leave a field as it is."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


#: Each serving option's type as a plan file writes it (tuple: a list of whole numbers).
SERVING_OPTION_TYPES: dict[str, type] = {
    "max_batch_size": int, "instances": int, "kind": str, "gpus": tuple, "preferred_batch_sizes": tuple,
    "max_queue_delay_us": int, "warmup": bool, "cuda_graphs": bool, "pipelined": bool,
}


@dataclass(frozen=True)
class Variant:
    """One model built by one engine at one precision: a model folder named <model>_<engine>_<precision>."""

    model: str
    engine: str
    precision: str
    options: ServingOptions = field(default_factory=ServingOptions)
    #: The engine's build options the plan sets (Engine.build_options), as sorted (key, value) pairs.
    build_options: tuple[tuple[str, str], ...] = ()

    @property
    def name(self) -> str:
        return f"{self.model}_{self.engine}_{self.precision}"

    @property
    def baseline(self) -> str:
        """The variant this one is compared with: the same model in eager PyTorch at fp32 (the study's reference)."""
        return f"{self.model}_pytorch_fp32"

    @staticmethod
    def is_variant(name: str) -> bool:
        """Whether a model folder name reads as <model>_<engine>_<precision> with a known engine."""
        from trtrepo.engines import ENGINES

        parts = name.rsplit("_", 2)
        return len(parts) == 3 and all(parts) and parts[1] in ENGINES

    @classmethod
    def parse(cls, name: str) -> "Variant":
        """Split a model folder name <model>_<engine>_<precision> (the model part may hold underscores)."""
        parts = name.rsplit("_", 2)
        if len(parts) != 3 or not all(parts):
            raise UserError(f"{name!r} is not a variant name of the form <model>_<engine>_<precision>")
        return cls(*parts)


def kind_problem(engine: Engine, kinds: list[str]) -> str | None:
    """Why ``engine`` cannot run on instances of these kinds, or None (Triton's TensorRT backend refuses any kind
    but KIND_GPU: "TensorRT backend supports only GPU device")."""
    wrong = [kind for kind in kinds if kind not in engine.instance_kinds]
    if not wrong:
        return None
    return f"{engine.name} runs on {' or '.join(engine.instance_kinds)} instances only, not {', '.join(wrong)}"


def engine_options(engine: Engine, options: ServingOptions, where: str, kind_set: bool) -> ServingOptions:
    """``options`` for a variant of ``engine``: an instance kind the engine cannot run on is an error where the
    user chose it (``kind_set``), else it becomes the engine's own (TensorRT plans: gpu, whatever [defaults] say)."""
    problem = kind_problem(engine, [options.kind])
    if problem is None:
        return options
    if kind_set:
        raise UserError(f"{where}: {problem}; set kind = \"{engine.instance_kinds[0]}\"")
    return options.updated(kind=engine.instance_kinds[0])


def engine_of(config: pb.ModelConfig) -> Engine | None:
    """The engine a variant's config runs: the Python backend's engine parameter, or its native platform's."""
    from trtrepo.engines import ENGINES

    if config.backend == "python":
        engine = ENGINES.get(config.parameters["engine"].string_value) if "engine" in config.parameters else None
        return engine() if engine else None
    return next((engine() for engine in ENGINES.values() if config.platform and engine.native_platform == config.platform), None)


def instance_kind_problem(config: pb.ModelConfig) -> str | None:
    """Why the config's instance groups cannot load its engine, or None."""
    engine = engine_of(config)
    names = {value: name for name, value in KINDS.items()}
    kinds = [names.get(group.kind, pb.ModelInstanceGroup.Kind.Name(group.kind)) for group in config.instance_group]
    return kind_problem(engine, kinds) if engine else None


def model_config(name: str, spec: ModelSpec, engine: Engine, precision: str, native: bool, options: ServingOptions) -> pb.ModelConfig:
    """The config of one variant: native platform when the server has the engine's backend, else Python backend.
    An instance kind the engine cannot run on is a UserError (apply_serving_options)."""
    config = pb.ModelConfig(name=name)
    if native:
        config.platform = engine.native_platform or ""
        config.default_model_filename = engine.artifact
    else:
        config.backend = "python"
        for key, value in {"model": spec.name, "engine": engine.name, "precision": precision, "artifact": engine.artifact}.items():
            config.parameters[key].string_value = value
    add_declaration(config, spec)
    add_tensors(config, spec.inputs, spec.outputs)
    if spec.labelled_output:
        next(o for o in config.output if o.name == spec.labelled_output).label_filename = LABELS_FILE
    shapes = {t.name: spec.shape_range(t)[1] for t in spec.inputs}
    apply_serving_options(config, options, shapes)
    return config


def add_declaration(config: pb.ModelConfig, spec: ModelSpec) -> None:
    """A declared model's declaration in the config: the server's stubs and the clients read the model from it."""
    from trtrepo.models.declared import DECLARATION_PARAMETER

    if spec.declaration_json:
        config.parameters["model"].string_value = spec.name
        config.parameters[DECLARATION_PARAMETER].string_value = spec.declaration_json


def pipeline_config(name: str, spec: ModelSpec, variant: str, max_batch_size: int, on_gpu: bool = False,
                    prepare: str | None = None, instances: int = 1) -> pb.ModelConfig:
    """The BLS pipeline over a tensor variant: one encoded image (BYTES) per request and the task's optional
    options in; the task's answer out. Its dynamic batcher gathers up to the variant's batch limit of requests,
    which reach the variant as one batch (a plain request: a pipelined variant cannot be called, see
    trtrepo.format.validate.pipelined_variant_problem). Over a GPU variant its
    instances are on the GPU too, and images are decoded and prepared there (``prepare`` "device"; "host" elsewhere,
    see trtrepo/backend/pipeline.py)."""
    task = pipeline_task(spec)
    config = pb.ModelConfig(name=name, backend="python", max_batch_size=max_batch_size)
    config.dynamic_batching.SetInParent()
    config.parameters["model"].string_value = spec.name
    add_declaration(config, spec)
    config.parameters["variant"].string_value = variant
    config.parameters["prepare"].string_value = prepare or ("device" if on_gpu and task.on_device else "host")
    config.parameters[MAX_IMAGE_BYTES_PARAMETER].string_value = str(MAX_IMAGE_BYTES)
    config.parameters[MAX_IMAGE_PIXELS_PARAMETER].string_value = str(MAX_IMAGE_PIXELS)
    config.input.add(name="image", data_type=pb.TYPE_STRING, dims=[1])
    for option, _, _ in task.options:
        config.input.add(name=option.name, data_type=config_dtype(option), dims=[1], optional=True)
    add_tensors(config, (), task.outputs)
    config.instance_group.add(count=instances, kind=pb.ModelInstanceGroup.KIND_GPU if on_gpu else pb.ModelInstanceGroup.KIND_CPU)
    return config


def ensemble_config(name: str, steps: list[tuple[str, ModelSpec]], max_batch_size: int) -> pb.ModelConfig:
    """A Triton ensemble chaining models whose tensors connect by name (CTPN: backbone features -> head)."""
    config = pb.ModelConfig(name=name, platform="ensemble", max_batch_size=max_batch_size)
    add_tensors(config, steps[0][1].inputs, steps[-1][1].outputs)
    for model, spec in steps:
        step = config.ensemble_scheduling.step.add(model_name=model, model_version=-1)
        for tensor in spec.inputs:
            step.input_map[tensor.name] = tensor.name
        for tensor in spec.outputs:
            step.output_map[tensor.name] = tensor.name
    return config


def config_dtype(tensor: TensorSpec) -> int:
    """The tensor's data type as model_config.proto spells it (the protocol's BYTES is TYPE_STRING there)."""
    return pb.DataType.Value("TYPE_STRING" if tensor.triton_dtype == "BYTES" else f"TYPE_{tensor.triton_dtype}")


def add_tensors(config: pb.ModelConfig, inputs: tuple[TensorSpec, ...], outputs: tuple[TensorSpec, ...]) -> None:
    """The config's inputs and outputs from tensor specs; image inputs declare their layout (format)."""
    for tensor in inputs:
        config.input.add(name=tensor.name, data_type=config_dtype(tensor), dims=list(tensor.shape),
                         format=pb.ModelInput.Format.Value(f"FORMAT_{tensor.image_format or 'NONE'}"))
    for tensor in outputs:
        config.output.add(name=tensor.name, data_type=config_dtype(tensor), dims=list(tensor.shape))


def write_labels(spec: ModelSpec, model_dir: Path) -> None:
    """A classifier's labels file (class names, one a line) into its model folder, where its config names it."""
    if spec.labelled_output:
        (Path(model_dir) / LABELS_FILE).write_text("".join(f"{name}\n" for name in spec.class_names))


def apply_serving_options(config: pb.ModelConfig, options: ServingOptions, warmup_shapes: dict | None = None) -> None:
    """Set batching, instance group and warm-up from ``options``, replacing what the config had.

    Warm-up needs a concrete shape for variable (-1) dimensions: ``warmup_shapes``, else the config's previous
    warm-up; without either such a model gets none.
    """
    previous = {name: tuple(i.dims) for w in config.model_warmup for name, i in w.inputs.items()}
    shapes = {t.name: (warmup_shapes or previous).get(t.name, tuple(t.dims)) for t in config.input}
    config.max_batch_size = options.max_batch_size
    config.dynamic_batching.Clear()
    config.dynamic_batching.preferred_batch_size.extend(options.preferred_batch_sizes)
    config.dynamic_batching.max_queue_delay_microseconds = options.max_queue_delay_us
    del config.instance_group[:]
    config.instance_group.add(count=options.instances, kind=KINDS[options.kind], gpus=list(options.gpus))
    if config.backend == "python":
        config.parameters[INSTANCES_PARAMETER].string_value = str(options.instances)
    if config.backend == "python" and options.kind == "gpu":
        config.parameters[GPU_INPUTS_PARAMETER].string_value = "no"
    elif GPU_INPUTS_PARAMETER in config.parameters:
        del config.parameters[GPU_INPUTS_PARAMETER]
    if config.backend == "python":
        if options.pipelined:
            config.model_transaction_policy.decoupled = True
        else:
            config.ClearField("model_transaction_policy")
    problem = instance_kind_problem(config)
    if problem:
        raise UserError(f"{config.name}: {problem}")
    if options.cuda_graphs:
        config.optimization.cuda.graphs = True
        config.optimization.cuda.ClearField("graph_spec")
        if config.platform == "tensorrt_plan":
            add_graph_specs(config, shapes)
    elif config.HasField("optimization"):  # drop only the flag and its specs, and messages they leave empty
        config.optimization.cuda.ClearField("graphs")
        config.optimization.cuda.ClearField("graph_spec")
        if not config.optimization.cuda.ListFields():
            config.optimization.ClearField("cuda")
        if not config.optimization.ListFields():
            config.ClearField("optimization")
    del config.model_warmup[:]
    if options.warmup and all(d > 0 for shape in shapes.values() for d in shape):
        # With CUDA graphs, one warm-up per captured batch size: the first batch of a size captures its graph, which
        # would otherwise stall the first requests of that size, in the middle of whatever is being measured.
        for size in graph_batch_sizes(json_format.MessageToDict(config, preserving_proto_field_name=True)) or (1,):
            add_warmup(config, size, shapes)


def add_graph_specs(config: pb.ModelConfig, shapes: dict) -> None:
    """Explicit CUDA graphs for a TensorRT plan: one per batch size the dynamic batcher aims at (graph_batch_sizes),
    each also serving the smaller batches down to the graph below it (graph_lower_bound: the batch is padded up).

    Without specs, Triton's TensorRT backend captures batch 1, the preferred sizes and the maximum, at the profile's
    OPT shape, and uses a graph only for a batch of exactly its size (tensorrt_backend InitializeGraphSpecs). Every
    spec names every input with its shape, as the lower bound does: the backend looks a lower bound's inputs up
    without checking that they are there. Inputs whose shape varies (-1) get the backend's defaults."""
    if any(d <= 0 for tensor in config.input for d in shapes[tensor.name]):
        return
    sizes = graph_batch_sizes(json_format.MessageToDict(config, preserving_proto_field_name=True))
    for lower, size in zip((0, *sizes), sizes):
        spec = config.optimization.cuda.graph_spec.add(batch_size=size)
        spec.graph_lower_bound.batch_size = lower + 1
        for tensor in config.input:
            spec.input[tensor.name].dim.extend(shapes[tensor.name])
            spec.graph_lower_bound.input[tensor.name].dim.extend(shapes[tensor.name])


def add_warmup(config: pb.ModelConfig, batch_size: int, shapes: dict) -> None:
    """One warm-up request of ``batch_size`` all-zero samples with the given per-sample input shapes. Zeros, not
    Triton's random_data: random bits read as floats hold NaN and infinities, which no model should see at load."""
    warmup = config.model_warmup.add(name=f"zero_batch_{batch_size}", batch_size=batch_size, count=1)
    for tensor in config.input:
        warmup.inputs[tensor.name].CopyFrom(
            pb.ModelWarmup.Input(data_type=tensor.data_type, dims=shapes[tensor.name], zero_data=True))


def serving_options_of(config: pb.ModelConfig) -> ServingOptions:
    """Read the scheduling settings back out of a config (inverse of apply_serving_options)."""
    group = config.instance_group[0] if config.instance_group else pb.ModelInstanceGroup(count=1)
    kind = {v: k for k, v in KINDS.items()}.get(group.kind, "auto")
    return ServingOptions(
        max_batch_size=config.max_batch_size,
        instances=max(group.count, 1),
        kind=kind,
        gpus=tuple(group.gpus),
        preferred_batch_sizes=tuple(config.dynamic_batching.preferred_batch_size),
        max_queue_delay_us=config.dynamic_batching.max_queue_delay_microseconds,
        warmup=bool(config.model_warmup),
        cuda_graphs=config.optimization.cuda.graphs,
        pipelined=is_decoupled(config),
    )


def is_decoupled(config: pb.ModelConfig) -> bool:
    """Whether the model answers through response senders (a pipelined Python model): clients must stream."""
    return config.model_transaction_policy.decoupled


def runs_on_gpu(config: pb.ModelConfig) -> bool:
    """Whether the model's instances are placed on GPUs."""
    return any(group.kind == pb.ModelInstanceGroup.KIND_GPU for group in config.instance_group)


def read_config(path: Path) -> pb.ModelConfig:
    """Parse a config.pbtxt against the schema; a syntax or field error becomes one line with the path."""
    path = Path(path)
    try:
        return text_format.Parse(path.read_bytes().decode("utf-8"), pb.ModelConfig())
    except text_format.ParseError as exc:
        raise UserError(f"{path}:{exc}") from exc
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not a text config (byte {exc.start} is not UTF-8)") from exc
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror})") from exc


def write_config(config: pb.ModelConfig, model_dir: Path) -> Path:
    """config.pbtxt written to a temporary file and renamed over the old one: never half a config."""
    import os
    import tempfile

    path = Path(model_dir) / CONFIG_FILE
    descriptor, temporary = tempfile.mkstemp(prefix=".config.", suffix=".pbtxt", dir=model_dir)
    try:
        with os.fdopen(descriptor, "w") as file:
            file.write(text_format.MessageToString(config))
        os.chmod(temporary, 0o644)  # mkstemp's 0600 would hide it from a server running as another user
        os.replace(temporary, path)
    finally:
        Path(temporary).unlink(missing_ok=True)
    return path


def config_from_json(text: str) -> pb.ModelConfig:
    """Triton returns configs as JSON (HTTP model config endpoint); parse that into the schema."""
    return json_format.Parse(text, pb.ModelConfig(), ignore_unknown_fields=True)


def config_to_json(config: pb.ModelConfig) -> str:
    """The form the repository API's load request takes as a config override."""
    return json_format.MessageToJson(config, preserving_proto_field_name=True)


def config_from_metadata(metadata: dict) -> pb.ModelConfig:
    """A model's tensors from its metadata (an open API), as a config where the server restricts configs.

    What metadata does not say stays unset: max_batch_size 0 (batch sizes are then not capped here; the server
    still refuses too large a batch), not decoupled. Dims include the batch axis, as metadata gives them."""
    config = pb.ModelConfig(name=metadata.get("name", ""), platform=metadata.get("platform", ""))
    for entries, target in ((metadata.get("inputs", []), config.input), (metadata.get("outputs", []), config.output)):
        for entry in entries:
            datatype = "STRING" if entry["datatype"] == "BYTES" else entry["datatype"]
            target.add(name=entry["name"], data_type=pb.DataType.Value(f"TYPE_{datatype}"),
                       dims=[int(d) for d in entry.get("shape", [])])
    return config


def artifact_of(repo: Path, variant: str, config: pb.ModelConfig) -> Path:
    """The engine artifact a variant's config points at (Python-backend parameter or native default file name):
    a file, or a folder for engines whose artifact is one (a TensorFlow SavedModel)."""
    name = config.parameters["artifact"].string_value if "artifact" in config.parameters else config.default_model_filename
    path = Path(repo) / variant / VERSION / name
    if not name or not path.exists():
        raise UserError(f"{variant}: engine file {path} not found; rebuild with `trtrepo repo`")
    return path


def file_digest(path: Path) -> str:
    """SHA-256 of a file, read in blocks: the hash manifests list for each file a variant holds."""
    import hashlib

    digest = hashlib.sha256()
    with Path(path).open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def artifact_digest(path: Path) -> str:
    """SHA-256 of an artifact: of the file, or, for a folder, of each file's relative path and digest in order."""
    import hashlib

    path = Path(path)
    if not path.is_dir():
        return file_digest(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(f"{file.relative_to(path).as_posix()}\0{file_digest(file)}\n".encode())
    return digest.hexdigest()


def read_manifest(model_dir: Path) -> dict:
    """A variant's manifest.json, or {} where it is missing or unreadable (a variant trtrepo did not build)."""
    try:
        manifest = json.loads((Path(model_dir) / MANIFEST_FILE).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return manifest if isinstance(manifest, dict) else {}


@contextmanager
def repository_models(repository: str | Path) -> Iterator[None]:
    """get_model knows the models declared in a local repository's configs for the block: the commands that work
    on a built repository (perf, bench, tune, soak, eval, compare) serve a declared model without its plan."""
    from trtrepo.models import declared_models

    configs = [config for _, config in readable_configs(Path(repository))] if Path(repository).is_dir() else []
    with declared_models(declarations_in(configs)):
        yield


def declarations_in(configs: Iterable[pb.ModelConfig]) -> list["Declaration"]:
    """The declarations the configs carry (a declared model's variants and pipelines), one per model."""
    from trtrepo.models.declaration import Declaration
    from trtrepo.models.declared import DECLARATION_PARAMETER

    found = {}
    for config in configs:
        if DECLARATION_PARAMETER in config.parameters and (text := config.parameters[DECLARATION_PARAMETER].string_value):
            declaration = Declaration.from_json(text)
            found[declaration.name] = declaration
    return list(found.values())


def readable_configs(repo: Path) -> Iterator[tuple[Path, pb.ModelConfig]]:
    """Each model folder of ``repo`` with its parsed config; folders whose config does not parse are left to
    validate_repository, which reports them."""
    for config_path in sorted(Path(repo).glob(f"*/{CONFIG_FILE}")):
        try:
            config = read_config(config_path)
        except UserError:
            continue
        yield config_path.parent, config


def repository_pipelines(repository: Path) -> dict[str, str]:
    """The repository's pipelines (BLS models over a tensor variant, pipeline_config): name -> the variant."""
    configs = {p.name: read_config(p / CONFIG_FILE) for p in sorted(Path(repository).iterdir()) if (p / CONFIG_FILE).is_file()}
    return {name: config.parameters["variant"].string_value for name, config in configs.items() if "variant" in config.parameters}


def repository_variants(repository: Path, chosen: list[str] | None = None) -> list[str]:
    """The variants named, else every <model>_<engine>_<precision> folder of the repository (not pipelines)."""
    if chosen:
        return chosen
    folders = sorted(p.name for p in Path(repository).iterdir() if (p / CONFIG_FILE).is_file()) if Path(repository).is_dir() else []
    found = [name for name in folders if Variant.is_variant(name)]
    if not found:
        raise UserError(f"{repository}: no models; build them with `trtrepo repo`")
    return found
