"""Result tables as CSV files: one row per dataclass record, read back through the fields' declared types.

Sweeps, benches and evaluations all write their figures this way; sweeps and benches also gather several runs
in one results folder (a study split over short device calls), keeping what a new run does not measure again.
"""

from __future__ import annotations

import csv
import os
import typing
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

from trtrepo.errors import UserError


Record = TypeVar("Record")


def write_records(records: Sequence[Any], path: Path) -> Path:
    """The records as CSV, a column per field; None is written as an empty cell."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    with partial.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=[f.name for f in fields(records[0])])
        writer.writeheader()
        writer.writerows({k: "" if v is None else v for k, v in asdict(r).items()} for r in records)
    os.replace(partial, path)  # an interrupted write leaves the previous file whole
    return path


def read_records(kind: type[Record], path: Path, what: str) -> list[Record]:
    """Records written by write_records. An empty cell reads as None; a column missing from an older file
    takes the field's default; anything else that does not fit is a one-line error naming ``what`` it should be."""
    hints = typing.get_type_hints(kind)
    types = {name: next((a for a in typing.get_args(hint) if a is not type(None)), hint) for name, hint in hints.items()}
    types = {name: _read_bool if kind is bool else kind for name, kind in types.items()}
    with Path(path).open() as file:
        rows = list(csv.DictReader(file))
    try:
        return [kind(**{k: types[k](v) if v != "" else None for k, v in row.items() if k in types}) for row in rows]
    except (TypeError, ValueError) as exc:
        raise UserError(f"{path}: not a {what} CSV written by trtrepo ({exc})") from None


def _read_bool(text: str) -> bool:
    """A bool as write_records writes it (bool("False") would be True)."""
    if text not in ("True", "False"):
        raise ValueError(f"{text!r} is not True or False")
    return text == "True"


def gather(
    kind: type[Record], path: Path, new: list[Record], key: Callable[[Record], tuple], what: str
) -> list[Record]:
    """The records already in ``path`` that ``new`` does not measure again (by ``key``), then ``new``."""
    previous = read_records(kind, path, what) if Path(path).is_file() else []
    measured = {key(r) for r in new}
    return [r for r in previous if key(r) not in measured] + new
