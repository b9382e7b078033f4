"""Models over variants already built: Triton ensembles (CTPN split in two) and BLS pipelines (a tensor variant
serving encoded images)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable

from trtrepo.backend import PIPELINE_ENTRY
from trtrepo.build.plan import PipelinePlan
from trtrepo.build.status import BuildResult
from trtrepo.format.config import (
    CONFIG_FILE,
    VERSION,
    Variant,
    ensemble_config,
    pipeline_config,
    is_decoupled,
    read_config,
    runs_on_gpu,
    write_config,
)
from trtrepo.format.validate import pipelined_variant_problem
from trtrepo.models import get_model


def build_ensemble(name: str, steps: tuple[str, ...], repo_dir: Path, log: Callable[[str], None]) -> BuildResult:
    """A Triton ensemble over variants already in the repository (its batch limit: the smallest of theirs)."""
    missing = [step for step in steps if not (Path(repo_dir) / step / CONFIG_FILE).is_file()]
    if missing:
        log(f"warning: skipping ensemble {name}: {', '.join(missing)} not in the repository")
        return BuildResult(name, "skipped", f"{', '.join(missing)} not in the repository")
    limit = min(read_config(Path(repo_dir) / step / CONFIG_FILE).max_batch_size for step in steps)
    model_dir = Path(repo_dir) / name
    (model_dir / VERSION).mkdir(parents=True, exist_ok=True)  # Triton wants a version folder, empty for ensembles
    write_config(ensemble_config(name, [(step, get_model(Variant.parse(step).model)) for step in steps], limit), model_dir)
    log(f"{name}: ensemble {' -> '.join(steps)}")
    return BuildResult(name, "built", " -> ".join(steps))


def build_pipeline(pipeline: PipelinePlan, repo_dir: Path, backends: frozenset[str], log: Callable[[str], None]) -> BuildResult:
    """The BLS model that serves encoded images through a tensor variant, batching requests up to the variant's
    own limit; needs the Python backend."""
    name, variant = pipeline.name, pipeline.variant
    variant_config = Path(repo_dir) / variant / CONFIG_FILE
    served = read_config(variant_config) if variant_config.is_file() else None
    limit = served.max_batch_size if served else 0
    if not (Path(repo_dir) / variant / VERSION).is_dir() or served is None:
        reason = f"its variant {variant} is not in the repository"
    elif "python" not in backends:
        reason = "the server has no python backend"
    elif limit < 1:
        reason = f"its variant {variant} takes no batch (max_batch_size 0)"
    elif is_decoupled(served):
        reason = pipelined_variant_problem(variant)
    else:
        model_dir = Path(repo_dir) / name
        (model_dir / VERSION).mkdir(parents=True, exist_ok=True)
        entry = model_dir / VERSION / "model.py"
        partial = entry.with_suffix(".partial")
        shutil.copyfile(PIPELINE_ENTRY, partial)
        os.replace(partial, entry)  # a rebuild stopped half-way leaves the previous entry file whole
        write_config(pipeline_config(name, get_model(Variant.parse(variant).model), variant, limit, runs_on_gpu(served),
                                     pipeline.prepare, pipeline.instances), model_dir)
        log(f"{name}: pipeline over {variant}")
        return BuildResult(name, "built", f"pipeline over {variant}")
    log(f"warning: skipping pipeline {name}: {reason}")
    return BuildResult(name, "skipped", reason)
