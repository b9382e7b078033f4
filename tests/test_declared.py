"""A model declared in the plan ([[model]]: a torchvision architecture, its state dict, class names, input size and
preprocessing) builds like a built-in one, and is served and answered from the repository alone: the stubs and the
clients read it from the variants' configs, with no declaration in the process that asks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import resnet_client, trtrepo
from trtrepo.errors import UserError
from trtrepo.imagesets import shipped_photos
from trtrepo.serving.server import Ports, TritonServer

NAME, CLASSES = "flowers", ("daisy", "rose", "tulip")
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
[[variant]]
model = "flowers"
engine = "onnxruntime"
precision = "fp32"
max_batch_size = 4
preferred_batch_sizes = [4]

[[variant]]
model = "flowers"
engine = "pytorch"
precision = "fp32"
max_batch_size = 4
preferred_batch_sizes = [4]

[[pipeline]]
name = "flowers"
variant = "flowers_onnxruntime_fp32"
"""


def write_plan(folder: Path, extra: str = "") -> Path:
    plan = folder / "plan.toml"
    plan.write_text(PLAN.format(output=folder / "model_repository", extra=extra))
    return plan


@pytest.fixture(scope="module")
def declared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with the declaration's files: a 3-class ResNet18's state dict (seeded random) and its labels."""
    import torch
    from torchvision.models import resnet18

    folder = tmp_path_factory.mktemp("declared")
    torch.manual_seed(3)
    torch.save(resnet18(num_classes=len(CLASSES)).state_dict(), folder / "flowers.pt")
    (folder / "labels.txt").write_text("\n".join(CLASSES) + "\n")
    return folder


@pytest.fixture(scope="module")
def declared_repo(declared: Path) -> Path:
    from trtrepo.build.plan import load_plan
    from trtrepo.build.repository import build_repository

    plan = load_plan(write_plan(declared))
    results = build_repository(plan)
    assert {r.variant: r.status for r in results} == {
        "flowers_onnxruntime_fp32": "built", "flowers_pytorch_fp32": "built", "flowers": "built"}, results
    return plan.output


def expected_top(declared: Path, photos: list[Path]) -> list[list[tuple[str, float]]]:
    """The declared network run here on the photos, prepared as declared: the top classes with probabilities."""
    import torch
    from torchvision.models import resnet18
    from torchvision.transforms import functional as F

    network = resnet18(num_classes=len(CLASSES))
    network.load_state_dict(torch.load(declared / "flowers.pt", weights_only=True))
    with torch.inference_mode():
        batch = torch.stack([F.normalize(F.to_tensor(F.center_crop(F.resize(_rgb(p), 110, antialias=True), [96, 96])),
                                         [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]) for p in photos])
        probabilities = network.eval()(batch).double().softmax(dim=1).numpy()
    return [[(CLASSES[i], float(row[i])) for i in np.argsort(-row, kind="stable")] for row in probabilities]


def _rgb(path: Path):
    from PIL import Image

    with Image.open(path) as image:
        return image.convert("RGB")


def test_a_declared_model_is_served_and_answered_from_the_repository_alone(declared, declared_repo):
    from trtrepo.clients.resnet_client import classify, classify_server_side
    from trtrepo.format.config import read_config

    photos = shipped_photos()[:3]
    config = read_config(declared_repo / "flowers_onnxruntime_fp32" / "config.pbtxt")
    assert json.loads(config.parameters["declaration"].string_value)["class_names"] == list(CLASSES)
    assert (declared_repo / "flowers_onnxruntime_fp32" / "labels.txt").read_text().split() == list(CLASSES)
    want = expected_top(declared, photos)
    with TritonServer(declared_repo, Ports.free()) as server:
        for variant in ("flowers_onnxruntime_fp32", "flowers_pytorch_fp32"):
            got = classify(photos, variant, server.http_url, "http", 4, 3)
            assert [[label for label, _ in row] for row in got] == [[label for label, _ in row] for row in want], variant
            assert np.allclose([[s for _, s in row] for row in got], [[s for _, s in row] for row in want], atol=1e-3)
        pipelined = classify_server_side(photos, NAME, server.grpc_url, "grpc", 3)
        assert [row[0][0] for row in pipelined] == [row[0][0] for row in want]
        printed = resnet_client(str(photos[0]), "--url", server.http_url, "--model", "flowers_onnxruntime_fp32",
                                "--top-k", "1", "--json")
        assert printed.returncode == 0, printed.stderr
        assert json.loads(printed.stdout)[0]["top"][0]["label"] == want[0][0][0]


ONNX_PLAN = """
[repository]
output = "{output}"
backends = "python"

[[model]]
name = "flowers_onnx"
onnx = "flowers.onnx"
labels = "labels.txt"
input_size = [96, 96]
resize = 110
layout = "NHWC"
channels = "BGR"
softmax = false
{extra}
[[variant]]
model = "flowers_onnx"
engine = "onnxruntime"
precision = "fp32"
max_batch_size = 4
preferred_batch_sizes = [4]

[[variant]]
model = "flowers_onnx"
engine = "pytorch"
precision = "fp32"
"""


def export_flowers(declared: Path, out: Path, batch: dict | None = None) -> Path:
    """The declared ResNet18 as another framework would hand it over: an ONNX file taking NHWC BGR images and
    answering probabilities, tensors named its own way, the batch axis free (unless ``batch`` fixes it)."""
    import torch
    from torchvision.models import resnet18

    class HandedOver(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.network = resnet18(num_classes=len(CLASSES))
            self.network.load_state_dict(torch.load(declared / "flowers.pt", weights_only=True))

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            return self.network(images.permute(0, 3, 1, 2).flip(1)).softmax(dim=1)

    axes = {"images": {0: "batch"}, "probs": {0: "batch"}} if batch is None else batch
    torch.onnx.export(HandedOver().eval(), (torch.zeros(1, 96, 96, 3),), str(out), input_names=["images"],
                      output_names=["probs"], dynamic_axes=axes, dynamo=False)
    return out


def test_a_declared_onnx_file_in_its_own_layout_answers_as_the_network_does(declared, tmp_path):
    """An ONNX source: its tensors' names from the graph, NHWC BGR input, probabilities out; ONNX Runtime builds it
    (the PyTorch engine says it does not apply), the server answers what the network computes here."""
    import shutil

    from trtrepo.build.plan import load_plan
    from trtrepo.build.repository import build_repository
    from trtrepo.clients.resnet_client import classify

    shutil.copy(declared / "labels.txt", tmp_path / "labels.txt")
    export_flowers(declared, tmp_path / "flowers.onnx")
    (tmp_path / "plan.toml").write_text(ONNX_PLAN.format(output=tmp_path / "model_repository", extra=""))
    plan = load_plan(tmp_path / "plan.toml")
    results = {r.variant: r for r in build_repository(plan)}
    assert results["flowers_onnx_onnxruntime_fp32"].status == "built"
    assert results["flowers_onnx_pytorch_fp32"].status == "skipped"
    assert "comes from an ONNX file" in results["flowers_onnx_pytorch_fp32"].detail
    photos = shipped_photos()[:3]
    want = expected_top(declared, photos)
    with TritonServer(plan.output, Ports.free()) as server:
        got = classify(photos, "flowers_onnx_onnxruntime_fp32", server.http_url, "http", 4, 3)
    assert [[label for label, _ in row] for row in got] == [[label for label, _ in row] for row in want]
    assert np.allclose([[s for _, s in row] for row in got], [[s for _, s in row] for row in want], atol=1e-3)


@pytest.mark.parametrize("extra, fixed_batch, message", [
    ('torchvision = "resnet18"\n', False, "give the network's source as one of torchvision, onnx, not torchvision and onnx"),
    ("", True, "has its batch fixed at 1: export it with a free batch axis"),
    ('input_size = [64, 64]\nresize = 70\n', False, "is [96, 96, 3] per image, not [64, 64, 3] (NHWC, input_size [64, 64])"),
], ids=["two_sources", "fixed_batch", "size"])
def test_a_declared_onnx_file_that_disagrees_with_its_declaration_is_one_line(declared, tmp_path, extra, fixed_batch,
                                                                               message):
    import shutil

    shutil.copy(declared / "labels.txt", tmp_path / "labels.txt")
    export_flowers(declared, tmp_path / "flowers.onnx", {} if fixed_batch else None)
    plan = ONNX_PLAN.format(output=tmp_path / "model_repository", extra=extra)
    if "input_size = [64" in extra:
        plan = plan.replace("input_size = [96, 96]\nresize = 110\n", "")
    (tmp_path / "plan.toml").write_text(plan)
    result = trtrepo("repo", "--plan", str(tmp_path / "plan.toml"))
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and message in lines[0], result.stderr
    assert not (tmp_path / "model_repository").exists()


@pytest.mark.parametrize("extra, files, message", [
    ('task = "segmentation"\n', {}, "task 'segmentation' is not one a declared model can have yet"),
    ("", {"labels.txt": "daisy\n"}, "names 1 class; a classifier needs two or more"),
    ("", {"labels.txt": None}, "labels file"),
    ('interpolation = "cubic"\n', {}, "interpolation 'cubic'"),
    ("", {"flowers.pt": b"not a checkpoint"}, "is not a PyTorch checkpoint"),
    ("mean = [0.5, 0.5]\n", {}, "mean must be 3 numbers"),
], ids=["task", "one_label", "no_labels", "interpolation", "bad_weights", "mean"])
def test_a_bad_declaration_is_one_line_before_anything_is_built(declared, tmp_path, extra, files, message):
    import shutil

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


def test_weights_that_do_not_fit_the_declared_architecture_are_refused_naming_the_keys(declared, tmp_path):
    import shutil

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
