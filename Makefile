# Everything starts from here: `make demo` and `make test` create the environment when missing.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
SRC    := omama tests scripts
ULTRALYTICS ?= ultralytics==8.4.190

.PHONY: env demo demo-download test lint format bench wheelhouse gpu-check clean

env: $(VENV)/.installed

# ultralytics: omama-proposals' segmenter (AGPL-3.0, optional extra `proposals`), installed
# without its requirements: omama's own cover what it imports, and its opencv-python would
# overwrite the cv2 of opencv-python-headless.
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/pip install -q --no-deps '$(ULTRALYTICS)'
	touch $@

lint: env
	$(BIN)/ruff check $(SRC)
	$(BIN)/ruff format --check $(SRC)

format: env
	$(BIN)/ruff check --fix $(SRC)
	$(BIN)/ruff format $(SRC)

test: env lint
	$(BIN)/pytest

demo: env
	PATH="$(abspath $(BIN)):$$PATH" bash scripts/demo.sh

# The same from a synthetic Ego-Exo4D download: prepare, proposals, precompute, train, eval.
demo-download: env
	PATH="$(abspath $(BIN)):$$PATH" bash scripts/demo_download.sh

bench: env
	$(BIN)/python scripts/bench

# Wheels for scripts/gpu_check.sh on an offline GPU machine whose Python has torch: the
# project's light dependencies for CPython 3.12 on x86-64 Linux (about 21 MB). numpy, scipy and
# opencv (115 MB together) are expected in a PyTorch image; gpu_check.sh names any missing.
WHEELHOUSE ?= .whl
WHEELS := pycocotools h5py timm tqdm pyyaml matplotlib huggingface_hub safetensors
PLATFORMS := manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 \
	manylinux2014_x86_64 manylinux1_x86_64
wheelhouse:
	mkdir -p $(WHEELHOUSE)
	$(PYTHON) -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
	  --implementation cp $(addprefix --platform ,$(PLATFORMS)) -d $(WHEELHOUSE) $(WHEELS)
	du -sh $(WHEELHOUSE)

gpu-check:
	bash scripts/gpu_check.sh gpu_check_out

clean:
	rm -rf demo_out demo_download_out bench_out gpu_check_out .pytest_cache .ruff_cache
