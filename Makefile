# Two entry points: `make demo` (the embedded-default job) and `make test`.
# Both create/use a virtual environment in $(VENV). torch is installed first, from
# $(TORCH_SPEC), only when the environment has no torch yet, so pip never resolves torch
# itself (which would fetch a CUDA build). GPU users: make TORCH_SPEC="torch==2.13.0" \
#   TORCH_PIP_ARGS="--index-url <your CUDA wheel index>"
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
TORCH_PIP_ARGS ?=
BIN := $(VENV)/bin
STAMP := $(VENV)/.facemetric-installed
# the test suite runs every optional part that needs no compiled face library (dlib-bin stays
# optional: its parity tests skip with a reason where it is absent)
EXTRAS ?= dev,pretrained,serve,onnx,dense

.PHONY: demo test hostile venv bench lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install $(TORCH_PIP_ARGS) "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -e ".[$(EXTRAS)]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/facemetric demo --out runs/demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

# every command over the generated hostile-input corpus (part of `make test`), with the counts
hostile: $(STAMP)
	$(BIN)/python -m pytest -q -s tests/hostile

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_verification.py
	$(BIN)/python benchmarks/bench_triplet_selection.py
	$(BIN)/python benchmarks/bench_gallery_search.py
	$(BIN)/python benchmarks/bench_clustering.py

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) runs
