# tracegate: `make demo` runs a local demo, `make test` runs the whole suite.
# Both create .venv with Python 3.12 first (python3.12 on PATH, else pyenv's newest 3.12).

VENV := .venv
PY   := $(VENV)/bin/python
STAMP := $(VENV)/.installed

FIND_PY312 = $(shell \
  for c in python3.12 $$(ls -d $$HOME/.pyenv/versions/3.12*/bin/python3.12 2>/dev/null | sort -V -r); do \
    if command -v $$c >/dev/null 2>&1 && $$c -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' 2>/dev/null; then \
      command -v $$c; break; fi; done)

.PHONY: venv demo test lint format bench clean

$(STAMP): pyproject.toml
	@py="$(FIND_PY312)"; \
	if [ -z "$$py" ]; then \
	  echo "tracegate needs Python 3.12 (mitmproxy 12): install python3.12 or 'pyenv install 3.12'" >&2; exit 1; fi; \
	if [ ! -x $(PY) ] || ! $(PY) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))'; then \
	  rm -rf $(VENV); echo "creating $(VENV) with $$py"; "$$py" -m venv $(VENV); fi
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(if $(filter postgres,$(BACKEND)),sh scripts/ensure-postgresql.sh,)
	$(PY) scripts/demo.py $(if $(WEB),--web,) $(if $(STORE),--store $(STORE),) $(if $(BACKEND),--backend $(BACKEND),)

test: $(STAMP)
	sh scripts/ensure-chromium.sh
	sh scripts/ensure-pouchdb.sh
	sh scripts/ensure-postgresql.sh
	$(VENV)/bin/ruff check addons tests scripts
	$(VENV)/bin/ruff format --check addons tests scripts
	$(VENV)/bin/pytest -n 2

lint: $(STAMP)
	$(VENV)/bin/ruff check addons tests scripts

format: $(STAMP)
	$(VENV)/bin/ruff format addons tests scripts
	$(VENV)/bin/ruff check --fix addons tests scripts

bench: $(STAMP)
	$(PY) scripts/bench/gateway.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
