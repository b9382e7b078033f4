"""Shared fixtures: generated images, a small repository with random weights, and the real tritonserver."""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import shutil
import signal
import subprocess
import time
import urllib.request
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from filelock import FileLock
from PIL import Image

from trtrepo.build.plan import PipelinePlan, RepoPlan, load_plan
from trtrepo.build.repository import build_repository
from trtrepo.format.config import ServingOptions, Variant
from trtrepo.imagesets import shipped_photos
from trtrepo.serving.server import Ports, TritonServer, free_port, is_ready

ROOT = Path(__file__).resolve().parents[1]
#: The suite judges and calibrates on the shipped photos, whatever photo pool this machine's user fetched
#: (`trtrepo photos`): its verdicts are the same on every machine. Subprocesses inherit it.
os.environ["TRTREPO_PHOTO_POOL"] = str(ROOT / "tests" / "no-photo-pool")
#: perf_analyzer run bare, as a user would, but judged on whether it measures, not on how steady a shared CI
#: machine is: each window lasts until 20 requests completed (none is empty), and any spread between windows passes.
STEADY_ENOUGH = ("--measurement-mode", "count_windows", "--measurement-request-count", "20",
                 "--stability-percentage", "999")
SMALL = ServingOptions(max_batch_size=4, preferred_batch_sizes=(2, 4), max_queue_delay_us=1000, warmup=True)
TEST_VARIANTS = tuple(
    Variant(model, engine, precision, SMALL)
    for model, engine, precision in [
        ("resnet50", "onnxruntime", "fp32"),
        ("resnet50", "pytorch", "fp32"),
        ("efficientnet_lite0", "pytorch", "fp32"),
        ("efficientnet_lite0", "onnxruntime", "fp32"),
        ("efficientnet_lite0", "onnxruntime", "int8"),
        ("yolov3_tiny", "pytorch", "fp32"),
        ("yolov3_tiny", "onnxruntime", "fp32"),
        ("yolov3_tiny", "onnxruntime", "int8"),
    ]
)
TEST_WEIGHTS = "resnet50=random,efficientnet_lite0=pretrained,yolov3_tiny=pretrained"
DARKNET_PHOTOS = Path(sys.prefix) / "share" / "darknet" / "data"
# Real photos shipped by installed packages, with the ImageNet class each one shows.
PHOTO_LABELS = {"coffee.png": "espresso", "chelsea.png": "tabby", "eagle.jpg": "bald eagle", "grace_hopper.jpg": "military uniform"}


@pytest.fixture(scope="session")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of three small photos-to-be (noise and gradients, JPEG and PNG), different sizes."""
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(7)
    Image.fromarray(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8)).save(folder / "noise.jpg")
    gradient = np.linspace(0, 255, 256 * 256 * 3).reshape(256, 256, 3).astype(np.uint8)
    Image.fromarray(gradient).save(folder / "gradient.png")
    Image.fromarray(rng.integers(0, 255, (180, 120, 3), dtype=np.uint8)).convert("L").save(folder / "gray.png")
    return folder


@pytest.fixture(scope="session")
def labelled_photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ImageNet-style folder (class-name subfolders) of the real photos in PHOTO_LABELS."""
    found = {p.name: p for p in shipped_photos() if p.name in PHOTO_LABELS}
    if len(found) < len(PHOTO_LABELS):
        pytest.skip(f"sample photos missing ({', '.join(sorted(set(PHOTO_LABELS) - set(found)))}): run make install")
    root = tmp_path_factory.mktemp("labelled")
    for name, label in PHOTO_LABELS.items():
        folder = root / label.replace(" ", "_")
        folder.mkdir()
        (folder / name).symlink_to(found[name])
    return root


@pytest.fixture(scope="session")
def small_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """resnet50 (random weights), efficientnet_lite0 and yolov3_tiny (real weights, INT8 too) with the
    efficientnet_lite0 and yolov3_tiny pipelines; batches up to 4, Python backend. Built once per run: pytest-xdist's workers share it
    (built in the background from the start, see pytest_collection_modifyitems; whoever holds the lock builds,
    the others wait for it); tests copy what they change."""
    shared = _shared_folder(tmp_path_factory)
    ensure_small_repo(shared)
    return shared / "small_repo" / "model_repository"


def _shared_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run's temporary folder, above every xdist worker's own."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def ensure_small_repo(shared: Path | str) -> None:
    built_once(Path(shared) / "small_repo", lambda folder: _build_small_repo(folder / "model_repository"))


def built_once(folder: Path, build: Callable[[Path], object]) -> Path:
    """``folder``, where ``build`` has written what it builds, once per run: pytest-xdist's workers share it
    (whoever holds the lock builds, the others wait for it and find it built)."""
    with FileLock(str(folder.with_name(f"{folder.name}.lock"))):
        if not (folder / "built").is_file():
            shutil.rmtree(folder, ignore_errors=True)  # a build an interrupted run left half done
            folder.mkdir(parents=True)
            build(folder)
            (folder / "built").touch()
    return folder


@pytest.fixture(scope="session")
def shared_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run's temporary folder that every xdist worker sees: for what built_once builds."""
    return _shared_folder(tmp_path_factory)


def _build_small_repo(output: Path) -> None:
    # The plan's accuracy gates; a variant below its gate is still published (marked), so that the serving tests
    # do not hang on INT8's accuracy: test_gate judges the gate itself. EfficientNet-Lite0 INT8 scores 0.97 on the
    # shipped photos, below the plan's 0.99: at 0.97 the build skips a mixed-precision search that no test reads.
    planned = load_plan(ROOT / "repo.toml", backends="python").gate
    gate = replace(planned, allow_below=True,
                   per_model=(("efficientnet_lite0", replace(planned.defaults, top1_agreement=0.97)),))
    plan = RepoPlan(output, TEST_WEIGHTS, frozenset({"python"}), TEST_VARIANTS, calib_images=16,
                    pipelines=(PipelinePlan("efficientnet_lite0", "efficientnet_lite0_onnxruntime_fp32"),
                               PipelinePlan("yolov3_tiny", "yolov3_tiny_onnxruntime_fp32")), gate=gate)
    build_repository(plan)


NULL_MODEL = "null_classifier"
NULL_MODEL_PY = '''"""Zero logits of a classifier's shape for every image."""
import triton_python_backend_utils as pb_utils  # first: with trtrepo's server it makes the environment importable
import numpy as np


class TritonPythonModel:
    def execute(self, requests):
        return [pb_utils.InferenceResponse([pb_utils.Tensor("logits", np.zeros(
            (len(pb_utils.get_input_tensor_by_name(request, "input").as_numpy()), 1000), np.float32))])
            for request in requests]
'''


@pytest.fixture(scope="session")
def null_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One Python-backend model shaped like the classifiers (input [3, 224, 224] -> logits [1000], with labels) that
    imports only numpy: for tests of serving itself (lifecycle, keys, signals, hostile requests, the watchdog), where
    an engine would add load time and nothing under test. Tests copy it before they change it."""
    from tritonclient.grpc import model_config_pb2 as pb

    from trtrepo.format.config import write_config

    repo = tmp_path_factory.mktemp("null") / "model_repository"
    (repo / NULL_MODEL / "1").mkdir(parents=True)
    (repo / NULL_MODEL / "1" / "model.py").write_text(NULL_MODEL_PY)
    (repo / NULL_MODEL / "labels.txt").write_text("".join(f"class {index}\n" for index in range(1000)))
    write_config(pb.ModelConfig(
        name=NULL_MODEL, backend="python", max_batch_size=4,
        input=[pb.ModelInput(name="input", data_type=pb.TYPE_FP32, dims=[3, 224, 224])],
        output=[pb.ModelOutput(name="logits", data_type=pb.TYPE_FP32, dims=[1000], label_filename="labels.txt")],
        instance_group=[pb.ModelInstanceGroup(count=1, kind=pb.ModelInstanceGroup.KIND_CPU)],
        dynamic_batching=pb.ModelDynamicBatching()), repo / NULL_MODEL)
    return repo


@pytest.fixture(scope="session")
def server(small_repo: Path) -> TritonServer:
    """The real tritonserver (explicit model control, so perf sweeps can reload models) on free ports."""
    with TritonServer(small_repo, Ports.free(), model_control="explicit") as running:
        yield running


def run_cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """Run a command-line entry point the way a user does, capturing its output."""
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd, timeout=600)


def interruptible() -> None:
    """In the child before exec: Ctrl-C's default back. A test run started in the background (`make test &`) has
    SIGINT ignored, children inherit that, and Python then never raises KeyboardInterrupt: the shell's contract
    for background jobs, which trtrepo keeps, but these tests are about what Ctrl-C does."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def in_process(module: str, args: Sequence[str], cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """Run the Typer app of ``module`` in this process through run_app, as its script does: the exit code, stdout
    and stderr a subprocess would give, without an interpreter start (and torch's import) per call. What a command
    may change for the process (environment, working folder, the signal handlers run_app installs) is put back."""
    from trtrepo.cli.app import run_app

    app = importlib.import_module(module).app
    stdout, stderr = io.StringIO(), io.StringIO()
    environment, folder = dict(os.environ), os.getcwd()
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGHUP)}
    code: int | str | None = 0
    try:
        os.chdir(cwd)
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                run_app(app, list(args), prog_name=module.rsplit(".", 1)[-1])
            except SystemExit as exit_:
                code = exit_.code
    finally:
        os.chdir(folder)
        os.environ.clear()
        os.environ.update(environment)
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    if isinstance(code, str):  # sys.exit("message"): Python prints it and exits 1
        stderr.write(code + "\n")
    returncode = code if isinstance(code, int) else (0 if code is None else 1)
    return subprocess.CompletedProcess([module, *args], returncode, stdout.getvalue(), stderr.getvalue())


def trtrepo(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """A trtrepo command, in process (see trtrepo_process for the one test per command that runs it as a user)."""
    return in_process("trtrepo.cli.main", args, cwd)


def trtrepo_process(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return run_cli("-m", "trtrepo.cli", *args, cwd=cwd)


def resnet_client(*args: str) -> subprocess.CompletedProcess:
    return in_process("trtrepo.clients.resnet_client", args)


def yolo_client(*args: str) -> subprocess.CompletedProcess:
    return in_process("trtrepo.clients.yolo_client", args)


def client_process(name: str, *args: str) -> subprocess.CompletedProcess:
    """clients/<name>.py run as a user runs it: python clients/<name>.py ARGS."""
    return run_cli(str(ROOT / "clients" / f"{name}.py"), *args)


@pytest.fixture(scope="session")
def darknet_photos() -> Path:
    if not (DARKNET_PHOTOS / "dog.jpg").is_file():
        pytest.skip(f"Debian's darknet photos are not unpacked in {DARKNET_PHOTOS}: run make install")
    return DARKNET_PHOTOS


CTPN_OPTIONS = ServingOptions(max_batch_size=1, preferred_batch_sizes=(), warmup=False)


@pytest.fixture(scope="session")
def ctpn_server(shared_folder: Path) -> TritonServer:
    """CTPN whole (PyTorch, ONNX Runtime), split (ONNX Runtime backbone -> PyTorch head) and its pipeline over
    ONNX Runtime, on their own server (the repository built once for all workers)."""
    output = built_once(shared_folder / "ctpn", _build_ctpn_repo) / "model_repository"
    with TritonServer(output, Ports.free(), model_control="explicit") as running:
        yield running


def _build_ctpn_repo(folder: Path) -> None:
    """The trained weights (make install fetched them); ONNX Runtime FP32 judged on two small rendered pages."""
    from trtrepo.build.gate import GatePlan
    from trtrepo.text_pages import write_pages

    output = folder / "model_repository"
    pages = write_pages(folder / "gate-pages", 2, first_seed=100, size=(360, 540))
    variants = tuple(Variant(m, e, "fp32", CTPN_OPTIONS) for m, e in [
        ("ctpn", "pytorch"), ("ctpn", "onnxruntime"), ("ctpn_backbone", "onnxruntime"), ("ctpn_head", "pytorch")])
    plan = RepoPlan(output, "pretrained", frozenset({"python"}), variants, pipelines=(PipelinePlan("ctpn", "ctpn_onnxruntime_fp32"),),
                    ensembles=(("ctpn_split", ("ctpn_backbone_onnxruntime_fp32", "ctpn_head_pytorch_fp32")),),
                    gate=GatePlan(eval_dir=pages[0].parent, eval_images=len(pages)))
    results = build_repository(plan)
    assert all(r.status == "built" for r in results), results


@pytest.fixture
def s3(monkeypatch):
    """moto's S3-compatible server on a free loopback port, with a bucket; the credentials in the environment,
    where boto3 and tritonserver both read them."""
    moto_server = pytest.importorskip("moto.server", reason="moto is a test dependency: run make install")
    import boto3

    for name, value in {"AWS_ACCESS_KEY_ID": "trtrepo", "AWS_SECRET_ACCESS_KEY": "trtrepo-secret",
                        "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    port = free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    # moto keeps its buckets in the process, not per server: every test starts from an empty store.
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"), timeout=10)
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="models")
    yield endpoint
    server.stop()


class Served:
    """`trtrepo serve` in a subprocess, as a user (or systemd) runs it, on free ports, once it answers."""

    def __init__(self, repo: Path, *extra: str) -> None:
        self.ports = Ports.free()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "trtrepo.cli", "serve", "--model-repository", str(repo), "--http-port", str(self.ports.http),
             "--grpc-port", str(self.ports.grpc), "--metrics-port", str(self.ports.metrics), *extra],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, preexec_fn=interruptible)
        self._stderr: list[str] = []
        deadline = time.monotonic() + 180
        while not is_ready(self.ports.http):
            assert self.process.poll() is None, self.process.communicate()
            assert time.monotonic() < deadline, "trtrepo serve not ready in 180 s"
            time.sleep(0.3)

    def child(self, program: str) -> int | None:
        """The launcher's child process running ``program`` (tritonserver, nginx), if one runs."""
        from trtrepo.serving.stubs import children

        for pid in children(self.process.pid):
            try:
                if Path(Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()).name == program:
                    return pid
            except OSError:
                continue
        return None

    @property
    def server_pid(self) -> int:
        pid = self.child("tritonserver")
        assert pid is not None, "no tritonserver under trtrepo serve"
        return pid

    def stderr_so_far(self) -> str:
        """What the launcher has written to stderr until now (its events), read without blocking."""
        import os
        import select

        while select.select([self.process.stderr], [], [], 0.5)[0]:
            chunk = os.read(self.process.stderr.fileno(), 1 << 16).decode(errors="replace")
            if not chunk:
                break
            self._stderr.append(chunk)
        return "".join(self._stderr)

    def stop(self, signum: int = signal.SIGTERM) -> tuple[int, str, str]:
        self.process.send_signal(signum)
        out, err = self.process.communicate(timeout=60)
        return self.process.returncode, out, "".join(self._stderr) + err


#: Fixtures that build a repository or start a server: a test that uses one is an integration test, marked or not.
SMALL_REPO_FIXTURES = frozenset({"small_repo", "server"})
COSTLY_FIXTURES = SMALL_REPO_FIXTURES | {"ctpn_server"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`-m "not integration"` leaves out every test that builds or serves (the quick unit run). Under xdist, the
    modules that need the small repository run last and the first worker builds it in a background process from
    the start, so no worker waits idle for it (each worker sorts alike: xdist requires one order)."""
    for item in items:
        if COSTLY_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    needing = {item.module.__name__ for item in items if SMALL_REPO_FIXTURES & set(getattr(item, "fixturenames", ()))}
    if not worker or not needing:
        return
    items.sort(key=lambda item: item.module.__name__ in needing)  # stable: each module's tests stay together, in order
    if worker == "gw0":
        shared = _shared_folder(config._tmp_path_factory)
        builder = subprocess.Popen([sys.executable, "-c", f"import conftest; conftest.ensure_small_repo({str(shared)!r})"],
                                   cwd=Path(__file__).parent, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        config.add_cleanup(lambda: builder.poll() is None and builder.kill())
