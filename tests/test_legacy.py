"""Models written by Keras 2 (tf_keras): repaired configs, exact predictions, audit and add.

The fixtures in `fixtures/legacy/` were written by tf_keras 2.21 (see
`fixtures/legacy/make_legacy_fixtures.py`); each `<stem>.expected.npz` holds the inputs
and the predictions tf_keras computed for them. Subprocesses cost seconds each (they
import TensorFlow), so the `normify add` runs share one module fixture and the plain
Keras 3 reload of all their outputs is one process.
"""

from __future__ import annotations

import copy
import json
import marshal
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import FIXTURES
from helpers import as_numpy, assert_same_weights, keras2_file_with_lambda

import normify
from normify import formats
from normify.errors import ModelLoadError
from normify.files import read_config
from normify.formats import arguments
from normify.formats import training as training_configs
from normify.graph import renumber_nested_calls
from normify.loading import load_model

LEGACY = FIXTURES / "legacy"

# What the audit of each file's config must count: kind -> (total, normalized).
COUNTS = {
    "k2_mlp.h5": {"dense": (3, 0), "conv": (0, 0), "rnn": (0, 0)},
    "k2_text_lstm.h5": {"dense": (2, 0), "conv": (0, 0), "rnn": (1, 0)},
    "k2_conv_bigru.h5": {"dense": (2, 0), "conv": (1, 1), "rnn": (1, 0)},
    "k2_multi_output.h5": {"dense": (4, 0), "conv": (0, 0), "rnn": (0, 0)},
    "k2_cnn.keras": {"dense": (2, 0), "conv": (1, 1), "rnn": (0, 0)},
    "k2_attention.keras": {"dense": (3, 0), "conv": (0, 0), "rnn": (0, 0)},
    "k2_decoder.keras": {"dense": (1, 0), "conv": (0, 0), "rnn": (1, 0)},
}

# Repairs each file needs (a subset of the notices; each notice is "repaired: " + line).
REPAIRS = {
    "k2_mlp.h5": [
        "dense_input: batch_input_shape [None, 16] -> batch_shape",
        "dense: dropped batch_input_shape [None, 16] (the Sequential's InputLayer gives the shape)",
        "training config: optimizer Custom>Adam -> Adam",
        "training config: metric 'acc' translated to 'accuracy'",
    ],
    "k2_text_lstm.h5": [
        "tokens: batch_input_shape [None, 12] -> batch_shape",
        "embedding: dropped argument input_length=12, which Keras 3 ignores",
        "lstm: dropped argument time_major=False, which Keras 3 does not take",
    ],
    "k2_conv_bigru.h5": [
        "head: node indices shifted down by one (Keras 2 counted the nested model's own "
        "graph as node 0)",
        "batch_normalization: axis [2] -> 2",
        "bidirectional/gru: dropped argument time_major=False, which Keras 3 does not take",
        "head/global_average_pooling1d_input: batch_input_shape [None, 20, 16] -> batch_shape",
    ],
    "k2_multi_output.h5": [
        "features: batch_input_shape [None, 10] -> batch_shape",
        "training config: optimizer Adam: dropped argument is_legacy_optimizer=False, which "
        "Keras 3 removed",
        "training config: metric 'label_acc' translated to 'accuracy'",
        "training config: metric 'score_mean_squared_error' translated to 'mean_squared_error'",
        "training config: metric 'score_mae' translated to 'mean_absolute_error'",
    ],
    "k2_cnn.keras": [
        "model: module tf_keras.src.engine.functional -> keras.src.models.functional",
        "image: batch_input_shape [None, 8, 8, 3] -> batch_shape",
        "batch_normalization: axis [3] -> 3",
        "classifier: node indices shifted down by one (Keras 2 counted the nested model's "
        "own graph as node 0)",
    ],
    "k2_attention.keras": [
        "multi_head_attention: build config from the query, value and key shapes in its config",
        "tf.__operators__.add: TFOpLambda tf.__operators__.add -> keras.ops.add",
    ],
    "k2_decoder.keras": [
        "lstm: 2 initial state(s) passed as extra inputs -> initial_state (built from the "
        "sequence's shape alone)",
        "model: module tf_keras.src.engine.functional -> keras.src.models.functional",
    ],
}
COMPILED = {"k2_mlp.h5", "k2_multi_output.h5", "k2_cnn.keras"}
NAMES = sorted(COUNTS)


def expected(name: str) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The inputs and the predictions tf_keras made for them."""
    data = np.load(LEGACY / f"{name.rsplit('.', 1)[0]}.expected.npz")
    count = sum(key.startswith("input_") for key in data.files)
    inputs = [data[f"input_{i}"] for i in range(count)]
    outputs = [data[f"output_{i}"] for i in range(len(data.files) - count)]
    return inputs, outputs


def predictions(model, inputs: list[np.ndarray]) -> list[np.ndarray]:
    outputs = model.predict(inputs[0] if len(inputs) == 1 else inputs, verbose=0)
    return [as_numpy(o) for o in (outputs if isinstance(outputs, (list, tuple)) else [outputs])]


# ----------------------------------------------------------------------------- loading


@pytest.fixture(scope="module")
def loaded():
    return {name: load_model(LEGACY / name) for name in NAMES}


@pytest.mark.parametrize("name", NAMES)
def test_loads_with_the_predictions_tf_keras_made(loaded, name):
    inputs, outputs = expected(name)
    got = predictions(loaded[name].model, inputs)
    assert len(got) == len(outputs)
    for value, want in zip(got, outputs, strict=True):
        np.testing.assert_allclose(value, want, rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_every_repair_is_a_notice(loaded, name):
    notices = loaded[name].notices
    for line in REPAIRS[name]:
        assert any(n.startswith(f"repaired: {line}") for n in notices), (line, notices)
    assert all(n.startswith("repaired: ") or "compiled" in n for n in notices), notices
    # every repair names the rule that made it
    assert all(n.endswith("]") for n in notices if n.startswith("repaired: ")), notices
    assert loaded[name].model.compiled == (name in COMPILED)


def test_compiled_model_gets_the_translated_training_config(loaded):
    config = loaded["k2_multi_output.h5"].model.get_compile_config()
    assert config["loss"] == {
        "label": "sparse_categorical_crossentropy",
        "score": "mean_squared_error",
    }
    assert config["loss_weights"] == {"label": 1.0, "score": 0.5}
    assert config["metrics"] == [["accuracy"], ["mean_squared_error", "mean_absolute_error"]]
    optimizer = config["optimizer"]
    assert optimizer["class_name"] == "Adam"
    assert optimizer["config"]["learning_rate"] == pytest.approx(0.003)


def test_untranslatable_training_config_loads_uncompiled_with_a_notice(tmp_path):
    path = tmp_path / "custom_loss.h5"
    shutil.copy(LEGACY / "k2_multi_output.h5", path)
    with h5py.File(path, "r+") as handle:
        training = json.loads(handle.attrs["training_config"])
        training["loss"]["score"] = "my_focal_loss"
        handle.attrs["training_config"] = json.dumps(training).encode()
    loaded = load_model(path)
    assert not loaded.model.compiled
    assert (
        "the training configuration could not be translated (loss 'my_focal_loss' does not "
        "exist in Keras 3); the model was loaded uncompiled"
    ) in loaded.notices
    inputs, outputs = expected("k2_multi_output.h5")
    np.testing.assert_allclose(predictions(loaded.model, inputs)[1], outputs[1], atol=1e-5)


def edit_model_config(path: Path, old: str, new: str) -> None:
    with h5py.File(path, "r+") as handle:
        text = handle.attrs["model_config"]
        text = text.decode() if isinstance(text, bytes) else text
        assert old in text
        handle.attrs["model_config"] = text.replace(old, new)


def test_unregistered_custom_layer_is_one_line_naming_it(tmp_path):
    path = tmp_path / "custom.h5"
    shutil.copy(LEGACY / "k2_mlp.h5", path)
    edit_model_config(path, '"class_name": "Dropout"', '"class_name": "MyDropout"')
    with pytest.raises(ModelLoadError) as raised:
        load_model(path)
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(str(path)) and "'MyDropout'" in message


def test_weights_that_do_not_fit_the_config_are_one_line(tmp_path):
    path = tmp_path / "mismatch.h5"
    shutil.copy(LEGACY / "k2_mlp.h5", path)
    edit_model_config(path, '"units": 16', '"units": 15')
    with pytest.raises(ModelLoadError) as raised:
        load_model(path)
    message = str(raised.value)
    assert "\n" not in message
    assert message == (
        f"{path}: its weights do not fit its config: layer 'dense_1' (Dense): the file stores "
        "kernel of shape (32, 16) where its config needs (?, 15)"
    )


def keras_file_with_weights_layout(source: Path, target: Path, layout: str) -> None:
    """A copy of a tf_keras `.keras` file whose model.weights.h5 has the same arrays in the
    layout of tf.keras 2.13 (`"2.13"`) or of tf.keras 2.15 on Windows (`"windows"`)."""
    with zipfile.ZipFile(source) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    stored = target.with_suffix(".stored.h5")
    stored.write_bytes(members["model.weights.h5"])
    written = target.with_suffix(".written.h5")
    with h5py.File(stored, "r") as old, h5py.File(written, "w") as new:
        names: list[str] = []
        old.visit(names.append)
        # tf.keras 2.13 listed a layer with weights twice and numbered its class along
        # that list: (layers group, Keras 3 name) -> the 2.13 name
        numbers: dict[tuple[str, str], str] = {}
        taken: dict[tuple[str, str], int] = {}
        for name in names:
            parts = name.split("/")
            if len(parts) < 2 or parts[-2] != "layers":
                continue
            group, layer = "/".join(parts[:-1]), parts[-1]
            base, _, number = layer.rpartition("_")
            base = base if number.isdigit() else layer
            count = taken.get((group, base), 0)
            numbers[(group, layer)] = base if count == 0 else f"{base}_{count}"
            taken[(group, base)] = count + (2 if len(old[name].get("vars", {})) else 1)
        for name in names:
            parts = name.split("/")
            moved = list(parts)
            for index in range(len(parts) - 1):
                if parts[index] == "layers" and layout == "2.13":
                    moved[index] = "_layer_checkpoint_dependencies"
                    moved[index + 1] = numbers[("/".join(parts[: index + 1]), parts[index + 1])]
            path = "/".join(moved)
            if layout == "windows" and "/vars" in path:
                head, _, tail = path.partition("/vars")
                path = head.replace("/", "\\") + "/vars" + tail
            item = old[name]
            if isinstance(item, h5py.Dataset):
                new.create_dataset(path, data=item[()])
            else:
                new.require_group(path)
    members["model.weights.h5"] = written.read_bytes()
    metadata = json.loads(members["metadata.json"])
    metadata["keras_version"] = "2.13.1" if layout == "2.13" else "2.15.0"
    members["metadata.json"] = json.dumps(metadata).encode()
    with zipfile.ZipFile(target, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)


@pytest.mark.parametrize(
    ("layout", "rule"),
    [("2.13", "tf-keras-2.13-layer-names"), ("windows", "tf-keras-windows-paths")],
)
def test_tf_keras_weights_layouts_keras3_misreads_are_read_bit_for_bit(tmp_path, layout, rule):
    path = tmp_path / f"{layout}.keras"
    keras_file_with_weights_layout(LEGACY / "k2_cnn.keras", path, layout)
    with h5py.File(path.with_suffix(".written.h5"), "r") as written:
        stored: list[str] = []
        written.visit(stored.append)
    if layout == "2.13":
        # the nested Sequential's second Dense is numbered as tf.keras 2.13 numbered it
        nested = "_layer_checkpoint_dependencies/sequential/_layer_checkpoint_dependencies"
        assert f"{nested}/dense_2/vars/0" in stored and f"{nested}/dense_1" not in stored
    else:
        assert "layers\\sequential\\layers\\dense_1/vars/0" in stored
    reference = load_model(LEGACY / "k2_cnn.keras").model
    loaded = load_model(path)
    repairs = [n for n in loaded.notices if n.startswith("repaired: weights: ")]
    assert any(n.endswith(f"[{rule}]") for n in repairs), loaded.notices
    assert_same_weights(reference, loaded.model)
    inputs, outputs = expected("k2_cnn.keras")
    np.testing.assert_allclose(predictions(loaded.model, inputs)[0], outputs[0], rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    "damage",
    [lambda code: code[: len(code) // 2], lambda code: b"\x00" + code[1:]],
    ids=["cut", "unknown-type"],
)
def test_a_lambda_whose_bytecode_this_python_cannot_read_is_named(tmp_path, damage):
    """Keras 2 stored a Lambda's function as marshalled bytecode, which another Python
    version cannot read; the error must name the layer, not call the file truncated."""
    code = damage(marshal.dumps((lambda x: x * 2).__code__))
    path = keras2_file_with_lambda(tmp_path / "lambda.h5", code)
    with pytest.raises(ModelLoadError) as raised:
        load_model(path, safe_mode=False)
    message = str(raised.value)
    assert "\n" not in message and "truncated" not in message
    assert "layer 'dropout' (Lambda): its Python code was compiled by another Python" in message
    # marshal's own words, which depend on where the bytes stop making sense
    marshal_says = ("EOF read where", "marshal data too short", "bad marshal data")
    assert any(f"({words}" in message for words in marshal_says), message


def test_a_file_keras2_wrote_is_never_handed_to_keras3_unrepaired(monkeypatch):
    """One path per file, chosen by its origin: a failing translation is the error."""

    def broken(*args, **kwargs):
        raise ModelLoadError("translation bug")

    monkeypatch.setattr(arguments, "fit", broken)
    with pytest.raises(ModelLoadError, match="k2_mlp.h5: translation bug"):
        load_model(LEGACY / "k2_mlp.h5")


# ------------------------------------------------------------------------------- audit


def test_audit_reads_keras2_configs_without_a_backend():
    script = (
        "import json, sys, normify\n"
        "summaries = {p: normify.audit(p).summary for p in sys.argv[1:]}\n"
        "assert 'keras' not in sys.modules and 'tensorflow' not in sys.modules\n"
        "print(json.dumps(summaries))\n"
    )
    paths = [str(LEGACY / name) for name in NAMES]
    done = subprocess.run(
        [sys.executable, "-c", script, *paths], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    summaries = json.loads(done.stdout)
    for name in NAMES:
        got = {
            kind: (s["total"], s["normalized"]) for kind, s in summaries[str(LEGACY / name)].items()
        }
        assert got == COUNTS[name], name


# --------------------------------------------------------------------------------- add


def start_add(name: str, folder: Path) -> tuple[Path, subprocess.Popen]:
    output = folder / f"{name.rsplit('.', 1)[0]}.normified.keras"
    command = [sys.executable, "-m", "normify", "add", str(LEGACY / name)]
    command += ["-o", str(output), "--rnn", "batchnorm", "--json"]
    return output, subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


@pytest.fixture(scope="module")
def added(tmp_path_factory):
    """`normify add --rnn batchnorm --json` on every fixture, two processes at a time
    (--rnn batchnorm: an exact identity, so predictions stay the same)."""
    folder = tmp_path_factory.mktemp("legacy_add")
    results = {}
    for pair in (NAMES[i : i + 2] for i in range(0, len(NAMES), 2)):
        running = {name: start_add(name, folder) for name in pair}
        for name, (output, process) in running.items():
            stdout, stderr = process.communicate(timeout=300)
            results[name] = (process.returncode, stdout, stderr, output)
    return results


@pytest.mark.parametrize("name", NAMES)
def test_add_lists_the_repairs_and_writes_a_keras3_file(added, name):
    code, stdout, stderr, output = added[name]
    assert code == 0, stderr
    assert stderr == ""
    report = json.loads(stdout)
    for line in REPAIRS[name]:
        assert any(n.startswith(f"repaired: {line}") for n in report["notices"]), line
    assert report["changes"], "every fixture has an unnormalized hidden layer"
    assert output.is_file()
    with zipfile.ZipFile(output) as archive:
        metadata = json.loads(archive.read("metadata.json"))
    assert metadata["keras_version"].startswith("3.")


def test_add_outputs_load_in_plain_keras3_with_the_original_predictions(added):
    cases = []
    for name in NAMES:
        cases.append(
            {
                "name": name,
                "model": str(added[name][3]),
                "arrays": str(LEGACY / f"{name.rsplit('.', 1)[0]}.expected.npz"),
            }
        )
    script = """
import json, sys
import numpy as np
import keras
report = {}
for case in json.loads(sys.argv[1]):
    model = keras.saving.load_model(case["model"])
    data = np.load(case["arrays"])
    count = sum(key.startswith("input_") for key in data.files)
    inputs = [data[f"input_{i}"] for i in range(count)]
    wanted = [data[f"output_{i}"] for i in range(len(data.files) - count)]
    got = model.predict(inputs[0] if count == 1 else inputs, verbose=0)
    got = got if isinstance(got, (list, tuple)) else [got]
    relative = max(
        float(np.max(np.abs(np.asarray(g) - w))) / max(1.0, float(np.max(np.abs(w))))
        for g, w in zip(got, wanted)
    )
    report[case["name"]] = {"relative": relative, "compiled": bool(model.compiled)}
assert "normify" not in sys.modules
print(json.dumps(report))
"""
    done = subprocess.run(
        [sys.executable, "-c", script, json.dumps(cases)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    for name in NAMES:
        assert report[name]["relative"] <= 1e-5, (name, report[name])
        assert report[name]["compiled"] == (name in COMPILED), name


def test_add_api_keeps_a_repaired_compiled_model_compiled():
    result = normify.add(LEGACY / "k2_multi_output.h5")
    assert result.model.compiled
    config = result.model.get_compile_config()
    assert config["metrics"] == [["accuracy"], ["mean_squared_error", "mean_absolute_error"]]
    assert any(n.startswith("repaired: training config:") for n in result.report.notices)


# -------------------------------------------------------------------- config repairs


def test_importing_formats_imports_no_backend():
    script = "import sys, normify.formats\nassert 'keras' not in sys.modules\n"
    assert subprocess.run([sys.executable, "-c", script], timeout=60).returncode == 0


def repair(config: dict, origin: str = formats.KERAS2) -> tuple[dict, list[str]]:
    """What loading does to a config: translate it, then fit its arguments to Keras 3;
    with the repairs as `path: text` lines."""
    translation = arguments.fit(formats.translate(config, formats.Origin(origin)))
    return translation.config, [f"{r.path}: {r.text}" for r in translation.repairs]


def test_translation_returns_a_copy():
    config = read_config(LEGACY / "k2_conv_bigru.h5")
    before = copy.deepcopy(config)
    repaired, _ = repair(config)
    assert config == before
    assert repaired != config


def test_renumbering_leaves_keras3_configs_without_nested_outputs_alone():
    config = read_config(FIXTURES / "nested.keras")
    assert renumber_nested_calls(config) is config


def test_translated_nodes_count_calls_of_nested_models():
    config = read_config(LEGACY / "k2_conv_bigru.h5")
    translated, _ = repair(config)
    assert config["config"]["output_layers"] == [["head", 1, 0]]
    # a nested Sequential's ends count calls only
    assert translated["config"]["output_layers"] == ["head", 0, 0]
    layers = {layer["name"]: layer for layer in translated["config"]["layers"]}
    node = layers["bidirectional"]["inbound_nodes"][0]
    assert node["args"][0]["config"]["keras_history"] == ["activation", 0, 0]


def test_renumbering_keras3_outputs_of_a_nested_functional_model(tmp_path):
    import keras

    inner_input = keras.Input((4,))
    inner = keras.Model(inner_input, keras.layers.Dense(4)(inner_input), name="inner")
    outer_input = keras.Input((4,))
    keras.Model(outer_input, inner(outer_input)).save(tmp_path / "outer.keras")
    config = read_config(tmp_path / "outer.keras")
    assert config["config"]["output_layers"] == ["inner", 1, 0]  # how Keras 3 writes it
    assert renumber_nested_calls(config)["config"]["output_layers"] == ["inner", 0, 0]


def keras2_functional(name: str, layers: list[dict], outputs: list) -> dict:
    inputs = [[layers[0]["name"], 0, 0]]
    config = {"name": name, "layers": layers, "input_layers": inputs, "output_layers": outputs}
    return {"class_name": "Functional", "config": config}


def keras2_layer(class_name: str, name: str, inbound: list, **config) -> dict:
    return {
        "class_name": class_name,
        "name": name,
        "config": {"name": name, **config},
        "inbound_nodes": [[[*ref, {}] for ref in inbound]] if inbound else [],
    }


def test_repaired_nested_functional_references_follow_the_keras3_reader():
    import keras

    inner = keras2_functional(
        "inner",
        [
            keras2_layer("InputLayer", "inner_x", [], batch_input_shape=[None, 3]),
            keras2_layer("Dense", "inner_dense", [["inner_x", 0, 0]], units=3),
        ],
        [["inner_dense", 0, 0]],
    )
    inner.update(name="inner", inbound_nodes=[[["x", 0, 0, {}]]])
    outer = keras2_functional(
        "outer",
        [
            keras2_layer("InputLayer", "x", [], batch_input_shape=[None, 3]),
            inner,
            keras2_layer("Dense", "after", [["inner", 1, 0]], units=2),
        ],
        [["inner", 1, 0], ["after", 0, 0]],
    )
    repaired, repairs = repair(outer)
    layers = {layer["name"]: layer for layer in repaired["config"]["layers"]}
    history = layers["after"]["inbound_nodes"][0]["args"][0]["config"]["keras_history"]
    assert history == ["inner", 0, 0]
    # Keras 3 still writes (and reads) outputs of a nested Functional model from node 1
    assert repaired["config"]["output_layers"] == [["inner", 1, 0], ["after", 0, 0]]
    shifted = (
        "inner: node indices shifted down by one (Keras 2 counted the nested model's own "
        "graph as node 0)"
    )
    assert shifted in repairs
    model = keras.saving.deserialize_keras_object(copy.deepcopy(repaired))  # Keras edits it
    assert [tuple(output.shape) for output in model.outputs] == [(None, 3), (None, 2)]
    calls = renumber_nested_calls(repaired)["config"]["output_layers"]
    assert calls == [["inner", 0, 0], ["after", 0, 0]]


def sequential(layers: list[dict]) -> dict:
    return {"class_name": "Sequential", "config": {"name": "sequential", "layers": layers}}


def dense(name: str, **extra) -> dict:
    return {"class_name": "Dense", "config": {"name": name, "units": 4, **extra}}


def test_sequential_without_input_layer_gets_one():
    config = sequential([dense("dense", batch_input_shape=[None, 3], dtype="float32")])
    repaired, repairs = repair(config)
    first = repaired["config"]["layers"][0]
    assert first["class_name"] == "InputLayer"
    assert first["config"] == {"batch_shape": [None, 3], "name": "dense_input", "dtype": "float32"}
    assert "batch_input_shape" not in repaired["config"]["layers"][1]["config"]
    assert repairs == [
        "dense: batch_input_shape [None, 3] -> new InputLayer dense_input (batch_shape [None, 3])"
    ]


def test_policies_model_class_lambda_and_wrapped_layers():
    policy = {"class_name": "Policy", "config": {"name": "mixed_float16"}}
    lstm = {"class_name": "LSTM", "config": {"name": "lstm", "units": 2, "time_major": True}}
    config = {
        "class_name": "Model",
        "config": {
            "name": "m",
            "layers": [
                {
                    "class_name": "InputLayer",
                    "name": "x",
                    "inbound_nodes": [],
                    "config": {"name": "x", "batch_input_shape": [None, 5, 3]},
                },
                {
                    "class_name": "TimeDistributed",
                    "name": "td",
                    "inbound_nodes": [[["x", 0, 0, {}]]],
                    "config": {"name": "td", "layer": dense("inner", dtype=policy)},
                },
                {
                    "class_name": "Bidirectional",
                    "name": "bi",
                    "inbound_nodes": [[["td", 0, 0, {}]]],
                    "config": {"name": "bi", "layer": lstm},
                },
                {
                    "class_name": "Lambda",
                    "name": "f",
                    "inbound_nodes": [[["bi", 0, 0, {}]]],
                    "config": {
                        "name": "f",
                        "function": ["code", None, None],
                        "function_type": "lambda",
                        "module": "__main__",
                    },
                },
            ],
            "input_layers": [["x", 0, 0]],
            "output_layers": [["f", 0, 0]],
        },
    }
    with pytest.raises(formats.FormatError, match="'bi/lstm'.*time_major=True"):
        repair(config, formats.TF_KERAS)  # time-major: another computation without it
    lstm["config"]["time_major"] = False
    repaired, repairs = repair(config, formats.TF_KERAS)
    assert repaired["class_name"] == "Functional"
    layers = {layer["name"]: layer for layer in repaired["config"]["layers"]}
    assert layers["td"]["config"]["layer"]["config"]["dtype"] == "mixed_float16"
    assert layers["td"]["config"]["layer"]["module"] == "keras.layers"
    assert "time_major" not in layers["bi"]["config"]["layer"]["config"]
    assert layers["f"]["config"]["function"]["class_name"] == "__lambda__"
    assert set(repairs) >= {
        "m: class Model -> Functional",
        "x: batch_input_shape [None, 5, 3] -> batch_shape",
        "td/inner: dtype policy Policy('mixed_float16') -> 'mixed_float16'",
        "bi/lstm: dropped argument time_major=False, which Keras 3 does not take (it "
        "computes the same without it)",
        "f: dropped function_type='lambda' (Keras 2 bookkeeping of the function)",
        "f: dropped module='__main__' (Keras 2 bookkeeping of the function)",
    }


def test_training_config_translation():
    training = {
        "loss": {
            "class_name": "CategoricalCrossentropy",
            "config": {
                "reduction": "auto",
                "name": "cce",
                "from_logits": True,
                "fn": "categorical_crossentropy",
            },
        },
        "metrics": [["acc", {"class_name": "AUC", "config": {"name": "auc"}}]],
        "weighted_metrics": None,
        "loss_weights": None,
        "sample_weight_mode": "temporal",
        "optimizer_config": {
            "class_name": "SGD",
            "config": {"learning_rate": 0.1, "decay": 0.0, "momentum": 0.9},
        },
    }
    translated = training_configs.translate(training)
    compiled, repairs = translated.config, [f"{r.path}: {r.text}" for r in translated.repairs]
    assert compiled["loss"]["config"] == {
        "reduction": "sum_over_batch_size",
        "name": "cce",
        "from_logits": True,
    }
    assert compiled["metrics"][0] == "accuracy"
    assert compiled["metrics"][1]["class_name"] == "AUC"
    assert compiled["optimizer"]["config"] == {"learning_rate": 0.1, "momentum": 0.9}
    assert set(repairs) >= {
        "training config: loss CategoricalCrossentropy: reduction 'auto' -> 'sum_over_batch_size'",
        "training config: loss CategoricalCrossentropy: dropped argument "
        "fn='categorical_crossentropy', which Keras 3 removed",
        "training config: metric 'acc' translated to 'accuracy'",
        "training config: dropped sample_weight_mode='temporal', which Keras 3 removed",
        "training config: optimizer SGD: dropped argument decay=0.0, which Keras 3 removed",
    }


@pytest.mark.parametrize(
    "training, reason",
    [
        (
            {"loss": "mse", "optimizer_config": {"class_name": "Yogi", "config": {}}},
            "optimizer Yogi does not exist in Keras 3",
        ),
        (
            {"loss": "mse", "metrics": ["f1_macro"], "optimizer_config": "adam"},
            "metric 'f1_macro' does not exist in Keras 3",
        ),
        ({"loss": "mse"}, "the training configuration names no optimizer"),
        ("not json", "the training configuration is not a mapping"),
    ],
)
def test_untranslatable_training_configs(training, reason):
    translated = training_configs.translate(training)
    assert (translated.config, translated.reason) == (None, reason)


@pytest.mark.parametrize(
    "version, generation",
    [
        ("2.21.0", formats.TF_KERAS),
        (b"2.4.0", formats.TF_KERAS),
        ("2.2.4-tf", formats.TF_KERAS),
        ("2.2.4", formats.KERAS2),
        ("2.0.8", formats.KERAS2),
        ("1.2.2", formats.KERAS1),
        ("3.15.1", formats.KERAS3),
        (None, formats.KERAS3),
    ],
)
def test_origin_from_the_recorded_version(version, generation):
    config = {"class_name": "Functional", "config": {"name": "m", "layers": []}}
    assert formats.origin_of(version, None, config).generation == generation
