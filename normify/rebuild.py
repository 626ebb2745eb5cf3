"""Turning a graph back into a `keras.Model`.

The graph's nodes are replayed in topological order with a map from `TensorRef` to the
new symbolic tensors. Each layer is obtained according to its spec's status:

- kept: the original layer object is reused (`share=True`), so its variables are the
  original ones, untouched; with `share=False` it is recreated from its config and its
  variables are copied, so the result shares nothing with the caller's model;
- modified: recreated from the edited config; variables carried from the original by
  name (never by position). With `share=True` the new layer adopts the original's
  variable objects themselves (a loaded file's layers are ours alone), so a split
  8192×8192 Dense costs no second kernel;
- inserted: created from its config, its variables created with their `spec.init`
  values.

Recreated layers never run their initializers on variables whose values are known: a
random kernel that is overwritten at once costs time and, for big layers, a second
copy of the weights in memory (see `_Presets`).

Nested models are rebuilt recursively when anything inside them changed; a Sequential
stays a Sequential.

A graph built from a file's config has no live layers: with a `WeightFile`, every
original layer is deserialized from its config entry and its weights read from the file
(`normify.weightfile`), so the model is built once, not loaded and then rebuilt. A
modified layer's variables then come from its original standing alone, read from the
file, whose variable objects the new layer adopts.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from normify import incell, kinds, norms
from normify.errors import NormifyError
from normify.graph import (
    INSERTED,
    KEPT,
    MODIFIED,
    FoldedFrom,
    Graph,
    IdentityVariance,
    LayerSpec,
    TensorRef,
    WeightFrom,
    map_leaves,
    walk_layers,
)

if TYPE_CHECKING:
    import numpy as np

    from normify.weightfile import WeightFile


class RebuildError(NormifyError):
    """The edited graph could not be turned back into a model."""


def rebuild(graph: Graph, share: bool = True, weights: WeightFile | None = None) -> Any:
    """A new `keras.Model` for `graph`: built from a live model by `graph.from_model`, or
    from a file's config by `graph.from_config` with that file's open `weights`."""
    from normify.backend import deep_recursion

    builder = _Builder(share or weights is not None, weights)
    try:
        with deep_recursion(sum(1 for _ in walk_layers(graph))):
            model = builder.model(graph)
            builder.load_from_file()
    finally:
        builder.presets.uninstall()
    builder.initialize()
    if weights is not None:
        weights.check_all_read()
    return model


class _Builder:
    def __init__(self, share: bool, weights: WeightFile | None = None) -> None:

        from normify.backend import keras

        self.keras = keras()
        self.share = share
        self.weights = weights
        # (new layer, original spec): layers deserialized from the file, read once built
        self.from_file: list[tuple[Any, LayerSpec]] = []
        # (new layer, spec, owning graph) whose variables are set once everything is built
        self.pending: list[tuple[Any, LayerSpec, Graph]] = []
        self._unit_rsqrt_arguments: dict[int, np.ndarray] = {}
        self.presets = _Presets()

    # -------------------------------------------------------------------------- models

    def model(self, graph: Graph) -> Any:
        if graph.opaque_reason is not None:
            if graph.obj is not None and self.share:
                return graph.obj
            raise RebuildError(f"cannot rebuild {graph.name}: {graph.opaque_reason}")
        if graph.sequential:
            return self._sequential(graph)
        return self._functional(graph)

    def _sequential(self, graph: Graph) -> Any:
        objects = []
        previous: TensorRef | None = None
        for node in graph.nodes.values():
            spec = graph.layers[node.layer]
            if previous is not None and node.inputs != [previous]:
                raise RebuildError(f"Sequential {graph.name} is no longer a chain at {node.id}")
            objects.append(
                self._input_layer(spec) if spec.kind == kinds.INPUT else self.layer(spec, graph)
            )
            previous = TensorRef(node.id, 0)
        model = self._new_sequential(objects, graph.name)
        self._copy_model_attributes(graph, model)
        return model

    def _new_sequential(self, layers: list[Any], name: str) -> Any:
        """`keras.Sequential(layers)`, without its check of each layer's name against every
        layer before it (quadratic: 1.3 s at 6000 layers). A graph's names are unique."""
        model = self.keras.Sequential(name=name)
        if not hasattr(model, "_maybe_rebuild") or not isinstance(model._layers, list):
            return self.keras.Sequential(layers, name=name)  # a Keras laid out otherwise
        for layer in layers:
            model._layers.append(layer)
        if layers:
            model._maybe_rebuild()
        return model

    def _functional(self, graph: Graph) -> Any:
        tensors: dict[TensorRef, Any] = {}
        objects: dict[str, Any] = {}

        def fill(value: Any) -> Any:
            return tensors[value] if isinstance(value, TensorRef) else value

        def revive(value: Any) -> Any:
            """A node's arguments as read from a file hold constants still serialized
            (a slice, an array): Keras's objects, as its own loader makes them."""
            if isinstance(value, TensorRef):
                return tensors[value]
            if isinstance(value, dict) and "class_name" in value and "config" in value:
                return self.keras.saving.deserialize_keras_object(value)
            if isinstance(value, (list, tuple)):
                return type(value)(revive(item) for item in value)
            if isinstance(value, dict):
                return {key: revive(item) for key, item in value.items()}
            return value

        from_file = self.weights is not None

        for node in graph.nodes.values():
            spec = graph.layers[node.layer]
            if spec.kind == kinds.INPUT:
                tensors[TensorRef(node.id, 0)] = self._input_layer(spec).output
                continue
            operation = objects.get(node.layer)
            if operation is None:
                operation = objects[node.layer] = self.layer(spec, graph)
            args = revive(node.args) if from_file else map_leaves(fill, node.args)
            kwargs = revive(node.kwargs) if from_file else map_leaves(fill, node.kwargs)
            if spec.status != KEPT:
                kwargs = _accepted_kwargs(operation, kwargs)
            outputs = operation(*args, **kwargs)
            flat = list(_flatten(outputs))
            for index, tensor in enumerate(flat):
                tensors[TensorRef(node.id, index)] = tensor
        inputs = map_leaves(fill, graph.inputs)
        outputs = map_leaves(fill, graph.outputs)
        model = self.keras.Model(inputs=inputs, outputs=outputs, name=graph.name)
        self._copy_model_attributes(graph, model)
        return model

    def _copy_model_attributes(self, graph: Graph, model: Any) -> None:
        if graph.obj is not None:
            model.trainable = graph.obj.trainable
        elif self.weights is not None:
            model.trainable = graph.trainable  # as Keras sets it when loading the file

    def _input_layer(self, spec: LayerSpec) -> Any:
        config = spec.obj.get_config() if spec.obj is not None else dict(spec.config)
        return self.keras.layers.InputLayer.from_config(config)

    # -------------------------------------------------------------------------- layers

    def layer(self, spec: LayerSpec, graph: Graph) -> Any:
        if spec.status == KEPT and self.weights is not None:
            return self._deserialized(spec)
        if spec.subgraph is not None:
            if spec.status == KEPT and (self.share or spec.subgraph.opaque_reason is not None):
                return self._original(spec)
            return self.model(spec.subgraph)
        if spec.status == KEPT:
            original = self._original(spec)
            if self.share or spec.kind == kinds.OP:
                return original
            try:
                new = _from_config(type(original), original.get_config())
            except RebuildError:
                if original.weights:
                    raise
                # A weightless layer that cannot be recreated (a Lambda in safe mode) holds
                # nothing to share: reuse it.
                return original
        elif spec.status == MODIFIED:
            new = _from_config(self._modified_class(spec), spec.config)
        elif spec.status == INSERTED:
            new = _from_config(getattr(self.keras.layers, spec.class_name), spec.config)
        else:
            raise RebuildError(f"unknown status {spec.status!r} of layer {spec.name}")
        self._preset(new, spec, graph)
        self.pending.append((new, spec, graph))
        return new

    def _deserialized(self, spec: LayerSpec) -> Any:
        """An unchanged layer (or nested model) from its entry in the file's config; its
        weights are read once the model is built (`load_from_file`)."""
        assert self.weights is not None
        new = self.weights.deserialize(spec)
        if self.weights.holds_weights(spec):
            self.from_file.append((new, spec))
        return new

    def load_from_file(self) -> None:
        assert self.weights is not None or not self.from_file
        for new, spec in self.from_file:
            self.weights.load(new, spec)

    def _preset(self, new: Any, spec: LayerSpec, graph: Graph) -> None:
        """Arrange for `new`'s own variables (not those of layers nested in it) to be
        created with their final values when it builds."""
        if spec.status == INSERTED:
            values = {key: self._initial_value(value) for key, value in spec.init.items()}
            self.presets.install(new, values)
            return
        if "fold" in spec.init:
            return  # folded values are computed once everything is built
        original = self._original(spec)
        # Adopting variables is for share mode only: a copy must share nothing.
        adopt = self.share and spec.status == MODIFIED and new.name == original.name
        self.presets.install(new, variables_by_key(original), adopt=adopt)

    def _initial_value(self, value: Any) -> Any:
        if isinstance(value, WeightFrom):
            return find_variable(self._original(value.source), value.variable)
        if isinstance(value, IdentityVariance):
            return _DeferredIdentityVariance(self, value.epsilon)
        return value

    def _modified_class(self, spec: LayerSpec) -> Any:
        """The original layer's class, or the class a pass converted it to."""
        original = type(self._original(spec))
        if spec.class_name == original.__name__:
            return original
        if spec.module == incell.MODULE:
            from normify import cells

            return getattr(cells, spec.class_name)
        found = getattr(self.keras.layers, spec.class_name, None)
        if found is None:
            raise RebuildError(f"cannot recreate layer {spec.name}: no class {spec.class_name}")
        return found

    def _original(self, spec: LayerSpec) -> Any:
        if spec.obj is not None:
            return spec.obj
        if self.weights is not None:
            return self.weights.original(spec)
        raise RebuildError(f"layer {spec.name} has no live object (graph built from a config)")

    # ----------------------------------------------------------------------- variables

    def initialize(self) -> None:
        """Set the variables of every recreated, modified or inserted layer that were not
        created with their values (those of layers nested in them, folded values)."""
        for new, spec, graph in self.pending:
            if spec.status == INSERTED:
                self._initialize_inserted(new, spec, graph)
            elif spec.status == KEPT:
                copy_recreated_variables(spec.obj, new, skip=self.presets.was_preset)
            else:
                original = self._original(spec)
                carry_variables(original, new, skip=self.presets.was_preset)
                fold = spec.init.get("fold")
                if isinstance(fold, FoldedFrom):
                    _assign_folded(original, new, self._original(fold.batchnorm))

    def _unit_rsqrt(self, channels: int) -> np.ndarray:
        if channels not in self._unit_rsqrt_arguments:
            ops = self.keras.ops
            self._unit_rsqrt_arguments[channels] = norms.unit_rsqrt_arguments(
                channels, lambda values: ops.convert_to_numpy(ops.rsqrt(values))
            )
        return self._unit_rsqrt_arguments[channels]

    def _initialize_inserted(self, new: Any, spec: LayerSpec, graph: Graph) -> None:
        for variable in new.weights:
            key = variable_key(new, variable)
            if key not in spec.init or self.presets.was_preset(variable):
                continue
            value = self._initial_value(spec.init[key])
            variable.assign(_value_for(value, variable.shape, variable.dtype))

    def identity_variance(self, epsilon: float, shape: tuple[int, ...]) -> np.ndarray:
        import numpy as np

        targets = self._unit_rsqrt(int(np.prod(shape)))
        return norms.identity_moving_variance(epsilon, targets)


@dataclass(frozen=True)
class _DeferredIdentityVariance:
    """An identity moving variance, computed once the variable's shape is known."""

    builder: _Builder
    epsilon: float


def _value_for(value: Any, shape: Any, dtype: Any) -> Any:
    """`value` (a variable, a deferred identity variance, a scalar or an array) as an
    array of `shape` and `dtype`."""
    import numpy as np

    shape = tuple(shape)
    if isinstance(value, _DeferredIdentityVariance):
        value = value.builder.identity_variance(value.epsilon, shape)
    elif _is_variable(value):
        if tuple(value.shape) != shape:
            raise ValueError(f"variable {value.path} has shape {tuple(value.shape)}, not {shape}")
        value = value.numpy()
    return np.broadcast_to(np.asarray(value, dtype=dtype), shape)


def _is_variable(value: Any) -> bool:
    return hasattr(value, "path") and hasattr(value, "assign")


class _Presets:
    """Final variable values for layers about to build, handed to `Layer.add_weight`.

    Keras creates a layer's variables in `build()` through `add_weight`, running the
    initializer; normify would then overwrite them. Instead, a per-instance `add_weight`
    replaces the initializer with the known value (or, when adopting, returns the
    original variable object itself). Variables it does not know (other names, other
    shapes, layers nested inside) are created as usual and set by `initialize()`.
    """

    def __init__(self) -> None:
        self._installed: list[Any] = []
        self._preset_ids: set[int] = set()

    def install(self, layer: Any, values: dict[str, Any], adopt: bool = False) -> None:
        if not values or getattr(layer, "built", False):
            return
        stock_add_weight = layer.add_weight
        preset_ids = self._preset_ids

        def add_weight(*args: Any, **kwargs: Any) -> Any:
            value = values.get(kwargs.get("name"))
            shape = kwargs.get("shape", args[0] if args else None)
            if value is None or shape is None or len(args) > 1:  # positional initializer
                return stock_add_weight(*args, **kwargs)
            shape = tuple(int(size) for size in shape)
            dtype = kwargs.get("dtype") or layer.variable_dtype
            if adopt and _adoptable(value, shape, dtype):
                layer._track_variable(value)
                preset_ids.add(id(value))
                return value
            try:
                initial = _value_for(value, shape, dtype)
            except (TypeError, ValueError):  # a shape or dtype it cannot take: set later
                return stock_add_weight(*args, **kwargs)
            kwargs["initializer"] = lambda shape=None, dtype=None: initial
            variable = stock_add_weight(*args, **kwargs)
            preset_ids.add(id(variable))
            return variable

        # object.__setattr__: Keras' own __setattr__ would try to track the function.
        object.__setattr__(layer, "add_weight", add_weight)
        self._installed.append(layer)

    def uninstall(self) -> None:
        for layer in self._installed:
            if "add_weight" in vars(layer):
                object.__delattr__(layer, "add_weight")
        self._installed.clear()

    def was_preset(self, variable: Any) -> bool:
        return id(variable) in self._preset_ids


def _adoptable(value: Any, shape: tuple[int, ...], dtype: Any) -> bool:
    from normify.backend import keras

    return (
        _is_variable(value)
        and tuple(value.shape) == shape
        and keras().backend.standardize_dtype(value.dtype)
        == keras().backend.standardize_dtype(dtype)
    )


def _assign_folded(original: Any, new: Any, batchnorm: Any) -> None:
    """Give `new` the original layer's weights with the BatchNormalization folded in."""
    from normify.folding import BatchNormParams, fold_batchnorm
    from normify.passes.fold import negative_axis

    weights = {key: v.numpy() for key, v in variables_by_key(original).items()}
    bn_vars = {key: v.numpy() for key, v in variables_by_key(batchnorm).items()}
    params = BatchNormParams(
        gamma=bn_vars.get("gamma"),
        beta=bn_vars.get("beta"),
        moving_mean=bn_vars["moving_mean"],
        moving_variance=bn_vars["moving_variance"],
        epsilon=float(batchnorm.epsilon),
        axis=negative_axis(batchnorm.axis, _output_shape(original)),
    )
    folded = fold_batchnorm(type(original).__name__, original.get_config(), weights, params)
    targets = variables_by_key(new)
    for key, value in folded.items():
        targets[key].assign(value)


def _output_shape(layer: Any) -> tuple[int | None, ...] | None:
    nodes = getattr(layer, "_inbound_nodes", None)
    return tuple(nodes[0].output_tensors[0].shape) if nodes else None


def _from_config(cls: Any, config: dict[str, Any]) -> Any:
    try:
        return cls.from_config(config)
    except Exception as error:
        raise RebuildError(
            f"cannot recreate layer {config.get('name')!r} ({cls.__name__}): {error}"
        ) from None


def _flatten(outputs: Any) -> list[Any]:
    if isinstance(outputs, (list, tuple)):
        return [leaf for item in outputs for leaf in _flatten(item)]
    if isinstance(outputs, dict):
        return [leaf for item in outputs.values() for leaf in _flatten(item)]
    return [outputs]


def _accepted_kwargs(operation: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Drop recorded call arguments (like `mask=None`) that this layer's call cannot take."""
    if not kwargs:
        return kwargs
    call = getattr(operation, "call", None)
    if call is None:
        return kwargs
    parameters = inspect.signature(call).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return kwargs
    return {key: value for key, value in kwargs.items() if key in parameters}


# ------------------------------------------------------------------------ variable keys


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
            raise RebuildError(f"layer {layer.name} has two variables keyed {key!r}")
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
        raise RebuildError(f"layer {layer.name} has no single variable {key!r}")
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
        raise RebuildError(f"layer {source.name}: variables differ after recreation")
    for original, variable in zip(source.weights, target.weights, strict=True):
        if tuple(original.shape) != tuple(variable.shape):
            raise RebuildError(f"layer {source.name}: variable shapes differ after recreation")
        if not skip(variable):
            variable.assign(original.value)


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
        raise RebuildError(
            f"layer {source.name}: cannot carry variables {sorted(unmatched_sources)} into "
            f"its new version (which has {sorted(set(target_vars) - set(pairs))} unmatched)"
        )
    for key, source_key in pairs.items():
        _assign_exactly(source.name, key, source_vars[source_key], target_vars[key], skip)


def _assign_exactly(
    layer_name: str, key: str, original: Any, variable: Any, skip: Callable[[Any], bool]
) -> None:
    if tuple(original.shape) != tuple(variable.shape):
        raise RebuildError(
            f"layer {layer_name}: variable {key} has shape {tuple(variable.shape)}, "
            f"expected {tuple(original.shape)}"
        )
    if not skip(variable):
        variable.assign(original.value)


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
        raise RebuildError(
            f"layer {source.name}: variables differ after recreation "
            f"({sorted(set(source_vars) ^ set(target_vars))})"
        )
    for key, variable in target_vars.items():
        if key in source_vars:
            _assign_exactly(source.name, key, source_vars[key], variable, skip)
