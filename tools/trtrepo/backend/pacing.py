"""When a pipelined Python model should return from execute: shortly before the GPU runs out of work.

Returning as soon as the batch before had finished (the first pipelined version) handed Triton's dynamic batcher
whatever had arrived by then: on an H100, 8 clients sending 32 images each got batches of 32 and 96, each padded
to a CUDA graph of 128, and 7.7k img/s against 11.4k for the same model not pipelined. Returning only when the
batch is done loses the overlap that pipelining is for. So execute returns HANDOFF_S before the batch it launched
is expected to finish, by the GPU time of recent batches of its size.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections import deque


#: The time the server takes, once execute has returned, to hand over the next batch and have it launched.
HANDOFF_S = 0.002
#: The expected GPU time of a batch is the median over this many recent batches of its size, so that the first
#: batch of a size (cuDNN autotuning, allocations) or one slowed by other processes does not skew it.
TIMED_BATCHES = 8


class BatchPacer:
    """Recent GPU times by batch size, and when the GPU was last seen free. ``finished`` is called from the
    responder thread and ``return_at`` from execute's, hence the lock."""

    def __init__(self, handoff_s: float = HANDOFF_S, timed_batches: int = TIMED_BATCHES) -> None:
        self.handoff_s = handoff_s
        self.timed_batches = timed_batches
        self.gpu_seconds: dict[int, deque] = {}
        self.gpu_free_at = 0.0  # time.monotonic() when the last finished batch was done
        self.lock = threading.Lock()

    def finished(self, size: int, gpu_seconds: float | None, at: float | None = None) -> None:
        """A batch of ``size`` samples is done (``at``, default now), having kept the GPU busy ``gpu_seconds``
        (None: not timed)."""
        with self.lock:
            self.gpu_free_at = time.monotonic() if at is None else at
            if gpu_seconds is not None:
                self.gpu_seconds.setdefault(size, deque(maxlen=self.timed_batches)).append(gpu_seconds)

    def return_at(self, size: int, launch_began: float) -> float | None:
        """When execute should return for a batch of ``size`` whose launch began at ``launch_began``, asked once the
        batch before it is done; None for a size not timed yet (return at once)."""
        with self.lock:
            recent = self.gpu_seconds.get(size)
            if not recent:
                return None
            # Its kernels ran from the later of its launch and the batch before finishing: a lower bound, since eager
            # engines launch kernel by kernel and the GPU starts on the first while the rest are being launched.
            started_at = max(launch_began, self.gpu_free_at)
            return started_at + statistics.median(recent) - self.handoff_s
