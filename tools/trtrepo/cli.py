"""trtrepo: the one front door. Export, build, assemble, check, serve and measure a Triton model repository."""

from __future__ import annotations

from contextlib import ExitStack, contextmanager
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Callable, Iterator, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from trtrepo.access import Endpoint
from trtrepo.engines import ENGINES
from trtrepo.engines.tensorrt import TARGET_TENSORRT, TARGET_TRITON, installed_tensorrt
from trtrepo.errors import UserError, run_app
from trtrepo.objectstore import is_remote

if TYPE_CHECKING:
    from trtrepo.access import ServerOptions
    from trtrepo.server import Ports, TritonServer

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__, rich_markup_mode=None)
console = Console(stderr=True)
REPOSITORY = Path("model_repository")
# All work offline; EfficientNet-Lite0's and YOLOv3-tiny's pretrained weights ship with the install: real labels.
DEMO_WEIGHTS = "resnet50=random,efficientnet_lite0=pretrained,yolov3_tiny=pretrained"
DEMO_MODELS = "resnet50,efficientnet_lite0,yolov3_tiny"

WeightsOption = Annotated[
    Optional[str],
    typer.Option(help="pretrained (ImageNet or COCO), random, or a weights PATH; per model as resnet50=random,yolov3_tiny=pretrained. "
                      "Default: the plan's."),
]
RepoOption = Annotated[Path, typer.Option("--model-repository", "--repo", help="Model repository folder.")]
ApiKeyOption = Annotated[Optional[str], typer.Option(
    envvar="TRTREPO_API_KEY", show_envvar=True,
    help="Key of a server whose restricted APIs (model loading, shared memory, trace, logging) need one; servers that "
         "trtrepo starts on this machine are found without it.")]
VariantsOption = Annotated[Optional[str], typer.Option(help="Comma-separated variants (default: every model in the repository).")]
MpsOption = Annotated[bool, typer.Option(
    "--mps", help="Run the servers this command starts under CUDA's Multi-Process Service (a daemon started for the "
                  "command and told to quit after it; one already running is used), so that a GPU model's instances, "
                  "each a process, run on the GPU at once instead of taking turns. Pays where one request does not "
                  "fill the GPU (H200, CTPN: four instances 2.3x one with MPS, 1.35x without). Needs "
                  "nvidia-cuda-mps-control.")]


# Built from the registry, so that registering an engine is all it takes to offer it here.
Engine = Enum("Engine", {name: name for name in ENGINES}, type=str)


# trtrepo tune's choices (perf.tune.STRATEGIES and OBJECTIVES; not imported from there: it brings the config schema).
Strategy = Enum("Strategy", {name: name for name in ("quick", "brute", "optuna")}, type=str)
Objective = Enum("Objective", {name: name for name in ("throughput", "latency", "cost")}, type=str)


class Precision(str, Enum):
    fp32 = "fp32"
    fp16 = "fp16"
    bf16 = "bf16"
    int8 = "int8"


class Kind(str, Enum):
    cpu = "cpu"
    gpu = "gpu"
    auto = "auto"


class ServiceKind(str, Enum):
    triton = "triton"
    tfserving = "tfserving"


class ModelControl(str, Enum):
    none = "none"
    poll = "poll"
    explicit = "explicit"


def say(message: str) -> None:
    """A line on stderr as it is (no rich markup: server messages hold brackets)."""
    console.print(message, markup=False, highlight=False)


def int_list(text: str, what: str, least: int = 1) -> list[int]:
    """'1,2,4' -> [1, 2, 4], each at least ``least``; anything else is a one-line error."""
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UserError(f"{what} must be comma-separated whole numbers, got {text!r}") from None
    if not values or min(values) < least:
        raise UserError(f"{what} must be whole numbers of at least {least}, got {text!r}")
    return values


def name_list(text: str | None) -> list[str] | None:
    return [part.strip() for part in text.split(",") if part.strip()] if text else None


def progress() -> Progress:
    """A progress bar on a terminal; elsewhere (logs, pipes) only the lines printed through it."""
    return Progress(
        SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console, transient=False, disable=not console.is_terminal,
    )


@app.command()
def export(
    model: Annotated[str, typer.Argument(help="Model name, e.g. resnet50.")],
    output: Annotated[Path, typer.Option(help="ONNX file to write.")],
    weights: Annotated[str, typer.Option(help="pretrained, random, or a weights PATH.")] = "pretrained",
) -> None:
    """PyTorch -> ONNX with a dynamic batch axis, checked by onnx.checker and by parity with PyTorch."""
    from trtrepo.export import export_onnx
    from trtrepo.models import get_model

    spec = get_model(model)
    report = export_onnx(spec, spec.build_network(weights), output)
    print(f"{report.path}: ONNX Runtime vs PyTorch max abs diff {report.max_abs_diff:.2e}")


CalibDirOption = Annotated[
    Optional[Path], typer.Option(help="Images for INT8 calibration: a folder (searched recursively) or a file listing paths.")
]
CalibImagesOption = Annotated[Optional[int], typer.Option(min=1, help="How many calibration images to use (default 64).")]
EvalDirOption = Annotated[Optional[Path], typer.Option(
    help="Images the accuracy gate judges reduced-precision variants on against FP32 (a folder or a file list; "
         "calibration images are left out). Default: the plan's, else photos shipped with installed packages.")]
AllowBelowGateOption = Annotated[bool, typer.Option(
    help="Publish a variant that scores below its accuracy gate anyway; its config says so and `trtrepo validate` "
         "warns. Without it such a variant is set aside in <repository>.rejected/ with its report.")]


@app.command()
def build(
    model: Annotated[str, typer.Argument(help="Model name, e.g. resnet50.")],
    engine: Annotated[Engine, typer.Option(help="Inference engine of the variant.")] = Engine.onnxruntime,
    precision: Annotated[Precision, typer.Option(help="Numeric precision of the variant.")] = Precision.fp32,
    weights: WeightsOption = None,
    output: Annotated[Path, typer.Option(help="Model repository to write the variant into.")] = REPOSITORY,
    backends: Annotated[Optional[str], typer.Option(help="Backends of the target server: auto, or e.g. python,onnxruntime.")] = None,
    calib_dir: CalibDirOption = None,
    calib_images: CalibImagesOption = None,
    eval_dir: EvalDirOption = None,
    allow_below_gate: AllowBelowGateOption = False,
) -> None:
    """Build one variant <model>_<engine>_<precision> into the repository (serving defaults from repo.toml),
    judged by the accuracy gate before it is published."""
    from dataclasses import replace

    from trtrepo.config import Variant, engine_options
    from trtrepo.engines import get_engine
    from trtrepo.models import get_model
    from trtrepo.repository import build_repository, load_plan

    chosen = get_engine(engine.value)
    chosen.check_precision(precision.value)
    reason = chosen.not_applicable(get_model(model)) or chosen.unavailable(precision.value)
    if reason:
        raise UserError(f"cannot build {model}_{engine.value}_{precision.value}: {reason}")
    plan = load_plan(models=[model], weights=weights, output=output, backends=backends, calib_dir=calib_dir,
                     calib_images=calib_images, eval_dir=eval_dir, allow_below_gate=allow_below_gate)
    planned = {(v.engine, v.precision): v for v in plan.variants}
    variant = planned.get((engine.value, precision.value)) or Variant(
        model, engine.value, precision.value, engine_options(chosen, plan.defaults, "", kind_set=False))
    (result,) = build_repository(replace(plan, variants=(variant,), pipelines=(), ensembles=()), console.print, force=True)
    if result.status in ("failed", "rejected"):
        raise UserError(f"{variant.name}: {result.detail}")
    print(f"built {plan.output / variant.name} (gate {result.gate})")


@app.command()
def repo(
    plan: Annotated[Optional[Path], typer.Option(help="Declarative plan; default ./repo.toml if present.")] = None,
    models: Annotated[Optional[str], typer.Option(help="Comma-separated models to build (default: all in the plan).")] = None,
    weights: WeightsOption = None,
    output: Annotated[Optional[Path], typer.Option(help="Repository folder (default: the plan's, model_repository).")] = None,
    backends: Annotated[Optional[str], typer.Option(help="auto (ask the local tritonserver) or e.g. python,onnxruntime,tensorrt.")] = None,
    calib_dir: CalibDirOption = None,
    calib_images: CalibImagesOption = None,
    eval_dir: EvalDirOption = None,
    allow_below_gate: AllowBelowGateOption = False,
    force: Annotated[bool, typer.Option(help="Rebuild variants whose manifest says they are up to date.")] = False,
) -> None:
    """Build every variant of the plan that this machine can build and that changed; judge each reduced-precision
    variant against FP32 (the accuracy gate) before publishing it; validate the result."""
    from trtrepo.repository import build_repository, load_plan
    from trtrepo.validate import validate_repository

    repo_plan = load_plan(plan, name_list(models), weights, output, backends, calib_dir=calib_dir, calib_images=calib_images,
                          eval_dir=eval_dir, allow_below_gate=allow_below_gate)
    console.print(f"building {len(repo_plan.variants)} variants into {repo_plan.output} "
                  f"(weights {repo_plan.weights}; server backends: {', '.join(sorted(repo_plan.backends)) or 'none'})")
    with progress() as bar:
        task = bar.add_task("building", total=len(repo_plan.variants))

        def step(message: str) -> None:
            bar.console.print(f"  {message}", markup=False, highlight=False)
            if message.endswith((": building", ": up to date")) or message.startswith("warning: skipping"):
                bar.advance(task)

        results = build_repository(repo_plan, step, force)
    for status in ("built", "up to date", "skipped", "rejected", "failed"):
        names = [r.variant for r in results if r.status == status]
        if names:
            print(f"{status}: {', '.join(names)}")
    judged = [r for r in results if r.gate]
    if judged:
        print("\naccuracy gate (against the FP32 network):")
        for result in judged:
            print(f"  {result.variant}: {result.gate}")
    failed = [r for r in results if r.status in ("failed", "rejected")]
    if failed:
        raise UserError(f"{len(failed)} of {len(results)} variants failed or fell below their accuracy gate "
                        "(previous builds kept): " + "; ".join(f"{r.variant}: {r.detail}" for r in failed))
    problems = validate_repository(repo_plan.output, installed_tensorrt() or TARGET_TENSORRT)
    if problems:
        raise UserError(f"built repository fails validation: {problems[0]}")


@app.command()
def config(
    model_dir: Annotated[Path, typer.Argument(help="A model folder holding config.pbtxt.")],
    instances: Annotated[Optional[int], typer.Option(min=1, help="Model instances per group.")] = None,
    kind: Annotated[Optional[Kind], typer.Option(help="Instance kind.")] = None,
    gpus: Annotated[Optional[str], typer.Option(help="Comma-separated GPU ids for KIND_GPU, e.g. 0,1.")] = None,
    max_batch_size: Annotated[Optional[int], typer.Option(min=1, help="Largest batch the model accepts.")] = None,
    preferred_batch_sizes: Annotated[Optional[str], typer.Option(help="Dynamic batcher's preferred sizes, e.g. 4,8.")] = None,
    max_queue_delay_us: Annotated[Optional[int], typer.Option(min=0, help="Longest wait to fill a batch, in microseconds.")] = None,
    warmup: Annotated[Optional[bool], typer.Option("--warmup/--no-warmup", help="Warm the model up with a random batch at load.")] = None,
    pipelined: Annotated[Optional[bool], typer.Option(
        "--pipelined/--no-pipelined",
        help="Python backend: take the next batch while the GPU runs the last (decoupled; clients use gRPC).")] = None,
) -> None:
    """Change a model's instance group, dynamic batching or warm-up in place; prints the resulting config."""
    from google.protobuf import text_format

    from trtrepo.config import CONFIG_FILE, apply_serving_options, read_config, serving_options_of, write_config

    current = read_config(model_dir / CONFIG_FILE)
    options = serving_options_of(current).updated(
        instances=instances,
        kind=kind.value if kind else None,
        gpus=tuple(int_list(gpus, "--gpus")) if gpus else None,
        max_batch_size=max_batch_size,
        preferred_batch_sizes=tuple(int_list(preferred_batch_sizes, "--preferred-batch-sizes")) if preferred_batch_sizes else None,
        max_queue_delay_us=max_queue_delay_us,
        warmup=warmup,
        pipelined=pipelined,
    )
    apply_serving_options(current, options)
    write_config(current, model_dir)
    print(text_format.MessageToString(current), end="")


@app.command()
def push(
    repository: Annotated[Path, typer.Argument(help="Local model repository folder.")],
    destination: Annotated[str, typer.Argument(
        help="s3://bucket/prefix, or s3://http://HOST:PORT/bucket/prefix for an S3-compatible store.")],
    endpoint_url: Annotated[Optional[str], typer.Option(
        help="Endpoint of an S3-compatible store (MinIO, Ceph, moto), e.g. http://127.0.0.1:9000.")] = None,
) -> None:
    """Upload a model repository to S3 or an S3-compatible store, for servers that read it from there: only files
    whose SHA-256 changed since the last push; files the repository no longer holds are deleted. The repository
    is validated first. Credentials and region come from the AWS_* environment variables, as Triton reads them."""
    from trtrepo.objectstore import S3Location, push as push_repository
    from trtrepo.validate import validate_repository

    problems = validate_repository(repository, installed_tensorrt() or TARGET_TENSORRT)
    if problems:
        raise UserError(f"not pushed: {problems[0]}" + (f" (and {len(problems) - 1} more: trtrepo validate)" if problems[1:] else ""))
    location = S3Location.parse(destination, endpoint_url)
    report = push_repository(repository, location, lambda message: console.print(f"  {message}", markup=False))
    print(f"{location.triton_url}: {report.line()}")
    print(f"serve it: trtrepo serve --model-repository {location.triton_url}")


deploy_app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                         help="Deployment manifests for servers that read a model repository from object storage.")
app.add_typer(deploy_app, name="deploy")


@deploy_app.command("k8s")
def deploy_k8s(
    repository: Annotated[str, typer.Option(
        help="Where the pods read the repository: s3://bucket/prefix (or gs://, as://), as `trtrepo push` printed it.")],
    replicas: Annotated[int, typer.Option(min=1, help="Servers to start with (the autoscaler's minimum).")] = 2,
    max_replicas: Annotated[Optional[int], typer.Option(min=1, help="The autoscaler's maximum (default 4x replicas).")] = None,
    gpus_per_replica: Annotated[Optional[int], typer.Option(
        min=0, help="nvidia.com/gpu per pod. Default: 1 where any model's instances are GPU ones (read from the "
                    "repository's configs), else 0.")] = None,
    queue_target_us: Annotated[int, typer.Option(
        min=1, help="Average queue time per pod the autoscaler holds (Triton's metric, through a Prometheus adapter).")] = 50_000,
    name: Annotated[str, typer.Option(help="Name of the Deployment, Service, autoscaler and InferenceService.")] = "triton",
    namespace: Annotated[str, typer.Option(help="Kubernetes namespace.")] = "default",
    image: Annotated[str, typer.Option(help="Triton image (the release the plans were built for).")] = "nvcr.io/nvidia/tritonserver:24.10-py3",
    output: Annotated[Path, typer.Option(help="Folder for kubernetes.yaml and kserve.yaml.")] = Path("deploy/k8s"),
) -> None:
    """Write Kubernetes manifests for Triton replicas serving one repository from object storage: a Deployment
    (readiness, liveness and startup probes on Triton's health endpoints, the restricted APIs behind a key from a
    Secret, Prometheus scrape annotations, GPU requests for GPU models), a Service and a HorizontalPodAutoscaler on
    queue time; and a KServe InferenceService as the alternative. Prints the kubectl commands that apply them."""
    import re

    from trtrepo.deploy import Deployment, write

    if not is_remote(repository):
        raise UserError(f"{repository}: pods read the repository from object storage (s3://, gs://, as://); "
                        "push it there first: trtrepo push DIR s3://bucket/prefix")
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,50}[a-z0-9])?", name):
        raise UserError(f"--name {name!r}: Kubernetes names are lower-case letters, digits and '-'")
    if gpus_per_replica is None:
        gpus_per_replica = 1 if repository_uses_gpus(repository) else 0
    deployment = Deployment(name, repository, replicas, gpus_per_replica, image, namespace, max_replicas or 0, queue_target_us)
    files = write(deployment, output)
    print(f"wrote {', '.join(map(str, files))} ({replicas} replicas, {gpus_per_replica} GPU each)")
    print(f"kubectl -n {namespace} create secret generic {deployment.key_secret} --from-literal=api-key=$(openssl rand -hex 32)")
    print(f"kubectl -n {namespace} create secret generic {deployment.storage_secret} "
          "--from-literal=AWS_ACCESS_KEY_ID=... --from-literal=AWS_SECRET_ACCESS_KEY=... --from-literal=AWS_DEFAULT_REGION=...")
    print(f"kubectl apply -f {files[0]}     # or, with KServe: kubectl apply -f {files[1]}")


def repository_uses_gpus(repository: str) -> bool:
    """Whether any model of an s3:// repository has GPU instances (its configs are fetched to tell); other stores:
    not known here, so no."""
    import tempfile

    from trtrepo.config import read_config, runs_on_gpu
    from trtrepo.objectstore import S3Location, fetch

    if not repository.startswith("s3://"):
        return False
    with tempfile.TemporaryDirectory(prefix="trtrepo-configs-") as scratch:
        fetch(S3Location.parse(repository), Path(scratch), configs_only=True)
        return any(runs_on_gpu(read_config(path)) for path in Path(scratch).glob("*/config.pbtxt"))


@app.command()
def validate(
    repository: Annotated[str, typer.Argument(help="Model repository: a folder, or s3://... (fetched to check).")] = str(REPOSITORY),
    tensorrt_version: Annotated[str, typer.Option(
        help="TensorRT of the server the repository is for: a TensorRT plan loads only on the TensorRT release that "
             f"built it. Default: Triton {TARGET_TRITON}'s.")] = TARGET_TENSORRT,
) -> None:
    """Parse every config.pbtxt against Triton's schema and check version folders, model files, instance kinds
    and the TensorRT version of each plan."""
    from trtrepo.validate import repository_warnings, validate_repository

    import sys

    with local_copy(repository) as (folder, shown):
        problems = [shown(p) for p in validate_repository(folder, tensorrt_version)]
        for warning in repository_warnings(folder):
            print(f"warning: {shown(warning)}", file=sys.stderr)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if problems:
        raise typer.Exit(1)
    print(f"{repository}: ok")


@contextmanager
def local_copy(repository: str) -> Iterator[tuple[Path, Callable[[str], str]]]:
    """The repository as a folder: itself, or an S3 repository fetched into a temporary one; and a function that
    names the fetched files by their URL in messages."""
    import tempfile

    from trtrepo.objectstore import S3Location, fetch

    if not is_remote(repository):
        yield Path(repository), lambda message: message
        return
    if not repository.startswith("s3://"):
        raise UserError(f"{repository}: trtrepo reads s3:// repositories only (Triton itself also serves gs:// and as://)")
    location = S3Location.parse(repository)
    with tempfile.TemporaryDirectory(prefix="trtrepo-fetched-") as scratch:
        folder = fetch(location, Path(scratch))
        yield folder, lambda message: message.replace(str(folder), location.triton_url)


class LogFormat(str, Enum):
    default = "default"
    ISO8601 = "ISO8601"


StoreRepoOption = Annotated[str, typer.Option(
    "--model-repository", "--repo",
    help="Model repository: a folder, or object storage that Triton reads itself (s3://bucket/prefix, "
         "s3://http://HOST:PORT/bucket/prefix for an S3-compatible store, gs://, as://; credentials from the "
         "environment, e.g. AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION).")]


@app.command()
def serve(
    model_repository: StoreRepoOption = str(REPOSITORY),
    host: Annotated[str, typer.Option(help="Address to listen on. Anything but loopback exposes the server beyond "
                                           "this machine (a warning says what).")] = "127.0.0.1",
    http_port: Annotated[int, typer.Option(min=1, max=65535, help="HTTP/REST port.")] = 8000,
    grpc_port: Annotated[int, typer.Option(min=1, max=65535, help="gRPC port.")] = 8001,
    metrics_port: Annotated[int, typer.Option(min=1, max=65535, help="Prometheus metrics port.")] = 8002,
    api_key: Annotated[Optional[str], typer.Option(
        envvar="TRTREPO_API_KEY", show_envvar=True,
        help="Key for the restricted APIs (model repository, shared memory, trace, logging). "
             "Default: a new random key per start, printed once and written to a file only you can read, "
             "where trtrepo's commands and clients on this machine find it.")] = None,
    unrestricted: Annotated[bool, typer.Option(
        "--unrestricted", help="Open every API to anyone who reaches the server. With the Python backend a model load "
                               "runs code: only on a trusted network.")] = False,
    log_file: Annotated[Optional[str], typer.Option(help="Server log file; - for this process's stdout (for a process "
                                                          "manager). Default: a temporary file.")] = None,
    log_format: Annotated[LogFormat, typer.Option(help="Server log line format.")] = LogFormat.default,
    model_control_mode: Annotated[ModelControl, typer.Option(help="explicit lets `trtrepo perf` reload models.")] = ModelControl.explicit,
    replicas: Annotated[int, typer.Option(
        min=1, help="Servers on the repository behind nginx, which listens on the HTTP and gRPC ports and moves a "
                    "request that meets a failed replica to another; the replicas listen on free loopback ports.")] = 1,
    mps: MpsOption = False,
) -> None:
    """Start tritonserver on the repository, wait until it is ready, serve until Ctrl-C, SIGTERM or SIGHUP.

    Secure by default: listens on 127.0.0.1, and the APIs that load models (code execution with the Python
    backend), map shared memory or set trace and log files need the key; health, metadata, model configs, statistics
    and inference are open, so perf_analyzer and Triton's own clients work without it. HTTP goes through nginx, which
    refuses what would crash this tritonserver (form-encoded bodies over 4 MB) and bounds bodies, headers and slow
    senders. A server that dies is started again (at most 5 times in 5 minutes); a Python-backend model whose stub
    dies or stops is reloaded. A signal stops the server and its stubs (a second one kills them at once) and exits
    non-zero."""
    import threading
    from contextlib import nullcontext

    from trtrepo.access import RESTRICTED_APIS, ServerOptions
    from trtrepo.mps import shared_gpu, unshared_note
    from trtrepo.server import Ports, TritonServer

    with shared_gpu(say) if mps else nullcontext():
        if model_repository.startswith("s3://"):  # Triton downloads the store into a folder: keys must stay in it
            from trtrepo.objectstore import S3Location

            S3Location.parse(model_repository).check_keys()
        note = None if mps or is_remote(model_repository) else unshared_note(Path(model_repository))
        if note:
            console.print(f"note: {note}")
        options = ServerOptions(host, () if unrestricted else RESTRICTED_APIS, api_key)
        if replicas > 1:
            serve_replicas(model_repository, replicas, Ports(http_port, grpc_port, metrics_port), options, model_control_mode.value)
            return
        server = TritonServer(model_repository, Ports(http_port, grpc_port, metrics_port), log_file, model_control_mode.value,
                              options=options, log_format=log_format.value, on_event=say, guard=True)
        if not options.loopback:
            console.print(f"[yellow]warning: listening on {host}: {server.options.exposure()}[/yellow]")
        if unrestricted:
            console.print(f"[red]warning: --unrestricted: {server.options.exposure()}[/red]")
        if installed_tensorrt() and not is_remote(model_repository):  # plans the Python backend would load with it
            from trtrepo.validate import tensorrt_problems

            for problem in tensorrt_problems(model_repository, installed_tensorrt()):
                console.print(f"[yellow]warning: {problem}[/yellow]")
        console.print(f"starting tritonserver from {server.installation.source} on {server.repository} ...")
        with server:
            log = "stdout" if server.log_file is None else server.log_file
            print(f"ready: http {server.http_url}  grpc {server.grpc_url}  metrics {server.metrics_url}  log {log}")
            if server.api_key and not api_key:
                print(f"API key (shown once; trtrepo commands on this machine find it): {server.api_key}")
            print("Ctrl-C stops the server.", flush=True)
            try:
                server.supervise(threading.Event())  # returns only by raising: too many restarts, or a signal
            except KeyboardInterrupt:
                console.print("stopping tritonserver ...")
                raise


def serve_replicas(repository: str, count: int, ports: "Ports", options: "ServerOptions", model_control: str) -> None:
    """`trtrepo serve --replicas N`: N supervised servers behind nginx until Ctrl-C or a signal, or until none is
    left."""
    import time

    from trtrepo.replicas import ReplicaSet

    balanced = ReplicaSet(repository, count, ports, options, model_control, on_event=say)
    console.print(f"starting {count} tritonservers on {repository} behind nginx ({balanced.nginx}) ...")
    with balanced:
        print(f"ready: http {balanced.http_url}  grpc {balanced.grpc_url} (nginx over {count} replicas)")
        for index, server in enumerate(balanced.servers, 1):
            print(f"  replica {index}: http {server.http_url}  metrics {server.metrics_url}  log {server.log_file}")
        if balanced.options.api_key and not options.api_key:
            print(f"API key (shown once; trtrepo commands on this machine find it): {balanced.options.api_key}")
        print("Ctrl-C stops nginx and the servers.", flush=True)
        try:
            while balanced.running():
                time.sleep(0.5)
        except KeyboardInterrupt:
            console.print("stopping nginx and tritonservers ...")
            raise
    raise UserError("nginx or every replica stopped; their logs: " + ", ".join(str(s.log_file) for s in balanced.servers))


@contextmanager
def grpc_endpoint(url: str | None, repository: Path, api_key: str | None = None, mps: bool = False) -> Iterator[Endpoint]:
    """The given server, or a server of our own on free loopback ports in explicit model-control mode. ``api_key``
    becomes TRTREPO_API_KEY for this process, where every client and perf_analyzer run of the command looks for it
    (trtrepo.access.find_key). ``mps``: our server runs under CUDA's MPS (trtrepo.mps)."""
    if url and "," in url:
        raise UserError(f"--url takes one server here, got {url!r}")
    with grpc_endpoints(url, repository, api_key, mps=mps) as endpoints:
        yield endpoints[0]


@contextmanager
def grpc_endpoints(urls: str | None, repository: Path, api_key: str | None = None, count: int = 1,
                   mps: bool = False) -> Iterator[list[Endpoint]]:
    """The servers given (a comma-separated list of gRPC addresses), else ``count`` servers of our own on
    ``repository``, as grpc_endpoint starts one; ``api_key`` and ``mps`` as there (one key and one MPS daemon for all)."""
    from trtrepo.access import normalize_url, use_api_key
    from trtrepo.mps import shared_gpu

    use_api_key(api_key)
    if urls:
        if mps:
            raise UserError("--mps runs the servers trtrepo starts; with --url, start MPS where that server runs "
                            "(trtrepo serve --mps)")
        yield [Endpoint(normalize_url(url)) for url in name_list(urls)]
        return
    with ExitStack() as stack:
        if mps:
            stack.enter_context(shared_gpu(say))
        servers = [own_server(repository) for _ in range(count)]
        for index, server in enumerate(servers):
            which = f" {index + 1} of {count}" if count > 1 else ""
            console.print(f"starting tritonserver{which} on {server.repository} (log {server.log_file}) ...")
            stack.enter_context(server)
        yield [Endpoint(server.grpc_url, server.metrics_url, server.process.pid) for server in servers]


def own_server(repository: Path) -> "TritonServer":
    """A server for a command's own use: free loopback ports, explicit model control, restricted APIs whose key
    is TRTREPO_API_KEY's or a fresh one (found by the command's clients through the key file)."""
    import os

    from trtrepo.access import KEY_ENV, ServerOptions
    from trtrepo.server import Ports, TritonServer

    return TritonServer(repository, Ports.free(), model_control="explicit",
                        options=ServerOptions(api_key=os.environ.get(KEY_ENV) or None), on_event=say)


def repository_variants(repository: Path, models: str | None) -> list[str]:
    """The variants named, else every <model>_<engine>_<precision> folder of the repository (not pipelines)."""
    from trtrepo.config import CONFIG_FILE, Variant

    chosen = name_list(models)
    if chosen:
        return chosen
    folders = sorted(p.name for p in Path(repository).iterdir() if (p / CONFIG_FILE).is_file()) if Path(repository).is_dir() else []
    found = [name for name in folders if Variant.is_variant(name)]
    if not found:
        raise UserError(f"{repository}: no models; build them with `trtrepo repo`")
    return found


@app.command()
def perf(
    models: VariantsOption = None,
    instances: Annotated[str, typer.Option(help="Instance counts to sweep, e.g. 1,2,3,4.")] = "1,2",
    concurrency: Annotated[str, typer.Option(help="Client concurrencies to sweep, e.g. 1,4,8 (in all: with several "
                                                  "servers, split among them).")] = "1,4",
    servers: Annotated[str, typer.Option(help="Server counts to sweep, e.g. 1,2: each point loads the first that many "
                                              "servers at once and sums their throughput (Table 4's instances axis "
                                              "past one server).")] = "1",
    batch_size: Annotated[int, typer.Option(min=1, help="Samples per request.")] = 1,
    measurement_ms: Annotated[int, typer.Option(min=100, help="perf_analyzer measurement window.")] = 2000,
    url: Annotated[Optional[str], typer.Option(help="gRPC address of a running server in explicit mode, or several, "
                                                    "comma-separated (replicas, one per GPU); default: start as many "
                                                    "as --servers needs.")] = None,
    api_key: ApiKeyOption = None,
    mps: MpsOption = False,
    model_repository: RepoOption = REPOSITORY,
    output: Annotated[Path, typer.Option(help="Folder for sweep.csv, sweep.md and sweep.png; points already there for "
                                              "other variants, instance counts or concurrencies are kept.")] = Path("perf/results"),
    resume: Annotated[bool, typer.Option("--resume", help="Skip the points already in OUTPUT/sweep.csv at this batch size "
                                                           "(sweep.csv is written after every point).")] = False,
    service_kind: Annotated[ServiceKind, typer.Option(
        help="triton: sweep Triton variants. tfserving: sweep --models on the running TF-Serving at --url (gRPC, "
             "default port 8500; export with `trtrepo tfserving`): concurrency only, the points named "
             "<model>@tfserving beside the Triton variants' in OUTPUT.")] = ServiceKind.triton,
) -> None:
    """Sweep instance counts x concurrency (x servers) with perf_analyzer; write CSV, a Table-4-style markdown table
    and a plot.

    A point that cannot be measured (instances out of GPU memory, say) is reported and the sweep goes on; the
    points measured are written, and the command exits 1. Servers behind one balancer (`trtrepo serve --replicas`)
    are measured through its single --url; several --url measure each server directly. With --service-kind
    tfserving, TF-Serving is measured as the baseline server."""
    from trtrepo.perf.sweep import measured_points, planned_keys, planned_points, read_csv

    if service_kind is ServiceKind.tfserving:
        if mps:
            raise UserError("--mps runs the Triton servers trtrepo starts; TF-Serving is measured where it runs (--url)")
        return perf_tfserving(url, models, concurrency, servers, batch_size, measurement_ms, output, resume)
    counts, concurrencies = int_list(instances, "--instances"), int_list(concurrency, "--concurrency")
    server_counts = int_list(servers, "--servers")
    given = len(name_list(url)) if url else None
    if given is not None and max(server_counts) > given:
        raise UserError(f"--servers {servers} needs {max(server_counts)} servers; --url gives {given}")
    planned = planned_points(server_counts, concurrencies)
    if not planned:
        raise UserError(f"no concurrency in {concurrency} loads {min(server_counts)} servers: give at least that many")
    if len(planned) < len(server_counts) * len(concurrencies):
        console.print("not measured: concurrencies below the server count (a server would get no requests)")
    variants = repository_variants(model_repository, models)
    grid = planned_keys(variants, counts, server_counts, concurrencies)
    done = frozenset(measured_points(output, batch_size) & grid) if resume else frozenset()
    if done:
        console.print(f"resuming: {len(done)} points already in {output / 'sweep.csv'} are not measured again")
    failures: list[str] = []
    with grpc_endpoints(url, model_repository, api_key, max(server_counts), mps) as endpoints:
        points = sweep_with_progress(endpoints, variants, counts, concurrencies, batch_size, measurement_ms,
                                     on_failure=failures.append, done=done, checkpoint_dir=output,
                                     server_counts=server_counts)
    if points or done:
        report_sweep(points or read_csv(output / "sweep.csv"), output)
    if failures:
        total = len(grid) - len(done)
        raise UserError(f"{len(failures)} of {total} points could not be measured (listed above); "
                        f"{'the others are in ' + str(output) if points else 'nothing new was written'}; "
                        "`--resume` measures only what is missing")


def perf_tfserving(url: str | None, models: str | None, concurrency: str, servers: str, batch_size: int,
                   measurement_ms: int, output: Path, resume: bool) -> None:
    """trtrepo perf --service-kind tfserving: the models on one running TF-Serving, against concurrency."""
    from trtrepo.perf.analyzer import TFSERVING
    from trtrepo.perf.sweep import measured_points, read_csv

    if not url or len(name_list(url)) != 1:
        raise UserError("--service-kind tfserving needs --url HOST:PORT of one running TF-Serving (gRPC, default port 8500)")
    if not models:
        raise UserError("--service-kind tfserving needs --models: the model names TF-Serving serves (its models.config)")
    if int_list(servers, "--servers") != [1]:
        raise UserError("--servers applies to Triton only: measure one TF-Serving at a time")
    names, concurrencies = name_list(models), int_list(concurrency, "--concurrency")
    done = frozenset(measured_points(output, batch_size)) if resume else frozenset()
    failures: list[str] = []
    points = sweep_with_progress([], names, [1], concurrencies, batch_size, measurement_ms, failures.append, done,
                                 output, tfserving_url=url)
    if points or done:
        report_sweep(points or read_csv(output / "sweep.csv"), output)
    if failures:
        raise UserError(f"{len(failures)} of {len(names) * len(concurrencies)} TF-Serving points could not be measured "
                        f"(listed above; points are named <model>@{TFSERVING})")


def sweep_with_progress(
    endpoints: list[Endpoint], variants: list[str], counts: list[int], concurrencies: list[int], batch_size: int,
    measurement_ms: int, on_failure: Callable[[str], None] | None = None,
    done: frozenset[tuple[str, int, int, int]] = frozenset(), checkpoint_dir: Path | None = None,
    server_counts: list[int] = (1,), tfserving_url: str | None = None,
) -> list:
    """perf.sweep with a progress bar and a line per measured point; with ``on_failure``, a line per point that
    could not be measured, and the sweep goes on. ``done``: points not to measure again; ``checkpoint_dir``:
    where sweep.csv is brought up to date after every point. ``tfserving_url``: sweep these models on that
    TF-Serving instead (perf.sweep.sweep_tfserving; no endpoints, counts or servers)."""
    from trtrepo.perf.sweep import checkpoint, planned_keys, point_label, sweep, sweep_tfserving, tfserving_key

    measured: list = []
    planned = len(({tfserving_key(v, c) for v in variants for c in concurrencies} if tfserving_url else
                   planned_keys(variants, counts, server_counts, concurrencies)) - done)
    with progress() as bar:
        task = bar.add_task("perf_analyzer", total=planned)

        def on_point(point) -> None:
            gpu = "" if point.gpu_util_pct is None else f", GPU {point.gpu_util_pct:.0f}%"
            bar.console.print(f"  {point_label(point.variant, point.servers, point.instances, point.concurrency)}: "
                              f"{point.throughput:.1f} samples/s, p99 {point.p99_ms:.0f} ms{gpu}")
            bar.advance(task)
            measured.append(point)
            if checkpoint_dir is not None:
                checkpoint(measured, checkpoint_dir)

        def on_failed_point(line: str) -> None:
            bar.console.print(f"  failed: {line}")
            bar.advance(task)
            on_failure(line)

        if tfserving_url:
            return sweep_tfserving(tfserving_url, variants, concurrencies, batch_size, measurement_ms, on_point,
                                   on_failed_point if on_failure else None, done)
        return sweep(endpoints, variants, counts, concurrencies, batch_size, measurement_ms, on_point,
                     on_failed_point if on_failure else None, done, server_counts)


def report_sweep(points: list, output: Path) -> None:
    from trtrepo.perf.sweep import markdown_table, write_report

    files = write_report(points, output)
    print("\n" + markdown_table(points))
    print(f"wrote {', '.join(str(p) for p in files.values())}")


@app.command()
def tune(
    models: Annotated[Optional[str], typer.Option(help="Comma-separated variants, or models (each: its variants that "
                                                       "passed the accuracy gate); default: every variant.")] = None,
    strategy: Annotated[Strategy, typer.Option(help="quick: hill climbing from the current config; brute: the whole "
                                                    "grid; optuna: TPE sampling (pip install 'trtrepo[tune]').")] = Strategy("quick"),
    objective: Annotated[Objective, typer.Option(help="throughput, latency (p99) or cost (throughput per instance); "
                                                      "the report names the winner of each.")] = Objective("throughput"),
    max_p99_ms: Annotated[Optional[float], typer.Option(min=0, help="Points slower at p99 do not count.")] = None,
    min_throughput: Annotated[Optional[float], typer.Option(min=0, help="Points below this many samples/s do not count.")] = None,
    budget_points: Annotated[Optional[int], typer.Option(min=1, help="Configurations to measure at most.")] = None,
    instances: Annotated[str, typer.Option(help="Instance counts to search.")] = "1,2",
    max_batch_sizes: Annotated[Optional[str], typer.Option(help="max_batch_size values to search (default: powers of "
                                                                "two up to the current one).")] = None,
    preferred: Annotated[Optional[str], typer.Option(help="Preferred-batch-size rules to search, each applied to every "
                                                          "max_batch_size: max (the maximum), halves (half and the "
                                                          "maximum), none, kept (the config's own sizes that fit); default: "
                                                          "the current config's.")] = None,
    queue_delays_us: Annotated[Optional[str], typer.Option(help="Max queue delays to search, in microseconds "
                                                                "(default: the current one).")] = None,
    gpu_options: Annotated[bool, typer.Option("--gpu-options", help="Also search CUDA graphs and pipelining (GPU variants).")] = False,
    concurrency: Annotated[str, typer.Option(help="Client concurrencies each configuration is measured at (never more).")] = "1,2,4",
    batch_size: Annotated[int, typer.Option(min=1, help="Samples per request.")] = 1,
    measurement_ms: Annotated[int, typer.Option(min=100, help="perf_analyzer measurement window (three per point give "
                                                              "its confidence interval).")] = 1000,
    target_rate: Annotated[Optional[float], typer.Option(help="Plan capacity: servers and instances to serve this many "
                                                              "samples/s at --max-p99-ms.")] = None,
    apply: Annotated[bool, typer.Option("--apply", help="Write the winner into the repository's config (the old one "
                                                        "kept as config.pbtxt.orig) and reload it, when it beats the "
                                                        "current config beyond the noise.")] = False,
    resume: Annotated[bool, typer.Option("--resume", help="Skip configurations already measured in OUTPUT/tune.csv.")] = False,
    url: Annotated[Optional[str], typer.Option(help="gRPC address of a running server in explicit model-control mode; "
                                                    "default: start one.")] = None,
    api_key: ApiKeyOption = None,
    mps: MpsOption = False,
    model_repository: RepoOption = REPOSITORY,
    output: Annotated[Path, typer.Option(help="Folder for tune.csv, tune.md and tune.png.")] = Path("perf/results/tune"),
) -> None:
    """Search instance count, max batch size with its preferred sizes, queue delay (and on GPU, CUDA graphs and
    pipelining) for the best configuration under an objective and limits, reloading only the model.

    Every point carries a 95% interval from perf_analyzer's windows; a winner within the noise of the current config
    is reported as no significant gain and not applied. A configuration that cannot be measured is recorded with
    its reason and the search goes on."""
    import time
    from dataclasses import replace

    from trtrepo.config import serving_options_of
    from trtrepo.perf import tune as tuning
    from trtrepo.perf.trial import Trial

    if target_rate is not None and max_p99_ms is None:
        raise UserError("--target-rate needs --max-p99-ms: capacity is planned at a latency limit")
    concurrencies = int_list(concurrency, "--concurrency")
    # Parsed before a server starts: a typo is one line at once.
    space_options = dict(
        instances=int_list(instances, "--instances"),
        max_batch_sizes=int_list(max_batch_sizes, "--max-batch-sizes") if max_batch_sizes else None,
        preferred=name_list(preferred) or (),
        max_queue_delays_us=int_list(queue_delays_us, "--queue-delays-us", least=0) if queue_delays_us else None,
        gpu_options=gpu_options)
    goal = tuning.Goal(objective.value, max_p99_ms, min_throughput)
    names = name_list(models) or repository_variants(model_repository, None)
    variants, left_out = tuning.gated_variants(model_repository, names) if Path(model_repository).is_dir() else (names, [])
    for line in left_out:
        console.print(line, markup=False)
    everything: list = []
    sections: list[str] = []
    verdicts_by_variant: dict = {}
    with grpc_endpoint(url, model_repository, api_key, mps) as endpoint:
        for variant in variants:
            started = time.monotonic()
            with Trial(variant, [endpoint]) as trial:
                if trial.steps:
                    raise UserError(f"{variant} is an ensemble; tune the models it chains")
                space = tuning.SearchSpace.around(serving_options_of(trial.config), **space_options)
                grid = space.grid()
                earlier = tuning.resumed(output, variant, concurrencies) if resume else {}
                if earlier:
                    console.print(f"resuming {variant}: {len(earlier)} configurations already in {output / 'tune.csv'}")
                mine: list = [p for points in earlier.values() for p in points]
                with progress() as bar:
                    # The configurations the budget allows, and the starting one measured again for the run-to-run noise.
                    task = bar.add_task(f"tune {variant}", total=(min(budget_points or len(grid), len(grid)) + 1) * len(concurrencies))
                    bar.advance(task, len(mine))

                    def on_point(point, bar=bar, task=task, mine=mine) -> None:
                        result = (f"{point.throughput:.1f} samples/s +-{point.throughput_ci or 0:.2g}, p99 {point.p99_ms:.0f} ms"
                                  if point.status == "measured" else f"failed: {point.reason}")
                        again = " (start, again)" if point.repeat else ""
                        bar.console.print(f"  {point.candidate.label()} c{point.concurrency}{again}: {result}", markup=False)
                        bar.advance(task)
                        mine.append(point)
                        tuning.checkpoint(mine, output)

                    tuning.tune_variant(trial, space, goal, strategy.value, concurrencies, batch_size, measurement_ms,
                                        budget_points, earlier, on_point)
            verdicts = {name: tuning.judge(replace(goal, objective=name), mine, space.start) for name in tuning.OBJECTIVES}
            sections.append(tuning.markdown(variant, mine, goal, verdicts, strategy.value, len(grid), concurrencies,
                                            time.monotonic() - started))
            everything += mine
            verdict = verdicts_by_variant[variant] = verdicts[goal.objective]
            console.print(f"{variant}: {verdict.winner.candidate.label() if verdict.winner else 'no winner'}; "
                          f"{verdict.reason}", markup=False)
            if apply:
                sections.append(tuning.apply_and_check(model_repository, variant, verdict, endpoint, batch_size, measurement_ms))
        sections.append(tuning.across_variants(goal, verdicts_by_variant))
        if target_rate is not None:
            sections.append(tuning.capacity_markdown(everything, target_rate, max_p99_ms))
    files = tuning.write_report(everything, sections, output)
    print("\n".join(sections))
    print(f"wrote {', '.join(str(p) for p in files.values())}")
    unmet = [v for v, verdict in verdicts_by_variant.items() if verdict.winner is None]
    if unmet:
        raise UserError(f"no configuration of {', '.join(unmet)} met the limits ({goal.describe()}); see {output / 'tune.md'}")


@app.command()
def bench(
    models: VariantsOption = None,
    batch_size: Annotated[Optional[int], typer.Option(min=1, help="Batch for both the in-process and the served measurement "
                                                                   "(default: each variant's max_batch_size).")] = None,
    seconds: Annotated[float, typer.Option(min=0.5, help="Measurement time per variant and side.")] = 5.0,
    requests_per_instance: Annotated[int, typer.Option(min=1, help="Served side: requests in flight per model instance.")] = 2,
    url: Annotated[Optional[str], typer.Option(help="gRPC address of a running server; default: start one.")] = None,
    api_key: ApiKeyOption = None,
    mps: MpsOption = False,
    model_repository: RepoOption = REPOSITORY,
    output: Annotated[Path, typer.Option(help="Folder for bench.csv and bench.md (rows of other variants there are kept).")] = Path("perf/results"),
) -> None:
    """In-process engine throughput against Triton-served throughput at the same batch, and ratios to the baseline;
    with TensorFlow or PyTorch FP32 variants measured, each variant's speed-up over them (the study's Table 2).
    The server's answer to the measured batch is checked against the engine's: exits 1 where they differ.

    GPU variants are measured on a batch already in GPU memory on both sides (served: CUDA shared memory)."""
    from trtrepo.perf.bench import bench as run_bench
    from trtrepo.perf.bench import frameworks_markdown, markdown, write_report

    variants = repository_variants(model_repository, models)
    with grpc_endpoint(url, model_repository, api_key, mps) as (grpc_url, metrics_url, _):
        console.print(f"measuring {len(variants)} variants at batch {batch_size or 'max_batch_size'}, {seconds:g} s per side ...")
        rows = run_bench(model_repository, grpc_url, variants, batch_size, seconds, metrics_url, requests_per_instance)
    files = write_report(rows, output, model_repository)
    print(markdown(rows) + frameworks_markdown(rows))
    print(f"wrote {', '.join(str(p) for p in files.values())}")
    wrong = [f"{row.variant} ({row.served_outputs})" for row in rows if row.served_outputs != "same"]
    if wrong:
        raise UserError(f"served outputs differ from the engine's in process, so their served figures measure a broken "
                        f"path: {'; '.join(wrong)}")


@app.command()
def soak(
    models: VariantsOption = None,
    concurrency: Annotated[int, typer.Option(min=1, help="Requests in flight per variant, held the whole time.")] = 4,
    seconds: Annotated[float, typer.Option(min=3, help="How long to hold the load.")] = 600.0,
    window_s: Annotated[float, typer.Option(min=3, help="Seconds per measurement window (three perf_analyzer "
                                                          "intervals).")] = 15.0,
    batch_size: Annotated[int, typer.Option(min=1, help="Samples per request.")] = 1,
    url: Annotated[Optional[str], typer.Option(help="gRPC address of a running server; default: start one "
                                                     "(memory is measured only for a server of its own).")] = None,
    api_key: ApiKeyOption = None,
    model_repository: RepoOption = REPOSITORY,
    output: Annotated[Path, typer.Option(help="Folder for soak.csv, soak.md and soak.png.")] = Path("perf/results"),
) -> None:
    """Hold a concurrency against variants for a set time: requests answered and failed (the server's counts),
    p99 in the first and the last minute, and the memory of tritonserver and its stubs from start to end.

    Exits 1 when any request failed."""
    from trtrepo.perf.soak import soak as run_soak
    from trtrepo.perf.soak import markdown, write_report

    variants = repository_variants(model_repository, models)
    with grpc_endpoint(url, model_repository, api_key) as (grpc_url, _, server_pid):
        console.print(f"soaking {', '.join(variants)} at concurrency {concurrency} for {seconds:g} s ...")
        with progress() as bar:
            task = bar.add_task("soak", total=int(seconds // window_s) * len(variants))

            def on_window(window) -> None:
                state = window.error or (f"{window.throughput:.1f} samples/s, p99 {window.p99_ms:.0f} ms"
                                         + ("" if window.rss_mb is None else f", server {window.rss_mb:.0f} MB"))
                bar.console.print(f"  {window.start_s:6.0f} s {window.variant}: {state}", markup=False)
                bar.advance(task)

            windows, summaries = run_soak(grpc_url, variants, concurrency, seconds, window_s, batch_size, server_pid, on_window)
    files = write_report(windows, summaries, concurrency, output)
    print(markdown(windows, summaries, concurrency))
    print(f"wrote {', '.join(str(p) for p in files.values())}")
    failed = sum(s.failed for s in summaries)
    if failed:
        raise UserError(f"{failed} requests or windows failed during the soak (see {files['markdown']})")


@app.command("eval")
def evaluate_command(
    model: Annotated[str, typer.Argument(help="Model name, e.g. resnet50, efficientnet_lite0, yolov3_tiny.")],
    data: Annotated[Path, typer.Option(help="Images: class-name subfolders, the root --labels paths are relative to, "
                                            "or the folder of the --annotations images.")],
    labels: Annotated[Optional[Path], typer.Option(help="Classifiers: 'relative/path.jpg label' lines (class name or index).")] = None,
    annotations: Annotated[Optional[Path], typer.Option(help="Detectors: a COCO instances JSON file (required for them).")] = None,
    gt: Annotated[Optional[Path], typer.Option(help="CTPN: folder of ICDAR-style gt_<image>.txt files (required for it).")] = None,
    models: VariantsOption = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per request.")] = 8,
    url: Annotated[Optional[str], typer.Option(help="gRPC address of a running server; default: start one.")] = None,
    api_key: ApiKeyOption = None,
    model_repository: RepoOption = REPOSITORY,
    output: Annotated[Path, typer.Option(help="Folder for eval.csv, eval.md and eval.png.")] = Path("perf/results"),
) -> None:
    """Accuracy and time per batch of every variant of MODEL through Triton: top-1/top-5 and agreement with
    the FP32 reference for classifiers, COCO mAP for detectors, text-line precision/recall/F for CTPN."""
    from trtrepo.config import Variant
    from trtrepo.evaluate import evaluate, evaluate_detection, evaluate_text, labelled_images, markdown, thresholds_of, write_report
    from trtrepo.models import get_model
    from trtrepo.specs import CLASSIFICATION, DETECTION, TEXT

    spec = get_model(model)
    if spec.task == DETECTION and annotations is None:
        raise UserError(f"{model} is a detector: pass --annotations instances.json (COCO format)")
    if spec.task == TEXT and gt is None:
        raise UserError(f"{model} finds text lines: pass --gt DIR of ICDAR-style gt_<image>.txt files")
    if spec.task == CLASSIFICATION:
        images, truth = labelled_images(data, labels, spec.class_names)
    variants = [v for v in repository_variants(model_repository, models) if Variant.parse(v).model == model]
    if spec.task == TEXT and not models:  # the split ensembles of the model too (ctpn_split)
        variants += sorted(p.name for p in Path(model_repository).glob(f"{model}_*")
                           if (p / "config.pbtxt").is_file() and not Variant.is_variant(p.name))
    if not variants:
        raise UserError(f"{model_repository}: no variants of {model}; build them with `trtrepo repo --models {model}`")
    gates = {variant: thresholds_of(model_repository, variant, spec.task) for variant in variants}
    with grpc_endpoint(url, model_repository, api_key) as (grpc_url, _, _):
        console.print(f"evaluating {', '.join(variants)} ...")
        if spec.task == DETECTION:
            rows, reference = evaluate_detection(spec, grpc_url, "grpc", variants, data, annotations, batch_size, gates)
        elif spec.task == TEXT:
            rows, reference = evaluate_text(grpc_url, "grpc", variants, data, gt, spec.line_min_score, gates)
        else:
            rows, reference = evaluate(spec, grpc_url, "grpc", variants, images, truth, batch_size, gates)
    files = write_report(rows, reference, output)
    print(markdown(rows, reference))
    print(f"wrote {', '.join(str(p) for p in files.values())}")


@app.command()
def compare(
    a: Annotated[str, typer.Argument(help="The reference variant, e.g. efficientnet_lite0_onnxruntime_fp32.")],
    b: Annotated[str, typer.Argument(help="The variant to hold against it, e.g. efficientnet_lite0_onnxruntime_int8.")],
    model_repository: RepoOption = REPOSITORY,
    images: Annotated[Optional[Path], typer.Option(
        help="Images to run (a folder or a file list). Default: the accuracy gate's evaluation photos.")] = None,
    count: Annotated[int, typer.Option(min=1, help="Samples (crops and mirror images when there are fewer images).")] = 112,
    output: Annotated[Path, typer.Option(help="Folder for compare.md, compare_*.csv and compare.png.")] = Path("perf/results/compare"),
) -> None:
    """Where two variants of one model part: per output (max/mean abs and relative error, cosine, the task's
    measures) and, for two ONNX artifacts, per intermediate tensor with the error each node adds, plotted by depth."""
    from trtrepo.compare import compare_variants, markdown, write_report
    from trtrepo.imagesets import evaluation_photos, images_in, with_crops

    files = images_in(images, "comparison") if images else evaluation_photos()
    if not files:
        raise UserError("no images to compare on: pass --images DIR")
    result = compare_variants(model_repository, a, b, list(with_crops(files, count)))
    written = write_report(result, output)
    print(markdown(result), end="")
    print(f"wrote {', '.join(str(p) for p in written.values())}")


@app.command()
def demo(
    weights: Annotated[str, typer.Option(help="Per model; ResNet50's and YOLOv3's pretrained weights need a download or its cache.")] = DEMO_WEIGHTS,
    output: Annotated[Path, typer.Option(help="Repository folder to build.")] = REPOSITORY,
    instances: Annotated[str, typer.Option(help="Instance counts for the short sweep.")] = "1,2",
    concurrency: Annotated[str, typer.Option(help="Concurrencies for the short sweep.")] = "2",
) -> None:
    """The whole path on this machine: build the CPU repository, serve it, classify sample photos, sweep, report."""
    from trtrepo.imagesets import shipped_photos
    from trtrepo.clients.resnet_client import classify
    from trtrepo.clients.yolo_client import annotate, detect
    from trtrepo.config import Variant
    from trtrepo.evaluate import gate_table
    from trtrepo.models import get_model
    from trtrepo.specs import DETECTION

    repo(plan=None, models=DEMO_MODELS, weights=weights, output=output, backends=None, calib_dir=None, calib_images=None,
         eval_dir=None, allow_below_gate=False, force=False)
    if "random" in weights:
        console.print(f"[yellow]weights {weights}: labels from random weights are meaningless; the path is what they show[/yellow]")
    photos = shipped_photos()
    variants = repository_variants(output, None)
    counts, concurrencies = int_list(instances, "--instances"), int_list(concurrency, "--concurrency")
    annotated = Path("perf/results/annotated")
    server = own_server(output)
    console.print(f"starting tritonserver from {server.installation.source} (log {server.log_file}) ...")
    with server:
        print(f"tritonserver ready: http {server.http_url}  grpc {server.grpc_url}")
        for variant in variants:
            if get_model(Variant.parse(variant).model).task == DETECTION:
                print(f"\npython clients/yolo_client.py --url {server.http_url} --model {variant} --out {annotated} PHOTOS")
                for path, found in zip(photos, detect(photos, variant, server.http_url, "http", 4, 0.25, 0.45)):
                    if found:
                        annotate(path, found, annotated / variant)
                        print(f"  {path.name}: " + ", ".join(f"{d.label} {d.score:.2f}" for d in found[:6]))
            else:
                print(f"\npython clients/resnet_client.py --url {server.http_url} --model {variant} PHOTOS")
                for path, result in zip(photos[:4], classify(photos[:4], variant, server.http_url, "http", 8, 3)):
                    print(f"  {path.name}: " + ", ".join(f"{label} {score:.3f}" for label, score in result))
        points = sweep_with_progress([Endpoint(server.grpc_url, server.metrics_url)], variants, counts, concurrencies, 1, 1500)
    report_sweep(points, Path("perf/results"))
    print("\nSpeed and accuracy per variant (the study's Table 3, with the accuracy gate):\n")
    print(gate_table(points, output))
    print(f"annotated detections in {annotated}/; server stopped")


@app.command()
def tfserving(
    model_repository: Annotated[Path, typer.Argument(help="Model repository whose TensorFlow variants to export.")],
    output: Annotated[Path, typer.Option(help="Folder to write: one TF-Serving model base path per variant, "
                                              "models.config, batching_parameters.txt.")],
    base_path: Annotated[Optional[str], typer.Option(
        help="Where OUTPUT is mounted for TF-Serving, as models.config names it (e.g. /models in its container); "
             "default: OUTPUT itself.")] = None,
) -> None:
    """Export the TensorFlow variants for TF-Serving, the baseline server: <variant>/<version>/ SavedModels, a
    model_config_list and batching parameters mirroring each variant's Triton dynamic batching (largest batch, queue
    delay, preferred sizes, a batch thread per instance); then print how to serve and sweep it."""
    from trtrepo.perf.analyzer import TFSERVING
    from trtrepo.tfserving import GRPC_PORT, export_tfserving, serve_command

    exported = export_tfserving(model_repository, output, base_path, console.print)
    names = ",".join(e.name for e in exported)
    print(f"wrote {output} ({len(exported)} models)\nserve it:  {serve_command(output, base_path)}\n"
          f"sweep it:  trtrepo perf --service-kind {TFSERVING} --url localhost:{GRPC_PORT} --models {names}")


@app.command("gpu-pack")
def gpu_pack(
    output: Annotated[Path, typer.Option(help="Folder to fill; name it in the device run's carry.")] = Path(".gpu"),
    bundle_script: Annotated[Path, typer.Option(help="Script that packs tritonserver + perf_analyzer for the GPU machine.")]
    = Path("../shared/device/make-triton-bundle.sh"),
    python: Annotated[str, typer.Option(help="The GPU machine's Python version.")] = "3.12",
    force: Annotated[bool, typer.Option(help="Pack the server bundle again even if one is there.")] = False,
) -> None:
    """Pack what a GPU machine without network needs for perf/gpu/study.sh: the tritonserver + perf_analyzer
    bundle, the wheels its Python lacks (tritonclient's pure-Python client, python-rapidjson) and numpy 1.26 for
    the Python-backend stub alone (the server's stub garbles tensors under the machine's numpy 2). The project's
    own code travels with the working tree; PyTorch and ONNX Runtime are the machine's."""
    import subprocess
    import sys

    bundle = output / "triton-bundle.tar.xz"
    if force or not bundle.is_file():
        if not bundle_script.is_file():
            raise UserError(f"{bundle_script}: no bundle script; pass --bundle-script make-triton-bundle.sh")
        console.print(f"packing tritonserver + perf_analyzer with {bundle_script} (about a minute) ...")
        subprocess.run(["bash", str(bundle_script), str(output), python], check=True)
    platforms = ["--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_17_x86_64", "--platform", "manylinux2014_x86_64"]
    # numpy 1.26 goes to the Python-backend stub alone (trtrepo.stub_python): the GPU machine's own numpy is 2.
    for folder, wanted in (("wheels", ["--platform", "any", "tritonclient==2.50.0"]),
                           ("wheels", platforms + ["python-rapidjson"]), ("stub-wheels", platforms + ["numpy==1.26.4"])):
        command = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "-d",
                   str(output / folder), "--python-version", python, "--implementation", "cp", *wanted]
        if subprocess.run(command).returncode != 0:
            raise UserError(f"pip download failed: {' '.join(wanted)}")
    size = sum(f.stat().st_size for f in output.rglob("*") if f.is_file()) / 2**20
    print(f"packed {output} ({size:.0f} MiB). On the GPU machine, from the repository root, with {output} carried:\n"
          f"  bash perf/gpu/study.sh resnet50,yolov3 bench,sweep,cpu")


def main() -> None:
    run_app(app)


if __name__ == "__main__":
    main()
