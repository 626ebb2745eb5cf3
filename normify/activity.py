"""An audit from data: what the activations of a model look like, and where a norm helps.

The data runs once through the model. For every dense, conv and recurrent layer normify
reads its output (every call of a shared layer, masked steps left out) and keeps, per
channel (the axis a norm after the layer would normalize), the exact mean and variance
(float64, merged batch by batch as `recalibrate` does). Where the layer's non-linearity
is a separate layer (a linear Dense followed by a BatchNormalization and a ReLU, or by an
Activation), the activated tensor is read from that layer's output. For every
BatchNormalization normify reads its input and compares the data's statistics with its
moving statistics: the gap between training and inference that `recalibrate` closes.

The criteria of the `hint` column are stated in `HINT_CRITERIA`; they apply to layers
that are not normalized and are not output layers (those are exempt, as in `--require`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from normify import kinds
from normify.audit import AuditRow

if TYPE_CHECKING:
    import numpy as np

    from normify.flow import CallSite, Flow
    from normify.graph import Graph

# Activations whose units can die (never positive on any sample) and that saturate.
DYING = frozenset({"relu", "relu6"})
SATURATING = frozenset({"sigmoid", "tanh", "hard_sigmoid", "hard_tanh", "softsign"})
# A sigmoid value within 0.01 of 0 or 1, a tanh value within 0.01 of -1 or 1 (where the
# derivative is at most 4% of its maximum), is saturated.
SATURATION_MARGIN = 0.01

# The hint thresholds (also printed under the table and carried in the JSON).
SPREAD_LIMIT = 10.0  # largest / smallest channel std
DEAD_LIMIT = 0.25  # fraction of dead units
SATURATED_LIMIT = 0.25  # fraction of saturated values
GROWTH_LIMITS = (0.5, 2.0)  # scale against the previous layer
GAP_SHIFT_LIMIT = 0.5  # BatchNormalization: mean shift in units of the moving std
GAP_RATIO_LIMIT = 2.0  # BatchNormalization: variance ratio either way

HINT_CRITERIA = (
    f"a layer that is not normalized and not an output is hinted when its channels' std "
    f"differ more than {SPREAD_LIMIT:g}x, at least {DEAD_LIMIT:.0%} of its ReLU units are "
    f"dead, at least {SATURATED_LIMIT:.0%} of its sigmoid/tanh values are saturated, or its "
    f"scale (RMS) is more than {GROWTH_LIMITS[1]:g}x or less than {GROWTH_LIMITS[0]:g}x the "
    f"previous layer's; a BatchNormalization is hinted to recalibrate when the data's mean "
    f"is more than {GAP_SHIFT_LIMIT:g} moving std from its moving mean or the variances "
    f"differ more than {GAP_RATIO_LIMIT:g}x"
)


@dataclass
class LayerActivity:
    """What the data does at one dense, conv or recurrent layer (all its calls)."""

    path: str
    kind: str
    activation: str | None  # the non-linearity measured for dead/saturated units
    activation_layer: str | None  # where it was read, when it is a separate layer
    normalized: bool
    output: bool
    channels: int
    positions: int  # samples times steps or pixels, masked steps left out
    mean: float  # mean of the channel means
    std: float  # mean of the channel stds
    std_spread: float | None  # largest / smallest std among channels that vary
    scale: float  # root mean square of the output
    growth: float | None  # scale / the previous layer's scale (topological order)
    dead: float | None  # fraction of units never positive (ReLU)
    saturated: float | None  # fraction of values in the flat tails (sigmoid, tanh)
    hint: str | None = None
    channel_mean: list[float] = field(default_factory=list, repr=False)
    channel_std: list[float] = field(default_factory=list, repr=False)

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class BatchNormGap:
    """How far a BatchNormalization's moving statistics are from the data's."""

    path: str
    channels: int
    mean_shift: float  # max |data mean - moving mean| / sqrt(moving variance + epsilon)
    max_abs_mean_change: float
    max_variance_ratio: float  # max over channels of the ratio, either way up
    hint: str | None = None

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class ActivityReport:
    """The audit from data: one entry per target layer, one per BatchNormalization."""

    samples: int
    layers: list[LayerActivity]
    batchnorms: list[BatchNormGap]

    @property
    def depth_growth(self) -> float | None:
        """The last layer's scale over the first's."""
        scales = [row.scale for row in self.layers if row.scale > 0]
        return scales[-1] / scales[0] if len(scales) >= 2 else None

    def to_json(self) -> dict[str, Any]:
        return {
            "samples": self.samples,
            "layers": [row.to_json() for row in self.layers],
            "batchnorms": [gap.to_json() for gap in self.batchnorms],
            "depth_growth": self.depth_growth,
            "criteria": HINT_CRITERIA,
        }


class _Accumulator:
    """Per-channel moments of a layer's output, and its activated units."""

    def __init__(self, axis: int, activation: str | None) -> None:
        from normify.probe import ChannelMoments

        self.moments = ChannelMoments(axis)
        self.axis = axis
        self.activation = activation
        self.alive: np.ndarray | None = None
        self.saturated = 0
        self.values = 0

    def update_activated(self, values: np.ndarray, mask: np.ndarray | None) -> None:
        import numpy as np

        from normify.probe import channel_rows

        rows = channel_rows(values, self.axis, mask)
        if rows.shape[0] == 0:
            return
        if self.activation in DYING:
            alive = np.asarray((rows > 0).any(axis=0))
            self.alive = alive if self.alive is None else self.alive | alive
        elif self.activation in SATURATING:
            low, high = _range(self.activation)
            margin = SATURATION_MARGIN * (high - low) / 2 if low < 0 else SATURATION_MARGIN
            tails = (rows <= low + margin) | (rows >= high - margin)
            self.saturated += int(np.count_nonzero(tails))
            self.values += rows.size


def _range(activation: str) -> tuple[float, float]:
    return (0.0, 1.0) if "sigmoid" in activation else (-1.0, 1.0)


def measure(
    model: Any,
    graph: Graph,
    rows: list[AuditRow],
    batches: Any,
    samples: int,
) -> ActivityReport:
    """Run the data (`batches()`: a fresh iterator of input batches) through `model` once
    and summarize the activations at every audited layer and every BatchNormalization."""
    import numpy as np

    from normify.calibrate import layer_at
    from normify.flow import build_flow
    from normify.norms import channel_axis
    from normify.probe import INPUT, OUTPUT, ChannelMoments, Probe
    from normify.variables import detached

    flow = build_flow(graph)
    sites = flow.sites_by_path()
    requests: dict[str, str] = {}
    accumulators: dict[str, _Accumulator] = {}
    activated_at: dict[str, str] = {}  # target path -> path whose output is its activation
    for row in rows:
        spec = sites[row.path][0].spec
        activation, where = _activation_of(row, sites[row.path][0], flow)
        accumulators[row.path] = _Accumulator(
            channel_axis(spec.class_name, spec.config), activation
        )
        requests[row.path] = OUTPUT
        activated_at[row.path] = where or row.path
        if where is not None:
            requests.setdefault(where, OUTPUT)
    gaps: dict[str, ChannelMoments] = {}
    for path, path_sites in sites.items():
        spec = path_sites[0].spec
        if spec.class_name == "BatchNormalization" and path not in requests:
            requests[path] = INPUT
            gaps[path] = ChannelMoments(_axis(spec.config.get("axis", -1)))
    if requests:
        probe = Probe(model, requests)
        for batch in batches():
            found = probe.with_masks(batch)
            for path, accumulator in accumulators.items():
                for values, mask in found.get(path, []):
                    accumulator.moments.update(values, mask)
                for values, mask in found.get(activated_at[path], []):
                    accumulator.update_activated(values, mask)
            for path, moments in gaps.items():
                for values, mask in found.get(path, []):
                    moments.update(values, mask)
    layers = [_summarize(row, accumulators[row.path], activated_at[row.path]) for row in rows]
    previous = None
    for entry in layers:
        if previous is not None and previous > 0:
            entry.growth = entry.scale / previous
        previous = entry.scale
        entry.hint = _hint(entry)
    batchnorms = []
    for path, moments in gaps.items():
        if moments.mean is None:
            continue
        layer = layer_at(model, path)
        weights = {v.path.rsplit("/", 1)[-1]: v for v in layer.weights}
        moving_mean = detached(weights["moving_mean"]).astype(np.float64)
        moving_variance = detached(weights["moving_variance"]).astype(np.float64)
        batchnorms.append(_gap(path, moments, moving_mean, moving_variance, layer.epsilon))
    return ActivityReport(samples, layers, batchnorms)


def _axis(axis: Any) -> int:
    return int(axis[0] if isinstance(axis, (list, tuple)) else axis)


def _activation_of(row: AuditRow, site: CallSite, flow: Flow) -> tuple[str | None, str | None]:
    """The non-linearity after a layer's linear op, and the path of the layer that applies
    it when that is not the layer itself (reached through norm and pass-through layers)."""
    own = row.activation
    if row.kind == kinds.RNN:
        return (own or "tanh"), None
    if own not in kinds.LINEAR_ACTIVATIONS:
        return own, None
    seen: set[str] = set()
    frontier = [site.key]
    while frontier:
        key = frontier.pop(0)
        for consumer_key in flow.consumers.get((key, 0), []):
            if consumer_key in seen:
                continue
            seen.add(consumer_key)
            consumer = flow.sites[consumer_key]
            spec = consumer.spec
            if spec.kind == kinds.PASS and kinds.is_activation_layer(spec.class_name, spec.config):
                return _layer_activation(spec.class_name, spec.config), consumer.path
            if spec.kind in (kinds.PASS, kinds.NORM):
                frontier.append(consumer_key)
    return own, None


def _layer_activation(class_name: str, config: dict[str, Any]) -> str | None:
    if class_name == "Activation":
        return kinds.activation_name(class_name, config)
    if class_name == "ReLU" and not config.get("negative_slope") and not config.get("threshold"):
        return "relu"
    return class_name.lower()


def _summarize(row: AuditRow, accumulator: _Accumulator, activated_at: str) -> LayerActivity:
    import numpy as np

    moments = accumulator.moments
    if moments.mean is None:
        mean = variance = np.zeros(0)
    else:
        mean, variance = moments.mean, moments.variance
    std = np.sqrt(variance)
    varying = std[std > 1e-12]
    dead = None
    if accumulator.activation in DYING and accumulator.alive is not None:
        dead = float(1.0 - accumulator.alive.mean())
    saturated = None
    if accumulator.activation in SATURATING and accumulator.values:
        saturated = accumulator.saturated / accumulator.values
    return LayerActivity(
        path=row.path,
        kind=row.kind,
        activation=accumulator.activation,
        activation_layer=None if activated_at == row.path else activated_at,
        normalized=row.normalized,
        output=row.output,
        channels=int(mean.size),
        positions=int(moments.count),
        mean=float(mean.mean()) if mean.size else 0.0,
        std=float(std.mean()) if std.size else 0.0,
        std_spread=float(varying.max() / varying.min()) if varying.size else None,
        scale=float(np.sqrt(np.mean(variance + mean**2))) if mean.size else 0.0,
        growth=None,
        dead=dead,
        saturated=saturated,
        channel_mean=[float(v) for v in mean],
        channel_std=[float(v) for v in std],
    )


def _hint(entry: LayerActivity) -> str | None:
    if entry.normalized or entry.output:
        return None
    reasons = []
    if entry.std_spread is not None and entry.std_spread > SPREAD_LIMIT:
        reasons.append(f"channel std differ {entry.std_spread:.3g}x")
    if entry.dead is not None and entry.dead >= DEAD_LIMIT:
        reasons.append(f"{entry.dead:.0%} dead")
    if entry.saturated is not None and entry.saturated >= SATURATED_LIMIT:
        reasons.append(f"{entry.saturated:.0%} saturated")
    if entry.growth is not None and entry.growth > GROWTH_LIMITS[1]:
        reasons.append(f"scale grows {entry.growth:.3g}x")
    if entry.growth is not None and entry.growth < GROWTH_LIMITS[0]:
        reasons.append(f"scale shrinks {entry.growth:.3g}x")
    return "add a norm: " + ", ".join(reasons) if reasons else None


def _gap(
    path: str,
    moments: Any,
    moving_mean: np.ndarray,
    moving_variance: np.ndarray,
    epsilon: float,
) -> BatchNormGap:
    import numpy as np

    mean, variance = moments.mean, moments.variance
    shift = np.abs(mean - moving_mean) / np.sqrt(moving_variance + epsilon)
    ratio = np.maximum(variance, 1e-12) / np.maximum(moving_variance, 1e-12)
    gap = BatchNormGap(
        path=path,
        channels=int(mean.size),
        mean_shift=float(shift.max()),
        max_abs_mean_change=float(np.abs(mean - moving_mean).max()),
        max_variance_ratio=float(np.maximum(ratio, 1 / ratio).max()),
    )
    if gap.mean_shift > GAP_SHIFT_LIMIT or gap.max_variance_ratio > GAP_RATIO_LIMIT:
        gap.hint = "recalibrate: moving statistics are far from the data's"
    return gap


# ------------------------------------------------------------------------------ rendering


def render_activity(report: ActivityReport, console: Any) -> None:
    """Print the activity table, the BatchNormalization gaps and the criteria."""
    from rich.table import Table

    table = Table(title=f"activations on {report.samples} samples", title_justify="left")
    for column in ("layer", "activation", "mean", "std", "std spread", "dead", "saturated"):
        table.add_column(column, justify="left" if column in ("layer", "activation") else "right")
    table.add_column("scale", justify="right")
    table.add_column("growth", justify="right")
    table.add_column("hint")
    for row in report.layers:
        table.add_row(
            row.path,
            row.activation or "-",
            f"{row.mean:.3g}",
            f"{row.std:.3g}",
            "-" if row.std_spread is None else f"{row.std_spread:.3g}x",
            "-" if row.dead is None else f"{row.dead:.0%}",
            "-" if row.saturated is None else f"{row.saturated:.0%}",
            f"{row.scale:.3g}",
            "-" if row.growth is None else f"{row.growth:.3g}x",
            row.hint or ("(output)" if row.output and not row.normalized else ""),
        )
    console.print(table)
    growth = report.depth_growth
    if growth is not None:
        console.print(f"scale from the first layer to the last: {growth:.3g}x")
    if report.batchnorms:
        gaps = Table(
            title="BatchNormalization: moving statistics against the data's", title_justify="left"
        )
        for column in ("layer", "mean shift (moving std)", "variance ratio", "hint"):
            gaps.add_column(
                column, justify="right" if "shift" in column or "ratio" in column else "left"
            )
        for gap in report.batchnorms:
            gaps.add_row(
                gap.path, f"{gap.mean_shift:.3g}", f"{gap.max_variance_ratio:.3g}x", gap.hint or ""
            )
        console.print(gaps)
    console.print(f"hint criteria: {HINT_CRITERIA}")
