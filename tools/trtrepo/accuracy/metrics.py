"""Task measures that compare one set of outputs with another: agreement of classifiers, boxes of detectors
(greedy IoU matching, COCO mAP through pycocotools), text lines. The accuracy gate, `trtrepo compare` and
`trtrepo eval` share them; nothing here talks to a server.
"""

from __future__ import annotations

import contextlib
import io
from typing import TYPE_CHECKING, Sequence

import numpy as np

if TYPE_CHECKING:
    from pycocotools.cocoeval import COCOeval


Box = Sequence[float]  # x1, y1, x2, y2
#: The COCO convention for mAP: keep low-score boxes, the precision-recall curve ranks them.
DETECTION_CONF = 0.001


def iou(a: Box, b: Box) -> float:
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def match_boxes(found: Sequence[Box], truth: Sequence[Box], threshold: float = 0.5) -> int:
    """How many found boxes match a distinct true box at IoU >= threshold (greedy, best IoU first)."""
    pairs = sorted(((iou(a, b), i, j) for i, a in enumerate(found) for j, b in enumerate(truth)), reverse=True)
    used_found, used_truth = set(), set()
    for overlap, i, j in pairs:
        if overlap < threshold:
            break
        if i not in used_found and j not in used_truth:
            used_found.add(i)
            used_truth.add(j)
    return len(used_found)


def match_by_class(found: Sequence[tuple[int, Box]], truth: Sequence[tuple[int, Box]], threshold: float = 0.5) -> int:
    """match_boxes within each class: (class, box) pairs; a box of another class never matches."""
    return sum(match_boxes([b for c, b in found if c == label], [b for c, b in truth if c == label], threshold)
               for label in {c for c, _ in truth})


def precision_recall_f(matched: int, found: int, truth: int) -> tuple[float, float, float]:
    precision = matched / found if found else 0.0
    recall = matched / truth if truth else 0.0
    return precision, recall, (2 * precision * recall / (precision + recall) if precision + recall else 0.0)


def classifier_agreement(reference: np.ndarray, candidate: np.ndarray) -> dict[str, float]:
    """Logits of the same samples: the share whose top-1 class is the reference's, and the share whose top 5
    hold the reference's top-1."""
    expected = reference.argmax(axis=1)
    top5 = np.argsort(-candidate, axis=1)[:, :5]
    return {"top1_agreement": float(np.mean(top5[:, 0] == expected)),
            "top5_holds_top1": float(np.mean((top5 == expected[:, None]).any(axis=1)))}


def coco_map(truth: Sequence[Sequence[tuple[int, Box]]], found: Sequence[Sequence[tuple[int, Box, float]]]) -> tuple[float, float]:
    """COCO mAP@[.5:.95] and mAP@.5 (pycocotools) of scored boxes against true boxes, per image: lists of
    (class, box) and (class, box, score). Images without true boxes count as pycocotools counts them."""
    evaluation = _coco_evaluation(truth, found, at_50_only=False)
    if isinstance(evaluation, tuple):
        return evaluation
    with contextlib.redirect_stdout(io.StringIO()):
        evaluation.summarize()
    return max(0.0, float(evaluation.stats[0])), max(0.0, float(evaluation.stats[1]))


def coco_map50(truth: Sequence[Sequence[tuple[int, Box]]], found: Sequence[Sequence[tuple[int, Box, float]]]) -> float:
    """COCO mAP@.5 alone, as coco_map computes it, evaluated at the one IoU threshold, all areas and 100
    detections: what a bootstrap recomputes hundreds of times."""
    evaluation = _coco_evaluation(truth, found, at_50_only=True)
    if isinstance(evaluation, tuple):
        return evaluation[1]
    precision = evaluation.eval["precision"][0, :, :, 0, -1]  # [IoU .5, recall, class, all areas, 100 detections]
    valid = precision[precision > -1]
    return max(0.0, float(valid.mean())) if valid.size else 0.0


def _coco_evaluation(truth: Sequence[Sequence[tuple[int, Box]]], found: Sequence[Sequence[tuple[int, Box, float]]],
                     at_50_only: bool) -> "COCOeval | tuple[float, float]":
    """pycocotools' accumulated evaluation of ``found`` against ``truth``, or (mAP, mAP@.5) where one side is empty."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    annotations = []
    for image, boxes in enumerate(truth):
        for label, b in boxes:
            annotations.append({"id": len(annotations) + 1, "image_id": image, "category_id": label + 1, "iscrowd": 0,
                                "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "area": (b[2] - b[0]) * (b[3] - b[1])})
    results = [{"image_id": image, "category_id": label + 1, "score": score, "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]]}
               for image, boxes in enumerate(found) for label, b, score in boxes]
    if not annotations or not results:
        return (1.0, 1.0) if not annotations and not results else (0.0, 0.0)
    labels = sorted({a["category_id"] for a in annotations} | {r["category_id"] for r in results})
    with contextlib.redirect_stdout(io.StringIO()):
        ground = COCO()
        ground.dataset = {"images": [{"id": i} for i in range(len(truth))], "annotations": annotations,
                          "categories": [{"id": label} for label in labels]}
        ground.createIndex()
        evaluation = COCOeval(ground, ground.loadRes(results), "bbox")
        if at_50_only:
            evaluation.params.iouThrs = np.array([0.5])
            evaluation.params.areaRng, evaluation.params.areaRngLbl = [[0, 1e10]], ["all"]
            evaluation.params.maxDets = [100]
        evaluation.evaluate()
        evaluation.accumulate()
    return evaluation
