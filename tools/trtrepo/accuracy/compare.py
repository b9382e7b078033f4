"""`trtrepo compare A B`: the same inputs through two variants of one model, and where their answers part.

Per output: max and mean absolute error, relative error (||B - A|| / ||A||), cosine similarity, and the task's
measures of B against A (the accuracy gate's). Where both artifacts are ONNX models, per intermediate tensor too,
in A's order, with the error each node adds: what to read when a reduced-precision variant falls below its gate.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from trtrepo.accuracy.measures import EVALUATION_BATCH, run_batches, task_measures
from trtrepo.engines import get_engine
from trtrepo.engines.onnx_layers import ErrorSums, TensorError, tensor_errors
from trtrepo.errors import UserError
from trtrepo.format.config import CONFIG_FILE, Variant, artifact_of, read_config
from trtrepo.imagesets import ImageSample
from trtrepo.models import get_model
from trtrepo.plots import pyplot, save
from trtrepo.records import write_records


#: Samples the per-layer pass runs on (every tensor of both models is held for a batch at a time).
LAYER_SAMPLES = 16
#: A tensor whose relative error passes this is where "the error first grows" is reported.
NOTICEABLE_ERROR = 0.01


@dataclass(frozen=True)
class OutputDifference:
    output: str
    max_abs: float
    mean_abs: float
    relative: float
    cosine: float


@dataclass(frozen=True)
class Comparison:
    a: str
    b: str
    samples: int
    outputs: list[OutputDifference]
    measures: dict[str, float]
    layers: list[TensorError]
    layers_note: str


def compare_variants(repo: Path, a: str, b: str, images: list[ImageSample]) -> Comparison:
    """Both variants in this process on the CPU (the engines' own runners), on the same preprocessed images."""
    parsed_a, parsed_b = Variant.parse(a), Variant.parse(b)
    if parsed_a.model != parsed_b.model:
        raise UserError(f"{a} and {b} are variants of different models ({parsed_a.model}, {parsed_b.model})")
    spec = get_model(parsed_a.model)
    artifacts = {}
    outputs = {}
    samples = [spec.preprocess_image(image.load()) for image in images]
    for name, parsed in ((a, parsed_a), (b, parsed_b)):
        config_path = Path(repo) / name / CONFIG_FILE
        if not config_path.is_file():
            raise UserError(f"{repo}: no variant {name}; build it with `trtrepo build {parsed.model} --engine "
                            f"{parsed.engine} --precision {parsed.precision}`")
        artifacts[name] = artifact_of(repo, name, read_config(config_path))
        engine = get_engine(parsed.engine)
        reason = engine.unavailable(parsed.precision)
        if reason:
            raise UserError(f"{name}: cannot run here: {reason}")
        runner = engine.load(spec, artifacts[name], parsed.precision, "cpu", os.cpu_count() or 1)
        outputs[name] = run_batches(spec, runner, samples, EVALUATION_BATCH)
    differences = []
    for tensor in spec.outputs:
        sums = ErrorSums()
        for batch_a, batch_b in zip(outputs[a], outputs[b]):
            sums.add(batch_a[tensor.name], batch_b[tensor.name])
        differences.append(OutputDifference(tensor.name, sums.max_abs, sums.abs_sum / max(sums.count, 1),
                                            sums.relative(), sums.cosine()))
    measures = task_measures(spec, outputs[a], outputs[b]) if not spec.judged_whole_as else {}
    if all(path.suffix == ".onnx" for path in artifacts.values()):
        name = spec.inputs[0].name
        batches = [{name: sample[None]} for sample in samples[:LAYER_SAMPLES]]
        layers = tensor_errors(artifacts[a], artifacts[b], batches)
        note = f"per-layer errors on the first {len(batches)} samples, {len(layers)} tensors both models hold"
    else:
        layers, note = [], "no per-layer view: it needs two ONNX artifacts"
    return Comparison(a, b, len(samples), differences, measures, layers, note)


def first_growth(layers: list[TensorError]) -> TensorError | None:
    """The first tensor, in A's order, whose relative error passes NOTICEABLE_ERROR."""
    return next((row for row in layers if row.relative > NOTICEABLE_ERROR), None)


def markdown(result: Comparison, top: int = 10) -> str:
    lines = [f"# {result.b} against {result.a}", "", f"{result.samples} samples through both, in this process.", "",
             "| output | max abs | mean abs | relative | cosine |", "|---|---|---|---|---|"]
    lines += [f"| {d.output} | {d.max_abs:.4g} | {d.mean_abs:.4g} | {d.relative:.4g} | {d.cosine:.6f} |" for d in result.outputs]
    if result.measures:
        lines += ["", "Task measures of B against A: " + ", ".join(f"{k} {v:.4f}" for k, v in result.measures.items())]
    lines += ["", f"Layers: {result.layers_note}."]
    if result.layers:
        first = first_growth(result.layers)
        if first:
            lines.append(f"The error first passes {NOTICEABLE_ERROR:.0%} at `{first.name}` ({first.op} {first.node}, "
                         f"depth {first.depth}): {first.relative:.3g}.")
        lines += ["", "Nodes that add the most error (the mixed-precision search keeps such nodes in float):", "",
                  "| depth | node | op | laid to | relative error | added | cosine |", "|---|---|---|---|---|---|---|"]
        for row in sorted(result.layers, key=lambda r: -r.growth)[:top]:
            lines.append(f"| {row.depth} | {row.node} | {row.op} | {row.origin} | {row.relative:.4g} | {row.growth:+.4g} | {row.cosine:.5f} |")
        lines.append("\nEvery tensor, in A's order: compare_layers.csv; plotted in compare.png.")
    return "\n".join(lines) + "\n"


def write_report(result: Comparison, out_dir: Path) -> dict[str, Path]:
    """compare.md, compare_outputs.csv, compare_layers.csv (where both are ONNX) and compare.png."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"markdown": out_dir / "compare.md", "outputs": out_dir / "compare_outputs.csv"}
    files["markdown"].write_text(markdown(result))
    write_records(result.outputs, files["outputs"])
    if result.layers:
        files["layers"] = out_dir / "compare_layers.csv"
        write_records(result.layers, files["layers"])
        files["plot"] = out_dir / "compare.png"
        _plot(result, files["plot"])
    return files


def _plot(result: Comparison, path: Path) -> None:
    """Relative error of every shared tensor against its depth in A, the nodes that add the most marked."""
    plt = pyplot()
    figure, axes = plt.subplots(figsize=(11, 4.5))
    depths = [row.depth for row in result.layers]
    errors = [max(row.relative, 1e-9) for row in result.layers]
    axes.plot(depths, errors, marker=".", linewidth=1, color="tab:blue", label="relative error of the tensor")
    for row in sorted(result.layers, key=lambda r: -r.growth)[:5]:
        label = row.origin.strip("/").rsplit("/", 1)[0] if "/" in row.origin.strip("/") else row.origin
        axes.annotate(label, (row.depth, max(row.relative, 1e-9)), fontsize=7, rotation=30, color="tab:red")
        axes.plot([row.depth], [max(row.relative, 1e-9)], "o", color="tab:red")
    axes.axhline(NOTICEABLE_ERROR, color="grey", linestyle=":", linewidth=1)
    axes.set(yscale="log", xlabel=f"depth in {result.a} (node index)", ylabel="||B - A|| / ||A||",
             title=f"{result.b} against {result.a}: error by layer (red: nodes adding the most)")
    axes.grid(alpha=0.3)
    save(figure, path, dpi=110)
