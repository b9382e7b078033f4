"""Task measures of one set of outputs against another (top-1 agreement, box recall, mAP@.5, text-line F) and the
least a variant must score on them: what the build's gate, `trtrepo eval` and `trtrepo compare` judge by."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING

import numpy as np

from trtrepo.accuracy.evidence import Interval, bootstrap, groups_of, wilson
from trtrepo.accuracy.metrics import DETECTION_CONF, classifier_agreement, coco_map, coco_map50, match_boxes, match_by_class, precision_recall_f
from trtrepo.errors import UserError
from trtrepo.specs import CLASSIFICATION, DETECTION, RAW, TEXT, ModelSpec

if TYPE_CHECKING:
    from trtrepo.engines.base import Runner


EVALUATION_BATCH = 8
#: mAP's bootstrap draws: each is a pycocotools evaluation at IoU .5, so fewer than the cheap measures' (ends move ~0.02).
MAP_BOOTSTRAP_ROUNDS = 100


@dataclass(frozen=True)
class GateThresholds:
    """The least a variant must score against FP32; only the measures of the model's task apply."""

    top1_agreement: float = 0.99
    box_recall: float = 0.95
    map50: float = 0.95
    text_f: float = 0.95
    #: A raw model's: the share of random samples on which every output stays within the model's tolerance.
    within_tolerance: float = 1.0

    def for_task(self, task: str) -> dict[str, float]:
        return {name: getattr(self, name) for name in GATED_MEASURES[task]}

    def updated(self, values: dict[str, float], where: str) -> "GateThresholds":
        for name, value in values.items():
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value <= 1:
                raise UserError(f"{where}: {name} must be a share between 0 and 1, got {value!r}")
        return replace(self, **{name: float(value) for name, value in values.items()})


GATE_KEYS = tuple(f.name for f in fields(GateThresholds))
GATED_MEASURES = {CLASSIFICATION: ("top1_agreement",), DETECTION: ("box_recall", "map50"), TEXT: ("text_f",),
                  RAW: ("within_tolerance",)}


def run_batches(spec: ModelSpec, runner: "Runner", samples: list[np.ndarray] | list[dict[str, np.ndarray]],
                batch_size: int) -> list[dict[str, np.ndarray]]:
    """The runner's outputs for every sample (an image model's input, or a raw model's inputs by name), one batch at
    a time (one sample at a time where sizes vary)."""
    samples = [sample if isinstance(sample, dict) else {spec.inputs[0].name: sample} for sample in samples]
    if len({tuple(array.shape for array in sample.values()) for sample in samples}) > 1:
        batch_size = 1
    return [runner({name: np.stack([sample[name] for sample in samples[start : start + batch_size]]) for name in samples[0]})
            for start in range(0, len(samples), batch_size)]


def _largest_differences(spec: ModelSpec, reference: list[dict[str, np.ndarray]], candidate: list[dict[str, np.ndarray]]) -> list[float]:
    """Per sample, the largest absolute difference of any output of ``candidate`` from ``reference``."""
    return [max(float(np.abs(c[t.name][0].astype(np.float64) - r[t.name][0]).max()) for t in spec.outputs)
            for r, c in zip(per_sample(reference), per_sample(candidate))]


def task_measures(spec: ModelSpec, reference: list[dict[str, np.ndarray]], candidate: list[dict[str, np.ndarray]]) -> dict[str, float]:
    """The task's measures of ``candidate`` outputs against ``reference`` outputs of the same batches."""
    if spec.task == CLASSIFICATION:
        name = spec.outputs[0].name
        return classifier_agreement(np.concatenate([o[name] for o in reference]), np.concatenate([o[name] for o in candidate]))
    if spec.task == RAW:
        differences = _largest_differences(spec, reference, candidate)
        return {"within_tolerance": float(np.mean([d <= spec.tolerance for d in differences])),
                "max_abs": max(differences)}
    if spec.task == DETECTION:
        truth = [[(d.class_id, d.box) for d in found] for o in reference for found in spec.postprocess(o)]
        kept = [[(d.class_id, d.box) for d in found] for o in candidate for found in spec.postprocess(o)]
        ranked = [[(d.class_id, d.box, d.score) for d in found] for o in candidate
                  for found in spec.postprocess(o, conf=DETECTION_CONF)]
        total = sum(map(len, truth))
        recall = sum(match_by_class(k, t) for k, t in zip(kept, truth)) / total if total else 1.0
        map50_95, map50 = coco_map(truth, ranked)
        return {"box_recall": recall, "map50": map50, "map50_95": map50_95, "reference_boxes": float(total)}
    truth = [[line.bounds() for line in lines] for o in reference for lines in spec.postprocess(o)]
    found = [[line.bounds() for line in lines] for o in candidate for lines in spec.postprocess(o)]
    matched = sum(match_boxes(f, t) for f, t in zip(found, truth))
    if not sum(map(len, truth)) and not sum(map(len, found)):
        return {"text_f": 1.0, "reference_lines": 0.0}
    return {"text_f": precision_recall_f(matched, sum(map(len, found)), sum(map(len, truth)))[2],
            "reference_lines": float(sum(map(len, truth)))}


def per_sample(outputs: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    """Batches of outputs as one output dict per sample (each array keeps a batch dimension of 1)."""
    return [{name: array[i : i + 1] for name, array in batch.items()}
            for batch in outputs for i in range(len(next(iter(batch.values()))))]


def measure_intervals(spec: ModelSpec, reference: list[dict[str, np.ndarray]], candidate: list[dict[str, np.ndarray]],
                      image_keys: list[str], bootstrap_map: bool = True) -> dict[str, Interval]:
    """A 95% interval over distinct images for each gated measure of the task (evidence's methods); ``image_keys``:
    each sample's image (content hash), so crops of one photo count once. ``bootstrap_map`` False leaves out mAP's
    interval (hundreds of pycocotools evaluations: once for the build a gate keeps, not for every trial)."""
    groups = groups_of(image_keys)
    images = len(groups)
    ref, cand = per_sample(reference), per_sample(candidate)
    if spec.task == CLASSIFICATION:
        name = spec.outputs[0].name
        share = float(np.mean([r[name][0].argmax() == c[name][0].argmax() for r, c in zip(ref, cand)]))
        return {"top1_agreement": Interval(*wilson(share * images, images), images, "wilson")}
    if spec.task == RAW:
        share = float(np.mean([d <= spec.tolerance for d in _largest_differences(spec, reference, candidate)]))
        return {"within_tolerance": Interval(*wilson(share * images, images), images, "wilson")}
    if spec.task == DETECTION:
        truth = [[(d.class_id, d.box) for d in spec.postprocess(o)[0]] for o in ref]
        kept = [[(d.class_id, d.box) for d in spec.postprocess(o)[0]] for o in cand]
        ranked = [[(d.class_id, d.box, d.score) for d in spec.postprocess(o, conf=DETECTION_CONF)[0]] for o in cand]
        total = sum(map(len, truth))
        share = sum(match_by_class(k, t) for k, t in zip(kept, truth)) / total if total else 1.0
        recall = {"box_recall": Interval(*wilson(share * images, images), images, "wilson")}
        if not bootstrap_map:
            return recall
        map50 = bootstrap(groups, lambda drawn: coco_map50([truth[i] for i in drawn], [ranked[i] for i in drawn]),
                          rounds=MAP_BOOTSTRAP_ROUNDS)
        return {**recall, "map50": Interval(*map50, images, "bootstrap")}
    truth = [[line.bounds() for line in spec.postprocess(o)[0]] for o in ref]
    found = [[line.bounds() for line in spec.postprocess(o)[0]] for o in cand]
    return {"text_f": text_f_interval(found, truth, groups)}


def text_f_interval(found: list[list], truth: list[list], groups: list[list[int]]) -> Interval:
    """Text-line F of ``found`` against ``truth`` (lines per sample), bootstrapped over the groups (images)."""
    counts = [(match_boxes(f, t), len(f), len(t)) for f, t in zip(found, truth)]

    def f_measure(drawn: list[int]) -> float:
        matched, lines_found, lines_true = (sum(counts[i][k] for i in drawn) for k in range(3))
        return 1.0 if not lines_found and not lines_true else precision_recall_f(matched, lines_found, lines_true)[2]

    return Interval(*bootstrap(groups, f_measure), len(groups), "bootstrap")
