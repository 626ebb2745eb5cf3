"""`normify.add` options and layer types, on small models built in the tests."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import FIXTURES
from helpers import as_numpy, layers_by_path, max_relative_difference, own_variables

import normify
from normify.errors import NormifyError
from normify.saving import save_model

keras = pytest.importorskip("keras")
layers = keras.layers

TOLERANCE = 1e-5


def _randomize(model, seed=0):
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        if "variance" in variable.path:
            variable.assign(rng.uniform(0.5, 1.5, variable.shape).astype(variable.dtype))
        else:
            variable.assign((rng.standard_normal(variable.shape) * 0.3).astype(variable.dtype))
    return model


def _drift(a, b, x):
    return max_relative_difference(
        [as_numpy(a.predict(x, verbose=0))], [as_numpy(b.predict(x, verbose=0))]
    )


def _mlp():
    inputs = keras.Input((6,), name="x")
    hidden = layers.Dense(8, activation="relu", name="hidden")(inputs)
    linear = layers.Dense(8, name="linear")(hidden)
    act = layers.Activation("tanh", name="tanh")(linear)
    outputs = layers.Dense(3, name="out")(act)
    return _randomize(keras.Model(inputs, outputs, name="mlp"))


def test_caller_model_is_not_modified_and_shares_nothing():
    model = _mlp()
    before_config = model.get_config()
    before_weights = [w.numpy().copy() for w in model.weights]
    result = normify.add(model)
    assert model.get_config() == before_config
    assert all(
        np.array_equal(a, b.numpy()) for a, b in zip(before_weights, model.weights, strict=True)
    )
    assert len(model.layers) == 5
    original_ids = {id(v) for v in model.weights}
    assert not original_ids & {id(v) for v in result.model.weights}
    assert not {id(layer) for layer in model.layers} & {id(layer) for layer in result.model.layers}
    # training the result leaves the caller's model alone
    result.model.get_layer("hidden").kernel.assign(np.zeros((6, 8), "float32"))
    assert np.array_equal(model.get_layer("hidden").kernel.numpy(), before_weights[0])


def test_linear_layer_followed_by_activation_layer_gets_the_norm_in_between():
    model = _mlp()
    result = normify.add(model)
    new = result.model
    assert [layer.name for layer in new.layers] == [
        "x", "hidden", "hidden_bn", "hidden_act", "linear", "linear_bn", "tanh", "out",
    ]  # fmt: skip
    x = np.random.default_rng(1).standard_normal((16, 6)).astype("float32")
    assert _drift(model, new, x) <= TOLERANCE


def test_position_post_puts_the_norm_after_the_activation():
    model = _mlp()
    result = normify.add(model, position="post")
    names = [layer.name for layer in result.model.layers]
    assert names == ["x", "hidden", "hidden_bn", "linear", "tanh", "linear_bn", "out"]
    positions = {i.path: i.position for i in result.report.changes}
    assert positions == {"hidden": "post-activation", "linear": "post-activation"}
    assert result.model.get_layer("hidden").use_bias  # nothing to move: bias stays
    audit = {row.path: row.position for row in normify.audit(result.model).rows}
    assert audit["hidden"] == audit["linear"] == "post-activation"
    x = np.random.default_rng(1).standard_normal((16, 6)).astype("float32")
    assert _drift(model, result.model, x) <= TOLERANCE


def test_include_exclude_and_include_output():
    model = _mlp()
    only_hidden = normify.add(model, include=["hid*"])
    assert [i.path for i in only_hidden.report.changes] == ["hidden"]
    reasons = {s.path: s.reason for s in only_hidden.report.kept}
    assert reasons["linear"] == "not selected by --include"
    assert reasons["out"] == "not selected by --include"

    excluded = normify.add(model, exclude=["linear"])
    assert [i.path for i in excluded.report.changes] == ["hidden"]
    assert {s.path: s.reason for s in excluded.report.kept}[
        "linear"
    ] == "excluded by --exclude linear"

    with_output = normify.add(model, include_output=True)
    assert [i.path for i in with_output.report.changes] == ["hidden", "linear", "out"]
    assert with_output.model.output_names == ["out"]
    assert with_output.model.get_layer("out_core").units == 3


def test_rule_none_skips_the_kind():
    result = normify.add(_mlp(), dense="none")
    assert result.report.changes == []
    assert all(s.reason == "rule for dense layers is none" for s in result.report.kept)


@pytest.mark.parametrize("norm,cls", [
    ("layernorm", "LayerNormalization"),
    ("groupnorm", "GroupNormalization"),
    ("rmsnorm", "RMSNormalization"),
])  # fmt: skip
def test_other_norms_are_inserted_and_their_drift_reported(norm, cls):
    inputs = keras.Input((8, 8, 3), name="image")
    x = layers.Conv2D(12, 3, activation="relu", name="conv")(inputs)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = layers.Dense(2, name="out")(x)
    model = _randomize(keras.Model(inputs, outputs))
    result = normify.add(model, conv=norm)
    inserted = result.model.get_layer(
        f"conv_{ {'layernorm': 'ln', 'groupnorm': 'gn', 'rmsnorm': 'rms'}[norm] }"
    )
    assert type(inserted).__name__ == cls
    assert result.model.get_layer("conv").use_bias  # only BatchNormalization takes the bias
    if norm == "groupnorm":
        assert inserted.groups == 12  # largest divisor of 12 channels that is <= 32
    drift = result.report.drift
    assert drift is not None and drift["max_abs"] > 0
    x = np.random.default_rng(0).standard_normal((8, 8, 8, 3)).astype("float32")
    independent = float(
        np.max(np.abs(model.predict(x, verbose=0) - result.model.predict(x, verbose=0)))
    )
    assert independent > 0
    assert any("cannot start as an identity" in notice for notice in result.report.notices)


def test_layernorm_after_recurrent_layers_reports_its_drift_exactly():
    path = FIXTURES / "text_bilstm.keras"
    result = normify.add(path)  # default: rnn=layernorm
    assert [(i.path, i.norm_class) for i in result.report.changes] == [
        ("bidirectional", "LayerNormalization"),
        ("dense", "BatchNormalization"),
    ]
    original = keras.saving.load_model(path)
    from normify.drift import predict, random_inputs

    x = random_inputs(original)
    expected = float(np.max(np.abs(predict(original, x)[0] - predict(result.model, x)[0])))
    assert result.report.drift["max_abs"] == pytest.approx(expected, rel=1e-6)
    assert result.report.drift["max_abs"] > 0


def test_conv_lstm_channels_first_norm_axis():
    inputs = keras.Input((4, 2, 6, 6), name="clip")
    seq = layers.ConvLSTM2D(3, 3, padding="same", data_format="channels_first",
                            return_sequences=True, name="seq")(inputs)  # fmt: skip
    last = layers.ConvLSTM2D(3, 3, padding="same", data_format="channels_first", name="last")(seq)
    outputs = layers.Dense(1, name="out")(layers.Flatten()(last))
    model = keras.Model(inputs, outputs)
    result = normify.add(model, rnn="batchnorm")
    axes = {i.path: i.axis for i in result.report.changes}
    assert axes == {"seq": 2, "last": 1}


def test_timedistributed_conv_channels_first_axis_and_wrappers():
    inputs = keras.Input((3, 2, 5, 5), name="frames")
    x = layers.TimeDistributed(
        layers.Conv2D(4, 3, activation="relu", data_format="channels_first"), name="td"
    )(inputs)
    x = layers.Flatten()(x)
    outputs = layers.Dense(2, name="out")(x)
    model = _randomize(keras.Model(inputs, outputs))
    result = normify.add(model)
    [insertion] = result.report.changes
    assert (insertion.path, insertion.axis, insertion.bias_moved) == ("td", 2, True)
    x = np.random.default_rng(0).standard_normal((4, 3, 2, 5, 5)).astype("float32")
    assert _drift(model, result.model, x) <= TOLERANCE


@pytest.mark.parametrize("layer", [
    layers.Conv1D(4, 3, activation="relu"),
    layers.SeparableConv1D(4, 3, activation="relu"),
    layers.DepthwiseConv1D(3, depth_multiplier=2, activation="relu"),
    layers.Conv1DTranspose(4, 3, activation="relu"),
    layers.EinsumDense("abc,cd->abd", output_shape=(7, 5), bias_axes="d", activation="relu"),
], ids=lambda layer: type(layer).__name__)  # fmt: skip
def test_every_linear_layer_type_is_split_exactly(layer):
    inputs = keras.Input((7, 3), name="seq")
    x = layer(inputs)
    outputs = layers.Dense(1, name="out")(layers.Flatten()(x))
    model = _randomize(keras.Model(inputs, outputs))
    result = normify.add(model)
    assert [i.bias_moved for i in result.report.changes] == [True]
    x = np.random.default_rng(0).standard_normal((4, 7, 3)).astype("float32")
    assert _drift(model, result.model, x) <= TOLERANCE
    new_layers = layers_by_path(result.model)
    bias = own_variables(layer)["bias"]
    assert np.array_equal(own_variables(new_layers[f"{layer.name}_bn"])["beta"], bias)


def test_sequential_in_memory_stays_sequential():
    model = _randomize(keras.Sequential([
        keras.Input((5,), name="features"),
        layers.Dense(4, activation="relu", name="a"),
        layers.Dropout(0.2, name="drop"),
        layers.Dense(2, name="b"),
    ], name="seq"))  # fmt: skip
    result = normify.add(model)
    assert type(result.model).__name__ == "Sequential"
    assert result.model.name == "seq"
    assert [layer.name for layer in result.model.layers] == ["a", "a_bn", "a_act", "drop", "b"]
    x = np.random.default_rng(0).standard_normal((4, 5)).astype("float32")
    assert _drift(model, result.model, x) <= TOLERANCE


def test_name_collisions_with_existing_layers_are_avoided():
    inputs = keras.Input((4,), name="x")
    hidden = layers.Dense(4, activation="relu", name="hidden")(inputs)
    trap = layers.Dropout(0.1, name="hidden_bn")(hidden)  # already uses the natural name
    outputs = layers.Dense(1, name="out")(trap)
    result = normify.add(keras.Model(inputs, outputs))
    assert [i.name for i in result.report.changes] == ["hidden_bn_1"]


def test_bad_rule_values_are_refused():
    with pytest.raises(NormifyError, match="--dense must be one of"):
        normify.add(_mlp(), dense="batchnormalization")
    with pytest.raises(NormifyError, match="position"):
        normify.add(_mlp(), position="middle")


def test_subclassed_model_is_refused_clearly():
    class Tiny(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = layers.Dense(2)

        def call(self, x):
            return self.dense(x)

    model = Tiny()
    model(np.zeros((1, 3), "float32"))
    with pytest.raises(NormifyError, match="Tiny.*Functional and Sequential"):
        normify.add(model)


def test_dry_run_plan_from_the_file_equals_what_add_does():
    for name in ("cnn.keras", "nested.keras", "seq2seq.keras", "shared_dense.keras"):
        planned = normify.plan(FIXTURES / name)
        done = normify.add(FIXTURES / name).report
        assert planned.changes == done.changes
        assert planned.kept == done.kept


def test_a_chain_deeper_than_the_recursion_limit_is_added_and_saved(tmp_path, monkeypatch):
    """Keras builds functional graphs recursively, about one Python call per chained layer,
    so a 1100-layer chain exceeds Python's default limit (1000). normify makes room around
    its Keras calls in proportion to the model. The same holds at any limit: a 200-layer
    chain under a limit of 450 shows it at a fraction of the cost, and the control run
    without that room fails, so the chain really is too deep."""
    import contextlib
    import sys

    from helpers import run_cli

    import normify.backend
    import normify.loading
    import normify.rebuild  # noqa: F401  (imported before the limit is lowered)
    import normify.saving

    depth, limit = 200, 450
    inputs = keras.Input((2,), name="x")
    x = inputs
    for _ in range(depth):
        x = layers.Dense(2)(x)
    model = keras.Model(inputs, x)
    path = tmp_path / "deep.keras"
    model.save(path)
    out = tmp_path / "deep.normified.keras"
    previous = sys.getrecursionlimit()
    try:
        sys.setrecursionlimit(limit)
        with monkeypatch.context() as no_room:
            for module in (normify.backend, normify.loading, normify.saving):
                no_room.setattr(module, "deep_recursion", lambda _layers: contextlib.nullcontext())
            control = run_cli("add", str(path), "-o", str(out))
        assert control.exit_code == 2 and "maximum recursion depth" in control.output
        result = run_cli("add", str(path), "-o", str(out))
        assert sys.getrecursionlimit() == limit  # raised for the Keras calls only
    finally:
        sys.setrecursionlimit(previous)
    assert result.exit_code == 0, result.output
    assert f"{depth - 1} norm layer(s) inserted" in result.output
    x_data = np.random.default_rng(0).standard_normal((4, 2)).astype("float32")
    rewritten = keras.saving.load_model(out)
    assert len(rewritten.layers) == 1 + depth + (depth - 1)  # input, Dense, inserted BN
    np.testing.assert_allclose(
        rewritten.predict(x_data, verbose=0), model.predict(x_data, verbose=0), rtol=1e-5, atol=1e-6
    )


def _with_unregistered_loss(source, target):
    """A copy of a compiled `.keras` file whose loss is a function nobody registered, as
    files saved from a notebook that defined its own loss are."""
    import json
    import zipfile

    with zipfile.ZipFile(source) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    config = json.loads(members["config.json"])
    config["compile_config"]["loss"] = {
        "module": "builtins",
        "class_name": "function",
        "config": "Custom>stock_return_loss",
        "registered_name": "function",
    }
    members["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(target, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)


@pytest.mark.parametrize("command", ["add", "strip"])
def test_an_unregistered_loss_loses_the_training_config_not_the_model(tmp_path, command):
    """Keras refuses the whole file for it; the layers need no loss, so the rewrite goes on
    uncompiled and says which name to register to keep it."""
    model = _randomize(_mlp())
    model.compile(optimizer="adam", loss="mse")
    model.save(tmp_path / "compiled.keras")
    path = tmp_path / "custom_loss.keras"
    _with_unregistered_loss(tmp_path / "compiled.keras", path)
    with pytest.raises(Exception, match="stock_return_loss"):
        keras.saving.load_model(path)
    result = getattr(normify, command)(path)
    notice = (
        "the training configuration could not be restored (it uses "
        "'Custom>stock_return_loss', which is not registered: pass --custom-objects"
    )
    assert any(n.startswith(notice) for n in result.report.notices), result.report.notices
    assert not result.model.compiled
    x = np.random.default_rng(0).normal(size=(4, 6)).astype("float32")
    if command == "add":
        assert _drift(model, result.model, x) <= TOLERANCE
    written = save_model(result.model, tmp_path / "out.keras")
    reloaded = keras.saving.load_model(written)
    np.testing.assert_array_equal(
        as_numpy(reloaded.predict(x, verbose=0)), as_numpy(result.model.predict(x, verbose=0))
    )
