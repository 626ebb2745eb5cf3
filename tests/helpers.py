"""Independent checks used by the tests: they do not reuse normify's own helpers, so a bug
in normify's weight matching or input generation cannot hide itself."""

from __future__ import annotations

from typing import Any

import numpy as np


def as_numpy(value: Any, dtype: Any = None) -> np.ndarray:
    """`np.asarray` that also takes a backend tensor, as a detached copy: a PyTorch
    output that requires grad cannot become NumPy directly."""
    if not isinstance(value, (np.ndarray, np.generic, list, tuple, int, float, bool)) and hasattr(
        value, "shape"
    ):
        import keras

        value = keras.ops.convert_to_numpy(value)
    return np.asarray(value) if dtype is None else np.asarray(value, dtype)


def inputs_for(spec: dict[str, dict[str, Any]], batch: int = 6, seed: int = 7) -> list[np.ndarray]:
    """Random inputs following a fixture manifest's input specs (in input order)."""
    rng = np.random.default_rng(seed)
    arrays = []
    for entry in spec.values():
        shape = [batch, *entry["shape"]]
        if entry["dtype"].startswith("int"):
            arrays.append(
                rng.integers(1, entry["int_high"] or 2, size=shape).astype(entry["dtype"])
            )
        else:
            arrays.append(rng.standard_normal(shape).astype(entry["dtype"]))
    return arrays


def predict(model: Any, inputs: list[np.ndarray]) -> list[np.ndarray]:
    outputs = model.predict(inputs[0] if len(inputs) == 1 else inputs, verbose=0)
    if isinstance(outputs, dict):
        return [as_numpy(outputs[key]) for key in sorted(outputs)]
    if isinstance(outputs, (list, tuple)):
        return [as_numpy(output) for output in outputs]
    return [as_numpy(outputs)]


def infer(model: Any, inputs: Any) -> Any:
    """One inference pass over one batch, the cheapest way on the running backend.

    On JAX an eager call compiles every op on its first use (DenseNet121's first call:
    20 s); the whole model compiled at once by `predict_on_batch` takes 2.5 s. Elsewhere an
    eager call is the cheaper one (TensorFlow would trace the whole model first).
    """
    import keras

    if keras.backend.backend() == "jax":
        return model.predict_on_batch(inputs)
    return model(inputs, training=False)


def assert_same_weights(original: Any, model: Any) -> None:
    """Every variable of `model` is `original`'s at the same path, bit for bit."""
    ours = {v.path: as_numpy(v).tobytes() for v in model.weights}
    assert ours == {v.path: as_numpy(v).tobytes() for v in original.weights}


def max_relative_difference(before: list[np.ndarray], after: list[np.ndarray]) -> float:
    """Max abs difference divided by the output scale (at least 1)."""
    assert len(before) == len(after)
    worst = 0.0
    for a, b in zip(before, after, strict=True):
        assert a.shape == b.shape
        scale = max(1.0, float(np.max(np.abs(a))))
        worst = max(worst, float(np.max(np.abs(a - b))) / scale)
    return worst


def layers_by_path(model: Any, prefix: str = "") -> dict[str, Any]:
    """Every layer of a model and its nested models, keyed `outer/inner/layer`."""
    found = {}
    for layer in model.layers:
        path = prefix + layer.name
        found[path] = layer
        if hasattr(layer, "layers") and hasattr(layer, "inputs"):
            found.update(layers_by_path(layer, path + "/"))
    return found


def own_variables(layer: Any) -> dict[str, np.ndarray]:
    """A layer's variables keyed by their path with everything up to the layer removed
    (positions are never used), for layers that are not models."""
    found = {}
    for variable in layer.weights:
        parts = variable.path.split("/")
        key = (
            "/".join(parts[parts.index(layer.name) + 1 :]) if layer.name in parts else variable.path
        )
        assert key not in found, f"duplicate variable key {key} in {layer.name}"
        found[key] = np.array(variable.numpy())
    return found


def is_model(layer: Any) -> bool:
    return hasattr(layer, "layers") and hasattr(layer, "inputs")


def graph_structure(graph: Any) -> tuple[list, list]:
    """Layers (path, class, kind) and calls (id, layer, inputs) of a normify graph at every
    nesting level: what two builders of the same model must agree on."""
    from normify import graph as graphs

    layers = sorted(
        (path, spec.class_name, spec.kind) for path, spec, _ in graphs.walk_layers(graph)
    )
    calls = []
    stack = [("", graph)]
    while stack:
        prefix, current = stack.pop()
        calls.extend(
            (prefix + node.id, node.layer, tuple(node.inputs)) for node in current.nodes.values()
        )
        calls.append((prefix, "outputs", tuple(graphs.tensor_refs(current.outputs))))
        for spec in current.layers.values():
            if spec.subgraph is not None:
                stack.append((prefix + spec.name + "/", spec.subgraph))
    return layers, sorted(calls)


PREDICT_SCRIPT = """
import sys
import numpy as np
import keras
model = keras.saving.load_model(sys.argv[1])
np.save(sys.argv[3], np.asarray(model.predict(np.load(sys.argv[2]), verbose=0)))
"""


def predict_in_fresh_process(
    model_path: Any, inputs: np.ndarray, tmp_path: Any, import_normify: bool = False
) -> np.ndarray:
    """Load a saved model with plain Keras in a new Python process and predict (after
    `import normify` when the model holds normify's own layers)."""
    import os
    import subprocess
    import sys

    np.save(tmp_path / "inputs.npy", inputs)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run(
        [sys.executable, "-c", ("import normify\n" if import_normify else "") + PREDICT_SCRIPT,
         str(model_path), str(tmp_path / "inputs.npy"),
         str(tmp_path / "outputs.npy")],
        env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return np.load(tmp_path / "outputs.npy")


def run_cli(*args: Any) -> Any:
    """The CLI in process (click's runner), exceptions propagating."""
    from click.testing import CliRunner

    from normify.cli import main

    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def files_in(folder: Any) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


def keras2_file_with_lambda(target: Any, code: bytes) -> Any:
    """A copy of the Keras 2 fixture `legacy/k2_mlp.h5` at `target` whose Dropout is a
    Lambda of the marshalled code `code` (base64, as Keras 2.1+ stored it)."""
    import base64
    import json
    import shutil

    import h5py
    from conftest import FIXTURES

    shutil.copy(FIXTURES / "legacy" / "k2_mlp.h5", target)
    with h5py.File(target, "r+") as handle:
        config = json.loads(handle.attrs["model_config"])
        layer = next(e for e in config["config"]["layers"] if e["class_name"] == "Dropout")
        layer["class_name"] = "Lambda"
        layer["config"] = {
            "name": "dropout",
            "function": [base64.b64encode(code).decode("ascii"), None, None],
            "function_type": "lambda",
            "module": "__main__",
            "output_shape": None,
            "arguments": {},
        }
        handle.attrs["model_config"] = json.dumps(config)
    return target
