"""Reading and writing model files, and saying clearly what is wrong with them.

`read_config` needs no backend (zipfile, json and h5py only), so `normify audit` answers
without importing TensorFlow. `load_model` checks the file itself before handing it to
Keras, whose own errors are often misleading ("File not found" for an existing but
truncated `.keras` file).
"""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import warnings
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from normify import legacy
from normify.backend import deep_recursion, mend_saving_cache
from normify.errors import ModelLoadError, NormifyError, OutputError

KERAS = "keras"
H5 = "h5"

ZIP_MAGIC = b"PK\x03\x04"
EMPTY_ZIP_MAGIC = b"PK\x05\x06"
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"

# A config.json larger than this is not a model config but an attack or an accident.
MAX_CONFIG_BYTES = 256 * 1024 * 1024


@dataclass
class LoadedModel:
    """A model loaded from a file, with what normify noticed while loading it."""

    model: Any
    path: Path
    format: str
    notices: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------- file inspection


def detect_format(path: str | os.PathLike[str]) -> str:
    """`keras` or `h5`, after checking the path is a readable model file."""
    path = Path(path)
    if not path.exists():
        raise ModelLoadError("no such file", path)
    if path.is_dir():
        if (path / "saved_model.pb").exists():
            raise ModelLoadError(
                "is a TensorFlow SavedModel directory; Keras 3 cannot load it as a model "
                "(re-save it as .keras with the Keras that wrote it)",
                path,
            )
        raise ModelLoadError("is a directory, not a model file", path)
    if path.name.endswith(".weights.h5") or path.name.endswith(".weights.json"):
        raise ModelLoadError(
            "is a weights-only file with no model config; pass the .keras model file", path
        )
    try:
        with open(path, "rb") as handle:
            magic = handle.read(8)
    except OSError as error:
        raise ModelLoadError(f"cannot be read ({error.strerror})", path) from None
    if not magic:
        raise ModelLoadError("is empty (0 bytes)", path)
    if magic.startswith(ZIP_MAGIC) or magic.startswith(EMPTY_ZIP_MAGIC):
        return KERAS
    if magic == HDF5_MAGIC:
        return H5
    if path.suffix == ".keras":
        raise ModelLoadError("is not a .keras file (not a zip archive)", path)
    if path.suffix in (".h5", ".hdf5"):
        raise ModelLoadError("is not an HDF5 file", path)
    raise ModelLoadError("is neither a .keras (zip) nor an .h5 (HDF5) model file", path)


def read_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The serialized model config `{"class_name": ..., "config": ...}` of a model file."""
    path = Path(path)
    file_format = detect_format(path)
    if file_format == KERAS:
        return _read_keras_config(path)
    return _read_h5_config(path)


def _read_keras_config(path: Path) -> dict[str, Any]:
    archive = _open_zip(path)
    with archive:
        names = set(archive.namelist())
        if "config.json" not in names:
            raise ModelLoadError("is a zip archive without config.json (not a .keras model)", path)
        weights = [archive.getinfo(name) for name in WEIGHTS_MEMBERS if name in names]
        if not weights:
            raise ModelLoadError("has no weights (model.weights.h5 is missing)", path)
        size = path.stat().st_size
        for info in (archive.getinfo("config.json"), *weights):
            _check_member_size(info, size, path)
        raw = _read_member(archive, "config.json", path)
    config = _parse_config_json(raw, path, "config.json")
    _check_declared_sizes(config, sum(info.file_size for info in weights), path, "config.json")
    return config


WEIGHTS_MEMBERS = ("model.weights.h5", "model.weights.npz")

# A member declaring more than this, and more than MAX_EXPANSION times what it stores, is
# a decompression bomb: real weights and configs compress far less (Keras stores them).
BOMB_FLOOR_BYTES = 64 * 1024 * 1024
MAX_EXPANSION = 100


def _open_zip(path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except OSError as error:
        raise ModelLoadError(f"cannot be read ({error})", path) from None
    except Exception:  # BadZipFile, and struct/Unicode/Value errors on a mangled directory
        raise ModelLoadError("is truncated or corrupt (not a readable zip archive)", path) from None


def _check_member_size(info: zipfile.ZipInfo, archive_size: int, path: Path) -> None:
    """Refuse, from the zip directory alone, a member whose declared sizes cannot be true,
    before anything (normify or Keras) reads it into memory."""
    name, declared, stored = info.filename, info.file_size, info.compress_size
    if info.header_offset + 30 + len(info.orig_filename) + stored > archive_size:
        raise ModelLoadError(
            f"is truncated or corrupt ({name} declares {stored} stored bytes, past the end "
            f"of the {archive_size}-byte file)",
            path,
        )
    if info.compress_type == zipfile.ZIP_STORED and declared != stored:
        raise ModelLoadError(
            f"is corrupt ({name} declares {declared} bytes but stores {stored})", path
        )
    if declared > BOMB_FLOOR_BYTES and declared > MAX_EXPANSION * stored:
        raise ModelLoadError(
            f"{name} declares {declared} bytes but stores only {stored}; refusing to read "
            "a likely decompression bomb",
            path,
        )
    if name == "config.json" and (declared > MAX_CONFIG_BYTES or declared > 1000 * max(stored, 1)):
        raise ModelLoadError(f"config.json declares {declared} bytes; refusing to read it", path)


def _read_member(archive: zipfile.ZipFile, name: str, path: Path) -> bytes:
    try:
        return archive.read(name)
    except (zipfile.BadZipFile, OSError, EOFError, zipfile.LargeZipFile) as error:
        raise ModelLoadError(f"{name} cannot be read ({_first_line(error)})", path) from None
    except Exception as error:  # zlib.error, encrypted or unsupported compression, ...
        raise ModelLoadError(f"{name} is corrupt ({_first_line(error)})", path) from None


def _read_h5_config(path: Path) -> dict[str, Any]:
    found = _h5_attributes_in_child(path)
    if found is None:  # no child interpreter to be had: read here, unguarded
        found = _h5_attributes(str(path))
    if "error" in found:
        raise ModelLoadError(f"is not a readable HDF5 file ({found['error']})", path)
    raw = found["config"]
    if raw is None:
        if found["weights_only"]:
            raise ModelLoadError(
                "is a weights-only HDF5 file with no model config; pass the full model file",
                path,
            )
        raise ModelLoadError("is an HDF5 file but not a Keras model (no model_config)", path)
    if not isinstance(raw, str):
        raise ModelLoadError("model_config is not a JSON string", path)
    config = _parse_config_json(raw, path, "model_config")
    # the HDF5 file holds the weights beside the config
    _check_declared_sizes(config, path.stat().st_size, path, "model_config")
    return config


# The HDF5 C library can loop forever on a corrupted file (a flipped byte in the global
# heap of a legacy .h5 hangs `attrs["model_config"]`), and a call into it cannot be
# interrupted from Python. So the attributes are read by a child interpreter with a
# time limit: a hostile file costs seconds, not forever (and the child ~0.1 s).
H5_READ_SECONDS = 15.0


def _h5_attributes(path: str) -> dict[str, Any]:
    """The `model_config` attribute (None when absent; JSON text when a string) and
    whether the file looks like a weights-only file, or `error`: what h5py said."""
    import h5py

    try:
        with h5py.File(path, "r") as handle:
            raw = handle.attrs.get("model_config")
            weights_only = "layer_names" in handle.attrs or "vars" in handle or "layers" in handle
    except Exception as error:  # OSError mostly; a mangled file can raise anything
        return {"error": (str(error).strip() or type(error).__name__).splitlines()[0][:300]}
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", errors="replace")
    # anything but a string (a number, an array) is reported as such, not transported
    config = raw if raw is None or isinstance(raw, str) else False
    return {"config": config, "weights_only": bool(weights_only)}


def _h5_child_code() -> str:
    # the function's own source: the child imports h5py, not all of normify
    lines = ["import json, sys", "from typing import Any", inspect.getsource(_h5_attributes)]
    return "\n".join([*lines, "json.dump(_h5_attributes(sys.argv[1]), sys.stdout)"])


def _h5_attributes_in_child(path: Path) -> dict[str, Any] | None:
    """`_h5_attributes` run in a child interpreter, or None when none can run it."""
    try:
        done = subprocess.run(
            [sys.executable, "-c", _h5_child_code(), str(path)],
            capture_output=True,
            timeout=H5_READ_SECONDS,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        raise ModelLoadError(
            f"is not a readable HDF5 file (the HDF5 library did not finish reading it in "
            f"{H5_READ_SECONDS:.0f} s; the file is corrupt)",
            path,
        ) from None
    except OSError:  # no interpreter to start (or no source to give it)
        return None
    try:
        found = json.loads(done.stdout)
    except ValueError:
        return None  # the child could not import h5py, or died: read here
    return found if done.returncode == 0 and isinstance(found, dict) else None


def _parse_config_json(raw: bytes | str, path: Path, what: str) -> dict[str, Any]:
    try:
        config = json.loads(raw)
    except (ValueError, RecursionError) as error:
        raise ModelLoadError(f"{what} is not valid JSON ({_first_line(error)})", path) from None
    if not isinstance(config, dict) or not isinstance(config.get("class_name"), str):
        raise ModelLoadError(f"{what} does not describe a model (no class_name)", path)
    if not isinstance(config.get("config"), dict):
        raise ModelLoadError(f"{what} has no config mapping for the model", path)
    return config


# --------------------------------------------------------------- declared sizes in configs

# Building a model allocates every weight its config declares before Keras compares them
# with the file: a `units` of 10**8 allocates gigabytes and takes minutes. A config can
# only declare the weights its file holds, so sizes no file of this size can back are
# refused first. Two weights per byte (int4) is the densest Keras stores. A model saved
# unbuilt holds no weights, so sizes up to the floors always pass (a 2**24-weight layer
# allocates 64 MiB: harmless), and custom layers, whose settings normify cannot read,
# are left to their own code.
MIN_WEIGHT_BUDGET = 2**24  # weights (elements) of one layer, whatever the file holds
MIN_DIMENSION_LIMIT = 2**24  # one dimension of a declared shape, whatever the file holds
SHAPE_KEYS = ("batch_shape", "batch_input_shape", "input_shape", "build_input_shape", "shape")


def _check_declared_sizes(
    config: dict[str, Any], weights_bytes: int, path: Path, what: str
) -> None:
    budget = max(2 * weights_bytes, MIN_WEIGHT_BUDGET)
    for entry in _serialized_objects(config):
        name = _entry_name(entry)
        declared, how = _declared_weights(entry) if _is_builtin(entry) else (0, "")
        if declared > budget:
            raise ModelLoadError(
                f"{what}: layer {name!r} declares {how} ({_approximately(declared)} "
                f"weights) but the file holds {weights_bytes} bytes of weights; refusing to "
                "build it",
                path,
            )
        for key, dimension in _declared_dimensions(entry):
            if dimension > max(budget, MIN_DIMENSION_LIMIT):
                raise ModelLoadError(
                    f"{what}: layer {name!r} declares a dimension of {dimension} in {key}, "
                    f"beyond what a file with {weights_bytes} bytes of weights can use; "
                    "refusing to build it",
                    path,
                )


def _approximately(count: int) -> str:
    # float() overflows past 1e308, and configs can multiply huge numbers together
    return f"about {float(count):.2g}" if count < 10**300 else f"over 10^{int(math.log10(count))}"


def _serialized_objects(config: Any) -> Iterator[dict[str, Any]]:
    """Every `{"class_name": ..., "config": {...}}` in the tree: the model, its layers,
    nested models, wrapped layers and cells (iteratively: a config can be deep)."""
    stack = [config]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if isinstance(node.get("class_name"), str) and isinstance(node.get("config"), dict):
                yield node
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def _entry_name(entry: dict[str, Any]) -> str:
    name = entry.get("name") or entry["config"].get("name")
    return name if isinstance(name, str) else entry["class_name"]


def _size(value: Any) -> int | None:
    """A non-negative whole size, or None for anything else (Keras rejects those itself)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not (value == value and abs(value) < float("inf")):
        return None
    return int(value) if value >= 0 else None


def _sizes(value: Any) -> list[int]:
    values = value if isinstance(value, list) else [value]
    return [size for size in map(_size, values) if size is not None]


def _product(values: list[int]) -> int:
    result = 1
    for value in values:
        result *= max(value, 1)
    return result


def _is_builtin(entry: dict[str, Any]) -> bool:
    module = entry.get("module")
    # Keras 2 configs (legacy .h5) name no module; their custom layers fail to load anyway
    return module is None or module == "keras" or str(module).startswith("keras.")


def _declared_weights(entry: dict[str, Any]) -> tuple[int, str]:
    """A lower bound of the weights one layer allocates when built, from its config: the
    largest of the sizes its own weights are certain to have, and which setting says so."""
    config = entry["config"]
    build = entry.get("build_config")
    input_shape = build.get("input_shape") if isinstance(build, dict) else None
    units = _sizes(config.get("units"))
    # a Dense-like kernel is (input features, units); a built layer records its input
    features = _sizes(input_shape[-1:]) if units and isinstance(input_shape, list) else []
    kernel = _product(_sizes(config.get("kernel_size")))
    # a separable layer's filters size its pointwise (1x1) kernel only
    filters_kernel = 1 if "Separable" in entry["class_name"] else kernel
    candidates = [
        (_product(units + features) if units else 0, "units"),
        (_product(_sizes(config.get("filters"))) * filters_kernel, "filters"),
        (_product(_sizes(config.get("depth_multiplier"))) * kernel, "depth_multiplier"),
        (_product(_sizes([config.get("input_dim"), config.get("output_dim")])), "input_dim"),
        (_product(_sizes([config.get("num_heads"), config.get("key_dim")])), "num_heads"),
    ]
    declared, key = max(candidates)
    return declared, f"{key}={config.get(key)!r}"


def _declared_dimensions(entry: dict[str, Any]) -> Iterator[tuple[str, int]]:
    places = [entry["config"], entry.get("build_config")]
    for place in places:
        if not isinstance(place, dict):
            continue
        for key in SHAPE_KEYS:
            for dimension in _shape_leaves(place.get(key)):
                yield key, dimension


def _shape_leaves(shape: Any) -> Iterator[int]:
    """The whole-number dimensions of a shape, or of a nested list or dict of shapes."""
    stack = [shape]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, dict):
            stack.extend(node.values())
        else:
            size = _size(node)
            if size is not None:
                yield size


# ----------------------------------------------------------------------------- loading


def load_custom_objects(files: Iterable[str | os.PathLike[str]]) -> dict[str, Any]:
    """Import Python files that define (and usually register) custom layers.

    Returns the classes and functions they define, so unregistered classes are found too.
    """
    found: dict[str, Any] = {}
    paths = [Path(file) for file in files]
    for file in paths:
        if not file.is_file():
            raise NormifyError("custom objects file does not exist", file)
    # These files import Keras themselves; import it quietly first, or TensorFlow's
    # notices reach stderr when they do.
    from normify.backend import keras

    keras()
    for index, file in enumerate(paths):
        spec = importlib.util.spec_from_file_location(f"normify_custom_objects_{index}", file)
        if spec is None or spec.loader is None:
            raise NormifyError("cannot be imported as a Python module", file)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        # No __pycache__ beside the user's file: normify writes nothing but its output.
        previous, sys.dont_write_bytecode = sys.dont_write_bytecode, True
        try:
            spec.loader.exec_module(module)
        except Exception as error:
            raise NormifyError(
                f"importing custom objects failed: {type(error).__name__}: {_first_line(error)}",
                file,
            ) from None
        finally:
            sys.dont_write_bytecode = previous
        declared = getattr(module, "custom_objects", None)
        if isinstance(declared, dict):
            found.update(declared)
        for name, value in vars(module).items():
            if (inspect.isclass(value) or inspect.isfunction(value)) and (
                getattr(value, "__module__", None) == module.__name__
            ):
                found[name] = value
    return found


def load_model(
    path: str | os.PathLike[str],
    *,
    safe_mode: bool = True,
    custom_objects: dict[str, Any] | None = None,
    config: dict[str, Any] | None = None,
) -> LoadedModel:
    """Load a `.keras` or `.h5` model with Keras, turning every failure into one line.

    `config` is the file's config as `read_config` returned it, when the caller has it
    already (reading and checking it again costs a few tens of milliseconds).

    A file written by Keras 2 (its keras_version says so, or Keras 3 rejects a config
    with Keras 2 traits) is loaded through `normify.legacy`: its config is repaired for
    Keras 3 first, and each repair becomes a notice starting "repaired: ".
    """
    path = Path(path)
    file_format = detect_format(path)
    if config is None:
        config = read_config(path)  # checks the archive and config before Keras sees them
    from normify.backend import keras

    request = _LoadRequest(keras(), path, file_format, config, safe_mode, custom_objects)
    with deep_recursion(count_layers(config)):
        if legacy.is_keras2_version(saved_keras_version(path, file_format)):
            return _load_keras2_file(request)
        return _load_keras3_file(request)


def count_live_layers(model: Any) -> int:
    """How many layers a live model holds, nested models included."""
    count, pending = 0, [model]
    while pending:
        layers = getattr(pending.pop(), "layers", None) or []
        count += len(layers)
        pending.extend(layers)
    return count


def count_layers(config: Any) -> int:
    """How many layer entries a serialized model holds, nested models included."""
    count, pending = 0, [config]
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            layers = item.get("layers")
            if isinstance(layers, list):
                count += len(layers)
            pending.extend(value for value in item.values() if isinstance(value, (dict, list)))
        elif isinstance(item, list):
            pending.extend(value for value in item if isinstance(value, (dict, list)))
    return count


@dataclass
class _LoadRequest:
    keras: Any
    path: Path
    format: str
    config: dict[str, Any]
    safe_mode: bool
    custom_objects: dict[str, Any] | None


def _load_keras3_file(request: _LoadRequest) -> LoadedModel:
    path = request.path
    notices: list[str] = []
    try:
        model = _keras_load(request, compile=True)
    except ModelLoadError:
        raise
    except Exception as error:
        message = describe_load_error(error)
        if message is not None:
            raise ModelLoadError(message, path) from None
        if legacy.looks_like_keras2(request.config):
            with contextlib.suppress(NormifyError):  # if not, Keras' own error stands
                return _load_keras2(request)
        try:
            model = _keras_load(request, compile=False)
        except Exception:
            raise ModelLoadError(f"cannot be loaded: {_first_line(error)}", path) from None
        notices.append(
            f"the training configuration could not be restored ({_first_line(error)}); "
            "the model was loaded uncompiled"
        )
    return LoadedModel(model=model, path=path, format=request.format, notices=notices)


def _load_keras2_file(request: _LoadRequest) -> LoadedModel:
    """Repair first. Should that fail, Keras 3's own reader (which patches a few Keras 2
    configs itself) gets its chance before the repair's error is reported."""
    try:
        return _load_keras2(request)
    except ModelLoadError as error:
        repair_error = error
    try:
        model = _keras_load(request, compile=True)
    except Exception:
        raise repair_error from None
    reason = str(repair_error).removeprefix(f"{repair_error.path}: ")
    notice = f"Keras 3 loaded this Keras 2 file unrepaired; the repair failed: {reason}"
    return LoadedModel(model=model, path=request.path, format=request.format, notices=[notice])


def _keras_load(request: _LoadRequest, compile: bool) -> Any:
    mend_saving_cache()
    with warnings.catch_warnings(), _keras_suffixed(request.path, request.format) as path:
        warnings.simplefilter("ignore")
        return request.keras.saving.load_model(
            path,
            custom_objects=request.custom_objects,
            compile=compile,
            safe_mode=request.safe_mode,
        )


@contextlib.contextmanager
def _keras_suffixed(path: Path, file_format: str) -> Iterator[Path]:
    """`path`, or a link to it named as Keras requires (`.keras`/`.h5`): Keras picks the
    format from the suffix, and a backup such as `model.keras.bak` has none it knows."""
    known = (".keras",) if file_format == KERAS else (".h5", ".hdf5")
    if path.suffix in known:
        yield path
        return
    suffix = known[0]
    with tempfile.TemporaryDirectory(prefix="normify-") as folder:
        link = Path(folder) / f"model{suffix}"
        link.symlink_to(path.resolve())
        yield link


def saved_keras_version(path: Path, file_format: str) -> str | None:
    """The Keras version that wrote a model file, where the file records it."""
    try:
        if file_format == KERAS:
            with zipfile.ZipFile(path) as archive:
                version = json.loads(archive.read("metadata.json")).get("keras_version")
        else:
            import h5py

            with h5py.File(path, "r") as handle:
                version = handle.attrs.get("keras_version")
    except Exception:  # no or unreadable metadata: not a reason to refuse the file
        return None
    if isinstance(version, bytes):
        version = version.decode("utf-8", errors="replace")
    return version if isinstance(version, str) else None


def _load_keras2(request: _LoadRequest) -> LoadedModel:
    """Build a Keras 2 model from its repaired config, with the weights of the file."""
    keras_module, path = request.keras, request.path
    try:
        repaired, repairs = legacy.repair_config(request.config, request.custom_objects)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = keras_module.saving.deserialize_keras_object(
                repaired, custom_objects=request.custom_objects, safe_mode=request.safe_mode
            )
            if not isinstance(model, keras_module.Model):
                raise ModelLoadError("holds a layer config, not a model", path)
            _load_keras2_weights(model, path, request.format)
    except NormifyError:
        raise
    except Exception as error:
        message = describe_load_error(error)
        raise ModelLoadError(
            message or f"cannot be loaded as a Keras 2 model: {_first_line(error)}", path
        ) from None
    notices = [f"repaired: {line}" for line in repairs]
    training = _keras2_training_config(path, request.format, request.config)
    notices.extend(_compile_keras2(keras_module, model, training, request.custom_objects))
    return LoadedModel(model=model, path=path, format=request.format, notices=notices)


def _load_keras2_weights(model: Any, path: Path, file_format: str) -> None:
    if file_format == KERAS:
        # tf_keras writes model.weights.h5 in the layout Keras 3 reads; Keras reads it
        # straight from the archive.
        model.load_weights(str(path))
        return
    import h5py
    from keras.src.legacy.saving.legacy_h5_format import load_weights_from_hdf5_group

    with h5py.File(path, "r") as handle:
        group = handle["model_weights"] if "model_weights" in handle else handle
        load_weights_from_hdf5_group(group, model)


def _keras2_training_config(path: Path, file_format: str, config: dict[str, Any]) -> Any:
    """The training config as Keras 2 saved it (None when the model was not compiled)."""
    if file_format == KERAS:
        return config.get("compile_config")
    import h5py

    with h5py.File(path, "r") as handle:
        raw = handle.attrs.get("training_config")
    if raw is None:
        return None
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", errors="replace")
    try:
        return json.loads(raw)
    except ValueError:
        return raw  # not a mapping: repair_training_config says so


def _compile_keras2(
    keras_module: Any, model: Any, training: Any, custom_objects: dict[str, Any] | None
) -> list[str]:
    """Compile from the translated training config; the notices say how it went."""
    if not training:
        return []
    try:
        compile_config, lines = legacy.repair_training_config(training, custom_objects)
    except Exception as error:  # a malformed training config must not stop the load
        compile_config, lines = None, [f"it is malformed: {_first_line(error)}"]
    if compile_config is None:
        return [
            f"the training configuration could not be translated ({lines[0]}); "
            "the model was loaded uncompiled"
        ]
    scope = keras_module.saving.CustomObjectScope(custom_objects or {})
    try:
        with warnings.catch_warnings(), scope:
            warnings.simplefilter("ignore")
            model.compile_from_config(compile_config)
    except Exception as error:
        return [
            f"the training configuration could not be restored ({_first_line(error)}); "
            "the model was loaded uncompiled"
        ]
    return [f"repaired: {line}" for line in lines]


_UNKNOWN_CLASS = re.compile(
    r"(?:Could not locate (?:class|function) |Unknown (?:layer|object|class)[:\s]+)'?([\w.>]+)'?"
)

# h5py's words for a weights file it cannot open; the archive itself was checked already.
# h5py 3 says "Unable to synchronously open file (file signature not found)" for garbage.
_CORRUPT_WEIGHTS = (
    "truncated",
    "unable to open file",
    "unable to synchronously open file",
    "file signature not found",
    "bad magic",
)


def describe_load_error(error: BaseException) -> str | None:
    """A one-line explanation for load errors with a known cause, or None."""
    text = str(error)
    if "safe_mode" in text or "lambda" in text.lower() and "unsafe" in text.lower():
        return (
            "contains a Lambda layer with Python code, which safe mode refuses to load "
            "(pass --unsafe only if you trust this file)"
        )
    match = _UNKNOWN_CLASS.search(text)
    if match:
        name = match.group(1).rstrip(".")
        return (
            f"uses class {name!r}, which is not registered with Keras "
            "(pass --custom-objects FILE.py that defines and registers it)"
        )
    lowered = text.lower()
    if any(sign in lowered for sign in _CORRUPT_WEIGHTS):
        return f"has corrupt weights ({_first_line(error)})"
    if isinstance(error, (zipfile.BadZipFile, EOFError)):
        return f"is truncated or corrupt ({_first_line(error)})"
    return None


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0][:300]


# ----------------------------------------------------------------------------- writing


def default_output_path(input_path: str | os.PathLike[str]) -> Path:
    """`<stem>.normified.keras` beside the input."""
    input_path = Path(input_path)
    return input_path.with_name(f"{input_path.stem}.normified.keras")


def check_output_path(
    output: str | os.PathLike[str],
    *,
    force: bool = False,
    input_path: str | os.PathLike[str] | None = None,
) -> Path:
    """Refuse, before any work is done, an output that cannot or must not be written."""
    output = Path(output)
    if output.suffix not in (".keras", ".h5"):
        raise OutputError("output must end in .keras (or .h5 for the legacy format)", output)
    if input_path is not None and output.exists() and _same_file(output, input_path):
        raise OutputError("output is the input file; normify never overwrites its input", output)
    if output.exists() and output.is_dir():
        raise OutputError("output is a directory", output)
    if output.exists() and not force:
        raise OutputError("output already exists (pass --force to replace it)", output)
    parent = output.parent if str(output.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError("output folder does not exist", output)
    if not os.access(parent, os.W_OK):
        raise OutputError("output folder is not writable", output)
    return output


def _same_file(a: Path, b: str | os.PathLike[str]) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


@contextlib.contextmanager
def atomic_path(
    output: Path,
    *,
    mode: int | None = None,
    before_replace: Callable[[Path], None] | None = None,
) -> Iterator[Path]:
    """A temporary path beside `output` that replaces it only if the block succeeds (and
    `before_replace`, given the written file, does not raise). The file gets `mode`, or
    the mode a new file gets."""
    folder = output.parent if str(output.parent) else Path(".")
    handle, temporary = tempfile.mkstemp(
        prefix=f".{output.name}.", suffix=f".tmp{output.suffix}", dir=folder
    )
    os.close(handle)
    temporary_path = Path(temporary)
    try:
        yield temporary_path
        with open(temporary_path, "rb") as written:
            os.fsync(written.fileno())
        if before_replace is not None:
            before_replace(temporary_path)
        # mkstemp creates the file private (0600)
        os.chmod(temporary_path, mode if mode is not None else 0o666 & ~_current_umask())
        os.replace(temporary_path, output)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary_path.unlink()


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_model(model: Any, output: str | os.PathLike[str]) -> Path:
    """Save atomically: the output path holds either the old file or the complete new one."""
    output = Path(output)
    with atomic_path(output) as temporary:
        _keras_save(model, temporary)
    return output


def _keras_save(model: Any, path: Path) -> None:
    mend_saving_cache()
    with warnings.catch_warnings(), deep_recursion(count_live_layers(model)):
        warnings.simplefilter("ignore")
        model.save(path)


def save_in_place(
    model: Any,
    path: str | os.PathLike[str],
    *,
    backup: bool = True,
    safe_mode: bool = True,
    custom_objects: dict[str, Any] | None = None,
) -> Path | None:
    """Replace the model file at `path` with `model`, only once the new file is complete
    and loads. Keeps the previous file as `<path>.bak` unless `backup` is off.

    Returns the backup's path. On any failure the original file is untouched.
    """
    path = Path(path)
    backup_path = path.with_name(path.name + ".bak") if backup else None

    def check_then_back_up(written: Path) -> None:
        _check_loads(written, safe_mode, custom_objects)
        if backup_path is not None:
            with atomic_path(backup_path) as backup_temporary:
                shutil.copy2(path, backup_temporary)

    mode = path.stat().st_mode & 0o777
    with atomic_path(path, mode=mode, before_replace=check_then_back_up) as temporary:
        _keras_save(model, temporary)
    return backup_path


def _check_loads(path: Path, safe_mode: bool, custom_objects: dict[str, Any] | None) -> None:
    from normify.backend import keras

    mend_saving_cache()
    try:
        with warnings.catch_warnings(), deep_recursion(count_layers(read_config(path))):
            warnings.simplefilter("ignore")
            keras().saving.load_model(
                path, compile=False, safe_mode=safe_mode, custom_objects=custom_objects
            )
    except Exception as error:
        raise OutputError(
            f"the rewritten model does not load back ({_first_line(error)}); input left as it was",
            path,
        ) from None
