"""Server-side detection pipeline (a Triton BLS model): encoded image bytes in, boxes, scores and class ids out.

Triton's dynamic batcher hands ``execute`` the requests waiting (one image each, up to the detector's batch limit);
their images are decoded and letterboxed on a thread pool, sent to the detector as one BLS request, so its own
batcher sees them all at once, and the boxes are mapped back per request after NMS. A client in any language needs
no preprocessing. Optional inputs ``conf`` and ``iou`` set the thresholds per request. A request whose bytes are no
image, or whose thresholds are out of range, gets its own INVALID_ARG error; the others of the batch are answered.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import triton_python_backend_utils as pb_utils

from trtrepo.backend.stub_python import refuse_garbling_stub
from trtrepo.errors import UserError
from trtrepo.models import get_model
from trtrepo.models.yolov3 import DEFAULT_CONF, DEFAULT_IOU, Letterbox, to_image_coords
from trtrepo.specs import decode_image

#: Images decoded and letterboxed at once (PIL's decoders and numpy release the GIL).
PREPARE_THREADS = 4


@dataclass(frozen=True)
class Prepared:
    """One request's image, letterboxed for the detector, and its thresholds."""

    array: np.ndarray
    letterbox: Letterbox
    conf: float
    iou: float


def _threshold(request: object, name: str, default: float) -> float:
    """An optional threshold input: one finite number in [0, 1], else this request's error."""
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        return default
    values = tensor.as_numpy().reshape(-1)
    if values.size != 1 or not 0.0 <= float(values[0]) <= 1.0:  # NaN fails the comparison too
        raise ValueError(f"{name} must be one number from 0 to 1, got {values.tolist()[:4]}")
    return float(values[0])


def _failed(message: str, code: object | None = None) -> object:
    error = pb_utils.TritonError(message) if code is None else pb_utils.TritonError(message, code)
    return pb_utils.InferenceResponse(error=error)


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        refuse_garbling_stub(pb_utils)
        params = {k: v["string_value"] for k, v in json.loads(args["model_config"]).get("parameters", {}).items()}
        self.spec = get_model(params["model"])
        self.detector = params["detector"]
        self.pool = ThreadPoolExecutor(PREPARE_THREADS, thread_name_prefix="pipeline-prepare")

    def execute(self, requests: list) -> list:
        prepared = list(self.pool.map(self._prepare, requests))
        ready = [p for p in prepared if isinstance(p, Prepared)]
        try:
            answers = iter(self._detect(ready) if ready else [])
        except Exception as exc:  # the detector failed: every request it held gets the reason
            failure = _failed(f"{exc.__class__.__name__}: {exc}")
            return [failure if isinstance(p, Prepared) else p for p in prepared]
        return [next(answers) if isinstance(p, Prepared) else p for p in prepared]

    def finalize(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)

    def _prepare(self, request: object) -> Prepared | object:
        """The request's image ready for the detector, or the response that tells the client why not."""
        try:
            images = pb_utils.get_input_tensor_by_name(request, "image").as_numpy().reshape(-1)
            if images.size != 1:
                raise ValueError(f"send one image per request, not {images.size}: the pipeline batches requests itself")
            conf, iou = _threshold(request, "conf", DEFAULT_CONF), _threshold(request, "iou", DEFAULT_IOU)
            array, letterbox = self.spec.letterbox_image(decode_image(bytes(images[0]), "image"))
            return Prepared(array, letterbox, conf, iou)
        except (ValueError, UserError) as exc:  # the request's own fault: HTTP 400 / gRPC INVALID_ARGUMENT
            return _failed(str(exc), pb_utils.TritonError.INVALID_ARG)
        except Exception as exc:  # reported to the client as this request's error
            return _failed(f"{exc.__class__.__name__}: {exc}")

    def _detect(self, ready: list[Prepared]) -> list[object]:
        """One BLS request of every ready image; a response per image, its boxes in its own pixels."""
        inference = pb_utils.InferenceRequest(
            model_name=self.detector,
            requested_output_names=["detections"],
            inputs=[pb_utils.Tensor("input", np.stack([p.array for p in ready]))],
        ).exec()
        if inference.has_error():
            raise RuntimeError(f"{self.detector}: {inference.error().message()}")
        raw = pb_utils.get_output_tensor_by_name(inference, "detections").as_numpy()
        responses = []
        for index, request in enumerate(ready):
            found = self.spec.postprocess({"detections": raw[index : index + 1]}, conf=request.conf, iou=request.iou)[0]
            found = to_image_coords(found, request.letterbox)
            responses.append(pb_utils.InferenceResponse(output_tensors=[  # a batch of one: this request's image
                pb_utils.Tensor("boxes", np.array([d.box for d in found], dtype=np.float32).reshape(1, -1, 4)),
                pb_utils.Tensor("scores", np.array([d.score for d in found], dtype=np.float32).reshape(1, -1)),
                pb_utils.Tensor("class_ids", np.array([d.class_id for d in found], dtype=np.int32).reshape(1, -1)),
            ]))
        return responses
