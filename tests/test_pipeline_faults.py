"""What a pipeline meets never takes the server or its stub down.

- Its stub ends without a segfault: Triton's Python backend (24.10) frees a model's Python objects only after its stub
  is torn down, and a Triton metric freed then reaches for the stub's gone shared memory (Metric::SaveToSharedMemory on
  a null pool; fixed upstream in python_backend PR 429). The pipeline frees its metrics in finalize, while the stub is
  whole. The kernel's log is where such a death shows: the server exits 0 all the same.
- A variant that refuses the pipeline's batch fails that batch's requests, each with its own response: one response
  object returned for several requests kills tritonserver 24.10 itself (SIGSEGV in TRITONBACKEND_ModelInstanceExecute).
"""

from __future__ import annotations

import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from trtrepo.clients.resnet_client import classify_server_side
from trtrepo.format.config import CONFIG_FILE, apply_serving_options, read_config, serving_options_of, write_config
from trtrepo.serving.server import Ports, TritonServer, is_ready

pytestmark = pytest.mark.integration
PIPELINE, VARIANT = "efficientnet_lite0", "efficientnet_lite0_onnxruntime_fp32"


def stub_segfaults() -> list[str]:
    found = subprocess.run(["dmesg"], capture_output=True, text=True)
    if found.returncode != 0:
        pytest.skip(f"the kernel's log is not readable here: {found.stderr.strip()[:100]}")
    return [line for line in found.stdout.splitlines() if "segfault" in line and "triton_python" in line]


def test_a_pipeline_stub_stops_without_a_segfault(small_repo: Path, tmp_path: Path, darknet_photos: Path):
    repo = tmp_path / "model_repository"
    for name in (PIPELINE, VARIANT):
        shutil.copytree(small_repo / name, repo / name)
    before = stub_segfaults()
    with TritonServer(repo, Ports.free()) as server:
        answers = classify_server_side(sorted(darknet_photos.glob("*.jpg")), PIPELINE, server.grpc_url, "grpc", top_k=1)
        assert len(answers) == len(list(darknet_photos.glob("*.jpg"))) and all(answers)
    log = server.log_file.read_text()
    assert f"successfully unloaded '{PIPELINE}'" in log, log[-1500:]
    assert stub_segfaults()[len(before):] == []


def test_a_variant_refusing_the_pipelines_batch_fails_its_requests_not_the_server(small_repo: Path, tmp_path: Path,
                                                                                   darknet_photos: Path):
    import tritonclient.grpc as grpc

    repo = tmp_path / "model_repository"
    for name in (PIPELINE, VARIANT):
        shutil.copytree(small_repo / name, repo / name)
    config = read_config(repo / VARIANT / CONFIG_FILE)
    apply_serving_options(config, serving_options_of(config).updated(max_batch_size=1, preferred_batch_sizes=()))
    write_config(config, repo / VARIANT)  # as a hand edit would: trtrepo config refuses it
    photo = (darknet_photos / "dog.jpg").read_bytes()
    with TritonServer(repo, Ports.free()) as server:
        def ask(_: int) -> str:
            with grpc.InferenceServerClient(server.grpc_url) as client:
                image = grpc.InferInput("image", [1, 1], "BYTES")
                image.set_data_from_numpy(np.array([[photo]], dtype=object))
                try:
                    client.infer(PIPELINE, [image])
                    return "answered"
                except Exception as exc:  # noqa: BLE001 - the outcome is what is asserted
                    return "refused by the variant" if VARIANT in str(exc) else f"lost: {exc}"

        with ThreadPoolExecutor(12) as pool:
            outcomes = list(pool.map(ask, range(48)))
        assert is_ready(server.ports.http, server.connect_host)
    assert set(outcomes) <= {"answered", "refused by the variant"}, outcomes
    assert "refused by the variant" in outcomes  # batches of several images met the variant's limit
    assert "Signal (11)" not in server.log_file.read_text()
