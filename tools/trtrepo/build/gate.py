"""The accuracy gate: every variant that is not the FP32 reference is run beside the model's PyTorch FP32 network
on images it was not calibrated on, and judged by the task's own measure before it is published.

Classifiers: top-1 agreement with FP32 (and FP32's top-1 among the variant's top 5, reported). Detectors, on the
images where FP32 finds a box: the share of FP32's boxes (client threshold) the variant finds with the same class at
IoU >= 0.5, and COCO mAP of the variant's boxes (evaluation threshold) against FP32's. Text: F-measure of the
variant's lines against FP32's. A measure passes when its 95% interval's lower end clears the threshold, where the
distinct images are enough for that (decides). A variant below its gate may keep fewer nodes in reduced precision
(mixed precision, where its engine can): the fewest of the nodes that cost most are kept in float until it passes.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from trtrepo.accuracy.evidence import Interval, decides, images_needed
from trtrepo.accuracy.measures import EVALUATION_BATCH, GateThresholds, measure_intervals, per_sample, run_batches, task_measures
from trtrepo.errors import UserError
from trtrepo.imagesets import ImageSample, content_hash, default_photos, default_text_pages, images_in, with_crops
from trtrepo.photopool import CALIBRATION, EVALUATION
from trtrepo.specs import CLASSIFICATION, DETECTION, RAW, TEXT, ModelSpec

if TYPE_CHECKING:
    from trtrepo.build.calibration import CalibrationSet
    from trtrepo.engines.base import BuildInputs, Engine, Runner


#: Whole images first, then crops of them: 8 photos give 112 samples, so one disagreement still passes 99%.
DEFAULT_EVALUATION_IMAGES = 112
#: The random input samples a raw model's reduced-precision variant is judged on.
RAW_SAMPLES = 64


@dataclass(frozen=True)
class GatePlan:
    """The plan's [gate] table: thresholds (defaults, and per model), the evaluation images, and whether a
    variant below its gate is published anyway (marked) instead of set aside."""

    defaults: GateThresholds = GateThresholds()
    per_model: tuple[tuple[str, GateThresholds], ...] = ()
    eval_dir: Path | None = None
    eval_images: int = DEFAULT_EVALUATION_IMAGES
    allow_below: bool = False

    def thresholds_for(self, model: str) -> GateThresholds:
        return dict(self.per_model).get(model, self.defaults)


def skip_reason(spec: ModelSpec, engine: str, precision: str, weights: str) -> str | None:
    """Why a variant is not judged: it is the reference itself, its weights are random, or it is a part of a
    model served split, judged whole."""
    if engine == "pytorch" and precision == "fp32":
        return "the FP32 reference itself"
    if spec.onnx_source is not None and engine == "onnxruntime" and precision == "fp32":
        return "the FP32 reference itself (its ONNX file)"
    if weights == "random":
        return "random weights: agreement with FP32 would mean nothing"
    return spec.judged_whole_as and f"a part of a split model: judged whole, as {spec.judged_whole_as}"


@dataclass(frozen=True)
class EvaluationSet:
    samples: tuple[ImageSample, ...]
    source: str
    #: The few shipped photos stand in for images of the user's or the photo pool's: the build says so.
    few: bool = False
    #: At most this many samples are judged (a detector's: of those on which FP32 finds a box); None: all.
    judged_at_most: int | None = None

    def image_keys(self) -> list[str]:
        """Each sample's image by content: crops of one photo, or two copies of one file, are one image."""
        hashes = {path: content_hash(path) for path in {s.path for s in self.samples}}
        return [hashes[s.path] for s in self.samples]

    def describe(self) -> dict:
        hashes = dict(zip((s.path for s in self.samples), self.image_keys()))
        return {"source": self.source, "samples": len(self.samples), "files": len(hashes),
                "images": len(set(hashes.values())),
                "listed": [{"path": str(path), "sha256": digest} for path, digest in sorted(hashes.items())]}

    def only(self, indices: list[int], why: str) -> "EvaluationSet":
        """The samples at ``indices``, the source saying ``why`` they were kept."""
        return replace(self, samples=tuple(self.samples[i] for i in indices), source=f"{self.source}; {why}",
                       judged_at_most=None)


def evaluation_set(eval_dir: Path | None, calibration: "CalibrationSet | None", count: int, task: str = CLASSIFICATION) -> EvaluationSet:
    """``count`` samples from ``eval_dir`` (else the evaluation photos; a text detector's: rendered pages of text),
    none of them a calibration image by content (a copy under another name is the same image); crops and mirror
    images when there are fewer files, except for a text detector (a crop would cut its lines: whole images only).

    A detector is judged only where FP32 finds a box (Gate), so its candidates are every image calibration did not
    use (with the photo pool: the calibration part's unused photos after the evaluation part), of which the first
    ``count`` with a box are judged."""
    if eval_dir is None and task == TEXT:
        files, source = default_text_pages(EVALUATION)
        pooled = True
    elif eval_dir is None:
        files, source, pooled = default_photos(EVALUATION)
        if pooled and task == DETECTION:
            files = files + default_photos(CALIBRATION)[0]
            source += " and its calibration part's photos that calibration did not use"
    else:
        files, source, pooled = images_in(eval_dir, "evaluation"), str(eval_dir), True
    calibrated = {content_hash(path) for path in calibration.files} if calibration else set()
    unseen = [path for path in files if content_hash(path) not in calibrated]
    if not unseen:
        where = eval_dir or source
        raise UserError(f"{where}: no image that calibration did not use; pass --eval-dir with other images")
    if len(unseen) < len(files):
        source += f" ({len(files) - len(unseen)} left out: calibration used them)"
    if task == TEXT:
        return EvaluationSet(with_crops(unseen, min(count, len(unseen))), source, few=not pooled)
    if task == DETECTION:
        return EvaluationSet(with_crops(unseen, max(count, len(unseen))), source, few=not pooled, judged_at_most=count)
    return EvaluationSet(with_crops(unseen, count), source, few=not pooled)


@dataclass
class GateReport:
    """What a variant scored against FP32, the thresholds applied, and whether it passed: a measure with an interval
    over enough images passes when the interval's lower end clears its threshold, else when the measure does."""

    measures: dict[str, float]
    thresholds: dict[str, float]
    evaluation: dict
    kept_in_float: list[str] = field(default_factory=list)
    trials: int = 1
    intervals: dict[str, dict] = field(default_factory=dict)  # measure: Interval's fields, over distinct images

    def deciding(self, name: str) -> float:
        """The value a gated measure is judged by: its interval's lower end where that decides, else the measure."""
        interval = self.intervals.get(name)
        return interval["low"] if decides(self.thresholds[name], interval) else self.measures[name]

    @property
    def passed(self) -> bool:
        return all(self.deciding(name) >= least for name, least in self.thresholds.items())

    def shortfall(self) -> float:
        """How far the worst gated measure's deciding value falls below its threshold (0 when it passes)."""
        return max(0.0, *(least - self.deciding(name) for name, least in self.thresholds.items()))

    def line(self) -> str:
        """Each gated measure and its verdict: ``top1_agreement 0.995 (95% 0.982-0.999 over 400 images, wilson):
        lower end >= 0.97``; on too few images ``top1_agreement 0.973 >= 0.97 (point estimate; 95% ...)``."""
        parts = []
        for name, least in self.thresholds.items():
            interval = self.intervals.get(name)
            verdict = f"{'>=' if self.deciding(name) >= least else '<'} {least:g}"
            if decides(least, interval):
                parts.append(f"{name} {self.measures[name]:.3f} ({Interval(**interval).text()}): lower end {verdict}")
            else:
                parts.append(f"{name} {self.measures[name]:.3f} {verdict}"
                             + (f" (point estimate; {Interval(**interval).text()})" if interval else ""))
        return ", ".join(parts)

    def thin_evidence(self) -> str | None:
        """Where an interval rests on too few distinct images to decide: that the point estimate decided, and how
        many images a perfect score needs for its lower end to clear the threshold."""
        thin = [(name, least) for name, least in self.thresholds.items()
                if name in self.intervals and least < 1 and not decides(least, self.intervals[name])]
        if not thin:
            return None
        name, least = max(thin, key=lambda pair: pair[1])
        return (f"{name} was decided on its point estimate: {self.intervals[name]['images']} distinct images cannot "
                f"put a 95% lower end above {least:g} (a perfect score needs {images_needed(least)}); `trtrepo photos` "
                "fetches the photo pool, or give more with --eval-dir")

    def as_dict(self) -> dict:
        return {"passed": self.passed, **asdict(self)}


class Gate:
    """One model's gate: its evaluation samples, preprocessed once, and the FP32 network's outputs on them."""

    def __init__(self, spec: ModelSpec, reference: "Runner", evaluation: EvaluationSet, thresholds: GateThresholds) -> None:
        self.spec = spec
        self.thresholds = thresholds.for_task(spec.task)
        if spec.task == RAW:  # tensors, not images: random samples of its inputs, each its own
            self.samples = [{name: batch[0] for name, batch in spec.example_batch(1, seed).items()}
                            for seed in range(RAW_SAMPLES)]
            self.image_keys = [str(seed) for seed in range(RAW_SAMPLES)]
            self.described = {"source": "random inputs (standard normal)", "samples": RAW_SAMPLES}
            self.reference = run_batches(spec, reference, self.samples, EVALUATION_BATCH)
        else:
            kept, examined, self.samples, self.reference = self._judged_samples(reference, evaluation)
            if not kept:
                raise UserError(f"{spec.name}: FP32 finds no box in any of the {examined} evaluation samples, so no "
                                "variant can be judged against it; pass --eval-dir with images of its classes")
            if len(kept) < len(evaluation.samples):
                evaluation = evaluation.only(kept, f"judged on the {len(kept)} of {examined} on which FP32 finds a box")
            self.image_keys = evaluation.image_keys()
            self.described = evaluation.describe()
        self.needs_final_pass = spec.task == DETECTION  # mAP's interval, once, on the build kept

    def _judged_samples(self, reference: "Runner", evaluation: EvaluationSet) -> tuple[list[int], int, list, list[dict]]:
        """The samples judged (their indices, how many were looked at, their inputs and FP32 outputs, one sample
        each): all of them, but a detector's only where FP32 finds a box (elsewhere box recall has nothing to
        count), at most ``evaluation.judged_at_most``; a batch at a time, so unjudged ones are never all held."""
        kept, inputs, outputs, examined = [], [], [], 0
        for start in range(0, len(evaluation.samples), EVALUATION_BATCH):
            if evaluation.judged_at_most is not None and len(kept) >= evaluation.judged_at_most:
                break
            batch = [self.spec.preprocess_image(sample.load()) for sample in evaluation.samples[start : start + EVALUATION_BATCH]]
            examined += len(batch)
            for offset, (array, output) in enumerate(zip(batch, per_sample(run_batches(self.spec, reference, batch, EVALUATION_BATCH)))):
                if self.spec.task != DETECTION or self.spec.postprocess(output)[0]:
                    kept.append(start + offset)
                    inputs.append(array)
                    outputs.append(output)
        limit = evaluation.judged_at_most or len(kept)
        return kept[:limit], examined, inputs[:limit], outputs[:limit]

    def judge(self, candidate: "Runner", batch_size: int = EVALUATION_BATCH, final: bool = True) -> GateReport:
        """The candidate's report; ``final`` False (a trial of the mixed-precision search) leaves out the intervals
        that cost a bootstrap of pycocotools evaluations (needs_final_pass)."""
        outputs = run_batches(self.spec, candidate, self.samples, batch_size)
        measures = task_measures(self.spec, self.reference, outputs)
        intervals = measure_intervals(self.spec, self.reference, outputs, self.image_keys, bootstrap_map=final)
        return GateReport(measures, dict(self.thresholds), self.described,
                          intervals={name: asdict(interval) for name, interval in intervals.items()})


def build_within_gate(
    engine: "Engine", inputs: "BuildInputs", precision: str, artifact: Path, judge: Callable[[Path], GateReport],
    log: Callable[[str], None], name: str,
) -> GateReport:
    """Build the artifact and judge it; below the gate, where the engine can mix precisions, keep the fewest of
    its costliest nodes in float that pass (1, 2, 4 ... nodes until one passes, then halving the gap). Leaves in
    ``artifact`` the build that passed with the fewest nodes in float, else the one that came closest, and
    returns its report."""
    engine.build(inputs, precision, artifact)
    report = judge(artifact)
    if report.passed:
        return report
    ranked = engine.float_candidates(inputs, precision, artifact)
    if not ranked:
        return report
    log(f"{name}: below its gate ({report.line()}); searching the fewest of {len(ranked)} nodes to keep in float")
    kept = artifact.with_name(artifact.name + ".kept")
    shutil.copyfile(artifact, kept)
    best, trials = report, 1

    def trial(count: int) -> bool:
        nonlocal best, trials
        trials += 1
        engine.build(replace(inputs, keep_float=tuple(ranked[:count])), precision, artifact)
        result = judge(artifact)
        result.kept_in_float = list(ranked[:count])
        log(f"{name}: {count} nodes in float: {result.line()}")
        if result.passed or (not best.passed and result.shortfall() < best.shortfall()):
            best = result
            shutil.copyfile(artifact, kept)
        return result.passed

    failing, count = 0, 1
    while not trial(count) and count < len(ranked):
        failing, count = count, min(count * 2, len(ranked))
    if best.passed:
        passing = count
        while passing - failing > 1:
            middle = (passing + failing) // 2
            if trial(middle):
                passing = middle
            else:
                failing = middle
    kept.replace(artifact)
    best.trials = trials
    return best
