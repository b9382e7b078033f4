"""The bad-input catalogue: every kind of bad input a user can give, each answered with one line that names the
problem and a non-zero exit, no traceback, nothing lost; and inputs that look odd but are valid, answered normally.

The README's "Bad input" table lists these cases; keep the two in step.
"""

from __future__ import annotations

import json
import re
import shutil
import struct
import urllib.error
import urllib.request
import zlib
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import resnet_client, trtrepo, yolo_client
from trtrepo.errors import UserError
from trtrepo.serving.client import InferenceClient
from trtrepo.serving.server import free_port

VARIANT = "resnet50_onnxruntime_fp32"


def assert_one_line(result, message: str) -> None:
    """Non-zero exit, exactly one line on stderr, starting 'error: ' and naming the problem, no traceback."""
    assert result.returncode != 0, result.stdout[-500:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-2000:]
    assert message in lines[0], lines[0]
    assert "Traceback" not in result.stderr + result.stdout


# --- images -------------------------------------------------------------------------------------------------


def png_declaring(path: Path, width: int, height: int) -> Path:
    """A tiny PNG whose header declares width x height pixels (a decompression bomb's header)."""
    Image.new("RGB", (1, 1)).save(path)
    data = bytearray(path.read_bytes())
    header = b"IHDR" + struct.pack(">II", width, height) + bytes(data[24:29])
    data[12:29] = header
    data[29:33] = struct.pack(">I", zlib.crc32(header))
    path.write_bytes(bytes(data))
    return path


def truncated_jpeg(path: Path) -> Path:
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 200, 3), dtype=np.uint8)).save(path.with_suffix(".full.jpg"))
    path.write_bytes(path.with_suffix(".full.jpg").read_bytes()[:600])
    return path


def written(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def saved(path: Path, image: Image.Image) -> Path:
    image.save(path)
    return path


IMAGE_CASES: dict[str, tuple[Callable[[Path], Path], str | None]] = {
    "decompression bomb header": (lambda d: png_declaring(d / "bomb.png", 20000, 20000), "declares 20000x20000 pixels"),
    "truncated JPEG": (lambda d: truncated_jpeg(d / "cut.jpg"), "not a readable image"),
    "empty file": (lambda d: written(d / "empty.png", b""), "not a readable image"),
    "text named .jpg": (lambda d: written(d / "text.jpg", b"hello"), "not a readable image"),
    # Valid, if unusual: answered like any photo.
    "CMYK JPEG": (lambda d: saved(d / "cmyk.jpg", Image.new("CMYK", (64, 48), (0, 120, 200, 0))), None),
    "grayscale PNG": (lambda d: saved(d / "gray.png", Image.new("L", (50, 80), 128)), None),
    "RGBA PNG": (lambda d: saved(d / "alpha.png", Image.new("RGBA", (64, 64), (255, 0, 0, 40))), None),
    "1x1 pixel": (lambda d: saved(d / "dot.png", Image.new("RGB", (1, 1), (9, 9, 9))), None),
}


@pytest.mark.integration
@pytest.mark.parametrize("case", IMAGE_CASES)
def test_images_through_the_classifier_client(case, server, tmp_path):
    make, message = IMAGE_CASES[case]
    result = resnet_client("--url", server.http_url, "--model", VARIANT, "--top-k", "1", str(make(tmp_path)))
    if message is None:
        assert result.returncode == 0 and result.stdout.count("\n") == 2, result.stderr
    else:
        assert_one_line(result, message)


@pytest.mark.integration
def test_decompression_bomb_through_the_detector_client(server, tmp_path):
    assert_one_line(yolo_client("--url", server.http_url, str(png_declaring(tmp_path / "bomb.png", 13000, 13000))),
                    "declares 13000x13000 pixels")


# --- weights ------------------------------------------------------------------------------------------------


def truncated_state_dict(path: Path) -> Path:
    torch.save({"weight": torch.zeros(1000, 100)}, path.with_suffix(".full.pt"))
    data = path.with_suffix(".full.pt").read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def darknet_file(path: Path, values: int, extra_bytes: int = 0) -> Path:
    header = struct.pack("<iiiq", 0, 2, 0, 0)
    path.write_bytes(header + np.zeros(values, np.float32).tobytes() + b"\1" * extra_bytes)
    return path


WEIGHT_CASES: dict[str, tuple[str, Callable[[Path], Path], str]] = {
    "a folder as weights": ("efficientnet_lite0", lambda d: d, "is a folder"),
    "empty .pt": ("efficientnet_lite0", lambda d: written(d / "empty.pt", b""), "is empty"),
    "JPEG as .pt": ("efficientnet_lite0", lambda d: written(d / "photo.pt", saved(d / "photo.jpg", Image.new("RGB", (8, 8))).read_bytes()),
                    "is not a PyTorch checkpoint"),
    "truncated state dict": ("efficientnet_lite0", lambda d: truncated_state_dict(d / "cut.pt"), "is truncated or corrupt"),
    "another network's weights": ("efficientnet_lite0", lambda d: torch.save({"fc.weight": torch.zeros(3)}, d / "w.pt") or d / "w.pt",
                                  "do not fit the network"),
    "missing file": ("resnet50", lambda d: d / "absent.pt", "does not exist"),
    "Darknet file too short for the cfg": ("yolov3_tiny", lambda d: darknet_file(d / "short.weights", 1000), "the cfg needs more"),
    "JPEG renamed .weights": ("yolov3_tiny", lambda d: darknet_file(d / "odd.weights", 100, extra_bytes=3), "not a Darknet weights file"),
    "Darknet file too long for the cfg": ("yolov3_tiny", lambda d: darknet_file(d / "long.weights", 9_000_000), "do not match the cfg"),
}


@pytest.mark.parametrize("case", WEIGHT_CASES)
def test_weights(case, tmp_path):
    model, make, message = WEIGHT_CASES[case]
    weights = make(tmp_path)
    assert_one_line(trtrepo("export", model, "--weights", str(weights), "--output", str(tmp_path / "out.onnx")), message)
    assert not (tmp_path / "out.onnx").exists()


# --- plan files ----------------------------------------------------------------------------------------------

VARIANT_TABLE = '[[variant]]\nmodel = "efficientnet_lite0"\nengine = "onnxruntime"\nprecision = "fp32"\n'
PLAN_CASES: dict[str, tuple[str, str]] = {
    "not TOML": ("[repository\nweights = 1", "cannot read plan"),
    "unknown table": ("[servers]\nx = 1\n" + VARIANT_TABLE, "unknown tables servers"),
    "unknown key": ("[defaults]\nmax_batch = 8\n" + VARIANT_TABLE, "unknown keys max_batch"),
    "a word for a number": ('[defaults]\nmax_batch_size = "eight"\n' + VARIANT_TABLE, "max_batch_size must be a whole number"),
    "a fraction for a number": ("[defaults]\nmax_batch_size = 8.5\n" + VARIANT_TABLE, "max_batch_size must be a whole number"),
    "a number for a list": ("[defaults]\npreferred_batch_sizes = 4\n" + VARIANT_TABLE, "must be a list of whole numbers"),
    "a string for a flag": ('[defaults]\nwarmup = "yes"\n' + VARIANT_TABLE, "warmup must be true or false"),
    "preferred size above the maximum": ("[defaults]\nmax_batch_size = 4\npreferred_batch_sizes = [8]\n" + VARIANT_TABLE,
                                         "lie outside 1..max_batch_size"),
    "ensemble steps as a string": (VARIANT_TABLE + '[[ensemble]]\nname = "e"\nsteps = "efficientnet_lite0_onnxruntime_fp32"\n',
                                   "steps must be a list"),
    "variant without engine": ('[[variant]]\nmodel = "resnet50"\nprecision = "fp32"\n', "lacks the key engine"),
    "no calibration images": ("[repository]\ncalib_images = 0\n" + VARIANT_TABLE, "calib_images must be at least 1"),
    "binary garbage": ("\x00\x01\x02garbage\xff", "cannot read plan"),
}


@pytest.mark.parametrize("case", PLAN_CASES)
def test_plan_files(case, tmp_path):
    text, message = PLAN_CASES[case]
    plan = tmp_path / "repo.toml"
    plan.write_bytes(text.encode("utf-8", errors="surrogateescape") if "\xff" not in text else text.encode("latin-1"))
    assert_one_line(trtrepo("repo", "--plan", str(plan), "--output", str(tmp_path / "out"), "--backends", "python"), message)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


# --- model configs and repositories ----------------------------------------------------------------------------


def replace_in(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, (old, text[:300])
    path.write_text(text.replace(old, new))


REPOSITORY_CASES: dict[str, tuple[Callable[[Path], None], str]] = {
    "binary garbage config.pbtxt": (lambda v: (v / "config.pbtxt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe"), "not a text config"),
    "config name differs from its folder": (lambda v: replace_in(v / "config.pbtxt", f'name: "{VARIANT}"', 'name: "other"'),
                                            "differs from its folder"),
    "ONNX input shape disagrees with the config": (lambda v: replace_in(v / "config.pbtxt", "dims: 224\n  dims: 224\n}",
                                                                        "dims: 256\n  dims: 256\n}"), "has dims [3, 224, 224]"),
    "truncated model.onnx": (lambda v: (v / "1/model.onnx").write_bytes((v / "1/model.onnx").read_bytes()[:5000]),
                             "not a readable ONNX model"),
    "empty model.onnx": (lambda v: (v / "1/model.onnx").write_bytes(b""), "1/model.onnx: empty"),
    "empty manifest.json": (lambda v: (v / "manifest.json").write_text(""), "manifest.json: unreadable or empty"),
    "warm-up shape disagrees with the input": (lambda v: replace_in(v / "config.pbtxt", "zero_data: true", "zero_data: true\n      dims: 7"),
                                               "warm-up 'zero_batch_1' feeds 'input'"),
    "model file of another size than built": (lambda v: written(v / "1/model.py", (v / "1/model.py").read_bytes() + b"# edited\n"),
                                              "bytes, built as"),
}


@pytest.mark.parametrize("case", REPOSITORY_CASES)
def test_repositories(case, small_repo, tmp_path):
    breakage, message = REPOSITORY_CASES[case]
    shutil.copytree(small_repo / VARIANT, tmp_path / "repo" / VARIANT)
    breakage(tmp_path / "repo" / VARIANT)
    result = trtrepo("validate", str(tmp_path / "repo"))
    assert result.returncode == 1 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and not result.stdout


# --- command line ------------------------------------------------------------------------------------------------

CLI_CASES: dict[str, tuple[list[str], str]] = {
    "max_batch_size beyond int32": (["config", "{repo}/" + VARIANT, "--max-batch-size", "2147483648"], "max_batch_size must be 1 to"),
    "unknown model": (["export", "resnet5", "--output", "{tmp}/x.onnx"], "unknown model 'resnet5'"),
    "port out of range": (["serve", "--http-port", "70000"], "(see --help)"),
    "malformed --url": (["perf", "--url", "localhost", "--models", VARIANT], "is not HOST:PORT"),
    "API key with a space": (["serve", "--model-repository", "{repo}", "--api-key", "a b"], "API key must be printable"),
    "server down": (["perf", "--url", "127.0.0.1:{free}", "--models", VARIANT], "cannot reach Triton"),
    "instances not a number": (["perf", "--instances", "1,two"], "comma-separated whole numbers"),
}


@pytest.mark.parametrize("case", CLI_CASES)
def test_command_line(case, small_repo, tmp_path):
    args, message = CLI_CASES[case]
    config_copy = tmp_path / "repo"
    shutil.copytree(small_repo / VARIANT, config_copy / VARIANT)
    filled = [a.format(repo=config_copy, tmp=tmp_path, free=free_port()) for a in args]
    assert_one_line(trtrepo(*filled), message)


# --- clients ------------------------------------------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.parametrize("args, message", [
    (["--model", "resnet50_tensorrt_int8"], "is not on the server"),
    (["--model", "yolov3_tiny_onnxruntime_fp32"], "is not a classifier (detection): use clients/yolo_client.py"),
    (["--url", "http://localhost"], "is not HOST:PORT"),
    (["--url", "localhost:8000/v2"], "is not HOST:PORT"),
    (["--url", "127.0.0.1:{free}"], "cannot reach Triton"),
])
def test_classifier_client(args, message, server, images):
    filled = [a.format(free=free_port()) for a in args]
    if "--url" not in filled:
        filled = ["--url", server.http_url, *filled]
    assert_one_line(resnet_client(*filled, str(images / "noise.jpg")), message)


@pytest.mark.integration
def test_a_url_with_a_scheme_is_understood(server, images):
    result = resnet_client("--url", f"http://{server.http_url}/", "--model", VARIANT, "--top-k", "1", str(images / "noise.jpg"))
    assert result.returncode == 0, result.stderr


@pytest.mark.integration
@pytest.mark.parametrize("change, message", [
    (lambda x: x[:, :, :100, :100], "unexpected shape"),
    (lambda x: x.astype(np.float64), "data-type is 'FP64', but model 'resnet50_onnxruntime_fp32' expects 'FP32'"),
    (lambda x: np.concatenate([x] * 5), "must be <= 4"),
    (lambda x: np.where(np.arange(x.size).reshape(x.shape) == 7, np.nan, x).astype(np.float32), "holds NaN or infinite values"),
    (lambda x: np.where(np.arange(x.size).reshape(x.shape) == 7, -np.inf, x).astype(np.float32), "holds NaN or infinite values"),
])
@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_malformed_requests_are_refused_with_the_reason(change, message, protocol, server):
    url = server.http_url if protocol == "http" else server.grpc_url
    client = InferenceClient(VARIANT, url=url, protocol=protocol)
    batch = np.random.default_rng(1).standard_normal((1, 3, 224, 224)).astype(np.float32)
    with pytest.raises(UserError, match=f"inference on|not sent to '{VARIANT}'") as raised:
        client.infer({"input": change(batch)})
    assert message in str(raised.value)
    assert client.infer({"input": batch})["logits"].shape == (1, 1000)  # the model still answers


# --- raw protocol ---------------------------------------------------------------------------------------------


def pipeline_call(url: str, model: str, image: bytes, **options: float) -> tuple[int, str]:
    """One request to a pipeline model with tritonclient's own HTTP client (no trtrepo checks in the way):
    (HTTP status, message)."""
    import tritonclient.http as http
    from tritonclient.utils import InferenceServerException, np_to_triton_dtype

    inputs = [http.InferInput("image", [1, 1], "BYTES")]
    inputs[0].set_data_from_numpy(np.array([[image]], dtype=np.object_))
    for name, value in options.items():
        array = np.array([[value]], dtype=np.int32 if name == "top_k" else np.float32)
        inputs.append(http.InferInput(name, [1, 1], np_to_triton_dtype(array.dtype)))
        inputs[-1].set_data_from_numpy(array)
    try:
        http.InferenceServerClient(url).infer(model, inputs)
    except InferenceServerException as exc:
        return int(exc.status() or 0), exc.message()
    return 200, ""


@pytest.mark.integration
@pytest.mark.parametrize("model, make, message", [
    ("yolov3_tiny", lambda d: (b"not an image", {}), "not a readable image"),
    ("yolov3_tiny", lambda d: (png_declaring(d / "bomb.png", 13000, 13000).read_bytes(), {}), "declares 13000x13000 pixels"),
    ("yolov3_tiny", lambda d: (b"", {}), "not a readable image"),
    ("yolov3_tiny", lambda d: ((d / "ok.png").read_bytes(), {"conf": float("nan")}), "conf must be one number from 0 to 1"),
    ("yolov3_tiny", lambda d: ((d / "ok.png").read_bytes(), {"conf": -5.0}), "conf must be one number from 0 to 1"),
    ("yolov3_tiny", lambda d: ((d / "ok.png").read_bytes(), {"iou": 5.0}), "iou must be one number from 0 to 1"),
    ("efficientnet_lite0", lambda d: (b"not an image", {}), "not a readable image"),
    ("efficientnet_lite0", lambda d: (b"", {}), "not a readable image"),
    ("efficientnet_lite0", lambda d: (png_declaring(d / "bomb.png", 13000, 13000).read_bytes(), {}), "declares 13000x13000 pixels"),
    ("efficientnet_lite0", lambda d: ((d / "ok.png").read_bytes(), {"top_k": 0}), "top_k must be one number from 1 to 1000"),
    ("efficientnet_lite0", lambda d: ((d / "ok.png").read_bytes(), {"top_k": 5000}), "top_k must be one number from 1 to 1000"),
])
def test_raw_requests_to_a_pipeline(model, make, message, server, tmp_path):
    saved(tmp_path / "ok.png", Image.new("RGB", (32, 32), (200, 10, 10)))
    image, options = make(tmp_path)
    status, text = pipeline_call(server.http_url, model, image, **options)
    assert status == 400 and message in text, (status, text)
    assert pipeline_call(server.http_url, model, (tmp_path / "ok.png").read_bytes()) == (200, "")  # still answering


def _pipeline_inputs(module: object, image: bytes) -> list:
    inputs = [module.InferInput("image", [1, 1], "BYTES")]
    inputs[0].set_data_from_numpy(np.array([[image]], dtype=np.object_))
    return inputs


def _sent_at_once(url: str, protocol: str, model: str, output: str, images: list[bytes]) -> list[tuple[bool, str | int]]:
    """Every image its own request to the pipeline, all in flight at once with tritonclient's own clients:
    (answered, entries of ``output`` or the error message) per request, in order."""
    import queue

    import tritonclient.grpc as grpc
    import tritonclient.http as http
    from tritonclient.utils import InferenceServerException

    if protocol == "http":
        client = http.InferenceServerClient(url, concurrency=len(images))
        handles = [client.async_infer(model, _pipeline_inputs(http, image)) for image in images]
        outcomes = []
        for handle in handles:
            try:
                outcomes.append((True, handle.get_result().as_numpy(output).shape[1]))
            except InferenceServerException as exc:
                outcomes.append((False, exc.message()))
        return outcomes
    client, done = grpc.InferenceServerClient(url), queue.Queue()
    for index, image in enumerate(images):
        client.async_infer(model, _pipeline_inputs(grpc, image),
                           lambda result, error, index=index: done.put((index, result, error)))
    outcomes = {}
    for _ in images:
        index, result, error = done.get(timeout=120)
        outcomes[index] = (False, error.message()) if error else (True, result.as_numpy(output).shape[1])
    return [outcomes[index] for index in range(len(images))]


def _batched_executions(http_url: str, model: str) -> int:
    """How many times the pipeline has run more than one request at once (Triton's statistics API)."""
    with urllib.request.urlopen(f"http://{http_url}/v2/models/{model}/stats", timeout=10) as response:
        stats = json.load(response)["model_stats"][0]
    return sum(batch["compute_infer"]["count"] for batch in stats.get("batch_stats", []) if batch["batch_size"] > 1)


@pytest.mark.integration
@pytest.mark.parametrize("model, output, least", [("yolov3_tiny", "boxes", 3), ("efficientnet_lite0", "labels", 5)])
@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_bad_bytes_in_a_batch_of_the_pipeline_fail_alone(protocol, model, output, least, server, darknet_photos):
    """Twelve requests at once, every third no image: each of those gets its own error, every photo its answer
    (dog, bicycle, car; five labels), and the pipeline ran them in batches (its statistics count executions of
    more than one request)."""
    photo = (darknet_photos / "dog.jpg").read_bytes()
    images = [b"not an image" if index % 3 == 1 else photo for index in range(12)]
    before = _batched_executions(server.http_url, model)
    outcomes = _sent_at_once(server.http_url if protocol == "http" else server.grpc_url, protocol, model, output, images)
    for image, (answered, detail) in zip(images, outcomes):
        if image == photo:
            assert answered and detail >= least, detail
        else:
            assert not answered and "not a readable image" in detail, detail
    assert _batched_executions(server.http_url, model) > before


@pytest.mark.integration
def test_malformed_json_is_refused_and_the_server_goes_on(server):
    request = urllib.request.Request(f"http://{server.http_url}/v2/models/{VARIANT}/infer", data=b'{"inputs": [',
                                     method="POST", headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=60)
    assert refused.value.code >= 400 and "failed to parse the request JSON" in refused.value.read().decode()
    with urllib.request.urlopen(f"http://{server.http_url}/v2/health/ready", timeout=10) as response:
        assert response.status == 200


PIPELINE = '[[pipeline]]\nname = "{}"\nvariant = "yolov3_tiny_onnxruntime_fp32"\n'
DETECTOR = '[[variant]]\nmodel = "yolov3_tiny"\nengine = "onnxruntime"\nprecision = "fp32"\n'
ENSEMBLE = '[[ensemble]]\nname = "{}"\nsteps = ["efficientnet_lite0_onnxruntime_fp32"]\n'


@pytest.mark.parametrize("text, message", [
    (DETECTOR + PIPELINE.format("../escaped"), "pipeline name '../escaped' is not a model folder name"),
    (DETECTOR + PIPELINE.format("/tmp/absolute"), "pipeline name '/tmp/absolute' is not a model folder name"),
    (DETECTOR + PIPELINE.format("sub/dir"), "pipeline name 'sub/dir' is not a model folder name"),
    (DETECTOR + PIPELINE.format("yolov3_tiny_onnxruntime_fp32"), "is already a variant's"),
    (VARIANT_TABLE + ENSEMBLE.format("efficientnet_lite0_onnxruntime_fp32"), "is already a variant's"),
    (VARIANT_TABLE + DETECTOR + PIPELINE.format("both") + ENSEMBLE.format("both"), "ensemble name 'both' is already a pipeline's"),
    (DETECTOR + PIPELINE.format("yolo") + "instances = 0\n", "pipeline yolo: instances must be 1 or more, not 0"),
    (DETECTOR + PIPELINE.format("yolo") + 'prepare = "gpu"\n', "pipeline yolo: prepare must be one of host, device, not 'gpu'"),
])
def test_pipeline_and_ensemble_names_stay_one_folder_of_their_own(tmp_path, text, message):
    from trtrepo.build.plan import load_plan

    plan = tmp_path / "repo.toml"
    plan.write_text(text)
    with pytest.raises(UserError, match=re.escape(message)):
        load_plan(plan, output=tmp_path / "out", backends="python")
