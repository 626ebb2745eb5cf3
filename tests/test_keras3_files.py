"""Files Keras 3 wrote that its own loader gets wrong: normify reads them as written."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from helpers import as_numpy

import normify
from normify.errors import ModelLoadError
from normify.loading import load_model

keras = pytest.importorskip("keras")


def _attention_model():
    query, value = keras.Input((4, 8), name="query"), keras.Input((3, 8), name="value")
    attended = keras.layers.Attention(name="attention")([query, value])
    outputs = keras.layers.Dense(2, name="out")(keras.layers.Dense(6, name="hidden")(attended))
    model = keras.Model([query, value], outputs)
    rng = np.random.default_rng(0)
    for variable in model.weights:
        variable.assign(rng.normal(size=variable.shape).astype("float32"))
    return model


def test_a_keras3_hdf5_file_with_an_attention_layer_loads(tmp_path):
    """Keras 3.15's HDF5 loader turns `score_mode="dot"` into the function
    `keras.layers.dot` and refuses its own file; normify loads it, and leaves Keras' own
    loader as it was."""
    model = _attention_model()
    path = tmp_path / "attention.h5"
    model.save(path)
    with pytest.raises(Exception, match="score_mode"):
        keras.saving.load_model(path)
    loaded = load_model(path).model
    assert loaded.get_layer("attention").score_mode == "dot"
    rng = np.random.default_rng(1)
    x = [rng.normal(size=(2, 4, 8)).astype("float32"), rng.normal(size=(2, 3, 8)).astype("f4")]
    np.testing.assert_array_equal(as_numpy(loaded(x)), as_numpy(model(x)))
    result = normify.add(path)
    assert [change.path for change in result.report.changes] == ["hidden"]
    np.testing.assert_allclose(as_numpy(result.model(x)), as_numpy(model(x)), rtol=0, atol=1e-5)
    with pytest.raises(Exception, match="score_mode"):  # normify changed nothing for good
        keras.saving.load_model(path)


def test_a_keras3_hdf5_layer_keras_refuses_is_named(tmp_path):
    """HDF5 configs name Keras' classes without their module: the layer-by-layer search
    for the cause must find the real one, not blame the InputLayer."""
    inputs = keras.Input((4,), name="x")
    keras.Model(inputs, keras.layers.Dense(3, name="dense")(inputs)).save(tmp_path / "bad.h5")
    with h5py.File(tmp_path / "bad.h5", "r+") as handle:
        config = json.loads(handle.attrs["model_config"])
        config["config"]["layers"][1]["config"]["units"] = "three"
        handle.attrs["model_config"] = json.dumps(config)
    with pytest.raises(ModelLoadError) as raised:
        load_model(tmp_path / "bad.h5")
    message = str(raised.value)
    assert "layer 'dense' (Dense): Received an invalid value for `units`" in message, message
    assert "\n" not in message
