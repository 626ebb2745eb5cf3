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
    """Edits a copy of a graph; nested graphs are copied the first time they are touched.

    For passes that splice many chains in (`add` on a model of thousands of layers), the
    editor keeps per-graph indexes of calls and readers and puts spliced nodes in order
    once, in `finish()`, so each splice costs what it touches, not the whole graph.
    """

    def __init__(self, graph: Graph) -> None:
        self.root = graph.copy()
        self.taken = all_layer_names(graph)
        self._copied: set[str] = {""}
        self._calls: dict[int, dict[str, list[Node]]] = {}
        self._readers: dict[int, dict[TensorRef, list[str]]] = {}
        self._after: dict[int, dict[str, list[Node]]] = {}
        self._graphs: dict[int, Graph] = {}

    def calls(self, graph: Graph, layer: str) -> list[Node]:
        """The calls of `layer` in `graph` (indexed)."""
        index = self._calls.get(id(graph))
        if index is None:
            index = {}
            for node in graph.nodes.values():
                index.setdefault(node.layer, []).append(node)
            self._calls[id(graph)] = index
            self._graphs[id(graph)] = graph
        return index.get(layer, [])

    def readers(self, graph: Graph, ref: TensorRef) -> list[Node]:
        """The nodes that read `ref` (indexed)."""
        index = self._readers.get(id(graph))
        if index is None:
            index = {}
            for node in graph.nodes.values():
                for source in dict.fromkeys(node.inputs):
                    index.setdefault(source, []).append(node.id)
            self._readers[id(graph)] = index
            self._graphs[id(graph)] = graph
        return [graph.nodes[node_id] for node_id in index.get(ref, [])]

    def splice(self, graph: Graph, source: TensorRef, chain: list[Node], last: TensorRef) -> None:
        """Insert `chain` after `source`'s node and make every reader of `source` read
        `last`, in time proportional to those readers; `finish()` puts nodes in order."""
        readers = self.readers(graph, source)
        swap = _swapper(source, last)
        for reader in readers:
            reader.args = map_leaves(swap, reader.args)
            reader.kwargs = map_leaves(swap, reader.kwargs)
        graph.outputs = map_leaves(swap, graph.outputs)
        index = self._readers[id(graph)]
        index[last] = [reader.id for reader in readers]
        index[source] = [chain[0].id]
        for node, following in zip(chain, chain[1:], strict=False):
            index[TensorRef(node.id, 0)] = [following.id]
        calls = self._calls.get(id(graph))
        for node in chain:
            graph.nodes[node.id] = node
            if calls is not None:
                calls.setdefault(node.layer, []).append(node)
        self._after.setdefault(id(graph), {}).setdefault(source.node, []).extend(chain)
        self._graphs[id(graph)] = graph

    def finish(self) -> Graph:
        """Put every spliced chain right after the node it follows; the edited root."""
        for key in list(self._after):
            self.settle(self._graphs[key])
        return self.root

    def settle(self, graph: Graph) -> None:
        """Order `graph`'s spliced nodes now and drop its indexes, before an edit that
        renames nodes (the indexes are keyed by node id)."""
        after = self._after.pop(id(graph), {})
        if after:
            spliced = {node.id for chain in after.values() for node in chain}
            ordered: dict[str, Node] = {}
            for node in graph.nodes.values():
                if node.id not in spliced:
                    _place(node, after, ordered)
            graph.nodes = ordered
        self._calls.pop(id(graph), None)
        self._readers.pop(id(graph), None)

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


def _place(node: Node, after: dict[str, list[Node]], ordered: dict[str, Node]) -> None:
    ordered[node.id] = node
    for follower in after.get(node.id, []):
        _place(follower, after, ordered)


def output_refs(graph: Graph) -> list[TensorRef]:
    return tensor_refs(graph.outputs)


def consumers(graph: Graph, ref: TensorRef) -> list[Node]:
    return [node for node in graph.nodes.values() if ref in node.inputs]


def _swapper(old: TensorRef, new: TensorRef) -> Any:
    def swap(value: Any) -> Any:
        return new if value == old else value

    return swap


def _redirect(graph: Graph, old: TensorRef, new: TensorRef, skip: set[str]) -> None:
    swap = _swapper(old, new)

    for node in graph.nodes.values():
        if node.id not in skip and old in node.inputs:
            node.args = map_leaves(swap, node.args)
            node.kwargs = map_leaves(swap, node.kwargs)
    graph.outputs = map_leaves(swap, graph.outputs)


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
