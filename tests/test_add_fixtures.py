"""`normify.add` on every bundled fixture: weights, predictions, names, structure, reload.

Each fixture is rewritten once per session (module-scoped) and the tests inspect the
result. Recurrent layers get BatchNormalization here (an exact identity, like dense and
conv) so that every fixture can be held to the prediction tolerance; the LayerNorm
default for recurrent layers is covered separately with its measured drift.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import FIXTURE_NAMES, FIXTURES, MANIFEST
from helpers import (
    graph_structure,
    inputs_for,
    is_model,
    layers_by_path,
    max_relative_difference,
    own_variables,
    predict,
)

import normify
from normify import files
from normify import graph as graphs
from normify.audit import audit_graph
from normify.saving import save_model

keras = pytest.importorskip("keras")

TOLERANCE = 1e-5  # max abs difference relative to the output scale


@pytest.fixture(scope="module")
def rewritten(tmp_path_factory):
    """fixture name -> (original model, Result, saved output path, inputs, predictions)."""
    folder = tmp_path_factory.mktemp("rewritten")
    results = {}
    for name in FIXTURE_NAMES:
        path = FIXTURES / name
        original = keras.saving.load_model(path)
        result = normify.add(path, rnn="batchnorm")
        output = folder / (Path(name).stem + ".keras")
        save_model(result.model, output)
        inputs = inputs_for(MANIFEST[name]["inputs"])
        results[name] = {
            "original": original,
            "result": result,
            "output": output,
            "inputs": inputs,
            "before": predict(original, inputs),
            "after": predict(result.model, inputs),
        }
    return results


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_audit_counts_match_the_architecture(name):
    report = normify.audit(FIXTURES / name)
    expected = MANIFEST[name]["counts"]
    for kind, (total, normalized) in expected.items():
        assert report.summary[kind] == {"total": total, "normalized": normalized}, kind


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_every_original_weight_is_carried_bit_for_bit(name, rewritten):
    entry = rewritten[name]
    report = entry["result"].report
    insertions = {insertion.path: insertion for insertion in report.changes}
    new_layers = layers_by_path(entry["result"].model)
    checked = 0
    for path, layer in layers_by_path(entry["original"]).items():
        if is_model(layer) or not layer.weights:
            continue
        insertion = insertions.get(path)
        new_path = path
        if insertion is not None and insertion.renamed:
            new_path = (
                path.rsplit("/", 1)[0] + "/" + insertion.renamed[1]
                if "/" in path
                else (insertion.renamed[1])
            )
        new_variables = own_variables(new_layers[new_path])
        for key, value in own_variables(layer).items():
            if key in new_variables:
                assert new_variables[key].dtype == value.dtype
                assert np.array_equal(new_variables[key], value), f"{path}:{key} changed"
            else:
                assert key.split("/")[-1] == "bias" and insertion is not None, f"{path}:{key} lost"
                assert insertion.bias_moved
                beta = own_variables(new_layers[insertion.name])["beta"]
                assert np.array_equal(beta, value), f"{path}:{key} not moved into beta"
            checked += 1
    assert checked > 0


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_predictions_are_preserved(name, rewritten):
    entry = rewritten[name]
    if not name.startswith("conv_bn"):  # the fold fixtures are normalized already
        assert entry["result"].report.changes, "every fixture has something to normalize"
    assert max_relative_difference(entry["before"], entry["after"]) <= TOLERANCE


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_input_and_output_names_are_kept(name, rewritten):
    original, model = rewritten[name]["original"], rewritten[name]["result"].model
    assert [t.name for t in model.inputs] == [t.name for t in original.inputs]
    assert _output_names(model) == _output_names(original) == MANIFEST[name]["output_names"]


def _output_names(model):
    return [t._keras_history[0].name for t in model.outputs]


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_layer_names_are_unique_across_nesting_levels(name, rewritten):
    model = rewritten[name]["result"].model
    for _, layer in [("", model), *layers_by_path(model).items()]:
        if is_model(layer):
            names = [sub.name for sub in layer.layers]
            assert len(names) == len(set(names))
    inserted = [
        insertion.name.split("/")[-1] for insertion in rewritten[name]["result"].report.changes
    ]
    all_names = [path.split("/")[-1] for path in layers_by_path(model)]
    for inserted_name in inserted:
        assert all_names.count(inserted_name) == 1


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_add_is_idempotent(name, rewritten):
    again = normify.plan(rewritten[name]["output"], normify.Rules(rnn="batchnorm"))
    assert again.changes == []
    reasons = {skip.reason.split(" by ")[0].split(" (")[0] for skip in again.kept}
    assert reasons <= {"already normalized", "output layer", "its main output is unused"}


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_config_built_and_live_built_graphs_agree(name, rewritten):
    for path, model in (
        (FIXTURES / name, rewritten[name]["original"]),
        (rewritten[name]["output"], rewritten[name]["result"].model),
    ):
        from_file = graphs.from_config(files.read_config(path))
        from_live = graphs.from_model(model)
        assert graph_structure(from_file) == graph_structure(from_live)
        assert audit_graph(from_file).rows == audit_graph(from_live).rows


def test_saved_outputs_reload_in_a_fresh_process_without_normify(rewritten, tmp_path):
    cases = []
    for name, entry in rewritten.items():
        arrays = tmp_path / (Path(name).stem + ".npz")
        np.savez(arrays, *entry["inputs"], *entry["after"])
        cases.append(
            {"model": str(entry["output"]), "arrays": str(arrays), "inputs": len(entry["inputs"])}
        )
    script = """
import json, sys
import numpy as np
import keras
failures = []
for case in json.loads(sys.argv[1]):
    model = keras.saving.load_model(case["model"])
    data = np.load(case["arrays"])
    arrays = [data[f"arr_{i}"] for i in range(len(data.files))]
    inputs, expected = arrays[: case["inputs"]], arrays[case["inputs"] :]
    outputs = model.predict(inputs[0] if len(inputs) == 1 else inputs, verbose=0)
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    for got, want in zip(outputs, expected):
        if not np.allclose(np.asarray(got), want, rtol=0, atol=1e-6):
            failures.append(case["model"])
assert "normify" not in sys.modules
print(json.dumps(failures))
"""
    completed = subprocess.run(
        [sys.executable, "-c", script, json.dumps(cases)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert json.loads(completed.stdout.strip().splitlines()[-1]) == []


def test_sequential_stays_sequential_and_nested_models_stay_nested(rewritten):
    mlp = rewritten["mlp.keras"]["result"].model
    assert type(mlp).__name__ == "Sequential"
    nested = rewritten["nested.keras"]["result"].model
    assert type(nested.get_layer("encoder")).__name__ == "Sequential"
    assert type(nested.get_layer("head")).__name__ == "Functional"
    encoder_layers = [layer.name for layer in nested.get_layer("encoder").layers]
    assert encoder_layers == [
        "dense",
        "dense_bn",
        "dense_act",
        "dense_1",
        "dense_1_bn",
        "dense_1_act",
    ]


def test_shared_layer_gets_one_norm_applied_at_every_call(rewritten):
    model = rewritten["shared_dense.keras"]["result"].model
    norm = model.get_layer("shared_bn")
    assert len(norm._inbound_nodes) == 2
    assert len(model.get_layer("shared")._inbound_nodes) >= 2
    assert [layer.name for layer in model.layers].count("shared_bn") == 1


def test_non_layer_operations_survive(rewritten):
    model = rewritten["ops_model.keras"]["result"].model
    classes = sorted(type(op).__name__ for op in model.operations if "ops" in type(op).__module__)
    assert classes == ["Add", "Concatenate", "Multiply"]


def test_channels_first_norms_use_the_channel_axis(rewritten):
    model = rewritten["cnn_channels_first.keras"]["result"].model
    axes = {
        layer.name: layer.axis
        for layer in model.layers
        if type(layer).__name__ == "BatchNormalization"
    }
    assert axes == {
        "conv2d_bn": 1,
        "conv2d_1_bn": 1,
        "separable_conv2d_bn": 1,
        "depthwise_conv2d_bn": 1,
        "conv2d_transpose_bn": 1,
        "dense_bn": -1,
    }


def test_pre_activation_split_moves_bias_and_activation(rewritten):
    model = rewritten["cnn.keras"]["result"].model
    conv = model.get_layer("conv2d")
    assert conv.use_bias is False and conv.activation.__name__ == "linear"
    assert model.get_layer("conv2d_act").activation.__name__ == "relu"
    # a linear layer followed by an Activation layer gets the norm in between
    depthwise_consumer = model.get_layer("depthwise_conv2d_bn")._inbound_nodes[0].output_tensors[0]
    assert depthwise_consumer._keras_history[0].name == "depthwise_conv2d_bn"
    order = [layer.name for layer in model.layers]
    assert order.index("depthwise_conv2d_bn") < order.index("activation")


def test_compiled_model_stays_compiled_with_the_same_configuration(rewritten):
    original = rewritten["multi_io.keras"]["original"]
    model = rewritten["multi_io.keras"]["result"].model
    assert model.compiled
    before, after = original.get_compile_config(), model.get_compile_config()
    assert after["loss"] == before["loss"]
    assert after["metrics"] == before["metrics"]
    assert after["optimizer"]["config"] == before["optimizer"]["config"]
    assert int(model.optimizer.iterations.numpy()) == 0
    notices = " ".join(rewritten["multi_io.keras"]["result"].report.notices)
    assert "optimizer state" in notices


def test_masks_keep_flowing(rewritten):
    """Masking makes pre- and post-padded sequences give the same result; without the mask
    they would differ. Checked before and after the rewrite."""
    tokens = np.array([[5, 17, 3, 9, 42, 8, 11]], dtype="int32")
    length = 20
    post = np.pad(tokens, ((0, 0), (0, length - tokens.shape[1])))
    pre = np.pad(tokens, ((0, 0), (length - tokens.shape[1], 0)))
    for name in ("text_bilstm.keras", "gru_tagger.keras"):
        for model in (rewritten[name]["original"], rewritten[name]["result"].model):
            a = model.predict(post, verbose=0)
            b = model.predict(pre, verbose=0)
            if a.ndim == 3:  # per-step outputs: compare the unpadded steps
                a, b = a[:, : tokens.shape[1]], b[:, -tokens.shape[1] :]
            assert np.allclose(a, b, atol=1e-5), name


def test_return_state_layers_normalize_only_the_sequence(rewritten):
    model = rewritten["seq2seq.keras"]["result"].model
    norm_inputs = model.get_layer("lstm_1_bn")._inbound_nodes[0].input_tensors
    assert [t._keras_history[2] for t in norm_inputs] == [0]  # output 0 of the LSTM
    # the decoder still starts from the encoder's raw states
    decoder_node = model.get_layer("lstm_1")._inbound_nodes[-1]
    state_sources = {t._keras_history[0].name for t in decoder_node.input_tensors[1:]}
    assert state_sources == {"lstm"}
    # the encoder's sequence output is unused: nothing to normalize, and the report says so
    skipped = {skip.path: skip.reason for skip in rewritten["seq2seq.keras"]["result"].report.kept}
    assert skipped["lstm"].startswith("its main output is unused")
