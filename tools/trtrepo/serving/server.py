"""One launcher for tritonserver: a binary on PATH wins, else the one inside the nvidia-pytriton wheel."""

from __future__ import annotations

import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from trtrepo.errors import UserError
from trtrepo.format.validate import invalid_models, model_folders, stub_path_problem
from trtrepo.serving.access import LOOPBACK, ServerOptions, write_key_files
from trtrepo.serving.installation import TritonInstallation, check_stub_numpy, find_tritonserver
from trtrepo.serving.nginx import Nginx, http_server, nginx_config, upstream
from trtrepo.serving.objectstore import is_remote
from trtrepo.serving.process import die_with_parent
from trtrepo.serving.metrics import memory_failures, request_counts, scrape_metrics
from trtrepo.serving.stubs import StubWatchdog, remove_shared_memory
from trtrepo.serving.watch import RepositoryWatch


MODEL_CONTROL_MODES = ("none", "poll", "explicit")
EXIT_TIMEOUT_S = 5
#: How long stop() lets tritonserver unload its models before killing it and its stubs.
STOP_TIMEOUT_S = 8
LOG_FORMATS = ("default", "ISO8601")
#: Error lines tritonserver logs on every machine without a usable GPU: never the reason it failed.
GPU_ABSENT_NOTICES = ("CudaDriverHelper has not been initialized", "Failed to initialize NVML", "DCGM")
#: Config parameter counting the reloads of a model whose stub died.
RESTARTS_PARAMETER = "trtrepo_stub_restarts"
# Per GPU. GPU tensors travel between the server and Python-backend stubs through this pool; Triton's default
# (64 MB) is smaller than one batch of YOLOv3 outputs (32 x 10647 x 85 floats, 116 MB).
CUDA_POOL_MB = 4096
#: A supervised server that dies is started again, at most this often within RESTART_WINDOW_S, waiting
#: RESTART_WAIT_S, doubled after each restart in the window.
RESTART_LIMIT = 5
RESTART_WINDOW_S = 300.0
RESTART_WAIT_S = 1.0


#: Ports this process has handed out, never handed out again while it runs.
_GIVEN_PORTS: set[int] = set()
#: From the OS, not the random module's shared state: processes that seed it alike must not pick alike.
_CHOOSER = random.SystemRandom()


def ephemeral_ports() -> tuple[int, int]:
    """The kernel's range for outgoing connections' local ports (and for binding port 0)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_port() -> int:
    """A loopback port nothing listens on, chosen at random below the ephemeral range: a port the kernel handed out
    for port 0 is taken again by the next outgoing connection (a client of another server) before a server binds it."""
    high = ephemeral_ports()[0] - 1
    low = max(1024, high - 12000)
    for _ in range(200):
        port = _CHOOSER.randint(low, high)
        if port not in _GIVEN_PORTS and port_free("127.0.0.1", port):
            _GIVEN_PORTS.add(port)
            return port
    with socket.socket() as sock:  # the range below is full: what the kernel offers
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class Ports:
    http: int = 8000
    grpc: int = 8001
    metrics: int = 8002

    @classmethod
    def free(cls) -> "Ports":
        return cls(free_port(), free_port(), free_port())


class TritonServer:
    """A running tritonserver process: start() waits until it is ready, stop() shuts it down with its stubs.

    ``options`` say where it listens and what it guards (loopback and a per-start key by default, see
    trtrepo.serving.access); ``log_file`` "-" sends the server log to this process's stdout (for a process manager);
    ``watch_stubs`` reloads a Python-backend model whose stub died or stopped (explicit model-control mode only);
    ``guard`` puts nginx with its limits (trtrepo.serving.nginx) on the HTTP port, tritonserver's HTTP behind it on loopback.
    supervise() starts the server again whenever it dies. The server is killed if this process dies, however.
    """

    def __init__(
        self,
        repository: Path | str,
        ports: Ports = Ports(),
        log_file: Path | str | None = None,
        model_control: str = "none",
        installation: TritonInstallation | None = None,
        cuda_pool_mb: int = CUDA_POOL_MB,
        options: ServerOptions = ServerOptions(),
        log_format: str = "default",
        watch_stubs: bool = True,
        on_event: Callable[[str], None] = lambda _: None,
        guard: bool = False,
        leave_out_invalid: bool = False,
        watch_repository: bool = False,
    ) -> None:
        if model_control not in MODEL_CONTROL_MODES:
            raise UserError(f"model control mode must be one of {', '.join(MODEL_CONTROL_MODES)}, got {model_control!r}")
        if log_format not in LOG_FORMATS:
            raise UserError(f"log format must be one of {', '.join(LOG_FORMATS)}, got {log_format!r}")
        # Object storage (s3://, gs://, as://) goes to Triton as it is: it reads those itself.
        self.repository: Path | str = str(repository) if is_remote(repository) else Path(repository).resolve()
        if isinstance(self.repository, Path) and not self.repository.is_dir():
            raise UserError(f"{self.repository}: model repository does not exist; run `trtrepo repo` first")
        self.ports = ports
        self.model_control = model_control
        self.installation = installation or find_tritonserver()
        for path in ([self.repository] if isinstance(self.repository, Path) else []) + [self.installation.backend_dir]:
            if problem := stub_path_problem(path):
                raise UserError(problem)
        if str(log_file) == "-":
            self.log_file = None  # the server log goes to this process's stdout
        else:
            self.log_file = Path(log_file) if log_file else Path(tempfile.mkstemp(prefix="tritonserver-", suffix=".log")[1])
        self.log_format = log_format
        self.process: subprocess.Popen | None = None
        self.cuda_pool_mb = cuda_pool_mb
        self.gpus = gpu_count()
        self.options = options.keyed()
        self.watch_stubs = watch_stubs and model_control == "explicit"
        self.on_event = on_event
        self.watchdog: StubWatchdog | None = None
        self._key_files: list[Path] = []
        self._log_offset = 0
        self.front: Nginx | None = None
        self.internal_http = free_port() if guard else ports.http
        if guard:
            listen = f"{self.options.host}:{ports.http}"
            self.front = Nginx(lambda folder: nginx_config(folder, http_server(listen, "triton_http"),
                                                           upstream("triton_http", [(self.internal_http, True)])))
        self.restarts: list[float] = []  # when supervise() started the server again
        #: Validate a local repository before each start and load only the models that pass (explicit model control;
        #: otherwise a model that fails is refused with its problem): one broken model never takes the others down.
        self.leave_out_invalid = leave_out_invalid
        self.left_out: dict[str, str] = {}  # model -> its problem, at the last start
        #: Load what changes in a local repository while supervise() runs (explicit model control; serving.watch).
        self.watch_repository = watch_repository and model_control == "explicit" and isinstance(self.repository, Path)
        self.repository_watch: RepositoryWatch | None = None
        self._python_served: dict[str, tuple[int, str]] = {}  # python_models' last answer
        #: Every stub's /dev/shm region starts with this, so that a server that was killed leaves none behind.
        self.shm_prefix = f"trtrepo_{os.getpid()}_{secrets.token_hex(4)}_"

    @property
    def api_key(self) -> str | None:
        return self.options.api_key

    @property
    def connect_host(self) -> str:
        """The address a client on this machine reaches the server at."""
        return self.options.connect_host

    @property
    def http_url(self) -> str:
        return f"{self.connect_host}:{self.ports.http}"

    @property
    def grpc_url(self) -> str:
        return f"{self.connect_host}:{self.ports.grpc}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.connect_host}:{self.ports.metrics}/metrics"

    def command(self) -> list[str]:
        command = [
            str(self.installation.binary),
            f"--model-repository={self.repository}",
            f"--backend-directory={self.installation.backend_dir}",
            f"--http-port={self.internal_http}",
            f"--grpc-port={self.ports.grpc}",
            f"--metrics-port={self.ports.metrics}",
            f"--model-control-mode={self.model_control}",
            # Clients that keep connections open would otherwise hold shutdown for 30 s.
            f"--exit-timeout-secs={EXIT_TIMEOUT_S}",
            f"--log-format={self.log_format}",
            f"--backend-config=python,shm-region-prefix-name={self.shm_prefix}",
            *self.options.server_flags(LOOPBACK if self.front else None),
        ]
        command += [f"--cuda-memory-pool-byte-size={gpu}:{self.cuda_pool_mb << 20}" for gpu in range(self.gpus)]
        if self.model_control == "explicit":
            if self.left_out:
                command += [f"--load-model={name}" for name in self._served_models()]
            else:
                command.append("--load-model=*")
        return command

    def _served_models(self) -> list[str]:
        return [p.name for p in model_folders(self.repository) if p.name not in self.left_out]

    def _leave_out_invalid(self) -> None:
        """The repository's invalid models, each said in one line; UserError where they cannot be left out."""
        self.left_out = invalid_models(self.repository)
        if not self.left_out:
            return
        if self.model_control != "explicit" or not self._served_models():
            name, problem = next(iter(self.left_out.items()))
            raise UserError(f"{name} would not load ({problem}); fix it or remove its folder"
                            + ("" if self._served_models() else ": no other model to serve"))
        for name, problem in self.left_out.items():
            self.on_event(f"left out {name}: {problem}")

    def start(self, timeout_s: float = 180) -> "TritonServer":
        check_stub_numpy(self.installation)
        wanted = (self.ports.http, self.ports.grpc, self.ports.metrics, self.internal_http)
        taken = [port for port in dict.fromkeys(wanted) if not port_free(self.options.host, port)]
        if taken:
            raise UserError(f"port {', '.join(map(str, taken))} on {self.options.host} is in use (another server?): "
                            "pick free ports")
        try:
            if self.front is not None:
                self.front.start(lambda: port_open(self.connect_host, self.ports.http))
            self._launch(timeout_s)
        except BaseException:  # not ready, or a signal while waiting: leave no server behind
            self.stop()
            raise
        return self

    def _launch(self, timeout_s: float) -> None:
        """Start the tritonserver process, write the key files, wait until it is ready, watch its stubs."""
        if self.leave_out_invalid and isinstance(self.repository, Path):
            self._leave_out_invalid()
        env = {**os.environ, **self.installation.env}
        if self.log_file is None:
            self.process = subprocess.Popen(self.command(), env=env, start_new_session=True, preexec_fn=die_with_parent)
        else:
            # Appended: the log of a server that died stays above its restart's.
            self._log_offset = self.log_file.stat().st_size if self.log_file.exists() else 0
            with self.log_file.open("ab") as log:
                self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, env=env,
                                                start_new_session=True, preexec_fn=die_with_parent)
        if self.api_key:
            self._key_files = write_key_files({self.ports.http, self.ports.grpc}, self.api_key)
        self._wait_ready(timeout_s)
        if self.watch_repository:
            self.repository_watch = RepositoryWatch(self.repository, self.load_model, self.on_event)
        if self.watch_stubs:
            self.watchdog = StubWatchdog(self.process.pid, self.python_models, self.reload_model, self.on_event,
                                         requests=self.request_counts, memory_failures=self.memory_failures).start()

    def supervise(self, stop: threading.Event, timeout_s: float = 180) -> None:
        """Until ``stop`` is set: whenever the server dies (a signal, a crash, an out-of-memory kill), report why and
        start it again on the same ports with the same key and repository, waiting longer after each restart; more
        than RESTART_LIMIT restarts within RESTART_WINDOW_S end it with a UserError naming the last cause."""
        while not stop.wait(0.5):
            if self.repository_watch is not None and self.process is not None and self.process.poll() is None:
                self.repository_watch.poll()
            if self.front is not None and not self.front.running():
                self.on_event(f"nginx in front of tritonserver exited ({self.front.reason()}); starting it again")
                self.front.start(lambda: port_open(self.connect_host, self.ports.http))
            if self.process is None or self.process.poll() is None:
                continue
            cause = f"tritonserver {self.exit_reason()}: {self.log_error()}"
            now = time.monotonic()
            self.restarts = [t for t in self.restarts if now - t < RESTART_WINDOW_S]
            if len(self.restarts) >= RESTART_LIMIT:
                raise UserError(f"{cause}; not restarted again after {RESTART_LIMIT} restarts within "
                                f"{RESTART_WINDOW_S:.0f} s")
            wait = RESTART_WAIT_S * 2 ** len(self.restarts)
            self.on_event(f"{cause}; restarting it in {wait:.0f} s "
                          f"(restart {len(self.restarts) + 1} of at most {RESTART_LIMIT} within {RESTART_WINDOW_S:.0f} s)")
            self._stop_process(0)
            if stop.wait(wait):
                return
            self.restarts.append(time.monotonic())
            started = time.monotonic()
            try:
                self._launch(timeout_s)
            except UserError as exc:
                self.on_event(f"restart failed: {exc}")
                continue
            self.on_event(f"tritonserver is ready again ({time.monotonic() - started:.1f} s after its restart)")

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise UserError(f"tritonserver {self.exit_reason()}: {self.log_error()}")
            if is_ready(self.ports.http, self.connect_host):
                return
            time.sleep(0.5)
        raise UserError(f"tritonserver not ready after {timeout_s:.0f}s: {self.log_error()}")

    def exit_reason(self) -> str:
        """'exited with code N' or 'was killed by SIGNAME'."""
        code = self.process.returncode if self.process is not None else None
        if code is not None and code < 0:
            return f"was killed by {signal.Signals(-code).name}"
        return f"exited with code {code}"

    def log_error(self) -> str:
        """The first model-load failure in the server log, else its last error line (prefix E) that is not one of
        the notices a machine without a GPU always logs, else its last line."""
        if self.log_file is None:
            return "see the server log above"
        with self.log_file.open("rb") as log:
            log.seek(self._log_offset)
            text = log.read().decode(errors="replace")
        lines = [line for line in text.splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("E") and not any(n in line for n in GPU_ABSENT_NOTICES)]
        failures = [line for line in errors if "failed to load" in line]
        chosen = failures[:1] or errors[-1:] or [f"last log line: {lines[-1]}" if lines else "no log output"]
        return chosen[0][:400] + f" (log: {self.log_file})"

    def _api(self):
        """A gRPC client of this server with its key. gRPC, not HTTP: the HTTP client needs geventhttpclient, which
        a packed GPU machine (trtrepo gpu-pack) may lack, and the watchdog must run wherever the server does."""
        from trtrepo.serving.client import triton_client  # sends this server's key with every call

        return triton_client(self.grpc_url, "grpc", self.api_key)

    def ready_models(self) -> list[str]:
        """The models the server has ready, by name."""
        api = self._api()
        try:
            return sorted(entry["name"] for entry in self._index(api) if entry.get("state") == "READY")
        finally:
            api.close()

    def request_counts(self) -> dict[str, dict[str, float]] | None:
        """Per model, its requests answered, failed and waiting (metrics.request_counts); None where unreadable."""
        text = scrape_metrics(self.metrics_url)
        return None if text is None else request_counts(text)

    def memory_failures(self) -> dict[int, float]:
        """Per stub process id, the requests it failed for want of memory (metrics.memory_failures)."""
        text = scrape_metrics(self.metrics_url)
        return {} if text is None else memory_failures(text)

    def python_models(self) -> dict[str, tuple[int, str]]:
        """Ready Python-backend models: name -> (stubs they should have, the config JSON they serve)."""
        import json

        api = self._api()
        try:
            models = {}
            for entry in self._index(api):
                if entry.get("state") != "READY":
                    continue
                config = api.get_model_config(entry["name"], as_json=True, client_timeout=120)["config"]
                if config.get("backend") == "python":
                    models[entry["name"]] = (sum(g.get("count", 1) for g in config.get("instance_group", [])) or 1,
                                             json.dumps(config))
            # Triton's index lists the repository's folders: a model served whose folder was deleted drops out of it
            # while it stays READY. Kept, so that when its stub dies the reload finds the folder gone and unloads it.
            models |= {name: served for name, served in self._python_served.items()
                       if name not in models and self._folder_gone(name) and api.is_model_ready(name)}
            self._python_served = models
            return models
        finally:
            api.close()

    def _index(self, api) -> list[dict]:
        """The repository index's entries; none where the local repository itself is gone (Triton cannot list it)."""
        try:
            return api.get_model_repository_index(as_json=True).get("models", [])
        except Exception:
            if isinstance(self.repository, Path) and not self.repository.is_dir():
                return []
            raise

    def _folder_gone(self, model: str) -> bool:
        return isinstance(self.repository, Path) and not (self.repository / model).is_dir()

    def load_model(self, model: str) -> None:
        """Load ``model`` from its folder as it is on disk (again, where it is loaded and changed)."""
        api = self._api()
        try:
            api.load_model(model)
        finally:
            api.close()
        self.left_out.pop(model, None)
        if self.watchdog is not None:
            self.watchdog.served_changed()

    def reload_model(self, model: str, config_json: str) -> None:
        """Load ``model`` anew with this config. Triton ignores a load whose config and files are unchanged, so a
        parameter counts the restarts; the old instances serve (or fail) until the new ones are ready. A model whose
        folder is gone is unloaded instead (UserError): READY with a dead stub, it would answer every request 500."""
        import json

        if self._folder_gone(model):
            api = self._api()
            try:
                api.unload_model(model)
            finally:
                api.close()
            raise UserError(f"its folder {self.repository / model} is gone, so it cannot be loaded again; unloaded it "
                            "(no longer READY); put the folder back and restart the server")
        config = json.loads(config_json)
        parameters = config.setdefault("parameters", {})
        restarts = int(parameters.get(RESTARTS_PARAMETER, {}).get("string_value", "0")) + 1
        parameters[RESTARTS_PARAMETER] = {"string_value": str(restarts)}
        api = self._api()
        try:
            api.load_model(model, config=json.dumps(config))
        finally:
            api.close()

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """SIGINT lets Triton unload models and finish in-flight requests; after ``timeout_s``, or at a second
        signal meanwhile, the server and its stubs are killed. Either way no stub outlives the call.

        The front stops first, gracefully (its in-flight requests answered): the connections it keeps alive to
        Triton would otherwise hold Triton's HTTP service open until its exit timeout, after which Triton exits
        without unloading its models."""
        try:
            if self.front is not None:
                self.front.stop()
        except BaseException:  # a second signal while the front drained: Triton gets no grace either
            timeout_s = 0
            raise
        finally:
            self._stop_process(timeout_s)

    def _stop_process(self, timeout_s: float) -> None:
        """The tritonserver process, its stubs, its shared memory, its watchdog and its key files gone."""
        if self.watchdog is not None:
            self.watchdog.stop()
            self.watchdog = None
        for path in self._key_files:
            path.unlink(missing_ok=True)
        self._key_files = []
        if self.process is None:
            return
        try:
            if self.process.poll() is None and timeout_s > 0:
                self.process.send_signal(signal.SIGINT)
                try:
                    self.process.wait(timeout_s)
                except subprocess.TimeoutExpired:
                    pass
        finally:  # also when a second signal interrupts the wait
            self._kill_group()
            remove_shared_memory(self.shm_prefix)

    def _kill_group(self) -> None:
        """SIGKILL to whatever is left of the server's process group (it and its stubs, started in their own session)."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.process.wait()

    def __enter__(self) -> "TritonServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def gpu_count() -> int:
    """NVIDIA GPUs this machine's driver shows (nvidia-smi -L); 0 without one."""
    if not shutil.which("nvidia-smi"):
        return 0
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return sum(1 for line in listing.splitlines() if line.startswith("GPU "))


def port_free(host: str, port: int) -> bool:
    """Whether a TCP port can be bound on ``host`` now (nothing listens there)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers bind: past closed connections' TIME_WAIT
        try:
            sock.bind((host.strip("[]"), port))
        except OSError:
            return False
    return True


def port_open(host: str, port: int) -> bool:
    """Whether something accepts TCP connections on ``host``:``port``."""
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def is_ready(http_port: int, host: str = LOOPBACK) -> bool:
    try:
        with urllib.request.urlopen(f"http://{host}:{http_port}/v2/health/ready", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False
