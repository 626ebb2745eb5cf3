"""Every private Keras API that normify relies on, in one place.

They are tested against the Keras minor version pinned in pyproject.toml (3.15); when
Keras changes one of them, this module is what to update.

- `Layer._inbound_nodes`: the calls of a layer in a live model (graph, add, rebuild).
- `KerasTensor._keras_history`: the call that produced a tensor (graph, drift, verify).
- `Functional._layers`: a model's layers, its InputLayers included (graph).
- `Sequential._layers`, `Sequential._maybe_rebuild`: a long Sequential built without
  Keras' quadratic name check (rebuild).
- `keras.src.models.functional.Functional`: telling a Functional subclass (graph).
- `keras.src.saving.serialization_lib`: the object-sharing scope of a load (weightfile).
- `keras.src.saving.saving_lib`: loading one layer's state from a weights store, and
  `H5IOStore` (weightfile); `get_attr_skipset` (the saving cache fix below).
- `keras.src.utils.naming`: the automatic layer names of Keras' loader (weightfile).
- `keras.src.backend.common.global_state`: the saving cache fix below.
- `keras.src.backend.rnn`: the backend's step loop, the one `keras.layers.RNN.inner_loop`
  runs (no public name), for normify.cells.
- `keras.src.legacy.saving.saving_utils.MODULE_OBJECTS`: the names Keras' HDF5 loader
  looks config strings up in (the HDF5 fix below).
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any


def inbound_nodes(layer: Any) -> list[Any]:
    """The nodes (calls) of a layer in the functional graphs it is part of."""
    return list(getattr(layer, "_inbound_nodes", None) or [])


def keras_history(tensor: Any) -> tuple[Any, int, int]:
    """(operation, node index, tensor index) of the call that produced a symbolic tensor."""
    operation, node_index, tensor_index = tensor._keras_history
    return operation, node_index, tensor_index


def own_layers(model: Any) -> list[Any]:
    """A functional model's layers, its InputLayers included (unlike `model.layers`)."""
    return list(model._layers)


def sequential_of(keras: ModuleType, layers: list[Any], name: str) -> Any:
    """`keras.Sequential(layers)`, without its check of each layer's name against every
    layer before it (quadratic: 1.3 s at 6000 layers); the caller's names are unique."""
    model = keras.Sequential(name=name)
    if not hasattr(model, "_maybe_rebuild") or not isinstance(model._layers, list):
        return keras.Sequential(layers, name=name)  # a Keras laid out otherwise
    model._layers.extend(layers)
    if layers:
        model._maybe_rebuild()
    return model


def functional_class() -> type:
    from keras.src.models.functional import Functional

    return Functional


def serialization_lib() -> ModuleType:
    from keras.src.saving import serialization_lib as module

    return module


def saving_lib() -> ModuleType:
    from keras.src.saving import saving_lib as module

    return module


def backend_module() -> ModuleType:
    """The running backend's implementation module (`rnn`, the step loop)."""
    from keras.src import backend as module

    return module


def naming() -> ModuleType:
    from keras.src.utils import naming as module

    return module


# The object types whose saving skip sets Keras recomputes for every object it walks.
_SKIPSET_TYPES = ("Layer", "Functional", "Sequential", "Operation")


def mend_saving_cache() -> None:
    """Let Keras reuse the attribute skip sets it computes when saving and loading.

    For every layer it saves or loads, Keras 3.15's `saving_lib.get_attr_skipset`
    builds a throwaway `Layer()` and lists its attributes (about 1.5 ms): it stores the
    result under `saving_attr_skipset_<type>` but looks it up under
    `saving_attr_skiplist_<type>`, so the cache never hits (about 0.3 s of a DenseNet121's
    load, as much of its save). This stores the very value it computes under the key it looks
    up. Idempotent; does nothing on a Keras without that function.
    """
    try:
        from keras.src.backend.common import global_state
        from keras.src.saving.saving_lib import get_attr_skipset
    except ImportError:
        return
    for obj_type in _SKIPSET_TYPES:
        key = f"saving_attr_skiplist_{obj_type}"
        if global_state.get_global_attribute(key, None) is None:
            try:
                skipset = get_attr_skipset(obj_type)
            except Exception:
                return
            global_state.set_global_attribute(key, skipset)


@contextmanager
def hdf5_config_strings_kept() -> Iterator[None]:
    """Keep Keras' HDF5 loader from turning config strings into functions.

    Keras 3.15's legacy HDF5 loader looks every string of a layer's config up among the
    names of `keras.layers` and replaces one that names a function by that function:
    `Attention(score_mode="dot")` gets the function `keras.layers.dot` and is refused, so
    Keras cannot load its own `.h5` file of a model with an Attention layer. For the
    duration, the names it looks up are the classes alone (the classes are what those
    configs name; the strings stay strings, as Keras 3's layers take them).
    """
    try:
        from keras.src import layers, models
        from keras.src.legacy.saving import saving_utils
    except ImportError:
        yield
        return
    names = saving_utils.MODULE_OBJECTS
    had, before = hasattr(names, "ALL_OBJECTS"), getattr(names, "ALL_OBJECTS", None)
    classes = {key: value for key, value in vars(layers).items() if not inspect.isfunction(value)}
    classes.update(
        InputLayer=layers.InputLayer,
        Functional=models.Functional,
        Model=models.Model,
        Sequential=models.Sequential,
    )
    names.ALL_OBJECTS = classes
    try:
        yield
    finally:
        if had:
            names.ALL_OBJECTS = before
        else:
            del names.ALL_OBJECTS
