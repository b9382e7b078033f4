"""Shared fixtures: generated images, a small repository with random weights, and the real tritonserver."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from trtrepo.config import ServingOptions
from trtrepo.repository import build_repository, load_plan
from trtrepo.server import Ports, TritonServer

ROOT = Path(__file__).resolve().parents[1]
SMALL = ServingOptions(max_batch_size=4, preferred_batch_sizes=(2, 4), max_queue_delay_us=1000, warmup=True)


@pytest.fixture(scope="session")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of three small photos-to-be (noise and gradients, JPEG and PNG), different sizes."""
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(7)
    Image.fromarray(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8)).save(folder / "noise.jpg")
    gradient = np.linspace(0, 255, 256 * 256 * 3).reshape(256, 256, 3).astype(np.uint8)
    Image.fromarray(gradient).save(folder / "gradient.png")
    Image.fromarray(rng.integers(0, 255, (180, 120, 3), dtype=np.uint8)).convert("L").save(folder / "gray.png")
    return folder


@pytest.fixture(scope="session")
def small_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """resnet50 through ONNX Runtime and PyTorch, random weights, batches up to 4, Python backend."""
    output = tmp_path_factory.mktemp("repo") / "model_repository"
    plan = load_plan(models=["resnet50"], weights="random", output=output, backends="python", options=SMALL)
    build_repository(plan)
    return output


@pytest.fixture(scope="session")
def server(small_repo: Path) -> TritonServer:
    """The real tritonserver (explicit model control, so perf sweeps can reload models) on free ports."""
    with TritonServer(small_repo, Ports.free(), model_control="explicit") as running:
        yield running


def run_cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """Run a command-line entry point the way a user does, capturing its output."""
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd, timeout=600)


def trtrepo(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return run_cli("-m", "trtrepo.cli", *args, cwd=cwd)


def resnet_client(*args: str) -> subprocess.CompletedProcess:
    return run_cli(str(ROOT / "clients" / "resnet_client.py"), *args)
