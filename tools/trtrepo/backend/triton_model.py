"""Triton Python-backend entry point written by trtrepo; the engine and artifact are named in config.pbtxt."""

# First, so that with trtrepo's server (see trtrepo/backend/triton_utils_shim.py) the environment's packages are importable.
import triton_python_backend_utils  # noqa: F401

from trtrepo.backend import TritonPythonModel  # noqa: F401
