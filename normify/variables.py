"""Variables by key, and copying them between layers exactly.

A variable is matched by its path relative to its layer (`kernel`,
`lstm_cell/recurrent_kernel`), never by position, except where Keras' auto-numbering
makes keys differ after recreation. Values cross between layers as detached host copies
(`detached`): a JAX buffer may be deleted or donated, and a PyTorch tensor that requires
grad cannot become NumPy, so no two variables ever share a buffer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from normify.errors import NormifyError


class VariableError(NormifyError):
    """A layer's variables do not match the variables they are copied into."""


def detached(value: Any) -> Any:
    """A NumPy copy of a variable's (or a backend tensor's) value, sharing no memory."""
    import numpy as np

    from normify.backend import keras

    if hasattr(value, "value") and hasattr(value, "assign"):
        value = value.value
    return np.array(keras().ops.convert_to_numpy(value), copy=True)


def variable_key(layer: Any, variable: Any) -> str:
    """A variable's path relative to its layer: `kernel`, `lstm_cell/recurrent_kernel`."""
    parts = variable.path.split("/")
    if layer.name in parts:
        return "/".join(parts[parts.index(layer.name) + 1 :])
    return variable.path


def variables_by_key(layer: Any) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for variable in layer.weights:
        key = variable_key(layer, variable)
        if key in found:
            raise VariableError(f"layer {layer.name} has two variables keyed {key!r}")
        found[key] = variable
    return found


def find_variable(layer: Any, key: str) -> Any:
    """The variable of `layer` keyed `key`, or the only one whose key ends in `/key`
    (a wrapped layer's `bias` is keyed `dense/bias` in its TimeDistributed)."""
    variables = variables_by_key(layer)
    if key in variables:
        return variables[key]
    matches = [v for k, v in variables.items() if k.endswith("/" + key)]
    if len(matches) != 1:
        raise VariableError(f"layer {layer.name} has no single variable {key!r}")
    return matches[0]


def copy_recreated_variables(
    source: Any, target: Any, skip: Callable[[Any], bool] = lambda variable: False
) -> None:
    """Copy all variables into an unchanged layer recreated from its own config.

    Matched by key where the keys agree. Some layers name their variables with Keras'
    auto-numbering (`variable_18`), which differs after recreation; the same class built
    from the same config creates the same variables in the same order, so for those the
    order is used, with every shape checked.
    """
    source_vars, target_vars = variables_by_key(source), variables_by_key(target)
    if set(source_vars) == set(target_vars):
        copy_variables(source, target, require_all=True, skip=skip)
        return
    if len(source.weights) != len(target.weights):
        raise VariableError(f"layer {source.name}: variables differ after recreation")
    for original, variable in zip(source.weights, target.weights, strict=True):
        if tuple(original.shape) != tuple(variable.shape):
            raise VariableError(f"layer {source.name}: variable shapes differ after recreation")
        if not skip(variable):
            variable.assign(detached(original))


def carry_variables(
    source: Any, target: Any, skip: Callable[[Any], bool] = lambda variable: False
) -> None:
    """Carry the variables of a layer into its modified version, by key.

    A modified layer may have lost variables (a bias moved into a BatchNormalization,
    norm parameters dropped by strip) or gained some (norm parameters of a converted
    recurrent layer), never both: so every variable of one side must find its match, or
    weights would be silently lost. Keys are relative to the layer; where Keras scoped a
    nested cell's variables differently (`stacked_rnn_cells/lstm_cell/kernel` against
    `lstm_cell/kernel` once rebuilt from a config), a unique suffix match decides.
    """
    source_vars, target_vars = variables_by_key(source), variables_by_key(target)
    pairs = {key: key for key in target_vars if key in source_vars}
    unmatched_sources = set(source_vars) - set(pairs.values())
    for key in set(target_vars) - set(pairs):
        found = [
            other
            for other in unmatched_sources
            if other.endswith("/" + key) or key.endswith("/" + other)
        ]
        if len(found) == 1:
            pairs[key] = found[0]
            unmatched_sources.discard(found[0])
    if unmatched_sources and len(pairs) < len(target_vars):
        raise VariableError(
            f"layer {source.name}: cannot carry variables {sorted(unmatched_sources)} into "
            f"its new version (which has {sorted(set(target_vars) - set(pairs))} unmatched)"
        )
    for key, source_key in pairs.items():
        _assign_exactly(source.name, key, source_vars[source_key], target_vars[key], skip)


def _assign_exactly(
    layer_name: str, key: str, original: Any, variable: Any, skip: Callable[[Any], bool]
) -> None:
    if tuple(original.shape) != tuple(variable.shape):
        raise VariableError(
            f"layer {layer_name}: variable {key} has shape {tuple(variable.shape)}, "
            f"expected {tuple(original.shape)}"
        )
    if not skip(variable):
        variable.assign(detached(original))


def copy_variables(
    source: Any,
    target: Any,
    require_all: bool,
    skip: Callable[[Any], bool] = lambda variable: False,
) -> None:
    """Copy every variable of `source` that `target` has under the same key, exactly
    (except those `skip` says already hold their value)."""
    source_vars = variables_by_key(source)
    target_vars = variables_by_key(target)
    if require_all and set(source_vars) != set(target_vars):
        raise VariableError(
            f"layer {source.name}: variables differ after recreation "
            f"({sorted(set(source_vars) ^ set(target_vars))})"
        )
    for key, variable in target_vars.items():
        if key in source_vars:
            _assign_exactly(source.name, key, source_vars[key], variable, skip)
