"""nginx in front of tritonservers: the limits the server cannot enforce itself, and one endpoint for replicas.

Limits (every HTTP front trtrepo starts: `trtrepo serve`, and the balancer of `--replicas`):
- A form-encoded body (``Content-Type: application/x-www-form-urlencoded``, what ``curl -d`` and Python's urllib
  send by default) over FORM_BODY_LIMIT bytes is refused with 413 and a line naming the limit: tritonserver 2.51
  crashes (SIGSEGV) on such a body over 4,184,752 bytes (measured: 4,184,752 answered, 4,184,813 crash), whatever its
  transfer encoding; the same body as JSON or binary is fine. nginx reads the whole body first (chunked included), so
  the limit holds for every encoding, and the server never sees a body that is still arriving.
- Any other body over BODY_LIMIT, headers over HEADER_BUFFER, and senders slower than SLOW_SENDER_S between two
  reads get nginx's 413, 494/400 and 408, so a client that lies about its length or trickles bytes holds nothing.
- While no tritonserver answers (a restart), requests get 503, Retry-After and Triton's error JSON, not nginx's HTML.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

from trtrepo.errors import UserError
from trtrepo.serving.access import LOOPBACK
from trtrepo.serving.process import end_with_parent


#: Bytes of a form-encoded body let through (below the 4,184,752 this tritonserver survives, headers aside).
FORM_BODY_LIMIT = 4_000_000
#: Bytes of any other body: a batch of 256 CTPN images in FP32 binary is about 1.5 GB; JSON ten times its tensors.
BODY_LIMIT = "2g"
HEADER_BUFFER = "4 16k"
SLOW_SENDER_S = 30
#: Seconds a client is told to wait (Retry-After) when no tritonserver is there to answer.
RETRY_AFTER_S = 2
#: nginx's temporary folders, kept in its private folder rather than its compiled-in /var/lib/nginx.
TEMP_PATHS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
FORM_LOCATION = "/.trtrepo-form-encoded"


def find_nginx() -> Path:
    """nginx on PATH, else the one `make install` unpacked beside this Python."""
    found = shutil.which("nginx") or next((str(p) for p in (Path(sys.prefix) / "bin" / "nginx", Path("/usr/sbin/nginx"))
                                          if p.is_file()), None)
    if not found:
        raise UserError("the HTTP front and the replicas' balancer are nginx, which is not installed: run `make "
                        "install` (it unpacks Debian's nginx into the environment) or apt-get install nginx")
    return Path(found)


def upstream(name: str, ports: list[tuple[int, bool]]) -> list[str]:
    """An upstream group over loopback ports (those marked False are down), fewest connections first."""
    lines = [f"  upstream {name} {{", "    least_conn;"]
    for port, ready in ports:
        lines.append(f"    server {LOOPBACK}:{port} max_fails=1 fail_timeout=2s{'' if ready else ' down'};")
    return lines + ["    keepalive 32;", "  }"]


def http_server(listen: str, upstream_name: str) -> list[str]:
    """The HTTP server block: proxied to ``upstream_name``, with the guard's limits (module docstring)."""
    refused = ('{"error":"form-encoded request bodies over %d bytes are refused (this tritonserver crashes on them): '
               'send the body as application/json or binary"}' % FORM_BODY_LIMIT)
    too_large = '{"error":"request bodies over %s are refused"}' % BODY_LIMIT
    # nginx's own 502 and 504 (no tritonserver to pass the request to: it is being restarted) as Triton's error JSON
    # that tritonclient parses, 503 with Retry-After, instead of nginx's HTML page. Triton's own errors pass as they are.
    down = '{"error":"no tritonserver answers here now (it is being restarted?): retry in %d s"}' % RETRY_AFTER_S
    proxy = ["      proxy_http_version 1.1;", '      proxy_set_header Connection "";',
             "      proxy_next_upstream error timeout http_502 http_503 non_idempotent;", "      proxy_read_timeout 300s;"]
    return [
        "  server {", f"    listen {listen};",
        f"    client_max_body_size {BODY_LIMIT};", f"    client_body_timeout {SLOW_SENDER_S}s;",
        f"    client_header_timeout {SLOW_SENDER_S}s;", f"    large_client_header_buffers {HEADER_BUFFER};",
        "    location / {",
        f"      if ($form_encoded) {{ rewrite ^ {FORM_LOCATION} last; }}",
        "      error_page 413 = @too_large;", "      error_page 502 504 = @unavailable;",
        f"      proxy_pass http://{upstream_name};", *proxy, "    }",
        f"    location = {FORM_LOCATION} {{", "      internal;", f"      client_max_body_size {FORM_BODY_LIMIT};",
        "      error_page 413 = @form_too_large;", "      error_page 502 504 = @unavailable;",
        f"      proxy_pass http://{upstream_name}$request_uri;", *proxy, "    }",
        f"    location @form_too_large {{ default_type application/json; return 413 '{refused}'; }}",
        f"    location @too_large {{ default_type application/json; return 413 '{too_large}'; }}",
        f"    location @unavailable {{ default_type application/json; add_header Retry-After {RETRY_AFTER_S} always; "
        f"return 503 '{down}'; }}",
        "  }",
    ]


def nginx_config(folder: Path, servers: list[str], upstreams: list[str]) -> str:
    """A whole configuration: ``upstreams`` and ``servers`` (lines of blocks) in an http block whose files all stay
    in ``folder``."""
    temp = " ".join(f"{kind}_temp_path {folder / kind};" for kind in TEMP_PATHS)
    # Started by root, nginx's workers would become nobody, who cannot enter the private folder: they keep this
    # process's user instead (as they do anyway when it is not root).
    user = [f"user {pwd.getpwuid(os.geteuid()).pw_name};"] if os.geteuid() == 0 else []
    return "\n".join([
        *user, "worker_processes 1;", f"pid {folder / 'nginx.pid'};", f"error_log {folder / 'error.log'} warn;",
        "events { worker_connections 1024; }",
        "http {", "  access_log off;", f"  {temp}",
        '  map $http_content_type $form_encoded { default 0; "~*^application/x-www-form-urlencoded" 1; }',
        *upstreams, *servers, "}", "",
    ])


class Nginx:
    """An nginx process on a private folder: started by start(), given a new configuration by reload() (checked:
    a configuration nginx refuses is a UserError with its reason), stopped by stop()."""

    def __init__(self, config: Callable[[Path], str]) -> None:
        self.binary = find_nginx()
        self.config = config
        self.folder = Path(tempfile.mkdtemp(prefix="trtrepo-nginx-"))
        self.process: subprocess.Popen | None = None

    def command(self, *arguments: str) -> list[str]:
        return [str(self.binary), "-p", str(self.folder), "-c", str(self.folder / "nginx.conf"),
                "-e", str(self.folder / "error.log"), *arguments]

    def _write(self) -> None:
        (self.folder / "nginx.conf").write_text(self.config(self.folder))

    def start(self, ready: Callable[[], bool], timeout_s: float = 10) -> None:
        for kind in TEMP_PATHS:
            (self.folder / kind).mkdir(exist_ok=True)
        self._write()
        # Its own session, as the servers: Ctrl-C reaches the launcher, which stops nginx and then the servers; and it
        # ends with the launcher, however that ends (trtrepo.serving.process.end_with_parent).
        with (self.folder / "stderr.log").open("wb") as stderr:
            self.process = subprocess.Popen(self.command("-g", "daemon off;"), stdout=subprocess.DEVNULL, stderr=stderr,
                                            start_new_session=True, preexec_fn=end_with_parent)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise UserError(f"nginx exited: {self.reason()}")
            if ready():
                return
            time.sleep(0.1)
        raise UserError(f"nginx did not answer within {timeout_s:.0f} s: {self.reason()}")

    def reason(self) -> str:
        """nginx's last complaint (its stderr, else its error log), in one line."""
        for name in ("stderr.log", "error.log"):
            path = self.folder / name
            lines = path.read_text(errors="replace").strip().splitlines() if path.is_file() else []
            if lines:
                return " ".join(lines[-1].split())[:300]
        return "no message"

    def reload(self) -> None:
        self._write()
        result = subprocess.run(self.command("-s", "reload"), capture_output=True, text=True, timeout=30)
        if result.returncode != 0:
            raise UserError(f"nginx refused its new configuration: {' '.join(result.stderr.split())[:300]}")

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        """SIGQUIT, nginx's graceful shutdown: requests under way are answered, idle connections closed."""
        if self.running():
            self.process.send_signal(signal.SIGQUIT)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.folder, ignore_errors=True)
