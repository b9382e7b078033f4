"""Publishing a variant so that no build, failed or interrupted, leaves half of one: staged beside the
repository, renamed into place with signals deferred (the old folder parked as <variant>.old and restored by
recovery), one build at a time under a lock, and a manifest of every file's hash to tell a variant intact."""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from trtrepo.errors import UserError
from trtrepo.format.config import CONFIG_FILE, LABELS_FILE, VERSION, file_digest


LOCK_FILE = ".trtrepo.lock"


def folder_files(model_dir: Path) -> dict[str, dict]:
    """Every file of a variant's version folder, and its labels file (relative path -> size and SHA-256). Not
    config.pbtxt, which `trtrepo config` edits in place by design."""
    paths = [*sorted((Path(model_dir) / VERSION).rglob("*")), Path(model_dir) / LABELS_FILE]
    return {str(path.relative_to(model_dir)): {"bytes": path.stat().st_size, "sha256": file_digest(path)}
            for path in paths if path.is_file()}


def files_intact(model_dir: Path, manifest: dict) -> bool:
    """Whether every file the manifest names is there with its hash (a manifest without the list: not intact)."""
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        return False
    for name, entry in files.items():
        path = Path(model_dir) / name
        if not path.is_file() or path.stat().st_size != entry.get("bytes") or file_digest(path) != entry.get("sha256"):
            return False
    return True


def staging_dir(repo_dir: Path) -> Path:
    """Beside the repository (same file system, so a rename publishes), never inside it: a server that loads
    every folder of the repository must not meet a half-built one."""
    repo_dir = Path(repo_dir).resolve()
    return repo_dir.parent / f".{repo_dir.name}.trtrepo-staging"


@contextmanager
def signals_deferred() -> Iterator[None]:
    """Ctrl-C, SIGTERM and SIGHUP wait until the block is done (they are delivered right after)."""
    blocked = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, blocked)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def publish(staged: Path, target: Path) -> None:
    """Put a fully built variant folder in place of the old one: two renames that no signal splits."""
    trash = staged.parent / f"{target.name}.old"  # the name recover_staging() puts back
    shutil.rmtree(trash, ignore_errors=True)
    with signals_deferred():
        if target.exists():
            os.rename(target, trash)
        os.rename(staged, target)
    shutil.rmtree(trash, ignore_errors=True)


def recover_staging(repo_dir: Path, log: Callable[[str], None]) -> None:
    """After a build that died between publish's two renames, put the old variant back; drop half-built ones."""
    staging = staging_dir(repo_dir)
    if not staging.is_dir():
        return
    for leftover in sorted(staging.iterdir()):
        target = Path(repo_dir) / leftover.name.removesuffix(".old")
        # Parked whole by publish's first rename; once its second rename is done the parked folder is only trash
        # (perhaps half deleted), and the variant in place stays.
        if leftover.name.endswith(".old") and not target.exists() and (leftover / CONFIG_FILE).is_file():
            os.rename(leftover, target)
            log(f"{target.name}: restored the previous build (the last build stopped while replacing it)")
        else:
            shutil.rmtree(leftover, ignore_errors=True)


@contextmanager
def repository_lock(repo_dir: Path) -> Iterator[None]:
    """One build at a time per repository: a second is refused at once, with one line."""
    path = Path(repo_dir) / LOCK_FILE
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"{repo_dir}: another trtrepo build is writing to this repository ({path} is locked); "
                            "wait for it to finish") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def rejected_dir(repo_dir: Path) -> Path:
    """Where variants below their accuracy gate are set aside with their reports: beside the repository, so no
    server loads them."""
    repo_dir = Path(repo_dir).resolve()
    return repo_dir.parent / f"{repo_dir.name}.rejected"
