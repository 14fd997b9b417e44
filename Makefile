# Two set-up commands: `make demo` and `make test`. Each creates .venv when missing.
PY ?= python3
export OMP_WAIT_POLICY ?= PASSIVE
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: venv test demo bench clean

$(BIN)/activate: pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e ".[dev]"
	touch $(BIN)/activate

venv: $(BIN)/activate

test: venv
	$(BIN)/python -m pytest -q

demo: venv
	bash scripts/demo.sh $(BIN)/python

clean:
	rm -rf lightning_logs outputs
