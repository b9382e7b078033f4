"""GPU utilisation while a measurement runs: Triton's own gauge, or NVML where the server's metrics lack it."""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from statistics import mean
from typing import Callable

UTILIZATION_METRIC = "nv_gpu_utilization"  # Triton's gauge, 0..1 per GPU (DCGM-backed)
PERIOD_S = 0.25


def triton_gpu_utilization(metrics_text: str) -> float | None:
    """Mean of Triton's nv_gpu_utilization over the GPUs in a Prometheus scrape, in percent; None when absent."""
    values = [
        float(line.rsplit(" ", 1)[1])
        for line in metrics_text.splitlines()
        if line.startswith(UTILIZATION_METRIC + "{") or line.startswith(UTILIZATION_METRIC + " ")
    ]
    return 100 * mean(values) if values else None


def _triton_reader(metrics_url: str) -> Callable[[], float | None] | None:
    def read() -> float | None:
        try:
            with urllib.request.urlopen(metrics_url, timeout=2) as response:
                return triton_gpu_utilization(response.read().decode())
        except (urllib.error.URLError, OSError):
            return None

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
