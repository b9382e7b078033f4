"""Darknet: the .cfg network description, a PyTorch network built from it, and the .weights file format.

General enough for yolov3.cfg and yolov3-tiny.cfg: convolutional (with or without batch norm, leaky or
linear), maxpool (including tiny's size-2 stride-1 pooling), route, shortcut, upsample and yolo layers.
The yolo layers decode inside the network, so every engine returns boxes in input pixels:
(batch, boxes, 5 + classes) = centre x, centre y, width, height, objectness, class probabilities.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from trtrepo.errors import UserError


@dataclass
class Block:
    kind: str
    options: dict[str, str] = field(default_factory=dict)

    def int(self, key: str, default: int | None = None) -> int:
        if key not in self.options and default is None:
            raise UserError(f"[{self.kind}] block lacks {key}=")
        return int(self.options.get(key, default))

    def ints(self, key: str) -> list[int]:
        return [int(v) for v in self.options[key].split(",") if v.strip()]


def parse_cfg(text: str) -> list[Block]:
    """Blocks in file order; the first is [net]. Comments start with # or ;."""
    blocks: list[Block] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#")[0].split(";")[0].strip()
        if not line:
            continue
        if line.startswith("[") and line.endswith("]"):
            blocks.append(Block(line[1:-1].strip()))
        elif "=" in line and blocks:
            key, value = line.split("=", 1)
            blocks[-1].options[key.strip()] = value.strip()
        else:
            raise UserError(f"cfg line {number}: cannot parse {raw!r}")
    if not blocks or blocks[0].kind not in ("net", "network"):
        raise UserError("cfg does not start with a [net] block")
    return blocks


class MaxPoolSame(nn.Module):
    """Darknet's maxpool: stride-1 pooling keeps the size by padding right and bottom with edge values."""

    def __init__(self, size: int, stride: int) -> None:
        super().__init__()
        self.size, self.stride = size, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            x = F.pad(x, (0, self.size - 1, 0, self.size - 1), mode="replicate")
        return F.max_pool2d(x, self.size, self.stride)


class YoloDecode(nn.Module):
    """Raw head output -> (batch, anchors*grid*grid, 5 + classes) in input pixels."""

    def __init__(self, anchors: list[tuple[int, int]], classes: int) -> None:
        super().__init__()
        self.register_buffer("anchors", torch.tensor(anchors, dtype=torch.float32).view(1, -1, 1, 1, 2))
        self.classes = classes

    def forward(self, p: torch.Tensor, input_h: int, input_w: int) -> torch.Tensor:
        n, _, gh, gw = p.shape
        count = self.anchors.shape[1]
        p = p.view(n, count, 5 + self.classes, gh, gw).permute(0, 1, 3, 4, 2)
        # Built on the input's device from Python scalars only: no host-to-device copy, so CUDA graphs can capture it.
        ys, xs = torch.meshgrid(
            torch.arange(gh, dtype=p.dtype, device=p.device), torch.arange(gw, dtype=p.dtype, device=p.device), indexing="ij"
        )
        cells = p[..., 0:2].sigmoid() + torch.stack((xs, ys), -1).view(1, 1, gh, gw, 2)
        xy = torch.stack((cells[..., 0] * (input_w / gw), cells[..., 1] * (input_h / gh)), -1)
        wh = p[..., 2:4].exp() * self.anchors
        return torch.cat((xy, wh, p[..., 4:].sigmoid()), -1).reshape(n, -1, 5 + self.classes)


def box_count(blocks: list[Block], height: int, width: int) -> int:
    """How many boxes the yolo layers of a cfg return for one input of ``height`` x ``width``: each predicts its
    masked anchors at every cell of its grid, whose stride follows the strided convolutions, pools, upsamples
    and routes before it. Lets a model declare a fixed output shape without building the network."""
    strides: list[int] = []
    stride, boxes = 1, 0
    for index, block in enumerate(blocks[1:]):
        if block.kind in ("convolutional", "maxpool"):
            stride *= block.int("stride", 1)
        elif block.kind == "upsample":
            stride //= block.int("stride", 2)
        elif block.kind == "route":
            first = block.ints("layers")[0]
            stride = strides[first if first >= 0 else index + first]
        elif block.kind == "yolo":
            boxes += len(block.ints("mask")) * -(-height // stride) * -(-width // stride)
        strides.append(stride)
    return boxes


class DarknetNetwork(nn.Module):
    def __init__(self, blocks: list[Block]) -> None:
        super().__init__()
        net, self.blocks = blocks[0], blocks[1:]
        self.input_size = (net.int("height", 416), net.int("width", 416))
        self.layers = nn.ModuleList()
        self.sources: list[tuple[int, ...]] = []  # earlier layers a route concatenates or a shortcut adds
        channels: list[int] = []
        current = net.int("channels", 3)
        for index, block in enumerate(self.blocks):
            sources: tuple[int, ...] = ()
            if block.kind == "convolutional":
                size, filters, normalize = block.int("size"), block.int("filters"), block.int("batch_normalize", 0)
                layer = nn.Sequential()
                layer.add_module("conv", nn.Conv2d(current, filters, size, block.int("stride", 1),
                                                   size // 2 if block.int("pad", 0) else 0, bias=not normalize))
                if normalize:
                    layer.add_module("bn", nn.BatchNorm2d(filters, momentum=0.01))
                if block.options.get("activation", "linear") == "leaky":
                    layer.add_module("leaky", nn.LeakyReLU(0.1))
                current = filters
            elif block.kind == "maxpool":
                layer = MaxPoolSame(block.int("size"), block.int("stride", 1))
            elif block.kind == "upsample":
                layer = nn.Upsample(scale_factor=block.int("stride", 2), mode="nearest")
            elif block.kind == "route":
                sources = tuple(i if i >= 0 else index + i for i in block.ints("layers"))
                current = sum(channels[i] for i in sources)
                layer = nn.Identity()
            elif block.kind == "shortcut":
                origin = block.int("from")
                sources = (index - 1, index + origin if origin < 0 else origin)
                layer = nn.Identity()
            elif block.kind == "yolo":
                anchors = block.ints("anchors")
                pairs = [(anchors[2 * m], anchors[2 * m + 1]) for m in block.ints("mask")]
                layer = YoloDecode(pairs, block.int("classes"))
            else:
                raise UserError(f"cfg layer {index} [{block.kind}] is not supported")
            self.layers.append(layer)
            self.sources.append(sources)
            channels.append(current)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        input_h, input_w = x.shape[2], x.shape[3]
        outputs: list[torch.Tensor] = []
        detections = []
        for block, layer, sources in zip(self.blocks, self.layers, self.sources):
            if block.kind == "route":
                x = torch.cat([outputs[i] for i in sources], 1)
            elif block.kind == "shortcut":
                x = outputs[sources[0]] + outputs[sources[1]]
            elif block.kind == "yolo":
                detections.append(layer(x, input_h, input_w))
            else:
                x = layer(x)
            outputs.append(x)
        return torch.cat(detections, 1)

    def convolutions(self) -> list[nn.Sequential]:
        """Convolutional layers in cfg order: the order their tensors appear in a .weights file."""
        return [layer for block, layer in zip(self.blocks, self.layers) if block.kind == "convolutional"]


def load_darknet_weights(network: DarknetNetwork, path: Path) -> None:
    """Read a Darknet .weights file: a header (major, minor, revision, images seen), then per convolution
    either batch-norm beta, gamma, mean, variance or the conv bias, followed by the conv weights."""
    if Path(path).is_dir():
        raise UserError(f"{path}: is a folder, not a Darknet .weights file")
    data = Path(path).read_bytes()
    if len(data) < 20:
        raise UserError(f"{path}: too short for a Darknet weights file")
    major, minor, _ = np.frombuffer(data[:12], dtype=np.int32)
    offset = 12 + (8 if major * 10 + minor >= 2 and major < 1000 else 4)
    if (len(data) - offset) % 4:
        raise UserError(f"{path}: not a Darknet weights file (after its header, {len(data) - offset} bytes are not "
                        "whole float32 values)")
    values = np.frombuffer(data, dtype=np.float32, offset=offset)
    position = 0

    def fill(tensor: torch.Tensor) -> None:
        nonlocal position
        count = tensor.numel()
        if position + count > len(values):
            raise UserError(f"{path}: ends after {len(values)} values; the cfg needs more (wrong cfg or truncated file)")
        tensor.data.copy_(torch.from_numpy(values[position : position + count].copy()).view_as(tensor))
        position += count

    for layer in network.convolutions():
        if "bn" in layer._modules:
            for tensor in (layer.bn.bias, layer.bn.weight, layer.bn.running_mean, layer.bn.running_var):
                fill(tensor)
        else:
            fill(layer.conv.bias)
        fill(layer.conv.weight)
    if position != len(values):
        raise UserError(f"{path}: {len(values) - position} values left after the last layer: the weights do not match the cfg")
