"""Measuring how far a rewritten model's predictions are from the original's: the one
place every command (add, swap, strip, fold, recalibrate, verify) takes its drift from.
A NaN on one side only is a NaN difference, which no running maximum may drop; the
same value on both sides (NaN, inf) is no difference."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from normify.errors import NormifyError
from normify.graph import iter_leaves
from normify.keras_internals import keras_history

DRIFT_BATCH = 8
UNKNOWN_DIMENSION = 8


def random_inputs(model: Any, batch: int = DRIFT_BATCH, seed: int = 0) -> list[np.ndarray]:
    """Seeded random inputs for every model input, following its shape and dtype.

    Integer inputs that feed an Embedding get token ids below its `input_dim`.
    """
    rng = np.random.default_rng(seed)
    vocabulary = _embedding_sizes(model)
    arrays = []
    for tensor in model.inputs:
        shape = [batch] + [UNKNOWN_DIMENSION if d is None else int(d) for d in tensor.shape[1:]]
        dtype = str(tensor.dtype)
        if "int" in dtype:
            high = vocabulary.get(_input_name(tensor), 2)
            arrays.append(rng.integers(0, high, size=shape).astype(dtype))
        elif dtype == "bool":
            arrays.append(rng.integers(0, 2, size=shape).astype(bool))
        else:
            arrays.append(rng.standard_normal(shape).astype(dtype))
    return arrays


def _input_name(tensor: Any) -> str:
    return keras_history(tensor)[0].name


def _embedding_sizes(model: Any) -> dict[str, int]:
    """Input name -> vocabulary size of the first Embedding that input feeds."""
    from normify.flow import build_flow
    from normify.graph import from_model

    flow = build_flow(from_model(model))
    sizes: dict[str, int] = {}
    for key, site in flow.sites.items():
        if site.spec.kind != "input":
            continue
        frontier, seen = [key], {key}
        while frontier and site.spec.name not in sizes:
            current = frontier.pop(0)
            for consumer_key in flow.consumers.get((current, 0), []):
                consumer = flow.sites[consumer_key]
                if isinstance(consumer.spec.config.get("input_dim"), int):
                    sizes[site.spec.name] = consumer.spec.config["input_dim"]
                    break
                if consumer_key not in seen:
                    seen.add(consumer_key)
                    frontier.append(consumer_key)
    return sizes


def predict(model: Any, inputs: list[np.ndarray]) -> list[np.ndarray]:
    from keras import ops

    feed = inputs[0] if len(inputs) == 1 else inputs
    outputs = model(feed, training=False)
    return [np.asarray(ops.convert_to_numpy(output)) for output in iter_leaves(outputs)]


def output_drift(
    original: Any,
    rewritten: Any,
    batches: Iterable[list[np.ndarray]] | None = None,
    source: str | None = None,
) -> dict[str, Any]:
    """Max abs, mean abs and relative (to the largest original output) difference of the
    two models' outputs, over `batches` or over seeded random inputs. `source` says which
    (`data` or `random`) for the report."""
    source = source or ("data" if batches is not None else "random")
    batches = batches if batches is not None else [random_inputs(original)]
    total = DriftTotal()
    for inputs in batches:
        before, after = predict(original, inputs), predict(rewritten, inputs)
        pairs = [("", a, b) for a, b in zip(before, after, strict=True)]
        total.add(pairs, int(inputs[0].shape[0]))
    return total.result(source)


def tensor_drift(
    first: Any,
    first_requests: dict[str, tuple[str, str]],
    second: Any,
    second_requests: dict[str, tuple[str, str]],
    batches: Iterable[list[np.ndarray]],
) -> dict[str, dict[str, float]]:
    """For each label, the max abs and relative difference between a tensor of `first` and
    one of `second` (each request: layer path and `input` or `output`)."""
    from normify.probe import Probe

    probe_first = Probe(first, dict(first_requests.values()))
    probe_second = Probe(second, dict(second_requests.values()))
    worst = {label: [0.0, 0.0] for label in first_requests}
    for inputs in batches:
        values_first, values_second = probe_first(inputs), probe_second(inputs)
        for label in first_requests:
            path_first, path_second = first_requests[label][0], second_requests[label][0]
            for a, b in zip(values_first[path_first], values_second[path_second], strict=True):
                difference = max_difference(abs_difference(a, b))
                worst[label][0] = max(worst[label][0], difference, key=nan_first)
                worst[label][1] = max(worst[label][1], float(np.max(np.abs(a))))
    return {
        label: {"max_abs": diff, "relative": diff / scale if scale > 0 else diff}
        for label, (diff, scale) in worst.items()
    }


def abs_difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|a - b| in float64, 0 where both hold the same value (inf) or both are NaN."""
    import numpy as np

    a64 = np.asarray(a, dtype=np.float64)
    b64 = np.asarray(b, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        diff = np.abs(a64 - b64)
    diff[(a64 == b64) | (np.isnan(a64) & np.isnan(b64))] = 0.0
    return diff


def max_difference(diff: np.ndarray) -> float:
    # np.max propagates NaN, which is what a NaN on one side only deserves.
    import numpy as np

    return float(np.max(diff)) if diff.size else 0.0


def named_outputs(model: Any, inputs: list[np.ndarray], names: list[str]) -> Any:
    """The model's outputs as numpy: a dict when it returns one, else a list in order."""
    import numpy as np

    from normify.backend import keras

    ops = keras().ops
    # Several inputs go by name, so input order inside the two models cannot matter.
    feed = inputs[0] if len(inputs) == 1 else dict(zip(names, inputs, strict=True))
    outputs = model(feed, training=False)
    if isinstance(outputs, dict):
        return {key: np.asarray(ops.convert_to_numpy(value)) for key, value in outputs.items()}
    return [np.asarray(ops.convert_to_numpy(output)) for output in iter_leaves(outputs)]


def paired_outputs(before: Any, after: Any) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(label, original, rewritten) for every output: by name when both return dicts."""
    if isinstance(before, dict) and isinstance(after, dict):
        if set(before) != set(after):
            raise NormifyError(
                f"the models have different outputs: {sorted(before)} in the original, "
                f"{sorted(after)} in the rewritten model"
            )
        pairs = [(str(key), before[key], after[key]) for key in before]
    else:
        old = list(before.values()) if isinstance(before, dict) else before
        new = list(after.values()) if isinstance(after, dict) else after
        if len(old) != len(new):
            raise NormifyError(
                f"the models have different outputs: {len(old)} in the original, "
                f"{len(new)} in the rewritten model"
            )
        pairs = [
            (f"output {index}", a, b) for index, (a, b) in enumerate(zip(old, new, strict=True))
        ]
    for label, a, b in pairs:
        if a.shape != b.shape:
            raise NormifyError(
                f"{label} has shape {a.shape[1:]} in the original but {b.shape[1:]} "
                "in the rewritten model"
            )
    return pairs


@dataclass
class DriftTotal:
    """Drift accumulated batch by batch, so only one batch of outputs is held at a time."""

    max_abs: float = 0.0
    abs_sum: float = 0.0
    count: int = 0
    scale: float = 0.0
    samples: int = 0

    def add(self, pairs: list[tuple[str, np.ndarray, np.ndarray]], samples: int) -> None:
        import numpy as np

        for _, a, b in pairs:
            diff = abs_difference(a, b)
            self.max_abs = max(self.max_abs, max_difference(diff), key=nan_first)
            self.abs_sum += float(np.sum(diff))
            self.count += diff.size
            magnitudes = np.abs(np.asarray(a, dtype=np.float64))
            finite = magnitudes[np.isfinite(magnitudes)]
            if finite.size:
                self.scale = max(self.scale, float(np.max(finite)))
        self.samples += samples

    def result(self, source: str) -> dict[str, Any]:
        return {
            "max_abs": self.max_abs,
            "mean_abs": self.abs_sum / self.count if self.count else 0.0,
            "relative": self.max_abs / self.scale if self.scale > 0 else self.max_abs,
            "samples": self.samples,
            "inputs": source,
        }


def nan_first(value: float) -> float:
    # A NaN difference must survive the running max (max() would drop it by order).
    return math.inf if math.isnan(value) else value


def drift_line(drift: dict[str, Any]) -> str:
    """How every command reports a drift: over how many inputs, of which source."""
    inputs = "data samples" if drift["inputs"] == "data" else "random inputs"
    return (
        f"drift on {drift['samples']} {inputs}: max abs {drift['max_abs']:.3g}, "
        f"mean abs {drift['mean_abs']:.3g}, relative {drift['relative']:.3g}"
    )
