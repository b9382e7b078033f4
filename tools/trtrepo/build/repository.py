"""Build a model repository: export each model once, build its variants, write configs and manifests.

Each variant folder gets manifest.json (what it was built from, and the hash of every file it holds); a variant
whose manifest matches what would be built, and whose files are all there unchanged, is left as it is, so
`make repo` rebuilds only what changed. A variant is built in a staging folder beside the repository and renamed
into place, manifest last, so an interrupted or failed build leaves the old variant (or none) and never half of
one; a failed variant is reported and the others are built. One build at a time writes into a repository.
"""

from __future__ import annotations

import datetime
import hashlib
import importlib.metadata
import json
import os
import shutil
import tempfile
from dataclasses import asdict, replace
from itertools import groupby
from pathlib import Path
from typing import Callable

import torch

from trtrepo import __version__
from trtrepo.backend import MODEL_ENTRY
from trtrepo.build.assemble import build_ensemble, build_pipeline
from trtrepo.build.calibration import CalibrationSet, calibration_set
from trtrepo.build.plan import RepoPlan
from trtrepo.build.publish import files_intact, folder_files, publish, recover_staging, rejected_dir, repository_lock, staging_dir
from trtrepo.build.status import BuildResult
from trtrepo.format.config import (
    BELOW_GATE_PARAMETER,
    MANIFEST_FILE,
    VERSION,
    Variant,
    artifact_digest,
    file_digest,
    model_config,
    read_manifest,
    write_config,
    write_labels,
)
from trtrepo.build.export import export_onnx
from trtrepo.build.gate import EvaluationSet, Gate, GateReport, build_within_gate, evaluation_set, skip_reason
from trtrepo.imagesets import FEW_PHOTOS
from trtrepo.engines import BuildInputs, get_engine
from trtrepo.engines.base import Runner
from trtrepo.engines.pytorch import network_runner
from trtrepo.engines.tensorrt import installed_tensorrt
from trtrepo.errors import UserError
from trtrepo.models import declared_models, get_model
from trtrepo.specs import DETECTION, TEXT, ModelSpec


RANDOM_SEED = 0
LIBRARIES = ("torch", "torchvision", "onnx", "onnxruntime", "polygraphy")
#: Changes when what a build writes changes, so that older builds are rebuilt once (2: zero-data warm-up; the
#: version folder's files and hashes in the manifest; 3: image input formats, classifiers' labels files).
BUILD_LAYOUT = 3
#: Files an engine keeps in the version folder across rebuilds: TensorRT's tactic timings, which save build time
#: and decide no scale or weight. INT8 scales are calibrated in every build (trtrepo.engines.quantization), so changed
#: weights or images can never meet old ones; a calibration.cache of older builds is left behind.
KEPT_ACROSS_REBUILDS = "timing.cache"
#: Below this much free disk a failed build says so.
LOW_DISK_BYTES = 512 << 20


class BelowGate(Exception):
    """A variant that scored below its accuracy gate; it was set aside in the rejected folder."""

    def __init__(self, report: GateReport, where: Path) -> None:
        super().__init__(f"below its accuracy gate ({report.line()}); set aside in {where} with its report")
        self.report = report


def load_network(spec: ModelSpec, weights: str) -> torch.nn.Module:
    """The network with its weights; ``random`` is seeded, so rebuilds see the same weights."""
    with torch.random.fork_rng():
        torch.manual_seed(RANDOM_SEED)
        return spec.build_network(weights)


def reference_runner(spec: ModelSpec, network: torch.nn.Module | None, onnx_path: Path) -> Runner:
    """What the gate judges variants against: the FP32 PyTorch network, or, for a model whose network is an ONNX
    file, that file run by ONNX Runtime."""
    if network is not None:
        return network_runner(spec, network)
    return get_engine("onnxruntime").load(spec, onnx_path, "fp32", "cpu", os.cpu_count() or 1)


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

            def judge(built: Path, final: bool = False) -> GateReport:
                return gate.judge(engine.load(inputs.spec, built, variant.precision, device, os.cpu_count() or 1), batch, final)

            report = build_within_gate(engine, inputs, variant.precision, artifact, judge, inputs.log, variant.name)
            if gate.needs_final_pass:
                report = replace(judge(artifact, final=True), kept_in_float=report.kept_in_float, trials=report.trials)
        if not native:
            shutil.copyfile(MODEL_ENTRY, version_dir / "model.py")
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
    with repository_lock(plan.output), declared_models(plan.declared):
        recover_staging(plan.output, log)
        try:
            return _build_locked(plan, log, force)
        finally:
            shutil.rmtree(staging_dir(plan.output), ignore_errors=True)


def _build_locked(plan: RepoPlan, log: Callable[[str], None], force: bool) -> list[BuildResult]:
    results: list[BuildResult] = []
    # Text detectors calibrate and are judged on pages of text, every other model on photos: one calibration set of
    # each kind, made before any evaluation set of its kind (a detector's may take the calibration part's unused
    # photos), and one evaluation set per task.
    calibrations: dict[bool, CalibrationSet] = {}
    evaluations: dict[str, EvaluationSet] = {}
    calibrated_kinds = {get_model(v.model).task == TEXT for v in plan.variants if v.precision == "int8"}
    with tempfile.TemporaryDirectory(prefix="trtrepo-export-") as scratch:
        for model, group in groupby(sorted(plan.variants, key=lambda v: v.model), key=lambda v: v.model):
            spec = get_model(model)
            todo = []
            for variant in group:
                engine = get_engine(variant.engine)
                engine.check_precision(variant.precision)
                reason = engine.cannot_build(spec, variant.precision)
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
            text = spec.task == TEXT
            if text in calibrated_kinds and text not in calibrations:
                calibrations[text] = calibration_set(plan.calib_dir, plan.calib_images, text).kept_in(Path(scratch))
                if not calibrations[text].representative:
                    log(f"warning: INT8 calibration on {len(calibrations[text].images)} samples of {calibrations[text].source}: "
                        "not representative of your data; pass --calib-dir for a meaningful INT8 accuracy")
            calibration = calibrations.get(text)
            weights = plan.weights_for(model)
            if spec.onnx_source is None:
                log(f"{model}: loading weights ({weights})")
                network = load_network(spec, weights)
                digest = weights_digest(network)
            else:
                log(f"{model}: its network is the ONNX file {spec.onnx_source}")
                network, digest = None, file_digest(spec.onnx_source)
            thresholds = plan.gate.thresholds_for(model)
            onnx_path, gate = None, None
            for variant, native in todo:
                unjudged = skip_reason(spec, variant.engine, variant.precision, weights)
                if not unjudged and spec.task not in evaluations:
                    evaluations[spec.task] = found = evaluation_set(plan.gate.eval_dir, calibration, plan.gate.eval_images, spec.task)
                    log(f"accuracy gate: judging {spec.task} variants against FP32 on {len(found.samples)} samples of "
                        f"{found.describe()['images']} distinct images ({found.source})")
                    if found.few:
                        log(f"note: {FEW_PHOTOS.format(count=found.describe()['images'])}")
                evaluation = evaluations.get(spec.task)
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
                    if onnx_path is None and network is None:
                        onnx_path = spec.onnx_source
                    elif onnx_path is None:
                        report = export_onnx(spec, network, Path(scratch) / f"{model}.onnx")
                        onnx_path = report.path
                        log(f"{model}: exported ONNX, parity with PyTorch max abs diff {report.max_abs_diff:.2e}")
                    if gate is None and not unjudged:
                        gate = Gate(spec, reference_runner(spec, network, onnx_path), evaluation, thresholds)
                        if spec.task == DETECTION:
                            log(f"accuracy gate: {model} judged on the {gate.described['samples']} samples "
                                f"({gate.described['images']} distinct images) on which FP32 finds a box")
                    inputs = BuildInputs(spec, network, onnx_path, variant.options.max_batch_size,
                                         variant.options.preferred_batch_sizes, calibration, log,
                                         build_options=variant.build_options)
                    judged = build_variant(variant, inputs, plan.output, native, key, None if unjudged else gate,
                                           plan.gate.allow_below)
                except BelowGate as exc:
                    log(f"error: {variant.name} rejected: {exc}" + ("; the previous build is kept" if model_dir.exists() else ""))
                    results.append(BuildResult(variant.name, "rejected", str(exc), gate=_gate_summary(exc.report, None)))
                    continue
                except Exception as exc:  # recorded, and the other variants are built (Ctrl-C still stops the run)
                    failed = _failure(variant.name, exc, plan.output)
                    log(f"error: {variant.name} failed: {failed.detail}" + ("; the previous build is kept" if model_dir.exists() else ""))
                    results.append(failed)
                    continue
                results.append(BuildResult(variant.name, "built", gate=_gate_summary(judged, unjudged)))
                if judged is not None and judged.thin_evidence():
                    log(f"note: {variant.name}: {judged.thin_evidence()}")
                if judged is not None and not judged.passed:
                    log(f"warning: {variant.name} published below its accuracy gate ({judged.line()}), as --allow-below-gate asks")
    for pipeline in plan.pipelines:
        results.append(build_pipeline(pipeline, plan.output, plan.backends, log))
    for name, steps in plan.ensembles:
        results.append(build_ensemble(name, steps, plan.output, log))
    return results


def _gate_summary(report: GateReport | None, unjudged: str | None) -> str:
    """The build table's gate column: the measures against their thresholds, and nodes kept in float."""
    if report is None:
        return f"skipped: {unjudged}"
    floats = f"; {len(report.kept_in_float)} nodes kept in float" if report.kept_in_float else ""
    return f"{'PASS' if report.passed else 'BELOW'}: {report.line()}{floats}"


