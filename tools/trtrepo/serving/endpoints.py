"""The servers a measuring command talks to: the ones given by address, or servers of its own on free loopback
ports in explicit model-control mode, started for the command and stopped after it."""

from __future__ import annotations

import os
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Callable, Iterator

from trtrepo.environment import variables_set
from trtrepo.errors import UserError
from trtrepo.serving.access import KEY_ENV, Endpoint, ServerOptions, normalize_url, split_url
from trtrepo.serving.metrics import TRITON_METRIC, scrape_metrics
from trtrepo.serving.mps import shared_gpu
from trtrepo.serving.server import Ports, TritonServer, port_open


def own_server(repository: Path, on_event: Callable[[str], None] = print) -> TritonServer:
    """A server for a command's own use: free loopback ports, explicit model control, restricted APIs whose key
    is TRTREPO_API_KEY's or a fresh one (found by the command's clients through the key file)."""
    return TritonServer(repository, Ports.free(), model_control="explicit",
                        options=ServerOptions(api_key=os.environ.get(KEY_ENV) or None), on_event=on_event)


def metrics_url_of(grpc_url: str, given: str | None = None) -> str | None:
    """Where the metrics of the server at ``grpc_url`` are: ``given`` (HOST:PORT or a URL), else Triton's own
    layout (metrics on the port after gRPC's, 8001 and 8002) where Triton's metrics answer there; None where unknown."""
    if given:
        host, port = split_url(given.rstrip("/").removesuffix("/metrics"))
        return f"http://{host}:{port}/metrics"
    host, port = split_url(grpc_url)
    guess = f"http://{host}:{port + 1}/metrics"
    text = scrape_metrics(guess) if port < 65535 else None
    return guess if text and TRITON_METRIC in text else None


@contextmanager
def grpc_endpoints(urls: list[str] | None, repository: Path, api_key: str | None = None, count: int = 1,
                   mps: bool = False, on_event: Callable[[str], None] = print,
                   metrics_urls: list[str] | None = None) -> Iterator[list[Endpoint]]:
    """The servers given (gRPC addresses, with their ``metrics_urls`` where given, else as metrics_url_of finds
    them), else ``count`` servers of our own on ``repository``. ``api_key`` is TRTREPO_API_KEY while they are in
    use, where every client and perf_analyzer run of the command looks for it (trtrepo.serving.access.find_key).
    ``mps``: our servers run under CUDA's MPS (one daemon for all)."""
    if urls and mps:
        raise UserError("--mps runs the servers trtrepo starts; with --url, start MPS where that server runs "
                        "(trtrepo serve --mps)")
    if metrics_urls and len(metrics_urls) != len(urls or []):
        raise UserError(f"--metrics-url gives {len(metrics_urls)} addresses for {len(urls or [])} --url: one per "
                        "server given, in the same order")
    with ExitStack() as stack:
        if api_key:
            stack.enter_context(variables_set({KEY_ENV: api_key}))
        if urls:
            endpoints = [Endpoint(normalize_url(url), metrics_url_of(url, given))
                         for url, given in zip(urls, metrics_urls or [None] * len(urls))]
            for endpoint in endpoints:
                if endpoint.metrics_url is None and port_open(*split_url(endpoint.grpc_url)):  # else: the error to come
                    on_event(f"{endpoint.grpc_url}: its metrics are not on the next port; pass --metrics-url for "
                             "GPU utilisation and the pipelines' in-server breakdown")
            yield endpoints
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
