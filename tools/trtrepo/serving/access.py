"""How a Triton server is exposed and guarded, in one place for the launcher, the clients, perf_analyzer and tests.

With the Python backend a model load is code execution: whoever may call the model-repository API may run code
on the host. So every server trtrepo starts listens on loopback unless told otherwise, and restricts the APIs that
change or inspect the server (RESTRICTED_APIS) to callers that send a key, on HTTP and on gRPC alike. The key is
generated per start unless given, and written to a file only the user can read, one per port, which trtrepo's own
commands and clients look up for servers on this machine; for another host it must be given (--api-key or
TRTREPO_API_KEY).
"""

from __future__ import annotations

import ipaddress
import os
import secrets
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable, NamedTuple

from trtrepo.errors import UserError
from trtrepo.serving.process import process_identity


LOOPBACK = "127.0.0.1"
#: Triton's API names (--http-restricted-api / --grpc-restricted-protocol): what runs code (a model load), maps host
#: memory (shared-memory registration) or names files the server writes (trace, logging). Health, metadata, model
#: config, statistics and inference stay open: they only describe or use what is served, and every standard client
#: (perf_analyzer, Model Analyzer, NVIDIA's example clients) reads the model config first.
RESTRICTED_APIS = ("model-repository", "shared-memory", "trace", "logging")
#: The header that carries the key. Triton's gRPC server expects it behind this prefix.
KEY_HEADER = "trtrepo-key"
GRPC_KEY_PREFIX = "triton-grpc-protocol-"
KEY_ENV = "TRTREPO_API_KEY"
KEY_DIR_ENV = "TRTREPO_KEY_DIR"
URL_SCHEMES = ("http://", "grpc://")


@dataclass(frozen=True)
class ServerOptions:
    """Where a server listens and what it guards. ``restricted`` empty: every API open to anyone who reaches it."""

    host: str = LOOPBACK
    restricted: tuple[str, ...] = RESTRICTED_APIS
    api_key: str | None = None

    def __post_init__(self) -> None:
        if self.api_key is not None and (not self.api_key or not self.api_key.isprintable() or " " in self.api_key
                                         or "," in self.api_key or "=" in self.api_key):
            raise UserError("the API key must be printable, without spaces, commas or '=' signs")

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)

    @property
    def connect_host(self) -> str:
        """The address a client on this machine reaches a server with these options at."""
        return LOOPBACK if self.loopback or self.host in ("0.0.0.0", "::", "[::]") else self.host

    def keyed(self) -> "ServerOptions":
        """These options with a key: the one given, else a fresh random one (none needed when nothing is restricted)."""
        if not self.restricted or self.api_key:
            return self
        return replace(self, api_key=secrets.token_urlsafe(24))

    def server_flags(self, http_host: str | None = None) -> list[str]:
        """tritonserver's flags for these options (call on ``keyed()`` options); ``http_host``: where HTTP listens
        instead, behind a front (trtrepo.serving.nginx)."""
        flags = [f"--http-address={http_host or self.host}", f"--grpc-address={self.host}", f"--metrics-address={self.host}"]
        if self.restricted:
            if not self.api_key:
                raise UserError("restricted APIs need a key")
            guarded = f"{','.join(self.restricted)}:{KEY_HEADER}={self.api_key}"
            flags += [f"--http-restricted-api={guarded}", f"--grpc-restricted-protocol={guarded}"]
        return flags

    def exposure(self) -> str:
        """One line saying what a client that reaches this server can do."""
        where = "this machine only" if self.loopback else f"anyone who can reach {self.host}"
        if not self.restricted:
            return f"every API, model loading (code execution) included, is open to {where}"
        return (f"inference, health, metadata, model config and statistics are open to {where}; "
                f"{', '.join(self.restricted)} need the key")


class Endpoint(NamedTuple):
    """A server a command talks to: its gRPC address, where its metrics are, and its process where it is our own."""

    grpc_url: str
    metrics_url: str | None = None  # None: unknown (a server given by --url)
    server_pid: int | None = None  # None: not a server of this command's own


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def key_headers(api_key: str | None, protocol: str) -> dict[str, str]:
    """The request headers that carry ``api_key`` over ``protocol`` (none without a key)."""
    if not api_key:
        return {}
    return {(GRPC_KEY_PREFIX + KEY_HEADER if protocol == "grpc" else KEY_HEADER): api_key}


def split_url(url: str) -> tuple[str, int]:
    """'host:port' (an http:// or grpc:// scheme is accepted and dropped) -> (host, port); else a one-line error."""
    text = url.strip()
    for scheme in URL_SCHEMES:
        if text.lower().startswith(scheme):
            text = text[len(scheme):]
    text = text.rstrip("/")
    host, _, port = text.rpartition(":")
    if not host or "/" in text or not port.isdigit() or not 0 < int(port) < 65536:
        raise UserError(f"--url {url!r} is not HOST:PORT (e.g. localhost:8001)")
    return host, int(port)


def normalize_url(url: str) -> str:
    host, port = split_url(url)
    return f"{host}:{port}"


def use_api_key(api_key: str | None) -> None:
    """Make a key given on the command line this process's TRTREPO_API_KEY, where every client of the command
    (and perf_analyzer) looks for it."""
    if api_key:
        os.environ[KEY_ENV] = api_key


def key_dir() -> Path:
    return Path(os.environ.get(KEY_DIR_ENV) or Path.home() / ".config" / "trtrepo" / "keys")


def write_key_files(ports: Iterable[int], api_key: str) -> list[Path]:
    """One file per port, readable by this user only, so that this machine's trtrepo commands find the key; its
    second line names the process that wrote it (the launcher, whose servers die with it), so a file it left behind
    is known stale."""
    folder = key_dir()
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    written = []
    for port in ports:
        path = folder / f"{port}.key"
        path.unlink(missing_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as file:
            file.write(f"{api_key}\n{process_identity(os.getpid())}\n")
        written.append(path)
    return written


def find_key(url: str, explicit: str | None = None) -> str | None:
    """The key to send to the server at ``url``: the one given, else TRTREPO_API_KEY, else, for a server on this
    machine only (a key is never sent to another host unasked), the key file its launcher wrote for that port, if
    that launcher still runs (a stale key is never sent to whatever listens on the port now)."""
    if explicit:
        return explicit
    if os.environ.get(KEY_ENV):
        return os.environ[KEY_ENV]
    host, port = split_url(url)
    path = key_dir() / f"{port}.key"
    if not is_loopback(host) or not path.is_file():
        return None
    try:
        key, _, owner = path.read_text().partition("\n")
    except OSError:
        return None
    owner = owner.strip()
    if not key.strip() or not owner or process_identity(int(owner.split()[0])) != owner:
        return None
    return key.strip()
