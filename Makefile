# Quick start: `make demo` and `make test`. Both create or reuse .venv and install what they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_NO_ADVISORY_WARNINGS := 1
export FLWR_TELEMETRY_ENABLED := 0
export FLWR_DISABLE_UPDATE_CHECK := 1
export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION := 1

.PHONY: demo test test-fast lint bench install model clean yoco-study gpu-check

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch is pinned to the CPU build that pip finds locally; see README for CUDA.
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev,flower]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

# The built-in base model (the default preset, tiny) is built and pre-trained once (about a
# minute), then cached.
model: $(STAMP)
	$(BIN)/fedmllm model build --preset tiny

demo: model
	$(BIN)/fedmllm run

# pytest exits 5 when it collected no tests: that is a failure here, not a pass.
test: $(STAMP)
	$(BIN)/python -m pytest -q -x --durations=10; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "no tests collected"; exit 1; fi; exit $$rc

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m 'not slow'

# Everything that needs a CUDA GPU (bf16 tests, throughput, QLoRA, the bf16 demo): one table,
# within 8 minutes on an H100. Install a CUDA build of torch first: docs/gpu.md.
gpu-check: $(STAMP)
	$(BIN)/python benchmarks/gpu_check.py

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/round_overhead.py
	$(BIN)/python benchmarks/demo_time.py
	$(BIN)/python benchmarks/pretrain_value.py
	$(BIN)/python benchmarks/aggregate.py
	$(BIN)/python benchmarks/checkpoint_overhead.py
	$(BIN)/python benchmarks/flower_overhead.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info

# The YOCO study (docs/yoco_results.md): 360 runs, about 70 minutes on 2 CPU cores; run again, it
# resumes where it stopped and then rewrites the document.
yoco-study: $(STAMP)
	$(BIN)/fedmllm model build --preset tiny-structured
	if [ -f runs/bench-yoco/bench.json ]; then resume=--resume; fi; \
	$(BIN)/fedmllm bench benchmarks/grids/yoco.toml --out runs/bench-yoco --jobs 2 --threads 1 $$resume
	$(BIN)/fedmllm report runs/bench-yoco --publish docs/yoco_results.md
