"""The arithmetic of weight translation rules: functions from the arrays a layer's file
holds to the arrays its Keras 3 counterpart takes, in Keras' legacy weight order.

Each maker returns a function of a list of NumPy arrays; NumPy is imported only when one
runs (translating a config for `normify audit` imports none).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

Arrays = list[Any]
WeightFunction = Callable[[Arrays], Arrays]


class WeightLayoutError(ValueError):
    """The arrays in the file do not have the layout a rule expects."""


def scale_gate_blocks(gates: int, blocks: Sequence[int], factor: float) -> WeightFunction:
    """Multiply gate blocks `blocks` (of `gates` equal blocks along the last axis) of every
    array (kernel, recurrent kernel, bias) by `factor`."""

    def apply(arrays: Arrays) -> Arrays:
        import numpy as np

        result = []
        for array in arrays:
            width = array.shape[-1]
            if width % gates:
                raise WeightLayoutError(f"a weight of shape {array.shape} has no {gates} gates")
            size = width // gates
            scaled = np.array(array, copy=True)
            for block in blocks:
                part = scaled[..., block * size : (block + 1) * size]
                # in float64, rounded once: the factor itself is not a float32 number
                scaled[..., block * size : (block + 1) * size] = part.astype(np.float64) * factor
            result.append(scaled)
        return result

    return apply


def scale_all(factor: float, skip_first: bool = False) -> WeightFunction:
    """Multiply every array (the first one left alone with `skip_first`) by `factor`."""

    def apply(arrays: Arrays) -> Arrays:
        import numpy as np

        return [
            array
            if skip_first and index == 0
            else (array.astype(np.float64) * factor).astype(array.dtype)
            for index, array in enumerate(arrays)
        ]

    return apply


def in_halves(function: WeightFunction, *, forward: bool, backward: bool) -> WeightFunction:
    """`function` applied to the forward half, the backward half, or both halves of a
    Bidirectional layer's arrays (its forward layer's, then its backward layer's)."""

    def apply(arrays: Arrays) -> Arrays:
        if len(arrays) % 2:
            raise WeightLayoutError("a Bidirectional layer holds an odd number of weights")
        half = len(arrays) // 2
        first, second = list(arrays[:half]), list(arrays[half:])
        return (function(first) if forward else first) + (function(second) if backward else second)

    return apply


def _cudnn_kernels(arrays: Arrays, gates: int) -> tuple[Any, Any]:
    """cuDNN reads each gate's block of the kernels as a row-major matrix of shape
    (units, inputs): the block Keras multiplies by is the transpose of that reading."""
    import numpy as np

    kernel, recurrent = arrays[0], arrays[1]

    def per_gate(matrix: Any, transform: Callable[[Any], Any]) -> Any:
        return np.hstack([transform(block) for block in np.hsplit(matrix, gates)])

    kernel = per_gate(kernel, lambda block: block.T.reshape(block.shape, order="F"))
    recurrent = per_gate(recurrent, lambda block: block.T)
    return kernel, recurrent


def cudnn_lstm(arrays: Arrays) -> Arrays:
    """CuDNNLSTM -> LSTM: cuDNN kernels read as Keras kernels, and the two bias vectors
    (input, recurrent) summed into one."""
    import numpy as np

    if len(arrays) != 3:
        raise WeightLayoutError(f"a CuDNNLSTM holds 3 weights, this one {len(arrays)}")
    units = arrays[1].shape[0]
    if arrays[2].shape != (8 * units,):
        raise WeightLayoutError(f"a CuDNNLSTM bias has shape ({8 * units},), not {arrays[2].shape}")
    kernel, recurrent = _cudnn_kernels(arrays, 4)
    input_bias, recurrent_bias = np.split(arrays[2], 2)
    return [kernel, recurrent, input_bias + recurrent_bias]


def cudnn_gru(arrays: Arrays) -> Arrays:
    """CuDNNGRU -> GRU(reset_after=True): cuDNN kernels read as Keras kernels, and the
    bias split into its input and recurrent rows."""
    if len(arrays) != 3:
        raise WeightLayoutError(f"a CuDNNGRU holds 3 weights, this one {len(arrays)}")
    units = arrays[1].shape[0]
    if arrays[2].shape != (6 * units,):
        raise WeightLayoutError(f"a CuDNNGRU bias has shape ({6 * units},), not {arrays[2].shape}")
    kernel, recurrent = _cudnn_kernels(arrays, 3)
    return [kernel, recurrent, arrays[2].reshape(2, 3 * units)]


def concatenate_gates(order: Sequence[int], per_gate: int) -> WeightFunction:
    """Keras 1 recurrent layers held one (W, U, b) triple per gate: concatenate them into
    Keras 2's kernel, recurrent_kernel and bias, taking gate `order[k]` as block k."""

    def apply(arrays: Arrays) -> Arrays:
        import numpy as np

        if len(arrays) != per_gate * len(order):
            raise WeightLayoutError(
                f"expected {per_gate * len(order)} Keras 1 gate weights, found {len(arrays)}"
            )
        triples = [arrays[per_gate * gate : per_gate * gate + per_gate] for gate in order]
        return [np.concatenate([triple[k] for triple in triples], axis=-1) for k in range(per_gate)]

    return apply


def transpose_first(axes: Sequence[int]) -> WeightFunction:
    """Transpose the first array (a kernel) by `axes`, leaving the others."""

    def apply(arrays: Arrays) -> Arrays:
        import numpy as np

        return [np.transpose(arrays[0], axes), *arrays[1:]]

    return apply


def squeeze_conv1d_kernel(filters: int, length: int) -> WeightFunction:
    """Keras 1's Convolution1D kernel was a 2D one: (length, 1, inputs, filters), or
    (filters, inputs, length, 1) before Keras 1.1; Keras 2's is (length, inputs, filters)."""

    def apply(arrays: Arrays) -> Arrays:
        import numpy as np

        kernel = arrays[0]
        if kernel.ndim != 4:
            return arrays
        if kernel.shape[:2] != (length, 1) or kernel.shape[3] != filters:
            kernel = np.transpose(kernel, (2, 3, 1, 0))
        return [kernel[:, 0, :, :], *arrays[1:]]

    return apply


def flip_kernels(count: int = 1) -> WeightFunction:
    """Theano convolved (kernels flipped in space); TensorFlow correlates: flip the first
    `count` kernels along their spatial axes (all but the last two)."""

    def apply(arrays: Arrays) -> Arrays:
        import numpy as np

        flipped = []
        for index, array in enumerate(arrays):
            if index < count and array.ndim > 2:
                spatial = tuple(range(array.ndim - 2))
                array = np.flip(array, axis=spatial).copy()
            flipped.append(array)
        return flipped

    return apply


def chain(*functions: WeightFunction) -> WeightFunction:
    def apply(arrays: Arrays) -> Arrays:
        for function in functions:
            arrays = function(arrays)
        return arrays

    return apply
