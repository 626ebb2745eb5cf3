"""The `swap` pass: replace norm layers of one class by another.

The new layer keeps the old one's name (so output names and paths stay), its axis, its
epsilon where the new class has one, and its dtype; gamma and beta are carried where the
shapes match (RMSNormalization calls its gamma `scale`). Moving statistics have no
counterpart: a swap is never exact, which the API measures.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from normify import kinds, norms
from normify.errors import NormifyError
from normify.flow import build_flow, makes_mask
from normify.graph import INSERTED, Graph, LayerSpec, WeightFrom, walk_layers
from normify.passes import Kept, PassResult
from normify.passes.edit import Editor
from normify.rules import selected

SWAPPABLE = kinds.INSERTABLE_NORMS


@dataclass(frozen=True)
class Replacement:
    path: str
    from_class: str
    to_class: str
    carried: tuple[str, ...]
    groups: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "from": self.from_class,
            "to": self.to_class,
            "carried": list(self.carried),
            "groups": self.groups,
        }

    def describe(self) -> str:
        carried = ", ".join(self.carried) or "nothing"
        groups = f", {self.groups} groups" if self.groups else ""
        classes = f"{self.from_class} -> {self.to_class}{groups}"
        return f"swap   {self.path}: {classes} (carried {carried})"


def swap_norms(
    graph: Graph,
    source: str,
    target: str,
    *,
    groups: int | None = None,
    include: tuple[str, ...] = (),
    exclude: tuple[str, ...] = (),
    allow_mask_loss: bool = False,
) -> PassResult:
    """A new graph with the selected norms swapped, the swaps, the layers left alone, and
    notices (a mask entering a GroupNormalization's statistics)."""
    for value, flag in ((source, "--from"), (target, "--to")):
        if value not in SWAPPABLE:
            raise NormifyError(f"{flag} must be one of {', '.join(SWAPPABLE)}, not {value!r}")
    if source == target:
        raise NormifyError(f"--from and --to are both {source}: nothing to swap")
    from_class, to_class = kinds.NORM_NAMES[source], kinds.NORM_NAMES[target]
    editor = Editor(graph)
    replacements, kept, notices = [], [], []
    chosen, masks = [], False
    for path, spec, _ in walk_layers(graph):
        if spec.class_name == from_class:
            chosen.append(path)
        masks = masks or makes_mask(spec)
    masked = _masked_norm_paths(graph) if masks else set()
    for path in chosen:
        reason = selected(path, include, exclude)
        if reason is not None:
            kept.append(Kept(path, reason))
            continue
        if path in masked and target == "rmsnorm" and not allow_mask_loss:
            raise NormifyError(
                f"a mask flows into {path}; RMSNormalization would destroy it "
                "(pass --allow-mask-loss to swap anyway)"
            )
        if path in masked and target == "groupnorm":
            notices.append(
                f"a mask flows into {path}: GroupNormalization keeps it but counts padded "
                "steps in its statistics"
            )
        owner_path, _, name = path.rpartition("/")
        owner = editor.graph_at(owner_path)
        replacement = _replace(editor, owner, name, path, to_class, target, groups)
        if isinstance(replacement, str):
            kept.append(Kept(path, replacement))
        else:
            replacements.append(replacement)
    return PassResult(editor.root, replacements, kept, notices)


def _masked_norm_paths(graph: Graph) -> set[str]:
    """The norm layers a mask may flow into. Only asked when a layer makes a mask: the
    flow inlines every call of the model, most of the cost of a swap plan."""
    flow = build_flow(graph)
    masked = (flow.sites[key] for key in flow.masked_sites())
    return {site.path for site in masked if site.spec.kind == kinds.NORM}


def _replace(
    editor: Editor,
    graph: Graph,
    name: str,
    path: str,
    to_class: str,
    target: str,
    groups: int | None,
) -> Replacement | str:
    old = graph.layers[name]
    axis = old.config.get("axis", -1)
    if isinstance(axis, (list, tuple)):
        if len(axis) != 1:
            return f"normalizes over several axes {list(axis)}; swap needs one channel axis"
        axis = axis[0]
    shape = _input_shape(editor, graph, name)
    if target == "rmsnorm" and not _is_last_axis(axis, shape):
        return (
            f"RMSNormalization (Keras) normalizes only the last axis; this layer "
            f"normalizes axis {axis}"
        )
    channels = shape[axis] if shape and -len(shape) <= axis < len(shape) else None
    _, config = norms.norm_config(target, name, axis, old.config.get("dtype"))
    if "epsilon" in config and "epsilon" in old.config:
        config["epsilon"] = old.config["epsilon"]
    if target == "groupnorm":
        if groups:
            chosen = groups
        elif channels is None:
            return "channel count unknown; pass --groups to choose GroupNormalization groups"
        else:
            chosen = norms.largest_group_count(channels)
        if channels is not None and channels % chosen:
            return f"{channels} channels cannot be split into {chosen} groups"
        config["groups"] = chosen
    init: dict[str, Any] = {}
    carried = []
    has_scale = old.config.get("scale", True) and old.class_name != "RMSNormalization"
    old_scale = "scale" if old.class_name == "RMSNormalization" else "gamma"
    new_scale = "scale" if target == "rmsnorm" else "gamma"
    if has_scale or old.class_name == "RMSNormalization":
        init[new_scale] = WeightFrom(old, old_scale)
        carried.append(new_scale)
    if (
        target != "rmsnorm"
        and old.class_name != "RMSNormalization"
        and old.config.get("center", True)
    ):
        init["beta"] = WeightFrom(old, "beta")
        carried.append("beta")
    graph.layers[name] = LayerSpec(
        name, to_class, "keras.layers", config, kinds.NORM, status=INSERTED, init=init
    )
    return Replacement(path, old.class_name, to_class, tuple(carried), config.get("groups"))


def _input_shape(editor: Editor, graph: Graph, name: str) -> tuple[int | None, ...] | None:
    """The static shape of the tensor the norm layer normalizes (batch included)."""
    source = editor.calls(graph, name)[0].data_input
    return graph.shapes.get(source) if source is not None else None


def _is_last_axis(axis: int, shape: tuple[int | None, ...] | None) -> bool:
    return axis == -1 or (shape is not None and axis == len(shape) - 1)
