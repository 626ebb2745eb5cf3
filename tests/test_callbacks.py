"""normify.callbacks.RecalibrateBatchNorm: exact statistics during and after `fit`."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from helpers import as_numpy  # noqa: E402

from normify.callbacks import RecalibrateBatchNorm  # noqa: E402
from normify.errors import NormifyError  # noqa: E402

RNG = np.random.default_rng(3)


def _model() -> keras.Model:
    inputs = keras.Input((6,), name="x")
    h = keras.layers.Dense(12, name="dense")(inputs)
    h = keras.layers.BatchNormalization(momentum=0.99, name="bn")(h)
    h = keras.layers.Activation("relu")(h)
    h = keras.layers.Dense(8, name="dense_1")(h)
    h = keras.layers.BatchNormalization(momentum=0.99, name="bn_1")(h)
    outputs = keras.layers.Dense(1, name="out")(h)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="sgd", loss="mse")
    return model


def _exact_statistics(model: keras.Model, name: str, x: np.ndarray) -> tuple[np.ndarray, ...]:
    """The mean and population variance of a BatchNormalization's input over all of x."""
    layer = model.get_layer(name)
    inputs = as_numpy(keras.Model(model.inputs, layer.input).predict(x, verbose=0), np.float64)
    return inputs.mean(0), inputs.var(0)


def _moving(model: keras.Model, name: str) -> tuple[np.ndarray, ...]:
    layer = model.get_layer(name)
    return as_numpy(layer.moving_mean), as_numpy(layer.moving_variance)


def test_end_of_training_gives_exact_statistics(capsys) -> None:
    x = (RNG.normal(size=(256, 6)) * 3 + 2).astype("float32")
    y = RNG.normal(size=(256, 1)).astype("float32")
    model = _model()
    callback = RecalibrateBatchNorm(x, when="end")
    model.fit(x, y, epochs=2, batch_size=32, verbose=0, callbacks=[callback])
    for name in ("bn", "bn_1"):
        mean, variance = _exact_statistics(model, name, x)
        moving_mean, moving_variance = _moving(model, name)
        np.testing.assert_allclose(moving_mean, mean, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(moving_variance, variance, rtol=1e-4, atol=1e-5)
    (changes,) = callback.history
    assert [change.path for change in changes] == ["bn", "bn_1"]
    # 16 steps at momentum 0.99 leave the moving statistics far behind: they moved a lot
    assert max(change.mean_change for change in changes) > 0.5
    assert "RecalibrateBatchNorm (end of training): 2 BatchNormalization(s)" in (
        capsys.readouterr().out
    )


def test_every_epoch_logs_how_far_they_moved() -> None:
    x = (RNG.normal(size=(128, 6)) * 2 - 1).astype("float32")
    y = RNG.normal(size=(128, 1)).astype("float32")
    model = _model()
    callback = RecalibrateBatchNorm(x, when="epoch", exclude=["bn_1"], verbose=0)
    history = model.fit(x, y, epochs=3, batch_size=32, verbose=0, callbacks=[callback])
    assert len(callback.history) == 3
    assert all([c.path for c in changes] == ["bn"] for changes in callback.history)
    assert len(history.history["bn_mean_change"]) == 3
    # the first recalibration moves the statistics far; training moves them back only
    # a little each epoch after that
    assert history.history["bn_mean_change"][0] > history.history["bn_mean_change"][-1]
    mean, variance = _exact_statistics(model, "bn", x)
    np.testing.assert_allclose(_moving(model, "bn")[0], mean, rtol=1e-4, atol=1e-5)
    # bn_1 was excluded: still Keras' momentum estimate, not the exact mean
    exact_1 = _exact_statistics(model, "bn_1", x)[0]
    assert np.abs(_moving(model, "bn_1")[0] - exact_1).max() > 1e-3


def test_same_math_as_recalibrate() -> None:
    import normify

    x = (RNG.normal(size=(100, 6)) + 1).astype("float32")
    model = _model()
    model.fit(x, x[:, :1], epochs=1, batch_size=20, verbose=0)
    expected = normify.recalibrate(model, data=x, batch_size=16).model
    callback = RecalibrateBatchNorm(x, batch_size=16, verbose=0)
    callback.set_model(model)
    callback.recalibrate()
    for name in ("bn", "bn_1"):
        for ours, theirs in zip(_moving(model, name), _moving(expected, name), strict=True):
            np.testing.assert_array_equal(ours, theirs)


def test_errors_are_one_line() -> None:
    with pytest.raises(NormifyError, match="when must be 'end' or 'epoch'"):
        RecalibrateBatchNorm(np.zeros((2, 6)), when="batch")
    model = _model()
    with pytest.raises(NormifyError, match="input 'x'") as raised:
        model.fit(np.zeros((8, 6)), np.zeros((8, 1)), epochs=1, verbose=0,
                  callbacks=[RecalibrateBatchNorm(np.zeros((8, 5)))])  # fmt: skip
    assert "\n" not in str(raised.value)


def test_import_normify_does_not_import_the_callbacks() -> None:
    code = "import sys, normify; assert 'normify.callbacks' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
