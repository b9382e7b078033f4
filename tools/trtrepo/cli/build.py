"""Commands that build: export, build, repo, config, validate, tfserving."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from trtrepo.cli.app import (
    AllowBelowGateOption,
    CalibDirOption,
    CalibImagesOption,
    DeclareOption,
    Engine,
    EvalDirOption,
    Kind,
    Precision,
    REPOSITORY,
    WeightsOption,
    app,
    int_list,
    name_list,
)
from trtrepo.engines.tensorrt import TARGET_TENSORRT, TARGET_TRITON, installed_tensorrt
from trtrepo.errors import UserError
from trtrepo.perf.progress import console, progress
from trtrepo.serving.objectstore import local_copy

if TYPE_CHECKING:
    from trtrepo.build.plan import RepoPlan


@app.command()
def export(
    model: Annotated[str, typer.Argument(help="Model name: a built-in one (resnet50) or one declared in the plan or --declare.")],
    output: Annotated[Path, typer.Option(help="ONNX file to write.")],
    weights: Annotated[str, typer.Option(help="pretrained (a declared model's: its declared weights), random, or a weights PATH.")] = "pretrained",
    plan: Annotated[Optional[Path], typer.Option(help="The plan whose [[model]] tables may declare MODEL (default ./repo.toml).")] = None,
    declare: DeclareOption = None,
) -> None:
    """PyTorch -> ONNX with a dynamic batch axis, checked by onnx.checker and by parity with PyTorch."""
    from trtrepo.build.export import export_onnx
    from trtrepo.build.plan import load_plan
    from trtrepo.models import declared_models, get_model

    with declared_models(load_plan(plan, declare=declare).declared):
        spec = get_model(model)
        report = export_onnx(spec, spec.build_network(weights), output)
    print(f"{report.path}: ONNX Runtime vs PyTorch max abs diff {report.max_abs_diff:.2e}")


@app.command()
def build(
    model: Annotated[str, typer.Argument(help="Model name: a built-in one (resnet50) or one declared in the plan or --declare.")],
    engine: Annotated[Engine, typer.Option(help="Inference engine of the variant.")] = Engine.onnxruntime,
    precision: Annotated[Precision, typer.Option(help="Numeric precision of the variant.")] = Precision.fp32,
    weights: WeightsOption = None,
    output: Annotated[Path, typer.Option(help="Model repository to write the variant into.")] = REPOSITORY,
    backends: Annotated[Optional[str], typer.Option(help="Backends of the target server: auto, or e.g. python,onnxruntime.")] = None,
    calib_dir: CalibDirOption = None,
    calib_images: CalibImagesOption = None,
    eval_dir: EvalDirOption = None,
    allow_below_gate: AllowBelowGateOption = False,
    declare: DeclareOption = None,
) -> None:
    """Build one variant <model>_<engine>_<precision> into the repository (serving defaults from repo.toml),
    judged by the accuracy gate before it is published."""
    from dataclasses import replace

    from trtrepo.build.plan import load_plan

    from trtrepo.build.repository import build_repository
    from trtrepo.engines import get_engine
    from trtrepo.format.config import Variant, engine_options
    from trtrepo.models import declared_models, get_model

    chosen = get_engine(engine.value)
    chosen.check_precision(precision.value)
    plan = load_plan(weights=weights, output=output, backends=backends, calib_dir=calib_dir, calib_images=calib_images,
                     eval_dir=eval_dir, allow_below_gate=allow_below_gate, declare=declare)
    with declared_models(plan.declared):
        reason = chosen.cannot_build(get_model(model), precision.value)
    if reason:
        raise UserError(f"cannot build {model}_{engine.value}_{precision.value}: {reason}")
    planned = {(v.engine, v.precision): v for v in plan.variants if v.model == model}
    variant = planned.get((engine.value, precision.value)) or Variant(
        model, engine.value, precision.value, engine_options(chosen, plan.defaults, "", kind_set=False))
    (result,) = build_repository(replace(plan, variants=(variant,), pipelines=(), ensembles=()), console.print, force=True)
    if result.status in ("failed", "rejected"):
        raise UserError(f"{variant.name}: {result.detail}")
    print(f"built {plan.output / variant.name} (gate {result.gate})")


@app.command()
def repo(
    plan: Annotated[Optional[Path], typer.Option(
        help="Declarative plan; default ./repo.toml if present, else the plan trtrepo ships (the project's repo.toml).")] = None,
    models: Annotated[Optional[str], typer.Option(help="Comma-separated models to build (default: all in the plan).")] = None,
    weights: WeightsOption = None,
    output: Annotated[Optional[Path], typer.Option(help="Repository folder (default: the plan's, model_repository).")] = None,
    backends: Annotated[Optional[str], typer.Option(help="auto (ask the local tritonserver) or e.g. python,onnxruntime,tensorrt.")] = None,
    calib_dir: CalibDirOption = None,
    calib_images: CalibImagesOption = None,
    eval_dir: EvalDirOption = None,
    allow_below_gate: AllowBelowGateOption = False,
    force: Annotated[bool, typer.Option(help="Rebuild variants whose manifest says they are up to date.")] = False,
    declare: DeclareOption = None,
) -> None:
    """Build every variant of the plan that this machine can build and that changed; judge each reduced-precision
    variant against FP32 (the accuracy gate) before publishing it; validate the result."""
    from trtrepo.build.plan import load_plan

    build_plan(load_plan(plan, name_list(models), weights, output, backends, calib_dir=calib_dir, calib_images=calib_images,
                         eval_dir=eval_dir, allow_below_gate=allow_below_gate, declare=declare), force)


def build_plan(repo_plan: "RepoPlan", force: bool = False, go_on_past_gate: bool = False) -> None:
    """Build a plan with a progress bar, print what became of each variant and its gate, then validate; a variant
    that failed, or fell below its gate (unless ``go_on_past_gate``: the demo shows the refusal and goes on), is
    one error line."""
    from trtrepo.build.repository import build_repository
    from trtrepo.format.validate import validate_repository

    console.print(f"plan: {repo_plan.plan_file}")
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
    failed = [r for r in results if r.status == "failed" or (r.status == "rejected" and not go_on_past_gate)]
    refused = [r.variant for r in results if r.status == "rejected"]
    if refused and not failed:
        print(f"{', '.join(refused)}: set aside by the accuracy gate (above); going on without {'them' if len(refused) > 1 else 'it'}")
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
    """Change a model's instance group, dynamic batching or warm-up in place; prints the resulting config. A change
    that would leave a pipeline of the repository gathering more than its variant takes, or calling a pipelined one,
    is refused, the config kept.
    `trtrepo serve` loads the change within seconds (it watches its repository); another running server after its
    next load of the model (a restart, trtrepo perf's trials)."""
    from google.protobuf import text_format

    from trtrepo.format.config import CONFIG_FILE, apply_serving_options, read_config, serving_options_of, write_config
    from trtrepo.format.validate import pipeline_problems

    if not (model_dir / CONFIG_FILE).is_file():
        raise UserError(f"{model_dir}: no {CONFIG_FILE} there; give the model's folder, such as "
                        f"{REPOSITORY / model_dir.name if len(model_dir.parts) == 1 else 'model_repository/NAME'}")
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
    problems = pipeline_problems(model_dir.resolve().parent, {model_dir.resolve().name: current})
    if problems:
        raise UserError(f"refused, {model_dir / CONFIG_FILE} left as it was: {problems[0]}")
    write_config(current, model_dir)
    print(text_format.MessageToString(current), end="")
    console.print(f"wrote {model_dir / CONFIG_FILE}: `trtrepo serve` loads it within seconds; another running server "
                  "at its next load of the model (a restart)", highlight=False)


@app.command()
def validate(
    repository: Annotated[str, typer.Argument(help="Model repository: a folder, or s3://... (fetched to check).")] = str(REPOSITORY),
    tensorrt_version: Annotated[str, typer.Option(
        help="TensorRT of the server the repository is for: a TensorRT plan loads only on the TensorRT release that "
             f"built it. Default: Triton {TARGET_TRITON}'s.")] = TARGET_TENSORRT,
) -> None:
    """Parse every config.pbtxt against Triton's schema and check version folders, model files, instance kinds
    and the TensorRT version of each plan."""
    from trtrepo.format.validate import repository_warnings, validate_repository

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
    from trtrepo.build.tfserving import GRPC_PORT, export_tfserving, serve_command
    from trtrepo.perf.analyzer import TFSERVING

    exported = export_tfserving(model_repository, output, base_path, console.print)
    names = ",".join(e.name for e in exported)
    print(f"wrote {output} ({len(exported)} models)\nserve it:  {serve_command(output, base_path)}\n"
          f"sweep it:  trtrepo perf --service-kind {TFSERVING} --url localhost:{GRPC_PORT} --models {names}")
