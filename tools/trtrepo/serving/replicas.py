"""Several tritonservers on one repository behind nginx: one HTTP and one gRPC endpoint for all of them.

nginx (trtrepo.serving.nginx: Debian's, unpacked by `make install`, with the guard's limits) balances by fewest open connections and
passes a request that meets a dead replica on to another (proxy_next_upstream / grpc_next_upstream, inference
included: a request that never got an answer is safe to send again). Open-source nginx checks health only
passively, so a watcher here asks every replica's /v2/health/ready each second and takes a replica that is not
ready out of the upstreams (nginx reloads its configuration without dropping connections) until it is again.
Each replica is supervised (TritonServer.supervise): one that dies is started again on its ports.
"""

from __future__ import annotations

import threading
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from typing import Callable

from trtrepo.errors import UserError
from trtrepo.serving.access import LOOPBACK, ServerOptions, write_key_files
from trtrepo.serving.nginx import Nginx, http_server, nginx_config, upstream
from trtrepo.serving.server import STOP_TIMEOUT_S, Ports, TritonServer, is_ready


HEALTH_INTERVAL_S = 1.0


def balancer_config(folder: Path, ports: Ports, host: str, replicas: list[tuple[Ports, bool]]) -> str:
    """nginx's configuration: an HTTP and a gRPC upstream over the replicas (those not ready marked down), and one
    server for each on ``ports``, the HTTP one with the guard's limits (trtrepo.serving.nginx)."""
    return nginx_config(folder, [
        *http_server(f"{host}:{ports.http}", "triton_http"),
        "  server {", f"    listen {host}:{ports.grpc} http2;", "    location / {",
        "      grpc_pass grpc://triton_grpc;", "      grpc_next_upstream error timeout http_502 http_503 non_idempotent;",
        "      grpc_read_timeout 300s;", "    }", "  }",
    ], [*upstream("triton_http", [(r.http, ready) for r, ready in replicas]),
        *upstream("triton_grpc", [(r.grpc, ready) for r, ready in replicas])])


class ReplicaSet:
    """``count`` tritonservers on ``repository`` (free loopback ports, one key for all) behind nginx on ``ports``.

    Used as a context manager; ``servers`` are the replicas, ``http_url``/``grpc_url`` the balanced endpoints."""

    def __init__(self, repository: Path | str, count: int, ports: Ports, options: ServerOptions = ServerOptions(),
                 model_control: str = "explicit", on_event: Callable[[str], None] = lambda _: None) -> None:
        if count < 1:
            raise UserError(f"--replicas must be at least 1, got {count}")
        self.options = options.keyed()
        self.ports = ports
        behind = replace(self.options, host=LOOPBACK)  # only nginx listens where the user asked
        self.servers = [TritonServer(repository, Ports.free(), model_control=model_control, options=behind,
                                     on_event=on_event) for _ in range(count)]
        self.on_event = on_event
        self.ready = [True] * count
        self.front = Nginx(lambda folder: balancer_config(folder, self.ports, self.host, self._replicas()))
        self._stack = ExitStack()
        self._stop = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="replica-health", daemon=True)
        self._supervisors = [threading.Thread(target=self._supervise, args=(server,), daemon=True,
                                              name=f"replica-{index + 1}-supervisor")
                             for index, server in enumerate(self.servers)]
        self._key_files: list[Path] = []

    @property
    def nginx(self) -> Path:
        return self.front.binary

    @property
    def host(self) -> str:
        return self.options.host

    @property
    def http_url(self) -> str:
        return f"{self.options.connect_host}:{self.ports.http}"

    @property
    def grpc_url(self) -> str:
        return f"{self.options.connect_host}:{self.ports.grpc}"

    def running(self) -> bool:
        """Whether nginx and at least one replica are up (or being restarted by its supervisor)."""
        return self.front.running() and any(thread.is_alive() for thread in self._supervisors)

    def _replicas(self) -> list[tuple[Ports, bool]]:
        return [(server.ports, ready) for server, ready in zip(self.servers, self.ready)]

    def __enter__(self) -> "ReplicaSet":
        try:
            for server in self.servers:
                self._stack.enter_context(server)
            self.front.start(lambda: is_ready(self.ports.http, self.options.connect_host))
            if self.options.api_key:
                self._key_files = write_key_files({self.ports.http, self.ports.grpc}, self.options.api_key)
            self._watcher.start()
            for thread in self._supervisors:
                thread.start()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        for thread in (self._watcher, *self._supervisors):
            if thread.is_alive():
                thread.join(timeout=STOP_TIMEOUT_S + 5)
        self.front.stop()
        for path in self._key_files:
            path.unlink(missing_ok=True)
        self._stack.close()

    def _supervise(self, server: TritonServer) -> None:
        """A replica's supervisor thread: it restarts the server, so it stops it too (a server restarted here dies
        with this thread, trtrepo.serving.process)."""
        try:
            server.supervise(self._stop)
        except UserError as exc:
            self.on_event(f"error: replica {self.servers.index(server) + 1}: {exc}")
        finally:
            server.stop()

    def _watch(self) -> None:
        """Every second: each replica's readiness; a change rewrites the upstreams and reloads nginx."""
        while not self._stop.wait(HEALTH_INTERVAL_S):
            ready = [is_ready(server.ports.http, server.connect_host) for server in self.servers]
            if ready == self.ready:
                continue
            for index, (was, now) in enumerate(zip(self.ready, ready)):
                if was != now:
                    self.on_event(f"replica {index + 1} ({self.servers[index].http_url}) "
                                  f"{'is ready again' if now else 'is not ready: taken out of the balancer'}")
            self.ready = ready
            try:
                self.front.reload()
            except UserError as exc:
                self.on_event(f"error: {exc}")
