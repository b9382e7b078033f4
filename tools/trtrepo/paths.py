"""Paths built from data that is not the user's own command line (object keys, plan names, manifest entries): kept
inside their folder."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from trtrepo.errors import UserError


def contained(root: Path, relative: str, what: str) -> Path:
    """``root / relative``, refused with one line naming ``what`` when ``relative`` is empty, absolute, climbs
    (``..``) or leads out of ``root`` through a symbolic link."""
    parts = PurePosixPath(relative.replace("\\", "/")).parts
    if not parts or parts[0] == "/" or ".." in parts:
        raise UserError(f"{what} {relative!r} would leave {root}: refused")
    path = Path(root).joinpath(*parts)
    if not path.resolve().is_relative_to(Path(root).resolve()):
        raise UserError(f"{what} {relative!r} leads out of {root} through a symbolic link: refused")
    return path


def symbolic_links(folder: Path) -> list[Path]:
    """Every symbolic link under ``folder`` (not followed), files and folders alike."""
    found = []
    for path in Path(folder).iterdir():
        if path.is_symlink():
            found.append(path)
        elif path.is_dir():
            found.extend(symbolic_links(path))
    return sorted(found)
