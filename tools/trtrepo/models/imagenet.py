"""What ImageNet classifiers share: the 1000 class names, softmax + top-k postprocessing, tensor names."""

from __future__ import annotations

import numpy as np
from torchvision.models import ResNet50_Weights

from trtrepo.specs import CLASSIFICATION, ModelSpec, TensorSpec

CLASS_NAMES: list[str] = ResNet50_Weights.IMAGENET1K_V2.meta["categories"]


class ImageNetClassifier(ModelSpec):
    """A 224x224 RGB classifier with 1000 ImageNet logits; subclasses give network, weights and preprocessing."""

    task = CLASSIFICATION
    inputs = (TensorSpec("input", "float32", (3, 224, 224)),)
    outputs = (TensorSpec("logits", "float32", (1000,)),)
    class_names = CLASS_NAMES

    def postprocess(self, outputs: dict[str, np.ndarray], top_k: int = 5) -> list[list[tuple[str, float]]]:
        """Softmax over the logits, then the top_k (class name, probability) pairs of each sample."""
        logits = outputs["logits"].astype(np.float64)
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        best = np.argsort(-probs, axis=1, kind="stable")[:, :top_k]
        return [[(self.class_names[i], float(row[i])) for i in idx] for row, idx in zip(probs, best)]
