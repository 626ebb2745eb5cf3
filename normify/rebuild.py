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
from normify.keras_internals import inbound_nodes, sequential_of
from normify.variables import (
    carry_variables,
    copy_recreated_variables,
    detached,
    find_variable,
    variable_key,
    variables_by_key,
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
        model = sequential_of(self.keras, objects, graph.name)
        self._copy_model_attributes(graph, model)
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
        # Setting `trainable` on a model sets it on every layer inside, which would undo a
        # frozen layer's own flag: so only a frozen model is frozen, as Keras loads it.
        trainable = graph.obj.trainable if graph.obj is not None else graph.trainable
        if not trainable:
            model.trainable = False

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
        if self.weights is None:
            raise RebuildError(f"layer {spec.name}: no file to read it from")
        new = self.weights.deserialize(spec)
        if self.weights.holds_weights(spec):
            self.from_file.append((new, spec))
        return new

    def load_from_file(self) -> None:
        if not self.from_file:
            return
        if self.weights is None:
            raise RebuildError("layers are to be read from a file, but no weight file is open")
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
        value = detached(value)
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
            value = values.get(kwargs["name"]) if "name" in kwargs else None
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
    from normify.folding import BatchNormParams, FoldError, fold_batchnorm, negative_axis

    weights = {key: detached(v) for key, v in variables_by_key(original).items()}
    bn_vars = {key: detached(v) for key, v in variables_by_key(batchnorm).items()}
    params = BatchNormParams(
        gamma=bn_vars.get("gamma"),
        beta=bn_vars.get("beta"),
        moving_mean=bn_vars["moving_mean"],
        moving_variance=bn_vars["moving_variance"],
        epsilon=float(batchnorm.epsilon),
        axis=negative_axis(batchnorm.axis, _output_shape(original)),
    )
    try:
        folded = fold_batchnorm(type(original).__name__, original.get_config(), weights, params)
    except FoldError as error:
        raise RebuildError(
            f"layer {batchnorm.name}: cannot be folded into {original.name}: {error}"
        ) from error
    targets = variables_by_key(new)
    for key, value in folded.items():
        targets[key].assign(value)


def _output_shape(layer: Any) -> tuple[int | None, ...] | None:
    nodes = inbound_nodes(layer)
    return tuple(nodes[0].output_tensors[0].shape) if nodes else None


def _from_config(cls: Any, config: dict[str, Any]) -> Any:
    try:
        return cls.from_config(config)
    except Exception as error:
        raise RebuildError(
            f"cannot recreate layer {config.get('name')!r} ({cls.__name__}): {error}"
        ) from error


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
