"""Which Keras wrote a model file: from the version it records, or from its config's traits
when it records none."""

from __future__ import annotations

import re
from typing import Any

from normify.formats.base import KERAS1, KERAS2, KERAS3, TF_KERAS, Origin, walk_entries

# Classes and arguments only Keras 1 wrote (Keras 2 renamed or removed them all).
KERAS1_CLASSES = frozenset(
    {
        "Convolution1D", "Convolution2D", "Convolution3D", "AtrousConvolution1D",
        "AtrousConvolution2D", "Deconvolution2D", "Merge", "MaxoutDense", "Highway",
        "TimeDistributedDense", "SeparableConvolution2D",
    }
)  # fmt: skip
KERAS1_ARGUMENTS = frozenset(
    {"init", "border_mode", "subsample", "nb_filter", "nb_row", "nb_col", "W_regularizer",
     "b_regularizer", "W_constraint", "dim_ordering", "input_dtype", "consume_less"}
)  # fmt: skip


def origin_of(
    version: Any,
    backend: Any,
    config: dict[str, Any],
    keras1_weights: bool = False,
) -> Origin:
    """The origin of a file recording `version` (its `keras_version`, or None) and
    `backend`, whose model config is `config`."""
    version = _text(version)
    return Origin(generation(version, config), version, _text(backend), keras1_weights)


def generation(version: str | None, config: dict[str, Any]) -> str:
    if version is not None:
        match = re.match(r"\s*(\d+)\.(\d+)", version)
        if match is not None:
            major, minor = int(match.group(1)), int(match.group(2))
            if major <= 1:
                return KERAS1
            if major == 2:
                # Keras 2.4 and later were tf.keras itself; "-tf" marks tf.keras before.
                return TF_KERAS if "-tf" in version or minor >= 4 else KERAS2
            return KERAS3
    return _generation_from_traits(config)


def _generation_from_traits(config: dict[str, Any]) -> str:
    keras2 = isinstance(config.get("config"), list) or config.get("class_name") == "Model"
    for entry in walk_entries(config):
        inner = entry["config"]
        if entry["class_name"] in KERAS1_CLASSES:
            return KERAS1
        if isinstance(inner, dict):
            if KERAS1_ARGUMENTS & inner.keys() or (
                "output_dim" in inner and entry["class_name"] != "Embedding"
            ):
                return KERAS1
            keras2 = keras2 or "batch_input_shape" in inner or "time_major" in inner
        module = str(entry.get("module") or "")
        if module.startswith(("tf_keras", "keras.engine", "keras.src.engine")):
            return TF_KERAS
        nodes = entry.get("inbound_nodes")
        if isinstance(nodes, list) and nodes and isinstance(nodes[0], list):
            keras2 = True
        if entry["class_name"] in ("TFOpLambda", "SlicingOpLambda"):
            return TF_KERAS
    return KERAS2 if keras2 else KERAS3


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    return value if isinstance(value, str) else None
