"""The Triton Python-backend model behind every non-native variant: it runs the variant's engine.

Imported by the two-line ``model.py`` that `trtrepo repo` writes into each version folder; runs inside
Triton's Python backend stub, which is why ``triton_python_backend_utils`` is importable here.

On a GPU instance whose engine has a GPU runner, tensors stay on the GPU: inputs arrive as CUDA tensors (the
config sets FORCE_CPU_ONLY_INPUT_TENSORS to "no"; clients using CUDA shared memory hand them over without a
copy), reach PyTorch through DLPack, and outputs go back the same way. Inputs that arrive in host memory are
staged through pinned memory. A single request's batch is used as it is; only several are concatenated.

A pipelined (decoupled) model's execute only launches a batch: a worker thread waits for the GPU and answers,
so the instance already launches the next batch while the GPU runs this one. Without that, the GPU idles for
every hand-off between the server and this process (H100, ResNet50 FP16 at batch 256: served 83-86% of
in-process throughput without pipelining, 88-91% with it). execute returns shortly before the batch it
launched is expected to finish (trtrepo.pacing), not at once, so that the dynamic batcher gathers as many
requests as it would for a model that is not pipelined.
"""

from __future__ import annotations

import json
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import triton_python_backend_utils as pb_utils

from trtrepo.engines import get_engine
from trtrepo.engines.base import load_runner
from trtrepo.models import get_model
from trtrepo.pacing import BatchPacer


#: Inputs in a client's CUDA shared memory are mapped into this process per request (CUDA IPC), and unmapping
#: one waits until the GPU has finished everything queued (H100: 1.3 s behind a queue of matrix products, 0.1 ms
#: when idle) and holds up every launch meanwhile. A pipelined instance therefore unmaps the inputs of answered
#: batches when none is in flight, or, under unbroken load, once per this many batches.
UNMAP_EVERY = 64
#: Batches a pipelined instance keeps launched: one running, one queued behind it. execute returns no earlier than
#: the running one is done, and then only shortly before its own batch is expected to finish (trtrepo.pacing).
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


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        params = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
        spec = get_model(params["model"])
        artifact = Path(args["model_repository"]) / args["model_version"] / params["artifact"]
        engine = get_engine(params["engine"])
        self.input_names = [t.name for t in spec.inputs]
        self.outputs = spec.outputs
        on_gpu = args["model_instance_kind"] == "GPU"
        # Instances share the cores: give each its part rather than letting every one spawn a thread per core.
        # The count comes from the "instances" parameter where the config has it (trtrepo.config.INSTANCES_PARAMETER).
        groups = sum(group.get("count", 1) for group in config.get("instance_group", [])) or 1
        threads = max(1, (os.cpu_count() or 1) // int(params.get("instances", groups)))
        loaded = load_runner(spec, engine, artifact, params["precision"], config, on_gpu,
                             int(args["model_instance_device_id"]) if on_gpu else 0, threads)
        self.run_on_gpu, self.run = loaded.gpu, loaded.host
        self.on_gpu = on_gpu
        self.launched: queue.Queue | None = None
        if config.get("model_transaction_policy", {}).get("decoupled", False):
            self.launched = queue.Queue()
            self.slots = threading.Semaphore(IN_FLIGHT - 1)
            self.in_flight = 0
            self.launching = threading.Lock()  # held while launching, and while unmapping (see UNMAP_EVERY)
            self.pacer = BatchPacer()
            self.responder = threading.Thread(target=self._respond_in_turn, name="trtrepo-responder", daemon=True)
            self.responder.start()

    def execute(self, requests: list) -> list | None:
        """Run all requests the dynamic batcher gathered as one batch, then split the outputs back. Pipelined:
        launch the batch and leave the answers to the responder thread."""
        if self.launched is None:
            return self._responses(len(requests), self._launch(requests))
        with self.launching:
            launch_began = time.monotonic()
            batch = self._launch(requests)
            self.launched.put(([r.get_response_sender() for r in requests], batch))
            self.in_flight += 1
        self.slots.acquire()  # returns once fewer than IN_FLIGHT batches are unanswered
        return_at = self.pacer.return_at(sum(batch.sizes), launch_began)  # see trtrepo.pacing
        if return_at is not None:
            batch.done.wait(max(0.0, return_at - time.monotonic()))
        return None

    def _launch(self, requests: list) -> LaunchedBatch:
        try:
            return (self._launch_on_gpu if self.run_on_gpu else self._run_on_host)(requests)
        except Exception as exc:  # reported to every waiting client instead of killing the stub
            return LaunchedBatch(sizes=[], error=exc)

    def finalize(self) -> None:
        if self.launched is not None:
            self.launched.put(None)
            self.responder.join()

    def _respond_in_turn(self) -> None:
        """The responder thread: answers launched batches in launch order, and unmaps their inputs (UNMAP_EVERY)."""
        answered_inputs = []
        while (launched := self.launched.get()) is not None:
            senders, batch = launched
            try:
                responses = self._responses(len(senders), batch)
                timed = batch.error is None and batch.gpu_seconds is not None
                self.pacer.finished(sum(batch.sizes), batch.gpu_seconds() if timed else None)
                batch.done.set()
                for sender, response in zip(senders, responses):
                    sender.send(response, flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
            except Exception as exc:  # a client that went away: later batches still get their answers
                pb_utils.Logger.log_error(f"trtrepo: answering a batch failed: {exc}")
            answered_inputs.append(batch.inputs)
            del launched, batch
            with self.launching:
                self.in_flight -= 1
                if self.in_flight == 0 or len(answered_inputs) >= UNMAP_EVERY:
                    answered_inputs.clear()
            self.slots.release()

    def _responses(self, count: int, batch: LaunchedBatch) -> list:
        """One response per request: its slice of every output, or the batch's error."""
        try:
            batch.wait()
        except Exception as exc:
            batch.error = exc
        if batch.error is not None:
            error = pb_utils.TritonError(f"{batch.error.__class__.__name__}: {batch.error}")
            return [pb_utils.InferenceResponse(error=error) for _ in range(count)]
        responses, start = [], 0
        for size in batch.sizes:
            tensors = [batch.to_tensor(t.name, batch.outputs[t.name][start : start + size]) for t in self.outputs]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            start += size
        return responses

    def _run_on_host(self, requests: list) -> LaunchedBatch:
        per_input = {n: [_host_array(pb_utils.get_input_tensor_by_name(r, n)) for r in requests] for n in self.input_names}
        batch = {n: arrays[0] if len(arrays) == 1 else np.concatenate(arrays) for n, arrays in per_input.items()}
        dtypes = {t.name: t.dtype for t in self.outputs}

        def to_tensor(name: str, array: np.ndarray) -> Any:
            if self.on_gpu:  # an engine without a GPU runner on a GPU instance: outputs in host memory arrive empty
                import torch

                return _gpu_tensor(name, torch.from_numpy(np.ascontiguousarray(array, dtypes[name])).cuda())
            return pb_utils.Tensor(name, array.astype(dtypes[name]))

        return LaunchedBatch([a.shape[0] for a in per_input[self.input_names[0]]], self.run(batch), to_tensor)

    def _launch_on_gpu(self, requests: list) -> LaunchedBatch:
        """Queue the batch's work on the current CUDA stream and return without waiting for it."""
        import torch

        def as_torch(request: Any, name: str) -> "torch.Tensor":
            return torch.from_dlpack(pb_utils.get_input_tensor_by_name(request, name).to_dlpack())

        def joined(tensors: list["torch.Tensor"]) -> "torch.Tensor":
            batch = tensors[0] if len(tensors) == 1 else torch.cat(tensors)
            return batch if batch.is_cuda else batch.pin_memory()  # pinned: the copy to the GPU runs as DMA

        per_input = {n: [as_torch(r, n) for r in requests] for n in self.input_names}
        started, done = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        started.record()
        outputs = self.run_on_gpu({n: joined(tensors) for n, tensors in per_input.items()})
        done.record()
        sizes = [t.shape[0] for t in per_input[self.input_names[0]]]
        return LaunchedBatch(sizes, outputs, _gpu_tensor, wait=done.synchronize, inputs=per_input,
                             gpu_seconds=lambda: started.elapsed_time(done) / 1000)


def _host_array(tensor: Any) -> np.ndarray:
    """An input in host memory. A GPU instance is handed its inputs where they lie (FORCE_CPU_ONLY_INPUT_TENSORS
    "no"), so one whose engine runs from host memory (no GPU runner) may get GPU memory, which as_numpy cannot read."""
    if tensor.is_cpu():
        return tensor.as_numpy()
    import torch

    return torch.from_dlpack(tensor.to_dlpack()).cpu().numpy()


def _gpu_tensor(name: str, tensor: Any) -> Any:
    """An output of a GPU instance, handed over in GPU memory (DLPack, which takes row-major tensors only).

    Never through host memory: with this server (tritonserver 2.51 of nvidia-pytriton 0.7.0) every output a
    Python-backend model on a GPU instance returns in host memory reaches the client empty (H200, numpy and pinned
    torch alike, pipelined or not: perf/reports/h200-inductor/README.md), while DLPack outputs arrive whole."""
    return pb_utils.Tensor.from_dlpack(name, tensor.contiguous())
