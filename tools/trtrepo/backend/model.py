"""The Triton Python-backend model behind every non-native variant: it runs the variant's engine.

Imported by the two-line ``model.py`` that `trtrepo repo` writes into each version folder; runs inside
Triton's Python backend stub, which is why ``triton_python_backend_utils`` is importable here. What does not need
Triton (splitting a batch per request, answering in launch order, pacing, guarding every send) is in
trtrepo.backend.batches, tested on a CPU; this module turns batches into Triton tensors and responses.

On a GPU instance whose engine has a GPU runner, tensors stay on the GPU: inputs arrive as CUDA tensors (the
config sets FORCE_CPU_ONLY_INPUT_TENSORS to "no"; clients using CUDA shared memory hand them over without a
copy), reach PyTorch through DLPack, and outputs go back the same way. Inputs that arrive in host memory are
staged through pinned memory. A single request's batch is used as it is; only several are concatenated. Every
other instance (CPU instances, engines without a GPU runner) takes and returns host memory, and never imports
PyTorch or touches CUDA for it.

A model refuses to load into a stub whose numpy garbles tensors (numpy 2 under this server's stub:
trtrepo.backend.stub_python), rather than answer wrong numbers.

A pipelined (decoupled) model's execute only launches a batch: a worker thread waits for the GPU and answers,
so the instance already launches the next batch while the GPU runs this one (trtrepo.backend.batches.Responder). Without
that, the GPU idles for every hand-off between the server and this process (H100, ResNet50 FP16 at batch 256:
served 83-86% of in-process throughput without pipelining, 88-91% with it).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

from trtrepo.backend.batches import LaunchedBatch, Responder, host_array, launched, per_request
from trtrepo.backend.stub_python import MemoryFailures, record_fatal_stacks, refuse_garbling_stub
from trtrepo.engines import get_engine
from trtrepo.engines.base import load_runner
from trtrepo.models import spec_of


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        record_fatal_stacks(args["model_instance_name"])
        refuse_garbling_stub(pb_utils)
        config = json.loads(args["model_config"])
        params = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
        spec = spec_of(params)
        artifact = Path(args["model_repository"]) / args["model_version"] / params["artifact"]
        engine = get_engine(params["engine"])
        self.input_names = [t.name for t in spec.inputs]
        self.outputs = spec.outputs
        on_gpu = args["model_instance_kind"] == "GPU"
        # Instances share the cores: give each its part rather than letting every one spawn a thread per core.
        # The count comes from the "instances" parameter where the config has it (trtrepo.format.config.INSTANCES_PARAMETER).
        groups = sum(group.get("count", 1) for group in config.get("instance_group", [])) or 1
        threads = max(1, (os.cpu_count() or 1) // int(params.get("instances", groups)))
        note = engine.load_note(artifact, params["precision"])
        if note is not None:
            (pb_utils.Logger.log_warn if note.warning else pb_utils.Logger.log_info)(f"{args['model_name']}: {note.text}")
        loaded = load_runner(spec, engine, artifact, params["precision"], config, on_gpu,
                             int(args["model_instance_device_id"]) if on_gpu else 0, threads)
        self.run_on_gpu, self.run = loaded.gpu, loaded.host
        self.memory = MemoryFailures(pb_utils, args["model_name"])
        self.responder: Responder | None = None
        if config.get("model_transaction_policy", {}).get("decoupled", False):
            self.responder = Responder(self._responses, self._error_responses, _send_final, pb_utils.Logger.log_error)

    def execute(self, requests: list) -> list | None:
        """Run all requests the dynamic batcher gathered as one batch, then split the outputs back. Pipelined:
        launch the batch and leave the answers to the responder thread."""
        if self.responder is None:
            return self._responses(len(requests), launched(lambda: self._launch(requests)))
        self.responder.launch(lambda: self._launch(requests), [r.get_response_sender() for r in requests])
        return None

    def _launch(self, requests: list) -> LaunchedBatch:
        return (self._launch_on_gpu if self.run_on_gpu else self._run_on_host)(requests)

    def finalize(self) -> None:
        if self.responder is not None:
            self.responder.stop()

    def _responses(self, count: int, batch: LaunchedBatch) -> list:
        """One response per request: its slice of every output, or the batch's error."""
        slices = per_request(batch, [t.name for t in self.outputs])
        if isinstance(slices, Exception):
            return self._error_responses(count, slices)
        return [pb_utils.InferenceResponse(output_tensors=[batch.to_tensor(name, value) for name, value in outputs.items()])
                for outputs in slices]

    def _error_responses(self, count: int, exc: Exception) -> list:
        """The batch's error for each of its requests."""
        self.memory.count(exc, count)
        error = pb_utils.TritonError(f"{exc.__class__.__name__}: {exc}")
        return [pb_utils.InferenceResponse(error=error) for _ in range(count)]

    def _run_on_host(self, requests: list) -> LaunchedBatch:
        per_input = {n: [host_array(pb_utils.get_input_tensor_by_name(r, n)) for r in requests] for n in self.input_names}
        batch = {n: arrays[0] if len(arrays) == 1 else np.concatenate(arrays) for n, arrays in per_input.items()}
        dtypes = {t.name: t.dtype for t in self.outputs}

        def to_tensor(name: str, array: np.ndarray) -> Any:
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


def _gpu_tensor(name: str, tensor: Any) -> Any:
    """An output of a GPU runner, handed over where it lies (DLPack, which takes row-major tensors only)."""
    return pb_utils.Tensor.from_dlpack(name, tensor.contiguous())


def _send_final(sender: Any, response: Any) -> None:
    sender.send(response, flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
