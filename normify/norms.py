"""Making norm layers: their class, axis, name suffix, dtype and initial values.

Only the axis and the initial values need thought. A BatchNormalization with moving mean
0 and moving variance v, where v + epsilon rounds to exactly 1 in float32, computes
`x * 1 + beta` at inference: bit for bit what the layer it follows would have computed
with `beta` as its bias. No other norm layer can start as an identity.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from normify import kinds

SUFFIXES = {
    "batchnorm": "bn",
    "layernorm": "ln",
    "groupnorm": "gn",
    "rmsnorm": "rms",
}

BATCHNORM_EPSILON = 1e-3
LAYERNORM_EPSILON = 1e-3
RMSNORM_EPSILON = 1e-6


def channel_axis(class_name: str, config: dict[str, Any]) -> int:
    """The axis a norm after this layer normalizes: its channel axis.

    channels_first puts channels on axis 1, or on axis 2 for a ConvLSTM that returns
    sequences (and for a layer wrapped in TimeDistributed, which adds a time axis).
    """
    time_axes = 0
    while class_name in ("TimeDistributed", "Bidirectional"):
        inner = kinds.wrapped_layer(config)
        if inner is None:
            break
        if class_name == "TimeDistributed":
            time_axes += 1
        class_name, config = inner["class_name"], inner["config"]
    if config.get("data_format") != "channels_first":
        return -1
    if class_name.startswith("ConvLSTM") and config.get("return_sequences"):
        time_axes += 1
    return 1 + time_axes


def largest_group_count(channels: int, limit: int = 32) -> int:
    """The largest divisor of `channels` that is at most `limit`."""
    return max(d for d in range(1, min(channels, limit) + 1) if channels % d == 0)


def identity_moving_variance(epsilon: float) -> np.float32:
    """The float32 v closest to 1 - epsilon for which float32(v + epsilon) == 1 exactly."""
    eps = np.float32(epsilon)
    candidate = np.float32(1) - eps
    for _ in range(64):
        total = np.float32(candidate + eps)
        if total == np.float32(1):
            return candidate
        candidate = np.nextafter(
            candidate, np.float32(0) if total > 1 else np.float32(2), dtype=np.float32
        )
    raise ValueError(f"no float32 variance makes an exact identity for epsilon {epsilon}")


def norm_config(norm: str, name: str, axis: int, dtype: Any) -> tuple[str, dict[str, Any]]:
    """The class name and config of a new norm layer of short name `norm`."""
    class_name = kinds.NORM_NAMES[norm]
    config: dict[str, Any] = {"name": name, "axis": axis}
    if norm == "batchnorm":
        config["epsilon"] = BATCHNORM_EPSILON
    elif norm == "layernorm":
        config["epsilon"] = LAYERNORM_EPSILON
    elif norm == "groupnorm":
        config["groups"] = None  # set by the caller, who knows the channel count
    elif norm == "rmsnorm":
        config["epsilon"] = RMSNORM_EPSILON
    if dtype is not None:
        config["dtype"] = dtype
    return class_name, config


def is_exact_identity(norm: str) -> bool:
    return norm == "batchnorm"


def plain_dtype(config: dict[str, Any]) -> Any:
    """The target layer's dtype policy, when it is one a norm layer can share."""
    dtype = config.get("dtype")
    if isinstance(dtype, str):
        return dtype
    if isinstance(dtype, dict) and dtype.get("class_name") == "DTypePolicy":
        return dtype
    return None
