"""What a server process trtrepo starts must not outlive: the launcher that supervises it."""

from __future__ import annotations

import ctypes
import os
import signal
from pathlib import Path


PR_SET_PDEATHSIG = 1
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# Looked up here, not in the child: between fork and exec a child of a threaded process must not take the dynamic
# loader's locks.
_prctl = ctypes.CDLL(None, use_errno=True).prctl


def die_with_parent() -> None:
    """In a child before exec: SIGKILL it when its parent goes, even by SIGKILL (Linux's PR_SET_PDEATHSIG), so no
    server runs on unsupervised with a key nobody holds. Linux ties it to the thread that started the child: start
    servers from the main thread, or from a thread that lives as long as they should."""
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def end_with_parent() -> None:
    """As die_with_parent, with SIGTERM: for nginx, whose master stops its workers on SIGTERM (killed, it would leave
    them holding its ports)."""
    _prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def _stat_fields(pid: int) -> list[str]:
    """/proc/PID/stat's fields after the command name (which may hold spaces): the state first; [] when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return []
    return stat[stat.rfind(")") + 2:].split()


def process_state(pid: int) -> str:
    """The state letter /proc gives a process (R, S, D, T stopped, Z, ...); "" when it is gone."""
    fields = _stat_fields(pid)
    return fields[0] if fields else ""


def cpu_seconds(pid: int) -> float:
    """CPU time a process has used, user and system (/proc's fields 14 and 15); 0 when it is gone."""
    fields = _stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS if fields else 0.0


def process_identity(pid: int) -> str:
    """A process id with its start time (/proc's field 22), which a later process given the same id does not share;
    "" when it is gone."""
    fields = _stat_fields(pid)
    return f"{pid} {fields[19]}" if fields else ""
