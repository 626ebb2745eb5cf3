"""Checking, from shapes alone, that the weights a file stores fit its model config.

A file whose config says `Dense(units=15)` but stores a (16, 16) kernel fails when Keras
builds the model, with an error that names a variable, not the layer; a file that only
`normify audit` reads would pass. Each layer's weight shapes follow from its config (a
dimension the config does not fix, such as a kernel's input size, is left open) and are
compared with the stored shapes, read without a backend (`normify.hdf5`). Layers whose
stored layout a translation rule changes (Keras 1, cuDNN) and classes not listed here are
not checked.
"""

from __future__ import annotations

import re
from typing import Any

from normify.formats.base import is_entry, is_model_entry, layer_name, layers_of

Shape = tuple[int | None, ...]

RECURRENT_GATES = {"LSTM": 4, "GRU": 3, "SimpleRNN": 1}


def expected_shapes(class_name: str, config: dict[str, Any]) -> list[Shape] | None:
    """The shapes of a layer's weights in Keras' legacy order, None where unknown."""
    if class_name == "Dense":
        units = _int(config.get("units"))
        return [(None, units)] + ([(units,)] if config.get("use_bias", True) else [])
    if class_name in ("Conv1D", "Conv2D", "Conv3D", "Conv1DTranspose", "Conv2DTranspose",
                      "Conv3DTranspose"):  # fmt: skip
        sizes = _sizes(config.get("kernel_size"))
        filters = _int(config.get("filters"))
        if sizes is None:
            return None
        kernel = (*sizes, filters, None) if "Transpose" in class_name else (*sizes, None, filters)
        return [kernel] + ([(filters,)] if config.get("use_bias", True) else [])
    if class_name in ("DepthwiseConv1D", "DepthwiseConv2D"):
        sizes = _sizes(config.get("kernel_size"))
        if sizes is None:
            return None
        kernel = (*sizes, None, _int(config.get("depth_multiplier", 1)))
        return [kernel] + ([(None,)] if config.get("use_bias", True) else [])
    if class_name in ("SeparableConv1D", "SeparableConv2D"):
        sizes = _sizes(config.get("kernel_size"))
        filters = _int(config.get("filters"))
        if sizes is None:
            return None
        depthwise = (*sizes, None, _int(config.get("depth_multiplier", 1)))
        pointwise = (*(1 for _ in sizes), None, filters)
        return [depthwise, pointwise] + ([(filters,)] if config.get("use_bias", True) else [])
    if class_name == "Embedding":
        return [(_int(config.get("input_dim")), _int(config.get("output_dim")))]
    if class_name == "BatchNormalization":
        count = int(config.get("scale", True) is not False) + int(
            config.get("center", True) is not False
        )
        return [(None,)] * (count + 2)
    if class_name in RECURRENT_GATES:
        units = _int(config.get("units"))
        width = None if units is None else units * RECURRENT_GATES[class_name]
        shapes: list[Shape] = [(None, width), (units, width)]
        if config.get("use_bias", True):
            reset_after = class_name == "GRU" and config.get("reset_after", True)
            shapes.append((2, width) if reset_after else (width,))
        return shapes
    return None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _sizes(value: Any) -> tuple[int | None, ...] | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return (value,)
    if isinstance(value, list) and all(isinstance(v, int) for v in value):
        return tuple(value)
    return None


def _layer_shapes(entry: dict[str, Any]) -> list[Shape] | None:
    """Expected shapes of a layer entry, wrappers unwrapped."""
    class_name, config = entry["class_name"], entry["config"]
    if not isinstance(config, dict):
        return None
    inner = config.get("layer")
    if class_name == "TimeDistributed" and is_entry(inner):
        return _layer_shapes(inner)
    if class_name == "Bidirectional" and is_entry(inner):
        forward = _layer_shapes(inner)
        backward_entry = config.get("backward_layer")
        backward = _layer_shapes(backward_entry) if is_entry(backward_entry) else forward
        return None if forward is None or backward is None else forward + backward
    return expected_shapes(class_name, config)


def misfit(expected: list[Shape], stored: list[tuple[str, Any]]) -> str | None:
    """What does not fit between expected shapes and stored (name, shape) pairs."""
    if len(expected) != len(stored):
        return f"the file stores {len(stored)} weight(s) where its config needs {len(expected)}"
    for want, (name, have) in zip(expected, stored, strict=True):
        if have is None:
            continue
        if len(want) != len(have) or any(
            w is not None and w != h for w, h in zip(want, have, strict=False)
        ):
            shown = "(" + ", ".join("?" if w is None else str(w) for w in want) + ")"
            return (
                f"the file stores {_short(name)} of shape {tuple(have)} where its config "
                f"needs {shown}"
            )
    return None


def _short(name: str) -> str:
    return name.rsplit("/", 1)[-1].split(":")[0] or name


# ------------------------------------------------------------------- legacy .h5 files


def check_legacy(
    config: dict[str, Any], stored: dict[str, list[tuple[str, Any]]], skip: set[str]
) -> str | None:
    """The first layer of a Keras 2 `.h5` file whose stored weights do not fit (`path:
    reason`), or None. `stored` maps the weights group's layers to (name, shape) pairs;
    `skip` holds the paths a weight rule translates."""
    layers = {layer_name(entry): entry for entry in layers_of(config) or [] if is_entry(entry)}
    for name, weights in stored.items():
        entry = layers.get(name)
        if entry is None or name in skip:
            continue
        if is_model_entry(entry):
            found = _check_nested(entry, weights, f"{name}/", skip)
            if found is not None:
                return found
            continue
        shapes = _layer_shapes(entry)
        problem = misfit(shapes, weights) if shapes is not None else None
        if problem is not None:
            return f"layer {name!r} ({entry['class_name']}): {problem}"
    return None


def _check_nested(
    model: dict[str, Any], weights: list[tuple[str, Any]], prefix: str, skip: set[str]
) -> str | None:
    """A nested model's weights are all in its group, named `<layer>/...`: each inner
    layer's, by the first part of their names that names one of its layers."""
    inner = _leaf_layers(model, prefix)
    grouped: dict[str, list[tuple[str, Any]]] = {}
    for name, shape in weights:
        owner = next((part for part in name.split("/") if part in inner), None)
        if owner is None:
            return None  # names this check cannot attribute: leave it to the loader
        grouped.setdefault(owner, []).append((name, shape))
    for owner, pairs in grouped.items():
        path, entry = inner[owner]
        shapes = _layer_shapes(entry)
        if shapes is None or path in skip:
            continue
        problem = misfit(shapes, pairs)
        if problem is not None:
            return f"layer {path!r} ({entry['class_name']}): {problem}"
    return None


def _leaf_layers(model: dict[str, Any], prefix: str) -> dict[str, tuple[str, dict[str, Any]]]:
    found: dict[str, tuple[str, dict[str, Any]]] = {}
    for entry in layers_of(model) or []:
        if not is_entry(entry):
            continue
        name = layer_name(entry)
        if is_model_entry(entry):
            found.update(_leaf_layers(entry, f"{prefix}{name}/"))
        else:
            found.setdefault(name, (prefix + name, entry))
    return found


# ------------------------------------------------------------------- Keras 3 archives


def _snake(name: str) -> str:
    """Keras 3's `to_snake_case`: how it names a layer's weights group after its class."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    name = re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()
    return name


def check_archive(config: dict[str, Any], datasets: dict[str, tuple[int, ...]]) -> str | None:
    """The first layer of a Keras 3 `.keras` file whose stored weights do not fit, or
    None. `datasets` maps `layers/<group>/vars/<i>` paths to shapes."""
    # the datasets by the group holding them, so each layer finds its own at once
    groups: dict[str, list[tuple[str, tuple[int, ...]]]] = {}
    for key, shape in datasets.items():
        groups.setdefault(key.rsplit("/", 1)[0], []).append((key, shape))
    return _check_groups(config, groups, "", "layers")


def _check_groups(
    model: dict[str, Any],
    groups: dict[str, list[tuple[str, tuple[int, ...]]]],
    prefix: str,
    group: str,
) -> str | None:
    used: dict[str, int] = {}
    for entry in layers_of(model) or []:
        if not is_entry(entry) or entry["class_name"] == "InputLayer" or _is_op(entry):
            continue
        base = _snake(entry["class_name"])
        used[base] = used.get(base, -1) + 1
        path = f"{group}/{base}" + (f"_{used[base]}" if used[base] else "")
        name = prefix + layer_name(entry)
        if is_model_entry(entry):
            found = _check_groups(entry, groups, f"{name}/", f"{path}/layers")
            if found is not None:
                return found
            continue
        if (
            entry["class_name"] not in RECURRENT_GATES
            and entry["class_name"] != "Dense"
            and (expected_shapes(entry["class_name"], entry["config"]) is None)
        ):
            continue
        variables = (
            f"{path}/cell/vars" if entry["class_name"] in RECURRENT_GATES else f"{path}/vars"
        )
        stored = sorted(
            groups.get(variables, ()),
            key=lambda item: (
                int(item[0].rsplit("/", 1)[-1]) if item[0].rsplit("/", 1)[-1].isdigit() else -1
            ),
        )
        shapes = expected_shapes(entry["class_name"], entry["config"])
        if shapes is None or not stored and not shapes:
            continue
        if not stored:
            return None  # no group where Keras would put it: a layout this check misreads
        problem = misfit(shapes, stored)
        if problem is not None:
            return f"layer {name!r} ({entry['class_name']}): {problem}"
    return None


def _is_op(entry: dict[str, Any]) -> bool:
    return str(entry.get("module") or "").startswith("keras.src.ops")
