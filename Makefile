# esproxy — the two commands a newcomer needs are `make run` and `make test`.
VENV   ?= .venv
PYTHON ?= python3
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install run stop status test lint docs clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test,codecs,demo]'
	touch $(STAMP)

run: install           ## start clusters A and B, the broker and both roles under supervisord
	ops/ctl up

stop:                  ## stop everything started by `make run`
	ops/ctl down

status:
	ops/ctl status

test: install
	$(BIN)/pytest -q

lint: install
	$(BIN)/ruff check esproxy tests ops/demo-server ops/update-config-reference
	$(BIN)/ruff format --check esproxy tests
	$(BIN)/python ops/update-config-reference --check

docs: install          ## regenerate README's config reference from esproxy/config.py
	$(BIN)/python ops/update-config-reference

clean: stop
	rm -rf $(VENV) var *.egg-info
