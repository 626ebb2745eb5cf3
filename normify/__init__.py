"""normify: insert, audit and rewrite the normalization layers of saved Keras 3 models.

Importing this package never imports TensorFlow or any Keras backend; the functions
that need one import it on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"

__all__ = ["AddReport", "AuditReport", "NormifyError", "Result", "__version__", "add", "audit"]

if TYPE_CHECKING:
    from normify.api import AddReport, Result, add, audit
    from normify.audit import AuditReport
    from normify.errors import NormifyError

_LAZY = {
    "add": "normify.api",
    "audit": "normify.api",
    "Result": "normify.api",
    "AddReport": "normify.api",
    "AuditReport": "normify.audit",
    "NormifyError": "normify.errors",
}


def __getattr__(name: str):
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'normify' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module_name), name)
