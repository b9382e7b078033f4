"""PyTorch's own compiler on the GPU: TorchInductor kernels built once at `trtrepo repo` time, like a TensorRT plan.

Where TensorRT cannot run, Inductor is the fastest engine a GPU here has (H200, ResNet50 FP16 at batch 256, served:
28.8k img/s compiled and frozen against 16.4k eager with CUDA graphs and 7.3k eager FP32). The artifact is the
network's weights (model.pt) with two files beside it: Inductor's cache artifacts (inductor.cache, `torch.compiler.
save_cache_artifacts`: the compiled graphs and Triton kernels of every batch size the variant serves) and the build
record (inductor.json). Loading replays Dynamo's tracing but takes every kernel from the cache (H200: ResNet50 ready
in 11 s against a 32 s cold compile). A frozen variant (freezing = "on": weights folded in, 6-13% faster) cannot be
cached by AOTAutograd and compiles again at every load. AOTInductor's .pt2 package would skip the tracing too, but
loading one segfaulted on the study's machine (torch 2.11+cu130, `aoti_load_package`), so it is not used.

Kernels are chosen for the GPU and the compiler that built them: loading on another GPU model or another torch or
CUDA is refused with one line that says to rebuild there (the build record). Batches are padded up to the compiled
sizes (the preferred batch sizes and the maximum, where CUDA graphs are also captured), so the dynamic batcher's odd
sizes never start a compile mid-traffic. Inputs of variable size (CTPN's height and width) are compiled once with
symbolic dimensions.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from trtrepo.engines.base import BuildInputs, Engine, GpuRunner, Runner, cuda_available, served_batch_sizes
from trtrepo.engines.cuda_graphs import CudaGraphs, Forward, Padded
from trtrepo.engines.torch_settings import with_settings
from trtrepo.environment import variables_set
from trtrepo.errors import UserError

if TYPE_CHECKING:
    import torch

    from trtrepo.specs import ModelSpec


CACHE_FILE = "inductor.cache"
RECORD_FILE = "inductor.json"
#: The plan's compile_mode -> Inductor's settings (torch.compile's mode "max-autotune-no-cudagraphs" for the second).
#: CUDA graphs are the config's (trtrepo's own capture, one per batch size), not Inductor's graph trees, which are
#: per thread and would capture every size again.
COMPILE_MODES = {"default": {}, "max-autotune": {"max_autotune": True, "coordinate_descent_tuning": True}}
#: What the kernels depend on: a build record whose values differ from the loading machine's is refused.
MACHINE_KEYS = ("gpu", "compute_capability", "torch", "cuda")


def dtype_of(precision: str) -> "torch.dtype":
    import torch

    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]


def machine(device: "torch.device") -> dict[str, str]:
    """The GPU and compiler the kernels are built for, as the build record keeps them."""
    import torch

    major, minor = torch.cuda.get_device_capability(device)
    return {"gpu": torch.cuda.get_device_name(device), "compute_capability": f"{major}.{minor}",
            "torch": torch.__version__, "cuda": str(torch.version.cuda)}


def mismatch(record: dict, here: dict[str, str]) -> str | None:
    """Why kernels of a build record cannot be loaded on ``here`` (machine()), or None."""
    differ = [f"{key} {record.get(key)!r} (here {here[key]!r})" for key in MACHINE_KEYS if record.get(key) != here[key]]
    if not differ:
        return None
    return (f"built for another machine: {', '.join(differ)}; Inductor's kernels are compiled for the GPU and torch "
            "that built them: rebuild the variant on this machine (trtrepo repo --force)")


@contextlib.contextmanager
def private_compile_cache() -> Iterator[None]:
    """Compile into an empty cache of its own: build times are cold, and the saved artifacts hold every kernel
    instead of pointing at entries of this machine's shared cache."""
    import torch

    # The artifacts record everything compiled in the process; a fresh record keeps earlier variants' out (a private
    # API: a torch without it saves those too, which costs size, not correctness).
    try:  # a submodule that nothing may have imported yet
        from torch.compiler._cache import CacheArtifactManager

        fresh = CacheArtifactManager.with_fresh_cache
    except (ImportError, AttributeError):
        fresh = contextlib.nullcontext
    with tempfile.TemporaryDirectory(prefix="trtrepo-inductor-") as scratch, fresh(), \
            variables_set({"TORCHINDUCTOR_CACHE_DIR": scratch}):
        torch.compiler.reset()
        try:
            yield
        finally:
            torch.compiler.reset()


#: A load's own cache folder in the temporary directory: the prefix, then the loading process's id.
CACHE_PREFIX = "trtrepo-inductor-"


def load_into_own_cache(cache: Path) -> None:
    """Load cache artifacts into a cache folder of this load's own (removed at exit, or by the next load once this
    process is gone): the kernels served are exactly the artifact's, whatever this machine's shared cache holds, and
    a load is timed from the artifact. TORCHINDUCTOR_CACHE_DIR stays pointed there for the process, not a block:
    Inductor reads it at every compile, including the recompiles of a variable shape met while serving, and writes
    it into os.environ itself at its first compile; the next load in the same process (bench) points it at its own."""
    import torch

    remove_orphaned_caches(Path(tempfile.gettempdir()))
    folder = tempfile.mkdtemp(prefix=f"{CACHE_PREFIX}{os.getpid()}-")
    atexit.register(shutil.rmtree, folder, True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = folder
    torch.compiler.load_cache_artifacts(cache.read_bytes())


def remove_orphaned_caches(root: Path) -> None:
    """Remove the cache folders under ``root`` of loads whose process is gone: a stub killed with SIGKILL (Triton
    does, past its stub timeout) never runs its exit handlers."""
    for folder in root.glob(f"{CACHE_PREFIX}*"):
        pid = folder.name[len(CACHE_PREFIX):].split("-")[0]
        if pid.isdigit() and not process_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def compiled_forward(spec: "ModelSpec", network: "torch.nn.Module", precision: str, mode: str,
                     device: "torch.device", freezing: bool = False, symbolic: bool = True) -> Forward:
    """The network on ``device`` in ``precision``, channels-last, compiled by Inductor: CUDA tensors in (any float
    dtype), float32 CUDA tensors out. The same for build and load, so the load finds the build's kernels.

    ``symbolic`` compiles the spec's variable dimensions (CTPN's height and width) once, as symbols; False
    specialises every shape met, as padded size buckets would (perf/gpu/inductor_settings.py compares the two).

    ``freezing`` folds the weights in as constants (batch norms into convolutions, weights laid out once): H200,
    FP16 in process, one run: ResNet50 at batch 256 29.7k img/s against 26.3k, YOLOv3 at 32 4.70k against 4.44k,
    CTPN no change (perf/gpu/inductor_settings.py). But AOTAutograd caches no frozen graph, so such a variant's load
    compiles again. Freezing and TF32 are switches of the process, so the forward sets them for each of its calls
    and puts them back (engines.torch_settings): torch.compile's options={"freezing": True} did not take effect.
    """
    import torch

    dtype = dtype_of(precision)
    network = network.to(device, dtype).eval()
    images = all(len(t.shape) == 3 for t in spec.inputs)
    layout = torch.channels_last if images else torch.contiguous_format
    for module in network.modules():  # only convolution weights: other parameters (anchors) are not 4-D
        if isinstance(module, torch.nn.Conv2d):
            module.to(memory_format=layout)
    # Variable dimensions (CTPN's height and width) are traced as symbols, not one compile per image size; the
    # network's own arithmetic may still split them (CTPN: even and odd sizes), each such class compiled once.
    # Fixed shapes are specialised: one set of kernels per batch size.
    variable = {t.name: [dim + 1 for dim, size in enumerate(t.shape) if size == -1 and symbolic] for t in spec.inputs}
    compiled = torch.compile(network, options=COMPILE_MODES[mode] or None,
                             dynamic=None if any(variable.values()) else False)
    names = [t.name for t in spec.inputs]

    def forward(inputs: list["torch.Tensor"]) -> list["torch.Tensor"]:
        with torch.inference_mode():
            args = [x.to(dtype).contiguous(memory_format=layout) for x in inputs]
            for name, x in zip(names, args):
                for dim in variable[name]:
                    torch._dynamo.maybe_mark_dynamic(x, dim)
            result = compiled(*args)
            result = result if isinstance(result, (tuple, list)) else (result,)
            return [r.float() for r in result]

    # fp32 is TF32, as cuDNN's convolutions are by default.
    return with_settings(forward, tf32=True, inductor_freezing=freezing)


def warm(spec: "ModelSpec", forward: Forward, sizes: tuple[int, ...], device: "torch.device") -> dict[int, float]:
    """Call ``forward`` once per batch size at the spec's typical shapes: seconds each, compile included."""
    import torch

    seconds = {}
    for size in sizes:
        batch = [torch.zeros((size, *spec.shape_range(t)[1]), device=device) for t in spec.inputs]
        start = time.perf_counter()
        forward(batch)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds[size] = round(time.perf_counter() - start, 2)
    return seconds


class InductorEngine(Engine):
    name = "inductor"
    precisions = ("fp32", "fp16", "bf16")
    artifact = "model.pt"
    instance_kinds = ("gpu",)
    build_options = {"compile_mode": tuple(COMPILE_MODES), "freezing": ("off", "on")}
    runs_the_network = True

    def not_applicable(self, spec: "ModelSpec") -> str | None:
        if spec.scripted:
            return f"{spec.name} is a TorchScript network, which torch.compile does not take"
        return super().not_applicable(spec)

    def unavailable(self, precision: str) -> str | None:
        if not cuda_available():
            return "inductor compiles for a CUDA GPU and none is visible"
        import torch

        if precision == "bf16" and not torch.cuda.is_bf16_supported():
            return f"inductor bf16: {torch.cuda.get_device_name()} has no bfloat16 arithmetic"
        return None

    def build(self, inputs: BuildInputs, precision: str, out_file: Path) -> None:
        """The weights, then the network compiled and run at every served batch size in a cache of its own, whose
        artifacts are saved beside them with the build record (machine, mode, sizes, seconds per size)."""
        import torch

        inputs.spec.save_network(inputs.network, out_file)
        mode = inputs.option(self, "compile_mode")
        freezing = inputs.option(self, "freezing") == "on"
        sizes = served_batch_sizes(inputs.max_batch_size, inputs.preferred_batch_sizes)
        device = torch.device("cuda", torch.cuda.current_device())
        with private_compile_cache():
            network = inputs.spec.build_network(str(out_file))
            forward = compiled_forward(inputs.spec, network, precision, mode, device, freezing)
            inputs.log(f"{inputs.spec.name}: compiling with Inductor ({mode}{', freezing' if freezing else ''}) "
                       f"for batch sizes {list(sizes)}")
            compile_seconds = warm(inputs.spec, forward, sizes, device)
            saved = torch.compiler.save_cache_artifacts()
        if saved is None and not freezing:
            raise RuntimeError("Inductor recorded no cache artifacts for the compiled network")
        if saved is not None:
            out_file.with_name(CACHE_FILE).write_bytes(saved[0])
        cache_bytes = len(saved[0]) if saved else 0
        record = {**machine(device), "precision": precision, "compile_mode": mode, "freezing": freezing,
                  "batch_sizes": list(sizes), "compile_seconds": compile_seconds, "cache_bytes": cache_bytes}
        out_file.with_name(RECORD_FILE).write_text(json.dumps(record, indent=2) + "\n")
        inputs.log(f"{inputs.spec.name}: Inductor compiled in {sum(compile_seconds.values()):.1f} s "
                   f"({cache_bytes / 1e6:.1f} MB of cache artifacts)")

    def load(self, spec: "ModelSpec", artifact: Path, precision: str, device: str, threads: int) -> Runner:
        """Numpy in and out, through the GPU runner (the accuracy gate's and the comparison's path)."""
        import torch

        run = self.load_on_gpu(spec, artifact, precision, torch.cuda.current_device(), ())
        names = [t.name for t in spec.inputs]

        def run_on_host(batch: dict) -> dict:
            outputs = run({n: torch.from_numpy(batch[n]).cuda() for n in names})
            return {name: tensor.cpu().numpy() for name, tensor in outputs.items()}

        return run_on_host

    def load_on_gpu(
        self, spec: "ModelSpec", artifact: Path, precision: str, device_id: int, graph_batch_sizes: tuple[int, ...]
    ) -> GpuRunner:
        """Refuses kernels of another machine; else loads the cache artifacts, compiles (from them) and warms
        every compiled size, so no request waits for a compile. Says how long that took on standard error."""
        import torch

        start = time.perf_counter()
        record = read_record(artifact)
        device = torch.device("cuda", device_id)
        torch.cuda.set_device(device)
        problem = mismatch(record, machine(device))
        if problem:
            raise UserError(f"{artifact.parent.parent.name}: {problem}")
        if artifact.with_name(CACHE_FILE).is_file():  # none where freezing kept Inductor from caching the graphs
            load_into_own_cache(artifact.with_name(CACHE_FILE))
        cache_loaded = time.perf_counter()
        forward = compiled_forward(spec, spec.build_network(str(artifact)), precision, record["compile_mode"], device,
                                   bool(record.get("freezing")))
        sizes = tuple(record["batch_sizes"])
        step = CudaGraphs(forward, graph_batch_sizes) if graph_batch_sizes else Padded(forward, sizes)
        warm(spec, step, tuple(sorted(set(graph_batch_sizes) | set(sizes))), device)
        print(f"trtrepo inductor: {artifact.parent.parent.name} ready in {time.perf_counter() - start:.1f} s "
              f"(cache artifacts {cache_loaded - start:.1f} s, tracing and warm-up "
              f"{time.perf_counter() - cache_loaded:.1f} s; the build compiled cold in "
              f"{sum(record['compile_seconds'].values()):.1f} s)", file=sys.stderr)
        input_names = [t.name for t in spec.inputs]
        output_names = [t.name for t in spec.outputs]

        def run(batch: dict) -> dict:
            return dict(zip(output_names, step([batch[n].to(device, non_blocking=True) for n in input_names])))

        return run

    def build_record(self, artifact: Path) -> dict:
        return read_record(artifact)


def read_record(artifact: Path) -> dict:
    """The build record beside an Inductor artifact; a missing or unreadable one is a one-line rebuild hint."""
    path = Path(artifact).with_name(RECORD_FILE)
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: cannot read the Inductor build record ({exc}); rebuild with trtrepo repo --force") from None
    if not isinstance(record, dict) or not isinstance(record.get("batch_sizes"), list):
        raise UserError(f"{path}: not an Inductor build record; rebuild with trtrepo repo --force")
    return record
