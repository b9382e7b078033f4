"""Inductor's settings side by side, in process, on the GPU machine: what the inductor engine's defaults rest on.

    python3 perf/gpu/inductor_settings.py [resnet50:256,yolov3:32] [default,freezing,saved,max-autotune]

For each model at its batch size: eager FP32 (the study's baseline) and each setting compiled in FP16 with the
engine's own steps (channels-last, CUDA graph at the batch size), its compile seconds and images/s, in one run.
Settings: default (the engine's), freezing (weights folded in as constants: no cache artifacts), max-autotune, bf16
(the default in bfloat16 instead of FP16), static (every shape specialised, as padded size buckets would be, instead
of CTPN's height and width compiled as symbols; the same as default for fixed-shape models), and saved: the default
compiled in a cache of its own, its artifacts saved, the compiler reset and the network compiled again from them, as
a served variant loads (its compile seconds are the load's).
"""

from __future__ import annotations

import sys
import time

import torch

from trtrepo.engines import inductor
from trtrepo.engines.cuda_graphs import CudaGraphs
from trtrepo.models import get_model


def throughput(step, batch: list[torch.Tensor], seconds: float = 4.0) -> float:
    for _ in range(3):
        step(batch)
    torch.cuda.synchronize()
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        step(batch)
        calls += 1
    torch.cuda.synchronize()
    return calls * batch[0].shape[0] / (time.perf_counter() - start)


def main() -> None:
    models = [item.split(":") for item in (sys.argv[1] if len(sys.argv) > 1 else "resnet50:256,yolov3:32").split(",")]
    settings = (sys.argv[2] if len(sys.argv) > 2 else "default,freezing,saved,max-autotune").split(",")
    device = torch.device("cuda", 0)
    print(f"# {torch.cuda.get_device_name(device)}, torch {torch.__version__}\n")
    print("| model | batch | engine | compile s | img/s | over eager FP32 |\n|---|---|---|---|---|---|")
    for name, size in models:
        spec, size = get_model(name), int(size)
        batch = [torch.randn((size, *spec.shape_range(t)[1]), device=device) for t in spec.inputs]
        eager = spec.build_network("random").to(device).eval()
        with torch.inference_mode():
            base = throughput(lambda xs: eager(*xs), batch)
        print(f"| {name} | {size} | eager fp32 | - | {base:.0f} | 1.00x |", flush=True)
        for setting in settings:
            torch.compiler.reset()
            mode = "max-autotune" if setting == "max-autotune" else "default"
            precision = "bf16" if setting == "bf16" else "fp16"
            if setting == "saved":
                with inductor.private_compile_cache():
                    inductor.warm(spec, inductor.compiled_forward(spec, spec.build_network("random"), "fp16", mode,
                                                                  device), (size,), device)
                    artifacts = torch.compiler.save_cache_artifacts()[0]
                torch.compiler.reset()
            start = time.perf_counter()
            if setting == "saved":
                torch.compiler.load_cache_artifacts(artifacts)
            forward = inductor.compiled_forward(spec, spec.build_network("random"), precision, mode, device,
                                                freezing=setting == "freezing", symbolic=setting != "static")
            step = CudaGraphs(forward, (size,))
            step(batch)
            torch.cuda.synchronize()
            compile_s = time.perf_counter() - start
            rate = throughput(step, batch)
            label = f"{precision} default" if setting == precision else f"{precision} {setting}"
            print(f"| {name} | {size} | inductor {label} | {compile_s:.0f} | {rate:.0f} | {rate / base:.2f}x |",
                  flush=True)


if __name__ == "__main__":
    main()
