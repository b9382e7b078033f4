"""A pipeline's stub ends without a segfault: Triton's Python backend (24.10) frees a model's Python objects only
after its stub is torn down, and a Triton metric freed then reaches for the stub's gone shared memory
(Metric::SaveToSharedMemory on a null pool; fixed upstream in python_backend PR 429). The pipeline frees its metrics in
finalize, while the stub is whole. The kernel's log is where such a death shows: the server exits 0 all the same."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from trtrepo.clients.resnet_client import classify_server_side
from trtrepo.serving.server import Ports, TritonServer

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
