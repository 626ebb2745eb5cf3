"""`normify.fold` and `normify.strip`, checked against independent computations.

Predictions are compared with a stated tolerance relative to the largest absolute value of
the compared tensor; weights are compared bit for bit (or, for folded weights, against the
fold formula computed here with numpy from the original weights).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from typing import Any

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from conftest import FIXTURES, MANIFEST  # noqa: E402
from helpers import (  # noqa: E402
    as_numpy,
    infer,
    inputs_for,
    is_model,
    layers_by_path,
    max_relative_difference,
    own_variables,
    predict,
)

import normify  # noqa: E402
from normify.drift import random_inputs  # noqa: E402
from normify.passes.strip import _is_split_activation_name  # noqa: E402

L = keras.layers
NORM_CLASSES = (
    "BatchNormalization",
    "LayerNormalization",
    "GroupNormalization",
    "RMSNormalization",
    "UnitNormalization",
)
FOLD_TOLERANCE = 1e-5  # relative to the largest absolute value of the compared tensor
ROUND_TRIP_TOLERANCE = 1e-6  # strip after add, relative to max(1, max |output|)


# ----------------------------------------------------------------------------- helpers


def relative(before: np.ndarray, after: np.ndarray) -> float:
    """Max abs difference over the largest absolute value of `before`."""
    before, after = as_numpy(before, np.float64), as_numpy(after, np.float64)
    assert before.shape == after.shape
    scale = float(np.max(np.abs(before)))
    assert np.all(np.isfinite(before)) and scale > 0
    return float(np.max(np.abs(before - after))) / scale


def call(model: Any, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """Eager inference call (the path `normify`'s own drift uses too)."""
    outputs = model(inputs[0] if len(inputs) == 1 else inputs, training=False)
    if isinstance(outputs, dict):
        return [as_numpy(outputs[key]) for key in sorted(outputs)]
    if isinstance(outputs, (list, tuple)):
        return [as_numpy(output) for output in outputs]
    return [as_numpy(outputs)]


def classes_by_path(model: Any) -> dict[str, str]:
    return {path: type(layer).__name__ for path, layer in layers_by_path(model).items()}


def norm_paths(model: Any, classes: tuple[str, ...] = NORM_CLASSES) -> set[str]:
    return {path for path, name in classes_by_path(model).items() if name in classes}


def output_names(model: Any) -> list[str]:
    return [tensor._keras_history[0].name for tensor in model.outputs]


def input_names(model: Any) -> list[str]:
    return [tensor._keras_history[0].name for tensor in model.inputs]


def assert_bit_exact(before: Any, after: Any, label: str) -> None:
    a, b = own_variables(before), own_variables(after)
    assert set(a) == set(b), f"{label}: variables {sorted(a)} became {sorted(b)}"
    for key in a:
        assert a[key].dtype == b[key].dtype and a[key].shape == b[key].shape, f"{label}/{key}"
        assert a[key].tobytes() == b[key].tobytes(), f"{label}/{key} is not bit for bit"


def randomize(model: Any, seed: int) -> None:
    """Non-trivial weights: kernels ~ N(0, 1/fan_in), biases, betas and moving means
    ~ N(0, 0.3), moving variances ~ U(0.5, 1.5), gammas ~ U(0.8, 1.2)."""
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        name, shape = variable.path.rsplit("/", 1)[-1], tuple(variable.shape)
        if name in ("bias", "beta", "moving_mean"):
            value = rng.normal(size=shape) * 0.3
        elif name == "moving_variance":
            value = rng.uniform(0.5, 1.5, size=shape)
        elif name == "gamma":
            value = rng.uniform(0.8, 1.2, size=shape)
        elif name.endswith("kernel"):
            fan_in = np.prod(shape[:-2] if name == "depthwise_kernel" else shape[:-1])
            value = rng.normal(size=shape) / np.sqrt(fan_in)
        else:
            raise AssertionError(f"unexpected variable {variable.path}")
        variable.assign(value.astype("float32"))


def expected_fold(layer: Any, batchnorm: Any) -> dict[str, np.ndarray]:
    """W' = W * gamma / sqrt(var + eps) per output channel and
    b' = (b - mean) * gamma / sqrt(var + eps) + beta, in float64, from the original layers."""
    bn = own_variables(batchnorm)
    # TimeDistributed keys its variables `<inner>/kernel`: fold into the wrapped layer
    weights = {key.rsplit("/", 1)[-1]: value for key, value in own_variables(layer).items()}
    layer = getattr(layer, "layer", layer)
    variance = bn["moving_variance"].astype(np.float64)
    gamma = bn.get("gamma", np.ones_like(variance)).astype(np.float64)
    beta = bn.get("beta", np.zeros_like(variance)).astype(np.float64)
    scale = gamma / np.sqrt(variance + float(batchnorm.epsilon))
    cls = type(layer).__name__
    key = "pointwise_kernel" if cls.startswith("Separable") else "kernel"
    kernel = weights[key].astype(np.float64)
    if cls.endswith("Transpose"):  # (k..., out, in)
        kernel = kernel * scale[:, None]
    elif cls.startswith("Depthwise"):  # (k..., in, multiplier): channel = in * mult + m
        kernel = kernel * scale.reshape(kernel.shape[-2], kernel.shape[-1])
    else:  # (..., out)
        kernel = kernel * scale
    bias = weights.get("bias", np.zeros_like(variance)).astype(np.float64)
    mean = bn["moving_mean"].astype(np.float64)
    return {key: kernel, "bias": (bias - mean) * scale + beta}


def folded(report: Any) -> dict[str, str]:
    return {change.path: change.into for change in report.changes}


def kept(report: Any) -> dict[str, str]:
    return {entry.path: entry.reason for entry in report.kept}


# ------------------------------------------------------------------ fold on fixtures

RELU_CONV2D_1 = ("relu activation", "conv2d_1")
CONV_BN_FOLDS = {
    "batch_normalization": "conv2d",
    "batch_normalization_1": "depthwise_conv2d",
    "batch_normalization_2": "separable_conv2d",
    "batch_normalization_3": "conv2d_transpose",
    "batch_normalization_5": "dense",
}
# fixture -> (expected folds, expected kept: path -> words its reason contains)
FIXTURE_FOLDS = {
    "conv_bn.keras": (CONV_BN_FOLDS, {"batch_normalization_4": RELU_CONV2D_1}),
    "conv_bn_channels_first.keras": (
        {k: v for k, v in CONV_BN_FOLDS.items() if k != "batch_normalization_1"},
        {
            # depthwise_conv2d outputs 12 channels of width 12 (asserted below)
            "batch_normalization_1": ("depthwise_conv2d", "channels_first", "width"),
            "batch_normalization_4": RELU_CONV2D_1,
        },
    ),
    "partial_bn_cnn.keras": (
        {"batch_normalization": "conv2d"},
        {"batch_normalization_1": RELU_CONV2D_1},
    ),
}


@pytest.fixture(scope="module", params=sorted(FIXTURE_FOLDS))
def fixture_fold(request):
    name = request.param
    original = keras.saving.load_model(FIXTURES / name)
    result = normify.fold(FIXTURES / name)
    return name, original, result


def test_fold_fixture_reports_the_right_folds_and_reasons(fixture_fold):
    name, original, result = fixture_fold
    expected_folds, expected_kept = FIXTURE_FOLDS[name]
    assert result.report.command == "fold"
    assert folded(result.report) == expected_folds
    reasons = kept(result.report)
    assert set(reasons) == set(expected_kept)
    for path, words in expected_kept.items():
        assert all(word in reasons[path] for word in words), (path, reasons[path])
    assert result.report.drift is not None and result.report.drift["relative"] < FOLD_TOLERANCE
    # the plan read from the config alone lists the same folds and kept layers
    plan = normify.api.plan_fold(FIXTURES / name)
    assert [c.to_json() for c in plan.changes] == [c.to_json() for c in result.report.changes]
    assert [k.to_json() for k in plan.kept] == [k.to_json() for k in result.report.kept]
    if name == "conv_bn_channels_first.keras":
        # the kept reason is real: the depthwise output's width equals its channel count
        shape = original.get_layer("depthwise_conv2d").output.shape
        assert shape[1] == shape[-1] == 12


def test_fold_fixture_removes_exactly_the_folded_batchnorms(fixture_fold):
    name, original, result = fixture_fold
    before, after = classes_by_path(original), classes_by_path(result.model)
    removed = set(folded(result.report))
    assert set(before) - set(after) == removed
    assert set(after) <= set(before)
    assert all(before[path] == "BatchNormalization" for path in removed)
    assert norm_paths(result.model, ("BatchNormalization",)) == set(kept(result.report))
    for into in folded(result.report).values():
        layer = result.model.get_layer(into)
        assert layer.get_config()["use_bias"] is True
        assert "bias" in own_variables(layer)


def test_fold_fixture_weights_follow_the_fold_formula_and_untouched_are_bit_exact(
    fixture_fold,
):
    name, original, result = fixture_fold
    folds = folded(result.report)
    new = layers_by_path(result.model)
    for path, layer in layers_by_path(original).items():
        if path in folds:
            continue
        if path in folds.values():
            batchnorm = original.get_layer([k for k, v in folds.items() if v == path][0])
            expected = expected_fold(layer, batchnorm)
            got = own_variables(new[path])
            for key, value in expected.items():
                assert got[key].dtype == np.float32
                np.testing.assert_allclose(got[key], value, rtol=1e-6, err_msg=f"{path}/{key}")
            # the depthwise half of a separable conv is not touched by the fold
            for key in set(own_variables(layer)) - set(expected):
                assert got[key].tobytes() == own_variables(layer)[key].tobytes(), key
        else:
            assert_bit_exact(layer, new[path], path)


def _head_input(model: Any) -> Any:
    """The tensor the output layer reads in `model` (not `layer.input`: a layer normify
    reused from the loaded model has a node in that model's graph too)."""
    layer, node_index, _ = model.outputs[0]._keras_history
    assert layer.name == "dense_1"
    return layer._inbound_nodes[node_index].input_tensors[0]


def test_fold_fixture_keeps_predictions(fixture_fold):
    name, original, result = fixture_fold
    inputs = inputs_for(MANIFEST[name]["inputs"], batch=16)
    # every fixture ends in Dense `dense_1` with a softmax: compare its input features
    # and the logits computed here from them, then the probabilities
    head = original.get_layer("dense_1")
    assert head.get_config()["activation"] == "softmax"
    assert_bit_exact(head, result.model.get_layer("dense_1"), "dense_1")
    features = []
    for model in (original, result.model):
        body = keras.Model(model.inputs, _head_input(model))
        features.append(predict(body, inputs)[0].astype(np.float64))
    assert relative(features[0], features[1]) <= FOLD_TOLERANCE
    weights = own_variables(head)
    logits = [f @ weights["kernel"].astype(np.float64) + weights["bias"] for f in features]
    assert relative(logits[0], logits[1]) <= FOLD_TOLERANCE
    probabilities = [predict(model, inputs)[0] for model in (original, result.model)]
    np.testing.assert_allclose(probabilities[1], probabilities[0], rtol=0, atol=1e-6)


# --------------------------------------------------------------- fold on built models


def _image(shape):
    return keras.Input(shape, name="x")


def _after_add():
    x = _image((8, 8, 3))
    added = L.Add()([L.Conv2D(4, 3, padding="same")(x), L.Conv2D(4, 1)(x)])
    y = L.BatchNormalization(name="bn")(added)
    return keras.Model(x, L.Dense(3)(L.Flatten()(y)))


def _after_relu():
    x = _image((8, 8, 3))
    y = L.BatchNormalization(name="bn")(L.Conv2D(4, 3, activation="relu", name="conv")(x))
    return keras.Model(x, L.Dense(3)(L.Flatten()(y)))


def _shared_batchnorm():
    x = _image((6,))
    bn = L.BatchNormalization(name="bn")
    both = L.Concatenate()([bn(L.Dense(5, name="a")(x)), bn(L.Dense(5, name="b")(x))])
    return keras.Model(x, L.Dense(3)(both))


def _single(shape, layer, axis=-1):
    def build():
        x = _image(shape)
        y = L.BatchNormalization(axis=axis, name="bn")(layer()(x))
        return keras.Model(x, L.Dense(3)(L.Flatten()(y)))

    return build


def _nested():
    inner_input = keras.Input((6,))
    inner_output = L.ReLU()(L.BatchNormalization(name="bn")(L.Dense(4, name="lin")(inner_input)))
    inner = keras.Model(inner_input, inner_output, name="inner")
    x = _image((6,))
    return keras.Model(x, L.Dense(3)(inner(x)))


def _no_center_no_scale():
    x = _image((6,))
    y = L.BatchNormalization(center=False, scale=False, name="bn")(L.Dense(5, name="lin")(x))
    return keras.Model(x, L.Dense(3)(y))


CF = "channels_first"
# name -> (builder, expected folds, expected kept: path -> words its reason contains)
BUILT = {
    "after-add": (_after_add, {}, {"bn": ("follows Add",)}),
    "after-relu": (_after_relu, {}, {"bn": ("relu activation", "conv")}),
    "shared-batchnorm": (_shared_batchnorm, {}, {"bn": ("shared",)}),
    "Conv1D": (_single((10, 3), lambda: L.Conv1D(4, 3, name="lin")), {"bn": "lin"}, {}),
    "Conv3D-no-bias": (
        _single((5, 6, 7, 2), lambda: L.Conv3D(3, 2, use_bias=False, name="lin")),
        {"bn": "lin"},
        {},
    ),
    "Conv3DTranspose": (
        _single((3, 4, 5, 2), lambda: L.Conv3DTranspose(3, 2, strides=2, name="lin")),
        {"bn": "lin"},
        {},
    ),
    "DepthwiseConv1D": (
        _single((10, 3), lambda: L.DepthwiseConv1D(3, depth_multiplier=2, name="lin")),
        {"bn": "lin"},
        {},
    ),
    "SeparableConv1D": (
        _single((10, 3), lambda: L.SeparableConv1D(4, 3, depth_multiplier=2, name="lin")),
        {"bn": "lin"},
        {},
    ),
    "TimeDistributed-Conv2D": (
        _single((4, 8, 7, 3), lambda: L.TimeDistributed(L.Conv2D(5, 3), name="lin")),
        {"bn": "lin"},
        {},
    ),
    "TimeDistributed-Conv2D-channels_first": (
        _single(
            (4, 3, 9, 8),
            lambda: L.TimeDistributed(L.Conv2D(5, 3, data_format=CF), name="lin"),
            axis=2,
        ),
        {"bn": "lin"},
        {},
    ),
    "Conv2D-channels_first-width=channels": (
        _single((3, 9, 4), lambda: L.Conv2D(4, 3, padding="same", data_format=CF, name="lin"), 1),
        {},
        {"bn": ("channels_first", "width")},
    ),
    "nested-model": (_nested, {"inner/bn": "inner/lin"}, {}),
    "no-center-no-scale": (_no_center_no_scale, {"bn": "lin"}, {}),
}


@pytest.mark.parametrize("case", sorted(BUILT))
def test_fold_built_model(case):
    build, expected_folds, expected_kept = BUILT[case]
    keras.utils.set_random_seed(0)
    model = build()
    randomize(model, seed=sorted(BUILT).index(case))
    snapshot = {id(v): np.array(v.numpy()) for v in model.weights}
    result = normify.fold(model)

    assert folded(result.report) == expected_folds
    reasons = kept(result.report)
    assert set(reasons) == set(expected_kept)
    for path, words in expected_kept.items():
        assert all(word in reasons[path] for word in words), (path, reasons[path])
    assert norm_paths(result.model) == set(reasons)

    inputs = [np.random.default_rng(1).standard_normal((6, *model.input_shape[1:]))]
    inputs = [inputs[0].astype("float32")]
    assert relative(call(model, inputs)[0], call(result.model, inputs)[0]) <= FOLD_TOLERANCE

    new = layers_by_path(result.model)
    for path, layer in layers_by_path(model).items():
        if path in expected_folds or is_model(layer):
            continue
        if path in expected_folds.values():
            bn_path = [k for k, v in expected_folds.items() if v == path][0]
            expected = expected_fold(layer, layers_by_path(model)[bn_path])
            got = {k.rsplit("/", 1)[-1]: v for k, v in own_variables(new[path]).items()}
            for key, value in expected.items():
                np.testing.assert_allclose(got[key], value, rtol=1e-6, err_msg=f"{path}/{key}")
        else:
            assert_bit_exact(layer, new[path], path)

    # the caller's model is left as it was and shares no variable with the result
    assert all(v.numpy().tobytes() == snapshot[id(v)].tobytes() for v in model.weights)
    assert not {id(v) for v in model.weights} & {id(v) for v in result.model.weights}


def test_shared_linear_layer_and_shared_batchnorm_fold_together():
    """What `add` builds for a shared layer: one Dense and one BN, called on two inputs."""
    left, right = keras.Input((6,), name="left"), keras.Input((6,), name="right")
    dense, bn = L.Dense(5, name="shared"), L.BatchNormalization(name="bn")
    out = L.Dense(2)(L.Concatenate()([bn(dense(left)), bn(dense(right))]))
    model = keras.Model([left, right], out)
    randomize(model, seed=3)
    result = normify.fold(model)
    assert folded(result.report) == {"bn": "shared"} and not result.report.kept
    rng = np.random.default_rng(2)
    inputs = [rng.standard_normal((5, 6)).astype("float32") for _ in range(2)]
    assert relative(call(model, inputs)[0], call(result.model, inputs)[0]) <= FOLD_TOLERANCE


def test_fold_dense_then_batchnorm_with_positive_axis():
    x = keras.Input((6,))
    model = keras.Model(
        x, L.Dense(3)(L.BatchNormalization(axis=1, name="bn")(L.Dense(5, name="lin")(x)))
    )
    randomize(model, seed=4)
    result = normify.fold(model)
    assert folded(result.report) == {"bn": "lin"}


def test_fold_channels_first_with_unknown_width_keeps_predictions():
    """Folding is refused: with a width unknown until run time, Keras may add the bias on
    the width axis (when the width equals the channel count)."""
    x = keras.Input((3, None, None))
    conv = L.Conv2D(4, 3, padding="same", use_bias=False, data_format=CF, name="lin")
    y = L.BatchNormalization(axis=1, name="bn")(conv(x))
    model = keras.Model(x, L.GlobalAveragePooling2D(data_format=CF)(y))
    randomize(model, seed=5)
    result = normify.fold(model)
    rng = np.random.default_rng(3)
    for height, width in [(5, 7), (6, 4)]:  # width 4 == 4 channels in the second case
        inputs = [rng.standard_normal((2, 3, height, width)).astype("float32")]
        drift = relative(call(model, inputs)[0], call(result.model, inputs)[0])
        assert drift <= FOLD_TOLERANCE, (height, width, drift)


def test_fold_batchnorm_that_receives_a_mask():
    tokens = keras.Input((7,), dtype="int32")
    x = L.Embedding(20, 4, mask_zero=True)(tokens)
    x = L.BatchNormalization(name="bn")(L.TimeDistributed(L.Dense(5), name="lin")(x))
    model = keras.Model(tokens, L.Dense(2)(L.GlobalAveragePooling1D()(x)))
    result = normify.fold(model)
    assert folded(result.report) == {"bn": "lin"}, kept(result.report)


# --------------------------------------------------------------- keras.applications


def _training_pass(model: Any, images: np.ndarray) -> None:
    """One training-mode call, for the moving statistics it sets. On JAX compiled whole,
    as `helpers.infer` does for inference: an eager call compiles op by op."""
    if keras.backend.backend() != "jax":
        model(images, training=True)
        return
    import jax

    trainable = [variable.value for variable in model.trainable_variables]
    non_trainable = [variable.value for variable in model.non_trainable_variables]

    def call(trainable: Any, non_trainable: Any, images: Any) -> Any:
        return model.stateless_call(trainable, non_trainable, images, training=True)[1]

    updated = jax.jit(call)(trainable, non_trainable, images)
    for variable, value in zip(model.non_trainable_variables, updated, strict=True):
        variable.assign(value)


def _realistic_weights(model: Any, images: np.ndarray, seed: int) -> None:
    """He-normal kernels, gamma ~ U(0.8, 1.2), beta and biases ~ N(0, 0.1); the moving
    statistics are the batch statistics of `images` (one training-mode pass with momentum
    0) perturbed (mean + N(0, 0.1) * std, variance * U(0.5, 1.5)), so activations stay
    bounded instead of growing through 50 layers of uncalibrated statistics."""
    rng = np.random.default_rng(seed)
    norms = [layer for layer in model.layers if isinstance(layer, L.BatchNormalization)]
    for variable in model.weights:
        name, shape = variable.path.rsplit("/", 1)[-1], tuple(variable.shape)
        if name in ("moving_mean", "moving_variance"):
            continue
        if name == "gamma":
            value = rng.uniform(0.8, 1.2, size=shape)
        elif name in ("beta", "bias"):
            value = rng.normal(size=shape) * 0.1
        elif name.endswith("kernel"):
            fan_in = np.prod(shape[:-2] if name == "depthwise_kernel" else shape[:-1])
            value = rng.normal(size=shape) * np.sqrt(2.0 / fan_in)
        else:
            raise AssertionError(f"unexpected variable {variable.path}")
        variable.assign(value.astype("float32"))
    for layer in norms:
        layer.momentum = 0.0
    _training_pass(model, images)
    for layer in norms:
        layer.momentum = 0.99
        mean, variance = layer.moving_mean.numpy(), layer.moving_variance.numpy()
        noise = rng.normal(size=mean.shape) * 0.1 * np.sqrt(variance)
        layer.moving_mean.assign((mean + noise).astype("float32"))
        layer.moving_variance.assign((variance * rng.uniform(0.5, 1.5, mean.shape)).astype("f4"))


APPLICATIONS = {"ResNet50": (64, 64, 3), "MobileNetV2": (64, 64, 3), "Xception": (71, 71, 3)}
APPLICATION_TOLERANCE = 1e-4  # relative to the largest |global pooling output|


@pytest.fixture(scope="module")
def applications(tmp_path_factory):
    folder = tmp_path_factory.mktemp("applications")
    built = {}
    for index, (name, shape) in enumerate(APPLICATIONS.items()):
        keras.utils.set_random_seed(index)
        model = getattr(keras.applications, name)(
            weights=None, include_top=False, pooling="avg", input_shape=shape
        )
        rng = np.random.default_rng(index)
        _realistic_weights(model, rng.standard_normal((16, *shape)).astype("float32"), index)
        result = normify.fold(model)
        images = rng.standard_normal((4, *shape)).astype("float32")
        path = folder / f"{name}.folded.keras"
        result.model.save(path)
        np.save(folder / f"{name}.npy", images)
        built[name] = (model, result, images, path)
    return folder, built


@pytest.mark.parametrize("name", sorted(APPLICATIONS))
def test_keras_application_fold_keeps_pooled_features(applications, name):
    _, built = applications
    model, result, images, _ = built[name]
    before, after = as_numpy(infer(model, images)), as_numpy(infer(result.model, images))
    assert np.all(np.isfinite(before)) and float(np.std(before)) > 0
    assert relative(before, after) <= APPLICATION_TOLERANCE
    count = sum(isinstance(layer, L.BatchNormalization) for layer in model.layers)
    left = sum(isinstance(layer, L.BatchNormalization) for layer in result.model.layers)
    assert left == len(result.report.kept)
    assert len(result.report.changes) == count - left and count > 30


def test_folded_applications_reload_in_a_fresh_process(applications):
    folder, built = applications
    script = textwrap.dedent(
        """
        import json, sys
        import numpy as np
        import keras
        folder = sys.argv[1]
        outputs = {}
        for name in json.loads(sys.argv[2]):
            model = keras.saving.load_model(f"{folder}/{name}.folded.keras")
            images = np.load(f"{folder}/{name}.npy")
            outputs[name] = keras.ops.convert_to_numpy(model(images, training=False))
            outputs[name + "_bn"] = np.array(
                sum(type(layer).__name__ == "BatchNormalization" for layer in model.layers)
            )
        assert not any(module.startswith("normify") for module in sys.modules)
        np.savez(f"{folder}/reloaded.npz", **outputs)
        """
    )
    completed = subprocess.run(
        [sys.executable, "-c", script, str(folder), json.dumps(sorted(built))],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    reloaded = np.load(folder / "reloaded.npz")
    for name, (_, result, images, _) in built.items():
        expected = as_numpy(result.model(images, training=False))
        assert relative(expected, reloaded[name]) <= 1e-6, name
        assert int(reloaded[name + "_bn"]) == len(result.report.kept)


# ------------------------------------------------------------------ strip after add

ROUND_TRIP = [
    "mlp.keras",
    "cnn.keras",
    "nested.keras",
    "multi_io.keras",
    "ops_model.keras",
    "shared_dense.keras",
    "legacy_mlp.h5",
    "gru_tagger.keras",  # a masked TimeDistributed(Dense): the BN is called with the mask
]


def _assert_same_model(original: Any, stripped: Any) -> None:
    """Same layer paths, classes, configs, model classes, names and weights, bit for bit."""
    before, after = layers_by_path(original), layers_by_path(stripped)
    assert classes_by_path(stripped) == classes_by_path(original)
    assert type(stripped) is type(original)
    for path, layer in before.items():
        if is_model(layer):
            assert type(after[path]) is type(layer), path
            continue
        assert after[path].get_config() == layer.get_config(), path
        assert_bit_exact(layer, after[path], path)
    assert input_names(stripped) == input_names(original)
    assert output_names(stripped) == output_names(original)


@pytest.mark.parametrize("name", ROUND_TRIP)
def test_strip_after_add_gives_back_the_original(name):
    original = keras.saving.load_model(FIXTURES / name)
    added = normify.add(original)
    assert added.report.changes, "add inserted nothing: the round trip would be trivial"
    result = normify.strip(added.model)
    # an inserted BatchNormalization folds back into its layer, anything else is removed
    inserted = {
        insertion.name: insertion.path if insertion.norm_class == "BatchNormalization" else None
        for insertion in added.report.changes
    }
    assert {c.path: c.folded_into for c in result.report.changes} == inserted
    assert not result.report.kept
    _assert_same_model(original, result.model)
    inputs = inputs_for(MANIFEST[name]["inputs"], batch=8)
    before, after = predict(original, inputs), predict(result.model, inputs)
    assert max_relative_difference(before, after) <= ROUND_TRIP_TOLERANCE
    if name == "multi_io.keras":
        assert output_names(result.model) == ["label", "score"]


@pytest.mark.parametrize(
    ("rules", "kind"),
    [
        ({"dense": "layernorm", "conv": "groupnorm"}, "all"),
        ({"position": "post"}, "batchnorm"),
        ({"dense": "rmsnorm", "conv": "none"}, "rmsnorm"),
    ],
    ids=["layernorm+groupnorm", "post-batchnorm", "rmsnorm"],
)
@pytest.mark.parametrize("name", ["cnn.keras", "nested.keras"])
def test_strip_after_add_with_other_rules_gives_back_the_original(name, rules, kind):
    original = keras.saving.load_model(FIXTURES / name)
    added = normify.add(original, **rules)
    assert added.report.changes
    result = normify.strip(added.model, kind=kind)
    assert sorted(c.path for c in result.report.changes) == sorted(
        i.name for i in added.report.changes
    )
    _assert_same_model(original, result.model)
    inputs = inputs_for(MANIFEST[name]["inputs"], batch=8)
    before, after = predict(original, inputs), predict(result.model, inputs)
    assert max_relative_difference(before, after) <= ROUND_TRIP_TOLERANCE


# ------------------------------------------------------------- strip: removals, drift


def _partial_without(skip: set[str]) -> Any:
    """partial_bn_cnn replayed by hand with the layers of a fresh copy, skipping `skip`
    (a fresh copy: calling the layers again must not touch the model under test)."""
    model = keras.saving.load_model(FIXTURES / "partial_bn_cnn.keras")
    x = model.inputs[0]
    for layer in model.layers[1:]:
        if layer.name not in skip:
            x = layer(x)
    return keras.Model(model.inputs[0], x)


@pytest.fixture(scope="module")
def partial_bn_cnn():
    model = keras.saving.load_model(FIXTURES / "partial_bn_cnn.keras")
    assert [type(layer).__name__ for layer in model.layers] == [
        "InputLayer",
        "Conv2D",
        "BatchNormalization",
        "ReLU",
        "Conv2D",
        "BatchNormalization",
        "Conv2D",
        "GlobalAveragePooling2D",
        "Dense",
        "Dropout",
        "LayerNormalization",
        "Dense",
    ]  # fmt: skip  (a sequential chain: `_partial_without` relies on it)
    return model


def _independent_layer_drift(model: Any, path: str) -> dict[str, float]:
    layer = model.get_layer(path)
    probe = keras.Model(model.inputs[0], [layer.input, layer.output])
    [inputs] = random_inputs(model)  # partial_bn_cnn has one input
    before, after = (as_numpy(t, np.float64) for t in probe(inputs, training=False))
    diff = float(np.max(np.abs(after - before)))
    return {"max_abs": diff, "relative": diff / float(np.max(np.abs(after)))}


def test_strip_all_folds_what_it_can_and_reports_the_drift_of_the_rest(partial_bn_cnn):
    original = partial_bn_cnn
    result = normify.strip(original)
    assert [c.to_json() for c in result.report.changes] == [
        {"path": "batch_normalization", "class": "BatchNormalization",
         "folded_into": "conv2d", "exact": True, "in_cell": False},
        {"path": "batch_normalization_1", "class": "BatchNormalization",
         "folded_into": None, "exact": False, "in_cell": False},
        {"path": "layer_normalization", "class": "LayerNormalization",
         "folded_into": None, "exact": False, "in_cell": False},
    ]  # fmt: skip
    assert not result.report.kept and not norm_paths(result.model)
    assert set(result.report.layer_drift) == {"batch_normalization_1", "layer_normalization"}
    for path, drift in result.report.layer_drift.items():
        expected = _independent_layer_drift(original, path)
        assert expected["max_abs"] > 0.01  # the removed layers really did something
        for key in ("max_abs", "relative"):
            assert drift[key] == pytest.approx(expected[key], rel=1e-5), (path, key)
    # the result computes what the original computes without the two removed layers
    batchnorm = original.get_layer("batch_normalization")
    expected = expected_fold(original.get_layer("conv2d"), batchnorm)
    got = own_variables(result.model.get_layer("conv2d"))
    for key, value in expected.items():
        np.testing.assert_allclose(got[key], value, rtol=1e-6, err_msg=key)
    for path in ("conv2d_1", "conv2d_2", "dense", "dense_1"):
        assert_bit_exact(original.get_layer(path), result.model.get_layer(path), path)
    reference = _partial_without({"batch_normalization_1", "layer_normalization"})
    inputs = inputs_for(MANIFEST["partial_bn_cnn.keras"]["inputs"], batch=8)
    assert relative(call(reference, inputs)[0], call(result.model, inputs)[0]) <= 1e-5
    # the plan from the config lists the same removals
    plan = normify.api.plan_strip(FIXTURES / "partial_bn_cnn.keras")
    assert [c.to_json() for c in plan.changes] == [c.to_json() for c in result.report.changes]


def test_strip_layernorm_removes_only_layer_normalization(partial_bn_cnn):
    original = partial_bn_cnn
    result = normify.strip(original, kind="layernorm")
    assert [(c.path, c.folded_into) for c in result.report.changes] == [
        ("layer_normalization", None)
    ]
    assert not result.report.kept
    assert norm_paths(result.model) == {"batch_normalization", "batch_normalization_1"}
    for path, layer in layers_by_path(original).items():
        if path != "layer_normalization":
            assert_bit_exact(layer, result.model.get_layer(path), path)
    expected = _independent_layer_drift(original, "layer_normalization")
    drift = result.report.layer_drift["layer_normalization"]
    assert drift["max_abs"] == pytest.approx(expected["max_abs"], rel=1e-5)
    reference = _partial_without({"layer_normalization"})
    inputs = inputs_for(MANIFEST["partial_bn_cnn.keras"]["inputs"], batch=8)
    assert relative(call(reference, inputs)[0], call(result.model, inputs)[0]) <= 1e-6


def test_strip_include_and_exclude(partial_bn_cnn):
    excluded = normify.strip(partial_bn_cnn, exclude=["layer_norm*"])
    assert [c.path for c in excluded.report.changes] == [
        "batch_normalization",
        "batch_normalization_1",
    ]
    assert [(k.path, "exclude" in k.reason) for k in excluded.report.kept] == [
        ("layer_normalization", True)
    ]
    assert norm_paths(excluded.model) == {"layer_normalization"}
    included = normify.strip(partial_bn_cnn, include=["batch_normalization"])
    assert [(c.path, c.folded_into) for c in included.report.changes] == [
        ("batch_normalization", "conv2d")
    ]
    assert {k.path for k in included.report.kept} == {
        "batch_normalization_1",
        "layer_normalization",
    }
    assert all("include" in k.reason for k in included.report.kept)
    inputs = inputs_for(MANIFEST["partial_bn_cnn.keras"]["inputs"], batch=8)
    before, after = call(partial_bn_cnn, inputs)[0], call(included.model, inputs)[0]
    assert relative(before, after) <= FOLD_TOLERANCE


def test_strip_keeps_a_norm_that_produces_a_model_output():
    x = keras.Input((6,), name="x")
    hidden = L.LayerNormalization(name="inner_ln")(L.Dense(5, activation="relu")(x))
    out = L.LayerNormalization(name="out_ln")(L.Dense(4)(hidden))
    model = keras.Model(x, out)
    randomize(model, seed=6)
    result = normify.strip(model, kind="layernorm")
    assert [c.path for c in result.report.changes] == ["inner_ln"]
    assert [k.path for k in result.report.kept] == ["out_ln"]
    assert "model output" in result.report.kept[0].reason
    assert output_names(result.model) == ["out_ln"]
    assert norm_paths(result.model) == {"out_ln"}


def test_strip_refuses_an_unknown_kind():
    with pytest.raises(normify.NormifyError, match="--kind"):
        normify.strip(FIXTURES / "mlp.keras", kind="dropout")


REPORT_KEYS = {
    "command", "model", "changes", "kept", "drift", "summary", "notices", "output", "dry_run"
}  # fmt: skip


def test_every_command_reports_in_one_shape(partial_bn_cnn):
    payload = normify.strip(partial_bn_cnn).report.to_json()
    assert set(payload) == REPORT_KEYS
    assert set(normify.fold(partial_bn_cnn).report.to_json()) == REPORT_KEYS
    assert set(normify.add(partial_bn_cnn).report.to_json()) == REPORT_KEYS | {"init"}
    drifts = {entry["path"]: entry.get("drift") for entry in payload["changes"]}
    assert drifts["batch_normalization"] is None  # exact: nothing to measure
    assert drifts["layer_normalization"]["max_abs"] > 0
    assert json.loads(json.dumps(payload)) == payload


@pytest.mark.parametrize(
    ("candidate", "expected"),
    [
        ("dense_act", True),
        ("dense_act_1", True),
        ("dense_act_12", True),
        ("dense_act_\u0663", True),  # `\d` matched any decimal digit, as isdecimal does
        ("dense_act_", False),
        ("dense_act_1a", False),
        ("dense_acts", False),
        ("dense_act__1", False),
        ("dense_1_act", False),
        ("dense.act", False),
        ("other_act", False),
    ],
)
def test_strip_recognizes_the_activation_add_split_off(candidate: str, expected: bool) -> None:
    """The names `add` gives a split-off activation (`<layer>_act`, `_act_1`... on a
    clash), checked without a regular expression per layer (see the function)."""
    assert _is_split_activation_name(candidate, "dense") is expected
    assert bool(re.fullmatch(r"dense_act(_\d+)?", candidate)) is expected
