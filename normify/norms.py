"""Making norm layers: their class, axis, name suffix, dtype and initial values.

Only the axis and the initial values need thought. A BatchNormalization with moving mean
0 and moving variance v, where v + epsilon rounds to exactly 1 in float32, computes
`x * 1 + beta` at inference: bit for bit what the layer it follows would have computed
with `beta` as its bias. No other norm layer can start as an identity.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

from collections.abc import Callable
from typing import Any

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


def misapplies_channels_first_bias(
    class_name: str, config: dict[str, Any], output_shape: tuple[int | None, ...] | None
) -> bool | None:
    """Whether Keras (3.15, TensorFlow backend) adds (or may add, for some input sizes)
    this layer's bias on the wrong axis.

    A channels_first convolution adds its bias reshaped to (1, C, 1, ...) with
    `keras.ops.add`, which the TensorFlow backend turns into `tf.nn.bias_add` in NHWC
    whenever the output's last dimension equals C: the bias then lands on the width axis.
    A dynamic width or channel count may hit it; None when the shape is not known at all.
    """
    inner_class, _ = kinds.innermost(class_name, config)
    axis = channel_axis(class_name, config)
    if inner_class not in kinds.CONV_CLASSES or axis < 0:
        return False
    if not output_shape or len(output_shape) <= axis + 1:
        return None  # normify does not know the shape (a config without it)
    channels, width = output_shape[axis], output_shape[-1]
    return channels is None or width is None or channels == width


def largest_group_count(channels: int, limit: int = 32) -> int:
    """The largest divisor of `channels` that is at most `limit`."""
    return max(d for d in range(1, min(channels, limit) + 1) if channels % d == 0)


def identity_moving_variance(epsilon: float, target: Any = 1.0) -> Any:
    """The float32 v for which float32(v + epsilon) == target exactly (target near 1);
    elementwise for an array of targets."""
    import numpy as np

    if np.ndim(target):
        return np.array([identity_moving_variance(epsilon, t) for t in target], np.float32)
    eps, goal = np.float32(epsilon), np.float32(target)
    candidate = goal - eps
    for _ in range(64):
        total = np.float32(candidate + eps)
        if total == goal:
            return candidate
        candidate = np.nextafter(
            candidate, np.float32(0) if total > goal else np.float32(2), dtype=np.float32
        )
    raise ValueError(f"no float32 variance makes an exact identity for epsilon {epsilon}")


def unit_rsqrt_arguments(channels: int, rsqrt: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Per channel, a float32 a near 1 whose reciprocal square root the backend computes as
    exactly 1, for a vector of `channels` values.

    Vectorized rsqrt kernels are not correctly rounded, and a vector's elements take
    different paths: TensorFlow on AVX-512 CPUs returns 1 - 2**-23 for rsqrt(1.0) in its
    vector path and exactly 1 for 1 - 2**-24, while its scalar path (short vectors and the
    tail of long ones) is exact at 1.0. So each position gets the first candidate that is
    exact there (1.0 where none is).
    """
    import numpy as np

    one = np.float32(1)
    below = np.nextafter(one, np.float32(0), dtype=np.float32)
    candidates = [
        one,
        below,
        np.nextafter(below, np.float32(0), dtype=np.float32),
        np.nextafter(one, np.float32(2), dtype=np.float32),
    ]
    chosen = np.full(channels, np.nan, dtype=np.float32)
    for candidate in candidates:
        exact = np.asarray(rsqrt(np.full(channels, candidate, np.float32))) == one
        chosen = np.where(np.isnan(chosen) & exact, candidate, chosen)
    return np.where(np.isnan(chosen), one, chosen).astype(np.float32)


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


def computes_in_half_precision(config: dict[str, Any]) -> bool:
    """Whether the layer's dtype policy computes in float16 or bfloat16 (`float16`,
    `mixed_float16`, `bfloat16`, `mixed_bfloat16`)."""
    dtype = config.get("dtype")
    if isinstance(dtype, dict):
        dtype = (dtype.get("config") or {}).get("name")
    return isinstance(dtype, str) and dtype.endswith("float16")  # bfloat16 included


def plain_dtype(config: dict[str, Any]) -> Any:
    """The target layer's dtype policy, when it is one a norm layer can share."""
    dtype = config.get("dtype")
    if isinstance(dtype, str):
        return dtype
    if isinstance(dtype, dict) and dtype.get("class_name") == "DTypePolicy":
        return dtype
    return None
