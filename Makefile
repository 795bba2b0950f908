# Two set-up commands (see README): `make demo` and `make test`.
# Both create .venv on first use: torch pinned first (the CPU wheel on this
# project's machines), then the project in editable mode with its test extra.
PYTHON ?= python3
VENV ?= .venv
# GPU users: point TORCH_SPEC at the CUDA build of the same version, e.g.
#   make demo TORCH_SPEC="torch==2.13.0 --index-url <your PyTorch CUDA wheel index>"
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: venv demo test benchmark clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH_SPEC)
	$(BIN)/pip install -q -e ".[test]"
	touch $@

demo: venv
	$(BIN)/ppl-audit demo --out reports/demo

test: venv
	$(BIN)/python -m pytest -q

benchmark: venv
	cd benchmarks && ../$(BIN)/python levelset_house_rocket.py

clean:
	rm -rf $(VENV) reports build *.egg-info
