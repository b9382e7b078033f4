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
# Per GPU. GPU tensors travel between the server and Python-backend stubs through this pool; Triton's default
# (64 MB) is smaller than one batch of YOLOv3 outputs (32 x 10647 x 85 floats, 116 MB).
CUDA_POOL_MB = 4096


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
    """The tritonserver to run: one on PATH (an NGC container, an unpacked bundle), else the nvidia-pytriton wheel's.

    Either way its Python backend is reached through a backend folder of trtrepo's (see _shim_backend_dir), so that
    the stub can import this environment's packages.
    """
    python_path = _python_path()
    on_path = shutil.which("tritonserver")
    if on_path:
        upstream = Path(os.environ.get("TRITON_BACKEND_DIR", SYSTEM_BACKEND_DIR))
        stub = upstream / "python" / "triton_python_backend_stub"
        env = {"PYTHONPATH": python_path, "TRTREPO_PYTHONPATH": python_path}
        return TritonInstallation(Path(on_path), _shim_backend_dir(upstream, stub), f"PATH ({on_path})", env)
    spec = importlib.util.find_spec("pytriton")
    if spec is None or spec.origin is None:
        raise UserError("no tritonserver on PATH and nvidia-pytriton is not installed; run `make install`")
    package = Path(spec.origin).parent
    dist = package / "tritonserver"
    libs = package.parent / "nvidia_pytriton.libs"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = dist / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise UserError(f"nvidia-pytriton has no Python backend stub for Python {version}; use Python 3.8 to 3.13")
    env = {"LD_LIBRARY_PATH": _join_paths(str(libs), os.environ.get("LD_LIBRARY_PATH", "")), "TRTREPO_PYTHONPATH": python_path}
    return TritonInstallation(dist / "bin" / "tritonserver", _shim_backend_dir(dist / "backends", stub), "nvidia-pytriton wheel", env)


def _shim_backend_dir(upstream: Path, stub: Path) -> Path:
    """A backend folder whose Python backend can import this environment's packages; other backends linked as they are.

    The stubs of the nvidia-pytriton wheel and of the GPU bundle ignore PYTHONPATH (seen with Python 3.11 and 3.12),
    so triton_python_backend_utils is replaced by a shim that reads TRTREPO_PYTHONPATH (see triton_utils_shim.py).
    A server without a Python backend keeps its own folder.
    """
    python = upstream / "python"
    if not (python / "libtriton_python.so").is_file() or not stub.is_file():
        return upstream
    links = {
        "python/libtriton_python.so": python / "libtriton_python.so",
        "python/triton_python_backend_stub": stub,
        "python/triton_python_backend_utils_upstream.py": python / "triton_python_backend_utils.py",
        "python/triton_python_backend_utils.py": Path(__file__).with_name("triton_utils_shim.py"),
        **{other.name: other for other in upstream.iterdir() if other.is_dir() and other.name != "python"},
    }
    target = Path(sys.prefix) / "share" / "trtrepo" / "backends"
    if not os.access(sys.prefix, os.W_OK):
        target = Path(tempfile.gettempdir()) / f"trtrepo-backends-{os.getuid()}"
    (target / "python").mkdir(parents=True, exist_ok=True)
    for name, source in links.items():
        link = target / name
        if link.is_symlink() and link.resolve() == source.resolve():
            continue
        link.unlink(missing_ok=True)
        link.symlink_to(source)
    return target


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
        cuda_pool_mb: int = CUDA_POOL_MB,
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
        self.cuda_pool_mb = cuda_pool_mb
        self.gpus = gpu_count()

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
        command += [f"--cuda-memory-pool-byte-size={gpu}:{self.cuda_pool_mb << 20}" for gpu in range(self.gpus)]
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


def gpu_count() -> int:
    """NVIDIA GPUs this machine's driver shows (nvidia-smi -L); 0 without one."""
    if not shutil.which("nvidia-smi"):
        return 0
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return sum(1 for line in listing.splitlines() if line.startswith("GPU "))


def is_ready(http_port: int, host: str = "localhost") -> bool:
    try:
        with urllib.request.urlopen(f"http://{host}:{http_port}/v2/health/ready", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False
