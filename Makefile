# Two entry points for a fresh machine (see README): `make demo` and `make test`.
# Both create .venv and install normify with its test extras into it first.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_OUT := build/demo

.PHONY: demo test install lint clean

$(BIN)/normify: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[tensorflow,test]"
	touch $(BIN)/normify

install: $(BIN)/normify

demo: install
	mkdir -p $(DEMO_OUT)
	$(BIN)/normify audit fixtures/cnn.keras
	$(BIN)/normify add fixtures/cnn.keras -o $(DEMO_OUT)/cnn.normified.keras --force
	$(BIN)/normify audit $(DEMO_OUT)/cnn.normified.keras --require conv=batchnorm --require dense=batchnorm

lint: install
	$(BIN)/ruff check normify tests benchmarks fixtures scripts

test: install lint
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) build .pytest_cache
