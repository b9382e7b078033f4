"""Darknet networks (YOLOv3, YOLOv3-tiny) in Keras, built from the same .cfg blocks as trtrepo.models.darknet,
box decoding included, so the twin returns (batch, boxes, 5 + classes) in input pixels like every engine."""

from __future__ import annotations

from typing import TYPE_CHECKING

from trtrepo.tf_networks.layers import batch_norm, conv2d, nchw_input

if TYPE_CHECKING:
    import keras
    import torch

    from trtrepo.specs import ModelSpec


def _yolo_decode(anchors: list[tuple[int, int]], classes: int, input_h: int, input_w: int, name: str):
    """darknet.YoloDecode on NHWC: (n, gh, gw, anchors * (5 + classes)) -> (n, anchors * gh * gw, 5 + classes),
    in the same order (anchor, row, column) as the PyTorch network."""
    import keras
    from keras import ops

    class YoloDecode(keras.layers.Layer):
        def call(self, p):
            gh, gw = p.shape[1], p.shape[2]
            count = len(anchors)
            p = ops.transpose(ops.reshape(p, (-1, gh, gw, count, 5 + classes)), (0, 3, 1, 2, 4))
            ys, xs = ops.meshgrid(ops.arange(gh, dtype="float32"), ops.arange(gw, dtype="float32"), indexing="ij")
            cells = ops.sigmoid(p[..., 0:2]) + ops.reshape(ops.stack((xs, ys), -1), (1, 1, gh, gw, 2))
            xy = ops.stack((cells[..., 0] * (input_w / gw), cells[..., 1] * (input_h / gh)), -1)
            wh = ops.exp(p[..., 2:4]) * ops.reshape(ops.convert_to_tensor(anchors, dtype="float32"), (1, count, 1, 1, 2))
            decoded = ops.concatenate((xy, wh, ops.sigmoid(p[..., 4:])), -1)
            return ops.reshape(decoded, (-1, count * gh * gw, 5 + classes))

    return YoloDecode(name=name)


def darknet(spec: "ModelSpec", network: "torch.nn.Module") -> "keras.Model":
    import keras

    tensor = spec.inputs[0]
    input_h, input_w = tensor.shape[1], tensor.shape[2]
    inputs, x = nchw_input(tensor.shape, tensor.name)
    outputs: list = []
    detections = []
    for index, (block, layer, sources) in enumerate(zip(network.blocks, network.layers, network.sources)):
        name = f"layer{index}_{block.kind}"
        if block.kind == "convolutional":
            x = conv2d(x, layer.conv, f"{name}_conv")
            if "bn" in layer._modules:
                x = batch_norm(x, layer.bn, f"{name}_bn")
            if "leaky" in layer._modules:
                x = keras.layers.LeakyReLU(negative_slope=layer.leaky.negative_slope, name=f"{name}_leaky")(x)
        elif block.kind == "maxpool":
            # Stride 1: Darknet pads right and bottom with edge values, which cannot change a maximum, and
            # TensorFlow's 'same' pads the end with values that never win it: the same result.
            x = keras.layers.MaxPooling2D(layer.size, layer.stride, padding="same" if layer.stride == 1 else "valid",
                                          name=name)(x)
        elif block.kind == "upsample":
            x = keras.layers.UpSampling2D(int(layer.scale_factor), interpolation="nearest", name=name)(x)
        elif block.kind == "route":
            chosen = [outputs[i] for i in sources]
            x = chosen[0] if len(chosen) == 1 else keras.layers.Concatenate(name=name)(chosen)
        elif block.kind == "shortcut":
            x = keras.layers.Add(name=name)([outputs[sources[0]], outputs[sources[1]]])
        elif block.kind == "yolo":
            anchors = [tuple(int(v) for v in pair) for pair in layer.anchors.view(-1, 2).tolist()]
            detections.append(_yolo_decode(anchors, layer.classes, input_h, input_w, name)(x))
        outputs.append(x)
    result = detections[0] if len(detections) == 1 else keras.layers.Concatenate(axis=1, name="detections")(detections)
    return keras.Model(inputs, result, name=spec.name)
