"""CUDA's Multi-Process Service (MPS) for the servers trtrepo starts.

Every instance of a Python-backend model is a process with a CUDA context of its own. Without MPS the GPU takes
turns between contexts, so a second instance adds little; under MPS their kernels run at once. That matters where
each request is too small to fill the GPU (H200, CTPN Inductor FP16, one image per request: four instances served
1.35x one without MPS, 2.3x with it; perf/reports/h200-inductor), and not where batches already fill it (ResNet50 at
256). MPS is a daemon on the GPU machine, not a model setting: ``shared_gpu()`` starts one for a command's servers
(`trtrepo serve --mps`), ``unshared_note()`` says when a server is about to start without it on models it would help.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from tritonclient.grpc import model_config_pb2 as pb

from trtrepo.environment import variables_set
from trtrepo.errors import UserError
from trtrepo.format.config import read_config


CONTROL = "nvidia-cuda-mps-control"
PIPE_ENV, LOG_ENV = "CUDA_MPS_PIPE_DIRECTORY", "CUDA_MPS_LOG_DIRECTORY"
#: Where CUDA looks for a running daemon when CUDA_MPS_PIPE_DIRECTORY is not set.
DEFAULT_PIPE_DIR = Path("/tmp/nvidia-mps")
CONTROL_TIMEOUT_S = 30


def mps_running() -> bool:
    """Whether CUDA programs started from this process reach an MPS control daemon (its control pipe exists)."""
    return (Path(os.environ.get(PIPE_ENV) or DEFAULT_PIPE_DIR) / "control").exists()


@contextmanager
def shared_gpu(on_event: Callable[[str], None] = lambda _: None) -> Iterator[None]:
    """Run the enclosed servers under MPS: a daemon already running is used as it is; else one of our own starts,
    its pipe and log in a private temporary folder that this process's environment (and so every server and
    Python-backend stub started meanwhile) points at, and is told to quit at the end."""
    if mps_running():
        on_event("MPS: using the control daemon already running")
        yield
        return
    control = shutil.which(CONTROL)
    if control is None:
        raise UserError(f"--mps: {CONTROL} not found: CUDA's MPS comes with NVIDIA's driver on a GPU machine")
    with tempfile.TemporaryDirectory(prefix="trtrepo-mps-") as folder:
        env = {PIPE_ENV: str(Path(folder, "pipe")), LOG_ENV: str(Path(folder, "log"))}
        for path in env.values():
            Path(path).mkdir()
        try:
            started = subprocess.run([control, "-d"], env={**os.environ, **env}, capture_output=True, text=True,
                                     timeout=CONTROL_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise UserError(f"--mps: the MPS control daemon did not start within {CONTROL_TIMEOUT_S} s") from None
        if started.returncode != 0:
            reason = (started.stderr or started.stdout).strip().splitlines() or [f"exit status {started.returncode}"]
            raise UserError(f"--mps: the MPS control daemon did not start: {reason[-1]}")
        on_event(f"MPS: control daemon started (pipe {env[PIPE_ENV]})")
        with variables_set(env):
            try:
                yield
            finally:
                try:
                    subprocess.run([control], input="quit\n", env={**os.environ, **env}, capture_output=True,
                                   text=True, timeout=CONTROL_TIMEOUT_S)
                except (OSError, subprocess.TimeoutExpired):
                    on_event(f"MPS: the control daemon did not quit in {CONTROL_TIMEOUT_S} s")


def unshared_instances(repository: Path) -> list[tuple[str, int]]:
    """The repository's Python-backend models with several instances on a GPU, and how many (an instance group's
    count is per GPU): the ones whose instances take turns on the GPU without MPS. Unreadable configs are
    validation's business."""
    found = []
    for config_file in sorted(Path(repository).glob("*/config.pbtxt")):
        try:
            config = read_config(config_file)
        except UserError:
            continue
        per_gpu = sum(max(group.count, 1) for group in config.instance_group if group.kind == pb.ModelInstanceGroup.KIND_GPU)
        if config.backend == "python" and per_gpu > 1:
            found.append((config.name or config_file.parent.name, per_gpu))
    return found


def unshared_note(repository: Path) -> str | None:
    """One line for a server about to start on a GPU machine without MPS running, where some of the repository's
    models have several instances on a GPU; None where there is nothing to say."""
    from trtrepo.serving.server import gpu_count

    if mps_running() or not gpu_count():
        return None
    unshared = unshared_instances(repository)
    if not unshared:
        return None
    models = ", ".join(f"{model} (x{count})" for model, count in unshared)
    return f"without CUDA MPS the instances of {models} take turns on their GPU; --mps lets them run at once"
