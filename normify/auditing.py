"""`normify.audit(...)`: what `normify audit` runs, kept apart from the rewrite machinery.

Auditing a file reads its config (`normify.files`), builds the graph and its flow and
tabulates the norms; nothing here imports NumPy, Keras, the passes, the rebuild or the
verification, so `normify audit` starts about as fast as Python does. `--load` and `--data`
import what they need when asked.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from normify import files, kinds
from normify import graph as graphs
from normify.audit import AuditReport, ModelAudit, MultiAudit, audit_graph
from normify.errors import NormifyError, UnsupportedModelError

ModelOrPath = Any  # keras.Model | str | os.PathLike


def audit(
    model_or_path: ModelOrPath,
    *,
    custom_objects: dict[str, Any] | None = None,
    load: bool = False,
    safe_mode: bool = True,
    data: Any = None,
    batch_size: int = 64,
    max_samples: int = 1024,
    quiet: bool = True,
) -> AuditReport:
    """Audit which dense, conv and recurrent layers are normalized, by what, and where.

    A path is audited from its config alone, without importing a Keras backend. With
    `load`, the model is loaded with Keras and its live graph audited: what a library's
    Functional subclass (keras-hub) shows only once built. A library model audited from
    its config alone is refused with what to do instead of an empty table.

    With `data` (a path to an `.npz`/`.npy`, arrays, a dict of arrays or an iterable of
    batches), the data also runs through the model and `report.activity` holds, for every
    dense, conv and recurrent layer, its activation statistics, dead and saturated units,
    the scale across depth and a hint, and for every BatchNormalization the gap between
    its moving statistics and the data's (`normify.activity`).
    """
    if data is not None:
        from normify.api import _audit_with_data

        return _audit_with_data(
            model_or_path, data, batch_size, max_samples, quiet, safe_mode, custom_objects,
            load,
        )  # fmt: skip
    if isinstance(model_or_path, (str, os.PathLike)):
        path = Path(model_or_path)
        if load:
            from normify.loading import load_model

            loaded = load_model(path, safe_mode=safe_mode, custom_objects=custom_objects)
            return audit_graph(graphs.from_model(loaded.model, flatten=True), model_name=str(path))
        model_file = files.read_model_file(path, frozenset(custom_objects or ()))
        graph = graphs.from_config(model_file.config, source=path)
        if graph.opaque_reason is not None and kinds.library_of(model_file.config.get("module")):
            raise UnsupportedModelError(
                f"cannot audit {graph.class_name} from its config: {graph.opaque_reason}", path
            )
        return audit_graph(graph, model_name=str(path))
    return audit_graph(graphs.from_model(model_or_path, flatten=load))


def audit_files(
    patterns: Iterable[str | os.PathLike[str]],
    *,
    require: dict[str, str] | None = None,
    strict: bool = False,
    config: str | None = None,
) -> MultiAudit:
    """Audit every model that `patterns` name (files, folders searched for `.keras` and
    `.h5` files, glob patterns) against one policy, from their configs alone. A model that
    cannot be read is an entry with its error, not the end of the audit."""
    audits = []
    for path in files.find_models(patterns):
        try:
            report = audit(path)
        except NormifyError as error:
            audits.append(ModelAudit(str(path), None, error=_without_path(error, path)))
            continue
        violations = report.violations(require or {}, strict=strict)
        if require and report.opaque and not report.rows:
            message = f"its layers cannot be read ({report.opaque[0]['reason']})"
            audits.append(ModelAudit(str(path), report, error=message))
            continue
        audits.append(ModelAudit(str(path), report, violations))
    return MultiAudit(audits, dict(require or {}), strict, config)


def _without_path(error: NormifyError, path: Path) -> str:
    text = str(error)
    prefix = f"{path}: "
    return text[len(prefix) :] if text.startswith(prefix) else text
