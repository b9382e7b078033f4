# Thin wrappers over the trtrepo command line; `make help` lists them.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
WEIGHTS ?=
PYTEST_ARGS ?=
REPO ?= model_repository
comma := ,

.PHONY: help install demo test repo validate serve perf bench soak gpu-pack clean

help:  ## list the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

TENSORFLOW ?= 1
# The tests serve with each of these numpys first on the Python-backend stub's path (trtrepo/backend/stub_python.py says why).
STUB_TEST_NUMPY := 1.26.4 2.2.6
NUMPY_WHEELS := $(VENV)/share/trtrepo/numpy-wheels

install: $(STAMP)  ## create .venv with torch, onnxruntime, tensorflow-cpu (TENSORFLOW=0: without), tritonserver (nvidia-pytriton), perf_analyzer (tritonclient)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -e ".[test$(if $(filter 1,$(TENSORFLOW)),$(comma)tensorflow)]"
	$(if $(filter 1,$(TENSORFLOW)),$(BIN)/pip install -q --no-deps "tensorflow-serving-api==2.19.*")
	tools/install-system-libs.sh $(BIN)/python
	$(foreach version,$(STUB_TEST_NUMPY),$(BIN)/pip download -q --no-deps --only-binary=:all: -d $(NUMPY_WHEELS) "numpy==$(version)" &&) true
	touch $(STAMP)

demo: install  ## build the CPU repository, serve it, classify sample photos, run a short perf sweep (WEIGHTS to override)
	$(BIN)/trtrepo demo $(if $(WEIGHTS),--weights $(WEIGHTS))

# The import layers first (pyproject's [tool.importlinter]), then the suite on every core (pytest-xdist: the tests
# wait on servers and subprocesses as much as they compute). PYTEST_ARGS="-n 0" runs it in one process.
test: install  ## import layers, then unit and integration tests (starts the real tritonserver and perf_analyzer)
	$(BIN)/lint-imports --no-cache
	$(BIN)/python -m pytest -q -n auto $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 0; fi; exit $$rc

repo: install  ## build model_repository/ from repo.toml (its weights, or WEIGHTS=imagenet|random|PATH)
	$(BIN)/trtrepo repo --plan repo.toml $(if $(WEIGHTS),--weights $(WEIGHTS))

validate: install  ## check $(REPO)/ against Triton's config schema
	$(BIN)/trtrepo validate $(REPO)

serve: install  ## serve $(REPO)/ on ports 8000 (http), 8001 (grpc), 8002 (metrics)
	$(BIN)/trtrepo serve --model-repository $(REPO)

perf: install  ## sweep instance counts x concurrency on $(REPO)/ (results in perf/results)
	$(BIN)/trtrepo perf --model-repository $(REPO)

bench: install  ## served over in-process throughput per variant (GPU ones on GPU memory, REPO=model_repository_gpu); CTPN whole vs split
	$(BIN)/trtrepo bench --model-repository $(REPO)
	@if [ -d $(REPO)/ctpn_split ]; then \
	  $(BIN)/trtrepo perf --model-repository $(REPO) --models ctpn_pytorch_fp32,ctpn_onnxruntime_fp32,ctpn_split \
	    --instances 1,2,3,4,5 --concurrency 5 --measurement-ms 4000 --output perf/results/ctpn; fi

soak: install  ## hold concurrency 4 against $(REPO)/'s variants for SECONDS (default 600); requests, failures, p99, memory
	$(BIN)/trtrepo soak --model-repository $(REPO) --seconds $(or $(SECONDS),600) $(if $(MODELS),--models $(MODELS))

gpu-pack: install  ## pack .gpu/ for a GPU machine without network (then, there: bash perf/gpu/study.sh)
	$(BIN)/trtrepo gpu-pack

clean:  ## remove the virtual environment, generated models and results
	rm -rf $(VENV) perf/results
	find model_repository -mindepth 1 -maxdepth 1 ! -name README.md -exec rm -rf {} +
