"""A batch on its way through a Triton Python model, from launch to one answer per request, without Triton.

The model (trtrepo.backend) gathers the dynamic batcher's requests into one batch, launches it on its engine and
answers each request with its slice of the outputs. Splitting, answering in launch order, pacing and the guard
around every send live here, so they run and are tested on a CPU, with no server; the backend only turns slices
into Triton tensors and responses.

A pipelined (decoupled) model's execute only launches a batch: the Responder's thread waits for the GPU and
answers, so the instance already launches the next batch while the GPU runs this one. execute returns shortly
before the batch it launched is expected to finish (trtrepo.backend.pacing), not at once, so that the dynamic batcher
gathers as many requests as it would for a model that is not pipelined.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from trtrepo.backend.pacing import BatchPacer


#: Inputs in a client's CUDA shared memory are mapped into this process per request (CUDA IPC), and unmapping
#: one waits until the GPU has finished everything queued (H100: 1.3 s behind a queue of matrix products, 0.1 ms
#: when idle) and holds up every launch meanwhile. A pipelined instance therefore unmaps the inputs of answered
#: batches when none is in flight, or, under unbroken load, once per this many batches.
UNMAP_EVERY = 64
#: Batches a pipelined instance keeps launched: one running, one queued behind it. execute returns no earlier than
#: the running one is done, and then only shortly before its own batch is expected to finish (trtrepo.backend.pacing).
IN_FLIGHT = 2


@dataclass
class LaunchedBatch:
    """One batch on its way: each request's share of it, and outputs that are valid once ``wait`` returns."""

    sizes: list[int]
    outputs: dict[str, Any] = field(default_factory=dict)
    to_tensor: Callable[[str, Any], Any] | None = None  # None: no outputs (a failed batch)
    wait: Callable[[], None] = lambda: None
    #: The input tensors, referenced until ``wait`` returns: the GPU reads them after execute has returned.
    inputs: Any = None
    error: Exception | None = None
    #: Seconds the batch kept the GPU busy, once ``wait`` has returned; None where it is not timed (host batches).
    gpu_seconds: Callable[[], float] | None = None
    #: Set by the responder once the batch is done.
    done: threading.Event = field(default_factory=threading.Event)


def launched(launch: Callable[[], LaunchedBatch]) -> LaunchedBatch:
    """``launch()``, or a failed batch carrying its exception: reported to every waiting client instead of
    killing the model's process."""
    try:
        return launch()
    except Exception as exc:
        return LaunchedBatch(sizes=[], error=exc)


def per_request(batch: LaunchedBatch, output_names: Sequence[str]) -> list[dict[str, Any]] | Exception:
    """Waits for the batch, then each request's slice of every output (in request order), or the batch's error."""
    try:
        batch.wait()
    except Exception as exc:
        batch.error = exc
    if batch.error is not None:
        return batch.error
    slices, start = [], 0
    for size in batch.sizes:
        slices.append({name: batch.outputs[name][start : start + size] for name in output_names})
        start += size
    return slices


def send_each(senders: Sequence[Any], responses: Sequence[Any], send: Callable[[Any, Any], None],
              log_error: Callable[[str], None]) -> None:
    """Every response to its sender, each send guarded: a client that went away costs only its own answer."""
    for sender, response in zip(senders, responses):
        try:
            send(sender, response)
        except Exception as exc:
            log_error(f"trtrepo: answering a request failed: {exc}")


class Responder:
    """A pipelined model's answering thread: batches are answered in launch order, at most ``in_flight`` of them
    unanswered at once, and the inputs of answered batches are let go of (unmapped) as UNMAP_EVERY says.

    ``responses(count, batch)`` builds one response per request (waiting for the batch; a failed batch gives
    error responses), ``error_responses(count, exc)`` answers a batch whose responses could not be built, and
    ``send(sender, response)`` sends a final response."""

    def __init__(self, responses: Callable[[int, LaunchedBatch], list], error_responses: Callable[[int, Exception], list],
                 send: Callable[[Any, Any], None], log_error: Callable[[str], None], in_flight: int = IN_FLIGHT,
                 unmap_every: int = UNMAP_EVERY, pacer: BatchPacer | None = None) -> None:
        self.responses, self.error_responses, self.send, self.log_error = responses, error_responses, send, log_error
        self.unmap_every = unmap_every
        self.pacer = pacer or BatchPacer()
        self.unanswered: queue.Queue = queue.Queue()
        self.slots = threading.Semaphore(in_flight - 1)
        self.in_flight = 0
        self.launching = threading.Lock()  # held while launching, and while unmapping (see UNMAP_EVERY)
        self.thread = threading.Thread(target=self._respond_in_turn, name="trtrepo-responder", daemon=True)
        self.thread.start()

    def launch(self, launch: Callable[[], LaunchedBatch], senders: list) -> None:
        """Launch a batch for these senders, then return once fewer than ``in_flight`` batches are unanswered and,
        past that, shortly before this batch is expected to finish (trtrepo.backend.pacing)."""
        with self.launching:
            launch_began = time.monotonic()
            batch = launched(launch)
            self.unanswered.put((senders, batch))
            self.in_flight += 1
        self.slots.acquire()
        return_at = self.pacer.return_at(sum(batch.sizes), launch_began)
        if return_at is not None:
            batch.done.wait(max(0.0, return_at - time.monotonic()))

    def stop(self) -> None:
        """Answer what is launched, then end the thread."""
        self.unanswered.put(None)
        self.thread.join()

    def _respond_in_turn(self) -> None:
        answered_inputs = []
        while (item := self.unanswered.get()) is not None:
            senders, batch = item
            try:
                responses = self.responses(len(senders), batch)
            except Exception as exc:  # the outputs could not be turned into responses: every client hears why
                self.log_error(f"trtrepo: answering a batch failed: {exc}")
                responses = self.error_responses(len(senders), exc)
            self.pacer.finished(sum(batch.sizes), _gpu_seconds(batch))
            batch.done.set()
            send_each(senders, responses, self.send, self.log_error)
            answered_inputs.append(batch.inputs)
            del item, batch, responses
            with self.launching:
                self.in_flight -= 1
                if self.in_flight == 0 or len(answered_inputs) >= self.unmap_every:
                    answered_inputs.clear()
            self.slots.release()


def _gpu_seconds(batch: LaunchedBatch) -> float | None:
    """The batch's GPU time, where it ran and was timed (None: a failed or untimed batch)."""
    if batch.error is not None or batch.gpu_seconds is None:
        return None
    try:
        return batch.gpu_seconds()
    except Exception:  # its events never completed: the batch failed on the GPU
        return None


def host_array(tensor: Any) -> np.ndarray:
    """A request's input or a BLS output as a numpy array of its own, copied from the stub's shared memory or from
    the device (a GPU instance is handed inputs where they lie, which as_numpy cannot read).

    ``as_numpy`` is a view into the stub's shared-memory pool, which the stub's other threads may grow, and map again
    elsewhere, at any moment: to send a pipelined model's answers, to take a pipelined variant's next response. A
    view kept past that reads unmapped memory: the stub segfaults in the next numpy call (seen on an H100 at
    concurrency 256, the pipeline's argsort of its variant's logits), and every request after it fails "Stub process
    is not healthy"."""
    if tensor.is_cpu():
        return tensor.as_numpy().copy()
    import torch

    return torch.from_dlpack(tensor.to_dlpack()).cpu().numpy()
