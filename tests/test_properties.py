"""Property tests: `add` and `audit` on hypothesis-generated random architectures.

`architectures.py` draws a description of a small model (Sequential or Functional;
branches, nested models called once or twice, a shared Dense, masks from `Masking` and
`Embedding(mask_zero=True)`, recurrent, dense and conv layers in channels_last and
channels_first, `keras.ops` calls, several inputs and outputs) and builds it with seeded
random weights. Each is rewritten by `add` (from the model or from its saved file, pre- or
post-activation, with or without `include_output`) with BatchNormalization everywhere,
which starts as an identity, and must satisfy:

1. every original variable is carried bit for bit (same layer path and variable key; a
   bias taken off a split layer equals the beta of the inserted norm); input and output
   names are kept;
2. predictions stay within 1e-5 of the original's, relative to max(1, |output|);
3. `add` is idempotent: planning on the saved output, or adding to the new model,
   inserts nothing;
4. the config-built graph (`graph.from_config(files.read_config(file))`) and the live-built
   graphs (`graph.from_model` of the loaded file and of the model in memory) have the same
   layers, calls and audit rows, for the original and the rewritten model; and `plan` on
   the original file plans exactly what `add` did;
5. the saved output reloads in a fresh process that imports plain Keras (not normify) and
   predicts the same (all examples' files are checked in one subprocess by the last test).

The default `rnn="layernorm"` runs on a third as many examples for the properties that do
not involve predictions (1, 3, 4, and the reload in 5).

Bugs the search found are pinned by the xfail tests below; the strategy steers around
them (see `AVOID_NESTED_FUNCTIONAL_OUTPUT`, `MIN_LAYERNORM_CHANNELS` and the `assume` in
the layernorm test) so that the properties keep finding new ones.

The suite runs a modest number of examples (about a minute); to hunt for bugs, run more:

    NORMIFY_PROPERTY_EXAMPLES=500 .venv/bin/python -m pytest tests/test_properties.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from architectures import (
    architectures,
    build_model,
    feed,
    flat_outputs,
    random_arrays,
    randomize_weights,
)
from helpers import (
    as_numpy,
    graph_structure,
    is_model,
    layers_by_path,
    max_relative_difference,
    own_variables,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import normify
from normify import files
from normify import graph as graphs
from normify.audit import audit_graph
from normify.saving import save_model

keras = pytest.importorskip("keras")

# Keras warns whenever a mask meets a layer that drops it, which random models often do.
pytestmark = pytest.mark.filterwarnings("ignore:Layer .* mask attached to it:UserWarning")

TOLERANCE = 1e-5  # max abs difference relative to max(1, |output|)
EXAMPLES = int(os.environ.get("NORMIFY_PROPERTY_EXAMPLES", "25"))
LAYERNORM_EXAMPLES = max(1, EXAMPLES // 3)


def property_settings(examples: int) -> settings:
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow],
        database=None,
    )


@dataclass
class Collector:
    """Saved rewritten models (with inputs and expected outputs) to reload at the end."""

    folder: Path
    cases: list[dict] = field(default_factory=list)
    count: int = 0

    def new_folder(self) -> Path:
        self.count += 1
        folder = self.folder / f"example_{self.count:04d}"
        folder.mkdir()
        return folder


@pytest.fixture(scope="module")
def collector(tmp_path_factory):
    return Collector(tmp_path_factory.mktemp("properties"))


# ------------------------------------------------------------------------------ checks


def check_weights_carried(original, result) -> int:
    """Property 1; returns how many variables were checked."""
    insertions = {insertion.path: insertion for insertion in result.report.changes}
    new_layers = layers_by_path(result.model)
    checked = 0
    for path, layer in layers_by_path(original).items():
        if is_model(layer) or not layer.weights:
            continue
        insertion = insertions.get(path)
        new_path = path
        if insertion is not None and insertion.renamed:
            prefix = path.rsplit("/", 1)[0] + "/" if "/" in path else ""
            new_path = prefix + insertion.renamed[1]
        assert new_path in new_layers, f"layer {path} is gone"
        new_variables = own_variables(new_layers[new_path])
        for key, value in own_variables(layer).items():
            if key in new_variables:
                assert new_variables[key].dtype == value.dtype, f"{path}:{key} dtype"
                assert np.array_equal(new_variables[key], value), f"{path}:{key} changed"
            else:
                assert key.split("/")[-1] == "bias" and insertion is not None, f"{path}:{key} lost"
                assert insertion.bias_moved, f"{path}:{key} dropped without being moved"
                beta = own_variables(new_layers[insertion.name])["beta"]
                assert np.array_equal(beta, value), f"{path}:{key} not moved into beta"
            checked += 1
    return checked


def comparable(insertions):
    """Insertions as plans and rewrites report them (kept as a seam for the comparison)."""
    return list(insertions)


def outputs_of(model, description, arrays):
    return flat_outputs(model(feed(description, arrays), training=False))


def output_names(model):
    return [tensor._keras_history[0].name for tensor in model.outputs]


def audits_agree(path: Path, live_models) -> None:
    """Property 4 for one file: its config-built graph and audit equal each live-built one."""
    graph = graphs.from_config(files.read_config(path))
    from_file = audit_graph(graph)
    for live in live_models:
        live_graph = graphs.from_model(live)
        from_live = audit_graph(live_graph)
        assert from_file.rows == from_live.rows, path.name
        assert from_file.norm_layers == from_live.norm_layers, path.name
        assert graph_structure(graph) == graph_structure(live_graph), path.name


def load(path: Path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return keras.saving.load_model(path)


def run_example(description, *, rnn, position, source, include_output, collector, predictions):
    """Build the described model, rewrite it and check the properties; record the output
    file for the fresh-process reload."""
    keras.backend.clear_session()
    folder = collector.new_folder()
    (folder / "description.json").write_text(json.dumps(description, indent=1))
    model = build_model(description)
    randomize_weights(model, description["seed"])
    arrays = random_arrays(description, seed=description["seed"] + 1)
    original_path = save_model(model, folder / "original.keras")

    rules = normify.Rules(rnn=rnn, position=position, include_output=include_output)
    options = {"rnn": rnn, "position": position, "include_output": include_output}
    given_model = original_path if source == "path" else model
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = normify.add(given_model, **options)
    report = result.report

    # 1. every original variable carried bit for bit
    assert check_weights_carried(model, result) > 0
    assert [t.name for t in result.model.inputs] == [t.name for t in model.inputs]
    assert output_names(result.model) == output_names(model)

    # 2. predictions kept (BatchNormalization everywhere: an exact identity)
    after = outputs_of(result.model, description, arrays)
    if predictions:
        assert all(insertion.exact for insertion in report.changes), report.to_json()
        before = outputs_of(model, description, arrays)
        assert max_relative_difference(before, after) <= TOLERANCE

    # 3. idempotent
    output_path = save_model(result.model, folder / "normified.keras")
    assert normify.plan(output_path, rules).changes == []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        again = normify.add(result.model, **options)
    assert again.report.changes == []

    # 4. config-built and live-built graphs agree, and so do the config plan and add
    audits_agree(original_path, [load(original_path), model])
    audits_agree(output_path, [load(output_path), result.model])
    planned = normify.plan(original_path, rules).changes
    assert comparable(planned) == comparable(report.changes)

    # 5. (checked at the end, in one fresh process)
    np.savez(folder / "arrays.npz", *arrays, *after)
    collector.cases.append(
        {
            "model": str(output_path),
            "arrays": str(folder / "arrays.npz"),
            "inputs": len(arrays),
            "names": [spec["name"] for spec in description["inputs"]],
            "io": description["io"],
        }
    )


# ------------------------------------------------------------------------------- tests


@property_settings(EXAMPLES)
@given(
    description=architectures(),
    position=st.sampled_from(["pre", "post"]),
    source=st.sampled_from(["model", "path"]),
    include_output=st.booleans(),
)
def test_add_with_batchnorm_keeps_weights_predictions_and_is_idempotent(
    description, position, source, include_output, collector
):
    run_example(
        description,
        rnn="batchnorm",
        position=position,
        source=source,
        include_output=include_output,
        collector=collector,
        predictions=True,
    )


@property_settings(LAYERNORM_EXAMPLES)
@given(description=architectures(), source=st.sampled_from(["model", "path"]))
def test_add_with_default_rules_keeps_weights_and_is_idempotent(description, source, collector):
    run_example(
        description,
        rnn="layernorm",
        position="pre",
        source=source,
        include_output=False,
        collector=collector,
        predictions=False,
    )


# ---------------------------------------------------------------- bugs the search found


def test_config_of_a_model_whose_output_is_a_nested_functional_call_is_read(tmp_path):
    keras.backend.clear_session()
    inner_input = keras.Input((3,))
    dense = keras.layers.Dense(2, activation="relu", name="dense")
    inner = keras.Model(inner_input, dense(inner_input), name="inner")
    x = keras.Input((3,), name="x")
    model = keras.Model(x, inner(x), name="outer")
    path = save_model(model, tmp_path / "outer.keras")
    assert normify.audit(path).rows == normify.audit(load(path)).rows
    assert [row.path for row in normify.audit(path).rows] == ["inner/dense"]


@pytest.mark.parametrize("nested", ["Sequential", "Functional"])
def test_drift_is_measured_when_a_mask_flows_into_a_nested_model(nested):
    keras.backend.clear_session()
    layers = keras.layers
    sub_input = keras.Input((4, 3))
    gru = layers.GRU(5, return_sequences=True, name="gru")
    if nested == "Sequential":
        sub = keras.Sequential([sub_input, gru], name="sub")
    else:
        sub = keras.Model(sub_input, gru(sub_input), name="sub")
    tokens = keras.Input((4,), dtype="int32", name="tokens")
    x = sub(layers.Embedding(10, 3, mask_zero=True)(tokens))
    model = keras.Model(tokens, layers.Dense(2)(layers.Flatten()(x)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = normify.add(model)
    assert [insertion.name for insertion in result.report.changes] == ["sub/gru_ln"]
    assert result.report.drift is not None


@pytest.mark.parametrize("units", [6, 16, 19])  # scalar path, vector path, both
def test_identity_batchnorm_is_bit_exact_for_any_channel_count(units):
    keras.backend.clear_session()
    inputs = keras.Input((4,), name="x")
    hidden = keras.layers.Dense(units, activation="relu", name="dense")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(1, name="out")(hidden))
    randomize_weights(model, seed=0)
    result = normify.add(model)
    assert [(i.name, i.exact) for i in result.report.changes] == [("dense_bn", True)]
    batch = np.random.default_rng(0).standard_normal((64, 4)).astype("float32")
    before = keras.Model(model.inputs, model.get_layer("dense").output)([batch])
    new = result.model
    after = keras.Model(new.inputs, new.get_layer("dense_act").output)([batch])
    assert np.array_equal(as_numpy(before), as_numpy(after))


@pytest.mark.parametrize("nested", ["Sequential", "Functional"])
def test_plan_from_file_agrees_with_add_on_a_nested_channels_first_conv(nested, tmp_path):
    keras.backend.clear_session()
    layers = keras.layers
    sub_input = keras.Input((3, 8, 4))
    conv = layers.Conv2D(3, 1, data_format="channels_first", name="conv")
    if nested == "Sequential":
        sub = keras.Sequential([sub_input, conv], name="sub")
    else:
        sub = keras.Model(sub_input, conv(sub_input), name="sub")
    x = keras.Input((3, 8, 4), name="x")
    model = keras.Model(x, layers.Dense(2, name="out")(layers.Flatten()(sub(x))))
    path = save_model(model, tmp_path / "model.keras")
    added = normify.add(model).report.changes
    assert [(i.name, i.exact, i.note) for i in added] == [("sub/conv_bn", True, None)]
    assert normify.plan(path).changes == added


RELOAD_SCRIPT = """
import json, os, sys
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np
import keras
failures = []
for case in json.load(open(sys.argv[1])):
    try:
        model = keras.saving.load_model(case["model"])
        data = np.load(case["arrays"])
        arrays = [data[f"arr_{i}"] for i in range(len(data.files))]
        inputs, expected = arrays[: case["inputs"]], arrays[case["inputs"] :]
        if case["io"] == "dict":
            feed = dict(zip(case["names"], inputs))
        elif case["io"] == "list" or len(inputs) > 1:
            feed = inputs
        else:
            feed = inputs[0]
        outputs = model(feed, training=False)
        if isinstance(outputs, dict):
            outputs = [outputs[key] for key in sorted(outputs)]
        elif not isinstance(outputs, (list, tuple)):
            outputs = [outputs]
        outputs = [keras.ops.convert_to_numpy(output) for output in outputs]
        if len(outputs) != len(expected):
            failures.append([case["model"], "output count"])
            continue
        for got, want in zip(outputs, expected):
            scale = max(1.0, float(np.max(np.abs(want))))
            if got.shape != want.shape or np.max(np.abs(got - want)) / scale > 1e-5:
                failures.append([case["model"], "predictions differ"])
                break
    except Exception as error:
        failures.append([case["model"], f"{type(error).__name__}: {error}"[:300]])
assert "normify" not in sys.modules
print(json.dumps(failures))
"""


def test_rewritten_models_reload_in_a_fresh_process_without_normify(collector, tmp_path):
    """Property 5, for every example the tests above generated, in one subprocess."""
    if not collector.cases:
        pytest.skip("run together with the property tests above")
    cases = tmp_path / "cases.json"
    cases.write_text(json.dumps(collector.cases))
    completed = subprocess.run(
        [sys.executable, "-c", RELOAD_SCRIPT, str(cases)],
        capture_output=True,
        text=True,
        timeout=600 + 2 * len(collector.cases),
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert json.loads(completed.stdout.strip().splitlines()[-1]) == []
