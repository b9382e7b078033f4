"""YOLO against an independent implementation: OpenCV's Darknet importer (cv2.dnn.readNetFromDarknet), the same
cfg and weights, fed by Darknet's letterbox written out here from darknet/src/image.c, decoded and NMS'd by OpenCV."""

from __future__ import annotations

import numpy as np
import pytest

from trtrepo.accuracy.metrics import match_by_class
from trtrepo.models import get_model
from trtrepo.models.detection import to_image_coords
from trtrepo.models.yolov3 import CFG_DIR, DEFAULT_CONF, DEFAULT_IOU, INPUT_SIZE
from trtrepo.specs import load_image

cv2 = pytest.importorskip("cv2", reason="opencv-python-headless 4.x (pip install -e '.[test]')")


def darknet_resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """image.c resize_image: across, then down; bilinear with sample points (in - 1) / (out - 1) apart."""
    in_h, in_w = image.shape[:2]
    xs = np.arange(width) * ((in_w - 1) / (width - 1)) if width > 1 else np.zeros(1)
    ix = np.minimum(xs.astype(int), in_w - 1)
    dx = (xs - ix)[None, :, None]
    right = np.minimum(ix + 1, in_w - 1)
    part = (1 - dx) * image[:, ix] + dx * image[:, right]
    part[:, -1] = image[:, -1]  # c == w-1 takes the last column as it is
    ys = np.arange(height) * ((in_h - 1) / (height - 1)) if height > 1 else np.zeros(1)
    iy = np.minimum(ys.astype(int), in_h - 1)
    dy = (ys - iy)[:, None, None]
    below = np.minimum(iy + 1, in_h - 1)
    resized = (1 - dy) * part[iy] + dy * part[below]
    resized[-1] = part[iy[-1]]  # r == h-1: no second row added
    return resized.astype(np.float32)


def darknet_letterbox(rgb: np.ndarray) -> tuple[np.ndarray, int, int, int, int]:
    """image.c letterbox_image: (blob HWC in 0..1, new_w, new_h, pad_x, pad_y)."""
    height, width = rgb.shape[:2]
    if INPUT_SIZE / width < INPUT_SIZE / height:
        new_w, new_h = INPUT_SIZE, height * INPUT_SIZE // width
    else:
        new_w, new_h = width * INPUT_SIZE // height, INPUT_SIZE
    boxed = np.full((INPUT_SIZE, INPUT_SIZE, 3), 0.5, dtype=np.float32)
    pad_x, pad_y = (INPUT_SIZE - new_w) // 2, (INPUT_SIZE - new_h) // 2
    boxed[pad_y : pad_y + new_h, pad_x : pad_x + new_w] = darknet_resize(rgb.astype(np.float32) / 255.0, new_w, new_h)
    return boxed, new_w, new_h, pad_x, pad_y


def opencv_detections(net, path) -> list[tuple[int, tuple[float, float, float, float]]]:
    """(class, xyxy box in image pixels) found by OpenCV's network at the client's thresholds."""
    rgb = np.asarray(load_image(path))
    boxed, new_w, new_h, pad_x, pad_y = darknet_letterbox(rgb)
    net.setInput(boxed.transpose(2, 0, 1)[None].copy())
    rows = np.concatenate([out.reshape(-1, out.shape[-1]) for out in net.forward(net.getUnconnectedOutLayersNames())])
    classes = rows[:, 5:].argmax(axis=1)
    scores = rows[np.arange(len(rows)), 5 + classes]  # OpenCV's region layer: objectness x class probability
    keep = scores >= DEFAULT_CONF
    rows, classes, scores = rows[keep], classes[keep], scores[keep]
    height, width = rgb.shape[:2]
    cx, cy = (rows[:, 0] * INPUT_SIZE - pad_x) * width / new_w, (rows[:, 1] * INPUT_SIZE - pad_y) * height / new_h
    bw, bh = rows[:, 2] * INPUT_SIZE * width / new_w, rows[:, 3] * INPUT_SIZE * height / new_h
    xywh = [[float(x - w / 2), float(y - h / 2), float(w), float(h)] for x, y, w, h in zip(cx, cy, bw, bh)]
    chosen = cv2.dnn.NMSBoxesBatched(xywh, scores.tolist(), classes.tolist(), DEFAULT_CONF, DEFAULT_IOU)
    return [(int(classes[i]), (xywh[i][0], xywh[i][1], xywh[i][0] + xywh[i][2], xywh[i][1] + xywh[i][3]))
            for i in np.array(chosen).reshape(-1)]


def test_yolov3_tiny_finds_what_opencvs_darknet_importer_finds(darknet_photos):
    import torch

    if not hasattr(cv2.dnn, "readNetFromDarknet"):
        pytest.skip(f"OpenCV {cv2.__version__} has no Darknet importer (5.0 dropped it): install opencv-python-headless<5")
    spec = get_model("yolov3_tiny")
    net = cv2.dnn.readNetFromDarknet(str(CFG_DIR / spec.cfg), str(spec.pretrained_file()))
    network = spec.build_network("pretrained")
    matched = {"darknet": 0, "pil": 0}
    total = 0
    for path in sorted(darknet_photos.glob("*.jpg")):
        reference = opencv_detections(net, path)
        total += len(reference)
        for method in matched:
            array, box = spec.letterbox(path, method)
            with torch.inference_mode():
                raw = network(torch.from_numpy(array[None])).numpy()
            ours = to_image_coords(spec.postprocess({"detections": raw})[0], box)
            matched[method] += match_by_class([(d.class_id, d.box) for d in ours], reference)
    assert total >= 15, f"OpenCV found only {total} boxes on Darknet's photos"
    assert matched["darknet"] / total >= 0.95, f"{matched['darknet']} of OpenCV's {total} boxes matched (same class, IoU >= 0.5)"
    assert matched["pil"] <= matched["darknet"]  # why Darknet's letterbox is the default (measured: 19 and 22 of 22)
