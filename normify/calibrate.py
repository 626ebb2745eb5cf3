"""Setting norm layers from data: calibrated and fresh initialization of inserted norms,
and the exact recalibration of BatchNormalization moving statistics.

Norms are processed level by level: a norm's level is the number of processed norms on
the longest path before it, so every norm sees the already-updated norms upstream, and
norms on one level share one pass over the data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from normify.errors import NormifyError
from normify.flow import build_flow
from normify.graph import from_model
from normify.probe import INPUT, OUTPUT, ChannelMoments, Probe, channel_rows
from normify.reports import PlannedRecalibration  # noqa: F401 (its old home)
from normify.variables import detached

BATCHNORM = "BatchNormalization"


def layer_at(model: Any, path: str) -> Any:
    """The layer at `outer/inner/layer` in a model with nested models."""
    layer = model
    for part in path.split("/"):
        layer = layer.get_layer(part)
    return layer


def norm_levels(model: Any, paths: list[str]) -> list[list[str]]:
    """`paths` grouped so that no norm on a level lies downstream of another on it."""
    flow = build_flow(from_model(model))
    chosen = set(paths)
    level_of_site: dict[str, int] = {}
    level_of_path: dict[str, int] = {}
    for key, site in flow.sites.items():  # sites are in topological order
        level = 0
        for producer, _ in site.inputs:
            producer_site = flow.sites[producer]
            bump = 1 if producer_site.path in chosen else 0
            level = max(level, level_of_site[producer] + bump)
        level_of_site[key] = level
        if site.path in chosen:
            level_of_path[site.path] = max(level_of_path.get(site.path, 0), level)
    grouped: dict[int, list[str]] = {}
    for path in paths:
        grouped.setdefault(level_of_path.get(path, 0), []).append(path)
    return [grouped[level] for level in sorted(grouped)]


@dataclass
class _AffineFit:
    """Per-channel least squares x ≈ g·n + b between a norm's input x and its output n."""

    axis: int
    with_offset: bool
    count: float = 0.0
    sums: dict[str, np.ndarray] | None = None

    def update(self, n: np.ndarray, x: np.ndarray, mask: np.ndarray | None = None) -> None:
        n2, x2 = channel_rows(n, self.axis, mask), channel_rows(x, self.axis, mask)
        batch = {"n": n2.sum(0), "x": x2.sum(0), "nn": (n2 * n2).sum(0), "nx": (n2 * x2).sum(0)}
        if self.sums is None:
            self.sums = batch
        else:
            for key, value in batch.items():
                self.sums[key] += value
        self.count += n2.shape[0]

    def solve(self) -> tuple[np.ndarray, np.ndarray]:
        if self.sums is None:
            raise NormifyError("no data reached the layer being fitted")
        s, c = self.sums, self.count
        if not self.with_offset:
            return s["nx"] / np.maximum(s["nn"], 1e-12), np.zeros_like(s["n"])
        mean_n, mean_x = s["n"] / c, s["x"] / c
        var_n = s["nn"] / c - mean_n**2
        cov = s["nx"] / c - mean_n * mean_x
        gain = np.where(var_n > 1e-12, cov / np.maximum(var_n, 1e-12), 0.0)
        return gain, mean_x - gain * mean_n


def _channel_axis(layer: Any) -> int:
    axis = layer.axis
    return int(axis[0] if isinstance(axis, (list, tuple)) else axis)


def _assign(layer: Any, name: str, value: np.ndarray) -> None:
    for variable in layer.weights:
        if variable.path.rsplit("/", 1)[-1] == name:
            variable.assign(np.asarray(value).reshape(variable.shape).astype(variable.dtype))
            return
    raise KeyError(f"{layer.name} has no variable {name}")


def _value(layer: Any, name: str) -> np.ndarray | None:
    for variable in layer.weights:
        if variable.path.rsplit("/", 1)[-1] == name:
            return detached(variable).astype(np.float64)
    return None


def _stored(layer: Any, name: str) -> np.ndarray:
    value = _value(layer, name)
    if value is None:
        raise KeyError(f"{layer.name} has no variable {name}")
    return value


def _statistics(moments: ChannelMoments, path: str) -> tuple[np.ndarray, np.ndarray]:
    """The mean and variance `moments` gathered for the layer at `path`."""
    if moments.mean is None:
        raise NormifyError(f"{path}: no data reached this layer to compute its statistics from")
    return moments.mean, moments.variance


def initialize_from_data(
    model: Any,
    paths: list[str],
    batches: Callable[[], Any],
    mode: str,
    on_level: Callable[[int, int], None] | None = None,
) -> dict[str, str]:
    """Initialize the inserted norms at `paths` (mode `calibrate` or `fresh`) from data.

    `batches()` returns a fresh iterator of input batches. Returns a note per path.
    """
    notes = {}
    levels = norm_levels(model, paths)
    for index, level in enumerate(levels):
        if on_level:
            on_level(index, len(levels))
        layers = {path: layer_at(model, path) for path in level}
        needs_output = [p for p, layer in layers.items() if type(layer).__name__ != BATCHNORM]
        requests = {path: INPUT for path in level}
        probe_inputs = Probe(model, requests)
        probe_outputs = Probe(model, {p: OUTPUT for p in needs_output}) if needs_output else None
        moments = {p: ChannelMoments(_channel_axis(layers[p])) for p in level}
        fits = {
            p: _AffineFit(_channel_axis(layers[p]), type(layers[p]).__name__ != "RMSNormalization")
            for p in needs_output
        }
        for batch in batches():
            inputs = probe_inputs.with_masks(batch)
            outputs = probe_outputs(batch) if probe_outputs else {}
            for path in level:
                for call, (values, mask) in enumerate(inputs[path]):
                    moments[path].update(values, mask)
                    if path in fits:
                        fits[path].update(outputs[path][call], values, mask)
        for path, layer in layers.items():
            notes[path] = _set_from_statistics(layer, mode, moments[path], fits.get(path), path)
    return notes


def _set_from_statistics(
    layer: Any, mode: str, moments: ChannelMoments, fit: _AffineFit | None, path: str
) -> str:
    if type(layer).__name__ == BATCHNORM:
        mean, variance = _statistics(moments, path)
        _assign(layer, "moving_mean", mean)
        _assign(layer, "moving_variance", variance)
        if mode == "fresh":
            _assign(layer, "gamma", np.ones_like(mean))
            _assign(layer, "beta", np.zeros_like(mean))
            return "gamma 1, beta 0, moving statistics from data"
        # identity at inference: gamma * (z - mean) / sqrt(var + eps) + beta' = z + bias
        moved_bias = _value(layer, "beta")
        _assign(layer, "gamma", np.sqrt(variance + layer.epsilon))
        _assign(layer, "beta", mean + (moved_bias if moved_bias is not None else 0.0))
        return "calibrated: moving statistics, gamma and beta from data"
    if mode == "fresh" or fit is None:
        return "gamma 1, beta 0"
    gain, offset = fit.solve()
    scale_name = "scale" if type(layer).__name__ == "RMSNormalization" else "gamma"
    _assign(layer, scale_name, gain)
    if fit.with_offset and _value(layer, "beta") is not None:
        _assign(layer, "beta", offset)
    return "calibrated: per-channel least-squares gamma and beta"


def fit_replacements(
    original: Any,
    model: Any,
    paths: list[str],
    batches: Callable[[], Any],
    on_level: Callable[[int, int], None] | None = None,
) -> None:
    """Fit each swapped norm layer at `paths` of `model` to reproduce the outputs of the
    layer it replaced in `original`: a BatchNormalization first gets the exact moving
    statistics of its input; then gamma and beta are the per-channel least-squares fit of
    the old outputs on the new layer's normalized outputs."""
    levels = norm_levels(model, paths)
    for index, level in enumerate(levels):
        if on_level:
            on_level(index, len(levels))
        layers = {path: layer_at(model, path) for path in level}
        batchnorms = [p for p, layer in layers.items() if type(layer).__name__ == BATCHNORM]
        if batchnorms:
            recalibrate_batchnorms(model, batchnorms, batches)
        for layer in layers.values():
            for name, value in (("gamma", 1.0), ("scale", 1.0), ("beta", 0.0)):
                if _value(layer, name) is not None:
                    _assign(layer, name, np.full_like(_value(layer, name), value))
        probe_new = Probe(model, {path: OUTPUT for path in level})
        probe_old = Probe(original, {path: OUTPUT for path in level})
        fits = {
            p: _AffineFit(_channel_axis(layer), _value(layer, "beta") is not None)
            for p, layer in layers.items()
        }
        for batch in batches():
            normalized, targets = probe_new.with_masks(batch), probe_old(batch)
            for path in level:
                for (n, mask), y in zip(normalized[path], targets[path], strict=True):
                    fits[path].update(n, y, mask)
        for path, layer in layers.items():
            gain, offset = fits[path].solve()
            scale_name = "scale" if _value(layer, "scale") is not None else "gamma"
            if _value(layer, scale_name) is not None:
                _assign(layer, scale_name, gain)
            if _value(layer, "beta") is not None:
                _assign(layer, "beta", offset)


@dataclass(frozen=True)
class StatisticsChange:
    """How far recalibration moved one BatchNormalization's moving statistics."""

    path: str
    mean_change: float
    variance_change: float
    variance_ratio: float

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "max_abs_mean_change": self.mean_change,
            "max_abs_variance_change": self.variance_change,
            "max_variance_ratio": self.variance_ratio,
        }

    def describe(self) -> str:
        return (
            f"recalibrate {self.path}: moving mean moved up to {self.mean_change:.3g}, "
            f"variance up to {self.variance_change:.3g} (ratio up to {self.variance_ratio:.3g})"
        )


def recalibrate_batchnorms(
    model: Any,
    paths: list[str],
    batches: Callable[[], Any],
    on_level: Callable[[int, int], None] | None = None,
) -> list[StatisticsChange]:
    """Replace the moving statistics of the BatchNormalizations at `paths` by the exact
    mean and variance of their inputs over all data, upstream layers first."""
    changes = []
    levels = norm_levels(model, paths)
    for index, level in enumerate(levels):
        if on_level:
            on_level(index, len(levels))
        layers = {path: layer_at(model, path) for path in level}
        probe = Probe(model, {path: INPUT for path in level})
        moments = {path: ChannelMoments(_channel_axis(layers[path])) for path in level}
        for batch in batches():
            for path, pairs in probe.with_masks(batch).items():
                for values, mask in pairs:
                    moments[path].update(values, mask)
        for path, layer in layers.items():
            old_mean = _stored(layer, "moving_mean")
            old_variance = _stored(layer, "moving_variance")
            mean, variance = _statistics(moments[path], path)
            _assign(layer, "moving_mean", mean)
            _assign(layer, "moving_variance", variance)
            ratio = np.maximum(variance, 1e-12) / np.maximum(old_variance, 1e-12)
            changes.append(
                StatisticsChange(
                    path,
                    float(np.max(np.abs(mean - old_mean))),
                    float(np.max(np.abs(variance - old_variance))),
                    float(np.max(np.maximum(ratio, 1 / ratio))),
                )
            )
    return changes
