"""Server-side pipeline (a Triton BLS model): encoded image bytes in, the model's answer out (top-k labels,
boxes, text lines: see pipeline_tasks.py).

Triton's dynamic batcher hands ``execute`` the requests waiting (one image each, up to the tensor model's batch
limit); their images are decoded and prepared on a thread pool, and those of one shape are sent to the tensor
model as one BLS request, so its own batcher sees them all at once. A client in any language needs no
preprocessing. A request whose bytes are no image, or whose options are out of range, gets its own INVALID_ARG
error; the others of the batch are answered.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import triton_python_backend_utils as pb_utils

from trtrepo.backend.pipeline_tasks import PREPARE_THREADS, Prepared, pipeline_task
from trtrepo.backend.stub_python import refuse_garbling_stub
from trtrepo.errors import UserError
from trtrepo.models import get_model
from trtrepo.specs import decode_image

def _failed(message: str, code: object | None = None) -> object:
    error = pb_utils.TritonError(message) if code is None else pb_utils.TritonError(message, code)
    return pb_utils.InferenceResponse(error=error)


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        refuse_garbling_stub(pb_utils)
        params = {k: v["string_value"] for k, v in json.loads(args["model_config"]).get("parameters", {}).items()}
        self.task = pipeline_task(get_model(params["model"]))
        self.variant = params["variant"]
        self.pool = ThreadPoolExecutor(PREPARE_THREADS, thread_name_prefix="pipeline-prepare")

    def execute(self, requests: list) -> list:
        responses = list(self.pool.map(self._prepare, requests))
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for index, prepared in enumerate(responses):
            if isinstance(prepared, Prepared):
                by_shape.setdefault(prepared.array.shape, []).append(index)
        for indices in by_shape.values():
            try:
                answers = self._infer([responses[i] for i in indices])
            except Exception as exc:  # the tensor model failed: every request it held gets the reason
                answers = [_failed(f"{exc.__class__.__name__}: {exc}")] * len(indices)
            for index, answer in zip(indices, answers):
                responses[index] = answer
        return responses

    def finalize(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)

    def _prepare(self, request: object) -> Prepared | object:
        """The request's image ready for the tensor model, or the response that tells the client why not."""
        try:
            images = pb_utils.get_input_tensor_by_name(request, "image").as_numpy().reshape(-1)
            if images.size != 1:
                raise ValueError(f"send one image per request, not {images.size}: the pipeline batches requests itself")
            given = {tensor.name: found.as_numpy() for tensor, _, _ in self.task.options
                     if (found := pb_utils.get_input_tensor_by_name(request, tensor.name)) is not None}
            options = self.task.read_options(given)
            return self.task.prepare(decode_image(bytes(images[0]), "image"), options)
        except (ValueError, UserError) as exc:  # the request's own fault: HTTP 400 / gRPC INVALID_ARGUMENT
            return _failed(str(exc), pb_utils.TritonError.INVALID_ARG)
        except Exception as exc:  # reported to the client as this request's error
            return _failed(f"{exc.__class__.__name__}: {exc}")

    def _infer(self, ready: list[Prepared]) -> list[object]:
        """One BLS request of images of one shape; a response per image."""
        spec = self.task.spec
        inference = pb_utils.InferenceRequest(
            model_name=self.variant,
            requested_output_names=[t.name for t in spec.outputs],
            inputs=[pb_utils.Tensor(spec.inputs[0].name, np.stack([p.array for p in ready]))],
        ).exec()
        if inference.has_error():
            raise RuntimeError(f"{self.variant}: {inference.error().message()}")
        raw = {t.name: pb_utils.get_output_tensor_by_name(inference, t.name).as_numpy() for t in spec.outputs}
        return [pb_utils.InferenceResponse(output_tensors=[
            pb_utils.Tensor(name, array) for name, array in
            self.task.answer({name: value[index : index + 1] for name, value in raw.items()}, prepared).items()])
            for index, prepared in enumerate(ready)]
