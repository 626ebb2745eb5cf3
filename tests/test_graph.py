"""The graph IR built from configs: formats, nesting, sharing, malformed input.

These tests need no backend: they build graphs from hand-written configs.
"""

from __future__ import annotations

import sys

import pytest

from normify import formats, kinds
from normify import graph as graphs
from normify.audit import audit_graph
from normify.errors import NormifyError
from normify.graph import TensorRef


def tensor(layer, node=0, index=0):
    return {"class_name": "__keras_tensor__", "config": {"keras_history": [layer, node, index]}}


def layer(name, class_name, inbound=(), module="keras.layers", **config):
    return {
        "module": module,
        "class_name": class_name,
        "name": name,
        "config": {"name": name, **config},
        "inbound_nodes": [{"args": list(args), "kwargs": {}} for args in inbound],
    }


def functional(name, layers, inputs, outputs, class_name="Functional"):
    return {
        "class_name": class_name,
        "config": {
            "name": name,
            "layers": layers,
            "input_layers": inputs,
            "output_layers": outputs,
        },
    }


def test_functional_config_with_shared_layer_and_ops():
    config = functional(
        "m",
        [
            layer("a", "InputLayer"),
            layer("b", "InputLayer"),
            layer("shared", "Dense", [[tensor("a")], [tensor("b")]], activation="relu"),
            layer(
                "add",
                "Add",
                [[tensor("shared", 0), tensor("shared", 1)]],
                module="keras.src.ops.numpy",
            ),
            layer("bn", "BatchNormalization", [[tensor("add")]]),
        ],
        [["a", 0, 0], ["b", 0, 0]],
        [["bn", 0, 0]],
    )
    graph = graphs.from_config(config)
    assert list(graph.nodes) == ["a", "b", "shared", "shared@1", "add", "bn"]
    assert graph.nodes["add"].inputs == [TensorRef("shared"), TensorRef("shared@1")]
    assert graph.layers["add"].kind == kinds.OP
    [row] = audit_graph(graph).rows
    assert (row.path, row.calls, row.normalized) == (
        "shared",
        2,
        False,
    )  # the Add is no pass-through


def test_nodes_are_ordered_topologically_whatever_the_config_order():
    config = functional(
        "m",
        [
            layer("late", "Dense", [[tensor("early")]]),
            layer("early", "Dense", [[tensor("x")]]),
            layer("x", "InputLayer"),
        ],
        [["x", 0, 0]],
        [["late", 0, 0]],
    )
    assert list(graphs.from_config(config).nodes) == ["x", "early", "late"]


def test_keras2_inbound_node_format_is_translated_before_the_graph_sees_it():
    config = {
        "class_name": "Model",
        "config": {
            "name": "old",
            "layers": [
                {"class_name": "InputLayer", "name": "in", "config": {"name": "in"},
                 "inbound_nodes": []},
                {"class_name": "Dense", "name": "d", "config": {"name": "d", "activation": "relu"},
                 "inbound_nodes": [[["in", 0, 0, {}]]]},
                {"class_name": "Dense", "name": "e", "config": {"name": "e"},
                 "inbound_nodes": [[["d", 0, 0, {}]]]},
                {"class_name": "BatchNormalization", "name": "bn", "config": {"name": "bn"},
                 "inbound_nodes": [[["e", 0, 0, {}]]]},
            ],
            "input_layers": [["in", 0, 0]],
            "output_layers": [["bn", 0, 0]],
        },
    }  # fmt: skip
    with pytest.raises(NormifyError, match="an inbound node has an unknown format: list"):
        graphs.from_config(config)  # the graph reads Keras 3's language only
    translated = formats.translate(config, formats.Origin(formats.KERAS2)).config
    rows = {row.path: row for row in audit_graph(graphs.from_config(translated)).rows}
    assert rows["d"].normalized is False
    assert rows["e"].normalized and rows["e"].position == "pre-activation"


def test_nested_models_are_addressed_by_path_and_norms_seen_across_boundaries():
    inner = {
        "class_name": "Sequential",
        "name": "encoder",
        "module": "keras",
        "config": {
            "name": "encoder",
            "layers": [
                {"class_name": "InputLayer", "config": {"name": "input_layer"}},
                {"class_name": "Dense", "config": {"name": "dense", "activation": "relu"}},
            ],
        },
        "inbound_nodes": [{"args": [tensor("x")], "kwargs": {}}],
    }
    config = functional(
        "outer",
        [layer("x", "InputLayer"), inner, layer("bn", "BatchNormalization", [[tensor("encoder")]])],
        [["x", 0, 0]],
        [["bn", 0, 0]],
    )
    graph = graphs.from_config(config)
    [row] = audit_graph(graph).rows
    assert row.path == "encoder/dense"
    assert row.normalized and row.norm_layer == "bn" and row.position == "post-activation"
    assert row.output  # reaches the model output through the norm


def test_functional_subclass_with_constructor_config_is_opaque():
    config = {"class_name": "BertBackbone", "config": {"name": "bert", "vocabulary_size": 100}}
    graph = graphs.from_config(config)
    assert graph.opaque_reason and "constructor arguments" in graph.opaque_reason
    report = audit_graph(graph)
    assert report.rows == [] and report.opaque[0]["class"] == "BertBackbone"


def test_nested_subclass_is_opaque_and_custom_layers_listed():
    backbone = {
        "module": "keras_hub.src.models.bert.bert_backbone",
        "class_name": "BertBackbone",
        "name": "bert",
        "config": {"name": "bert", "num_layers": 2},
        "inbound_nodes": [{"args": [tensor("x")], "kwargs": {}}],
    }
    custom = layer("scale", "Scale", [[tensor("bert")]], module="mypkg.layers")
    config = functional(
        "m", [layer("x", "InputLayer"), backbone, custom], [["x", 0, 0]], [["scale", 0, 0]]
    )
    report = audit_graph(graphs.from_config(config))
    opaque = {part["path"]: part["reason"] for part in report.opaque}
    assert "constructor arguments" in opaque["bert"]
    assert "custom layer" in opaque["scale"]


@pytest.mark.parametrize(
    "mutate,message",
    [
        (
            lambda c: c["config"]["layers"][1]["inbound_nodes"][0]["args"].append(tensor("ghost")),
            "unknown layer",
        ),
        (lambda c: c["config"]["layers"][1].update(class_name=5), "class_name"),
        (lambda c: c["config"]["layers"].append(c["config"]["layers"][1]), "used twice"),
        (lambda c: c["config"].update(output_layers=[["nowhere", 0, 0]]), "output"),
        (lambda c: c["config"]["layers"][1]["inbound_nodes"][0].update(args="x"), "args"),
        (
            lambda c: c["config"].update(
                layers=[
                    c["config"]["layers"][0],
                    *(layer(n, "Dense", [[tensor(m)]]) for n, m in (("p", "q"), ("q", "p"))),
                ]
            ),
            "cycle",
        ),
    ],
    ids=["unknown-input", "class-not-string", "duplicate", "bad-output", "bad-args", "cycle"],
)
def test_malformed_configs_raise_one_clear_error(mutate, message):
    config = functional(
        "m",
        [layer("x", "InputLayer"), layer("d", "Dense", [[tensor("x")]])],
        [["x", 0, 0]],
        [["d", 0, 0]],
    )
    mutate(config)
    with pytest.raises(NormifyError, match=message):
        graphs.from_config(config)


def test_deep_nesting_is_refused_not_a_crash():
    config = {"class_name": "Sequential", "config": {"name": "s0", "layers": []}}
    for depth in range(1, 200):
        config = {"class_name": "Sequential", "config": {"name": f"s{depth}", "layers": [config]}}
    with pytest.raises(NormifyError, match="nest"):
        graphs.from_config(config)


def test_graph_module_needs_no_backend():
    import subprocess

    code = (
        "import sys; import normify.graph, normify.audit, normify.flow, normify.rules, "
        "normify.passes.add, normify.files, normify.formats; "
        "assert 'keras' not in sys.modules and 'tensorflow' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("name", ["seq2seq.keras", "nested.keras", "ops_model.keras"])
def test_a_live_get_config_with_tuples_builds_the_graph_its_json_does(name: str) -> None:
    """`from_config` takes `{"class_name", "config": model.get_config()}` as its docstring
    says: a live config holds tuples where a file's JSON holds lists."""
    import json

    from conftest import FIXTURES
    from helpers import graph_structure

    keras = pytest.importorskip("keras")
    model = keras.saving.load_model(FIXTURES / name)
    live = {"class_name": type(model).__name__, "config": model.get_config()}
    assert graph_structure(graphs.from_config(live)) == graph_structure(
        graphs.from_config(json.loads(json.dumps(live)))
    )
