"""The Python that Triton's Python-backend stub runs: its import path, and whether its numpy can cross the stub.

Standard library only at import: triton_utils_shim.py runs this file inside the stub before any package is
importable, and trtrepo.serving.server runs it (``python -I -S stub_python.py PATH``) to learn which numpy the stub will
import before it starts a server.

Why numpy matters: the stub of tritonserver 2.51 (nvidia-pytriton 0.7.0, Triton 24.10) is compiled with a pybind11
older than 2.12, against numpy 1.x's C API (its binary imports ``numpy.core.multiarray`` and knows no
``numpy._core``). Imported together with numpy 2 it misreads the dtype of every tensor it builds from memory: an
input arrives as its first element repeated, and an output in host memory is refused by the server ("output tensor
shape does not match size of output"). An echo model shows it on a CPU; GPU visibility and the server's memory
pools change nothing.
"""

from __future__ import annotations

import ctypes
import os
import site
import sys
from typing import Any


#: The environment variable that names the folders the stub puts first on its path.
PATH_ENV = "TRTREPO_PYTHONPATH"
#: The environment variable that names a folder where each stub writes the Python stacks of its threads if it
#: dies of a fatal signal: the kernel's log on the GPU machines records no user-space segfault, and the server's
#: log never shows a stub's stderr.
FAULTS_ENV = "TRTREPO_STUB_FAULTS"
#: A stub's count of the requests it failed for want of memory (labels: model, pid), read by the stub watchdog
#: (trtrepo.serving.stubs): a stub starved of memory (an address-space limit, an exhausted heap) fails a share of its
#: requests forever while Triton calls it healthy, and a new process does not inherit the starvation.
MEMORY_FAILURES_METRIC = "trtrepo_stub_memory_failures"
#: What the errors of a process out of memory say where they are not a MemoryError: the C library's ENOMEM, a shared
#: library's lazy import that cannot map its segments, a thread whose stack cannot be mapped.
MEMORY_ERROR_SIGNS = ("Cannot allocate memory", "failed to map segment", "can't start new thread")
#: Found in stub binaries whose pybind11 knows numpy 2's module layout (2.12 and newer).
NUMPY2_MARKER = b"numpy._core"


def put_first(entries: str) -> None:
    """The folders of ``entries`` (os.pathsep-separated, their .pth files processed so editable installs work) in
    front of sys.path: the stub embeds the system's libpython and ignores PYTHONPATH."""
    added: list[str] = []
    for entry in filter(None, entries.split(os.pathsep)):
        before = set(sys.path)
        site.addsitedir(entry)
        added += [p for p in sys.path if p not in before]
    sys.path[:] = added + [p for p in sys.path if p not in added]


def record_fatal_stacks(instance: str) -> None:
    """Inside a stub, at a model's load, where FAULTS_ENV names a folder: faulthandler writes every thread's stack
    there (INSTANCE-PID.txt) if the stub dies of SIGSEGV, SIGBUS, SIGFPE, SIGILL or SIGABRT."""
    folder = os.environ.get(FAULTS_ENV)
    if not folder:
        return
    import faulthandler

    os.makedirs(folder, exist_ok=True)
    # Kept open for the stub's life: faulthandler writes to the file descriptor when the signal comes.
    stacks = open(os.path.join(folder, f"{instance}-{os.getpid()}.txt"), "w")  # noqa: SIM115
    faulthandler.enable(stacks, all_threads=True)


def refuse_garbling_stub(pb_utils: Any) -> None:
    """Inside a stub, at a model's load: fail it with the reason where tensors built from memory come out wrong (a
    known tensor sent through DLPack, the way every request's input is built), rather than answer wrong numbers."""
    import numpy as np

    sent = np.arange(1, 7, dtype=np.float32)
    received = pb_utils.Tensor.from_dlpack("probe", pb_utils.Tensor("sent", sent)).as_numpy()
    if not np.array_equal(received, sent):
        raise RuntimeError(f"this Python-backend stub garbles tensors with numpy {np.__version__} "
                           f"({os.path.dirname(np.__file__)}): {sent.tolist()} came back as {received.tolist()}; "
                           "it needs numpy < 2 first on its path")


def outlive_the_stub(*objects: object) -> None:
    """Triton metrics and their families, never freed by Python: the stub process's exit frees them.

    In Triton 24.10 neither moment Python could free one at is safe. While the model serves, freeing one deletes it
    in the server, where a metric or family of the same name and labels is one object shared by every instance of the
    model and by its next version (loaded before this one is unloaded): their later increments are a SIGSEGV of
    tritonserver. At the stub's teardown, which frees what a model left only after the stub itself is gone, freeing
    one reads the stub's gone shared memory: a segfault of the stub (Metric::SaveToSharedMemory; python_backend PR 429).
    """
    for kept in objects:
        ctypes.pythonapi.Py_IncRef(ctypes.py_object(kept))


class MemoryFailures:
    """Inside a stub: counts the requests it failed for want of memory in MEMORY_FAILURES_METRIC, this process's own."""

    def __init__(self, pb_utils: Any, model: str) -> None:
        self.family = pb_utils.MetricFamily(name=MEMORY_FAILURES_METRIC, kind=pb_utils.MetricFamily.COUNTER,
                                            description="Requests a trtrepo stub failed for want of memory")
        self.metric = self.family.Metric(labels={"model": model, "pid": str(os.getpid())})
        outlive_the_stub(self.family, self.metric)

    def count(self, exc: BaseException, requests: int = 1) -> None:
        if isinstance(exc, MemoryError) or any(sign in str(exc) for sign in MEMORY_ERROR_SIGNS):
            self.metric.increment(requests)


if __name__ == "__main__":  # which numpy a stub with these folders first would import: its version and folder
    put_first(sys.argv[1] if len(sys.argv) > 1 else "")
    import numpy

    print(numpy.__version__)
    print(os.path.dirname(numpy.__file__))
