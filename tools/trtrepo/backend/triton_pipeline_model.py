"""Triton Python-backend entry point of a trtrepo pipeline (BLS: bytes in, answers out); see trtrepo/backend/pipeline.py."""

# First, so that with trtrepo's server (see trtrepo/backend/triton_utils_shim.py) the environment's packages are importable.
import triton_python_backend_utils  # noqa: F401

from trtrepo.backend.pipeline import TritonPythonModel  # noqa: F401
