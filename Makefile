# Everything starts from here: `make demo` and `make test` create the environment when missing.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
SRC    := omama tests scripts
ULTRALYTICS ?= ultralytics==8.4.190

.PHONY: env demo demo-download test lint format bench clean

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

clean:
	rm -rf demo_out demo_download_out bench_out .pytest_cache .ruff_cache
