"""`normify.verify`: it must see every difference between two models, and only those.

The models are small and built here; expected numbers come from numpy on the models'
weights, not from normify's own helpers.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import layers_by_path

import normify
from normify.drift import random_inputs
from normify.errors import NormifyError
from normify.verify import VerifyReport, render, verify

keras = pytest.importorskip("keras")
layers = keras.layers


def _randomize(model, seed=0):
    """Seeded weights with non-zero biases, so a lost or moved bias cannot go unseen."""
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        variable.assign((rng.standard_normal(variable.shape) * 0.5).astype(variable.dtype))
    return model


def _mlp(hidden2_name="hidden2", with_hidden2=True, input_shape=(6,), seed=0):
    inputs = keras.Input(input_shape, name="x")
    x = layers.Dense(8, activation="relu", name="hidden")(inputs)
    if with_hidden2:
        x = layers.Dense(8, activation="tanh", name=hidden2_name)(x)
    outputs = layers.Dense(3, name="out")(x)
    return _randomize(keras.Model(inputs, outputs, name="mlp"), seed)


def _copy(model):
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return clone


def _numpy_mlp(model, x):
    """The `_mlp` forward pass in float64 numpy, from the model's weights."""
    by_path = layers_by_path(model)

    def dense(name, value):
        layer = by_path[name]
        return value @ layer.kernel.numpy().astype(np.float64) + layer.bias.numpy()

    hidden = np.maximum(dense("hidden", x.astype(np.float64)), 0.0)
    return dense("out", np.tanh(dense("hidden2", hidden)))


def _by_path(report: VerifyReport) -> dict[str, object]:
    return {comparison.path: comparison for comparison in report.weights}


def _statuses(report: VerifyReport) -> dict[str, str]:
    return {comparison.path: comparison.status for comparison in report.weights}


# ------------------------------------------------------------------------------ identity


def test_a_model_and_itself_carries_everything_with_zero_drift():
    model = _mlp()
    report = verify(model, model, tolerance=0.0)
    assert set(_statuses(report).values()) == {"carried"}
    assert report.counts == {"carried": 6, "changed": 0, "moved": 0, "removed": 0, "added": 0}
    assert report.layers_added == [] and report.layers_removed == []
    assert report.drift["max_abs"] == 0.0 and report.drift["relative"] == 0.0
    assert report.drift["inputs"] == "random" and report.drift["samples"] == 8
    assert report.passed
    assert render(report)[-1].startswith("PASS")


def test_a_copy_is_carried_too():
    model = _mlp()
    report = verify(model, _copy(model), tolerance=0.0)
    assert report.counts["carried"] == 6 and report.passed


# ---------------------------------------------------------------------------- rewrites


def test_add_result_moves_biases_into_batchnorm_beta():
    model = _mlp()
    rewritten = normify.add(model).model
    report = verify(model, rewritten, tolerance=1e-5)
    statuses = _statuses(report)
    for name in ("hidden", "hidden2", "out"):
        assert statuses[f"{name}/kernel"] == "carried"
    assert statuses["out/bias"] == "carried"  # the output layer is skipped by default
    weights = _by_path(report)
    for name in ("hidden", "hidden2"):
        assert weights[f"{name}/bias"].status == "moved"
        assert weights[f"{name}/bias"].moved_to == f"{name}_bn/beta"
        assert weights[f"{name}_bn/beta"].status == "added"
        assert weights[f"{name}_bn/beta"].moved_from == f"{name}/bias"
    assert report.counts == {"carried": 4, "changed": 0, "moved": 2, "removed": 0, "added": 8}
    assert sorted(report.layers_added) == ["hidden2_act", "hidden2_bn", "hidden_act", "hidden_bn"]
    assert report.layers_removed == []
    assert report.drift["relative"] <= 1e-5 and report.passed
    lines = render(report)
    assert "  moved    hidden/bias -> hidden_bn/beta" in lines
    assert "weights: 4 carried, 0 changed, 2 moved, 0 removed, 8 added" in lines


def test_renamed_output_layer_is_followed_to_its_core():
    """`--include-output` renames `out` to `out_core` and gives `out` to its norm: the
    kernel is found in `out_core`, the bias in the norm named `out`."""
    model = _mlp()
    report = verify(model, normify.add(model, include_output=True).model, tolerance=1e-5)
    weights = _by_path(report)
    assert weights["out/kernel"].moved_to == "out_core/kernel"
    assert weights["out/bias"].moved_to == "out/beta"
    assert "out_core" in report.layers_added and "out" not in report.layers_removed
    assert report.passed


def test_zero_bias_is_matched_to_beta_not_to_an_equal_moving_mean():
    inputs = keras.Input((5,), name="x")
    hidden = layers.Dense(4, activation="relu", name="hidden")(inputs)  # zero bias
    model = keras.Model(inputs, layers.Dense(2, name="out")(hidden))
    report = verify(model, normify.add(model).model)
    assert _by_path(report)["hidden/bias"].moved_to == "hidden_bn/beta"


def test_nested_model_variables_have_layer_paths():
    inner_in = keras.Input((6,), name="inner_x")
    inner_out = layers.Dense(5, activation="relu", name="dense")(inner_in)
    encoder = keras.Model(inner_in, inner_out, name="encoder")
    inputs = keras.Input((6,), name="x")
    model = _randomize(keras.Model(inputs, layers.Dense(2, name="head")(encoder(inputs))))
    report = verify(model, normify.add(model).model, tolerance=1e-5)
    weights = _by_path(report)
    assert weights["encoder/dense/kernel"].status == "carried"
    assert weights["encoder/dense/bias"].moved_to == "encoder/dense_bn/beta"
    assert "encoder/dense_bn" in report.layers_added
    assert report.passed


# -------------------------------------------------------------------------- differences


def _perturbed(model, step=1e-3):
    copy = _copy(model)
    kernel = copy.get_layer("hidden2").kernel
    kernel.assign(kernel.numpy() + np.float32(step))
    return copy


def test_perturbed_kernel_is_changed_with_its_max_abs_diff():
    model = _mlp()
    copy = _perturbed(model)
    report = verify(model, copy)
    weights = _by_path(report)
    changed = weights["hidden2/kernel"]
    assert changed.status == "changed"
    expected = np.max(
        np.abs(
            copy.get_layer("hidden2").kernel.numpy().astype(np.float64)
            - model.get_layer("hidden2").kernel.numpy().astype(np.float64)
        )
    )
    assert changed.max_abs_diff == expected
    assert changed.max_abs_diff == pytest.approx(1e-3, rel=1e-3)
    assert report.counts == {"carried": 5, "changed": 1, "moved": 0, "removed": 0, "added": 0}
    assert report.drift["max_abs"] > 0
    assert any(
        line.startswith("  changed  hidden2/kernel: max abs diff") for line in render(report)
    )


def test_tolerance_decides_pass_and_fail():
    model = _mlp()
    copy = _perturbed(model)
    strict = verify(model, copy, tolerance=1e-9)
    assert not strict.passed
    assert render(strict)[-1].startswith("FAIL: relative drift")
    loose = verify(model, copy, tolerance=1.0)
    assert loose.passed and render(loose)[-1].startswith("PASS")
    unchecked = verify(model, copy)
    assert unchecked.passed and unchecked.tolerance is None


def test_changed_shape_is_reported_without_a_difference():
    model = _mlp()
    inputs = keras.Input((6,), name="x")
    hidden = layers.Dense(9, activation="relu", name="hidden")(inputs)
    hidden2 = layers.Dense(8, activation="tanh", name="hidden2")(hidden)
    wider = _randomize(keras.Model(inputs, layers.Dense(3, name="out")(hidden2)))
    report = verify(model, wider)
    kernel = _by_path(report)["hidden/kernel"]
    assert kernel.status == "changed"
    assert kernel.new_shape == (6, 9) and kernel.max_abs_diff is None
    assert "  changed  hidden/kernel: shape (6, 8) -> (6, 9)" in render(report)


def test_renamed_layer_is_removed_and_added_and_its_weights_moved():
    model = _mlp()
    renamed = _mlp(hidden2_name="middle")
    renamed.set_weights(model.get_weights())
    report = verify(model, renamed, tolerance=0.0)
    assert report.layers_removed == ["hidden2"]
    assert report.layers_added == ["middle"]
    weights = _by_path(report)
    assert weights["hidden2/kernel"].moved_to == "middle/kernel"
    assert weights["hidden2/bias"].moved_to == "middle/bias"
    assert weights["middle/kernel"].status == "added"
    assert report.passed  # same function, new names


def test_removed_layer_loses_its_weights_and_changes_predictions():
    model = _mlp()
    shorter = _mlp(with_hidden2=False)
    shorter.get_layer("hidden").set_weights(model.get_layer("hidden").get_weights())
    shorter.get_layer("out").set_weights(model.get_layer("out").get_weights())
    report = verify(model, shorter, tolerance=1e-3)
    assert report.layers_removed == ["hidden2"] and report.layers_added == []
    statuses = _statuses(report)
    assert statuses["hidden2/kernel"] == "removed" and statuses["hidden2/bias"] == "removed"
    assert statuses["hidden/kernel"] == statuses["out/kernel"] == "carried"
    assert not report.passed
    assert any(
        line.startswith("  removed  hidden2/kernel (8, 8) float32") for line in render(report)
    )


# ---------------------------------------------------------------------------- mismatches


def _float64_input():
    inputs = keras.Input((6,), name="x", dtype="float64")
    return keras.Model(inputs, layers.Dense(3, name="out")(inputs))


@pytest.mark.parametrize(
    "build", [lambda: _mlp(input_shape=(7,)), _float64_input], ids=["shape", "dtype"]
)
def test_different_inputs_are_refused_in_one_line(build):
    with pytest.raises(NormifyError) as caught:
        verify(_mlp(), build())
    message = str(caught.value)
    assert "different inputs" in message and "\n" not in message


def _two_inputs(names=("a", "b"), out_names=("first", "second"), order=(0, 1)):
    a = keras.Input((4,), name=names[0])
    b = keras.Input((3,), name=names[1])
    merged = layers.Concatenate(name="concat")([a, b])
    hidden = layers.Dense(5, activation="relu", name="hidden")(merged)
    outputs = {
        out_names[0]: layers.Dense(2, name="head_1")(hidden),
        out_names[1]: layers.Dense(1, name="head_2")(hidden),
    }
    inputs = [a, b]
    return _randomize(keras.Model([inputs[i] for i in order], outputs, name="two"))


def test_several_inputs_are_matched_by_name_and_dict_outputs_by_key():
    model = _two_inputs()
    reordered = _two_inputs(order=(1, 0))
    report = verify(model, reordered, tolerance=0.0)
    assert report.counts["carried"] == 6 and report.passed


def test_input_names_must_match_when_there_are_several():
    with pytest.raises(NormifyError, match="no input of that name"):
        verify(_two_inputs(), _two_inputs(names=("a", "c")))


def test_different_output_names_are_refused():
    with pytest.raises(NormifyError, match="different outputs"):
        verify(_two_inputs(), _two_inputs(out_names=("first", "third")))


# --------------------------------------------------------------------------------- drift


def test_drift_matches_an_independent_numpy_computation():
    model = _mlp()
    copy = _perturbed(model, step=1e-2)
    report = verify(model, copy)
    x = random_inputs(model)[0]  # what verify documents it feeds without data
    before, after = _numpy_mlp(model, x), _numpy_mlp(copy, x)
    diff = np.abs(before - after)
    assert report.drift["samples"] == x.shape[0]
    assert report.drift["max_abs"] == pytest.approx(diff.max(), rel=1e-3)
    assert report.drift["mean_abs"] == pytest.approx(diff.mean(), rel=1e-3)
    assert report.drift["relative"] == pytest.approx(diff.max() / np.abs(before).max(), rel=1e-3)


# ------------------------------------------------------------------------- files, output


def test_paths_on_disk(tmp_path):
    model = _mlp()
    original_path = tmp_path / "mlp.keras"
    rewritten_path = tmp_path / "mlp.bn.keras"
    model.save(original_path)
    normify.add(model).model.save(rewritten_path)
    report = verify(str(original_path), rewritten_path, tolerance=1e-5)
    assert report.original == str(original_path) and report.rewritten == str(rewritten_path)
    assert _by_path(report)["hidden/bias"].moved_to == "hidden_bn/beta"
    assert report.counts["moved"] == 2 and report.passed
    assert render(report)[:2] == [f"original:  {original_path}", f"rewritten: {rewritten_path}"]


def test_drift_on_npz_data_from_disk(tmp_path):
    """Uneven batches (10 samples by 4) must add up to the numpy numbers on all samples."""
    model = _mlp()
    copy = _perturbed(model, step=1e-2)
    original_path, copy_path = tmp_path / "mlp.keras", tmp_path / "copy.keras"
    model.save(original_path)
    copy.save(copy_path)
    x = np.random.default_rng(3).standard_normal((12, 6)).astype("float32")
    np.savez(tmp_path / "calib.npz", x=x)
    report = verify(
        original_path, copy_path, data=tmp_path / "calib.npz", batch_size=4, max_samples=10
    )
    before, after = _numpy_mlp(model, x[:10]), _numpy_mlp(copy, x[:10])
    diff = np.abs(before - after)
    assert report.drift["inputs"] == "data" and report.drift["samples"] == 10
    assert report.drift["max_abs"] == pytest.approx(diff.max(), rel=1e-3)
    assert report.drift["mean_abs"] == pytest.approx(diff.mean(), rel=1e-3)
    assert report.drift["relative"] == pytest.approx(diff.max() / np.abs(before).max(), rel=1e-3)
    assert _by_path(report)["hidden2/kernel"].status == "changed"
    assert "drift on 10 data samples" in render(report)[-2]


def test_data_with_several_inputs_and_dict_outputs():
    model = _two_inputs()
    data = {
        "a": np.ones((5, 4), "float32"),
        "b": np.linspace(-1, 1, 15, dtype="float32").reshape(5, 3),
    }
    report = verify(model, _two_inputs(order=(1, 0)), data=data, tolerance=0.0)
    assert report.drift["samples"] == 5 and report.drift["max_abs"] == 0.0 and report.passed


def test_data_that_does_not_fit_the_model_is_refused(tmp_path):
    np.savez(tmp_path / "bad.npz", x=np.zeros((4, 5), "float32"))
    model = _mlp()
    with pytest.raises(NormifyError, match="expects"):
        verify(model, model, data=tmp_path / "bad.npz")


def test_missing_file_is_a_normify_error(tmp_path):
    with pytest.raises(NormifyError, match="no such file"):
        verify(_mlp(), tmp_path / "missing.keras")


def test_to_json_is_serializable_and_complete():
    model = _mlp()
    report = verify(model, normify.add(model).model, tolerance=1e-5)
    data = json.loads(json.dumps(report.to_json()))
    assert data["counts"] == report.counts and data["passed"] is True
    assert data["tolerance"] == 1e-5 and data["drift"]["inputs"] == "random"
    moved = [entry for entry in data["weights"] if entry["status"] == "moved"]
    assert {entry["moved_to"] for entry in moved} == {"hidden_bn/beta", "hidden2_bn/beta"}
    assert sorted(data["layers_added"]) == sorted(report.layers_added)
    assert set(data["weights"][0]) == {
        "layer", "key", "status", "shape", "dtype", "max_abs_diff", "new_shape", "new_dtype",
        "moved_to", "moved_from",
    }  # fmt: skip


def test_every_command_measures_nan_drift_alike():
    """One drift module: a NaN on one side only is a NaN drift (no running max drops it),
    the same NaN or inf on both sides is no drift, for add's and verify's totals alike."""
    import math

    from normify.drift import DriftTotal

    one_sided = DriftTotal()
    one_sided.add([("", np.array([1.0, np.nan]), np.array([1.0, 2.0]))], 1)
    one_sided.add([("", np.array([0.0]), np.array([5.0]))], 1)
    assert math.isnan(one_sided.result("data")["max_abs"])
    both = DriftTotal()
    both.add([("", np.array([np.nan, np.inf, 2.0]), np.array([np.nan, np.inf, 2.5]))], 1)
    assert both.result("data")["max_abs"] == 0.5
    assert both.result("data")["relative"] == 0.25  # scale from the finite values
