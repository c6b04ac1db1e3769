# Quick start: `make demo` and `make test`. Both create or reuse .venv and install the exact
# versions in requirements-lock.txt (`make lock` regenerates it from pyproject.toml's ranges).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
LOCK := requirements-lock.txt
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml $(LOCK) | cksum | cut -d' ' -f1)
# The lock's torch is the CPU build (2.13.0+cpu): pip takes it from a local wheel folder or from
# PyTorch's CPU wheel index (PIP_EXTRA_INDEX_URL); GPU machines: docs/models.md, "On a GPU".
LOCK_TORCH := torch==2.13.0+cpu
COMMA := ,
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_NO_ADVISORY_WARNINGS := 1
export FLWR_TELEMETRY_ENABLED := 0
export FLWR_DISABLE_UPDATE_CHECK := 1
export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION := 1

.PHONY: demo test test-fast test-latest test-lowest lock lint bench install model \
	clean yoco-study gpu-check docs

# bitsandbytes (QLoRA, the qlora extra) is locked too but installed beside the venv, not in
# it: peft imports it in every process where it is installed (+1.2 s each, and a warning line
# on some CPUs), so only the QLoRA tests and runs that ask for it put it on their path.
QLORA := $(VENV)/qlora

# A venv that already holds a CUDA build of torch (a GPU machine, docs/models.md) keeps it
# and its torchvision; everything else still comes from the lock.
CUDA_TORCH = $(shell test -x $(BIN)/python && $(BIN)/python -c \
	"import torch, sys; sys.exit(0 if torch.version.cuda else 1)" 2>/dev/null && echo yes)

$(STAMP): pyproject.toml $(LOCK)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# exactly the lock (no resolver at work: --no-deps), then fedmllm itself, then a check
	# that the venv (with $(QLORA)) holds what the lock says and nothing else
	grep -v -E '^(bitsandbytes$(if $(CUDA_TORCH),|torch))==' $(LOCK) > $(VENV)/lock-venv.txt
	$(BIN)/python -m pip install --quiet --no-deps -r $(VENV)/lock-venv.txt
	$(BIN)/python -m pip install --quiet --no-deps --upgrade --target $(QLORA) \
		$$(grep '^bitsandbytes==' $(LOCK))
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	PYTHONPATH=$(QLORA) $(BIN)/python tools/lockcheck.py \
		$(if $(CUDA_TORCH),--except torch$(COMMA)torchvision) $(LOCK)
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

# The one resolution both the lock and test-lowest use: this platform, the locked extras, torch
# from the local wheel folder where pip has one.
UV_COMPILE = $(BIN)/uv pip compile pyproject.toml --extra flower --extra qlora \
	--python-version 3.11 --python-platform x86_64-manylinux_2_28 \
	$(if $(PIP_FIND_LINKS),--find-links $(PIP_FIND_LINKS))

# Regenerate the lock from pyproject.toml's ranges: the newest releases they allow today, torch
# held at the CPU build. Commit the result with the tests it passed.
lock:
	test -x $(BIN)/uv || { $(PYTHON) -m venv $(VENV) && $(BIN)/python -m pip install --quiet uv; }
	printf '%s\n' '$(LOCK_TORCH)' > $(VENV)/lock-constraints.txt
	$(UV_COMPILE) --extra dev --constraint $(VENV)/lock-constraints.txt \
		--custom-compile-command 'make lock' --output-file $(LOCK)
	# which pyproject.toml this lock was made from (a test checks it is the current one)
	sed -i "2a #    from pyproject.toml sha256 $$(sha256sum pyproject.toml | cut -d' ' -f1)" $(LOCK)

install: $(STAMP)

# The built-in base model (the default preset, tiny) is built and pre-trained once (about a
# minute), then cached.
model: $(STAMP)
	$(BIN)/fedmllm model build --preset tiny

demo: model
	$(BIN)/fedmllm run

# pytest exits 5 when it collected no tests: that is a failure here, not a pass. The tiers:
# `make test` (what CI runs: every test), `make test-fast` (no processes
# started, no slow tests), `make test-latest` / `make test-lowest` (other installs, below).
# Three workers on two cores: much of the slow tests' time is spent waiting on the processes
# they start (measured: 339 s of pytest with -n 3, 365 s with -n 2). The built-in model is
# built first (both cores, once), not inside a test worker.
PYTEST := $(BIN)/python -m pytest
TEST_WORKERS ?= 3
test: model
	$(PYTEST) -q -n $(TEST_WORKERS) --dist loadgroup --durations=15; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "no tests collected"; exit 1; fi; exit $$rc
	PYTHONPATH=$(QLORA) FEDMLLM_TEST_QLORA=1 $(PYTEST) -q tests/model/test_qlora_cpu.py

test-fast: $(STAMP)
	FEDMLLM_TEST_NO_PROCESSES=1 $(PYTEST) -q -n 2 --dist loadgroup -m 'not slow and not processes'

# The family, loading, QLoRA, Flower and resume tests against the newest releases
# pyproject.toml's ranges allow today, torchvision included (so the video families run too),
# in a second venv.
# Nothing is pinned there: what it resolved is printed first.
VENV_LATEST := .venv-latest
LATEST_TESTS := tests/model/test_families.py tests/model/test_model.py \
	tests/model/test_qlora_cpu.py tests/runtime/flower tests/runtime/test_resume.py
test-latest:
	rm -rf $(VENV_LATEST) && $(PYTHON) -m venv $(VENV_LATEST)
	$(VENV_LATEST)/bin/python -m pip install --quiet --upgrade pip
	$(VENV_LATEST)/bin/python -m pip install --quiet --upgrade --upgrade-strategy eager \
		-e '.[dev,flower,video,qlora]'
	$(VENV_LATEST)/bin/python tools/lockcheck.py --show $(LOCK)
	FEDMLLM_CACHE=$(CURDIR)/$(VENV_LATEST)/cache $(VENV_LATEST)/bin/python -m pytest -q -n 2 \
		--dist loadgroup $(LATEST_TESTS)

# The oldest releases pyproject.toml's ranges allow (uv's lowest-direct resolution: the lower
# bound of every direct dependency, what they need above that), with the test tools and torch
# at the lock's versions, in a third venv; then every test that starts no process and the
# family tests. A lower bound that fails here is raised in pyproject.toml.
VENV_LOWEST := .venv-lowest
LOWEST_PYTEST := FEDMLLM_CACHE=$(CURDIR)/$(VENV_LOWEST)/cache FEDMLLM_TEST_NO_PROCESSES=1 \
	$(VENV_LOWEST)/bin/python -m pytest -q -n 2
test-lowest: $(STAMP)
	rm -rf $(VENV_LOWEST) && $(PYTHON) -m venv $(VENV_LOWEST)
	grep -E '^(pytest|pytest-xdist|execnet|iniconfig|pluggy|pygments|packaging|import-linter|grimp)==' \
		$(LOCK) \
		> $(VENV_LOWEST)/test-tools.txt
	printf '%s\n' '$(LOCK_TORCH)' > $(VENV_LOWEST)/constraints.txt
	$(UV_COMPILE) $(VENV_LOWEST)/test-tools.txt --resolution lowest-direct \
		--constraint $(VENV_LOWEST)/constraints.txt --quiet --output-file $(VENV_LOWEST)/lowest.txt
	$(VENV_LOWEST)/bin/python -m pip install --quiet --no-deps -r $(VENV_LOWEST)/lowest.txt
	$(VENV_LOWEST)/bin/python -m pip install --quiet --no-deps -e .
	$(VENV_LOWEST)/bin/python tools/lockcheck.py --show $(LOCK)
	$(LOWEST_PYTEST) -m 'not slow and not processes'
	$(LOWEST_PYTEST) -m 'not processes' tests/model/test_families.py tests/model/test_qlora_cpu.py

# Everything that needs a CUDA GPU (bf16 tests, throughput, QLoRA, the bf16 demo): one table,
# within 8 minutes on an H100. Install a CUDA build of torch first: docs/gpu.md.
gpu-check: $(STAMP)
	PYTHONPATH=$(QLORA) $(BIN)/python benchmarks/gpu_check.py

# The documentation site (docs/, mkdocs.yml): --strict turns a broken link or a page missing
# from the nav into a failure; CI runs it after the tests.
docs: $(STAMP)
	$(BIN)/mkdocs build --strict --quiet --site-dir .site

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks tools

bench: $(STAMP)
	$(BIN)/python benchmarks/round_overhead.py
	$(BIN)/python benchmarks/demo_time.py
	$(BIN)/python benchmarks/pretrain_value.py
	$(BIN)/python benchmarks/aggregate.py
	$(BIN)/python benchmarks/checkpoint_overhead.py
	$(BIN)/python benchmarks/flower_overhead.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info

# The YOCO study (docs/yoco_results.md): 720 runs, about 2.5 hours on 2 CPU cores; run again, it
# resumes where it stopped and then rewrites the document.
yoco-study: $(STAMP)
	$(BIN)/fedmllm model build --preset tiny-structured
	if [ -f runs/bench-yoco/bench.json ]; then resume=--resume; fi; \
	$(BIN)/fedmllm bench benchmarks/grids/yoco.toml --out runs/bench-yoco --jobs 2 --threads 1 $$resume
	$(BIN)/fedmllm report runs/bench-yoco --publish docs/yoco_results.md
