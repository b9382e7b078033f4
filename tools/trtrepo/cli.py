"""trtrepo: the one front door. Export, build, assemble, check, serve and measure a Triton model repository."""

from __future__ import annotations

from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated, Callable, Iterator, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from trtrepo.engines import ENGINES
from trtrepo.errors import UserError, run_app

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
VariantsOption = Annotated[Optional[str], typer.Option(help="Comma-separated variants (default: every model in the repository).")]


# Built from the registry, so that registering an engine is all it takes to offer it here.
Engine = Enum("Engine", {name: name for name in ENGINES}, type=str)


class Precision(str, Enum):
    fp32 = "fp32"
    fp16 = "fp16"
    int8 = "int8"


class Kind(str, Enum):
    cpu = "cpu"
    gpu = "gpu"
    auto = "auto"


class ModelControl(str, Enum):
    none = "none"
    poll = "poll"
    explicit = "explicit"


def int_list(text: str, what: str) -> list[int]:
    """'1,2,4' -> [1, 2, 4], each at least 1; anything else is a one-line error."""
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UserError(f"{what} must be comma-separated whole numbers, got {text!r}") from None
    if not values or min(values) < 1:
        raise UserError(f"{what} must be whole numbers of at least 1, got {text!r}")
    return values


def name_list(text: str | None) -> list[str] | None:
    return [part.strip() for part in text.split(",") if part.strip()] if text else None


def progress() -> Progress:
    return Progress(
        SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console, transient=False,
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
) -> None:
    """Build one variant <model>_<engine>_<precision> into the repository (serving defaults from repo.toml)."""
    from dataclasses import replace

    from trtrepo.config import Variant
    from trtrepo.engines import get_engine
    from trtrepo.repository import build_repository, load_plan

    chosen = get_engine(engine.value)
    chosen.check_precision(precision.value)
    reason = chosen.unavailable(precision.value)
    if reason:
        raise UserError(f"cannot build {model}_{engine.value}_{precision.value}: {reason}")
    plan = load_plan(models=[model], weights=weights, output=output, backends=backends, calib_dir=calib_dir, calib_images=calib_images)
    planned = {(v.engine, v.precision): v.options for v in plan.variants}
    options = planned.get((engine.value, precision.value), plan.variants[0].options)
    variant = Variant(model, engine.value, precision.value, options)
    build_repository(replace(plan, variants=(variant,)), console.print, force=True)
    print(f"built {plan.output / variant.name}")


@app.command()
def repo(
    plan: Annotated[Optional[Path], typer.Option(help="Declarative plan; default ./repo.toml if present.")] = None,
    models: Annotated[Optional[str], typer.Option(help="Comma-separated models to build (default: all in the plan).")] = None,
    weights: WeightsOption = None,
    output: Annotated[Optional[Path], typer.Option(help="Repository folder (default: the plan's, model_repository).")] = None,
    backends: Annotated[Optional[str], typer.Option(help="auto (ask the local tritonserver) or e.g. python,onnxruntime,tensorrt.")] = None,
    calib_dir: CalibDirOption = None,
    calib_images: CalibImagesOption = None,
    force: Annotated[bool, typer.Option(help="Rebuild variants whose manifest says they are up to date.")] = False,
) -> None:
    """Build every variant of the plan that this machine can build and that changed; validate the result."""
    from trtrepo.repository import build_repository, load_plan
    from trtrepo.validate import validate_repository

    repo_plan = load_plan(plan, name_list(models), weights, output, backends, calib_dir=calib_dir, calib_images=calib_images)
    console.print(f"building {len(repo_plan.variants)} variants into {repo_plan.output} "
                  f"(weights {repo_plan.weights}; server backends: {', '.join(sorted(repo_plan.backends)) or 'none'})")
    with progress() as bar:
        task = bar.add_task("building", total=len(repo_plan.variants))

        def step(message: str) -> None:
            bar.console.print(f"  {message}", markup=False, highlight=False)
            if message.endswith((": building", ": up to date")) or message.startswith("warning: skipping"):
                bar.advance(task)

        results = build_repository(repo_plan, step, force)
    problems = validate_repository(repo_plan.output)
    if problems:
        raise UserError(f"built repository fails validation: {problems[0]}")
    for status in ("built", "up to date", "skipped"):
        names = [r.variant for r in results if r.status == status]
        if names:
            print(f"{status}: {', '.join(names)}")


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
def validate(repository: Annotated[Path, typer.Argument(help="Model repository folder.")] = REPOSITORY) -> None:
    """Parse every config.pbtxt against Triton's schema and check version folders and model files."""
    from trtrepo.validate import validate_repository

    problems = validate_repository(repository)
    for problem in problems:
        print(f"error: {problem}")
    if problems:
        raise typer.Exit(1)
    print(f"{repository}: ok")


@app.command()
def serve(
    model_repository: RepoOption = REPOSITORY,
    http_port: Annotated[int, typer.Option(help="HTTP/REST port.")] = 8000,
    grpc_port: Annotated[int, typer.Option(help="gRPC port.")] = 8001,
    metrics_port: Annotated[int, typer.Option(help="Prometheus metrics port.")] = 8002,
    log_file: Annotated[Optional[Path], typer.Option(help="Server log (default: a temporary file).")] = None,
    model_control_mode: Annotated[ModelControl, typer.Option(help="explicit lets `trtrepo perf` reload models.")] = ModelControl.explicit,
) -> None:
    """Start tritonserver on the repository, wait until it is ready, serve until Ctrl-C."""
    import time

    from trtrepo.server import Ports, TritonServer

    server = TritonServer(model_repository, Ports(http_port, grpc_port, metrics_port), log_file, model_control_mode.value)
    console.print(f"starting tritonserver from {server.installation.source} on {server.repository} ...")
    with server:
        print(f"ready: http {server.http_url}  grpc {server.grpc_url}  metrics {server.metrics_url}  log {server.log_file}")
        print("Ctrl-C stops the server.", flush=True)
        try:
            while server.process.poll() is None:
                time.sleep(0.5)
        except KeyboardInterrupt:
            console.print("stopping tritonserver ...")
            return
    raise UserError(f"tritonserver exited with code {server.process.returncode}: {server.log_error()}")


@contextmanager
def grpc_endpoint(url: str | None, repository: Path) -> Iterator[tuple[str, str | None]]:
    """(gRPC address, metrics URL) of the given server (metrics unknown), or of a server of our own on free
    ports in explicit model-control mode."""
    if url:
        yield url, None
        return
    from trtrepo.server import Ports, TritonServer

    server = TritonServer(repository, Ports.free(), model_control="explicit")
    console.print(f"starting tritonserver on {server.repository} (log {server.log_file}) ...")
    with server:
        yield server.grpc_url, server.metrics_url


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
    concurrency: Annotated[str, typer.Option(help="Client concurrencies to sweep, e.g. 1,4,8.")] = "1,4",
    batch_size: Annotated[int, typer.Option(min=1, help="Samples per request.")] = 1,
    measurement_ms: Annotated[int, typer.Option(min=100, help="perf_analyzer measurement window.")] = 2000,
    url: Annotated[Optional[str], typer.Option(help="gRPC address of a running server in explicit mode; default: start one.")] = None,
    model_repository: RepoOption = REPOSITORY,
    output: Annotated[Path, typer.Option(help="Folder for sweep.csv, sweep.md and sweep.png; points already there for "
                                              "other variants, instance counts or concurrencies are kept.")] = Path("perf/results"),
) -> None:
    """Sweep instance counts x concurrency with perf_analyzer; write CSV, a Table-4-style markdown table and a plot.

    A point that cannot be measured (instances out of GPU memory, say) is reported and the sweep goes on; the
    points measured are written, and the command exits 1."""
    counts, concurrencies = int_list(instances, "--instances"), int_list(concurrency, "--concurrency")
    variants = repository_variants(model_repository, models)
    failures: list[str] = []
    with grpc_endpoint(url, model_repository) as (grpc_url, metrics_url):
        points = sweep_with_progress(grpc_url, variants, counts, concurrencies, batch_size, measurement_ms, metrics_url,
                                     on_failure=failures.append)
    if points:
        report_sweep(points, output)
    if failures:
        total = len(variants) * len(counts) * len(concurrencies)
        raise UserError(f"{total - len(points)} of {total} points could not be measured (listed above); "
                        f"{'the others are in ' + str(output) if points else 'nothing was written'}")


def sweep_with_progress(
    grpc_url: str, variants: list[str], counts: list[int], concurrencies: list[int], batch_size: int, measurement_ms: int,
    metrics_url: str | None = None, on_failure: Callable[[str], None] | None = None,
) -> list:
    """perf.sweep with a progress bar and a line per measured point; with ``on_failure``, a line per point that
    could not be measured, and the sweep goes on."""
    from trtrepo.perf.sweep import sweep

    with progress() as bar:
        task = bar.add_task("perf_analyzer", total=len(variants) * len(counts) * len(concurrencies))

        def on_point(point) -> None:
            gpu = "" if point.gpu_util_pct is None else f", GPU {point.gpu_util_pct:.0f}%"
            bar.console.print(f"  {point.variant} x{point.instances} c{point.concurrency}: "
                              f"{point.throughput:.1f} samples/s, p99 {point.p99_ms:.0f} ms{gpu}")
            bar.advance(task)

        def on_failed_point(line: str) -> None:
            bar.console.print(f"  failed: {line}")
            bar.advance(task)
            on_failure(line)

        return sweep(grpc_url, variants, counts, concurrencies, batch_size, measurement_ms, on_point, metrics_url,
                     on_failed_point if on_failure else None)


def report_sweep(points: list, output: Path) -> None:
    from trtrepo.perf.sweep import markdown_table, write_report

    files = write_report(points, output)
    print("\n" + markdown_table(points))
    print(f"wrote {', '.join(str(p) for p in files.values())}")


@app.command()
def bench(
    models: VariantsOption = None,
    batch_size: Annotated[Optional[int], typer.Option(min=1, help="Batch for both the in-process and the served measurement "
                                                                   "(default: each variant's max_batch_size).")] = None,
    seconds: Annotated[float, typer.Option(min=0.5, help="Measurement time per variant and side.")] = 5.0,
    requests_per_instance: Annotated[int, typer.Option(min=1, help="Served side: requests in flight per model instance.")] = 2,
    url: Annotated[Optional[str], typer.Option(help="gRPC address of a running server; default: start one.")] = None,
    model_repository: RepoOption = REPOSITORY,
    output: Annotated[Path, typer.Option(help="Folder for bench.csv and bench.md (rows of other variants there are kept).")] = Path("perf/results"),
) -> None:
    """In-process engine throughput against Triton-served throughput at the same batch, and ratios to the baseline.

    GPU variants are measured on a batch already in GPU memory on both sides (served: CUDA shared memory)."""
    from trtrepo.perf.bench import bench as run_bench
    from trtrepo.perf.bench import markdown, write_report

    variants = repository_variants(model_repository, models)
    with grpc_endpoint(url, model_repository) as (grpc_url, metrics_url):
        console.print(f"measuring {len(variants)} variants at batch {batch_size or 'max_batch_size'}, {seconds:g} s per side ...")
        rows = run_bench(model_repository, grpc_url, variants, batch_size, seconds, metrics_url, requests_per_instance)
    files = write_report(rows, output)
    print(markdown(rows))
    print(f"wrote {', '.join(str(p) for p in files.values())}")


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
    model_repository: RepoOption = REPOSITORY,
    output: Annotated[Path, typer.Option(help="Folder for eval.csv, eval.md and eval.png.")] = Path("perf/results"),
) -> None:
    """Accuracy and time per batch of every variant of MODEL through Triton: top-1/top-5 and agreement with
    the FP32 reference for classifiers, COCO mAP for detectors, text-line precision/recall/F for CTPN."""
    from trtrepo.config import Variant
    from trtrepo.evaluate import evaluate, evaluate_detection, evaluate_text, labelled_images, markdown, write_report
    from trtrepo.models import get_model
    from trtrepo.models.ctpn import CTPN
    from trtrepo.models.yolov3 import YOLOv3

    spec = get_model(model)
    kind = "detector" if isinstance(spec, YOLOv3) else "text" if isinstance(spec, CTPN) else "classifier"
    if kind == "detector" and annotations is None:
        raise UserError(f"{model} is a detector: pass --annotations instances.json (COCO format)")
    if kind == "text" and gt is None:
        raise UserError(f"{model} finds text lines: pass --gt DIR of ICDAR-style gt_<image>.txt files")
    if kind == "classifier":
        images, truth = labelled_images(data, labels, spec.class_names)
    variants = [v for v in repository_variants(model_repository, models) if Variant.parse(v).model == model]
    if kind == "text" and not models:  # the split ensembles of the model too (ctpn_split)
        variants += sorted(p.name for p in Path(model_repository).glob(f"{model}_*")
                           if (p / "config.pbtxt").is_file() and not Variant.is_variant(p.name))
    if not variants:
        raise UserError(f"{model_repository}: no variants of {model}; build them with `trtrepo repo --models {model}`")
    with grpc_endpoint(url, model_repository) as (grpc_url, _):
        console.print(f"evaluating {', '.join(variants)} ...")
        if kind == "detector":
            rows, reference = evaluate_detection(spec, grpc_url, "grpc", variants, data, annotations, batch_size)
        elif kind == "text":
            rows, reference = evaluate_text(grpc_url, "grpc", variants, data, gt, CTPN.line_min_score)
        else:
            rows, reference = evaluate(spec, grpc_url, "grpc", variants, images, truth, batch_size)
    files = write_report(rows, reference, output)
    print(markdown(rows, reference))
    print(f"wrote {', '.join(str(p) for p in files.values())}")


@app.command()
def demo(
    weights: Annotated[str, typer.Option(help="Per model; ResNet50's and YOLOv3's pretrained weights need a download or its cache.")] = DEMO_WEIGHTS,
    output: Annotated[Path, typer.Option(help="Repository folder to build.")] = REPOSITORY,
    instances: Annotated[str, typer.Option(help="Instance counts for the short sweep.")] = "1,2",
    concurrency: Annotated[str, typer.Option(help="Concurrencies for the short sweep.")] = "2",
) -> None:
    """The whole path on this machine: build the CPU repository, serve it, classify sample photos, sweep, report."""
    from trtrepo.calibration import shipped_photos
    from trtrepo.clients.resnet_client import classify
    from trtrepo.clients.yolo_client import annotate, detect
    from trtrepo.config import Variant
    from trtrepo.server import Ports, TritonServer

    repo(plan=None, models=DEMO_MODELS, weights=weights, output=output, backends=None, calib_dir=None, calib_images=16, force=False)
    if "random" in weights:
        console.print(f"[yellow]weights {weights}: labels from random weights are meaningless; the path is what they show[/yellow]")
    photos = shipped_photos()
    variants = repository_variants(output, None)
    counts, concurrencies = int_list(instances, "--instances"), int_list(concurrency, "--concurrency")
    annotated = Path("perf/results/annotated")
    server = TritonServer(output, Ports.free(), model_control="explicit")
    console.print(f"starting tritonserver from {server.installation.source} (log {server.log_file}) ...")
    with server:
        print(f"tritonserver ready: http {server.http_url}  grpc {server.grpc_url}")
        for variant in variants:
            if Variant.parse(variant).model.startswith("yolo"):
                print(f"\npython clients/yolo_client.py --url {server.http_url} --model {variant} --out {annotated} PHOTOS")
                for path, found in zip(photos, detect(photos, variant, server.http_url, "http", 4, 0.25, 0.45)):
                    if found:
                        annotate(path, found, annotated / variant)
                        print(f"  {path.name}: " + ", ".join(f"{d.label} {d.score:.2f}" for d in found[:6]))
            else:
                print(f"\npython clients/resnet_client.py --url {server.http_url} --model {variant} PHOTOS")
                for path, result in zip(photos[:4], classify(photos[:4], variant, server.http_url, "http", 8, 3)):
                    print(f"  {path.name}: " + ", ".join(f"{label} {score:.3f}" for label, score in result))
        points = sweep_with_progress(server.grpc_url, variants, counts, concurrencies, 1, 1500, server.metrics_url)
    report_sweep(points, Path("perf/results"))
    print(f"annotated detections in {annotated}/; server stopped")


@app.command("gpu-pack")
def gpu_pack(
    output: Annotated[Path, typer.Option(help="Folder to fill; name it in the device run's carry.")] = Path(".gpu"),
    bundle_script: Annotated[Path, typer.Option(help="Script that packs tritonserver + perf_analyzer for the GPU machine.")]
    = Path("../shared/device/make-triton-bundle.sh"),
    python: Annotated[str, typer.Option(help="The GPU machine's Python version.")] = "3.12",
    force: Annotated[bool, typer.Option(help="Pack the server bundle again even if one is there.")] = False,
) -> None:
    """Pack what a GPU machine without network needs for perf/gpu/study.sh: the tritonserver + perf_analyzer
    bundle and the wheels its Python lacks (tritonclient's pure-Python client, python-rapidjson). The project's
    own code travels with the working tree; PyTorch, ONNX Runtime and numpy are the machine's."""
    import subprocess
    import sys

    bundle = output / "triton-bundle.tar.xz"
    if force or not bundle.is_file():
        if not bundle_script.is_file():
            raise UserError(f"{bundle_script}: no bundle script; pass --bundle-script make-triton-bundle.sh")
        console.print(f"packing tritonserver + perf_analyzer with {bundle_script} (about a minute) ...")
        subprocess.run(["bash", str(bundle_script), str(output), python], check=True)
    wheels = output / "wheels"
    download = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "-d", str(wheels),
                "--python-version", python, "--implementation", "cp"]
    platforms = ["--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_17_x86_64", "--platform", "manylinux2014_x86_64"]
    for command in (download + ["--platform", "any", "tritonclient==2.50.0"], download + platforms + ["python-rapidjson"]):
        if subprocess.run(command).returncode != 0:
            raise UserError(f"pip download failed: {' '.join(command[4:])}")
    size = sum(f.stat().st_size for f in output.rglob("*") if f.is_file()) / 2**20
    print(f"packed {output} ({size:.0f} MiB). On the GPU machine, from the repository root, with {output} carried:\n"
          f"  bash perf/gpu/study.sh resnet50,yolov3 bench,sweep,cpu")


def main() -> None:
    run_app(app)


if __name__ == "__main__":
    main()
