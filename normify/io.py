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
import os
import re
import shutil
import sys
import tempfile
import warnings
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise ModelLoadError("is truncated or corrupt (not a readable zip archive)", path) from None
    except OSError as error:
        raise ModelLoadError(f"cannot be read ({error})", path) from None
    with archive:
        names = set(archive.namelist())
        if "config.json" not in names:
            raise ModelLoadError("is a zip archive without config.json (not a .keras model)", path)
        if not names & {"model.weights.h5", "model.weights.npz"}:
            raise ModelLoadError("has no weights (model.weights.h5 is missing)", path)
        info = archive.getinfo("config.json")
        if info.file_size > MAX_CONFIG_BYTES or info.file_size > 1000 * max(info.compress_size, 1):
            raise ModelLoadError(
                f"config.json declares {info.file_size} bytes; refusing to read it", path
            )
        try:
            raw = archive.read("config.json")
        except (zipfile.BadZipFile, OSError, EOFError, zipfile.LargeZipFile) as error:
            raise ModelLoadError(f"config.json cannot be read ({error})", path) from None
        except Exception as error:  # zlib.error and friends on corrupt members
            raise ModelLoadError(f"config.json is corrupt ({error})", path) from None
    return _parse_config_json(raw, path, "config.json")


def _read_h5_config(path: Path) -> dict[str, Any]:
    import h5py

    try:
        with h5py.File(path, "r") as handle:
            raw = handle.attrs.get("model_config")
            weights_only = "layer_names" in handle.attrs or "vars" in handle or "layers" in handle
    except OSError as error:
        raise ModelLoadError(f"is not a readable HDF5 file ({_first_line(error)})", path) from None
    if raw is None:
        if weights_only:
            raise ModelLoadError(
                "is a weights-only HDF5 file with no model config; pass the full model file",
                path,
            )
        raise ModelLoadError("is an HDF5 file but not a Keras model (no model_config)", path)
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", errors="replace")
    return _parse_config_json(raw, path, "model_config")


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
) -> LoadedModel:
    """Load a `.keras` or `.h5` model with Keras, turning every failure into one line."""
    path = Path(path)
    file_format = detect_format(path)
    read_config(path)  # checks the archive and config before Keras sees them
    from normify.backend import keras

    keras_module = keras()
    notices: list[str] = []
    try:
        model = _keras_load(keras_module, path, safe_mode, custom_objects, compile=True)
    except ModelLoadError:
        raise
    except Exception as error:
        message = describe_load_error(error)
        if message is not None:
            raise ModelLoadError(message, path) from None
        try:
            model = _keras_load(keras_module, path, safe_mode, custom_objects, compile=False)
        except Exception:
            raise ModelLoadError(f"cannot be loaded: {_first_line(error)}", path) from None
        notices.append(
            f"the training configuration could not be restored ({_first_line(error)}); "
            "the model was loaded uncompiled"
        )
    return LoadedModel(model=model, path=path, format=file_format, notices=notices)


def _keras_load(
    keras_module: Any,
    path: Path,
    safe_mode: bool,
    custom_objects: dict[str, Any] | None,
    compile: bool,
) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return keras_module.saving.load_model(
            path, custom_objects=custom_objects, compile=compile, safe_mode=safe_mode
        )


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
def atomic_path(output: Path) -> Iterator[Path]:
    """A temporary path beside `output` that replaces it only if the block succeeds."""
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
        # mkstemp creates the file private (0600); give it the mode a new file gets.
        os.chmod(temporary_path, 0o666 & ~_current_umask())
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
    with atomic_path(output) as temporary, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.save(temporary)
    return output


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
    folder = path.parent if str(path.parent) else Path(".")
    handle, temporary = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=folder
    )
    os.close(handle)
    temporary_path = Path(temporary)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.save(temporary_path)
        with open(temporary_path, "rb") as written:
            os.fsync(written.fileno())
        _check_loads(temporary_path, safe_mode, custom_objects)
        os.chmod(temporary_path, path.stat().st_mode & 0o777)
        if backup_path is not None:
            with atomic_path(backup_path) as backup_temporary:
                shutil.copy2(path, backup_temporary)
        os.replace(temporary_path, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary_path.unlink()
    return backup_path


def _check_loads(path: Path, safe_mode: bool, custom_objects: dict[str, Any] | None) -> None:
    from normify.backend import keras

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            keras().saving.load_model(
                path, compile=False, safe_mode=safe_mode, custom_objects=custom_objects
            )
    except Exception as error:
        raise OutputError(
            f"the rewritten model does not load back ({_first_line(error)}); input left as it was",
            path,
        ) from None
