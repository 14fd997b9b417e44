# Two set-up commands: `make demo` and `make test`. Each creates .venv when missing.
PY ?= python3
export OMP_WAIT_POLICY ?= PASSIVE
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: venv test demo lego bench clean lock

# requirements.lock pins every package (pip and setuptools included) to what CI tested; the
# editable build uses the venv's pinned setuptools instead of an unpinned isolated one.
$(BIN)/activate: pyproject.toml requirements.lock
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -c requirements.lock pip setuptools
	$(BIN)/pip install --no-build-isolation -c requirements.lock -e ".[dev]"
	touch $(BIN)/activate

venv: $(BIN)/activate

test: venv
	$(BIN)/python -m pytest -q

demo: venv
	bash scripts/demo.sh $(BIN)/python

# Difix3D on sparse-view lego (needs ../shared/data and a finished `make demo`): README "Lego sparse".
lego: venv
	bash scripts/lego_sparse.sh $(BIN)/python

# Re-resolve the newest versions pyproject.toml allows in a throw-away venv and write them to
# requirements.lock (then run `make test` and commit the lock if it passes).
lock:
	rm -rf .venv-lock && $(PY) -m venv .venv-lock
	.venv-lock/bin/pip install --upgrade pip setuptools
	.venv-lock/bin/pip install -e ".[dev]"
	{ sed -n '1,2p' requirements.lock; .venv-lock/bin/pip freeze --all --exclude-editable; } > requirements.lock.new
	mv requirements.lock.new requirements.lock && rm -rf .venv-lock

clean:
	rm -rf lightning_logs outputs
