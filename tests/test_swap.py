"""`normify.swap` and `normify swap`: names, axes and carried weights, group counts, drift
checked against independent probes of the old and new models, fitting with data, masks."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from conftest import FIXTURES
from helpers import as_numpy, files_in, predict_in_fresh_process, run_cli

import normify
from normify.drift import random_inputs
from normify.errors import NormifyError

keras = pytest.importorskip("keras")
layers = keras.layers

PARTIAL = FIXTURES / "partial_bn_cnn.keras"
BATCHNORMS = ["batch_normalization", "batch_normalization_1"]
CLASSES = {
    "batchnorm": "BatchNormalization",
    "layernorm": "LayerNormalization",
    "groupnorm": "GroupNormalization",
    "rmsnorm": "RMSNormalization",
}


# ------------------------------------------------------------------------------ helpers


def _weights(layer) -> dict[str, np.ndarray]:
    """A layer's variables by their own name (`gamma`, `beta`, `scale`, ...), as stored."""
    return {v.path.rsplit("/", 1)[-1]: np.array(v.numpy()) for v in layer.weights}


def _axes(layer, rank: int) -> set[int]:
    axis = layer.axis
    axes = axis if isinstance(axis, (list, tuple)) else [axis]
    return {int(a) % rank for a in axes}


def _predict(model, x) -> np.ndarray:
    return as_numpy(model.predict(x, verbose=0))


def _at(model, name: str, x) -> np.ndarray:
    """The output of layer `name`, from a sub-model of `model` (not normify's probe)."""
    return _predict(keras.Model(model.inputs, model.get_layer(name).output), x)


def _max_abs(a, b) -> float:
    return float(np.max(np.abs(as_numpy(a, np.float64) - as_numpy(b, np.float64))))


def _layer_norm(x: np.ndarray, epsilon: float) -> np.ndarray:
    x = as_numpy(x, np.float64)
    return (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + epsilon)


def _least_squares(n: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel fit y ≈ gamma·n + beta by np.polyfit (last axis is the channel). A
    channel where n is constant (a dead ReLU unit) has no unique fit: NaN there."""
    n2 = as_numpy(n, np.float64).reshape(-1, n.shape[-1])
    y2 = as_numpy(y, np.float64).reshape(-1, y.shape[-1])
    gamma, beta = np.full(n2.shape[1], np.nan), np.full(n2.shape[1], np.nan)
    for c in range(n2.shape[1]):
        if np.ptp(n2[:, c]) > 1e-6:
            gamma[c], beta[c] = np.polyfit(n2[:, c], y2[:, c], 1)
    return gamma, beta


def _images(count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(count, 16, 16, 3)).astype("float32")


@pytest.fixture(scope="module")
def partial():
    return keras.saving.load_model(PARTIAL)


# --------------------------------------------------------------- swaps on partial_bn_cnn


CASES = [
    ("batchnorm", "layernorm", BATCHNORMS),
    ("batchnorm", "groupnorm", BATCHNORMS),
    ("batchnorm", "rmsnorm", BATCHNORMS),
    ("layernorm", "batchnorm", ["layer_normalization"]),
]


@pytest.fixture(scope="module", params=CASES, ids=lambda case: f"{case[0]}-{case[1]}")
def swapped(request, partial):
    from_norm, to_norm, paths = request.param
    result = normify.swap(PARTIAL, from_norm=from_norm, to_norm=to_norm)
    return from_norm, to_norm, paths, result


def test_swap_keeps_names_and_axes_and_carries_affine_weights_bit_for_bit(partial, swapped):
    from_norm, to_norm, paths, result = swapped
    changes = {change.path: change for change in result.report.changes}
    assert list(changes) == paths
    assert result.report.kept == []
    for path in paths:
        old, new = partial.get_layer(path), result.model.get_layer(path)
        rank = len(old.output.shape)
        assert type(old).__name__ == CLASSES[from_norm]
        assert type(new).__name__ == CLASSES[to_norm], path
        assert new.name == path
        assert _axes(new, rank) == _axes(old, rank) == {rank - 1}
        assert new.epsilon == old.epsilon
        before, after = _weights(old), _weights(new)
        if to_norm == "rmsnorm":
            assert set(after) == {"scale"}
            assert after["scale"].tobytes() == before["gamma"].tobytes()
            assert changes[path].carried == ("scale",)
        else:
            for name in ("gamma", "beta"):
                assert after[name].dtype == before[name].dtype
                assert after[name].tobytes() == before[name].tobytes(), (path, name)
            assert changes[path].carried == ("gamma", "beta")
        assert not np.all(before["gamma"] == 1)  # the fixture's gammas are trained values
        if to_norm == "groupnorm":
            assert new.groups == changes[path].groups == 8  # 8 channels: 8 divides itself
        if to_norm == "batchnorm":  # no statistics to carry: Keras' defaults
            assert np.all(after["moving_mean"] == 0) and np.all(after["moving_variance"] == 1)


def test_swap_leaves_every_other_weight_alone(partial, swapped):
    _, _, paths, result = swapped
    for layer in partial.layers:
        if layer.name in paths:
            continue
        new = result.model.get_layer(layer.name)
        assert type(new) is type(layer)
        before, after = _weights(layer), _weights(new)
        assert before.keys() == after.keys()
        for name in before:
            assert before[name].tobytes() == after[name].tobytes(), (layer.name, name)


def test_swap_drift_equals_an_independent_probe_on_the_random_inputs(partial, swapped):
    _, _, paths, result = swapped
    report = result.report
    inputs = random_inputs(partial)[0]
    assert inputs.shape == (8, 16, 16, 3)
    for path in paths:
        old, new = _at(partial, path, inputs), _at(result.model, path, inputs)
        expected = _max_abs(old, new)
        assert expected > 1e-3  # no swap is exact
        drift = report.layer_drift[path]
        assert drift["max_abs"] == pytest.approx(expected, rel=1e-4)
        assert drift["relative"] == pytest.approx(expected / np.max(np.abs(old)), rel=1e-4)
        assert report.to_json()["changes"][paths.index(path)]["drift"] == drift
    output_drift = _max_abs(_predict(partial, inputs), _predict(result.model, inputs))
    assert report.drift["max_abs"] > 0
    assert report.drift["max_abs"] == pytest.approx(output_drift, rel=1e-4)
    assert report.drift["inputs"] == "random" and report.drift["samples"] == 8


def test_swap_refuses_bad_norm_names_and_same_class():
    with pytest.raises(NormifyError, match="nothing to swap"):
        normify.swap(PARTIAL, from_norm="batchnorm", to_norm="batchnorm")
    with pytest.raises(NormifyError, match="--to"):
        normify.swap(PARTIAL, from_norm="batchnorm", to_norm="unitnorm")


def test_swap_include_and_exclude_select_layers(partial):
    only = normify.swap(PARTIAL, from_norm="batchnorm", to_norm="layernorm", include=["*_1"]).report
    assert [change.path for change in only.changes] == ["batch_normalization_1"]
    assert [kept.path for kept in only.kept] == ["batch_normalization"]
    assert set(only.layer_drift) == {"batch_normalization_1"}
    rest = normify.swap(PARTIAL, from_norm="batchnorm", to_norm="layernorm", exclude=["*_1"])
    assert [change.path for change in rest.report.changes] == ["batch_normalization"]
    assert type(rest.model.get_layer("batch_normalization_1")).__name__ == "BatchNormalization"


# ----------------------------------------------------------------------- group counts


# channel count -> largest divisor at most 32, worked out by hand
GROUPS = {48: 24, 7: 7, 64: 32, 36: 18, 96: 32}


def _wide_model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,), name="x")
    hidden = inputs
    for width in GROUPS:
        hidden = layers.Dense(width, name=f"d{width}")(hidden)
        hidden = layers.BatchNormalization(name=f"bn{width}")(hidden)
    return keras.Model(inputs, layers.Dense(2, name="out")(hidden))


def test_groupnorm_groups_default_to_the_largest_divisor_up_to_32():
    model = _wide_model()
    result = normify.swap(model, from_norm="batchnorm", to_norm="groupnorm")
    groups = {change.path: change.groups for change in result.report.changes}
    assert groups == {f"bn{width}": count for width, count in GROUPS.items()}
    for width, count in GROUPS.items():
        assert result.model.get_layer(f"bn{width}").groups == count


def test_groups_option_overrides_and_a_non_divisor_is_kept_with_its_reason():
    model = _wide_model()
    result = normify.swap(model, from_norm="batchnorm", to_norm="groupnorm", groups=12)
    swapped = {change.path for change in result.report.changes}
    assert swapped == {"bn48", "bn36", "bn96"}
    kept = {kept.path: kept.reason for kept in result.report.kept}
    assert set(kept) == {"bn7", "bn64"}
    assert "7 channels" in kept["bn7"] and "12 groups" in kept["bn7"]
    assert "64 channels" in kept["bn64"]
    for path in swapped:
        assert result.model.get_layer(path).groups == 12
    for path in kept:  # left as they were
        layer = result.model.get_layer(path)
        assert type(layer).__name__ == "BatchNormalization"
        old = _weights(model.get_layer(path))
        assert all(np.array_equal(v, old[k]) for k, v in _weights(layer).items())

    on_fixture = normify.swap(PARTIAL, from_norm="batchnorm", to_norm="groupnorm", groups=4)
    assert [change.groups for change in on_fixture.report.changes] == [4, 4]
    refused = normify.swap(PARTIAL, from_norm="batchnorm", to_norm="groupnorm", groups=3)
    assert refused.report.changes == []
    assert [kept.reason for kept in refused.report.kept] == [
        "8 channels cannot be split into 3 groups"
    ] * 2


# ------------------------------------------------------------------------ fitting with data


def _bn_output(x: np.ndarray, weights: dict[str, np.ndarray], epsilon: float) -> np.ndarray:
    w = {k: v.astype(np.float64) for k, v in weights.items()}
    normalized = (x - w["moving_mean"]) / np.sqrt(w["moving_variance"] + epsilon)
    return w["gamma"] * normalized + w["beta"]


def test_swap_to_layernorm_with_data_is_a_least_squares_fit_and_drifts_less(partial):
    data = _images(256, seed=1)
    fitted = normify.swap(PARTIAL, from_norm="batchnorm", to_norm="layernorm", data=data)
    plain = normify.swap(PARTIAL, from_norm="batchnorm", to_norm="layernorm")
    # the first swapped layer sees the original's conv2d output in both models
    old = partial.get_layer("batch_normalization")
    x = as_numpy(_at(partial, "conv2d", data), np.float64)
    target = _bn_output(x, _weights(old), old.epsilon)
    layer = fitted.model.get_layer("batch_normalization")
    gamma, beta = _least_squares(_layer_norm(x, layer.epsilon), target)
    got = _weights(layer)
    np.testing.assert_allclose(got["gamma"], gamma, rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(got["beta"], beta, rtol=1e-3, atol=1e-5)
    assert fitted.report.drift["inputs"] == "data" and fitted.report.drift["samples"] == 256
    # on held-out inputs of the same distribution, the fitted swap is closer to the original
    held_out = _images(128, seed=2)
    reference = _predict(partial, held_out)
    fitted_drift = _max_abs(reference, _predict(fitted.model, held_out))
    plain_drift = _max_abs(reference, _predict(plain.model, held_out))
    assert 0 < fitted_drift < plain_drift / 2, (fitted_drift, plain_drift)
    for path in BATCHNORMS:  # and each layer's output has a smaller squared error
        old_output = _at(partial, path, held_out)
        before = np.mean((old_output - _at(plain.model, path, held_out)) ** 2)
        after = np.mean((old_output - _at(fitted.model, path, held_out)) ** 2)
        assert after < before / 2, (path, after, before)


@pytest.mark.parametrize("to_norm", ["groupnorm", "rmsnorm"])
def test_swap_to_groupnorm_and_rmsnorm_with_data_fit_per_channel(partial, to_norm):
    data = _images(192, seed=5)
    fitted = normify.swap(PARTIAL, from_norm="batchnorm", to_norm=to_norm, data=data)
    plain = normify.swap(PARTIAL, from_norm="batchnorm", to_norm=to_norm)
    old = partial.get_layer("batch_normalization")
    x = as_numpy(_at(partial, "conv2d", data), np.float64)
    target = _bn_output(x, _weights(old), old.epsilon)
    layer = fitted.model.get_layer("batch_normalization")
    got = _weights(layer)
    if to_norm == "rmsnorm":  # no offset: scale = sum(n·y) / sum(n·n) per channel
        n = x / np.sqrt(np.mean(x * x, -1, keepdims=True) + layer.epsilon)
        n2, y2 = n.reshape(-1, 8), target.reshape(-1, 8)
        scale = (n2 * y2).sum(0) / (n2 * n2).sum(0)
        np.testing.assert_allclose(got["scale"], scale, rtol=1e-3, atol=1e-5)
    else:  # 8 groups of 8 channels: each channel normalized over its own pixels per sample
        n = (x - x.mean((1, 2), keepdims=True)) / np.sqrt(
            x.var((1, 2), keepdims=True) + layer.epsilon
        )
        gamma, beta = _least_squares(n, target)
        np.testing.assert_allclose(got["gamma"], gamma, rtol=1e-3, atol=1e-5)
        np.testing.assert_allclose(got["beta"], beta, rtol=1e-3, atol=1e-5)
    held_out = _images(96, seed=6)
    reference = _predict(partial, held_out)
    fitted_drift = _max_abs(reference, _predict(fitted.model, held_out))
    assert fitted_drift < _max_abs(reference, _predict(plain.model, held_out))


def test_swap_to_batchnorm_with_data_gets_exact_statistics_and_a_fit(partial):
    data = _images(256, seed=3)
    fitted = normify.swap(PARTIAL, from_norm="layernorm", to_norm="batchnorm", data=data)
    plain = normify.swap(PARTIAL, from_norm="layernorm", to_norm="batchnorm")
    old = partial.get_layer("layer_normalization")
    x = as_numpy(_at(partial, "dropout", data), np.float64)  # the norm's input
    bn = fitted.model.get_layer("layer_normalization")
    got = _weights(bn)
    np.testing.assert_allclose(got["moving_mean"], x.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["moving_variance"], x.var(0), rtol=1e-5, atol=1e-6)
    old_weights = {k: v.astype(np.float64) for k, v in _weights(old).items()}
    target = _layer_norm(x, old.epsilon) * old_weights["gamma"] + old_weights["beta"]
    normalized = (x - x.mean(0)) / np.sqrt(x.var(0) + bn.epsilon)
    gamma, beta = _least_squares(normalized, target)
    live = ~np.isnan(gamma)
    assert 4 <= live.sum() < len(live)  # some ReLU units of `dense` are dead on this data
    np.testing.assert_allclose(got["gamma"][live], gamma[live], rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(got["beta"][live], beta[live], rtol=1e-3, atol=1e-5)
    # a dead unit: the best the new layer can do is the old output's mean there
    dead_output = got["gamma"] * normalized + got["beta"]
    np.testing.assert_allclose(
        dead_output[:, ~live],
        np.broadcast_to(target[:, ~live].mean(0), dead_output[:, ~live].shape),
        atol=1e-4,
    )
    held_out = _images(128, seed=4)
    reference = _predict(partial, held_out)
    fitted_drift = _max_abs(reference, _predict(fitted.model, held_out))
    assert fitted_drift < _max_abs(reference, _predict(plain.model, held_out))


# ---------------------------------------------------------------------------------- masks


def _masked_model(seed: int = 3):
    """Embedding(mask_zero) -> LSTM(return_sequences) -> BatchNormalization -> GAP -> Dense."""
    keras.utils.set_random_seed(seed)
    tokens = keras.Input((None,), dtype="int32", name="tokens")
    hidden = layers.Embedding(30, 8, mask_zero=True, name="embedding")(tokens)
    hidden = layers.LSTM(12, return_sequences=True, name="lstm")(hidden)
    hidden = layers.BatchNormalization(name="bn")(hidden)
    hidden = layers.GlobalAveragePooling1D(name="pool")(hidden)
    model = keras.Model(tokens, layers.Dense(3, name="out")(hidden), name="masked")
    rng = np.random.default_rng(seed)
    bn = model.get_layer("bn")
    bn.gamma.assign(rng.uniform(0.5, 1.5, 12).astype("float32"))
    bn.beta.assign(rng.normal(0, 0.5, 12).astype("float32"))
    bn.moving_mean.assign(rng.normal(0, 0.01, 12).astype("float32"))
    bn.moving_variance.assign(rng.uniform(1e-4, 1e-3, 12).astype("float32"))
    return model


def _paddings(seed: int = 0) -> dict[str, np.ndarray]:
    sequences = np.random.default_rng(seed).integers(1, 30, size=(4, 5)).astype("int32")
    post = np.zeros((4, 8), "int32")
    post[:, :5] = sequences
    pre = np.zeros((4, 9), "int32")
    pre[:, 4:] = sequences
    return {"unpadded": sequences, "post": post, "pre": pre}


def _mask_respected(model) -> float:
    """The largest difference between outputs of one sequence padded three ways."""
    outputs = {name: _predict(model, x) for name, x in _paddings().items()}
    return max(_max_abs(outputs["unpadded"], outputs[key]) for key in ("post", "pre"))


@pytest.fixture(scope="module")
def masked():
    model = _masked_model()
    assert _mask_respected(model) < 1e-6  # the original's mask reaches the pooling
    return model


def test_swap_to_layernorm_where_a_mask_flows_keeps_masking(masked):
    result = normify.swap(masked, from_norm="batchnorm", to_norm="layernorm")
    assert type(result.model.get_layer("bn")).__name__ == "LayerNormalization"
    assert _mask_respected(result.model) < 1e-6
    assert result.report.drift["max_abs"] > 0
    # the BatchNormalization's recorded `mask` argument is not passed to the new layer
    assert "mask" in json.dumps(_inbound_nodes(masked, "bn"))
    assert "mask" not in json.dumps(_inbound_nodes(result.model, "bn"))


def _inbound_nodes(model, name: str) -> list:
    (layer,) = [layer for layer in model.get_config()["layers"] if layer["name"] == name]
    return layer["inbound_nodes"]


@pytest.mark.filterwarnings("ignore:Layer .bn. .of type RMSNormalization.")
def test_swap_to_rmsnorm_where_a_mask_flows_needs_allow_mask_loss(masked):
    with pytest.raises(NormifyError, match="--allow-mask-loss") as info:
        normify.swap(masked, from_norm="batchnorm", to_norm="rmsnorm")
    assert "bn" in str(info.value) and "\n" not in str(info.value)
    result = normify.swap(masked, from_norm="batchnorm", to_norm="rmsnorm", allow_mask_loss=True)
    assert type(result.model.get_layer("bn")).__name__ == "RMSNormalization"
    assert [change.path for change in result.report.changes] == ["bn"]


def test_swap_to_groupnorm_where_a_mask_flows_says_padded_steps_count(masked):
    result = normify.swap(masked, from_norm="batchnorm", to_norm="groupnorm")
    assert type(result.model.get_layer("bn")).__name__ == "GroupNormalization"
    assert result.model.get_layer("bn").groups == 12
    notices = [notice for notice in result.report.notices if "bn" in notice]
    assert notices and "padded" in notices[0], result.report.notices


def test_layernorm_swap_of_a_masked_model_from_a_file_reloads_in_a_fresh_process(masked, tmp_path):
    masked.save(tmp_path / "masked.keras")
    result = normify.swap(tmp_path / "masked.keras", from_norm="batchnorm", to_norm="layernorm")
    assert _mask_respected(result.model) < 1e-6
    result.model.save(tmp_path / "masked.ln.keras")
    inputs = _paddings()["post"]
    reloaded = predict_in_fresh_process(tmp_path / "masked.ln.keras", inputs, tmp_path)
    np.testing.assert_allclose(reloaded, _predict(result.model, inputs), rtol=0, atol=1e-6)
    assert _max_abs(reloaded, _predict(masked, inputs)) > 1e-4  # it really is the swapped one


# -------------------------------------------------------------------------------------- CLI


def test_cli_swap_dry_run_json_lists_the_swaps_and_writes_nothing(tmp_path):
    model = tmp_path / "m.keras"
    shutil.copy(PARTIAL, model)
    result = run_cli(
        "swap", model, "--from", "batchnorm", "--to", "layernorm", "--dry-run", "--json"
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["dry_run"] is True and payload["output"] is None
    assert [swap["path"] for swap in payload["changes"]] == BATCHNORMS
    assert {swap["to"] for swap in payload["changes"]} == {"LayerNormalization"}
    assert [swap["carried"] for swap in payload["changes"]] == [["gamma", "beta"]] * 2
    assert files_in(tmp_path) == ["m.keras"]


def test_cli_swap_writes_the_default_output_name(tmp_path, partial):
    model = tmp_path / "m.keras"
    shutil.copy(PARTIAL, model)
    result = run_cli("swap", model, "--from", "batchnorm", "--to", "groupnorm", "--groups", "4")
    assert result.exit_code == 0, result.output
    assert files_in(tmp_path) == ["m.keras", "m.swapped.keras"]
    loaded = keras.saving.load_model(tmp_path / "m.swapped.keras")
    for path in BATCHNORMS:
        layer = loaded.get_layer(path)
        assert type(layer).__name__ == "GroupNormalization" and layer.groups == 4
        assert (
            _weights(layer)["gamma"].tobytes()
            == _weights(partial.get_layer(path))["gamma"].tobytes()
        )
    assert "swap   batch_normalization: BatchNormalization -> GroupNormalization" in result.output


def test_cli_swap_dry_run_to_groupnorm_plans_what_the_real_swap_does(tmp_path):
    model = tmp_path / "m.keras"
    shutil.copy(PARTIAL, model)
    args = ["swap", model, "--from", "batchnorm", "--to", "groupnorm", "--json"]
    planned = json.loads(run_cli(*args, "--dry-run").stdout)
    done = json.loads(run_cli(*args).stdout)
    assert [s["path"] for s in done["changes"]] == BATCHNORMS
    assert [(s["path"], s["groups"]) for s in planned["changes"]] == [
        (s["path"], s["groups"]) for s in done["changes"]
    ]
    assert planned["kept"] == done["kept"] == []


def test_swap_to_rmsnorm_on_a_channels_first_axis_is_swapped_or_kept_cleanly():
    path = FIXTURES / "conv_bn_channels_first.keras"
    try:
        result = normify.swap(path, from_norm="batchnorm", to_norm="rmsnorm")
    except NormifyError:
        return  # a clear, one-line refusal is acceptable
    original = keras.saving.load_model(path)
    assert np.all(np.isfinite(_predict(result.model, random_inputs(original)[0])))
    for change in result.report.changes:  # each still normalizes its own channel axis
        old, new = original.get_layer(change.path), result.model.get_layer(change.path)
        rank = len(old.output.shape)
        assert _axes(new, rank) == _axes(old, rank)
