# Two commands do all the set-up on a fresh machine: `make book` and `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)
# pip on this machine lists local wheel folders that may be absent; keep the log readable.
QUIET_PIP := grep -v "is ignored: it is neither a file nor a directory" || true
DEMO ?= build/demo
PYTEST_ARGS ?=

.PHONY: install test book demo notebooks clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing hafvt and its dependencies into $(VENV) (torch is large; first time takes a few minutes)"
	$(BIN)/python -m pip install -q -e '.[book,test]' 2>&1 | $(QUIET_PIP)
	@rm -f $(VENV)/.installed-* && touch $@

test: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

demo: $(STAMP)
	$(BIN)/hafvt demo $(DEMO) --size small --seed 0
	$(BIN)/hafvt stats $(DEMO)

book: demo

clean:
	rm -rf build _build
