"""Register normify's Keras classes as soon as Keras is imported, and not before.

A model containing `normify.cells` layers names them `normify>LayerNormLSTM` etc., and
`keras.saving.load_model` finds them only if they have been registered, which happens when
`normify.cells` is imported. But `import normify` must not import Keras (it costs seconds,
and most commands never need it). So `import normify` calls
`register_cells_when_keras_loads()`: if Keras is already imported, `normify.cells` is
imported at once; otherwise a `sys.meta_path` finder waits for the top-level `keras`
module, wraps its loader, and imports `normify.cells` right after `keras` has finished
executing. The finder then removes itself and gives the module its real loader back.

Nothing here imports Keras, and a missing Keras is not an error: the finder then finds
nothing, the import fails as it would have without it, and the finder stays in place.
"""

from __future__ import annotations

import importlib
import sys
import warnings
from types import ModuleType
from typing import Any

_KERAS = "keras"
_CELLS = "normify.cells"


def _import_cells() -> None:
    # A failure here must not break the caller's `import keras` (or `import normify`):
    # only models using normify's cells are affected, so say so and carry on.
    try:
        importlib.import_module(_CELLS)
    except Exception as error:  # noqa: BLE001 - any failure means "not registered"
        warnings.warn(
            f"normify could not register its recurrent cells with Keras ({error!r}); "
            "models that use them will not load.",
            RuntimeWarning,
            stacklevel=3,
        )


class _RegisteringLoader:
    """Runs the real loader of `keras`, then imports `normify.cells`."""

    def __init__(self, loader: Any, hook: _KerasImportHook) -> None:
        self._loader = loader
        self._hook = hook

    def create_module(self, spec: Any) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        try:
            self._loader.exec_module(module)
        finally:
            # Whatever happens, nothing should see this wrapper as keras's loader later
            # (importlib.resources, inspect and reloads ask the module for its loader).
            module.__loader__ = self._loader
            spec = getattr(module, "__spec__", None)
            if spec is not None:
                spec.loader = self._loader
        # Only reached when keras imported successfully; after a failure the hook stays,
        # so a later successful `import keras` still registers the cells.
        self._hook.uninstall()
        _import_cells()

    def __getattr__(self, name: str) -> Any:
        # Anything else (is_package, get_code, get_resource_reader...) is the real loader's.
        return getattr(self._loader, name)


class _KerasImportHook:
    """A `sys.meta_path` finder that only ever acts on the top-level `keras` module."""

    def __init__(self) -> None:
        self._searching = False

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname != _KERAS or self._searching:
            return None
        # Ask the other finders, in order, exactly as the import system would have.
        self._searching = True
        try:
            spec = None
            for finder in list(sys.meta_path):
                find = getattr(finder, "find_spec", None)
                if finder is self or find is None:
                    continue
                spec = find(fullname, path, target)
                if spec is not None:
                    break
        finally:
            self._searching = False
        if spec is None or not hasattr(spec.loader, "exec_module"):
            # No keras, or a loader we cannot wrap: let the import system carry on alone.
            return None
        spec.loader = _RegisteringLoader(spec.loader, self)
        return spec

    def install(self) -> None:
        sys.meta_path.insert(0, self)

    def uninstall(self) -> None:
        try:
            sys.meta_path.remove(self)
        except ValueError:
            pass


def register_cells_when_keras_loads() -> None:
    """Make `normify.cells` register its classes with Keras, without importing Keras.

    Imports `normify.cells` now if `keras` is already imported; otherwise installs (once)
    a finder that imports it right after `keras` finishes loading.
    """
    # None in sys.modules means an import of keras was blocked on purpose.
    if sys.modules.get(_KERAS) is not None:
        _import_cells()
        return
    if any(isinstance(finder, _KerasImportHook) for finder in sys.meta_path):
        return
    _KerasImportHook().install()
