"""The `strip` pass: remove norm layers.

A BatchNormalization directly after a linear layer is folded into it first, so inference
does not change; every other removal changes predictions, and the API measures by how
much. When the removed norm sat between a linear layer and the `<layer>_act` Activation
that `add` split off it, the activation goes back into the layer, so `strip` after `add`
gives back the original structure.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from normify import kinds
from normify.graph import MODIFIED, Graph, TensorRef, walk_layers
from normify.passes.edit import Editor, consumers, output_refs, remove_node
from normify.passes.fold import BATCHNORM_CLASSES, Fold, Kept, selected, try_fold

STRIP_KINDS = {
    "batchnorm": BATCHNORM_CLASSES,
    "layernorm": ("LayerNormalization",),
    "groupnorm": ("GroupNormalization",),
    "rmsnorm": ("RMSNormalization",),
    "unitnorm": ("UnitNormalization",),
}


@dataclass(frozen=True)
class Removal:
    """A norm layer taken out; `folded_into` when its effect went into that layer."""

    path: str
    class_name: str
    folded_into: str | None = None

    @property
    def exact(self) -> bool:
        return self.folded_into is not None

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "class": self.class_name,
            "folded_into": self.folded_into,
            "exact": self.exact,
        }


def strip_norms(
    graph: Graph,
    kind: str = "all",
    include: tuple[str, ...] = (),
    exclude: tuple[str, ...] = (),
) -> tuple[Graph, list[Removal], list[Kept]]:
    classes = _classes(kind)
    editor = Editor(graph)
    removals, kept = [], []
    targets = [
        (path, spec.class_name)
        for path, spec, _ in walk_layers(graph)
        if spec.kind == kinds.NORM and spec.class_name in classes
    ]
    for path, class_name in targets:
        reason = selected(path, include, exclude)
        if reason is not None:
            kept.append(Kept(path, reason))
            continue
        if class_name in BATCHNORM_CLASSES:
            folded = try_fold(editor, path)
            if isinstance(folded, Fold):
                _restore_activation(editor, folded.into)
                removals.append(Removal(path, class_name, folded.into))
                continue
        reason = _remove(editor, path)
        if reason is None:
            removals.append(Removal(path, class_name))
        else:
            kept.append(Kept(path, reason))
    return editor.root, removals, kept


def _classes(kind: str) -> tuple[str, ...]:
    if kind == "all":
        return tuple(name for names in STRIP_KINDS.values() for name in names)
    if kind not in STRIP_KINDS:
        raise ValueError(f"unknown norm kind {kind!r}")
    return STRIP_KINDS[kind]


def _remove(editor: Editor, path: str) -> str | None:
    owner_path, _, name = path.rpartition("/")
    graph = editor.graph_at(owner_path)
    calls = graph.nodes_of(name)
    call_ids = {node.id for node in calls}
    if graph is editor.root and any(ref.node in call_ids for ref in output_refs(graph)):
        return "its output is a model output (removing it would rename the output)"
    if any(len(node.inputs) != 1 for node in calls):
        return "has more than one input"
    for node in calls:
        remove_node(graph, node.id)
    return None


def _restore_activation(editor: Editor, linear_path: str) -> None:
    """Merge the `<linear>_act` Activation that `add` split off back into the layer."""
    owner_path, _, name = linear_path.rpartition("/")
    graph = editor.graph_at(owner_path)
    [node] = graph.nodes_of(name)
    readers = consumers(graph, TensorRef(node.id, 0))
    if len(readers) != 1 or TensorRef(node.id, 0) in output_refs(graph):
        return
    reader_spec = graph.layers[readers[0].layer]
    spec = graph.layers[name]
    if reader_spec.name != f"{name}_act" or reader_spec.class_name != "Activation":
        return
    if kinds.has_nonlinear_activation(spec.class_name, spec.config):
        return
    is_output = graph is editor.root and TensorRef(readers[0].id, 0) in output_refs(graph)
    if is_output or len(graph.nodes_of(reader_spec.name)) != 1:
        return
    graph.layers[name] = dataclasses.replace(
        spec,
        config=_with_activation(spec.class_name, spec.config, reader_spec.config["activation"]),
        status=MODIFIED,
    )
    remove_node(graph, readers[0].id)


def _with_activation(class_name: str, config: dict[str, Any], activation: Any) -> dict[str, Any]:
    config = dict(config)
    inner = kinds.wrapped_layer(config) if class_name == "TimeDistributed" else None
    if inner is not None:
        inner_config = _with_activation(inner["class_name"], inner["config"], activation)
        config["layer"] = dict(inner, config=inner_config)
    else:
        config["activation"] = activation
    return config
