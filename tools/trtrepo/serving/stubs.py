"""The Python-backend stub processes of a running tritonserver: found in the process table, measured, watched.

Triton runs each instance of a Python-backend model in a stub process of its own. When a stub dies (killed,
out of memory), Triton 2.51 keeps the model READY and answers each of its requests with "Stub process ... is
not healthy", forever. StubWatchdog notices the missing stub and reloads the model through the
model-repository API, with the config it is serving, so the model recovers within seconds. A stopped stub
(SIGSTOP, SIGTSTP) fails its requests the same way, and when it is continued tritonserver aborts (a
boost::interprocess::lock_exception, every model gone): the watchdog kills a stub it finds stopped, then reloads it.
It also replaces a stub that answers nothing and does no work (stuck), and one that keeps failing requests for want
of memory (starved: trtrepo's backends count those in a metric of their own), which a new process is not.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from trtrepo.serving.process import cpu_seconds, process_state


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


#: How long a model's stubs may answer nothing while it has requests to answer, and do no work, before the
#: watchdog takes them for stuck (frozen, deadlocked) and replaces them.
STUCK_AFTER_S = 30.0
#: CPU seconds its stubs may use in that time and still count as doing no work (their idle threads' wake-ups).
IDLE_CPU_S = 0.2
#: Requests a stub may fail for want of memory before the watchdog takes it for starved and replaces it: one can be a
#: passing peak, the same process failing again is one whose heap or address space stays exhausted.
STARVED_AFTER_FAILURES = 3


@dataclass
class Quiet:
    """Since when a model has answered no request, with its counts of answered and failed requests and its stubs'
    CPU time then."""

    since: float
    answered: float
    failed: float
    cpu: float


class StubWatchdog:
    """Reloads a Python-backend model whose stubs are fewer than its config's instances, twice in a row; kills the
    stubs of a model that answers nothing for ``stuck_after_s`` while it has requests (they wait, or they fail) and
    its stubs do no work: stuck, whatever their process state says (Triton 2.51 keeps such a model READY, failing
    every request "Stub process ... is not healthy", and aborts when a frozen stub resumes).

    ``models``: model name -> (expected stub count, config JSON it serves) for the models that should be up;
    ``reload``: (model, config JSON) -> None. A reload that fails is reported and tried again on the next scan.
    ``requests``: per model, metrics.request_counts of the server (None: unknown; no stuck check).
    ``memory_failures``: per stub process id, the requests it failed for want of memory (metrics.memory_failures).
    """

    def __init__(
        self, server_pid: int, models: Callable[[], dict[str, tuple[int, str]]], reload: Callable[[str, str], None],
        report: Callable[[str], None], interval_s: float = 1.0,
        requests: Callable[[], dict[str, dict[str, float]] | None] = lambda: None, stuck_after_s: float = STUCK_AFTER_S,
        memory_failures: Callable[[], dict[int, float]] = dict,
    ) -> None:
        self.server_pid = server_pid
        self.models = models
        self.reload = reload
        self.report = report
        self.interval_s = interval_s
        self.requests = requests
        self.stuck_after_s = stuck_after_s
        self.memory_failures = memory_failures
        self._quiet: dict[str, Quiet] = {}
        self._failed: dict[str, str] = {}  # model -> the reason its last reload failed
        self.recoveries: list[tuple[str, float]] = []  # (model, seconds from noticing to ready again)
        self._short: dict[str, int] = {}
        self._expected: dict[str, tuple[int, str]] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stub-watchdog", daemon=True)

    def start(self) -> "StubWatchdog":
        self._expected = self.models()  # what is served from the start, before anything can change under it
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=30)

    def served_changed(self) -> None:
        """A model was loaded from outside the watchdog (its instances may differ): ask the server at the next scan,
        or a stub that dies after a load that added instances would leave as many as were expected before it."""
        self._expected = None

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
        stubs = stubs_of(self.server_pid)
        self._kill_stuck(stubs)
        self._kill_starved(stubs)
        for stub in stubs:
            state = process_state(stub.pid)
            if state == "T":
                self.report(f"{stub.model}: its Python stub {stub.pid} is stopped; killing it")
                os.kill(stub.pid, signal.SIGKILL)
            if state in ("T", ""):  # stopped, or gone (killed as stuck)
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
                reason = " ".join(str(exc).split())[:200]
                if self._failed.get(model) != reason:  # said once, not at every scan while it goes on failing
                    self.report(f"{model}: reload failed ({reason}); trying again while it is served")
                self._failed[model] = reason
                self._expected = None  # a model unloaded instead is no longer watched
                continue
            self._failed.pop(model, None)
            seconds = time.monotonic() - started
            self.recoveries.append((model, seconds))
            self._short.pop(model, None)
            self._expected = None
            self.report(f"{model}: reloaded in {seconds:.1f} s")
            reloaded.append(model)
        return reloaded

    def _kill_starved(self, stubs: list[Stub]) -> None:
        """Kill each stub that has failed STARVED_AFTER_FAILURES requests or more for want of memory: the scan then
        reloads its model, short of a stub, into a new process."""
        failures = self.memory_failures()
        for stub in stubs:
            if failures.get(stub.pid, 0) >= STARVED_AFTER_FAILURES:
                self.report(f"{stub.model}: its Python stub {stub.pid} failed {failures[stub.pid]:.0f} requests for "
                            "want of memory (starved); killing it")
                os.kill(stub.pid, signal.SIGKILL)

    def _kill_stuck(self, stubs: list[Stub]) -> None:
        """Kill the stubs of each model that has had requests to answer (waiting for an instance, or failed since
        the window began) and answered none for stuck_after_s while its stubs used no more than IDLE_CPU_S: the scan
        then reloads it, short of stubs. A model sent only requests it refuses, too few to use that CPU, for as
        long, is reloaded too: seconds of a reload, against a stub that would answer nothing."""
        counts = self.requests()
        if counts is None:
            return
        now = time.monotonic()
        by_model: dict[str, list[Stub]] = {}
        for stub in stubs:
            by_model.setdefault(stub.model, []).append(stub)
        for model, own in by_model.items():
            if model not in counts:
                continue
            answered, failed = counts[model]["request_success"], counts[model]["request_failure"]
            cpu = sum(cpu_seconds(stub.pid) for stub in own)
            quiet = self._quiet.get(model)
            waiting = quiet is not None and (counts[model]["pending_request_count"] > 0 or failed > quiet.failed)
            if not waiting or answered > quiet.answered or cpu - quiet.cpu > IDLE_CPU_S:
                self._quiet[model] = Quiet(now, answered, failed, cpu)  # nothing owed, or work done: a new window
                continue
            if now - quiet.since >= self.stuck_after_s:
                self.report(f"{model}: its Python stubs answered none of its requests for {now - quiet.since:.0f} s "
                            "and did no work (stuck); killing them")
                for stub in own:
                    os.kill(stub.pid, signal.SIGKILL)
                self._quiet.pop(model, None)
