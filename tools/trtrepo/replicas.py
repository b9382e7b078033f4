"""Several tritonservers on one repository behind nginx: one HTTP and one gRPC endpoint for all of them.

nginx (Debian's, unpacked into the environment by `make install`) balances by fewest open connections and
passes a request that meets a dead replica on to another (proxy_next_upstream / grpc_next_upstream, inference
included: a request that never got an answer is safe to send again). Open-source nginx checks health only
passively, so a watcher here asks every replica's /v2/health/ready each second and takes a replica that is not
ready out of the upstreams (nginx reloads its configuration without dropping connections) until it is again.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from typing import Callable

from trtrepo.access import LOOPBACK, ServerOptions, write_key_files
from trtrepo.errors import UserError
from trtrepo.server import Ports, TritonServer, is_ready

HEALTH_INTERVAL_S = 1.0
#: nginx's temporary folders, kept in its private folder rather than its compiled-in /var/lib/nginx.
TEMP_PATHS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


def find_nginx() -> Path:
    """nginx on PATH, else the one `make install` unpacked beside this Python."""
    found = shutil.which("nginx") or next((str(p) for p in (Path(sys.prefix) / "bin" / "nginx", Path("/usr/sbin/nginx"))
                                          if p.is_file()), None)
    if not found:
        raise UserError("replicas are balanced by nginx, which is not installed: run `make install` (it unpacks "
                        "Debian's nginx into the environment) or apt-get install nginx")
    return Path(found)


def nginx_config(folder: Path, ports: Ports, host: str, replicas: list[tuple[Ports, bool]]) -> str:
    """nginx's configuration: an HTTP and a gRPC upstream over the replicas (those not ready marked down), and one
    server for each on ``ports``. Everything nginx writes stays in ``folder``."""
    def upstream(name: str, port_of: Callable[[Ports], int]) -> list[str]:
        lines = [f"  upstream {name} {{", "    least_conn;"]
        for replica, ready in replicas:
            lines.append(f"    server {LOOPBACK}:{port_of(replica)} max_fails=1 fail_timeout=2s{'' if ready else ' down'};")
        return lines + ["    keepalive 32;", "  }"]

    temp = " ".join(f"{kind}_temp_path {folder / kind};" for kind in TEMP_PATHS)
    # Started by root, nginx's workers would become nobody, who cannot enter the private folder: they keep this
    # process's user instead (as they do anyway when it is not root).
    user = [f"user {pwd.getpwuid(os.geteuid()).pw_name};"] if os.geteuid() == 0 else []
    return "\n".join([
        *user, "worker_processes 1;", f"pid {folder / 'nginx.pid'};", f"error_log {folder / 'error.log'} warn;",
        "events { worker_connections 1024; }",
        "http {", "  access_log off;", f"  {temp}", "  client_max_body_size 0;",
        *upstream("triton_http", lambda p: p.http), *upstream("triton_grpc", lambda p: p.grpc),
        "  server {", f"    listen {host}:{ports.http};", "    location / {",
        "      proxy_pass http://triton_http;", "      proxy_http_version 1.1;", '      proxy_set_header Connection "";',
        "      proxy_next_upstream error timeout http_502 http_503 non_idempotent;", "      proxy_read_timeout 300s;",
        "    }", "  }",
        "  server {", f"    listen {host}:{ports.grpc} http2;", "    location / {",
        "      grpc_pass grpc://triton_grpc;", "      grpc_next_upstream error timeout http_502 http_503 non_idempotent;",
        "      grpc_read_timeout 300s;", "    }", "  }",
        "}", "",
    ])


class ReplicaSet:
    """``count`` tritonservers on ``repository`` (free loopback ports, one key for all) behind nginx on ``ports``.

    Used as a context manager; ``servers`` are the replicas, ``http_url``/``grpc_url`` the balanced endpoints."""

    def __init__(self, repository: Path | str, count: int, ports: Ports, options: ServerOptions = ServerOptions(),
                 model_control: str = "explicit", on_event: Callable[[str], None] = lambda _: None) -> None:
        if count < 1:
            raise UserError(f"--replicas must be at least 1, got {count}")
        self.nginx = find_nginx()
        self.options = options.keyed()
        self.ports = ports
        behind = replace(self.options, host=LOOPBACK)  # only nginx listens where the user asked
        self.servers = [TritonServer(repository, Ports.free(), model_control=model_control, options=behind,
                                     on_event=on_event) for _ in range(count)]
        self.on_event = on_event
        self.folder = Path(tempfile.mkdtemp(prefix="trtrepo-nginx-"))
        self.ready = [True] * count
        self.process: subprocess.Popen | None = None
        self._stack = ExitStack()
        self._stop = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="replica-health", daemon=True)
        self._key_files: list[Path] = []

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
        """Whether nginx and at least one replica are up."""
        return (self.process is not None and self.process.poll() is None
                and any(server.process is not None and server.process.poll() is None for server in self.servers))

    def __enter__(self) -> "ReplicaSet":
        try:
            for server in self.servers:
                self._stack.enter_context(server)
            for kind in TEMP_PATHS:
                (self.folder / kind).mkdir(exist_ok=True)
            self._write_config()
            # Its own session, as the servers: Ctrl-C reaches this launcher, which stops nginx and then the servers.
            self.process = subprocess.Popen(self._nginx("-g", "daemon off;"), stdout=subprocess.DEVNULL,
                                            stderr=subprocess.PIPE, text=True, start_new_session=True)
            self._wait_listening()
            if self.options.api_key:
                self._key_files = write_key_files({self.ports.http, self.ports.grpc}, self.options.api_key)
            self._watcher.start()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        if self._watcher.is_alive():
            self._watcher.join(timeout=5)
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        for path in self._key_files:
            path.unlink(missing_ok=True)
        self._stack.close()
        shutil.rmtree(self.folder, ignore_errors=True)

    def _nginx(self, *arguments: str) -> list[str]:
        """An nginx command on this set's folder and configuration."""
        return [str(self.nginx), "-p", str(self.folder), "-c", str(self.folder / "nginx.conf"),
                "-e", str(self.folder / "error.log"), *arguments]

    def _write_config(self) -> None:
        replicas = [(server.ports, ready) for server, ready in zip(self.servers, self.ready)]
        (self.folder / "nginx.conf").write_text(nginx_config(self.folder, self.ports, self.host, replicas))

    def _wait_listening(self, timeout_s: float = 10) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise UserError(f"nginx exited: {' '.join((self.process.stderr.read() or '').split())[:300]}")
            if is_ready(self.ports.http, self.options.connect_host):
                return
            time.sleep(0.1)
        raise UserError(f"nginx did not answer on {self.http_url} within {timeout_s:.0f} s")

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
            self._write_config()
            subprocess.run(self._nginx("-s", "reload"), capture_output=True)
