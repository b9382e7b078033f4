"""A default `trtrepo serve` survives what clients send it and comes back from what kills it.

Each hostile request goes to a real default server (nginx's guard in front of tritonserver, trtrepo.serving.nginx); after
each, a normal request is answered within 30 s by the same tritonserver process: the guard stopped what would have
crashed it. Then the faults: tritonserver killed, a stub stopped and resumed, the launcher killed, under a client
loop whose failed requests are counted.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import NULL_MODEL, Served, trtrepo_process
from trtrepo.errors import UserError
from trtrepo.serving import server as server_module
from trtrepo.serving.access import find_key, key_dir
from trtrepo.serving.client import InferenceClient, unanswered
from trtrepo.serving.nginx import FORM_BODY_LIMIT
from trtrepo.serving.process import process_state
from trtrepo.serving.server import Ports, TritonServer, is_ready, port_free
from trtrepo.serving.stubs import stubs_of

pytestmark = pytest.mark.integration
VARIANT = NULL_MODEL
FORM = "application/x-www-form-urlencoded"  # what curl -d and urllib send by default
RECOVERY_S = 30


@pytest.fixture(scope="module")
def repo(null_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("survival") / "model_repository"
    shutil.copytree(null_repo / VARIANT, repo / VARIANT)
    return repo


@pytest.fixture(scope="module")
def served(repo: Path) -> Served:
    running = Served(repo)
    yield running
    running.stop()


def kserve_json(images: int, size: int = 0) -> bytes:
    """An ordinary KServe v2 JSON request for ``images`` 224x224 images, padded with spaces to ``size`` bytes."""
    data = np.random.default_rng(images).random((images, 3, 224, 224), dtype=np.float32).round(6)
    body = json.dumps({"inputs": [{"name": "input", "shape": list(data.shape), "datatype": "FP32",
                                   "data": data.ravel().tolist()}]}).encode()
    return body + b" " * max(0, size - len(body))


def post(port: int, body: bytes, content_type: str, chunked: bool = False) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        if chunked:
            connection.putrequest("POST", f"/v2/models/{VARIANT}/infer")
            connection.putheader("Content-Type", content_type)
            connection.putheader("Transfer-Encoding", "chunked")
            connection.endheaders()
            for start in range(0, len(body), 1 << 20):
                piece = body[start:start + (1 << 20)]
                connection.send(b"%x\r\n%s\r\n" % (len(piece), piece))
            connection.send(b"0\r\n\r\n")
        else:
            connection.request("POST", f"/v2/models/{VARIANT}/infer", body, {"Content-Type": content_type})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def raw_request(port: int, head: bytes, body: bytes = b"", close_after_s: float = 0.0) -> None:
    """Send bytes over a socket of our own (what http.client will not send), then hang up."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head + body)
        time.sleep(close_after_s)


def answered_within(port: int, limit_s: float = RECOVERY_S) -> float:
    """Seconds until a normal (binary) request is answered with the right shape; fails past ``limit_s``."""
    started = time.monotonic()
    batch = {"input": np.zeros((1, 3, 224, 224), np.float32)}
    while True:
        try:
            assert InferenceClient(VARIANT, url=f"127.0.0.1:{port}").infer(batch)["logits"].shape == (1, 1000)
            return time.monotonic() - started
        except UserError:
            assert time.monotonic() - started < limit_s, f"not answered within {limit_s} s"
            time.sleep(0.2)


def lying_length(port: int) -> None:
    raw_request(port, b"POST /v2/models/%s/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 10000000\r\n\r\n" % VARIANT.encode(), b"{" * 1000)


def huge_header(port: int) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("GET", "/v2/health/ready", headers={"X-Filler": "a" * 65536})
    return connection.getresponse().status


def slow_sender(port: int) -> float:
    """A client trickling a body byte by byte for 3 s: a normal request meanwhile is answered at once."""
    trickle = threading.Thread(target=lambda: _trickle(port))
    trickle.start()
    try:
        time.sleep(0.5)
        return answered_within(port, 5)
    finally:
        trickle.join()


def _trickle(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"POST /v2/models/%s/infer HTTP/1.1\r\nHost: x\r\nContent-Type: %s\r\nContent-Length: 100\r\n\r\n"
                     % (VARIANT.encode(), FORM.encode()))
        for _ in range(6):
            sock.sendall(b" ")
            time.sleep(0.5)


TWO_IMAGES = kserve_json(2)  # 6.1 MB: the issue's `curl -d @request.json`


@pytest.mark.parametrize("case", ["two images form-encoded", "form-encoded over the limit",
                                  "form-encoded under the limit", "form-encoded chunked", "two images as JSON",
                                  "a length that lies", "a huge header", "a slow sender"])
def test_hostile_requests_are_refused_or_answered_and_the_server_stays_up(served, case):
    before = served.server_pid
    port = served.ports.http
    if case == "two images form-encoded":
        status, body = post(port, TWO_IMAGES, FORM)
        assert status == 413 and b"form-encoded request bodies over 4000000 bytes are refused" in body, body[:200]
    elif case == "form-encoded over the limit":
        assert post(port, kserve_json(1, FORM_BODY_LIMIT + 1), FORM)[0] == 413
    elif case == "form-encoded under the limit":
        status, body = post(port, kserve_json(1, FORM_BODY_LIMIT - 64), FORM)
        assert status == 200 and json.loads(body)["outputs"][0]["shape"] == [1, 1000]
    elif case == "form-encoded chunked":
        assert post(port, TWO_IMAGES, FORM, chunked=True)[0] == 413
    elif case == "two images as JSON":
        status, body = post(port, TWO_IMAGES, "application/json")
        assert status == 200 and json.loads(body)["outputs"][0]["shape"] == [2, 1000]
    elif case == "a length that lies":
        lying_length(port)
    elif case == "a huge header":
        assert huge_header(port) in (400, 431, 494)
    else:
        assert slow_sender(port) < 5
    assert answered_within(port) < RECOVERY_S
    assert served.server_pid == before  # nothing reached tritonserver that crashed it


def test_a_second_launcher_on_the_same_ports_says_so_and_exits(served, repo):
    ports = served.ports
    result = trtrepo_process("serve", "--model-repository", str(repo), "--http-port", str(ports.http),
                     "--grpc-port", str(ports.grpc), "--metrics-port", str(ports.metrics))
    assert result.returncode == 2 and result.stderr.splitlines()[-1].startswith("error: port "), result.stderr
    assert f"port {ports.http}, {ports.grpc}, {ports.metrics} on 127.0.0.1 is in use" in result.stderr
    assert answered_within(ports.http) < 5  # the first one is untouched


class ClientLoop:
    """Requests back to back from a thread; each outcome stamped with when it was sent."""

    def __init__(self, port: int) -> None:
        self.client = InferenceClient(VARIANT, url=f"127.0.0.1:{port}")
        self.outcomes: list[tuple[float, bool]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        client = InferenceClient(VARIANT, url=self.client.url)  # an HTTP client stays in its thread
        batch = {"input": np.zeros((1, 3, 224, 224), np.float32)}
        while not self._stop.is_set():
            sent = time.monotonic()
            try:
                client.infer(batch)
                self.outcomes.append((sent, True))
            except UserError:
                self.outcomes.append((sent, False))
                time.sleep(0.05)

    def __enter__(self) -> "ClientLoop":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def recovered_after(self, fault_at: float, limit_s: float = RECOVERY_S) -> float:
        """Seconds from the fault to the first answered request sent after it; fails past ``limit_s``."""
        while time.monotonic() - fault_at < limit_s:
            answered = [sent for sent, ok in self.outcomes if ok and sent > fault_at]
            if answered:
                return answered[0] - fault_at
            time.sleep(0.2)
        raise AssertionError(f"no request answered within {limit_s} s of the fault")

    def failed(self) -> int:
        return sum(1 for _, ok in self.outcomes if not ok)


def test_a_stopped_then_resumed_stub_takes_nothing_down(served):
    """Triton alone fails a stopped stub's requests and aborts when it resumes; the watchdog kills and reloads it."""
    server_pid = served.server_pid
    with ClientLoop(served.ports.http) as loop:
        time.sleep(2)
        (stub,) = stubs_of(server_pid)
        fault_at = time.monotonic()
        served_signal(stub.pid, signal.SIGSTOP)
        time.sleep(3)
        assert process_state(stub.pid) in ("", "Z")  # the watchdog killed it
        served_signal(stub.pid, signal.SIGCONT)
        recovery = loop.recovered_after(fault_at)
        time.sleep(1)
    assert served.server_pid == server_pid  # no abort, no restart
    print(f"\nstub SIGSTOP/SIGCONT: sent {len(loop.outcomes)}, failed {loop.failed()}, "
          f"answered again {recovery:.1f} s after the stop")
    assert f"its Python stub {stub.pid} is stopped; killing it" in " ".join(served.stderr_so_far().split())


def test_tritonserver_killed_under_load_comes_back_on_its_ports(served):
    with ClientLoop(served.ports.http) as loop:
        time.sleep(2)
        killed = served.server_pid
        fault_at = time.monotonic()
        served_signal(killed, signal.SIGKILL)
        recovery = loop.recovered_after(fault_at)
        time.sleep(1)
    assert served.server_pid != killed and is_ready(served.ports.http)
    print(f"\ntritonserver SIGKILL: sent {len(loop.outcomes)}, failed {loop.failed()}, "
          f"answered again {recovery:.1f} s after the kill")
    err = " ".join(served.stderr_so_far().split())
    assert "tritonserver was killed by SIGKILL" in err and "restarting it in 1 s" in err and "ready again" in err


def test_a_killed_launcher_leaves_no_server_and_no_key_anyone_is_sent(served):
    """The module's server ends here: its launcher killed with SIGKILL, nothing of it may run on."""
    children = [served.server_pid, served.child("nginx")]
    assert find_key(f"127.0.0.1:{served.ports.grpc}")  # its key, while it runs
    served.process.kill()
    served.process.wait()
    deadline = time.monotonic() + 10
    while any(process_state(pid) not in ("", "Z") for pid in children) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert [process_state(pid) for pid in children] in (["", ""], ["Z", ""], ["", "Z"], ["Z", "Z"])
    assert find_key(f"127.0.0.1:{served.ports.grpc}") is None and (key_dir() / f"{served.ports.grpc}.key").exists()
    ports = (served.ports.http, served.ports.grpc, served.ports.metrics)
    deadline = time.monotonic() + 10  # nginx's workers and tritonserver's stubs, which may hold its sockets, go too
    while not all(port_free("127.0.0.1", port) for port in ports) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert all(port_free("127.0.0.1", port) for port in ports)


def test_restarts_stop_after_the_limit_with_the_cause(repo, monkeypatch):
    monkeypatch.setattr(server_module, "RESTART_LIMIT", 1)
    monkeypatch.setattr(server_module, "RESTART_WAIT_S", 0.1)
    events: list[str] = []
    with TritonServer(repo, Ports.free(), model_control="explicit", on_event=events.append) as running:
        running.process.kill()

        def kill_the_restarted() -> None:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and not any("ready again" in event for event in events):
                time.sleep(0.2)
            running.process.kill()

        threading.Thread(target=kill_the_restarted, daemon=True).start()
        with pytest.raises(UserError, match="tritonserver was killed by SIGKILL: .*; not restarted again after 1 "
                                            "restarts within 300 s"):
            running.supervise(threading.Event())
    assert sum("restarting it" in event for event in events) == 1 and any("ready again" in e for e in events)


def served_signal(pid: int, signum: int) -> None:
    """A signal to a process that may be gone already (the watchdog may have killed it)."""
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def test_only_unanswered_requests_are_retried_judged_by_status_not_words():
    from tritonclient.utils import InferenceServerException

    assert unanswered(ConnectionRefusedError()) and unanswered(ConnectionResetError()) and unanswered(TimeoutError())
    assert unanswered(InferenceServerException("no live upstreams", status="502"))
    assert unanswered(InferenceServerException("failed to connect", status="StatusCode.UNAVAILABLE"))
    # A model's own error is answered, whatever words it holds.
    assert not unanswered(InferenceServerException("input 'unavailable' connection refused", status="400"))
    assert not unanswered(InferenceServerException("Stub process is not healthy", status="StatusCode.INTERNAL"))
    assert not unanswered(ValueError("service unavailable"))
