"""What each build step reports (Model Navigator's way): built, up to date, skipped or failed, with the reason."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BuildResult:
    variant: str
    status: str  # built | up to date | skipped | rejected (below its accuracy gate) | failed
    detail: str = ""
    gate: str = ""  # the accuracy gate's verdict for a variant built now: PASS/BELOW with the measures, or why skipped
