"""Reading the tensors that flow into or out of layers, including inside nested models.

A Keras model cannot expose a tensor of a nested model directly, so a `Probe` builds one
model per nesting level: it outputs the requested tensors of that level and the inputs of
the nested models that hold further requests, which are fed to the nested level's probe.
A layer called several times yields one array per call.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np

from normify.errors import NormifyError
from normify.graph import iter_leaves

INPUT = "input"
OUTPUT = "output"


@dataclass
class _Level:
    model: Any  # the probe model of this level (None when nothing is requested here)
    # In probe output order: ("local", path) for one tensor of this level, or
    # ("nested", (probe, count)) for the `count` inputs of a nested model's call.
    order: list[tuple[str, Any]]


class Probe:
    """Maps a batch of model inputs to the input or output tensors of chosen layers."""

    def __init__(self, model: Any, requests: dict[str, str]) -> None:
        from normify.backend import keras

        self.keras = keras()
        self.model = model
        self.level = self._build(model, requests)

    def _build(self, model: Any, requests: dict[str, str]) -> _Level:
        graph_model = getattr(model, "_functional", None) or model
        nodes = [node for level in graph_model._nodes_by_depth.values() for node in level]
        local_requests = {p: side for p, side in requests.items() if "/" not in p}
        nested_requests: dict[str, dict[str, str]] = defaultdict(dict)
        for path, side in requests.items():
            if "/" in path:
                head, rest = path.split("/", 1)
                nested_requests[head][rest] = side
        outputs: list[Any] = []
        order: list[tuple[str, Any]] = []
        found: set[str] = set()
        for node in nodes:
            name = getattr(node.operation, "name", None)
            if name in local_requests:
                side = local_requests[name]
                tensor = (node.input_tensors if side == INPUT else node.output_tensors)[0]
                # Keras attaches the mask of a symbolic tensor as `_keras_mask`; statistics
                # over masked steps must leave the padding out, as Keras' own layers do.
                mask = getattr(tensor, "_keras_mask", None)
                outputs.append(tensor)
                if mask is not None:
                    outputs.append(mask)
                order.append(("local", (name, mask is not None)))
                found.add(name)
            if name in nested_requests and node.input_tensors:
                sub_probe = Probe(node.operation, nested_requests[name])
                # the nested model's inputs are its positional arguments; a recorded
                # `mask=` keyword is not one of them
                inputs = _keras_tensors(node.arguments.args)
                outputs.extend(inputs)
                order.append(("nested", (sub_probe, len(inputs))))
                found.add(name)
        missing = (set(local_requests) | set(nested_requests)) - found
        if missing:
            raise ValueError(f"layers not found in {model.name}: {sorted(missing)}")
        probe_model = self.keras.Model(graph_model.inputs, outputs) if outputs else None
        return _Level(probe_model, order)

    def __call__(self, batch: list[np.ndarray]) -> dict[str, list[np.ndarray]]:
        """Path -> one array per call of the layer."""
        return {
            path: [values for values, _ in pairs] for path, pairs in self.with_masks(batch).items()
        }

    def with_masks(
        self, batch: list[np.ndarray]
    ) -> dict[str, list[tuple[np.ndarray, np.ndarray | None]]]:
        """Path -> (array, mask or None) per call of the layer."""
        found: dict[str, list[tuple[np.ndarray, np.ndarray | None]]] = defaultdict(list)
        if self.level.model is None:
            return found
        values = self.level.model(list(batch), training=False)
        values = list(values) if isinstance(values, (list, tuple)) else [values]
        arrays = [np.asarray(self.keras.ops.convert_to_numpy(value)) for value in values]
        position = 0
        for kind, item in self.level.order:
            if kind == "local":
                name, has_mask = item
                mask = arrays[position + 1] if has_mask else None
                found[name].append((arrays[position], mask))
                position += 2 if has_mask else 1
                continue
            sub_probe, count = item
            prefix = sub_probe.model.name + "/"
            inner = sub_probe.with_masks(arrays[position : position + count])
            for path, pairs in inner.items():
                found[prefix + path].extend(pairs)
            position += count
        return found


def _keras_tensors(structure: Any) -> list[Any]:
    from keras import KerasTensor

    return [leaf for leaf in iter_leaves(structure) if isinstance(leaf, KerasTensor)]


def channel_rows(values: np.ndarray, axis: int, mask: np.ndarray | None = None) -> np.ndarray:
    """The values as (positions, channels) in float64, leaving out masked positions (a
    mask covers the leading dimensions, e.g. batch and time)."""
    moved = np.moveaxis(np.asarray(values, dtype=np.float64), axis, -1)
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape == moved.shape[: mask.ndim]:
            moved = moved[mask]
    return moved.reshape(-1, moved.shape[-1])


class ChannelMoments:
    """Exact per-channel mean and population variance over all data, reduced over every
    axis but the channel axis, merged batch by batch in float64 (Chan et al.)."""

    def __init__(self, axis: int) -> None:
        self.axis = axis
        self.count = 0
        self.mean: np.ndarray | None = None
        self.squared_deviations: np.ndarray | None = None

    def update(self, values: np.ndarray, mask: np.ndarray | None = None) -> None:
        flat = channel_rows(values, self.axis, mask)
        count = flat.shape[0]
        if count == 0:
            return
        mean = flat.mean(axis=0)
        squared = np.square(flat - mean).sum(axis=0)
        if self.mean is None or self.squared_deviations is None:
            self.count, self.mean, self.squared_deviations = count, mean, squared
            return
        total = self.count + count
        delta = mean - self.mean
        self.mean = self.mean + delta * count / total
        self.squared_deviations = (
            self.squared_deviations + squared + np.square(delta) * self.count * count / total
        )
        self.count = total

    @property
    def variance(self) -> np.ndarray:
        if self.squared_deviations is None or not self.count:
            raise NormifyError("no data reached this layer to compute its statistics from")
        return self.squared_deviations / self.count
