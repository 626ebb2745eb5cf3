"""Pictures of the graph: the SVG and DOT parsed back, the PNG's pixels looked at."""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import FIXTURES

import normify
from normify.cli import main
from normify.errors import NormifyError
from normify.picture import STYLES

SVG = "{http://www.w3.org/2000/svg}"


def _nodes(svg: Path) -> dict[str, dict]:
    """path -> {state, calls, mark, fill, text} of every layer box in an SVG."""
    root = ET.parse(svg).getroot()
    found = {}
    for group in root.iter(f"{SVG}g"):
        if group.get("class") != "node":
            continue
        rect = group.find(f"{SVG}rect")
        found[group.get("data-path")] = {
            "state": group.get("data-state"),
            "calls": int(group.get("data-calls")),
            "mark": group.get("data-mark"),
            "fill": rect.get("fill"),
            "stroke": rect.get("stroke"),
            "text": [t.text for t in group.findall(f"{SVG}text")],
            "box": [float(rect.get(k)) for k in ("x", "y", "width", "height")],
        }
    return found


def _clusters(svg: Path) -> dict[str, list[float]]:
    root = ET.parse(svg).getroot()
    return {
        group.get("data-path"): [float(group.find(f"{SVG}rect").get(k))
                                 for k in ("x", "y", "width", "height")]
        for group in root.iter(f"{SVG}g")
        if group.get("class") == "cluster"
    }  # fmt: skip


def _inside(inner: list[float], outer: list[float]) -> bool:
    x, y, w, h = inner
    X, Y, W, H = outer
    return X <= x and Y <= y and x + w <= X + W and y + h <= Y + H


def test_nested_model_svg(tmp_path: Path) -> None:
    path = tmp_path / "nested.svg"
    assert normify.audit(FIXTURES / "nested.keras").to_graph(path) == path
    nodes = _nodes(path)
    audit = normify.audit(FIXTURES / "nested.keras")
    for row in audit.rows:  # every dense layer is drawn, in the colour of its state
        state = "exempt" if row.output else "unnormalized"
        assert nodes[row.path]["state"] == state
        assert nodes[row.path]["fill"] == STYLES[state][0]
    assert nodes["head/dense_3"]["state"] == "exempt"
    assert nodes["x"]["state"] == "input" and nodes["probs"]["state"] == "other"
    clusters = _clusters(path)
    assert set(clusters) == {"encoder", "head"}
    for name, box in nodes.items():  # nested layers sit inside their cluster, others outside
        for cluster, rect in clusters.items():
            assert _inside(box["box"], rect) == name.startswith(cluster + "/"), (name, cluster)
    # edges go from the layer into the nested model's first layer and out of its last
    root = ET.parse(path).getroot()
    edges = {(p.get("data-from"), p.get("data-to")) for p in root.iter(f"{SVG}path")
             if p.get("class") == "edge"}  # fmt: skip
    assert ("x", "encoder/dense") in edges and ("encoder/dense_1", "dense") in edges
    assert ("dense", "head/dense_2") in edges and ("head/dense_3", "probs") in edges


def test_states_shared_layers_norms_and_lambda(tmp_path: Path) -> None:
    keras = pytest.importorskip("keras")
    layers = keras.layers
    tokens = keras.Input((12,), dtype="int32", name="tokens")
    embedded = layers.Embedding(40, 8, name="embed")(tokens)
    inner_in = keras.Input((12, 8))
    inner = layers.LSTM(16, return_sequences=True, name="lstm")(inner_in)
    inner = layers.LayerNormalization(name="ln")(inner)
    encoder = keras.Model(inner_in, inner, name="encoder")
    sequence = encoder(embedded)
    shared = layers.Dense(16, activation="relu", name="shared")
    a = shared(layers.GlobalAveragePooling1D(name="gap")(sequence))
    b = shared(layers.GlobalMaxPooling1D(name="gmp")(sequence))
    x = layers.Concatenate(name="concat")([a, b])
    x = layers.Dense(16, use_bias=False, name="proj")(x)
    x = layers.BatchNormalization(name="proj_bn")(x)
    x = layers.Activation("relu", name="proj_act")(x)
    x = layers.Lambda(lambda t: t * 2.0, name="double")(x)
    x = layers.Dense(8, activation="relu", name="post")(x)
    x = layers.BatchNormalization(name="post_bn")(x)
    outputs = layers.Dense(3, activation="softmax", name="out")(x)
    model = keras.Model(tokens, outputs, name="unseen")
    model.save(tmp_path / "unseen.keras")

    svg = tmp_path / "unseen.svg"
    normify.audit(tmp_path / "unseen.keras").to_graph(svg)
    nodes = _nodes(svg)
    expected = {
        "encoder/lstm": "post", "shared": "unnormalized", "proj": "pre", "post": "post",
        "out": "exempt", "encoder/ln": "norm", "proj_bn": "norm", "double": "lambda",
        "tokens": "input", "concat": "other",
    }  # fmt: skip
    for name, state in expected.items():
        assert nodes[name]["state"] == state, name
        assert nodes[name]["fill"] == STYLES[state][0]
    assert nodes["shared"]["calls"] == 2 and "shared: 2 calls" in nodes["shared"]["text"]
    assert all(node["calls"] == 1 for name, node in nodes.items() if name != "shared")
    assert "BatchNormalization, pre-activation" in nodes["proj"]["text"]
    assert set(_clusters(svg)) == {"encoder"}

    dot = tmp_path / "unseen.dot"
    normify.audit(tmp_path / "unseen.keras").to_graph(dot)
    pydot = pytest.importorskip("pydot")
    (graph,) = pydot.graph_from_dot_data(dot.read_text())
    clusters = graph.get_subgraphs()
    assert [c.get_name().strip('"') for c in clusters] == ["cluster_encoder"]
    inner_paths = {n.get("normify_path").strip('"') for n in clusters[0].get_nodes()}
    assert inner_paths == {"encoder/lstm", "encoder/ln"}
    by_path = {}
    for node in graph.get_nodes() + clusters[0].get_nodes():
        if node.get("normify_path"):
            by_path[node.get("normify_path").strip('"')] = node
    assert by_path["shared"].get("normify_calls").strip('"') == "2"
    for name, state in expected.items():
        assert by_path[name].get("fillcolor").strip('"') == STYLES[state][0], name
    assert len(graph.get_edges()) >= len(nodes) - 2


def test_png_shows_the_state_colours(tmp_path: Path) -> None:
    from PIL import Image

    png = tmp_path / "partial.png"
    result = CliRunner().invoke(
        main, ["audit", str(FIXTURES / "partial_bn_cnn.keras"), "--graph", str(png)]
    )
    assert result.exit_code == 0, result.output
    assert f"wrote {png}" in result.output
    image = Image.open(png).convert("RGB")
    svg = tmp_path / "partial.svg"
    normify.audit(FIXTURES / "partial_bn_cnn.keras").to_graph(svg)
    nodes = _nodes(svg)
    scale = image.width / float(ET.parse(svg).getroot().get("width"))
    for name in ("conv2d", "conv2d_1", "conv2d_2", "batch_normalization"):
        x, y, w, h = nodes[name]["box"]
        # a pixel inside the box, left of its text
        pixel = image.getpixel((int((x + 3) * scale), int((y + h / 2) * scale)))
        assert "#{:02x}{:02x}{:02x}".format(*pixel) == nodes[name]["fill"], name
    assert {nodes[n]["state"] for n in ("conv2d", "conv2d_1", "conv2d_2")} == {
        "pre", "post", "unnormalized"
    }  # fmt: skip


def test_compare_marks_what_add_inserted(tmp_path: Path) -> None:
    rewritten = tmp_path / "nested.bn.keras"
    runner = CliRunner()
    assert (
        runner.invoke(main, ["add", str(FIXTURES / "nested.keras"), "-o", str(rewritten)]).exit_code
        == 0
    )
    svg = tmp_path / "diff.svg"
    result = runner.invoke(
        main, ["audit", str(rewritten), "--graph", str(svg), "--compare",
               str(FIXTURES / "nested.keras"), "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["graph"] == str(svg)
    nodes = _nodes(svg)
    inserted = {name for name, node in nodes.items() if node["mark"] == "inserted"}
    assert {"encoder/dense_bn", "encoder/dense_act", "head/dense_2_bn"} <= inserted
    assert all(nodes[n]["state"] in ("norm", "other") for n in inserted)
    changed = {name for name, node in nodes.items() if node["mark"] == "changed"}
    assert "encoder/dense" in changed  # its activation moved out: now linear, no bias
    assert nodes["encoder/dense"]["state"] == "pre"
    assert nodes["head/dense_3"]["mark"] is None  # the output layer was left alone
    # without --compare the inserted norms are still drawn, unmarked, in the norm style
    plain = tmp_path / "plain.svg"
    normify.audit(rewritten).to_graph(plain)
    assert _nodes(plain)["encoder/dense_bn"]["state"] == "norm"
    assert all(node["mark"] is None for node in _nodes(plain).values())


def test_compare_lists_removed_layers(tmp_path: Path) -> None:
    stripped = tmp_path / "stripped.keras"
    runner = CliRunner()
    result = runner.invoke(
        main, ["strip", str(FIXTURES / "partial_bn_cnn.keras"), "-o", str(stripped)]
    )
    assert result.exit_code == 0, result.output
    svg = tmp_path / "diff.svg"
    normify.audit(stripped).to_graph(svg, compare=normify.audit(FIXTURES / "partial_bn_cnn.keras"))
    root = ET.parse(svg).getroot()
    removed = [t.text for t in root.iter(f"{SVG}text") if t.get("class") == "removed"]
    assert removed and "batch_normalization" in removed[0]


def test_png_without_pillow_writes_the_dot(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "PIL", None)  # as if Pillow were not installed
    png = tmp_path / "mlp.png"
    with pytest.raises(NormifyError) as raised:
        normify.audit(FIXTURES / "mlp.keras").to_graph(png)
    message = str(raised.value)
    assert "\n" not in message and "pip install pillow" in message
    assert (tmp_path / "mlp.dot").read_text().startswith("digraph")
    assert not png.exists()


def test_bad_picture_paths(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["audit", str(FIXTURES / "mlp.keras"), "--graph", "x.pdf"])
    assert result.exit_code == 2 and "use .svg, .png or .dot" in result.output
    result = runner.invoke(
        main, ["audit", str(FIXTURES / "mlp.keras"), "--compare", str(FIXTURES / "mlp.keras")]
    )
    assert result.exit_code == 2 and "--compare needs --graph" in result.output
