"""The step that sweeps and tune share: load a variant with changed serving options on every server of a set, measure
it there, and put each server's original config back.

A change is any field of trtrepo.format.config.ServingOptions (instances, max_batch_size, preferred batch sizes, queue delay,
CUDA graphs, pipelining); only the model is reloaded, through the repository API, never the server. An ensemble
(ctpn_split) is changed through the models it chains, a pipeline through the tensor variant it calls.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Sequence

from trtrepo.errors import UserError
from trtrepo.format.config import apply_serving_options, config_to_json, runs_on_gpu, serving_options_of
from trtrepo.imagesets import shipped_photos
from trtrepo.perf.analyzer import PerfPoint, measure_servers, photo_input_data
from trtrepo.perf.pipeline_stages import read_counters, stage_milliseconds
from trtrepo.serving.access import Endpoint
from trtrepo.serving.client import InferenceClient
from trtrepo.serving.stubs import Stub, stubs_of


#: How long a reload may take to end the stubs of the configs it replaced before the trial measures anyway.
SETTLE_TIMEOUT_S = 60
#: Serving options a trial may not change on an ensemble: its own batch limit would no longer match its steps'.
ENSEMBLE_FIXED = ("max_batch_size", "preferred_batch_sizes")


class Trial:
    """``variant`` on every server of ``endpoints``, reloaded with ``load(**changes)`` and measured with ``measure``.

    Used as a context manager: on exit every server gets its own original config back (each server may have been
    started with a different one). The options not named in a change keep the original config's values."""

    def __init__(self, variant: str, endpoints: Sequence[Endpoint], photos: list[Path] | None = None,
                 pipeline_instances: int | None = None) -> None:
        """``photos``: what a pipeline is sent, one per request (default: the shipped photos);
        ``pipeline_instances``: a pipeline's own instance count while measured (default: its config's)."""
        if not endpoints:
            raise UserError("no server to measure on")
        self.variant = variant
        self.endpoints = list(endpoints)
        self.clients = [InferenceClient(variant, url=e.grpc_url, protocol="grpc") for e in self.endpoints]
        first = self.clients[0]
        self.config = first.config
        self.steps = [step.model_name for step in self.config.ensemble_scheduling.step]
        #: A pipeline's tensor variant, which its changes reload ("" for other models).
        self.serves = self.config.parameters["variant"].string_value if "variant" in self.config.parameters else ""
        reloaded = list(self.steps) or [self.serves or variant]
        if self.serves and pipeline_instances is not None:
            reloaded.append(variant)  # the pipeline itself, for its own instance count
        #: A pipeline's own instance count while measured (None for other models).
        self.pipeline_instances = (pipeline_instances or self.config.instance_group[0].count) if self.serves else None
        #: Per server, the original config of every model a change reloads.
        self.originals = [{name: client.model_config(name) for name in reloaded} for client in self.clients]
        # A pipeline's requests are encoded photos in host memory, whatever runs its variant.
        self.on_gpu = not self.serves and any(runs_on_gpu(config) for config in self.originals[0].values())
        self.input_data = photo_input_data(photos or shipped_photos()) if self.serves else None
        self.changed = False

    def __enter__(self) -> "Trial":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.restore()

    def load(self, **changes: object) -> None:
        """Reload the variant on every server with these serving options changed (UserError: a server refused it,
        or the change does not apply, with the reason)."""
        if (self.steps or self.serves) and any(changes.get(name) is not None for name in ENSEMBLE_FIXED):
            kind = "an ensemble" if self.steps else "a pipeline"
            raise UserError(f"{self.variant} is {kind}: its {' and '.join(ENSEMBLE_FIXED)} follow the models it calls; "
                            "tune those instead")
        self.changed = True  # before the first load: one that fails half-way still needs restoring
        stubs: dict[str, int] = {}
        for client, originals in zip(self.clients, self.originals):
            for name, config in originals.items():
                own = {"instances": self.pipeline_instances} if name == self.variant and self.serves else changes
                loaded = changed_config(config, own)
                client.load_model(name, config_to_json(loaded))
                if loaded.backend == "python":
                    stubs[name] = loaded.instance_group[0].count
        self._settle(stubs)

    def _settle(self, expected: dict[str, int], timeout_s: float = SETTLE_TIMEOUT_S) -> None:
        """Wait until the stubs of the configs a reload replaced have exited, each own server left with the
        ``expected`` stubs per model: Triton loads the new instances before it unloads the old ones, whose stubs
        would otherwise still be there when a measurement starts, and their exit taken for a crash."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            counts = [Counter(stub.model for stub in stubs_of(e.server_pid)) for e in self.endpoints if e.server_pid]
            if all(count[name] <= wanted for count in counts for name, wanted in expected.items()):
                return
            time.sleep(0.1)

    def measure(self, concurrency: int, batch_size: int, measurement_ms: int, servers: int = 1,
                instances: int | None = None) -> PerfPoint:
        """perf_analyzer against the first ``servers`` servers at once, ``concurrency`` requests in flight in all.
        A pipeline gets the photos, one per request (it batches requests itself), whatever ``batch_size``."""
        if not 1 <= servers <= len(self.endpoints):
            raise UserError(f"{servers} servers asked for, {len(self.endpoints)} given")
        config = next(iter(self.originals[0].values()))
        metrics_urls = [e.metrics_url for e in self.endpoints[:servers]]
        before = read_counters(metrics_urls, self.variant, self.serves) if self.serves else None
        stubs = self._stubs(servers)
        failure = None
        try:
            point = measure_servers(
                self.variant, [(e.grpc_url, e.metrics_url) for e in self.endpoints[:servers]],
                1 if self.serves else batch_size, concurrency, measurement_ms,
                instances if instances is not None else serving_options_of(config).instances,
                shapes_of=self.steps[0] if self.steps else self.variant, on_gpu=self.on_gpu,
                streaming=self.clients[0].streaming,  # each server's key: perf_analyzer finds it by its URL
                input_data=self.input_data)
        except UserError as exc:
            failure = exc
        lost = stubs - self._stubs(servers)
        if lost:
            died = ", ".join(sorted({stub.model for stub in lost}))
            raise UserError(f"crashed: {len(lost)} Python stub{'s' if len(lost) > 1 else ''} of {died} died (or were "
                            "replaced by a reload) while it was measured; a figure would count the failed requests "
                            "and the reload, so there is none") from failure
        if failure:
            raise failure
        if not self.serves:
            return point
        stage_ms = stage_milliseconds(before, read_counters(metrics_urls, self.variant, self.serves))
        return replace(point, serves=self.serves, prepared_on=self.prepared_on(), stage_ms=stage_ms,
                       pipeline_instances=self.pipeline_instances)

    def _stubs(self, servers: int) -> set[Stub]:
        """The live Python stubs of the models this trial measures, on those of the first ``servers`` servers that
        are this command's own (a stub of a server given by address cannot be seen)."""
        names = {self.variant, *self.steps, *([self.serves] if self.serves else [])}
        return {stub for e in self.endpoints[:servers] if e.server_pid
                for stub in stubs_of(e.server_pid) if stub.model in names}

    def prepared_on(self) -> str:
        """Where the pipeline prepares its photos (PerfPoint.prepared_on)."""
        if self.config.parameters["prepare"].string_value != "device":
            return "host"
        return "cuda" if runs_on_gpu(self.config) else "cpu"

    def restore(self) -> None:
        """Every server's original configs back (a no-op when nothing was changed)."""
        if not self.changed:
            return
        for client, originals in zip(self.clients, self.originals):
            for name, config in originals.items():
                client.load_model(name, config_to_json(config))
        self.changed = False


def changed_config(config, changes: dict[str, object]):
    """A copy of ``config`` with these serving options changed (trtrepo.format.config.ServingOptions fields; None: as is)."""
    if len(config.instance_group) > 1:
        raise UserError(f"{config.name} has {len(config.instance_group)} instance groups; sweeps and tune set one")
    copy = type(config)()
    copy.CopyFrom(config)
    options = serving_options_of(config)
    changes = {name: value for name, value in changes.items() if value is not None}
    if "max_batch_size" in changes and "preferred_batch_sizes" not in changes:
        # A smaller batch limit takes the preferred sizes it leaves behind with it, instead of being refused for them.
        changes["preferred_batch_sizes"] = tuple(b for b in options.preferred_batch_sizes if b <= changes["max_batch_size"])
    wanted = options.updated(**changes)
    apply_serving_options(copy, wanted)
    return copy
