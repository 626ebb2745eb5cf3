"""Every file in `fixtures/formats/`, each in the exact layout of an old Keras version,
held to the full set of checks: audit, loading with the predictions of the reference
(tf_keras where tf_keras opens the file, the layers' NumPy math otherwise), the repairs
it needs, `add` keeping every weight bit for bit and the predictions, the output
reloading in a fresh process without normify, and `fold`/`strip` where a
BatchNormalization is present.

A fixture is `<name>.h5` (or `.keras`) with `<name>.expected.npz` (`input_0`, ...,
`output_0`, ... in the model's output order) and `<name>.json`: the audit counts
(`kind: [total, normalized]`), the rules whose repairs must be reported, and the
tolerance (max abs difference relative to the output scale, default 1e-5). The scripts
beside them regenerate them (`fixtures/formats/README.md`).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import FIXTURES
from helpers import max_relative_difference, predict

import normify
from normify.loading import load_model
from normify.saving import save_model

FORMATS = FIXTURES / "formats"
NAMES = (
    sorted(path.name for path in FORMATS.iterdir() if path.suffix in (".h5", ".keras"))
    if FORMATS.is_dir()
    else []
)


def sidecar(name: str) -> dict:
    return json.loads((FORMATS / f"{Path(name).stem}.json").read_text())


def expected(name: str) -> tuple[list[np.ndarray], list[np.ndarray]]:
    with np.load(FORMATS / f"{Path(name).stem}.expected.npz") as data:
        inputs = [data[f"input_{i}"] for i in range(sum(k.startswith("input_") for k in data))]
        outputs = [data[f"output_{i}"] for i in range(sum(k.startswith("output_") for k in data))]
    return inputs, outputs


def tolerance(name: str) -> float:
    return float(sidecar(name).get("tolerance", 1e-5))


def test_there_are_format_fixtures():
    assert len(NAMES) >= 5, NAMES


@pytest.fixture(scope="module")
def loaded():
    return {name: load_model(FORMATS / name) for name in NAMES}


@pytest.mark.parametrize("name", NAMES)
def test_audit_counts(name):
    summary = normify.audit(FORMATS / name).summary
    got = {kind: [entry["total"], entry["normalized"]] for kind, entry in summary.items()}
    assert got == {kind: list(value) for kind, value in sidecar(name)["counts"].items()}


@pytest.mark.parametrize("name", NAMES)
def test_loads_with_the_reference_predictions(loaded, name):
    inputs, outputs = expected(name)
    got = predict(loaded[name].model, inputs)
    assert max_relative_difference(outputs, got) <= tolerance(name)


@pytest.mark.parametrize("name", NAMES)
def test_reports_the_repairs_it_needs(loaded, name):
    notices = " ".join(loaded[name].notices)
    for rule in sidecar(name).get("rules", []):
        assert f"[{rule}]" in notices, (rule, loaded[name].notices)


def _variables(model) -> dict[str, np.ndarray]:
    import keras

    return {v.path: keras.ops.convert_to_numpy(v) for v in model.weights}


@pytest.fixture(scope="module")
def added(loaded, tmp_path_factory):
    folder = tmp_path_factory.mktemp("formats_added")
    results = {}
    for name in NAMES:
        result = normify.add(FORMATS / name, rnn="batchnorm")
        output = folder / f"{Path(name).stem}.keras"
        save_model(result.model, output, reload=True)
        results[name] = (result, output)
    return results


def _by_layer(model, prefix: str = "") -> dict[str, np.ndarray]:
    """Every variable keyed `layer path/variable name` (never by position)."""
    import keras

    found = {}
    for layer in model.layers:
        path = prefix + layer.name
        if getattr(layer, "layers", None) is not None and hasattr(layer, "inputs"):
            found.update(_by_layer(layer, f"{path}/"))
            continue
        for variable in layer.weights:
            found[f"{path}/{variable.path.rsplit('/', 1)[-1]}"] = keras.ops.convert_to_numpy(
                variable
            )
    return found


@pytest.mark.parametrize("name", NAMES)
def test_add_keeps_every_weight_bit_for_bit_and_the_predictions(loaded, added, name):
    result, _ = added[name]
    before = _by_layer(loaded[name].model)
    after = _by_layer(result.model)
    for key, value in before.items():
        if key in after:
            assert after[key].tobytes() == value.tobytes(), key
        else:  # a bias moved into an inserted BatchNormalization's beta
            layer = key.rsplit("/", 1)[0]
            assert key.endswith("/bias") and np.array_equal(after[f"{layer}_bn/beta"], value), key
    assert result.report.changes, "every format fixture has an unnormalized hidden layer"
    inputs, outputs = expected(name)
    assert max_relative_difference(outputs, predict(result.model, inputs)) <= tolerance(name)


RELOAD_SCRIPT = """
import json, sys
import numpy as np
import keras
results = {}
for model_path, data_path in zip(sys.argv[1::2], sys.argv[2::2]):
    model = keras.saving.load_model(model_path)
    with np.load(data_path) as data:
        count = sum(key.startswith("input_") for key in data)
        inputs = [data[f"input_{i}"] for i in range(count)]
        outputs = model.predict(inputs[0] if count == 1 else inputs, verbose=0)
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        worst = 0.0
        for i, got in enumerate(outputs):
            want = data[f"output_{i}"]
            scale = max(1.0, float(np.max(np.abs(want))))
            worst = max(worst, float(np.max(np.abs(np.asarray(got) - want))) / scale)
    results[model_path] = worst
print(json.dumps(results))
"""


def test_outputs_reload_in_a_fresh_process_without_normify(added):
    arguments = []
    for name in NAMES:
        arguments += [str(added[name][1]), str(FORMATS / f"{Path(name).stem}.expected.npz")]
    done = subprocess.run(
        [sys.executable, "-c", RELOAD_SCRIPT, *arguments],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    worst = json.loads(done.stdout.strip().splitlines()[-1])
    for name in NAMES:
        assert worst[str(added[name][1])] <= tolerance(name), name


def _has_batchnorm(name: str) -> bool:
    return sidecar(name).get("batchnorm", False)


@pytest.mark.parametrize("name", [name for name in NAMES if _has_batchnorm(name)])
@pytest.mark.parametrize("command", ["fold", "strip"])
def test_fold_and_strip_keep_the_predictions(name, command):
    result = getattr(normify, command)(FORMATS / name)
    assert result.report.changes, f"{command} changes nothing in {name}"
    inputs, outputs = expected(name)
    assert max_relative_difference(outputs, predict(result.model, inputs)) <= 1e-4
