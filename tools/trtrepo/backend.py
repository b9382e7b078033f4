"""The Triton Python-backend model behind every non-native variant: it runs the variant's engine.

Imported by the two-line ``model.py`` that `trtrepo repo` writes into each version folder; runs inside
Triton's Python backend stub, which is why ``triton_python_backend_utils`` is importable here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from trtrepo.engines import get_engine
from trtrepo.models import get_model


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        params = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
        spec = get_model(params["model"])
        artifact = Path(args["model_repository"]) / args["model_version"] / params["artifact"]
        device = "gpu" if args["model_instance_kind"] == "GPU" else "cpu"
        # Instances share the cores: give each its part rather than letting every one spawn a thread per core.
        instances = sum(group.get("count", 1) for group in config.get("instance_group", [])) or 1
        threads = max(1, (os.cpu_count() or 1) // instances)
        self.run = get_engine(params["engine"]).load(spec, artifact, params["precision"], device, threads)
        self.input_names = [t.name for t in spec.inputs]
        self.outputs = spec.outputs

    def execute(self, requests: list) -> list:
        """Run all requests the dynamic batcher gathered as one batch, then split the outputs back."""
        try:
            per_input = {n: [pb_utils.get_input_tensor_by_name(r, n).as_numpy() for r in requests] for n in self.input_names}
            sizes = [a.shape[0] for a in per_input[self.input_names[0]]]
            batch = {n: arrays[0] if len(arrays) == 1 else np.concatenate(arrays) for n, arrays in per_input.items()}
            outputs = self.run(batch)
        except Exception as exc:  # reported to every waiting client instead of killing the stub
            error = pb_utils.TritonError(f"{exc.__class__.__name__}: {exc}")
            return [pb_utils.InferenceResponse(error=error) for _ in requests]
        responses, start = [], 0
        for size in sizes:
            tensors = [pb_utils.Tensor(t.name, outputs[t.name][start : start + size].astype(t.dtype)) for t in self.outputs]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            start += size
        return responses
