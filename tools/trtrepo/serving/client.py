"""The inference client shared by the client scripts, evaluation and tests: HTTP or gRPC, one-line errors."""

from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, TypeVar

import numpy as np

from trtrepo.errors import UserError
from trtrepo.format.config import Variant, config_from_json, config_from_metadata, declarations_in, is_decoupled
from trtrepo.serving.access import find_key, key_headers, normalize_url
from trtrepo.models import get_model, spec_of
from trtrepo.specs import IMAGE_SUFFIXES, TASK_CLIENTS, ModelSpec


PROTOCOLS = {"http": 8000, "grpc": 8001}
T = TypeVar("T")


def _short(exc: Exception) -> str:
    message = exc.message() if hasattr(exc, "message") and callable(exc.message) else str(exc)
    return " ".join(str(message).split())[:300]


#: The first wait before a request is sent again (InferenceClient's retries).
RETRY_WAIT_S = 0.1
#: The longest wait between two tries of a request no server answered.
RETRY_WAIT_MAX_S = 2.0
#: How long trtrepo's command-line clients wait for a server that is not there (being restarted: `trtrepo serve`
#: brings a dead tritonserver back within this) before they give up with one line.
RESTART_WAIT_S = 30.0
#: The statuses of a request that no server answered: a balancer with no replica to give it to (HTTP 502, 503,
#: 504), gRPC's UNAVAILABLE. A model's own error (bad input, 400) is never retried; neither is any other status.
UNANSWERED_STATUSES = frozenset({"502", "503", "504", "StatusCode.UNAVAILABLE"})


def unanswered(exc: Exception) -> bool:
    """Whether a failed request never reached a server that answered it (a refused or reset connection, or one of
    UNANSWERED_STATUSES), so that sending it again is safe. Decided by type and status code, never by message."""
    from tritonclient.utils import InferenceServerException

    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    return isinstance(exc, InferenceServerException) and str(exc.status()) in UNANSWERED_STATUSES


def triton_client(url: str, protocol: str, api_key: str | None = None, **options: object):
    """tritonclient's own client for ``url`` that sends the server's key with every request (the key given,
    else the one trtrepo.serving.access.find_key finds), for the calls InferenceClient does not wrap."""
    from tritonclient._plugin import InferenceServerClientPlugin

    if protocol == "http":
        import tritonclient.http as module
    else:
        import tritonclient.grpc as module
    client = module.InferenceServerClient(normalize_url(url), **options)
    headers = key_headers(find_key(url, api_key), protocol)

    class Headers(InferenceServerClientPlugin):
        def __call__(self, request) -> None:
            request.headers.update(headers)

    if headers:
        client.register_plugin(Headers())
    return client


class InferenceClient:
    """A connection to one model on a Triton server, checked at construction: server live, model ready.

    ``api_key`` opens the restricted APIs (model repository, shared memory); without one, the key that trtrepo's
    launcher left for a server on this machine is used (trtrepo.serving.access.find_key). A server that restricts configs
    too (older trtrepo, other deployments) describes the model from its metadata instead."""

    def __init__(
        self, model: str, url: str | None = None, protocol: str = "http", timeout_s: float = 60, concurrency: int = 1,
        api_key: str | None = None, retries: int = 0, wait_s: float = 0.0,
    ) -> None:
        """``concurrency``: how many threads may call infer at once (HTTP keeps that many connections).
        ``retries``: how often infer sends a request again that found no server to answer it (refused, reset,
        502/503 from a balancer, gRPC UNAVAILABLE), waiting RETRY_WAIT_S, doubled each time; ``retried`` counts.
        ``wait_s``: for that long at least, a request no server answered (a restart under way) is sent again,
        however many retries that takes."""
        if protocol not in PROTOCOLS:
            raise UserError(f"protocol must be http or grpc, got {protocol!r}")
        self.protocol = protocol
        self.url = normalize_url(url or f"localhost:{PROTOCOLS[protocol]}")
        self.model = model
        self.timeout_s = timeout_s
        self.retries = retries
        self.wait_s = wait_s
        self.retried = 0
        self.api_key = find_key(self.url, api_key)
        if protocol == "http":
            import gevent
            import tritonclient.http as module

            # tritonclient's async HTTP requests run in gevent greenlets, whose failures (a server that died) the hub
            # prints as tracebacks; the same failure reaches the caller as one line through get_result.
            gevent.get_hub().exception_stream = None
            self._client = triton_client(self.url, protocol, self.api_key, concurrency=concurrency,
                                         connection_timeout=timeout_s, network_timeout=timeout_s)
        else:
            import tritonclient.grpc as module

            self._client = triton_client(self.url, protocol, self.api_key)
        self._module = module
        self._check_model()
        self.config = self.model_config(model)
        # A pipelined model answers through response senders, which Triton delivers on gRPC streams only.
        self.streaming = is_decoupled(self.config)
        if self.streaming and protocol == "http":
            raise UserError(f"model {model!r} is pipelined (decoupled) and answers over gRPC streams only: use --protocol grpc")

    def _check_model(self) -> None:
        try:
            live = self._client.is_server_live()
        except Exception as exc:  # connection refused, DNS, timeout: the client raises several types
            raise UserError(f"cannot reach Triton at {self.url} over {self.protocol}: {_short(exc)}") from exc
        if not live:
            raise UserError(f"Triton at {self.url} is not live")
        if self._client.is_model_ready(self.model):
            return
        index = self.repository_index()
        if self.model not in index:
            raise UserError(f"model {self.model!r} is not on the server at {self.url}; it has: {', '.join(sorted(index)) or 'none'}")
        raise UserError(f"model {self.model!r} is not ready on {self.url} (state {index[self.model] or 'unknown'})")

    def _json(self, call, *args: object) -> dict:
        """A tritonclient call's answer as JSON-like dicts: HTTP gives them, gRPC when asked (as_json)."""
        return call(*args) if self.protocol == "http" else call(*args, as_json=True)

    def repository_index(self) -> dict[str, str]:
        """Model name -> state, for every model in the server's repository."""
        entries = self._json(self._client.get_model_repository_index)
        entries = entries if self.protocol == "http" else entries.get("models", [])
        return {entry["name"]: entry.get("state", "") for entry in entries}

    def model_config(self, model: str):
        """The model's config as the server sees it, parsed into Triton's ModelConfig message; from the model's
        metadata (tensors only) where the server restricts configs and no key was given."""
        import json

        try:
            raw = self._json(self._client.get_model_config, model)
            raw = raw if self.protocol == "http" else raw["config"]
        except Exception as exc:
            if "restricted" not in _short(exc):
                raise UserError(f"cannot read the config of {model!r} from {self.url}: {_short(exc)}") from exc
            return config_from_metadata(self._json(self._client.get_model_metadata, model))
        return config_from_json(json.dumps(raw))

    def request_counts(self) -> tuple[int, int]:
        """(successful, failed) requests the server has counted for this model since it was loaded."""
        try:
            stats = self._json(self._client.get_inference_statistics, self.model)
        except Exception as exc:
            raise UserError(f"cannot read the statistics of {self.model!r}: {_short(exc)}") from exc
        counts = stats["model_stats"][0]["inference_stats"]
        return int(counts.get("success", {}).get("count", 0)), int(counts.get("fail", {}).get("count", 0))

    def load_model(self, model: str, config_json: str | None = None) -> None:
        """(Re)load a model through the repository API, optionally with a config override."""
        try:
            self._client.load_model(model, config=config_json)
        except Exception as exc:
            hint = "; pass the server's key (--api-key or TRTREPO_API_KEY)" if "restricted" in _short(exc) else ""
            raise UserError(f"loading {model!r} failed: {_short(exc)}{hint}") from exc

    def _request(self, inputs: dict[str, np.ndarray]) -> tuple[list, list]:
        from tritonclient.utils import np_to_triton_dtype

        tensors = []
        for name, array in inputs.items():
            if array.dtype.kind == "f" and not np.isfinite(array).all():
                bad = int(np.argwhere(~np.isfinite(array.reshape(len(array), -1)))[0][0]) if array.ndim else 0
                raise UserError(f"input {name!r} holds NaN or infinite values (sample {bad}); not sent to {self.model!r}")
            tensor = self._module.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
            tensor.set_data_from_numpy(np.ascontiguousarray(array) if array.dtype != np.object_ else array)
            tensors.append(tensor)
        return tensors, [self._module.InferRequestedOutput(o.name) for o in self.config.output]

    def _outputs(self, result: object) -> dict[str, np.ndarray]:
        return {o.name: result.as_numpy(o.name) for o in self.config.output}

    def classify(self, inputs: dict[str, np.ndarray], output: str, top_k: int) -> list[list[tuple[str, float]]]:
        """The server's top_k (label, score) per sample of ``output``, through Triton's classification extension
        (class_count): only k labels travel back, not the whole output; scores are the output's own values."""
        tensors, _ = self._request(inputs)
        requested = [self._module.InferRequestedOutput(output, class_count=top_k)]
        try:
            result = self._client.infer(self.model, tensors, outputs=requested)
        except Exception as exc:
            raise UserError(f"inference on {self.model!r} failed: {_short(exc)}") from exc
        rows = result.as_numpy(output).reshape(len(next(iter(inputs.values()))), -1)
        # Each entry reads "score:index:label" (the label after the second colon may hold colons itself).
        return [[(entry.decode().split(":", 2)[2], float(entry.decode().split(":", 2)[0])) for entry in row]
                for row in rows]

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One request with the given batch; returns every output of the model."""
        if self.streaming:
            return self.infer_many([inputs])[0]
        tensors, outputs = self._request(inputs)
        return self._retrying(lambda: self._outputs(self._client.infer(self.model, tensors, outputs=outputs)))

    def _retrying(self, call: Callable[[], T]) -> T:
        """``call``, sent again while no server answered it, ``retries`` times and for ``wait_s`` at least."""
        attempt, deadline = 0, time.monotonic() + self.wait_s
        while True:
            try:
                return call()
            except UserError:
                raise
            except Exception as exc:
                if not unanswered(exc) or (attempt >= self.retries and time.monotonic() >= deadline):
                    waited = f" (no server answered it for {self.wait_s:g} s)" if self.wait_s and unanswered(exc) else ""
                    raise UserError(f"inference on {self.model!r} failed: {_short(exc)}{waited}") from exc
            self.retried += 1
            time.sleep(min(RETRY_WAIT_S * 2**attempt, RETRY_WAIT_MAX_S))
            attempt += 1

    def infer_many(self, requests: list[dict[str, np.ndarray]], on_result=lambda: None) -> list[dict[str, np.ndarray]]:
        """Several requests in flight at once (HTTP: the client's connection pool; gRPC: async calls, or one
        stream for a pipelined model), results in request order. ``on_result`` is called as each result is
        collected. Requests that no server answered are sent again as InferenceClient's retries and wait_s say
        (inference changes nothing on the server: sending a request twice is safe)."""
        return self._retrying(lambda: self._infer_many_once(requests, on_result))

    def _infer_many_once(self, requests: list[dict[str, np.ndarray]], on_result) -> list[dict[str, np.ndarray]]:
        import queue

        done: "queue.Queue" = queue.Queue()
        try:
            if self.protocol == "http":
                pending = []
                for request in requests:
                    tensors, outputs = self._request(request)
                    pending.append(self._client.async_infer(self.model, tensors, outputs=outputs))
                results = []
                for handle in pending:
                    results.append(self._outputs(handle.get_result()))
                    on_result()
                return results
            if self.streaming:
                self._client.start_stream(lambda result, error: done.put((result, error)))
            for index, request in enumerate(requests):
                tensors, outputs = self._request(request)
                if self.streaming:
                    self._client.async_stream_infer(self.model, tensors, outputs=outputs, request_id=str(index))
                else:
                    self._client.async_infer(self.model, tensors, lambda result, error: done.put((result, error)),
                                             outputs=outputs, request_id=str(index))
            collected: dict[int, dict[str, np.ndarray]] = {}
            while len(collected) < len(requests):
                try:
                    result, error = done.get(timeout=self.timeout_s)
                except queue.Empty:
                    raise UserError(f"inference on {self.model!r}: no answer within {self.timeout_s:g} s") from None
                if error is not None:
                    raise error
                collected[int(result.get_response().id)] = self._outputs(result)
                on_result()
            return [collected[i] for i in range(len(requests))]
        finally:
            if self.streaming:
                self._client.stop_stream()

    def batch_step(self, batch_size: int) -> int:
        """Samples per request: the asked batch size, capped at the model's max_batch_size (0: no batching)."""
        return max(1, min(batch_size, self.config.max_batch_size or batch_size))

    def infer_batches(self, samples: dict[str, np.ndarray], batch_size: int) -> dict[str, np.ndarray]:
        """Send samples in batches of at most batch_size (and at most the model's max_batch_size)."""
        step = self.batch_step(batch_size)
        total = len(next(iter(samples.values())))
        parts = [self.infer({k: v[i : i + step] for k, v in samples.items()}) for i in range(0, total, step)]
        return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}


def collect_images(paths: list[Path]) -> list[Path]:
    """Files as given, folders expanded to the images inside (sorted); missing paths are a one-line error."""
    images: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise UserError(f"{path}: folder holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
            images += found
        elif path.exists():
            images.append(path)
        else:
            raise UserError(f"{path}: no such file or folder")
    return images


#: Images read and in flight at once when sending encoded bytes: bounds memory on large folders.
BYTES_WAVE = 64


def is_pipeline(model: str, url: str | None, protocol: str) -> bool:
    """Whether ``model`` names a pipeline on the server (encoded images in): the name a user types first, which the
    clients send bytes to without --server-side. A variant's name never does."""
    if Variant.is_variant(model):
        return False
    return "variant" in InferenceClient(model, url=url, protocol=protocol).config.parameters


def served_spec(client: "InferenceClient", fallback: str) -> ModelSpec:
    """The model the served config names (described by its declaration where it carries one: a declared model needs
    no code on the client's machine), else ``fallback``'s (a config without trtrepo's parameters)."""
    parameters = {key: value.string_value for key, value in client.config.parameters.items()}
    return spec_of(parameters) if parameters.get("model") else get_model(fallback)


@contextmanager
def served_models(url: str | None, names: list[str]) -> Iterator[None]:
    """get_model knows, for the block, the declared models among ``names`` (variants and pipelines) that the server
    at ``url`` serves, from their configs (open without the key): the commands that work through --url need no
    plan. A name the server does not serve is left for the command to report."""
    from trtrepo.models import declared_models

    configs = []
    for name in names if url else []:
        try:
            configs.append(InferenceClient(name, url=url, protocol="grpc").config)
        except UserError:
            continue
    with declared_models(declarations_in(configs)):
        yield


def ask_pipeline(
    images: list[Path], model: str, url: str | None, protocol: str, options: dict[str, np.ndarray],
    expected_task: str, workers: int = 4, on_done=lambda count: None,
) -> Iterator[tuple[ModelSpec, dict[str, np.ndarray]]]:
    """Each image's encoded bytes to the pipeline model (one request each, ``workers`` in flight; the pipeline's
    batcher gathers them) with the same ``options`` for all: the model's spec and its answer, in image order. A
    variant's name (<model>_<engine>_<precision>) stands for its model's pipeline."""
    model = Variant.parse(model).model if Variant.is_variant(model) else model
    client = InferenceClient(model, url=url, protocol=protocol, concurrency=workers, wait_s=RESTART_WAIT_S)
    if "variant" not in client.config.parameters:
        raise UserError(f"{model} is a tensor model; --server-side needs a pipeline model (`trtrepo repo` builds one per model)")
    spec = served_spec(client, client.config.parameters["model"].string_value)
    if spec.task != expected_task:
        raise UserError(f"{model} answers {spec.task}, not {expected_task}: use {TASK_CLIENTS[spec.task]}")
    for start in range(0, len(images), BYTES_WAVE):
        requests = [{"image": np.array([[path.read_bytes()]], dtype=np.object_), **options} for path in images[start : start + BYTES_WAVE]]
        for answer in client.infer_many(requests, lambda: on_done(1)):
            yield spec, answer
