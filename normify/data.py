"""Calibration data shared by `add --init calibrate`, `swap`, `recalibrate` and `verify`.

Every kind of source the user can hand us (a `.npz`/`.npy` file, arrays, a dict, a generator,
a `keras.utils.PyDataset`, a `tf.data.Dataset`) is checked against the model's inputs once and
turned into plain in-memory arrays, at most `max_samples` of them. Holding them in memory keeps
`CalibrationData.batches()` re-iterable (several passes over one-shot generators) and keeps
mistakes out of the middle of a long computation: they are reported up front, as one line
naming the input and the shape the model expects.

Neither Keras nor TensorFlow is imported here at module import: `input_specs` only reads
attributes of the model it is given, and a `tf.data.Dataset` is recognised by its module name.
"""

from __future__ import annotations

import os
import sys
import zipfile
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from normify.errors import NormifyError, UnsupportedModelError

T = TypeVar("T")

NPY_MAGIC = b"\x93NUMPY"
NPZ_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")

# np.load and zipfile raise any of these for a damaged file.
_READ_ERRORS = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error)


class _Invalid(Exception):
    """A data problem found by a helper; `load_data` adds the file label and re-raises it as a
    NormifyError, so the helpers need not thread the label through."""


@dataclass(frozen=True)
class InputSpec:
    """One model input: its name, its shape without the batch dimension, and its dtype."""

    name: str
    shape: tuple[int | None, ...]
    dtype: str

    @property
    def expected(self) -> tuple[int | None, ...]:
        """The shape a batch must have, written the way Keras prints it (batch dim first)."""
        return (None, *self.shape)


def input_specs(model: Any) -> list[InputSpec]:
    """The inputs of a live Keras model, in the order the model takes them."""
    try:
        inputs = model.inputs
    except (AttributeError, ValueError) as exc:
        raise UnsupportedModelError(f"the model has no defined inputs ({exc})") from exc
    if not inputs:
        raise UnsupportedModelError("the model has no defined inputs")
    return [_spec_of(tensor) for tensor in inputs]


def _spec_of(tensor: Any) -> InputSpec:
    shape = tuple(None if dim is None else int(dim) for dim in tuple(tensor.shape)[1:])
    # Keras 3 gives dtype as a string; a tf.DType (older paths) carries it in `.name`.
    dtype = tensor.dtype if isinstance(tensor.dtype, str) else getattr(tensor.dtype, "name", "")
    return InputSpec(name=str(tensor.name), shape=shape, dtype=str(dtype))


@dataclass
class CalibrationData:
    """Checked, cast and truncated data: one array per input, all with `samples` rows."""

    specs: list[InputSpec]
    batch_size: int
    samples: int
    arrays: list[np.ndarray] = field(repr=False)

    def batches(self) -> Iterator[list[np.ndarray]]:
        """Consecutive slices of `batch_size` samples (the last may be smaller), one array per
        input in input order. A fresh iterator each call, so callers can make several passes."""
        for start in range(0, self.samples, self.batch_size):
            yield [array[start : start + self.batch_size] for array in self.arrays]

    def __len__(self) -> int:
        return -(-self.samples // self.batch_size)


def load_data(
    source: Any,
    specs: list[InputSpec],
    *,
    batch_size: int = 64,
    max_samples: int = 1024,
    path_label: str | None = None,
) -> CalibrationData:
    """Read `source`, check it against `specs` and keep its first `max_samples` samples.

    Raises NormifyError (one line, prefixed by `path_label` or the file path) when the data
    does not fit the model.
    """
    label = path_label
    if isinstance(source, (str, os.PathLike)):
        label = path_label or os.fspath(source)
    try:
        _check_count("batch_size", batch_size)
        _check_count("max_samples", max_samples)
        if not specs:
            raise _Invalid("the model has no inputs to feed")
        arrays = _read_source(source, specs, max_samples)
    except _Invalid as exc:
        raise NormifyError(str(exc), label) from exc
    return CalibrationData(list(specs), int(batch_size), len(arrays[0]), arrays)


def _check_count(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise _Invalid(f"{name} must be a positive integer, got {value!r}")


def _read_source(source: Any, specs: list[InputSpec], limit: int) -> list[np.ndarray]:
    """Dispatch on the kind of source; every branch ends in `_finish` or `_from_batches`."""
    if isinstance(source, (str, os.PathLike)):
        return _read_file(Path(source), specs, limit)
    if isinstance(source, Mapping):
        return _finish(_by_name(source, specs), specs, limit)
    if _is_array(source):
        return _finish(_positional([source], specs), specs, limit)
    if _is_per_input_list(source, specs):
        return _finish(_positional(list(source), specs), specs, limit)
    if _is_tf_dataset(source) or isinstance(source, Iterable):
        return _from_batches(source, specs, limit)
    raise _Invalid(
        f"cannot read calibration data from a {type(source).__name__}; pass a .npz/.npy file, "
        "arrays, a dict of arrays or an iterable of batches"
    )


def _is_array(value: Any) -> bool:
    """Anything numpy can convert that has a shape: numpy, TensorFlow, JAX or torch arrays."""
    if isinstance(value, (Mapping, list, tuple, str, bytes)):
        return False
    return hasattr(value, "shape") and hasattr(value, "dtype")


def _is_per_input_list(source: Any, specs: list[InputSpec]) -> bool:
    """A list/tuple of arrays is one array per input, except for a single-input model where a
    list of several arrays can only be a list of batches."""
    if not isinstance(source, (list, tuple)) or not source:
        return False
    if not all(_is_array(item) for item in source):
        return False
    return len(source) == len(specs) or len(specs) > 1


def _is_tf_dataset(source: Any) -> bool:
    # Checked by module so that recognising a dataset never imports TensorFlow.
    module = type(source).__module__ or ""
    return module.startswith("tensorflow") and hasattr(source, "as_numpy_iterator")


# --- files -------------------------------------------------------------------------------------


def _read_file(path: Path, specs: list[InputSpec], limit: int) -> list[np.ndarray]:
    if not path.exists():
        raise _Invalid("no such file")
    if not path.is_file():
        raise _Invalid("is not a file")
    magic = _magic(path)
    if magic.startswith(NPY_MAGIC):
        return _finish(_positional([_load_npy(path)], specs), specs, limit)
    if magic.startswith(NPZ_MAGICS):
        return _read_npz(path, specs, limit)
    raise _Invalid("not a valid .npz/.npy file")


def _magic(path: Path) -> bytes:
    try:
        with path.open("rb") as handle:
            return handle.read(len(NPY_MAGIC))
    except OSError as exc:
        raise _Invalid(f"cannot read the file ({exc.strerror or exc})") from exc


def _load_npy(path: Path) -> np.ndarray:
    # Memory-mapped, so only the first `max_samples` rows of a large file are ever read.
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except _READ_ERRORS as exc:
        raise _load_error(exc) from exc


def _read_npz(path: Path, specs: list[InputSpec], limit: int) -> list[np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            keys = _npz_keys(list(npz.files), specs)
            # Only the first `limit` rows are kept, so the full arrays are dropped right away.
            arrays = [npz[key] for key in keys]
    except _Invalid:
        raise
    except _READ_ERRORS as exc:
        raise _load_error(exc) from exc
    return _finish(arrays, specs, limit)


def _npz_keys(files: list[str], specs: list[InputSpec]) -> list[str]:
    """Archive keys in input order: the input names, or np.savez's positional arr_0, arr_1..."""
    names = [spec.name for spec in specs]
    if set(files) == set(names):
        return names
    positional = [f"arr_{index}" for index in range(len(files))]
    if files and set(files) == set(positional):
        if len(files) != len(specs):
            raise _Invalid(_count_message(len(files), "array", specs))
        return positional[: len(specs)]
    raise _Invalid(_names_message(files, specs))


def _load_error(exc: BaseException) -> _Invalid:
    text = str(exc)
    # numpy's own wording for object arrays, read with and without a memory map.
    if "allow_pickle" in text or "python objects" in text.lower():
        return _Invalid(
            "holds a pickled object array, which normify does not load (for safety); "
            "save numeric arrays instead"
        )
    return _Invalid(f"not a valid .npz/.npy file ({_one_line(text) or type(exc).__name__})")


def _one_line(text: str) -> str:
    return " ".join(text.split())


# --- arrays and dicts --------------------------------------------------------------------------


def _by_name(mapping: Mapping[Any, Any], specs: list[InputSpec]) -> list[Any]:
    """Dict values in input order; the keys must be exactly the input names."""
    names = [spec.name for spec in specs]
    if set(mapping) != set(names):
        raise _Invalid(_names_message([str(key) for key in mapping], specs))
    return [mapping[name] for name in names]


def _positional(values: Sequence[Any], specs: list[InputSpec]) -> list[Any]:
    if len(values) != len(specs):
        raise _Invalid(_count_message(len(values), "array", specs))
    return list(values)


def _finish(values: list[Any], specs: list[InputSpec], limit: int) -> list[np.ndarray]:
    """Check whole arrays, then cast only the samples that will be used."""
    arrays = [_as_array(value, spec) for value, spec in zip(values, specs, strict=True)]
    count = _check_shapes(arrays, specs)
    if count == 0:
        raise _Invalid(_empty_message(specs))
    return [_cast(array[:limit], spec) for array, spec in zip(arrays, specs, strict=True)]


def _as_array(value: Any, spec: InputSpec) -> np.ndarray:
    try:
        array = np.asarray(value)
    except (ValueError, TypeError) as exc:
        raise _Invalid(
            f"input '{spec.name}' cannot be read as an array ({_one_line(str(exc))}); "
            f"the model expects {_shape(spec.expected)}"
        ) from exc
    if array.dtype.kind not in "biuf":
        raise _Invalid(
            f"input '{spec.name}' holds {_kind_name(array.dtype)} data but the model expects "
            f"{spec.dtype} of shape {_shape(spec.expected)}"
        )
    return array


def _check_shapes(arrays: list[np.ndarray], specs: list[InputSpec]) -> int:
    """Check every array against its input and return the common number of samples."""
    for array, spec in zip(arrays, specs, strict=True):
        if not _fits(array.shape, spec.expected):
            raise _Invalid(_shape_message(array, spec))
    for array, spec in zip(arrays, specs, strict=True):
        if len(array) != len(arrays[0]):
            raise _Invalid(_samples_message(array, spec, len(arrays[0]), specs))
    return len(arrays[0])


def _fits(shape: tuple[int, ...], expected: tuple[int | None, ...]) -> bool:
    if len(shape) != len(expected):
        return False
    return all(want is None or got == want for got, want in zip(shape, expected, strict=True))


# --- dtypes ------------------------------------------------------------------------------------


def _cast(array: np.ndarray, spec: InputSpec) -> np.ndarray:
    """A copy of `array` in the input's dtype, refusing casts that would change values."""
    target = _numpy_dtype(spec)
    kind = array.dtype.kind
    if target.kind == "b" and kind != "b":
        raise _Invalid(_dtype_message(spec, f"the data is {array.dtype}"))
    if target.kind != "b" and kind == "b":
        raise _Invalid(_dtype_message(spec, "the data is bool"))
    if target.kind in "iu":
        _check_integers(array, spec, target)
    try:
        with np.errstate(over="raise"):
            return np.array(array, dtype=target)
    except FloatingPointError as cause:
        raise _Invalid(_dtype_message(spec, f"the {array.dtype} values overflow it")) from cause


def _numpy_dtype(spec: InputSpec) -> np.dtype:
    try:
        return np.dtype(spec.dtype)
    except TypeError:
        pass
    try:  # bfloat16 and friends: ml_dtypes ships with TensorFlow and JAX.
        import ml_dtypes

        return np.dtype(getattr(ml_dtypes, spec.dtype))
    except (ImportError, AttributeError, TypeError) as cause:
        raise _Invalid(
            f"input '{spec.name}' of shape {_shape(spec.expected)} takes {spec.dtype} data, "
            "which normify cannot feed from arrays"
        ) from cause


def _check_integers(array: np.ndarray, spec: InputSpec, target: np.dtype) -> None:
    if array.size == 0:
        return
    if array.dtype.kind == "f":
        if not np.all(np.isfinite(array)) or not np.all(array == np.round(array)):
            raise _Invalid(_dtype_message(spec, f"the data has non-integral {array.dtype} values"))
    low, high = array.min(), array.max()
    info = np.iinfo(target)
    if low < info.min or high > info.max:
        raise _Invalid(_dtype_message(spec, f"its values span {low}..{high}, outside {target}"))


# --- iterables of batches ----------------------------------------------------------------------


def _from_batches(source: Any, specs: list[InputSpec], limit: int) -> list[np.ndarray]:
    """Pull batches until `limit` samples are in hand, never asking for one more (so infinite
    generators and repeated datasets are fine), and join them into one array per input."""
    parts: list[list[np.ndarray]] = [[] for _ in specs]
    total = 0
    for index, element in enumerate(_iterate(source)):
        try:
            arrays, count = _batch_arrays(element, specs)
        except _Invalid as exc:
            raise _Invalid(f"batch {index}: {exc}") from exc
        take = min(count, limit - total)
        for bucket, array in zip(parts, arrays, strict=True):
            bucket.append(array[:take])
        total += take
        if total >= limit:
            break
    if total == 0:
        raise _Invalid(_empty_message(specs))
    return [_join(bucket, spec) for bucket, spec in zip(parts, specs, strict=True)]


def _iterate(source: Any) -> Iterator[Any]:
    if _is_tf_dataset(source):
        # Yields numpy structures, so tf tensors never reach the checks below.
        return iter(source.as_numpy_iterator())
    return iter(source)


def _batch_arrays(element: Any, specs: list[InputSpec]) -> tuple[list[np.ndarray], int]:
    """One batch checked and cast: the model inputs `x` out of `x`, `(x,)`, `(x, y)` or
    `(x, y, sample_weight)`."""
    values = _split_batch(element, specs)
    arrays = [_as_array(value, spec) for value, spec in zip(values, specs, strict=True)]
    count = _check_shapes(arrays, specs)
    return [_cast(array, spec) for array, spec in zip(arrays, specs, strict=True)], count


def _split_batch(element: Any, specs: list[InputSpec]) -> list[Any]:
    if isinstance(element, (list, tuple)) and 1 <= len(element) <= 3:
        if _is_inputs(element[0], len(specs)):
            return _inputs_of(element[0], specs)
    return _inputs_of(element, specs)


def _is_inputs(value: Any, count: int) -> bool:
    """Whether `value` can be the model's `x` on its own (so a tuple holding it is (x, y...))."""
    if isinstance(value, Mapping):
        return True
    if isinstance(value, (list, tuple)):
        return len(value) == count and all(_is_array(item) for item in value)
    return count == 1 and _is_array(value)


def _inputs_of(x: Any, specs: list[InputSpec]) -> list[Any]:
    if isinstance(x, Mapping):
        return _by_name(x, specs)
    if isinstance(x, (list, tuple)):
        return _positional(x, specs)
    if len(specs) != 1:
        raise _Invalid(_count_message(1, "array", specs))
    return [x]


def _join(parts: list[np.ndarray], spec: InputSpec) -> np.ndarray:
    try:
        return np.concatenate(parts)
    except ValueError as cause:
        shapes = sorted({part.shape[1:] for part in parts})
        raise _Invalid(
            f"input '{spec.name}' has batches of different shapes {', '.join(map(_shape, shapes))} "
            f"(without the batch dimension) but the model expects {_shape(spec.expected)}; "
            "pad them to one shape"
        ) from cause


# --- messages ----------------------------------------------------------------------------------


def _shape(shape: tuple[int | None, ...]) -> str:
    return repr(tuple(None if dim is None else int(dim) for dim in shape))


def _kind_name(dtype: np.dtype) -> str:
    names = {"U": "string", "S": "bytes", "O": "object", "c": "complex", "V": "structured"}
    return names.get(dtype.kind, str(dtype))


def _inputs_text(specs: list[InputSpec]) -> str:
    return ", ".join(f"'{spec.name}' {_shape(spec.expected)}" for spec in specs)


def _shape_message(array: np.ndarray, spec: InputSpec) -> str:
    message = (
        f"input '{spec.name}' has shape {_shape(array.shape)} "
        f"but the model expects {_shape(spec.expected)}"
    )
    if _fits(array.shape, spec.shape):
        message += " (the data lacks the batch dimension)"
    return message


def _samples_message(array: np.ndarray, spec: InputSpec, count: int, specs: list[InputSpec]) -> str:
    return (
        f"input '{spec.name}' has {len(array)} samples (shape {_shape(array.shape)}) but input "
        f"'{specs[0].name}' has {count}; every input needs the same number of samples; the "
        f"model's inputs are {_inputs_text(specs)}"
    )


def _names_message(names: list[str], specs: list[InputSpec]) -> str:
    expected = {spec.name for spec in specs}
    unknown = [name for name in names if name not in expected]
    missing = [spec.name for spec in specs if spec.name not in names]
    problems = []
    if unknown:
        problems.append("unknown " + ", ".join(f"'{name}'" for name in unknown))
    if missing:
        problems.append("missing " + ", ".join(f"'{name}'" for name in missing))
    return (
        f"arrays do not match the model's inputs ({'; '.join(problems)}); expected "
        f"{_inputs_text(specs)}, or positional arr_0, arr_1, ... in input order"
    )


def _count_message(count: int, what: str, specs: list[InputSpec]) -> str:
    inputs = "input" if len(specs) == 1 else "inputs"
    what = what if count == 1 else what + "s"
    return f"got {count} {what} but the model has {len(specs)} {inputs}: {_inputs_text(specs)}"


def _empty_message(specs: list[InputSpec]) -> str:
    return f"the data has no samples; the model's inputs are {_inputs_text(specs)}"


def _dtype_message(spec: InputSpec, problem: str) -> str:
    return (
        f"input '{spec.name}' expects {spec.dtype} of shape {_shape(spec.expected)} but {problem}"
    )


# --- progress ----------------------------------------------------------------------------------


def progress(
    iterable: Iterable[T], total: int, description: str, quiet: bool = False
) -> Iterator[T]:
    """Yield the items of `iterable`, with a transient progress bar on stderr when a person is
    watching (stderr is a terminal) and `quiet` is off; pipes and logs stay clean."""
    if quiet or not _stderr_is_terminal():
        yield from iterable
        return
    from rich.console import Console
    from rich.progress import Progress

    with Progress(console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(description, total=total)
        for item in iterable:
            yield item
            bar.advance(task)


def _stderr_is_terminal() -> bool:
    isatty = getattr(sys.stderr, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False
