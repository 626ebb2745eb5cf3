"""normify: insert, audit and rewrite the normalization layers of saved Keras 3 models.

Importing this package never imports TensorFlow or any Keras backend; the functions
that need one import it on first use.
"""

from __future__ import annotations

__version__ = "0.1.0"

# Bound after the submodules load, so `normify.audit` is the function, not the module.
from normify.api import (  # noqa: E402
    Report,
    Result,
    add,
    audit,
    fold,
    plan,
    recalibrate,
    strip,
    swap,
)
from normify.audit import AuditReport  # noqa: E402
from normify.errors import NormifyError  # noqa: E402
from normify.rules import Rules  # noqa: E402
from normify.verify import VerifyReport, verify  # noqa: E402

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
