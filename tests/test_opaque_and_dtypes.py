"""Models normify must not rewrite blindly: Functional subclasses (keras-hub backbones are
built this way), custom layers, mixed precision and int8-quantized layers."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import normify
from normify.errors import NormifyError

keras = pytest.importorskip("keras")
layers = keras.layers


@keras.saving.register_keras_serializable(package="normify_tests")
class TinyBackbone(keras.Model):
    """A Functional subclass whose config holds constructor arguments, like keras-hub's."""

    def __init__(self, width=8, **kwargs):
        inputs = keras.Input((6,), name="features")
        hidden = layers.Dense(width, activation="relu", name="hidden")(inputs)
        outputs = layers.Dense(width, name="projection")(hidden)
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self.width = width

    def get_config(self):
        return {"width": self.width, "name": self.name}


def test_functional_subclass_is_refused_with_a_clear_error(tmp_path):
    model = TinyBackbone(name="backbone")
    with pytest.raises(NormifyError, match="TinyBackbone.*Functional and Sequential"):
        normify.add(model)
    path = tmp_path / "backbone.keras"
    model.save(path)
    report = normify.audit(path)
    assert report.rows == []
    assert report.opaque[0]["class"] == "TinyBackbone"
    assert "constructor arguments" in report.opaque[0]["reason"]
    completed = subprocess.run(
        [sys.executable, "-m", "normify", "add", str(path)], capture_output=True, text=True
    )
    assert completed.returncode == 2
    assert "TinyBackbone" in completed.stderr and len(completed.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["backbone.keras"]


def test_nested_functional_subclass_is_left_alone_and_kept_on_reload(tmp_path):
    backbone = TinyBackbone(name="backbone")
    inputs = keras.Input((6,), name="x")
    head = layers.Dense(4, activation="relu", name="head")(backbone(inputs))
    model = keras.Model(inputs, layers.Dense(1, name="out")(head))
    result = normify.add(model)
    assert [i.path for i in result.report.changes] == ["head"]
    skipped = {s.path: s.reason for s in result.report.kept}
    assert "constructor arguments" in skipped["backbone"]
    path = tmp_path / "out.keras"
    result.model.save(path)
    reloaded = keras.saving.load_model(path)
    assert type(reloaded.get_layer("backbone")).__name__ == "TinyBackbone"
    x = np.random.default_rng(0).standard_normal((4, 6)).astype("float32")
    np.testing.assert_allclose(
        reloaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5
    )


def test_custom_layers_are_opaque_and_never_rewritten_inside():
    @keras.saving.register_keras_serializable(package="normify_tests")
    class Block(layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.inner = layers.Dense(4, activation="relu")

        def call(self, x):
            return self.inner(x)

    inputs = keras.Input((4,), name="x")
    x = Block(name="block")(inputs)
    x = layers.Dense(4, activation="relu", name="after")(x)
    model = keras.Model(inputs, layers.Dense(1, name="out")(x))
    audit = normify.audit(model)
    assert [part["path"] for part in audit.opaque] == ["block"]
    assert [row.path for row in audit.rows] == ["after", "out"]
    result = normify.add(model)
    assert [i.path for i in result.report.changes] == ["after"]
    assert "custom layer" in {s.path: s.reason for s in result.report.kept}["block"]


@pytest.mark.parametrize("policy", ["mixed_float16", "float16"])
def test_half_precision_inserts_use_the_layer_policy_and_predict_the_same(tmp_path, policy):
    """The layer keeps its bias (adding it after the layer's rounding would round twice),
    so the inserted identity computes `x * 1 + 0` and predictions keep every bit."""
    keras.mixed_precision.set_global_policy(policy)
    try:
        inputs = keras.Input((12, 3), name="x")
        conv = layers.Conv1D(16, 3, padding="causal", activation="relu", name="conv")(inputs)
        hidden = layers.Dense(16, activation="relu", name="hidden")(conv)
        pooled = layers.GlobalAveragePooling1D()(hidden)
        model = keras.Model(inputs, layers.Dense(2, dtype="float32", name="out")(pooled))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    rng = np.random.default_rng(0)
    for variable in model.weights:
        variable.assign(rng.normal(size=variable.shape).astype(variable.dtype))
    result = normify.add(model)
    norm = result.model.get_layer("hidden_bn")
    assert norm.dtype_policy.name == policy
    assert result.model.get_layer("conv").use_bias and result.model.get_layer("hidden").use_bias
    assert not any(change.bias_moved for change in result.report.changes)
    path = tmp_path / "mixed.keras"
    result.model.save(path)
    reloaded = keras.saving.load_model(path)
    x = rng.standard_normal((4, 12, 3)).astype("float32")
    np.testing.assert_array_equal(reloaded.predict(x, verbose=0), model.predict(x, verbose=0))


def test_int8_quantized_dense_is_skipped_with_a_reason(tmp_path):
    inputs = keras.Input((8,), name="x")
    hidden = layers.Dense(16, activation="relu", name="hidden")(inputs)
    plain = layers.Dense(16, activation="relu", name="plain")(hidden)
    model = keras.Model(inputs, layers.Dense(2, name="out")(plain))
    model.get_layer("hidden").quantize("int8")
    result = normify.add(model)
    skipped = {s.path: s.reason for s in result.report.kept}
    assert skipped["hidden"].startswith("quantized layer")
    assert [i.path for i in result.report.changes] == ["plain"]
    x = np.random.default_rng(0).standard_normal((4, 8)).astype("float32")
    np.testing.assert_allclose(
        result.model.predict(x, verbose=0), model.predict(x, verbose=0), rtol=0, atol=1e-5
    )
    path = tmp_path / "q.keras"
    result.model.save(path)
    keras.saving.load_model(path)
