"""What a GPU machine without network needs for perf/gpu/study.sh, packed here: the tritonserver + perf_analyzer
bundle, the wheels its Python lacks, and numpy 1.26 for the Python-backend stub alone (trtrepo.backend.stub_python:
the GPU machine's own numpy is 2)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Callable

from trtrepo.errors import UserError

PLATFORMS = ["--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_17_x86_64", "--platform", "manylinux2014_x86_64"]


def pack(output: Path, bundle_script: Path, python: str, force: bool, on_event: Callable[[str], None] = print) -> None:
    """Fill ``output``: the server bundle (made by ``bundle_script`` unless one is there and not ``force``), then the
    wheels for the GPU machine's ``python``."""
    bundle = output / "triton-bundle.tar.xz"
    if force or not bundle.is_file():
        if not bundle_script.is_file():
            raise UserError(f"{bundle_script}: no bundle script; pass --bundle-script make-triton-bundle.sh")
        on_event(f"packing tritonserver + perf_analyzer with {bundle_script} (about a minute) ...")
        subprocess.run(["bash", str(bundle_script), str(output), python], check=True)
    for folder, wanted in (("wheels", ["--platform", "any", "tritonclient==2.50.0"]),
                           ("wheels", PLATFORMS + ["python-rapidjson"]), ("stub-wheels", PLATFORMS + ["numpy==1.26.4"])):
        command = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "-d",
                   str(output / folder), "--python-version", python, "--implementation", "cp", *wanted]
        if subprocess.run(command).returncode != 0:
            raise UserError(f"pip download failed: {' '.join(wanted)}")
