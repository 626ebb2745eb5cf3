"""Keras 2 training configurations translated into Keras 3 compile configs.

A Keras 2 `.h5` file keeps `model.compile`'s arguments in its `training_config`
attribute, a tf_keras `.keras` file in its config's `compile_config`: optimizer configs
with arguments and `Custom>` names Keras 3 lacks, Keras 2 metric wrappers (`acc` saved as
`MeanMetricWrapper` configs named `<output>_acc`), the `auto` loss reduction. Each change
is a `Repair` of rule `keras2-training-config`; a part Keras 3 has no equivalent for
makes the model load uncompiled, with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from normify.formats.arguments import accepted_arguments
from normify.formats.base import Repair
from normify.formats.base import short as _short

RULE = "keras2-training-config"
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


@dataclass
class CompileTranslation:
    """A Keras 3 compile config (for `Model.compile_from_config`) and its repairs, or the
    reason the model must load uncompiled."""

    config: dict[str, Any] | None
    repairs: list[Repair] = field(default_factory=list)
    reason: str | None = None


def translate(
    training_config: Any, custom_objects: dict[str, Any] | None = None
) -> CompileTranslation:
    """Translate the `training_config` of a Keras 2 `.h5` file or the `compile_config` of
    a tf_keras `.keras` file."""
    if not isinstance(training_config, dict):
        return CompileTranslation(None, reason="the training configuration is not a mapping")
    if not training_config:
        return CompileTranslation(None, reason="the file has no training configuration")
    lines: list[str] = []
    translator = _TrainingTranslator(custom_objects or {}, lines)
    try:
        compiled = translator.translate(training_config)
    except UntranslatableError as error:
        return CompileTranslation(None, reason=str(error))
    return CompileTranslation(compiled, [Repair(RULE, "training config", line) for line in lines])


class _TrainingTranslator:
    def __init__(self, custom_objects: dict[str, Any], repairs: list[str]) -> None:
        self.custom_objects = custom_objects
        self.repairs = repairs

    def note(self, text: str) -> None:
        self.repairs.append(text)

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
        if "lr" in config and "learning_rate" not in config:
            # Keras 1 and Keras 2.0 to 2.2 called the learning rate `lr`
            config["learning_rate"] = config.pop("lr")
            self.note(f"optimizer {cls.__name__}: lr -> learning_rate")
        self._drop_optimizer_arguments(config, cls)
        config["learning_rate"] = self._schedule(config.get("learning_rate"))
        return _serialized("keras.optimizers", cls.__name__, config)

    def _drop_optimizer_arguments(self, config: dict[str, Any], cls: type) -> None:
        accepted = accepted_arguments(cls) or frozenset()
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
