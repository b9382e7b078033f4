"""The tritonserver trtrepo runs (the wheel's, a system install, or one on PATH), its backends, and the Python its
Python-backend stub will run: the stub's path, and whether its numpy can cross the stub (checked before any start)."""

from __future__ import annotations

import functools
import importlib.util
import os
import site
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from trtrepo.backend import STUB_PYTHON, UTILS_SHIM
from trtrepo.backend.stub_python import NUMPY2_MARKER, PATH_ENV
from trtrepo.errors import UserError
from trtrepo.serving.access import LOOPBACK


SYSTEM_BACKEND_DIR = Path("/opt/tritonserver/backends")


#: Folders put first on the Python-backend stub's path only (trtrepo.backend.stub_python says why a stub may need its own numpy).
STUB_PATH_ENV = "TRTREPO_STUB_PATH"


@dataclass(frozen=True)
class TritonInstallation:
    """Where a runnable tritonserver lives, its backends, and the environment it needs."""

    binary: Path
    backend_dir: Path
    source: str
    env: dict[str, str] = field(default_factory=dict)
    #: The Python-backend stub binary; None where the server has no Python backend trtrepo can reach.
    stub: Path | None = None

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
    on_path = _tritonserver_on_path()
    if on_path:
        upstream = Path(os.environ.get("TRITON_BACKEND_DIR", SYSTEM_BACKEND_DIR))
        stub = upstream / "python" / "triton_python_backend_stub"
        env = {"PYTHONPATH": python_path, PATH_ENV: python_path}
        return TritonInstallation(Path(on_path), _shim_backend_dir(upstream, stub), f"PATH ({on_path})", env,
                                  stub if stub.is_file() else None)
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
    env = {"LD_LIBRARY_PATH": _join_paths(str(libs), os.environ.get("LD_LIBRARY_PATH", "")), PATH_ENV: python_path}
    return TritonInstallation(dist / "bin" / "tritonserver", _shim_backend_dir(dist / "backends", stub), "nvidia-pytriton wheel",
                              env, stub)


def _tritonserver_on_path() -> str | None:
    """The first tritonserver on PATH that is a real server, not trtrepo's own `tritonserver` entry point."""
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        candidate = Path(folder or ".") / "tritonserver"
        if not (candidate.is_file() and os.access(candidate, os.X_OK)):
            continue
        with candidate.open("rb") as file:
            head = file.read(4096)
        if not (head.startswith(b"#!") and b"trtrepo" in head):
            return str(candidate)
    return None


def tritonserver_main() -> None:
    """`tritonserver` in the virtual environment: the bundled server with its backend folder and library path.

    Every flag passes through; two are added unless given: --backend-directory (trtrepo's, whose Python backend
    can import this environment) and the loopback bind addresses (a Python-backend model load is code execution,
    so nothing listens beyond this machine unless asked with --http-address and friends).
    """
    arguments = sys.argv[1:]
    try:
        installation = find_tritonserver()
    except UserError as exc:
        sys.exit(f"error: {exc}")
    given = {argument.split("=", 1)[0] for argument in arguments if argument.startswith("--")}
    added = [] if "--backend-directory" in given else [f"--backend-directory={installation.backend_dir}"]
    for flag in ("--http-address", "--grpc-address", "--metrics-address"):
        if flag not in given:
            added.append(f"{flag}={LOOPBACK}")
    try:
        check_stub_numpy(installation)
    except UserError as exc:
        sys.exit(f"error: {exc}")
    os.environ.update(installation.env)
    binary = str(installation.binary)
    os.execv(binary, [binary, *added, *arguments])


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
        "python/triton_python_backend_utils.py": UTILS_SHIM,
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
    """What the Python backend stub needs to import trtrepo and this environment's packages, behind the folders
    STUB_PATH_ENV names (a numpy 1.x for the stub where this environment's own is numpy 2)."""
    import trtrepo

    return _join_paths(os.environ.get(STUB_PATH_ENV, ""), str(Path(trtrepo.__file__).resolve().parent.parent),
                       *site.getsitepackages())


@functools.lru_cache(maxsize=None)
def stub_numpy(python_path: str) -> tuple[str, str]:
    """(version, folder) of the numpy a Python-backend stub with ``python_path`` first on its path imports, found
    the way the stub finds it (trtrepo/backend/stub_python.py in an interpreter without site-packages of its own)."""
    script = STUB_PYTHON
    try:
        found = subprocess.run([sys.executable, "-I", "-S", str(script), python_path], capture_output=True, text=True,
                               timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise UserError(f"cannot tell which numpy the Python-backend stub imports: {exc}") from exc
    lines = found.stdout.split("\n")
    if found.returncode != 0 or len(lines) < 2:
        last = (found.stderr.strip().splitlines() or ["no output"])[-1]
        raise UserError(f"the Python-backend stub cannot import numpy from its path ({last})")
    return lines[0], lines[1]


def check_stub_numpy(installation: TritonInstallation) -> None:
    """Refuse, before anything is served, a stub that would import a numpy it garbles tensors with (numpy 2 under a
    stub built for numpy 1.x; trtrepo/backend/stub_python.py says why)."""
    if installation.stub is None or PATH_ENV not in installation.env:
        return
    version, folder = stub_numpy(installation.env[PATH_ENV])
    if int(version.split(".")[0]) < 2 or stub_supports_numpy2(installation.stub):
        return
    raise UserError(
        f"the Python-backend stub would import numpy {version} ({folder}), but this tritonserver's stub is built for "
        f"numpy 1.x and garbles every tensor under numpy 2: install numpy<2 here (pip install 'numpy<2'), or name a "
        f"folder holding numpy 1.26 in {STUB_PATH_ENV} (put first on the stub's path only)")


@functools.lru_cache(maxsize=None)
def stub_supports_numpy2(stub: Path) -> bool:
    """Whether a stub binary was built with a pybind11 that knows numpy 2 (it names numpy._core)."""
    return NUMPY2_MARKER in stub.read_bytes()


def _join_paths(*parts: str) -> str:
    return os.pathsep.join(p for p in parts if p)
