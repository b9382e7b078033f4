"""Safe to put on a network: `trtrepo serve` as a user starts it (a subprocess), attacked, signalled and broken.

Every server here is the real tritonserver on free loopback ports, most with the null model so that it starts fast.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from conftest import NULL_MODEL, ROOT, STEADY_ENOUGH, Served, interruptible, trtrepo
from trtrepo.errors import UserError
from trtrepo.serving.client import InferenceClient
from trtrepo.serving.server import Ports, TritonServer, is_ready
from trtrepo.serving.stubs import stubs_of

pytestmark = pytest.mark.integration
VARIANT = NULL_MODEL


@pytest.fixture(scope="module")
def tiny_repo(null_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    import shutil

    repo = tmp_path_factory.mktemp("tiny") / "model_repository"
    shutil.copytree(null_repo / VARIANT, repo / VARIANT)
    return repo


@pytest.fixture
def key_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TRTREPO_KEY_DIR", str(tmp_path / "keys"))
    monkeypatch.delenv("TRTREPO_API_KEY", raising=False)
    return tmp_path / "keys"


def _listening(port: int) -> list[str]:
    """The local addresses a TCP socket listens on at ``port`` (from /proc/net/tcp and tcp6, as ss reads them)."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.rsplit(":", 1)
            if state == "0A" and int(hex_port, 16) == port:
                found.append(address)
    return found


LOOPBACK_HEX = {"0100007F", "0000000000000000FFFF00000100007F"}  # 127.0.0.1, and as IPv4-mapped IPv6
UPLOADED_MODEL = """import pathlib
class TritonPythonModel:
    def initialize(self, args):
        pathlib.Path({marker!r}).write_text("code ran")
    def execute(self, requests):
        return []
"""


def upload_request(http_port: int, marker: Path, headers: dict[str, str] | None = None) -> int:
    """The attack: load an uploaded Python model (code execution) through the model-repository API."""
    config = {"name": "uploaded", "backend": "python",
              "input": [{"name": "x", "data_type": "TYPE_FP32", "dims": [1]}],
              "output": [{"name": "y", "data_type": "TYPE_FP32", "dims": [1]}]}
    body = {"parameters": {"config": json.dumps(config),
                           "file:1/model.py": base64.b64encode(UPLOADED_MODEL.format(marker=str(marker)).encode()).decode()}}
    request = urllib.request.Request(f"http://127.0.0.1:{http_port}/v2/repository/models/uploaded/load",
                                     data=json.dumps(body).encode(), method="POST", headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_default_serve_is_loopback_only_refuses_the_upload_and_lets_perf_in_with_the_key(tiny_repo, key_dir, tmp_path,
                                                                                          monkeypatch):
    served = Served(tiny_repo)
    try:
        for port in served.ports.http, served.ports.grpc, served.ports.metrics:
            assert _listening(port) and set(_listening(port)) <= LOOPBACK_HEX, (port, _listening(port))
        marker = tmp_path / "pwned"
        assert upload_request(served.ports.http, marker) == 403
        time.sleep(1)
        assert not marker.exists(), "the uploaded model's code ran"
        key_files = sorted(key_dir.iterdir())
        assert [p.name for p in key_files] == sorted(f"{p}.key" for p in (served.ports.http, served.ports.grpc))
        assert all(p.stat().st_mode & 0o777 == 0o600 for p in key_files)
        # trtrepo's own tools reload models through the restricted API with the key they find.
        result = trtrepo("perf", "--url", f"localhost:{served.ports.grpc}", "--models", VARIANT, "--instances", "2",
                         "--concurrency", "1", "--measurement-ms", "300", "--output", str(tmp_path / "perf"))
        assert result.returncode == 0, result.stderr
        assert InferenceClient(VARIANT, url=f"localhost:{served.ports.http}").api_key == key_files[0].read_text().split()[0]
        # A client without the key (another user, another host) still reads the config and infers.
        monkeypatch.setenv("TRTREPO_KEY_DIR", str(tmp_path / "no-keys"))
        bare = InferenceClient(VARIANT, url=f"localhost:{served.ports.http}")
        assert bare.api_key is None and [(o.name, o.label_filename) for o in bare.config.output] == [("logits", "labels.txt")]
        assert bare.infer({"input": np.zeros((1, 3, 224, 224), np.float32)})["logits"].shape == (1, 1000)
        monkeypatch.setenv("TRTREPO_KEY_DIR", str(key_dir))
    finally:
        code, out, err = served.stop()
    assert code == 128 + signal.SIGTERM and err.strip().endswith("error: stopped by SIGTERM"), err
    assert "API key (shown once" in out
    assert not list(key_dir.iterdir()), "key files outlived the server"


def test_the_key_opens_the_model_repository_api(tiny_repo, key_dir, tmp_path):
    served = Served(tiny_repo, "--api-key", "s3cret-key")
    try:
        marker = tmp_path / "ran"
        assert upload_request(served.ports.http, marker, {"trtrepo-key": "wrong"}) == 403
        assert upload_request(served.ports.http, marker, {"trtrepo-key": "s3cret-key"}) == 200
        assert marker.read_text() == "code ran"  # which is why the API is restricted
    finally:
        served.stop()


@pytest.mark.parametrize("signals, exit_code", [
    ([signal.SIGTERM], 143), ([signal.SIGINT], 130), ([signal.SIGHUP], 129),
    ([signal.SIGTERM, signal.SIGTERM], 143),  # a second signal forces
])
def test_a_signal_stops_the_server_and_every_stub_within_10_s(tiny_repo, key_dir, signals, exit_code):
    served = Served(tiny_repo)
    server_pid = served.server_pid
    log_file = Path(os.readlink(f"/proc/{server_pid}/fd/1"))  # tritonserver writes its log to its stdout
    stubs = [stub.pid for stub in stubs_of(server_pid)]
    assert stubs, "the Python backend should run a stub per instance"
    started = time.monotonic()
    for signum in signals:
        served.process.send_signal(signum)
        time.sleep(0.2)
    served.process.wait(timeout=10)
    assert time.monotonic() - started < 10
    assert served.process.returncode == exit_code
    for pid in [server_pid, *stubs]:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2], pid
    with pytest.raises(OSError):  # the ports are free again
        urllib.request.urlopen(f"http://127.0.0.1:{served.ports.http}/v2/health/live", timeout=2)
    if len(signals) == 1:  # a clean stop: nginx went first, so no kept-alive connection held Triton to its exit timeout
        log = log_file.read_text()
        assert f"successfully unloaded '{VARIANT}'" in log and "Exit timeout expired" not in log, log[-1500:]


def test_serve_leaves_out_a_broken_model_and_serves_the_others(tiny_repo, key_dir, tmp_path):
    """A config Triton would refuse, and a pipeline calling a model that is not there: each left out with one line,
    the good model served (a restart after a crash validates the same way: the same TritonServer._launch)."""
    import shutil

    repo = tmp_path / "model_repository"
    shutil.copytree(tiny_repo, repo)
    shutil.copytree(repo / VARIANT, repo / "broken")
    (repo / "broken" / "config.pbtxt").write_text("name: \"broken\"\nmax_batch_size: [garbage\n")
    shutil.copytree(repo / VARIANT, repo / "lost_pipeline")
    (repo / "lost_pipeline" / "config.pbtxt").write_text(
        (repo / VARIANT / "config.pbtxt").read_text().replace(f'name: "{VARIANT}"', 'name: "lost_pipeline"')
        + 'parameters {\n  key: "variant"\n  value {\n    string_value: "absent_variant"\n  }\n}\n')
    served = Served(repo)
    with urllib.request.urlopen(f"http://127.0.0.1:{served.ports.http}/v2/models/{VARIANT}/ready", timeout=10) as answer:
        assert answer.status == 200
    code, out, err = served.stop()
    events = " ".join(err.split())
    assert events.count("left out broken:") == 1 and events.count("left out lost_pipeline:") == 1, err[-2000:]
    assert "its variant absent_variant is not in the repository" in events


def test_a_killed_server_leaves_no_shared_memory_behind(tiny_repo, key_dir):
    """Triton removes its stubs' /dev/shm regions at a clean stop only; the launcher gives them a prefix of its own and
    removes what a killed server left."""
    server = TritonServer(tiny_repo, Ports.free()).start()
    regions = list(Path("/dev/shm").glob(f"{server.shm_prefix}*"))
    assert regions, "each stub should have a region named with the server's prefix"
    os.kill(server.process.pid, signal.SIGKILL)
    server.process.wait(timeout=30)
    assert all(region.exists() for region in regions)  # what Triton left
    server.stop()
    assert not list(Path("/dev/shm").glob(f"{server.shm_prefix}*"))


def test_exposed_or_unrestricted_serving_is_announced(tiny_repo, key_dir):
    served = Served(tiny_repo, "--host", "0.0.0.0", "--unrestricted")
    code, out, err = served.stop()
    assert "warning: listening on 0.0.0.0: every API, model loading (code execution) included, is open" in " ".join(err.split())
    assert "API key" not in out


def test_a_killed_stub_is_reloaded_while_clients_keep_sending(tiny_repo, key_dir):
    """Kill -9 one Python stub under load: Triton alone would fail its requests forever; the watchdog reloads it."""
    events: list[str] = []
    with TritonServer(tiny_repo, Ports.free(), model_control="explicit", on_event=events.append) as server:
        client = InferenceClient(VARIANT, url=server.grpc_url, protocol="grpc")
        batch = {"input": np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)}
        outcomes: list[tuple[float, bool]] = []
        unexpected: list[str] = []  # failures other than the dead stub's, collected: an assert in a thread fails nothing
        stop = threading.Event()

        def send() -> None:  # each outcome is stamped with when its request was sent
            while not stop.is_set():
                sent = time.monotonic()
                try:
                    client.infer(batch)
                    outcomes.append((sent, True))
                except UserError as exc:
                    if not ("is not healthy" in str(exc) or "unavailable" in str(exc).lower()):
                        unexpected.append(str(exc))
                    outcomes.append((sent, False))
                    time.sleep(0.05)

        sender = threading.Thread(target=send)
        sender.start()
        time.sleep(2)
        (stub,) = stubs_of(server.process.pid)
        killed_at = time.monotonic()
        os.kill(stub.pid, signal.SIGKILL)
        deadline = killed_at + 120
        watchdog = server.watchdog
        while not watchdog.recoveries and time.monotonic() < deadline:
            time.sleep(0.2)
        recovered_at = time.monotonic()
        time.sleep(3)
        stop.set()
        sender.join()
    assert watchdog.recoveries, events
    assert unexpected == []
    after = [ok for t, ok in outcomes if t > recovered_at]
    failed = sum(1 for _, ok in outcomes if not ok)
    figures = {"sent": len(outcomes), "failed": failed, "answered_after_recovery": sum(after),
               "seconds_to_recovery": round(recovered_at - killed_at, 1)}
    print(f"stub killed under load: {figures}")
    assert after and all(after), figures  # every request after the reload is answered
    assert sum(ok for t, ok in outcomes if t < killed_at) > 0
    assert figures["seconds_to_recovery"] < 60, figures


def test_a_client_keeps_the_results_it_had_when_the_server_dies(small_repo, darknet_photos, key_dir, tmp_path):
    import shutil

    repo = tmp_path / "repo"
    shutil.copytree(small_repo / "yolov3_tiny_onnxruntime_fp32", repo / "yolov3_tiny_onnxruntime_fp32")
    photos = tmp_path / "photos"
    photos.mkdir()
    for index in range(160):  # three waves of 64 images: the server dies during a later one
        (photos / f"{index:03d}.jpg").symlink_to(darknet_photos / "dog.jpg")
    with TritonServer(repo, Ports.free()) as server:
        process = subprocess.Popen([sys.executable, str(ROOT / "clients" / "yolo_client.py"), "--url", server.http_url,
                                    str(photos)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while _inference_count(server) < 70 and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        os.killpg(server.process.pid, signal.SIGKILL)  # the server dies mid-run, after the first wave
        out, err = process.communicate(timeout=120)
    assert process.returncode == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "images, whose detections are above" in lines[0], err
    printed = [line for line in out.splitlines() if line.endswith("detections")]
    assert 64 <= len(printed) < 160


def _inference_count(server: TritonServer) -> int:
    try:
        with urllib.request.urlopen(server.metrics_url, timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return 0
    return int(sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith("nv_inference_count{")))


def test_tritonserver_and_perf_analyzer_run_by_hand_from_the_virtual_environment(tiny_repo, tmp_path):
    bin_dir = Path(sys.executable).parent
    if not (bin_dir / "tritonserver").is_file():
        pytest.skip("trtrepo is not installed in this environment (make install puts tritonserver in .venv/bin)")
    env = {k: v for k, v in os.environ.items() if k not in ("LD_LIBRARY_PATH", "PYTHONPATH")}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    ports = Ports.free()
    server = subprocess.Popen(["tritonserver", "--model-repository", str(tiny_repo), f"--http-port={ports.http}",
                               f"--grpc-port={ports.grpc}", f"--metrics-port={ports.metrics}"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while not is_ready(ports.http):
            assert server.poll() is None and time.monotonic() < deadline, "bundled tritonserver did not start"
            time.sleep(0.3)
        assert set(_listening(ports.http)) <= LOOPBACK_HEX
        result = subprocess.run(["perf_analyzer", "-m", VARIANT, "-u", f"localhost:{ports.grpc}", "-i", "grpc",
                                 *STEADY_ENOUGH],
                                env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stdout[-500:] + result.stderr[-500:]
        assert "throughput" in result.stdout
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def test_soak_reports_requests_failures_latency_and_memory(server, tmp_path):
    result = trtrepo("soak", "--url", server.grpc_url, "--models", "resnet50_onnxruntime_fp32", "--seconds", "9",
                     "--window-s", "3", "--concurrency", "2", "--output", str(tmp_path))
    assert result.returncode == 0, result.stderr
    (row,) = [line for line in result.stdout.splitlines() if line.startswith("| resnet50_onnxruntime_fp32 |")]
    _, _, answered, failed, *_ = row.split("|")
    assert int(answered) > 0 and int(failed) == 0, row
    assert {p.name for p in tmp_path.iterdir()} == {"soak.csv", "soak.md", "soak.png"}


PLAN = """[repository]
output = "{output}"
weights = "efficientnet_lite0=pretrained"
backends = "python"
calib_images = 8

# Interruption is under test here, not INT8's accuracy (test_gate's): a gate eight calibration images pass.
[gate]
top1_agreement = 0.8

[defaults]
max_batch_size = 4
preferred_batch_sizes = [2, 4]
warmup = false

[[variant]]
model = "efficientnet_lite0"
engine = "onnxruntime"
precision = "fp32"

[[variant]]
model = "efficientnet_lite0"
engine = "onnxruntime"
precision = "int8"
"""


def _interrupt_build(plan: Path, after_line: str, signum: int, delay_s: float) -> subprocess.CompletedProcess:
    """`trtrepo repo --force`, signalled ``delay_s`` after it prints ``after_line``."""
    process = subprocess.Popen([sys.executable, "-m", "trtrepo.cli", "repo", "--plan", str(plan), "--force"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, preexec_fn=interruptible)
    seen = []
    for line in process.stderr:
        seen.append(line)
        if after_line in line:
            time.sleep(delay_s)
            process.send_signal(signum)
            break
    out, err = process.communicate(timeout=120)
    return subprocess.CompletedProcess(process.args, process.returncode, out, "".join(seen) + err)


def test_an_interrupted_rebuild_leaves_the_old_variants_serving(tmp_path, key_dir):
    from trtrepo.build.publish import files_intact
    from trtrepo.clients.resnet_client import classify
    from trtrepo.format.config import read_manifest
    from trtrepo.imagesets import shipped_photos

    output = tmp_path / "model_repository"
    plan = tmp_path / "repo.toml"
    plan.write_text(PLAN.format(output=output))
    first = trtrepo("repo", "--plan", str(plan))
    assert first.returncode == 0, first.stderr
    built = {d.name: read_manifest(d)["built_at"] for d in output.iterdir() if d.is_dir()}
    for after_line, signum, delay_s in [
        ("efficientnet_lite0: exported ONNX", signal.SIGINT, 0.0),  # as the FP32 build starts
        # As the INT8 build starts: a later moment is no surer to be mid-calibration (eight images take well under a
        # second when the machine is idle) and may fall after the build.
        ("efficientnet_lite0_onnxruntime_int8: building", signal.SIGTERM, 0.0),
    ]:
        result = _interrupt_build(plan, after_line, signum, delay_s)
        # Ctrl-C: exit 130, or death by SIGINT after the same message, which a shell reports as 130 too. CPython kills
        # itself with SIGINT at exit once a KeyboardInterrupt has passed through C code that ran Python source
        # (run_eval_code_obj sets _Py_UnhandledKeyboardInterrupt even when the exception is caught later): seen once
        # in a full test run, when the signal met the ONNX Runtime build.
        accepted = (128 + signum, -signum) if signum == signal.SIGINT else (128 + signum,)
        assert result.returncode in accepted, result.stderr[-2000:]
        assert result.stderr.strip().splitlines()[-1] == f"error: {'interrupted' if signum == signal.SIGINT else 'stopped by SIGTERM'}"
        for model_dir in output.iterdir():
            if model_dir.is_dir():
                assert files_intact(model_dir, read_manifest(model_dir)), model_dir
        assert trtrepo("validate", str(output)).returncode == 0
    assert not (tmp_path / ".model_repository.trtrepo-staging").exists()
    photo = [p for p in shipped_photos() if p.name == "coffee.png"] or shipped_photos()[:1]
    with TritonServer(output, Ports.free()) as server:
        for variant in built:
            (top,) = classify(photo, variant, server.http_url, "http", 1, 1)
            assert top[0][1] > 0
    after = {d.name: read_manifest(d)["built_at"] for d in output.iterdir() if d.is_dir()}
    assert set(after) == set(built)
    again = trtrepo("repo", "--plan", str(plan))
    assert again.returncode == 0 and "up to date: efficientnet_lite0_onnxruntime_fp32, efficientnet_lite0_onnxruntime_int8" in again.stdout


def test_a_point_during_which_a_stub_died_is_reported_crashed_and_not_measured(tiny_repo, tmp_path):
    """A stub killed while perf_analyzer measures its model: the sweep has no figure for that point (the watchdog's
    reload would be counted into it) but a line saying it crashed, which sweep.md lists under the table."""
    from trtrepo.perf.sweep import sweep, write_report
    from trtrepo.serving.endpoints import grpc_endpoint
    from trtrepo.serving.stubs import children

    def kill_the_stub_once_measured(server_pid: int) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(
                Path(f"/proc/{pid}/comm").read_text().strip() == "perf_analyzer" for pid in children(os.getpid())):
            time.sleep(0.1)
        time.sleep(1)
        for stub in stubs_of(server_pid):
            os.kill(stub.pid, signal.SIGKILL)

    failures: list[str] = []
    with grpc_endpoint(None, tiny_repo, on_event=lambda _: None) as endpoint:
        killer = threading.Thread(target=kill_the_stub_once_measured, args=(endpoint.server_pid,))
        killer.start()
        points = sweep([endpoint], [VARIANT], [1], [2], 1, 2000, on_failure=failures.append)
        killer.join()
    assert points == [] and len(failures) == 1, failures
    assert f"crashed: 1 Python stub of {VARIANT} died (or were replaced by a reload) while it was measured" in failures[0]
    written = write_report([], tmp_path, failures=failures)["markdown"].read_text()
    assert "## Not measured in the last run" in written and "crashed: 1 Python stub" in written


def test_a_client_waits_for_a_restarted_server_within_its_bound(tiny_repo):
    """A request sent while the server is down (killed, started again on the same ports 3 s later, as `serve`
    does) is answered once it is back: the client retries what no server answered, for up to ``wait_s``."""
    ports = Ports.free()
    batch = {"input": np.zeros((1, 3, 224, 224), np.float32)}
    first = TritonServer(tiny_repo, ports).start()
    client = InferenceClient(VARIANT, url=first.grpc_url, protocol="grpc", wait_s=60)
    assert client.infer(batch)["logits"].shape == (1, 1000)
    os.killpg(first.process.pid, signal.SIGKILL)
    first.process.wait()
    answered: list = []
    # The request waits in a thread; the server starts in this one (its parent-death signal follows the thread
    # that started it).
    sender = threading.Thread(target=lambda: answered.append(client.infer(batch)["logits"].shape))
    began = time.monotonic()
    sender.start()
    time.sleep(3)
    with TritonServer(tiny_repo, ports):
        sender.join(60)
        assert answered == [(1, 1000)] and client.retried > 0 and time.monotonic() - began >= 3
    first.stop()
    client.wait_s = 0.5  # and with the server gone for good, the bound ends the wait in one line
    with pytest.raises(UserError, match=r"no server answered it for 0\.5 s"):
        client.infer(batch)


#: In a changed null model's execute: the first value of its first request's input, which a test sets to steer it.
FIRST_VALUE = "pb_utils.get_input_tensor_by_name(requests[0], 'input').as_numpy()[0, 0, 0, 0]"


def null_model_changed(null_repo: Path, tmp_path: Path, execute_head: str) -> Path:
    """A copy of the null model's repository whose model.py starts its execute with ``execute_head`` (which ends
    with the execute line itself, so that it can put methods before it)."""
    import shutil

    repo = tmp_path / "model_repository"
    shutil.copytree(null_repo / VARIANT, repo / VARIANT)
    model_file = repo / VARIANT / "1" / "model.py"
    model_file.write_text(model_file.read_text().replace("    def execute(self, requests):\n", execute_head))
    return repo


def test_a_stub_stuck_in_execute_is_replaced_and_the_model_answers_again(null_repo, tmp_path):
    """A stub whose execute never returns (a deadlock: no work, no answer) while requests wait for it: the watchdog
    kills it once its stuck time has passed and reloads the model, which answers the next requests."""
    repo = null_model_changed(null_repo, tmp_path,
        "    def execute(self, requests):\n"
        f"        if {FIRST_VALUE} > 0:\n"
        "            import threading\n"
        "            threading.Event().wait()  # a deadlock: no work, no answer, ever\n")
    events: list[str] = []
    with TritonServer(repo, Ports.free(), model_control="explicit", on_event=events.append) as server:
        server.watchdog.stuck_after_s = 3
        client = InferenceClient(VARIANT, url=server.grpc_url, protocol="grpc", timeout_s=120)
        zeros = {"input": np.zeros((1, 3, 224, 224), np.float32)}
        stuck = threading.Thread(target=lambda: pytest.raises(UserError, client.infer, {"input": np.ones((1, 3, 224, 224), np.float32)}))
        stuck.start()
        time.sleep(0.5)
        # Queued behind the stuck one: it fails with the stub's death ("not healthy"), as the stuck one does.
        waiting = threading.Thread(target=lambda: pytest.raises(UserError, client.infer, zeros))
        waiting.start()
        stuck.join(60)
        waiting.join(60)
        assert not stuck.is_alive() and not waiting.is_alive()
        deadline = time.monotonic() + 60
        while not server.watchdog.recoveries and time.monotonic() < deadline:
            time.sleep(0.2)
        assert client.infer(zeros)["logits"].shape == (1, 1000)
    assert any("answered none of its requests" in e and "(stuck); killing them" in e for e in events), events
    assert any("reloaded in" in e for e in events), events


def test_a_model_whose_folder_is_gone_is_unloaded_when_its_stub_dies_not_left_ready_failing(null_repo, tmp_path):
    """The repository deleted under a running server, then the model's stub killed: its reload cannot work, so the
    model is unloaded (no longer READY, said once) instead of staying READY and answering every request 500."""
    import shutil

    repo = tmp_path / "model_repository"
    shutil.copytree(null_repo / VARIANT, repo / VARIANT)
    events: list[str] = []
    with TritonServer(repo, Ports.free(), model_control="explicit", on_event=events.append) as server:
        client = InferenceClient(VARIANT, url=server.grpc_url, protocol="grpc")
        shutil.rmtree(repo / VARIANT)
        (stub,) = stubs_of(server.process.pid)
        os.kill(stub.pid, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while client._client.is_model_ready(VARIANT) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not client._client.is_model_ready(VARIANT), events
        time.sleep(3)  # more scans: nothing more is said
    gone = [e for e in events if "is gone" in e]
    assert len(gone) == 1 and "unloaded it (no longer READY)" in gone[0], events


def test_a_stub_starved_of_memory_is_replaced_and_its_requests_answer_again(null_repo, tmp_path):
    """A stub whose address space is capped under it (prlimit) fails every request that needs a large buffer while
    Triton calls it healthy: it counts them (MemoryFailures), the watchdog replaces it after STARVED_AFTER_FAILURES,
    and the new process answers the same request."""
    import resource

    from trtrepo.serving.stubs import STARVED_AFTER_FAILURES

    repo = null_model_changed(null_repo, tmp_path,
        "    def initialize(self, args):\n"
        "        from trtrepo.backend.stub_python import MemoryFailures\n"
        "        self.memory = MemoryFailures(pb_utils, args['model_name'])\n\n"
        "    def execute(self, requests):\n"
        f"        megabytes = int({FIRST_VALUE})\n"
        "        try:\n"
        "            np.ones(megabytes << 18, np.float32)  # a large image's buffers, say\n"
        "        except MemoryError as exc:\n"
        "            self.memory.count(exc, len(requests))\n"
        "            return [pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc))) for _ in requests]\n")
    events: list[str] = []
    with TritonServer(repo, Ports.free(), model_control="explicit", on_event=events.append) as server:
        (stub,) = stubs_of(server.process.pid)
        mapped = int(Path(f"/proc/{stub.pid}/statm").read_text().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        resource.prlimit(stub.pid, resource.RLIMIT_AS, (mapped + (64 << 20), mapped + (64 << 20)))
        client = InferenceClient(VARIANT, url=server.grpc_url, protocol="grpc", timeout_s=60)
        large, small = ({"input": np.full((1, 3, 224, 224), megabytes, np.float32)} for megabytes in (256, 1))
        for _ in range(STARVED_AFTER_FAILURES):
            with pytest.raises(UserError, match="allocate"):
                client.infer(large)
            assert client.infer(small)["logits"].shape == (1, 1000)  # the starved stub still answers small requests
        deadline = time.monotonic() + 60
        while not server.watchdog.recoveries and time.monotonic() < deadline:
            time.sleep(0.2)
        assert client.infer(large)["logits"].shape == (1, 1000)
        assert [s.pid for s in stubs_of(server.process.pid)] != [stub.pid]
    assert any(f"stub {stub.pid} failed {STARVED_AFTER_FAILURES} requests for want of memory (starved)" in e
               for e in events), events


def stub_count_settles_at(server: TritonServer, count: int, within_s: float = 30) -> bool:
    """Whether the server's stubs number ``count`` for two looks running within ``within_s``."""
    deadline, seen = time.monotonic() + within_s, []
    while time.monotonic() < deadline and seen[-2:] != [count, count]:
        seen.append(len(stubs_of(server.process.pid)))
        time.sleep(0.5)
    return seen[-2:] == [count, count]


def test_a_change_on_disk_is_loaded_by_the_serving_server_and_a_broken_one_refused(null_repo, tmp_path, monkeypatch):
    """`trtrepo config` on a served repository: the supervised server loads the change (two instances, two stubs),
    a stub reload keeps it, and a config that would not load is refused in one line while the model answers on."""
    import shutil

    from trtrepo.serving import watch

    monkeypatch.setattr(watch, "WATCH_INTERVAL_S", 0.5)
    repo = tmp_path / "model_repository"
    shutil.copytree(null_repo / VARIANT, repo / VARIANT)
    events: list[str] = []
    stop = threading.Event()
    with TritonServer(repo, Ports.free(), model_control="explicit", on_event=events.append, watch_repository=True) as server:
        supervisor = threading.Thread(target=server.supervise, args=(stop,), daemon=True)
        supervisor.start()
        try:
            result = trtrepo("config", str(repo / VARIANT), "--instances", "2")
            assert result.returncode == 0 and "`trtrepo serve` loads it within seconds" in result.stderr, result.stderr
            deadline = time.monotonic() + 60
            while not any("loaded its change on disk" in e for e in events) and time.monotonic() < deadline:
                time.sleep(0.2)
            assert stub_count_settles_at(server, 2), events  # the old instance's stub exits after the new ones load
            os.kill(stubs_of(server.process.pid)[0].pid, signal.SIGKILL)  # the stub reload keeps the config loaded
            while not server.watchdog.recoveries and time.monotonic() < deadline:
                time.sleep(0.2)
            assert stub_count_settles_at(server, 2), events
            (repo / VARIANT / "config.pbtxt").write_text("max_batch_size: [broken\n")
            while not any("would not load" in e for e in events) and time.monotonic() < deadline:
                time.sleep(0.2)
            client = InferenceClient(VARIANT, url=server.grpc_url, protocol="grpc")
            assert client.infer({"input": np.zeros((1, 3, 224, 224), np.float32)})["logits"].shape == (1, 1000)
        finally:
            stop.set()
            supervisor.join(10)
    refused = [e for e in events if "would not load" in e]
    assert len(refused) == 1 and refused[0].startswith(f"{VARIANT}: changed on disk") and "fix it" in refused[0], events
