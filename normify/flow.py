"""How tensors flow through a model across nesting: the facts audit and rules share.

`Flow` inlines nested models into one graph of call sites, so a Dense at the end of a
nested Sequential sees the BatchNormalization the outer model applies to its output, and
"reaches a model output" means the top-level model's outputs.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import NamedTuple

from normify import kinds
from normify.graph import Graph, LayerSpec, TensorRef, tensor_refs


class CallSite(NamedTuple):
    """One call of one layer, after inlining: `key` is unique, `path` names the layer.

    A named tuple, not a dataclass: a flow has one per layer call, and a plan builds a
    flow of thousands of them."""

    key: str
    path: str
    spec: LayerSpec
    inputs: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class NormFinding:
    """A norm layer that normalizes a call site's output, and how it is reached."""

    path: str
    class_name: str
    through_activation: bool


@dataclass
class Flow:
    sites: dict[str, CallSite] = field(default_factory=dict)
    consumers: dict[tuple[str, int], list[str]] = field(default_factory=lambda: defaultdict(list))
    outputs: set[tuple[str, int]] = field(default_factory=set)

    def sites_by_path(self) -> dict[str, list[CallSite]]:
        grouped: dict[str, list[CallSite]] = defaultdict(list)
        for site in self.sites.values():
            grouped[site.path].append(site)
        return grouped

    def norm_after(self, site: CallSite) -> NormFinding | None:
        """The norm layer consuming this site's main output directly or via pass-through."""
        seen: set[str] = set()
        frontier = [((site.key, 0), False)]
        while frontier:
            tensor, through_activation = frontier.pop(0)
            for consumer_key in self.consumers.get(tensor, []):
                if consumer_key in seen:
                    continue
                seen.add(consumer_key)
                consumer = self.sites[consumer_key]
                spec = consumer.spec
                if spec.kind == kinds.NORM:
                    return NormFinding(consumer.path, spec.class_name, through_activation)
                if spec.kind == kinds.PASS:
                    activation = kinds.is_activation_layer(spec.class_name, spec.config)
                    frontier.append(((consumer.key, 0), through_activation or activation))
        return None

    def reaches_output(self, site: CallSite) -> bool:
        """Whether this site's main output is a model output through shape-keeping layers
        only (pass-through and norm layers)."""
        seen: set[str] = set()
        frontier = [(site.key, 0)]
        while frontier:
            tensor = frontier.pop()
            if tensor in self.outputs:
                return True
            for consumer_key in self.consumers.get(tensor, []):
                if consumer_key in seen:
                    continue
                seen.add(consumer_key)
                if self.sites[consumer_key].spec.kind in (kinds.PASS, kinds.NORM):
                    frontier.append((consumer_key, 0))
        return False

    def masked_sites(self) -> set[str]:
        """The keys of the call sites a mask may flow into: those downstream of a
        mask_zero Embedding or a Masking layer, through any layers.

        One pass over the sites finds the layers that make a mask; when there are any, one
        more pass carries it forward. The sites are in topological order (each graph's
        nodes are, and a nested model's sites are inlined where it is called), so asking
        about every site costs as much as asking about one: no walk back from each site.
        """
        sources = {key for key, site in self.sites.items() if makes_mask(site.spec)}
        masked: set[str] = set()
        if not sources:
            return masked
        for key, site in self.sites.items():
            for producer_key, _ in site.inputs:
                if producer_key in masked or producer_key in sources:
                    masked.add(key)
                    break
        return masked


def makes_mask(spec: LayerSpec) -> bool:
    """Whether the layer makes a mask: a Masking layer, or any layer with `mask_zero`."""
    return spec.class_name == "Masking" or bool(spec.config.get("mask_zero"))


def build_flow(graph: Graph) -> Flow:
    flow = Flow()
    top_outputs = _inline(graph, "", "", None, flow)
    flow.outputs = set(top_outputs)
    return flow


def _inline(
    graph: Graph,
    key_prefix: str,
    path_prefix: str,
    bound_inputs: list[tuple[str, int]] | None,
    flow: Flow,
) -> list[tuple[str, int]]:
    aliases: dict[TensorRef, tuple[str, int]] = {}

    def resolve(ref: TensorRef) -> tuple[str, int]:
        return aliases.get(ref, (key_prefix + ref.node, ref.index))

    input_refs = tensor_refs(graph.inputs)
    for node in graph.nodes.values():
        spec = graph.layers[node.layer]
        if spec.kind == kinds.INPUT and bound_inputs is not None:
            ref = TensorRef(node.id)
            if ref in input_refs and input_refs.index(ref) < len(bound_inputs):
                aliases[ref] = bound_inputs[input_refs.index(ref)]
                continue
        inputs = [resolve(ref) for ref in node.inputs]
        subgraph = spec.subgraph
        if subgraph is not None and subgraph.opaque_reason is None:
            inner_prefix = key_prefix + node.id + "/"
            inner_outputs = _inline(
                subgraph, inner_prefix, path_prefix + spec.name + "/", inputs, flow
            )
            for index, inner in enumerate(inner_outputs):
                aliases[TensorRef(node.id, index)] = inner
            continue
        key = key_prefix + node.id
        flow.sites[key] = CallSite(key, path_prefix + spec.name, spec, tuple(inputs))
        for producer in inputs:
            flow.consumers[producer].append(key)
    return [resolve(ref) for ref in tensor_refs(graph.outputs)]
