"""`add` on architectures beyond the fixtures: wrappers with states, stacked cells, a
nested model called twice, dict inputs and outputs, attention blocks, masks, 3D
convolutions, Lambda layers, keras.applications models. Each must keep predictions and
save and reload."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import as_numpy, infer, max_relative_difference

import normify
from normify.drift import random_inputs

keras = pytest.importorskip("keras")
layers = keras.layers

TOLERANCE = 1e-5
ARCHITECTURES = {}


def architecture(build):
    ARCHITECTURES[build.__name__] = build
    return build


@architecture
def bidirectional_with_states():
    inputs = keras.Input((5, 4), name="s")
    sequence, forward_h, _, backward_h, _ = layers.Bidirectional(
        layers.LSTM(6, return_sequences=True, return_state=True), name="bi"
    )(inputs)
    hidden = layers.Dense(3, activation="relu", name="h")(layers.GlobalAveragePooling1D()(sequence))
    merged = layers.Concatenate()([hidden, forward_h, backward_h])
    return keras.Model(inputs, layers.Dense(2, name="out")(merged)), ["bi_bn", "h_bn"]


@architecture
def gru_without_reset_after_and_stacked_cells():
    inputs = keras.Input((5, 4), name="s")
    x = layers.GRU(6, reset_after=False, return_sequences=True, name="gru")(inputs)
    cells = layers.StackedRNNCells([layers.LSTMCell(5), layers.LSTMCell(4)])
    x = layers.RNN(cells, name="stacked")(x)
    return keras.Model(inputs, layers.Dense(1, name="out")(x)), ["gru_bn", "stacked_bn"]


@architecture
def nested_model_called_twice():
    tower = keras.Sequential(
        [
            keras.Input((4,)),
            layers.Dense(5, activation="relu", name="t1"),
            layers.Dense(3, name="t2"),
        ],
        name="tower",
    )
    a, b = keras.Input((4,), name="a"), keras.Input((4,), name="b")
    merged = layers.Concatenate()([tower(a), tower(b)])
    return keras.Model([a, b], layers.Dense(1, name="out")(merged)), ["tower/t1_bn", "tower/t2_bn"]


@architecture
def dict_inputs_and_outputs():
    a, b = keras.Input((4,), name="a"), keras.Input((3,), name="b")
    x = layers.Dense(5, activation="relu", name="h")(layers.Concatenate()([a, b]))
    return keras.Model({"a": a, "b": b}, {"out": layers.Dense(2, name="out")(x)}), ["h_bn"]


@architecture
def attention_block():
    tokens = keras.Input((6, 8), name="tok")
    attended = layers.MultiHeadAttention(2, 4, name="mha")(tokens, tokens)
    x = layers.LayerNormalization(name="ln1")(layers.Add()([tokens, attended]))
    f = layers.Dense(16, activation="gelu", name="ff1")(x)
    f = layers.Dense(8, name="ff2")(f)
    x = layers.LayerNormalization(name="ln2")(layers.Add()([x, f]))
    outputs = layers.Dense(2, name="out")(layers.GlobalAveragePooling1D()(x))
    return keras.Model(tokens, outputs), ["ff1_bn", "ff2_bn"]


@architecture
def masking_then_lstm_and_conv1d():
    inputs = keras.Input((7, 3), name="x")
    x = layers.LSTM(5, return_sequences=True, name="lstm")(layers.Masking()(inputs))
    x = layers.Conv1D(4, 3, activation="relu", name="conv")(x)
    return keras.Model(inputs, layers.Dense(1, name="out")(layers.Flatten()(x))), [
        "lstm_bn",
        "conv_bn",
    ]


@architecture
def conv3d_and_transpose():
    inputs = keras.Input((6, 6, 6, 2), name="vol")
    x = layers.Conv3D(4, 3, activation="relu", name="c3")(inputs)
    x = layers.Conv3DTranspose(3, 3, activation="relu", name="t3")(x)
    outputs = layers.Dense(1, name="out")(layers.GlobalAveragePooling3D()(x))
    return keras.Model(inputs, outputs), ["c3_bn", "t3_bn"]


@architecture
def convlstm1d_and_simple_rnn():
    inputs = keras.Input((4, 6, 2), name="x")
    x = layers.ConvLSTM1D(3, 3, return_sequences=True, name="clstm")(inputs)
    x = layers.SimpleRNN(4, name="srnn")(layers.Reshape((4, -1))(x))
    return keras.Model(inputs, layers.Dense(1, name="out")(x)), ["clstm_bn", "srnn_bn"]


@architecture
def lambda_layer():
    inputs = keras.Input((4,), name="x")
    x = layers.Dense(4, activation="relu", name="h")(inputs)
    x = layers.Lambda(lambda t: t * 2, name="double")(x)
    return keras.Model(inputs, layers.Dense(1, name="out")(x)), ["h_bn"]


def _feed(model, arrays):
    if isinstance(model._inputs_struct, dict):
        return {tensor.name: array for tensor, array in zip(model.inputs, arrays, strict=True)}
    return arrays[0] if len(arrays) == 1 else arrays


def _outputs(model, feed):
    outputs = model(feed, training=False)
    if isinstance(outputs, dict):
        outputs = [outputs[key] for key in sorted(outputs)]
    elif not isinstance(outputs, (list, tuple)):
        outputs = [outputs]
    return [as_numpy(output) for output in outputs]


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_architecture_is_rewritten_exactly_and_reloads(name, tmp_path):
    keras.utils.set_random_seed(1)
    model, expected_norms = ARCHITECTURES[name]()
    rng = np.random.default_rng(0)
    for variable in model.weights:
        variable.assign((rng.standard_normal(variable.shape) * 0.3).astype(variable.dtype))
    result = normify.add(model, rnn="batchnorm")
    assert [insertion.name for insertion in result.report.changes] == expected_norms
    feed = _feed(model, random_inputs(model))
    before = _outputs(model, feed)
    assert max_relative_difference(before, _outputs(result.model, feed)) <= TOLERANCE
    path = tmp_path / "out.keras"
    result.model.save(path)
    reloaded = keras.saving.load_model(path, safe_mode=False)
    assert max_relative_difference(before, _outputs(reloaded, feed)) <= TOLERANCE


def _he_initialize(model, seed=0):
    """Weights that keep activations of order 1 through a deep network, so a relative
    comparison means something (Keras' default init shrinks them to ~1e-12 here)."""
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        shape = tuple(variable.shape)
        if variable.path.endswith("kernel"):
            fan_in = (
                int(np.prod(shape[:-1]))
                if "depthwise" not in variable.path
                else int(np.prod(shape[:2]))
            )
            value = rng.standard_normal(shape) * np.sqrt(2.0 / max(fan_in, 1))
        elif variable.path.endswith(("bias", "beta", "moving_mean")):
            value = rng.standard_normal(shape) * 0.1
        elif variable.path.endswith(("gamma", "moving_variance")):
            value = rng.uniform(0.8, 1.2, shape)
        else:
            continue
        variable.assign(value.astype(variable.dtype))


@pytest.mark.parametrize("application", ["EfficientNetB0", "DenseNet121"])
def test_keras_applications_keep_predictions(application):
    keras.utils.set_random_seed(0)
    model = getattr(keras.applications, application)(weights=None, input_shape=(96, 96, 3))
    _he_initialize(model)
    result = normify.add(model, include_output=True)
    assert len(result.report.changes) > 1
    assert result.model.output_names == model.output_names
    feed = np.random.default_rng(0).standard_normal((2, 96, 96, 3)).astype("float32")
    # compare the pooled features (every inserted norm sits before them) and the logits
    features = "avg_pool"
    node = result.model.get_layer(features)._inbound_nodes[-1]
    before, before_probabilities = infer(
        keras.Model(model.inputs, [model.get_layer(features).output, *model.outputs]), feed
    )
    after, after_probabilities = infer(
        keras.Model(result.model.inputs, [node.output_tensors[0], *result.model.outputs]), feed
    )
    before, after = as_numpy(before), as_numpy(after)
    assert np.max(np.abs(before)) > 1e-3
    assert np.max(np.abs(before - after)) <= TOLERANCE * np.max(np.abs(before))
    probabilities = [as_numpy(before_probabilities), as_numpy(after_probabilities)]
    assert np.max(np.abs(probabilities[0] - probabilities[1])) <= TOLERANCE
