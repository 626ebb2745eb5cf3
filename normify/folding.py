"""Folding an inference-mode BatchNormalization into the linear layer that precedes it.

At inference a BatchNormalization is a per-channel affine map ``y * s + (beta - mean * s)``
with ``s = gamma / sqrt(var + eps)``. When ``y`` is the output of a linear layer with no
activation, scaling the kernel's output-channel slices by ``s`` and rewriting the bias gives
the same result with one layer fewer.

This module is pure numpy on purpose: it works on weights read from a file as well as on live
layers, and keeps Keras out of the import path of everything that only needs the math.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np


class FoldError(ValueError):
    """The BatchNormalization cannot be folded; the message says why."""


def negative_axis(axis: Any, shape: tuple[int | None, ...] | None) -> Any:
    """A BatchNormalization axis counted from the end when the rank is known, so `axis=1`
    on a Dense's 2-D output is recognized as its channel axis (-1)."""
    single = axis[0] if isinstance(axis, (list, tuple)) and len(axis) == 1 else axis
    if isinstance(single, int) and single >= 0 and shape:
        return single - len(shape)
    return axis


@dataclass(frozen=True)
class BatchNormParams:
    """The inference-time state of a BatchNormalization layer."""

    gamma: np.ndarray | None  # None when the BN has scale=False (acts as ones)
    beta: np.ndarray | None  # None when center=False (acts as zeros)
    moving_mean: np.ndarray
    moving_variance: np.ndarray
    epsilon: float
    axis: int  # the BN's (single) axis as configured, e.g. -1 or 1


@dataclass(frozen=True)
class _Target:
    """Where a layer keeps its output channels, and which BN axes address them."""

    label: str  # for messages, e.g. "Conv2D (channels_first)"
    kernel_key: str  # the variable whose output-channel slices get scaled
    bias_key: str
    other_keys: tuple[str, ...]  # variables the fold leaves alone but that must be present
    channel_axes: tuple[int, ...]  # kernel axes whose C-order flattening is the output channel
    bn_axes: tuple[int, ...]  # every spelling of the layer's output channel axis
    einsum_channel: str | None = None  # EinsumDense: the equation letter of the channel axis


_DENSE = frozenset({"Dense"})
_EINSUM = frozenset({"EinsumDense"})
_CONV = {
    "Conv1D": 1, "Conv2D": 2, "Conv3D": 3,
    "Convolution1D": 1, "Convolution2D": 2, "Convolution3D": 3,
}  # fmt: skip
_TRANSPOSE = {
    "Conv1DTranspose": 1, "Conv2DTranspose": 2, "Conv3DTranspose": 3,
    "Convolution1DTranspose": 1, "Convolution2DTranspose": 2, "Convolution3DTranspose": 3,
}  # fmt: skip
_DEPTHWISE = {"DepthwiseConv1D": 1, "DepthwiseConv2D": 2}
_SEPARABLE = {
    "SeparableConv1D": 1, "SeparableConv2D": 2,
    "SeparableConvolution1D": 1, "SeparableConvolution2D": 2,
}  # fmt: skip
_WRAPPERS = frozenset({"TimeDistributed"})
_LINEAR = _DENSE | _EINSUM | set(_CONV) | set(_TRANSPOSE) | set(_DEPTHWISE) | set(_SEPARABLE)


def fold_reason(class_name: str, config: dict, bn_axis: int | Sequence[int]) -> str | None:
    """None if a BN with this axis after this layer can be folded into it, else the reason."""
    try:
        _check_axis(_target(class_name, config), bn_axis)
    except FoldError as error:
        return str(error)
    return None


def fold_batchnorm(
    class_name: str,
    config: dict,
    weights: Mapping[str, np.ndarray],
    bn: BatchNormParams,
) -> dict[str, np.ndarray]:
    """New weights for the layer (same keys as `weights`, plus "bias" if it had none) so that
    layer'(x) == BN(layer(x)) at inference. Raises FoldError when impossible.

    A layer that had no bias needs one afterwards: rebuild it from `folded_config`.
    """
    import numpy as np

    target = _target(class_name, config)
    _check_axis(target, bn.axis)
    _check_keys(target, weights)
    kernel = np.asarray(weights[target.kernel_key])
    channels = _channel_count(target, kernel)
    scale, shift = _affine(bn, channels)

    folded = {key: np.array(value, copy=True) for key, value in weights.items()}
    folded[target.kernel_key] = _scale_kernel(kernel, scale, target.channel_axes)
    folded[target.bias_key] = _fold_bias(weights.get(target.bias_key), kernel.dtype, scale, shift)
    return folded


def folded_config(class_name: str, config: dict) -> dict:
    """A copy of `config` for the layer that receives the folded weights: it always has a bias.

    EinsumDense has no `use_bias`; its bias lives on `bias_axes`, the output channel letter.
    """
    target = _target(class_name, config)
    # Only the dicts on the way to the edited key are copied; the rest (initializers,
    # dtype policy) is shared with `config`, as every pass shares it: configs are
    # replaced, never edited in place.
    new = dict(config)
    inner = new
    while class_name in _WRAPPERS:
        layer = inner["layer"] = dict(inner["layer"])
        class_name = layer["class_name"]
        inner = layer["config"] = dict(layer["config"])
    if target.einsum_channel is not None:
        inner["bias_axes"] = target.einsum_channel
    else:
        inner["use_bias"] = True
    return new


# --- which layers, which axes -------------------------------------------------------------


def _target(class_name: str, config: Mapping[str, Any]) -> _Target:
    """Describe the layer's output channels, or raise FoldError if it is not foldable."""
    if class_name in _WRAPPERS:
        return _wrapped_target(class_name, config)
    if class_name not in _LINEAR:
        raise FoldError(
            f"{class_name} is not a linear layer a BatchNormalization can be folded into"
        )
    _check_plain_linear(class_name, config)
    if class_name in _DENSE:
        return _Target(class_name, "kernel", "bias", (), (-1,), (-1,))
    if class_name in _EINSUM:
        return _einsum_target(config)
    if class_name in _CONV:
        return _conv_target(class_name, config, _CONV[class_name], "kernel", (-1,))
    if class_name in _TRANSPOSE:
        # Transposed convolutions store the kernel as (k..., out, in).
        return _conv_target(class_name, config, _TRANSPOSE[class_name], "kernel", (-2,))
    if class_name in _DEPTHWISE:
        # Kernel (k..., in, mult); output channel in_index * mult + m is its C-order flattening.
        return _conv_target(class_name, config, _DEPTHWISE[class_name], "kernel", (-2, -1))
    if class_name in _SEPARABLE:
        # The pointwise convolution is the linear map that produces the output channels.
        target = _conv_target(class_name, config, _SEPARABLE[class_name], "pointwise_kernel", (-1,))
        return replace(target, other_keys=("depthwise_kernel",))
    raise AssertionError(f"{class_name} is in _LINEAR but has no target")  # pragma: no cover


def _check_plain_linear(class_name: str, config: Mapping[str, Any]) -> None:
    """Reject configs whose output is not `kernel (x) input + bias` in plain float weights."""
    activation = config.get("activation")
    if not _is_linear_activation(activation):
        raise FoldError(
            f"{class_name} has activation {_activation_name(activation)!r}; a BatchNormalization "
            "after a nonlinearity cannot be folded into the kernel"
        )
    if config.get("lora_rank"):
        raise FoldError(f"{class_name} has LoRA enabled; its kernel is not a single variable")
    if config.get("quantization_config") or _is_quantized_dtype(config.get("dtype")):
        raise FoldError(f"{class_name} is quantized; its integer kernel cannot be rescaled")


def _is_linear_activation(activation: Any) -> bool:
    return activation in (None, "linear") or _activation_name(activation) == "linear"


def _activation_name(activation: Any) -> str:
    """The activation's name, whether a string or a serialized object."""
    if isinstance(activation, Mapping):
        inner = activation.get("config")
        return inner if isinstance(inner, str) else str(activation.get("class_name"))
    return str(activation)


def _is_quantized_dtype(dtype: Any) -> bool:
    if isinstance(dtype, Mapping):
        inner = dtype.get("config")
        mode = inner.get("mode") if isinstance(inner, Mapping) else None
        return bool(mode) or "Quantized" in str(dtype.get("class_name", ""))
    # Quantized policies are spelled like "int8_from_float32".
    return isinstance(dtype, str) and "_from_" in dtype


def _conv_target(
    class_name: str,
    config: Mapping[str, Any],
    rank: int,
    kernel_key: str,
    channel_axes: tuple[int, ...],
) -> _Target:
    """The output of an N-d convolution has rank N + 2: batch, N spatial axes and channels."""
    # A config without data_format means Keras' default image data format, channels_last.
    data_format = config.get("data_format") or "channels_last"
    if data_format == "channels_last":
        bn_axes = (-1, rank + 1)
    elif data_format == "channels_first":
        bn_axes = (1, -(rank + 1))
    else:
        raise FoldError(f"{class_name} has unknown data_format {data_format!r}")
    label = f"{class_name} ({data_format})"
    return _Target(label, kernel_key, "bias", (), channel_axes, bn_axes)


def _einsum_target(config: Mapping[str, Any]) -> _Target:
    """EinsumDense folds only when the output's last axis is the kernel's last axis.

    Then each output channel is linear in exactly one kernel slice, and the bias (needed for
    the shift) can live on that single axis.
    """
    equation = str(config.get("equation", "")).replace(" ", "")
    inputs, arrow, output = equation.partition("->")
    operands = inputs.split(",")
    if not arrow or len(operands) != 2:
        raise FoldError(f"EinsumDense equation {equation!r} is not of the form 'x,kernel->out'")
    kernel_spec = operands[1]
    channel = output[-1:]
    if not channel.isalpha() or kernel_spec[-1:] != channel or kernel_spec.count(channel) != 1:
        raise FoldError(
            f"EinsumDense equation {equation!r}: the output's last axis is not the kernel's "
            "last axis, so the BatchNormalization's channels do not map to kernel slices"
        )
    bias_axes = config.get("bias_axes")
    if bias_axes and bias_axes != channel:
        raise FoldError(
            f"EinsumDense bias_axes {bias_axes!r} is not just the output's last axis "
            f"{channel!r}, so the folded shift cannot be added to it"
        )
    return _Target("EinsumDense", "kernel", "bias", (), (-1,), (-1,), einsum_channel=channel)


def _wrapped_target(class_name: str, config: Mapping[str, Any]) -> _Target:
    """TimeDistributed adds a time axis after the batch axis, and prefixes variable paths."""
    layer = config.get("layer")
    if not isinstance(layer, Mapping) or not isinstance(layer.get("config"), Mapping):
        raise FoldError(f"{class_name} config has no wrapped layer")
    inner_config = layer["config"]
    name = inner_config.get("name")
    if not name:
        raise FoldError(f"{class_name} wraps a layer without a name")
    inner = _target(str(layer.get("class_name")), inner_config)
    prefix = f"{name}/"
    # The extra axis shifts positive (from the front) axes; negative ones are unchanged.
    return _Target(
        label=f"{class_name}({inner.label})",
        kernel_key=prefix + inner.kernel_key,
        bias_key=prefix + inner.bias_key,
        other_keys=tuple(prefix + key for key in inner.other_keys),
        channel_axes=inner.channel_axes,
        bn_axes=tuple(axis + 1 if axis >= 0 else axis for axis in inner.bn_axes),
        einsum_channel=inner.einsum_channel,
    )


def _check_axis(target: _Target, bn_axis: int | Sequence[int]) -> None:
    axis = _single_axis(bn_axis)
    if axis not in target.bn_axes:
        spellings = " or ".join(str(a) for a in target.bn_axes)
        raise FoldError(
            f"BatchNormalization axis {axis} is not the output channel axis of {target.label} "
            f"({spellings})"
        )


def _single_axis(bn_axis: int | Sequence[int]) -> int:
    """A BN normalizing over several axes has no per-output-channel form."""
    if isinstance(bn_axis, int) or _is_integer(bn_axis):
        return int(bn_axis)  # type: ignore[arg-type]
    axes = list(bn_axis)
    if len(axes) != 1:
        raise FoldError(
            f"BatchNormalization axis {axes} is not a single axis, so it does not map to "
            "the layer's output channels"
        )
    return int(axes[0])


def _is_integer(value: Any) -> bool:
    """An int or a NumPy integer (there are none until something has imported NumPy, and
    planning a fold from a config must not import it)."""
    if isinstance(value, int):
        return True
    numpy = sys.modules.get("numpy")
    return numpy is not None and isinstance(value, numpy.integer)


# --- the arithmetic -----------------------------------------------------------------------


def _check_keys(target: _Target, weights: Mapping[str, np.ndarray]) -> None:
    """Unknown variables (LoRA factors, quantization scales, ...) would change the layer's
    output in ways the fold does not account for, so refuse rather than guess."""
    required = {target.kernel_key, *target.other_keys}
    missing = sorted(required - set(weights))
    if missing:
        raise FoldError(f"{target.label} weights lack {', '.join(missing)}")
    unknown = sorted(set(weights) - required - {target.bias_key})
    if unknown:
        raise FoldError(f"{target.label} has unexpected variables {', '.join(unknown)}")


def _channel_count(target: _Target, kernel: np.ndarray) -> int:
    import numpy as np

    if kernel.ndim <= len(target.channel_axes):
        raise FoldError(f"{target.label} kernel has unexpected shape {kernel.shape}")
    return int(np.prod([kernel.shape[axis] for axis in target.channel_axes]))


def _affine(bn: BatchNormParams, channels: int) -> tuple[np.ndarray, np.ndarray]:
    """The BN as `y * scale + shift`, in float64 so the fold adds no rounding of its own."""
    import numpy as np

    mean = _vector(bn.moving_mean, channels, "moving_mean")
    variance = _vector(bn.moving_variance, channels, "moving_variance")
    gamma = np.ones(channels) if bn.gamma is None else _vector(bn.gamma, channels, "gamma")
    beta = np.zeros(channels) if bn.beta is None else _vector(bn.beta, channels, "beta")
    denominator = variance + float(bn.epsilon)
    if not np.all(denominator > 0):
        raise FoldError("BatchNormalization moving_variance + epsilon is not positive")
    scale = gamma / np.sqrt(denominator)
    shift = beta - mean * scale
    if not (np.all(np.isfinite(scale)) and np.all(np.isfinite(shift))):
        raise FoldError("BatchNormalization statistics are not finite")
    return scale, shift


def _vector(values: np.ndarray, channels: int, name: str) -> np.ndarray:
    import numpy as np

    array = np.asarray(values, dtype=np.float64)
    if array.size != channels:
        raise FoldError(
            f"BatchNormalization {name} has {array.size} values but the layer has "
            f"{channels} output channels"
        )
    return array.reshape(channels)


def _scale_kernel(
    kernel: np.ndarray, scale: np.ndarray, channel_axes: tuple[int, ...]
) -> np.ndarray:
    """Multiply every output-channel slice of the kernel by its scale."""
    import numpy as np

    shape = [1] * kernel.ndim
    for axis in channel_axes:
        shape[axis] = kernel.shape[axis]
    scaled = kernel.astype(np.float64) * scale.reshape(shape)
    return scaled.astype(kernel.dtype)


def _fold_bias(
    bias: np.ndarray | None, kernel_dtype: np.dtype, scale: np.ndarray, shift: np.ndarray
) -> np.ndarray:
    """BN(y + b) = (y + b) * scale + shift, so the new bias is b * scale + shift."""
    import numpy as np

    if bias is None:
        return shift.astype(kernel_dtype)
    bias = np.asarray(bias)
    if bias.size != scale.size:
        raise FoldError(f"bias has {bias.size} values but the layer has {scale.size} channels")
    folded = bias.astype(np.float64).reshape(scale.shape) * scale + shift
    return folded.reshape(bias.shape).astype(bias.dtype)
