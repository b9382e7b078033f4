"""torchvision's ResNet (bottleneck blocks: ResNet50) in Keras: stride in the 3x3 convolution (ResNet v1.5, as
torchvision), unlike keras.applications.ResNet50 (stride in the first 1x1), so keras.applications cannot take
these weights."""

from __future__ import annotations

from typing import TYPE_CHECKING

from trtrepo.tf_networks.layers import batch_norm, conv2d, dense, nchw_input

if TYPE_CHECKING:
    import keras
    import torch

    from trtrepo.specs import ModelSpec


def _bottleneck(x: "keras.KerasTensor", block: "torch.nn.Module", name: str) -> "keras.KerasTensor":
    import keras

    y = x
    for index in (1, 2, 3):
        y = conv2d(y, getattr(block, f"conv{index}"), f"{name}_conv{index}")
        y = batch_norm(y, getattr(block, f"bn{index}"), f"{name}_bn{index}")
        if index < 3:
            y = keras.layers.ReLU(name=f"{name}_relu{index}")(y)
    shortcut = x
    if block.downsample is not None:
        shortcut = conv2d(x, block.downsample[0], f"{name}_down_conv")
        shortcut = batch_norm(shortcut, block.downsample[1], f"{name}_down_bn")
    return keras.layers.ReLU(name=f"{name}_out")(keras.layers.Add(name=f"{name}_add")([y, shortcut]))


def resnet(spec: "ModelSpec", network: "torch.nn.Module") -> "keras.Model":
    import keras

    tensor = spec.inputs[0]
    inputs, x = nchw_input(tensor.shape, tensor.name)
    x = keras.layers.ReLU(name="stem_relu")(batch_norm(conv2d(x, network.conv1, "stem_conv"), network.bn1, "stem_bn"))
    # Max pooling after a ReLU: zero padding equals PyTorch's -inf padding, every value being >= 0.
    x = keras.layers.ZeroPadding2D(1, name="stem_pool_pad")(x)
    x = keras.layers.MaxPooling2D(3, 2, name="stem_pool")(x)
    for stage in (1, 2, 3, 4):
        for index, block in enumerate(getattr(network, f"layer{stage}")):
            x = _bottleneck(x, block, f"stage{stage}_block{index}")
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, dense(x, network.fc, spec.outputs[0].name), name=spec.name)
