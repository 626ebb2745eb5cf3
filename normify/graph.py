"""The intermediate representation: a model as a graph of layer calls.

A `Graph` has one `Node` per layer call (a shared layer has several), edges expressed as
`TensorRef`s (which output of which node a call consumes), and one `LayerSpec` per layer
or operation. A nested model is a `LayerSpec` whose `subgraph` is another `Graph`, so
layers are addressed by path (`encoder/dense_1`).

The same graph can be built from a model config (`from_config`, no backend needed) or
from a live `keras.Model` (`from_model`). Passes return edited copies; `rebuild` turns a
graph back into a model: one built from a live model, or one built from a file's config
together with that file's weights (`normify.weightfile`).

This module must not import Keras: `normify audit` reads files without a backend.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from normify import kinds
from normify.errors import NormifyError, UnsupportedModelError
from normify.keras_internals import functional_class, inbound_nodes, keras_history, own_layers

KEPT = "kept"
MODIFIED = "modified"
INSERTED = "inserted"


@dataclass(frozen=True)
class TensorRef:
    """Output `index` (in flattened order) of node `node` within the same graph."""

    node: str
    index: int = 0


@dataclass(frozen=True)
class WeightFrom:
    """An initial value taken from a variable of an original layer (`source`)."""

    source: LayerSpec = field(compare=False)
    variable: str

    @property
    def layer(self) -> str:
        return self.source.renamed_from or self.source.name


@dataclass(frozen=True)
class IdentityVariance:
    """A BatchNormalization moving variance v for which rsqrt(v + epsilon) is exactly 1 on
    the backend that builds the model (resolved by the rebuild step)."""

    epsilon: float


@dataclass(frozen=True)
class FoldedFrom:
    """The layer's kernel and bias absorb this inference-mode BatchNormalization."""

    batchnorm: LayerSpec = field(compare=False)


@dataclass
class LayerSpec:
    """A layer or operation of a graph, and how the rebuild step obtains it.

    `status` is `kept` (the original object, unchanged), `modified` (rebuilt from `config`
    with the original's variables carried by name) or `inserted` (new, initialized from
    `init`). `obj` is the live layer when the graph was built from a live model.
    """

    name: str
    class_name: str
    module: str | None
    config: dict[str, Any]
    kind: str
    subgraph: Graph | None = None
    opaque_reason: str | None = None
    status: str = KEPT
    init: dict[str, Any] = field(default_factory=dict)
    renamed_from: str | None = None
    obj: Any = field(default=None, repr=False, compare=False)
    # The layer's entry in the file's config (graph built from a config): what Keras
    # deserializes it from, and, by identity, the key to its weights in the file.
    serialized: dict[str, Any] | None = field(default=None, repr=False, compare=False)


@dataclass
class Node:
    """One call of a layer: its arguments, with `TensorRef`s where tensors were passed."""

    id: str
    layer: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def inputs(self) -> list[TensorRef]:
        found: list[TensorRef] = []
        _collect_refs(self.args, found)
        if self.kwargs:
            _collect_refs(self.kwargs, found)
        return found

    @property
    def data_input(self) -> TensorRef | None:
        """The single tensor a shape-keeping layer transforms: its only input, leaving out
        a `mask` passed as a keyword (a mask is not transformed, only carried). None when
        the call reads several tensors."""
        data = tensor_refs((self.args, {k: v for k, v in self.kwargs.items() if k != "mask"}))
        return data[0] if len(data) == 1 else None


@dataclass
class Graph:
    """A Functional or Sequential model (or an opaque one, with `opaque_reason` set)."""

    name: str
    class_name: str
    sequential: bool
    layers: dict[str, LayerSpec]
    nodes: dict[str, Node]
    inputs: Any
    outputs: Any
    opaque_reason: str | None = None
    obj: Any = field(default=None, repr=False, compare=False)
    trainable: bool = True  # from the config; a live model's own flag is read from `obj`
    # Static shapes of the tensors that flow between nodes (batch dimension included),
    # where known: what some rules need (a channels_first bias, a channel count).
    shapes: dict[TensorRef, tuple[int | None, ...]] = field(default_factory=dict, compare=False)
    # (name, class, module) of the Functional subclasses read as plain graphs (`flatten`)
    flattened: list[tuple[str, str, str]] = field(default_factory=list, compare=False)

    def copy(self) -> Graph:
        """A copy whose `layers` and `nodes` dicts can be edited without touching this
        graph. The specs and nodes in them are shared: an edit puts a new spec or node in
        place of the old one, never changes one in place (copy on write), so a pass over a
        model of thousands of layers copies only what it edits."""
        copied = shallow_copy(self)
        copied.layers = dict(self.layers)
        copied.nodes = dict(self.nodes)
        return copied

    def check(self) -> None:
        """Verify the invariants every pass and the rebuild step rely on, here and in
        every nested graph: node ids match their keys and name a layer of this graph,
        every reference resolves to an earlier node (topological order), the outputs
        resolve, and a Sequential is one chain."""
        _check_graph(self)


def shallow_copy(obj: Any) -> Any:
    """A copy of a spec, node or graph sharing its field values: what
    `dataclasses.replace(obj)` gives, at the cost of one dict copy."""
    copied = object.__new__(type(obj))
    copied.__dict__.update(obj.__dict__)
    return copied


def node_id(layer_name: str, call_index: int) -> str:
    """The id of the `call_index`-th call of a layer: `dense`, then `dense@1`, `dense@2`."""
    return layer_name if call_index == 0 else f"{layer_name}@{call_index}"


class GraphError(NormifyError):
    """The graph broke one of its own invariants: a bug in the pass that edited it."""


def _check_graph(graph: Graph) -> None:
    where = f"graph {graph.name}"
    seen: dict[str, int] = {}
    for position, (key, node) in enumerate(graph.nodes.items()):
        if node.id != key:
            raise GraphError(f"{where}: node {key!r} carries the id {node.id!r}")
        if node.layer not in graph.layers:
            raise GraphError(f"{where}: node {key!r} calls unknown layer {node.layer!r}")
        for ref in node.inputs:
            if ref.node not in seen:
                problem = "a later node" if ref.node in graph.nodes else "no node"
                raise GraphError(f"{where}: node {key!r} reads {ref.node!r}, {problem}")
        seen[key] = position
    for ref in tensor_refs((graph.inputs, graph.outputs)):
        if ref.node not in seen:
            raise GraphError(f"{where}: an input or output refers to no node {ref.node!r}")
    if graph.sequential:
        previous: str | None = None
        for key, node in graph.nodes.items():
            refs = node.inputs
            if previous is not None and [ref.node for ref in refs] != [previous]:
                raise GraphError(f"{where}: Sequential is no longer a chain at {key!r}")
            previous = key
    for name, spec in graph.layers.items():
        if spec.name != name:
            raise GraphError(f"{where}: layer {name!r} is named {spec.name!r}")
        if spec.subgraph is not None:
            _check_graph(spec.subgraph)


# ---------------------------------------------------------------------------- structures


def iter_leaves(structure: Any) -> Iterator[Any]:
    """The leaves of nested lists, tuples and dicts, in order."""
    if isinstance(structure, (list, tuple)):
        for item in structure:
            yield from iter_leaves(item)
    elif isinstance(structure, dict):
        for value in structure.values():
            yield from iter_leaves(value)
    else:
        yield structure


def map_leaves(function: Callable[[Any], Any], structure: Any) -> Any:
    """Apply `function` to every leaf of nested lists, tuples and dicts."""
    if isinstance(structure, list):
        return [map_leaves(function, item) for item in structure]
    if isinstance(structure, tuple):
        return tuple(map_leaves(function, item) for item in structure)
    if isinstance(structure, dict):
        return {key: map_leaves(function, value) for key, value in structure.items()}
    return function(structure)


def tensor_refs(structure: Any) -> list[TensorRef]:
    """The `TensorRef` leaves of `structure`, in order (`iter_leaves`, filtered)."""
    found: list[TensorRef] = []
    _collect_refs(structure, found)
    return found


def _collect_refs(structure: Any, found: list[TensorRef]) -> None:
    # Recursion into a list rather than nested generators: every pass asks every node
    # for its inputs, on models of thousands of nodes.
    if isinstance(structure, TensorRef):
        found.append(structure)
    elif isinstance(structure, (list, tuple)):
        for item in structure:
            _collect_refs(item, found)
    elif isinstance(structure, dict):
        for value in structure.values():
            _collect_refs(value, found)


# ------------------------------------------------------------------------ walking paths


def walk_layers(graph: Graph, prefix: str = "") -> Iterator[tuple[str, LayerSpec, Graph]]:
    """Every layer of the graph and its nested graphs: (path, spec, owning graph)."""
    for spec in graph.layers.values():
        path = prefix + spec.name
        yield path, spec, graph
        if spec.subgraph is not None and spec.subgraph.opaque_reason is None:
            yield from walk_layers(spec.subgraph, path + "/")


def all_layer_names(graph: Graph) -> set[str]:
    return {spec.name for _, spec, _ in walk_layers(graph)}


def graph_at(graph: Graph, path: str) -> Graph:
    """The graph that owns the layer at `path` (the part of the path before the last `/`)."""
    for part in path.split("/")[:-1]:
        graph = graph.layers[part].subgraph  # type: ignore[assignment]
    return graph


# ------------------------------------------------------------------ building from configs


def from_config(
    model_config: dict[str, Any], source: str | os.PathLike[str] | None = None
) -> Graph:
    """Build a graph from a serialized model: `{"class_name": ..., "config": {...}}`.

    Takes a config in Keras 3's language (`.keras` files, `model.get_config()` wrapped with
    its class); `normify.files.read_model_file` translates the configs of older Keras
    versions into it. Raises `NormifyError` with the reason when the config is malformed.
    """
    try:
        return _graph_from_serialized(renumber_nested_calls(model_config), depth=0)
    except NormifyError as error:
        if error.path is not None or source is None:
            raise
        # The checks below do not know the file; the user needs it named.
        raise type(error)(str(error), source) from error
    except RecursionError as cause:
        raise NormifyError("malformed model config (nested too deeply)", source) from cause
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, OverflowError) as error:
        raise NormifyError(
            f"malformed model config ({type(error).__name__}: {_first_line(error)})", source
        ) from error


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0][:200]


MAX_NESTING = 64


def _graph_from_serialized(serialized: dict[str, Any], depth: int) -> Graph:
    if depth > MAX_NESTING:
        raise NormifyError(f"model config nests models more than {MAX_NESTING} levels deep")
    if not isinstance(serialized, dict) or "class_name" not in serialized:
        raise NormifyError("model config has no class_name")
    class_name = serialized["class_name"]
    config = serialized.get("config")
    if not isinstance(config, dict):
        raise NormifyError(f"model config of {class_name} is not a mapping")
    name = config.get("name") or class_name
    if class_name not in kinds.MODEL_CLASSES or not isinstance(config.get("layers"), list):
        return _opaque_graph(name, class_name, serialized.get("module"))
    if class_name == "Sequential":
        return _sequential_from_config(name, config, depth)
    return _functional_from_config(name, class_name, config, depth)


def _opaque_graph(name: str, class_name: str, module: Any = None) -> Graph:
    reason = (
        f"{class_name} is a model subclass whose config holds constructor arguments, "
        "not a layer graph"
    )
    library = kinds.library_of(module if isinstance(module, str) else None)
    if library is not None:
        reason += (
            f" (a {library[0]} model: --flatten rewrites it as a plain Functional model, and "
            f"audit --load reads its layers; both need {library[1]} installed)"
        )
    return Graph(name, class_name, False, {}, {}, [], [], opaque_reason=reason)


def _layer_spec_from_config(entry: dict[str, Any], depth: int) -> LayerSpec:
    class_name = entry["class_name"]
    config = entry.get("config")
    if not isinstance(class_name, str):
        raise NormifyError(f"layer class_name is not a string: {class_name!r}")
    if not isinstance(config, dict):
        raise NormifyError(f"config of layer {entry.get('name', class_name)} is not a mapping")
    name = entry.get("name") or config.get("name")
    if not isinstance(name, str) or not name:
        raise NormifyError(f"a {class_name} layer has no name")
    module = entry.get("module")
    kind = kinds.classify(class_name, module, config)
    spec = LayerSpec(
        name=name, class_name=class_name, module=module, config=config, kind=kind,
        serialized=entry,
    )  # fmt: skip
    if kind == kinds.MODEL or (kind == kinds.OTHER and _looks_like_model(entry)):
        spec.kind = kinds.MODEL
        spec.subgraph = _graph_from_serialized(entry, depth + 1)
        spec.opaque_reason = spec.subgraph.opaque_reason
    return spec


def _looks_like_model(entry: dict[str, Any]) -> bool:
    module = entry.get("module") or ""
    return ".models." in module or module.endswith(".models")


def _sequential_from_config(name: str, config: dict[str, Any], depth: int) -> Graph:
    layers: dict[str, LayerSpec] = {}
    nodes: dict[str, Node] = {}
    shapes: dict[TensorRef, tuple[int | None, ...]] = {}
    previous: TensorRef | None = None
    for entry in config["layers"]:
        spec = _layer_spec_from_config(entry, depth)
        if spec.name in layers:
            raise NormifyError(f"layer name {spec.name!r} is used twice in {name}")
        layers[spec.name] = spec
        if spec.kind == kinds.INPUT:
            if previous is not None:
                raise NormifyError(f"an InputLayer is not first in Sequential {name}")
            nodes[spec.name] = Node(spec.name, spec.name)
        else:
            if previous is None:
                previous = _implicit_sequential_input(name, config, layers, nodes)
            nodes[spec.name] = Node(spec.name, spec.name, (previous,))
            input_shape = (entry.get("build_config") or {}).get("input_shape")
            if isinstance(input_shape, list):
                shapes[previous] = tuple(input_shape)
        previous = TensorRef(spec.name)
    inputs = [TensorRef(next(iter(nodes)))] if nodes else []
    outputs = [previous] if previous is not None else []
    trainable = config.get("trainable", True) is not False
    return Graph(
        name, "Sequential", True, layers, nodes, inputs, outputs, trainable=trainable,
        shapes=shapes,
    )  # fmt: skip


def _implicit_sequential_input(
    name: str, config: dict[str, Any], layers: dict[str, LayerSpec], nodes: dict[str, Node]
) -> TensorRef:
    """A Sequential saved without an InputLayer: stand one in so the graph has an input."""
    input_name = f"{name}_input"
    input_config = {"name": input_name, "batch_shape": config.get("build_input_shape")}
    layers[input_name] = LayerSpec(input_name, "InputLayer", "keras.layers", input_config, "input")
    nodes[input_name] = Node(input_name, input_name)
    return TensorRef(input_name)


def _functional_from_config(
    name: str, class_name: str, config: dict[str, Any], depth: int
) -> Graph:
    layers: dict[str, LayerSpec] = {}
    pending: list[Node] = []
    shapes: dict[TensorRef, tuple[int | None, ...]] = {}
    for entry in config["layers"]:
        spec = _layer_spec_from_config(entry, depth)
        if spec.name in layers:
            raise NormifyError(f"layer name {spec.name!r} is used twice in {name}")
        layers[spec.name] = spec
        inbound = entry.get("inbound_nodes") or []
        if not isinstance(inbound, list):
            raise NormifyError(f"inbound_nodes of layer {spec.name!r} is not a list")
        if spec.kind == kinds.INPUT:
            pending.append(Node(spec.name, spec.name))
            continue
        for call_index, node_data in enumerate(inbound):
            args, kwargs = _node_arguments_from_config(node_data, shapes)
            pending.append(Node(node_id(spec.name, call_index), spec.name, args, kwargs))
    nodes = _topological(pending, name)
    inputs = _refs_from_config(config.get("input_layers", []), nodes, name)
    outputs = _refs_from_config(config.get("output_layers", []), nodes, name)
    _share_output_shapes(layers, nodes, shapes)
    for ref in tensor_refs(outputs):
        if ref.node not in nodes:
            raise NormifyError(f"output {ref.node!r} of {name} is not a layer call")
    trainable = config.get("trainable", True) is not False
    return Graph(
        name, class_name, False, layers, nodes, inputs, outputs, trainable=trainable,
        shapes=shapes,
    )  # fmt: skip


def _node_arguments_from_config(
    node_data: Any, shapes: dict[TensorRef, tuple[int | None, ...]]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    if not isinstance(node_data, dict):  # normify.formats translates Keras 2's lists
        raise NormifyError(f"an inbound node has an unknown format: {type(node_data).__name__}")
    args = node_data.get("args", [])
    kwargs = node_data.get("kwargs", {})
    # lists in a file; tuples in a live model's `get_config()`
    if not isinstance(args, (list, tuple)) or not isinstance(kwargs, dict):
        raise NormifyError("a node's args or kwargs have the wrong type")
    return tuple(_deserialize_arguments(args, shapes)), _deserialize_arguments(kwargs, shapes)


def _deserialize_arguments(structure: Any, shapes: dict | None = None) -> Any:
    if isinstance(structure, dict) and structure.get("class_name") == "__keras_tensor__":
        history = structure["config"]["keras_history"]
        ref = TensorRef(node_id(history[0], int(history[1])), int(history[2]))
        shape = structure["config"].get("shape")
        # an empty shape is a translated Keras 2 reference's: unknown (normify.formats.nodes)
        if shapes is not None and isinstance(shape, (list, tuple)) and shape:
            shapes[ref] = tuple(shape)
        return ref
    if isinstance(structure, (list, tuple)):
        return [_deserialize_arguments(item, shapes) for item in structure]
    if isinstance(structure, dict):
        return {key: _deserialize_arguments(value, shapes) for key, value in structure.items()}
    return structure


def _share_output_shapes(
    layers: dict[str, LayerSpec],
    nodes: dict[str, Node],
    shapes: dict[TensorRef, tuple[int | None, ...]],
) -> None:
    """A nested model's output shapes are written only where the outer model reads them:
    give them to the nested graph too, whose last layers have no reader inside."""
    for node in nodes.values():
        subgraph = layers[node.layer].subgraph
        if subgraph is None or subgraph.opaque_reason is not None:
            continue
        for index, inner in enumerate(tensor_refs(subgraph.outputs)):
            shape = shapes.get(TensorRef(node.id, index))
            if shape is not None:
                subgraph.shapes.setdefault(inner, shape)


def _refs_from_config(value: Any, nodes: dict[str, Node], model_name: str) -> Any:
    """A model's `input_layers` or `output_layers`: `[layer, node, tensor]` leaves in any
    nesting of lists and dicts (a stacked RNN's state tuple is a list of them)."""

    def is_leaf(item: Any) -> bool:
        return isinstance(item, list) and bool(item) and isinstance(item[0], str)

    def convert(item: Any, depth: int) -> Any:
        if depth > MAX_NESTING:
            raise NormifyError(f"inputs or outputs of {model_name} nest too deeply")
        if is_leaf(item):
            if len(item) < 3 or not all(_is_index(part) for part in item[1:3]):
                raise NormifyError(f"input or output entry {item!r} of {model_name} is malformed")
            return TensorRef(node_id(item[0], int(item[1])), int(item[2]))
        if isinstance(item, dict):
            return {key: convert(inner, depth + 1) for key, inner in item.items()}
        if isinstance(item, (list, tuple)):
            return [convert(inner, depth + 1) for inner in item]
        raise NormifyError(f"inputs or outputs of {model_name} have an unknown format")

    return convert(value, 0)


def _is_index(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# ------------------------------------------------------------ Keras 3's nested node numbers


def renumber_nested_calls(serialized: dict[str, Any]) -> dict[str, Any]:
    """The config with every input and output reference to a nested Functional model
    counting that model's calls only (node 0 = first call), as its nodes do.

    Keras 3 writes those references counting the nested model's own graph as node 0 (its
    reader subtracts one). Returns `serialized` itself when no index changes, a
    renumbered copy otherwise.
    """
    if not _shift_ends(serialized, apply=False):
        return serialized
    config = copy.deepcopy(serialized)
    _shift_ends(config, apply=True)
    return config


def _shift_ends(entry: Any, apply: bool) -> bool:
    config = entry.get("config") if isinstance(entry, dict) else None
    if not isinstance(config, dict):
        return False
    layers = config.get("layers")
    if not isinstance(layers, list):
        return False
    nested = [
        layer
        for layer in layers
        if isinstance(layer, dict)
        and layer.get("class_name") in kinds.MODEL_CLASSES
        and isinstance(layer.get("config"), dict)
    ]
    changed = False
    for layer in nested:
        changed = _shift_ends(layer, apply) or changed
    if entry.get("class_name") == "Sequential":
        return changed
    ends = _leaf_ends(config.get("input_layers")) + _leaf_ends(config.get("output_layers"))
    for layer in nested:
        if layer["class_name"] == "Sequential":
            continue
        name = layer.get("name") or layer["config"].get("name")
        refs = [ref for ref in ends if ref[0] == name]
        if not refs or any(ref[1] == 0 for ref in refs):
            continue  # a reference to node 0: these count calls already
        changed = True
        for ref in {id(ref): ref for ref in refs}.values() if apply else []:
            ref[1] -= 1
    return changed


def _leaf_ends(value: Any) -> list[list[Any]]:
    if isinstance(value, list) and len(value) >= 3 and isinstance(value[0], str):
        return [value] if _is_index(value[1]) else []
    if isinstance(value, dict):
        return [ref for item in value.values() for ref in _leaf_ends(item)]
    if isinstance(value, list):
        return [ref for item in value for ref in _leaf_ends(item)]
    return []


def _topological(pending: list[Node], model_name: str) -> dict[str, Node]:
    """Order nodes so that every node comes after the nodes it consumes (stable, Kahn)."""
    by_id: dict[str, Node] = {}
    for node in pending:
        if node.id in by_id:
            raise NormifyError(f"node {node.id!r} appears twice in {model_name}")
        by_id[node.id] = node
    producers = {node.id: {ref.node for ref in node.inputs} for node in pending}
    missing_inputs = {name for names in producers.values() for name in names if name not in by_id}
    if missing_inputs:
        raise NormifyError(
            f"{model_name} consumes tensors of unknown layer calls: {sorted(missing_inputs)[:3]}"
        )
    remaining = {consumer: len(names) for consumer, names in producers.items()}
    consumers: dict[str, list[str]] = {node.id: [] for node in pending}
    for consumer, names in producers.items():
        for producer in names:
            consumers[producer].append(consumer)
    ready = [node.id for node in pending if remaining[node.id] == 0]
    position = {node.id: index for index, node in enumerate(pending)}
    ordered: dict[str, Node] = {}
    import heapq

    heap = [(position[node_id_], node_id_) for node_id_ in ready]
    heapq.heapify(heap)
    while heap:
        _, current = heapq.heappop(heap)
        ordered[current] = by_id[current]
        for consumer in consumers[current]:
            remaining[consumer] -= 1
            if remaining[consumer] == 0:
                heapq.heappush(heap, (position[consumer], consumer))
    if len(ordered) != len(pending):
        cyclic = sorted(set(by_id) - set(ordered))[:3]
        raise NormifyError(f"{model_name} has a cycle through {cyclic}")
    return ordered


# ---------------------------------------------------------------- building from models


def from_model(model: Any, flatten: bool = False) -> Graph:
    """Build a graph from a live `keras.Model` (Functional or Sequential, nested at will).

    With `flatten`, a Functional subclass (a library's model class, such as keras-hub's
    backbones, whose config holds constructor arguments) is read as the Functional
    graph of layers it is, and named in the graph's `flattened`."""
    return _graph_from_live(model, 0, flatten)


def _is_exact_class(obj: Any, names: tuple[str, ...]) -> bool:
    cls = type(obj)
    return cls.__name__ in names and cls.__module__.split(".")[0] == "keras"


def _graph_from_live(model: Any, depth: int, flatten: bool) -> Graph:
    if depth > MAX_NESTING:
        raise UnsupportedModelError(f"models nest more than {MAX_NESTING} levels deep")
    class_name = type(model).__name__
    if _is_exact_class(model, ("Sequential",)):
        return _sequential_from_live(model, depth, flatten)
    if _is_exact_class(model, ("Functional",)):
        return _functional_from_live(model, depth, flatten)
    if flatten and _is_functional_subclass(model):
        graph = _functional_from_live(model, depth, flatten)
        graph.flattened = [(model.name, class_name, type(model).__module__), *graph.flattened]
        return graph
    graph = _opaque_graph(model.name, class_name, type(model).__module__)
    graph.obj = model
    return graph


def _is_functional_subclass(model: Any) -> bool:
    return isinstance(model, functional_class()) and hasattr(model, "_outputs_struct")


def _spec_from_live(operation: Any, depth: int, flatten: bool) -> LayerSpec:
    class_name = type(operation).__name__
    module = type(operation).__module__
    from keras import Model

    if isinstance(operation, Model):
        subgraph = _graph_from_live(operation, depth + 1, flatten)
        if subgraph.flattened and subgraph.flattened[0][0] == operation.name:
            # rebuilt as the plain Functional model its graph is
            spec = LayerSpec(
                name=operation.name, class_name="Functional", module="keras.src.models.functional",
                config={}, kind=kinds.MODEL, subgraph=subgraph, status=MODIFIED, obj=operation,
            )  # fmt: skip
            return spec
        return LayerSpec(
            name=operation.name,
            class_name=class_name,
            module=module,
            config={},
            kind=kinds.MODEL,
            subgraph=subgraph,
            opaque_reason=subgraph.opaque_reason,
            obj=operation,
        )
    config = _live_config(operation)
    return LayerSpec(
        name=operation.name,
        class_name=class_name,
        module=module,
        config=config,
        kind=kinds.classify(class_name, module, config),
        obj=operation,
    )


def _live_config(operation: Any) -> dict[str, Any]:
    try:
        config = operation.get_config()
    except NotImplementedError:
        return {"name": operation.name}
    return config if isinstance(config, dict) else {"name": operation.name}


def _sequential_from_live(model: Any, depth: int, flatten: bool) -> Graph:
    layers: dict[str, LayerSpec] = {}
    nodes: dict[str, Node] = {}
    shapes: dict[TensorRef, tuple[int | None, ...]] = {}
    previous: TensorRef | None = None
    inputs: list[TensorRef] = []
    for layer in own_layers(model):  # includes the InputLayer, unlike `model.layers`
        spec = _spec_from_live(layer, depth, flatten)
        if spec.name in layers:
            raise UnsupportedModelError(f"layer name {spec.name!r} is used twice in {model.name}")
        layers[spec.name] = spec
        if spec.kind == kinds.INPUT:
            nodes[spec.name] = Node(spec.name, spec.name)
            inputs = [TensorRef(spec.name)]
        else:
            if previous is None:
                raise UnsupportedModelError(
                    f"Sequential model {model.name!r} has no input shape (it was never built)"
                )
            nodes[spec.name] = Node(spec.name, spec.name, (previous,))
        previous = TensorRef(spec.name)
        if inbound_nodes(layer):
            shapes[previous] = tuple(inbound_nodes(layer)[0].outputs[0].shape)
    outputs = [previous] if previous is not None else []
    return Graph(
        model.name, "Sequential", True, layers, nodes, inputs, outputs, obj=model, shapes=shapes
    )


def _functional_from_live(model: Any, depth: int, flatten: bool) -> Graph:
    from keras import KerasTensor  # a live model means Keras is already imported

    # The nodes of this model: everything reachable backwards from its outputs.
    reachable: dict[tuple[int, int], Any] = {}
    stack = [tensor for tensor in iter_leaves(model._outputs_struct)]
    while stack:
        tensor = stack.pop()
        operation, node_index, _ = keras_history(tensor)
        key = (id(operation), node_index)
        if key in reachable:
            continue
        node = inbound_nodes(operation)[node_index]
        reachable[key] = node
        stack.extend(node.input_tensors)

    layers: dict[str, LayerSpec] = {}
    ids: dict[tuple[int, int], str] = {}
    for operation in model.operations:
        spec = _spec_from_live(operation, depth, flatten)
        if spec.name in layers:
            raise UnsupportedModelError(f"layer name {spec.name!r} is used twice in {model.name}")
        layers[spec.name] = spec
        call_index = 0
        for node_index in range(len(inbound_nodes(operation))):
            if (id(operation), node_index) in reachable:
                ids[(id(operation), node_index)] = node_id(operation.name, call_index)
                call_index += 1

    def to_ref(value: Any) -> Any:
        if isinstance(value, KerasTensor):
            operation, node_index, tensor_index = keras_history(value)
            return TensorRef(ids[(id(operation), node_index)], tensor_index)
        return value

    pending = []
    for operation in model.operations:
        for node_index, node in enumerate(inbound_nodes(operation)):
            key = (id(operation), node_index)
            if key not in reachable:
                continue
            if spec_is_input(layers[operation.name]):
                pending.append(Node(ids[key], operation.name))
                continue
            args = map_leaves(to_ref, tuple(node.arguments.args))
            kwargs = map_leaves(to_ref, dict(node.arguments.kwargs))
            pending.append(Node(ids[key], operation.name, args, kwargs))
    nodes = _topological(pending, model.name)
    inputs = map_leaves(to_ref, _as_list_structure(model._inputs_struct))
    outputs = map_leaves(to_ref, _as_list_structure(model._outputs_struct))
    shapes = {
        TensorRef(ids[key], index): tuple(tensor.shape)
        for key, node in reachable.items()
        for index, tensor in enumerate(node.outputs)
    }
    return Graph(
        model.name, "Functional", False, layers, nodes, inputs, outputs, obj=model, shapes=shapes
    )


def _as_list_structure(structure: Any) -> Any:
    return list(structure) if isinstance(structure, tuple) else structure


def spec_is_input(spec: LayerSpec) -> bool:
    return spec.kind == kinds.INPUT


def opaque_parts(graph: Graph) -> list[tuple[str, str, str]]:
    """(path, class, reason) for every part whose insides normify cannot see or rewrite."""
    parts = []
    if graph.opaque_reason:
        parts.append((graph.name, graph.class_name, graph.opaque_reason))
    for path, spec, _ in walk_layers(graph):
        if spec.opaque_reason:
            parts.append((path, spec.class_name, spec.opaque_reason))
        elif spec.kind == kinds.OTHER and not kinds.is_builtin(spec.module):
            parts.append((path, spec.class_name, "custom layer: its insides are unknown"))
    return parts
