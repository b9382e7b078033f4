"""A batch's way from launch to answers (trtrepo.backend.batches), on a CPU without Triton: splitting per request, the
guard around every send, and the pipelined Responder's order, errors and limit on batches in flight."""

from __future__ import annotations

import threading

import numpy as np

from trtrepo.backend.batches import LaunchedBatch, Responder, launched, per_request, send_each


def batch_of(sizes: list[int], **fields) -> LaunchedBatch:
    total = sum(sizes)
    outputs = {"scores": np.arange(total * 2).reshape(total, 2), "boxes": np.arange(total * 4).reshape(total, 4)}
    return LaunchedBatch(sizes, outputs, lambda name, value: value, **fields)


def test_each_request_gets_its_own_slice_of_every_output():
    slices = per_request(batch_of([1, 3]), ["scores", "boxes"])
    assert [s["scores"].shape for s in slices] == [(1, 2), (3, 2)]
    assert slices[1]["boxes"][0].tolist() == [4, 5, 6, 7]  # the second request starts at the batch's second sample


def test_a_batch_that_fails_on_the_way_answers_with_its_error():
    def fail() -> None:
        raise RuntimeError("CUDA error: an illegal memory access")

    error = per_request(batch_of([2], wait=fail), ["scores"])
    assert isinstance(error, RuntimeError) and "illegal memory access" in str(error)
    failed = launched(lambda: (_ for _ in ()).throw(ValueError("bad input")))
    assert failed.sizes == [] and isinstance(per_request(failed, ["scores"]), ValueError)


def test_a_client_that_went_away_costs_only_its_own_answer():
    sent, logged = [], []

    def send(sender: str, response: str) -> None:
        if sender == "gone":
            raise ConnectionError("stream closed")
        sent.append((sender, response))

    send_each(["a", "gone", "b"], ["1", "2", "3"], send, logged.append)
    assert sent == [("a", "1"), ("b", "3")] and len(logged) == 1 and "stream closed" in logged[0]


class Recorder:
    """Responder callables that record what each sender was answered."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, object]] = []
        self.logged: list[str] = []

    def responses(self, count: int, batch: LaunchedBatch) -> list:
        slices = per_request(batch, ["scores"])
        if isinstance(slices, Exception):
            return self.error_responses(count, slices)
        if batch.sizes == [99]:
            raise TypeError("an output the server cannot take")
        return [s["scores"].tolist() for s in slices]

    @staticmethod
    def error_responses(count: int, exc: Exception) -> list:
        return [f"error: {exc}"] * count

    def send(self, sender: str, response: object) -> None:
        if sender == "gone":
            raise ConnectionError("stream closed")
        self.sent.append((sender, response))

    def responder(self) -> Responder:
        return Responder(self.responses, self.error_responses, self.send, self.logged.append)


def test_pipelined_batches_are_answered_in_launch_order_and_errors_reach_every_client():
    record = Recorder()
    responder = record.responder()
    responder.launch(lambda: batch_of([1, 1]), ["a", "gone"])
    responder.launch(lambda: (_ for _ in ()).throw(RuntimeError("out of memory")), ["b", "c"])
    responder.launch(lambda: LaunchedBatch([99], {"scores": np.zeros((99, 2))}, lambda n, v: v), ["d"])
    responder.launch(lambda: batch_of([1]), ["e"])
    responder.stop()
    assert record.sent == [
        ("a", [[0, 1]]),
        ("b", "error: out of memory"), ("c", "error: out of memory"),
        ("d", "error: an output the server cannot take"),
        ("e", [[0, 1]]),
    ]
    assert any("stream closed" in line for line in record.logged)
    assert not responder.thread.is_alive()


def test_no_more_batches_are_launched_than_may_be_in_flight():
    record = Recorder()
    responder = record.responder()  # two in flight: one running, one queued behind it
    gpu_done = threading.Event()
    responder.launch(lambda: batch_of([1], wait=gpu_done.wait), ["a"])
    second = threading.Thread(target=responder.launch, args=(lambda: batch_of([1]), ["b"]))
    second.start()
    second.join(0.3)
    assert second.is_alive() and record.sent == []  # held until the first batch is answered
    gpu_done.set()
    second.join(5)
    assert not second.is_alive()
    responder.stop()
    assert [sender for sender, _ in record.sent] == ["a", "b"]


class _SharedMemoryTensor:
    """A Triton tensor in host memory as the stub hands it over: as_numpy views the stub's shared-memory pool."""

    def __init__(self, pool: np.ndarray) -> None:
        self.pool = pool

    def is_cpu(self) -> bool:
        return True

    def as_numpy(self) -> np.ndarray:
        return self.pool[:4]


def test_host_arrays_own_their_memory_instead_of_viewing_the_stubs_pool():
    """The stub may map its pool elsewhere at any moment (grown by its other threads): an array read from it must
    not point into it."""
    from trtrepo.backend.batches import host_array

    pool = np.arange(8, dtype=np.float32)
    array = host_array(_SharedMemoryTensor(pool))
    assert array.flags.owndata and not np.shares_memory(array, pool)
    pool[:] = -1  # the pool reused for something else
    assert array.tolist() == [0, 1, 2, 3]
