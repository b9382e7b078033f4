"""What runs inside Triton's Python-backend stub: the model every variant's ``model.py`` loads, its batching and
pacing, the detection pipeline, and the stub's Python path. Imports only the core, ``models`` and ``engines``.

``from trtrepo.backend import TritonPythonModel`` is what built repositories' ``model.py`` runs; it is resolved on
first use, so that the server side (which reads the entry files' paths and ``stub_python``) never imports engines.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


#: Copied as ``<version>/model.py`` of every Python-backend variant and of every pipeline.
MODEL_ENTRY = Path(__file__).with_name("triton_model.py")
PIPELINE_ENTRY = Path(__file__).with_name("triton_pipeline_model.py")
#: Stands in for triton_python_backend_utils in the backend folder trtrepo prepares for the wheel's server.
UTILS_SHIM = Path(__file__).with_name("triton_utils_shim.py")
#: Run as a script (``python -I -S stub_python.py``) to learn which numpy the stub will import.
STUB_PYTHON = Path(__file__).with_name("stub_python.py")


def __getattr__(name: str) -> Any:
    if name == "TritonPythonModel":
        from trtrepo.backend.model import TritonPythonModel

        return TritonPythonModel
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
