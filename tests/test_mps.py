"""CUDA MPS for the servers trtrepo starts: which models it would help, and a daemon of our own for a command's life.

No machine here has a GPU: the daemon's control program is stood in for by a script that does what the real one's
interface says (-d starts a daemon that creates its control pipe; "quit" on stdin stops it) and records its calls.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from conftest import trtrepo, trtrepo_process
from trtrepo.errors import UserError
from trtrepo.serving.mps import CONTROL, LOG_ENV, PIPE_ENV, mps_running, shared_gpu, unshared_instances

CONFIG = """name: "{name}"
backend: "{backend}"
max_batch_size: 1
instance_group [ {{ count: {count} kind: {kind} }} ]
"""


def write_model(repo: Path, name: str, count: int, kind: str = "KIND_GPU", backend: str = "python") -> None:
    (repo / name).mkdir(parents=True)
    (repo / name / "config.pbtxt").write_text(CONFIG.format(name=name, backend=backend, count=count, kind=kind))


def test_models_with_several_instances_on_a_gpu_are_the_ones_mps_would_help(tmp_path):
    write_model(tmp_path, "ctpn_inductor_fp16", 4)
    write_model(tmp_path, "resnet50_inductor_fp16", 1)
    write_model(tmp_path, "resnet50_onnxruntime_fp32", 4, kind="KIND_CPU")
    write_model(tmp_path, "resnet50_onnx_native", 2, backend="onnxruntime")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.pbtxt").write_text("name: ")
    assert unshared_instances(tmp_path) == [("ctpn_inductor_fp16", 4)]


def fake_control(folder: Path, exit_status: int = 0) -> Path:
    """A stand-in nvidia-cuda-mps-control on PATH: -d creates the control pipe; 'quit' removes it."""
    calls = folder / "calls.log"
    script = folder / CONTROL
    script.write_text(f"""#!/bin/sh
if [ "$1" = "-d" ]; then
  echo "-d $CUDA_MPS_PIPE_DIRECTORY $CUDA_MPS_LOG_DIRECTORY" >> {calls}
  [ {exit_status} = 0 ] || {{ echo "An instance of this daemon is already running" >&2; exit {exit_status}; }}
  touch "$CUDA_MPS_PIPE_DIRECTORY/control"
else
  read line; echo "$line $CUDA_MPS_PIPE_DIRECTORY" >> {calls}; rm -f "$CUDA_MPS_PIPE_DIRECTORY/control"
fi
""")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return calls


@pytest.fixture
def no_daemon(monkeypatch, tmp_path):
    """PATH with only the stand-in's folder added, and no MPS daemon reachable before the test."""
    folder = tmp_path / "bin"
    folder.mkdir()
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv(PIPE_ENV, str(tmp_path / "no-daemon-here"))
    monkeypatch.delenv(LOG_ENV, raising=False)
    return folder


def test_a_daemon_of_our_own_serves_the_block_and_is_told_to_quit_after_it(no_daemon):
    calls = fake_control(no_daemon)
    before = os.environ[PIPE_ENV]
    with shared_gpu():
        pipe = os.environ[PIPE_ENV]
        assert pipe != before and mps_running()
        # what a server started here inherits
        child = subprocess.run(["sh", "-c", f"echo ${PIPE_ENV}"], capture_output=True, text=True).stdout.strip()
        assert child == pipe
    assert os.environ[PIPE_ENV] == before and LOG_ENV not in os.environ
    started, quit_line = calls.read_text().splitlines()
    assert started.startswith(f"-d {pipe} ") and quit_line == f"quit {pipe}"
    assert not Path(pipe).exists()  # its private folder is gone


def test_the_daemon_quits_when_the_server_fails(no_daemon):
    calls = fake_control(no_daemon)
    with pytest.raises(UserError, match="tritonserver exited"):
        with shared_gpu():
            raise UserError("tritonserver exited")
    assert calls.read_text().splitlines()[-1].startswith("quit ")


def test_a_daemon_already_running_is_used_as_it_is(no_daemon, tmp_path, monkeypatch):
    calls = fake_control(no_daemon)
    running = tmp_path / "running"
    running.mkdir()
    (running / "control").touch()
    monkeypatch.setenv(PIPE_ENV, str(running))
    with shared_gpu():
        assert os.environ[PIPE_ENV] == str(running)
    assert not calls.exists() and (running / "control").exists()


def test_a_daemon_that_does_not_start_is_one_line_with_its_reason(no_daemon):
    fake_control(no_daemon, exit_status=1)
    with pytest.raises(UserError, match="did not start: An instance of this daemon is already running"):
        with shared_gpu():
            pass


@pytest.mark.skipif(shutil.which(CONTROL) is not None, reason="this machine has CUDA's MPS: serve --mps would serve")
def test_serve_mps_without_the_driver_utilities_is_a_one_line_error(tmp_path):
    write_model(tmp_path, "ctpn_inductor_fp16", 4)
    result = trtrepo_process("serve", "--model-repository", str(tmp_path), "--mps")
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode != 0 and len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: --mps: {CONTROL} not found") and "Traceback" not in result.stdout


def test_mps_with_a_server_trtrepo_does_not_start_is_a_one_line_error():
    result = trtrepo("perf", "--url", "127.0.0.1:8001", "--models", "ctpn_inductor_fp16", "--mps")
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode != 0 and len(lines) == 1, result.stderr
    assert "--mps runs the servers trtrepo starts; with --url, start MPS where that server runs" in lines[0]
