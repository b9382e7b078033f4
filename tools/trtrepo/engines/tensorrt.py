"""TensorRT plans through polygraphy's loaders: ONNX -> network -> builder config -> serialized plan.

Kept thin on purpose: TensorRT needs an NVIDIA GPU and the tensorrt package, and where either is missing
`unavailable` says so in one line before anything is imported. INT8 is explicit quantization: the plan is built
from the Q/DQ ONNX model of the shared calibration (trtrepo.engines.quantization, TensorRT's symmetric encoding, kept
beside the plan as int8_qdq.onnx), never through TensorRT's implicit calibrator, which TensorRT 10.1 deprecated
("superseded by explicit quantization") and 11 removed. The timing cache lives beside the plan, so rebuilds reuse
tactic timings; layers.json is the engine inspector's report of which ONNX layers were fused into which.

A plan loads only on the TensorRT version that built it, so TensorRT is pinned to the version the target Triton
container ships (TARGET_TRITON) and the manifest records the version that built each plan (trtrepo validate).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from trtrepo.engines import quantization
from trtrepo.engines.base import BuildInputs, Engine, GpuRunner, Runner, cuda_available
from trtrepo.errors import UserError

if TYPE_CHECKING:
    from trtrepo.specs import ModelSpec


#: The Triton release this project deploys to (the server of nvidia-pytriton 0.7.0, 2.51.0, is release 24.10) and
#: the TensorRT its NGC containers (tritonserver:24.10-py3, tensorrt:24.10-py3) ship: TensorRT 10.5.0.18 (Triton
#: 24.10 release notes). pyproject's [tensorrt] extra pins the same minor version.
TARGET_TRITON = "24.10"
TARGET_TENSORRT = "10.5.0"
#: The TensorRT API this engine is written against: 10.x (11 removed BuilderFlag.FP16/INT8 and weakly typed networks).
TENSORRT_MAJOR = 10
TIMING_CACHE = "timing.cache"
LAYER_REPORT = "layers.json"
#: The explicit Q/DQ model an INT8 plan is built from, kept beside it (the accuracy gate ranks its nodes).
INT8_SOURCE = "int8_qdq.onnx"


def profile_shapes(spec: "ModelSpec", max_batch_size: int, preferred: tuple[int, ...]) -> dict[str, tuple[tuple, tuple, tuple]]:
    """min/opt/max shapes per input: batch 1 .. max_batch_size, tuned for the largest preferred batch; variable
    dimensions (CTPN's image size) over the range the model spec declares."""
    opt = max(preferred) if preferred else max_batch_size
    shapes = {}
    for tensor in spec.inputs:
        low, typical, high = spec.shape_range(tensor)
        shapes[tensor.name] = ((1, *low), (opt, *typical), (max_batch_size, *high))
    return shapes


def builder_flags(precision: str) -> dict[str, bool]:
    """Polygraphy CreateConfig's precision flags. TF32 always: PyTorch's cuDNN convolutions (the baseline) and
    trtexec use it by default, and Polygraphy clears it unless asked. INT8 plans may run layers without an int8
    kernel in FP16. No calibrator: an INT8 network carries its scales in Q/DQ layers."""
    return {"tf32": True, "fp16": precision in ("fp16", "int8"), "int8": precision == "int8"}


def release(version: str) -> tuple[int, ...]:
    """major.minor.patch of a TensorRT version ("10.5.0.18" -> (10, 5, 0)): what a plan's compatibility rides on."""
    parts = []
    for part in version.split(".")[:3]:
        digits = "".join(c for c in part if c.isdigit()) if part[:1].isdigit() else ""
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


@functools.cache
def installed_tensorrt() -> str | None:
    """The installed TensorRT's version: its package metadata, else the module's own (TensorRT installed from
    NVIDIA's Debian packages has no metadata); None where it is missing or cannot load (PyPI's stubs)."""
    import importlib.metadata

    try:
        return importlib.metadata.version("tensorrt")
    except importlib.metadata.PackageNotFoundError:
        pass
    try:
        import tensorrt
    except (ImportError, OSError):
        return None
    return str(tensorrt.__version__)


def plan_load_problem(built_with: str | None, target: str) -> str | None:
    """Why a plan built with TensorRT ``built_with`` would not load on TensorRT ``target``, or None. Plans are
    bound to the TensorRT release that built them (a plan built without the version-compatible flag, as these are,
    is refused by any other)."""
    if not built_with:
        return "no TensorRT version recorded for this plan; rebuild it with `trtrepo repo`"
    if release(built_with) != release(target):
        return (f"built with TensorRT {built_with}, the target loads plans of TensorRT {target} only; rebuild it there "
                f"(for Triton {TARGET_TRITON}: TensorRT {TARGET_TENSORRT}, pip install 'trtrepo[tensorrt]')")
    return None


class TensorRTEngine(Engine):
    name = "tensorrt"
    precisions = ("fp32", "fp16", "int8")
    artifact = "model.plan"
    native_backend = "tensorrt"
    native_platform = "tensorrt_plan"
    #: Triton's TensorRT backend refuses any other kind ("TensorRT backend supports only GPU device").
    instance_kinds = ("gpu",)

    def unavailable(self, precision: str) -> str | None:
        try:
            import tensorrt
        except (ImportError, OSError):  # OSError: the wheel's stub without its CUDA libraries
            return ("TensorRT is not installed: on a machine with an NVIDIA GPU run pip install 'trtrepo[tensorrt]' "
                    f"(TensorRT {TARGET_TENSORRT}, as Triton {TARGET_TRITON} ships) or use the NGC container "
                    f"nvcr.io/nvidia/tensorrt:{TARGET_TRITON}-py3")
        if release(tensorrt.__version__)[:1] != (TENSORRT_MAJOR,):
            return (f"TensorRT {tensorrt.__version__} is installed; trtrepo builds with TensorRT {TENSORRT_MAJOR}.x "
                    f"(Triton {TARGET_TRITON} loads plans of TensorRT {TARGET_TENSORRT}): pip install 'trtrepo[tensorrt]'")
        if not cuda_available():
            return "no usable NVIDIA GPU (CUDA reports none): TensorRT builds plans for the GPU it runs on"
        return None

    def build(self, inputs: BuildInputs, precision: str, out_file: Path) -> None:
        from polygraphy.backend.trt import CreateConfig, Profile, engine_from_network, network_from_onnx_path, save_engine

        import tensorrt as trt

        folder = out_file.parent
        if release(trt.__version__) != release(TARGET_TENSORRT):
            inputs.log(f"warning: TensorRT {trt.__version__} builds this plan; Triton {TARGET_TRITON} loads plans of "
                       f"TensorRT {TARGET_TENSORRT} only (trtrepo validate checks where you deploy)")
        source = inputs.onnx_path
        if precision == "int8":
            source = folder / INT8_SOURCE
            quantization.quantize(inputs, quantization.TENSORRT, source)
        profile = Profile()
        for name, (low, opt, high) in profile_shapes(inputs.spec, inputs.max_batch_size, inputs.preferred_batch_sizes).items():
            profile.add(name, min=low, opt=opt, max=high)
        timing_cache = folder / TIMING_CACHE
        config = CreateConfig(
            **builder_flags(precision),
            profiles=[profile],
            load_timing_cache=str(timing_cache) if timing_cache.is_file() else None,
            profiling_verbosity=trt.ProfilingVerbosity.DETAILED,
        )
        inputs.log(f"TensorRT {trt.__version__}: building {precision} plan for batch 1..{inputs.max_batch_size}")
        engine = engine_from_network(network_from_onnx_path(str(source)), config=config, save_timing_cache=str(timing_cache))
        save_engine(engine, path=str(out_file))
        report = engine.create_engine_inspector().get_engine_information(trt.LayerInformationFormat.JSON)
        (folder / LAYER_REPORT).write_text(json.dumps(json.loads(report), indent=1))
        inputs.log(f"{len(json.loads(report).get('Layers', []))} engine layers; fusion report in {folder / LAYER_REPORT}")

    def float_candidates(self, inputs: BuildInputs, precision: str, artifact: Path) -> list[str]:
        """The Q/DQ model's nodes that cost most accuracy, as for ONNX Runtime: a rebuild leaves them out of the Q/DQ
        model, and TensorRT runs them in FP16."""
        if precision != "int8":
            return []
        return quantization.float_candidates(inputs, artifact.parent / INT8_SOURCE)

    def load(self, spec: "ModelSpec", artifact: Path, precision: str, device: str, threads: int) -> Runner:
        from polygraphy.backend.common import BytesFromPath
        from polygraphy.backend.trt import EngineFromBytes, TrtRunner

        runner = TrtRunner(EngineFromBytes(BytesFromPath(str(artifact))))
        runner.activate()
        names = [o.name for o in spec.outputs]

        def run(batch: dict) -> dict:
            outputs = runner.infer(feed_dict=batch)
            return {n: np.asarray(outputs[n], dtype=np.float32) for n in names}

        return run

    def load_on_gpu(
        self, spec: "ModelSpec", artifact: Path, precision: str, device_id: int, graph_batch_sizes: tuple[int, ...]
    ) -> GpuRunner:
        """The plan on GPU ``device_id``, run on PyTorch's current stream over CUDA tensors (the Python-backend
        fallback where the server has no TensorRT backend): no trip through host memory, and one CUDA graph per
        batch size the config asks for, as for PyTorch."""
        import tensorrt as trt
        import torch

        from trtrepo.engines.cuda_graphs import CudaGraphs

        device = torch.device("cuda", device_id)
        torch.cuda.set_device(device)  # before deserializing: the plan's memory and its context live on this GPU
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        engine = runtime.deserialize_cuda_engine(artifact.read_bytes())
        if engine is None:
            raise UserError(f"{artifact}: TensorRT {trt.__version__} cannot load this plan (built by another TensorRT "
                            "version or for another GPU); rebuild it with `trtrepo repo`")
        context = engine.create_execution_context()
        dtypes = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int32: torch.int32}
        input_names = [t.name for t in spec.inputs]
        output_names = [t.name for t in spec.outputs]

        def forward(inputs: list["torch.Tensor"]) -> list["torch.Tensor"]:
            for name, x in zip(input_names, inputs):
                context.set_input_shape(name, tuple(x.shape))
                context.set_tensor_address(name, x.data_ptr())
            outputs = []
            for name in output_names:
                out = torch.empty(tuple(context.get_tensor_shape(name)), dtype=dtypes[engine.get_tensor_dtype(name)],
                                  device=device)
                context.set_tensor_address(name, out.data_ptr())
                outputs.append(out)
            if not context.execute_async_v3(torch.cuda.current_stream(device).cuda_stream):
                raise RuntimeError(f"TensorRT could not run {artifact}")
            return [out.float() for out in outputs]

        step = CudaGraphs(forward, graph_batch_sizes) if graph_batch_sizes else forward

        def run(batch: dict) -> dict:
            inputs = [batch[n].to(device, torch.float32, non_blocking=True).contiguous() for n in input_names]
            return dict(zip(output_names, step(inputs)))

        return run
