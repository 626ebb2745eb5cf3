"""Constructor arguments of a translated config checked against Keras 3's classes.

A Keras 2 layer config can carry an argument that the Keras 3 constructor refuses
(`DepthwiseConv2D(groups=1)` in Teachable Machine exports, `time_major`, `fused`, ...).
Such an argument is dropped when its value is what Keras 3 does anyway, and reported;
when dropping it would change what the layer computes, the model is refused with one line
naming the layer, the argument and its value.

This is the one translation step that needs Keras (it reads the constructors'
signatures), so it runs when a model is deserialized, not when `normify audit` reads a
config.
"""

from __future__ import annotations

import copy
import functools
import inspect
import re
from collections.abc import Callable
from typing import Any

from normify.formats import Translation
from normify.formats.base import Context, Site, Stage, short

ANY = None  # every value is neutral
OPS_MODULE = "keras.src.ops"


def _values(*values: Any) -> Callable[[Any], bool]:
    return lambda value: value in values


# Arguments Keras 2 layer configs carry and Keras 3 constructors refuse, with the values
# for which Keras 3 computes what Keras 2 did (measured on tf_keras 2.21's constructors).
NEUTRAL: dict[str, Callable[[Any], bool] | None] = {
    "dynamic": ANY,  # eager execution only
    "force_generator": ANY,  # which random generator dropout draws from
    "rng_type": ANY,
    "fused": ANY,  # BatchNormalization: the same arithmetic, fused or not
    "implementation": ANY,  # recurrent layers: the same arithmetic, batched differently
    "time_major": _values(False, None),
    "virtual_batch_size": _values(None),
    "adjustment": _values(None),
    "conv_op": _values(None),
    "groups": _values(1, None),
    "sparse": _values(False, None),  # Embedding: sparse gradients
    "softmax_robust_masking": _values(False),
    "robust_masking": _values(False),
    "type_spec": _values(None),
    "noise_shape": _values(None),
    "ragged": _values(False, None),
    # Only constructors without **kwargs refuse it (SpatialDropout1D/2D/3D, Discretization),
    # and those layers hold no trainable weights: frozen or not, they compute the same.
    "trainable": ANY,
    # tf.keras's MultiHeadAttention recorded the shapes it was built for; Keras 3 builds
    # it when the model calls it, on the same shapes
    "query_shape": ANY,
    "key_shape": ANY,
    "value_shape": ANY,
}
# Arguments tf.keras's depthwise and separable convolutions inherit but never use.
UNUSED = {
    "DepthwiseConv1D": ("filters", "kernel_initializer", "kernel_regularizer", "kernel_constraint"),
    "DepthwiseConv2D": ("filters", "kernel_initializer", "kernel_regularizer", "kernel_constraint"),
    "SeparableConv1D": ("kernel_initializer", "kernel_regularizer", "kernel_constraint"),
    "SeparableConv2D": ("kernel_initializer", "kernel_regularizer", "kernel_constraint"),
}
# Arguments Keras 3 still accepts but ignores with a deprecation warning (by class).
IGNORED = {"Embedding": ("input_length",)}


def keras3_module(site: Site, context: Context) -> None:
    """Keras 2 configs name no module: Keras 3 finds its own classes in `keras.layers`
    (an unknown class keeps none, and Keras names it when it cannot find it)."""
    if site.entry.get("module") is None and keras_layer_class(site.class_name) is not None:
        site.entry["module"] = "keras.layers"
        site.entry.setdefault("registered_name", None)


def fit_arguments(site: Site, context: Context) -> None:
    class_name = site.class_name
    module = site.entry.get("module")
    if module is not None and module.startswith(OPS_MODULE):
        return  # an operation (normify.formats.tfop), not the layer of the same class name
    cls = (
        keras_layer_class(class_name) if module is not None and module.startswith("keras") else None
    )
    if cls is None:
        return  # a custom or unknown class: Keras says so when it deserializes it
    accepted = accepted_arguments(cls)
    config = site.config
    for key in list(config):
        value = config[key]
        if key in IGNORED.get(class_name, ()):
            config.pop(key)
            context.repaired(
                "keras2-argument",
                site.path,
                f"dropped argument {key}={short(value)}, which Keras 3 ignores",
            )
        elif accepted is not None and key not in accepted:
            if not _neutral(class_name, key, value):
                raise context.refuse(
                    site.path,
                    f"argument {key}={short(value)} has no Keras 3 equivalent, and dropping "
                    "it would change what the layer computes",
                )
            config.pop(key)
            context.repaired(
                "keras2-argument",
                site.path,
                f"dropped argument {key}={short(value)}, which Keras 3 does not take "
                "(it computes the same without it)",
            )


def _neutral(class_name: str, key: str, value: Any) -> bool:
    if key in UNUSED.get(class_name, ()):
        return True
    if key in NEUTRAL:
        check = NEUTRAL[key]
        return check is None or check(value)
    # An argument unknown to the table: its feature is off only for an empty value.
    return value is None or value is False or value == [] or value == {}


# The kinds of objects a layer config holds besides layers, where Keras 3 finds each.
OBJECT_MODULES = {
    "_initializer": "initializers",
    "_regularizer": "regularizers",
    "_constraint": "constraints",
}


def fit_object_arguments(site: Site, context: Context) -> None:
    """Initializer, regularizer and constraint configs can carry arguments Keras 3's
    classes refuse (TensorFlow 1's `dtype` on every initializer). An initializer only
    starts weights that the file then sets; the others shape training, not what the layer
    computes: the refused arguments are dropped."""
    import keras

    for key, value in site.config.items():
        suffix = next((s for s in OBJECT_MODULES if key.endswith(s)), None)
        if (
            suffix is None
            or not isinstance(value, dict)
            or not isinstance(value.get("config"), dict)
        ):
            continue
        cls = getattr(getattr(keras, OBJECT_MODULES[suffix]), str(value.get("class_name")), None)
        if not isinstance(cls, type):
            continue  # a custom or unknown object: Keras names it if it cannot find it
        accepted = _signature_arguments(cls)
        for argument in [
            name for name in value["config"] if accepted is not None and name not in accepted
        ]:
            dropped = value["config"].pop(argument)
            context.repaired(
                "keras2-argument",
                site.path,
                f"{key} {value['class_name']}: dropped argument {argument}={short(dropped)}, "
                "which Keras 3 does not take",
            )


def _signature_arguments(cls: type) -> frozenset[str] | None:
    """What a class's constructor takes by name (None when it takes any keyword)."""
    parameters = inspect.signature(cls).parameters.values()
    if any(parameter.kind == parameter.VAR_KEYWORD for parameter in parameters):
        return accepted_arguments(cls)
    return frozenset(parameter.name for parameter in parameters)


STAGE = Stage("Keras 3 arguments", layer_rules=(keras3_module, fit_arguments, fit_object_arguments))


def fit(translation: Translation, custom_names: frozenset[str] = frozenset()) -> Translation:
    """The translation with its constructor arguments fitted to Keras 3's classes (a copy
    of its config; the drops added to its repairs)."""
    config = copy.deepcopy(translation.config)
    context = Context(translation.origin, custom_names)
    STAGE.apply(config, context)
    return Translation(
        config, translation.origin, translation.repairs + context.repairs, translation.weight_rules
    )


@functools.cache
def keras_layer_class(class_name: Any) -> type | None:
    """The Keras 3 layer (or model) class of a config's class_name, or None."""
    import keras

    if not isinstance(class_name, str):
        return None
    if class_name in ("Functional", "Model"):
        return keras.Model
    if class_name == "Sequential":
        return keras.Sequential
    candidate = getattr(keras.layers, class_name, None)
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
