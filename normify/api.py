"""The public Python API: `audit` and `add`.

Every function accepts a path to a `.keras` / `.h5` file or an in-memory `keras.Model`,
and never modifies a model it is given. Nothing here prints.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from normify import graph as graphs
from normify import io
from normify.audit import AuditReport, audit_graph
from normify.errors import NormifyError, UnsupportedModelError
from normify.flow import build_flow
from normify.passes.add import Insertion, add_norms
from normify.rules import Decision, Rules, decide

ModelOrPath = Any  # keras.Model | str | os.PathLike


@dataclass
class AddReport:
    """What `add` did: every insertion, every skip with its reason, and measured drift."""

    model: str
    insertions: list[Insertion]
    skipped: list[Decision]
    drift: dict[str, Any] | None = None
    notices: list[str] = field(default_factory=list)
    output: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "insertions": [insertion.to_json() for insertion in self.insertions],
            "skipped": [{"target": d.path, "reason": d.reason} for d in self.skipped],
            "drift": self.drift,
            "notices": list(self.notices),
            "output": self.output,
        }


@dataclass
class Result:
    """The rewritten model and the report of what was done to it."""

    model: Any
    report: AddReport


def audit(
    model_or_path: ModelOrPath, *, custom_objects: dict[str, Any] | None = None
) -> AuditReport:
    """Audit which dense, conv and recurrent layers are normalized, by what, and where.

    A path is audited from its config alone, without importing a Keras backend.
    """
    if isinstance(model_or_path, (str, os.PathLike)):
        path = Path(model_or_path)
        graph = graphs.from_config(io.read_config(path), source=path)
        return audit_graph(graph, model_name=str(path))
    return audit_graph(graphs.from_model(model_or_path))


def plan(
    model_or_path: ModelOrPath,
    rules: Rules | None = None,
) -> AddReport:
    """The `add` plan (insertions and skips) without building anything.

    For a path this reads the config only, without a Keras backend.
    """
    rules = rules or Rules()
    if isinstance(model_or_path, (str, os.PathLike)):
        path = Path(model_or_path)
        graph = graphs.from_config(io.read_config(path), source=path)
        name = str(path)
    else:
        graph = graphs.from_model(model_or_path)
        name = graph.name
    _require_rewritable(graph, name)
    decisions = decide(graph, build_flow(graph), rules)
    _, insertions = add_norms(graph, decisions, rules)
    return AddReport(name, insertions, [d for d in decisions if not d.insert])


def add(
    model_or_path: ModelOrPath,
    *,
    dense: str = "batchnorm",
    conv: str = "batchnorm",
    rnn: str = "layernorm",
    position: str = "pre",
    include: Iterable[str] = (),
    exclude: Iterable[str] = (),
    include_output: bool = False,
    measure_drift: bool | None = None,
    safe_mode: bool = True,
    custom_objects: dict[str, Any] | None = None,
) -> Result:
    """Insert norm layers after dense, conv and recurrent layers, by rule.

    Args:
        model_or_path: a `keras.Model`, or a path to a `.keras` or `.h5` file.
        dense, conv, rnn: `batchnorm`, `layernorm`, `groupnorm`, `rmsnorm` or `none`.
        position: `pre` (between the linear op and its activation) or `post` (after the
            activation) for dense and conv layers; recurrent layers are always
            normalized after their output.
        include, exclude: glob patterns on layer paths (`encoder/dense_*`).
        include_output: also normalize layers whose output is a model output.
        measure_drift: compare outputs on random inputs; by default only when a norm that
            cannot start as an identity (not BatchNormalization) is inserted.
        safe_mode: keep Keras' safe mode when loading a file (refuses Python lambdas).
        custom_objects: classes and functions needed to load a file.

    Returns:
        A `Result` with the new `model` and its `report`. The new model never shares
        layers or variables with a model passed in; the caller's model is untouched.
    """
    rules = Rules(dense, conv, rnn, position, tuple(include), tuple(exclude), include_output)
    notices: list[str] = []
    if isinstance(model_or_path, (str, os.PathLike)):
        # A model normify cannot rewrite is refused from its config, before Keras loads it.
        config_graph = graphs.from_config(io.read_config(model_or_path), source=model_or_path)
        _require_rewritable(config_graph, str(model_or_path))
        loaded = io.load_model(model_or_path, safe_mode=safe_mode, custom_objects=custom_objects)
        original, share, name = loaded.model, True, str(loaded.path)
        notices.extend(loaded.notices)
    else:
        original, share, name = model_or_path, False, model_or_path.name
    graph = graphs.from_model(original)
    _require_rewritable(graph, name)
    decisions = decide(graph, build_flow(graph), rules)
    new_graph, insertions = add_norms(graph, decisions, rules)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = _rebuild_or_reuse(original, new_graph, insertions, share)
        _compile_like(original, model, notices)
    notices.extend(_warning_lines(caught))
    report = AddReport(name, insertions, [d for d in decisions if not d.insert], notices=notices)
    inexact = [i for i in insertions if not i.exact]
    if inexact:
        names = sorted({i.norm_class for i in inexact})
        notices.append(
            f"{', '.join(names)} cannot start as an identity: predictions change until "
            "retraining (see drift)"
        )
    if measure_drift or (measure_drift is None and inexact):
        from normify.drift import output_drift

        report.drift = output_drift(original, model)
    return Result(model, report)


def _require_rewritable(graph: graphs.Graph, name: str) -> None:
    if graph.opaque_reason is not None:
        raise UnsupportedModelError(
            f"cannot rewrite {graph.class_name}: {graph.opaque_reason}; normify rewrites "
            "Functional and Sequential models",
            name,
        )


def _rebuild_or_reuse(
    original: Any, graph: graphs.Graph, insertions: list[Insertion], share: bool
) -> Any:
    from normify.rebuild import rebuild

    if not insertions and share:
        return original  # nothing to change in a model we loaded ourselves
    return rebuild(graph, share=share)


def _compile_like(original: Any, model: Any, notices: list[str]) -> None:
    """Compile `model` as `original` was (fresh optimizer state); say what was not carried."""
    if model is original or not getattr(original, "compiled", False):
        return
    config = original.get_compile_config()
    if config is None:
        return
    try:
        model.compile_from_config(config)
    except Exception as error:
        notices.append(
            f"the model could not be compiled like the original ({error}); it is uncompiled"
        )
        return
    notices.append(
        "compiled with the original loss, metrics and optimizer configuration; "
        "optimizer state (moments, step count) was not carried"
    )


def _warning_lines(caught: list[warnings.WarningMessage]) -> list[str]:
    lines = []
    for warning in caught:
        text = str(warning.message).strip().splitlines()
        if text and text[0] not in lines:
            lines.append(text[0])
    return lines


__all__ = ["AddReport", "NormifyError", "Result", "add", "audit", "plan"]
