"""Passes edit copy on write: the graph they are given must come out exactly as it went in.

`Graph.copy` shares specs and nodes with the original, and the `Editor` puts a new spec or
node in place of one it edits (a pass over thousands of layers then copies only what it
touches). A pass that edited a shared spec or node in place would silently change the
caller's graph, and with it a later plan or the report of the original. These tests run
every pass, with several options, on fixture graphs (nested models, shared layers, several
inputs and outputs, masks, recurrent layers, ops) and on the graph `add` returns, and
compare each input graph with a deep snapshot taken before: every field, and the identity
of every spec and node object.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from normify import files
from normify import graph as graphs
from normify.flow import build_flow
from normify.graph import Graph
from normify.passes.add import add_norms
from normify.passes.fold import fold_batchnorms
from normify.passes.strip import strip_norms
from normify.passes.swap import swap_norms
from normify.rules import Rules, decide

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
NAMES = [
    "nested",
    "shared_dense",
    "multi_io",
    "conv_bn",
    "conv_bn_channels_first",
    "partial_bn_cnn",
    "text_bilstm",
    "gru_tagger",
    "seq2seq",
    "ops_model",
    "mlp",
]
RULE_SETS = [
    Rules(),
    Rules(position="post", include_output=True),
    Rules(dense="layernorm", conv="groupnorm", rnn="layernorm-cell"),
]


def snapshot(graph: Graph) -> dict[str, Any]:
    """Every field of the graph, its specs and its nodes, nested graphs included, with
    the identity of each spec and node object."""
    return {
        "name": graph.name,
        "inputs": copy.deepcopy(graph.inputs),
        "outputs": copy.deepcopy(graph.outputs),
        "shapes": dict(graph.shapes),
        "layers": [
            (
                key,
                id(spec),
                spec.name,
                spec.class_name,
                spec.module,
                copy.deepcopy(spec.config),
                spec.kind,
                spec.status,
                repr(spec.init),
                spec.renamed_from,
                id(spec.subgraph),
                snapshot(spec.subgraph) if spec.subgraph is not None else None,
            )
            for key, spec in graph.layers.items()
        ],
        "nodes": [
            (
                key,
                id(node),
                node.id,
                node.layer,
                copy.deepcopy(node.args),
                copy.deepcopy(node.kwargs),
            )
            for key, node in graph.nodes.items()
        ],
    }


def every_pass(graph: Graph, rules: Rules) -> Graph:
    """Run every pass on `graph`; the graph `add` returned (more to strip, fold, swap)."""
    added = add_norms(graph, decide(graph, build_flow(graph), rules), rules).graph
    strip_norms(graph, "batchnorm")
    strip_norms(graph, "all")
    fold_batchnorms(graph)
    swap_norms(graph, "batchnorm", "layernorm")
    swap_norms(graph, "layernorm", "rmsnorm", allow_mask_loss=True)
    return added


@pytest.mark.parametrize("name", NAMES)
def test_no_pass_changes_the_graph_it_is_given(name: str) -> None:
    graph = graphs.from_config(files.read_config(FIXTURES / f"{name}.keras"))
    before = snapshot(graph)
    for rules in RULE_SETS:
        added = every_pass(graph, rules)
        assert snapshot(graph) == before, f"{name}: a pass changed its input ({rules})"
        # and the graph add returned, which shares specs and nodes with the original
        added_before = snapshot(added)
        every_pass(added, Rules())
        assert snapshot(added) == added_before, f"{name}: a pass changed add's output"
        assert snapshot(graph) == before


def test_an_edited_node_is_a_new_object_and_the_rest_are_shared() -> None:
    graph = graphs.from_config(files.read_config(FIXTURES / "mlp.keras"))
    rules = Rules()
    added, insertions, _, _ = add_norms(graph, decide(graph, build_flow(graph), rules), rules)
    assert insertions
    # a node reading a spliced-in norm is a new node; one that reads what it read before
    # is the original object
    readers = {ref.node for node in added.nodes.values() for ref in node.inputs}
    for node_id, node in added.nodes.items():
        original = graph.nodes.get(node_id)
        if original is None:
            continue
        if node.args == original.args and node.kwargs == original.kwargs:
            assert node is original, f"{node_id} was copied although unchanged"
        else:
            assert node is not original
    assert readers  # the graph has edges at all
