"""Reading model files without a backend: what a file is, its config, which Keras wrote
it, and that config in Keras 3's language.

Only `zipfile`, `json` and `h5py` are used, so `normify audit` and every `--dry-run`
answer without importing Keras, TensorFlow or NumPy. A file is checked before anything
reads it into memory (sizes the archive cannot back, configs declaring more weights than
the file holds, HDF5 files that hang the HDF5 library), and every problem is one line
naming the file and the cause.
"""

from __future__ import annotations

import json
import math
import mmap
import os
import struct
import sys
import zipfile
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from normify import formats, hdf5
from normify.errors import ModelLoadError, NormifyError, first_line
from normify.formats import Origin, Translation

KERAS = "keras"
H5 = "h5"

ZIP_MAGIC = b"PK\x03\x04"
EMPTY_ZIP_MAGIC = b"PK\x05\x06"
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
SUFFIXES = {KERAS: (".keras",), H5: (".h5", ".hdf5")}

# A config.json larger than this is not a model config but an attack or an accident.
MAX_CONFIG_BYTES = 256 * 1024 * 1024


@dataclass
class ModelFile:
    """A model file as read: its format (by content), its config as written, which Keras
    wrote it, that config translated for Keras 3, and what was noticed on the way."""

    path: Path
    format: str
    written: dict[str, Any]
    translation: Translation
    training_config: Any = None  # a Keras 2 `.h5` file's training_config, parsed
    notices: list[str] = field(default_factory=list)
    parameters: int | None = None  # how many weights (elements) the file stores

    @property
    def origin(self) -> Origin:
        return self.translation.origin

    @property
    def config(self) -> dict[str, Any]:
        """The config in Keras 3's language."""
        return self.translation.config


def read_model_file(
    path: str | os.PathLike[str], custom_names: frozenset[str] = frozenset()
) -> ModelFile:
    """Read and check a model file, and translate its config (see `normify.formats`).
    `custom_names` are the user's own classes, whose configs are left alone."""
    path = Path(path)
    file_format = detect_format(path)
    notices = []
    if (
        path.suffix
        and path.suffix not in SUFFIXES[file_format]
        and path.suffix in (".keras", ".h5", ".hdf5")
    ):
        actual = "an HDF5 (.h5)" if file_format == H5 else "a .keras (zip)"
        notices.append(f"{path.name} is {actual} file despite its name; read it by its content")
    if file_format == KERAS:
        written, attributes = _read_keras_file(path)
    else:
        written, attributes = _read_h5_file(path)
    origin = formats.origin_of(
        attributes.get("keras_version"),
        attributes.get("backend"),
        written,
        keras1_weights=attributes.get("keras1_weights", False),
    )
    try:
        translation = formats.translate(written, origin, custom_names)
    except ModelLoadError as error:
        if error.path is not None:
            raise
        raise type(error)(str(error), path) from error
    _check_stored_weights(translation, attributes, path)
    training = _parse_training_config(attributes.get("training_config"))
    return ModelFile(
        path, file_format, written, translation, training, notices, _stored_count(attributes)
    )


def _stored_count(attributes: dict[str, Any]) -> int | None:
    """How many weight elements the file's weights (read by their shapes) hold."""
    if attributes.get("archive_weights") is not None:
        shapes = [
            shape
            for key, shape in attributes["archive_weights"].items()
            if "/vars/" in key and not key.startswith("optimizer")
        ]
    elif attributes.get("weights") is not None:
        shapes = [
            shape
            for pairs in attributes["weights"].values()
            for _, shape in pairs
            if shape is not None
        ]
    else:
        return None
    total = 0
    for shape in shapes:
        count = 1
        for dim in shape:
            count *= dim
        total += count
    return total


def _check_stored_weights(translation: Translation, attributes: dict[str, Any], path: Path) -> None:
    """Refuse a file whose stored weights do not fit its config, naming the first layer
    (the shapes only, no weight is read)."""
    from normify import weightshapes

    origin = translation.origin
    problem = None
    if attributes.get("weights") is not None and not origin.keras1_weights:
        problem = weightshapes.check_legacy(
            translation.config, attributes["weights"], set(translation.weight_rules)
        )
    elif attributes.get("archive_weights") is not None and not origin.legacy:
        problem = weightshapes.check_archive(translation.config, attributes["archive_weights"])
    if problem is not None:
        raise ModelLoadError(f"its weights do not fit its config: {problem}", path)


def read_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The serialized model config `{"class_name": ..., "config": ...}` of a model file,
    as the file has it."""
    path = Path(path)
    if detect_format(path) == KERAS:
        return _read_keras_file(path)[0]
    return _read_h5_file(path)[0]


def _parse_training_config(raw: Any) -> Any:
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw  # not a mapping: the training translation says so


# ---------------------------------------------------------------------- file inspection


def detect_format(path: str | os.PathLike[str]) -> str:
    """`keras` or `h5` by the file's content (whatever its name says), after checking the
    path is a readable model file."""
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
        raise ModelLoadError(f"cannot be read ({error.strerror})", path) from error
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


def _read_keras_file(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    archive = _open_zip(path)
    with archive:
        listed = archive.namelist()
        names = set(listed)
        if len(names) != len(listed):
            twice = sorted(name for name, count in Counter(listed).items() if count > 1)
            # Readers disagree on which of two same-named members they read (Keras and
            # zipfile take the last), so such an archive can show one reader other
            # weights or config than another: a file made to mislead.
            raise ModelLoadError(
                f"is a zip archive with two members named {twice[0]!r}; refusing an "
                "archive that different readers read differently",
                path,
            )
        if "config.json" not in names:
            raise ModelLoadError("is a zip archive without config.json (not a .keras model)", path)
        weights = [archive.getinfo(name) for name in WEIGHTS_MEMBERS if name in names]
        if not weights:
            raise ModelLoadError("has no weights (model.weights.h5 is missing)", path)
        size = path.stat().st_size
        for info in (archive.getinfo("config.json"), *weights):
            check_member_size(info, size, path)
        raw = _read_member(archive, "config.json", path)
        metadata = _metadata(archive, names)
        stored = _archive_weight_shapes(archive, weights[0], path)
    config = _parse_config_json(raw, path, "config.json")
    _check_declared_sizes(config, sum(info.file_size for info in weights), path, "config.json")
    # a tf_keras `.keras` file keeps its compile config in the model config
    return config, {
        "keras_version": metadata.get("keras_version"),
        "training_config": None,
        "archive_weights": stored,
    }


def _archive_weight_shapes(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path
) -> dict[str, tuple[int, ...]] | None:
    """The shapes of the datasets in model.weights.h5, read in place when it is stored
    uncompressed (as Keras stores it); None when they cannot be read this way."""
    if info.filename != "model.weights.h5" or info.compress_type != zipfile.ZIP_STORED:
        return None
    try:
        with (
            open(path, "rb") as handle,
            mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as view,
        ):
            header = view[info.header_offset : info.header_offset + 30]
            if len(header) < 30 or header[:4] != b"PK\x03\x04":
                return None
            name_length, extra_length = struct.unpack("<HH", header[26:30])
            start = info.header_offset + 30 + name_length + extra_length
            return dict(hdf5.File(hdf5.Window(view, start, info.file_size)).datasets("/"))
    except hdf5.Unsupported:
        return None
    except (hdf5.Corrupt, KeyError) as error:
        raise ModelLoadError(f"has corrupt weights (model.weights.h5: {error})", path) from error
    except (OSError, ValueError):
        return None


def _metadata(archive: zipfile.ZipFile, names: set[str]) -> dict[str, Any]:
    """metadata.json, where the archive has a readable one (its absence is no reason to
    refuse the file)."""
    if "metadata.json" not in names or archive.getinfo("metadata.json").file_size > 1 << 20:
        return {}
    try:
        metadata = json.loads(archive.read("metadata.json"))
    except Exception:  # a corrupt or mangled member: the version is unknown, nothing more
        return {}
    return metadata if isinstance(metadata, dict) else {}


def _read_h5_file(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    found: dict[str, Any] | None
    try:
        found = _h5_metadata(path)
    except hdf5.Unsupported:  # a newer HDF5 layout than Keras writes: the HDF5 library
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
    return config, found


WEIGHTS_MEMBERS = ("model.weights.h5", "model.weights.npz")

# A member declaring more than this, and more than MAX_EXPANSION times what it stores, is
# a decompression bomb: real weights and configs compress far less (Keras stores them).
BOMB_FLOOR_BYTES = 64 * 1024 * 1024
MAX_EXPANSION = 100


def _open_zip(path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except OSError as error:
        raise ModelLoadError(f"cannot be read ({error})", path) from error
    except Exception as cause:  # BadZipFile; struct/Unicode/Value errors on a mangled directory
        raise ModelLoadError(
            "is truncated or corrupt (not a readable zip archive)", path
        ) from cause


def check_member_size(info: zipfile.ZipInfo, archive_size: int, path: Path) -> None:
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
        raise ModelLoadError(f"{name} cannot be read ({first_line(error)})", path) from error
    except Exception as error:  # zlib.error, encrypted or unsupported compression, ...
        raise ModelLoadError(f"{name} is corrupt ({first_line(error)})", path) from error


def _h5_metadata(path: Path) -> dict[str, Any]:
    """What `_h5_attributes` reads, read by `normify.hdf5` (pure Python, no h5py), with
    the shapes of the stored weights (`weights`: layer -> [(weight name, shape)])."""
    try:
        with (
            open(path, "rb") as handle,
            mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as view,
        ):
            return _metadata_of(hdf5.File(view))
    except hdf5.Corrupt as error:
        return {"error": str(error)}
    except (OSError, ValueError) as error:  # an unreadable or empty file
        return {"error": first_line(error)}


def _metadata_of(file: hdf5.File) -> dict[str, Any]:
    root = file.node("/")
    attrs = root.attributes
    group = root.members.get("model_weights")
    weights_group = file.node("model_weights") if group is not None else None

    def text(value: Any) -> Any:
        return value if value is None or isinstance(value, str) else False

    return {
        "config": text(attrs.get("model_config")),
        "weights_only": "layer_names" in attrs
        or "vars" in root.members
        or "layers" in root.members,
        "keras_version": text(attrs.get("keras_version")) or None,
        "backend": text(attrs.get("backend")) or None,
        "training_config": text(attrs.get("training_config")) or None,
        "keras1_weights": weights_group is not None
        and "keras_version" not in weights_group.attributes,
        "weights": _stored_weights(file, weights_group) if weights_group is not None else None,
    }


def _stored_weights(
    file: hdf5.File, group: hdf5.Node
) -> dict[str, list[tuple[str, tuple[int, ...] | None]]]:
    """Each stored layer's weights (Keras 2's legacy layout): name and shape (None when
    the file lacks the dataset), in order."""
    names = group.attributes.get("layer_names") or []
    stored: dict[str, list[tuple[str, tuple[int, ...] | None]]] = {}
    for name in names if isinstance(names, list) else []:
        if name not in group.members:
            continue
        layer = file._node(group.members[name])
        weight_names = layer.attributes.get("weight_names") or []
        shapes: list[tuple[str, tuple[int, ...] | None]] = []
        for weight in weight_names if isinstance(weight_names, list) else []:
            node = layer
            found = True
            for part in weight.split("/"):
                if part not in node.members:
                    found = False
                    break
                node = file._node(node.members[part])
            shapes.append((weight, node.shape if found else None))
        stored[name] = shapes
    return stored


# The HDF5 C library can loop forever on a corrupted file (a flipped byte in the global
# heap of a legacy .h5 hangs `attrs["model_config"]`), and a call into it cannot be
# interrupted from Python. So the attributes are read by a child interpreter with a
# time limit: a hostile file costs seconds, not forever (and the child ~0.1 s).
H5_READ_SECONDS = 15.0


def _h5_attributes(path: str) -> dict[str, Any]:
    """The `model_config` attribute (None when absent; JSON text when a string), whether
    the file looks like a weights-only file, the Keras version and backend it records,
    its training_config, and whether its weights are Keras 1's (their group records no
    keras_version); or `error`: what h5py said."""
    import h5py

    def text(value: Any) -> Any:
        if isinstance(value, bytes):
            value = value.decode("utf-8", errors="replace")
        return value if value is None or isinstance(value, str) else False

    try:
        with h5py.File(path, "r") as handle:
            attrs = handle.attrs
            raw = attrs.get("model_config")
            weights_only = "layer_names" in attrs or "vars" in handle or "layers" in handle
            group = handle.get("model_weights")
            keras1 = group is not None and "keras_version" not in group.attrs
            found = {
                "config": text(raw),
                "weights_only": bool(weights_only),
                "keras_version": text(attrs.get("keras_version")) or None,
                "backend": text(attrs.get("backend")) or None,
                "training_config": text(attrs.get("training_config")) or None,
                "keras1_weights": bool(keras1),
            }
    except Exception as error:  # OSError mostly; a mangled file can raise anything
        return {"error": (str(error).strip() or type(error).__name__).splitlines()[0][:300]}
    return found


def _h5_child_code() -> str:
    # the function's own source: the child imports h5py, not all of normify
    import inspect

    lines = ["import json, sys", "from typing import Any", inspect.getsource(_h5_attributes)]
    return "\n".join([*lines, "json.dump(_h5_attributes(sys.argv[1]), sys.stdout)"])


def _h5_attributes_in_child(path: Path) -> dict[str, Any] | None:
    """`_h5_attributes` run in a child interpreter, or None when none can run it."""
    import subprocess  # only for a file of a newer HDF5 layout than Keras writes

    try:
        done = subprocess.run(
            [sys.executable, "-c", _h5_child_code(), str(path)],
            capture_output=True,
            timeout=H5_READ_SECONDS,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as cause:
        raise ModelLoadError(
            f"is not a readable HDF5 file (the HDF5 library did not finish reading it in "
            f"{H5_READ_SECONDS:.0f} s; the file is corrupt)",
            path,
        ) from cause
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
        raise ModelLoadError(f"{what} is not valid JSON ({first_line(error)})", path) from error
    if not isinstance(config, dict) or not isinstance(config.get("class_name"), str):
        raise ModelLoadError(f"{what} does not describe a model (no class_name)", path)
    # Keras 2.0 to 2.2 saved a Sequential's config as the bare list of its layers
    if not isinstance(config.get("config"), (dict, list)):
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
# the settings that size a layer's weights (`_declared_weights`): a config with none of
# them declares at most one weight
WEIGHT_KEYS = frozenset(
    ("units", "kernel_size", "filters", "depth_multiplier", "input_dim", "output_dim")
    + ("num_heads", "key_dim")
)


def _check_declared_sizes(
    config: dict[str, Any], weights_bytes: int, path: Path, what: str
) -> None:
    budget = max(2 * weights_bytes, MIN_WEIGHT_BUDGET)
    for entry in _serialized_objects(config):
        name = _entry_name(entry)
        declared, how = (
            _declared_weights(entry)
            if _is_builtin(entry) and not WEIGHT_KEYS.isdisjoint(entry["config"])
            else (0, "")
        )
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
            shape = place.get(key)
            if shape is None:
                continue
            for dimension in _shape_leaves(shape):
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


MODEL_SUFFIXES = (".keras", ".h5", ".hdf5")


def find_models(patterns: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """The model files named by `patterns`: files as they are, folders searched for
    `.keras` and `.h5` files (recursively), and glob patterns (`models/**/*.keras`)
    expanded. Sorted within each pattern, duplicates dropped. A pattern that names
    nothing is refused with one line naming it."""
    import glob

    found: list[Path] = []
    for pattern in patterns:
        text = os.fspath(pattern)
        path = Path(text)
        if path.is_dir():
            matches = sorted(
                p for p in path.rglob("*") if p.suffix.lower() in MODEL_SUFFIXES and p.is_file()
            )
            if not matches:
                raise NormifyError("folder holds no .keras or .h5 model", path)
        elif glob.has_magic(text):
            matches = sorted(Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file())
            if not matches:
                raise NormifyError(f"no model file matches {text!r}")
        else:
            matches = [path]
        found.extend(match for match in matches if match not in found)
    return found
