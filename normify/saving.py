"""Writing models: atomically, and only once the written file has been read back.

A rewrite is written to a temporary file beside the output and renamed into place only
after the file is checked: it must be a complete model file, and when the model holds
state that its variables do not (vocabularies and lookup tables in assets), or came from
a file an older Keras wrote, it must load back in Keras with every weight and that state
as they were. Otherwise nothing is replaced and the error names the layer.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from normify.backend import deep_recursion
from normify.errors import NormifyError, OutputError, first_line
from normify.files import count_layers, read_model_file
from normify.keras_internals import mend_saving_cache
from normify.loading import count_live_layers


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


def save_model(
    model: Any,
    output: str | os.PathLike[str],
    *,
    reload: bool | None = None,
    safe_mode: bool = True,
    custom_objects: dict[str, Any] | None = None,
) -> Path:
    """Save atomically: the output path holds either the old file or the complete new
    one, checked (`check_written`) before it replaces anything."""
    output = Path(output)

    def check(written: Path) -> None:
        check_written(
            written, model, reload=reload, safe_mode=safe_mode, custom_objects=custom_objects
        )

    with atomic_path(output, before_replace=check) as temporary:
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
        check_written(
            written, model, reload=True, safe_mode=safe_mode, custom_objects=custom_objects
        )
        if backup_path is not None:
            with atomic_path(backup_path) as backup_temporary:
                shutil.copy2(path, backup_temporary)

    mode = path.stat().st_mode & 0o777
    with atomic_path(path, mode=mode, before_replace=check_then_back_up) as temporary:
        _keras_save(model, temporary)
    return backup_path


# Layers whose state lives in assets or in their config, not in their variables.
STATEFUL_CLASSES = frozenset({"TextVectorization", "StringLookup", "IntegerLookup", "Hashing"})


def check_written(
    path: Path,
    model: Any,
    *,
    reload: bool | None = None,
    safe_mode: bool = True,
    custom_objects: dict[str, Any] | None = None,
) -> None:
    """Refuse a written file that is not a complete model file, or, when `reload` (by
    default: when the model holds state outside its variables), one that does not load
    back with the same weights and state."""
    try:
        read_model_file(path)
    except NormifyError as error:
        raise OutputError(f"the written file is not a complete model ({error})", path) from error
    stateful = _stateful_layers(model)
    if reload is None:
        reload = bool(stateful)
    if not reload:
        return
    reloaded = _reload(path, safe_mode, custom_objects)
    _compare_state(model, reloaded, stateful, path)


def _stateful_layers(model: Any) -> dict[str, Any]:
    found = {}
    for layer_path, layer in _layers_by_path(model).items():
        if type(layer).__name__ in STATEFUL_CLASSES:
            found[layer_path] = layer
    return found


def _layers_by_path(model: Any, prefix: str = "") -> dict[str, Any]:
    found = {}
    for layer in getattr(model, "layers", []):
        path = prefix + layer.name
        found[path] = layer
        if getattr(layer, "layers", None) is not None:
            found.update(_layers_by_path(layer, f"{path}/"))
    return found


def _reload(path: Path, safe_mode: bool, custom_objects: dict[str, Any] | None) -> Any:
    from normify.backend import keras

    mend_saving_cache()
    try:
        with warnings.catch_warnings(), deep_recursion(count_layers(read_model_file(path).config)):
            warnings.simplefilter("ignore")
            return keras().saving.load_model(
                path, compile=False, safe_mode=safe_mode, custom_objects=custom_objects
            )
    except Exception as error:
        raise OutputError(
            f"the rewritten model does not load back ({_failed_object(error)}); nothing was "
            "replaced",
            path,
        ) from error


_KERAS_OBJECT = re.compile(r"<(\w+) name=([^,>]+)")


def _failed_object(error: BaseException) -> str:
    """Keras's load error, the layer it names first (Keras lists the objects whose state
    it could not restore as `<Class name=..., built=...>`)."""
    match = _KERAS_OBJECT.search(str(error))
    if match is None:
        return first_line(error)
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    cause = lines[1] if len(lines) > 1 and not lines[1].startswith("List of") else lines[0]
    return f"layer {match.group(2)!r} ({match.group(1)}): {cause[:200]}"


def _compare_state(model: Any, reloaded: Any, stateful: dict[str, Any], path: Path) -> None:
    import numpy as np
    from keras import ops

    again = _layers_by_path(reloaded)
    for layer_path, layer in _layers_by_path(model).items():
        other = again.get(layer_path)
        if other is None:
            raise OutputError(f"layer {layer_path!r} is missing from the written model", path)
        if layer_path in stateful and _vocabulary(layer) != _vocabulary(other):
            raise OutputError(
                f"layer {layer_path!r} ({type(layer).__name__}): its vocabulary did not "
                "survive the save; nothing was replaced",
                path,
            )
        if getattr(layer, "layers", None) is not None:
            continue  # a nested model's variables are its layers'
        mine, theirs = layer.weights, other.weights
        if len(mine) != len(theirs) or any(
            not np.array_equal(ops.convert_to_numpy(a), ops.convert_to_numpy(b), equal_nan=True)
            for a, b in zip(mine, theirs, strict=False)
        ):
            raise OutputError(
                f"layer {layer_path!r}: its weights did not survive the save; nothing was replaced",
                path,
            )


def _vocabulary(layer: Any) -> Any:
    getter = getattr(layer, "get_vocabulary", None)
    if getter is None:
        config = layer.get_config()
        return config.get("salt"), config.get("num_bins")
    try:
        return list(getter())
    except Exception as error:  # a lookup layer that was never adapted
        return f"unavailable: {first_line(error)}"
