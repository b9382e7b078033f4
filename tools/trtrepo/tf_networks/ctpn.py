"""CTPN (trtrepo.models.ctpn) in Keras: VGG16 conv1-conv5 and the sliding window, then the bidirectional GRU along
each feature-map row (height and width stay dynamic), the 512-wide layer and the anchor heads."""

from __future__ import annotations

from typing import TYPE_CHECKING

from trtrepo.tf_networks.layers import conv2d, nchw_input

if TYPE_CHECKING:
    import keras
    import torch

    from trtrepo.specs import ModelSpec


def _gru_weights(gru: "torch.nn.GRU", suffix: str) -> list:
    """One direction of a PyTorch GRU as Keras's kernel, recurrent kernel and bias (input and recurrent rows).

    PyTorch orders the gates reset, update, new; Keras update, reset, new. Keras's reset_after (its default) applies
    the reset gate after the recurrent product, as PyTorch does."""
    import numpy as np

    def get(name: str):
        value = getattr(gru, f"{name}_l0{suffix}").detach().cpu().float().numpy()
        reset, update, new = np.split(value, 3, axis=0)
        return np.concatenate([update, reset, new], axis=0)

    return [get("weight_ih").T, get("weight_hh").T, np.stack([get("bias_ih"), get("bias_hh")])]


def ctpn(spec: "ModelSpec", network: "torch.nn.Module") -> "keras.Model":
    import keras
    from keras import ops
    from torch import nn

    tensor = spec.inputs[0]
    inputs, x = nchw_input(tensor.shape, tensor.name)
    for index, module in enumerate(network.backbone.features):
        if isinstance(module, nn.Conv2d):
            x = conv2d(x, module, f"vgg{index}_conv")
        elif isinstance(module, nn.ReLU):
            x = keras.layers.ReLU(name=f"vgg{index}_relu")(x)
        elif isinstance(module, nn.MaxPool2d):
            x = keras.layers.MaxPooling2D(module.kernel_size, module.stride, name=f"vgg{index}_pool")(x)
        else:
            raise NotImplementedError(f"VGG layer {index} ({module.__class__.__name__}) has no twin here")
    features = keras.layers.ReLU(name="window_relu")(conv2d(x, network.backbone.window[0], "window_conv"))

    head = network.head
    rows = keras.layers.Lambda(lambda f: ops.reshape(f, (-1, ops.shape(f)[2], f.shape[3])), name="rows")(features)
    gru = keras.layers.Bidirectional(keras.layers.GRU(head.gru.hidden_size, return_sequences=True), name="bigru")
    context = gru(rows)
    gru.set_weights(_gru_weights(head.gru, "") + _gru_weights(head.gru, "_reverse"))
    width = 2 * head.gru.hidden_size
    context = keras.layers.Lambda(
        lambda pair: ops.reshape(pair[1], (ops.shape(pair[0])[0], ops.shape(pair[0])[1], ops.shape(pair[0])[2], width)),
        name="context")([features, context])
    y = keras.layers.ReLU(name="fc_relu")(conv2d(context, head.fc[0], "fc"))
    anchors = head.scores.out_channels // 2

    def pairs(t):  # (n, h, w, 2K) -> (n, h, w, K, 2): PyTorch's channel k * 2 + j, in NHWC
        return ops.reshape(t, (ops.shape(t)[0], ops.shape(t)[1], ops.shape(t)[2], anchors, 2))

    scores = keras.layers.Lambda(lambda t: ops.softmax(pairs(t), axis=-1)[..., 1], name="scores")(
        conv2d(y, head.scores, "scores_conv"))
    vertical = keras.layers.Lambda(pairs, name="vertical")(conv2d(y, head.vertical, "vertical_conv"))
    return keras.Model(inputs, [scores, vertical], name=spec.name)
