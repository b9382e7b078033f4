"""Which part of a pipeline kills its Python-backend stub: the pipeline reduced to a probe model
(stub_probe/probe.py) whose parts are switched one at a time, each case served alone and loaded for a while.

    python perf/gpu/stub_crash.py [--cases all|NAME,...] [--seconds 12] [--concurrency 64] [--output DIR]

Per case: requests answered and failed, stub deaths in the server log, new segfaults in the kernel log, and the
Python stacks of every stub that died of a signal (DIR/faults/CASE/). Runs on a CPU or a GPU machine; the cases
that need torch or CUDA are skipped where they are missing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
from tritonclient.grpc import model_config_pb2 as pb

from trtrepo.format.config import write_config
from trtrepo.serving.server import Ports, TritonServer

HERE = Path(__file__).resolve().parent / "stub_probe"
#: The probe's switches as the device path of a pipeline has them; each case changes what it names.
DEVICE_PATH = {"read": "main", "metrics": "increment", "torch": "cuda", "bls": "dlpack", "target": "echo_stream",
               "drain": "no", "release": "no"}
CASES = {
    "pipeline_device": {},
    "no_metrics": {"metrics": "none"},
    "metric_family_only": {"metrics": "family"},
    "drained_stream": {"drain": "yes"},
    "plain_target": {"target": "echo"},
    "numpy_bls": {"bls": "host"},
    "torch_cpu_dlpack": {"torch": "cpu"},
    "host_path": {"torch": "none", "bls": "host", "read": "pool"},
    "host_path_main_thread": {"torch": "none", "bls": "host"},
    "bls_only": {"torch": "none", "bls": "host", "metrics": "none"},
    "no_bls": {"torch": "none", "bls": "none", "metrics": "none"},
}


def build_repository(root: Path, switches: dict[str, str], gpu: bool) -> Path:
    repo = root / "repository"
    shutil.rmtree(repo, ignore_errors=True)
    kind = pb.ModelInstanceGroup.KIND_GPU if gpu else pb.ModelInstanceGroup.KIND_CPU
    for name, source, decoupled in (("echo", "echo.py", False), ("echo_stream", "echo.py", True), ("probe", "probe.py", False)):
        (repo / name / "1").mkdir(parents=True)
        shutil.copy(HERE / source, repo / name / "1" / "model.py")
        config = pb.ModelConfig(name=name, backend="python", max_batch_size=64,
                                instance_group=[pb.ModelInstanceGroup(count=1, kind=kind)],
                                dynamic_batching=pb.ModelDynamicBatching(max_queue_delay_microseconds=1000))
        if name == "probe":
            config.input.append(pb.ModelInput(name="image", data_type=pb.TYPE_STRING, dims=[1]))
            config.output.append(pb.ModelOutput(name="score", data_type=pb.TYPE_FP32, dims=[1]))
            for key, value in switches.items():
                config.parameters[key].string_value = value
        else:
            config.input.append(pb.ModelInput(name="x", data_type=pb.TYPE_FP32, dims=[3, 224, 224]))
            config.output.append(pb.ModelOutput(name="y", data_type=pb.TYPE_FP32, dims=[1000]))
            config.model_transaction_policy.decoupled = decoupled
        write_config(config, repo / name)
    return repo


def segfaults() -> list[str]:
    found = subprocess.run(["dmesg"], capture_output=True, text=True).stdout
    return [line for line in found.splitlines() if "segfault" in line]


def load(url: str, seconds: float, concurrency: int) -> Counter:
    """``concurrency`` clients, each sending one 100 KB request after the other for ``seconds``."""
    import tritonclient.grpc as grpc

    counts: Counter = Counter()
    lock = threading.Lock()
    deadline = time.monotonic() + seconds
    payload = np.array([[np.random.default_rng(0).bytes(100_000)]], dtype=object)

    def client() -> None:
        with grpc.InferenceServerClient(url) as server:
            image = grpc.InferInput("image", [1, 1], "BYTES")
            image.set_data_from_numpy(payload)
            while time.monotonic() < deadline:
                try:
                    server.infer("probe", [image], client_timeout=30)
                    outcome = "answered"
                except Exception as exc:  # noqa: BLE001 - every failure is counted by its message
                    outcome = f"failed: {str(exc)[:90]}"
                with lock:
                    counts[outcome] += 1

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return counts


def run_case(name: str, switches: dict[str, str], args: argparse.Namespace, work: Path) -> str:
    gpu = switches["torch"] == "cuda"
    repo = build_repository(work, switches, gpu)
    faults = args.output / "faults" / name
    faults.mkdir(parents=True, exist_ok=True)
    os.environ["PROBE_FAULTS"] = str(faults)
    log = args.output / f"{name}.server.log"
    before = len(segfaults())
    with TritonServer(repo, Ports.free(), log_file=log, watch_stubs=False) as server:
        counts = load(server.grpc_url, args.seconds, args.concurrency)
    new = segfaults()[before:]
    text = log.read_text(errors="replace")
    deaths = text.count("is not healthy")
    answered = counts.pop("answered", 0)
    failed = sum(counts.values())
    stacks = [f for f in faults.iterdir() if f.stat().st_size]
    row = (f"| {name} | {answered} | {failed} | {len(new)} | {len(stacks)} | {deaths} | "
           f"{'; '.join(f'{n}x {m}' for m, n in counts.most_common(2)) or '-'} |")
    (args.output / f"{name}.dmesg.txt").write_text("\n".join(new))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default="all")
    parser.add_argument("--seconds", type=float, default=12)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--output", type=Path, default=Path("perf/results/stub_crash"))
    parser.add_argument("--set", action="append", default=[], help="KEY=VALUE for every case (e.g. torch=cpu)")
    args = parser.parse_args()
    args.output.mkdir(parents=True, exist_ok=True)
    overrides = dict(item.split("=", 1) for item in args.set)
    names = list(CASES) if args.cases == "all" else args.cases.split(",")
    rows = ["| case | answered | failed | segfaults | stacks | stub deaths | errors |", "|---|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as work:
        for name in names:
            switches = {**DEVICE_PATH, **overrides, **CASES[name]}
            if switches["torch"] == "cuda" and not _has_cuda():
                switches["torch"] = "cpu"
            rows.append(run_case(name, switches, args, Path(work)))
            print(rows[-1], flush=True)
    (args.output / "stub_crash.md").write_text("\n".join(rows) + "\n")
    print("\n".join(rows))


def _has_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


if __name__ == "__main__":
    main()
