"""Environment variables set for a block of work and put back after it, for this process and what it starts."""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator


@contextmanager
def variables_set(values: dict[str, str]) -> Iterator[None]:
    """``values`` in os.environ for the block (child processes started in it inherit them); each variable gets its
    earlier value back afterwards, or is removed where it had none."""
    earlier = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in earlier.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
