"""A tritonserver's Prometheus metrics, as the measuring commands and the stub watchdog read them."""

from __future__ import annotations

import re
import urllib.error
import urllib.request

#: A metric every Triton serves: how a port is told to be a Triton's metrics.
TRITON_METRIC = "nv_inference_count"
_REQUESTS = re.compile(r'^nv_inference_(request_success|request_failure|pending_request_count)\{[^}]*model="([^"]+)"[^}]*\} '
                       r"([0-9.eE+-]+)$", re.MULTILINE)


def scrape_metrics(metrics_url: str) -> str | None:
    """The server's Prometheus metrics text, or None where they cannot be read."""
    try:
        with urllib.request.urlopen(metrics_url, timeout=2) as response:
            return response.read().decode()
    except (urllib.error.URLError, OSError, ValueError):
        return None


def request_counts(metrics_text: str) -> dict[str, dict[str, float]]:
    """Per model, its requests answered ("request_success"), failed ("request_failure", every reason) and waiting
    for an instance ("pending_request_count"), summed over its versions."""
    found: dict[str, dict[str, float]] = {}
    for name, model, value in _REQUESTS.findall(metrics_text):
        counts = found.setdefault(model, {"request_success": 0.0, "request_failure": 0.0, "pending_request_count": 0.0})
        counts[name] += float(value)
    return found
