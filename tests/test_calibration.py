"""`add --init calibrate|fresh` and `recalibrate`, checked against independent numpy computations.

Every statistic is recomputed here from the ORIGINAL model (numpy forward passes, or Keras
sub-models of the original with a bias-free, linear clone of the target layer), never with
normify's own probes or moment helpers.
"""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import FIXTURES
from helpers import as_numpy, files_in, max_relative_difference, predict_in_fresh_process, run_cli

import normify
from normify.cli import main
from normify.drift import random_inputs
from normify.errors import NormifyError

keras = pytest.importorskip("keras")
layers = keras.layers

IDENTITY = 1e-5  # relative: an inserted, calibrated BatchNormalization at inference
TRAINING_CLOSE = 0.05  # relative: calibrated BatchNormalization in training mode


# ------------------------------------------------------------------------------ helpers


def _stats(values: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and population variance over every axis but `axis` (float64)."""
    flat = np.moveaxis(as_numpy(values, np.float64), axis, -1)
    flat = flat.reshape(-1, flat.shape[-1])
    return flat.mean(0), flat.var(0)


def _weights(layer) -> dict[str, np.ndarray]:
    """A layer's variables by their own name (`kernel`, `bias`, `gamma`, ...), in float64."""
    return {v.path.rsplit("/", 1)[-1]: as_numpy(v.numpy(), np.float64) for v in layer.weights}


def _relu(x):
    return np.maximum(x, 0.0)


def _predict(model, x) -> np.ndarray:
    return as_numpy(model.predict(x, verbose=0))


def _training_output(model, x) -> np.ndarray:
    """model(x, training=True), without keeping the moving-statistics update Keras makes."""
    saved = [variable.numpy() for variable in model.non_trainable_weights]
    try:
        return as_numpy(model(x, training=True))
    finally:
        for variable, value in zip(model.non_trainable_weights, saved, strict=True):
            variable.assign(value)


def _relative(reference: np.ndarray, other: np.ndarray) -> float:
    reference, other = as_numpy(reference, np.float64), as_numpy(other, np.float64)
    return float(np.max(np.abs(reference - other)) / np.max(np.abs(reference)))


def _dense_model(seed: int = 0):
    """x(6) -> d1 Dense(5, relu) -> d2 Dense(4, tanh) -> out Dense(2), with non-zero biases."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((6,), name="x")
    hidden = layers.Dense(5, activation="relu", name="d1")(inputs)
    hidden = layers.Dense(4, activation="tanh", name="d2")(hidden)
    model = keras.Model(inputs, layers.Dense(2, name="out")(hidden), name="dense_model")
    # weights from NumPy, not from the backend's random generator: the same model on
    # every backend
    rng = np.random.default_rng(seed)
    for layer in model.layers[1:]:
        fan_in, fan_out = layer.kernel.shape
        scale = np.sqrt(6.0 / (fan_in + fan_out))
        layer.kernel.assign(rng.uniform(-scale, scale, layer.kernel.shape).astype("float32"))
        layer.bias.assign(rng.normal(0.0, 0.8, layer.bias.shape).astype("float32"))
    return model


def _dense_data(count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(count, 6)) * 1.5 + 0.7).astype("float32")


def _pre_bias_output(original, name: str, x: np.ndarray) -> np.ndarray:
    """What `name` of the ORIGINAL model computes before its bias and activation: its input
    from a sub-model of the original, through a linear, bias-free clone of the layer."""
    layer = original.get_layer(name)
    inputs = _predict(keras.Model(original.inputs, layer.input), x)
    config = layer.get_config()
    config.update(name=f"{name}_probe_clone", activation="linear", use_bias=False)
    clone = type(layer).from_config(config)
    clone.build(inputs.shape)
    kernels = {v.path.rsplit("/", 1)[-1]: v.numpy() for v in layer.weights}
    clone.set_weights([kernels[v.path.rsplit("/", 1)[-1]] for v in clone.weights])
    return as_numpy(clone(inputs))


def _bias(layer, channels: int) -> np.ndarray:
    own = _weights(layer)
    return own.get("bias", np.zeros(channels))


def _layer_norm(x: np.ndarray, epsilon: float) -> np.ndarray:
    x = as_numpy(x, np.float64)
    mean = x.mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(x.var(-1, keepdims=True) + epsilon)


def _rms_norm(x: np.ndarray, epsilon: float) -> np.ndarray:
    x = as_numpy(x, np.float64)
    return x / np.sqrt(np.mean(x * x, -1, keepdims=True) + epsilon)


def _least_squares(n: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel fit x ≈ gamma·n + beta by np.polyfit (last axis is the channel)."""
    n2 = as_numpy(n, np.float64).reshape(-1, n.shape[-1])
    x2 = as_numpy(x, np.float64).reshape(-1, x.shape[-1])
    fits = [np.polyfit(n2[:, c], x2[:, c], 1) for c in range(n2.shape[1])]
    return np.array([f[0] for f in fits]), np.array([f[1] for f in fits])


# ------------------------------------------------------------- calibrate: small dense model


@pytest.fixture(scope="module")
def dense_case():
    model = _dense_model()
    data = _dense_data(1024, seed=1)
    calibrated = normify.add(model, init="calibrate", data=data)
    identity = normify.add(model, init="identity", data=data, measure_drift=True)
    return model, data, calibrated, identity


def test_calibrate_dense_sets_batchnorm_from_the_original_pre_bias_activations(dense_case):
    model, data, calibrated, _ = dense_case
    assert [i.name for i in calibrated.report.changes] == ["d1_bn", "d2_bn"]
    assert calibrated.report.init == "calibrate"
    d1, d2 = (_weights(model.get_layer(name)) for name in ("d1", "d2"))
    x = data.astype(np.float64)
    z1 = x @ d1["kernel"]  # d1_bn's input: d1 without its bias (moved into beta)
    z2 = _relu(z1 + d1["bias"]) @ d2["kernel"]  # the original's d1 output through d2, no bias
    for name, z, bias in (("d1_bn", z1, d1["bias"]), ("d2_bn", z2, d2["bias"])):
        bn = calibrated.model.get_layer(name)
        got = _weights(bn)
        mean, variance = z.mean(0), z.var(0)
        np.testing.assert_allclose(got["moving_mean"], mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got["moving_variance"], variance, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got["gamma"], np.sqrt(variance + bn.epsilon), rtol=1e-5)
        np.testing.assert_allclose(got["beta"], mean + bias, rtol=1e-5, atol=1e-6)
        # the statistics are not a no-op: they are far from Keras' defaults
        assert np.max(np.abs(got["moving_mean"])) > 0.1
        assert np.max(np.abs(got["moving_variance"] - 1)) > 0.1


def test_calibrate_dense_is_an_identity_at_inference_and_close_in_training(dense_case):
    model, _, calibrated, identity = dense_case
    fresh = _dense_data(4096, seed=2)
    reference = _predict(model, fresh)
    assert max_relative_difference([reference], [_predict(calibrated.model, fresh)]) < IDENTITY
    calibrated_training = _relative(reference, _training_output(calibrated.model, fresh))
    identity_training = _relative(reference, _training_output(identity.model, fresh))
    assert calibrated_training < TRAINING_CLOSE
    assert calibrated_training * 10 < identity_training, (calibrated_training, identity_training)


def test_calibrate_post_activation_batchnorm_normalizes_the_activation_output():
    model = _dense_model(seed=3)
    data = _dense_data(512, seed=4)
    result = normify.add(model, init="calibrate", data=data, position="post")
    d1 = _weights(model.get_layer("d1"))
    a1 = _relu(data.astype(np.float64) @ d1["kernel"] + d1["bias"])
    bn = result.model.get_layer(result.report.changes[0].name)
    got = _weights(bn)
    np.testing.assert_allclose(got["moving_mean"], a1.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["moving_variance"], a1.var(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["gamma"], np.sqrt(a1.var(0) + bn.epsilon), rtol=1e-5)
    np.testing.assert_allclose(got["beta"], a1.mean(0), rtol=1e-5, atol=1e-6)
    assert max_relative_difference([_predict(model, data)], [_predict(result.model, data)]) < (
        IDENTITY
    )


def test_calibrate_without_data_is_refused():
    with pytest.raises(NormifyError, match="--data"):
        normify.add(_dense_model(), init="calibrate")
    with pytest.raises(NormifyError, match="--init"):
        normify.add(_dense_model(), init="calibrated", data=_dense_data(8, seed=0))


# ------------------------------------------------------------ calibrate: conv fixtures


@pytest.fixture(scope="module", params=["cnn.keras", "cnn_channels_first.keras"])
def cnn_case(request):
    path = FIXTURES / request.param
    original = keras.saving.load_model(path)
    shape = tuple(original.inputs[0].shape[1:])
    data = np.random.default_rng(5).normal(size=(256, *shape)).astype("float32")
    calibrated = normify.add(path, init="calibrate", data=data)
    identity = normify.add(path, init="identity")
    channels_first = request.param == "cnn_channels_first.keras"
    return original, data, calibrated, identity, channels_first


def test_calibrate_cnn_statistics_equal_the_original_pre_bias_outputs(cnn_case):
    original, data, calibrated, _, channels_first = cnn_case
    insertions = calibrated.report.changes
    assert {i.path for i in insertions} == {
        "conv2d", "conv2d_1", "separable_conv2d", "depthwise_conv2d", "conv2d_transpose", "dense",
    }  # fmt: skip
    for insertion in insertions:
        bn = calibrated.model.get_layer(insertion.name)
        assert type(bn).__name__ == "BatchNormalization"
        rank = len(bn.input.shape)
        axis = 1 if channels_first and rank == 4 else rank - 1
        assert bn.axis % rank == axis, (insertion.name, bn.axis)
        z = _pre_bias_output(original, insertion.path, data)
        mean, variance = _stats(z, axis)
        got = _weights(bn)
        where = f"{insertion.name} of {original.name}"
        np.testing.assert_allclose(got["moving_mean"], mean, rtol=1e-4, atol=1e-5, err_msg=where)
        np.testing.assert_allclose(got["moving_variance"], variance, rtol=1e-4, err_msg=where)
        np.testing.assert_allclose(got["gamma"], np.sqrt(variance + bn.epsilon), rtol=1e-4)
        bias = _bias(original.get_layer(insertion.path), len(mean))
        np.testing.assert_allclose(got["beta"], mean + bias, rtol=1e-4, atol=1e-5, err_msg=where)


def test_calibrate_cnn_identity_at_inference_close_in_training(cnn_case):
    original, _, calibrated, identity, _ = cnn_case
    shape = tuple(original.inputs[0].shape[1:])
    fresh = np.random.default_rng(6).normal(size=(256, *shape)).astype("float32")
    reference = _predict(original, fresh)
    assert max_relative_difference([reference], [_predict(calibrated.model, fresh)]) < IDENTITY
    calibrated_training = _relative(reference, _training_output(calibrated.model, fresh))
    identity_training = _relative(reference, _training_output(identity.model, fresh))
    assert calibrated_training < TRAINING_CLOSE
    assert calibrated_training * 10 < identity_training, (calibrated_training, identity_training)


# ----------------------------------------------------- calibrate: LayerNorm and RMSNorm


@pytest.fixture(scope="module")
def bilstm_case():
    path = FIXTURES / "text_bilstm.keras"
    original = keras.saving.load_model(path)
    data = np.random.default_rng(7).integers(1, 100, size=(128, 20)).astype("int32")
    calibrated = normify.add(path, rnn="layernorm", init="calibrate", data=data)
    identity = normify.add(path, rnn="layernorm", init="identity", data=data)
    return original, data, calibrated, identity


def test_calibrate_layernorm_is_a_least_squares_fit_and_reduces_drift(bilstm_case):
    original, data, calibrated, identity = bilstm_case
    names = {i.path: i.name for i in calibrated.report.changes}
    assert set(names) == {"bidirectional", "dense"}
    ln = calibrated.model.get_layer(names["bidirectional"])
    assert type(ln).__name__ == "LayerNormalization"
    x = _predict(keras.Model(original.inputs, original.get_layer("bidirectional").output), data)
    n = _layer_norm(x, ln.epsilon)
    gamma, beta = _least_squares(n, x)
    got = _weights(ln)
    np.testing.assert_allclose(got["gamma"], gamma, rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(got["beta"], beta, rtol=1e-3, atol=1e-5)
    assert not np.allclose(got["gamma"], 1.0, atol=1e-3)  # really fitted
    # the identity init keeps Keras' gamma 1, beta 0
    default = _weights(identity.model.get_layer(names["bidirectional"]))
    assert np.all(default["gamma"] == 1) and np.all(default["beta"] == 0)
    assert calibrated.report.drift["inputs"] == identity.report.drift["inputs"] == "data"
    assert 0 < calibrated.report.drift["max_abs"] < identity.report.drift["max_abs"]
    # the per-insertion drift says the same for the LayerNormalization alone
    fitted = calibrated.report.layer_drift["bidirectional"]["max_abs"]
    unfitted = identity.report.layer_drift["bidirectional"]["max_abs"]
    assert 0 < fitted < unfitted


def test_calibrate_downstream_batchnorm_sees_the_calibrated_layernorm(bilstm_case):
    """dense_bn lies after the LayerNormalization: its statistics must be those of the new
    model with the LayerNormalization already fitted (a numpy forward pass here)."""
    original, data, calibrated, _ = bilstm_case
    names = {i.path: i.name for i in calibrated.report.changes}
    ln = _weights(calibrated.model.get_layer(names["bidirectional"]))
    x = _predict(keras.Model(original.inputs, original.get_layer("bidirectional").output), data)
    epsilon = calibrated.model.get_layer(names["bidirectional"]).epsilon
    normed = _layer_norm(x, epsilon) * ln["gamma"] + ln["beta"]
    z = normed @ _weights(original.get_layer("dense"))["kernel"]
    got = _weights(calibrated.model.get_layer(names["dense"]))
    np.testing.assert_allclose(got["moving_mean"], z.mean(0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got["moving_variance"], z.var(0), rtol=1e-4, atol=1e-5)
    # with gamma 1 and beta 0 instead (the LayerNormalization not yet fitted) they differ
    unfitted = _layer_norm(x, epsilon) @ _weights(original.get_layer("dense"))["kernel"]
    assert not np.allclose(got["moving_mean"], unfitted.mean(0), rtol=1e-2, atol=1e-3)


@pytest.mark.parametrize("norm", ["layernorm", "rmsnorm"])
def test_calibrate_dense_layernorm_and_rmsnorm_fit_per_channel(norm):
    model = _dense_model(seed=8)
    data = _dense_data(1024, seed=9)
    calibrated = normify.add(model, dense=norm, init="calibrate", data=data)
    identity = normify.add(model, dense=norm, init="identity", data=data)
    first = calibrated.model.get_layer(calibrated.report.changes[0].name)
    d1 = _weights(model.get_layer("d1"))
    x = data.astype(np.float64) @ d1["kernel"] + d1["bias"]  # the layer keeps its bias
    got = _weights(first)
    if norm == "layernorm":
        n = _layer_norm(x, first.epsilon)
        gamma, beta = _least_squares(n, x)
        np.testing.assert_allclose(got["gamma"], gamma, rtol=1e-3, atol=1e-5)
        np.testing.assert_allclose(got["beta"], beta, rtol=1e-3, atol=1e-5)
    else:
        n = _rms_norm(x, first.epsilon)
        scale = (n * x).sum(0) / (n * n).sum(0)  # least squares without an offset
        np.testing.assert_allclose(got["scale"], scale, rtol=1e-3, atol=1e-5)
    assert 0 < calibrated.report.drift["max_abs"] < identity.report.drift["max_abs"]


def _group_norm(x: np.ndarray, groups: int, epsilon: float) -> np.ndarray:
    """GroupNormalization (gamma 1, beta 0) of channels_last x, per sample and group."""
    x = as_numpy(x, np.float64)
    grouped = x.reshape(*x.shape[:-1], groups, x.shape[-1] // groups)
    axes = tuple(range(1, grouped.ndim - 2)) + (grouped.ndim - 1,)
    mean = grouped.mean(axes, keepdims=True)
    variance = grouped.var(axes, keepdims=True)
    return ((grouped - mean) / np.sqrt(variance + epsilon)).reshape(x.shape)


def test_calibrate_groupnorm_after_a_conv_is_a_least_squares_fit():
    path = FIXTURES / "cnn.keras"
    original = keras.saving.load_model(path)
    data = np.random.default_rng(19).normal(size=(128, 16, 16, 3)).astype("float32")
    calibrated = normify.add(path, conv="groupnorm", dense="none", init="calibrate", data=data)
    identity = normify.add(path, conv="groupnorm", dense="none", data=data)
    names = {i.path: i.name for i in calibrated.report.changes}
    # conv2d keeps its bias: its norm's input is the original's conv2d before the relu
    conv = original.get_layer("conv2d")
    first_input = _pre_bias_output(original, "conv2d", data) + _bias(conv, 8)
    # conv2d_1's norm sees conv2d's calibrated norm upstream: read it from the new model
    second = calibrated.model.get_layer(names["conv2d_1"])
    second_input = _predict(keras.Model(calibrated.model.inputs, second.input), data)
    for target, x in (("conv2d", first_input), ("conv2d_1", second_input)):
        norm = calibrated.model.get_layer(names[target])
        assert type(norm).__name__ == "GroupNormalization" and norm.groups == 8
        gamma, beta = _least_squares(_group_norm(x, norm.groups, norm.epsilon), x)
        got = _weights(norm)
        np.testing.assert_allclose(got["gamma"], gamma, rtol=1e-3, atol=1e-5, err_msg=target)
        np.testing.assert_allclose(got["beta"], beta, rtol=1e-3, atol=1e-5, err_msg=target)
        assert not np.allclose(got["gamma"], 1.0, atol=1e-2)
    assert 0 < calibrated.report.drift["max_abs"] < identity.report.drift["max_abs"]


def test_calibrate_rmsnorm_on_channels_first_convs_works_or_is_refused_cleanly():
    path = FIXTURES / "cnn_channels_first.keras"
    data = np.random.default_rng(20).normal(size=(64, 3, 16, 16)).astype("float32")
    try:
        result = normify.add(path, conv="rmsnorm", init="calibrate", data=data)
    except NormifyError:
        return  # a clear, one-line refusal is acceptable
    assert np.all(np.isfinite(_predict(result.model, data)))
    assert result.report.drift is not None


# ------------------------------------------------------------------------- init fresh


def test_fresh_with_data_has_unit_affine_and_data_statistics_level_by_level():
    model = _dense_model(seed=10)
    data = _dense_data(600, seed=11)
    result = normify.add(model, init="fresh", data=data)
    d1, d2 = (_weights(model.get_layer(name)) for name in ("d1", "d2"))
    bn1, bn2 = (result.model.get_layer(name) for name in ("d1_bn", "d2_bn"))
    z1 = data.astype(np.float64) @ d1["kernel"]
    # d2_bn sees d1_bn as fresh: gamma 1, beta 0 (the moved bias is gone)
    a1 = _relu((z1 - z1.mean(0)) / np.sqrt(z1.var(0) + bn1.epsilon))
    z2 = a1 @ d2["kernel"]
    for bn, z in ((bn1, z1), (bn2, z2)):
        got = _weights(bn)
        assert np.all(got["gamma"] == 1) and np.all(got["beta"] == 0)
        np.testing.assert_allclose(got["moving_mean"], z.mean(0), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got["moving_variance"], z.var(0), rtol=1e-5, atol=1e-6)
    report = result.report
    assert report.drift is not None and report.drift["max_abs"] > 1e-3
    assert any("not an identity" in notice for notice in report.notices), report.notices
    # the inference output is the numpy forward pass of the fresh network
    y = np.tanh((z2 - z2.mean(0)) / np.sqrt(z2.var(0) + bn2.epsilon))
    out = _weights(model.get_layer("out"))
    expected = y @ out["kernel"] + out["bias"]
    np.testing.assert_allclose(_predict(result.model, data), expected, rtol=1e-4, atol=1e-4)


def test_fresh_without_data_uses_keras_defaults():
    model = _dense_model(seed=12)
    result = normify.add(model, init="fresh")
    for name in ("d1_bn", "d2_bn"):
        got = _weights(result.model.get_layer(name))
        assert np.all(got["gamma"] == 1) and np.all(got["beta"] == 0)
        assert np.all(got["moving_mean"] == 0) and np.all(got["moving_variance"] == 1)
    assert result.report.drift is not None and result.report.drift["max_abs"] > 1e-3
    assert result.report.drift["inputs"] == "random"
    assert any("not an identity" in notice for notice in result.report.notices)


# -------------------------------------------------------------------- per-insertion drift


def test_every_insertion_has_its_drift_and_identity_batchnorm_has_none():
    path = FIXTURES / "cnn.keras"
    result = normify.add(path, init="identity", measure_drift=True)
    assert result.report.changes
    for insertion in result.report.changes:
        drift = result.report.layer_drift[insertion.path]
        assert set(drift) >= {"max_abs", "relative"}
        assert drift["relative"] <= 1e-6, (insertion.name, drift)
    assert result.report.to_json()["changes"][0]["drift"] is not None


def test_layer_drift_of_a_layernorm_insert_matches_an_independent_probe():
    path = FIXTURES / "text_bilstm.keras"
    original = keras.saving.load_model(path)
    result = normify.add(path, rnn="layernorm", dense="none")
    (insertion,) = result.report.changes
    # no data: the drift inputs are normify's random inputs (8 token rows below 100)
    inputs = random_inputs(original)[0]
    assert inputs.shape == (8, 20) and inputs.max() < 100
    before = _predict(
        keras.Model(original.inputs, original.get_layer("bidirectional").output), inputs
    )
    after_model = keras.Model(result.model.inputs, result.model.get_layer(insertion.name).output)
    after = _predict(after_model, inputs)
    # independently: a LayerNormalization with gamma 1, beta 0 of the original's output
    epsilon = result.model.get_layer(insertion.name).epsilon
    np.testing.assert_allclose(after, _layer_norm(before, epsilon), atol=1e-4)
    expected = np.max(np.abs(before - after))
    drift = result.report.layer_drift[insertion.path]
    assert drift["max_abs"] == pytest.approx(expected, rel=1e-5)
    assert drift["relative"] == pytest.approx(expected / np.max(np.abs(before)), rel=1e-5)


# ------------------------------------------------------------------------------ recalibrate


def _bn_model(seed: int = 0):
    """Dense(8) -> bn1 -> ReLU -> Dense(6) -> bn2 -> Dense(2), with wrong moving statistics."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((5,), name="x")
    hidden = layers.Dense(8, name="d1")(inputs)
    hidden = layers.BatchNormalization(name="bn1")(hidden)
    hidden = layers.ReLU(name="relu")(hidden)
    hidden = layers.Dense(6, name="d2")(hidden)
    hidden = layers.BatchNormalization(name="bn2")(hidden)
    model = keras.Model(inputs, layers.Dense(2, name="out")(hidden), name="bn_model")
    rng = np.random.default_rng(seed)
    for name in ("bn1", "bn2"):
        layer = model.get_layer(name)
        size = layer.gamma.shape[0]
        layer.gamma.assign(rng.uniform(0.5, 1.5, size).astype("float32"))
        layer.beta.assign(rng.normal(0, 0.5, size).astype("float32"))
        layer.moving_mean.assign(np.full(size, 4.0, "float32"))  # deliberately wrong
        layer.moving_variance.assign(np.full(size, 0.02, "float32"))
    for name in ("d1", "d2"):
        bias = model.get_layer(name).bias
        bias.assign(rng.normal(0, 1, bias.shape).astype("float32"))
    return model


def _recal_data(count: int = 100, seed: int = 13) -> np.ndarray:
    return (np.random.default_rng(seed).normal(size=(count, 5)) * 2 + 0.5).astype("float32")


def _numpy_recalibration(model, x) -> dict[str, np.ndarray]:
    """A numpy forward pass of `_bn_model`: the exact statistics of bn1 over all of x, then
    those of bn2 with bn1 already recalibrated, and the recalibrated model's output."""
    d1, d2, out = (_weights(model.get_layer(name)) for name in ("d1", "d2", "out"))
    bn1, bn2 = (_weights(model.get_layer(name)) for name in ("bn1", "bn2"))
    eps1, eps2 = (model.get_layer(name).epsilon for name in ("bn1", "bn2"))
    z1 = as_numpy(x, np.float64) @ d1["kernel"] + d1["bias"]
    mean1, var1 = z1.mean(0), z1.var(0)
    a1 = _relu(bn1["gamma"] * (z1 - mean1) / np.sqrt(var1 + eps1) + bn1["beta"])
    z2 = a1 @ d2["kernel"] + d2["bias"]
    mean2, var2 = z2.mean(0), z2.var(0)
    y = bn2["gamma"] * (z2 - mean2) / np.sqrt(var2 + eps2) + bn2["beta"]
    # what bn2 would see were bn1 still carrying its old statistics
    old1 = (z1 - bn1["moving_mean"]) / np.sqrt(bn1["moving_variance"] + eps1)
    z2_stale = _relu(bn1["gamma"] * old1 + bn1["beta"]) @ d2["kernel"] + d2["bias"]
    return {
        "bn1": (mean1, var1),
        "bn2": (mean2, var2),
        "stale_bn2_mean": z2_stale.mean(0),
        "output": y @ out["kernel"] + out["bias"],
    }


@pytest.fixture(scope="module")
def recal_case():
    model = _bn_model()
    before = {v.path: v.numpy().copy() for v in model.weights}
    x = _recal_data()
    result = normify.recalibrate(model, data=x, batch_size=32)  # 32, 32, 32, 4
    return model, before, x, result


def test_recalibrate_gives_exact_cumulative_statistics_layer_after_layer(recal_case):
    model, _, x, result = recal_case
    expected = _numpy_recalibration(model, x)
    for name in ("bn1", "bn2"):
        mean, variance = expected[name]
        got = _weights(result.model.get_layer(name))
        np.testing.assert_allclose(got["moving_mean"], mean, rtol=1e-5, atol=1e-6, err_msg=name)
        np.testing.assert_allclose(got["moving_variance"], variance, rtol=1e-5, err_msg=name)
        old = _weights(model.get_layer(name))  # gamma and beta are left alone
        assert np.array_equal(got["gamma"], old["gamma"])
        assert np.array_equal(got["beta"], old["beta"])
    # the test can tell: bn2 over a stale bn1, or bn1 over the first batch only, differ
    got2 = _weights(result.model.get_layer("bn2"))["moving_mean"]
    assert not np.allclose(got2, expected["stale_bn2_mean"], rtol=1e-2)
    first_batch = _numpy_recalibration(model, x[:32])["bn1"][0]
    got1 = _weights(result.model.get_layer("bn1"))["moving_mean"]
    assert not np.allclose(got1, first_batch, rtol=1e-3)
    # and the recalibrated model computes the numpy forward pass with the new statistics
    np.testing.assert_allclose(_predict(result.model, x), expected["output"], rtol=1e-4, atol=1e-4)


def test_recalibrate_report_matches_the_changes(recal_case):
    model, before, x, result = recal_case
    expected = _numpy_recalibration(model, x)
    changes = {change.path: change for change in result.report.changes}
    assert list(changes) == ["bn1", "bn2"]
    payload = {entry["path"]: entry for entry in result.report.to_json()["changes"]}
    for name in ("bn1", "bn2"):
        mean, variance = expected[name]
        old = _weights(model.get_layer(name))
        change = changes[name]
        assert change.mean_change == pytest.approx(np.max(np.abs(mean - old["moving_mean"])), 1e-5)
        assert change.variance_change == pytest.approx(
            np.max(np.abs(variance - old["moving_variance"])), rel=1e-5
        )
        ratio = variance / old["moving_variance"]
        assert change.variance_ratio == pytest.approx(np.max(np.maximum(ratio, 1 / ratio)), 1e-5)
        assert payload[name] == {
            "path": name,
            "max_abs_mean_change": change.mean_change,
            "max_abs_variance_change": change.variance_change,
            "max_variance_ratio": change.variance_ratio,
            "drift": None,
        }
    assert result.report.drift["inputs"] == "data" and result.report.drift["samples"] == 100


def test_recalibrate_leaves_the_callers_model_untouched(recal_case):
    model, before, _, result = recal_case
    assert {v.path: v.numpy() for v in model.weights}.keys() == before.keys()
    for variable in model.weights:
        assert np.array_equal(variable.numpy(), before[variable.path]), variable.path
    assert not {id(v) for v in model.weights} & {id(v) for v in result.model.weights}


def test_recalibrate_include_and_exclude_select_layers():
    model = _bn_model(seed=1)
    x = _recal_data(seed=14)
    expected = _numpy_recalibration(model, x)
    only_first = normify.recalibrate(model, data=x, batch_size=32, include=["bn1"])
    assert [change.path for change in only_first.report.changes] == ["bn1"]
    assert [kept.path for kept in only_first.report.kept] == ["bn2"]
    got1 = _weights(only_first.model.get_layer("bn1"))
    np.testing.assert_allclose(got1["moving_mean"], expected["bn1"][0], rtol=1e-5, atol=1e-6)
    untouched = _weights(only_first.model.get_layer("bn2"))
    assert np.array_equal(untouched["moving_mean"], _weights(model.get_layer("bn2"))["moving_mean"])

    only_second = normify.recalibrate(model, data=x, batch_size=32, exclude=["bn1"])
    assert [change.path for change in only_second.report.changes] == ["bn2"]
    old1 = _weights(model.get_layer("bn1"))
    assert np.array_equal(
        _weights(only_second.model.get_layer("bn1"))["moving_mean"], old1["moving_mean"]
    )
    # bn2 is computed over the (stale) bn1 that stays in the model
    eps = model.get_layer("bn1").epsilon
    d1, d2 = (_weights(model.get_layer(name)) for name in ("d1", "d2"))
    z1 = x.astype(np.float64) @ d1["kernel"] + d1["bias"]
    a1 = _relu(
        old1["gamma"] * (z1 - old1["moving_mean"]) / np.sqrt(old1["moving_variance"] + eps)
        + old1["beta"]
    )
    z2 = a1 @ d2["kernel"] + d2["bias"]
    got2 = _weights(only_second.model.get_layer("bn2"))
    np.testing.assert_allclose(got2["moving_mean"], z2.mean(0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got2["moving_variance"], z2.var(0), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["conv_bn.keras", "conv_bn_channels_first.keras"])
def test_recalibrate_conv_fixture_each_batchnorm_holds_its_inputs_statistics(name):
    """After recalibration every BatchNormalization's moving statistics are the exact
    statistics of its own input in the recalibrated model (read with Keras sub-models), which
    holds only when upstream layers are recalibrated first. Only max_samples are used."""
    path = FIXTURES / name
    original = keras.saving.load_model(path)
    shape = tuple(original.inputs[0].shape[1:])
    data = np.random.default_rng(18).normal(size=(96, *shape)).astype("float32") * 2 + 0.5
    result = normify.recalibrate(path, data=data, batch_size=32, max_samples=72)
    bns = [layer.name for layer in original.layers if type(layer).__name__ == "BatchNormalization"]
    assert [change.path for change in result.report.changes] == bns and len(bns) == 6
    model = result.model
    taps = keras.Model(model.inputs, [model.get_layer(bn).input for bn in bns])
    used = [as_numpy(v) for v in taps([data[:72]], training=False)]
    every = [as_numpy(v) for v in taps([data], training=False)]
    for bn_name, x, x_all in zip(bns, used, every, strict=True):
        layer = model.get_layer(bn_name)
        axis, rank = layer.axis, len(layer.input.shape)
        assert axis % rank == (1 if "channels_first" in name and rank == 4 else rank - 1)
        mean, variance = _stats(x, axis)
        got = _weights(layer)
        np.testing.assert_allclose(got["moving_mean"], mean, rtol=1e-4, atol=1e-5, err_msg=bn_name)
        np.testing.assert_allclose(got["moving_variance"], variance, rtol=1e-4, err_msg=bn_name)
        assert not np.allclose(got["moving_mean"], _stats(x_all, axis)[0], rtol=1e-4, atol=1e-5)


def test_recalibrate_a_masked_batchnorm_uses_unpadded_steps_only():
    keras.utils.set_random_seed(4)
    tokens = keras.Input((None,), dtype="int32", name="tokens")
    hidden = layers.Embedding(30, 8, mask_zero=True, name="embedding")(tokens)
    hidden = layers.LSTM(12, return_sequences=True, name="lstm")(hidden)
    hidden = layers.BatchNormalization(name="bn")(hidden)
    hidden = layers.GlobalAveragePooling1D(name="pool")(hidden)
    model = keras.Model(tokens, layers.Dense(3, name="out")(hidden))
    rng = np.random.default_rng(21)
    data = rng.integers(1, 30, size=(200, 12)).astype("int32")
    for row, length in enumerate(rng.integers(2, 6, size=200)):
        data[row, length:] = 0  # heavy post-padding
    result = normify.recalibrate(model, data=data)
    steps = _predict(keras.Model(model.inputs, model.get_layer("lstm").output), data)
    real = steps[data != 0]  # (unpadded steps, channels)
    got = _weights(result.model.get_layer("bn"))
    np.testing.assert_allclose(got["moving_mean"], real.mean(0), rtol=1e-3, atol=1e-7)
    np.testing.assert_allclose(got["moving_variance"], real.var(0), rtol=1e-3, atol=1e-9)


def test_recalibrate_needs_data():
    with pytest.raises(NormifyError, match="data"):
        normify.recalibrate(_bn_model(), data=None)


# -------------------------------------------------------------------------------------- CLI


def test_cli_add_calibrate_writes_a_model_that_reloads_in_a_fresh_process(tmp_path):
    data = np.random.default_rng(15).normal(size=(200, 16, 16, 3)).astype("float32")
    np.savez(tmp_path / "d.npz", image=data)
    out = tmp_path / "out.keras"
    result = run_cli("add", FIXTURES / "cnn.keras", "--init", "calibrate", "--data",
                 tmp_path / "d.npz", "-o", out)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert out.is_file()
    in_process = normify.add(FIXTURES / "cnn.keras", init="calibrate", data=tmp_path / "d.npz")
    probe = np.random.default_rng(16).normal(size=(32, 16, 16, 3)).astype("float32")
    reloaded = predict_in_fresh_process(out, probe, tmp_path)
    np.testing.assert_allclose(reloaded, _predict(in_process.model, probe), rtol=0, atol=1e-6)
    # it is calibrated (not an identity init) and predicts what the original did
    bn = in_process.model.get_layer("conv2d_bn")
    assert not np.allclose(bn.moving_variance.numpy(), 1.0, atol=1e-2)
    original = keras.saving.load_model(FIXTURES / "cnn.keras")
    assert max_relative_difference([_predict(original, probe)], [reloaded]) < IDENTITY


def test_cli_calibrate_without_data_exits_2_with_one_line(tmp_path):
    out = tmp_path / "out.keras"
    result = CliRunner().invoke(
        main, ["add", str(FIXTURES / "mlp.keras"), "--init", "calibrate", "-o", str(out)]
    )
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and "--data" in result.stderr, result.stderr
    assert files_in(tmp_path) == []


def test_cli_data_of_the_wrong_shape_exits_2_naming_the_input_and_shape(tmp_path):
    np.savez(tmp_path / "d.npz", image=np.zeros((10, 16, 16), "float32"))
    result = CliRunner().invoke(
        main,
        ["add", str(FIXTURES / "cnn.keras"), "--init", "calibrate", "--data",
         str(tmp_path / "d.npz"), "-o", str(tmp_path / "out.keras")],
    )  # fmt: skip
    assert result.exit_code == 2
    stderr = result.stderr
    assert stderr.count("\n") == 1, stderr
    assert "'image'" in stderr and "(None, 16, 16, 3)" in stderr, stderr
    assert "Traceback" not in result.output
    assert files_in(tmp_path) == ["d.npz"]


def test_cli_recalibrate_default_output_and_required_data(tmp_path):
    model = _bn_model(seed=2)
    model.save(tmp_path / "m.keras")
    x = _recal_data(seed=17)
    np.save(tmp_path / "d.npy", x)
    missing = CliRunner().invoke(main, ["recalibrate", str(tmp_path / "m.keras")])
    assert missing.exit_code == 2 and "--data" in missing.output
    assert files_in(tmp_path) == ["d.npy", "m.keras"]
    done = run_cli("recalibrate", tmp_path / "m.keras", "--data", tmp_path / "d.npy",
               "--batch-size", "32")  # fmt: skip
    assert done.exit_code == 0, done.output
    assert "bn1" in done.output and "bn2" in done.output
    written = tmp_path / "m.recalibrated.keras"
    assert written.is_file()
    loaded = keras.saving.load_model(written)
    expected = _numpy_recalibration(model, x)
    for name in ("bn1", "bn2"):
        mean, variance = expected[name]
        got = _weights(loaded.get_layer(name))
        np.testing.assert_allclose(got["moving_mean"], mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got["moving_variance"], variance, rtol=1e-5, atol=1e-6)
