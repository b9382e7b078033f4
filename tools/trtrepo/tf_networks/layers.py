"""Keras layers built from PyTorch modules, weights included: the pieces every twin is made of.

Padding is always explicit (ZeroPadding2D, then a 'valid' layer): PyTorch pads both sides alike where
TensorFlow's 'same' pads the end only for strided layers, so 'same' would shift every strided output.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import keras
    import torch


def _numpy(tensor: "torch.Tensor") -> np.ndarray:
    return tensor.detach().cpu().float().numpy()


def _pad(x: "keras.KerasTensor", padding: tuple[int, int, int, int], name: str) -> "keras.KerasTensor":
    """Zero padding (left, right, top, bottom), as torch.nn.functional.pad orders it; none is no layer."""
    import keras

    left, right, top, bottom = padding
    if not any(padding):
        return x
    return keras.layers.ZeroPadding2D(((top, bottom), (left, right)), name=f"{name}_pad")(x)


def conv2d(x: "keras.KerasTensor", conv: "torch.nn.Conv2d", name: str,
           padding: tuple[int, int, int, int] | None = None) -> "keras.KerasTensor":
    """``conv`` (plain or depthwise) on NHWC ``x``; ``padding`` (left, right, top, bottom) replaces the module's
    own symmetric padding where the network pads separately (a 'same'-padded module)."""
    import keras

    if padding is None:
        pad_h, pad_w = conv.padding if isinstance(conv.padding, tuple) else (0, 0)
        padding = (pad_w, pad_w, pad_h, pad_h)
    x = _pad(x, padding, name)
    weight = _numpy(conv.weight)  # (out, in / groups, kh, kw)
    bias = [_numpy(conv.bias)] if conv.bias is not None else []
    common = dict(strides=conv.stride, dilation_rate=conv.dilation, padding="valid", use_bias=conv.bias is not None,
                  name=name)
    if conv.groups == 1:
        layer = keras.layers.Conv2D(conv.out_channels, conv.kernel_size, **common)
        kernel = weight.transpose(2, 3, 1, 0)  # (kh, kw, in, out)
    elif conv.groups == conv.in_channels == conv.out_channels:
        layer = keras.layers.DepthwiseConv2D(conv.kernel_size, **common)
        kernel = weight.transpose(2, 3, 0, 1)  # (kh, kw, in, 1)
    else:
        raise NotImplementedError(f"{name}: grouped convolution with {conv.groups} groups has no Keras twin here")
    y = layer(x)
    layer.set_weights([kernel, *bias])
    return y


def batch_norm(x: "keras.KerasTensor", bn: "torch.nn.BatchNorm2d", name: str) -> "keras.KerasTensor":
    """Inference batch normalisation with ``bn``'s statistics and epsilon (Keras's default epsilon differs)."""
    import keras

    layer = keras.layers.BatchNormalization(epsilon=bn.eps, name=name)
    y = layer(x)
    layer.set_weights([_numpy(bn.weight), _numpy(bn.bias), _numpy(bn.running_mean), _numpy(bn.running_var)])
    return y


def dense(x: "keras.KerasTensor", linear: "torch.nn.Linear", name: str) -> "keras.KerasTensor":
    import keras

    layer = keras.layers.Dense(linear.out_features, name=name)
    y = layer(x)
    layer.set_weights([_numpy(linear.weight).T, _numpy(linear.bias)])
    return y


def nchw_input(spec_shape: tuple[int, ...], name: str) -> tuple["keras.KerasTensor", "keras.KerasTensor"]:
    """The model's NCHW input (as every engine's clients send it) and the same tensor in NHWC for the layers."""
    import keras

    inputs = keras.Input(shape=tuple(d if d > 0 else None for d in spec_shape), name=name)
    return inputs, keras.layers.Permute((2, 3, 1), name="to_nhwc")(inputs)
