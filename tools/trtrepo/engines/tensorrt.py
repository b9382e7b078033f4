"""TensorRT plans through polygraphy's loaders: ONNX -> network -> builder config -> serialized plan.

Kept thin on purpose: TensorRT needs an NVIDIA GPU and the tensorrt package, and where either is missing
`unavailable` says so in one line before anything is imported. Caches live beside the plan, so rebuilds
reuse tactic timings (timing.cache) and INT8 scales (calibration.cache); layers.json is the engine
inspector's report of which ONNX layers TensorRT fused into which engine layers.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from trtrepo.engines.base import BuildInputs, Engine, Runner
from trtrepo.errors import UserError

if TYPE_CHECKING:
    from trtrepo.specs import ModelSpec

MIN_TENSORRT = "8.6"
TIMING_CACHE = "timing.cache"
CALIBRATION_CACHE = "calibration.cache"
LAYER_REPORT = "layers.json"


def profile_shapes(spec: "ModelSpec", max_batch_size: int, preferred: tuple[int, ...]) -> dict[str, tuple[tuple, tuple, tuple]]:
    """min/opt/max shapes per input: batch 1 .. max_batch_size, tuned for the largest preferred batch; variable
    dimensions (CTPN's image size) over the range the model spec declares."""
    opt = max(preferred) if preferred else max_batch_size
    shapes = {}
    for tensor in spec.inputs:
        low, typical, high = spec.shape_range(tensor)
        shapes[tensor.name] = ((1, *low), (opt, *typical), (max_batch_size, *high))
    return shapes


class TensorRTEngine(Engine):
    name = "tensorrt"
    precisions = ("fp32", "fp16", "int8")
    artifact = "model.plan"
    native_backend = "tensorrt"
    native_platform = "tensorrt_plan"

    def unavailable(self, precision: str) -> str | None:
        try:
            import tensorrt
        except (ImportError, OSError):  # OSError: the wheel's stub without its CUDA libraries
            return ("TensorRT is not installed: on a machine with an NVIDIA GPU run pip install 'trtrepo[tensorrt]' "
                    "(or use an NGC TensorRT/Triton container)")
        try:
            from polygraphy.mod.util import version
        except ImportError:
            return "polygraphy is not installed (trtrepo builds TensorRT plans through it): pip install 'trtrepo[tensorrt]'"
        if version(tensorrt.__version__) < version(MIN_TENSORRT):
            return f"TensorRT {tensorrt.__version__} is installed; trtrepo needs {MIN_TENSORRT} or newer"
        if shutil.which("nvidia-smi") is None and not Path("/dev/nvidia0").exists():
            return "no NVIDIA GPU found: TensorRT builds plans for the GPU it runs on"
        return None

    def build(self, inputs: BuildInputs, precision: str, out_file: Path) -> None:
        from polygraphy import mod
        from polygraphy.backend.trt import (
            Calibrator,
            CreateConfig,
            Profile,
            engine_from_network,
            network_from_onnx_path,
            save_engine,
        )

        trt = mod.lazy_import(f"tensorrt>={MIN_TENSORRT}")
        folder = out_file.parent
        profile = Profile()
        for name, (low, opt, high) in profile_shapes(inputs.spec, inputs.max_batch_size, inputs.preferred_batch_sizes).items():
            profile.add(name, min=low, opt=opt, max=high)
        calibrator = None
        if precision == "int8":
            if inputs.calibration is None:
                raise UserError("tensorrt int8 needs calibration data (--calib-dir)")
            calibrator = Calibrator(inputs.calibration.batches(inputs.spec), cache=str(folder / CALIBRATION_CACHE))
        timing_cache = folder / TIMING_CACHE
        config = CreateConfig(
            fp16=precision in ("fp16", "int8"),  # int8 layers without a good int8 kernel fall back to fp16
            int8=precision == "int8",
            calibrator=calibrator,
            profiles=[profile],
            load_timing_cache=str(timing_cache) if timing_cache.is_file() else None,
            profiling_verbosity=trt.ProfilingVerbosity.DETAILED,
        )
        inputs.log(f"TensorRT {trt.__version__}: building {precision} plan for batch 1..{inputs.max_batch_size}")
        engine = engine_from_network(network_from_onnx_path(str(inputs.onnx_path)), config=config, save_timing_cache=str(timing_cache))
        save_engine(engine, path=str(out_file))
        report = engine.create_engine_inspector().get_engine_information(trt.LayerInformationFormat.JSON)
        (folder / LAYER_REPORT).write_text(json.dumps(json.loads(report), indent=1))
        inputs.log(f"{len(json.loads(report).get('Layers', []))} engine layers; fusion report in {folder / LAYER_REPORT}")

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

