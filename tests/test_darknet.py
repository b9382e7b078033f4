"""Darknet cfg parsing, .weights loading on a generated file with known values, in-graph decoding, NMS, letterbox."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from trtrepo.errors import UserError
from trtrepo.models import get_model
from trtrepo.models.darknet import DarknetNetwork, YoloDecode, load_darknet_weights, parse_cfg
from trtrepo.models.detection import Letterbox, to_image_coords
from trtrepo.models.yolov3 import INPUT_SIZE
from trtrepo.perf.analyzer import cuda_shared_memory

SMALL_CFG = """
[net]
width=32
height=32
channels=3

[convolutional]   # 0: 3 -> 4, batch norm
batch_normalize=1
filters=4
size=3
stride=1
pad=1
activation=leaky

[maxpool]         # 1: tiny's size-stride-1 pooling keeps 32x32
size=2
stride=1

[convolutional]   # 2: 4 -> 4, batch norm
batch_normalize=1
filters=4
size=1
stride=1
pad=1
activation=leaky

[shortcut]        # 3: 2 + 0
from=-3
activation=linear

[maxpool]         # 4: 16x16
size=2
stride=2

[convolutional]   # 5: head, bias, no batch norm: (5 + 2 classes) * 1 anchor
size=1
stride=1
pad=1
filters=7
activation=linear

[yolo]            # 6
mask = 0
anchors = 10,14
classes=2
num=1

[route]           # 7: back to the 32x32 features
layers = -4

[convolutional]   # 8: 4 -> 7 at 32x32
size=1
stride=1
pad=1
filters=7
activation=linear

[yolo]            # 9
mask = 0
anchors = 10,14
classes=2
num=1
"""


def network() -> DarknetNetwork:
    return DarknetNetwork(parse_cfg(SMALL_CFG)).eval()


def write_weights(path, count: int, major: int = 0, minor: int = 2) -> np.ndarray:
    values = np.arange(count, dtype=np.float32) / 1000
    seen = np.array([0], dtype=np.int64 if major * 10 + minor >= 2 else np.int32)
    path.write_bytes(np.array([major, minor, 0], dtype=np.int32).tobytes() + seen.tobytes() + values.tobytes())
    return values


def weight_count(net: DarknetNetwork) -> int:
    return sum(sum(t.numel() for t in (*layer.parameters(), *layer.buffers()) if t.dtype == torch.float32)
               for layer in net.convolutions())


def test_every_tensor_lands_where_the_cfg_says(tmp_path):
    net = network()
    values = write_weights(tmp_path / "small.weights", weight_count(net))
    load_darknet_weights(net, tmp_path / "small.weights")
    first, second, head, last = net.convolutions()
    expected = iter(np.split(values, np.cumsum([4, 4, 4, 4, 4 * 3 * 9, 4, 4, 4, 4, 4 * 4, 7, 7 * 4, 7])))
    for tensor in (first.bn.bias, first.bn.weight, first.bn.running_mean, first.bn.running_var, first.conv.weight,
                   second.bn.bias, second.bn.weight, second.bn.running_mean, second.bn.running_var, second.conv.weight,
                   head.conv.bias, head.conv.weight, last.conv.bias):
        assert np.array_equal(tensor.detach().numpy().ravel(), next(expected))
    assert np.array_equal(last.conv.weight.detach().numpy().ravel(), next(expected))


def test_old_header_with_32_bit_seen_count(tmp_path):
    net = network()
    values = write_weights(tmp_path / "old.weights", weight_count(net), major=0, minor=1)
    load_darknet_weights(net, tmp_path / "old.weights")
    assert net.convolutions()[0].bn.bias.detach().numpy().tolist() == values[:4].tolist()


@pytest.mark.parametrize("delta, message", [(-1, "ends after"), (3, "3 values left")])
def test_weights_that_do_not_fit_the_cfg_are_rejected(tmp_path, delta, message):
    net = network()
    write_weights(tmp_path / "bad.weights", weight_count(net) + delta)
    with pytest.raises(UserError, match=message):
        load_darknet_weights(net, tmp_path / "bad.weights")


def test_output_shape_and_cfg_errors():
    assert network()(torch.rand(2, 3, 32, 32)).shape == (2, 16 * 16 + 32 * 32, 7)
    with pytest.raises(UserError, match="not supported"):
        DarknetNetwork(parse_cfg("[net]\nwidth=32\n[lstm]\nsize=1\n"))
    with pytest.raises(UserError, match="does not start with a \\[net\\] block"):
        parse_cfg("[convolutional]\nsize=1\n")
    with pytest.raises(UserError, match="cannot parse"):
        parse_cfg("[net]\nwidth 32\n")


def test_full_cfgs_build_with_the_documented_sizes():
    yolo = get_model("yolov3").build_network("random")
    tiny = get_model("yolov3_tiny").build_network("random")
    assert sum(p.numel() for p in yolo.parameters()) == 61_949_149  # Darknet's YOLOv3, 80 classes
    assert len(yolo.convolutions()) == 75 and len(tiny.convolutions()) == 13
    assert tiny(torch.rand(1, 3, INPUT_SIZE, INPUT_SIZE)).shape == (1, 3 * (13 * 13 + 26 * 26), 85)


def test_decoding_puts_boxes_in_input_pixels():
    decode = YoloDecode([(10, 14), (20, 30)], classes=1)
    raw = torch.zeros(1, 2 * 6, 4, 4)  # all logits 0: sigmoid 0.5, exp 1
    out = decode(raw, 64, 64).view(2, 4, 4, 6)
    # Anchor 1, row 2, column 3: centre ((3 + 0.5) * 16, (2 + 0.5) * 16), size = the anchor.
    assert out[1, 2, 3].tolist() == [56.0, 40.0, 20.0, 30.0, 0.5, 0.5]


def test_nms_keeps_the_best_box_per_class_and_drops_low_scores():
    spec = get_model("yolov3_tiny")
    rows = np.zeros((4, 85), dtype=np.float32)
    rows[:, :4] = [[100, 100, 50, 50], [102, 101, 50, 50], [101, 100, 50, 50], [300, 300, 40, 40]]
    rows[:, 4] = [0.9, 0.8, 0.9, 0.1]  # objectness
    rows[0, 5 + 16] = rows[1, 5 + 16] = 1.0  # two overlapping dogs
    rows[2, 5 + 0] = 0.7  # a person on the same spot: another class, kept
    rows[3, 5 + 2] = 1.0  # a car scoring 0.1: under conf
    (found,) = spec.postprocess({"detections": rows[None]}, conf=0.25, iou=0.45)
    assert [(d.label, round(d.score, 2)) for d in found] == [("dog", 0.9), ("person", 0.63)]
    assert found[0].box == (75.0, 75.0, 125.0, 125.0)


def test_letterbox_and_its_inverse(tmp_path):
    path = tmp_path / "wide.png"
    Image.new("RGB", (800, 400), (255, 0, 0)).save(path)
    array, box = get_model("yolov3").letterbox(path)
    assert array.shape == (3, INPUT_SIZE, INPUT_SIZE) and box == Letterbox(0.52, 0.52, 0, 104, 800, 400)
    assert array[:, 103, 0].tolist() == [0.5, 0.5, 0.5] and array[:, 104, 0].tolist() == [1.0, 0.0, 0.0]
    from trtrepo.models.detection import Detection

    (mapped,) = to_image_coords([Detection(0, "person", 0.9, (52.0, 156.0, 104.0, 208.0))], box)
    assert mapped.box == pytest.approx((100.0, 100.0, 200.0, 200.0))


@pytest.mark.parametrize("name", ["yolov3_tiny", "yolov3"])
def test_declared_output_shape_is_what_the_network_returns(name):
    spec = get_model(name)
    with torch.inference_mode():
        returned = spec.build_network("random")(torch.zeros(1, *spec.inputs[0].shape))
    assert tuple(returned.shape[1:]) == spec.outputs[0].shape  # 2535 and 10647 boxes of 85 values
    assert cuda_shared_memory(f"{name}_pytorch_fp16", 2)[-1] == str(2 * returned[0].numel() * 4)
