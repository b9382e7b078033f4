"""Replicas behind nginx: one endpoint over several real tritonservers; a replica killed under load loses no
request (nginx passes on what met the dead one, the client retries what no server answered)."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from conftest import ROOT, interruptible, resnet_client
from trtrepo.imagesets import shipped_photos
from trtrepo.serving.client import InferenceClient
from trtrepo.serving.nginx import find_nginx
from trtrepo.serving.replicas import ReplicaSet, balancer_config
from trtrepo.serving.server import Ports

MODEL = "efficientnet_lite0_onnxruntime_fp32"


def nginx_missing() -> str | None:
    try:
        find_nginx()
    except Exception as exc:
        return str(exc)
    return None


def test_nginx_config_marks_replicas_that_are_not_ready_down(tmp_path):
    config = balancer_config(tmp_path, Ports(8000, 8001, 8002), "127.0.0.1",
                          [(Ports(9000, 9001, 9002), True), (Ports(9100, 9101, 9102), False)])
    assert "server 127.0.0.1:9000 max_fails=1 fail_timeout=2s;" in config
    assert "server 127.0.0.1:9100 max_fails=1 fail_timeout=2s down;" in config
    assert "server 127.0.0.1:9101 max_fails=1 fail_timeout=2s down;" in config  # the gRPC upstream too
    assert "listen 127.0.0.1:8001 http2;" in config and "non_idempotent" in config
    assert str(tmp_path) in config and "/var/" not in config  # nginx writes nothing outside its folder


@pytest.fixture
def one_model_repo(small_repo, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(small_repo / MODEL, repo / MODEL)
    return repo


@pytest.mark.integration
@pytest.mark.skipif(nginx_missing() is not None, reason=f"{nginx_missing()}")
def test_a_replica_killed_under_load_loses_no_request(one_model_repo):
    batch = {"input": get_batch()}
    sent, failed, errors, retried, events = [0], [0], [], [0], []
    with ReplicaSet(one_model_repo, 2, Ports.free(), on_event=events.append) as balanced:
        reference = InferenceClient(MODEL, url=balanced.http_url).infer(batch)["logits"]
        stop = threading.Event()

        def loop() -> None:
            client = InferenceClient(MODEL, url=balanced.http_url, retries=4)  # HTTP clients stay in their thread
            while not stop.is_set():
                sent[0] += 1
                try:
                    assert np.allclose(client.infer(batch)["logits"], reference, atol=1e-4)
                except Exception as exc:  # counted, and the loop goes on
                    failed[0] += 1
                    errors.append(str(exc))
                retried[0] = client.retried

        worker = threading.Thread(target=loop)
        worker.start()
        time.sleep(3)
        before_kill = sent[0]
        killed = balanced.servers[0].process
        killed.send_signal(signal.SIGKILL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any("replica 1" in e and "ready again" in e for e in events):
            time.sleep(0.5)
        back = sent[0]
        time.sleep(2)
        stop.set()
        worker.join(timeout=60)
        restarted = balanced.servers[0].process is not killed and balanced.servers[0].process.poll() is None
        grpc = InferenceClient(MODEL, url=balanced.grpc_url, protocol="grpc").infer(batch)["logits"]
    print(f"\nreplica kill: sent {sent[0]}, retried {retried[0]}, failed {failed[0]} ({before_kill} before the kill)")
    assert failed[0] == 0, errors[:3]
    assert before_kill > 3 and sent[0] > before_kill + 3  # requests went on after the kill
    assert any("replica 1" in e and "taken out of the balancer" in e for e in events), events
    assert restarted and any("killed by SIGKILL" in e and "restarting it" in e for e in events), events
    assert sent[0] > back  # and the balancer sends to it again
    assert np.allclose(grpc, reference, atol=1e-4)  # gRPC goes through nginx as well


def get_batch() -> np.ndarray:
    from trtrepo.models import get_model

    coffee = next(p for p in shipped_photos() if p.name == "coffee.png")
    return np.stack([get_model("efficientnet_lite0").preprocess(coffee)])


@pytest.mark.integration
@pytest.mark.skipif(nginx_missing() is not None, reason=f"{nginx_missing()}")
def test_serve_replicas_answers_through_one_endpoint_and_stops_on_ctrl_c(one_model_repo):
    ports = Ports.free()
    process = subprocess.Popen([sys.executable, "-m", "trtrepo.cli", "serve", "--model-repository", str(one_model_repo),
                                "--replicas", "2", "--http-port", str(ports.http), "--grpc-port", str(ports.grpc),
                                "--metrics-port", str(ports.metrics)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                               preexec_fn=interruptible)
    try:
        ready = process.stdout.readline()
        if not ready:  # it stopped before it was ready: its error line and exit status are what a failure report needs
            process.wait(timeout=60)
            ready = f"exit status {process.returncode}: {process.stderr.read()}"
        assert ready.startswith(f"ready: http 127.0.0.1:{ports.http}  grpc 127.0.0.1:{ports.grpc} (nginx over 2"), ready
        coffee = next(p for p in shipped_photos() if p.name == "coffee.png")
        answer = resnet_client("--url", f"127.0.0.1:{ports.http}", "--model", MODEL, str(coffee))
        assert answer.returncode == 0 and "espresso" in answer.stdout, answer.stderr
    finally:
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    assert process.returncode in (130, -signal.SIGINT), err
    assert err.strip().splitlines()[-1] == "error: interrupted"


@pytest.mark.skipif(nginx_missing() is not None, reason=f"{nginx_missing()}")
def test_with_no_server_behind_it_the_front_answers_503_json_and_retry_after_that_tritonclient_reads():
    """The front while its tritonserver is being restarted (here: none listens behind it): tritonclient gets
    Triton's error JSON with a 503 it retries (client.unanswered), not an HTML page it cannot parse."""
    import urllib.error
    import urllib.request

    from tritonclient.utils import InferenceServerException

    from trtrepo.serving.client import triton_client, unanswered
    from trtrepo.serving.nginx import RETRY_AFTER_S, Nginx, http_server, nginx_config, upstream
    from trtrepo.serving.server import free_port, port_open

    front, behind = free_port(), free_port()
    nginx = Nginx(lambda folder: nginx_config(folder, http_server(f"127.0.0.1:{front}", "triton"),
                                              upstream("triton", [(behind, True)])))
    nginx.start(lambda: port_open("127.0.0.1", front))
    try:
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"http://127.0.0.1:{front}/v2/models/{MODEL}/infer", data=b"{}", timeout=10)
        assert refused.value.code == 503 and refused.value.headers["Retry-After"] == str(RETRY_AFTER_S)
        assert "retry in" in json.loads(refused.value.read())["error"]
        with pytest.raises(InferenceServerException) as raised:
            triton_client(f"127.0.0.1:{front}", "http").get_model_metadata(MODEL)
        assert str(raised.value.status()) == "503" and unanswered(raised.value) and "being restarted" in str(raised.value)
    finally:
        nginx.stop()
