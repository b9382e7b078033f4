"""What ImageNet classifiers share: the 1000 class names, softmax + top-k postprocessing, tensor names."""

from __future__ import annotations

import functools

import numpy as np

from trtrepo.specs import CLASSIFICATION, ModelSpec, TensorSpec


@functools.cache
def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet class names, as torchvision's pretrained weights list them (imported when first asked for:
    torchvision takes seconds to import, which a model server that never names a class need not pay)."""
    from torchvision.models import ResNet50_Weights

    return ResNet50_Weights.IMAGENET1K_V2.meta["categories"]


class ImageNetClassifier(ModelSpec):
    """A 224x224 RGB classifier with 1000 ImageNet logits; subclasses give network, weights and preprocessing."""

    task = CLASSIFICATION
    inputs = (TensorSpec("input", "float32", (3, 224, 224), image_format="NCHW"),)
    outputs = (TensorSpec("logits", "float32", (1000,)),)
    labelled_output = "logits"
    #: The labelled output holds logits (softmax makes them probabilities), not probabilities already.
    outputs_logits = True

    @property
    def class_names(self) -> list[str]:
        return imagenet_class_names()

    def postprocess(self, outputs: dict[str, np.ndarray], top_k: int = 5) -> list[list[tuple[str, float]]]:
        """Softmax over the logits (where the output holds logits), then the top_k (class name, probability) pairs
        of each sample."""
        probs = outputs[self.labelled_output].astype(np.float64)
        if self.outputs_logits:
            probs = np.exp(probs - probs.max(axis=1, keepdims=True))
            probs /= probs.sum(axis=1, keepdims=True)
        best = np.argsort(-probs, axis=1, kind="stable")[:, :top_k]
        return [[(self.class_names[i], float(row[i])) for i in idx] for row, idx in zip(probs, best)]
