"""Server-side detection pipeline (a Triton BLS model): encoded image bytes in, boxes, scores and class ids out.

Decodes and letterboxes the image, calls the tensor model named in the config through Business Logic
Scripting, runs NMS and maps boxes back to image pixels, so a client in any language needs no preprocessing.
Optional inputs ``conf`` and ``iou`` override the thresholds per request.
"""

from __future__ import annotations

import json

import numpy as np
import triton_python_backend_utils as pb_utils

from trtrepo.backend.stub_python import refuse_garbling_stub
from trtrepo.errors import UserError
from trtrepo.models import get_model
from trtrepo.models.yolov3 import DEFAULT_CONF, DEFAULT_IOU, to_image_coords
from trtrepo.specs import decode_image


def _threshold(request: object, name: str, default: float) -> float:
    """An optional threshold input: one finite number in [0, 1], else this request's error."""
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        return default
    values = tensor.as_numpy().reshape(-1)
    if values.size != 1 or not 0.0 <= float(values[0]) <= 1.0:  # NaN fails the comparison too
        raise ValueError(f"{name} must be one number from 0 to 1, got {values.tolist()[:4]}")
    return float(values[0])


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        refuse_garbling_stub(pb_utils)
        params = {k: v["string_value"] for k, v in json.loads(args["model_config"]).get("parameters", {}).items()}
        self.spec = get_model(params["model"])
        self.detector = params["detector"]

    def execute(self, requests: list) -> list:
        return [self._detect(request) for request in requests]

    def _detect(self, request: object) -> object:
        try:
            encoded = pb_utils.get_input_tensor_by_name(request, "image").as_numpy().reshape(-1)[0]
            conf, iou = _threshold(request, "conf", DEFAULT_CONF), _threshold(request, "iou", DEFAULT_IOU)
            image = decode_image(bytes(encoded), "image")
            array, letterbox = self.spec.letterbox_image(image)
            inference = pb_utils.InferenceRequest(
                model_name=self.detector,
                requested_output_names=["detections"],
                inputs=[pb_utils.Tensor("input", array[None])],
            ).exec()
            if inference.has_error():
                raise RuntimeError(f"{self.detector}: {inference.error().message()}")
            raw = pb_utils.get_output_tensor_by_name(inference, "detections").as_numpy()
            found = to_image_coords(self.spec.postprocess({"detections": raw}, conf=conf, iou=iou)[0], letterbox)
        except (ValueError, UserError) as exc:  # the request's own fault: HTTP 400 / gRPC INVALID_ARGUMENT
            return pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc), pb_utils.TritonError.INVALID_ARG))
        except Exception as exc:  # reported to the client as this request's error
            return pb_utils.InferenceResponse(error=pb_utils.TritonError(f"{exc.__class__.__name__}: {exc}"))
        return pb_utils.InferenceResponse(output_tensors=[
            pb_utils.Tensor("boxes", np.array([d.box for d in found], dtype=np.float32).reshape(-1, 4)),
            pb_utils.Tensor("scores", np.array([d.score for d in found], dtype=np.float32)),
            pb_utils.Tensor("class_ids", np.array([d.class_id for d in found], dtype=np.int32)),
        ])
