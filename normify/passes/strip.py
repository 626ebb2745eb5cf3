"""The `strip` pass: remove norm layers.

A BatchNormalization directly after a linear layer is folded into it first, so inference
does not change; every other removal changes predictions, and the API measures by how
much. When the removed norm sat between a linear layer and the `<layer>_act` Activation
that `add` split off it, the activation goes back into the layer, so `strip` after `add`
gives back the original structure.

Recurrent layers normalized inside their cells (`add --rnn layernorm-cell`) are converted
back to the stock layers, their norm parameters dropped.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from normify import incell, kinds
from normify.graph import MODIFIED, Graph, TensorRef, walk_layers
from normify.passes import Kept, PassResult
from normify.passes.edit import Editor, output_refs
from normify.passes.fold import BATCHNORM_CLASSES, Fold, try_fold
from normify.rules import selected

# `strip --kind layernorm-cell` converts only recurrent layers normalized in their cells;
# `layernorm` and `all` convert them too, beside removing LayerNormalization layers.
IN_CELL_KIND = kinds.LAYERNORM_CELL
IN_CELL_KINDS = ("all", "layernorm", IN_CELL_KIND)
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
    # a recurrent layer normalized in its cell, converted back to stock cells in place
    in_cell: bool = False

    @property
    def exact(self) -> bool:
        return self.folded_into is not None

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "class": self.class_name,
            "folded_into": self.folded_into,
            "exact": self.exact,
            "in_cell": self.in_cell,
        }

    def describe(self) -> str:
        if self.in_cell:
            return f"strip  {self.path} ({self.class_name}): back to stock cells"
        how = f"folded into {self.folded_into}" if self.folded_into else "removed"
        return f"strip  {self.path} ({self.class_name}): {how}"


def strip_norms(
    graph: Graph,
    kind: str = "all",
    include: tuple[str, ...] = (),
    exclude: tuple[str, ...] = (),
) -> PassResult:
    """A new graph without the selected norm layers (folded first where exact), the
    removals, and the norms left in place."""
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
        reason, producers = _remove(editor, path)
        if reason is not None:
            kept.append(Kept(path, reason))
            continue
        removals.append(Removal(path, class_name))
        for producer in producers:
            _restore_activation(editor, producer)
    if kind in IN_CELL_KINDS:
        removals.extend(_to_stock_cells(editor, graph, include, exclude, kept))
    return PassResult(editor.root, removals, kept, [])


def _to_stock_cells(
    editor: Editor,
    graph: Graph,
    include: tuple[str, ...],
    exclude: tuple[str, ...],
    kept: list[Kept],
) -> list[Removal]:
    """Recurrent layers normalized in their cells become stock layers again (same name
    and weights; the norm parameters are dropped)."""
    converted = []
    for path, spec, _ in walk_layers(graph):
        if spec.kind != kinds.RNN or not incell.normalized_in_cell(
            spec.class_name, spec.module, spec.config
        ):
            continue
        reason = selected(path, include, exclude)
        if reason is not None:
            kept.append(Kept(path, reason))
            continue
        owner_path, _, name = path.rpartition("/")
        owner = editor.graph_at(owner_path)
        current = owner.layers[name]
        class_name, module, config = incell.to_stock(
            current.class_name, current.module, current.config
        )
        owner.layers[name] = dataclasses.replace(
            current, class_name=class_name, module=module, config=config, status=MODIFIED
        )
        converted.append(
            Removal(path, incell.describe(current.class_name, current.config), in_cell=True)
        )
    return converted


def _classes(kind: str) -> tuple[str, ...]:
    if kind == "all":
        return tuple(name for names in STRIP_KINDS.values() for name in names)
    if kind == IN_CELL_KIND:
        return ()
    if kind not in STRIP_KINDS:
        raise ValueError(f"unknown norm kind {kind!r}")
    return STRIP_KINDS[kind]


def _remove(editor: Editor, path: str) -> tuple[str | None, list[str]]:
    """Remove every call of the norm at `path`: (reason it cannot be, None) or (None, the
    paths of the dense and conv layers whose output it read)."""
    owner_path, _, name = path.rpartition("/")
    graph = editor.graph_at(owner_path)
    calls = editor.calls(graph, name)
    call_ids = {node.id for node in calls}
    if graph is editor.root and any(ref.node in call_ids for ref in output_refs(graph)):
        return "its output is a model output (removing it would rename the output)", []
    sources = [node.data_input for node in calls]
    if any(source is None for source in sources):
        return "has more than one input", []
    producers = {graph.nodes[source.node].layer for source in sources if source is not None}
    for node in calls:
        editor.remove(graph, node.id)
    prefix = f"{owner_path}/" if owner_path else ""
    linear = [p for p in producers if graph.layers[p].kind in (kinds.DENSE, kinds.CONV)]
    return None, [prefix + producer for producer in sorted(linear)]


def _restore_activation(editor: Editor, linear_path: str) -> None:
    """Merge the `<linear>_act` Activation that `add` split off back into the layer, when
    it is the only reader of every call of the layer."""
    owner_path, _, name = linear_path.rpartition("/")
    graph = editor.graph_at(owner_path)
    spec = graph.layers[name]
    if kinds.has_nonlinear_activation(spec.class_name, spec.config):
        return
    outputs = output_refs(graph) if graph is editor.root else []
    readers = []
    for node in editor.calls(graph, name):
        found = editor.readers(graph, TensorRef(node.id, 0))
        if len(found) != 1 or TensorRef(node.id, 0) in outputs:
            return
        readers.append(found[0])
    activation = graph.layers[readers[0].layer] if readers else None
    # `add` names the split-off activation `<layer>_act` (`_act_1`... on a name clash)
    if (
        activation is None
        or activation.class_name != "Activation"
        or not _is_split_activation_name(activation.name, name)
    ):
        return
    if any(reader.layer != activation.name for reader in readers):
        return
    if len(readers) != len(editor.calls(graph, activation.name)):
        return
    if any(TensorRef(reader.id, 0) in outputs for reader in readers):
        return  # the activation names a model output
    graph.layers[name] = dataclasses.replace(
        spec,
        config=_with_activation(spec.class_name, spec.config, activation.config["activation"]),
        status=MODIFIED,
    )
    for reader in readers:
        editor.remove(graph, reader.id)


def _is_split_activation_name(candidate: str, layer_name: str) -> bool:
    """Whether `candidate` is `<layer_name>_act`, or `_act_1`, `_act_2`... on a name clash.

    String tests, not a regular expression built from the layer's name: `re` caches 512
    compiled patterns, so on a model of more layers every layer's pattern was compiled
    again (strip took 3.5 times as long for 1000 layers as for 500)."""
    prefix = layer_name + "_act"
    if not candidate.startswith(prefix):
        return False
    suffix = candidate[len(prefix) :]
    return suffix == "" or (suffix[0] == "_" and suffix[1:].isdecimal())


def _with_activation(class_name: str, config: dict[str, Any], activation: Any) -> dict[str, Any]:
    config = dict(config)
    inner = kinds.wrapped_layer(config) if class_name == "TimeDistributed" else None
    if inner is not None:
        inner_config = _with_activation(inner["class_name"], inner["config"], activation)
        config["layer"] = dict(inner, config=inner_config)
    else:
        config["activation"] = activation
    return config
