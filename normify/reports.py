"""What a rewriting command did, in one shape for every command, and how it reads.

`add`, `swap`, `strip`, `fold` and `recalibrate` each report the changes they made (one
record per changed layer, each with a `path`, `to_json()` and `describe()`), the layers
they left alone with the reason (`Kept`), the measured drift, and notices. The JSON has
the same keys for every command; `render` gives the lines the command line prints.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from normify import kinds
from normify.passes import Kept

# What each command's closing line counts.
COUNTED = {
    "add": "norm layer(s) inserted",
    "swap": "norm layer(s) swapped",
    "strip": "norm layer(s) removed",
    "fold": "BatchNormalization(s) folded",
    "recalibrate": "BatchNormalization(s) recalibrated",
}


@dataclass(frozen=True)
class PlannedRecalibration:
    """A BatchNormalization a dry run would recalibrate."""

    path: str

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path}

    def describe(self) -> str:
        return f"recalibrate {self.path}"


@dataclass
class Report:
    """What one command did to one model."""

    command: str
    model: str
    changes: list[Any]
    kept: list[Kept]
    drift: dict[str, Any] | None = None
    layer_drift: dict[str, dict[str, float]] = field(default_factory=dict)
    notices: list[str] = field(default_factory=list)
    output: str | None = None
    init: str | None = None  # add's --init
    dry_run: bool = False
    summary: dict[str, Any] | None = None  # the before/after table, when measured

    def to_json(self) -> dict[str, Any]:
        payload: dict[str, Any] = {"command": self.command, "model": self.model}
        if self.init is not None:
            payload["init"] = self.init
        payload["changes"] = [
            {**change.to_json(), "drift": self.layer_drift.get(change.path)}
            for change in self.changes
        ]
        payload["kept"] = [kept.to_json() for kept in self.kept]
        payload["drift"] = self.drift
        payload["summary"] = self.summary
        payload["notices"] = list(self.notices)
        payload["output"] = self.output
        payload["dry_run"] = self.dry_run
        return payload


def render(report: Report) -> list[str]:
    """The lines the command line prints for a report."""
    lines = []
    for change in report.changes:
        lines.append(change.describe() + _layer_drift_text(report.layer_drift.get(change.path)))
    for kept in report.kept:
        lines.append(f"keep   {kept.path}: {kept.reason}")
    lines.extend(render_summary(report.summary))
    lines.extend(f"note: {notice}" for notice in report.notices)
    drift = drift_line(report.drift)
    if drift:
        lines.append(drift)
    lines.append(_closing_line(report))
    return lines


def _closing_line(report: Report) -> str:
    what = COUNTED[report.command]
    count = len(report.changes)
    converted = sum(1 for c in report.changes if getattr(c, "position", None) == kinds.IN_CELL)
    if report.command == "add" and converted:
        count -= converted
        what += f", {converted} recurrent layer(s) converted"
    if report.dry_run:
        return f"dry run: {count} {what.replace('(s) ', '(s) would be ', 1)}; nothing written"
    if not report.changes:
        return f"nothing to change; wrote an unchanged copy to {report.output}"
    return f"wrote {report.output} ({count} {what})"


def drift_line(drift: dict[str, Any] | None) -> str | None:
    if drift is None:
        return None
    from normify.drift import drift_line as line

    return line(drift)


def _layer_drift_text(drift: dict[str, float] | None) -> str:
    if not drift:
        return ""
    return f" [drift max abs {drift['max_abs']:.3g}, relative {drift['relative']:.3g}]"


def render_summary(summary: dict[str, Any] | None) -> list[str]:
    """The before/after table: one row per measure, the original and the rewrite."""
    if not summary:
        return []
    rows = [("", "before", "after")]
    counts_before, counts_after = summary["layers"]["before"], summary["layers"]["after"]
    for class_name in sorted(set(counts_before) | set(counts_after)):
        before, after = counts_before.get(class_name, 0), counts_after.get(class_name, 0)
        if before != after:
            rows.append((class_name, str(before), str(after)))
    parameters = summary["parameters"]
    rows.append(("parameters", _count(parameters["before"]), _count(parameters["after"])))
    size = summary.get("file_bytes") or {}
    if size.get("before") is not None or size.get("after") is not None:
        rows.append(("file size", _bytes(size.get("before")), _bytes(size.get("after"))))
    drift = summary.get("output_drift")
    rows.append(("output drift (relative)", "", "exact" if drift is None else f"{drift:.3g}"))
    width = max(len(row[0]) for row in rows)
    return ["summary:"] + [f"  {a:<{width}}  {b:>12}  {c:>12}" for a, b, c in rows]


def _count(count: int | None) -> str:
    return "-" if count is None else f"{count:,}"


def _bytes(count: int | None) -> str:
    if count is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if count < 1024 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024  # type: ignore[assignment]
    return str(count)
