"""`verify`: the check a user runs to trust a rewrite.

It compares two models variable by variable and layer by layer, then measures how far the
rewritten model's predictions are from the original's. Nothing is taken on trust from
normify's own bookkeeping (no `Insertion` records, no graph): both models are read as
Keras sees them, so a bug in a rewrite cannot hide itself from its own check.

Variables are matched by layer path and key, never by position. A variable that left its
layer is looked for, bit for bit, everywhere in the rewritten model, so a Dense bias that
became a BatchNormalization's beta is reported as moved, not lost.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from normify.drift import (
    DriftTotal,
    abs_difference,
    drift_line,
    max_difference,
    named_outputs,
    paired_outputs,
)
from normify.errors import NormifyError
from normify.keras_internals import keras_history
from normify.variables import detached, variable_key

CARRIED = "carried"
CHANGED = "changed"
MOVED = "moved"
REMOVED = "removed"
ADDED = "added"
STATUSES = (CARRIED, CHANGED, MOVED, REMOVED, ADDED)

ModelOrPath = Any  # keras.Model | str | os.PathLike


@dataclass
class WeightComparison:
    """One variable of either model and what became of it.

    `shape` and `dtype` are the original's (the rewritten one's for an added variable);
    `new_shape` / `new_dtype` are set only for a changed variable whose shape or dtype
    differ. `max_abs_diff` is set for a changed variable whose shape is unchanged.
    """

    layer: str
    key: str
    status: str
    shape: tuple[int, ...]
    dtype: str
    max_abs_diff: float | None = None
    new_shape: tuple[int, ...] | None = None
    new_dtype: str | None = None
    moved_to: str | None = None  # moved: `layer/key` of the rewritten variable holding it
    moved_from: str | None = None  # added: `layer/key` of the original variable it holds

    @property
    def path(self) -> str:
        return f"{self.layer}/{self.key}"

    def to_json(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "key": self.key,
            "status": self.status,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "max_abs_diff": self.max_abs_diff,
            "new_shape": None if self.new_shape is None else list(self.new_shape),
            "new_dtype": self.new_dtype,
            "moved_to": self.moved_to,
            "moved_from": self.moved_from,
        }


@dataclass
class VerifyReport:
    """Every variable's fate, the layers only one model has, and the measured drift."""

    original: str
    rewritten: str
    weights: list[WeightComparison]
    layers_added: list[str]
    layers_removed: list[str]
    drift: dict[str, Any]
    tolerance: float | None = None

    @property
    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(STATUSES, 0)
        for comparison in self.weights:
            counts[comparison.status] += 1
        return counts

    @property
    def passed(self) -> bool:
        """Relative drift within the tolerance; always true without one.

        Weight differences alone never fail: a rewrite is allowed to change weights (that
        is what a norm that cannot start as an identity does); predictions are what count.
        """
        if self.tolerance is None:
            return True
        relative = self.drift["relative"]
        return not math.isnan(relative) and relative <= self.tolerance

    def to_json(self) -> dict[str, Any]:
        return {
            "original": self.original,
            "rewritten": self.rewritten,
            "counts": self.counts,
            "weights": [comparison.to_json() for comparison in self.weights],
            "layers_added": list(self.layers_added),
            "layers_removed": list(self.layers_removed),
            "drift": dict(self.drift),
            "tolerance": self.tolerance,
            "passed": self.passed,
        }


def verify(
    original: ModelOrPath,
    rewritten: ModelOrPath,
    *,
    data: Any = None,
    tolerance: float | None = None,
    batch_size: int = 64,
    max_samples: int = 1024,
    safe_mode: bool = True,
    custom_objects: dict[str, Any] | None = None,
) -> VerifyReport:
    """Compare `rewritten` with `original`: variables, layers and output drift.

    Args:
        original, rewritten: a `keras.Model`, or a path to a `.keras` or `.h5` file.
        data: calibration data for the drift (anything `normify.data.load_data` reads);
            without it, seeded random inputs built from the original's input specs.
        tolerance: the largest relative drift (max abs difference over the original's
            largest absolute output) for `passed`; None checks nothing.
        batch_size, max_samples: how `data` is batched and how much of it is used.
        safe_mode, custom_objects: as for `normify.add`, for the files loaded here.

    Raises:
        NormifyError: when a file cannot be loaded, the models' inputs differ, or their
            outputs cannot be paired (different count, names or shapes).
    """
    before, original_name = _load(original, safe_mode, custom_objects)
    after, rewritten_name = _load(rewritten, safe_mode, custom_objects)
    _require_same_inputs(before, after)
    before_layers, after_layers = _layer_paths(before), _layer_paths(after)
    return VerifyReport(
        original=original_name,
        rewritten=rewritten_name,
        weights=_compare_weights(_variables(before_layers), _variables(after_layers)),
        layers_added=[path for path in after_layers if path not in before_layers],
        layers_removed=[path for path in before_layers if path not in after_layers],
        drift=_drift(before, after, data, batch_size, max_samples),
        tolerance=tolerance,
    )


# ----------------------------------------------------------------------------- models


def _load(
    model_or_path: ModelOrPath, safe_mode: bool, custom_objects: dict[str, Any] | None
) -> tuple[Any, str]:
    if isinstance(model_or_path, (str, os.PathLike)):
        from normify.loading import load_model

        loaded = load_model(model_or_path, safe_mode=safe_mode, custom_objects=custom_objects)
        return loaded.model, str(loaded.path)
    return model_or_path, model_or_path.name


# An input's name, shape and dtype.
_InputSpec = tuple[str, tuple[int | None, ...], str]


def _input_specs(model: Any) -> list[_InputSpec]:
    return [
        (keras_history(tensor)[0].name, tuple(tensor.shape), str(tensor.dtype))
        for tensor in model.inputs
    ]


def _require_same_inputs(original: Any, rewritten: Any) -> None:
    """Drift is only meaningful when both models take exactly the same inputs."""
    before, after = _input_specs(original), _input_specs(rewritten)
    if len(before) != len(after):
        raise NormifyError(
            f"the models take different inputs: {len(before)} input(s) in the original, "
            f"{len(after)} in the rewritten model"
        )
    if len(before) == 1:
        # A lone input is fed by position, so only its shape and dtype matter; Keras
        # names unnamed inputs itself (`input_layer_3`), which differs between equal models.
        pairs: list[tuple[_InputSpec, _InputSpec | None]] = [(before[0], after[0])]
    else:
        # Several inputs are fed by name (see `_outputs`), so their order may differ.
        by_name = {spec[0]: spec for spec in after}
        pairs = [(old, by_name.get(old[0])) for old in before]
    for old, new in pairs:
        if new is None or old[1:] != new[1:]:
            found = "no input of that name" if new is None else _describe_input(new)
            raise NormifyError(
                f"the models take different inputs: {_describe_input(old)} in the original, "
                f"{found} in the rewritten model"
            )


def _describe_input(spec: tuple[str, tuple[int | None, ...], str]) -> str:
    name, shape, dtype = spec
    return f"{name} {tuple(shape)} {dtype}"


def _is_graph_model(layer: Any) -> bool:
    """A Functional or Sequential model, whose layers have paths of their own.

    Other models (subclasses) are opaque: they own their variables like a layer does,
    which is how normify's graph sees them too.
    """
    cls = type(layer)
    return cls.__name__ in ("Functional", "Sequential") and cls.__module__.startswith("keras")


def _layer_paths(model: Any, prefix: str = "") -> dict[str, Any]:
    """Every layer of `model` and of its nested models, keyed `outer/inner/layer`."""
    found: dict[str, Any] = {}
    for layer in model.layers:
        path = prefix + layer.name
        found[path] = layer
        if _is_graph_model(layer):
            found.update(_layer_paths(layer, path + "/"))
    return found


@dataclass
class _Variable:
    layer: str
    key: str
    value: np.ndarray
    trainable: bool
    digest: bytes = field(init=False)

    def __post_init__(self) -> None:
        self.digest = _digest(self.value)

    @property
    def path(self) -> str:
        return f"{self.layer}/{self.key}"


def _digest(value: np.ndarray) -> bytes:
    """A fingerprint of dtype, shape and bits, so bit-exact copies are found by lookup."""
    import hashlib

    import numpy as np

    hasher = hashlib.blake2b(digest_size=16)
    hasher.update(f"{value.dtype.str}{value.shape}".encode())
    hasher.update(np.ascontiguousarray(value).tobytes())
    return hasher.digest()


def _variables(layers: dict[str, Any]) -> dict[tuple[str, str], _Variable]:
    """Every variable keyed (layer path, key), in model order; nested models contribute
    their layers' variables under those layers' own paths."""

    found: dict[tuple[str, str], _Variable] = {}
    for path, layer in layers.items():
        if _is_graph_model(layer):
            continue
        for variable in layer.weights:
            key = _unique_key(variable_key(layer, variable), path, found)
            value = detached(variable)
            found[(path, key)] = _Variable(path, key, value, bool(variable.trainable))
    return found


def _unique_key(key: str, path: str, taken: dict[tuple[str, str], _Variable]) -> str:
    # Two variables of one layer with the same path would otherwise overwrite each other.
    unique, counter = key, 1
    while (path, unique) in taken:
        counter += 1
        unique = f"{key}#{counter}"
    return unique


# ---------------------------------------------------------------------------- weights


def _compare_weights(
    before: dict[tuple[str, str], _Variable], after: dict[tuple[str, str], _Variable]
) -> list[WeightComparison]:
    """One comparison per original variable (in model order), then the added ones."""
    comparisons: dict[tuple[str, str], WeightComparison] = {}
    missing = []
    for location, old in before.items():
        new = after.get(location)
        if new is None:
            missing.append(old)
        else:
            comparisons[location] = _compare_present(old, new)
    claimed: set[tuple[str, str]] = set(comparisons)
    moved_from: dict[tuple[str, str], str] = {}
    for old in missing:
        target = _find_copy(old, after, claimed)
        if target is None:
            comparisons[(old.layer, old.key)] = _comparison(old, REMOVED)
            continue
        claimed.add((target.layer, target.key))
        moved_from.setdefault((target.layer, target.key), old.path)
        comparisons[(old.layer, old.key)] = _comparison(old, MOVED, moved_to=target.path)
    ordered = [comparisons[location] for location in before]
    for location, new in after.items():
        if location not in before:
            ordered.append(_comparison(new, ADDED, moved_from=moved_from.get(location)))
    return ordered


def _comparison(variable: _Variable, status: str, **details: Any) -> WeightComparison:
    value = variable.value
    return WeightComparison(
        variable.layer, variable.key, status, tuple(value.shape), str(value.dtype), **details
    )


def _bit_exact(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def _compare_present(old: _Variable, new: _Variable) -> WeightComparison:
    a, b = old.value, new.value
    if _bit_exact(a, b):
        return _comparison(old, CARRIED)
    return _comparison(
        old,
        CHANGED,
        max_abs_diff=max_difference(abs_difference(a, b)) if a.shape == b.shape else None,
        new_shape=None if a.shape == b.shape else tuple(b.shape),
        new_dtype=None if a.dtype == b.dtype else str(b.dtype),
    )


def _find_copy(
    old: _Variable, after: dict[tuple[str, str], _Variable], claimed: set[tuple[str, str]]
) -> _Variable | None:
    """The rewritten variable most plausibly holding `old`'s exact values, or None.

    Constant values (a zero bias, a fresh moving mean) have many bit-exact copies, so
    copies nobody else accounts for come first, then those in a layer named after the old
    one (`dense` -> `dense_bn`, `dense_core`), then the same trainability and key.
    """
    copies = [
        (index, new)
        for index, new in enumerate(after.values())
        if new.digest == old.digest and _bit_exact(new.value, old.value)
    ]
    if not copies:
        return None

    def rank(item: tuple[int, _Variable]) -> tuple[bool, bool, bool, bool, int]:
        index, new = item
        return (
            (new.layer, new.key) in claimed,
            not new.layer.startswith(old.layer),
            new.trainable != old.trainable,
            new.key != old.key,
            index,
        )

    return min(copies, key=rank)[1]


# ------------------------------------------------------------------------------ drift


def _drift(
    original: Any, rewritten: Any, data: Any, batch_size: int, max_samples: int
) -> dict[str, Any]:
    """Max abs, mean abs (over every output element) and relative output difference."""
    import numpy as np

    batches, source = _input_batches(original, data, batch_size, max_samples)
    names = [spec[0] for spec in _input_specs(original)]
    total = DriftTotal()
    for inputs in batches:
        pairs = paired_outputs(
            named_outputs(original, inputs, names), named_outputs(rewritten, inputs, names)
        )
        total.add(pairs, int(np.shape(inputs[0])[0]))
    if total.samples == 0:
        raise NormifyError("the data holds no samples to measure drift on")
    return total.result(source)


def _input_batches(
    model: Any, data: Any, batch_size: int, max_samples: int
) -> tuple[Iterable[list[np.ndarray]], str]:
    if data is None:
        from normify.drift import random_inputs

        return [random_inputs(model)], "random"
    from normify.data import input_specs, load_data

    loaded = load_data(data, input_specs(model), batch_size=batch_size, max_samples=max_samples)
    return loaded.batches(), "data"


# ----------------------------------------------------------------------------- render


def render(report: VerifyReport) -> list[str]:
    """The lines `normify verify` prints: counts, every variable that is not carried
    as it was, the layers only one model has, the drift and the verdict."""
    lines = [
        f"original:  {report.original}",
        f"rewritten: {report.rewritten}",
        "weights: " + ", ".join(f"{count} {status}" for status, count in report.counts.items()),
    ]
    added_layers = set(report.layers_added)
    for comparison in report.weights:
        line = _weight_line(comparison, added_layers)
        if line is not None:
            lines.append(line)
    lines.append(_layers_line("layers added", report.layers_added))
    lines.append(_layers_line("layers removed", report.layers_removed))
    lines.append(drift_line(report.drift))
    lines.append(_verdict_line(report))
    return lines


def _weight_line(comparison: WeightComparison, added_layers: set[str]) -> str | None:
    status, path = comparison.status, comparison.path
    if status == MOVED:
        return f"  moved    {path} -> {comparison.moved_to}"
    if status == REMOVED:
        return f"  removed  {path} {_shape_text(comparison.shape)} {comparison.dtype}"
    if status == CHANGED:
        return f"  changed  {path}: {_change_text(comparison)}"
    if status == ADDED and comparison.layer not in added_layers:
        # Variables of new layers are implied by "layers added"; a new variable in an
        # existing layer is a surprise worth its own line.
        source = f" (holds {comparison.moved_from})" if comparison.moved_from else ""
        return f"  added    {path} {_shape_text(comparison.shape)} {comparison.dtype}{source}"
    return None


def _change_text(comparison: WeightComparison) -> str:
    parts = []
    if comparison.new_shape is not None:
        parts.append(
            f"shape {_shape_text(comparison.shape)} -> {_shape_text(comparison.new_shape)}"
        )
    if comparison.new_dtype is not None:
        parts.append(f"dtype {comparison.dtype} -> {comparison.new_dtype}")
    if comparison.max_abs_diff is not None:
        difference = f"max abs diff {comparison.max_abs_diff:.6g}"
        if comparison.max_abs_diff == 0:
            difference += " (equal values, different bits: -0.0 or NaN payloads)"
        parts.append(difference)
    return ", ".join(parts)


def _shape_text(shape: tuple[int, ...]) -> str:
    return str(tuple(shape))


def _layers_line(title: str, paths: list[str]) -> str:
    return f"{title}: {', '.join(paths) if paths else 'none'}"


def _verdict_line(report: VerifyReport) -> str:
    relative = report.drift["relative"]
    if report.tolerance is None:
        return f"no tolerance given: relative drift {relative:.6g} was not checked"
    if report.passed:
        return f"PASS: relative drift {relative:.6g} <= tolerance {report.tolerance:g}"
    return f"FAIL: relative drift {relative:.6g} > tolerance {report.tolerance:g}"
