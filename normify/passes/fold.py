"""The `fold` pass: absorb inference-mode BatchNormalizations into the linear layer that
directly precedes them, and remove them.

A BatchNormalization folds when it is called once, reads output 0 of a dense or conv
layer that is called once, has no activation of its own and feeds nothing else, and
normalizes that layer's channel axis. Anything else stays, with the reason.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from normify import kinds, norms
from normify.folding import fold_reason, folded_config, negative_axis
from normify.graph import MODIFIED, FoldedFrom, Graph, LayerSpec, walk_layers
from normify.passes import Kept, PassResult
from normify.passes.edit import Editor, output_refs
from normify.rules import selected

BATCHNORM_CLASSES = ("BatchNormalization", "SyncBatchNormalization")


@dataclass(frozen=True)
class Fold:
    """A BatchNormalization folded into `into` (both layer paths)."""

    path: str  # the BatchNormalization's
    into: str

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "into": self.into}

    def describe(self) -> str:
        return f"fold   {self.path} into {self.into}"


def batchnorm_paths(graph: Graph) -> list[str]:
    return [
        path
        for path, spec, _ in walk_layers(graph)
        if spec.class_name in BATCHNORM_CLASSES and spec.kind == kinds.NORM
    ]


def fold_batchnorms(
    graph: Graph, include: tuple[str, ...] = (), exclude: tuple[str, ...] = ()
) -> PassResult:
    """A new graph with every foldable BatchNormalization folded, the folds, and the rest."""
    editor = Editor(graph)
    folds, kept = [], []
    for path in batchnorm_paths(graph):
        reason = selected(path, include, exclude)
        if reason is None:
            folded = try_fold(editor, path)
            if isinstance(folded, Fold):
                folds.append(folded)
                continue
            reason = folded
        kept.append(Kept(path, reason))
    return PassResult(editor.root, folds, kept, [])


def try_fold(editor: Editor, path: str) -> Fold | str:
    """Fold the BatchNormalization at `path` into its producer, or say why it cannot."""
    owner_path, _, name = path.rpartition("/")
    graph = editor.graph_at(owner_path)
    reason_or_producer = _foldable_producer(editor, graph, name)
    if isinstance(reason_or_producer, str):
        return reason_or_producer
    producer = reason_or_producer
    batchnorm = graph.layers[name]
    graph.layers[producer.name] = dataclasses.replace(
        producer,
        config=folded_config(producer.class_name, producer.config),
        status=MODIFIED,
        init={**producer.init, "fold": FoldedFrom(batchnorm)},
    )
    for node in editor.calls(graph, name):
        editor.remove(graph, node.id)
    prefix = f"{owner_path}/" if owner_path else ""
    return Fold(path, prefix + producer.name)


def _foldable_producer(editor: Editor, graph: Graph, name: str) -> LayerSpec | str:
    """The linear layer this BatchNormalization can fold into, or the reason it cannot.

    A shared pair folds too: when every call of the BatchNormalization reads a call of
    the same linear layer, and every call of that layer feeds only the BatchNormalization
    (what `add` builds for a shared layer).
    """
    batchnorm = graph.layers[name]
    if batchnorm.config.get("renorm"):
        return "uses batch renormalization"
    calls = editor.calls(graph, name)
    inputs = [node.data_input for node in calls]
    sources = [source for source in inputs if source is not None]
    if len(sources) != len(inputs):
        return "has more than one input"
    producer_layers = {graph.nodes[source.node].layer for source in sources}
    if len(producer_layers) != 1:
        return f"shared: its {len(calls)} calls follow different layers"
    producer = graph.layers[producer_layers.pop()]
    if producer.kind not in (kinds.DENSE, kinds.CONV):
        what = "an activation" if producer.kind == kinds.PASS else f"{producer.class_name}"
        return f"follows {what} ({producer.name}), not a dense or conv layer"
    if kinds.has_nonlinear_activation(producer.class_name, producer.config):
        activation = kinds.activation_name(producer.class_name, producer.config)
        return f"follows the {activation} activation of {producer.name}"
    if "fold" in producer.init:
        return f"{producer.name} already absorbs another BatchNormalization"
    if any(source.index != 0 for source in sources):
        return f"reads a secondary output of {producer.name}"
    if len(editor.calls(graph, producer.name)) != len(calls):
        return f"{producer.name} is also called where this BatchNormalization does not follow it"
    outputs = output_refs(graph)
    for source in sources:
        if len(editor.readers(graph, source)) != 1 or source in outputs:
            return f"the output of {producer.name} is also used elsewhere"
    call_ids = {node.id for node in calls}
    if graph is editor.root and any(ref.node in call_ids for ref in outputs):
        return "its output is a model output (removing it would rename the output)"
    axis = negative_axis(batchnorm.config.get("axis", -1), graph.shapes.get(sources[0]))
    reason = fold_reason(producer.class_name, producer.config, axis)
    if reason is None and norms.misapplies_channels_first_bias(
        producer.class_name, producer.config, graph.shapes.get(sources[0])
    ) in (True, None):
        reason = (
            f"{producer.name} is channels_first with an output width that equals (or, being "
            "unknown, may equal) its channel count: Keras would add a folded bias on the "
            "wrong axis"
        )
    return producer if reason is None else reason
