"""How problems reach the user: one exception type for what they can fix, printed as one line."""

from __future__ import annotations

import os
import sys
from typing import Any


class UserError(Exception):
    """Bad input, missing dependency or unreachable server: reported as one line, exit code 2."""


def run_app(app: Any) -> None:
    """Run a Typer app so that every error the user can act on is one line on stderr and a non-zero exit."""
    from typer.exceptions import Abort, TyperException

    try:
        code = app(standalone_mode=False)
    except UserError as exc:
        _fail(str(exc), 2)
    except (Abort, KeyboardInterrupt):
        _fail("interrupted", 130)
    except TyperException as exc:  # bad flags and arguments (Typer's own click)
        _fail(f"{exc.format_message()} (see --help)", exc.exit_code)
    except OSError as exc:
        _fail(f"{exc.filename or ''}{': ' if exc.filename else ''}{exc.strerror or exc}", 1)
    except Exception as exc:  # a bug or a library failure: still one line, the traceback on request
        if os.environ.get("TRTREPO_DEBUG"):
            raise
        _fail(f"{exc.__class__.__name__}: {exc} (internal error; TRTREPO_DEBUG=1 shows the traceback)", 1)
    sys.exit(code if isinstance(code, int) else 0)


def _fail(message: str, code: int) -> None:
    print(f"error: {' '.join(message.split())}", file=sys.stderr)
    sys.exit(code)
