"""Importing Keras quietly.

TensorFlow writes absl, oneDNN and CPU-feature notices straight to file descriptor 2
when it is imported, whatever TF_CPP_MIN_LOG_LEVEL says. A command-line tool whose
errors are one line cannot let them through, so the import runs with descriptor 2
pointed at a temporary file, which is replayed only if the import fails.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from types import ModuleType

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
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    _keras = _import_with_quiet_stderr()
    return _keras


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


# The object types whose saving skip sets Keras recomputes for every object it walks.
_SKIPSET_TYPES = ("Layer", "Functional", "Sequential", "Operation")


def mend_saving_cache() -> None:
    """Let Keras reuse the attribute skip sets it computes when saving and loading.

    For every layer it saves or loads, Keras 3.15's `saving_lib.get_attr_skipset`
    builds a throwaway `Layer()` and lists its attributes (about 1.5 ms): it stores the
    result under `saving_attr_skipset_<type>` but looks it up under
    `saving_attr_skiplist_<type>`, so the cache never hits (about 0.3 s of a DenseNet121's
    load, as much of its save). This stores the very value it computes under the key it looks
    up. Idempotent; does nothing on a Keras without that function.
    """
    try:
        from keras.src.backend.common import global_state
        from keras.src.saving.saving_lib import get_attr_skipset
    except ImportError:
        return
    for obj_type in _SKIPSET_TYPES:
        key = f"saving_attr_skiplist_{obj_type}"
        if global_state.get_global_attribute(key, None) is None:
            try:
                skipset = get_attr_skipset(obj_type)
            except Exception:
                return
            global_state.set_global_attribute(key, skipset)
