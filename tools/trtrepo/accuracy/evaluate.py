"""Accuracy per variant through Triton, beside its time per batch: the study's Table 3 shape, with each variant
held to its accuracy gate against the reference on the same images (PASS / FAIL).

Classifiers: top-1, top-5 and top-1 agreement with the FP32 reference on an ImageNet-style folder.
Detectors: COCO mAP@[.5:.95] and mAP@.5 (pycocotools) on images with a COCO instances file, and the share of the
reference's boxes found and mAP@.5 against them. CTPN: text-line precision, recall, F, and F against the reference.
"""

from __future__ import annotations

import contextlib
import io
import time
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from trtrepo.accuracy.evidence import Interval, decides, groups_of, wilson
from trtrepo.accuracy.icdar import text_ground_truth
from trtrepo.accuracy.measures import GateThresholds, measure_intervals, task_measures, text_f_interval
from trtrepo.accuracy.metrics import DETECTION_CONF, match_boxes, precision_recall_f
from trtrepo.engines.tensorflow import tensorflow_note
from trtrepo.errors import UserError
from trtrepo.format.config import Variant, read_manifest
from trtrepo.imagesets import content_hash
from trtrepo.models import get_model
from trtrepo.models.ctpn import CTPN, TextLine
from trtrepo.plots import pyplot, save
from trtrepo.records import write_records
from trtrepo.serving.client import InferenceClient
from trtrepo.specs import IMAGE_SUFFIXES, TEXT, ModelSpec, load_image


# Darknet's coco.names spells six classes differently from the COCO annotation files.
COCO_ALIASES = {"motorbike": "motorcycle", "aeroplane": "airplane", "sofa": "couch", "pottedplant": "potted plant",
                "diningtable": "dining table", "tvmonitor": "tv"}


@dataclass(frozen=True)
class EvalRow:
    """A classifier variant's figures; the fields after ``speedup`` are shares in 0..1."""

    variant: str
    images: int
    batch_size: int
    seconds_per_batch: float
    speedup: float  # reference time per batch / this variant's
    top1: float
    top5: float
    agreement: float  # share of images whose top-1 equals the reference's
    gate: str = ""  # PASS or FAIL against the variant's accuracy gate, on these images
    evidence: str = ""  # the 95% interval of the gated measure against the reference, over distinct images


@dataclass(frozen=True)
class DetectionRow:
    """A detector variant's figures; the fields after ``speedup`` are shares in 0..1."""

    variant: str
    images: int
    batch_size: int
    seconds_per_batch: float
    speedup: float
    map_50_95: float
    map_50: float
    box_recall: float  # share of the reference's boxes found (same class, IoU >= 0.5, client threshold)
    map50_vs_reference: float  # mAP@.5 against the reference's boxes
    gate: str = ""
    evidence: str = ""  # the 95% interval of the gated measure against the reference, over distinct images


@dataclass(frozen=True)
class TextRow:
    """A text-detector variant's figures; the fields after ``speedup`` are shares in 0..1."""

    variant: str
    images: int
    batch_size: int
    seconds_per_batch: float
    speedup: float
    precision: float
    recall: float
    f_measure: float
    f_vs_reference: float  # F-measure of the variant's lines against the reference's
    gate: str = ""
    evidence: str = ""  # the 95% interval of the gated measure against the reference, over distinct images


def labelled_images(data: Path, labels_file: Path | None, class_names: list[str]) -> tuple[list[Path], np.ndarray]:
    """Images and class indices from class-name subfolders of ``data``, or from ``labels_file`` lines
    ``relative/path.jpg<whitespace>label`` where label is a class index or name."""
    data = Path(data)
    if not data.is_dir():
        raise UserError(f"{data}: no such data folder")
    by_name = {name.lower(): index for index, name in enumerate(class_names)}

    def index_of(label: str, where: str) -> int:
        label = label.strip()
        if label.isdigit() and int(label) < len(class_names):
            return int(label)
        if label.lower() in by_name:
            return by_name[label.lower()]
        raise UserError(f"{where}: {label!r} is neither a class name nor an index below {len(class_names)}")

    pairs: list[tuple[Path, int]] = []
    if labels_file is not None:
        try:
            lines = Path(labels_file).read_text().splitlines()
        except OSError as exc:
            raise UserError(f"{labels_file}: cannot read labels file ({exc.strerror})") from exc
        for number, line in enumerate(lines, 1):
            if not line.strip() or line.startswith("#"):
                continue
            parts = line.split(maxsplit=1)
            if len(parts) != 2:
                raise UserError(f"{labels_file}:{number}: expected 'path label', got {line!r}")
            pairs.append((data / parts[0], index_of(parts[1], f"{labels_file}:{number}")))
    else:
        for folder in sorted(p for p in data.iterdir() if p.is_dir()):
            label = index_of(folder.name.replace("_", " "), str(folder))
            pairs += [(p, label) for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]
    if not pairs:
        raise UserError(f"{data}: no labelled images (class-name subfolders, or --labels FILE)")
    return [p for p, _ in pairs], np.array([label for _, label in pairs])


def timed_batches(client: InferenceClient, samples: np.ndarray, input_name: str, batch_size: int) -> tuple[list[dict], float]:
    """Each batch's outputs and the mean wall time of one request of ``batch_size`` samples (after a warm-up)."""
    step = client.batch_step(batch_size)
    client.infer({input_name: samples[:step]})
    outputs, times = [], []
    for start in range(0, len(samples), step):
        began = time.perf_counter()
        outputs.append(client.infer({input_name: samples[start : start + step]}))
        times.append(time.perf_counter() - began)
    return outputs, float(np.mean(times))


def reference_of(variants: list[str]) -> str:
    """The model's eager-PyTorch FP32 variant where evaluated, else the first FP32 one, else the first."""
    reference = Variant.parse(variants[0]).baseline
    if reference in variants:
        return reference
    return next((v for v in variants if v.endswith("_fp32")), variants[0])


def thresholds_of(repo: Path, variant: str, task: str) -> dict[str, float]:
    """The gate a variant was built against (its manifest's), else the default gate of its task."""
    result = read_manifest(Path(repo) / variant).get("gate_result")
    if not isinstance(result, dict) or not isinstance(result.get("thresholds"), dict):
        return GateThresholds().for_task(task)
    return {str(k): float(v) for k, v in result["thresholds"].items()}


def verdict(variant: str, reference: str, measures: dict[str, float], thresholds: dict[str, float]) -> str:
    if variant == reference:
        return "reference"
    return "PASS" if all(measures[name] >= least for name, least in thresholds.items()) else "FAIL"


def evaluate(
    spec: ModelSpec, url: str, protocol: str, variants: list[str], images: list[Path], labels: np.ndarray, batch_size: int,
    gates: dict[str, dict[str, float]] | None = None,
) -> tuple[list[EvalRow], str]:
    """Every classifier variant on the same preprocessed images, top-1 against the labels with its 95% interval
    beside agreement with the reference; returns the rows and the reference's name."""
    samples = np.stack([spec.preprocess(path) for path in images])
    predictions = {}
    for variant in variants:
        client = InferenceClient(variant, url=url, protocol=protocol)
        outputs, seconds = timed_batches(client, samples, spec.inputs[0].name, batch_size)
        logits = np.concatenate([o[spec.outputs[0].name] for o in outputs])
        predictions[variant] = (np.argsort(-logits, axis=1)[:, :5], seconds)
    reference = reference_of(variants)
    ref_top1, ref_time = predictions[reference][0][:, 0], predictions[reference][1]
    rows = []
    for variant, (top5, seconds) in predictions.items():
        agreed = int(np.sum(top5[:, 0] == ref_top1))
        agreement = agreed / len(images)
        gate = (gates or {}).get(variant) or GateThresholds().for_task(spec.task)
        interval = Interval(*wilson(agreed, len(images)), len(images), "wilson")
        correct = int(np.sum(top5[:, 0] == labels))
        top1 = Interval(*wilson(correct, len(images)), len(images), "wilson")
        evidence = "; ".join(filter(None, (evidence_of(variant, reference, {"top1_agreement": interval}), f"top-1 {top1.text()}")))
        rows.append(EvalRow(variant, len(images), batch_size, seconds, ref_time / seconds if seconds else 0.0,
                            top1=correct / len(images), top5=float(np.mean((top5 == labels[:, None]).any(axis=1))),
                            agreement=agreement, gate=verdict(variant, reference, {"top1_agreement": agreement}, gate),
                            evidence=evidence))
    return rows, reference


def evaluate_detection(
    spec: ModelSpec, url: str, protocol: str, variants: list[str], data: Path, annotations: Path, batch_size: int,
    gates: dict[str, dict[str, float]] | None = None,
) -> tuple[list[DetectionRow], str]:
    """COCO mAP of every detector variant on the images the annotations file lists (found under ``data``)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from trtrepo.models.detection import to_image_coords

    try:
        with contextlib.redirect_stdout(io.StringIO()):
            truth = COCO(str(annotations))
    except (OSError, ValueError, KeyError) as exc:
        raise UserError(f"{annotations}: not a readable COCO instances file ({exc.__class__.__name__}: {exc})") from exc
    category_ids = {c["name"]: c["id"] for c in truth.loadCats(truth.getCatIds())}
    category_of = [category_ids.get(COCO_ALIASES.get(name, name)) for name in spec.class_names]
    records = truth.loadImgs(truth.getImgIds())
    if not records:
        raise UserError(f"{annotations}: lists no images")
    prepared = [spec.letterbox(Path(data) / record["file_name"]) for record in records]
    samples = np.stack([array for array, _ in prepared])
    scores, times, raw = {}, {}, {}
    for variant in variants:
        client = InferenceClient(variant, url=url, protocol=protocol)
        outputs, times[variant] = timed_batches(client, samples, spec.inputs[0].name, batch_size)
        raw[variant] = outputs
        found = [d for o in outputs for d in spec.postprocess(o, conf=DETECTION_CONF)]
        results = [
            {"image_id": record["id"], "category_id": category_of[d.class_id], "score": d.score,
             "bbox": [d.box[0], d.box[1], d.box[2] - d.box[0], d.box[3] - d.box[1]]}
            for record, detections, (_, box) in zip(records, found, prepared)
            for d in to_image_coords(detections, box)
            if category_of[d.class_id] is not None
        ]
        scores[variant] = (0.0, 0.0)
        if results:
            with contextlib.redirect_stdout(io.StringIO()):
                evaluation = COCOeval(truth, truth.loadRes(results), "bbox")
                evaluation.evaluate()
                evaluation.accumulate()
                evaluation.summarize()
            scores[variant] = (max(0.0, float(evaluation.stats[0])), max(0.0, float(evaluation.stats[1])))
    reference = reference_of(variants)
    keys = [content_hash(Path(data) / record["file_name"]) for record in records]
    rows = []
    for variant in variants:
        measures = task_measures(spec, raw[reference], raw[variant])
        gate = (gates or {}).get(variant) or GateThresholds().for_task(spec.task)
        intervals = measure_intervals(spec, raw[reference], raw[variant], keys) if variant != reference else {}
        rows.append(DetectionRow(variant, len(records), batch_size, times[variant],
                                 times[reference] / times[variant] if times[variant] else 0.0, *scores[variant],
                                 box_recall=measures["box_recall"], map50_vs_reference=measures["map50"],
                                 gate=verdict(variant, reference, measures, gate),
                                 evidence=evidence_of(variant, reference, intervals)))
    return rows, reference


#: CTPN images prepared and in flight at once.
WAVE = 16


def find_text(
    images: list[Path], model: str, url: str | None, protocol: str, line_score: float = CTPN.line_min_score,
    workers: int = 2, on_done=lambda count: None,
) -> list[list[TextLine]]:
    """Resize here, infer through Triton (the whole model or the split ensemble), connect proposals here."""
    spec = get_model("ctpn")
    client = InferenceClient(model, url=url, protocol=protocol, concurrency=workers)
    results: list[list[TextLine]] = []
    for start in range(0, len(images), WAVE):
        prepared = [spec.resize(load_image(path)) for path in images[start : start + WAVE]]
        outputs = client.infer_many([{"input": array[None]} for array, _ in prepared], lambda: on_done(1))
        results += [spec.postprocess(out, scale=scale, line_min_score=line_score)[0] for out, (_, scale) in zip(outputs, prepared)]
    return results


def evaluate_text(
    url: str, protocol: str, variants: list[str], data: Path, gt_dir: Path, line_score: float = CTPN.line_min_score,
    gates: dict[str, dict[str, float]] | None = None,
) -> tuple[list[TextRow], str]:
    """Text-line precision, recall and F-measure at IoU 0.5 of the whole model and the split ensemble, against the
    ground truth and against the reference's lines, each F with its 95% interval over the images."""

    pairs = text_ground_truth(data, gt_dir)
    groups = groups_of([content_hash(image) for image, _ in pairs])
    rows, times, lines_of = [], {}, {}
    for variant in variants:
        began = time.perf_counter()
        found = find_text([image for image, _ in pairs], variant, url, protocol, line_score, workers=1)
        times[variant] = (time.perf_counter() - began) / len(pairs)
        lines_of[variant] = [[line.bounds() for line in lines] for lines in found]
        matched = sum(match_boxes(lines, truth) for lines, (_, truth) in zip(lines_of[variant], pairs))
        scores = precision_recall_f(matched, sum(map(len, found)), sum(len(truth) for _, truth in pairs))
        rows.append((variant, scores))
    reference = reference_of(variants)
    result = []
    for variant, scores in rows:
        expected = lines_of[reference]
        matched = sum(match_boxes(lines, truth) for lines, truth in zip(lines_of[variant], expected))
        against = precision_recall_f(matched, sum(map(len, lines_of[variant])), sum(map(len, expected)))[2]
        if not sum(map(len, expected)) and not sum(map(len, lines_of[variant])):
            against = 1.0
        gate = (gates or {}).get(variant) or GateThresholds().for_task(TEXT)
        interval = text_f_interval(lines_of[variant], expected, groups)
        truthful = text_f_interval(lines_of[variant], [truth for _, truth in pairs], groups)
        evidence = "; ".join(filter(None, (evidence_of(variant, reference, {"text_f": interval}), f"F vs truth {truthful.text()}")))
        result.append(TextRow(variant, len(pairs), 1, times[variant], times[reference] / times[variant] if times[variant] else 0.0,
                              *scores, f_vs_reference=against, gate=verdict(variant, reference, {"text_f": against}, gate),
                              evidence=evidence))
    return result, reference


def evidence_of(variant: str, reference: str, intervals: dict[str, Interval]) -> str:
    """The eval table's evidence column: each gated measure's interval (none for the reference itself)."""
    if variant == reference:
        return ""
    return "; ".join(f"{name} {interval.text()}" for name, interval in intervals.items())


def _metric_fields(row: object) -> list[str]:
    """The shares in 0..1 after ``speedup`` (the gate's verdict and its evidence are not)."""
    names = [f.name for f in fields(row) if f.name not in ("gate", "evidence")]
    return names[names.index("speedup") + 1 :]


def markdown(rows: list, reference: str) -> str:
    metrics = _metric_fields(rows[0])
    header = ["variant", "time per batch (s)", "speedup", *metrics, "gate", "evidence"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        values = [f"{getattr(row, m):.4f}" for m in metrics]
        lines.append(f"| {row.variant} | {row.seconds_per_batch:.4f} | {row.speedup:.2f}x | " + " | ".join(values)
                     + f" | {row.gate} | {row.evidence or '-'} |")
    first = rows[0]
    return "\n".join(lines) + (f"\n\n{first.images} images, batches of {first.batch_size}, through Triton; "
                               f"speedup, agreement and the measures against the reference relative to {reference}; "
                               "gate: each variant's accuracy gate (from its manifest) on these images.\n"
                               + tensorflow_note([row.variant for row in rows]))


def write_report(rows: list, reference: str, out_dir: Path) -> dict[str, Path]:
    """eval.csv, eval.md and eval.png (speedup and accuracy bars per variant) in out_dir."""
    plt = pyplot()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_records(rows, out_dir / "eval.csv")
    (out_dir / "eval.md").write_text("# Accuracy and speed per variant\n\n" + markdown(rows, reference))
    names = [r.variant for r in rows]
    metrics = _metric_fields(rows[0])
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 0.6 * len(rows) + 2.5))
    left.barh(names, [r.speedup for r in rows], color="tab:blue")
    left.set(xlabel=f"speedup over {reference} (time per batch)", title="Speed")
    height = 0.8 / len(metrics)
    positions = np.arange(len(rows))
    for offset, metric in enumerate(metrics):
        right.barh(positions + (offset - (len(metrics) - 1) / 2) * height, [getattr(r, metric) for r in rows], height, label=metric)
    right.set_yticks(positions, names)
    right.set(xlim=(0, 1.05), title="Accuracy")
    right.legend(fontsize=8, loc="lower right")
    for axes in (left, right):
        axes.grid(axis="x", alpha=0.3)
    save(figure, out_dir / "eval.png", dpi=110)
    return {"csv": out_dir / "eval.csv", "markdown": out_dir / "eval.md", "plot": out_dir / "eval.png"}


def gate_table(points: list, repo: Path) -> str:
    """The study's Table 3 from a sweep and the repository's manifests: per variant its best served throughput,
    its speed over the model's PyTorch FP32 baseline, what it scored against FP32 at build time, and its gate."""
    best: dict[str, float] = {}
    for point in points:
        best[point.variant] = max(best.get(point.variant, 0.0), point.throughput)
    serves = {p.variant: p.serves for p in points if p.serves}  # pipeline -> the tensor variant it calls
    lines = ["| variant | best samples/s | over PyTorch FP32 | against FP32 (build-time gate) | gate |", "|---|---|---|---|---|"]
    for variant in sorted(best):
        baseline = Variant.parse(serves.get(variant, variant)).baseline
        speedup = f"{best[variant] / best[baseline]:.2f}x" if best.get(baseline) else "-"
        if variant in serves:
            tensors = best.get(serves[variant])
            share = f"{best[variant] / tensors:.0%} of {serves[variant]}'s tensors-in" if tensors else "its variant not measured"
            lines.append(f"| {variant} (pipeline: photos in) | {best[variant]:.1f} | {speedup} | bytes in: {share} | - |")
            continue
        result = read_manifest(Path(repo) / variant).get("gate_result")
        if result:
            intervals = result.get("intervals") or {}
            measures = ", ".join(f"{name} {result['measures'][name]:.3f}"
                                 + (f" ({Interval(**intervals[name]).text()})" if name in intervals else "")
                                 for name in result["thresholds"])
            floats = f"; {len(result['kept_in_float'])} nodes in float" if result.get("kept_in_float") else ""
            verdict_text = "PASS" if result["passed"] else "FAIL (published below its gate)"
            if not all(decides(least, intervals.get(name)) for name, least in result["thresholds"].items() if least < 1):
                verdict_text += " (point estimate: too few images for the interval to decide)"
            lines.append(f"| {variant} | {best[variant]:.1f} | {speedup} | {measures}{floats} | {verdict_text} |")
        else:
            why = "reference" if variant == baseline else "not judged (random weights)"
            lines.append(f"| {variant} | {best[variant]:.1f} | {speedup} | {why} | - |")
    note = tensorflow_note(sorted(best))
    return "\n".join(lines) + "\n" + (f"\n{note}" if note else "")  # a blank line: text right under a table is a row
