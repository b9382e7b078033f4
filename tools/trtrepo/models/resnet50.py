"""ResNet50 (torchvision): ImageNet classifier, the study's first model."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from trtrepo.models.imagenet import ImageNetClassifier

if TYPE_CHECKING:
    import torch
    from PIL import Image


# torch and torchvision are imported where the network or the preprocessing is used: a server stub running another
# engine's artifact of this model needs the spec alone. The pretrained weights' own evaluation transform: resize the short side to 232, centre crop 224.
RESIZE, CROP = 232, 224
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class ResNet50(ImageNetClassifier):
    name = "resnet50"
    weight_choices = "imagenet (pretrained)|random|PATH"
    keras_twin = "resnet:resnet"

    def build_network(self, weights: str) -> torch.nn.Module:
        from torchvision.models import ResNet50_Weights, resnet50

        from trtrepo.models.weights import apply_state_dict, download_state_dict, read_state_dict

        network = resnet50(weights=None)
        if weights in ("imagenet", "pretrained"):
            url = ResNet50_Weights.IMAGENET1K_V2.url
            apply_state_dict(network, download_state_dict(url, self.name), self.name, "imagenet")
        elif weights != "random":
            apply_state_dict(network, read_state_dict(Path(weights), self.name), self.name, weights)
        return network.eval()

    def preprocess_image(self, image: Image.Image) -> np.ndarray:
        from torchvision.transforms import functional as F

        image = F.center_crop(F.resize(image, RESIZE, antialias=True), CROP)
        tensor = F.normalize(F.to_tensor(image), MEAN, STD)
        return tensor.numpy().astype(np.float32)

    def preprocess_tensor(self, image: torch.Tensor) -> torch.Tensor:
        """preprocess_image on a uint8 CHW tensor where it lies: resized as uint8, so rounded and clamped as PIL does."""
        from torchvision.transforms.v2 import functional as F

        image = F.center_crop(F.resize(image, [RESIZE], antialias=True), [CROP])
        return F.normalize(image.float() / 255.0, list(MEAN), list(STD))
