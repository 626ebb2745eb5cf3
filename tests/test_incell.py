"""`add --rnn layernorm-cell`: recurrent layers converted to normify's layer-normalized
layers with every weight carried, audited as normalized in-cell, stripped back exactly.

The cells themselves are tested in test_cells.py; here the conversion of real models.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import FIXTURES, MANIFEST
from helpers import inputs_for, layers_by_path, own_variables, predict, predict_in_fresh_process

import normify
from normify.errors import NormifyError

keras = pytest.importorskip("keras")
layers = keras.layers

RECURRENT_FIXTURES = ["text_bilstm.keras", "gru_tagger.keras", "seq2seq.keras"]
NORM_WEIGHTS = ("input_gamma", "recurrent_gamma", "cell_gamma", "cell_beta")
RECURRENT_CLASSES = ("LSTM", "GRU", "SimpleRNN", "Bidirectional", "RNN")


def _is_norm_weight(key: str) -> bool:
    return key.rsplit("/", 1)[-1] in NORM_WEIGHTS


def _stock_variables(layer: Any) -> dict[str, np.ndarray]:
    """A layer's variables without norm parameters, keyed by path within the layer
    (without the `stacked_rnn_cells/` scope, which Keras drops after a rebuild)."""
    found = {}
    for key, value in own_variables(layer).items():
        if not _is_norm_weight(key):
            short = key.replace("stacked_rnn_cells/", "")
            assert short not in found
            found[short] = value
    return found


def _recurrent_paths(model: Any) -> list[str]:
    return [
        path
        for path, layer in layers_by_path(model).items()
        if type(layer).__name__ in RECURRENT_CLASSES or type(layer).__name__.startswith("LayerNorm")
    ]


def _normalization_off(config: Any) -> Any:
    """The same config with every normify layer and cell computing the stock function."""
    if isinstance(config, dict):
        converted = {key: _normalization_off(value) for key, value in config.items()}
        if config.get("module") == "normify.cells":
            converted["config"] = dict(converted["config"], normalize=False)
        return converted
    if isinstance(config, list):
        return [_normalization_off(item) for item in config]
    return config


@pytest.fixture(params=RECURRENT_FIXTURES)
def fixture_name(request: pytest.FixtureRequest) -> str:
    return request.param


def test_fixture_conversion_carries_every_stock_weight_bit_for_bit(fixture_name: str) -> None:
    original = keras.saving.load_model(FIXTURES / fixture_name)
    result = normify.add(FIXTURES / fixture_name, rnn="layernorm-cell", dense="none")
    converted = result.model
    recurrent = _recurrent_paths(original)
    assert recurrent and sorted(i.path for i in result.report.changes) == sorted(recurrent)
    assert all(i.position == "in-cell" and not i.exact for i in result.report.changes)
    before, after = layers_by_path(original), layers_by_path(converted)
    for path in recurrent:
        assert type(after[path]).__name__.startswith("LayerNorm") or any(
            type(sub).__name__.startswith("LayerNorm") for sub in _sublayers(after[path])
        )
        stock, carried = _stock_variables(before[path]), _stock_variables(after[path])
        assert set(stock) == set(carried), path
        for key, value in stock.items():
            np.testing.assert_array_equal(carried[key], value, err_msg=f"{path} {key}")
        norms = {k: v for k, v in own_variables(after[path]).items() if _is_norm_weight(k)}
        assert norms, path
        for key, value in norms.items():
            np.testing.assert_array_equal(value, 0.0 if key.endswith("beta") else 1.0)
    # every other layer's weights are untouched
    for path, layer in before.items():
        if path not in recurrent and layer.weights:
            for key, value in own_variables(layer).items():
                np.testing.assert_array_equal(own_variables(after[path])[key], value)
    assert result.report.drift is not None and result.report.drift["max_abs"] > 0
    assert set(result.report.layer_drift) == set(recurrent)


def _sublayers(layer: Any) -> list[Any]:
    found = [getattr(layer, name, None) for name in ("forward_layer", "backward_layer", "cell")]
    cells = getattr(getattr(layer, "cell", None), "cells", None) or []
    return [item for item in found + list(cells) if item is not None]


def test_with_normalization_off_the_conversion_predicts_exactly_like_the_original(
    fixture_name: str,
) -> None:
    """The converted layers, their norms switched off, compute the stock function on the
    carried weights bit for bit: this proves the conversion's weight layout end to end."""
    original = keras.saving.load_model(FIXTURES / fixture_name)
    converted = normify.add(FIXTURES / fixture_name, rnn="layernorm-cell", dense="none").model
    off = keras.Model.from_config(_normalization_off(converted.get_config()))
    converted_layers = layers_by_path(converted)
    for path, layer in layers_by_path(off).items():
        if not layer.weights:
            continue
        stock = _stock_variables(converted_layers[path])
        for key, variable in zip(own_variables(layer), layer.weights, strict=True):
            variable.assign(stock[key.replace("stacked_rnn_cells/", "")])
    inputs = inputs_for(MANIFEST[fixture_name]["inputs"])
    for expected, got in zip(predict(original, inputs), predict(off, inputs), strict=True):
        if keras.backend.backend() == "torch":
            # a stock LSTM there runs torch's fused kernel: the same function, rounded in
            # another order (see Known limitations)
            np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
        else:
            np.testing.assert_array_equal(got, expected)


def test_converted_file_loads_in_a_fresh_process_after_import_normify(tmp_path: Path) -> None:
    from helpers import run_cli

    output = tmp_path / "tagger.keras"
    result = run_cli("add", FIXTURES / "gru_tagger.keras", "--rnn", "layernorm-cell", "-o", output)
    assert result.exit_code == 0, result.output
    assert "convert gru" in result.output and "layer normalization in the cell" in result.output
    loaded = keras.saving.load_model(output)
    [inputs] = inputs_for(MANIFEST["gru_tagger.keras"]["inputs"])
    fresh = predict_in_fresh_process(output, inputs, tmp_path, import_normify=True)
    np.testing.assert_allclose(fresh, predict(loaded, [inputs])[0], rtol=1e-6, atol=1e-6)
    # without normify, Keras cannot find the layer class: the README says so
    done = subprocess.run(
        [sys.executable, "-c", f"import keras; keras.saving.load_model({str(output)!r})"],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode != 0 and "LayerNormGRU" in done.stderr


def test_audit_reports_in_cell_layers_and_gates_them_without_a_backend(tmp_path: Path) -> None:
    from helpers import run_cli

    output = tmp_path / "bilstm.keras"
    assert run_cli("add", FIXTURES / "text_bilstm.keras", "--rnn", "layernorm-cell",
                   "-o", output).exit_code == 0  # fmt: skip
    script = (
        "import json, sys\n"
        "from normify.cli import main\n"
        "main(['audit', sys.argv[1], '--json'], standalone_mode=False)\n"
        "print(json.dumps(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(output)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    report_text, _, modules = done.stdout.rpartition("\n[")
    assert json.loads("[" + modules) == []  # no backend imported for the audit
    rows = {row["path"]: row for row in json.loads(report_text)["layers"]}
    bilstm = rows["bidirectional"]
    assert bilstm["normalized"] and bilstm["position"] == "in-cell"
    assert bilstm["norm"] == "LayerNormalization" and bilstm["norm_layer"] == "bidirectional"
    assert run_cli("audit", FIXTURES / "text_bilstm.keras", "--require",
                   "rnn=layernorm-cell").exit_code == 1  # fmt: skip
    assert run_cli("audit", output, "--require", "rnn=layernorm-cell").exit_code == 0
    assert run_cli("audit", output, "--require", "rnn=layernorm").exit_code == 0
    refused = run_cli("audit", output, "--require", "dense=layernorm-cell")
    assert refused.exit_code == 2 and "rnn layers only" in refused.output


def test_add_then_strip_gives_the_original_back_bit_for_bit(fixture_name: str) -> None:
    original = keras.saving.load_model(FIXTURES / fixture_name)
    converted = normify.add(original, rnn="layernorm-cell", dense="none").model
    stripped = normify.strip(converted, kind="layernorm-cell")
    changes = stripped.report.changes
    assert changes and all(c.in_cell and not c.exact for c in changes)
    assert set(stripped.report.layer_drift) == {c.path for c in changes}
    assert stripped.report.drift is not None
    before, after = layers_by_path(original), layers_by_path(stripped.model)
    assert {p: type(layer).__name__ for p, layer in before.items()} == {
        p: type(layer).__name__ for p, layer in after.items()
    }
    for path, layer in before.items():
        assert _stock_variables(after[path]).keys() == _stock_variables(layer).keys()
        for key, value in _stock_variables(layer).items():
            np.testing.assert_array_equal(_stock_variables(after[path])[key], value)
    inputs = inputs_for(MANIFEST[fixture_name]["inputs"])
    for expected, got in zip(
        predict(original, inputs), predict(stripped.model, inputs), strict=True
    ):
        np.testing.assert_array_equal(got, expected)


def _every_recurrent_form() -> Any:
    tokens = keras.Input((9,), dtype="int32", name="tokens")
    x = layers.Embedding(30, 6, mask_zero=True)(tokens)
    x = layers.LSTM(5, return_sequences=True, name="lstm")(x)
    x = layers.GRU(4, return_sequences=True, reset_after=False, name="gru_v1")(x)
    x = layers.Bidirectional(
        layers.GRU(3, return_sequences=True),
        backward_layer=layers.GRU(3, return_sequences=True, go_backwards=True),
        name="bigru",
    )(x)
    x = layers.RNN(
        [layers.LSTMCell(4), layers.SimpleRNNCell(3)], return_sequences=True, name="stacked"
    )(x)
    sequence, state = layers.SimpleRNN(4, return_sequences=True, return_state=True,
                                       name="srnn")(x)  # fmt: skip
    pooled = layers.GlobalAveragePooling1D()(sequence)
    frames = keras.Input((3, 6, 2), name="frames")
    conv = layers.ConvLSTM1D(2, 3, name="convlstm")(frames)
    merged = layers.Concatenate()([pooled, state, layers.Flatten()(conv)])
    hidden = layers.Dense(4, activation="relu", name="hidden")(merged)
    model = keras.Model([tokens, frames], layers.Dense(2, name="out")(hidden))
    rng = np.random.default_rng(3)
    for variable in model.weights:
        variable.assign((rng.standard_normal(variable.shape) * 0.4).astype(variable.dtype))
    return model


def test_every_recurrent_form_is_converted_and_strips_back_exactly(tmp_path: Path) -> None:
    model = _every_recurrent_form()
    result = normify.add(model, rnn="layernorm-cell", dense="none", conv="none")
    converted = {i.path: i.norm_class for i in result.report.changes}
    assert converted == {
        "lstm": "LayerNormLSTM",
        "gru_v1": "LayerNormGRU",
        "bigru": "Bidirectional(LayerNormGRU)",
        "stacked": "RNN(LayerNormLSTMCell, LayerNormSimpleRNNCell)",
        "srnn": "LayerNormSimpleRNN",
    }
    skipped = {s.path: s.reason for s in result.report.kept}
    assert "ConvLSTM1D has no layer-normalized cell" in skipped["convlstm"]
    new_layers = layers_by_path(result.model)
    assert new_layers["gru_v1"].cell.reset_after is False
    assert new_layers["bigru"].backward_layer.go_backwards
    tokens = np.array([[3, 4, 5, 0, 0, 0, 0, 0, 0], [1, 2, 3, 4, 5, 6, 7, 8, 9]], "int32")
    frames = np.random.default_rng(0).standard_normal((2, 3, 6, 2)).astype("float32")
    outputs = result.model.predict([tokens, frames], verbose=0)
    assert np.all(np.isfinite(outputs))
    result.model.save(tmp_path / "converted.keras")
    reloaded = keras.saving.load_model(tmp_path / "converted.keras")
    np.testing.assert_allclose(reloaded.predict([tokens, frames], verbose=0), outputs, atol=1e-6)
    # a second run finds nothing left to convert
    again = normify.add(result.model, rnn="layernorm-cell", dense="none", conv="none")
    assert not again.report.changes
    reasons = {s.path: s.reason for s in again.report.kept}
    assert reasons["stacked"].startswith("already normalized in-cell (RNN(LayerNormLSTMCell")
    after_output = normify.plan(result.model, normify.Rules(rnn="layernorm", dense="none"))
    assert [i.path for i in after_output.changes] == ["convlstm"]  # in-cell ones skipped
    back = normify.strip(result.model)
    assert {c.path for c in back.report.changes} == set(converted)
    expected = model.predict([tokens, frames], verbose=0)
    np.testing.assert_array_equal(back.model.predict([tokens, frames], verbose=0), expected)


def test_masked_padding_does_not_change_the_converted_prediction() -> None:
    converted = normify.add(FIXTURES / "text_bilstm.keras", rnn="layernorm-cell").model
    short = np.array([[5, 6, 7, 8]], "int32")
    padded = np.concatenate([short, np.zeros((1, 16), "int32")], axis=1)
    sequence_model = keras.Model(converted.inputs, converted.get_layer("bidirectional").output)
    np.testing.assert_allclose(
        sequence_model.predict(padded, verbose=0), _unpadded(sequence_model, short), atol=1e-6
    )


def _unpadded(sequence_model: Any, short: np.ndarray) -> np.ndarray:
    """The same layers applied to the sequence without its padding."""
    inputs = keras.Input((short.shape[1],), dtype="int32")
    x = inputs
    for layer in sequence_model.layers[1:]:
        x = layer(x)
    return keras.Model(inputs, x).predict(short, verbose=0)


def test_dry_run_plan_from_the_file_equals_what_add_does() -> None:
    for name in RECURRENT_FIXTURES:
        rules = normify.Rules(rnn="layernorm-cell")
        planned = normify.plan(FIXTURES / name, rules)
        done = normify.add(FIXTURES / name, rnn="layernorm-cell")
        assert [i.to_json() for i in planned.changes] == [i.to_json() for i in done.report.changes]


def test_layernorm_cell_is_for_recurrent_layers_only() -> None:
    with pytest.raises(NormifyError, match="--dense must be one of"):
        normify.Rules(dense="layernorm-cell")


def test_calibrated_init_leaves_converted_cells_at_their_fresh_norms() -> None:
    model = _every_recurrent_form()
    tokens = np.random.default_rng(1).integers(0, 30, (16, 9)).astype("int32")
    frames = np.random.default_rng(2).standard_normal((16, 3, 6, 2)).astype("float32")
    result = normify.add(model, rnn="layernorm-cell", init="calibrate", data=[tokens, frames])
    [batchnorm] = [i for i in result.report.changes if i.norm == "batchnorm"]
    assert batchnorm.path == "hidden"
    moving_mean = own_variables(layers_by_path(result.model)[batchnorm.name])["moving_mean"]
    assert np.any(moving_mean != 0)  # calibrated from the data
    lstm = layers_by_path(result.model)["lstm"]
    for key, value in own_variables(lstm).items():
        if _is_norm_weight(key):
            np.testing.assert_array_equal(value, 0.0 if key.endswith("beta") else 1.0)
