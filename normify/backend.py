"""Importing Keras quietly.

TensorFlow writes absl, oneDNN and CPU-feature notices straight to file descriptor 2
when it is imported, whatever TF_CPP_MIN_LOG_LEVEL says. A command-line tool whose
errors are one line cannot let them through, so the import runs with descriptor 2
pointed at a temporary file, which is replayed only if the import fails.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from types import ModuleType

from normify.errors import NormifyError

_keras: ModuleType | None = None


def keras() -> ModuleType:
    """Return the `keras` module, importing it (and its backend) quietly on first use."""
    global _keras
    if _keras is not None:
        return _keras
    if "keras" in sys.modules:
        import keras as already_imported

        _keras = already_imported
        return _keras
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    backend = _choose_backend()
    if importlib.util.find_spec(_BACKEND_MODULES.get(backend, backend)) is None:
        raise MissingBackendError(
            f"the Keras backend {backend!r} is not installed: "
            f"pip install 'normify[{backend}]' (or set KERAS_BACKEND to an installed one)"
        )
    _keras = _import_with_quiet_stderr()
    return _keras


# Keras backend name -> the module that provides it, in the order tried when none is set.
_BACKEND_MODULES = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}


class MissingBackendError(NormifyError):
    """No Keras backend is installed for a command that runs a model."""


def _choose_backend() -> str:
    """The backend Keras will use: KERAS_BACKEND, else the one in keras.json, else the
    first installed of TensorFlow, JAX and PyTorch (Keras itself would insist on
    TensorFlow), which is then written to KERAS_BACKEND for Keras to read."""
    chosen = os.environ.get("KERAS_BACKEND") or _configured_backend()
    if chosen:
        return chosen
    for backend, module in _BACKEND_MODULES.items():
        if importlib.util.find_spec(module) is not None:
            os.environ["KERAS_BACKEND"] = backend
            return backend
    raise MissingBackendError(
        "no Keras backend is installed: pip install 'normify[tensorflow]' "
        "(or 'normify[jax]', 'normify[torch]')"
    )


def _configured_backend() -> str | None:
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    try:
        with open(os.path.join(home, "keras.json"), encoding="utf-8") as file:
            configured = json.load(file).get("backend")
    except (OSError, ValueError, AttributeError):
        return None
    return configured if isinstance(configured, str) else None


def _import_with_quiet_stderr() -> ModuleType:
    sys.stderr.flush()
    saved_fd = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            import keras as imported

            _silence_absl()
        except BaseException:
            os.dup2(saved_fd, 2)
            capture.seek(0)
            sys.stderr.write(capture.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved_fd, 2)
            os.close(saved_fd)
    return imported


def _silence_absl() -> None:
    # Keras logs its own notices (for example the legacy-HDF5 save warning) through absl.
    try:
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.ERROR)
    except ImportError:
        pass
    import logging

    logging.getLogger("absl").setLevel(logging.ERROR)
    logging.getLogger("tensorflow").setLevel(logging.ERROR)


@contextlib.contextmanager
def deep_recursion(layers: int) -> Iterator[None]:
    """Room for Keras to walk a model of `layers` layers.

    Keras builds a functional graph recursively, about one Python call per chained layer,
    so a model of a little over 1000 chained layers exceeds Python's default limit
    (RecursionError) when it is loaded or rebuilt. The limit is raised for the duration
    of such a Keras call only, in proportion to a model normify has already read, never
    around parsing untrusted input (where C recursion would then overflow the stack).
    """
    needed = 1000 + 10 * layers
    previous = sys.getrecursionlimit()
    if needed > previous:
        sys.setrecursionlimit(needed)
    try:
        yield
    finally:
        sys.setrecursionlimit(previous)
