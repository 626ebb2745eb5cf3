"""In-cell layer normalization at the config level: which recurrent layers have it, and
the config of a layer converted to it (`add --rnn layernorm-cell`) or back (`strip`).

The layer-normalized classes live in `normify.cells` (which imports Keras); this module
only rewrites serialized configs, so plans, dry runs and audits need no backend. A
converted layer keeps its name, its cell's name and its stock weights, so the rebuild
carries `kernel`, `recurrent_kernel` and `bias` over by variable key; the norm
parameters start at gamma 1 and beta 0.
"""

from __future__ import annotations

import copy
from typing import Any

from normify.kinds import is_builtin

MODULE = "normify.cells"
PACKAGE = "normify"

STOCK_TO_NORMALIZED = {
    "LSTM": "LayerNormLSTM",
    "GRU": "LayerNormGRU",
    "SimpleRNN": "LayerNormSimpleRNN",
    "LSTMCell": "LayerNormLSTMCell",
    "GRUCell": "LayerNormGRUCell",
    "SimpleRNNCell": "LayerNormSimpleRNNCell",
}
NORMALIZED_TO_STOCK = {new: stock for stock, new in STOCK_TO_NORMALIZED.items()}
NORM_WEIGHT_NAMES = frozenset({"input_gamma", "recurrent_gamma", "cell_gamma", "cell_beta"})
# Constructor arguments the layer-normalized classes add to the stock ones, in config order.
NORM_ARGUMENTS = (
    "normalize",
    "epsilon",
    "gamma_initializer",
    "beta_initializer",
    "gamma_regularizer",
    "beta_regularizer",
    "gamma_constraint",
    "beta_constraint",
)
NORM_CLASS = "LayerNormalization"  # what an in-cell layer reports as its norm


class NotConvertible(ValueError):
    """The layer has no layer-normalized counterpart (the message says why)."""


def is_normify_class(class_name: str | None, module: str | None) -> bool:
    return module == MODULE and class_name in NORMALIZED_TO_STOCK


def normalized_in_cell(class_name: str, module: str | None, config: dict[str, Any]) -> bool:
    """Whether every recurrence of this layer (wrapped, stacked) is layer-normalized
    in its cell, with normalization on."""
    recurrences = list(_recurrences(class_name, module, config))
    return bool(recurrences) and all(
        is_normify_class(name, mod) and cfg.get("normalize", True) is not False
        for name, mod, cfg in recurrences
    )


def to_layer_norm(class_name: str, config: dict[str, Any]) -> tuple[str, str | None, dict]:
    """`(class_name, module, config)` of the layer with layer-normalized cells.

    Raises `NotConvertible` for recurrent layers without a layer-normalized counterpart.
    """
    config = copy.deepcopy(config)
    if class_name == "Bidirectional":
        for key in ("layer", "backward_layer"):
            if isinstance(config.get(key), dict):
                config[key] = _convert_entry(config[key], _to_normalized)
        return class_name, None, config
    if class_name == "RNN":
        config["cell"] = _convert_entry(config.get("cell"), _to_normalized)
        return class_name, None, config
    new_class, new_config = _to_normalized(class_name, None, config)
    return new_class, MODULE, new_config


def to_stock(class_name: str, module: str | None, config: dict[str, Any]) -> tuple[str, str, dict]:
    """`(class_name, module, config)` of the layer with stock cells (norm parameters gone)."""
    config = copy.deepcopy(config)
    if class_name == "Bidirectional":
        for key in ("layer", "backward_layer"):
            if isinstance(config.get(key), dict):
                config[key] = _convert_entry(config[key], _to_stock)
        return class_name, "keras.layers", config
    if class_name == "RNN":
        config["cell"] = _convert_entry(config.get("cell"), _to_stock)
        return class_name, "keras.layers", config
    new_class, new_config = _to_stock(class_name, module, config)
    return new_class, "keras.layers", new_config


def describe(class_name: str, config: dict[str, Any]) -> str:
    """`LayerNormLSTM`, `Bidirectional(LayerNormGRU)`, `RNN(LayerNormLSTMCell, GRUCell)`."""
    if class_name in ("Bidirectional", "RNN"):
        inner = list(
            dict.fromkeys(str(name) for name, _, _ in _recurrences(class_name, None, config))
        )
        return f"{class_name}({', '.join(inner)})"
    return class_name


def _recurrences(class_name: str, module: str | None, config: dict[str, Any]):
    """(class, module, config) of each recurrent layer or cell inside this layer."""
    if class_name == "Bidirectional":
        for key in ("layer", "backward_layer"):
            entry = config.get(key)
            if isinstance(entry, dict) and isinstance(entry.get("config"), dict):
                yield from _recurrences(entry["class_name"], entry.get("module"), entry["config"])
        return
    if class_name == "RNN" and is_builtin(module):
        cell = config.get("cell")
        if isinstance(cell, dict) and isinstance(cell.get("config"), dict):
            if cell.get("class_name") == "StackedRNNCells":
                for entry in cell["config"].get("cells") or []:
                    if isinstance(entry, dict) and isinstance(entry.get("config"), dict):
                        yield entry.get("class_name"), entry.get("module"), entry["config"]
            else:
                yield cell.get("class_name"), cell.get("module"), cell["config"]
        return
    yield class_name, module, config


def _convert_entry(entry: Any, convert: Any) -> dict[str, Any]:
    """A serialized layer or cell (`{"class_name", "module", "config", ...}`) converted."""
    if not isinstance(entry, dict) or not isinstance(entry.get("config"), dict):
        raise NotConvertible("its cell configuration is not readable")
    if entry.get("class_name") == "StackedRNNCells":
        cells = [_convert_entry(cell, convert) for cell in entry["config"].get("cells") or []]
        if not cells:
            raise NotConvertible("StackedRNNCells without cells")
        return {**entry, "config": {**entry["config"], "cells": cells}}
    if entry.get("class_name") == "Bidirectional":
        raise NotConvertible("nested Bidirectional")
    class_name, config = convert(entry.get("class_name"), entry.get("module"), entry["config"])
    normified = class_name in NORMALIZED_TO_STOCK
    return {
        **entry,
        "module": MODULE if normified else "keras.layers",
        "class_name": class_name,
        "config": config,
        "registered_name": f"{PACKAGE}>{class_name}" if normified else None,
    }


def _to_normalized(class_name: str, module: str | None, config: dict) -> tuple[str, dict]:
    if is_normify_class(class_name, module):
        raise NotConvertible(f"already layer-normalized in its cell ({class_name})")
    if class_name not in STOCK_TO_NORMALIZED or not is_builtin(module):
        raise NotConvertible(
            f"{class_name} has no layer-normalized cell (normify has them for LSTM, GRU "
            "and SimpleRNN, and their cells)"
        )
    config = dict(config)
    if config.get("use_cudnn") is True:  # no fused kernel computes a normalized cell
        config["use_cudnn"] = "auto"
    config.update(normalize=True, epsilon=1e-3)
    return STOCK_TO_NORMALIZED[class_name], config


def _to_stock(class_name: str, module: str | None, config: dict) -> tuple[str, dict]:
    if not is_normify_class(class_name, module):
        return class_name, config  # a stock cell among converted ones stays as it is
    config = {key: value for key, value in config.items() if key not in NORM_ARGUMENTS}
    return NORMALIZED_TO_STOCK[class_name], config
