"""Folding BatchNormalization into the preceding linear layer, checked against real Keras layers.

Each case builds the layer and a BN on random input with random variables, folds with
`normify.folding`, loads the folded weights into a fresh copy of the layer (with a bias) and
compares its output with `bn(layer(x), training=False)`.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from helpers import as_numpy  # noqa: E402

from normify.folding import (  # noqa: E402
    BatchNormParams,
    FoldError,
    fold_batchnorm,
    fold_reason,
    folded_config,
)

L = keras.layers
CL, CF = "channels_last", "channels_first"


@dataclass(frozen=True)
class Case:
    name: str
    make: Callable[[bool], Any]  # use_bias -> an unbuilt layer
    shape: tuple[int, ...]  # input shape, batch included
    axis: int  # the BN axis: the layer's output channel axis
    ambiguous: bool = False  # see _bias_add_is_ambiguous

    def __str__(self) -> str:
        return self.name


def _conv_cases() -> list[Case]:
    spatial = {1: (9,), 2: (7, 8), 3: (5, 4, 5)}
    cases = []
    for rank, dims in spatial.items():
        for fmt in (CL, CF):
            shape = (2, *dims, 3) if fmt == CL else (2, 3, *dims)
            axis = -1 if fmt == CL else 1
            conv = getattr(L, f"Conv{rank}D")
            transpose = getattr(L, f"Conv{rank}DTranspose")
            cases.append(
                Case(f"Conv{rank}D-{fmt}", _maker(conv, 4, 3, data_format=fmt), shape, axis)
            )
            cases.append(
                Case(
                    f"Conv{rank}DTranspose-{fmt}",
                    _maker(transpose, 4, 3, strides=2, data_format=fmt),
                    shape,
                    axis,
                )
            )
    return cases


def _depthwise_cases() -> list[Case]:
    spatial = {1: (9,), 2: (7, 6)}
    cases = []
    for rank, dims in spatial.items():
        for fmt in (CL, CF):
            shape = (2, *dims, 3) if fmt == CL else (2, 3, *dims)
            axis = -1 if fmt == CL else 1
            depthwise = getattr(L, f"DepthwiseConv{rank}D")
            separable = getattr(L, f"SeparableConv{rank}D")
            for mult in (1, 3):
                make = _maker(depthwise, 3, depth_multiplier=mult, data_format=fmt)
                cases.append(Case(f"DepthwiseConv{rank}D-x{mult}-{fmt}", make, shape, axis))
            make = _maker(separable, 5, 3, depth_multiplier=2, data_format=fmt)
            cases.append(Case(f"SeparableConv{rank}D-x2-{fmt}", make, shape, axis))
    return cases


def _maker(cls: Any, *args: Any, **kwargs: Any) -> Callable[[bool], Any]:
    return lambda use_bias: cls(*args, use_bias=use_bias, **kwargs)


def _einsum(equation: str, output_shape: Any, bias_axes: str) -> Callable[[bool], Any]:
    return lambda use_bias: L.EinsumDense(
        equation, output_shape=output_shape, bias_axes=bias_axes if use_bias else None
    )


def _time_distributed(inner: Callable[[bool], Any]) -> Callable[[bool], Any]:
    return lambda use_bias: L.TimeDistributed(inner(use_bias))


CASES = [
    Case("Dense", _maker(L.Dense, 5), (4, 6), -1),
    Case("Dense-rank3", _maker(L.Dense, 5), (2, 3, 6), -1),
    *_conv_cases(),
    Case("Conv2D-groups2", _maker(L.Conv2D, 6, 3, groups=2), (2, 7, 6, 4), -1),
    Case(
        "Conv2D-groups2-channels_first",
        _maker(L.Conv2D, 6, 3, groups=2, data_format=CF),
        (2, 4, 7, 6),
        1,
    ),
    *_depthwise_cases(),
    Case("TimeDistributed-Dense", _time_distributed(_maker(L.Dense, 5)), (2, 3, 6), -1),
    Case(
        "TimeDistributed-Conv2D-channels_first",
        _time_distributed(_maker(L.Conv2D, 4, 3, data_format=CF)),
        (2, 3, 3, 7, 8),
        2,
    ),
    # Output width == channel count: Keras adds the bias on the wrong axis (see below).
    Case(
        "Conv2D-channels_first-width=filters",
        _maker(L.Conv2D, 4, 3, data_format=CF),
        (2, 3, 7, 6),
        1,
        ambiguous=True,
    ),
    Case(
        "SeparableConv2D-x2-channels_first-width=filters",
        _maker(L.SeparableConv2D, 5, 3, depth_multiplier=2, data_format=CF),
        (2, 3, 7, 7),
        1,
        ambiguous=True,
    ),
    Case(
        "TimeDistributed-Conv2D-channels_first-width=filters",
        _time_distributed(_maker(L.Conv2D, 4, 3, data_format=CF)),
        (2, 3, 3, 7, 6),
        2,
        ambiguous=True,
    ),
    Case("EinsumDense-ab,bc->ac", _einsum("ab,bc->ac", 5, "c"), (4, 6), -1),
    Case("EinsumDense-abc,cd->abd", _einsum("abc,cd->abd", (None, 5), "d"), (2, 3, 6), -1),
]


def _seed(*parts: object) -> int:
    return zlib.crc32(repr(parts).encode())


def _relative_weights(layer: Any) -> dict[str, Any]:
    """The layer's variables keyed by path relative to the layer, as normify keys them.

    A TimeDistributed made by `from_config` (or loaded from a file) builds its inner layer
    outside its own name scope, so the inner paths lack the wrapper's prefix: "dense/kernel"
    rather than "time_distributed/dense/kernel". Both spellings give the same key.
    """
    prefix = layer.name + "/"
    inner = f"{layer.layer.name}/" if isinstance(layer, L.TimeDistributed) else None
    found = {}
    for variable in layer.weights:
        key = variable.path.removeprefix(prefix)
        assert key.startswith(inner) if inner else "/" not in key, variable.path
        found[key] = variable
    return found


def _bias_add_is_ambiguous(shape: tuple[int, ...], axis: int) -> bool:
    """Whether Keras (TF backend) adds a channels_first bias on the wrong axis.

    Conv layers add a bias reshaped to (1, C, 1, ...) with `keras.ops.add`, which on
    TensorFlow turns any add of a "vector-like" tensor into `tf.nn.bias_add` and picks NHWC
    whenever the input's last dimension equals C, even though the bias was shaped for axis 1.
    Keras 3.15.1 / TF 2.21 on CPU; this is the channels_first "bias bug", not a oneDNN one.
    """
    return axis % len(shape) != len(shape) - 1 and shape[-1] == shape[axis]


def _output(layer: Any, x: np.ndarray, axis: int) -> np.ndarray:
    """layer(x), adding the bias by hand where Keras itself would add it on the wrong axis."""
    y = as_numpy(layer(x))
    weights = _relative_weights(layer)
    bias_key = _bias_key(layer)
    if not _bias_add_is_ambiguous(y.shape, axis) or bias_key not in weights:
        return y
    config = layer.get_config()
    inner = config["layer"]["config"] if isinstance(layer, L.TimeDistributed) else config
    inner["use_bias"] = False
    no_bias = type(layer).from_config(config)
    no_bias(x)
    for key, variable in _relative_weights(no_bias).items():
        variable.assign(weights[key])
    shape = [1] * y.ndim
    shape[axis] = y.shape[axis]
    return as_numpy(no_bias(x)) + as_numpy(weights[bias_key].numpy()).reshape(shape)


def _randomize(layer: Any, rng: np.random.Generator) -> None:
    for variable in layer.weights:
        variable.assign(rng.standard_normal(tuple(variable.shape)).astype("float32"))


def _randomize_bn(bn: Any, rng: np.random.Generator) -> BatchNormParams:
    """Random BN state far from the identity, so a wrong fold cannot pass by accident."""
    variables = _relative_weights(bn)
    (channels,) = variables["moving_mean"].shape
    values = {
        "gamma": rng.uniform(0.5, 1.5, channels),
        "beta": rng.choice([-1, 1], channels) * rng.uniform(0.3, 2.0, channels),
        "moving_mean": rng.choice([-1, 1], channels) * rng.uniform(0.3, 2.0, channels),
        "moving_variance": rng.uniform(0.1, 3.0, channels),
    }
    for key, variable in variables.items():
        variable.assign(values[key].astype("float32"))
    numpy = {key: as_numpy(variable.numpy()) for key, variable in variables.items()}
    config = bn.get_config()
    return BatchNormParams(
        gamma=numpy.get("gamma"),
        beta=numpy.get("beta"),
        moving_mean=numpy["moving_mean"],
        moving_variance=numpy["moving_variance"],
        epsilon=config["epsilon"],
        axis=config["axis"],
    )


def _check_fold(case: Case, use_bias: bool, **bn_options: Any) -> None:
    rng = np.random.default_rng(_seed(case.name, use_bias, sorted(bn_options.items())))
    x = rng.standard_normal(case.shape).astype("float32")
    layer = case.make(use_bias)
    bn = L.BatchNormalization(axis=case.axis, **bn_options)
    bn(layer(x))
    _randomize(layer, rng)
    params = _randomize_bn(bn, rng)
    reference = as_numpy(bn(_output(layer, x, case.axis), training=False))
    # Pin down which cases take the hand-added bias, so a shape edit cannot change it silently.
    assert _bias_add_is_ambiguous(reference.shape, case.axis) == case.ambiguous

    class_name = type(layer).__name__
    config = layer.get_config()
    assert fold_reason(class_name, config, params.axis) is None
    weights = {key: as_numpy(v.numpy()) for key, v in _relative_weights(layer).items()}
    folded = fold_batchnorm(class_name, config, weights, params)

    assert set(folded) == set(weights) | {_bias_key(layer)}
    for key, value in weights.items():
        assert folded[key].shape == value.shape and folded[key].dtype == value.dtype, key

    rebuilt = type(layer).from_config(folded_config(class_name, config))
    rebuilt(x)
    targets = _relative_weights(rebuilt)
    assert set(targets) == set(folded)
    for key, variable in targets.items():
        variable.assign(folded[key])
    result = _output(rebuilt, x, case.axis)

    scale = max(1.0, float(np.max(np.abs(reference))))
    assert result.shape == reference.shape
    assert float(np.max(np.abs(result - reference))) <= 1e-5 * scale


def _bias_key(layer: Any) -> str:
    if isinstance(layer, L.TimeDistributed):
        return f"{layer.layer.name}/bias"
    return "bias"


@pytest.mark.parametrize("use_bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("case", CASES, ids=str)
def test_fold_matches_keras(case: Case, use_bias: bool) -> None:
    _check_fold(case, use_bias)


BN_VARIANTS = [
    {"scale": False},
    {"center": False},
    {"scale": False, "center": False},
]
VARIANT_CASES = [c for c in CASES if c.name in ("Dense", "Conv2D-channels_first")]


@pytest.mark.parametrize("bn_options", BN_VARIANTS, ids=lambda o: "-".join(sorted(o)))
@pytest.mark.parametrize("case", VARIANT_CASES, ids=str)
def test_fold_without_gamma_or_beta(case: Case, bn_options: dict[str, bool]) -> None:
    _check_fold(case, use_bias=True, **bn_options)


# --- fold_reason: which BN axes fit which layer --------------------------------------------


def _config(layer: Any) -> tuple[str, dict]:
    return type(layer).__name__, layer.get_config()


ACCEPTED_AXES = [
    (L.Dense(3), -1),
    (L.EinsumDense("abc,cd->abd", output_shape=(None, 4), bias_axes="d"), -1),
    (L.Conv1D(2, 3), -1),
    (L.Conv1D(2, 3), 2),
    (L.Conv2D(2, 3), 3),
    (L.Conv3D(2, 3), 4),
    (L.Conv2D(2, 3, data_format=CF), 1),
    (L.Conv2D(2, 3, data_format=CF), -3),
    (L.Conv3DTranspose(2, 3, data_format=CF), -4),
    (L.DepthwiseConv2D(3), 3),
    (L.SeparableConv1D(2, 3, data_format=CF), -2),
    (L.TimeDistributed(L.Dense(3)), -1),
    (L.TimeDistributed(L.Conv2D(2, 3)), 4),
    (L.TimeDistributed(L.Conv2D(2, 3, data_format=CF)), 2),
    (L.TimeDistributed(L.Conv2D(2, 3, data_format=CF)), -3),
    (L.Conv2D(2, 3), [-1]),
]


@pytest.mark.parametrize(("layer", "axis"), ACCEPTED_AXES, ids=lambda v: str(v))
def test_fold_reason_accepts_channel_axis(layer: Any, axis: Any) -> None:
    assert fold_reason(*_config(layer), axis) is None


REJECTED = [
    (L.Dense(3), 1, "not the output channel axis"),
    (L.Dense(3), 2, "not the output channel axis"),
    (L.Conv2D(2, 3), 1, "not the output channel axis"),
    (L.Conv2D(2, 3, data_format=CF), -1, "not the output channel axis"),
    (L.Conv2D(2, 3, data_format=CF), 3, "not the output channel axis"),
    (L.TimeDistributed(L.Conv2D(2, 3, data_format=CF)), 1, "not the output channel axis"),
    (L.Conv2D(2, 3), [1, 2], "not a single axis"),
    (L.Conv2D(2, 3), [], "not a single axis"),
    (L.Dense(3, activation="relu"), -1, "activation 'relu'"),
    (L.TimeDistributed(L.Conv2D(2, 3, activation="tanh")), -1, "activation 'tanh'"),
    (L.LSTM(3), -1, "not a linear layer"),
    (L.BatchNormalization(), -1, "not a linear layer"),
    (L.EinsumDense("ab,cb->ac", output_shape=4, bias_axes="c"), -1, "kernel's last axis"),
    (L.EinsumDense("abc,dc->abd", output_shape=(None, 4)), -1, "kernel's last axis"),
    (L.EinsumDense("abc,cd->adb", output_shape=(4, None)), -1, "kernel's last axis"),
    (L.EinsumDense("abc,cd->abd", output_shape=(None, 4), bias_axes="bd"), -1, "bias_axes"),
    (L.EinsumDense("abc,cd->abd", output_shape=(None, 4)), 2, "not the output channel axis"),
]


@pytest.mark.parametrize(("layer", "axis", "why"), REJECTED, ids=lambda v: str(v))
def test_fold_reason_rejects(layer: Any, axis: Any, why: str) -> None:
    reason = fold_reason(*_config(layer), axis)
    assert reason is not None and why in reason


def test_fold_reason_rejects_quantized_and_lora() -> None:
    dense = L.Dense(3)
    dense.build((None, 4))
    dense.quantize("int8")
    assert "quantized" in fold_reason(*_config(dense), -1)
    lora = L.Dense(3, lora_rank=2)
    lora.build((None, 4))
    assert "LoRA" in fold_reason(*_config(lora), -1)


# --- fold_batchnorm on plain numpy ---------------------------------------------------------


def _bn(channels: int, axis: int = -1) -> BatchNormParams:
    rng = np.random.default_rng(0)
    return BatchNormParams(
        gamma=rng.uniform(0.5, 1.5, channels).astype("float32"),
        beta=rng.standard_normal(channels).astype("float32"),
        moving_mean=rng.standard_normal(channels).astype("float32"),
        moving_variance=rng.uniform(0.5, 2.0, channels).astype("float32"),
        epsilon=1e-3,
        axis=axis,
    )


def test_fold_keeps_dtype_and_shape_and_leaves_inputs_alone() -> None:
    kernel = np.arange(12, dtype="float16").reshape(3, 4)
    bias = np.ones(4, dtype="float16")
    weights = {"kernel": kernel, "bias": bias}
    folded = fold_batchnorm("Dense", L.Dense(4).get_config(), weights, _bn(4))
    assert folded["kernel"].dtype == np.float16 and folded["kernel"].shape == (3, 4)
    assert folded["bias"].dtype == np.float16 and folded["bias"].shape == (4,)
    np.testing.assert_array_equal(kernel, np.arange(12, dtype="float16").reshape(3, 4))
    np.testing.assert_array_equal(bias, np.ones(4, dtype="float16"))


def test_fold_adds_bias_in_kernel_dtype() -> None:
    weights = {"kernel": np.ones((3, 4), dtype="float16")}
    folded = fold_batchnorm("Dense", L.Dense(4, use_bias=False).get_config(), weights, _bn(4))
    assert folded["bias"].dtype == np.float16 and folded["bias"].shape == (4,)


def test_folded_config_gives_the_layer_a_bias() -> None:
    td = L.TimeDistributed(L.Conv2D(2, 3, use_bias=False))
    assert folded_config(*_config(td))["layer"]["config"]["use_bias"] is True
    assert td.get_config()["layer"]["config"]["use_bias"] is False
    einsum = L.EinsumDense("abc,cd->abd", output_shape=(None, 4))
    assert folded_config(*_config(einsum))["bias_axes"] == "d"


FOLD_ERRORS = [
    ("Dense", {"kernel": np.ones((3, 4))}, _bn(4, axis=0), "not the output channel axis"),
    ("Dense", {"kernel": np.ones((3, 4))}, _bn(5), "has 5 values but the layer has 4"),
    ("Dense", {"kernel": np.ones((3, 4)), "bias": np.ones(5)}, _bn(4), "bias has 5 values"),
    ("Dense", {"bias": np.ones(4)}, _bn(4), "lack kernel"),
    ("Dense", {"kernel": np.ones((3, 4)), "kernel_scale": np.ones(4)}, _bn(4), "unexpected"),
    ("SeparableConv2D", {"pointwise_kernel": np.ones((1, 1, 3, 4))}, _bn(4), "depthwise_kernel"),
]


@pytest.mark.parametrize(("class_name", "weights", "bn", "why"), FOLD_ERRORS, ids=lambda v: str(v))
def test_fold_batchnorm_raises(
    class_name: str, weights: dict[str, np.ndarray], bn: BatchNormParams, why: str
) -> None:
    config = {"activation": "linear", "data_format": CL}
    with pytest.raises(FoldError, match=why):
        fold_batchnorm(class_name, config, weights, bn)


def test_fold_error_is_value_error_and_rejects_bad_variance() -> None:
    bn = _bn(4)
    bad = BatchNormParams(
        bn.gamma, bn.beta, bn.moving_mean, -np.ones(4, dtype="float32"), bn.epsilon, bn.axis
    )
    with pytest.raises(ValueError, match="not positive"):
        fold_batchnorm("Dense", {"activation": None}, {"kernel": np.ones((3, 4))}, bad)
