"""The `add` pass: insert a norm layer after every layer the rules selected.

For each selected layer the pass edits the graph that owns it:

- pre-activation (dense/conv default): a layer with its own non-linear activation is
  split into the linear layer, the norm and an `Activation` layer; a linear layer gets
  the norm right after it (so before an Activation layer that follows it);
- post-activation: the norm goes after the layer's own activation, or after the
  activation layer a linear layer feeds;
- recurrent layers: the norm goes after the output sequence (output 0), never the states;
  or, with `layernorm-cell`, the layer is replaced by its layer-normalized version
  (normalization inside the cell, `normify.incell`).

A BatchNormalization inserted directly after a linear op takes over its bias as `beta`
(the layer gets `use_bias=False`), so nothing is lost and the bias is not duplicated.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from normify import incell, kinds, norms
from normify.graph import (
    INSERTED,
    MODIFIED,
    Graph,
    IdentityVariance,
    LayerSpec,
    Node,
    TensorRef,
    WeightFrom,
    map_leaves,
    node_id,
)
from normify.keras_internals import inbound_nodes
from normify.passes import Kept, PassResult
from normify.passes.edit import Editor, output_refs
from normify.rules import IN_CELL, Decision, Rules


@dataclass(frozen=True)
class Insertion:
    """One inserted norm layer, as planned."""

    path: str  # the layer normalized
    norm: str
    norm_class: str
    position: str
    name: str
    axis: int
    activation_layer: str | None = None
    bias_moved: bool = False
    renamed: tuple[str, str] | None = None
    exact: bool = True
    note: str | None = None
    replaces: str = ""  # path of the layer whose output the new chain now stands in for
    chain_end: str = ""  # path of the last new layer, whose output replaces it

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "norm": self.norm_class,
            "position": self.position,
            "name": self.name,
            "axis": self.axis,
            "activation_layer": self.activation_layer,
            "bias_moved": self.bias_moved,
            "renamed": list(self.renamed) if self.renamed else None,
            "exact": self.exact,
            "note": self.note,
        }

    def describe(self) -> str:
        if self.position == kinds.IN_CELL:
            return f"convert {self.path} to {self.norm_class} (layer normalization in the cell)"
        extra = []
        if self.activation_layer:
            extra.append(f"activation moved to {self.activation_layer}")
        if self.bias_moved:
            extra.append("bias moved into beta")
        if self.renamed:
            extra.append(f"{self.renamed[0]} renamed {self.renamed[1]} to keep the output name")
        note = f" ({'; '.join(extra)})" if extra else ""
        return (
            f"insert {self.name} ({self.norm_class}, axis {self.axis}) after {self.path}, "
            f"{self.position}{note}"
        )


def add_norms(graph: Graph, decisions: list[Decision], rules: Rules) -> PassResult:
    """A new graph with a norm inserted for every `insert` decision; the insertions, and
    the layers skipped with their reasons."""
    editor = Editor(graph)
    insertions: list[Insertion] = []
    kept = [Kept(d.path, str(d.reason)) for d in decisions if not d.insert]
    for decision in decisions:
        if not decision.insert:
            continue
        owner_path, _, layer_name = decision.path.rpartition("/")
        owner = editor.graph_at(owner_path)
        if decision.norm == IN_CELL:
            insertions.append(_convert_in_cell(owner, layer_name, decision.path))
            continue
        insertions.append(
            _insert(
                owner,
                layer_name,
                decision,
                rules,
                editor,
                is_top=owner is editor.root,
                prefix=owner_path,
            )
        )
    return PassResult(editor.finish(), insertions, kept, [])


def _insert(
    graph: Graph,
    layer_name: str,
    decision: Decision,
    rules: Rules,
    editor: Editor,
    is_top: bool,
    prefix: str,
) -> Insertion:
    spec = graph.layers[layer_name]
    norm = decision.norm
    if norm is None:
        raise ValueError(f"{layer_name}: insertion planned without a norm")
    own_activation = kinds.has_nonlinear_activation(spec.class_name, spec.config)
    linear_kind = spec.kind in (kinds.DENSE, kinds.CONV)
    split = linear_kind and rules.position == "pre" and own_activation
    after_activation_layer = (
        linear_kind and rules.position == "post" and not own_activation
        and _activation_consumers(graph, layer_name, editor) is not None
    )  # fmt: skip
    direct_after_linear = (
        linear_kind and not after_activation_layer and (split or not own_activation)
    )
    # In half precision the layer adds its bias before its output is rounded, and a
    # BatchNormalization after the rounding: moving the bias would round twice.
    bias_moved = (
        norm == "batchnorm"
        and direct_after_linear
        and _has_per_channel_bias(spec)
        and not norms.computes_in_half_precision(spec.config)
    )

    norm_name = editor.unique(f"{layer_name}_{norms.SUFFIXES[norm]}")
    axis = norms.channel_axis(spec.class_name, spec.config)
    dtype = norms.plain_dtype(spec.config)
    norm_class, norm_cfg = norms.norm_config(norm, norm_name, axis, dtype)
    if norm == "groupnorm":
        norm_cfg["groups"] = _group_count(spec, axis)
    init: dict[str, Any] = {}
    if norm == "batchnorm":
        init["moving_mean"] = 0.0
        init["moving_variance"] = IdentityVariance(norm_cfg["epsilon"])
        init["gamma"] = 1.0
        init["beta"] = WeightFrom(spec, "bias") if bias_moved else 0.0
    new_specs = [
        LayerSpec(
            norm_name, norm_class, "keras.layers", norm_cfg, kinds.NORM, status=INSERTED, init=init
        )
    ]
    activation_name = None
    if split:
        activation_name = editor.unique(f"{layer_name}_act")
        activation_cfg = {"name": activation_name, "activation": _activation_config(spec)}
        if dtype is not None:
            activation_cfg["dtype"] = dtype
        new_specs.append(
            LayerSpec(
                activation_name,
                "Activation",
                "keras.layers",
                activation_cfg,
                kinds.PASS,
                status=INSERTED,
            )
        )
    if split or bias_moved:
        graph.layers[layer_name] = dataclasses.replace(
            spec,
            config=_linear_config(
                spec.class_name, spec.config, drop_activation=split, drop_bias=bias_moved
            ),
            status=MODIFIED,
        )
    for new_spec in new_specs:
        graph.layers[new_spec.name] = new_spec

    renamed = None
    replaced_layer = layer_name
    activation_consumers = (
        _activation_consumers(graph, layer_name, editor) if after_activation_layer else None
    )
    for call_index, node in enumerate(editor.calls(graph, layer_name)):
        source = TensorRef(node.id, 0)
        if activation_consumers is not None:
            source = TensorRef(activation_consumers[call_index].id, 0)
            replaced_layer = activation_consumers[call_index].layer
        chain = [Node(node_id(new_spec.name, call_index), new_spec.name) for new_spec in new_specs]
        previous = source
        for new_node in chain:
            new_node.args = (previous,)
            previous = TensorRef(new_node.id, 0)
        if is_top and source in output_refs(graph):
            renamed = renamed or (source.node, previous.node)
        editor.splice(graph, source, chain, previous)

    chain_end = new_specs[-1].name
    note = None
    first_output = graph.shapes.get(TensorRef(editor.calls(graph, layer_name)[0].id, 0))
    misapplied = norms.misapplies_channels_first_bias(spec.class_name, spec.config, first_output)
    if bias_moved and misapplied is True:
        note = (
            "Keras adds this channels_first layer's bias on the wrong axis when its output "
            "width equals its channel count (as here, or possibly: the width is not fixed); as "
            "the BatchNormalization's beta the bias is applied correctly, so predictions "
            "change for such inputs"
        )
    if renamed is not None:
        renamed = _keep_output_name(graph, renamed[0], renamed[1], editor)
        if new_specs[-1].name == norm_name:
            norm_name = renamed[0]
        chain_end = renamed[0]
    prefix_path = f"{prefix}/" if prefix else ""
    return Insertion(
        path=f"{prefix}/{layer_name}" if prefix else layer_name,
        norm=norm,
        norm_class=norm_class,
        position=kinds.PRE if direct_after_linear else kinds.POST,
        name=f"{prefix}/{norm_name}" if prefix else norm_name,
        axis=axis,
        activation_layer=activation_name,
        bias_moved=bias_moved,
        renamed=renamed,
        exact=norms.is_exact_identity(norm) and note is None,
        note=note,
        replaces=prefix_path + replaced_layer,
        chain_end=prefix_path + chain_end,
    )


def _convert_in_cell(graph: Graph, layer_name: str, path: str) -> Insertion:
    """Replace a recurrent layer by its layer-normalized version, in place: same name,
    same calls, the stock weights carried by key (see `normify.incell`)."""
    spec = graph.layers[layer_name]
    class_name, module, config = incell.to_layer_norm(spec.class_name, spec.config)
    graph.layers[layer_name] = dataclasses.replace(
        spec,
        class_name=class_name,
        module=module or spec.module,
        config=config,
        status=MODIFIED,
    )
    return Insertion(
        path=path,
        norm=IN_CELL,
        norm_class=incell.describe(class_name, config),
        position=kinds.IN_CELL,
        name=path,
        axis=-1,
        exact=False,
        replaces=path,
        chain_end=path,
    )


def _activation_consumers(graph: Graph, layer_name: str, editor: Editor) -> list[Node] | None:
    """For each call of the layer, its only consumer if that is an activation layer."""
    found = []
    for node in editor.calls(graph, layer_name):
        source = TensorRef(node.id, 0)
        readers = editor.readers(graph, source)
        if source in output_refs(graph) or len(readers) != 1:
            return None
        reader_spec = graph.layers[readers[0].layer]
        if not kinds.is_activation_layer(reader_spec.class_name, reader_spec.config):
            return None
        found.append(readers[0])
    return found


def _keep_output_name(graph: Graph, producer: str, last: str, editor: Editor) -> tuple[str, str]:
    """Model outputs are named after the layer producing them: give that name back.

    The layer that produced the output is renamed `<name>_core`, and the last inserted
    layer takes its name, so `compile(loss={name: ...})` keeps working.
    """
    editor.settle(graph)
    producer_layer = graph.nodes[producer].layer
    last_layer = graph.nodes[last].layer
    core_name = editor.unique(f"{producer_layer}_core")
    _rename_layer(graph, producer_layer, core_name)
    _rename_layer(graph, last_layer, producer_layer)
    return producer_layer, core_name


def _rename_layer(graph: Graph, old: str, new: str) -> None:
    spec = graph.layers[old]
    config = dict(spec.config)
    config["name"] = new
    renamed_spec = dataclasses.replace(
        spec, name=new, config=config, renamed_from=spec.renamed_from or old,
        status=spec.status if spec.status == INSERTED else MODIFIED,
    )  # fmt: skip
    graph.layers = {
        (new if name == old else name): (renamed_spec if name == old else value)
        for name, value in graph.layers.items()
    }
    id_map = {}
    for node in graph.nodes.values():
        if node.layer == old:
            call_index = 0 if node.id == old else int(node.id.rsplit("@", 1)[1])
            id_map[node.id] = node_id(new, call_index)

    def rename_ref(value: Any) -> Any:
        if isinstance(value, TensorRef) and value.node in id_map:
            return TensorRef(id_map[value.node], value.index)
        return value

    nodes = {}
    for node in graph.nodes.values():
        if node.layer == old or any(ref.node in id_map for ref in node.inputs):
            node = dataclasses.replace(  # a new node: the old one may be the original's
                node,
                id=id_map.get(node.id, node.id),
                layer=new if node.layer == old else node.layer,
                args=map_leaves(rename_ref, node.args),
                kwargs=map_leaves(rename_ref, node.kwargs),
            )
        nodes[node.id] = node
    graph.nodes = nodes
    graph.outputs = map_leaves(rename_ref, graph.outputs)
    graph.inputs = map_leaves(rename_ref, graph.inputs)


def _group_count(spec: LayerSpec, axis: int) -> int | None:
    """Groups for a GroupNormalization after this layer: the largest divisor of its channel
    count that is at most 32. Known only for graphs built from a live model (a plan read
    from a file shows None: chosen when the model is built)."""
    if spec.obj is None or not inbound_nodes(spec.obj):
        return None
    channels = inbound_nodes(spec.obj)[0].output_tensors[0].shape[axis]
    return norms.largest_group_count(int(channels)) if channels else None


def _activation_config(spec: LayerSpec) -> Any:
    _, config = kinds.innermost(spec.class_name, spec.config)
    return config.get("activation")


def _has_per_channel_bias(spec: LayerSpec) -> bool:
    """Whether the layer's bias is one value per output channel (so BN's beta can hold it)."""
    class_name, config = kinds.innermost(spec.class_name, spec.config)
    if class_name == "EinsumDense":
        bias_axes = config.get("bias_axes") or ""
        equation = str(config.get("equation", ""))
        output_spec = equation.split("->")[-1]
        return len(bias_axes) == 1 and output_spec.endswith(bias_axes)
    return bool(config.get("use_bias", True))


def _linear_config(
    class_name: str, config: dict[str, Any], *, drop_activation: bool, drop_bias: bool
) -> dict[str, Any]:
    """The config of the same layer without its activation and/or bias (wrappers too)."""
    config = dict(config)
    inner = kinds.wrapped_layer(config) if class_name == "TimeDistributed" else None
    if inner is not None:
        config["layer"] = dict(
            inner,
            config=_linear_config(
                inner["class_name"],
                inner["config"],
                drop_activation=drop_activation,
                drop_bias=drop_bias,
            ),
        )
        return config
    if drop_activation:
        config["activation"] = "linear"
    if drop_bias and class_name == "EinsumDense":
        config["bias_axes"] = None
    elif drop_bias:
        config["use_bias"] = False
    return config
