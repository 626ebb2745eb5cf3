"""The policy: which layer gets which norm, where, and which are skipped and why.

Rules look at the graph and the tensor flow only; they never touch Keras objects.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase

from normify import incell, kinds, norms
from normify.errors import NormifyError
from normify.flow import Flow
from normify.graph import Graph, LayerSpec, opaque_parts

NORM_CHOICES = (*kinds.INSERTABLE_NORMS, "none")
IN_CELL = kinds.LAYERNORM_CELL  # recurrent layers only: layer normalization in the cell
POSITIONS = ("pre", "post")


@dataclass(frozen=True)
class Rules:
    """What `add` inserts. Norm choices are short names (`batchnorm`, ..., `none`)."""

    dense: str = "batchnorm"
    conv: str = "batchnorm"
    rnn: str = "layernorm"
    position: str = "pre"
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    include_output: bool = False

    def __post_init__(self) -> None:
        for kind in kinds.TARGET_KINDS:
            choices = (*NORM_CHOICES, IN_CELL) if kind == kinds.RNN else NORM_CHOICES
            if getattr(self, kind) not in choices:
                raise NormifyError(
                    f"--{kind} must be one of {', '.join(choices)}, not {getattr(self, kind)!r}"
                )
        if self.position not in POSITIONS:
            raise NormifyError(f"position must be pre or post, not {self.position!r}")
        object.__setattr__(self, "include", tuple(self.include))
        object.__setattr__(self, "exclude", tuple(self.exclude))

    def norm_for(self, kind: str) -> str:
        return getattr(self, kind)


@dataclass(frozen=True)
class Decision:
    """For one dense/conv/rnn layer: insert `norm` after it, or skip it for `reason`."""

    path: str
    kind: str
    norm: str | None
    reason: str | None = None

    @property
    def insert(self) -> bool:
        return self.reason is None


def decide(graph: Graph, flow: Flow, rules: Rules) -> list[Decision]:
    """One decision per dense, conv and rnn layer, in graph order."""
    decisions = []
    for path, sites in flow.sites_by_path().items():
        spec = sites[0].spec
        if spec.kind not in kinds.TARGET_KINDS:
            continue
        norm = rules.norm_for(spec.kind)
        decisions.append(Decision(path, spec.kind, norm, _skip_reason(path, sites, flow, rules)))
    for path, _, reason in opaque_parts(graph):
        decisions.append(Decision(path, "opaque", None, f"not rewritten: {reason}"))
    return decisions


def selected(path: str, include: tuple[str, ...], exclude: tuple[str, ...]) -> str | None:
    """None when `--include`/`--exclude` globs select the layer path, else why not."""
    if include and not any(fnmatchcase(path, pattern) for pattern in include):
        return "not selected by --include"
    excluded_by = next((pattern for pattern in exclude if fnmatchcase(path, pattern)), None)
    return f"excluded by --exclude {excluded_by}" if excluded_by else None


def _skip_reason(path: str, sites: list, flow: Flow, rules: Rules) -> str | None:
    spec = sites[0].spec
    norm = rules.norm_for(spec.kind)
    if norm == "none":
        return f"rule for {spec.kind} layers is none"
    reason = selected(path, rules.include, rules.exclude)
    if reason is not None:
        return reason
    if spec.kind == kinds.RNN and incell.normalized_in_cell(
        spec.class_name, spec.module, spec.config
    ):
        return f"already normalized in-cell ({incell.describe(spec.class_name, spec.config)})"
    findings = [flow.norm_after(site) for site in sites]
    normalized = [finding for finding in findings if finding is not None]
    if normalized and len(normalized) == len(findings):
        first = normalized[0]
        return f"already normalized by {first.path} ({first.class_name})"
    if normalized:
        return f"partially normalized ({len(normalized)} of {len(findings)} calls); left alone"
    if norm == IN_CELL:
        return _in_cell_skip_reason(spec)
    if not rules.include_output and any(flow.reaches_output(site) for site in sites):
        return "output layer (pass --include-output to normalize it)"
    if not any(
        flow.consumers.get((site.key, 0)) or (site.key, 0) in flow.outputs for site in sites
    ):
        return "its main output is unused (only its states are consumed)"
    if norm == "rmsnorm" and norms.channel_axis(spec.class_name, spec.config) != -1:
        return (
            "RMSNormalization (Keras) normalizes only the last axis, and this layer's "
            "channels are not last (channels_first)"
        )
    if _is_quantized(spec.config):
        return "quantized layer: normify does not rewrite quantized layers"
    if spec.class_name == kinds.SPECTRAL and rules.position == "pre":
        return (
            "wrapped in SpectralNormalization, whose weights cannot be split from its "
            "activation (pass --position post to normalize its output)"
        )
    return None


def _in_cell_skip_reason(spec: LayerSpec) -> str | None:
    """Why a recurrent layer cannot get layer-normalized cells, or None. The output and
    unused-output rules do not apply: nothing is appended after the layer."""
    if _is_quantized(spec.config):
        return "quantized layer: normify does not rewrite quantized layers"
    try:
        incell.to_layer_norm(spec.class_name, spec.config)
    except incell.NotConvertible as error:
        return str(error)
    return None


def _is_quantized(config: dict) -> bool:
    dtype = config.get("dtype")
    if isinstance(dtype, dict) and "Quantized" in str(dtype.get("class_name", "")):
        return True
    return bool(config.get("quantization_config")) or "int8" in str(dtype) or "int4" in str(dtype)
