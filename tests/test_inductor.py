"""The Inductor engine: its kernels saved at build and loaded from the artifact, its build record's machine check,
its plan option. The engine itself needs a CUDA GPU; compiling, saving and loading kernels are the same steps on the
CPU, which is where CI checks them (on a tiny network: Inductor compiles C++ for the CPU, slowly)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from conftest import trtrepo
from trtrepo.engines import get_engine
from trtrepo.engines.base import cuda_available
from trtrepo.engines.inductor import RECORD_FILE, InductorEngine, mismatch, read_record
from trtrepo.errors import UserError

TINY_SPEC = textwrap.dedent('''
    import torch
    from trtrepo.specs import CLASSIFICATION, ModelSpec, TensorSpec

    class Tiny(ModelSpec):
        name, task = "tiny", CLASSIFICATION
        inputs = (TensorSpec("input", "float32", (3, -1, -1)),)
        outputs = (TensorSpec("logits", "float32", (4,)),)
        dynamic_shapes = {"input": ((3, 8, 8), (3, 16, 16), (3, 64, 64))}

        def build_network(self, weights):
            torch.manual_seed(0)
            net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                      torch.nn.Flatten(), torch.nn.Linear(8, 4))
            return net.eval()

        def preprocess_image(self, image): ...
        def postprocess(self, outputs, top_k=5): ...
''')

ROUND_TRIP = TINY_SPEC + textwrap.dedent('''
    import sys, time
    from pathlib import Path
    import numpy as np
    from trtrepo.engines import inductor

    spec, folder, step = Tiny(), Path(sys.argv[1]), sys.argv[2]
    device = torch.device("cpu")
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((2, 3, 16, 16)).astype(np.float32))
    def first_calls():
        forward = inductor.compiled_forward(spec, spec.build_network("random"), "fp32", "default", device)
        start = time.perf_counter()
        got = forward([x])[0]
        seconds = time.perf_counter() - start
        other = forward([torch.zeros(2, 3, 24, 32)])[0]  # another image size: the dynamic dimensions
        return got, seconds, other

    if step == "build":
        with inductor.private_compile_cache():
            got, seconds, other = first_calls()
            (folder / "inductor.cache").write_bytes(torch.compiler.save_cache_artifacts()[0])
    else:
        inductor.load_into_own_cache(folder / "inductor.cache")
        got, seconds, other = first_calls()
    want = spec.build_network("random")(x)
    from torch._dynamo.utils import counters
    graphs = counters["inductor"]
    print(f"{step} {graphs['fxgraph_cache_hit']} {graphs['fxgraph_cache_miss']} {float((got - want).abs().max()):.2e} "
          f"{'x'.join(map(str, other.shape))}")
''')


def test_kernels_saved_at_build_load_from_the_artifact_in_a_fresh_process(tmp_path):
    script = tmp_path / "round_trip.py"
    script.write_text(ROUND_TRIP)
    graphs = {}
    for step in ("build", "load"):
        done = subprocess.run([sys.executable, str(script), str(tmp_path), step], capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        name, hits, misses, diff, other = done.stdout.split()[-5:]
        graphs[name] = (int(hits), int(misses))
        assert float(diff) < 1e-4 and other == "2x4"  # right, and a second image size ran (dynamic dimensions)
    assert (tmp_path / "inductor.cache").stat().st_size > 10_000
    # The build compiled its graph cold (a private cache); the fresh process compiled nothing: every graph came
    # from the artifact. (On a GPU that is what makes the load seconds instead of the build's minutes; on the CPU
    # Inductor still compiles its C++ at load, so seconds are not compared here.)
    assert graphs["build"][0] == 0 and graphs["build"][1] >= 1, graphs
    assert graphs["load"][0] == graphs["build"][1] and graphs["load"][1] == 0, graphs


HERE = {"gpu": "NVIDIA H200", "compute_capability": "9.0", "torch": "2.11.0+cu130", "cuda": "13.0"}


def test_kernels_of_another_gpu_or_torch_are_refused_with_one_line_that_says_rebuild(tmp_path):
    assert mismatch(dict(HERE), HERE) is None
    problem = mismatch({**HERE, "gpu": "NVIDIA H100 80GB HBM3", "torch": "2.10.0+cu128"}, HERE)
    assert "NVIDIA H100 80GB HBM3" in problem and "2.10.0+cu128" in problem and "rebuild" in problem
    assert "\n" not in problem and "compute_capability" not in problem
    # The load reads the record first: a faked one from another machine stops it before any kernel is touched.
    (tmp_path / "1").mkdir()
    (tmp_path / "1" / RECORD_FILE).write_text('{"gpu": "NVIDIA H100 80GB HBM3", "batch_sizes": [8]}')
    assert read_record(tmp_path / "1" / "model.pt")["gpu"] == "NVIDIA H100 80GB HBM3"
    (tmp_path / "1" / RECORD_FILE).write_text("[1, 2]")
    with pytest.raises(UserError, match="not an Inductor build record; rebuild"):
        read_record(tmp_path / "1" / "model.pt")


@pytest.mark.skipif(not cuda_available(), reason="loading Inductor kernels on a GPU needs a CUDA GPU")
def test_load_on_gpu_refuses_a_record_of_another_machine(tmp_path):
    (tmp_path / "v" / "1").mkdir(parents=True)
    (tmp_path / "v" / "1" / RECORD_FILE).write_text('{"gpu": "a GPU of elsewhere", "batch_sizes": [8]}')
    with pytest.raises(UserError, match="v: built for another machine: gpu 'a GPU of elsewhere'"):
        InductorEngine().load_on_gpu(None, tmp_path / "v" / "1" / "model.pt", "fp16", 0, ())


@pytest.mark.skipif(cuda_available(), reason="a CUDA GPU is present")
def test_without_a_gpu_the_engine_says_why(tmp_path):
    assert get_engine("inductor").unavailable("fp16") == "inductor compiles for a CUDA GPU and none is visible"
    result = trtrepo("build", "resnet50", "--engine", "inductor", "--precision", "bf16", "--weights", "random",
                     "--output", str(tmp_path))
    assert result.returncode == 2 and result.stderr.strip().endswith("none is visible")
    assert "Traceback" not in result.stderr and not any(tmp_path.iterdir())


def test_compile_mode_is_a_plan_option_of_the_inductor_engine_only(tmp_path):
    from trtrepo.build.plan import load_plan

    def plan(engine: str, mode: object):
        path = tmp_path / "plan.toml"
        path.write_text(f'[[variant]]\nmodel = "resnet50"\nengine = "{engine}"\nprecision = "fp16"\nkind = "gpu"\n'
                        f"compile_mode = {mode!r}\n".replace("'", '"'))
        return load_plan(path, backends="python")

    (variant,) = plan("inductor", "max-autotune").variants
    assert variant.build_options == (("compile_mode", "max-autotune"),)
    with pytest.raises(UserError, match="compile_mode must be one of default, max-autotune, got 'fastest'"):
        plan("inductor", "fastest")
    with pytest.raises(UserError, match="compile_mode is an option of the inductor engine, not of pytorch"):
        plan("pytorch", "default")


def test_dropping_a_build_option_from_the_plan_is_a_rebuild_not_up_to_date():
    from trtrepo.build.repository import build_key
    from trtrepo.format.config import Variant

    frozen = Variant("resnet50", "inductor", "fp16", build_options=(("freezing", "on"),))
    plain = Variant("resnet50", "inductor", "fp16")
    keys = [build_key(v, "random", "digest", False, None) for v in (frozen, plain)]
    assert keys[0]["build_options"] == {"compile_mode": "default", "freezing": "on"}
    assert keys[1]["build_options"] == {"compile_mode": "default", "freezing": "off"}
    # Engines without build options keep the key they had, so their earlier builds stay up to date.
    assert "build_options" not in build_key(Variant("resnet50", "onnxruntime", "fp32"), "random", "d", False, None)


def test_a_load_removes_the_cache_folders_of_loads_whose_process_died(tmp_path):
    from trtrepo.engines.inductor import CACHE_PREFIX, remove_orphaned_caches

    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = tmp_path / f"{CACHE_PREFIX}{finished.stdout.strip()}-abc"
    mine = tmp_path / f"{CACHE_PREFIX}{os.getpid()}-def"
    for folder in (dead, mine):
        (folder / "kernels").mkdir(parents=True)
    remove_orphaned_caches(tmp_path)
    assert not dead.exists() and mine.is_dir()
