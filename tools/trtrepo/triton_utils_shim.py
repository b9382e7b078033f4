"""Stands in for triton_python_backend_utils in the backend folder trtrepo prepares for the wheel's server.

The Python backend stub embeds the system's libpython and ignores PYTHONPATH, yet it imports this module
(which needs numpy) before any model code. So this module first puts the environments named in
TRTREPO_PYTHONPATH in front of sys.path (processing their .pth files, so editable installs work), then
runs Triton's own utilities module in its place.
"""

import os
import site
import sys

_added: list[str] = []
for _entry in filter(None, os.environ.get("TRTREPO_PYTHONPATH", "").split(os.pathsep)):
    _before = set(sys.path)
    site.addsitedir(_entry)
    _added += [p for p in sys.path if p not in _before]
sys.path[:] = _added + [p for p in sys.path if p not in _added]

_upstream = os.path.join(os.path.dirname(__file__), "triton_python_backend_utils_upstream.py")
with open(_upstream) as _file:
    exec(compile(_file.read(), _upstream, "exec"))
