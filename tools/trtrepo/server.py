"""One launcher for tritonserver: a binary on PATH wins, else the one inside the nvidia-pytriton wheel."""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import site
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from trtrepo.errors import UserError

SYSTEM_BACKEND_DIR = Path("/opt/tritonserver/backends")
MODEL_CONTROL_MODES = ("none", "poll", "explicit")
EXIT_TIMEOUT_S = 5


@dataclass(frozen=True)
class TritonInstallation:
    """Where a runnable tritonserver lives, its backends, and the environment it needs."""

    binary: Path
    backend_dir: Path
    source: str
    env: dict[str, str] = field(default_factory=dict)

    @property
    def backends(self) -> frozenset[str]:
        """Backend names the server can load (one folder per backend in its backend directory)."""
        if not self.backend_dir.is_dir():
            return frozenset()
        return frozenset(p.name for p in self.backend_dir.iterdir() if p.is_dir())


def find_tritonserver() -> TritonInstallation:
    """The tritonserver to run: one on PATH (an NGC container), else the nvidia-pytriton wheel's."""
    on_path = shutil.which("tritonserver")
    if on_path:
        backend_dir = Path(os.environ.get("TRITON_BACKEND_DIR", SYSTEM_BACKEND_DIR))
        return TritonInstallation(Path(on_path), backend_dir, f"PATH ({on_path})", {"PYTHONPATH": _python_path()})
    spec = importlib.util.find_spec("pytriton")
    if spec is None or spec.origin is None:
        raise UserError("no tritonserver on PATH and nvidia-pytriton is not installed; run `make install`")
    package = Path(spec.origin).parent
    dist = package / "tritonserver"
    libs = package.parent / "nvidia_pytriton.libs"
    env = {"LD_LIBRARY_PATH": _join_paths(str(libs), os.environ.get("LD_LIBRARY_PATH", "")), "TRTREPO_PYTHONPATH": _python_path()}
    return TritonInstallation(dist / "bin" / "tritonserver", _wheel_backend_dir(dist), "nvidia-pytriton wheel", env)


def _wheel_backend_dir(dist: Path) -> Path:
    """A backend folder in the venv whose Python backend can import this environment's packages.

    The wheel ships one stub per Python version and Triton expects exactly one inside backends/python;
    the stub ignores PYTHONPATH, so triton_python_backend_utils is replaced by a shim that reads
    TRTREPO_PYTHONPATH (see triton_utils_shim.py).
    """
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = dist / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise UserError(f"nvidia-pytriton has no Python backend stub for Python {version}; use Python 3.8 to 3.13")
    upstream = dist / "backends" / "python"
    links = {
        "libtriton_python.so": upstream / "libtriton_python.so",
        "triton_python_backend_stub": stub,
        "triton_python_backend_utils_upstream.py": upstream / "triton_python_backend_utils.py",
        "triton_python_backend_utils.py": Path(__file__).with_name("triton_utils_shim.py"),
    }
    target = Path(sys.prefix) / "share" / "trtrepo" / "backends" / "python"
    target.mkdir(parents=True, exist_ok=True)
    for name, source in links.items():
        link = target / name
        if link.is_symlink() and link.resolve() == source.resolve():
            continue
        link.unlink(missing_ok=True)
        link.symlink_to(source)
    return target.parent


def _python_path() -> str:
    """What the Python backend stub needs to import trtrepo and this environment's packages."""
    import trtrepo

    return _join_paths(str(Path(trtrepo.__file__).resolve().parent.parent), *site.getsitepackages())


def _join_paths(*parts: str) -> str:
    return os.pathsep.join(p for p in parts if p)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class Ports:
    http: int = 8000
    grpc: int = 8001
    metrics: int = 8002

    @classmethod
    def free(cls) -> "Ports":
        return cls(free_port(), free_port(), free_port())


class TritonServer:
    """A running tritonserver process: start() waits until it is ready, stop() shuts it down cleanly."""

    def __init__(
        self,
        repository: Path,
        ports: Ports = Ports(),
        log_file: Path | None = None,
        model_control: str = "none",
        installation: TritonInstallation | None = None,
    ) -> None:
        if model_control not in MODEL_CONTROL_MODES:
            raise UserError(f"model control mode must be one of {', '.join(MODEL_CONTROL_MODES)}, got {model_control!r}")
        self.repository = Path(repository).resolve()
        if not self.repository.is_dir():
            raise UserError(f"{self.repository}: model repository does not exist; run `trtrepo repo` first")
        self.ports = ports
        self.model_control = model_control
        self.installation = installation or find_tritonserver()
        self.log_file = Path(log_file) if log_file else Path(tempfile.mkstemp(prefix="tritonserver-", suffix=".log")[1])
        self.process: subprocess.Popen | None = None

    @property
    def http_url(self) -> str:
        return f"localhost:{self.ports.http}"

    @property
    def grpc_url(self) -> str:
        return f"localhost:{self.ports.grpc}"

    @property
    def metrics_url(self) -> str:
        return f"http://localhost:{self.ports.metrics}/metrics"

    def command(self) -> list[str]:
        command = [
            str(self.installation.binary),
            f"--model-repository={self.repository}",
            f"--backend-directory={self.installation.backend_dir}",
            f"--http-port={self.ports.http}",
            f"--grpc-port={self.ports.grpc}",
            f"--metrics-port={self.ports.metrics}",
            f"--model-control-mode={self.model_control}",
            # Clients that keep connections open would otherwise hold shutdown for 30 s.
            f"--exit-timeout-secs={EXIT_TIMEOUT_S}",
        ]
        if self.model_control == "explicit":
            command.append("--load-model=*")
        return command

    def start(self, timeout_s: float = 180) -> "TritonServer":
        env = {**os.environ, **self.installation.env}
        with self.log_file.open("wb") as log:
            self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            self._wait_ready(timeout_s)
        except BaseException:  # not ready, or Ctrl-C while waiting: leave no server behind
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise UserError(f"tritonserver exited with code {self.process.returncode}: {self.log_error()}")
            if is_ready(self.ports.http):
                return
            time.sleep(0.5)
        raise UserError(f"tritonserver not ready after {timeout_s:.0f}s: {self.log_error()} (log: {self.log_file})")

    def log_error(self) -> str:
        """The first model-load failure in the server log, else its first error line (prefix E), else its first line."""
        lines = [line for line in self.log_file.read_text(errors="replace").splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("E")]
        failures = [line for line in errors if "failed to load" in line]
        return (failures or errors or lines or ["no log output"])[0][:400] + f" (log: {self.log_file})"

    def stop(self, timeout_s: float = 30) -> None:
        """SIGINT lets Triton unload models and finish in-flight requests; SIGKILL if it hangs."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def __enter__(self) -> "TritonServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def is_ready(http_port: int, host: str = "localhost") -> bool:
    try:
        with urllib.request.urlopen(f"http://{host}:{http_port}/v2/health/ready", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False
