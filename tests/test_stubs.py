"""The stub watchdog's logic on real processes that look like Triton's stubs (children of this test process)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from trtrepo.serving.stubs import STUB_BINARY, StubWatchdog, resident_bytes, stubs_of


@pytest.fixture
def fake_stubs(tmp_path):
    """Start processes whose command line reads like a stub's: argv[0] the stub binary, the model file, its shared
    memory region, ..., the instance name. They are this process's children, as stubs are tritonserver's."""
    started: list[subprocess.Popen] = []

    def start(model: str, instance: int) -> subprocess.Popen:
        model_file = tmp_path / model / "1" / "model.py"
        model_file.parent.mkdir(parents=True, exist_ok=True)
        model_file.write_text("import time\ntime.sleep(60)\n")
        argv = [f"/backends/python/{STUB_BINARY}", str(model_file), f"shm_region_{model}_{instance}", "1048576", "1048576",
                str(os.getpid()), "/backends/python", "336", f"{model}_0_{instance}", "DEFAULT"]
        process = subprocess.Popen(argv, executable=sys.executable)
        started.append(process)
        return process

    yield start
    for process in started:
        process.kill()
        process.wait()


def wait_for_stubs(count: int) -> list:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = stubs_of(os.getpid())
        if len(found) == count:
            return found
        time.sleep(0.05)
    raise AssertionError(f"expected {count} stubs, found {stubs_of(os.getpid())}")


def test_stubs_are_read_from_the_process_table(fake_stubs):
    fake_stubs("resnet50_pytorch_fp32", 0)
    fake_stubs("resnet50_pytorch_fp32", 1)
    found = sorted(wait_for_stubs(2), key=lambda s: s.instance)
    assert [(s.model, s.instance, s.shm_region) for s in found] == [
        ("resnet50_pytorch_fp32", "resnet50_pytorch_fp32_0_0", "shm_region_resnet50_pytorch_fp32_0"),
        ("resnet50_pytorch_fp32", "resnet50_pytorch_fp32_0_1", "shm_region_resnet50_pytorch_fp32_1"),
    ]
    assert resident_bytes([s.pid for s in found]) > 1 << 20


def test_a_model_short_of_stubs_twice_running_is_reloaded_with_its_config(fake_stubs):
    fake_stubs("a_pytorch_fp32", 0)
    victim = fake_stubs("b_onnxruntime_fp32", 0)
    wait_for_stubs(2)
    expected = {"a_pytorch_fp32": (1, '{"name": "a"}'), "b_onnxruntime_fp32": (1, '{"name": "b"}')}
    reloads, events = [], []
    watchdog = StubWatchdog(os.getpid(), lambda: expected, lambda model, config: reloads.append((model, config)), events.append)
    assert watchdog.scan() == [] and watchdog.scan() == []  # all there: nothing to do
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert watchdog.scan() == []  # once short could be a reload under way
    assert watchdog.scan() == ["b_onnxruntime_fp32"]
    assert reloads == [("b_onnxruntime_fp32", '{"name": "b"}')]
    assert events[0].startswith("b_onnxruntime_fp32: 1 of its 1 Python stubs died") and "reloaded in" in events[1]
    assert [model for model, _ in watchdog.recoveries] == ["b_onnxruntime_fp32"]


def test_a_failed_reload_is_reported_and_tried_again(fake_stubs):
    expected = {"c_pytorch_fp32": (1, "{}")}
    attempts, events = [], []

    def reload(model: str, config: str) -> None:
        attempts.append(model)
        if len(attempts) <= 2:
            raise RuntimeError("server busy")

    watchdog = StubWatchdog(os.getpid(), lambda: expected, reload, events.append)
    watchdog.scan()
    assert watchdog.scan() == [] and "reload failed (server busy)" in events[-1]
    assert watchdog.scan() == []  # failing again for the same reason: not said again
    assert sum("reload failed" in e for e in events) == 1
    assert watchdog.scan() == ["c_pytorch_fp32"] and attempts == ["c_pytorch_fp32"] * 3


def test_the_watchdog_thread_stops(fake_stubs):
    watchdog = StubWatchdog(os.getpid(), lambda: {}, lambda *_: None, lambda _: None, interval_s=0.05).start()
    time.sleep(0.2)
    watchdog.stop()
    assert not watchdog._thread.is_alive()


def test_no_stubs_for_a_process_without_children():
    assert stubs_of(1 << 22) == [] and Path("/proc/self").exists()


def test_a_model_that_answers_nothing_while_owed_requests_and_does_no_work_is_killed_as_stuck(fake_stubs):
    """A stub that Triton's health check fails (frozen, deadlocked: failing "not healthy", or requests waiting) and
    that does no work is killed once stuck_after_s have passed; idle stubs, and stubs that answer or work, are not."""
    stuck = fake_stubs("a_pytorch_fp32", 0)
    idle = fake_stubs("b_pytorch_fp32", 0)
    answering = fake_stubs("c_pytorch_fp32", 0)
    wait_for_stubs(3)
    counts = {m: {"request_success": 5.0, "request_failure": 0.0, "pending_request_count": 0.0} for m in ("a_pytorch_fp32", "b_pytorch_fp32", "c_pytorch_fp32")}
    events: list[str] = []
    watchdog = StubWatchdog(os.getpid(), lambda: {m: (1, "{}") for m in counts}, lambda model, config: None,
                            events.append, requests=lambda: counts, stuck_after_s=0.5)
    watchdog.scan()  # the windows open with nothing owed
    counts["a_pytorch_fp32"]["request_failure"] = 3  # "Stub process ... is not healthy", say
    counts["c_pytorch_fp32"]["pending_request_count"] = 2
    watchdog.scan()
    assert stuck.poll() is None  # not yet: stuck_after_s has not passed
    time.sleep(0.6)
    counts["c_pytorch_fp32"]["request_success"] = 6  # c answered one of its requests
    watchdog.scan()
    assert stuck.wait(5) == -signal.SIGKILL
    assert idle.poll() is None and answering.poll() is None
    assert events == ["a_pytorch_fp32: its Python stubs answered none of its requests for 1 s and did no work (stuck); "
                      "killing them"]
