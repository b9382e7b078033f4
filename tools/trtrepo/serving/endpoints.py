"""The servers a measuring command talks to: the ones given by address, or servers of its own on free loopback
ports in explicit model-control mode, started for the command and stopped after it."""

from __future__ import annotations

import os
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Callable, Iterator

from trtrepo.environment import variables_set
from trtrepo.errors import UserError
from trtrepo.serving.access import KEY_ENV, Endpoint, ServerOptions, normalize_url
from trtrepo.serving.mps import shared_gpu
from trtrepo.serving.server import Ports, TritonServer


def own_server(repository: Path, on_event: Callable[[str], None] = print) -> TritonServer:
    """A server for a command's own use: free loopback ports, explicit model control, restricted APIs whose key
    is TRTREPO_API_KEY's or a fresh one (found by the command's clients through the key file)."""
    return TritonServer(repository, Ports.free(), model_control="explicit",
                        options=ServerOptions(api_key=os.environ.get(KEY_ENV) or None), on_event=on_event)


@contextmanager
def grpc_endpoints(urls: list[str] | None, repository: Path, api_key: str | None = None, count: int = 1,
                   mps: bool = False, on_event: Callable[[str], None] = print) -> Iterator[list[Endpoint]]:
    """The servers given (gRPC addresses), else ``count`` servers of our own on ``repository``. ``api_key``
    is TRTREPO_API_KEY while they are in use, where every client and perf_analyzer run of the command looks for it
    (trtrepo.serving.access.find_key). ``mps``: our servers run under CUDA's MPS (one daemon for all)."""
    if urls and mps:
        raise UserError("--mps runs the servers trtrepo starts; with --url, start MPS where that server runs "
                        "(trtrepo serve --mps)")
    with ExitStack() as stack:
        if api_key:
            stack.enter_context(variables_set({KEY_ENV: api_key}))
        if urls:
            yield [Endpoint(normalize_url(url)) for url in urls]
            return
        if mps:
            stack.enter_context(shared_gpu(on_event))
        servers = [own_server(repository, on_event) for _ in range(count)]
        for index, server in enumerate(servers):
            which = f" {index + 1} of {count}" if count > 1 else ""
            on_event(f"starting tritonserver{which} on {server.repository} (log {server.log_file}) ...")
            stack.enter_context(server)
        yield [Endpoint(server.grpc_url, server.metrics_url, server.process.pid) for server in servers]


@contextmanager
def grpc_endpoint(urls: list[str] | None, repository: Path, api_key: str | None = None, mps: bool = False,
                  on_event: Callable[[str], None] = print) -> Iterator[Endpoint]:
    """One server: the one given, or one of our own, as grpc_endpoints starts it."""
    if urls and len(urls) > 1:
        raise UserError(f"--url takes one server here, got {','.join(urls)!r}")
    with grpc_endpoints(urls, repository, api_key, mps=mps, on_event=on_event) as endpoints:
        yield endpoints[0]
