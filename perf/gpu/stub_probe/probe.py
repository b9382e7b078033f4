"""The pipeline reduced to the parts that may crash a Python-backend stub, each switched by a config parameter, so
that perf/gpu/stub_crash.py can vary one at a time: where the request tensors are read (main thread or a pool),
Triton metrics (none, a family, increments), torch and the device, BLS (none, numpy, DLPack), a decoupled target
and whether its response stream is drained, how outputs are read back. Numpy alone unless torch is asked for.
"""

import faulthandler
import json
import os
from concurrent.futures import ThreadPoolExecutor

import triton_python_backend_utils as pb_utils  # first: with trtrepo's server it makes the environment importable
import numpy as np

SHAPE = (3, 224, 224)


class TritonPythonModel:
    def initialize(self, args):
        self.p = {k: v["string_value"] for k, v in json.loads(args["model_config"])["parameters"].items()}
        folder = os.environ.get("PROBE_FAULTS")
        if folder:  # every thread's Python stack, should this stub die of a signal
            self._faults = open(os.path.join(folder, f"{args['model_instance_name']}-{os.getpid()}.txt"), "w")
            faulthandler.enable(self._faults, all_threads=True)
        self.pool = ThreadPoolExecutor(4) if self.p["read"] == "pool" else None
        self.torch = None
        if self.p["torch"] != "none":
            import torch

            self.torch = torch
            self.device = torch.device(f"cuda:{args['model_instance_device_id']}" if self.p["torch"] == "cuda" else "cpu")
        if self.p["metrics"] != "none":
            self.family = pb_utils.MetricFamily(name="probe_seconds", description="probe",
                                                kind=pb_utils.MetricFamily.COUNTER)
            self.metric = self.family.Metric(labels={"model": args["model_name"]})

    def _read(self, request):
        data = pb_utils.get_input_tensor_by_name(request, "image").as_numpy().reshape(-1)
        return np.frombuffer(bytes(data[0]) or b"\0", np.uint8).astype(np.float32).mean()

    def execute(self, requests):
        values = list(self.pool.map(self._read, requests)) if self.pool else [self._read(r) for r in requests]
        answers = self._bls(values) if self.p["bls"] != "none" else np.asarray(values, np.float32)[:, None]
        if self.p["metrics"] == "increment":
            for _ in range(7):
                self.metric.increment(0.001)
        return [pb_utils.InferenceResponse([pb_utils.Tensor("score", answers[i:i + 1, :1].astype(np.float32))])
                for i in range(len(requests))]

    def _bls(self, values):
        batch = np.empty((len(values), *SHAPE), np.float32)
        batch[:] = np.asarray(values, np.float32)[:, None, None, None]
        if self.p["bls"] == "dlpack":
            tensor = pb_utils.Tensor.from_dlpack("x", self.torch.utils.dlpack.to_dlpack(
                self.torch.from_numpy(batch).to(self.device).contiguous()))
        else:
            tensor = pb_utils.Tensor("x", batch)
        request = pb_utils.InferenceRequest(model_name=self.p["target"], requested_output_names=["y"], inputs=[tensor])
        if self.p["target"].endswith("stream"):
            stream = request.exec(decoupled=True)
            response = next(r for r in stream if r.has_error() or r.output_tensors())
            if self.p["drain"] == "yes":
                for _ in stream:
                    pass
        else:
            response = request.exec()
        if response.has_error():
            raise RuntimeError(response.error().message())
        out = pb_utils.get_output_tensor_by_name(response, "y")
        if out.is_cpu():
            return out.as_numpy()
        return self.torch.from_dlpack(out.to_dlpack()).cpu().numpy()

    def finalize(self):
        if self.pool:
            self.pool.shutdown(wait=False)
        if self.p["release"] == "yes" and self.p["metrics"] != "none":
            del self.metric, self.family
