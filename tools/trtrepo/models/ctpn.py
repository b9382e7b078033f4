"""CTPN (Connectionist Text Proposal Network): scene-text lines from fixed-width text proposals.

Network: VGG16 conv1-conv5 (torchvision) and a 3x3 sliding-window convolution (the convolution part), then a
bidirectional LSTM (128 per direction) along each feature-map row, a 512-wide fully connected layer and heads
for k=10 vertical anchors: text score, vertical centre and height, side refinement (the recurrent part).
Three specs share the weights: ``ctpn`` (the whole graph, LSTM included), and the study's split,
``ctpn_backbone`` (convolution part, the one worth optimizing) and ``ctpn_head`` (recurrent part, framework).

Post-processing: anchors -> proposals, score threshold, NMS, then the text-proposal connector that joins
proposals into lines (pairs of mutually best neighbours within 50 px that overlap vertically).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torchvision.models import vgg16

from trtrepo.errors import UserError
from trtrepo.models.weights import apply_state_dict, read_state_dict
from trtrepo.specs import TEXT, ModelSpec, TensorSpec


ANCHOR_HEIGHTS = (11, 16, 23, 33, 48, 68, 97, 139, 198, 273)  # 11 to 273 px, each about 1/0.7 of the last
ANCHOR_WIDTH = 16  # the feature map's stride
SHORT_SIDE, LONG_SIDE_MAX = 600, 1000
PIXEL_MEANS = (123.68, 116.78, 103.94)  # RGB means subtracted, as the VGG16 Caffe models expect
K = len(ANCHOR_HEIGHTS)


class Backbone(nn.Module):
    """VGG16 conv1_1 .. conv5_3 and the 3x3 sliding window: image -> (N, 512, H/16, W/16)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = vgg16(weights=None).features[:30]
        self.window = nn.Sequential(nn.Conv2d(512, 512, 3, padding=1), nn.ReLU(inplace=True))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.window(self.features(image))


class Head(nn.Module):
    """BiLSTM over each row of the feature map, FC 512, and the anchor heads."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(512, 128, batch_first=True, bidirectional=True)
        self.fc = nn.Sequential(nn.Conv2d(256, 512, 1), nn.ReLU(inplace=True))  # FC applied at every location
        self.scores = nn.Conv2d(512, 2 * K, 1)
        self.vertical = nn.Conv2d(512, 2 * K, 1)
        self.side = nn.Conv2d(512, K, 1)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        n, c, h, w = features.shape
        rows = features.permute(0, 2, 3, 1).reshape(n * h, w, c)
        context, _ = self.lstm(rows)
        x = self.fc(context.reshape(n, h, w, 256).permute(0, 3, 1, 2))
        text = self.scores(x).view(n, K, 2, h, w).softmax(dim=2)[:, :, 1].permute(0, 2, 3, 1)  # (N, H, W, K)
        vertical = self.vertical(x).view(n, K, 2, h, w).permute(0, 3, 4, 1, 2)  # (N, H, W, K, 2)
        side = self.side(x).permute(0, 2, 3, 1)  # (N, H, W, K)
        return text, vertical, side


class CTPNNetwork(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = Backbone()
        self.head = Head()

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.head(self.backbone(image))


def load_ctpn(weights: str, name: str, part: str | None = None) -> nn.Module:
    """The whole network, or its ``backbone`` or ``head``: random, or a state dict (a checkpoint path) of the
    whole network or of that part alone (what the PyTorch engine saves for a part)."""
    network = CTPNNetwork()
    if weights in ("pretrained", "imagenet"):
        raise UserError(f"{name}: no public pretrained CTPN weights in PyTorch form; pass --weights CHECKPOINT.pt or random")
    state = None if weights == "random" else read_state_dict(Path(weights), name)
    whole = state is None or any(key.startswith(("backbone.", "head.")) for key in state)
    if state is not None and whole:
        apply_state_dict(network, state, name, weights)
    module = getattr(network, part) if part else network
    if state is not None and not whole:
        apply_state_dict(module, state, name, weights)
    return module.eval()


@dataclass(frozen=True)
class TextLine:
    corners: tuple[tuple[float, float], ...]  # top-left, top-right, bottom-right, bottom-left
    score: float

    def bounds(self) -> tuple[float, float, float, float]:
        xs, ys = [p[0] for p in self.corners], [p[1] for p in self.corners]
        return min(xs), min(ys), max(xs), max(ys)

    def as_dict(self) -> dict:
        return {"corners": [[round(x, 1), round(y, 1)] for x, y in self.corners], "score": round(self.score, 4)}


OUTPUTS = (
    TensorSpec("scores", "float32", (-1, -1, K)),
    TensorSpec("vertical", "float32", (-1, -1, K, 2)),
    TensorSpec("side", "float32", (-1, -1, K)),
)
FEATURES = TensorSpec("features", "float32", (512, -1, -1))
IMAGE = TensorSpec("input", "float32", (3, -1, -1), image_format="NCHW")
# Built and tuned for: short side 600, long side up to 1000 (the preprocessing's range), down to 64 px.
IMAGE_RANGE = ((3, 64, 64), (3, 608, 800), (3, 1008, 1008))


class CTPN(ModelSpec):
    name = "ctpn"
    task = TEXT
    inputs = (IMAGE,)
    outputs = OUTPUTS
    weight_choices = "random|CHECKPOINT.pt"
    dynamic_shapes = {"input": IMAGE_RANGE}
    min_score, nms_iou, line_min_score = 0.7, 0.2, 0.9
    keras_twin = "ctpn:ctpn"

    def build_network(self, weights: str) -> torch.nn.Module:
        return load_ctpn(weights, self.name)

    def resize(self, image: Image.Image) -> tuple[np.ndarray, float]:
        """Short side to 600 (long side at most 1000), padded to a multiple of 16; mean-subtracted CHW and the scale."""
        width, height = image.size
        scale = min(SHORT_SIDE / min(width, height), LONG_SIDE_MAX / max(width, height))
        new_w, new_h = max(16, round(width * scale)), max(16, round(height * scale))
        pixels = np.asarray(image.resize((new_w, new_h), resample=2), dtype=np.float32) - np.array(PIXEL_MEANS, dtype=np.float32)
        padded = np.zeros((-(-new_h // 16) * 16, -(-new_w // 16) * 16, 3), dtype=np.float32)
        padded[:new_h, :new_w] = pixels
        return padded.transpose(2, 0, 1).copy(), scale

    def preprocess_image(self, image: Image.Image) -> np.ndarray:
        return self.resize(image)[0]

    def postprocess(self, outputs: dict[str, np.ndarray], top_k: int = 100, scale: float = 1.0,
                    min_score: float | None = None, line_min_score: float | None = None) -> list[list[TextLine]]:
        """Per sample: text lines in original-image pixels (``scale`` is the preprocessing's)."""
        lines = []
        for i in range(len(outputs["scores"])):
            boxes, scores = proposals(outputs["scores"][i], outputs["vertical"][i], self.min_score if min_score is None else min_score)
            boxes, scores = nms(boxes, scores, self.nms_iou)
            threshold = self.line_min_score if line_min_score is None else line_min_score
            found = [line for line in connect(boxes, scores) if line.score >= threshold][:top_k]
            lines.append([TextLine(tuple((x / scale, y / scale) for x, y in line.corners), line.score) for line in found])
        return lines


class CTPNBackbone(CTPN):
    """The convolution part alone: what the study optimized."""

    name = "ctpn_backbone"
    keras_twin = None  # the TensorFlow baseline is the whole graph
    outputs = (FEATURES,)
    judged_whole_as = "ctpn"

    def build_network(self, weights: str) -> torch.nn.Module:
        return load_ctpn(weights, self.name, "backbone")

    def postprocess(self, outputs: dict[str, np.ndarray], top_k: int = 100, **_: object) -> list:
        raise UserError("ctpn_backbone returns features; serve it through the ctpn_split ensemble")


class CTPNHead(CTPN):
    """The recurrent part alone: BiLSTM, FC and heads, run in the framework."""

    name = "ctpn_head"
    keras_twin = None
    inputs = (FEATURES,)
    judged_whole_as = "ctpn"
    dynamic_shapes = {"features": ((512, 4, 4), (512, 38, 50), (512, 63, 63))}

    def build_network(self, weights: str) -> torch.nn.Module:
        return load_ctpn(weights, self.name, "head")

    def preprocess_image(self, image: Image.Image) -> np.ndarray:
        raise UserError("ctpn_head takes backbone features, not images; use ctpn or the ctpn_split ensemble")


def proposals(text: np.ndarray, vertical: np.ndarray, min_score: float) -> tuple[np.ndarray, np.ndarray]:
    """Decode the anchors of one image: (H, W, K) scores and (H, W, K, 2) vertical offsets -> xyxy boxes."""
    h, w, _ = text.shape
    ys, xs, ks = np.nonzero(text >= min_score)
    heights = np.array(ANCHOR_HEIGHTS, dtype=np.float32)[ks]
    centre_y = ys * ANCHOR_WIDTH + (ANCHOR_WIDTH - 1) / 2
    cy = vertical[ys, xs, ks, 0] * heights + centre_y
    height = np.exp(vertical[ys, xs, ks, 1]) * heights
    boxes = np.stack([xs * ANCHOR_WIDTH, cy - height / 2, xs * ANCHOR_WIDTH + ANCHOR_WIDTH - 1, cy + height / 2], axis=1)
    return boxes.astype(np.float32).reshape(-1, 4), text[ys, xs, ks].astype(np.float32)


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> tuple[np.ndarray, np.ndarray]:
    from torchvision.ops import nms as torch_nms

    if len(boxes) == 0:
        return boxes, scores
    keep = torch_nms(torch.from_numpy(boxes), torch.from_numpy(scores), iou).numpy()
    return boxes[keep], scores[keep]


MAX_GAP, MIN_OVERLAP, MIN_SIZE_SIMILARITY = 50, 0.7, 0.7


def _vertical_overlap(a: np.ndarray, b: np.ndarray) -> float:
    overlap = max(0.0, min(a[3], b[3]) - max(a[1], b[1]) + 1)
    return overlap / min(a[3] - a[1] + 1, b[3] - b[1] + 1)


def _size_similarity(a: np.ndarray, b: np.ndarray) -> float:
    ha, hb = a[3] - a[1] + 1, b[3] - b[1] + 1
    return min(ha, hb) / max(ha, hb)


def _neighbours(boxes: np.ndarray, index: int, direction: int) -> list[int]:
    """Proposals within MAX_GAP px to the right (+1) or left (-1) that could continue the same line: the
    nearest such column only."""
    x = boxes[index, 0]
    for step in range(1, MAX_GAP + 1):
        column = np.nonzero(boxes[:, 0] == x + direction * step)[0]
        found = [j for j in column if _vertical_overlap(boxes[index], boxes[j]) >= MIN_OVERLAP
                 and _size_similarity(boxes[index], boxes[j]) >= MIN_SIZE_SIMILARITY]
        if found:
            return found
    return []


def connect(boxes: np.ndarray, scores: np.ndarray) -> list[TextLine]:
    """Join proposals (network-input pixels: x1 on the 16-px anchor columns) into text lines: i -> j when j is i's best right neighbour and i is j's best left one;
    each chain becomes a line whose top and bottom edges are least-squares fits through its proposals."""
    successor = {}
    for i in range(len(boxes)):
        right = _neighbours(boxes, i, +1)
        if not right:
            continue
        j = max(right, key=lambda n: scores[n])
        left = _neighbours(boxes, j, -1)
        if scores[i] >= max(scores[n] for n in left):
            successor[i] = j
    starts = set(successor) - set(successor.values())
    lines = []
    for start in sorted(starts, key=lambda i: (boxes[i, 1], boxes[i, 0])):
        chain = [start]
        while chain[-1] in successor:
            chain.append(successor[chain[-1]])
        members = boxes[chain]
        x0, x1 = float(members[:, 0].min()), float(members[:, 2].max())
        centres = (members[:, 0] + members[:, 2]) / 2

        def edge(values: np.ndarray) -> tuple[float, float]:
            if len(set(centres)) < 2:
                return float(values.mean()), float(values.mean())
            slope, offset = np.polyfit(centres, values, 1)
            return float(slope * x0 + offset), float(slope * x1 + offset)

        (top0, top1), (bottom0, bottom1) = edge(members[:, 1]), edge(members[:, 3])
        lines.append(TextLine(((x0, top0), (x1, top1), (x1, bottom1), (x0, bottom0)), float(scores[chain].mean())))
    return lines
