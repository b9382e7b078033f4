"""Triton's own tools against a server with trtrepo's defaults, with no key: what NVIDIA's example image client does,
bare perf_analyzer, the config endpoint by hand; and the APIs that stay behind the key, over HTTP and gRPC."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import STEADY_ENOUGH
from trtrepo.format.validate import validate_repository
from trtrepo.imagesets import shipped_photos
from trtrepo.serving.server import Ports, TritonServer

pytestmark = pytest.mark.integration
CLASSIFIERS = ("efficientnet_lite0_onnxruntime_fp32", "efficientnet_lite0_onnxruntime_int8")


@pytest.fixture(scope="module")
def default_server(small_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> TritonServer:
    """The classifiers on a server with trtrepo's default guard: loopback, restricted APIs behind a per-start key."""
    repo = tmp_path_factory.mktemp("classifiers") / "model_repository"
    for variant in CLASSIFIERS:
        shutil.copytree(small_repo / variant, repo / variant)
    with TritonServer(repo, Ports.free(), model_control="explicit") as running:
        assert running.api_key  # the restricted APIs are guarded: nothing below sends this key
        yield running


@pytest.fixture(scope="module")
def coffee() -> Path:
    found = [p for p in shipped_photos() if p.name == "coffee.png"]
    if not found:
        pytest.skip("scikit-image's coffee.png is missing: run make install")
    return found[0]


def nvidia_image_client(url: str, model: str, image: Path, classes: int) -> list[tuple[float, int, str]]:
    """What image_client.py of triton-inference-server/client does, with tritonclient alone and no key: read the
    metadata and config, insist on an NCHW or NHWC image input, scale INCEPTION-style, ask for class_count."""
    import tritonclient.grpc as grpcclient
    from tritonclient.grpc import model_config_pb2 as mc

    client = grpcclient.InferenceServerClient(url)
    metadata = client.get_model_metadata(model)
    config = client.get_model_config(model).config
    (tensor,), (output,) = config.input, metadata.outputs
    assert tensor.format in (mc.ModelInput.FORMAT_NCHW, mc.ModelInput.FORMAT_NHWC), "unexpected input format"
    c, h, w = tensor.dims if tensor.format == mc.ModelInput.FORMAT_NCHW else (tensor.dims[2], *tensor.dims[:2])
    pixels = np.asarray(Image.open(image).convert("RGB").resize((w, h), Image.BILINEAR), dtype=np.float32)
    scaled = pixels / 127.5 - 1.0
    sample = scaled.transpose(2, 0, 1) if tensor.format == mc.ModelInput.FORMAT_NCHW else scaled
    request = grpcclient.InferInput(tensor.name, [1, *sample.shape], "FP32")
    request.set_data_from_numpy(sample[None].astype(np.float32))
    result = client.infer(model, [request], outputs=[grpcclient.InferRequestedOutput(output.name, class_count=classes)])
    entries = [entry.decode().split(":", 2) for entry in result.as_numpy(output.name).reshape(-1)]
    return [(float(score), int(index), label) for score, index, label in entries]


@pytest.mark.parametrize("variant", CLASSIFIERS)
def test_nvidias_example_client_classifies_with_labels_and_no_key(default_server, coffee, variant):
    top = nvidia_image_client(default_server.grpc_url, variant, coffee, 3)
    assert len(top) == 3 and top[0][1:] == (967, "espresso")
    assert top[0][0] >= top[1][0] >= top[2][0]


def test_the_config_endpoint_answers_without_a_key_with_format_and_labels(default_server):
    url = f"http://{default_server.http_url}/v2/models/{CLASSIFIERS[0]}/config"
    with urllib.request.urlopen(url, timeout=30) as response:
        config = json.load(response)
    assert config["input"][0]["format"] == "FORMAT_NCHW"
    assert config["output"][0]["label_filename"] == "labels.txt"


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_bare_perf_analyzer_measures_a_default_server(default_server, protocol):
    url = default_server.grpc_url if protocol == "grpc" else default_server.http_url
    result = subprocess.run([str(Path(sys.executable).parent / "perf_analyzer"), "-m", CLASSIFIERS[0], "-u", url,
                             "-i", protocol, *STEADY_ENOUGH],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-800:] + result.stderr[-800:]
    assert "Throughput:" in result.stdout and "restricted" not in result.stdout + result.stderr


def _http_status(url: str, body: dict) -> tuple[int, str]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.mark.parametrize("path, body", [
    ("/v2/repository/index", {}),
    ("/v2/repository/models/{model}/unload", {}),
    ("/v2/systemsharedmemory/region/probe/register", {"key": "/probe", "offset": 0, "byte_size": 64}),
    ("/v2/trace/setting", {"trace_file": "/tmp/trtrepo-trace.json"}),
    ("/v2/logging", {"log_file": "/tmp/trtrepo-log.txt"}),
])
def test_the_restricted_apis_still_refuse_http_callers_without_the_key(default_server, path, body):
    status, text = _http_status(f"http://{default_server.http_url}{path.format(model=CLASSIFIERS[0])}", body)
    assert status == 403 and "restricted" in text, (status, text)


def test_the_restricted_apis_still_refuse_grpc_callers_without_the_key(default_server):
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    client = grpcclient.InferenceServerClient(default_server.grpc_url)
    calls = [lambda: client.get_model_repository_index(), lambda: client.unload_model(CLASSIFIERS[0]),
             lambda: client.register_system_shared_memory("probe", "/probe", 64),
             lambda: client.update_trace_settings(settings={"trace_file": "/tmp/trtrepo-trace.json"}),
             lambda: client.update_log_settings({"log_file": "/tmp/trtrepo-log.txt"})]
    for call in calls:
        with pytest.raises(InferenceServerException, match="restricted"):
            call()
    assert client.is_model_ready(CLASSIFIERS[0])  # the unload was refused


def test_validate_checks_the_labels_file_of_a_classifier(small_repo, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(small_repo / CLASSIFIERS[0], repo / CLASSIFIERS[0])
    labels = repo / CLASSIFIERS[0] / "labels.txt"
    assert len(labels.read_text().splitlines()) == 1000 and validate_repository(repo) == []
    manifest = json.loads((repo / CLASSIFIERS[0] / "manifest.json").read_text())
    assert "labels.txt" in manifest["files"]
    labels.write_text("".join(f"class {i}\n" for i in range(999)))
    problems = validate_repository(repo)
    assert any("999 labels for the 1000 classes of output 'logits'" in p for p in problems), problems
    labels.unlink()
    problems = validate_repository(repo)
    assert any("labels file of output 'logits' missing" in p for p in problems), problems


def test_the_resnet_client_asks_the_server_for_its_top_k(default_server, coffee, labelled_photos):
    from trtrepo.clients.resnet_client import classify

    photos = [coffee, *sorted(labelled_photos.rglob("*.jpg"))]
    for variant in CLASSIFIERS:
        by_server = classify(photos, variant, default_server.grpc_url, "grpc", 2, 3, server_labels=True)
        by_client = classify(photos, variant, default_server.grpc_url, "grpc", 2, 3)
        assert [[label for label, _ in top] for top in by_server] == [[label for label, _ in top] for top in by_client]
        assert by_server[0][0][0] == "espresso" and by_server[0][0][1] > 1.0  # a logit, not a probability
