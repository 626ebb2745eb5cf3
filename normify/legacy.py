"""Repairing the configs of models written by Keras 2 so that Keras 3 deserializes them.

Keras 2 (tf.keras 2.x, tf_keras) wrote model configs that Keras 3 rejects: arguments it
removed (`time_major`), `batch_input_shape` on ordinary layers, single-element axis lists,
mixed-precision `Policy` objects, `tf_keras` module paths, node indices of nested models
that count the nested model's own graph as node 0, and training configs with Keras 2
metric wrappers, `Custom>` optimizer names and the `auto` loss reduction. `repair_config`
and `repair_training_config` return repaired copies together with one human line per
repair, so a user can see exactly what was changed on the way in.

Arguments are checked against the signatures of the Keras 3 classes, found lazily:
importing this module imports neither Keras nor TensorFlow (`normify audit` must stay
backend-free), only calling the repair functions does.
"""

from __future__ import annotations

import copy
import functools
import inspect
import re
from collections.abc import Iterator
from typing import Any

MODEL_CLASSES = frozenset({"Functional", "Model", "Sequential"})
FUNCTIONAL_MODULE = "keras.src.models.functional"

# Arguments Keras 3 still accepts but ignores with a deprecation warning: dropping them
# is the translation (keyed by Keras 3 class name).
IGNORED_ARGUMENTS = {"Embedding": ("input_length",)}
IGNORED_OPTIMIZER_ARGUMENTS = ("decay",)

# Metric names that Keras resolves from the loss and output shape at compile time, with
# the functions Keras 2 resolved each to (the `fn` its MeanMetricWrapper configs name).
_KINDS = ("binary", "categorical", "sparse_categorical")
RESOLVED_METRICS = {
    "accuracy": (("acc", "accuracy"), {f"{kind}_accuracy" for kind in _KINDS}),
    "crossentropy": (("ce", "crossentropy"), {f"{kind}_crossentropy" for kind in _KINDS}),
}

# The keys of a training config this module translates; any other is reported dropped.
TRAINING_KEYS = frozenset(
    {
        "optimizer_config",
        "optimizer",
        "loss",
        "loss_weights",
        "metrics",
        "weighted_metrics",
        "run_eagerly",
        "steps_per_execution",
        "jit_compile",
    }
)


class UntranslatableError(Exception):
    """A part of a training config that Keras 3 has no equivalent for."""


# -------------------------------------------------------------------- detecting Keras 2


def is_keras2_version(version: Any) -> bool:
    """Whether a saved `keras_version` (`"2.15.0"`, `b"2.4.0"`) names Keras 1 or 2."""
    if isinstance(version, bytes):
        version = version.decode("utf-8", errors="replace")
    if not isinstance(version, str):
        return False
    match = re.match(r"\s*(\d+)\.", version)
    return match is not None and int(match.group(1)) < 3


def looks_like_keras2(serialized: dict[str, Any]) -> bool:
    """Whether a model config shows Keras 2 traits (for files without a keras_version)."""
    if str(serialized.get("module") or "").startswith("tf_keras"):
        return True
    if serialized.get("class_name") == "Model":
        return True
    text = repr(serialized.get("config"))
    return "'batch_input_shape'" in text or "'time_major'" in text


# ------------------------------------------------------------------------ model configs


def repair_config(
    serialized: dict[str, Any], custom_objects: dict[str, Any] | None = None
) -> tuple[dict[str, Any], list[str]]:
    """A deep copy of a Keras 2 model config that Keras 3 deserializes, and the repairs.

    The result is meant for `keras.saving.deserialize_keras_object`: every built-in entry
    gets its Keras 3 module, and Keras 2 inbound nodes stay in their list form, which
    Keras 3's Functional reader still understands.
    """
    config = copy.deepcopy(serialized)
    # A tf_keras `.keras` file keeps its compile config here; Keras 3 would compile from
    # it untranslated. `repair_training_config` translates it instead.
    config.pop("compile_config", None)
    repairs = _shift_nested_references(config, calls_only=False, apply=True)
    _Repairer(custom_objects or {}, repairs).model(config, "", top=True)
    return config, repairs


class _Repairer:
    """Walks a model config and repairs it in place, appending one line per repair."""

    def __init__(self, custom_objects: dict[str, Any], repairs: list[str]) -> None:
        self.custom_objects = custom_objects
        self.repairs = repairs

    def note(self, path: str, text: str) -> None:
        self.repairs.append(f"{path or 'model'}: {text}")

    # models

    def model(self, entry: dict[str, Any], prefix: str, top: bool = False) -> None:
        config = entry["config"]
        label = prefix + str(config.get("name") or entry.get("name") or "model")
        if entry.get("class_name") == "Model":
            entry["class_name"] = "Functional"
            self.note(label, "class Model -> Functional")
        self._model_module(entry, label)
        layers = config.get("layers")
        if not isinstance(layers, list):
            return
        inner = "" if top else f"{label}/"  # layer paths as normify prints them
        if entry["class_name"] == "Sequential":
            self._sequential_input(config, inner)
        for layer in layers:
            if isinstance(layer, dict) and isinstance(layer.get("config"), dict):
                self.layer(layer, inner, in_sequential=entry["class_name"] == "Sequential")

    def _model_module(self, entry: dict[str, Any], label: str) -> None:
        sequential = entry["class_name"] == "Sequential"
        module = "keras" if sequential else FUNCTIONAL_MODULE
        old = entry.get("module")
        if old is not None and not _is_keras3_module(old):
            self.note(label, f"module {old} -> {module}")
        entry["module"] = module
        entry["registered_name"] = None if sequential else "Functional"

    def _sequential_input(self, config: dict[str, Any], prefix: str) -> None:
        """Keras 2 wrote a Sequential's input shape on its first layer, sometimes without
        an InputLayer; Keras 3 wants the InputLayer."""
        layers = config["layers"]
        if not layers or not isinstance(layers[0], dict):
            return
        first = layers[0]
        first_config = first.get("config") or {}
        shape = first_config.get("batch_input_shape")
        if first.get("class_name") == "InputLayer" or shape is None:
            return
        name = f"{first_config.get('name', 'input')}_input"
        input_config = {"batch_shape": shape, "name": name}
        if isinstance(first_config.get("dtype"), str):
            input_config["dtype"] = first_config["dtype"]
        layers.insert(0, {"class_name": "InputLayer", "config": input_config})
        first_config.pop("batch_input_shape")
        self.note(
            prefix + str(first_config.get("name")),
            f"batch_input_shape {_shape(shape)} -> new InputLayer {name} "
            f"(batch_shape {_shape(shape)})",
        )

    # layers

    def layer(self, entry: dict[str, Any], prefix: str, in_sequential: bool = False) -> None:
        config = entry["config"]
        class_name = entry.get("class_name")
        path = prefix + str(config.get("name") or entry.get("name") or class_name)
        if _layers_of(entry) is not None and str(class_name) in MODEL_CLASSES:
            self.model(entry, prefix)
            return
        cls = self._layer_class(class_name, entry)
        if cls is None:
            return  # a custom layer: Keras reports it if it is not registered
        self._layer_module(entry, path)
        self._input_shape(entry, path, in_sequential)
        self._dtype(config, path)
        if class_name == "BatchNormalization":
            self._single_axis(config, path)
        if class_name == "Lambda":
            self._lambda_function(config, path)
        self._drop_unknown(config, cls, class_name, path)
        self._nested_layers(config, path)

    def _layer_class(self, class_name: Any, entry: dict[str, Any]) -> type | None:
        if not isinstance(class_name, str):
            return None
        registered = entry.get("registered_name")
        for name in (registered, class_name):
            if isinstance(name, str) and name in self.custom_objects:
                return None  # the user's own class: its arguments are its business
        module = entry.get("module")
        if module is not None and not _is_builtin_module(module):
            return None
        return keras_layer_class(class_name)

    def _layer_module(self, entry: dict[str, Any], path: str) -> None:
        old = entry.get("module")
        if old is not None and not _is_keras3_module(old):
            self.note(path, f"module {old} -> keras.layers")
        if old is None or not _is_keras3_module(old):
            entry["module"] = "keras.layers"
            entry.setdefault("registered_name", None)

    def _input_shape(self, entry: dict[str, Any], path: str, in_sequential: bool) -> None:
        config = entry["config"]
        if "batch_input_shape" not in config:
            return
        shape = config.pop("batch_input_shape")
        if entry.get("class_name") == "InputLayer":
            config["batch_shape"] = shape
            self.note(path, f"batch_input_shape {_shape(shape)} -> batch_shape")
            return
        where = "the Sequential's InputLayer" if in_sequential else "the model's InputLayer"
        self.note(path, f"dropped batch_input_shape {_shape(shape)} ({where} gives the shape)")

    def _dtype(self, config: dict[str, Any], path: str) -> None:
        """Keras 2 mixed precision wrote `Policy` objects; Keras 3 takes the policy name."""
        dtype = config.get("dtype")
        if isinstance(dtype, dict) and dtype.get("class_name") == "Policy":
            name = (dtype.get("config") or {}).get("name")
            if isinstance(name, str):
                config["dtype"] = name
                self.note(path, f"dtype policy Policy({name!r}) -> {name!r}")

    def _single_axis(self, config: dict[str, Any], path: str) -> None:
        """A built Keras 2 BatchNormalization saves its axis as a list; Keras 3 wants an int."""
        axis = config.get("axis")
        if isinstance(axis, list) and len(axis) == 1 and isinstance(axis[0], int):
            config["axis"] = axis[0]
            self.note(path, f"axis {axis} -> {axis[0]}")

    def _lambda_function(self, config: dict[str, Any], path: str) -> None:
        function = config.get("function")
        if isinstance(function, list) and len(function) == 3:
            code, defaults, closure = function
            config["function"] = {
                "class_name": "__lambda__",
                "config": {"code": code, "defaults": defaults, "closure": closure},
            }
            self.note(path, "Keras 2 function [code, defaults, closure] -> __lambda__ config")

    def _drop_unknown(self, config: dict[str, Any], cls: type, class_name: str, path: str) -> None:
        accepted = accepted_arguments(cls)
        ignored = IGNORED_ARGUMENTS.get(class_name, ())
        for key in list(config):
            if key in ignored:
                value = config.pop(key)
                self.note(path, f"dropped argument {key}={value!r}, which Keras 3 ignores")
            elif accepted is not None and key not in accepted:
                value = config.pop(key)
                self.note(path, f"dropped argument {key}={_short(value)}, which Keras 3 removed")

    def _nested_layers(self, config: dict[str, Any], path: str) -> None:
        """Wrapped layers and cells (`Bidirectional.layer`, `RNN.cell`) are layers too."""
        for value in config.values():
            items = value if isinstance(value, list) else [value]
            for item in items:
                if _is_layer_entry(item):
                    self.layer(item, f"{path}/")


def _is_layer_entry(value: Any) -> bool:
    if not isinstance(value, dict) or not isinstance(value.get("config"), dict):
        return False
    class_name = value.get("class_name")
    if not isinstance(class_name, str):
        return False
    return class_name in MODEL_CLASSES or keras_layer_class(class_name) is not None


def _is_keras3_module(module: str) -> bool:
    return module == "keras" or (module.startswith("keras.") and ".engine" not in module)


def _is_builtin_module(module: str) -> bool:
    return module.split(".")[0] in ("keras", "tf_keras")


# ------------------------------------------------------------------ nested model nodes
#
# A `[layer, node, tensor]` reference names a call of a layer by its node index. For a
# nested model, Keras 2 counted the model's own graph as node 0 (a Functional model, and
# a Sequential built with an input, got it when built), so its first call in an outer
# model is node 1. Keras 3 counts calls only, except that it still writes input and
# output references to a nested Functional model (not to a Sequential one) the Keras 2
# way, and its reader subtracts one from those. Keras 3's `keras_history` references
# inside `{"args", "kwargs"}` nodes count calls only.


def renumber_nested_calls(serialized: dict[str, Any]) -> dict[str, Any]:
    """The config with every `[layer, node, tensor]` reference to a nested model counting
    that model's calls only (node 0 = first call), for Keras 2 and Keras 3 configs alike.

    Needs no backend (for the graph builder). Returns `serialized` itself when no index
    changes, a renumbered deep copy otherwise.
    """
    if not _shift_nested_references(serialized, calls_only=True, apply=False):
        return serialized
    config = copy.deepcopy(serialized)
    _shift_nested_references(config, calls_only=True, apply=True)
    return config


def _shift_nested_references(
    entry: Any, *, calls_only: bool, apply: bool, prefix: str = ""
) -> list[str]:
    """Shift references to nested models down by one where their numbering counts the
    nested model's own graph; one line per nested model whose references shift.

    `calls_only` gives the graph builder's numbering; otherwise Keras 2 references become
    what Keras 3 writes (its reader's numbering), and Keras 3 configs stay as they are.
    """
    layers = _layers_of(entry)
    if layers is None:
        return []
    lines = []
    for name, nested in _nested_models(layers):
        lines += _shift_nested_references(
            nested, calls_only=calls_only, apply=apply, prefix=f"{prefix}{name}/"
        )
    keras2 = _has_keras2_nodes(layers)
    if entry.get("class_name") == "Sequential" or not (keras2 or calls_only):
        return lines
    inbound = [ref for layer in layers for ref in _inbound_references(layer)] if keras2 else []
    ends = _leaf_refs(entry["config"].get("input_layers"))
    ends += _leaf_refs(entry["config"].get("output_layers"))
    shifted = set()
    for name, nested in _nested_models(layers):
        counted = _own_graph(nested) if keras2 else nested["class_name"] != "Sequential"
        if not counted or any(ref[0] == name and ref[1] == 0 for ref in inbound + ends):
            continue  # a reference to node 0: this model's numbering counts calls already
        in_ends = calls_only or nested["class_name"] == "Sequential"
        refs = [ref for ref in inbound + (ends if in_ends else []) if ref[0] == name]
        for ref in _unique(refs) if apply else []:
            ref[1] -= 1
        if refs:
            shifted.add(name)
    return lines + [
        f"{prefix}{name}: node indices shifted down by one (Keras 2 counted the nested "
        "model's own graph as node 0)"
        for name in sorted(shifted)
    ]


def _layers_of(entry: Any) -> list[Any] | None:
    """The layer entries of a model entry, or None for anything else (never raises: the
    graph builder reports malformed configs in its own words)."""
    if not isinstance(entry, dict) or not isinstance(entry.get("config"), dict):
        return None
    layers = entry["config"].get("layers")
    return layers if isinstance(layers, list) else None


def _nested_models(layers: list[Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(name, entry) of the well-formed Functional and Sequential entries among layers."""
    for layer in layers:
        if not isinstance(layer, dict) or not isinstance(layer.get("config"), dict):
            continue
        if isinstance(layer.get("class_name"), str) and layer["class_name"] in MODEL_CLASSES:
            yield str(layer.get("name") or layer["config"].get("name")), layer


def _has_keras2_nodes(layers: list[Any]) -> bool:
    """Whether a Functional config writes its inbound nodes as Keras 2 lists (Keras 3
    writes `{"args": ..., "kwargs": ...}` mappings)."""
    for layer in layers:
        nodes = layer.get("inbound_nodes") if isinstance(layer, dict) else None
        for node in nodes if isinstance(nodes, list) else []:
            return isinstance(node, list)
    return False


def _own_graph(nested: dict[str, Any]) -> bool:
    """Whether Keras 2 gave this nested model a node of its own when it was built."""
    if nested["class_name"] != "Sequential":
        return True
    layers = _layers_of(nested) or [None]
    first = layers[0] if isinstance(layers[0], dict) else {}
    first_config = first.get("config") if isinstance(first.get("config"), dict) else {}
    return first.get("class_name") == "InputLayer" or "batch_input_shape" in first_config


def _inbound_references(layer: Any) -> list[list[Any]]:
    """The references of a layer's Keras 2 inbound nodes (`[layer, node, tensor, kwargs]`
    items), tensors passed as keyword arguments included."""
    nodes = layer.get("inbound_nodes") if isinstance(layer, dict) else None
    refs = []
    for node in nodes if isinstance(nodes, list) else []:
        for item in node if isinstance(node, list) else []:
            if _is_ref(item):
                refs.append(item)
                refs += _leaf_refs(item[3]) if len(item) > 3 else []
    return refs


def _is_ref(item: Any) -> bool:
    return (
        isinstance(item, list)
        and len(item) >= 3
        and isinstance(item[0], str)
        and isinstance(item[1], int)
        and isinstance(item[2], int)
    )


def _leaf_refs(value: Any) -> list[list[Any]]:
    if _is_ref(value):
        return [value]
    if isinstance(value, dict):
        return [ref for item in value.values() for ref in _leaf_refs(item)]
    if isinstance(value, list):
        return [ref for item in value for ref in _leaf_refs(item)]
    return []


def _unique(refs: list[list[Any]]) -> list[list[Any]]:
    """Each reference list once, should a config share one between two places."""
    return list({id(ref): ref for ref in refs}.values())


# --------------------------------------------------------------------- training configs


def repair_training_config(
    training_config: Any, custom_objects: dict[str, Any] | None = None
) -> tuple[dict[str, Any] | None, list[str]]:
    """A Keras 3 compile config (for `Model.compile_from_config`) and the repairs.

    Takes the `training_config` of a Keras 2 `.h5` file or the `compile_config` of a
    tf_keras `.keras` file. When a part has no Keras 3 equivalent, returns None and a
    one-item list saying why: the model is then loaded uncompiled.
    """
    if not isinstance(training_config, dict):
        return None, ["the training configuration is not a mapping"]
    if not training_config:
        return None, ["the file has no training configuration"]
    repairs: list[str] = []
    translator = _TrainingTranslator(custom_objects or {}, repairs)
    try:
        compiled = translator.translate(training_config)
    except UntranslatableError as error:
        return None, [str(error)]
    return compiled, repairs


class _TrainingTranslator:
    def __init__(self, custom_objects: dict[str, Any], repairs: list[str]) -> None:
        self.custom_objects = custom_objects
        self.repairs = repairs

    def note(self, text: str) -> None:
        self.repairs.append(f"training config: {text}")

    def translate(self, training: dict[str, Any]) -> dict[str, Any]:
        for key in sorted(set(training) - TRAINING_KEYS):
            if training[key] is not None:
                self.note(f"dropped {key}={_short(training[key])}, which Keras 3 removed")
        optimizer = training.get("optimizer_config", training.get("optimizer"))
        compiled: dict[str, Any] = {"optimizer": self.optimizer(optimizer)}
        compiled["loss"] = _map_nested(self.loss, training.get("loss"))
        compiled["loss_weights"] = training.get("loss_weights")
        compiled["metrics"] = self.metric_structure(training.get("metrics"))
        compiled["weighted_metrics"] = self.metric_structure(training.get("weighted_metrics"))
        for key in ("run_eagerly", "steps_per_execution", "jit_compile"):
            if training.get(key) is not None:
                compiled[key] = training[key]
        return compiled

    # optimizer

    def optimizer(self, optimizer: Any) -> Any:
        import keras

        if optimizer is None:
            raise UntranslatableError("the training configuration names no optimizer")
        if isinstance(optimizer, str):
            if _resolves(keras.optimizers.get, optimizer):
                return optimizer
            raise UntranslatableError(f"optimizer {optimizer!r} does not exist in Keras 3")
        if not isinstance(optimizer, dict) or not isinstance(optimizer.get("class_name"), str):
            raise UntranslatableError(f"optimizer {_short(optimizer)} is not understood")
        written = optimizer["class_name"]
        if written in self.custom_objects:
            return optimizer
        cls = _optimizer_class(written.split(">")[-1])
        if cls is None:
            raise UntranslatableError(f"optimizer {written} does not exist in Keras 3")
        if cls.__name__ != written:
            self.note(f"optimizer {written} -> {cls.__name__}")
        config = dict(optimizer.get("config") or {})
        self._drop_optimizer_arguments(config, cls)
        config["learning_rate"] = self._schedule(config.get("learning_rate"))
        return _serialized("keras.optimizers", cls.__name__, config)

    def _drop_optimizer_arguments(self, config: dict[str, Any], cls: type) -> None:
        accepted = accepted_arguments(cls) or set()
        for key in list(config):
            if key in IGNORED_OPTIMIZER_ARGUMENTS or key not in accepted:
                value = config.pop(key)
                self.note(
                    f"optimizer {cls.__name__}: dropped argument {key}={_short(value)}, "
                    "which Keras 3 removed"
                )

    def _schedule(self, rate: Any) -> Any:
        import keras

        if not isinstance(rate, dict) or "class_name" not in rate:
            return rate
        name = rate["class_name"]
        if name in self.custom_objects:
            return rate
        cls = getattr(keras.optimizers.schedules, str(name), None)
        if cls is None:
            raise UntranslatableError(f"learning rate schedule {name} does not exist in Keras 3")
        config = self._filtered(rate.get("config") or {}, cls, f"schedule {name}")
        return _serialized("keras.optimizers.schedules", name, config)

    # losses

    def loss(self, loss: Any) -> Any:
        import keras

        if loss is None:
            return None
        name = _function_name(loss)
        if name is not None:
            if name in self.custom_objects or _resolves(keras.losses.get, name):
                return name
            raise UntranslatableError(f"loss {name!r} does not exist in Keras 3")
        return self._object(loss, keras.losses, "loss")

    # metrics

    def metric_structure(self, metrics: Any) -> Any:
        if metrics is None:
            return None
        if isinstance(metrics, dict) and "class_name" not in metrics:
            return {key: self.metric_structure(value) for key, value in metrics.items()}
        if isinstance(metrics, list):
            if len(metrics) == 1 and isinstance(metrics[0], list):
                metrics = metrics[0]  # Keras 2 wraps a single output's metrics in a list
            return [self.metric_structure(item) for item in metrics]
        return self.metric(metrics)

    def metric(self, metric: Any) -> Any:
        import keras

        name = _function_name(metric)
        if name is not None:
            return self._metric_name(name)
        if isinstance(metric, dict) and metric.get("class_name") == "MeanMetricWrapper":
            return self._mean_metric_wrapper(metric)
        return self._object(metric, keras.metrics, "metric")

    def _metric_name(self, name: str, written: str | None = None) -> str:
        import keras

        shown = written or name
        for canonical, (names, _) in RESOLVED_METRICS.items():
            if name in names:
                if shown != canonical:
                    self.note(f"metric {shown!r} translated to {canonical!r}")
                return canonical
        if name in self.custom_objects or _resolves(keras.metrics.get, name):
            if shown != name:
                self.note(f"metric {shown!r} translated to {name!r}")
            return name
        raise UntranslatableError(f"metric {shown!r} does not exist in Keras 3")

    def _mean_metric_wrapper(self, metric: dict[str, Any]) -> str:
        """Keras 2 saved `metrics=["acc"]` and metric functions as MeanMetricWrapper
        configs named `<output>_<metric>`: translate them back to metric names."""
        config = metric.get("config") or {}
        written = str(config.get("name") or "")
        function = config.get("fn")
        name = _function_name(function) if function is not None else None
        for canonical, (names, functions) in RESOLVED_METRICS.items():
            named = any(written == n or written.endswith(f"_{n}") for n in names)
            if named and (name is None or name in functions):
                return self._metric_name(canonical, written)
        if name is None:
            raise UntranslatableError(f"metric {written!r} wraps a function Keras 3 cannot find")
        return self._metric_name(name, written)

    # shared

    def _object(self, value: Any, module: Any, what: str) -> Any:
        if not isinstance(value, dict) or not isinstance(value.get("class_name"), str):
            raise UntranslatableError(f"{what} {_short(value)} is not understood")
        name = value["class_name"]
        if name in self.custom_objects or value.get("registered_name") in self.custom_objects:
            return value
        cls = getattr(module, name, None)
        if not isinstance(cls, type):
            raise UntranslatableError(f"{what} class {name} does not exist in Keras 3")
        config = self._filtered(dict(value.get("config") or {}), cls, f"{what} {name}")
        if config.get("reduction") == "auto":
            config["reduction"] = "sum_over_batch_size"
            self.note(f"{what} {name}: reduction 'auto' -> 'sum_over_batch_size'")
        return _serialized(module.__name__, name, config)

    def _filtered(self, config: dict[str, Any], cls: type, label: str) -> dict[str, Any]:
        accepted = accepted_arguments(cls)
        if accepted is None:
            return config
        for key in list(config):
            if key not in accepted:
                value = config.pop(key)
                self.note(f"{label}: dropped argument {key}={_short(value)}, which Keras 3 removed")
        return config


def _serialized(module: str, class_name: str, config: dict[str, Any]) -> dict[str, Any]:
    """A built-in Keras 3 object as `keras.saving.serialize_keras_object` writes it."""
    return {"module": module, "class_name": class_name, "config": config, "registered_name": None}


def _map_nested(function: Any, value: Any) -> Any:
    """Apply `function` to each loss of a loss structure (one, a list, or a dict by output)."""
    if isinstance(value, dict) and "class_name" not in value:
        return {key: _map_nested(function, item) for key, item in value.items()}
    if isinstance(value, list):
        return [_map_nested(function, item) for item in value]
    return function(value)


def _function_name(value: Any) -> str | None:
    """The name of a function given as a string or as a serialized `function` object."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and value.get("class_name") == "function":
        inner = value.get("config")
        return inner if isinstance(inner, str) else None
    return None


def _resolves(getter: Any, name: str) -> bool:
    try:
        return getter(name) is not None
    except (ValueError, TypeError):
        return False


def _optimizer_class(name: str) -> type | None:
    import keras

    for attribute in dir(keras.optimizers):
        candidate = getattr(keras.optimizers, attribute)
        if isinstance(candidate, type) and attribute.lower() == name.lower():
            return candidate
    return None


# ------------------------------------------------------------------ Keras 3 signatures


@functools.cache
def keras_layer_class(class_name: str) -> type | None:
    """The Keras 3 layer (or model) class of a config's class_name, or None."""
    import keras

    if class_name in ("Functional", "Model"):
        return keras.Model
    candidate = getattr(keras.layers, class_name, None)
    if candidate is None and class_name == "Sequential":
        candidate = keras.Sequential
    return candidate if isinstance(candidate, type) else None


_POPPED = re.compile(r"""kwargs\.(?:pop|get)\(\s*["'](\w+)["']|["'](\w+)["']\s+in\s+kwargs""")


@functools.cache
def accepted_arguments(cls: type) -> frozenset[str] | None:
    """The constructor arguments a Keras 3 class accepts, or None when it accepts any.

    Walks the class hierarchy while constructors pass `**kwargs` on, adding the keyword
    arguments that constructors take out of `**kwargs` by name (`kwargs.pop("x")`), and
    stops at the first constructor without `**kwargs`, or at Keras' `Layer` and the
    optimizer base, which reject whatever is left.
    """
    names: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        if klass is object:
            return None
        parameters = inspect.signature(init).parameters.values()
        names.update(
            parameter.name
            for parameter in parameters
            if parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY)
        )
        names.update(_popped_keywords(init))
        passes_on = any(parameter.kind == parameter.VAR_KEYWORD for parameter in parameters)
        if not passes_on or _rejects_leftovers(klass):
            names.discard("self")
            return frozenset(names)
    return None


def _popped_keywords(init: Any) -> set[str]:
    try:
        source = inspect.getsource(init)
    except (OSError, TypeError):
        return set()
    return {first or second for first, second in _POPPED.findall(source)}


def _rejects_leftovers(klass: type) -> bool:
    """Keras' base classes that raise on keyword arguments nobody took."""
    return klass.__module__ in (
        "keras.src.layers.layer",
        "keras.src.optimizers.base_optimizer",
    )


# ------------------------------------------------------------------------------ format


def _shape(shape: Any) -> str:
    if isinstance(shape, list):
        return "[" + ", ".join("None" if item is None else str(item) for item in shape) + "]"
    return repr(shape)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
