"""Stands in for triton_python_backend_utils in the backend folder trtrepo prepares for the wheel's server.

The Python backend stub embeds the system's libpython and ignores PYTHONPATH, yet it imports this module
(which needs numpy) before any model code. So this module first puts the environments named in
TRTREPO_PYTHONPATH in front of sys.path (trtrepo/backend/stub_python.py, run from this file's real folder), then runs
Triton's own utilities module in its place.
"""

import os


_stub_python = os.path.join(os.path.dirname(os.path.realpath(__file__)), "stub_python.py")
_namespace: dict = {"__name__": "trtrepo_stub_python"}
with open(_stub_python) as _file:
    exec(compile(_file.read(), _stub_python, "exec"), _namespace)
_namespace["put_first"](os.environ.get(_namespace["PATH_ENV"], ""))

_upstream = os.path.join(os.path.dirname(__file__), "triton_python_backend_utils_upstream.py")
with open(_upstream) as _file:
    exec(compile(_file.read(), _upstream, "exec"))
