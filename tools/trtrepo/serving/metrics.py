"""A tritonserver's Prometheus metrics, as the measuring commands and the stub watchdog read them."""

from __future__ import annotations

import re
import urllib.error
import urllib.request

from trtrepo.backend.stub_python import MEMORY_FAILURES_METRIC

#: A metric every Triton serves: how a port is told to be a Triton's metrics.
TRITON_METRIC = "nv_inference_count"
#: Triton's counters of a model's requests (answered, failed for any reason) and its gauge of those waiting.
REQUEST_METRICS = ("nv_inference_request_success", "nv_inference_request_failure", "nv_inference_pending_request_count")
_SAMPLE = re.compile(r"^(\w+)\{([^}]*)\} ([0-9.eE+-]+)$", re.MULTILINE)
_LABEL = re.compile(r'(\w+)="([^"]*)"')


def scrape_metrics(metrics_url: str) -> str | None:
    """The server's Prometheus metrics text, or None where they cannot be read."""
    try:
        with urllib.request.urlopen(metrics_url, timeout=2) as response:
            return response.read().decode()
    except (urllib.error.URLError, OSError, ValueError):
        return None


def labelled_samples(metrics_text: str) -> list[tuple[str, dict[str, str], float]]:
    """Each labelled sample of a Prometheus scrape: its metric name, labels and value."""
    return [(name, dict(_LABEL.findall(labels)), float(value)) for name, labels, value in _SAMPLE.findall(metrics_text)]


def request_counts(metrics_text: str) -> dict[str, dict[str, float]]:
    """Per model, its requests answered ("request_success"), failed ("request_failure", every reason) and waiting
    for an instance ("pending_request_count"), summed over its versions."""
    found: dict[str, dict[str, float]] = {}
    for name, labels, value in labelled_samples(metrics_text):
        if name in REQUEST_METRICS and "model" in labels:
            counts = found.setdefault(labels["model"], {key.removeprefix("nv_inference_"): 0.0 for key in REQUEST_METRICS})
            counts[name.removeprefix("nv_inference_")] += value
    return found


def memory_failures(metrics_text: str) -> dict[int, float]:
    """Per stub process id, the requests it failed for want of memory (trtrepo.backend.stub_python.MemoryFailures)."""
    return {int(labels["pid"]): value for name, labels, value in labelled_samples(metrics_text)
            if name == MEMORY_FAILURES_METRIC and labels.get("pid", "").isdigit()}
