"""The Python-backend stub processes of a running tritonserver: found in the process table, measured, watched.

Triton runs each instance of a Python-backend model in a stub process of its own. When a stub dies (killed,
out of memory), Triton 2.51 keeps the model READY and answers each of its requests with "Stub process ... is
not healthy", forever. StubWatchdog notices the missing stub and reloads the model through the
model-repository API, with the config it is serving, so the model recovers within seconds. A stopped stub
(SIGSTOP, SIGTSTP) fails its requests the same way, and when it is continued tritonserver aborts (a
boost::interprocess::lock_exception, every model gone): the watchdog kills a stub it finds stopped, then reloads it.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from trtrepo.serving.process import process_state


STUB_BINARY = "triton_python_backend_stub"
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class Stub:
    pid: int
    model: str  # the model folder's name
    instance: str  # Triton's instance name, <model>_<group>_<index>
    shm_region: str  # its shared-memory region in /dev/shm


def children(parent: int) -> list[int]:
    """Process ids whose parent is ``parent`` (from /proc; empty where the process is gone)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        if int(fields[1]) == parent and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def stubs_of(server_pid: int) -> list[Stub]:
    """The live stubs of a tritonserver, read from their command lines (model file, region, ..., instance name)."""
    stubs = []
    for pid in children(server_pid):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if not argv[0].endswith(STUB_BINARY) or len(argv) < 9:
            continue
        names = [a for a in argv if a.startswith(Path(argv[1]).parent.parent.name + "_")]
        stubs.append(Stub(pid, Path(argv[1]).parent.parent.name, names[-1] if names else "", argv[2]))
    return stubs


def resident_bytes(pids: list[int]) -> int:
    """Resident memory of these processes together (the ones still alive)."""
    total = 0
    for pid in pids:
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_BYTES
        except (OSError, IndexError, ValueError):
            continue
    return total


def remove_shared_memory(prefix: str) -> None:
    """Remove the /dev/shm regions whose names start with ``prefix``, the one a server's stubs were given (a clean
    shutdown removes them itself; a killed server leaves them)."""
    if not prefix or "/" in prefix:
        raise ValueError(f"not a region prefix: {prefix!r}")
    for path in Path("/dev/shm").glob(f"{prefix}*"):
        path.unlink(missing_ok=True)


class StubWatchdog:
    """Reloads a Python-backend model whose stubs are fewer than its config's instances, twice in a row.

    ``models``: model name -> (expected stub count, config JSON it serves) for the models that should be up;
    ``reload``: (model, config JSON) -> None. A reload that fails is reported and tried again on the next scan.
    """

    def __init__(
        self, server_pid: int, models: Callable[[], dict[str, tuple[int, str]]], reload: Callable[[str, str], None],
        report: Callable[[str], None], interval_s: float = 1.0,
    ) -> None:
        self.server_pid = server_pid
        self.models = models
        self.reload = reload
        self.report = report
        self.interval_s = interval_s
        self.recoveries: list[tuple[str, float]] = []  # (model, seconds from noticing to ready again)
        self._short: dict[str, int] = {}
        self._expected: dict[str, tuple[int, str]] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stub-watchdog", daemon=True)

    def start(self) -> "StubWatchdog":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.scan()
            except Exception as exc:  # the server going away mid-scan, say: never kill the launcher
                if self._stop.is_set():
                    return
                self.report(f"stub watchdog: {exc.__class__.__name__}: {' '.join(str(exc).split())[:200]}")

    def scan(self) -> list[str]:
        """One look at the process table; reloads (and returns) the models short of stubs for two scans running."""
        alive: dict[str, int] = {}
        for stub in stubs_of(self.server_pid):
            if process_state(stub.pid) == "T":
                self.report(f"{stub.model}: its Python stub {stub.pid} is stopped; killing it")
                os.kill(stub.pid, signal.SIGKILL)
                continue
            alive[stub.model] = alive.get(stub.model, 0) + 1
        # The server is asked only when the stubs disagree with what it said last (a reload changed the instances,
        # a model came or went, or a stub died), not every scan.
        known = self._expected
        if known is None or set(alive) - set(known) or any(alive.get(m, 0) < n for m, (n, _) in known.items()):
            self._expected = known = self.models()
        reloaded = []
        for model, (expected, config_json) in known.items():
            if alive.get(model, 0) >= expected:
                self._short.pop(model, None)
                continue
            self._short[model] = self._short.get(model, 0) + 1
            if self._short[model] < 2 or self._stop.is_set():
                continue
            self.report(f"{model}: {expected - alive.get(model, 0)} of its {expected} Python stubs died; reloading it")
            started = time.monotonic()
            try:
                self.reload(model, config_json)
            except Exception as exc:
                self.report(f"{model}: reload failed ({' '.join(str(exc).split())[:200]}); trying again")
                continue
            seconds = time.monotonic() - started
            self.recoveries.append((model, seconds))
            self._short.pop(model, None)
            self._expected = None
            self.report(f"{model}: reloaded in {seconds:.1f} s")
            reloaded.append(model)
        return reloaded
