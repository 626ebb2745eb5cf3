"""Editing graphs: copy-on-write access to nested graphs, fresh names, splicing nodes in
and taking them out. Shared by every pass."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from normify.graph import MODIFIED, Graph, Node, TensorRef, all_layer_names, map_leaves, tensor_refs


@dataclass(frozen=True)
class Kept:
    """A layer a pass left in place, and why."""

    path: str
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "reason": self.reason}


class Editor:
    """Edits a copy of a graph; nested graphs are copied the first time they are touched."""

    def __init__(self, graph: Graph) -> None:
        self.root = graph.copy()
        self.taken = all_layer_names(graph)
        self._copied: set[str] = {""}

    def graph_at(self, owner_path: str) -> Graph:
        """The editable graph that owns layers under `owner_path` (`""` is the model)."""
        graph, walked = self.root, ""
        for part in owner_path.split("/") if owner_path else []:
            walked = f"{walked}/{part}" if walked else part
            spec = graph.layers[part]
            assert spec.subgraph is not None, f"{walked} is not a nested model"
            if walked not in self._copied:
                spec.subgraph = spec.subgraph.copy()
                spec.status = MODIFIED
                self._copied.add(walked)
            graph = spec.subgraph
        return graph

    def unique(self, base: str) -> str:
        """`base`, or `base_1`, `base_2`, ... : unique across the whole model."""
        name, counter = base, 1
        while name in self.taken:
            name = f"{base}_{counter}"
            counter += 1
        self.taken.add(name)
        return name


def output_refs(graph: Graph) -> list[TensorRef]:
    return tensor_refs(graph.outputs)


def consumers(graph: Graph, ref: TensorRef) -> list[Node]:
    return [node for node in graph.nodes.values() if ref in node.inputs]


def _redirect(graph: Graph, old: TensorRef, new: TensorRef, skip: set[str]) -> None:
    def swap(value: Any) -> Any:
        return new if value == old else value

    for node in graph.nodes.values():
        if node.id not in skip and old in node.inputs:
            node.args = map_leaves(swap, node.args)
            node.kwargs = map_leaves(swap, node.kwargs)
    graph.outputs = map_leaves(swap, graph.outputs)


def splice(graph: Graph, source: TensorRef, chain: list[Node], last: TensorRef) -> None:
    """Insert `chain` after `source`'s node and make every consumer of `source` read `last`."""
    chain_ids = {node.id for node in chain}
    _redirect(graph, source, last, skip=chain_ids)
    nodes: dict[str, Node] = {}
    for current in graph.nodes.values():
        nodes[current.id] = current
        if current.id == source.node:
            for new_node in chain:
                nodes[new_node.id] = new_node
    graph.nodes = nodes


def remove_node(graph: Graph, node_id: str) -> None:
    """Take a single-input, shape-keeping node out: its consumers read its input instead.
    The layer goes too once none of its calls remain."""
    node = graph.nodes[node_id]
    source = node.data_input
    assert source is not None, f"{node_id} does not read exactly one tensor"
    _redirect(graph, TensorRef(node_id, 0), source, skip={node_id})
    del graph.nodes[node_id]
    if not graph.nodes_of(node.layer):
        del graph.layers[node.layer]
