"""Weight loading shared by the model modules: random, a pretrained download (with a timeout), or a file."""

from __future__ import annotations

import socket
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch

from trtrepo.errors import UserError


DOWNLOAD_TIMEOUT_S = 30


@contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def download_state_dict(url: str, model: str) -> dict[str, torch.Tensor]:
    """torch.hub's cached download, failing in DOWNLOAD_TIMEOUT_S with one line when offline."""
    try:
        with _socket_timeout(DOWNLOAD_TIMEOUT_S):
            return torch.hub.load_state_dict_from_url(url, map_location="cpu", progress=False, check_hash=False)
    except (OSError, RuntimeError) as exc:
        raise UserError(
            f"{model}: cannot download pretrained weights from {url} ({exc.__class__.__name__}: {exc}); "
            f"offline? put the file in {torch.hub.get_dir()}/checkpoints, or pass --weights PATH or --weights random"
        ) from exc


#: How a torch.save file starts: a zip archive (PyTorch 1.6 and later) or a pickle (older releases).
CHECKPOINT_MAGIC = (b"PK\x03\x04", b"\x80\x02", b"\x80\x04")


def read_state_dict(path: Path, model: str) -> dict[str, torch.Tensor]:
    """A state dict saved with torch.save, also when wrapped as {'state_dict' | 'model' | 'model_state_dict': ...}.

    Tensors only (weights_only): a checkpoint holding code is refused, never run."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{model}: weights {path} is a folder; give the weights file inside it")
    if not path.is_file():
        raise UserError(f"{model}: weights file {path} does not exist (use random, a pretrained name, or a path)")
    with path.open("rb") as file:
        head = file.read(4)
    if not head:
        raise UserError(f"{model}: weights file {path} is empty")
    if not head.startswith(CHECKPOINT_MAGIC):
        raise UserError(f"{model}: {path} is not a PyTorch checkpoint (a torch.save file of the state dict)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt files
        reason = "holds objects other than tensors" if "weights_only" in str(exc) else "is truncated or corrupt"
        first = f"{exc.__class__.__name__}: {exc}".splitlines()[0][:160]
        raise UserError(f"{model}: weights file {path} {reason} ({first})") from exc
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise UserError(f"{model}: {path} holds a {type(state).__name__}, not a state dict")
    return state


def apply_state_dict(network: torch.nn.Module, state: dict[str, torch.Tensor], model: str, source: str) -> None:
    """load_state_dict with a one-line message naming the first mismatching keys."""
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else str(exc)
        raise UserError(f"{model}: weights from {source} do not fit the network: {first}") from exc
