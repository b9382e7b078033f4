"""A served local repository watched for changes, so that the live configuration is the one on disk.

What a user changes under a running `trtrepo serve` (`trtrepo config`, a rebuilt variant, a model folder added or a
broken one fixed) is loaded by the server once the folder has stopped changing, and said in one line; a change that
would not load (trtrepo.format.validate) is refused in one line, the model serving what it served before. Triton's
own poll mode would load a broken change as readily as a good one, and unload the model with it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from trtrepo.format.config import readable_configs
from trtrepo.format.validate import invalid_models, model_folders

#: How often the repository is looked at; a change is loaded at the first look that finds its folder as it was at
#: the look before (a folder still being copied is not loaded half-written).
WATCH_INTERVAL_S = 2.0


def fingerprint(folder: Path) -> tuple[tuple[str, int, int], ...]:
    """Each file of a model folder with its size and modification time: changes when any file is written, added,
    removed or renamed."""
    found = []
    for path in sorted(folder.rglob("*")):
        try:
            stat = path.stat()
        except OSError:  # removed while listed
            continue
        if path.is_file():
            found.append((str(path.relative_to(folder)), stat.st_size, stat.st_mtime_ns))
    return tuple(found)


class RepositoryWatch:
    """Loads the model folders of ``repository`` that changed or appeared since the last look, through ``load``
    (model name -> None, raising on failure), and says each outcome through ``report``."""

    def __init__(self, repository: Path, load: Callable[[str], None], report: Callable[[str], None]) -> None:
        self.repository = repository
        self.load = load
        self.report = report
        self._applied = self._look()  # what the server was started with
        self._last = dict(self._applied)
        self._gone_said: set[str] = set()
        self._next = time.monotonic() + WATCH_INTERVAL_S

    def _look(self) -> dict[str, tuple]:
        return {folder.name: fingerprint(folder) for folder in model_folders(self.repository)}

    def poll(self) -> list[str]:
        """At most every WATCH_INTERVAL_S: one look; the models loaded (changed, or new) in this call."""
        if time.monotonic() < self._next or not self.repository.is_dir():
            return []
        self._next = time.monotonic() + WATCH_INTERVAL_S
        now = self._look()
        settled = [name for name, seen in now.items() if seen == self._last.get(name) and seen != self._applied.get(name)]
        for name in set(self._applied) - set(now) - self._gone_said:
            self.report(f"{name}: its folder is gone from the repository; still serving it until it is unloaded "
                        "(its stub dies, or the server restarts)")
            self._gone_said.add(name)
        self._gone_said &= set(self._applied) - set(now)
        self._last = now
        if not settled:
            return []
        problems = invalid_models(self.repository)
        pipelines = {folder.name for folder, config in readable_configs(self.repository) if "variant" in config.parameters}
        loaded = []
        for name in sorted(settled, key=lambda n: n in pipelines):  # variants first, then the pipelines calling them
            self._applied[name] = now[name]  # said once per change, good or bad
            if name in problems:
                self.report(f"{name}: changed on disk but would not load ({problems[name]}); the server keeps what it "
                            "served, and a restart leaves it out: fix it")
                continue
            started = time.monotonic()
            try:
                self.load(name)
            except Exception as exc:
                self.report(f"{name}: changed on disk; loading it failed ({' '.join(str(exc).split())[:300]})")
                continue
            self.report(f"{name}: loaded its change on disk in {time.monotonic() - started:.1f} s")
            loaded.append(name)
        return loaded
