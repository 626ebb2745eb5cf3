"""normify: insert, audit and rewrite the normalization layers of saved Keras 3 models.

Importing this package never imports TensorFlow or any Keras backend; the functions
that need one import it on first use. Nor does it import the rewrite machinery: every
public name is bound on first use (PEP 562), so `normify audit`, `--version` and `--help`
pay only for what they run.
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Where each public name lives; it is imported, and bound here, on first use.
_PUBLIC = {
    "AuditReport": "normify.audit",
    "NormifyError": "normify.errors",
    "Report": "normify.reports",
    "Result": "normify.api",
    "Rules": "normify.rules",
    "VerifyReport": "normify.verify",
    "add": "normify.api",
    "audit": "normify.auditing",
    "fold": "normify.api",
    "plan": "normify.api",
    "recalibrate": "normify.api",
    "strip": "normify.api",
    "swap": "normify.api",
    "verify": "normify.verify",
}

# `normify.audit` and `normify.verify` are submodules and public functions at once. The
# import system binds a submodule on its package once it has loaded it; these two names
# must stay the functions whatever is imported, in whatever order.
_FUNCTIONS_NAMED_LIKE_SUBMODULES = frozenset({"audit", "verify"})


class _Package(ModuleType):
    def __setattr__(self, name: str, value: Any) -> None:
        if name in _FUNCTIONS_NAMED_LIKE_SUBMODULES and isinstance(value, ModuleType):
            return  # the submodule stays reachable in sys.modules
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str) -> Any:
    home = _PUBLIC.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_PUBLIC})


if TYPE_CHECKING:
    from normify.api import Result, add, fold, plan, recalibrate, strip, swap
    from normify.audit import AuditReport
    from normify.auditing import audit
    from normify.errors import NormifyError
    from normify.reports import Report
    from normify.rules import Rules
    from normify.verify import VerifyReport, verify

__all__ = [
    "AuditReport",
    "NormifyError",
    "Report",
    "Result",
    "Rules",
    "VerifyReport",
    "__version__",
    "add",
    "audit",
    "fold",
    "plan",
    "recalibrate",
    "strip",
    "swap",
    "verify",
]

# Models using normify.cells load with plain keras.saving.load_model once normify is
# imported: the cells register themselves when Keras loads, without importing it here.
from normify._registration import register_cells_when_keras_loads  # noqa: E402

register_cells_when_keras_loads()
