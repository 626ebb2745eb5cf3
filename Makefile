# Two entry points for a fresh machine (see README): `make demo` and `make test`.
# Both create .venv and install normify with its test extras into it first.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_OUT := build/demo

.PHONY: demo test test-backend install lint clean pictures

$(BIN)/normify: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[tensorflow,jax,test,examples]"
	touch $(BIN)/normify

install: $(BIN)/normify

demo: install
	mkdir -p $(DEMO_OUT)
	$(BIN)/normify audit fixtures/cnn.keras
	$(BIN)/normify add fixtures/cnn.keras -o $(DEMO_OUT)/cnn.normified.keras --force
	$(BIN)/normify audit $(DEMO_OUT)/cnn.normified.keras --require conv=batchnorm --require dense=batchnorm

# The pictures the README embeds, made by normify from the fixtures.
pictures: install
	mkdir -p docs build/pictures
	$(BIN)/normify audit fixtures/nested.keras --graph docs/nested.svg
	$(BIN)/normify add fixtures/nested.keras -o build/pictures/nested.normified.keras --force
	$(BIN)/normify audit build/pictures/nested.normified.keras --compare fixtures/nested.keras --graph docs/nested.normified.svg

lint: install
	$(BIN)/ruff check normify tests benchmarks fixtures scripts examples
	$(BIN)/mypy normify

# JAX compiles the same small programs in many test processes (two workers and every
# fresh-process reload): its persistent compilation cache, kept in the environment's
# folder, compiles each once (the JAX suite: 15.3 -> 10.2 min). The TensorFlow suite's
# cross-backend tests run JAX too.
jax_cache = JAX_COMPILATION_CACHE_DIR=$(abspath $(1))/jax-cache \
	JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0 JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES=0

# --dist loadfile: each test file runs on one worker, so a module's costly fixture (Keras
# applications built and folded, the fuzz's child processes) is built once, and the
# property tests' fresh-process reload check sees every case its module collected.
test: install lint
	$(call jax_cache,$(VENV)) $(BIN)/python -m pytest -q -n 2 --dist loadfile --durations=20

# The same suite on another Keras backend, in an environment of its own without
# TensorFlow: `make test-backend BACKEND=jax` or `BACKEND=torch`.
BACKEND ?= jax
BACKEND_VENV := .venv-$(BACKEND)

$(BACKEND_VENV)/bin/normify: pyproject.toml
	$(PYTHON) -m venv $(BACKEND_VENV)
	$(BACKEND_VENV)/bin/pip install --quiet --upgrade pip
	$(BACKEND_VENV)/bin/pip install --quiet -e ".[$(BACKEND),jax,test,examples]"
	touch $(BACKEND_VENV)/bin/normify

# Every test runs; the random-architecture property tests draw 8 models instead of 25.
test-backend: $(BACKEND_VENV)/bin/normify
	KERAS_BACKEND=$(BACKEND) NORMIFY_PROPERTY_EXAMPLES=8 $(call jax_cache,$(BACKEND_VENV)) \
		$(BACKEND_VENV)/bin/python -m pytest -q -n 2 --dist loadfile --durations=20

clean:
	rm -rf $(VENV) .venv-jax .venv-torch build .pytest_cache
