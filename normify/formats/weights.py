"""Reading the weights of a Keras 1 or Keras 2 `.h5` file into the Keras 3 model built
from its translated config, layer by layer, through the translation's weight rules.

Keras 2 stored a model's weights in a `model_weights` group: one group per layer (named
as the layer, listed in the `layer_names` attribute), each with a `weight_names`
attribute listing its arrays in Keras' legacy order (trainable weights, then
non-trainable ones). A nested model is one such group holding the weights of all its
layers: those layers' trainable weights, layer by layer, then their non-trainable ones.
Each stored layer is matched to the model's layer of the same name; its arrays pass
through the weight rules of the layer (and of each layer inside a nested model), and are
assigned only when every count and shape fits.
"""

from __future__ import annotations

import contextlib
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from normify.formats.base import Context, FormatError, WeightRule
from normify.formats.weightmath import WeightLayoutError


@dataclass
class StoredLayer:
    name: str
    arrays: list[Any]


def stored_layers(group: Any) -> list[StoredLayer]:
    """The layers of an h5 weights group that hold weights, in the file's order."""
    stored = []
    for name in _names(group.attrs.get("layer_names")):
        layer_group = group[name]
        weight_names = _names(layer_group.attrs.get("weight_names"))
        if weight_names:
            stored.append(StoredLayer(name, [layer_group[w][()] for w in weight_names]))
    return stored


def _names(raw: Any) -> list[str]:
    if raw is None:
        return []
    return [item.decode("utf-8") if isinstance(item, bytes) else str(item) for item in raw]


def legacy_weights(layer: Any) -> list[Any]:
    """A layer's variables in Keras' legacy order (what `.h5` files hold)."""
    return list(layer.trainable_weights) + list(layer.non_trainable_weights)


def load(
    model: Any, group: Any, weight_rules: dict[str, list[WeightRule]], context: Context
) -> None:
    """Assign the weights of h5 group `group` to `model`, through `weight_rules`."""
    stored = {layer.name: layer for layer in stored_layers(group)}
    targets = [layer for layer in model.layers if legacy_weights(layer)]
    names = [layer.name for layer in targets]
    missing = [name for name in names if name not in stored]
    extra = [name for name in stored if name not in names]
    if missing or extra:
        if len(stored) != len(targets):
            raise FormatError(
                f"the file holds weights for {len(stored)} layer(s) but the model has "
                f"{len(targets)} with weights"
                + (f" (layer {missing[0]!r} has none in the file)" if missing else "")
            )
        # Keras 2 matched layers by position; names differ when layers were renamed.
        pairs = list(zip(targets, stored.values(), strict=True))
    else:
        pairs = [(layer, stored[layer.name]) for layer in targets]
    assignments = []
    for layer, saved in pairs:
        arrays = _translated(layer, layer.name, saved.arrays, weight_rules, context)
        assignments.extend(_checked(layer, layer.name, arrays))
    for variable, array in assignments:
        variable.assign(array)
    _finalize(model)


def _translated(
    layer: Any,
    path: str,
    arrays: list[Any],
    weight_rules: dict[str, list[WeightRule]],
    context: Context,
) -> list[Any]:
    """`arrays` (the stored weights of `layer`) through the rules of the layer and of the
    layers inside it, when it is a model."""
    inner = getattr(layer, "layers", None)
    if inner is not None and any(key.startswith(f"{path}/") for key in weight_rules):
        arrays = _translated_nested(layer, path, arrays, weight_rules, context)
    for rule in weight_rules.get(path, []):
        try:
            arrays = rule.apply(arrays)
        except WeightLayoutError as error:
            raise context.refuse(
                path, f"its stored weights do not fit rule {rule.rule}: {error}"
            ) from error
    return arrays


def _translated_nested(
    model: Any,
    path: str,
    arrays: list[Any],
    weight_rules: dict[str, list[WeightRule]],
    context: Context,
) -> list[Any]:
    """A nested model's arrays cut into its layers' parts (every layer's trainable ones,
    then every layer's non-trainable ones), each translated, and put back in order."""
    layers = [layer for layer in model.layers if legacy_weights(layer)]
    trainable = [len(layer.trainable_weights) for layer in layers]
    frozen = [len(layer.non_trainable_weights) for layer in layers]
    if sum(trainable) + sum(frozen) != len(arrays):
        return arrays  # the counts check in `_checked` says what does not fit
    parts: list[list[Any]] = [[] for _ in layers]
    position = 0
    for counts in (trainable, frozen):
        for index, count in enumerate(counts):
            parts[index].extend(arrays[position : position + count])
            position += count
    translated = [
        _translated(layer, f"{path}/{layer.name}", part, weight_rules, context)
        for layer, part in zip(layers, parts, strict=True)
    ]
    result = []
    for counts, offset in ((trainable, 0), (frozen, 1)):
        for index, count in enumerate(counts):
            part = translated[index]
            result.extend(
                part[:count] if offset == 0 else part[len(part) - count :] if count else []
            )
    return result


def _checked(layer: Any, path: str, arrays: list[Any]) -> list[tuple[Any, Any]]:
    variables = legacy_weights(layer)
    if len(variables) != len(arrays):
        raise FormatError(
            f"layer {path!r}: the file holds {len(arrays)} weight(s), the layer has "
            f"{len(variables)}"
        )
    pairs = []
    for variable, array in zip(variables, arrays, strict=True):
        if tuple(variable.shape) != tuple(array.shape):
            raise FormatError(
                f"layer {path!r}: stored weight of shape {tuple(array.shape)} does not fit "
                f"{variable.path.rsplit('/', 1)[-1]} of shape {tuple(variable.shape)}"
            )
        pairs.append((variable, array))
    return pairs


def apply_to_live(model: Any, weight_rules: dict[str, list[WeightRule]], context: Context) -> None:
    """Apply weight rules to a model whose weights Keras already read (a tf_keras `.keras`
    file): each rule's layer's current weights, through the rule, assigned back."""
    import keras

    for path, rules in weight_rules.items():
        layer = _layer_at(model, path)
        variables = legacy_weights(layer)
        arrays = [keras.ops.convert_to_numpy(variable) for variable in variables]
        for rule in rules:
            try:
                arrays = rule.apply(arrays)
            except WeightLayoutError as error:
                raise context.refuse(
                    path, f"its weights do not fit rule {rule.rule}: {error}"
                ) from error
        for variable, array in _checked(layer, path, arrays):
            variable.assign(array)


def _layer_at(model: Any, path: str) -> Any:
    layer = model
    for part in path.split("/"):
        layer = layer.get_layer(part)
    return layer


def _finalize(model: Any) -> None:
    """Layers whose state is computed from their weights (Normalization, lookups)
    recompute it, as Keras' own weight loading has them do."""
    pending = [model]
    while pending:
        layer = pending.pop()
        pending.extend(getattr(layer, "layers", []) or [])
        if layer is not model and hasattr(layer, "finalize_state") and legacy_weights(layer):
            layer.finalize_state()


WINDOWS_SEPARATOR = "\\"
TF_KERAS_213_LAYERS = "_layer_checkpoint_dependencies"


@contextlib.contextmanager
def archive_weights(path: Path, context: Context) -> Iterator[Path]:
    """Where Keras 3 reads the weights of a tf.keras `.keras` file: the file itself, or a
    copy of its model.weights.h5 with every array, bit for bit, at the path Keras 3 reads.

    Two layouts need the copy. tf.keras 2.13 to 2.15 on Windows joined the paths with the
    system's separator (`layers\\dense/vars/0`), where no reader looks (rule
    tf-keras-windows-paths). tf.keras 2.13 kept a model's layers in
    `_layer_checkpoint_dependencies`, which lists every layer that has weights twice, and
    numbered the layers of a class along that list: the weighted ones skip a number
    (`conv2d`, `conv2d_2`, `conv2d_4`). Keras 3 finds the group but numbers the layers
    one by one, so from the second weighted layer of a class on it reads nothing, or the
    wrong layer's arrays (rule tf-keras-2.13-layer-names). The layers of a class keep
    their order, so the n-th name of a class becomes that class's n-th Keras 3 name."""
    import h5py

    with zipfile.ZipFile(path) as archive, archive.open("model.weights.h5") as member:
        with h5py.File(member, "r") as stored:
            names: list[str] = []
            stored.visit(names.append)
    windows = [name for name in names if WINDOWS_SEPARATOR in name.split("/")[0]]
    posix = [name.replace(WINDOWS_SEPARATOR, "/") for name in names]
    renamed = _keras3_layer_names(posix)
    if not windows and not renamed:
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="normify-") as folder:
        extracted = Path(folder) / "stored.h5"
        with zipfile.ZipFile(path) as archive, archive.open("model.weights.h5") as member:
            extracted.write_bytes(member.read())
        repaired = Path(folder) / "model.weights.h5"
        with h5py.File(extracted, "r") as source, h5py.File(repaired, "w") as target:
            target.attrs.update(source.attrs)
            for name, moved in zip(names, posix, strict=True):
                item = source[name]
                moved = _renamed_path(moved, renamed)
                if isinstance(item, h5py.Dataset):
                    target.create_dataset(moved, data=item[()], dtype=item.dtype)
                else:
                    target.require_group(moved)
                target[moved].attrs.update(item.attrs)
        if windows:
            context.repaired(
                "tf-keras-windows-paths",
                "weights",
                f"model.weights.h5 paths joined with Windows' separator (such as "
                f"{windows[0]!r}) read at their Keras paths",
            )
        moves = sorted(f"{old} -> {new}" for (_, old), new in renamed.items() if old != new)
        if renamed:
            shown = ", ".join(moves[:4]) + (", ..." if len(moves) > 4 else "")
            context.repaired(
                "tf-keras-2.13-layer-names",
                "weights",
                f"tf.keras 2.13's layer numbering read in Keras 3's ({shown or 'no name moved'})",
            )
        yield repaired


def _keras3_layer_names(names: list[str]) -> dict[tuple[str, str], str]:
    """(group, tf.keras 2.13 name) -> Keras 3 name, for the layers in every
    `_layer_checkpoint_dependencies` group among `names` (posix paths)."""
    children: dict[str, set[str]] = {}
    for name in names:
        parts = name.split("/")
        for index, part in enumerate(parts[:-1]):
            if part == TF_KERAS_213_LAYERS:
                children.setdefault("/".join(parts[: index + 1]), set()).add(parts[index + 1])
    mapping: dict[tuple[str, str], str] = {}
    for group, layers in children.items():
        by_class: dict[str, list[tuple[int, str]]] = {}
        for layer in layers:
            base, _, number = layer.rpartition("_")
            if not (base and number.isdigit()):
                base, number = layer, "0"
            by_class.setdefault(base, []).append((int(number), layer))
        for base, numbered in by_class.items():
            for rank, (_, layer) in enumerate(sorted(numbered)):
                mapping[(group, layer)] = base if rank == 0 else f"{base}_{rank}"
    return mapping


def _renamed_path(name: str, renamed: dict[tuple[str, str], str]) -> str:
    parts = name.split("/")
    moved = list(parts)
    for index, part in enumerate(parts[:-1]):
        if part == TF_KERAS_213_LAYERS:
            group = "/".join(parts[: index + 1])
            moved[index] = "layers"
            moved[index + 1] = renamed[(group, parts[index + 1])]
    return "/".join(moved)
