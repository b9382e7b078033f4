"""The Python-backend stub's numpy: numpy 2 garbles every tensor that crosses this server's stub (stub_python.py).

Reproduced here on a CPU: with numpy 2 first on the stub's path, a server is refused before it starts, a model never
loads into a stub that garbles, and a numpy 1.x placed first on the stub's path alone (as the GPU machine needs) serves
the engine's own answers.
"""

from __future__ import annotations

import shutil
import sys
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from conftest import trtrepo, trtrepo_process
from trtrepo.backend.stub_python import PATH_ENV
from trtrepo.errors import UserError
from trtrepo.serving.client import InferenceClient
from trtrepo.serving.installation import STUB_PATH_ENV, check_stub_numpy, find_tritonserver, stub_numpy, stub_supports_numpy2
from trtrepo.serving.server import Ports, TritonServer, is_ready
from trtrepo.serving.stubs import stubs_of

VARIANT = "efficientnet_lite0_onnxruntime_fp32"
WHEELS = Path(sys.prefix) / "share" / "trtrepo" / "numpy-wheels"


def _unpacked(version: str, folder: Path) -> Path:
    wheels = sorted(WHEELS.glob(f"numpy-{version}-*.whl"))
    if not wheels:
        pytest.skip(f"no numpy {version} wheel in {WHEELS}: run make install")
    with zipfile.ZipFile(wheels[0]) as wheel:
        wheel.extractall(folder)
    return folder


@pytest.fixture(scope="module")
def numpy2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _unpacked("2.2.6", tmp_path_factory.mktemp("numpy2"))


@pytest.fixture(scope="module")
def numpy1(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _unpacked("1.26.4", tmp_path_factory.mktemp("numpy1"))


@pytest.fixture(scope="module")
def one_variant(small_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("one") / "model_repository"
    shutil.copytree(small_repo / VARIANT, repo / VARIANT)
    return repo


def test_the_wheels_stub_is_built_for_numpy_1_and_a_newer_build_is_told_apart(tmp_path):
    stub = find_tritonserver().stub
    assert stub is not None and not stub_supports_numpy2(stub)
    newer = tmp_path / "triton_python_backend_stub"
    newer.write_bytes(b"\x7fELF ... numpy._core.multiarray ...")
    assert stub_supports_numpy2(newer)


def test_the_stubs_numpy_is_the_first_on_its_path(numpy1, numpy2, monkeypatch):
    assert stub_numpy(find_tritonserver().env[PATH_ENV])[0] == np.__version__  # this environment's own
    monkeypatch.setenv(STUB_PATH_ENV, str(numpy2))
    assert stub_numpy(find_tritonserver().env[PATH_ENV]) == ("2.2.6", str(numpy2 / "numpy"))
    monkeypatch.setenv(STUB_PATH_ENV, f"{numpy1}:{numpy2}")
    assert stub_numpy(find_tritonserver().env[PATH_ENV]) == ("1.26.4", str(numpy1 / "numpy"))


@pytest.mark.integration
@pytest.mark.parametrize("command", ["serve", "bench"])
def test_numpy_2_on_the_stubs_path_refuses_the_server_before_anything_is_served(one_variant, numpy2, command, tmp_path,
                                                                               monkeypatch):
    monkeypatch.setenv(STUB_PATH_ENV, str(numpy2))
    ports = Ports.free()
    args = {"serve": ["--http-port", str(ports.http), "--grpc-port", str(ports.grpc), "--metrics-port", str(ports.metrics)],
            "bench": ["--seconds", "1", "--output", str(tmp_path)]}[command]
    run = trtrepo_process if command == "serve" else trtrepo  # serve in process would block if it started
    result = run(command, "--model-repository", str(one_variant), *args)
    assert result.returncode != 0 and not is_ready(ports.http)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    assert errors[0].startswith("error: the Python-backend stub would import numpy 2.2.6") and STUB_PATH_ENV in errors[0]
    assert "pip install 'numpy<2'" in errors[0]


@pytest.mark.integration
def test_no_model_loads_into_a_stub_that_garbles_its_tensors(one_variant, numpy2):
    """A server the launcher cannot inspect (its stub unknown): the model's own load refuses, with the cause."""
    installation = find_tritonserver()
    env = {**installation.env, PATH_ENV: f"{numpy2}:{installation.env[PATH_ENV]}"}
    unknown_stub = replace(installation, env=env, stub=None)
    with pytest.raises(UserError, match=r"garbles tensors with numpy 2\.2\.6 .*came back as \[1\.0, 1\.0"):
        TritonServer(one_variant, Ports.free(), installation=unknown_stub).start(timeout_s=120)


@pytest.mark.integration
def test_a_numpy_1_first_on_the_stubs_path_serves_the_engines_answers(one_variant, numpy1, numpy2, monkeypatch):
    """The GPU machine's case: the environment's numpy is 2 (here: next on the path), the stub gets its own 1.26."""
    from trtrepo.engines import get_engine
    from trtrepo.models import get_model

    monkeypatch.setenv(STUB_PATH_ENV, f"{numpy1}:{numpy2}")
    installation = find_tritonserver()
    check_stub_numpy(installation)
    spec = get_model("efficientnet_lite0")
    batch = spec.example_batch(2, seed=3)
    with TritonServer(one_variant, Ports.free(), installation=installation) as server:
        served = InferenceClient(VARIANT, url=server.grpc_url, protocol="grpc").infer(batch)["logits"]
    local = get_engine("onnxruntime").load(spec, one_variant / VARIANT / "1" / "model.onnx", "fp32", "cpu", 1)(batch)
    assert served.shape == (2, 1000) and np.allclose(served, local["logits"], atol=1e-4)


@pytest.mark.integration
def test_a_cpu_instance_never_loads_pytorch_for_its_outputs(server):
    """CPU instances answer from host memory: their stubs never import PyTorch to hand outputs over."""
    InferenceClient(VARIANT, url=server.grpc_url, protocol="grpc").infer(
        {"input": np.ones((1, 3, 224, 224), np.float32)})
    stubs = [stub for stub in stubs_of(server.process.pid) if stub.model == VARIANT]
    assert stubs
    for stub in stubs:
        mapped = Path(f"/proc/{stub.pid}/maps").read_text()
        assert "libtorch" not in mapped
