"""What every detector shares: fitting an image into the input by letterbox, and turning scored boxes into
detections in the image's own pixels (threshold, class-wise NMS)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

#: The score and NMS overlap thresholds a detector's answers use unless a request says otherwise.
DEFAULT_CONF, DEFAULT_IOU = 0.25, 0.45


@dataclass(frozen=True)
class Letterbox:
    """How an image was fitted into the input: scale (per axis), then padding, so boxes can be mapped back."""

    scale_x: float
    scale_y: float
    pad_x: float
    pad_y: float
    width: int
    height: int

    def to_image(self, boxes: np.ndarray) -> np.ndarray:
        """xyxy boxes in input pixels -> original image pixels, clipped to the image."""
        out = boxes.astype(np.float64).copy()
        out[:, [0, 2]] = ((out[:, [0, 2]] - self.pad_x) / self.scale_x).clip(0, self.width)
        out[:, [1, 3]] = ((out[:, [1, 3]] - self.pad_y) / self.scale_y).clip(0, self.height)
        return out


@dataclass(frozen=True)
class Detection:
    class_id: int
    label: str
    score: float
    box: tuple[float, float, float, float]  # x1, y1, x2, y2

    def as_dict(self) -> dict:
        return {"class_id": self.class_id, "label": self.label, "score": round(self.score, 4),
                "box": [round(v, 1) for v in self.box]}


def letterbox_tensor(
    image: "torch.Tensor", size: tuple[int, int], pad: float, darknet: bool = False, mode: str = "bilinear",
) -> tuple["torch.Tensor", Letterbox]:
    """A uint8 CHW image fitted into ``size`` (H, W) keeping its aspect ratio, the rest filled with ``pad`` (0-1),
    the image centred; CHW floats in 0..1 on the image's device (the host path runs this too). ``darknet``:
    Darknet's own letterbox_image (sizes by integer division, bilinear with corners aligned), which the models
    trained by Darknet saw; else sizes rounded and half-pixel sampling, as current YOLO exporters do."""
    import torch

    height, width = image.shape[1:]
    target_h, target_w = size
    if darknet:
        if width * target_h > height * target_w:
            new_w, new_h = target_w, max(1, height * target_w // width)
        else:
            new_w, new_h = max(1, width * target_h // height), target_h
    else:
        scale = min(target_w / width, target_h / height)
        new_w, new_h = max(1, min(target_w, round(width * scale))), max(1, min(target_h, round(height * scale)))
    pixels = (image.float() / 255.0)[None]
    corners = {"align_corners": darknet} if mode in ("bilinear", "bicubic") else {}
    resized = torch.nn.functional.interpolate(pixels, size=(new_h, new_w), mode=mode, antialias=False, **corners)[0]
    canvas = torch.full((3, target_h, target_w), pad, dtype=torch.float32, device=image.device)
    pad_x, pad_y = (target_w - new_w) // 2, (target_h - new_h) // 2
    canvas[:, pad_y : pad_y + new_h, pad_x : pad_x + new_w] = resized.clamp(0, 1) if mode == "bicubic" else resized
    return canvas, Letterbox(new_w / width, new_h / height, pad_x, pad_y, width, height)


def select_detections(
    boxes: np.ndarray, probabilities: np.ndarray, class_names: list[str], conf: float, iou: float, top_k: int,
) -> list[Detection]:
    """One image's candidates, centre-size ``boxes`` (N, 4) in input pixels with a probability per class (N, C):
    each box's best class, those scoring ``conf`` or more, class-wise NMS at ``iou``, the ``top_k`` best."""
    import torch
    from torchvision.ops import batched_nms

    class_ids = probabilities.argmax(axis=1)
    scores = probabilities[np.arange(len(probabilities)), class_ids]
    keep = scores >= conf
    centre, size = boxes[keep, 0:2], boxes[keep, 2:4]
    corners = np.concatenate([centre - size / 2, centre + size / 2], axis=1)
    chosen = batched_nms(torch.from_numpy(corners).float(), torch.from_numpy(scores[keep]).float(),
                         torch.from_numpy(class_ids[keep]), iou)[:top_k].numpy()
    return [Detection(int(class_ids[keep][i]), class_names[class_ids[keep][i]], float(scores[keep][i]),
                      tuple(float(v) for v in corners[i])) for i in chosen]


def to_image_coords(detections: list[Detection], letterbox: Letterbox) -> list[Detection]:
    if not detections:
        return []
    boxes = letterbox.to_image(np.array([d.box for d in detections]))
    return [Detection(d.class_id, d.label, d.score, tuple(float(v) for v in box)) for d, box in zip(detections, boxes)]
