#!/usr/bin/env bash
# The GPU study, run on a GPU machine without network, from the repository root, after `trtrepo gpu-pack` here
# (device tool: carry .gpu):
#     bash perf/gpu/study.sh [MODELS] [STEPS]          e.g.  bash perf/gpu/study.sh resnet50 bench,sweep
# Unpacks the tritonserver + perf_analyzer bundle, installs trtrepo and the packed wheels beside the machine's
# PyTorch, builds the GPU repository from repo.gpu.toml, then per model runs the STEPS:
#     bench  served over in-process throughput of every variant, at its max batch (bench.csv, bench.md)
#     sweep  the GPU variants (PyTorch FP32 baseline, the optimized one) over instances 1, 2, 4, 8 and two
#            concurrencies, with GPU utilisation: the study's Table 4 (sweep.csv, sweep.md, sweep.png)
#     cpu    ONNX Runtime FP32 on the host cores, same requests, instances 1, 2, 4 (same files: the CPU column)
#     bytes  the model's pipeline (photos in: the shipped photos re-encoded as JPEG, decoded with nvJPEG on the GPU)
#            beside the variant it calls (tensors in) at batch ${SWEEP_BATCH}, instances 1, once per pipeline
#            instance count in PIPELINE_INSTANCES (default 1,2,4; $RESULTS/bytes/pN: the bytes-in / tensors-in
#            column; pipelines.md: where its instances spent each image, read from the server's counters)
#     answers  the model's pipeline against the client-side path on the same photos: the same labels and boxes?
#            (perf/gpu/answers.py; $RESULTS/answers-MODEL.md)
#     crash  the pipeline under load with the stubs' stacks collected (issue 42: it died over a pipelined variant,
#            which a pipeline no longer calls), copied three ways, each measured at concurrency 8 and 64
#            ($RESULTS/crash/WAY, faults/): as_built (prepare = device), host (prepare = host), glibc_mmap (the
#            pipeline stub keeps glibc's adaptive mmap threshold: mmap_threshold = 0); CRASH_WAYS to pick,
#            CRASH_CONCURRENCY and CRASH_PIPELINE_INSTANCES for the points (default 8,64 and 1)
#     tune   trtrepo tune (quick) of the model's optimized PyTorch variant over instances, max batch size, CUDA
#            graphs and pipelining ($RESULTS/tune: tune.csv, tune.md, tune.png)
# Results gather in $RESULTS (default perf/reports/gpu): each run replaces the rows of what it measured again.
# SWEEP_ENGINES=pytorch_fp32,inductor limits the sweep to those engines' (or engine_precision's) variants; MPS=1 runs everything under CUDA's
# Multi-Process Service (started here, stopped at exit), which lets the instances' processes share the GPU at once.
set -euo pipefail
MODELS=${1:-resnet50,yolov3}
STEPS=${2:-bench,sweep,cpu}
RESULTS=${RESULTS:-perf/reports/gpu}
PACK=${PACK:-.gpu}
REPO=${REPO:-/tmp/trtrepo-gpu-repository}
# Every count reloads the model, and each Python-backend instance (a process importing PyTorch) takes ~10 s to
# start: 1,2,4,8 keeps a model's sweep inside one 10-minute device call; INSTANCES=1,2,3,4,5,6,7,8 for all.
INSTANCES=${INSTANCES:-1,2,4,8}
MEASUREMENT_MS=${MEASUREMENT_MS:-2000}  # each point: three perf_analyzer windows this long
PIPELINE_INSTANCES=${PIPELINE_INSTANCES:-1,2,4}  # the bytes step's pipeline instance counts, one perf run each
declare -A SWEEP_BATCH=([resnet50]=32 [yolov3]=8 [ctpn]=1)
declare -A SWEEP_CONCURRENCY=([resnet50]=8,32 [yolov3]=8,32 [ctpn]=8,32)
declare -A TUNE_MAX_BATCH=([resnet50]=64,128,256 [yolov3]=16,32,64 [ctpn]=1)

[ -f "$PACK/triton-bundle.tar.xz" ] || { echo "error: $PACK/triton-bundle.tar.xz missing: run 'trtrepo gpu-pack' first" >&2; exit 2; }
command -v nvidia-smi >/dev/null || { echo "error: no NVIDIA driver here (nvidia-smi missing): this script is for the GPU machine" >&2; exit 2; }
if [ "${MPS:-0}" = 1 ]; then
  export CUDA_MPS_PIPE_DIRECTORY=/tmp/trtrepo-mps CUDA_MPS_LOG_DIRECTORY=/tmp/trtrepo-mps-log
  mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY"
  nvidia-cuda-mps-control -d || { echo "error: could not start the MPS control daemon" >&2; exit 2; }
  trap 'echo quit | nvidia-cuda-mps-control' EXIT
fi
TB=/tmp/trtrepo-triton
SITE=/tmp/trtrepo-site
SWEEP_ENGINES=${SWEEP_ENGINES:-pytorch,inductor,tensorrt}
mkdir -p "$TB" "$RESULTS"
[ -x "$TB/extra/perf_analyzer" ] || tar -xJf "$PACK/triton-bundle.tar.xz" -C "$TB"
# shellcheck disable=SC1091
source "$TB/env.sh"
python3 -m pip install -q --no-index --no-deps --no-build-isolation --upgrade --target "$SITE" "$PACK"/wheels/*.whl .
# The machine's numpy is 2, which this server's Python-backend stub garbles tensors with (tools/trtrepo/backend/stub_python.py):
# the stub alone gets the packed numpy 1.26, first on its path; everything else here keeps the machine's.
STUB_SITE=/tmp/trtrepo-stub-numpy
python3 -m pip install -q --no-index --no-deps --upgrade --target "$STUB_SITE" "$PACK"/stub-wheels/numpy-*.whl
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TRTREPO_STUB_PATH="$STUB_SITE"
# A stub that dies of a signal leaves its threads' Python stacks here (trtrepo/backend/stub_python.py).
export TRTREPO_STUB_FAULTS="${TRTREPO_STUB_FAULTS:-$RESULTS/faults}"
trtrepo() { python3 -m trtrepo.cli "$@"; }
set_parameter() {  # FOLDER NAME VALUE: one parameter of the model's config.pbtxt
  python3 -c 'import sys; from trtrepo.format.config import read_config, write_config; c = read_config(sys.argv[1] + "/config.pbtxt"); c.parameters[sys.argv[2]].string_value = sys.argv[3]; write_config(c, sys.argv[1])' "$@"
}

if [ ! -f "$RESULTS/environment.md" ]; then
  {
    echo "# Environment"
    echo
    echo "- GPU: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader)"
    echo "- CPU cores: $(nproc)"
    echo "- $(python3 -c 'import sys, torch, onnxruntime; print(f"Python {sys.version.split()[0]}, torch {torch.__version__}, onnxruntime {onnxruntime.__version__}")')"
    echo "- tritonserver 2.51 (nvidia-pytriton 0.7.0 bundle, Python backend); perf_analyzer from tritonclient 2.50.0"
    echo
    echo "## Runs (the machine's clock)"
    echo
  } > "$RESULTS/environment.md"
fi
echo "- $(date -u +%Y-%m-%dT%H:%MZ): bash perf/gpu/study.sh $MODELS $STEPS (INSTANCES=$INSTANCES${MPS:+ MPS=$MPS}${SWEEP_ENGINES:+ SWEEP_ENGINES=$SWEEP_ENGINES})" >> "$RESULTS/environment.md"

trtrepo repo --plan repo.gpu.toml --models "$MODELS" --output "$REPO"
# A step that fails (a sweep point that runs out of GPU memory, say) does not stop the others: the study goes on
# and exits 1 at the end, after writing what it measured.
status=0
for model in ${MODELS//,/ }; do
  variants=$(cd "$REPO" && ls -d "${model}"_*_* 2>/dev/null | paste -sd, -)
  if [[ ",$STEPS," == *,bench,* ]]; then
    trtrepo bench --model-repository "$REPO" --models "$variants" --seconds 4 --output "$RESULTS" || status=1
  fi
  # The model's ensembles (ctpn_split) are swept as wholes: their parts (ctpn_backbone_*, ctpn_head_*) only in bench.
  ensembles=$(cd "$REPO" && { grep -l '^platform: "ensemble"' "${model}"_*/config.pbtxt 2>/dev/null || true; } | xargs -r -n1 dirname | paste -sd, -)
  parts=$(cd "$REPO" && for name in ${ensembles//,/ }; do sed -n 's/^ *model_name: "\(.*\)"/\1/p' "$name/config.pbtxt"; done)
  gpu_variants=$( { tr , '\n' <<<"$variants" | grep -v onnxruntime | { grep -E "_(${SWEEP_ENGINES//,/|})(_|$)" || true; } \
    | { grep -vxF -e "${parts:-/}" || true; }; tr , '\n' <<<"$ensembles"; } | grep . | paste -sd, -)
  if [[ ",$STEPS," == *,sweep,* ]]; then
    trtrepo perf --model-repository "$REPO" --models "$gpu_variants" --instances "$INSTANCES" \
      --concurrency "${SWEEP_CONCURRENCY[$model]}" --batch-size "${SWEEP_BATCH[$model]}" \
      --measurement-ms "$MEASUREMENT_MS" --output "$RESULTS" || status=1
  fi
  if [[ ",$STEPS," == *,cpu,* ]]; then
    concurrency=${SWEEP_CONCURRENCY[$model]}
    trtrepo perf --model-repository "$REPO" --models "${model}_onnxruntime_fp32" --instances 1,2,4 \
      --concurrency "${concurrency%%,*}" --batch-size "${SWEEP_BATCH[$model]}" --measurement-ms 4000 --output "$RESULTS" || status=1
  fi
  photos=/tmp/trtrepo-photos
  if [[ ",$STEPS," =~ ,(bytes|answers|crash), ]] && [ ! -d "$photos" ]; then
    python3 - "$photos" <<'PY'
import sys
from pathlib import Path
from PIL import Image
from trtrepo.imagesets import shipped_photos
out = Path(sys.argv[1]); out.mkdir(exist_ok=True)
for path in shipped_photos():
    with Image.open(path) as image:
        image.convert("RGB").save(out / f"{path.stem}.jpg", quality=90)
PY
  fi
  # The pipeline and the variant it calls, alone in a repository of links: a server for them loads nothing else.
  served=$(python3 -c 'import sys; from trtrepo.format.config import read_config; print(read_config(sys.argv[1]).parameters["variant"].string_value)' "$REPO/$model/config.pbtxt" 2>/dev/null || true)
  pair=/tmp/trtrepo-pipeline-$model
  rm -rf "$pair" && mkdir -p "$pair" && { [ -z "$served" ] || ln -s "$REPO/$model" "$REPO/$served" "$pair/"; }
  if [[ ",$STEPS," == *,answers,* ]]; then
    python3 perf/gpu/answers.py "$pair" "$model" "$photos" --output "$RESULTS/answers-$model.md" || status=1
  fi
  if [[ ",$STEPS," == *,bytes,* ]]; then
    for own in ${PIPELINE_INSTANCES//,/ }; do
      trtrepo perf --model-repository "$pair" --models "$served,$model" --instances 1 --concurrency "${BYTES_CONCURRENCY:-64,256}" \
        --pipeline-instances "$own" --batch-size "${SWEEP_BATCH[$model]}" --photos "$photos" \
        --measurement-ms "$MEASUREMENT_MS" --output "$RESULTS/bytes/p$own" || status=1
    done
  fi
  if [[ ",$STEPS," == *,crash,* && -n "$served" ]]; then
    for way in ${CRASH_WAYS:-as_built host glibc_mmap}; do
      copy=/tmp/trtrepo-crash-$model-$way
      rm -rf "$copy" && mkdir -p "$copy" && cp -r "$REPO/$model" "$REPO/$served" "$copy/"
      case $way in
        host) set_parameter "$copy/$model" prepare host ;;
        glibc_mmap) set_parameter "$copy/$model" mmap_threshold 0 ;;
      esac
      TRTREPO_STUB_FAULTS="$RESULTS/crash/$way/faults" trtrepo perf --model-repository "$copy" --models "$model" \
        --instances 1 --concurrency "${CRASH_CONCURRENCY:-8,64}" --pipeline-instances "${CRASH_PIPELINE_INSTANCES:-1}" \
        --photos "$photos" --measurement-ms "$MEASUREMENT_MS" \
        --output "$RESULTS/crash/$way" || status=1
    done
  fi
  if [[ ",$STEPS," == *,tune,* ]]; then
    trtrepo tune --model-repository "$REPO" --models "${model}_pytorch_fp16" --strategy quick --gpu-options \
      --instances 1,2 --max-batch-sizes "${TUNE_MAX_BATCH[$model]}" --concurrency "${SWEEP_CONCURRENCY[$model]}" \
      --batch-size "${SWEEP_BATCH[$model]}" --measurement-ms "$MEASUREMENT_MS" --output "$RESULTS/tune" || status=1
  fi
done
exit "$status"
