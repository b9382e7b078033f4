"""Models declared in the plan ([[model]]) build like built-in ones and are served and answered from the
repository alone: the stubs and the clients read them from the variants' configs, with no declaration in the
process that asks. One repository holds a declared model of each source kind (torchvision with a state dict,
TorchScript, torch.export, an ONNX file from elsewhere) and two detectors (YOLOv3-tiny's ONNX with the Darknet
head, an anchor-free one made here); it is built and served once for the module."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import built_once, resnet_client, trtrepo, yolo_client
from trtrepo.errors import UserError
from trtrepo.imagesets import shipped_photos
from trtrepo.serving.server import Ports, TritonServer

NAME, CLASSES = "flowers", ("daisy", "rose", "tulip")
BOX_CLASSES = ("cat", "dog")
VARIANT = """
[[variant]]
model = "{model}"
engine = "{engine}"
precision = "{precision}"
max_batch_size = 4
preferred_batch_sizes = [4]
"""
PLAN = """
[repository]
output = "{output}"
backends = "python"

[[model]]
name = "flowers"
torchvision = "resnet18"
weights = "flowers.pt"
labels = "labels.txt"
input_size = [96, 96]
resize = 110
{extra}
""" + VARIANT.format(model="flowers", engine="onnxruntime", precision="fp32") + VARIANT.format(model="flowers", engine="pytorch", precision="fp32") + """
[[pipeline]]
name = "flowers"
variant = "flowers_onnxruntime_fp32"
"""
#: The same classifier from another PyTorch source.
FLOWERS = """
[[model]]
name = "{name}"
{source}
labels = "labels.txt"
input_size = [96, 96]
resize = 110
"""
#: The classifier as another framework hands it over: an NHWC BGR ONNX file answering probabilities.
FLOWERS_ONNX = """
[[model]]
name = "flowers_onnx"
onnx = "flowers.onnx"
labels = "labels.txt"
input_size = [96, 96]
resize = 110
layout = "NHWC"
channels = "BGR"
softmax = false
"""
#: The other source kinds, beside the torchvision one of PLAN: served in the same repository.
MORE_MODELS = FLOWERS_ONNX + """

""" + "".join(FLOWERS.format(name=name, source=source) for name, source in [
    ("flowers_script", 'torchscript = "flowers.ts"'), ("flowers_exported", 'exported = "flowers.pt2"'),
    ("flowers_factory", 'factory = "flowers_factory:flowers"\nweights = "flowers.pt"')]) + """
[[model]]
name = "mixer"
onnx = "mixer.onnx"
task = "raw"
tolerance = 0.05

[[model]]
name = "tiny"
onnx = "tiny.onnx"
labels = "coco.names"
task = "detection"
head = "darknet"
letterbox = "darknet"
input_size = [416, 416]

[[model]]
name = "boxes"
onnx = "boxes.onnx"
labels = "boxes.names"
task = "detection"
head = "anchor_free"
input_size = [64, 96]
pad = 0.447
""" + "".join(VARIANT.format(model=model, engine=engine, precision=precision) for model, engine, precision in [
    ("flowers_onnx", "onnxruntime", "fp32"), ("flowers_onnx", "pytorch", "fp32"), ("flowers_script", "pytorch", "fp32"),
    ("flowers_script", "inductor", "fp32"), ("flowers_exported", "pytorch", "fp32"), ("flowers_exported", "onnxruntime", "fp32"),
    ("flowers_factory", "onnxruntime", "fp32"), ("mixer", "onnxruntime", "fp32"), ("mixer", "onnxruntime", "int8"),
    ("tiny", "onnxruntime", "fp32"), ("boxes", "onnxruntime", "fp32")]) + """
[[pipeline]]
name = "tiny"
variant = "tiny_onnxruntime_fp32"
"""


def write_plan(folder: Path, extra: str = "", more: str = "") -> Path:
    plan = folder / "plan.toml"
    plan.write_text(PLAN.format(output=folder / "model_repository", extra=extra) + more)
    return plan


#: A factory a user's package would hold: importable where the network is built (and served by a PyTorch engine).
FACTORY = """
from torchvision.models import resnet18


def flowers():
    return resnet18(num_classes=3)
"""


def flowers_network():
    """The declared classifier: a 3-class ResNet18 with seeded random weights."""
    import torch
    from torchvision.models import resnet18

    torch.manual_seed(3)
    return resnet18(num_classes=len(CLASSES)).eval()


def export_flowers(network, out: Path, batch: dict | None = None) -> Path:
    """The declared ResNet18 as another framework would hand it over: an ONNX file taking NHWC BGR images and
    answering probabilities, tensors named its own way, the batch axis free (unless ``batch`` fixes it)."""
    import torch

    class HandedOver(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.network = network

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            return self.network(images.permute(0, 3, 1, 2).flip(1)).softmax(dim=1)

    axes = {"images": {0: "batch"}, "probs": {0: "batch"}} if batch is None else batch
    torch.onnx.export(HandedOver().eval(), (torch.zeros(1, 96, 96, 3),), str(out), input_names=["images"],
                      output_names=["probs"], dynamic_axes=axes, dynamo=False)
    return out


def mixer_network():
    """A raw model: two inputs, two outputs, no images."""
    import torch

    class Mixer(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(7)
            self.weight = torch.nn.Parameter(torch.randn(4, 3))

        def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return x @ self.weight + y[:, :3], x * y

    return Mixer().eval()


def anchor_free_detector():
    """What current YOLO exports answer, in small: (4 + classes, boxes) per image, centre-size boxes in input pixels
    (one per 8x8 cell of a 64x96 input) and a sigmoid score per class."""
    import torch

    class Boxes(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(5)
            self.conv = torch.nn.Conv2d(3, 4 + len(BOX_CLASSES), 8, stride=8)

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            raw = self.conv(images).flatten(2)  # (batch, 4 + classes, 8 * 12 cells)
            columns = torch.arange(12, dtype=torch.float32).repeat(8) * 8 + 4
            rows = torch.arange(8, dtype=torch.float32).repeat_interleave(12) * 8 + 4
            centre_x, centre_y = columns + raw[:, 0].tanh() * 4, rows + raw[:, 1].tanh() * 4
            width, height = raw[:, 2].sigmoid() * 24 + 2, raw[:, 3].sigmoid() * 24 + 2
            return torch.cat([torch.stack([centre_x, centre_y, width, height], 1), raw[:, 4:].sigmoid()], 1)

    return Boxes().eval()


@pytest.fixture(scope="module")
def declared(shared_folder: Path) -> Path:
    """A folder with the declarations' files (made once for all workers): the classifier's state dict,
    TorchScript, exported program, factory module and ONNX file, YOLOv3-tiny's ONNX with the COCO names, the
    anchor-free detector's ONNX, and the labels."""
    from trtrepo.models import get_model

    if not get_model("yolov3_tiny").pretrained_file().is_file():
        pytest.skip("yolov3-tiny.weights not unpacked: run make install")
    return built_once(shared_folder / "declared", _declaration_files)


def _declaration_files(folder: Path) -> None:
    import torch

    from trtrepo.build.export import export_onnx
    from trtrepo.models import get_model
    from trtrepo.models.yolov3 import COCO_NAMES

    network = flowers_network()
    torch.save(network.state_dict(), folder / "flowers.pt")
    torch.jit.save(torch.jit.script(network), str(folder / "flowers.ts"))
    batch = torch.export.Dim("batch", min=1, max=64)
    torch.export.save(torch.export.export(network, (torch.zeros(2, 3, 96, 96),), dynamic_shapes=({0: batch},)),
                      str(folder / "flowers.pt2"))
    export_flowers(network, folder / "flowers.onnx")
    (folder / "flowers_factory.py").write_text(FACTORY)
    (folder / "labels.txt").write_text("\n".join(CLASSES) + "\n")
    tiny = get_model("yolov3_tiny")
    export_onnx(tiny, tiny.build_network("pretrained"), folder / "tiny.onnx")
    (folder / "coco.names").write_text("\n".join(COCO_NAMES) + "\n")
    torch.onnx.export(anchor_free_detector(), (torch.zeros(1, 3, 64, 96),), str(folder / "boxes.onnx"),
                      input_names=["images"], output_names=["output0"],
                      dynamic_axes={"images": {0: "batch"}, "output0": {0: "batch"}}, dynamo=False)
    (folder / "boxes.names").write_text("\n".join(BOX_CLASSES) + "\n")
    torch.onnx.export(mixer_network(), (torch.zeros(1, 4), torch.zeros(1, 4)), str(folder / "mixer.onnx"),
                      input_names=["x", "y"], output_names=["mixed", "product"], dynamo=False,
                      dynamic_axes={name: {0: "batch"} for name in ("x", "y", "mixed", "product")})


@pytest.fixture(scope="module")
def declared_build(declared: Path, shared_folder: Path) -> tuple[Path, dict[str, list[str]]]:
    """The repository of every declared model, built once for all workers: its folder and each variant's build
    status and detail."""
    def build(folder: Path) -> None:
        from trtrepo.build.plan import load_plan
        from trtrepo.build.repository import build_repository

        shutil.copytree(declared, folder / "files", ignore=shutil.ignore_patterns("built"))
        sys.path.insert(0, str(folder / "files"))  # the factory's package, as if installed
        try:
            plan = load_plan(write_plan(folder / "files", more=MORE_MODELS))
            results = {r.variant: [r.status, r.detail] for r in build_repository(plan)}
        finally:
            sys.path.remove(str(folder / "files"))
        (folder / "results.json").write_text(json.dumps(results))

    folder = built_once(shared_folder / "declared_repo", build)
    return folder / "files" / "model_repository", json.loads((folder / "results.json").read_text())


@pytest.fixture(scope="module")
def declared_repo(declared_build: tuple[Path, dict]) -> Path:
    return declared_build[0]


@pytest.fixture(scope="module")
def declared_server(declared_repo: Path) -> TritonServer:
    with TritonServer(declared_repo, Ports.free(), model_control="explicit") as running:
        yield running


def expected_top(photos: list[Path]) -> list[list[tuple[str, float]]]:
    """The declared network run here on the photos, prepared as declared: the top classes with probabilities."""
    import torch
    from torchvision.transforms import functional as F

    with torch.inference_mode():
        batch = torch.stack([F.normalize(F.to_tensor(F.center_crop(F.resize(_rgb(p), 110, antialias=True), [96, 96])),
                                         [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]) for p in photos])
        probabilities = flowers_network()(batch).double().softmax(dim=1).numpy()
    return [[(CLASSES[i], float(row[i])) for i in np.argsort(-row, kind="stable")] for row in probabilities]


def _rgb(path: Path):
    from PIL import Image

    with Image.open(path) as image:
        return image.convert("RGB")


def test_each_source_kind_builds_with_the_engines_that_apply(declared_build):
    """Every declared model's variants are built; an engine that cannot take the source says why in one line."""
    _, results = declared_build
    skipped = {name: detail for name, (status, detail) in results.items() if status == "skipped"}
    assert {name for name, (status, _) in results.items() if status == "built"} == {
        "flowers_onnxruntime_fp32", "flowers_pytorch_fp32", "flowers", "flowers_onnx_onnxruntime_fp32",
        "flowers_script_pytorch_fp32", "flowers_exported_pytorch_fp32", "flowers_exported_onnxruntime_fp32",
        "flowers_factory_onnxruntime_fp32", "mixer_onnxruntime_fp32", "tiny_onnxruntime_fp32", "tiny",
        "boxes_onnxruntime_fp32"}, results
    assert "mixer is a raw model: INT8 calibrates on images" in skipped["mixer_onnxruntime_int8"]
    assert "comes from an ONNX file" in skipped["flowers_onnx_pytorch_fp32"]
    assert "TorchScript network, which torch.compile does not take" in skipped["flowers_script_inductor_fp32"]


def test_a_declared_model_is_served_and_answered_from_the_repository_alone(declared_repo, declared_server):
    from trtrepo.clients.resnet_client import classify, classify_server_side
    from trtrepo.format.config import read_config

    photos = shipped_photos()[:3]
    config = read_config(declared_repo / "flowers_onnxruntime_fp32" / "config.pbtxt")
    assert json.loads(config.parameters["declaration"].string_value)["class_names"] == list(CLASSES)
    assert (declared_repo / "flowers_onnxruntime_fp32" / "labels.txt").read_text().split() == list(CLASSES)
    want = expected_top(photos)
    for variant in ("flowers_onnxruntime_fp32", "flowers_pytorch_fp32", "flowers_onnx_onnxruntime_fp32",
                    "flowers_script_pytorch_fp32", "flowers_exported_pytorch_fp32", "flowers_exported_onnxruntime_fp32",
                    "flowers_factory_onnxruntime_fp32"):
        got = classify(photos, variant, declared_server.http_url, "http", 4, 3)
        assert [[label for label, _ in row] for row in got] == [[label for label, _ in row] for row in want], variant
        assert np.allclose([[s for _, s in row] for row in got], [[s for _, s in row] for row in want], atol=1e-3), variant
    pipelined = classify_server_side(photos, NAME, declared_server.grpc_url, "grpc", 3)
    assert [row[0][0] for row in pipelined] == [row[0][0] for row in want]
    printed = resnet_client(str(photos[0]), "--url", declared_server.http_url, "--model", "flowers_onnxruntime_fp32",
                            "--top-k", "1", "--json")
    assert printed.returncode == 0, printed.stderr
    assert json.loads(printed.stdout)[0]["top"][0]["label"] == want[0][0][0]


def test_yolov3_tiny_declared_from_its_onnx_finds_what_the_built_in_model_finds(declared, declared_server):
    """The Darknet head and letterbox: yolo_client's boxes, tensors and --server-side, are the built-in model's."""
    import onnxruntime

    from trtrepo.models import get_model
    from trtrepo.models.detection import to_image_coords

    photos = shipped_photos()[:4]  # Grace Hopper first: YOLOv3-tiny finds her
    built_in = get_model("yolov3_tiny")
    session = onnxruntime.InferenceSession(str(declared / "tiny.onnx"), providers=["CPUExecutionProvider"])
    want = []
    for photo in photos:
        array, letterbox = built_in.letterbox(photo)
        found = built_in.postprocess({"detections": session.run(None, {"input": array[None]})[0]})[0]
        want.append([(d.label, round(d.score, 3), [round(v, 1) for v in d.box]) for d in to_image_coords(found, letterbox)])
    assert any(want), "these shipped photos should hold something YOLOv3-tiny finds"
    for extra in ((), ("--server-side",)):
        result = yolo_client(*map(str, photos), "--url", declared_server.http_url, "--model", "tiny_onnxruntime_fp32",
                             "--json", *extra)
        assert result.returncode == 0, result.stderr
        got = [[(d["label"], round(d["score"], 3), d["box"]) for d in image["detections"]] for image in json.loads(result.stdout)]
        assert [[(label, score) for label, score, _ in row] for row in got] == [[(l, s) for l, s, _ in row] for row in want], extra
        assert np.allclose([b for row in got for _, _, b in row], [b for row in want for _, _, b in row], atol=0.5), extra


def test_an_anchor_free_detector_answers_the_boxes_of_its_own_output(declared, declared_server):
    """(4 + classes, boxes) decoded here, independently of trtrepo: best class, threshold, NMS per class, mapped out
    of the 64x96 letterbox (padded 0.447) of each photo: the boxes yolo_client reports."""
    import onnxruntime
    import torch
    from torchvision.ops import batched_nms

    photos = shipped_photos()[:3]
    session = onnxruntime.InferenceSession(str(declared / "boxes.onnx"), providers=["CPUExecutionProvider"])
    want = []
    for photo in photos:
        image = torch.from_numpy(np.asarray(_rgb(photo), dtype=np.uint8).copy()).permute(2, 0, 1)
        height, width = image.shape[1:]
        scale = min(96 / width, 64 / height)
        new_w, new_h = round(width * scale), round(height * scale)
        resized = torch.nn.functional.interpolate(image[None].float() / 255, size=(new_h, new_w), mode="bilinear",
                                                  align_corners=False)[0]
        canvas = torch.full((3, 64, 96), 0.447)
        left, top = (96 - new_w) // 2, (64 - new_h) // 2
        canvas[:, top : top + new_h, left : left + new_w] = resized
        (output,) = session.run(None, {"images": canvas[None].numpy()})[0]
        scores, classes = output[4:].max(axis=0), output[4:].argmax(axis=0)
        keep = scores >= 0.25
        centre, size = output[:2, keep].T, output[2:4, keep].T
        corners = torch.from_numpy(np.concatenate([centre - size / 2, centre + size / 2], axis=1))
        kept = batched_nms(corners, torch.from_numpy(scores[keep]), torch.from_numpy(classes[keep]), 0.45).numpy()
        boxes = corners.numpy()[kept]
        boxes[:, [0, 2]] = ((boxes[:, [0, 2]] - left) / (new_w / width)).clip(0, width)
        boxes[:, [1, 3]] = ((boxes[:, [1, 3]] - top) / (new_h / height)).clip(0, height)
        want.append([(BOX_CLASSES[classes[keep][i]], float(scores[keep][i]), box) for i, box in zip(kept, boxes)])
    assert sum(map(len, want)) > 3
    result = yolo_client(*map(str, photos), "--url", declared_server.grpc_url, "--protocol", "grpc", "--model",
                         "boxes_onnxruntime_fp32", "--json")
    assert result.returncode == 0, result.stderr
    got = [image["detections"] for image in json.loads(result.stdout)]
    assert [[d["label"] for d in row] for row in got] == [[label for label, _, _ in row] for row in want]
    assert np.allclose([d["score"] for row in got for d in row], [s for row in want for _, s, _ in row], atol=1e-3)
    assert np.allclose([d["box"] for row in got for d in row], [b for row in want for _, _, b in row], atol=0.2)


def test_a_client_of_the_wrong_task_is_told_which_one_to_use(declared_server):
    result = yolo_client(str(shipped_photos()[0]), "--url", declared_server.http_url, "--model", "flowers_onnxruntime_fp32")
    assert result.returncode == 2 and "is not a detector (classification): use clients/resnet_client.py" in result.stderr
    result = resnet_client(str(shipped_photos()[0]), "--url", declared_server.http_url, "--model", "boxes_onnxruntime_fp32")
    assert result.returncode == 2 and "is not a classifier (detection): use clients/yolo_client.py" in result.stderr


ONNX_PLAN = """
[repository]
output = "{output}"
backends = "python"
""" + FLOWERS_ONNX + "{extra}" + VARIANT.format(model="flowers_onnx", engine="onnxruntime", precision="fp32")


@pytest.mark.parametrize("extra, fixed_batch, message", [
    ('torchvision = "resnet18"\n', False, "give the network's source as one of torchvision, timm, factory, torchscript, exported, onnx, not torchvision and onnx"),
    ("", True, "has its batch fixed at 1: export it with a free batch axis"),
    ('input_size = [64, 64]\nresize = 70\n', False, "is [96, 96, 3] per image, not [64, 64, 3] (NHWC, input_size [64, 64])"),
    ('labels = "four.txt"\n', False, "output probs is [3] per image, not [classes] (one score per class name of the labels file) with 4 classes"),
], ids=["two_sources", "fixed_batch", "size", "label_count"])
def test_a_declared_onnx_file_that_disagrees_with_its_declaration_is_one_line(declared, tmp_path, extra, fixed_batch,
                                                                               message):
    shutil.copy(declared / "labels.txt", tmp_path / "labels.txt")
    export_flowers(flowers_network(), tmp_path / "flowers.onnx", {} if fixed_batch else None)
    plan = ONNX_PLAN.format(output=tmp_path / "model_repository", extra=extra)
    if "input_size = [64" in extra:
        plan = plan.replace("input_size = [96, 96]\nresize = 110\n", "")
    if "four.txt" in extra:
        (tmp_path / "four.txt").write_text("a\nb\nc\nd\n")
        plan = plan.replace('labels = "labels.txt"\n', "")
    (tmp_path / "plan.toml").write_text(plan)
    result = trtrepo("repo", "--plan", str(tmp_path / "plan.toml"))
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and message in lines[0], result.stderr
    assert not (tmp_path / "model_repository").exists()



@pytest.mark.parametrize("extra, files, message", [
    ('task = "segmentation"\n', {}, "task 'segmentation'; one of \"classification\", \"detection\""),
    ('task = "detection"\nhead = "yolo"\n', {}, "head 'yolo'; one of \"darknet\", \"anchor_free\""),
    ('task = "detection"\nletterbox = false\n', {}, "a detector's images are letterboxed"),
    ('task = "detection"\n', {}, "output detections is [3] per image, not [boxes, 5 + classes]"),
    ("", {"labels.txt": "a\nb\nc\nd\n"}, "do not fit the network: size mismatch for fc.weight"),
    ('head = "darknet"\n', {}, "head is a detector's; this model's task is classification"),
    ("", {"labels.txt": "daisy\n"}, "names 1 class; a classifier needs two or more"),
    ("", {"labels.txt": None}, "labels file"),
    ('interpolation = "cubic"\n', {}, "interpolation 'cubic'"),
    ("", {"flowers.pt": b"not a checkpoint"}, "is not a PyTorch checkpoint"),
    ("mean = [0.5, 0.5]\n", {}, "mean must be 3 numbers"),
], ids=["task", "head", "not_letterboxed", "detector_output", "label_count", "classifier_head", "one_label", "no_labels", "interpolation", "bad_weights", "mean"])
def test_a_bad_declaration_is_one_line_before_anything_is_built(declared, tmp_path, extra, files, message):
    for name in ("flowers.pt", "labels.txt"):
        shutil.copy(declared / name, tmp_path / name)
    for name, content in files.items():
        if content is None:
            (tmp_path / name).unlink()
        elif isinstance(content, bytes):
            (tmp_path / name).write_bytes(content)
        else:
            (tmp_path / name).write_text(content)
    result = trtrepo("repo", "--plan", str(write_plan(tmp_path, extra)))
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and message in lines[0], result.stderr
    assert "[[model]] #1 (flowers)" in lines[0]
    assert not (tmp_path / "model_repository").exists()


@pytest.mark.parametrize("source, message", [
    pytest.param('timm = "resnet18"', "timm is not installed here (pip install timm)", marks=pytest.mark.skipif(
        importlib.util.find_spec("timm") is not None, reason="timm is installed: it builds")),
    ('factory = "no_such_package.models:net"', "factory no_such_package.models:net cannot be imported (ModuleNotFoundError"),
    ('factory = "torchvision.models:list_models"', "factory torchvision.models:list_models returned a list, not a torch.nn.Module"),
    ('factory = "resnet18"', "factory 'resnet18' must be \"package.module:function\""),
    ('torchscript = "flowers.pt"', "flowers.pt is not a TorchScript file (torch.jit.save)"),
    ('exported = "flowers.pt"', "flowers.pt is not a torch.export program (torch.export.save, .pt2)"),
    ('torchscript = "flowers.ts"\nweights = "flowers.pt"', "a torchscript file holds its weights"),
], ids=["timm", "factory_missing", "factory_not_a_module", "factory_form", "not_torchscript", "not_exported", "weights_beside_file"])
def test_a_bad_source_is_one_line_before_anything_is_built(declared, tmp_path, source, message):
    for name in ("flowers.pt", "flowers.ts", "labels.txt"):
        shutil.copy(declared / name, tmp_path / name)
    plan = write_plan(tmp_path)
    plan.write_text(plan.read_text().replace('torchvision = "resnet18"\nweights = "flowers.pt"', source))
    result = trtrepo("repo", "--plan", str(plan))
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and message in lines[0], result.stderr
    assert not (tmp_path / "model_repository").exists()


def test_weights_that_do_not_fit_the_declared_architecture_are_refused_naming_the_keys(declared, tmp_path):
    import torch
    from torchvision.models import resnet18

    from trtrepo.build.plan import load_plan

    shutil.copy(declared / "labels.txt", tmp_path / "labels.txt")
    torch.save(resnet18(num_classes=5).state_dict(), tmp_path / "flowers.pt")  # five classes, three labels
    with pytest.raises(UserError, match=r"weights from .*flowers.pt do not fit the network.*fc\.weight"):
        load_plan(write_plan(tmp_path))


def test_the_commands_on_a_built_repository_know_its_declared_models_for_their_block_only(declared_repo):
    """perf, bench, tune, soak, eval and compare find a declared model in the repository's configs, no plan needed."""
    from trtrepo.format.config import repository_models
    from trtrepo.models import get_model

    with repository_models(declared_repo):
        assert get_model(NAME).class_names == list(CLASSES)
        assert get_model(NAME).inputs[0].shape == (3, 96, 96)
    with pytest.raises(UserError, match="unknown model 'flowers'.*declare it in the plan"):
        get_model(NAME)


def test_build_and_export_take_a_declaration_file(declared, tmp_path):
    """trtrepo build and export know a model from --declare FILE (its [[model]] tables), beside the plan's own."""
    from trtrepo.format.config import read_config

    for name in ("flowers.ts", "flowers.onnx", "labels.txt"):
        shutil.copy(declared / name, tmp_path / name)
    (tmp_path / "mine.toml").write_text('[[model]]\nname = "scripted"\ntorchscript = "flowers.ts"\nlabels = "labels.txt"\n'
                                        'input_size = [96, 96]\nresize = 110\n\n[[model]]\nname = "handed"\n'
                                        'onnx = "flowers.onnx"\nlabels = "labels.txt"\ninput_size = [96, 96]\n'
                                        'layout = "NHWC"\nchannels = "BGR"\nsoftmax = false\n')
    declare = ("--declare", str(tmp_path / "mine.toml"))
    built = trtrepo("build", "scripted", *declare, "--engine", "onnxruntime", "--output", str(tmp_path / "repo"))
    assert built.returncode == 0, built.stderr
    assert "built " in built.stdout and "(gate PASS: top1_agreement 1.000 >= 0.99" in built.stdout
    config = read_config(tmp_path / "repo" / "scripted_onnxruntime_fp32" / "config.pbtxt")
    assert json.loads(config.parameters["declaration"].string_value)["source"] == "torchscript"
    exported = trtrepo("export", "scripted", *declare, "--output", str(tmp_path / "scripted.onnx"))
    assert exported.returncode == 0 and "ONNX Runtime vs PyTorch max abs diff" in exported.stdout, exported.stderr
    assert (tmp_path / "scripted.onnx").stat().st_size > 1_000_000
    refused = trtrepo("export", "handed", *declare, "--output", str(tmp_path / "handed.onnx"))
    assert refused.returncode == 2 and refused.stderr.strip() == "error: handed comes from an ONNX file: it has no PyTorch network"
    unknown = trtrepo("build", "scripted", "--engine", "onnxruntime", "--output", str(tmp_path / "repo"))
    assert unknown.returncode == 2 and "unknown model 'scripted'" in unknown.stderr
    (tmp_path / "plan.toml").write_text("[repository]\noutput = 'x'\n")
    wrong = trtrepo("build", "scripted", "--declare", str(tmp_path / "plan.toml"))
    assert wrong.returncode == 2 and "a declaration file holds [[model]] tables only, not repository" in wrong.stderr


def test_perf_measures_a_declared_detector_and_its_pipeline_from_the_server_alone(declared_server, tmp_path):
    """trtrepo perf through --url: the declared variant's inputs and the pipeline's photos from the served configs."""
    from trtrepo.perf.sweep import read_csv

    metrics = declared_server.metrics_url.removeprefix("http://").removesuffix("/metrics")
    result = trtrepo("perf", "--url", declared_server.grpc_url, "--metrics-url", metrics, "--models",
                     "tiny_onnxruntime_fp32,tiny", "--instances", "1", "--concurrency", "1", "--measurement-ms", "500",
                     "--output", str(tmp_path))
    assert result.returncode == 0, result.stderr
    points = {p.variant: p for p in read_csv(tmp_path / "sweep.csv")}
    assert points["tiny"].serves == "tiny_onnxruntime_fp32" and points["tiny"].throughput > 0
    assert points["tiny_onnxruntime_fp32"].throughput > 0
    assert "tiny bytes in / tiny_onnxruntime_fp32 tensors in" in (tmp_path / "sweep.md").read_text()


def test_a_raw_model_serves_its_own_tensors_and_is_judged_by_its_tolerance(declared, declared_server, tmp_path):
    """Two inputs and two outputs, from the ONNX graph: served as ONNX Runtime computes them here; a variant's
    gate counts the random samples on which every output stays within the declared tolerance."""
    import onnxruntime

    from trtrepo.accuracy.measures import task_measures
    from trtrepo.models import declared_models, get_model
    from trtrepo.models.declaration import parse_declaration
    from trtrepo.serving.client import InferenceClient

    rng = np.random.default_rng(0)
    inputs = {"x": rng.standard_normal((3, 4)).astype(np.float32), "y": rng.standard_normal((3, 4)).astype(np.float32)}
    session = onnxruntime.InferenceSession(str(declared / "mixer.onnx"), providers=["CPUExecutionProvider"])
    want = dict(zip(["mixed", "product"], session.run(None, inputs)))
    got = InferenceClient("mixer_onnxruntime_fp32", url=declared_server.grpc_url, protocol="grpc").infer(inputs)
    assert {name: got[name].shape for name in want} == {"mixed": (3, 3), "product": (3, 4)}
    assert all(np.allclose(got[name], want[name], atol=1e-6) for name in want)
    declaration = parse_declaration({"name": "mixer", "onnx": "mixer.onnx", "task": "raw", "tolerance": 0.05}, "t", declared)
    with declared_models([declaration]):
        spec = get_model("mixer")
    nudged = {name: array + np.array([[0.01], [0.01], [0.2]], dtype=np.float32) for name, array in want.items()}
    assert task_measures(spec, [want], [nudged]) == {"within_tolerance": pytest.approx(2 / 3), "max_abs": pytest.approx(0.2)}
    (tmp_path / "plan.toml").write_text(f'[repository]\noutput = "{tmp_path / "repo"}"\n\n[[model]]\nname = "mixer"\n'
                                        f'onnx = "{declared / "mixer.onnx"}"\ntask = "raw"\nlabels = "x.txt"\n')
    refused = trtrepo("repo", "--plan", str(tmp_path / "plan.toml"))
    assert refused.returncode == 2 and "labels describe images; a raw model takes tensors as they are" in refused.stderr
