"""The inference client shared by the client scripts, evaluation and tests: HTTP or gRPC, one-line errors."""

from __future__ import annotations

from pathlib import Path
import numpy as np

from trtrepo.config import config_from_json
from trtrepo.errors import UserError

PROTOCOLS = {"http": 8000, "grpc": 8001}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm"}


def _short(exc: Exception) -> str:
    message = exc.message() if hasattr(exc, "message") and callable(exc.message) else str(exc)
    return " ".join(str(message).split())[:300]


class InferenceClient:
    """A connection to one model on a Triton server, checked at construction: server live, model ready."""

    def __init__(self, model: str, url: str | None = None, protocol: str = "http", timeout_s: float = 60) -> None:
        if protocol not in PROTOCOLS:
            raise UserError(f"protocol must be http or grpc, got {protocol!r}")
        self.protocol = protocol
        self.url = url or f"localhost:{PROTOCOLS[protocol]}"
        self.model = model
        if protocol == "http":
            import tritonclient.http as module

            self._client = module.InferenceServerClient(self.url, connection_timeout=timeout_s, network_timeout=timeout_s)
        else:
            import tritonclient.grpc as module

            self._client = module.InferenceServerClient(self.url)
        self._module = module
        self._check_model()
        self.config = self.model_config(model)

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

    def repository_index(self) -> dict[str, str]:
        """Model name -> state, for every model in the server's repository."""
        if self.protocol == "http":
            entries = self._client.get_model_repository_index()
        else:
            entries = self._client.get_model_repository_index(as_json=True).get("models", [])
        return {entry["name"]: entry.get("state", "") for entry in entries}

    def model_config(self, model: str):
        """The model's config as the server sees it, parsed into Triton's ModelConfig message."""
        import json

        if self.protocol == "http":
            raw = self._client.get_model_config(model)
        else:
            raw = self._client.get_model_config(model, as_json=True)["config"]
        return config_from_json(json.dumps(raw))

    def load_model(self, model: str, config_json: str | None = None) -> None:
        """(Re)load a model through the repository API, optionally with a config override."""
        try:
            self._client.load_model(model, config=config_json)
        except Exception as exc:
            raise UserError(f"loading {model!r} failed: {_short(exc)}") from exc

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One request with the given batch; returns every output of the model."""
        from tritonclient.utils import np_to_triton_dtype

        request = []
        for name, array in inputs.items():
            tensor = self._module.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
            tensor.set_data_from_numpy(np.ascontiguousarray(array))
            request.append(tensor)
        outputs = [self._module.InferRequestedOutput(o.name) for o in self.config.output]
        try:
            result = self._client.infer(self.model, request, outputs=outputs)
        except Exception as exc:
            raise UserError(f"inference on {self.model!r} failed: {_short(exc)}") from exc
        return {o.name: result.as_numpy(o.name) for o in self.config.output}

    def infer_batches(self, samples: dict[str, np.ndarray], batch_size: int) -> dict[str, np.ndarray]:
        """Send samples in batches of at most batch_size (and at most the model's max_batch_size)."""
        step = max(1, min(batch_size, self.config.max_batch_size or batch_size))
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

