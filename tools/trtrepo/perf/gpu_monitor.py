"""GPU utilisation while a measurement runs (Triton's own gauge, or NVML where the server's metrics lack it), and
the GPU memory in use on a server's GPUs."""

from __future__ import annotations

import threading
from statistics import mean
from typing import Callable

from trtrepo.serving.metrics import scrape_metrics


UTILIZATION_METRIC = "nv_gpu_utilization"  # Triton's gauge, 0..1 per GPU (DCGM-backed)
#: Triton's gauge of the memory in use on each GPU, by every process (its stubs' CUDA contexts and caches included).
MEMORY_METRIC = "nv_gpu_memory_used_bytes"
PERIOD_S = 0.25


def _gauge(metrics_text: str, name: str) -> list[float]:
    """The values of one metric in a Prometheus scrape, one per label set (GPU)."""
    return [float(line.rsplit(" ", 1)[1]) for line in metrics_text.splitlines()
            if line.startswith(name + "{") or line.startswith(name + " ")]


def triton_gpu_utilization(metrics_text: str) -> float | None:
    """Mean of Triton's nv_gpu_utilization over the GPUs in a Prometheus scrape, in percent; None when absent."""
    values = _gauge(metrics_text, UTILIZATION_METRIC)
    return 100 * mean(values) if values else None


def triton_gpu_memory_mb(metrics_text: str) -> float | None:
    """GPU memory in use over all the server's GPUs in a Prometheus scrape, in MB; None when absent (no GPU)."""
    values = _gauge(metrics_text, MEMORY_METRIC)
    return sum(values) / 2**20 if values else None


def gpu_memory_mb(metrics_url: str | None) -> float | None:
    """GPU memory in use on the GPUs of the server whose metrics are at ``metrics_url`` (None: unknown)."""
    text = scrape_metrics(metrics_url) if metrics_url else None
    return None if text is None else triton_gpu_memory_mb(text)


def _triton_reader(metrics_url: str) -> Callable[[], float | None] | None:
    def read() -> float | None:
        text = scrape_metrics(metrics_url)
        return None if text is None else triton_gpu_utilization(text)

    return read if read() is not None else None


def _nvml_reader() -> Callable[[], float | None] | None:
    try:
        import pynvml  # nvidia-ml-py, present where a driver is; imported only when asked

        pynvml.nvmlInit()
        handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
    except Exception:  # no package, no driver or no GPU: no reading rather than a failed measurement
        return None
    if not handles:
        return None
    return lambda: float(mean(pynvml.nvmlDeviceGetUtilizationRates(h).gpu for h in handles))


class GpuUtilization:
    """Samples GPU utilisation in a thread while the ``with`` block runs; ``percent`` is the mean, None without a GPU."""

    def __init__(self, metrics_url: str | None = None) -> None:
        self.metrics_url = metrics_url
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "GpuUtilization":
        read = (_triton_reader(self.metrics_url) if self.metrics_url else None) or _nvml_reader()
        if read is not None:
            self._thread = threading.Thread(target=self._sample, args=(read,), daemon=True)
            self._thread.start()
        return self

    def _sample(self, read: Callable[[], float | None]) -> None:
        while not self._stop.wait(PERIOD_S):
            value = read()
            if value is not None:
                self.samples.append(value)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    @property
    def percent(self) -> float | None:
        return mean(self.samples) if self.samples else None
