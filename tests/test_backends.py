"""A file rewritten on one Keras backend loads and predicts the same on the others.

The suite runs on each backend (TensorFlow, JAX, PyTorch) in its own environment; CI
installs JAX beside each of them, so every environment has at least one other backend
to cross to. Each check runs the other backend in a fresh process (a process has one
backend), both ways: rewritten here and read there, rewritten there and read here.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

import normify
from normify.saving import save_model

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
HERE = keras.backend.backend()
MODULES = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}
OTHERS = [
    name
    for name, module in MODULES.items()
    if name != HERE and importlib.util.find_spec(module) is not None
]
# (fixture, add options): an exact identity insert, and a layer-normalized recurrent cell
CASES = [
    ("cnn.keras", {}),
    ("gru_tagger.keras", {"rnn": "layernorm-cell"}),
]
TOLERANCE = 1e-5  # max abs difference relative to max(1, max |output|)

SCRIPT = """
import sys, numpy as np, keras, normify
source, inputs, output, rewrite, options = sys.argv[1:6]
if rewrite == "rewrite":
    model = normify.add(source, **eval(options)).model
    from normify.saving import save_model
    save_model(model, output + ".keras")
else:
    model = keras.saving.load_model(source)
np.save(output, keras.ops.convert_to_numpy(model(np.load(inputs), training=False)))
"""


def inputs_for(name: str) -> np.ndarray:
    rng = np.random.default_rng(3)
    if name == "gru_tagger.keras":
        tokens = rng.integers(1, 50, size=(4, 20))
        tokens[:, 15:] = 0  # padded steps: the mask must survive the crossing
        return tokens.astype("int32")
    return rng.standard_normal((4, 16, 16, 3)).astype("float32")


def on_backend(backend: str, *args: str, tmp_path: Path) -> None:
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, *args],
        env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]


def close(a: np.ndarray, b: np.ndarray) -> bool:
    return float(np.max(np.abs(a - b))) <= TOLERANCE * max(1.0, float(np.max(np.abs(b))))


@pytest.fixture(scope="module", params=OTHERS or [None], ids=lambda name: f"to-{name}")
def other(request: pytest.FixtureRequest) -> str:
    if request.param is None:
        pytest.skip(
            f"no Keras backend besides {HERE} here: CI crosses every backend to and from JAX "
            "in the TensorFlow and PyTorch environments"
        )
    return request.param


@pytest.mark.parametrize("fixture, options", CASES, ids=[case[0] for case in CASES])
def test_rewritten_here_predicts_the_same_there(other, fixture, options, tmp_path):
    inputs = inputs_for(fixture)
    np.save(tmp_path / "inputs.npy", inputs)
    model = normify.add(FIXTURES / fixture, **options).model
    expected = keras.ops.convert_to_numpy(model(inputs, training=False))
    save_model(model, tmp_path / "here.keras")
    on_backend(other, str(tmp_path / "here.keras"), "inputs.npy", "there.npy", "load", "{}",
               tmp_path=tmp_path)  # fmt: skip
    assert close(np.load(tmp_path / "there.npy"), expected)


@pytest.mark.parametrize("fixture, options", CASES, ids=[case[0] for case in CASES])
def test_rewritten_there_predicts_the_same_here(other, fixture, options, tmp_path):
    inputs = inputs_for(fixture)
    np.save(tmp_path / "inputs.npy", inputs)
    on_backend(other, str(FIXTURES / fixture), "inputs.npy", "there.npy", "rewrite",
               repr(options), tmp_path=tmp_path)  # fmt: skip
    model = keras.saving.load_model(tmp_path / "there.npy.keras")
    got = keras.ops.convert_to_numpy(model(inputs, training=False))
    assert close(got, np.load(tmp_path / "there.npy"))
    # and what the original predicts here, for the exact identity insert
    if not options:
        original = keras.saving.load_model(FIXTURES / fixture)
        assert close(got, keras.ops.convert_to_numpy(original(inputs, training=False)))


@pytest.mark.parametrize("command", ["add", "strip", "swap", "fold"])
def test_notices_are_normify_s_own_words(command, recwarn):
    """Library warnings (NumPy's copy keyword, Keras' own) are filtered where they arise,
    on every backend: no notice passes one on."""
    path = FIXTURES / ("gru_tagger.keras" if command in ("add", "strip") else "conv_bn.keras")
    if command == "add":
        result = normify.add(path, rnn="layernorm", measure_drift=True)
    elif command == "strip":
        result = normify.strip(normify.add(path).model)
    elif command == "swap":
        result = normify.swap(path, from_norm="batchnorm", to_norm="layernorm")
    else:
        result = normify.fold(path)
    for notice in result.report.notices:
        assert not any(word in notice for word in ("__array__", "copy keyword", "Warning")), notice
