"""`audit --data`: activation statistics checked against NumPy on Keras sub-models' outputs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import FIXTURES
from helpers import as_numpy

import normify
from normify.cli import main

keras = pytest.importorskip("keras")

RNG = np.random.default_rng(7)


def _load(name: str):
    return keras.saving.load_model(FIXTURES / name)


def _summary(values: np.ndarray, axis: int = -1, mask: np.ndarray | None = None) -> dict:
    """The numbers audit --data reports, computed here from the raw outputs."""
    moved = np.moveaxis(values.astype(np.float64), axis, -1)
    if mask is not None:
        moved = moved[mask]
    rows = moved.reshape(-1, moved.shape[-1])
    mean, std = rows.mean(0), rows.std(0)
    live = std[std > 1e-12]
    return {
        "rows": rows,
        "channel_mean": mean,
        "channel_std": std,
        "mean": mean.mean(),
        "std": std.mean(),
        "std_spread": live.max() / live.min(),
        "scale": np.sqrt(np.mean(rows**2)),
        "positions": rows.shape[0],
    }


def _check(entry, expected: dict) -> None:
    assert entry.positions == expected["positions"]
    np.testing.assert_allclose(entry.channel_mean, expected["channel_mean"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(entry.channel_std, expected["channel_std"], rtol=1e-4, atol=1e-6)
    for key in ("mean", "std", "std_spread", "scale"):
        assert getattr(entry, key) == pytest.approx(expected[key], rel=1e-4, abs=1e-7), key


def test_mlp_statistics_dead_units_and_growth():
    model = _load("mlp.keras")
    x = RNG.normal(size=(300, 16)).astype("float32")
    report = normify.audit(FIXTURES / "mlp.keras", data=x, batch_size=64)
    rows = {row.path: row for row in report.activity.layers}
    assert list(rows) == ["dense", "dense_1", "dense_2"]
    expected = {}
    for name in rows:
        sub = keras.Model(model.inputs, model.get_layer(name).output)
        expected[name] = _summary(as_numpy(sub.predict(x, verbose=0)))
        _check(rows[name], expected[name])
    # dead ReLU units: channels never positive on any sample
    dead = (expected["dense_1"]["rows"] <= 0).all(0).mean()
    assert rows["dense_1"].dead == pytest.approx(dead)
    assert rows["dense_2"].dead is None  # softmax: no dying units
    # scale with depth: each layer against the one before it
    growth = expected["dense_1"]["scale"] / expected["dense"]["scale"]
    assert rows["dense_1"].growth == pytest.approx(growth, rel=1e-4)
    assert rows["dense"].growth is None
    assert rows["dense_2"].output and rows["dense_2"].hint is None
    assert report.activity.samples == 300


def test_masked_steps_are_left_out():
    model = _load("gru_tagger.keras")
    tokens = RNG.integers(1, 50, size=(40, 20)).astype("int32")
    lengths = RNG.integers(3, 20, size=40)
    for row, length in enumerate(lengths):
        tokens[row, length:] = 0  # padding: masked by the Embedding(mask_zero)
    mask = tokens != 0
    report = normify.audit(FIXTURES / "gru_tagger.keras", data=tokens, batch_size=16)
    rows = {row.path: row for row in report.activity.layers}
    for name in ("gru", "time_distributed"):
        sub = keras.Model(model.inputs, model.get_layer(name).output)
        values = as_numpy(sub.predict(tokens, verbose=0))
        expected = _summary(values, mask=mask)
        assert expected["positions"] == int(mask.sum()) < tokens.size
        _check(rows[name], expected)
    # the GRU's tanh output: saturated values within 0.01 of -1 or 1
    gru = _summary(as_numpy(keras.Model(model.inputs, model.get_layer("gru").output)(tokens)),
                   mask=mask)  # fmt: skip
    assert rows["gru"].saturated == pytest.approx((np.abs(gru["rows"]) >= 0.99).mean())


def test_separate_activation_and_batchnorm_gap():
    """A linear conv followed by BatchNormalization and ReLU: dead units are read after the
    ReLU; the BatchNormalization's moving statistics are compared with the data's."""
    model = _load("partial_bn_cnn.keras")
    images = RNG.normal(size=(48, 16, 16, 3)).astype("float32")
    report = normify.audit(FIXTURES / "partial_bn_cnn.keras", data={"image": images})
    rows = {row.path: row for row in report.activity.layers}
    conv = rows["conv2d"]
    assert conv.activation == "relu" and conv.activation_layer is not None
    relu = model.get_layer(conv.activation_layer.rsplit("/", 1)[-1])
    after = as_numpy(keras.Model(model.inputs, relu.output)(images))
    assert conv.dead == pytest.approx((after.reshape(-1, after.shape[-1]) <= 0).all(0).mean())
    _check(
        conv,
        _summary(as_numpy(keras.Model(model.inputs, model.get_layer("conv2d").output)(images))),
    )
    gaps = {gap.path: gap for gap in report.activity.batchnorms}
    assert set(gaps) == {"batch_normalization", "batch_normalization_1"}
    for name, gap in gaps.items():
        layer = model.get_layer(name)
        inputs = as_numpy(keras.Model(model.inputs, layer.input)(images), dtype=np.float64)
        rows_in = inputs.reshape(-1, inputs.shape[-1])
        mean, var = rows_in.mean(0), rows_in.var(0)
        moving_mean = as_numpy(layer.moving_mean, dtype=np.float64)
        moving_var = as_numpy(layer.moving_variance, dtype=np.float64)
        shift = np.abs(mean - moving_mean) / np.sqrt(moving_var + layer.epsilon)
        ratio = var / moving_var
        assert gap.mean_shift == pytest.approx(shift.max(), rel=1e-4)
        assert gap.max_variance_ratio == pytest.approx(np.maximum(ratio, 1 / ratio).max(), rel=1e-4)
        assert (gap.hint is not None) == (
            shift.max() > 0.5 or np.maximum(ratio, 1 / ratio).max() > 2
        )


def test_recalibrate_closes_the_gap(tmp_path: Path):
    images = RNG.normal(size=(64, 16, 16, 3)).astype("float32")
    result = normify.recalibrate(FIXTURES / "partial_bn_cnn.keras", data=images)
    after = normify.audit(result.model, data=images)
    for gap in after.activity.batchnorms:
        assert gap.mean_shift < 1e-3 and gap.max_variance_ratio < 1.001, gap
        assert gap.hint is None


def test_nested_and_shared_layers():
    nested = _load("nested.keras")
    x = RNG.normal(size=(50, nested.inputs[0].shape[-1])).astype("float32")
    report = normify.audit(FIXTURES / "nested.keras", data=x)
    rows = {row.path: row for row in report.activity.layers}
    assert "encoder/dense" in rows and "head/dense_2" in rows
    encoder = nested.get_layer("encoder")
    inner = keras.Model(encoder.inputs, encoder.get_layer("dense").output)
    _check(rows["encoder/dense"], _summary(as_numpy(inner(x))))

    shared = _load("shared_dense.keras")
    left = RNG.normal(size=(30, 10)).astype("float32")
    right = RNG.normal(size=(30, 10)).astype("float32") * 3
    report = normify.audit(shared, data=[left, right])
    row = next(r for r in report.activity.layers if r.path == "shared")
    layer = shared.get_layer("shared")
    outputs = [node.output_tensors[0] for node in layer._inbound_nodes]
    both = keras.Model(shared.inputs, outputs)([left, right])
    _check(row, _summary(np.concatenate([as_numpy(v) for v in both])))  # every call counts


def test_hint_on_an_unnormalized_layer_whose_channels_differ():
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(6, activation="relu", name="hidden")(inputs)
    outputs = keras.layers.Dense(2, name="out")(hidden)
    model = keras.Model(inputs, outputs)
    kernel = np.eye(4, 6, dtype="float32") * np.array([1, 100, 1, 1, 0, 0], dtype="float32")
    kernel[:, 4] = 1.0
    kernel[:, 5] = 1.0
    model.get_layer("hidden").set_weights([kernel, np.zeros(6, "float32")])
    x = np.abs(RNG.normal(size=(64, 4))).astype("float32")
    row = normify.audit(model, data=x).activity.layers[0]
    assert row.std_spread > 10 and row.hint and "channel std differ" in row.hint


def test_cli_json_and_table(tmp_path: Path):
    data = tmp_path / "x.npz"
    np.savez(data, features=RNG.normal(size=(70, 16)).astype("float32"))
    runner = CliRunner()
    result = runner.invoke(
        main, ["audit", str(FIXTURES / "mlp.keras"), "--data", str(data), "--json"]
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    activity = payload["activity"]
    assert activity["samples"] == 70
    assert [row["path"] for row in activity["layers"]] == ["dense", "dense_1", "dense_2"]
    assert len(activity["layers"][0]["channel_std"]) == 32 and "criteria" in activity
    text = runner.invoke(main, ["audit", str(FIXTURES / "mlp.keras"), "--data", str(data)])
    assert text.exit_code == 0 and "activations on 70 samples" in text.output
    assert "hint" in text.output and "growth" in text.output


def test_cli_bad_data_is_one_line(tmp_path: Path):
    data = tmp_path / "x.npz"
    np.savez(data, features=np.zeros((4, 3), "float32"))
    argv = ["audit", str(FIXTURES / "mlp.keras"), "--data", str(data)]
    completed = subprocess.run(
        [sys.executable, "-m", "normify", *argv], capture_output=True, text=True
    )
    assert completed.returncode == 2
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1 and "input 'features'" in lines[0] and str(data) in lines[0]


def test_audit_without_data_imports_no_numpy_nor_keras():
    code = (
        "import sys\nfrom normify.cli import main\n"
        f"main(['audit', {str(FIXTURES / 'cnn.keras')!r}], standalone_mode=False)\n"
        "loaded = [m for m in ('numpy', 'keras', 'tensorflow', 'PIL') if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr
