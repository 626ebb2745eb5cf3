"""What every format translation shares: where a file came from, the repairs it needed,
and a walk over the models and layers of a serialized config.

A translation stage is a list of model rules and layer rules. Each rule is a small named
function that edits the entry it is given in place and reports every change it makes as a
`Repair` (shown to the user as a `repaired:` notice), or refuses with a `FormatError` that
names the layer and the cause. Changes to the weights a layer's file holds (a cuDNN
layout, Keras 1's separate gate matrices, a gate scaling) are recorded as `WeightRule`s,
keyed by layer path, and applied by `normify.formats.weights` when the weights are read.

Nothing here imports Keras or NumPy: `normify audit` translates configs without either.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeGuard

from normify.errors import ModelLoadError

KERAS1 = "Keras 1"
KERAS2 = "Keras 2"  # standalone Keras 2.0 to 2.3
TF_KERAS = "tf.keras"  # tf.keras in TensorFlow 2.x, Keras 2.4 to 2.15, tf_keras
KERAS3 = "Keras 3"

MODEL_CLASSES = frozenset({"Functional", "Model", "Sequential"})


class FormatError(ModelLoadError):
    """A config that cannot be translated into one Keras 3 reads with the same meaning."""


@dataclass(frozen=True)
class Origin:
    """Which Keras wrote a file: the generation of its format, its version and backend."""

    generation: str
    version: str | None = None
    backend: str | None = None
    # Keras 1 wrote the weights group without a keras_version: its weights have Keras 1
    # names and layouts (what Keras 2's own loader checked).
    keras1_weights: bool = False

    @property
    def legacy(self) -> bool:
        return self.generation != KERAS3

    def describe(self) -> str:
        return f"{self.generation} ({self.version})" if self.version else self.generation


@dataclass(frozen=True)
class Repair:
    """One change a translation rule made, at one layer (or the model, or its training
    configuration)."""

    rule: str
    path: str
    text: str

    @property
    def notice(self) -> str:
        return f"repaired: {self.path}: {self.text} [{self.rule}]"


WeightFunction = Callable[[list[Any]], list[Any]]


@dataclass(frozen=True)
class WeightRule:
    """A change to the arrays a layer's file holds, in the order the file holds them
    (Keras' legacy order: trainable weights, then non-trainable ones)."""

    rule: str
    apply: WeightFunction


@dataclass
class Context:
    """What a translation collects while its rules run."""

    origin: Origin
    custom_names: frozenset[str] = frozenset()
    repairs: list[Repair] = field(default_factory=list)
    weight_rules: dict[str, list[WeightRule]] = field(default_factory=dict)

    def repaired(self, rule: str, path: str, text: str) -> None:
        self.repairs.append(Repair(rule, path or "model", text))

    def weights(self, path: str, rule: str, apply: WeightFunction) -> None:
        self.weight_rules.setdefault(path, []).append(WeightRule(rule, apply))

    def refuse(self, path: str, text: str) -> FormatError:
        """The error to raise: one line naming the layer and the cause."""
        where = f"layer {path!r}" if path else "the model"
        return FormatError(f"{where} ({self.origin.describe()}): {text}")

    def is_custom(self, entry: dict[str, Any]) -> bool:
        """Whether an entry names one of the user's own classes (left to its own code)."""
        names = (entry.get("class_name"), entry.get("registered_name"))
        return any(isinstance(name, str) and name in self.custom_names for name in names)


# ----------------------------------------------------------------------------- walking


@dataclass
class Site:
    """A layer entry where a rule looks at it: its path, the model entry that lists it
    (None for a layer wrapped in another), and the wrapping layer's entry, if any."""

    entry: dict[str, Any]
    path: str
    model: dict[str, Any] | None
    wrapper: dict[str, Any] | None = None

    @property
    def class_name(self) -> Any:
        return self.entry.get("class_name")

    @property
    def config(self) -> dict[str, Any]:
        return self.entry["config"]


@dataclass
class ModelSite:
    """A model entry where a rule looks at it: the name its notices give it (its path, or
    its own name at the top), and the prefix of its layers' paths."""

    entry: dict[str, Any]
    label: str
    prefix: str


ModelRule = Callable[[ModelSite, Context], None]
LayerRule = Callable[[Site, Context], None]


@dataclass(frozen=True)
class Stage:
    """The rules of one generation of format, applied model by model, top down: a model's
    rules first (which may reshape its entry), then its layers' rules, nested models and
    wrapped layers included."""

    name: str
    model_rules: tuple[ModelRule, ...] = ()
    layer_rules: tuple[LayerRule, ...] = ()

    def apply(self, serialized: dict[str, Any], context: Context) -> None:
        self._model(serialized, "", context, top=True)

    def _model(self, entry: dict[str, Any], prefix: str, context: Context, top: bool) -> None:
        label = prefix + str(model_name(entry) or "model")
        inner = "" if top else f"{label}/"
        for rule in self.model_rules:
            rule(ModelSite(entry, label, inner), context)
        for layer in list(layers_of(entry) or []):
            if is_entry(layer):
                self._layer(layer, inner, entry, None, context)

    def _layer(
        self,
        entry: dict[str, Any],
        prefix: str,
        model: dict[str, Any] | None,
        wrapper: dict[str, Any] | None,
        context: Context,
    ) -> None:
        if is_model_entry(entry):
            self._model(entry, prefix, context, top=False)
            return
        site = Site(entry, prefix + layer_name(entry), model, wrapper)
        if context.is_custom(entry):
            return
        for rule in self.layer_rules:
            rule(site, context)
        for inner in wrapped_entries(entry):
            self._layer(inner, f"{site.path}/", None, entry, context)


def is_entry(value: Any) -> TypeGuard[dict[str, Any]]:
    return (
        isinstance(value, dict)
        and isinstance(value.get("class_name"), str)
        and isinstance(value.get("config"), (dict, list))
    )


def is_model_entry(entry: Any) -> bool:
    return (
        is_entry(entry)
        and entry["class_name"] in MODEL_CLASSES
        and (isinstance(entry["config"], list) or isinstance(entry["config"].get("layers"), list))
    )


def layers_of(entry: Any) -> list[Any] | None:
    """The layer entries of a model entry, or None for anything else (never raises: the
    graph builder reports malformed configs in its own words)."""
    if not isinstance(entry, dict) or not isinstance(entry.get("config"), dict):
        return None
    layers = entry["config"].get("layers")
    return layers if isinstance(layers, list) else None


def model_name(entry: dict[str, Any]) -> str | None:
    config = entry.get("config")
    name = config.get("name") if isinstance(config, dict) else None
    return name if isinstance(name, str) and name else entry.get("name")


def layer_name(entry: dict[str, Any]) -> str:
    config = entry["config"] if isinstance(entry["config"], dict) else {}
    return str(config.get("name") or entry.get("name") or entry["class_name"])


def wrapped_entries(entry: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The layers inside a layer's config: a wrapper's `layer` and `backward_layer`, an
    RNN's `cell`, a StackedRNNCells' `cells`."""
    config = entry["config"]
    if not isinstance(config, dict):
        return
    for key in ("layer", "backward_layer", "cell", "cells"):
        value = config.get(key)
        for item in value if isinstance(value, list) else [value]:
            if is_entry(item) and isinstance(item["config"], dict):
                yield item


def walk_entries(serialized: Any) -> Iterator[dict[str, Any]]:
    """Every `{"class_name", "config"}` entry in a config tree, iteratively (configs can be
    deep)."""
    stack = [serialized]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if is_entry(node):
                yield node
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def shape_text(shape: Any) -> str:
    if isinstance(shape, list):
        return "[" + ", ".join("None" if item is None else str(item) for item in shape) + "]"
    return repr(shape)
