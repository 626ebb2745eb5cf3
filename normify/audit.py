"""Which dense, conv and recurrent layers are normalized, by what, and where.

Audit reads a `Graph` only, so it needs no backend when the graph came from a file.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from normify import incell, kinds
from normify.flow import Flow, build_flow
from normify.graph import Graph, opaque_parts, walk_layers

PRE, POST = kinds.PRE, kinds.POST


@dataclass(frozen=True)
class AuditRow:
    """One dense, conv or rnn layer (all its call sites together)."""

    path: str
    class_name: str
    kind: str
    activation: str | None
    normalized: bool
    norm: str | None
    norm_layer: str | None
    position: str | None
    output: bool
    calls: int

    def to_json(self) -> dict[str, Any]:
        row = asdict(self)
        row["class"] = row.pop("class_name")
        return {key: row[key] for key in JSON_ROW_KEYS}


JSON_ROW_KEYS = (
    "path", "class", "kind", "activation", "normalized", "norm", "norm_layer",
    "position", "output", "calls",
)  # fmt: skip


@dataclass(frozen=True)
class Violation:
    path: str
    kind: str
    required: str
    found: str | None


@dataclass
class AuditReport:
    """The audit of one model: rows, per-kind summary, norm layer counts, opaque parts."""

    model: str
    rows: list[AuditRow]
    norm_layers: dict[str, int]
    opaque: list[dict[str, str]] = field(default_factory=list)
    activity: Any = None  # normify.activity.ActivityReport, with data (`audit(data=...)`)
    config: str | None = None  # the policy file whose rules were applied, if any
    graph: Graph | None = field(default=None, repr=False, compare=False)  # what was audited

    @property
    def summary(self) -> dict[str, dict[str, int]]:
        summary = {kind: {"total": 0, "normalized": 0} for kind in kinds.TARGET_KINDS}
        for row in self.rows:
            summary[row.kind]["total"] += 1
            summary[row.kind]["normalized"] += int(row.normalized)
        return summary

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "layers": [row.to_json() for row in self.rows],
            "summary": self.summary,
            "norm_layers": dict(self.norm_layers),
            "opaque": list(self.opaque),
            **({"activity": self.activity.to_json()} if self.activity is not None else {}),
        }

    def to_graph(self, path: str | Any, compare: AuditReport | None = None) -> Any:
        """Draw the audited layer graph to `path` (`.svg`, `.png` or `.dot`), each dense,
        conv and recurrent layer coloured by its state; with `compare` (the audit of the
        original model), what was inserted, changed or removed is marked. Returns the path
        written (`normify.picture`)."""
        from normify.picture import write_picture

        return write_picture(self, path, compare=compare)

    def violations(self, requirements: dict[str, str], strict: bool = False) -> list[Violation]:
        """Rows that break `requirements` (kind -> norm short name or `any`).

        Output layers are exempt unless `strict`.
        """
        found = []
        for row in self.rows:
            required = requirements.get(row.kind)
            if required is None or (row.output and not strict):
                continue
            if required == "any":
                ok = row.normalized
            elif required == kinds.LAYERNORM_CELL:
                ok = row.normalized and row.position == kinds.IN_CELL
            else:
                ok = row.normalized and row.norm == kinds.NORM_NAMES[required]
            if not ok:
                found.append(Violation(row.path, row.kind, required, row.norm))
        return found


def audit_graph(graph: Graph, model_name: str | None = None) -> AuditReport:
    flow = build_flow(graph)
    return AuditReport(
        graph=graph,
        model=model_name or graph.name,
        rows=audit_rows(graph, flow),
        norm_layers=_norm_layer_counts(graph),
        opaque=[
            {"path": path, "class": class_name, "reason": reason}
            for path, class_name, reason in opaque_parts(graph)
        ]
        + _lambda_layers(graph),
    )


LAMBDA_REASON = "Python code: rewriting needs --unsafe"


def _lambda_layers(graph: Graph) -> list[dict[str, str]]:
    """Lambda layers run Python code that Keras's safe mode refuses to load."""
    return [
        {"path": path, "class": spec.class_name, "reason": LAMBDA_REASON}
        for path, spec, _ in walk_layers(graph)
        if spec.class_name == "Lambda" and kinds.is_builtin(spec.module)
    ]


def audit_rows(graph: Graph, flow: Flow | None = None) -> list[AuditRow]:
    flow = flow or build_flow(graph)
    rows = []
    for path, sites in flow.sites_by_path().items():
        spec = sites[0].spec
        if spec.kind not in kinds.TARGET_KINDS:
            continue
        if spec.kind == kinds.RNN and incell.normalized_in_cell(
            spec.class_name, spec.module, spec.config
        ):
            rows.append(_in_cell_row(path, spec, flow, sites))
            continue
        findings = [flow.norm_after(site) for site in sites]
        normalized = all(finding is not None for finding in findings)
        first = findings[0] if normalized else None
        position = None
        if first is not None:
            own_activation = kinds.has_nonlinear_activation(spec.class_name, spec.config)
            position = (
                POST
                if own_activation or first.through_activation or (spec.kind == kinds.RNN)
                else PRE
            )
        rows.append(
            AuditRow(
                path=path,
                class_name=kinds.display_name(spec.class_name, spec.config),
                kind=spec.kind,
                activation=kinds.activation_name(spec.class_name, spec.config),
                normalized=normalized,
                norm=first.class_name if first else None,
                norm_layer=first.path if first else None,
                position=position,
                output=any(flow.reaches_output(site) for site in sites),
                calls=len(sites),
            )
        )
    return rows


def _in_cell_row(path: str, spec: Any, flow: Flow, sites: list[Any]) -> AuditRow:
    """A recurrent layer normalized inside its cell is its own norm layer."""
    return AuditRow(
        path=path,
        class_name=spec.class_name,
        kind=spec.kind,
        activation=kinds.activation_name(spec.class_name, spec.config),
        normalized=True,
        norm=incell.NORM_CLASS,
        norm_layer=path,
        position=kinds.IN_CELL,
        output=any(flow.reaches_output(site) for site in sites),
        calls=len(sites),
    )


def _norm_layer_counts(graph: Graph) -> dict[str, int]:
    counts = Counter(
        spec.class_name for _, spec, _ in walk_layers(graph) if spec.kind == kinds.NORM
    )
    in_cell = sum(
        1
        for _, spec, _ in walk_layers(graph)
        if spec.kind == kinds.RNN
        and incell.normalized_in_cell(spec.class_name, spec.module, spec.config)
    )
    if in_cell:
        counts[f"{incell.NORM_CLASS} (in-cell)"] = in_cell
    return dict(sorted(counts.items()))


# ------------------------------------------------------------------------------ rendering


def render_table(report: AuditReport, console: Any) -> None:
    """Print the audit as a rich table, then the per-kind summary."""
    from rich.table import Table

    table = Table(title=f"normify audit: {report.model}", title_justify="left")
    for column in ("layer", "class", "activation", "normalized", "norm layer", "position"):
        table.add_column(column)
    table.add_column("output")
    table.add_column("calls", justify="right")
    for row in report.rows:
        norm = f"{row.norm_layer} ({row.norm})" if row.normalized else "-"
        table.add_row(
            row.path,
            row.class_name,
            row.activation or "-",
            "yes" if row.normalized else "no",
            norm,
            row.position or "-",
            "yes" if row.output else "",
            str(row.calls),
        )
    console.print(table)
    for kind, counts in report.summary.items():
        if counts["total"]:
            console.print(f"{kind} {counts['normalized']}/{counts['total']} normalized")
    if report.norm_layers:
        listed = ", ".join(f"{name} {count}" for name, count in report.norm_layers.items())
        console.print(f"norm layers: {listed}")
    else:
        console.print("norm layers: none")
    for part in report.opaque:
        console.print(f"opaque: {part['path']} ({part['class']}): {part['reason']}")


# ------------------------------------------------------------------- several models


@dataclass
class ModelAudit:
    """One model of a multi-model audit: its report and violations, or the error."""

    model: str
    report: AuditReport | None
    violations: list[Violation] = field(default_factory=list)
    error: str | None = None

    @property
    def status(self) -> str:
        if self.error is not None:
            return "error"
        return "violations" if self.violations else "ok"

    def to_json(self) -> dict[str, Any]:
        payload: dict[str, Any] = {"model": self.model, "status": self.status}
        if self.report is not None:
            payload.update(self.report.to_json())
            payload["violations"] = [v.__dict__ for v in self.violations]
        if self.error is not None:
            payload["error"] = self.error
        return payload


@dataclass
class MultiAudit:
    """The audit of several models against one policy."""

    audits: list[ModelAudit]
    requirements: dict[str, str]
    strict: bool
    config: str | None = None

    @property
    def passed(self) -> bool:
        return all(audit.status == "ok" for audit in self.audits)

    def to_json(self) -> dict[str, Any]:
        return {
            "models": [audit.to_json() for audit in self.audits],
            "require": dict(self.requirements),
            "strict": self.strict,
            "config": self.config,
            "passed": self.passed,
        }


def render_summary_table(multi: MultiAudit, console: Any) -> None:
    """One row per model: normalized counts per kind, norm layers, violations, status."""
    from rich.table import Table

    table = Table(title=f"normify audit: {len(multi.audits)} models", title_justify="left")
    for column in ("model", "dense", "conv", "rnn", "norm layers", "violations", "status"):
        table.add_column(column, justify="right" if column in ("violations",) else "left")
    for audit in multi.audits:
        if audit.report is None:
            table.add_row(audit.model, "", "", "", "", "", f"error: {audit.error}")
            continue
        counts = [
            f"{c['normalized']}/{c['total']}" if c["total"] else "-"
            for c in audit.report.summary.values()
        ]
        norms = sum(audit.report.norm_layers.values())
        table.add_row(
            audit.model, *counts, str(norms), str(len(audit.violations)) if multi.requirements
            else "-", audit.status,
        )  # fmt: skip
    console.print(table)
