"""Loading models with Keras, every failure turned into one line.

A Keras 3 file is loaded by Keras's own loader. A file an older Keras wrote is built from
its translated config (`normify.formats`): the constructor arguments checked against
Keras 3, the model deserialized, its weights read through the translation's weight
rules, and its training configuration translated so the model comes back compiled.
Which way a file goes is decided by its origin, before anything is loaded.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import inspect
import os
import re
import sys
import tempfile
import warnings
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from normify.backend import deep_recursion
from normify.errors import ModelLoadError, NormifyError, first_line
from normify.files import KERAS, ModelFile, count_layers, read_model_file
from normify.formats import Origin, Translation
from normify.formats.base import Context
from normify.keras_internals import hdf5_config_strings_kept, mend_saving_cache
from normify.kinds import library_of


@dataclass
class LoadedModel:
    """A model loaded from a file, with what normify noticed while loading it."""

    model: Any
    path: Path
    format: str
    origin: Origin
    notices: list[str] = field(default_factory=list)


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
                f"importing custom objects failed: {type(error).__name__}: {first_line(error)}",
                file,
            ) from error
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
    source: str | os.PathLike[str] | ModelFile,
    *,
    safe_mode: bool = True,
    custom_objects: dict[str, Any] | None = None,
) -> LoadedModel:
    """Load a `.keras` or `.h5` model with Keras, turning every failure into one line.

    `source` is a path, or the `ModelFile` the caller has read already. A file an older
    Keras wrote is built from its translated config; every repair becomes a notice
    starting "repaired: ".
    """
    model_file = (
        source
        if isinstance(source, ModelFile)
        else read_model_file(source, frozenset(custom_objects or ()))
    )
    _require_state_in_file(model_file)
    _require_libraries(model_file)
    from normify.backend import keras

    keras_module = keras()
    with deep_recursion(count_layers(model_file.config)):
        if model_file.origin.legacy:
            return _load_translated(keras_module, model_file, safe_mode, custom_objects)
        return _load_keras3(keras_module, model_file, safe_mode, custom_objects)


# Layers whose vocabulary lives outside their variables: in a `.keras` file's assets, or
# in their config. An `.h5` file has no assets.
VOCABULARY_CLASSES = frozenset({"TextVectorization", "StringLookup", "IntegerLookup"})


def _require_libraries(model_file: ModelFile) -> None:
    """Refuse, before Keras tries, a file whose classes come from a library that is not
    installed (Keras would say it cannot locate the class)."""
    from normify.formats.base import walk_entries

    for entry in walk_entries(model_file.config):
        library = library_of(entry.get("module"))
        if library is not None and importlib.util.find_spec(library[0]) is None:
            config = entry["config"] if isinstance(entry["config"], dict) else {}
            name = config.get("name") or entry["class_name"]
            raise ModelLoadError(
                f"layer {name!r} ({entry['class_name']}) comes from {library[0]}, which is "
                f"not installed (pip install {library[1]})",
                model_file.path,
            )


def _require_state_in_file(model_file: ModelFile) -> None:
    """Refuse an `.h5` file whose lookup layers' vocabularies it does not hold: Keras
    loads it with empty vocabularies (every token out of vocabulary) and says nothing."""
    if model_file.format == KERAS:
        return
    from normify.formats.base import walk_entries

    for entry in walk_entries(model_file.config):
        if entry["class_name"] in VOCABULARY_CLASSES and isinstance(entry["config"], dict):
            if not entry["config"].get("vocabulary"):
                name = entry["config"].get("name") or entry["class_name"]
                raise ModelLoadError(
                    f"layer {name!r} ({entry['class_name']}): the file does not hold its "
                    "vocabulary (the .h5 format has no assets; Keras would load it empty, "
                    "so every token would be out of vocabulary); use the model's .keras file",
                    model_file.path,
                )


def count_live_layers(model: Any) -> int:
    """How many layers a live model holds, nested models included."""
    count, pending = 0, [model]
    while pending:
        layers = getattr(pending.pop(), "layers", None) or []
        count += len(layers)
        pending.extend(layers)
    return count


def _load_keras3(
    keras_module: Any, model_file: ModelFile, safe_mode: bool, custom_objects: Any
) -> LoadedModel:
    path = model_file.path
    notices = list(model_file.notices)

    def load(compile: bool) -> Any:
        mend_saving_cache()
        with (
            warnings.catch_warnings(),
            _keras_suffixed(path, model_file.format) as named,
            hdf5_config_strings_kept(),
        ):
            warnings.simplefilter("ignore")
            return keras_module.saving.load_model(
                named, custom_objects=custom_objects, compile=compile, safe_mode=safe_mode
            )

    try:
        model = load(compile=True)
    except Exception as error:
        message = describe_load_error(error)
        unknown = _UNKNOWN_CLASS.search(str(error))
        if message is not None and unknown is None:
            raise ModelLoadError(message, path) from error
        try:
            model = load(compile=False)
        except Exception:
            if message is not None:
                raise ModelLoadError(message, path) from error
            raise ModelLoadError(
                f"cannot be loaded: {_cause(model_file.config, error, custom_objects, safe_mode)}",
                path,
            ) from error
        # The model loads without its training configuration: what is unknown is a loss,
        # metric or optimizer, which a rewrite of the layers does not need.
        notices.append(uncompiled_notice(error))
    return LoadedModel(model, path, model_file.format, model_file.origin, notices)


def _load_translated(
    keras_module: Any, model_file: ModelFile, safe_mode: bool, custom_objects: Any
) -> LoadedModel:
    """Build a model an older Keras wrote from its translated config, with the weights
    its file holds."""
    from normify.formats import arguments, weights

    path = model_file.path
    custom_names = frozenset(custom_objects or ())
    try:
        translation = arguments.fit(model_file.translation, custom_names)
    except NormifyError as error:
        raise ModelLoadError(str(error), path) from error
    model = _deserialize(keras_module, translation, path, safe_mode, custom_objects)
    context = Context(translation.origin, custom_names)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if model_file.format == KERAS:
                # tf_keras writes model.weights.h5 in the layout Keras 3 reads
                with weights.archive_weights(path, context) as readable:
                    model.load_weights(str(readable))
                weights.apply_to_live(model, translation.weight_rules, context)
            else:
                import h5py

                with h5py.File(path, "r") as handle:
                    group = handle["model_weights"] if "model_weights" in handle else handle
                    weights.load(model, group, translation.weight_rules, context)
    except NormifyError as error:
        raise ModelLoadError(str(error), path) from error
    except Exception as error:
        message = describe_load_error(error) or f"its weights cannot be read ({first_line(error)})"
        raise ModelLoadError(message, path) from error
    notices = [*model_file.notices, *translation.notices]
    notices.extend(repair.notice for repair in context.repairs)
    training = (
        model_file.written.get("compile_config")
        if model_file.format == KERAS
        else model_file.training_config
    )
    notices.extend(_compile_translated(keras_module, model, training, custom_objects))
    return LoadedModel(model, path, model_file.format, model_file.origin, notices)


def _deserialize(
    keras_module: Any, translation: Translation, path: Path, safe_mode: bool, custom_objects: Any
) -> Any:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = keras_module.saving.deserialize_keras_object(
                # Keras takes keys out of the configs it reads
                copy.deepcopy(translation.config),
                custom_objects=custom_objects,
                safe_mode=safe_mode,
            )
    except Exception as error:
        message = describe_load_error(error)
        if message is None:
            cause = _cause(translation.config, error, custom_objects, safe_mode)
            message = f"cannot be loaded as a {translation.origin.describe()} model: {cause}"
        raise ModelLoadError(message, path) from error
    if not isinstance(model, keras_module.Model):
        raise ModelLoadError("holds a layer config, not a model", path)
    return model


def _compile_translated(
    keras_module: Any, model: Any, training: Any, custom_objects: dict[str, Any] | None
) -> list[str]:
    """Compile from the translated training config; the notices say how it went."""
    from normify.formats import training as training_configs

    if not training:
        return []
    try:
        compiled = training_configs.translate(training, custom_objects)
    except Exception as error:  # a malformed training config must not stop the load
        compiled = training_configs.CompileTranslation(
            None, reason=f"it is malformed: {first_line(error)}"
        )
    if compiled.config is None:
        return [
            f"the training configuration could not be translated ({compiled.reason}); "
            "the model was loaded uncompiled"
        ]
    scope = keras_module.saving.CustomObjectScope(custom_objects or {})
    try:
        with warnings.catch_warnings(), scope:
            warnings.simplefilter("ignore")
            model.compile_from_config(compiled.config)
    except Exception as error:
        return [
            f"the training configuration could not be restored ({first_line(error)}); "
            "the model was loaded uncompiled"
        ]
    return [repair.notice for repair in compiled.repairs]


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


def uncompiled_notice(error: BaseException) -> str:
    """Why a model whose layers load came without its training configuration."""
    unknown = _UNKNOWN_CLASS.search(str(error))
    reason = (
        f"it uses {unknown.group(1).rstrip('.')!r}, which is not registered: pass "
        "--custom-objects FILE.py that defines and registers it to keep it"
        if unknown is not None
        else first_line(error)
    )
    return (
        f"the training configuration could not be restored ({reason}); "
        "the model was loaded uncompiled"
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
    if _is_foreign_bytecode(error):
        return None  # the layer that holds the code is found by building layer by layer
    lowered = text.lower()
    if any(sign in lowered for sign in _CORRUPT_WEIGHTS):
        return f"has corrupt weights ({first_line(error)})"
    if isinstance(error, (zipfile.BadZipFile, EOFError)):
        return f"is truncated or corrupt ({first_line(error)})"
    return None


def load_failure(
    config: dict[str, Any], error: BaseException, custom_objects: Any, safe_mode: bool
) -> str:
    """What a user is told when Keras cannot build a model from `config`: the known
    cause, or the first layer that cannot be built and why."""
    known = describe_load_error(error)
    if known is not None:
        return known
    return f"cannot be loaded: {_cause(config, error, custom_objects, safe_mode)}"


def _cause(
    config: dict[str, Any], error: BaseException, custom_objects: Any, safe_mode: bool
) -> str:
    """The real cause of a failed load, in one line: the first layer that cannot be built
    on its own and why, or else the innermost error Keras wrapped."""
    failing = _first_failing_layer(config, custom_objects, safe_mode)
    if failing is not None:
        return failing
    return _unwrapped(error)


def _unwrapped(error: BaseException) -> str:
    """The innermost message Keras wrapped (each wrapper ends with "Exception
    encountered: <its cause>"), along the chain of causes."""
    while True:
        text = str(error)
        marker = text.rfind("Exception encountered:")
        if marker >= 0:
            return first_line(ValueError(text[marker + len("Exception encountered:") :].strip()))
        inner = error.__cause__ or error.__context__
        if inner is None or "could not be deserialized" not in text:
            return first_line(error)
        error = inner


def _first_failing_layer(
    config: dict[str, Any], custom_objects: Any, safe_mode: bool
) -> str | None:
    import keras

    from normify.formats.base import is_entry, is_model_entry, layer_name, layers_of

    # HDF5 configs name Keras' classes without their module, as in Keras' own HDF5 loader.
    known = {name: value for name, value in vars(keras.layers).items() if isinstance(value, type)}
    known.update(custom_objects or {})
    pending = [("", config)]
    while pending:
        prefix, model = pending.pop(0)
        for entry in layers_of(model) or []:
            if not is_entry(entry):
                continue
            path = prefix + layer_name(entry)
            if is_model_entry(entry):
                pending.append((f"{path}/", entry))
                continue
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    keras.saving.deserialize_keras_object(
                        entry, custom_objects=known, safe_mode=safe_mode
                    )
            except Exception as error:
                cause = _unwrapped(error)
                if _is_foreign_bytecode(error):
                    version = "{}.{}".format(*sys.version_info[:2])
                    cause = (
                        f"its Python code was compiled by another Python version, or is "
                        f"corrupt, and Python {version} cannot read it ({cause}; normify "
                        "recompiles old code only when it is plain arithmetic on the input)"
                    )
                return f"layer {path!r} ({entry['class_name']}): {cause}"
    return None


# What `marshal.loads` says of a code object another Python version wrote (Keras 2
# stored a Lambda's function as marshalled bytecode).
_MARSHAL_ERRORS = (
    "bad marshal data",
    "EOF read where object expected",
    "EOF read where not expected",
    "marshal data too short",
)


def _is_foreign_bytecode(error: BaseException) -> bool:
    chain: BaseException | None = error
    while chain is not None:
        if any(sign in str(chain) for sign in _MARSHAL_ERRORS):
            return True
        chain = chain.__cause__ or chain.__context__
    return False
