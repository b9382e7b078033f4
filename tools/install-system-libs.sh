#!/usr/bin/env bash
# Debian libraries the bundled binaries need: perf_analyzer links libb64.so.0d, and the Python backend
# stub of nvidia-pytriton links the system's libpython of the venv's Python version. Also unpacks (without
# installing it or its OpenCV dependencies) the sample photos of Debian's darknet package into the venv,
# where trtrepo's tests, demo and calibration fallback find them.
#   usage: tools/install-system-libs.sh VENV_PYTHON
set -u
python=${1:-python3}
pyver=$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
prefix=$("$python" -c 'import sys; print(sys.prefix)')
photos="$prefix/share/darknet/data"
if [ ! -f "$photos/dog.jpg" ] && command -v apt-get >/dev/null; then
  scratch=$(mktemp -d)
  (cd "$scratch" && { apt-get download darknet >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && apt-get download darknet >/dev/null 2>&1; }; } \
    && dpkg -x darknet_*.deb unpacked && mkdir -p "$photos" && cp unpacked/usr/share/darknet/data/*.jpg "$photos/") \
    || echo "warning: could not unpack Debian's darknet sample photos; tests that need them will skip"
  rm -rf "$scratch"
fi
missing=""
for pkg in libb64-0d "libpython$pyver"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing="$missing $pkg"
done
[ -z "$missing" ] && exit 0
if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  apt-get install -y -q $missing >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q $missing >/dev/null; } \
    || echo "warning: apt-get could not install:$missing (perf_analyzer or the Python backend will fail)"
else
  echo "warning: please install the Debian packages:$missing (perf_analyzer needs libb64-0d; tritonserver's Python backend needs libpython$pyver)"
fi
