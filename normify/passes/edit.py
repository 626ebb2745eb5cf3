"""Editing graphs: copy-on-write access to nested graphs, fresh names, splicing nodes in
and taking them out. Shared by every pass."""

from __future__ import annotations

from typing import Any

from normify.graph import (
    MODIFIED,
    Graph,
    GraphError,
    Node,
    TensorRef,
    all_layer_names,
    map_leaves,
    shallow_copy,
    tensor_refs,
)


class Editor:
    """Edits a copy of a graph, copy on write: nested graphs are copied the first time
    they are touched, and a spec or node is copied when it is edited (`Graph.copy`).

    Passes edit models of thousands of layers (`add` splices a chain in after every dense
    layer, `strip` and `fold` take one node out per norm), so every edit must cost what it
    touches, not the whole graph: the editor keeps per-graph indexes of calls and readers,
    which `splice` and `remove` keep up to date, and puts spliced nodes in order once, in
    `finish()`. Passes look calls and readers up here rather than scan `graph.nodes` for
    each layer they edit. The indexes hold node ids, not nodes: an edited node is a new
    object in `graph.nodes`.
    """

    def __init__(self, graph: Graph) -> None:
        self.root = graph.copy()
        self._original = graph  # never edited (copy on write): the names `unique` avoids
        self._taken: set[str] | None = None
        self._copied: set[str] = {""}
        self._calls: dict[int, dict[str, list[str]]] = {}
        # reader node ids of each tensor, as ordered sets (dicts): graph order, then the
        # readers an edit redirected to it
        self._readers: dict[int, dict[TensorRef, dict[str, None]]] = {}
        self._after: dict[int, dict[str, list[str]]] = {}
        self._graphs: dict[int, Graph] = {}

    def calls(self, graph: Graph, layer: str) -> list[Node]:
        """The calls of `layer` in `graph`, in graph order (indexed; a new list)."""
        return [graph.nodes[node_id] for node_id in self._calls_index(graph).get(layer, ())]

    def _calls_index(self, graph: Graph) -> dict[str, list[str]]:
        index = self._calls.get(id(graph))
        if index is None:
            index = {}
            for node in graph.nodes.values():
                index.setdefault(node.layer, []).append(node.id)
            self._calls[id(graph)] = index
            self._graphs[id(graph)] = graph
        return index

    def readers(self, graph: Graph, ref: TensorRef) -> list[Node]:
        """The nodes that read `ref` (indexed)."""
        return [graph.nodes[node_id] for node_id in self._readers_index(graph).get(ref, ())]

    def _readers_index(self, graph: Graph) -> dict[TensorRef, dict[str, None]]:
        index = self._readers.get(id(graph))
        if index is None:
            index = {}
            for node in graph.nodes.values():
                for source in node.inputs:
                    index.setdefault(source, {})[node.id] = None
            self._readers[id(graph)] = index
            self._graphs[id(graph)] = graph
        return index

    def splice(self, graph: Graph, source: TensorRef, chain: list[Node], last: TensorRef) -> None:
        """Insert `chain` after `source`'s node and make every reader of `source` read
        `last`, in time proportional to those readers; `finish()` puts nodes in order."""
        readers = self._redirect_readers(graph, source, last)
        index = self._readers[id(graph)]
        index[last] = dict.fromkeys(reader.id for reader in readers)
        index[source] = {chain[0].id: None}
        for node, following in zip(chain, chain[1:], strict=False):
            index[TensorRef(node.id, 0)] = {following.id: None}
        calls = self._calls.get(id(graph))
        for node in chain:
            graph.nodes[node.id] = node
            if calls is not None:
                calls.setdefault(node.layer, []).append(node.id)
        self._after.setdefault(id(graph), {}).setdefault(source.node, []).extend(
            node.id for node in chain
        )
        self._graphs[id(graph)] = graph

    def _redirect_readers(self, graph: Graph, old: TensorRef, new: TensorRef) -> list[Node]:
        """Make every reader of `old` (and the graph's outputs) read `new`; the readers,
        which are new nodes in place of the old ones."""
        swap = _swapper(old, new)
        readers = []
        for reader in self.readers(graph, old):
            reader = shallow_copy(reader)
            reader.args = map_leaves(swap, reader.args)
            reader.kwargs = map_leaves(swap, reader.kwargs)
            graph.nodes[reader.id] = reader
            readers.append(reader)
        graph.outputs = map_leaves(swap, graph.outputs)
        return readers

    def remove(self, graph: Graph, node_id: str) -> None:
        """Take a single-input, shape-keeping node out: its readers read its input instead.
        The layer goes too once none of its calls remain. Costs what the node touches (its
        readers, the calls of its layer), not the whole graph."""
        if self._after.get(id(graph)):
            self.settle(graph)  # spliced nodes are not in order yet: place them first
        node = graph.nodes[node_id]
        source = node.data_input
        if source is None:
            raise GraphError(f"{node_id} does not read exactly one tensor")
        output = TensorRef(node_id, 0)
        readers = self._redirect_readers(graph, output, source)
        index = self._readers[id(graph)]
        for ref in node.inputs:
            index.get(ref, {}).pop(node_id, None)
        index.pop(output, None)
        index.setdefault(source, {}).update(dict.fromkeys(reader.id for reader in readers))
        del graph.nodes[node_id]
        calls = self._calls_index(graph)
        remaining = [call for call in calls.get(node.layer, ()) if call != node_id]
        if remaining:
            calls[node.layer] = remaining
        else:
            calls.pop(node.layer, None)
            del graph.layers[node.layer]

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
            spliced = {node_id for chain in after.values() for node_id in chain}
            ordered: dict[str, Node] = {}
            for node in graph.nodes.values():
                if node.id not in spliced:
                    _place(node, after, graph.nodes, ordered)
            graph.nodes = ordered
        self._calls.pop(id(graph), None)
        self._readers.pop(id(graph), None)

    def graph_at(self, owner_path: str) -> Graph:
        """The editable graph that owns layers under `owner_path` (`""` is the model)."""
        graph, walked = self.root, ""
        for part in owner_path.split("/") if owner_path else []:
            walked = f"{walked}/{part}" if walked else part
            spec = graph.layers[part]
            subgraph = spec.subgraph
            if subgraph is None:
                raise GraphError(f"{walked} is not a nested model")
            if walked not in self._copied:
                spec = graph.layers[part] = shallow_copy(spec)
                subgraph = spec.subgraph = subgraph.copy()
                spec.status = MODIFIED
                self._copied.add(walked)
            graph = subgraph
        return graph

    def unique(self, base: str) -> str:
        """`base`, or `base_1`, `base_2`, ... : unique across the whole model."""
        if self._taken is None:  # on first use: only `add` makes new names
            self._taken = all_layer_names(self._original)
        name, counter = base, 1
        while name in self._taken:
            name = f"{base}_{counter}"
            counter += 1
        self._taken.add(name)
        return name


def _place(
    node: Node, after: dict[str, list[str]], nodes: dict[str, Node], ordered: dict[str, Node]
) -> None:
    ordered[node.id] = node
    for follower in after.get(node.id, []):
        _place(nodes[follower], after, nodes, ordered)


def output_refs(graph: Graph) -> list[TensorRef]:
    return tensor_refs(graph.outputs)


def _swapper(old: TensorRef, new: TensorRef) -> Any:
    def swap(value: Any) -> Any:
        return new if value == old else value

    return swap
