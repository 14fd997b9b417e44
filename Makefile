# Two set-up commands: `make demo` and `make test`. Each creates .venv when missing.
PY ?= python3
export OMP_WAIT_POLICY ?= PASSIVE
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: venv test demo lego bench clean lock

# requirements.lock pins every package (pip and setuptools included) to what CI tested; the
# editable build uses the venv's pinned setuptools instead of an unpinned isolated one.
# pip compiles the ~15,000 installed modules one by one; compileall on every core does the same
# in less time (fresh venv here: 74 s instead of 83 s). Like pip, it skips files that do not
# compile on this Python (torch ships a few Python 3.12-only test files), hence the `|| true`.
$(BIN)/activate: pyproject.toml requirements.lock
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -c requirements.lock pip setuptools
	$(BIN)/pip install --no-compile --no-build-isolation -c requirements.lock -e ".[dev]"
	$(BIN)/python -m compileall -q -j 0 $(VENV)/lib > /dev/null 2>&1 || true
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
