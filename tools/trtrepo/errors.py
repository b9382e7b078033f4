"""How problems reach the user: one exception type for what they can fix, printed as one line."""

from __future__ import annotations

import os
import signal
import sys
from typing import Any


INTERRUPTED = 130  # the exit code of Ctrl-C (128 + SIGINT)


class UserError(Exception):
    """Bad input, missing dependency or unreachable server: reported as one line, exit code 2."""


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised where the program is, like Ctrl-C's KeyboardInterrupt: every ``with server:``
    on the way out stops its server. A second signal raises again, which makes a stop in progress force-kill."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


_received: list[int] = []  # the signals Terminated was raised for, since Typer hides the exception (exit code 130)


def _terminate(signum: int, _frame: object) -> None:
    _received.append(signum)
    raise Terminated(signum)


def handle_termination() -> None:
    """SIGTERM (systemd, Docker, Kubernetes) and SIGHUP (a closed terminal) unwind the program like Ctrl-C."""
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _terminate)


def run_app(app: Any) -> None:
    """Run a Typer app so that every error the user can act on is one line on stderr and a non-zero exit."""
    from typer.exceptions import Abort, TyperException

    handle_termination()
    try:
        code = app(standalone_mode=False)
    except UserError as exc:
        _fail(str(exc), 2)
    except (Abort, KeyboardInterrupt):
        code = INTERRUPTED
    except TyperException as exc:  # bad flags and arguments (Typer's own click)
        _fail(f"{exc.format_message()} (see --help)", exc.exit_code)
    except OSError as exc:
        _fail(f"{exc.filename or ''}{': ' if exc.filename else ''}{exc.strerror or exc}", 1)
    except Exception as exc:  # a bug or a library failure: still one line, the traceback on request
        if os.environ.get("TRTREPO_DEBUG"):
            raise
        _fail(f"{exc.__class__.__name__}: {exc} (internal error; TRTREPO_DEBUG=1 shows the traceback)", 1)
    if code == INTERRUPTED:  # Typer returns this for KeyboardInterrupt, and so for Terminated
        if _received:
            _fail(f"stopped by {signal.Signals(_received[0]).name}", 128 + _received[0])
        _fail("interrupted", INTERRUPTED)
    sys.exit(code if isinstance(code, int) else 0)


def _fail(message: str, code: int) -> None:
    print(f"error: {' '.join(message.split())}", file=sys.stderr)
    sys.exit(code)
