"""Keras 2 inbound nodes as Keras 3 nodes, with nested models' node numbers as Keras 3
counts them.

A Keras 2 node is a list of `[layer, node_index, tensor_index, kwargs]` items, one per
input tensor; Keras 3's is `{"args": [...], "kwargs": {...}}` with `__keras_tensor__`
entries for tensors. A reference names a call of a layer by its node index. For a nested
model, Keras 2 counted the model's own graph as node 0 (a Functional model, and a
Sequential built with an input, got one when built), so its first call in an outer model
is node 1. Keras 3 counts calls only in its nodes, but still writes the input and output
references of a model to a nested Functional model (not to a Sequential one) the Keras 2
way, and its reader subtracts one from those.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from normify.formats.base import (
    MODEL_CLASSES,
    Context,
    ModelSite,
    is_entry,
    layer_name,
    layers_of,
    short,
)


def convert_model_nodes(site: ModelSite, context: Context) -> None:
    """Rewrite a Functional entry's Keras 2 nodes as Keras 3 nodes, in place."""
    entry, prefix = site.entry, site.prefix
    layers = layers_of(entry) or []
    if not has_keras2_nodes(layers):
        return
    shifted = _shift_nested_references(entry, layers)
    for name in sorted(shifted):
        context.repaired(
            "keras2-nested-nodes",
            prefix + name,
            "node indices shifted down by one (Keras 2 counted the nested model's own "
            "graph as node 0)",
        )
    converted = 0
    for layer in layers:
        nodes = layer.get("inbound_nodes") if isinstance(layer, dict) else None
        if isinstance(nodes, list) and nodes and all(isinstance(node, list) for node in nodes):
            layer["inbound_nodes"] = [
                _keras3_node(node, prefix + layer_name(layer), context) for node in nodes
            ]
            converted += 1
    if converted:
        context.repaired(
            "keras2-inbound-nodes",
            site.label,
            f"Keras 2 inbound nodes of {converted} layer(s) -> Keras 3 call arguments",
        )


def has_keras2_nodes(layers: list[Any]) -> bool:
    """Whether a Functional config writes its inbound nodes as Keras 2 lists."""
    for layer in layers:
        nodes = layer.get("inbound_nodes") if isinstance(layer, dict) else None
        for node in nodes if isinstance(nodes, list) else []:
            return isinstance(node, list)
    return False


def tensor(layer: str, node: int, index: int) -> dict[str, Any]:
    """A Keras 3 reference to output `index` of call `node` of `layer`. Keras 2 recorded
    no shapes: Keras's reader wants one for the placeholder it replaces by the real tensor,
    and an empty one (no batch axis, which no model tensor lacks) says it is unknown."""
    history = [layer, node, index]
    config = {"shape": [], "dtype": None, "keras_history": history}
    return {"class_name": "__keras_tensor__", "config": config}


CONSTANT = "_CONSTANT_VALUE"  # tf.keras: a constant first argument of an op layer


def node_items(node: Any) -> list[Any]:
    """The items of a Keras 2 node: a list of `[layer, node, tensor, kwargs]` items, or,
    for tf.keras op layers whose first argument is one tensor or a constant, one item."""
    if isinstance(node, list) and node and isinstance(node[0], str):
        return [node]
    return node if isinstance(node, list) else []


def _keras3_node(node: list[Any], owner: str, context: Context) -> dict[str, Any]:
    items = node_items(node)
    arguments: list[Any] = []
    kwargs: dict[str, Any] = {}
    for item in items:
        if isinstance(item, list) and len(item) >= 3 and item[0] == CONSTANT:
            arguments.append(item[2])
        elif is_reference(item):
            arguments.append(tensor(item[0], int(item[1]), int(item[2])))
        else:
            raise context.refuse(owner, f"an inbound node entry is malformed: {short(item)}")
        if len(item) > 3 and isinstance(item[3], dict):
            kwargs.update(_tensors_in_kwargs(item[3]))
    first = arguments[0] if len(arguments) == 1 else arguments
    return {"args": [first], "kwargs": kwargs}


def _tensors_in_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Keras 2 wrote tensors passed as keyword arguments as `[layer, node, tensor]`."""

    def convert(value: Any) -> Any:
        if is_reference(value) and len(value) == 3:
            return tensor(value[0], int(value[1]), int(value[2]))
        if isinstance(value, list):
            return [convert(item) for item in value]
        return value

    return {key: convert(value) for key, value in kwargs.items()}


def is_reference(item: Any) -> bool:
    return (
        isinstance(item, list)
        and len(item) >= 3
        and isinstance(item[0], str)
        and isinstance(item[1], int)
        and not isinstance(item[1], bool)
        and isinstance(item[2], int)
        and not isinstance(item[2], bool)
    )


def _shift_nested_references(entry: dict[str, Any], layers: list[Any]) -> set[str]:
    """Shift this model's Keras 2 references to its nested models down by one where they
    count the nested model's own graph; the names of the models whose references shift."""
    inbound = [ref for layer in layers for ref in _inbound_references(layer)]
    ends = leaf_references(entry["config"].get("input_layers"))
    ends += leaf_references(entry["config"].get("output_layers"))
    shifted = set()
    for name, nested in nested_models(layers):
        indices = [ref[1] for ref in inbound + ends if ref[0] == name]
        calls = len(nested.get("inbound_nodes") or [])
        if not indices or 0 in indices:
            continue  # a reference to node 0: this model's numbering counts calls already
        # an index past its calls can only count its own graph; otherwise how it was built
        if max(indices) < calls and not _own_graph(nested):
            continue
        # Keras 3 reads ends to a nested Functional model the Keras 2 way.
        sequential = nested["class_name"] == "Sequential"
        refs = [ref for ref in inbound + (ends if sequential else []) if ref[0] == name]
        for ref in _unique(refs):
            ref[1] -= 1
        if refs:
            shifted.add(name)
    return shifted


def nested_models(layers: list[Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(name, entry) of the well-formed Functional and Sequential entries among layers."""
    for layer in layers:
        if is_entry(layer) and layer["class_name"] in MODEL_CLASSES:
            yield (
                layer_name(layer) if isinstance(layer["config"], dict) else str(layer.get("name")),
                layer,
            )


def _own_graph(nested: dict[str, Any]) -> bool:
    """Whether Keras 2 gave this nested model a node of its own when it was built."""
    if nested["class_name"] != "Sequential":
        return True
    config = nested["config"]
    layers = config if isinstance(config, list) else (layers_of(nested) or [])
    first = layers[0] if layers and isinstance(layers[0], dict) else {}
    first_config = first.get("config")
    if not isinstance(first_config, dict):
        first_config = {}
    return first.get("class_name") == "InputLayer" or "batch_input_shape" in first_config


def _inbound_references(layer: Any) -> list[list[Any]]:
    """The references of a layer's Keras 2 inbound nodes, tensors passed as keyword
    arguments included."""
    nodes = layer.get("inbound_nodes") if isinstance(layer, dict) else None
    refs = []
    for node in nodes if isinstance(nodes, list) else []:
        for item in node_items(node):
            if is_reference(item):
                refs.append(item)
                refs += leaf_references(item[3]) if len(item) > 3 else []
    return refs


def leaf_references(value: Any) -> list[list[Any]]:
    if is_reference(value):
        return [value]
    if isinstance(value, dict):
        return [ref for item in value.values() for ref in leaf_references(item)]
    if isinstance(value, list):
        return [ref for item in value for ref in leaf_references(item)]
    return []


def _unique(refs: list[list[Any]]) -> list[list[Any]]:
    """Each reference list once, should a config share one between two places."""
    return list({id(ref): ref for ref in refs}.values())
